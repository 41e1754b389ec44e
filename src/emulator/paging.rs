//! Lists as BaseSpace pages, sorts and filters them.
//!
//! Paging: `Offset`/`Limit` (v1pre3) or `offset`/`limit` (v2), names read case-insensitively;
//! `Limit` defaults to 10 and is capped at 1024 (1000 for files). Sorting: each resource
//! accepts its own `SortBy` values (the v2 swagger's enums, the v1pre3 documentation); a
//! value it does not accept is not an error, the list is sorted by the resource's default
//! and the answer says so (recorded: biosamples asked `sortby=Name` answer `SortBy: Id`).
//! Items are rendered only when on the requested page.

use std::time::SystemTime;

use axum::response::Response;
use serde_json::{json, Value};

use super::account::{Account, FileEntry};
use super::http::{bad_request, json_response, ok, Query};
use super::state::Shared;

/// Lists default to 10 items, like BaseSpace.
const DEFAULT_LIMIT: u64 = 10;
/// Largest page for lists (files: [`MAX_FILES_LIMIT`]).
pub const MAX_LIMIT: u64 = 1024;
pub const MAX_FILES_LIMIT: u64 = 1000;

/// The sort fields a list accepts, and how it sorts when asked none (or one it does not
/// accept).
#[derive(Debug, Clone, Copy)]
pub struct Sorts {
    pub fields: &'static [&'static str],
    pub by: &'static str,
    pub desc: bool,
}

const fn sorts(fields: &'static [&'static str], by: &'static str, desc: bool) -> Sorts {
    Sorts { fields, by, desc }
}

/// v1pre3 projects, samples and appresults (recorded: `SortBy: Id`, `Asc` by default).
pub const V1_ENTITIES: Sorts = sorts(&["Id", "Name", "DateCreated"], "Id", false);
/// v1pre3 runs.
pub const V1_RUNS: Sorts = sorts(
    &["Id", "DateCreated", "DateModified", "ExperimentName", "Status", "Name"],
    "Id",
    false,
);
/// v1pre3 appsessions.
pub const V1_APPSESSIONS: Sorts = sorts(&["Id", "Name", "DateCreated", "DateModified"], "Id", false);
/// Files, v1pre3 and v2 (`V1pre3FilesSortFields`).
pub const FILES: Sorts = sorts(&["Id", "DateCreated", "Path", "Name"], "Id", false);
/// v2 biosamples (`V2BiologicalSamplesSortFields`).
pub const V2_BIOSAMPLES: Sorts = sorts(
    &[
        "Id",
        "BioSampleName",
        "Nickname",
        "DateModified",
        "UserOwnedBy",
        "Project",
        "Subject",
        "LabStatus",
        "Status",
    ],
    "Id",
    false,
);
/// v2 datasets (`V2DatasetsSortFields`); recorded default: `DateCreated`, `Desc`.
pub const V2_DATASETS: Sorts = sorts(
    &[
        "Name",
        "DateCreated",
        "DateModified",
        "AppSessionName",
        "ApplicationName",
        "ProjectName",
        "Size",
        "QcStatus",
    ],
    "DateCreated",
    true,
);
/// v2 appsessions (`V2AppSessionsSortFields`).
pub const V2_APPSESSIONS: Sorts = sorts(
    &[
        "Name",
        "Id",
        "AppId",
        "ExecutionStatus",
        "ModifiedOn",
        "DateCreated",
        "AppName",
        "TotalSize",
        "QcStatus",
        "DeliveryStatus",
    ],
    "Id",
    false,
);
/// v2 runs (`V2RunsSortFields`).
pub const V2_RUNS: Sorts = sorts(
    &[
        "Id",
        "DateCreated",
        "ExperimentName",
        "FlowcellBarcode",
        "LaneAndQcStatus",
        "PlatformName",
        "Status",
        "InstrumentName",
        "TotalSize",
    ],
    "Id",
    false,
);
/// v2 libraries (`V2LibrarySortFields`).
pub const V2_LIBRARIES: Sorts = sorts(
    &[
        "Id",
        "Name",
        "DateCreated",
        "DateModified",
        "ProjectName",
        "Biomolecule",
        "Status",
        "UserOwnedBy",
    ],
    "Id",
    false,
);
/// Properties (`V1pre3PropertySortFields`).
pub const PROPERTIES: Sorts = sorts(&["Name"], "Name", false);
/// Items of an array property (`V1pre3PropertyItemSortFields`).
pub const PROPERTY_ITEMS: Sorts = sorts(&["DateCreated"], "DateCreated", false);
/// The trash (`V1pre3TrashItemsSortFields`).
pub const TRASH: Sorts = sorts(&["DateDeleted", "TotalSize"], "DateDeleted", false);
/// Genomes and applications (`V1pre3ApplicationsSortFields` and alike).
pub const V1_CATALOG: Sorts = sorts(&["Id", "Name", "DateCreated"], "Id", false);

