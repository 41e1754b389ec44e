//! The HTTP client for the BaseSpace API and its presigned content URLs.
//!
//! Retries: 429 (honouring `Retry-After`), 5xx, transport errors and malformed bodies are
//! retried with exponential backoff and full jitter, bounded both in attempts and in total
//! time ([`RetryPolicy`]), so a dead server turns into an error, never a hang. Other 4xx are
//! final. Lists are paged with the largest page BaseSpace allows and a stable `SortBy=Id`;
//! after the first page gives `TotalCount`, the rest are fetched concurrently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use reqwest::header::{HeaderMap, CONTENT_RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;

use super::config::Credentials;
use super::error::ApiError;
use super::model::{ContentMeta, Envelope, ListItem, Listed, RawPage, User};
use super::{redact_url, BaseSpaceApi, ListKind, Pieces};

/// Largest `Limit` BaseSpace accepts for most lists.
pub const MAX_LIMIT: u64 = 1024;
/// Files lists are capped lower by the service.
pub const MAX_FILES_LIMIT: u64 = 1000;
/// Pages fetched at once after the first; enough to list 100k files in a few round trips
/// without looking like a burst to the service.
const PAGE_CONCURRENCY: u64 = 8;
/// Entries one listing may bring by default (`--max-listing`). The largest real folders
/// (an old HiSeq run: 8 lanes x 96 tiles x 250 cycles of BCLs) hold a few hundred thousand;
/// a listing costs ~500 bytes an entry while it is parsed, so this bounds what one
/// directory (a server that never stops bringing fresh Ids) can make the mount hold to
/// about 250 MB, freed when it fails. A listing with more fails whole, loudly (EIO, named
/// in `.error`): a directory shown in part would let a script silently miss files.
pub const MAX_LIST_ENTRIES: u64 = 500_000;
/// Largest JSON body accepted: a 1,000-item page is about 1 MB, so this is far beyond any
/// honest answer and still bounds what a broken server can make us hold.
pub const MAX_JSON_BODY: u64 = 32 << 20;
/// Of an error response only this much is read (for its `ErrorCode` and message).
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Malformed items named in a listing's `.error`, at most.
const MAX_SKIPPED_NAMED: usize = 20;
/// Presigned URLs kept from file listings (`filehrefcontentresolution=true`): opening a
/// listed file then costs no API request. ~350 bytes each, so a
/// listing of a whole run folder (~20,000 files) keeps about 6 MB.
const LISTED_URLS_KEPT: usize = 16_384;
/// Listings longer than this resolve content URLs on their first page only: a `find` over a
/// 100,000-file run would otherwise parse 30 MB of URLs it never uses, and the few kept
/// would pin that memory (`cp -r` of such a folder resolves URLs ahead of its opens anyway,
/// through prefetch across files).
const RESOLVE_UP_TO: u64 = 10_000;
/// A URL from a listing is used only if it stays valid this long: a read that starts with
/// it must not meet its expiry (the content source renews after that).
const LISTED_URL_MARGIN: Duration = Duration::from_secs(300);

/// How hard to try before giving up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt (full jitter).
    pub base_delay: Duration,
    /// Largest single backoff (a `Retry-After` above it is clamped to it).
    pub max_delay: Duration,
    /// Total time budget for one logical request, retries included.
    pub deadline: Duration,
    /// Limit for one HTTP exchange (headers and body).
    pub request_timeout: Duration,
    /// Entries one listing may bring (`--max-listing`); a server with more fails the
    /// listing whole ([`ApiError::TooManyEntries`]).
    pub max_listing: u64,
    /// Connect to any address, not only public ones and the API server's kind
    /// (`--allow-private-addresses`; see [`super::netguard`]).
    pub allow_private_addresses: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(8),
            deadline: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_listing: MAX_LIST_ENTRIES,
            allow_private_addresses: false,
        }
    }
}

/// Counters for `bsmount status` and tests.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub api_requests: AtomicU64,
    pub content_requests: AtomicU64,
    pub content_bytes: AtomicU64,
    pub retries: AtomicU64,
    pub errors: AtomicU64,
    /// Files opened with the presigned URL their listing resolved (no request).
    pub listed_urls_used: AtomicU64,
}

