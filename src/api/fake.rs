//! An in-process [`BaseSpaceApi`] over the emulator's account model: the same JSON the
//! emulator serves (rendered by its own functions), parsed by the same typed parsers as
//! the HTTP client, without a socket. For unit tests of the layers above the API (tree,
//! read path, filesystem core); the HTTP client is tested against the emulator itself, and
//! `tests/conformance.rs` holds both to the same answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::RwLock;
use serde_json::Value;

use super::model::{ContentMeta, EntityItem, FileInfo, ListItem, Listed, PropertyItem, User};
use super::{ApiError, BaseSpaceApi, ListKind, Pieces};
use crate::emulator::account::{Account, ContainerKind, ContainerRef, DatasetQuery, FileEntry};
use crate::emulator::json;

/// Where the fake's presigned URLs point (never fetched over a network).
const URL_PREFIX: &str = "fake://content/";

/// The fake's own request counters.
#[derive(Debug, Default)]
pub struct FakeCounters {
    pub lists: AtomicU64,
    pub urls: AtomicU64,
    pub ranges: AtomicU64,
}

pub struct FakeApi {
    account: RwLock<Arc<Account>>,
    pub counters: FakeCounters,
}

impl FakeApi {
    pub fn new(account: Account) -> Arc<FakeApi> {
        Arc::new(FakeApi {
            account: RwLock::new(Arc::new(account)),
            counters: FakeCounters::default(),
        })
    }

    /// Replaces the account, as a rescan of the emulator does (files change under the mount).
    pub fn replace(&self, account: Account) {
        *self.account.write() = Arc::new(account);
    }

    fn acct(&self) -> Arc<Account> {
        self.account.read().clone()
    }
}

/// Parses rendered JSON through the same path a page from the server takes.
fn typed<T: ListItem>(values: impl Iterator<Item = Value>) -> Listed<T> {
    let mut out = Listed::default();
    for v in values {
        let raw = serde_json::value::to_raw_value(&v).expect("rendered JSON serialises");
        match T::from_raw(&raw) {
            Ok(t) => out.items.push(t),
            Err(m) => out.skipped.push(m),
        }
    }
    out
}

fn not_found(what: &str) -> ApiError {
    ApiError::Forbidden {
        code: Some("BASESPACE.COMMON.NO_ACCESS".into()),
        message: format!("{what} not found or no access"),
    }
}

fn num(id: &str, what: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| not_found(what))
}

impl BaseSpaceApi for FakeApi {
    fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>> {
        let v = json::user(&self.acct());
        async move {
            let u: User = serde_json::from_value(v.clone()).map_err(|e| ApiError::Malformed {
                target: "users/current".into(),
                message: e.to_string(),
            })?;
            Ok((u, v))
        }
        .boxed()
    }

    fn list_entities(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<EntityItem>, ApiError>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let a = self.acct();
        let base = "http://fake";
        let r = (|| -> Result<Listed<EntityItem>, ApiError> {
            let containers = |pid: u64, kind: ContainerKind| -> Result<Vec<Value>, ApiError> {
                let p = a.project(pid).ok_or_else(|| not_found("Project"))?;
                let ids = if kind == ContainerKind::Sample {
                    &p.samples
                } else {
                    &p.appresults
                };
                Ok(ids
                    .iter()
                    .filter_map(|id| a.container(kind, *id))
                    .map(|c| match kind {
                        ContainerKind::Sample => json::sample(&a, c, false),
                        _ => json::appresult(&a, c, false),
                    })
                    .collect())
            };
            // As the client asks them: with their properties inline where it sends
            // `include=properties`.
            let datasets = |q: DatasetQuery, with_props: bool| -> Vec<Value> {
                a.datasets_where(&q)
                    .into_iter()
                    .map(|c| match with_props {
                        true => json::dataset_v2_with_properties(&a, c, base),
                        false => json::dataset_v2(&a, c, base),
                    })
                    .collect()
            };
            let values: Vec<Value> = match &kind {
                ListKind::Projects => a.projects.iter().map(|p| json::project(&a, p, false)).collect(),
                ListKind::Runs => a
                    .runs
                    .iter()
                    .filter_map(|id| a.container(ContainerKind::Run, *id))
                    .map(|c| json::run(&a, c, false))
                    .collect(),
                ListKind::Samples(p) => containers(num(p, "Project")?, ContainerKind::Sample)?,
                ListKind::AppResults(p) => containers(num(p, "Project")?, ContainerKind::AppResult)?,
                ListKind::AppSessions(p) => {
                    let pid = num(p, "Project")?;
                    let mut ss: Vec<_> = a.appsessions.values().filter(|s| s.project == pid).collect();
                    ss.sort_by_key(|s| s.id);
                    ss.into_iter().map(|s| json::appsession_v2(&a, s, base)).collect()
                }
                ListKind::AppSessionOutputs(s) => datasets(
                    DatasetQuery {
                        appsessions: Some(vec![num(s, "AppSession")?]),
                        ..DatasetQuery::default()
                    },
                    false,
                ),
                ListKind::ProjectDatasets(p) => datasets(
                    DatasetQuery {
                        project: Some(Some(num(p, "Project")?)),
                        ..DatasetQuery::default()
                    },
                    true,
                ),
                ListKind::BioSampleDatasets(b) => datasets(
                    DatasetQuery {
                        biosamples: Some(vec![num(b, "BioSample")?]),
                        ..DatasetQuery::default()
                    },
                    true,
                ),
                ListKind::BioSamples => a
                    .biosamples()
                    .into_iter()
                    .map(|c| json::biosample(&a, c, base))
                    .collect(),
                ListKind::BioSampleAppSessions(b) => a
                    .appsessions_reading(&[num(b, "BioSample")?])
                    .into_iter()
                    .map(|s| json::appsession_v2(&a, s, base))
                    .collect(),
                ListKind::FilesMetadata(inner) => {
                    files_of(&a, inner)?.into_iter().map(|f| json::file(f, false)).collect()
                }
                other => {
                    return Err(ApiError::Status {
                        status: 400,
                        code: None,
                        message: format!("{} is a files list", other.href()),
                    })
                }
            };
            Ok(typed(values.into_iter()))
        })();
        async move { r }.boxed()
    }

