//! BaseSpace API client: credentials, typed models, paging, retries, presigned content.
//!
//! The layers above talk to BaseSpace only through [`BaseSpaceApi`], a small trait, so the
//! tree and the read path can be tested against an in-memory fake; the real implementation
//! is [`HttpClient`].

pub mod auth;
pub mod client;
pub mod config;
pub mod error;
pub mod fake;
pub mod faulty;
pub mod model;
pub mod netguard;
pub mod write;

use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;

pub use client::{HttpClient, RetryPolicy};
pub use config::{Credentials, Token};
pub use error::{ApiError, ConfigError};
pub use model::{ContentMeta, Entity, EntityItem, FileInfo, Listed, PropertyItem, User};

/// Characters left as they are in a URL path segment built from a server-given id; every
/// other byte is percent-encoded, so an id such as `../../etc` stays one segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One path segment for `id`: percent-encoded, and never `.` or `..` (which URL
/// normalisation would resolve away even when encoded).
pub fn segment(id: &str) -> String {
    match id {
        "" | "." | ".." => id.replace('.', "%2E"),
        _ => percent_encoding::utf8_percent_encode(id, SEGMENT).to_string(),
    }
}

/// The lists the mount reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListKind {
    Projects,
    Runs,
    Samples(String),
    AppResults(String),
    /// v2 `appsessions?output.projects=ID`: what BaseSpace itself uses for a project's analyses.
    AppSessions(String),
    /// v2 `datasets?appsessionids=ID`: what an appsession produced (`V1pre3Id` = `sample.N` / `appresult.N`).
    AppSessionOutputs(String),
    SampleFiles(String),
    AppResultFiles(String),
    RunFiles(String),
    /// v2 `biosamples`: every biosample of the account.
    BioSamples,
    /// v2 `datasets?inputbiosamples=ID&include=properties`: the datasets made from a
    /// biosample, each with its properties (so its `Properties/` costs no request).
    BioSampleDatasets(String),
    /// v2 `biosamples/{id}/libraries`: the libraries prepared from a biosample.
    BioSampleLibraries(String),
    /// v2 `appsessions?input.biosamples=ID`: the analyses that read a biosample.
    BioSampleAppSessions(String),
    /// v2 `datasets?projectid=ID&include=properties`: a project's datasets (its samples and
    /// appresults too), with their properties.
    ProjectDatasets(String),
    /// v2 `datasets/{id}/files`: every file of a dataset.
    DatasetFiles(String),
    /// v2 `datasets/{id}/files?directory=<dir>`: the files of one folder (`/`, `/a/b/`) and
    /// the folders below it, so a dataset of 100,000 files opens with one request.
    DatasetFolder(String, String),
    /// v2 `runs/{id}/files?directory=<dir>`: one folder of a run's files (its `Logs/`).
    RunFolder(String, String),
    /// v2 `appsessions/{id}/logfiles`.
    AppSessionLogs(String),
    /// `{resource}/{id}/properties` (v1pre3 for samples, appresults, runs, appsessions,
    /// projects; v2 for datasets and biosamples): resource path and id.
    Properties(&'static str, String),
    /// The same files as the listing inside, one metadata directory each (`Files.metadata/`).
    FilesMetadata(Box<ListKind>),
    /// `oauthv2/token/current`: what the token may do and until when (`.AccessToken/`).
    AccessToken,
    /// v2 `trash`: what was moved to the trash (`.Trash/`).
    Trash,
}