/// The real client (reqwest, rustls).
#[derive(Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    /// Which addresses may be connected to ([`super::netguard`]).
    guard: Arc<super::netguard::Guard>,
    creds: Arc<Credentials>,
    policy: RetryPolicy,
    pub stats: Arc<ClientStats>,
    /// File id → presigned URL a listing resolved, handed out by `content_meta` until it is
    /// refused or near its expiry.
    listed_urls: Arc<parking_lot::Mutex<lru::LruCache<String, ContentMeta>>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("api_server", &self.creds.api_server)
            .finish()
    }
}

/// One failed attempt: the error, and how long the server asked us to wait.
struct Attempt {
    error: ApiError,
    retry_after: Option<Duration>,
}

impl From<ApiError> for Attempt {
    fn from(error: ApiError) -> Self {
        Attempt {
            error,
            retry_after: None,
        }
    }
}

impl HttpClient {
    pub fn new(creds: Credentials, policy: RetryPolicy) -> Result<Self, ApiError> {
        let guard = Arc::new(match policy.allow_private_addresses {
            true => super::netguard::Guard::open(),
            false => super::netguard::Guard::for_server(&creds.api_server),
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("bsmount/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(super::netguard::GuardedResolver(guard.clone())))
            // Idle connections kept per host: as many as the read path runs at once.
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ApiError::Transport {
                target: "client".into(),
                message: e.to_string(),
                attempts: 0,
            })?;
        Ok(HttpClient {
            http,
            guard,
            creds: Arc::new(creds),
            policy,
            stats: Arc::default(),
            listed_urls: Arc::new(parking_lot::Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(LISTED_URLS_KEPT).expect("non-zero"),
            ))),
        })
    }

    pub fn api_server(&self) -> &str {
        &self.creds.api_server
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("{}/{}", self.creds.api_server, path_and_query.trim_start_matches('/'))
    }

