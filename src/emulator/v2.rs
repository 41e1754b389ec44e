//! The v2 reads: the user, appsessions, biosamples and their libraries, datasets and their
//! files, projects' datasets, runs and their files, properties, the trash. v2 answers are
//! bare (no envelope), their hrefs absolute, lists `{Items, Paging}`.

use axum::extract::Path;
use axum::response::Response;
use serde_json::Value;

use super::account::{biosample_id, Account, ContainerKind, DatasetQuery};
use super::http::{no_access, num, ok_v2, Req};
use super::json;
use super::paging::{self, files_page, folder_page, page, properties_page, Key, Keys, Render};
use super::v1::items_page;

/// Comma-separated ids of a filter (`appsessionids=1,2`); what does not parse matches nothing.
fn id_list(v: &str) -> Vec<u64> {
    v.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

/// Whether `value` is one of the comma-separated values of filter `k` (all when absent).
fn one_of(r: &Req, k: &str, value: &str) -> bool {
    r.q.list(k)
        .is_none_or(|vs| vs.iter().any(|v| v.eq_ignore_ascii_case(value)))
}

pub async fn user(r: Req) -> Response {
    ok_v2(&json::user_v2(&r.a, &r.s.base_url))
}

/// `appsessions`, filtered by `output.projects`, `input.biosamples`, `input.runs`,
/// `executionstatus`, `qcstatus`, `deliverystatus`, `name`.
pub async fn appsessions(r: Req) -> Response {
    let a = &*r.a;
    let base = &r.s.base_url;
    let project = r.q.get("output.projects").map(id_list);
    let reading: Option<Vec<u64>> =
        r.q.get("input.biosamples")
            .map(|b| a.appsessions_reading(&id_list(b)).iter().map(|x| x.id).collect());
    let runs: Option<Vec<u64>> = r.q.get("input.runs").map(id_list);
    let items = a
        .appsessions
        .values()
        .filter(|x| project.as_ref().is_none_or(|p| p.contains(&x.project)))
        .filter(|x| reading.as_ref().is_none_or(|rd| rd.contains(&x.id)))
        .filter(|x| {
            runs.as_ref()
                .is_none_or(|rs| a.appsession_runs(x).iter().any(|id| rs.contains(id)))
        })
        .filter(|x| r.q.get("name").is_none_or(|n| n == x.name))
        .filter(|x| one_of(&r, "executionstatus", x.status))
        .filter(|_| one_of(&r, "qcstatus", "Undefined"))
        .filter(|_| one_of(&r, "deliverystatus", "None"))
        .map(|x| {
            let keys = Keys::named(x.id, &x.name, x.created)
                .with("ModifiedOn", Key::Time(x.created))
                .with("ExecutionStatus", Key::Text(x.status))
                .with("AppName", Key::Text(&x.application))
                .with("AppId", Key::Num(json::application_id(&x.application)));
            (Box::new(move || json::appsession_v2(a, x, base)) as Render, keys)
        })
        .collect();
    page(&r.q, items, paging::V2_APPSESSIONS, true)
}

pub async fn appsession(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.appsessions.get(&i)) {
        Some(x) => ok_v2(&json::appsession_v2_full(&r.a, x, &r.s.base_url)),
        None => no_access("AppSession"),
    }
}

pub async fn appsession_logs(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.appsessions.get(&i)) {
        Some(x) => files_page(&r.s, &r.q, &r.a, &x.logs, true),
        None => no_access("AppSession"),
    }
}

/// `biosamples`, filtered by `projectid`, `biosamplename`, `status`, `labstatus`.
pub async fn biosamples(r: Req) -> Response {
    let a = &*r.a;
    let base = &r.s.base_url;
    let project = r.q.get("projectid").map(|p| p.parse::<u64>().ok());
    let items = a
        .biosamples()
        .into_iter()
        .filter(|c| project.is_none_or(|p| c.project.is_some() && c.project == p))
        .filter(|c| r.q.get("biosamplename").is_none_or(|n| n == c.name))
        .filter(|_| one_of(&r, "status", "New"))
        .filter(|_| one_of(&r, "labstatus", "Sequencing"))
        .map(|c| {
            let keys = Keys::new(biosample_id(c.id))
                .with("BioSampleName", Key::Text(&c.name))
                .with("DateModified", Key::Time(c.created));
            (Box::new(move || json::biosample(a, c, base)) as Render, keys)
        })
        .collect();
    page(&r.q, items, paging::V2_BIOSAMPLES, true)
}

pub async fn biosample(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.biosample(i)) {
        Some(c) => ok_v2(&json::biosample(&r.a, c, &r.s.base_url)),
        None => no_access("BioSample"),
    }
}

pub async fn biosample_libraries(r: Req, Path(id): Path<String>) -> Response {
    let a = &*r.a;
    let base = &r.s.base_url;
    let Some(c) = num(&id).and_then(|i| a.biosample(i)) else {
        return no_access("BioSample");
    };
    let item = (
        Box::new(move || json::library_v2(a, c, base)) as Render,
        Keys::named(super::account::library_id(c.id), &c.name, c.created),
    );
    page(&r.q, vec![item], paging::V2_LIBRARIES, true)
}

