//! Where bytes come from when no cache level has them: presigned URLs (resolved, kept,
//! renewed before they expire) and ranged GETs under one connection limit, each asking for
//! the exact version the tree listed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use super::pool::BufPool;
use super::verify::Expect;
use super::{ReadError, ReadStats, BLOCK_SIZE};
use crate::api::{ApiError, BaseSpaceApi, Pieces};
use crate::tree::RemoteFile;

/// Renew a presigned URL this long before it expires (or at half its lifetime if that is
/// shorter), so a long sequential read never sends a request with a URL about to lapse.
const URL_MARGIN: Duration = Duration::from_secs(60);
/// Presigned URLs kept: one per file recently read (a URL is ~300 bytes; 100,000 files
/// read once would otherwise keep 30 MB).
const URLS_KEPT: usize = 16_384;
/// Renewals of one part's URL before giving up: a URL refused right after renewal means
/// something else is wrong (clock skew, revoked access).
const MAX_URL_RENEWALS: u32 = 3;

pub struct ContentSource {
    api: Arc<dyn BaseSpaceApi>,
    /// File id → (presigned URL, when to renew it).
    urls: Mutex<lru::LruCache<String, (String, Option<SystemTime>)>>,
    conns: Arc<Semaphore>,
    pool: Arc<BufPool>,
    stats: Arc<ReadStats>,
    /// File versions verified whole; `None` with `--no-verify` (nothing is hashed).
    verified: Option<super::Verified>,
    /// Where a small file verified in one GET is kept whole ([`super::whole`]).
    disk: Option<Arc<super::disk::DiskCache>>,
    /// Versions pinned by the first response's ETag, for files listed without one: later
    /// GETs ask for it (`If-Match`) and refuse another, so a file replaced mid-read is never
    /// read as a mix. Keyed by file id and listed version (a re-listing starts afresh).
    pins: Arc<Mutex<lru::LruCache<(String, String), String>>>,
}

