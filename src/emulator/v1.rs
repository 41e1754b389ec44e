//! The v1pre3 reads: the user, projects, samples, appresults, runs, appsessions, files, their
//! properties (and one property, and its items), genomes and applications; lists paged,
//! sorted and filtered as BaseSpace does ([`super::paging`]).

use axum::extract::Path;
use axum::response::Response;
use serde_json::{json, Value};

use super::account::{Account, ContainerKind, ContainerRef};
use super::http::{no_access, num, ok, Req};
use super::json;
use super::paging::{self, files_page, page, page_and, properties_page, Key, Keys, Render};
use crate::api::model::format_date;

/// Whether `status` is one of the `Statuses` asked (all when none).
fn status_in(q: &super::http::Query, status: &str) -> bool {
    q.list("statuses")
        .is_none_or(|ss| ss.iter().any(|s| s.eq_ignore_ascii_case(status)))
}

pub async fn user(r: Req) -> Response {
    ok(json::user(&r.a))
}

/// `users/{id}`: the current user by id (no other user is visible here).
pub async fn user_by_id(r: Req, Path(id): Path<String>) -> Response {
    match num(&id) == Some(r.a.user_id) {
        true => ok(json::user(&r.a)),
        false => no_access("User"),
    }
}

pub async fn token_info(r: Req) -> Response {
    ok(json!({
        "Scopes": r.s.scopes,
        "DateCreated": format_date(super::account::base_time()),
        "UserResourceOwner": json::owner(&r.a),
        "Application": {"Id": "1", "Name": "bsmount emulator"},
        "AccessToken": r.s.token
    }))
}

pub async fn projects(r: Req) -> Response {
    let a = &*r.a;
    let items = a
        .projects
        .iter()
        .filter(|p| r.q.get("name").is_none_or(|n| n == p.name))
        .map(|p| {
            let v: Render = Box::new(move || json::project(a, p, false));
            (v, Keys::named(p.id, &p.name, p.created))
        })
        .collect();
    page(&r.q, items, paging::V1_ENTITIES, false)
}

fn run_keys(c: &super::account::Container) -> Keys<'_> {
    Keys::named(c.id, &c.name, c.created)
        .with("DateModified", Key::Time(c.created))
        .with("ExperimentName", Key::Text(c.experiment()))
        .with("Status", Key::Text(c.status))
}

/// `users/current/runs`, filtered by `Statuses`, `InstrumentType`, `FlowcellBarcode`,
/// `ReagentBarcode`.
pub async fn runs(r: Req) -> Response {
    let a = &*r.a;
    let q = &r.q;
    let items = a
        .runs
        .iter()
        .filter_map(|id| a.container(ContainerKind::Run, *id))
        .filter(|c| status_in(q, c.status))
        .filter(|c| json::run_matches(a, c, q))
        .map(|c| {
            let v: Render = Box::new(move || json::run(a, c, false));
            (v, run_keys(c))
        })
        .collect();
    page(q, items, paging::V1_RUNS, false)
}

/// `users/current/appsessions`, filtered by `Statuses`.
pub async fn appsessions(r: Req) -> Response {
    let a = &*r.a;
    let items = a
        .appsessions
        .values()
        .filter(|x| status_in(&r.q, x.status))
        .map(|x| {
            let v: Render = Box::new(move || json::appsession_v1(a, x));
            (
                v,
                Keys::named(x.id, &x.name, x.created).with("DateModified", Key::Time(x.created)),
            )
        })
        .collect();
    page(&r.q, items, paging::V1_APPSESSIONS, false)
}

pub async fn project(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.project(i)) {
        Some(p) => ok(json::project(&r.a, p, true)),
        None => no_access("Project"),
    }
}

/// `projects/{id}/samples` and `…/appresults` (`Statuses` filters appresults).
pub async fn project_samples(r: Req, Path(id): Path<String>) -> Response {
    project_list(r, &id, ContainerKind::Sample)
}