/// A value an item is sorted by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key<'a> {
    Num(u64),
    Text(&'a str),
    Time(SystemTime),
}

/// One item's sort keys: its id (the tie-break) and the fields it can be sorted by.
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    pub id: u64,
    fields: Vec<(&'static str, Key<'a>)>,
}

impl<'a> Keys<'a> {
    pub fn new(id: u64) -> Self {
        Keys { id, fields: Vec::new() }
    }

    /// The common ones: `Name` and `DateCreated`.
    pub fn named(id: u64, name: &'a str, created: SystemTime) -> Self {
        Keys::new(id)
            .with("Name", Key::Text(name))
            .with("DateCreated", Key::Time(created))
    }

    pub fn with(mut self, field: &'static str, k: Key<'a>) -> Self {
        self.fields.push((field, k));
        self
    }

    fn get(&self, field: &str) -> Option<&Key<'a>> {
        if field == "Id" {
            return None; // the tie-break
        }
        self.fields.iter().find(|(f, _)| *f == field).map(|(_, k)| k)
    }
}

/// Renders one list item; only items on the requested page are rendered.
pub type Render<'a> = Box<dyn FnOnce() -> Value + 'a>;

/// A list request's paging and sorting, as BaseSpace reads them.
pub struct PageReq {
    pub offset: u64,
    pub limit: u64,
    pub sort_by: &'static str,
    pub desc: bool,
}

impl PageReq {
    /// The request's paging, or the 400 BaseSpace answers for a malformed parameter.
    pub fn parse(q: &Query, max: u64, sorts: Sorts) -> Result<PageReq, Box<Response>> {
        let bad = |m: &str| Box::new(bad_request(m));
        let offset = match q.get("offset").map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Err(bad("Offset must be a non-negative integer")),
        };
        let limit = match q.get("limit").map(str::parse::<u64>) {
            None => DEFAULT_LIMIT,
            Some(Ok(n)) => n.min(max),
            Some(Err(_)) => return Err(bad("Limit must be a non-negative integer")),
        };
        let asked = q
            .get("sortby")
            .and_then(|s| sorts.fields.iter().find(|f| f.eq_ignore_ascii_case(s.trim())));
        let dir = q.get("sortdir").map(str::trim);
        let desc = match (asked, dir) {
            (_, Some(d)) if d.eq_ignore_ascii_case("desc") => true,
            (_, Some(d)) if d.eq_ignore_ascii_case("asc") => false,
            (Some(_), _) => false,
            (None, _) => sorts.desc,
        };
        Ok(PageReq {
            offset,
            limit,
            sort_by: asked.copied().unwrap_or(sorts.by),
            desc,
        })
    }

    fn paging(&self, shown: usize, total: u64) -> Value {
        json!({
            "DisplayedCount": shown, "TotalCount": total, "Offset": self.offset, "Limit": self.limit,
            "SortDir": if self.desc { "Desc" } else { "Asc" }, "SortBy": self.sort_by
        })
    }

    /// The v1pre3 or v2 list body for the page's items out of `total`, with one more
    /// field if given (v2 `SubDirectories`; a property's `Type` beside its items).
    pub fn body_with(&self, total: u64, shown: Vec<Value>, v2: bool, extra: Option<(&str, Value)>) -> Response {
        let mut paging = self.paging(shown.len(), total);
        let shown = Value::Array(shown);
        if v2 {
            let mut b = serde_json::Map::new();
            b.insert("Items".into(), shown);
            b.insert("Paging".into(), paging);
            if let Some((k, v)) = extra {
                b.insert(k.into(), v);
            }
            return json_response(axum::http::StatusCode::OK, &Value::Object(b));
        }
        // Keep BaseSpace's field order: Items first.
        let mut ordered = serde_json::Map::new();
        ordered.insert("Items".into(), shown);
        for k in ["DisplayedCount", "TotalCount", "Offset", "Limit", "SortDir", "SortBy"] {
            ordered.insert(k.into(), paging[k].take());
        }
        if let Some((k, v)) = extra {
            ordered.insert(k.into(), v);
        }
        ok(Value::Object(ordered))
    }

    /// Where the page starts and ends in a list of `total` items.
    pub fn window(&self, total: usize) -> std::ops::Range<usize> {
        let from = (self.offset as usize).min(total);
        from..(from + self.limit as usize).min(total)
    }

    fn sort(&self, items: &mut [(Render, Keys)]) {
        items.sort_by(|a, b| {
            let o = match (a.1.get(self.sort_by), b.1.get(self.sort_by)) {
                (Some(x), Some(y)) => x.cmp(y),
                _ => std::cmp::Ordering::Equal,
            };
            o.then(a.1.id.cmp(&b.1.id))
        });
        if self.desc {
            items.reverse();
        }
    }
}