impl ListKind {
    /// (path, extra query ending in '&' or empty, is v2, max page size).
    fn request(&self) -> (String, String, bool, u64) {
        use client::{MAX_FILES_LIMIT as F, MAX_LIMIT as L};
        match self {
            ListKind::Projects => ("v1pre3/users/current/projects".into(), String::new(), false, L),
            ListKind::Runs => ("v1pre3/users/current/runs".into(), String::new(), false, L),
            ListKind::Samples(id) => (
                format!("v1pre3/projects/{}/samples", segment(id)),
                String::new(),
                false,
                L,
            ),
            ListKind::AppResults(id) => (
                format!("v1pre3/projects/{}/appresults", segment(id)),
                String::new(),
                false,
                L,
            ),
            ListKind::AppSessions(id) => (
                "v2/appsessions".into(),
                format!("output.projects={}&", segment(id)),
                true,
                L,
            ),
            ListKind::AppSessionOutputs(id) => {
                ("v2/datasets".into(), format!("appsessionids={}&", segment(id)), true, L)
            }
            ListKind::SampleFiles(id) => (format!("v1pre3/samples/{}/files", segment(id)), String::new(), false, F),
            ListKind::AppResultFiles(id) => (
                format!("v1pre3/appresults/{}/files", segment(id)),
                String::new(),
                false,
                F,
            ),
            ListKind::RunFiles(id) => (format!("v1pre3/runs/{}/files", segment(id)), String::new(), false, F),
            ListKind::BioSamples => ("v2/biosamples".into(), String::new(), true, L),
            ListKind::BioSampleDatasets(id) => (
                "v2/datasets".into(),
                format!("inputbiosamples={}&include=properties&", segment(id)),
                true,
                L,
            ),
            ListKind::BioSampleAppSessions(id) => (
                "v2/appsessions".into(),
                format!("input.biosamples={}&", segment(id)),
                true,
                L,
            ),
            ListKind::BioSampleLibraries(id) => (
                format!("v2/biosamples/{}/libraries", segment(id)),
                String::new(),
                true,
                L,
            ),
            ListKind::ProjectDatasets(id) => (
                "v2/datasets".into(),
                format!("projectid={}&include=properties&", segment(id)),
                true,
                L,
            ),
            ListKind::DatasetFiles(id) => (format!("v2/datasets/{}/files", segment(id)), String::new(), true, F),
            ListKind::DatasetFolder(id, dir) => (
                format!("v2/datasets/{}/files", segment(id)),
                format!(
                    "directory={}&",
                    percent_encoding::utf8_percent_encode(dir, percent_encoding::NON_ALPHANUMERIC)
                ),
                true,
                F,
            ),
            ListKind::RunFolder(id, dir) => (
                format!("v2/runs/{}/files", segment(id)),
                format!(
                    "directory={}&",
                    percent_encoding::utf8_percent_encode(dir, percent_encoding::NON_ALPHANUMERIC)
                ),
                true,
                F,
            ),
            ListKind::AppSessionLogs(id) => (
                format!("v2/appsessions/{}/logfiles", segment(id)),
                String::new(),
                true,
                F,
            ),
            ListKind::Properties(res, id) => {
                let v2 = matches!(*res, "datasets" | "biosamples");
                let api = if v2 { "v2" } else { "v1pre3" };
                (format!("{api}/{res}/{}/properties", segment(id)), String::new(), v2, L)
            }
            ListKind::FilesMetadata(inner) => inner.request(),
            ListKind::AccessToken => ("v1pre3/oauthv2/token/current".into(), String::new(), false, L),
            ListKind::Trash => ("v2/trash".into(), String::new(), true, L),
        }
    }

    /// A sort the list accepts and that keeps pages stable while items are added (v2
    /// resources each accept their own fields: datasets have no `Id` sort, and a field a
    /// resource does not accept falls back to its default order).
    pub fn sort_by(&self) -> &'static str {
        match self {
            ListKind::AppSessionOutputs(_) | ListKind::BioSampleDatasets(_) | ListKind::ProjectDatasets(_) => {
                "DateCreated"
            }
            ListKind::Trash => "DateDeleted",
            ListKind::Properties(..) => "Name",
            ListKind::FilesMetadata(inner) => inner.sort_by(),
            _ => "Id",
        }
    }

    /// A folder listing's path (`/`, `/a/b/`), and the listing of its sub-folder `sub`.
    pub fn folder(&self) -> Option<&str> {
        match self {
            ListKind::DatasetFolder(_, dir) | ListKind::RunFolder(_, dir) => Some(dir),
            _ => None,
        }
    }

    pub fn subfolder(&self, sub: &str) -> Option<ListKind> {
        match self {
            ListKind::DatasetFolder(id, dir) => Some(ListKind::DatasetFolder(id.clone(), format!("{dir}{sub}/"))),
            ListKind::RunFolder(id, dir) => Some(ListKind::RunFolder(id.clone(), format!("{dir}{sub}/"))),
            _ => None,
        }
    }

    /// Whether answers to this list are v2 shaped.
    pub fn is_v2(&self) -> bool {
        self.request().2
    }

    /// The API path a directory built from this list was filled from (for `.href`).
    pub fn href(&self) -> String {
        let (path, extra, _, _) = self.request();
        if extra.is_empty() {
            path
        } else {
            format!("{path}?{}", extra.trim_end_matches('&'))
        }
    }
}

/// How a ranged GET's body is cut: consecutive buffers of `size` bytes (the last one
/// shorter), each from `alloc(capacity)`. The read layer passes its block size and a pool of
/// recycled block buffers: fresh memory for every block costs a page fault per 4 KiB.
#[derive(Clone)]
pub struct Pieces {
    pub size: usize,
    pub alloc: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    /// Without an ETag to ask for: told the ETag each response carries (`None`: it had
    /// none), before its body is read; `false` refuses the response as another version
    /// ([`ApiError::Changed`]).
    pub version_seen: Option<VersionSeen>,
}

/// See [`Pieces::version_seen`].
pub type VersionSeen = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

impl Pieces {
    /// One buffer for the whole body.
    pub fn whole() -> Pieces {
        Pieces {
            size: usize::MAX,
            alloc: Arc::new(Vec::with_capacity),
            version_seen: None,
        }
    }
}

