//! A small BaseSpace-shaped HTTP server on 127.0.0.1 whose every answer a test scripts:
//! the hostile or broken server the mount must survive. It answers `users/current` itself;
//! everything else goes to the test's handler (unhandled: 404). Every request is logged.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use parking_lot::Mutex;
use serde_json::{json, Value};

/// One request as the handler sees it.
pub struct Req {
    pub path: String,
    /// Query parameters, names lower-cased.
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    pub fn offset(&self) -> u64 {
        self.q("offset").and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    pub fn limit(&self) -> u64 {
        self.q("limit").and_then(|v| v.parse().ok()).unwrap_or(100)
    }
}

pub type Handler = Arc<dyn Fn(&Req, &str) -> Option<Response> + Send + Sync>;

pub struct Hostile {
    pub rt: tokio::runtime::Runtime,
    pub base: String,
    /// `path?query` of every request, in order.
    pub log: Arc<Mutex<Vec<String>>>,
}

pub const TOKEN: &str = "hostile-test-token";

impl Hostile {
    /// Starts the server; `handler(req, base_url)` answers what it wants to.
    pub fn start(handler: impl Fn(&Req, &str) -> Option<Response> + Send + Sync + 'static) -> Hostile {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (l2, b2) = (log.clone(), base.clone());
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (log, handler, base) = (l2.clone(), handler.clone(), b2.clone());
            async move {
                let path = req.uri().path().to_string();
                let raw_q = req.uri().query().unwrap_or("").to_string();
                log.lock().push(format!("{path}?{raw_q}"));
                let query = url::form_urlencoded::parse(raw_q.as_bytes())
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                    .collect();
                let r = Req {
                    path: path.clone(),
                    query,
                    headers: req.headers().clone(),
                };
                if path == "/v1pre3/users/current" {
                    return json_ok(&json!({"Response": {"Id": "1", "Name": "Hostile", "Href": "v1pre3/users/1"}, "ResponseStatus": {}, "Notifications": []}));
                }
                match handler(&r, &base) {
                    Some(resp) => resp,
                    None => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Body::from("{}"))
                        .unwrap(),
                }
            }
        });
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hostile { rt, base, log }
    }

    pub fn requests(&self) -> Vec<String> {
        self.log.lock().clone()
    }
}

pub fn json_ok(v: &Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(v.to_string()))
        .unwrap()
}

/// A v1pre3 list page.
pub fn v1_page(items: Vec<Value>, total: u64, offset: u64) -> Response {
    let n = items.len();
    json_ok(
        &json!({"Response": {"Items": items, "DisplayedCount": n, "TotalCount": total, "Offset": offset,
        "Limit": n, "SortDir": "Asc", "SortBy": "Id"}, "ResponseStatus": {}, "Notifications": []}),
    )
}

/// A v2 list page.
pub fn v2_page(items: Vec<Value>) -> Response {
    let n = items.len();
    json_ok(&json!({"Items": items, "Paging": {"DisplayedCount": n, "TotalCount": n, "Offset": 0, "Limit": 1000}}))
}

/// Pages `all` by the request's Offset/Limit, with a truthful TotalCount.
pub fn v1_paged(req: &Req, all: &[Value]) -> Response {
    let (off, lim) = (req.offset() as usize, req.limit() as usize);
    let page = all.iter().skip(off).take(lim).cloned().collect();
    v1_page(page, all.len() as u64, off as u64)
}

pub fn entity(id: &str, name: &str) -> Value {
    json!({"Id": id, "Name": name, "DateCreated": "2025-01-01T00:00:00.0000000Z"})
}

pub fn file(id: &str, path: &str, size: u64, etag: &str) -> Value {
    let name = path.rsplit('/').next().unwrap_or(path);
    json!({"Id": id, "Name": name, "Path": path, "Size": size, "ETag": etag, "ContentType": "application/octet-stream",
        "DateCreated": "2025-01-01T00:00:00.0000000Z", "DateModified": "2025-01-01T00:00:00.0000000Z",
        "UploadStatus": "complete"})
}

/// `files/{id}/content?redirect=meta` pointing at `{base}/content/{id}`.
pub fn content_meta(base: &str, id: &str) -> Response {
    json_ok(
        &json!({"Response": {"HrefContent": format!("{base}/content/{id}"), "SupportsRange": true},
        "ResponseStatus": {}, "Notifications": []}),
    )
}

/// Serves `data` honouring `Range`, with `etag` as its ETag.
pub fn serve(req: &Req, data: &[u8], etag: &str) -> Response {
    let size = data.len() as u64;
    let (start, end) = req
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| {
            (
                a.parse::<u64>().unwrap(),
                b.parse::<u64>().unwrap_or(size - 1).min(size - 1),
            )
        })
        .unwrap_or((0, size - 1));
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
        .header(header::ETAG, format!("\"{etag}\""))
        .body(Body::from(data[start as usize..=end as usize].to_vec()))
        .unwrap()
}

pub fn md5_hex(d: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(d))
}

/// The multipart ETag S3 gives `d` uploaded in `part`-byte parts.
pub fn multipart_etag(d: &[u8], part: usize) -> String {
    use md5::Digest;
    let mut outer = md5::Md5::new();
    let chunks = d.chunks(part);
    let n = chunks.len();
    for c in chunks {
        outer.update(md5::Md5::digest(c));
    }
    format!("{}-{n}", hex::encode(outer.finalize()))
}

/// The peak resident memory of a process, in MiB (VmHWM).
pub fn peak_rss_mib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// The resident memory of a process now, in MiB (VmRSS).
pub fn rss_mib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}