pub async fn project_appresults(r: Req, Path(id): Path<String>) -> Response {
    project_list(r, &id, ContainerKind::AppResult)
}

fn project_list(r: Req, id: &str, kind: ContainerKind) -> Response {
    let a = &*r.a;
    let Some(p) = num(id).and_then(|i| a.project(i)) else {
        return no_access("Project");
    };
    let ids = if kind == ContainerKind::Sample {
        &p.samples
    } else {
        &p.appresults
    };
    let items = ids
        .iter()
        .filter_map(|i| a.container(kind, *i))
        .filter(|c| status_in(&r.q, c.status))
        .map(|c| {
            let v: Render = match kind {
                ContainerKind::Sample => Box::new(move || json::sample(a, c, false)),
                _ => Box::new(move || json::appresult(a, c, false)),
            };
            (v, Keys::named(c.id, &c.name, c.created))
        })
        .collect();
    page(&r.q, items, paging::V1_ENTITIES, false)
}

fn label(kind: ContainerKind) -> &'static str {
    match kind {
        ContainerKind::Sample => "Sample",
        ContainerKind::AppResult => "AppResult",
        ContainerKind::Run => "Run",
        ContainerKind::Dataset => "Dataset",
    }
}

/// `samples/{id}`, `appresults/{id}`, `runs/{id}`: the full entity.
pub async fn container(kind: ContainerKind, r: Req, Path(id): Path<String>) -> Response {
    let a = &*r.a;
    match num(&id).and_then(|i| a.container(kind, i)) {
        Some(c) => ok(match kind {
            ContainerKind::Sample => json::sample(a, c, true),
            ContainerKind::AppResult => json::appresult(a, c, true),
            _ => json::run(a, c, true),
        }),
        None => no_access(label(kind)),
    }
}

/// `samples|appresults|runs/{id}/files`, filtered by `Extensions`.
pub async fn container_files(kind: ContainerKind, r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.container(kind, i)) {
        Some(c) => files_page(&r.s, &r.q, &r.a, &c.files, false),
        None => no_access(label(kind)),
    }
}

/// `runs/{id}/samples`: the samples demultiplexed from the run.
pub async fn run_samples(r: Req, Path(id): Path<String>) -> Response {
    let a = &*r.a;
    let Some(run) = num(&id).and_then(|i| a.container(ContainerKind::Run, i)) else {
        return no_access("Run");
    };
    let me = ContainerRef {
        kind: ContainerKind::Run,
        id: run.id,
    };
    let mut samples: Vec<_> = a
        .containers
        .values()
        .filter(|c| c.kind == ContainerKind::Sample && !c.trashed && c.inputs.contains(&me))
        .collect();
    samples.sort_by_key(|c| c.id);
    let items = samples
        .into_iter()
        .map(|c| {
            let v: Render = Box::new(move || json::sample(a, c, false));
            (v, Keys::named(c.id, &c.name, c.created))
        })
        .collect();
    page(&r.q, items, paging::V1_ENTITIES, false)
}

pub async fn appsession(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.appsessions.get(&i)) {
        Some(x) => ok(json::appsession_v1_full(&r.a, x)),
        None => no_access("AppSession"),
    }
}

/// `files/{id}` (with `filehrefcontentresolution=true`, the presigned URL in `HrefContent`).
pub async fn file(r: Req, Path(id): Path<String>) -> Response {
    match num(&id).and_then(|i| r.a.files.get(&i)) {
        Some(f) => ok(r.s.file_json(f, true, r.q.flag("filehrefcontentresolution"))),
        None => no_access("File"),
    }
}

/// Whose properties a path asks for.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Projects,
    Samples,
    AppResults,
    Runs,
    AppSessions,
    Files,
}

