//! The HTTP side of the emulator: BaseSpace API routes, presigned content, `/browse/`,
//! and `/_emulator/*` introspection.
//!
//! Routing is done by hand rather than with axum's router because BaseSpace treats query
//! parameter names case-insensitively and answers unknown paths with its own envelope.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters escaped in URL path segments: everything but RFC 3986 unreserved ones, as S3 does.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
use serde_json::{json, Value};
use sha2::Sha256;

use super::account::{fill, Account, ContainerKind, DatasetQuery, FileEntry};
use super::faults::{Fault, Faults};
use super::http::{json_response, Query};
use super::json;
use crate::api::model::format_date;

/// Lists default to 10 items, like BaseSpace.
const DEFAULT_LIMIT: u64 = 10;
/// Largest page for lists (files: [`MAX_FILES_LIMIT`]).
const MAX_LIMIT: u64 = 1024;
const MAX_FILES_LIMIT: u64 = 1000;
/// Largest request body taken (an upload part or a single-request file): S3's parts go to
/// 5 GiB, BaseSpace's uploaders send 8 MiB; 2 GiB lets a benchmark send 1 GiB in one part.
const MAX_WRITE_BODY: usize = 2 << 30;
/// Body chunk when no bandwidth cap applies: big enough for GB/s on loopback.
const FAST_CHUNK: usize = 1 << 20;
/// Body chunk under a bandwidth cap: small enough for smooth pacing.
const PACED_CHUNK: usize = 64 << 10;

/// Introspection counters (`GET /_emulator/stats`).
#[derive(Debug, Default)]
pub struct Stats {
    pub api_requests: AtomicU64,
    pub content_requests: AtomicU64,
    pub content_bytes: AtomicU64,
    pub browse_requests: AtomicU64,
    pub unauthorized: AtomicU64,
    /// `files/{id}/content` calls (each hands out a fresh presigned URL).
    pub url_requests: AtomicU64,
    /// Presigned URLs handed out inside file JSON (`filehrefcontentresolution=true`).
    pub resolved_in_listings: AtomicU64,
    /// Presigned requests refused because the URL had expired.
    pub expired_refusals: AtomicU64,
    /// API requests being answered now, and the most at once since the last reset
    /// (`/_emulator/stats?reset=peak`): how parallel a client's listings are.
    pub api_in_flight: AtomicU64,
    pub api_in_flight_peak: AtomicU64,
}