    /// Runs `op` under the retry policy.
    async fn retrying<T, F>(&self, target: &str, mut op: F) -> Result<T, ApiError>
    where
        F: FnMut() -> BoxFuture<'static, Result<T, Attempt>>,
    {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let fut = op();
            // One attempt never outlives the whole budget: a hung server costs at most `deadline`.
            let limit = self
                .policy
                .request_timeout
                .min(self.policy.deadline.saturating_sub(start.elapsed()));
            let res = tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
                Err(Attempt::from(ApiError::Transport {
                    target: target.to_string(),
                    message: format!("no complete answer within {limit:?}"),
                    attempts: attempt,
                }))
            });
            let failed = match res {
                Ok(v) => return Ok(v),
                Err(a) => a,
            };
            let elapsed = start.elapsed();
            if !failed.error.is_retryable() || attempt >= self.policy.max_attempts {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(with_attempts(failed.error, attempt));
            }
            let cap = self
                .policy
                .max_delay
                .min(self.policy.base_delay.saturating_mul(1 << attempt.min(16)));
            let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=cap.as_millis() as u64));
            let wait = failed
                .retry_after
                .map(|r| r.min(self.policy.max_delay))
                .unwrap_or(jitter);
            if elapsed + wait >= self.policy.deadline {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                return Err(ApiError::Deadline {
                    target: target.to_string(),
                    elapsed,
                    last: failed.error.to_string(),
                });
            }
            tracing::debug!(target: "bsmount::api", %target, attempt, ?wait, error = %failed.error, "retrying");
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// GET an API path and return the JSON body (envelope or v2).
    pub async fn get_json(&self, path_and_query: &str) -> Result<Value, ApiError> {
        self.get_parsed(path_and_query, |b| {
            serde_json::from_slice::<Value>(b).map_err(|e| format!("invalid JSON: {e}"))
        })
        .await
    }

    /// GET an API path and parse its body with `parse` (a parse failure is retried like a
    /// broken connection). The body is read up to [`MAX_JSON_BODY`], never further.
    async fn get_parsed<T: Send + 'static>(
        &self,
        path_and_query: &str,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        let url = self.url(path_and_query);
        let shown = redact_url(&url);
        let http = self.http.clone();
        let token = self.creds.token.clone();
        let stats = self.stats.clone();
        self.retrying(&shown, move || {
            let (http, url, token, stats) = (http.clone(), url.clone(), token.clone(), stats.clone());
            async move {
                stats.api_requests.fetch_add(1, Ordering::Relaxed);
                let shown = redact_url(&url);
                let resp = http
                    .get(&url)
                    .header("x-access-token", token.expose())
                    .send()
                    .await
                    .map_err(|e| transport(&shown, &e))?;
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                if status.is_success() {
                    let body = read_body(resp, MAX_JSON_BODY, &shown, true).await?;
                    return parse(&body).map_err(|message| {
                        Attempt::from(ApiError::Malformed {
                            target: shown.clone(),
                            message,
                        })
                    });
                }
                let body = read_body(resp, MAX_ERROR_BODY, &shown, false).await?;
                Err(Attempt {
                    error: status_error(status, &body),
                    retry_after,
                })
            }
            .boxed()
        })
        .await
    }

    /// Makes a call that changes BaseSpace, under the retry policy (every write BaseSpace
    /// takes is safe to repeat: a project is found by name, parts are numbered, completion
    /// and status are idempotent). The answer's v1pre3 `Response`, or the v2 body.
    pub async fn send_call(&self, call: super::write::Call) -> Result<Value, ApiError> {
        use super::write::Verb;
        let url = self.url(&call.path);
        let shown = redact_url(&url);
        let md5 = call.md5.then(|| {
            use base64::Engine;
            use md5::Digest;
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&call.body))
        });
        let (http, token, stats) = (self.http.clone(), self.creds.token.clone(), self.stats.clone());
        let body = self
            .retrying(&shown, move || {
                let (http, url, token, stats, call, md5) = (
                    http.clone(),
                    url.clone(),
                    token.clone(),
                    stats.clone(),
                    call.clone(),
                    md5.clone(),
                );
                async move {
                    stats.api_requests.fetch_add(1, Ordering::Relaxed);
                    let shown = redact_url(&url);
                    let mut req = match call.verb {
                        Verb::Post => http.post(&url),
                        Verb::Put => http.put(&url),
                        Verb::Delete => http.delete(&url),
                    }
                    .header("x-access-token", token.expose())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        if call.json {
                            "application/json"
                        } else {
                            "application/octet-stream"
                        },
                    );
                    if let Some(m) = md5 {
                        req = req.header("Content-MD5", m);
                    }
                    let resp = req.body(call.body).send().await.map_err(|e| transport(&shown, &e))?;
                    let status = resp.status();
                    let retry_after = retry_after(resp.headers());
                    if status.is_success() {
                        return read_body(resp, MAX_JSON_BODY, &shown, true).await;
                    }
                    let body = read_body(resp, MAX_ERROR_BODY, &shown, false).await?;
                    Err(Attempt {
                        error: status_error(status, &body),
                        retry_after,
                    })
                }
                .boxed()
            })
            .await?;
        let mut v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::Malformed {
            target: shown.clone(),
            message: format!("invalid JSON: {e}"),
        })?;
        Ok(match v.get_mut("Response").map(Value::take) {
            Some(r) => r,
            None => v,
        })
    }

    /// `projects/{id}` (also samples, appresults, runs, appsessions: `kind` is the plural
    /// path segment), typed view and raw JSON.
    pub async fn entity(&self, kind: &str, id: &str) -> Result<(super::Entity, Value), ApiError> {
        self.typed(format!("v1pre3/{kind}/{}", super::segment(id)), super::Entity::parse)
            .await
    }

    /// `files/{id}`, typed view and raw JSON.
    pub async fn file(&self, id: &str) -> Result<(super::FileInfo, Value), ApiError> {
        self.typed(format!("v1pre3/files/{}", super::segment(id)), super::FileInfo::parse)
            .await
    }

    /// One resource's `Response`, parsed by `parse`, and the raw JSON.
    async fn typed<T>(&self, path: String, parse: fn(&Value) -> Result<T, String>) -> Result<(T, Value), ApiError> {
        let v = self.get_response(&path).await?;
        let t = parse(&v).map_err(|m| ApiError::Malformed {
            target: path,
            message: m,
        })?;
        Ok((t, v))
    }

    /// Unwraps a v1pre3 envelope's `Response`.
    pub async fn get_response(&self, path_and_query: &str) -> Result<Value, ApiError> {
        let body = self.get_json(path_and_query).await?;
        let env: Envelope = serde_json::from_value(body).map_err(|e| ApiError::Malformed {
            target: path_and_query.to_string(),
            message: format!("not a BaseSpace envelope: {e}"),
        })?;
        env.response.ok_or_else(|| ApiError::Malformed {
            target: path_and_query.to_string(),
            message: "envelope without Response".into(),
        })
    }

    /// Fetches every item of a list, typed.
    ///
    /// Bounded whatever the server claims: memory grows with the items that arrive, never
    /// with `TotalCount`; paging stops at an empty or short page, at a page that brings no
    /// new Id, or past [`RetryPolicy::max_listing`] (then it fails); and all pages together answer within the retry
    /// policy's deadline.
    pub async fn list_typed<T: ListItem>(&self, kind: &ListKind) -> Result<Listed<T>, ApiError> {
        self.list_with(kind, "").await
    }

    /// A listing with extra query parameters (each ending in `&`).
    async fn list_with<T: ListItem>(&self, kind: &ListKind, params: &str) -> Result<Listed<T>, ApiError> {
        let deadline = self.policy.deadline;
        match tokio::time::timeout(deadline, self.list_pages(kind, params)).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::Deadline {
                target: kind.href(),
                elapsed: deadline,
                last: "the listing was not complete".into(),
            }),
        }
    }

    /// Every page of a listing. `params` go on the first page, and on the others only when
    /// the listing has at most [`RESOLVE_UP_TO`] entries.
    async fn list_pages<T: ListItem>(&self, kind: &ListKind, params: &str) -> Result<Listed<T>, ApiError> {
        let (path, base_extra, v2, max) = kind.request();
        let mut extra = format!("{base_extra}{params}");
        let sort = kind.sort_by();
        let page_url = |extra: &str, offset: u64, limit: u64| -> String {
            let sep = if path.contains('?') { '&' } else { '?' };
            if v2 {
                format!("{path}{sep}{extra}offset={offset}&limit={limit}&sortby={sort}&sortdir=Asc")
            } else {
                format!("{path}{sep}{extra}Offset={offset}&Limit={limit}&SortBy={sort}&SortDir=Asc")
            }
        };
        let mut out = Listed::default();
        let mut seen = std::collections::HashSet::new();
        let first = self.get_parsed(&page_url(&extra, 0, max), RawPage::parse).await?;
        let got = first.items.len() as u64;
        // The server may cap pages below what we asked: page by what it actually returned.
        let step = got.clamp(1, max);
        let claimed = first.paging.total_count.unwrap_or(got);
        let limit = self.policy.max_listing.max(1);
        let total = claimed.min(limit.saturating_add(1));
        if total > RESOLVE_UP_TO {
            extra = base_extra;
        }
        absorb(&mut out, &mut seen, first);
        let mut next = step;
        let mut more = got > 0 && got < total;
        while more && next < total {
            let offsets: Vec<u64> = (0..PAGE_CONCURRENCY)
                .map(|k| next + k * step)
                .take_while(|o| *o < total)
                .collect();
            next = offsets.last().map_or(total, |o| o + step);
            let pages = futures::future::join_all(offsets.iter().map(|off| {
                let url = page_url(&extra, *off, step);
                async move { self.get_parsed(&url, RawPage::parse).await }
            }))
            .await;
            for page in pages {
                let page = page?;
                let n = page.items.len() as u64;
                let new = absorb(&mut out, &mut seen, page);
                if n < step || new == 0 || out.items.len() as u64 > limit {
                    more = false;
                    break;
                }
            }
        }
        if out.items.len() as u64 > limit {
            return Err(ApiError::TooManyEntries {
                target: kind.href(),
                claimed,
                limit,
            });
        }
        Ok(out)
    }

    /// Ranged GET on a presigned URL into one buffer.
    pub async fn get_range(&self, url: &str, start: u64, len: u64) -> Result<Bytes, ApiError> {
        let mut bufs = self.get_range_pieces(url, start, len, None, Pieces::whole()).await?;
        Ok(bufs.pop().map(Bytes::from).unwrap_or_default())
    }

    /// Ranged GET on a presigned URL, cut into `pieces`; checks the status, `Content-Range`,
    /// length and, given `etag`, the version (`If-Match` and the response's `ETag`).
    pub async fn get_range_pieces(
        &self,
        url: &str,
        start: u64,
        len: u64,
        etag: Option<&str>,
        pieces: Pieces,
    ) -> Result<Vec<Vec<u8>>, ApiError> {
        let shown = redact_url(url);
        // Content comes from presigned http(s) URLs only; anything else is refused at once
        // (not retried: no later attempt would make `file://` readable).
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ApiError::Malformed {
                target: shown,
                message: "content URL is not http(s)".into(),
            });
        }
        // An address written in the URL is not resolved: checked here (names are checked
        // when resolved).
        if let Err(message) = self.guard.check_url(url) {
            return Err(ApiError::Refused { target: shown, message });
        }
        let http = self.http.clone();
        let stats = self.stats.clone();
        let url = url.to_string();
        let etag = etag.map(|e| e.trim_matches('"').to_string());
        self.retrying(&shown, move || {
            let (http, url, stats, pieces, etag) =
                (http.clone(), url.clone(), stats.clone(), pieces.clone(), etag.clone());
            async move {
                stats.content_requests.fetch_add(1, Ordering::Relaxed);
                let shown = redact_url(&url);
                let end = start + len - 1;
                let mut req = http
                    .get(&url)
                    .header(reqwest::header::RANGE, format!("bytes={start}-{end}"));
                if let Some(e) = &etag {
                    req = req.header(reqwest::header::IF_MATCH, format!("\"{e}\""));
                }
                let resp = req.send().await.map_err(|e| transport(&shown, &e))?;
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                let got_etag = resp
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim_start_matches("W/").trim_matches('"').to_string());
                if let Some(expected) = &etag {
                    let changed = status == StatusCode::PRECONDITION_FAILED
                        || (status.is_success() && got_etag.as_ref().is_some_and(|g| g != expected));
                    if changed {
                        return Err(Attempt::from(ApiError::Changed {
                            expected: expected.clone(),
                            got: got_etag.unwrap_or_else(|| "unknown".into()),
                        }));
                    }
                }
                if status == StatusCode::FORBIDDEN {
                    return Err(Attempt::from(ApiError::UrlExpired));
                }
                if let Some(seen) = pieces.version_seen.as_ref().filter(|_| status.is_success()) {
                    if !seen(got_etag.as_deref()) {
                        return Err(Attempt::from(ApiError::Changed {
                            expected: "the version read first".into(),
                            got: got_etag.unwrap_or_else(|| "unknown".into()),
                        }));
                    }
                }
                if !status.is_success() {
                    let body = read_body(resp, MAX_ERROR_BODY, &shown, false).await?;
                    return Err(Attempt {
                        error: status_error(status, &body),
                        retry_after,
                    });
                }
                let range_ok = match (status, resp.headers().get(CONTENT_RANGE)) {
                    (StatusCode::PARTIAL_CONTENT, Some(cr)) => parse_content_range(cr.to_str().unwrap_or(""))
                        .map(|(s, e)| s == start && e == end)
                        .unwrap_or(false),
                    (StatusCode::OK, _) => start == 0, // whole body; length checked below
                    _ => false,
                };
                if !range_ok {
                    return Err(Attempt::from(ApiError::Malformed {
                        target: shown,
                        message: format!(
                            "asked bytes {start}-{end}, got HTTP {status} {:?}",
                            resp.headers().get(CONTENT_RANGE)
                        ),
                    }));
                }
                // Stream into the pieces as the body arrives: one copy, and a body longer
                // than asked is cut off at once.
                let mut out: Vec<Vec<u8>> =
                    Vec::with_capacity(len.div_ceil(pieces.size.clamp(1, len.max(1) as usize) as u64) as usize);
                let mut got = 0u64;
                let mut resp = resp;
                while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&shown, &e))? {
                    if got + chunk.len() as u64 > len {
                        return Err(Attempt::from(ApiError::Malformed {
                            target: shown,
                            message: format!("asked {len} bytes at {start}, got more"),
                        }));
                    }
                    let mut rest = &chunk[..];
                    while !rest.is_empty() {
                        let buf = match out.last_mut() {
                            Some(b) if b.len() < pieces.size => b,
                            _ => {
                                let filled = out.len().saturating_mul(pieces.size) as u64;
                                out.push((pieces.alloc)(pieces.size.min((len - filled) as usize)));
                                out.last_mut().expect("just pushed")
                            }
                        };
                        let n = (pieces.size - buf.len()).min(rest.len());
                        buf.extend_from_slice(&rest[..n]);
                        rest = &rest[n..];
                    }
                    got += chunk.len() as u64;
                }
                stats.content_bytes.fetch_add(got, Ordering::Relaxed);
                if got != len {
                    return Err(Attempt::from(ApiError::Malformed {
                        target: shown,
                        message: format!("asked {len} bytes at {start}, got {got}"),
                    }));
                }
                Ok(out)
            }
            .boxed()
        })
        .await
    }
}