/// Sorts and pages `items` into a v1pre3 or v2 list body.
pub fn page<'a>(q: &Query, items: Vec<(Render<'a>, Keys<'a>)>, sorts: Sorts, v2: bool) -> Response {
    page_with(q, items, MAX_LIMIT, sorts, v2, None)
}

/// [`page`] with one more field beside the items.
pub fn page_and<'a>(
    q: &Query,
    items: Vec<(Render<'a>, Keys<'a>)>,
    sorts: Sorts,
    v2: bool,
    field: (&str, Value),
) -> Response {
    page_with(q, items, MAX_LIMIT, sorts, v2, Some(field))
}

fn page_with<'a>(
    q: &Query,
    mut items: Vec<(Render<'a>, Keys<'a>)>,
    max: u64,
    sorts: Sorts,
    v2: bool,
    extra: Option<(&str, Value)>,
) -> Response {
    let req = match PageReq::parse(q, max, sorts) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    req.sort(&mut items);
    let total = items.len();
    let shown = items.drain(req.window(total)).map(|(v, _)| v()).collect();
    req.body_with(total as u64, shown, v2, extra)
}

/// A properties list (v1pre3 inside `Response`, v2 bare), by name.
pub fn properties_page(q: &Query, props: Vec<Value>, v2: bool) -> Response {
    let names: Vec<String> = props
        .iter()
        .map(|p| p["Name"].as_str().unwrap_or("").to_string())
        .collect();
    let items = props
        .into_iter()
        .zip(&names)
        .enumerate()
        .map(|(i, (p, name))| {
            let keys = Keys::new(i as u64).with("Name", Key::Text(name.as_str()));
            (Box::new(move || p) as Render, keys)
        })
        .collect();
    page(q, items, PROPERTIES, v2)
}

/// The file filters lists of files take: `Extensions` (`bam,vcf`; `fastq.gz`),
/// `ExcludeExtensions` (v2), `PathPrefix` (v2), `Statuses` (upload status).
pub struct FileFilter {
    extensions: Option<Vec<String>>,
    exclude: Vec<String>,
    prefix: Option<String>,
    statuses: Option<Vec<String>>,
}

impl FileFilter {
    pub fn of(q: &Query) -> FileFilter {
        let exts = |k: &str| {
            q.list(k).map(|v| {
                v.into_iter()
                    .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                    .collect::<Vec<_>>()
            })
        };
        FileFilter {
            extensions: exts("extensions"),
            exclude: exts("excludeextensions").unwrap_or_default(),
            prefix: q.get("pathprefix").map(|p| p.trim_start_matches('/').to_string()),
            statuses: q.list("statuses"),
        }
    }

    /// No filter asked: every file passes.
    pub fn is_empty(&self) -> bool {
        self.extensions.is_none() && self.exclude.is_empty() && self.prefix.is_none() && self.statuses.is_none()
    }