/// Counts an API request as in flight until it is answered.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn new(s: &'a Stats) -> Self {
        let now = s.api_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        s.api_in_flight_peak.fetch_max(now, Ordering::Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.api_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared server state.
pub struct Shared {
    pub account: RwLock<Arc<Account>>,
    pub token: String,
    pub base_url: String,
    pub url_ttl: Duration,
    pub faults: Faults,
    pub stats: Stats,
    /// Rebuilds the account from its source (`POST /_emulator/rescan`).
    pub rescan: Option<super::Rescan>,
    /// OAuth device codes handed out → polls so far.
    pub devices: super::oauth::DeviceFlow,
    /// `true` while an outage is emulated: requests hang until it ends.
    pub outage: tokio::sync::watch::Sender<bool>,
    /// Scopes of the token (`oauthv2/token/current`); writes need `CREATE GLOBAL`, the
    /// trash `MOVETOTRASH GLOBAL`.
    pub scopes: Vec<String>,
    /// Uploads in progress, new ids, one change at a time.
    pub writes: super::write::Writes,
    secret: [u8; 32],
    browse: RwLock<Arc<BrowseIndex>>,
}

/// Display path → file, and the set of directories, for `/browse/` and the manifest.
#[derive(Default)]
pub struct BrowseIndex {
    files: BTreeMap<String, Arc<FileEntry>>,
    dirs: BTreeSet<String>,
}

impl BrowseIndex {
    fn build(a: &Account) -> Self {
        let mut idx = BrowseIndex::default();
        idx.dirs.insert(String::new());
        idx.dirs.insert("Projects".into());
        idx.dirs.insert("Runs".into());
        for (path, f) in a.display_paths() {
            let mut p = path.as_str();
            while let Some(pos) = p.rfind('/') {
                p = &p[..pos];
                idx.dirs.insert(p.to_string());
            }
            idx.files.insert(path, f);
        }
        idx
    }
}

impl Shared {
    pub fn new(account: Account, token: String, base_url: String, url_ttl: Duration, faults: Faults) -> Self {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut secret);
        let browse = RwLock::new(Arc::new(BrowseIndex::build(&account)));
        Shared {
            account: RwLock::new(Arc::new(account)),
            token,
            base_url,
            url_ttl,
            faults,
            stats: Stats::default(),
            outage: tokio::sync::watch::channel(false).0,
            rescan: None,
            devices: Default::default(),
            scopes: super::oauth::DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            writes: Default::default(),
            secret,
            browse,
        }
    }

    /// Replaces the account (used by rescans).
    pub fn replace_account(&self, account: Account) {
        *self.browse.write() = Arc::new(BrowseIndex::build(&account));
        *self.account.write() = Arc::new(account);
    }

    fn sign(&self, file_id: u64, expires: u64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("{file_id}:{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A file's JSON; with `resolve`, `HrefContent` is a fresh presigned URL.
    fn file_json(&self, f: &FileEntry, full: bool, resolve: bool) -> Value {
        self.file_json_in(f, full, resolve, false)
    }

    /// A file's JSON in a v1pre3 (relative hrefs) or v2 (absolute) listing.
    fn file_json_in(&self, f: &FileEntry, full: bool, resolve: bool, v2: bool) -> Value {
        let mut v = if v2 {
            json::file_v2(f, &self.base_url)
        } else {
            json::file(f, full)
        };
        if resolve {
            self.stats.resolved_in_listings.fetch_add(1, Ordering::Relaxed);
            v["HrefContent"] = Value::String(self.presign(f).0);
        }
        v
    }

    fn presign(&self, f: &FileEntry) -> (String, SystemTime) {
        let exp_t = SystemTime::now() + self.url_ttl;
        let expires = exp_t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let obj = format!("{:016x}{:016x}", super::account::splitmix64(f.id ^ 0x5a5a), f.id);
        // The name segment is cosmetic (the object key carries the id); "." and ".." would be
        // resolved away by URL normalisation, even percent-encoded.
        let name = match f.name() {
            "" | "." | ".." => "file".to_string(),
            n => utf8_percent_encode(n, SEGMENT).to_string(),
        };
        let url = format!(
            "{}/content/{obj}/{name}?AWSAccessKeyId=BSMOUNTEMULATOR&Expires={expires}&response-content-disposition=filename%3D{name}&response-content-type={}&Signature={}",
            self.base_url,
            utf8_percent_encode(f.content_type, NON_ALPHANUMERIC),
            self.sign(f.id, expires)
        );
        (url, UNIX_EPOCH + Duration::from_secs(expires))
    }
}

/// The single entry point.
pub async fn handle(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    let headers = req.headers().clone();
    if let Some(rest) = path.strip_prefix("/_emulator/") {
        return introspect(&s, rest, &query);
    }
    let api_call = !(path.starts_with("/content/") || path == "/browse" || path.starts_with("/browse/"));
    let _in_flight = api_call.then(|| InFlight::new(&s.stats));
    // An emulated outage: the server accepts and never answers until the outage ends.
    let mut outage = s.outage.subscribe();
    while *outage.borrow_and_update() {
        if outage.changed().await.is_err() {
            break;
        }
    }
    if !s.faults.profile.latency.is_zero() {
        tokio::time::sleep(s.faults.profile.latency).await;
    }
    if let Some(rest) = path.strip_prefix("/content/") {
        s.stats.content_requests.fetch_add(1, Ordering::Relaxed);
        return presigned(&s, rest, &query, &method, &headers);
    }
    if path == "/browse" || path.starts_with("/browse/") {
        s.stats.browse_requests.fetch_add(1, Ordering::Relaxed);
        return browse(
            &s,
            path.trim_start_matches("/browse").trim_start_matches('/'),
            &method,
            &headers,
        );
    }
    s.stats.api_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = injected_error(&s, false) {
        return r;
    }
    if let Some(endpoint) = path.strip_prefix("/v1pre3/oauthv2/").filter(|e| *e != "token/current") {
        // OAuth parameters come in the query or as a form body.
        let body = axum::body::to_bytes(req.into_body(), 64 << 10)
            .await
            .unwrap_or_default();
        let mut params = Query::parse(std::str::from_utf8(&body).ok());
        params.0.extend(query.0);
        return s.devices.handle(&s.token, &s.base_url, endpoint, &method, &params);
    }
    if !authorized(&s, &headers, &query) {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNAUTHORIZED,
            Some("BASESPACE.COMMON.UNAUTHORIZED"),
            "Please provide a valid access token",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = match read_paced(&s, req.into_body(), length).await {
            Ok(b) => b,
            Err(_) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some("BASESPACE.COMMON.TOO_LARGE"),
                    "request body too large or cut short",
                )
            }
        };
        return super::write::handle(&s, &path, &query, &method, &headers, body);
    }
    let acct = s.account.read().clone();
    api(&s, &acct, &path, &query, &method, &headers)
}