pub async fn library(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.library(i)) {
        Some(c) => ok_v2(&json::library_v2(&r.a, c, &r.s.base_url)),
        None => no_access("Library"),
    }
}

fn dataset_keys<'a>(a: &'a Account, c: &'a super::account::Container) -> Keys<'a> {
    let session = c.appsession.and_then(|s| a.appsessions.get(&s));
    Keys::named(c.id, &c.name, c.created)
        .with("DateModified", Key::Time(c.created))
        .with("Size", Key::Num(a.size_of(c)))
        .with("AppSessionName", Key::Text(session.map_or("", |s| s.name.as_str())))
        .with(
            "ApplicationName",
            Key::Text(session.map_or("", |s| s.application.as_str())),
        )
        .with(
            "ProjectName",
            Key::Text(c.project.and_then(|p| a.project(p)).map_or("", |p| p.name.as_str())),
        )
}

/// A page of datasets, with their properties inline when the query asks `include=properties`.
fn datasets_page(r: &Req, found: Vec<&super::account::Container>) -> Response {
    let a = &*r.a;
    let base = &r.s.base_url;
    let with_props =
        r.q.get("include")
            .is_some_and(|v| v.split(',').any(|x| x.trim().eq_ignore_ascii_case("properties")));
    let items = found
        .into_iter()
        .map(|c| {
            let render = move || match with_props {
                true => json::dataset_v2_with_properties(a, c, base),
                false => json::dataset_v2(a, c, base),
            };
            (Box::new(render) as Render, dataset_keys(a, c))
        })
        .collect();
    page(&r.q, items, paging::V2_DATASETS, true)
}

/// `datasets`, filtered by `projectid`, `inputbiosamples`, `inputruns`, `appsessionids`,
/// `datasettypes` (`~type` for conforming types), `qcstatus`, `uploadstatus`, `isarchived`.
pub async fn datasets(r: Req) -> Response {
    let query = DatasetQuery {
        appsessions: r.q.get("appsessionids").map(id_list),
        biosamples: r.q.get("inputbiosamples").map(id_list),
        runs: r.q.get("inputruns").map(id_list),
        project: r.q.get("projectid").map(|p| p.parse::<u64>().ok()),
        types: r.q.list("datasettypes"),
    };
    let found =
        r.a.datasets_where(&query)
            .into_iter()
            .filter(|_| one_of(&r, "qcstatus", "Undefined"))
            .filter(|_| one_of(&r, "uploadstatus", "Completed"))
            .filter(|_| r.q.get("isarchived").is_none_or(|v| v.eq_ignore_ascii_case("false")))
            .collect();
    datasets_page(&r, found)
}

/// `projects/{id}/datasets`.
pub async fn project_datasets(r: Req, Path(id): Path<String>) -> Response {
    let Some(p) = num(&id).and_then(|i| r.a.project(i)) else {
        return no_access("Project");
    };
    let found = r.a.datasets_where(&DatasetQuery {
        project: Some(Some(p.id)),
        ..DatasetQuery::default()
    });
    let found = found
        .into_iter()
        .filter(|_| r.q.get("isarchived").is_none_or(|v| v.eq_ignore_ascii_case("false")))
        .collect();
    datasets_page(&r, found)
}

pub async fn dataset(r: Req, Path(ds): Path<String>) -> Response {
    match r.a.dataset(&ds) {
        Some(c) => ok_v2(&json::dataset_v2_with_properties(&r.a, c, &r.s.base_url)),
        None => no_access("Dataset"),
    }
}

/// `datasets/{id}/files`: every file, or one folder with `directory=`.
pub async fn dataset_files(r: Req, Path(ds): Path<String>) -> Response {
    let Some(c) = r.a.dataset(&ds) else {
        return no_access("Dataset");
    };
    match r.q.get("directory") {
        Some(dir) => folder_page(
            &r.s,
            &r.q,
            &r.a,
            &c.files,
            dir,
            &format!("{}/v2/datasets/{ds}/files", r.s.base_url),
        ),
        None => files_page(&r.s, &r.q, &r.a, &c.files, true),
    }
}

pub async fn project(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.project(i)) {
        Some(p) => ok_v2(&json::project_v2_full(&r.a, p, &r.s.base_url)),
        None => no_access("Project"),
    }
}

/// `runs`, filtered by `statuses`, `instrumenttype`, `flowcellbarcode`, `experimentname`,
/// `output.projects`.
pub async fn runs(r: Req) -> Response {
    let a = &*r.a;
    let base = &r.s.base_url;
    let projects = r.q.get("output.projects").map(id_list);
    let items = a
        .runs
        .iter()
        .filter_map(|id| a.container(ContainerKind::Run, *id))
        .filter(|c| one_of(&r, "statuses", c.status))
        .filter(|c| json::run_matches(a, c, &r.q))
        .filter(|c| {
            projects
                .as_ref()
                .is_none_or(|ps| a.run_projects(c).iter().any(|p| ps.contains(p)))
        })
        .map(|c| {
            let keys = Keys::named(c.id, &c.name, c.created)
                .with("ExperimentName", Key::Text(c.experiment()))
                .with("Status", Key::Text(c.status))
                .with("TotalSize", Key::Num(a.size_of(c)));
            (Box::new(move || json::run_v2(a, c, base, false)) as Render, keys)
        })
        .collect();
    page(&r.q, items, paging::V2_RUNS, true)
}

