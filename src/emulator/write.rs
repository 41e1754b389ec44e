//! The API calls that change the account, as BaseSpace documents them: create a project
//! (`POST v1pre3/projects`, the existing one of that name if any) and an appresult with its
//! appsession (`POST v1pre3/projects/{id}/appresults`), upload files into an appresult (one
//! request, or multipart: start, `PUT files/{id}/parts/{n}` with `Content-MD5`, complete),
//! set an appsession's status (`POST v1pre3/appsessions/{id}`), move to the trash (`DELETE
//! v2/{projects|datasets|runs}/{id}`) and restore (`POST v2/trash/{id}/restorefromtrash`).
//!
//! The account is shared read-only by every request; a change clones it (files are shared
//! `Arc`s, so a clone costs a pointer per file), edits the clone and swaps it in under one
//! lock, so readers never see half a change. A multipart upload's parts wait in memory and
//! become a file only when completed: until then no listing shows it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::account::{
    Account, AppSession, Container, ContainerKind, ContainerRef, FileEntry, Project, TrashItem, Trashed,
};
use super::http::{bad_request as bad, error, json_response, no_access, num, ok, Paced, Query, Req};
use super::json;
use super::state::Shared;
use crate::api::model::format_date;

/// S3's smallest part but the last: BaseSpace multipart uploads go to S3.
const MIN_PART: usize = 5 << 20;
/// S3's most parts per upload.
const MAX_PARTS: u32 = 10_000;
/// Ids of what the API creates: above every range the account builders use.
const CREATED_BASE: u64 = 95_000_000;
const UPLOAD_FILE_BASE: u64 = 30_000_000_000;

/// A multipart upload not yet completed.
#[derive(Debug)]
pub struct Pending {
    parent: ContainerRef,
    path: String,
    /// Part number → bytes and their md5 (taken once, when the part arrives).
    parts: BTreeMap<u32, (Bytes, [u8; 16])>,
    created: SystemTime,
}

/// Uploads in progress and the counter for new ids.
#[derive(Debug, Default)]
pub struct Writes {
    pending: parking_lot::Mutex<HashMap<u64, Pending>>,
    next: std::sync::atomic::AtomicU64,
    /// One change at a time: clone, edit, swap.
    pub(crate) change: parking_lot::Mutex<()>,
}

impl Writes {
    fn next_id(&self, base: u64) -> u64 {
        base + CREATED_BASE + 1 + self.next.fetch_add(1, Ordering::Relaxed)
    }
}

fn scope_missing(scope: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        Some("BASESPACE.COMMON.INSUFFICIENT_SCOPE"),
        &format!("This operation needs the {scope} scope"),
    )
}

/// A parameter from the query or the JSON body (`Name` / `name`).
fn param(q: &Query, body: &Value, key: &str) -> Option<String> {
    q.get(&key.to_ascii_lowercase())
        .map(str::to_string)
        .or_else(|| body.get(key).and_then(Value::as_str).map(str::to_string))
}

/// The answer for a request whose token lacks `scope`, if it does.
fn needs(s: &Shared, scope: &str) -> Option<Response> {
    (!s.has_scope(scope)).then(|| scope_missing(scope))
}