/// A request body, taken no faster than the emulated link allows (`--bandwidth` applies to
/// uploads as to downloads, per connection: TCP holds the sender back), at most
/// [`MAX_WRITE_BODY`].
async fn read_paced(s: &Shared, body: Body, length: Option<usize>) -> Result<Bytes, ()> {
    use futures::StreamExt;
    let bw = s.faults.profile.bandwidth;
    let t0 = Instant::now();
    let mut stream = body.into_data_stream();
    // Room for the whole body at once (no copies as it grows), up to a part's worth before
    // any byte arrived.
    let mut buf = bytes::BytesMut::with_capacity(length.unwrap_or(0).min(64 << 20));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ())?;
        if buf.len() + chunk.len() > MAX_WRITE_BODY {
            return Err(());
        }
        buf.extend_from_slice(&chunk);
        if bw > 0 {
            let due = Duration::from_secs_f64(buf.len() as f64 / bw as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(buf.freeze())
}

fn authorized(s: &Shared, h: &HeaderMap, q: &Query) -> bool {
    let given = h
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            h.get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(|| q.get("access_token").map(str::to_string));
    // Constant-time compare, as a real server would.
    given.is_some_and(|g| {
        g.len() == s.token.len() && g.bytes().zip(s.token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

fn injected_error(s: &Shared, has_body: bool) -> Option<Response> {
    match s.faults.draw(has_body) {
        Fault::Throttle429 => Some(with_retry_after(error(
            StatusCode::TOO_MANY_REQUESTS,
            Some("BASESPACE.COMMON.TOO_MANY_REQUESTS"),
            "Rate limit exceeded",
        ))),
        Fault::Error500 => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("BASESPACE.COMMON.INTERNAL_SERVER_ERROR"),
            "An internal error occurred (injected)",
        )),
        Fault::Unavailable503 => Some(with_retry_after(error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "Service temporarily unavailable (injected)",
        ))),
        Fault::ResetAfter(_) | Fault::None => None,
    }
}

fn with_retry_after(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub fn ok(v: Value) -> Response {
    // Built by moving `v` in: `json!` would copy a whole list body once more.
    let mut m = serde_json::Map::new();
    m.insert("Response".into(), v);
    m.insert("ResponseStatus".into(), json!({}));
    m.insert("Notifications".into(), json!([]));
    json_response(StatusCode::OK, &Value::Object(m))
}

/// The v1pre3 error envelope (as recorded for 403s).
pub(crate) fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
    let mut rs = json!({"Message": message});
    if let Some(c) = code {
        rs["ErrorCode"] = json!(c);
    }
    let notes = if code.is_some() {
        json!([{"Type": "error", "Item": message}])
    } else {
        json!([])
    };
    json_response(status, &json!({"ResponseStatus": rs, "Notifications": notes}))
}

fn unrecognized() -> Response {
    error(
        StatusCode::NOT_FOUND,
        None,
        "This isn't a recognized path. Please refer to the API documentation at https://developer.basespace.illumina.com/docs for the available resources.",
    )
}

/// What BaseSpace answers for an id that does not exist or is not yours (recorded: 403).
pub(crate) fn no_access(kind: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        Some("BASESPACE.COMMON.INSUFFICIENT_RESOURCE_PERMISSIONS"),
        &format!("Sorry but this requires READ access to this {kind} resource."),
    )
}

/// Renders one list item; only items on the requested page are rendered.
type Render<'a> = Box<dyn FnOnce() -> Value + 'a>;

/// A list request's paging parameters, as BaseSpace reads them.
struct PageReq {
    offset: u64,
    limit: u64,
    sort_by: &'static str,
    desc: bool,
}

impl PageReq {
    /// The request's paging, or the 400 BaseSpace answers for a malformed parameter.
    fn parse(q: &Query, max: u64) -> Result<PageReq, Box<Response>> {
        let bad = |m: &str| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                Some("BASESPACE.COMMON.INVALID_PARAMETER"),
                m,
            ))
        };
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
        let sort_by = match q.get("sortby").map(|s| s.to_ascii_lowercase()) {
            Some(s) if s == "name" => "Name",
            Some(s) if s == "datecreated" => "DateCreated",
            Some(s) if s == "path" => "Path",
            _ => "Id",
        };
        let desc = q.get("sortdir").is_some_and(|d| d.eq_ignore_ascii_case("desc"));
        Ok(PageReq {
            offset,
            limit,
            sort_by,
            desc,
        })
    }

    /// The v1pre3 or v2 list body for the page's items out of `total`, with one more
    /// top-level field if given (v2 `SubDirectories`).
    fn body_with(&self, total: u64, shown: Vec<Value>, v2: bool, extra: Option<(&str, Value)>) -> Response {
        let paging = json!({
            "DisplayedCount": shown.len(), "TotalCount": total, "Offset": self.offset, "Limit": self.limit,
            "SortDir": if self.desc { "Desc" } else { "Asc" }, "SortBy": self.sort_by
        });
        let shown = Value::Array(shown);
        if v2 {
            let mut b = serde_json::Map::new();
            b.insert("Items".into(), shown);
            b.insert("Paging".into(), paging);
            if let Some((k, v)) = extra {
                b.insert(k.into(), v);
            }
            return json_response(StatusCode::OK, &Value::Object(b));
        }
        let mut r = paging;
        // Keep BaseSpace's field order: Items first.
        let mut ordered = serde_json::Map::new();
        ordered.insert("Items".into(), shown);
        for k in ["DisplayedCount", "TotalCount", "Offset", "Limit", "SortDir", "SortBy"] {
            ordered.insert(k.into(), r[k].take());
        }
        ok(Value::Object(ordered))
    }

    /// Where the page starts and ends in a list of `total` items.
    fn window(&self, total: usize) -> std::ops::Range<usize> {
        let from = (self.offset as usize).min(total);
        from..(from + self.limit as usize).min(total)
    }
}