impl BaseSpaceApi for HttpClient {
    fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>> {
        async move {
            let v = self.get_response("v1pre3/users/current").await?;
            let u: User = serde_json::from_value(v.clone()).map_err(|e| ApiError::Malformed {
                target: "v1pre3/users/current".into(),
                message: e.to_string(),
            })?;
            Ok((u, v))
        }
        .boxed()
    }

    fn list_entities(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<super::EntityItem>, ApiError>> {
        async move { self.list_typed(&kind).await }.boxed()
    }

    /// Asks BaseSpace to resolve each file's presigned URL in the listing itself, and keeps
    /// those URLs for [`BaseSpaceApi::content_meta`]: a listed file opens with no request.
    /// A server that does not resolve them (relative `HrefContent`) costs nothing.
    fn list_files(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<super::FileInfo>, ApiError>> {
        async move {
            let mut l: Listed<super::FileInfo> = self.list_with(&kind, "filehrefcontentresolution=true&").await?;
            let usable = SystemTime::now() + LISTED_URL_MARGIN;
            let mut urls = self.listed_urls.lock();
            for f in &mut l.items {
                let Some(href) = f.href_content.take() else { continue };
                if !(href.starts_with("https://") || href.starts_with("http://")) {
                    continue;
                }
                let meta = ContentMeta {
                    href_content: href,
                    expires: None,
                    supports_range: None,
                };
                if meta.expiry().is_some_and(|e| e > usable) {
                    urls.put(f.id.clone(), meta);
                }
            }
            Ok(l)
        }
        .boxed()
    }

    fn list_properties(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<super::PropertyItem>, ApiError>> {
        async move { self.list_typed(&kind).await }.boxed()
    }

    /// The token's own field is dropped here, so nothing above this layer ever holds it.
    fn token_info(&self) -> BoxFuture<'_, Result<Value, ApiError>> {
        async move {
            let mut v = self.get_response("v1pre3/oauthv2/token/current").await?;
            scrub_token(&mut v, self.creds.token.expose());
            Ok(v)
        }
        .boxed()
    }

    fn send(&self, call: super::write::Call) -> BoxFuture<'_, Result<Value, ApiError>> {
        async move { self.send_call(call).await }.boxed()
    }

    /// The body as sent, but with the token, should the server ever echo it, cut out.
    fn get_raw(&self, path: &str) -> BoxFuture<'_, Result<Bytes, ApiError>> {
        let path = path.trim_start_matches('/').to_string();
        async move {
            let body = self.get_parsed(&path, |b| Ok(b.to_vec())).await?;
            Ok(scrub_bytes(body, self.creds.token.expose()))
        }
        .boxed()
    }

