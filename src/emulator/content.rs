//! File bytes: the presigned "S3" URLs (signed, expiring, with Range and If-Match as S3
//! answers them), the API's `files/{id}/content` redirect, and `/browse/`, the account as a
//! plain HTML index for generic HTTP tools (rclone, aria2c, wget) on the same bytes.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use percent_encoding::{percent_decode_str, utf8_percent_encode};
use serde_json::json;

use super::account::{fill, FileEntry};
use super::faults::Fault;
use super::http::{no_access, num, ok, Query, Req};
use super::routes::injected_error;
use super::state::{Shared, SEGMENT};
use crate::api::model::format_date;

/// Body chunk when no bandwidth cap applies: big enough for GB/s on loopback.
const FAST_CHUNK: usize = 1 << 20;
/// Body chunk under a bandwidth cap: small enough for smooth pacing.
const PACED_CHUNK: usize = 64 << 10;

/// `GET v1pre3/files/{id}/content`: a redirect to the presigned URL (`redirect=meta`: the
/// URL as JSON; `redirect=false`: the bytes themselves).
pub async fn content(r: Req, Path(id): Path<String>) -> Response {
    let Some(f) = num(&id).and_then(|i| r.a.files.get(&i)) else {
        return no_access("File");
    };
    content_redirect(&r.s, f, &r.q, &r.method, &r.headers)
}

/// `GET|HEAD /content/<obj>/<name>?…`: the presigned URL.
pub async fn presigned_url(
    State(s): State<Arc<Shared>>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    s.stats.content_requests.fetch_add(1, Ordering::Relaxed);
    presigned(&s, &rest, &Query::parse(uri.query()), &method, &headers)
}

/// `/browse/…`.
pub async fn browse_path(
    State(s): State<Arc<Shared>>,
    rest: Option<Path<String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    s.stats.browse_requests.fetch_add(1, Ordering::Relaxed);
    let rel = rest.map(|Path(p)| p).unwrap_or_default();
    browse(&s, rel.trim_start_matches('/'), &method, &headers)
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
    let bw = s.faults.profile.bandwidth;
    let chunk = if bw > 0 { PACED_CHUNK } else { FAST_CHUNK } as u64;
    let s = s.clone();
    let t0 = Instant::now();
    // A disk-backed file is opened once per response, not once per chunk.
    let disk = match &f.content {
        super::account::Content::Disk(p) => Some(Arc::new(std::fs::File::open(p))),
        _ => None,
    };
    // `ahead` holds the bytes from `start + sent` on: a window of the file mapped at once
    // (or a slice of content held in memory), cut into chunks as the link paces them.
    futures::stream::unfold((0u64, Bytes::new()), move |(sent, mut ahead)| {
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
                        (len, Bytes::new()),
                    ));
                }
            }
            let mut n = chunk.min(len - sent);
            if let Some(r) = reset_at {
                n = n.min(r - sent).max(1);
            }
            if (ahead.len() as u64) < n {
                let want = WINDOW.max(n).min(len - sent);
                match read_at(&f, disk.clone(), start + sent, want).await {
                    Ok(b) => ahead = b,
                    Err(e) => return Some((Err(e), (len, Bytes::new()))),
                }
            }
            if bw > 0 {
                // A chunk is delivered once its own bytes have crossed the emulated link.
                let due = Duration::from_secs_f64((sent + n) as f64 / bw as f64);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let b = ahead.split_to(n as usize);
            s.stats.content_bytes.fetch_add(n, Ordering::Relaxed);
            Some((Ok(b), (sent + n, ahead)))
        }
    })
}

/// Bytes of a file on disk mapped at once for a response.
const WINDOW: u64 = 8 << 20;

/// `n` bytes of `f` at `off`: slices of content held in memory; of a file on disk, a
/// window mapped read-only (its pages are the page cache's: no copy, no buffer, one
/// blocking call per window). Reading 64 KiB chunks into fresh buffers instead cost the
/// emulator 1.6 s of CPU per 800 MiB served, on the same two cores as the client it
/// serves: a third more than mapping (1.2 s). Like S3's objects, the files under `--data`
/// must not shrink while being served (a mapping past the new end faults).
async fn read_at(
    f: &Arc<FileEntry>,
    disk: Option<Arc<std::io::Result<std::fs::File>>>,
    off: u64,
    n: u64,
) -> std::io::Result<Bytes> {
    match &f.content {
        super::account::Content::Memory(b) => Ok(b.slice(off as usize..(off + n) as usize)),
        super::account::Content::Parts(c) => Ok(c.slice(off, n as usize)),
        _ => {
            let f2 = f.clone();
            tokio::task::spawn_blocking(move || match disk.as_deref() {
                Some(Ok(file)) => Mapped::new(file, off, n as usize).map(Bytes::from_owner),
                Some(Err(e)) => Err(std::io::Error::new(e.kind(), e.to_string())),
                None => {
                    let mut buf = vec![0u8; n as usize];
                    fill(&f2.content, off, &mut buf).map(|_| Bytes::from(buf))
                }
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        }
    }
}

/// A read-only mapping of part of a file, unmapped when the last slice of it is dropped.
struct Mapped {
    base: *mut libc::c_void,
    map_len: usize,
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(file: &std::fs::File, off: u64, len: usize) -> std::io::Result<Mapped> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Ok(Mapped {
                base: std::ptr::null_mut(),
                map_len: 0,
                skip: 0,
                len: 0,
            });
        }
        if file.metadata()?.len() < off + len as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shorter than listed",
            ));
        }
        // SAFETY: sysconf has no preconditions.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64;
        let at = off / page * page;
        let skip = (off - at) as usize;
        let map_len = skip + len;
        // SAFETY: a fresh private read-only mapping of a valid descriptor; MAP_POPULATE
        // reads it in here, on the blocking thread, not on the runtime's.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                at as libc::off_t,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped {
            base,
            map_len,
            skip,
            len,
        })
    }
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `base..base + map_len` is mapped readable for this value's life.
        unsafe { std::slice::from_raw_parts((self.base as *const u8).add(self.skip), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.map_len > 0 {
            // SAFETY: unmapping exactly what `new` mapped, once.
            unsafe { libc::munmap(self.base, self.map_len) };
        }
    }
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
    let idx = s.browse_index();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_window_holds_exactly_the_bytes_asked_for_at_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..(3 * 4096 + 123)).map(|i: u32| (i * 7 + i / 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        for (off, len) in [
            (0, 1),
            (0, data.len()),
            (1, 4095),
            (4095, 2),
            (4096, 4096),
            (5000, 7411),
            (data.len() - 1, 1),
            (7, 0),
        ] {
            let b = Bytes::from_owner(Mapped::new(&f, off as u64, len).unwrap());
            assert_eq!(&b[..], &data[off..off + len], "{off}+{len}");
            // Slices outlive the handle they were cut from.
            let tail = b.slice(len / 2..);
            drop(b);
            assert_eq!(&tail[..], &data[off + len / 2..off + len]);
        }
        // A file shorter than listed is an error, not a mapping past its end.
        let e = Mapped::new(&f, 4096, data.len()).err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