/// Sorts and pages `items` (each with its sort keys) into a v1pre3 or v2 list body.
fn page<'a>(q: &Query, items: Vec<(Render<'a>, SortKeys<'a>)>, max: u64, v2: bool) -> Response {
    page_with(q, items, max, v2, None)
}

fn page_with<'a>(
    q: &Query,
    mut items: Vec<(Render<'a>, SortKeys<'a>)>,
    max: u64,
    v2: bool,
    extra: Option<(&str, Value)>,
) -> Response {
    let req = match PageReq::parse(q, max) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    items.sort_by(|a, b| {
        let o = match req.sort_by {
            "Name" => a.1.name.cmp(b.1.name),
            "DateCreated" => a.1.created.cmp(&b.1.created),
            "Path" => a.1.path.cmp(b.1.path),
            _ => std::cmp::Ordering::Equal,
        };
        o.then(a.1.id.cmp(&b.1.id))
    });
    if req.desc {
        items.reverse();
    }
    let total = items.len();
    let shown = items.drain(req.window(total)).map(|(v, _)| v()).collect();
    req.body_with(total as u64, shown, v2, extra)
}

/// A container's files, paged. Sorting by Id (the default, and what clients page by) needs
/// only the ids: a 100,000-file run answers each page without touching the other files.
/// `filehrefcontentresolution=true`: BaseSpace puts the file's presigned URL in `HrefContent`
/// (instead of the `…/content` API path), saving clients the round trip per file.
fn resolve_hrefs(q: &Query) -> bool {
    q.get("filehrefcontentresolution")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn files_page(s: &Arc<Shared>, q: &Query, a: &Account, ids: &[u64]) -> Response {
    files_page_in(s, q, a, ids, false)
}

/// [`files_page`] in the v1pre3 or the v2 shape.
fn files_page_in(s: &Arc<Shared>, q: &Query, a: &Account, ids: &[u64], v2: bool) -> Response {
    files_page_with(s, q, a, ids, v2, None)
}

/// `datasets/{id}/files?directory=/a/b/`: the files directly in that folder (all below it
/// with `includesubdirectories=true`), and its sub-folders as `SubDirectories`.
fn folder_page(s: &Arc<Shared>, q: &Query, a: &Account, ids: &[u64], dir: &str, base: &str) -> Response {
    let prefix = dir.trim_matches('/');
    let deep = q
        .get("includesubdirectories")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
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
    s: &Arc<Shared>,
    q: &Query,
    a: &Account,
    ids: &[u64],
    v2: bool,
    extra: Option<(&str, Value)>,
) -> Response {
    let req = match PageReq::parse(q, MAX_FILES_LIMIT) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let resolve = resolve_hrefs(q);
    let files =
        |ids: &mut dyn Iterator<Item = &u64>| -> Vec<&Arc<FileEntry>> { ids.filter_map(|i| a.files.get(i)).collect() };
    if req.sort_by != "Id" {
        let items = files(&mut ids.iter())
            .into_iter()
            .map(|f| {
                let keys = SortKeys {
                    path: &f.path,
                    ..keys(f.id, f.name(), f.created)
                };
                (Box::new(move || s.file_json_in(f, false, resolve, v2)) as Render, keys)
            })
            .collect();
        return page_with(q, items, MAX_FILES_LIMIT, v2, extra);
    }
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    if req.desc {
        sorted.reverse();
    }
    let shown = files(&mut sorted[req.window(sorted.len())].iter())
        .into_iter()
        .map(|f| s.file_json_in(f, false, resolve, v2))
        .collect();
    req.body_with(sorted.len() as u64, shown, v2, extra)
}

/// Borrowed from the account: a 100,000-file listing sorts its keys for every page it
/// serves, so building them must not allocate.
struct SortKeys<'a> {
    id: u64,
    name: &'a str,
    created: SystemTime,
    path: &'a str,
}

fn keys(id: u64, name: &str, created: SystemTime) -> SortKeys<'_> {
    SortKeys {
        id,
        name,
        created,
        path: "",
    }
}