pub async fn run(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.container(ContainerKind::Run, i)) {
        Some(c) => ok_v2(&json::run_v2(&r.a, c, &r.s.base_url, true)),
        None => no_access("Run"),
    }
}

/// `runs/{id}/files`: every file (`recursive=true`), or one folder (`directory=`, root `/`
/// by default: the run folder's top level).
pub async fn run_files(r: Req, Path(id): Path<String>) -> Response {
    let Some(c) = num(&id).and_then(|i| r.a.container(ContainerKind::Run, i)) else {
        return no_access("Run");
    };
    let base = format!("{}/v2/runs/{}/files", r.s.base_url, c.id);
    match (r.q.get("directory"), r.q.flag("recursive")) {
        (None, true) => files_page(&r.s, &r.q, &r.a, &c.files, true),
        (dir, _) => folder_page(&r.s, &r.q, &r.a, &c.files, dir.unwrap_or("/"), &base),
    }
}

pub async fn run_sequencing_stats(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.container(ContainerKind::Run, i)) {
        Some(c) => ok_v2(&json::sequencing_stats(&r.a, c, &format!("{}/v2", r.s.base_url))),
        None => no_access("Run"),
    }
}

/// A file by id (v2 `Href`s point here).
pub async fn file(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.files.get(&i)) {
        Some(f) => ok_v2(&r.s.file_json_in(f, false, r.q.flag("filehrefcontentresolution"), true)),
        None => no_access("File"),
    }
}

/// Whose properties a v2 path asks for.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Datasets,
    BioSamples,
    AppSessions,
    Runs,
    Projects,
    Libraries,
}

/// The properties of `owner` `id` (`Err`: the kind of entity that is not there).
fn owner_properties(r: &Req, owner: Owner, id: &str) -> Result<Vec<Value>, &'static str> {
    let a = &*r.a;
    let base = &r.s.base_url;
    match owner {
        Owner::Datasets => a
            .dataset(id)
            .map(|c| json::dataset_properties(a, c, base))
            .ok_or("Dataset"),
        Owner::BioSamples => num(id)
            .and_then(|i| a.biosample(i))
            .map(|_| Vec::new())
            .ok_or("BioSample"),
        Owner::AppSessions => num(id)
            .and_then(|i| a.appsessions.get(&i))
            .map(|x| json::to_v2_properties(json::appsession_properties(a, x)))
            .ok_or("AppSession"),
        Owner::Runs => num(id)
            .and_then(|i| a.container(ContainerKind::Run, i))
            .map(|c| json::to_v2_properties(json::container_properties(a, c)))
            .ok_or("Run"),
        Owner::Projects => num(id).and_then(|i| a.project(i)).map(|_| Vec::new()).ok_or("Project"),
        Owner::Libraries => num(id).and_then(|i| a.library(i)).map(|_| Vec::new()).ok_or("Library"),
    }
}

pub async fn properties(owner: Owner, r: Req, Path(id): Path<String>) -> Response {
    match owner_properties(&r, owner, &id) {
        Ok(props) => properties_page(&r.q, props, true),
        Err(kind) => no_access(kind),
    }
}

pub async fn property(owner: Owner, r: Req, Path((id, name)): Path<(String, String)>) -> Response {
    match owner_properties(&r, owner, &id).map(|ps| json::find_property(ps, &name)) {
        Ok(Some(p)) => ok_v2(&p),
        Ok(None) => no_access("Property"),
        Err(kind) => no_access(kind),
    }
}

pub async fn property_items(owner: Owner, r: Req, Path((id, name)): Path<(String, String)>) -> Response {
    match owner_properties(&r, owner, &id).map(|ps| json::find_property(ps, &name)) {
        Ok(Some(p)) => items_page(&r, p, true),
        Ok(None) => no_access("Property"),
        Err(kind) => no_access(kind),
    }
}

/// `trash`: what was moved to the trash.
pub async fn trash(r: Req) -> Response {
    let a = &*r.a;
    let base = &r.s.base_url;
    let items = a
        .trash
        .iter()
        .map(|t| {
            let keys = Keys::new(t.id).with("DateDeleted", Key::Time(t.deleted));
            (Box::new(move || json::trash_item(a, t, base)) as Render, keys)
        })
        .collect();
    page(&r.q, items, paging::TRASH, true)
}

pub async fn trash_item(r: Req, Path(id): Path<String>) -> Response {
    match r.a.trash.iter().find(|t| Some(t.id) == num(&id)) {
        Some(t) => ok_v2(&json::trash_item(&r.a, t, &r.s.base_url)),
        None => no_access("TrashItem"),
    }
}