/// What the filesystem needs from BaseSpace.
pub trait BaseSpaceApi: Send + Sync + 'static {
    /// `users/current`: typed view and raw JSON.
    fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>>;
    /// Every entity of a list (projects, runs, samples, appresults, appsessions, datasets),
    /// all pages, deduplicated by Id; malformed items are skipped and named in `skipped`.
    fn list_entities(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<EntityItem>, ApiError>>;
    /// Every file of a files list, likewise.
    fn list_files(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<FileInfo>, ApiError>>;
    /// Every property of an entity ([`ListKind::Properties`]), likewise.
    fn list_properties(&self, _kind: ListKind) -> BoxFuture<'_, Result<Listed<PropertyItem>, ApiError>> {
        Box::pin(async { Ok(Listed::default()) })
    }
    /// `oauthv2/token/current` without the token itself: scopes, dates, application.
    fn token_info(&self) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async {
            Err(ApiError::Status {
                status: 404,
                code: None,
                message: "no token information here".into(),
            })
        })
    }
    /// `files/{id}/content?redirect=meta`: the presigned URL and when it expires (or the
    /// one the file's listing resolved, with no request).
    fn content_meta(&self, file_id: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>>;
    /// The file's URL was refused: the next [`BaseSpaceApi::content_meta`] must ask anew.
    fn url_refused(&self, _file_id: &str) {}
    /// Exactly `len` bytes at `start` of a presigned URL, or an error; never fewer bytes.
    /// With `etag`, the bytes must be of that version (`If-Match`, and the response's ETag
    /// compared): otherwise [`ApiError::Changed`]. The body arrives cut into `pieces` (see
    /// [`Pieces`]), so a fetch of many cache blocks lands in the block buffers directly.
    fn get_range(
        &self,
        url: &str,
        start: u64,
        len: u64,
        etag: Option<&str>,
        pieces: Pieces,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>>;
    /// Makes a call that changes BaseSpace ([`write`]); the answer's `Response` (v1pre3)
    /// or body (v2).
    fn send(&self, call: write::Call) -> BoxFuture<'_, Result<Value, ApiError>> {
        Box::pin(async move {
            Err(ApiError::Status {
                status: 405,
                code: None,
                message: format!("{} is not supported here", call.path),
            })
        })
    }
    /// One resource's answer as BaseSpace sent it (the v1pre3 envelope, or the v2 body),
    /// for a directory's `.json`; `path` is relative to the API server.
    fn get_raw(&self, path: &str) -> BoxFuture<'_, Result<bytes::Bytes, ApiError>> {
        let path = path.to_string();
        Box::pin(async move {
            Err(ApiError::Status {
                status: 404,
                code: None,
                message: format!("{path} is not served here"),
            })
        })
    }
    /// Every item of a list as one answer in the list's own shape (v1pre3 envelope with all
    /// items, or v2 `{Items, Paging}`), for a list directory's `.json`.
    fn list_raw(&self, kind: ListKind) -> BoxFuture<'_, Result<bytes::Bytes, ApiError>> {
        Box::pin(async move {
            Err(ApiError::Status {
                status: 404,
                code: None,
                message: format!("{} is not served here", kind.href()),
            })
        })
    }
    /// Request counters, for `bsmount status` (name, value).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// A URL safe to log: signatures, tokens and credentials in the query are replaced.
pub fn redact_url(s: &str) -> String {
    const SECRET_KEYS: &[&str] = &[
        "signature",
        "access_token",
        "x-amz-signature",
        "x-amz-credential",
        "awsaccesskeyid",
        "x-amz-security-token",
        "token",
    ];
    let Some(qpos) = s.find('?') else {
        return s.to_string();
    };
    let (base, query) = s.split_at(qpos);
    let redacted: Vec<String> = query[1..]
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if SECRET_KEYS.iter().any(|sk| k.eq_ignore_ascii_case(sk)) => {
                format!("{k}=REDACTED")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", redacted.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_signatures_and_tokens() {
        let u = "http://h/c/1/x?Expires=5&Signature=SIGVALUE&access_token=TOKVALUE&a=b";
        let r = redact_url(u);
        assert!(!r.contains("SIGVALUE") && !r.contains("TOKVALUE"), "{r}");
        assert!(r.contains("Expires=5") && r.contains("a=b"));
    }

    #[test]
    fn ids_become_one_url_segment() {
        assert_eq!(segment("123"), "123");
        assert_eq!(segment("ds.ab-1_x"), "ds.ab-1_x");
        assert_eq!(segment("../../etc"), "..%2F..%2Fetc");
        assert_eq!(segment(".."), "%2E%2E");
        let (path, ..) = ListKind::SampleFiles("../../../../etc".into()).request();
        assert_eq!(path, "v1pre3/samples/..%2F..%2F..%2F..%2Fetc/files");
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(client::parse_content_range("bytes 0-9/100"), Some((0, 9)));
        assert_eq!(client::parse_content_range("bytes */100"), None);
    }
}