    fn list_files(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<FileInfo>, ApiError>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let a = self.acct();
        let r = files_of(&a, &kind).map(|fs| typed(fs.into_iter().map(|f| json::file(f, false))));
        async move { r }.boxed()
    }

    fn list_properties(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<PropertyItem>, ApiError>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let a = self.acct();
        let r = (|| -> Result<Listed<PropertyItem>, ApiError> {
            let ListKind::Properties(res, id) = &kind else {
                return Err(not_a(&kind, "properties list"));
            };
            let container =
                |k: ContainerKind, what: &str| a.container(k, num(id, what)?).ok_or_else(|| not_found(what));
            let props = match *res {
                "samples" => json::container_properties(&a, container(ContainerKind::Sample, "Sample")?),
                "appresults" => json::container_properties(&a, container(ContainerKind::AppResult, "AppResult")?),
                "runs" => json::container_properties(&a, container(ContainerKind::Run, "Run")?),
                "appsessions" => {
                    let s = a
                        .appsessions
                        .get(&num(id, "AppSession")?)
                        .ok_or_else(|| not_found("AppSession"))?;
                    json::appsession_properties(&a, s)
                }
                "datasets" => {
                    json::dataset_properties(&a, a.dataset(id).ok_or_else(|| not_found("Dataset"))?, "http://fake")
                }
                _ => Vec::new(),
            };
            Ok(typed(props.into_iter()))
        })();
        async move { r }.boxed()
    }