impl ContentSource {
    pub fn new(
        api: Arc<dyn BaseSpaceApi>,
        max_connections: usize,
        pool: Arc<BufPool>,
        stats: Arc<ReadStats>,
        verified: Option<super::Verified>,
        disk: Option<Arc<super::disk::DiskCache>>,
    ) -> Self {
        ContentSource {
            api,
            urls: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(URLS_KEPT).expect("non-zero"),
            )),
            conns: Arc::new(Semaphore::new(max_connections.max(1))),
            pool,
            stats,
            verified,
            disk,
            pins: Arc::new(Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(URLS_KEPT).expect("non-zero"),
            ))),
        }
    }

    /// The connection limit, for others that share it.
    pub fn connections(&self) -> Arc<Semaphore> {
        self.conns.clone()
    }

    /// One ranged GET for blocks `[first, first+n)` of `file`'s listed version, renewing
    /// the URL if it expired. A GET of a whole file is checked against a plain-md5 ETag at
    /// once (and tried once more before failing); `ahead`: no read waits for it yet, so its
    /// hash may wait a little to run side by side with others ([`super::lanes`]).
    pub async fn fetch(&self, file: &RemoteFile, first: u64, n: u64, ahead: bool) -> Result<Vec<Bytes>, ReadError> {
        let start = first * BLOCK_SIZE;
        let len = (n * BLOCK_SIZE).min(file.size - start);
        let b = self.get(file, start, len, BLOCK_SIZE as usize, ahead).await?;
        if b.len() as u64 != n {
            return Err(ReadError::Internal(format!("asked {n} blocks, got {}", b.len())));
        }
        self.stats.parts_fetched.fetch_add(1, Ordering::Relaxed);
        Ok(b)
    }

    /// `len` bytes at `start` in one buffer, for a small random read that fetches only
    /// around what it asked (not cached as blocks).
    pub async fn fetch_range(&self, file: &RemoteFile, start: u64, len: u64) -> Result<Bytes, ReadError> {
        let mut b = self.get(file, start, len, len as usize, false).await?;
        self.stats.small_fetches.fetch_add(1, Ordering::Relaxed);
        match (b.pop(), b.is_empty()) {
            (Some(x), true) => Ok(x),
            _ => Err(ReadError::Internal(format!("asked {len} bytes in one piece"))),
        }
    }

    /// One ranged GET of `[start, start+len)`, cut in pieces of `piece` bytes.
    async fn get(
        &self,
        file: &RemoteFile,
        start: u64,
        len: u64,
        piece: usize,
        ahead: bool,
    ) -> Result<Vec<Bytes>, ReadError> {
        tracing::debug!(file = %file.id, start, len, "ranged GET");
        let _permit = self
            .conns
            .acquire()
            .await
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        let expected = match file.etag().and_then(Expect::parse) {
            Some(Expect::Plain(d)) if start == 0 && len == file.size && self.verified.is_some() => Some(d),
            _ => None,
        };
        let (mut renewals, mut corrupt) = (0, 0);
        let key = (file.id.clone(), file.version.clone());
        loop {
            let url = self.url(&file.id, renewals > 0).await?;
            let pool = self.pool.clone();
            // Listed without an ETag: ask for the version pinned by an earlier response, or
            // pin this one's.
            let pinned = match file.etag() {
                Some(_) => None,
                None => self.pins.lock().get(&key).cloned(),
            };
            let version_seen = (file.etag().is_none() && pinned.is_none()).then(|| {
                let (pins, key) = (self.pins.clone(), key.clone());
                Arc::new(move |got: Option<&str>| match got {
                    None => true, // nothing to pin: nothing to compare either
                    Some(g) => pins.lock().get_or_insert(key.clone(), || g.to_string()) == g,
                }) as crate::api::VersionSeen
            });
            let pieces = Pieces {
                size: piece,
                alloc: Arc::new(move |want| pool.take(want)),
                version_seen,
            };
            match self
                .api
                .get_range(&url, start, len, file.etag().or(pinned.as_deref()), pieces)
                .await
            {
                Ok(bufs) => {
                    let b: Vec<Bytes> = bufs.into_iter().map(|v| self.pool.freeze(v)).collect();
                    let got_len: u64 = b.iter().map(|x| x.len() as u64).sum();
                    if got_len != len {
                        return Err(ReadError::Internal(format!(
                            "asked {len} bytes at {start}, got {got_len}"
                        )));
                    }
                    self.stats.bytes_fetched.fetch_add(len, Ordering::Relaxed);
                    if let Some(exp) = expected {
                        // Hashed off the runtime's threads, which keep streaming meanwhile,
                        // side by side with the other files fetched whole.
                        let wait = if ahead {
                            super::lanes::AHEAD_WAIT
                        } else {
                            Duration::ZERO
                        };
                        let got: [u8; 16] = super::lanes::md5_of(b.clone(), (), wait)
                            .await
                            .map_err(|e| ReadError::Internal(format!("hashing: {e}")))?;
                        if got != exp {
                            self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                            corrupt += 1;
                            if corrupt < 2 {
                                continue;
                            }
                            return Err(ReadError::Corrupt {
                                file: file.id.clone(),
                                expected: hex::encode(exp),
                                got: hex::encode(got),
                            });
                        }
                        self.stats.files_verified.fetch_add(1, Ordering::Relaxed);
                        let object = super::cache::ObjectId::of(file);
                        if let Some(d) = &self.disk {
                            d.keep_whole(&object, len, b.clone());
                        }
                        if let Some(v) = &self.verified {
                            v.lock().put(object, ());
                        }
                    }
                    return Ok(b);
                }
                // Expired (or about to be, when retries took long): renew and go on.
                Err(ApiError::UrlExpired) if renewals < MAX_URL_RENEWALS => {
                    tracing::info!(file = %file.id, "presigned URL refused; renewing");
                    self.api.url_refused(&file.id);
                    self.stats.url_renewals.fetch_add(1, Ordering::Relaxed);
                    renewals += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The presigned URL of a file, resolved on first use and kept until shortly before it
    /// expires (`force` re-resolves).
    async fn url(&self, file_id: &str, force: bool) -> Result<String, ReadError> {
        if !force {
            if let Some((u, renew_at)) = self.urls.lock().get(file_id) {
                if renew_at.is_none_or(|r| r > SystemTime::now()) {
                    return Ok(u.clone());
                }
            }
        }
        let meta = self.api.content_meta(file_id).await?;
        let now = SystemTime::now();
        let renew_at = meta.expiry().map(|exp| {
            let life = exp.duration_since(now).unwrap_or_default();
            exp - URL_MARGIN.min(life / 2)
        });
        self.urls
            .lock()
            .put(file_id.to_string(), (meta.href_content.clone(), renew_at));
        Ok(meta.href_content)
    }
}