    fn list_raw(&self, kind: ListKind) -> BoxFuture<'_, Result<Bytes, ApiError>> {
        async move {
            let l: Listed<super::model::RawItem> = self.list_typed(&kind).await?;
            let items: Vec<&serde_json::value::RawValue> = l.items.iter().map(|i| &*i.raw).collect();
            let n = items.len();
            let paging = serde_json::json!({"DisplayedCount": n, "TotalCount": n, "Offset": 0, "Limit": n,
                "SortDir": "Asc", "SortBy": kind.sort_by()});
            #[derive(serde::Serialize)]
            #[serde(rename_all = "PascalCase")]
            struct V2<'a> {
                items: Vec<&'a serde_json::value::RawValue>,
                paging: Value,
            }
            let body = match kind.is_v2() {
                true => serde_json::to_vec(&V2 { items, paging }),
                false => {
                    let mut response = serde_json::Map::new();
                    response.insert("Items".into(), serde_json::to_value(&items).unwrap_or_default());
                    for (k, v) in paging.as_object().into_iter().flatten() {
                        response.insert(k.clone(), v.clone());
                    }
                    serde_json::to_vec(
                        &serde_json::json!({"Response": response, "ResponseStatus": {}, "Notifications": []}),
                    )
                }
            }
            .map_err(|e| ApiError::Malformed {
                target: kind.href(),
                message: e.to_string(),
            })?;
            Ok(scrub_bytes(body, self.creds.token.expose()))
        }
        .boxed()
    }

    fn content_meta(&self, file_id: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>> {
        let path = format!("v1pre3/files/{}/content?redirect=meta", super::segment(file_id));
        let listed = self.listed_urls.lock().get(file_id).cloned();
        if let Some(m) = listed.filter(|m| m.expiry().is_some_and(|e| e > SystemTime::now() + LISTED_URL_MARGIN)) {
            self.stats.listed_urls_used.fetch_add(1, Ordering::Relaxed);
            return async move { Ok(m) }.boxed();
        }
        async move {
            let v = self.get_response(&path).await?;
            serde_json::from_value(v).map_err(|e| ApiError::Malformed {
                target: path,
                message: e.to_string(),
            })
        }
        .boxed()
    }

    fn url_refused(&self, file_id: &str) {
        self.listed_urls.lock().pop(file_id);
    }

    fn get_range(
        &self,
        url: &str,
        start: u64,
        len: u64,
        etag: Option<&str>,
        pieces: Pieces,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>> {
        let url = url.to_string();
        let etag = etag.map(str::to_string);
        async move { self.get_range_pieces(&url, start, len, etag.as_deref(), pieces).await }.boxed()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("api_requests", s.api_requests.load(Ordering::Relaxed)),
            ("content_requests", s.content_requests.load(Ordering::Relaxed)),
            ("content_bytes", s.content_bytes.load(Ordering::Relaxed)),
            ("retries", s.retries.load(Ordering::Relaxed)),
            ("listed_urls_used", s.listed_urls_used.load(Ordering::Relaxed)),
            ("errors", s.errors.load(Ordering::Relaxed)),
        ]
    }
}