    /// Whether `f` passes; an extension is compared in place (no string made per file).
    pub fn keeps(&self, f: &FileEntry) -> bool {
        if self.is_empty() {
            return true;
        }
        let name = f.name().as_bytes();
        let has = |e: &String| {
            let e = e.as_bytes();
            name.len() > e.len()
                && name[name.len() - e.len() - 1] == b'.'
                && name[name.len() - e.len()..].eq_ignore_ascii_case(e)
        };
        self.extensions.as_ref().is_none_or(|es| es.iter().any(has))
            && !self.exclude.iter().any(has)
            && self.prefix.as_ref().is_none_or(|p| f.path.starts_with(p.as_str()))
            && self
                .statuses
                .as_ref()
                .is_none_or(|ss| ss.iter().any(|s| s.eq_ignore_ascii_case("complete")))
    }
}

/// `filehrefcontentresolution=true`: BaseSpace puts the file's presigned URL in `HrefContent`
/// (instead of the `…/content` API path), saving clients the round trip per file.
fn resolve_hrefs(q: &Query) -> bool {
    q.flag("filehrefcontentresolution")
}

/// A container's files (those the query's filters keep), paged, in the v1pre3 or v2 shape.
/// Sorting by Id (the default, and what clients page by) needs only the ids: a
/// 100,000-file run answers each page without touching the other files.
pub fn files_page(s: &Shared, q: &Query, a: &Account, ids: &[u64], v2: bool) -> Response {
    files_page_with(s, q, a, ids, v2, None)
}

/// `…/files?directory=/a/b/`: the files directly in that folder (all below it with
/// `includesubdirectories=true` or `recursive=true`), and its sub-folders as
/// `SubDirectories`.
pub fn folder_page(s: &Shared, q: &Query, a: &Account, ids: &[u64], dir: &str, base: &str) -> Response {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let prefix = dir.trim_matches('/');
    let deep = q.flag("includesubdirectories") || q.flag("recursive");
    let mut subs: Vec<String> = Vec::new();
    let mut inside: Vec<u64> = Vec::new();
    for id in ids {
        let Some(f) = a.files.get(id) else { continue };
        let rest = if prefix.is_empty() {
            Some(f.path.as_str())
        } else {
            f.path.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
        };
        let Some(rest) = rest else { continue };
        match rest.split_once('/') {
            None => inside.push(*id),
            Some((sub, _)) => {
                if deep {
                    inside.push(*id);
                }
                if !subs.iter().any(|x| x == sub) {
                    subs.push(sub.to_string());
                }
            }
        }
    }
    subs.sort();
    let listed: Vec<Value> = subs
        .iter()
        .map(|d| {
            let path = if prefix.is_empty() {
                format!("/{d}/")
            } else {
                format!("/{prefix}/{d}/")
            };
            json!({"Name": d, "Href": format!("{base}?directory={}", utf8_percent_encode(&path, NON_ALPHANUMERIC))})
        })
        .collect();
    files_page_with(s, q, a, &inside, true, Some(("SubDirectories", Value::Array(listed))))
}

fn files_page_with(
    s: &Shared,
    q: &Query,
    a: &Account,
    ids: &[u64],
    v2: bool,
    extra: Option<(&str, Value)>,
) -> Response {
    let req = match PageReq::parse(q, MAX_FILES_LIMIT, FILES) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let resolve = resolve_hrefs(q);
    let filter = FileFilter::of(q);
    if req.sort_by != "Id" {
        let items = ids
            .iter()
            .filter_map(|i| a.files.get(i))
            .filter(|f| filter.keeps(f))
            .map(|f| {
                let keys = Keys::named(f.id, f.name(), f.created).with("Path", Key::Text(&f.path));
                (Box::new(move || s.file_json_in(f, false, resolve, v2)) as Render, keys)
            })
            .collect();
        return page_with(q, items, MAX_FILES_LIMIT, FILES, v2, extra);
    }
    // By Id, the usual listing: without a filter only the page's own files are looked at
    // (looking up all of a 100,000-file run's files for each of its 100 pages took the
    // emulator 40 ms a page).
    let mut sorted: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|i| filter.is_empty() || a.files.get(i).is_some_and(|f| filter.keeps(f)))
        .collect();
    sorted.sort_unstable();
    if req.desc {
        sorted.reverse();
    }
    let shown = sorted[req.window(sorted.len())]
        .iter()
        .filter_map(|i| a.files.get(i))
        .map(|f| s.file_json_in(f, false, resolve, v2))
        .collect();
    req.body_with(sorted.len() as u64, shown, v2, extra)
}