fn api(s: &Arc<Shared>, a: &Account, path: &str, q: &Query, method: &Method, headers: &HeaderMap) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let id = |i: usize| segs.get(i).and_then(|x| x.parse::<u64>().ok());
    match segs.as_slice() {
        ["v1pre3", "users", "current"] => ok(json::user(a)),
        ["v1pre3", "oauthv2", "token", "current"] => ok(json!({
            "Scopes": s.scopes,
            "DateCreated": format_date(super::account::base_time()),
            "UserResourceOwner": json::owner(a),
            "Application": {"Id": "1", "Name": "bsmount emulator"},
            "AccessToken": s.token
        })),
        ["v1pre3", "users", "current", "projects"] => page(
            q,
            a.projects
                .iter()
                .filter(|p| q.get("name").is_none_or(|n| n == p.name))
                .map(|p| {
                    (
                        Box::new(move || json::project(a, p, false)) as Render,
                        keys(p.id, &p.name, p.created),
                    )
                })
                .collect(),
            MAX_LIMIT,
            false,
        ),
        ["v1pre3", "users", "current", "runs"] => page(
            q,
            a.runs
                .iter()
                .filter_map(|r| a.container(ContainerKind::Run, *r))
                .map(|c| {
                    (
                        Box::new(move || json::run(a, c, false)) as Render,
                        keys(c.id, &c.name, c.created),
                    )
                })
                .collect(),
            MAX_LIMIT,
            false,
        ),
        ["v1pre3", "projects", _] => match id(2).and_then(|i| a.project(i)) {
            Some(p) => ok(json::project(a, p, true)),
            None => no_access("Project"),
        },
        ["v1pre3", "projects", _, kind @ ("samples" | "appresults")] => {
            let Some(p) = id(2).and_then(|i| a.project(i)) else {
                return no_access("Project");
            };
            let (k, ids) = if *kind == "samples" {
                (ContainerKind::Sample, &p.samples)
            } else {
                (ContainerKind::AppResult, &p.appresults)
            };
            let items = ids
                .iter()
                .filter_map(|i| a.container(k, *i))
                .map(|c| {
                    let v: Render = if k == ContainerKind::Sample {
                        Box::new(move || json::sample(a, c, false))
                    } else {
                        Box::new(move || json::appresult(a, c, false))
                    };
                    (v, keys(c.id, &c.name, c.created))
                })
                .collect();
            page(q, items, MAX_LIMIT, false)
        }
        ["v1pre3", kind @ ("samples" | "appresults" | "runs"), _, rest @ ..] => {
            let (k, label) = match *kind {
                "samples" => (ContainerKind::Sample, "Sample"),
                "appresults" => (ContainerKind::AppResult, "AppResult"),
                _ => (ContainerKind::Run, "Run"),
            };
            let Some(c) = id(2).and_then(|i| a.container(k, i)) else {
                return no_access(label);
            };
            match rest {
                [] => ok(match k {
                    ContainerKind::Sample => json::sample(a, c, true),
                    ContainerKind::AppResult => json::appresult(a, c, true),
                    ContainerKind::Run | ContainerKind::Dataset => json::run(a, c, true),
                }),
                ["files"] => files_page(s, q, a, &c.files),
                ["properties"] => properties_page(q, json::container_properties(a, c), false),
                _ => unrecognized(),
            }
        }
        ["v1pre3", "projects", _, "properties"] => match id(2).and_then(|i| a.project(i)) {
            Some(_) => properties_page(q, Vec::new(), false),
            None => no_access("Project"),
        },
        ["v1pre3", "appsessions", _, rest @ ..] => match (id(2).and_then(|i| a.appsessions.get(&i)), rest) {
            (Some(x), []) => ok(json::appsession_v1(a, x)),
            (Some(x), ["properties"]) => properties_page(q, json::appsession_properties(a, x), false),
            (Some(_), _) => unrecognized(),
            (None, _) => no_access("AppSession"),
        },
        ["v1pre3", "files", _, rest @ ..] => {
            let Some(f) = id(2).and_then(|i| a.files.get(&i)) else {
                return no_access("File");
            };
            match rest {
                [] => ok(s.file_json(f, true, resolve_hrefs(q))),
                ["content"] => content_redirect(s, f, q, method, headers),
                _ => unrecognized(),
            }
        }
        ["v2", "appsessions"] => {
            let project = q.get("output.projects").map(|p| p.parse::<u64>().ok());
            let reading: Option<Vec<u64>> = q
                .get("input.biosamples")
                .map(|b| a.appsessions_reading(&id_list(b)).iter().map(|x| x.id).collect());
            let items = a
                .appsessions
                .values()
                .filter(|x| project.is_none_or(|p| Some(x.project) == p))
                .filter(|x| reading.as_ref().is_none_or(|r| r.contains(&x.id)))
                .filter(|x| q.get("name").is_none_or(|n| n == x.name))
                .map(|x| {
                    (
                        Box::new(move || json::appsession_v2(a, x, &s.base_url)) as Render,
                        keys(x.id, &x.name, x.created),
                    )
                })
                .collect();
            page(q, items, MAX_LIMIT, true)
        }
        ["v2", "appsessions", _, "logfiles"] => match id(2).and_then(|i| a.appsessions.get(&i)) {
            Some(x) => files_page_in(s, q, a, &x.logs, true),
            None => no_access("AppSession"),
        },
        ["v2", "trash"] => {
            let items = super::write::trash_list(s, a);
            properties_page(q, items, true)
        }
        ["v2", "biosamples"] => {
            let project = q.get("projectid").map(|p| p.parse::<u64>().ok());
            let items = a
                .biosamples()
                .into_iter()
                .filter(|c| project.is_none_or(|p| c.project.is_some() && c.project == p))
                .filter(|c| q.get("biosamplename").is_none_or(|n| n == c.name))
                .map(|c| {
                    (
                        Box::new(move || json::biosample(a, c, &s.base_url)) as Render,
                        keys(super::account::biosample_id(c.id), &c.name, c.created),
                    )
                })
                .collect();
            page(q, items, MAX_LIMIT, true)
        }
        ["v2", "biosamples", _, rest @ ..] => match (id(2).and_then(|i| a.biosample(i)), rest) {
            (Some(c), []) => json_response(StatusCode::OK, &json::biosample(a, c, &s.base_url)),
            (Some(_), ["properties"]) => properties_page(q, Vec::new(), true),
            (Some(c), ["libraries"]) => properties_page(q, vec![json::library_v2(a, c, &s.base_url)], true),
            (Some(_), _) => unrecognized(),
            (None, _) => no_access("BioSample"),
        },
        ["v2", "datasets"] => {
            let query = DatasetQuery {
                appsessions: q.get("appsessionids").map(id_list),
                biosamples: q.get("inputbiosamples").map(id_list),
                project: q.get("projectid").map(|p| p.parse::<u64>().ok()),
                types: q
                    .get("datasettypes")
                    .map(|v| v.split(',').map(|x| x.trim().to_string()).collect()),
            };
            let with_props = q
                .get("include")
                .is_some_and(|v| v.split(',').any(|x| x.eq_ignore_ascii_case("properties")));
            let items = a
                .datasets_where(&query)
                .into_iter()
                .map(|c| {
                    let render = move || match with_props {
                        true => json::dataset_v2_with_properties(a, c, &s.base_url),
                        false => json::dataset_v2(a, c, &s.base_url),
                    };
                    (Box::new(render) as Render, keys(c.id, &c.name, c.created))
                })
                .collect();
            page(q, items, MAX_LIMIT, true)
        }
        ["v2", "datasets", ds, rest @ ..] => match (a.dataset(ds), rest) {
            (Some(c), []) => json_response(StatusCode::OK, &json::dataset_v2(a, c, &s.base_url)),
            (Some(c), ["files"]) => match q.get("directory") {
                Some(dir) => folder_page(
                    s,
                    q,
                    a,
                    &c.files,
                    dir,
                    &format!("{}/v2/datasets/{ds}/files", s.base_url),
                ),
                None => files_page_in(s, q, a, &c.files, true),
            },
            (Some(c), ["properties"]) => properties_page(q, json::dataset_properties(a, c, &s.base_url), true),
            (Some(_), _) => unrecognized(),
            (None, _) => no_access("Dataset"),
        },
        _ => unrecognized(),
    }
}