/// The properties of `owner` `id`, or the answer for an id that is not there.
/// (`Err`: the kind of entity that is not there, for its 404.)
fn owner_properties(a: &Account, owner: Owner, id: &str) -> Result<Vec<Value>, &'static str> {
    let id = num(id);
    let container = |k: ContainerKind| {
        id.and_then(|i| a.container(k, i))
            .map(|c| json::container_properties(a, c))
            .ok_or(label(k))
    };
    match owner {
        Owner::Projects => id.and_then(|i| a.project(i)).map(|_| Vec::new()).ok_or("Project"),
        Owner::Samples => container(ContainerKind::Sample),
        Owner::AppResults => container(ContainerKind::AppResult),
        Owner::Runs => container(ContainerKind::Run),
        Owner::AppSessions => id
            .and_then(|i| a.appsessions.get(&i))
            .map(|x| json::appsession_properties(a, x))
            .ok_or("AppSession"),
        Owner::Files => id.and_then(|i| a.files.get(&i)).map(|_| Vec::new()).ok_or("File"),
    }
}

/// `{owner}/{id}/properties`.
pub async fn properties(owner: Owner, r: Req, Path(id): Path<String>) -> Response {
    match owner_properties(&r.a, owner, &id) {
        Ok(props) => properties_page(&r.q, props, false),
        Err(kind) => no_access(kind),
    }
}

/// `{owner}/{id}/properties/{name}`: one property.
pub async fn property(owner: Owner, r: Req, Path((id, name)): Path<(String, String)>) -> Response {
    match owner_properties(&r.a, owner, &id).map(|ps| json::find_property(ps, &name)) {
        Ok(Some(p)) => ok(p),
        Ok(None) => no_access("Property"),
        Err(kind) => no_access(kind),
    }
}

/// `{owner}/{id}/properties/{name}/items`: the items of an array property, paged.
pub async fn property_items(owner: Owner, r: Req, Path((id, name)): Path<(String, String)>) -> Response {
    match owner_properties(&r.a, owner, &id).map(|ps| json::find_property(ps, &name)) {
        Ok(Some(p)) => items_page(&r, p, false),
        Ok(None) => no_access("Property"),
        Err(kind) => no_access(kind),
    }
}

/// A property's items as a list: each `{"Id": <place>, "Content": <value>}`, with the
/// property's `Type` beside them (BaseSpacePy picks the model of the items by it).
pub fn items_page(r: &Req, p: Value, v2: bool) -> Response {
    let kind = p["Type"].clone();
    let items = json::property_values(p)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let v: Render = Box::new(move || json!({"Id": i.to_string(), "Content": v}));
            (v, Keys::new(i as u64).with("DateCreated", Key::Num(i as u64)))
        })
        .collect();
    page_and(&r.q, items, paging::PROPERTY_ITEMS, v2, ("Type", kind))
}

pub async fn genomes(r: Req) -> Response {
    let items = json::GENOMES
        .iter()
        .map(|g| {
            let v: Render = Box::new(move || json::genome(g));
            (v, Keys::new(g.0).with("Name", Key::Text(g.1)))
        })
        .collect();
    page(&r.q, items, paging::V1_CATALOG, false)
}

pub async fn genome(_r: Req, Path(id): Path<String>) -> Response {
    match json::GENOMES.iter().find(|g| Some(g.0) == num(&id)) {
        Some(g) => ok(json::genome(g)),
        None => no_access("Genome"),
    }
}

/// `applications`: the applications the account's appsessions ran.
pub async fn applications(r: Req) -> Response {
    let names = json::application_names(&r.a);
    let items = names
        .into_iter()
        .map(|n| {
            let id = json::application_id(&n);
            let v: Render = Box::new(move || json::application(&n));
            (v, Keys::new(id))
        })
        .collect();
    page(&r.q, items, paging::V1_CATALOG, false)
}

pub async fn application(r: Req, Path(id): Path<String>) -> Response {
    match json::application_names(&r.a)
        .into_iter()
        .find(|n| Some(json::application_id(n)) == num(&id))
    {
        Some(n) => ok(json::application(&n)),
        None => no_access("Application"),
    }
}