fn json_of(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// `POST projects`.
pub async fn create_project(r: Req, Paced(body): Paced) -> Response {
    needs(&r.s, "CREATE GLOBAL").unwrap_or_else(|| create_project_in(&r.s, &r.q, &json_of(&body)))
}

/// `POST projects/{id}/appresults`.
pub async fn create_appresult(r: Req, Path(id): Path<String>, Paced(body): Paced) -> Response {
    needs(&r.s, "CREATE GLOBAL").unwrap_or_else(|| create_appresult_in(&r.s, num(&id), &r.q, &json_of(&body)))
}

/// `POST appresults/{id}/files`.
pub async fn start_upload(r: Req, Path(id): Path<String>, Paced(body): Paced) -> Response {
    needs(&r.s, "CREATE GLOBAL").unwrap_or_else(|| start_upload_in(&r.s, num(&id), &r.q, body))
}

/// `PUT files/{id}/parts/{n}`.
pub async fn put_part(r: Req, Path((id, n)): Path<(String, String)>, Paced(body): Paced) -> Response {
    needs(&r.s, "CREATE GLOBAL").unwrap_or_else(|| put_part_in(&r.s, num(&id), n.parse().ok(), &r.headers, body))
}

/// `POST files/{id}?uploadstatus=complete`.
pub async fn complete_upload(r: Req, Path(id): Path<String>, Paced(body): Paced) -> Response {
    needs(&r.s, "CREATE GLOBAL").unwrap_or_else(|| complete_upload_in(&r.s, num(&id), &r.q, &json_of(&body)))
}

/// `POST appsessions/{id}` (status).
pub async fn set_status(r: Req, Path(id): Path<String>, Paced(body): Paced) -> Response {
    needs(&r.s, "CREATE GLOBAL").unwrap_or_else(|| set_status_in(&r.s, num(&id), &r.q, &json_of(&body)))
}

/// `DELETE v2/projects/{id}`, `…/datasets/{id}`, `…/runs/{id}`: to the trash.
pub async fn trash_project(r: Req, Path(id): Path<String>) -> Response {
    needs(&r.s, "MOVETOTRASH GLOBAL").unwrap_or_else(|| move_to_trash(&r.s, "projects", &id))
}

pub async fn trash_dataset(r: Req, Path(id): Path<String>) -> Response {
    needs(&r.s, "MOVETOTRASH GLOBAL").unwrap_or_else(|| move_to_trash(&r.s, "datasets", &id))
}

pub async fn trash_run(r: Req, Path(id): Path<String>) -> Response {
    needs(&r.s, "MOVETOTRASH GLOBAL").unwrap_or_else(|| move_to_trash(&r.s, "runs", &id))
}

/// `POST v2/trash/{id}/restorefromtrash`.
pub async fn restore(r: Req, Path(id): Path<String>) -> Response {
    needs(&r.s, "MOVETOTRASH GLOBAL").unwrap_or_else(|| restore_in(&r.s, num(&id)))
}

fn create_project_in(s: &Arc<Shared>, q: &Query, body: &Value) -> Response {
    let Some(name) = param(q, body, "Name").filter(|n| !n.trim().is_empty()) else {
        return bad("Name is required");
    };
    let id = s.writes.next_id(300_000_000);
    let p = s.change(|a| {
        if let Some(p) = a.projects.iter().find(|p| p.name == name) {
            return p.id; // BaseSpace answers with the project of that name
        }
        a.projects.push(Project {
            id,
            name: name.clone(),
            description: param(q, body, "Description").unwrap_or_default(),
            created: SystemTime::now(),
            samples: vec![],
            appresults: vec![],
            appsessions: vec![],
            datasets: vec![],
        });
        id
    });
    let a = s.account.read().clone();
    ok(json::project(&a, a.project(p).expect("just made"), true))
}

/// An appresult and the appsession that makes it, both `Running` until completed. The
/// appsession is named as BaseMount's were: `BaseSpaceCLI - <creation time>`.
fn create_appresult_in(s: &Arc<Shared>, project: Option<u64>, q: &Query, body: &Value) -> Response {
    let Some(pid) = project.filter(|p| s.account.read().project(*p).is_some()) else {
        return no_access("Project");
    };
    let Some(name) = param(q, body, "Name").filter(|n| !n.trim().is_empty()) else {
        return bad("Name is required");
    };
    let (sid, rid) = (s.writes.next_id(600_000_000), s.writes.next_id(500_000_000));
    let now = SystemTime::now();
    s.change(|a| {
        a.appsessions.insert(
            sid,
            AppSession {
                id: sid,
                name: format!("BaseSpaceCLI - {}", format_date(now)),
                application: "BaseSpaceCLI".into(),
                project: pid,
                created: now,
                outputs: vec![ContainerRef {
                    kind: ContainerKind::AppResult,
                    id: rid,
                }],
                logs: vec![],
                status: "Running",
            },
        );
        a.containers.insert(
            ContainerRef {
                kind: ContainerKind::AppResult,
                id: rid,
            },
            Container {
                id: rid,
                kind: ContainerKind::AppResult,
                name,
                project: Some(pid),
                appsession: Some(sid),
                created: now,
                files: vec![],
                inputs: vec![],
                status: "Running",
                trashed: false,
                reads: None,
                experiment: None,
            },
        );
        if let Some(p) = a.projects.iter_mut().find(|p| p.id == pid) {
            p.appresults.push(rid);
            p.appsessions.push(sid);
        }
    });
    let a = s.account.read().clone();
    ok(json::appresult(
        &a,
        a.container(ContainerKind::AppResult, rid).expect("just made"),
        true,
    ))
}

/// The appresult a file goes into, if it still takes files.
fn open_appresult(a: &Account, id: Option<u64>) -> Result<&Container, Box<Response>> {
    let c = id
        .and_then(|i| a.container(ContainerKind::AppResult, i))
        .ok_or_else(|| Box::new(no_access("AppResult")))?;
    if c.status == "Complete" {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            Some("BASESPACE.APPRESULTS.COMPLETED"),
            "This AppResult is complete: no more files can be added",
        )));
    }
    Ok(c)
}