/// Comma-separated ids of a filter (`appsessionids=1,2`); what does not parse matches nothing.
fn id_list(v: &str) -> Vec<u64> {
    v.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

/// A properties list: v1pre3 inside `Response`, v2 bare.
fn properties_page(q: &Query, props: Vec<Value>, v2: bool) -> Response {
    let names: Vec<String> = props
        .iter()
        .map(|p| p["Name"].as_str().unwrap_or("").to_string())
        .collect();
    let refs: Vec<(Render, SortKeys)> = props
        .into_iter()
        .zip(&names)
        .enumerate()
        .map(|(i, (p, name))| (Box::new(move || p) as Render, keys(i as u64, name.as_str(), UNIX_EPOCH)))
        .collect();
    page(q, refs, MAX_LIMIT, v2)
}

fn content_redirect(s: &Arc<Shared>, f: &Arc<FileEntry>, q: &Query, method: &Method, headers: &HeaderMap) -> Response {
    s.stats.url_requests.fetch_add(1, Ordering::Relaxed);
    let (url, expires) = s.presign(f);
    match q.get("redirect").map(|r| r.to_ascii_lowercase()) {
        Some(r) if r == "meta" => {
            ok(json!({"HrefContent": url, "Expires": format_date(expires), "SupportsRange": true}))
        }
        Some(r) if r == "false" => serve_bytes(s, f, method, headers),
        _ => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, url)
            .body(Body::empty())
            .expect("valid response"),
    }
}

fn s3_error(code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>EMULATOR</RequestId><HostId>emulator</HostId></Error>"
    );
    let status = if code == "InvalidRange" {
        StatusCode::RANGE_NOT_SATISFIABLE
    } else if code == "PreconditionFailed" {
        StatusCode::PRECONDITION_FAILED
    } else if code == "NoSuchKey" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::FORBIDDEN
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(Body::from(body))
        .expect("valid response")
}