/// Adds a page's items to a listing: each parsed on its own (a malformed one is skipped and
/// named), each Id once. Returns how many new items it brought.
fn absorb<T: ListItem>(out: &mut Listed<T>, seen: &mut std::collections::HashSet<String>, page: RawPage) -> usize {
    let before = out.items.len();
    for d in page.subdirs {
        if !out.subdirs.contains(&d) {
            out.subdirs.push(d);
        }
    }
    for raw in page.items {
        match T::from_raw(&raw) {
            Ok(item) => {
                if seen.insert(item.id().to_string()) {
                    out.items.push(item);
                }
            }
            Err(m) => {
                if out.skipped.len() < MAX_SKIPPED_NAMED {
                    out.skipped.push(format!("skipped a malformed item: {m}"));
                }
            }
        }
    }
    out.items.len() - before
}

/// Reads a response body up to `limit` bytes. Past it: an error when the body is needed
/// whole (`whole`), else what was read so far (an error body's first bytes say enough).
async fn read_body(mut resp: reqwest::Response, limit: u64, shown: &str, whole: bool) -> Result<Bytes, Attempt> {
    if whole && resp.content_length().is_some_and(|n| n > limit) {
        return Err(Attempt::from(ApiError::TooLarge {
            target: shown.to_string(),
            limit,
        }));
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(shown, &e))? {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            if whole {
                return Err(Attempt::from(ApiError::TooLarge {
                    target: shown.to_string(),
                    limit,
                }));
            }
            let room = limit as usize - buf.len();
            buf.extend_from_slice(&chunk[..room]);
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn with_attempts(e: ApiError, n: u32) -> ApiError {
    match e {
        ApiError::Transport { target, message, .. } => ApiError::Transport {
            target,
            message,
            attempts: n,
        },
        ApiError::Server {
            status, code, message, ..
        } => ApiError::Server {
            status,
            code,
            message,
            attempts: n,
        },
        ApiError::Throttled { .. } => ApiError::Throttled { attempts: n },
        other => other,
    }
}

fn transport(target: &str, e: &reqwest::Error) -> Attempt {
    // reqwest's Display can include the URL; we name the (redacted) target ourselves.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "connection dropped while reading the body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    let message = if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {}", redact_url(&detail))
    };
    Attempt::from(ApiError::Transport {
        target: target.to_string(),
        message,
        attempts: 1,
    })
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Maps a non-success status and its body to a typed error.
pub fn status_error(status: StatusCode, body: &[u8]) -> ApiError {
    let (code, message) = error_fields(body);
    let message = message.unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
    match status.as_u16() {
        401 => ApiError::Unauthorized { code },
        403 => ApiError::Forbidden { code, message },
        404 => ApiError::NotFound { code, message },
        410 => ApiError::Gone { code, message },
        429 => ApiError::Throttled { attempts: 1 },
        s @ 500..=599 => ApiError::Server {
            status: s,
            code,
            message,
            attempts: 1,
        },
        s => ApiError::Status {
            status: s,
            code,
            message,
        },
    }
}

/// `body` with every occurrence of the token replaced (a `.json` is served as BaseSpace sent
/// it, but never with the token in it).
fn scrub_bytes(body: Vec<u8>, token: &str) -> Bytes {
    let t = token.as_bytes();
    if t.is_empty() || !body.windows(t.len()).any(|w| w == t) {
        return Bytes::from(body);
    }
    let text = String::from_utf8_lossy(&body).replace(token, "REDACTED");
    Bytes::from(text.into_bytes())
}

/// Drops every `AccessToken`/`RefreshToken` field, at any depth, and any string holding the
/// token itself: what is left may be shown (`.AccessToken/.json`).
fn scrub_token(v: &mut Value, token: &str) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.eq_ignore_ascii_case("AccessToken") && !k.eq_ignore_ascii_case("RefreshToken"));
            m.values_mut().for_each(|x| scrub_token(x, token));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub_token(x, token)),
        Value::String(s) if !token.is_empty() && s.contains(token) => *s = "REDACTED".into(),
        _ => {}
    }
}

/// `ResponseStatus{ErrorCode,Message}` (v1), top-level `ErrorCode/ErrorMessage` (v2) or
/// OAuth `error/error_description`.
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let s = |v: Option<&Value>| v.and_then(|x| x.as_str()).map(str::to_string);
    if let Some(rs) = v.get("ResponseStatus") {
        return (s(rs.get("ErrorCode")), s(rs.get("Message")));
    }
    if v.get("ErrorCode").is_some() {
        return (
            s(v.get("ErrorCode")),
            s(v.get("ErrorMessage")).or(s(v.get("MessageFormatted"))),
        );
    }
    (s(v.get("error")), s(v.get("error_description")))
}

/// `bytes START-END/TOTAL` → (START, END).
pub fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let r = v.trim().strip_prefix("bytes ")?;
    let (range, _total) = r.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_info_never_holds_the_token() {
        let mut v = serde_json::json!({"AccessToken": "t0k", "Scopes": ["READ GLOBAL"],
            "Application": {"RefreshToken": "x", "Note": "was t0k"}, "List": ["t0k"]});
        scrub_token(&mut v, "t0k");
        assert!(!v.to_string().contains("t0k"), "{v}");
        assert_eq!(v["Scopes"][0], "READ GLOBAL");
    }
}