/// `directory` + `name` as the file's Path (no leading or doubled slashes).
fn file_path(q: &Query) -> Result<String, Box<Response>> {
    let name = q.get("name").filter(|n| !n.is_empty() && !n.contains('/'));
    let Some(name) = name else {
        return Err(Box::new(bad("name is required and may not contain '/'")));
    };
    let dir: Vec<&str> = q
        .get("directory")
        .unwrap_or("")
        .split('/')
        .filter(|x| !x.is_empty())
        .collect();
    if dir.iter().any(|x| *x == "." || *x == "..") {
        return Err(Box::new(bad("directory may not contain . or ..")));
    }
    Ok(dir.into_iter().chain([name]).collect::<Vec<_>>().join("/"))
}

fn pending_json(id: u64, p: &Pending) -> Value {
    let name = p.path.rsplit('/').next().unwrap_or(&p.path);
    json!({
        "Id": id.to_string(),
        "Href": format!("v1pre3/files/{id}"),
        "HrefContent": format!("v1pre3/files/{id}/content"),
        "HrefParts": format!("v1pre3/files/{id}/parts"),
        "Name": name,
        "ContentType": "application/octet-stream",
        "Size": 0,
        "Path": p.path,
        "IsArchived": false,
        "DateCreated": format_date(p.created),
        "DateModified": format_date(p.created),
        "UploadStatus": "pending"
    })
}