/// `GET|HEAD /content/<obj>/<name>?…&Expires=E&Signature=S`: the presigned "S3" URL.
fn presigned(s: &Arc<Shared>, rest: &str, q: &Query, method: &Method, headers: &HeaderMap) -> Response {
    let obj = rest.split('/').next().unwrap_or("");
    let file_id = obj.get(16..).and_then(|h| u64::from_str_radix(h, 16).ok());
    let Some(f) = file_id.and_then(|id| s.account.read().files.get(&id).cloned()) else {
        return s3_error("NoSuchKey", "The specified key does not exist.");
    };
    let expires = q.get("expires").and_then(|e| e.parse::<u64>().ok()).unwrap_or(0);
    let sig_ok = q.get("signature").is_some_and(|sig| sig == s.sign(f.id, expires));
    if !sig_ok {
        return s3_error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        );
    }
    if SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(expires) {
        s.stats.expired_refusals.fetch_add(1, Ordering::Relaxed);
        return s3_error("AccessDenied", "Request has expired");
    }
    if let Some(r) = injected_error(s, false) {
        return r;
    }
    serve_bytes(s, &f, method, headers)
}

/// Parses `Range: bytes=…` against `size`. `Ok(None)` = whole file; `Err` = unsatisfiable.
fn parse_range(h: Option<&HeaderValue>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // multi-range: S3 ignores it and sends everything
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        return Ok(Some((size.saturating_sub(n), size - 1)));
    }
    let start: u64 = a.parse().map_err(|_| ())?;
    if start >= size {
        return Err(());
    }
    let end = if b.is_empty() {
        size - 1
    } else {
        b.parse::<u64>().map_err(|_| ())?.min(size - 1)
    };
    if end < start {
        return Ok(None); // invalid spec: ignored per RFC 9110
    }
    Ok(Some((start, end)))
}

fn serve_bytes(s: &Arc<Shared>, f: &Arc<FileEntry>, method: &Method, headers: &HeaderMap) -> Response {
    // `If-Match` as S3 answers it: 412 unless one of the listed ETags (or `*`) is current.
    if let Some(im) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        let current = im
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == f.etag());
        if !current {
            return s3_error(
                "PreconditionFailed",
                "At least one of the pre-conditions you specified did not hold",
            );
        }
    }
    let range = match parse_range(headers.get(header::RANGE), f.size) {
        Ok(r) => r,
        Err(()) => {
            let mut r = s3_error("InvalidRange", "The requested range is not satisfiable");
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", f.size)).expect("ascii"),
            );
            return r;
        }
    };
    let (start, end, status) = match range {
        Some((a, b)) => (a, b, StatusCode::PARTIAL_CONTENT),
        None => (0, f.size.saturating_sub(1), StatusCode::OK),
    };
    let len = if f.size == 0 { 0 } else { end - start + 1 };
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, f.content_type)
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", f.etag()))
        .header(header::LAST_MODIFIED, httpdate(f.created));
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{}", f.size));
    }
    if method == Method::HEAD || len == 0 {
        return b.body(Body::empty()).expect("valid response");
    }
    let reset_at = match s.faults.draw(true) {
        Fault::ResetAfter(permille) => Some(len * permille as u64 / 1000),
        _ => None,
    };
    b.body(Body::from_stream(body_stream(s, f.clone(), start, len, reset_at)))
        .expect("valid response")
}

fn body_stream(
    s: &Arc<Shared>,
    f: Arc<FileEntry>,
    start: u64,
    len: u64,
    reset_at: Option<u64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let paced = s.faults.profile.bandwidth > 0;
    let chunk = if paced { PACED_CHUNK } else { FAST_CHUNK } as u64;
    let bw = s.faults.profile.bandwidth;
    let s = s.clone();
    let t0 = Instant::now();
    // A disk-backed file is opened once per response, not once per chunk.
    let disk = match &f.content {
        super::account::Content::Disk(p) => Some(Arc::new(std::fs::File::open(p))),
        _ => None,
    };
    futures::stream::unfold(0u64, move |sent| {
        let f = f.clone();
        let s = s.clone();
        let disk = disk.clone();
        async move {
            if sent >= len {
                return None;
            }
            if let Some(r) = reset_at {
                if sent >= r {
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "injected reset",
                        )),
                        len,
                    ));
                }
            }
            let mut n = chunk.min(len - sent);
            if let Some(r) = reset_at {
                n = n.min(r - sent).max(1);
            }
            if bw > 0 {
                // A chunk is delivered once its own bytes have crossed the emulated link.
                let due = Duration::from_secs_f64((sent + n) as f64 / bw as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let off = start + sent;
            let data = match &f.content {
                super::account::Content::Memory(b) => Ok(b.slice(off as usize..(off + n) as usize)),
                super::account::Content::Parts(c) => Ok(c.slice(off, n as usize)),
                _ => {
                    let (f2, disk) = (f.clone(), disk.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; n as usize];
                        match disk.as_deref() {
                            Some(Ok(file)) => std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, off),
                            Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
                            None => fill(&f2.content, off, &mut buf),
                        }
                        .map(|_| Bytes::from(buf))
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)))
                }
            };
            match data {
                Ok(b) => {
                    s.stats.content_bytes.fetch_add(n, Ordering::Relaxed);
                    Some((Ok(b), sent + n))
                }
                Err(e) => Some((Err(e), len)),
            }
        }
    })
}