    fn content_meta(&self, file_id: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>> {
        self.counters.urls.fetch_add(1, Ordering::Relaxed);
        let known = file_id
            .parse::<u64>()
            .ok()
            .filter(|id| self.acct().files.contains_key(id));
        let r = match known {
            Some(id) => Ok(ContentMeta {
                href_content: format!("{URL_PREFIX}{id}"),
                expires: None,
                supports_range: Some(true),
            }),
            None => Err(not_found("File")),
        };
        async move { r }.boxed()
    }

    fn get_range(
        &self,
        url: &str,
        start: u64,
        len: u64,
        etag: Option<&str>,
        pieces: Pieces,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>> {
        self.counters.ranges.fetch_add(1, Ordering::Relaxed);
        let a = self.acct();
        let file = url
            .strip_prefix(URL_PREFIX)
            .and_then(|id| id.parse::<u64>().ok())
            .and_then(|id| a.files.get(&id).cloned());
        let etag = etag.map(|e| e.trim_matches('"').to_string());
        async move {
            let f = file.ok_or(ApiError::UrlExpired)?;
            if let Some(e) = etag.filter(|e| e != f.etag()) {
                return Err(ApiError::Changed {
                    expected: e,
                    got: f.etag().to_string(),
                });
            }
            if len == 0 || start + len > f.size {
                return Err(ApiError::Malformed {
                    target: url_of(f.id),
                    message: format!("asked bytes {start}+{len} of a {}-byte file", f.size),
                });
            }
            let mut out = Vec::new();
            let mut off = start;
            while off < start + len {
                let n = (pieces.size as u64).min(start + len - off) as usize;
                let mut buf = (pieces.alloc)(n);
                buf.resize(n, 0);
                crate::emulator::account::fill(&f.content, off, &mut buf).map_err(|e| ApiError::Transport {
                    target: url_of(f.id),
                    message: e.to_string(),
                    attempts: 1,
                })?;
                off += n as u64;
                out.push(buf);
            }
            Ok(out)
        }
        .boxed()
    }

    /// Single entities as the emulator answers them (the v1pre3 envelope).
    fn get_raw(&self, path: &str) -> BoxFuture<'_, Result<bytes::Bytes, ApiError>> {
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let a = self.acct();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let v = (|| -> Result<Value, ApiError> {
            let id = |what: &str| num(segs.get(2).copied().unwrap_or(""), what);
            let container = |k: ContainerKind, what: &str| -> Result<_, ApiError> {
                a.container(k, id(what)?).ok_or_else(|| not_found(what))
            };
            Ok(match segs.as_slice() {
                ["v1pre3", "users", "current"] => json::user(&a),
                ["v1pre3", "projects", _] => {
                    json::project(&a, a.project(id("Project")?).ok_or_else(|| not_found("Project"))?, true)
                }
                ["v1pre3", "samples", _] => json::sample(&a, container(ContainerKind::Sample, "Sample")?, true),
                ["v1pre3", "appresults", _] => {
                    json::appresult(&a, container(ContainerKind::AppResult, "AppResult")?, true)
                }
                ["v1pre3", "runs", _] => json::run(&a, container(ContainerKind::Run, "Run")?, true),
                ["v1pre3", "files", _] => json::file(a.files.get(&id("File")?).ok_or_else(|| not_found("File"))?, true),
                _ => return Err(not_found(path)),
            })
        })();
        let r = v.map(|v| {
            let body = serde_json::json!({"Response": v, "ResponseStatus": {}, "Notifications": []});
            bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        });
        async move { r }.boxed()
    }

    /// A list's items in the list's own shape, as the emulator lists them.
    fn list_raw(&self, kind: ListKind) -> BoxFuture<'_, Result<bytes::Bytes, ApiError>> {
        async move {
            let l = self.list_entities(kind.clone()).await?;
            let items: Vec<Value> = l
                .items
                .iter()
                .filter_map(|i| serde_json::from_str(&i.raw).ok())
                .collect();
            let n = items.len();
            let paging = serde_json::json!({"DisplayedCount": n, "TotalCount": n, "Offset": 0, "Limit": n,
                "SortDir": "Asc", "SortBy": kind.sort_by()});
            let body = match kind.is_v2() {
                true => serde_json::json!({"Items": items, "Paging": paging}),
                false => {
                    let mut r = paging;
                    r["Items"] = Value::Array(items);
                    serde_json::json!({"Response": r, "ResponseStatus": {}, "Notifications": []})
                }
            };
            Ok(bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
        }
        .boxed()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "api_requests",
                self.counters.lists.load(Ordering::Relaxed) + self.counters.urls.load(Ordering::Relaxed),
            ),
            ("content_requests", self.counters.ranges.load(Ordering::Relaxed)),
        ]
    }
}

fn not_a(kind: &ListKind, what: &str) -> ApiError {
    ApiError::Status {
        status: 400,
        code: None,
        message: format!("{} is not a {what}", kind.href()),
    }
}

/// The files a files listing (v1pre3 container files, v2 dataset files, logs) holds.
fn files_of<'a>(a: &'a Account, kind: &ListKind) -> Result<Vec<&'a Arc<FileEntry>>, ApiError> {
    let (ck, id, what) = match kind {
        ListKind::SampleFiles(id) => (ContainerKind::Sample, id, "Sample"),
        ListKind::AppResultFiles(id) => (ContainerKind::AppResult, id, "AppResult"),
        ListKind::RunFiles(id) => (ContainerKind::Run, id, "Run"),
        ListKind::DatasetFiles(ds) => {
            let c = a.dataset(ds).ok_or_else(|| not_found("Dataset"))?;
            return Ok(c.files.iter().filter_map(|f| a.files.get(f)).collect());
        }
        ListKind::DatasetFolder(_, dir) | ListKind::RunFolder(_, dir) => {
            // The files directly in the folder (the fake names no sub-folders).
            let c = match kind {
                ListKind::RunFolder(id, _) => a
                    .container(ContainerKind::Run, num(id, "Run")?)
                    .ok_or_else(|| not_found("Run"))?,
                ListKind::DatasetFolder(ds, _) => a.dataset(ds).ok_or_else(|| not_found("Dataset"))?,
                _ => unreachable!("matched above"),
            };
            let prefix = dir.trim_matches('/');
            return Ok(c
                .files
                .iter()
                .filter_map(|f| a.files.get(f))
                .filter(|f| f.path.rsplit_once('/').map_or("", |(d, _)| d) == prefix)
                .collect());
        }
        ListKind::AppSessionLogs(s) => {
            let s = a
                .appsessions
                .get(&num(s, "AppSession")?)
                .ok_or_else(|| not_found("AppSession"))?;
            return Ok(s.logs.iter().filter_map(|f| a.files.get(f)).collect());
        }
        other => return Err(not_a(other, "files list")),
    };
    let c = a
        .containers
        .get(&ContainerRef {
            kind: ck,
            id: num(id, what)?,
        })
        .ok_or_else(|| not_found(what))?;
    Ok(c.files.iter().filter_map(|f| a.files.get(f)).collect())
}

fn url_of(id: u64) -> String {
    format!("{URL_PREFIX}{id}")
}