/// `POST appresults/{id}/files?name=&directory=`: with `multipart=true` it starts an upload;
/// without, the body is the whole file.
fn start_upload_in(s: &Arc<Shared>, appresult: Option<u64>, q: &Query, body: Bytes) -> Response {
    let a = s.account.read().clone();
    let c = match open_appresult(&a, appresult) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let path = match file_path(q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let exists = c.files.iter().filter_map(|f| a.files.get(f)).any(|f| f.path == path);
    if exists {
        return error(
            StatusCode::CONFLICT,
            Some("BASESPACE.FILES.ALREADY_EXISTS"),
            &format!("A file {path} already exists in this AppResult"),
        );
    }
    let id = s.writes.next_id(UPLOAD_FILE_BASE - CREATED_BASE - 1);
    let pending = Pending {
        parent: ContainerRef {
            kind: ContainerKind::AppResult,
            id: c.id,
        },
        path,
        parts: BTreeMap::new(),
        created: SystemTime::now(),
    };
    if q.get("multipart").is_some_and(|m| m.eq_ignore_ascii_case("true")) {
        let v = pending_json(id, &pending);
        s.writes.pending.lock().insert(id, pending);
        return ok(v);
    }
    let digest = Md5::digest(&body).into();
    publish(s, id, pending, vec![(body, digest)])
}

/// `PUT files/{id}/parts/{n}`: one part, refused unless its `Content-MD5` matches.
fn put_part_in(s: &Arc<Shared>, file: Option<u64>, n: Option<u32>, headers: &HeaderMap, body: Bytes) -> Response {
    let Some(n) = n.filter(|n| (1..=MAX_PARTS).contains(n)) else {
        return bad(&format!("part numbers run from 1 to {MAX_PARTS}"));
    };
    let digest = Md5::digest(&body);
    if let Some(given) = headers.get("content-md5").and_then(|v| v.to_str().ok()) {
        let want = base64::engine::general_purpose::STANDARD.encode(digest);
        if given.trim() != want {
            return error(
                StatusCode::BAD_REQUEST,
                Some("BASESPACE.FILES.INVALID_MD5"),
                "The Content-MD5 of the part does not match its bytes",
            );
        }
    }
    let mut pending = s.writes.pending.lock();
    let Some(p) = file.and_then(|f| pending.get_mut(&f)) else {
        return no_access("File");
    };
    let size = body.len();
    p.parts.insert(n, (body, digest.into()));
    ok(json!({"Number": n, "Size": size, "ETag": hex::encode(digest)}))
}

/// `POST files/{id}?uploadstatus=complete`: the parts, numbered 1..n with none missing and
/// all but the last at least S3's 5 MiB, become the file.
fn complete_upload_in(s: &Arc<Shared>, file: Option<u64>, q: &Query, body: &Value) -> Response {
    let status = param(q, body, "UploadStatus").unwrap_or_default();
    if !status.eq_ignore_ascii_case("complete") {
        return bad("uploadstatus=complete is the only change a file takes");
    }
    let Some(id) = file else { return no_access("File") };
    let Some(p) = s.writes.pending.lock().remove(&id) else {
        // Completed already (a retried request): answer with the file.
        return match s.account.read().files.get(&id) {
            Some(f) => ok(json::file(f, true)),
            None => no_access("File"),
        };
    };
    let n = p.parts.len() as u32;
    if p.parts.keys().copied().ne(1..=n) {
        s.writes.pending.lock().insert(id, p);
        return bad("parts must be numbered 1..n with none missing");
    }
    if p.parts.values().rev().skip(1).any(|(b, _)| b.len() < MIN_PART) {
        s.writes.pending.lock().insert(id, p);
        return bad("every part but the last must be at least 5 MiB");
    }
    let parts: Vec<(Bytes, [u8; 16])> = p.parts.values().cloned().collect();
    let pending = Pending {
        parts: BTreeMap::new(),
        ..p
    };
    publish(s, id, pending, parts)
}

/// Makes the file of an upload visible: content, ETag (md5, or S3's multipart form when
/// it came in parts), in its appresult's listing and the manifest.
fn publish(s: &Arc<Shared>, id: u64, p: Pending, parts: Vec<(Bytes, [u8; 16])>) -> Response {
    let size: usize = parts.iter().map(|(b, _)| b.len()).sum();
    if size == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            Some("BASESPACE.FILES.EMPTY_FILE"),
            "Zero-byte files cannot be uploaded to BaseSpace",
        );
    }
    let etag = if parts.len() > 1 {
        let mut outer = Md5::new();
        for (_, d) in &parts {
            outer.update(d);
        }
        format!("{}-{}", hex::encode(outer.finalize()), parts.len())
    } else {
        hex::encode(parts[0].1)
    };
    let chunks = super::account::Chunks::new(parts.into_iter().map(|(b, _)| b).collect());
    let entry = Arc::new(FileEntry {
        id,
        content_type: super::account::content_type(&p.path),
        path: p.path,
        size: size as u64,
        content: super::account::Content::Parts(Arc::new(chunks)),
        created: p.created,
        parent: p.parent,
        etag: OnceLock::from(etag),
        md5: OnceLock::new(),
    });
    let v = json::file(&entry, true);
    s.change(|a| {
        if let Some(c) = a.containers.get_mut(&p.parent) {
            c.files.push(id);
        }
        a.files.insert(id, entry);
    });
    ok(v)
}