fn httpdate(t: SystemTime) -> String {
    // RFC 7231 IMF-fixdate.
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let days = secs / 86400;
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let iso = format_date(t); // YYYY-MM-DDTHH:MM:SS…
    let (y, m, d) = (&iso[0..4], &iso[5..7], &iso[8..10]);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][m.parse::<usize>().unwrap_or(1) - 1];
    format!("{wd}, {d} {mon} {y} {} GMT", &iso[11..19])
}

/// `/browse/…`: the account as a plain HTML directory index, for generic HTTP tools.
fn browse(s: &Arc<Shared>, rel: &str, method: &Method, headers: &HeaderMap) -> Response {
    let idx = s.browse.read().clone();
    let rel = percent_decode_str(rel).decode_utf8_lossy().into_owned();
    let key = rel.trim_end_matches('/');
    if let Some(f) = idx.files.get(key) {
        if let Some(r) = injected_error(s, false) {
            return r;
        }
        return serve_bytes(s, f, method, headers);
    }
    if !idx.dirs.contains(key) {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found\n"))
            .expect("valid response");
    }
    if let Some(r) = injected_error(s, false) {
        return r;
    }
    let prefix = if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    };
    let mut entries: BTreeSet<(String, bool)> = BTreeSet::new();
    for d in idx.dirs.range(prefix.clone()..) {
        let Some(tail) = d.strip_prefix(&prefix) else {
            break;
        };
        if !tail.is_empty() && !tail.contains('/') {
            entries.insert((tail.to_string(), true));
        }
    }
    for (p, _) in idx.files.range(prefix.clone()..) {
        let Some(tail) = p.strip_prefix(&prefix) else {
            break;
        };
        if !tail.contains('/') {
            entries.insert((tail.to_string(), false));
        }
    }
    let mut html = format!("<!DOCTYPE html>\n<html><head><title>Index of /{prefix}</title></head><body>\n<h1>Index of /{prefix}</h1>\n<ul>\n");
    for (name, is_dir) in entries {
        let href = utf8_percent_encode(&name, SEGMENT).to_string();
        let esc = name.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        if is_dir {
            html.push_str(&format!("<li><a href=\"{href}/\">{esc}/</a></li>\n"));
        } else {
            html.push_str(&format!("<li><a href=\"{href}\">{esc}</a></li>\n"));
        }
    }
    html.push_str("</ul>\n</body></html>\n");
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(html))
        .expect("valid response")
}

fn introspect(s: &Shared, rest: &str, q: &Query) -> Response {
    match rest {
        "stats" => {
            let st = &s.stats;
            json_response(
                StatusCode::OK,
                &json!({
                    "api_requests": st.api_requests.load(Ordering::Relaxed),
                    "content_requests": st.content_requests.load(Ordering::Relaxed),
                    "content_bytes": st.content_bytes.load(Ordering::Relaxed),
                    "browse_requests": st.browse_requests.load(Ordering::Relaxed),
                    "url_requests": st.url_requests.load(Ordering::Relaxed),
                    "resolved_in_listings": st.resolved_in_listings.load(Ordering::Relaxed),
                    "expired_refusals": st.expired_refusals.load(Ordering::Relaxed),
                    "unauthorized": st.unauthorized.load(Ordering::Relaxed),
                    "faults_injected": s.faults.injected.load(Ordering::Relaxed),
                    "api_in_flight_peak": match q.get("reset") {
                        Some("peak") => st.api_in_flight_peak.swap(0, Ordering::Relaxed),
                        _ => st.api_in_flight_peak.load(Ordering::Relaxed),
                    },
                }),
            )
        }
        "manifest" => {
            let with_md5 = q.get("md5").is_none_or(|v| v != "0" && v != "false");
            let idx = s.browse.read().clone();
            let acct = s.account.read().clone();
            let files: Vec<Value> = idx
                .files
                .iter()
                .map(|(p, f)| {
                    let mut v = json!({"path": p, "id": f.id.to_string(), "size": f.size, "etag": f.etag()});
                    if with_md5 {
                        v["md5"] = json!(acct.md5(f).unwrap_or_default());
                    }
                    v
                })
                .collect();
            json_response(StatusCode::OK, &json!({"files": files}))
        }
        "rescan" => match &s.rescan {
            Some(f) => match tokio::task::block_in_place(|| f()) {
                Ok(account) => {
                    let files = account.files.len();
                    s.replace_account(account);
                    json_response(StatusCode::OK, &json!({"rescanned": true, "files": files}))
                }
                Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
            },
            None => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "this account has no source to rescan (use --data)"}),
            ),
        },
        "outage" => {
            let on = q.get("mode").is_some_and(|m| m == "hang");
            s.outage.send_replace(on);
            json_response(StatusCode::OK, &json!({"outage": on}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown introspection endpoint; try stats or manifest"}),
        ),
    }
}

/// Where the server listens once bound.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
