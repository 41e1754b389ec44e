//! The HTTP pieces every handler shares: query parsing (BaseSpace reads parameter names
//! case-insensitively), the request context handlers take, and BaseSpace's response shapes
//! (the v1pre3 envelope, its errors).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::account::Account;
use super::state::Shared;

/// Query parameters with lower-cased names (BaseSpace ignores case).
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            url::form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// A comma-separated list parameter (`Statuses=Running,Complete`), trimmed, empty entries
    /// dropped; `None` when the parameter is absent.
    pub fn list(&self, k: &str) -> Option<Vec<String>> {
        self.get(k).map(|v| {
            v.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
    }

    /// Whether boolean parameter `k` is `true`.
    pub fn flag(&self, k: &str) -> bool {
        self.get(k).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// What a handler needs of a request: the server, the account as it is now, the query.
pub struct Req {
    pub s: Arc<Shared>,
    pub a: Arc<Account>,
    pub q: Query,
    pub method: Method,
    pub headers: HeaderMap,
}

impl FromRequestParts<Arc<Shared>> for Req {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        Ok(Req {
            a: s.account.read().clone(),
            s: s.clone(),
            q: Query::parse(parts.uri.query()),
            method: parts.method.clone(),
            headers: parts.headers.clone(),
        })
    }
}

/// Largest request body taken (an upload part or a single-request file): S3's parts go to
/// 5 GiB, BaseSpace's uploaders send 8 MiB; 2 GiB lets a benchmark send 1 GiB in one part.
const MAX_WRITE_BODY: usize = 2 << 30;

/// A request body, taken no faster than the emulated link allows (`--bandwidth` applies to
/// uploads as to downloads, per connection: TCP holds the sender back), at most
/// [`MAX_WRITE_BODY`].
pub struct Paced(pub Bytes);

impl FromRequest<Arc<Shared>> for Paced {
    type Rejection = Response;

    async fn from_request(req: Request, s: &Arc<Shared>) -> Result<Self, Self::Rejection> {
        use futures::StreamExt;
        let length: Option<usize> = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let too_large = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("BASESPACE.COMMON.TOO_LARGE"),
                "request body too large or cut short",
            )
        };
        let bw = s.faults.profile.bandwidth;
        let t0 = std::time::Instant::now();
        let mut stream = req.into_body().into_data_stream();
        // Room for the whole body at once (no copies as it grows), up to a part's worth
        // before any byte arrived.
        let mut buf = bytes::BytesMut::with_capacity(length.unwrap_or(0).min(64 << 20));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| too_large())?;
            if buf.len() + chunk.len() > MAX_WRITE_BODY {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
            if bw > 0 {
                let due = std::time::Duration::from_secs_f64(buf.len() as f64 / bw as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(Paced(buf.freeze()))
    }
}

pub fn json_response(status: StatusCode, v: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header("X-BaseSpace-Source", "emulator")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .expect("valid response")
}

/// A v1pre3 success: `v` in the envelope.
pub fn ok(v: Value) -> Response {
    // Built by moving `v` in: `json!` would copy a whole list body once more.
    let mut m = serde_json::Map::new();
    m.insert("Response".into(), v);
    m.insert("ResponseStatus".into(), json!({}));
    m.insert("Notifications".into(), json!([]));
    json_response(StatusCode::OK, &Value::Object(m))
}

/// A v2 success: `v` bare.
pub fn ok_v2(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

/// The v1pre3 error envelope (as recorded for 403s).
pub fn error(status: StatusCode, code: Option<&str>, message: &str) -> Response {
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

/// A malformed parameter.
pub fn bad_request(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        Some("BASESPACE.COMMON.INVALID_PARAMETER"),
        message,
    )
}

/// What BaseSpace answers for a path it does not know.
pub async fn unrecognized() -> Response {
    error(
        StatusCode::NOT_FOUND,
        None,
        "This isn't a recognized path. Please refer to the API documentation at https://developer.basespace.illumina.com/docs for the available resources.",
    )
}

/// A known path asked with a method it does not take.
pub async fn method_not_allowed(method: Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        Some("BASESPACE.COMMON.METHOD_NOT_ALLOWED"),
        &format!("{method} is not supported on this resource"),
    )
}

/// What BaseSpace answers for an id that does not exist or is not yours (recorded: 403).
pub fn no_access(kind: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        Some("BASESPACE.COMMON.INSUFFICIENT_RESOURCE_PERMISSIONS"),
        &format!("Sorry but this requires READ access to this {kind} resource."),
    )
}

/// A numeric id from a path segment.
pub fn num(id: &str) -> Option<u64> {
    id.parse().ok()
}