/// `POST appsessions/{id}` with `Status`: completing a session completes its appresults.
fn set_status_in(s: &Arc<Shared>, session: Option<u64>, q: &Query, body: &Value) -> Response {
    let Some(sid) = session.filter(|i| s.account.read().appsessions.contains_key(i)) else {
        return no_access("AppSession");
    };
    let status: &'static str = match param(q, body, "Status")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("complete") => "Complete",
        Some("running") => "Running",
        Some("aborted") => "Aborted",
        _ => return bad("Status must be Complete, Running or Aborted"),
    };
    s.change(|a| {
        let outs = a.appsessions.get(&sid).map(|x| x.outputs.clone()).unwrap_or_default();
        if let Some(x) = a.appsessions.get_mut(&sid) {
            x.status = status;
        }
        for r in outs {
            if let Some(c) = a.containers.get_mut(&r) {
                c.status = status;
            }
        }
    });
    let a = s.account.read().clone();
    ok(json::appsession_v1(&a, &a.appsessions[&sid]))
}

fn move_to_trash(s: &Arc<Shared>, kind: &str, id: &str) -> Response {
    let a = s.account.read().clone();
    let target = match kind {
        "projects" => id
            .parse()
            .ok()
            .and_then(|i| a.project(i))
            .map(|p| (p.name.clone(), None)),
        "runs" => id
            .parse()
            .ok()
            .and_then(|i| a.container(ContainerKind::Run, i))
            .map(|c| (c.name.clone(), Some(ContainerRef { kind: c.kind, id: c.id }))),
        _ => a
            .dataset(id)
            .map(|c| (c.name.clone(), Some(ContainerRef { kind: c.kind, id: c.id }))),
    };
    let Some((name, container)) = target else {
        return no_access(match kind {
            "projects" => "Project",
            "runs" => "Run",
            _ => "Dataset",
        });
    };
    let tid = s.writes.next_id(800_000_000);
    s.change(|a| {
        let what = match container {
            None => {
                let pid: u64 = id.parse().expect("checked");
                let pos = a.projects.iter().position(|p| p.id == pid).expect("checked");
                let p = a.projects.remove(pos);
                for c in a.containers.values_mut().filter(|c| c.project == Some(pid)) {
                    c.trashed = true;
                }
                Trashed::Project(p)
            }
            Some(r) => {
                if let Some(c) = a.containers.get_mut(&r) {
                    c.trashed = true;
                }
                a.runs.retain(|x| !(r.kind == ContainerKind::Run && *x == r.id));
                Trashed::Container(r)
            }
        };
        a.trash.push(TrashItem {
            id: tid,
            name,
            deleted: SystemTime::now(),
            what,
        });
    });
    let a = s.account.read().clone();
    let t = a.trash.iter().find(|t| t.id == tid).expect("just trashed");
    json_response(StatusCode::OK, &json::trash_item(&a, t, &s.base_url))
}

fn restore_in(s: &Arc<Shared>, id: Option<u64>) -> Response {
    let found = id.is_some_and(|i| s.account.read().trash.iter().any(|t| t.id == i));
    if !found {
        return no_access("TrashItem");
    }
    let tid = id.expect("checked");
    let restored = s.change(|a| {
        let pos = a.trash.iter().position(|t| t.id == tid).expect("checked");
        let t = a.trash.remove(pos);
        match t.what {
            Trashed::Project(p) => {
                let pid = p.id;
                a.projects.push(p);
                for c in a.containers.values_mut().filter(|c| c.project == Some(pid)) {
                    c.trashed = false;
                }
            }
            Trashed::Container(r) => {
                if let Some(c) = a.containers.get_mut(&r) {
                    c.trashed = false;
                }
                if r.kind == ContainerKind::Run {
                    a.runs.push(r.id);
                }
            }
        }
        t.name
    });
    json_response(
        StatusCode::OK,
        &json!({"Id": tid.to_string(), "Name": restored, "Restored": true}),
    )
}
