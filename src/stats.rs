//! Live figures of a mount, served at `<mountpoint>/.bsmount/stats` and shown by
//! `bsmount status`: requests, retries, errors, cache hit rate, bytes, reads in flight and
//! current throughput.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::api::BaseSpaceApi;
use crate::read::Reader;
use crate::tree::Tree;

/// Counters the FUSE adapter feeds, plus handles to every layer's own counters.
pub struct MountStats {
    pub server: String,
    pub mountpoint: String,
    started: SystemTime,
    api: Arc<dyn BaseSpaceApi>,
    reader: Arc<Reader>,
    tree: Arc<Tree>,
    pub reads_in_flight: AtomicU64,
    pub bytes_served: AtomicU64,
    /// (when, bytes_served) at the previous snapshot, for throughput.
    last: Mutex<(Instant, u64)>,
    /// The upload spool (`--write` without `--write-through`), once made.
    pub uploads: std::sync::OnceLock<Arc<crate::write::spool::Spool>>,
}

impl MountStats {
    pub fn new(
        server: &str,
        mountpoint: &str,
        api: Arc<dyn BaseSpaceApi>,
        reader: Arc<Reader>,
        tree: Arc<Tree>,
    ) -> Self {
        MountStats {
            server: server.to_string(),
            mountpoint: mountpoint.to_string(),
            started: SystemTime::now(),
            api,
            reader,
            tree,
            reads_in_flight: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            last: Mutex::new((Instant::now(), 0)),
            uploads: std::sync::OnceLock::new(),
        }
    }

    /// A JSON snapshot. Throughput is measured since the previous snapshot.
    pub fn snapshot(&self) -> Value {
        let served = self.bytes_served.load(Ordering::Relaxed);
        let throughput = {
            let mut last = self.last.lock();
            let dt = last.0.elapsed().as_secs_f64();
            let rate = if dt > 0.0 { (served - last.1) as f64 / dt } else { 0.0 };
            *last = (Instant::now(), served);
            rate
        };
        let r = &self.reader.stats;
        let (hits, misses) = (
            r.cache_hits.load(Ordering::Relaxed),
            r.cache_misses.load(Ordering::Relaxed),
        );
        let mut api = serde_json::Map::new();
        for (k, v) in self.api.counters() {
            api.insert(k.into(), json!(v));
        }
        json!({
            "server": self.server,
            "mountpoint": self.mountpoint,
            "pid": std::process::id(),
            "started": crate::api::model::format_date(self.started),
            "api": api,
            "reads": {
                "in_flight": self.reads_in_flight.load(Ordering::Relaxed),
                "bytes_served": served,
                "errors": r.read_errors.load(Ordering::Relaxed),
                "throughput_bytes_per_sec": throughput.round(),
            },
            "cache": {
                "hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
                "hits": hits,
                "misses": misses,
                "cached_bytes": self.reader.cached_bytes(),
                "inflight_bytes": self.reader.inflight_bytes(),
            },
            "fetch": {
                "parts": r.parts_fetched.load(Ordering::Relaxed),
                "bytes": r.bytes_fetched.load(Ordering::Relaxed),
                "url_renewals": r.url_renewals.load(Ordering::Relaxed),
                "files_verified": r.files_verified.load(Ordering::Relaxed),
                "checksum_failures": r.checksum_failures.load(Ordering::Relaxed),
                "prefetch_cancelled": r.prefetch_cancelled.load(Ordering::Relaxed),
                "files_ahead": r.files_ahead.load(Ordering::Relaxed),
                "small_fetches": r.small_fetches.load(Ordering::Relaxed),
                "streamed_opens": r.streamed_opens.load(Ordering::Relaxed),
                "parts_hashed_ahead": r.parts_hashed_ahead.load(Ordering::Relaxed),
                "part_digests_taken": r.part_digests_taken.load(Ordering::Relaxed),
            },
            "listings": self.tree.fills.load(Ordering::Relaxed),
            "listings_ahead": self.tree.fills_ahead.load(Ordering::Relaxed),
            "listings_ahead_started": self.tree.fills_ahead_started.load(Ordering::Relaxed),
            "listings_ahead_used": self.tree.fills_ahead_used.load(Ordering::Relaxed),
            "listings_memory": self.tree.budget.charged(),
            "listings_dropped": self.tree.budget.evicted.load(Ordering::Relaxed),
            "inodes": self.tree.len(),
            "shared_cache": self.reader.shared().map(|c| {
                let s = &c.stats;
                json!({
                    "bytes_at_last_scan": c.bytes(),
                    "limit": c.limit(),
                    "hits": s.hits.load(Ordering::Relaxed),
                    "misses": s.misses.load(Ordering::Relaxed),
                    "bytes_read": s.bytes_read.load(Ordering::Relaxed),
                    "writes": s.writes.load(Ordering::Relaxed),
                    "writes_skipped": s.writes_skipped.load(Ordering::Relaxed),
                    "rejected": s.rejected.load(Ordering::Relaxed),
                    "evictions": s.evictions.load(Ordering::Relaxed),
                    "scans": s.scans.load(Ordering::Relaxed),
                })
            }),
            "uploads": self.uploads.get().map(|s| s.summary()),
            "disk_cache": self.reader.disk().map(|d| {
                let s = &d.stats;
                json!({
                    "bytes": d.bytes(),
                    "limit": d.limit(),
                    "hits": s.hits.load(Ordering::Relaxed),
                    "bytes_read": s.bytes_read.load(Ordering::Relaxed),
                    "writes": s.writes.load(Ordering::Relaxed),
                    "writes_skipped": s.writes_skipped.load(Ordering::Relaxed),
                    "rejected": s.corrupt.load(Ordering::Relaxed),
                    "evictions": s.evictions.load(Ordering::Relaxed),
                    "files_kept_whole": s.promoted.load(Ordering::Relaxed),
                    "bytes_kept_whole": s.promoted_bytes.load(Ordering::Relaxed),
                    "passthrough_opens": s.passthrough_opens.load(Ordering::Relaxed),
                })
            }),
        })
    }
}
