//! A block cache shared by many hosts through a directory on the cluster's filesystem
//! (`--shared-cache-dir`, `--shared-cache-dir-size`): NFS, Lustre, GPFS, CephFS, a
//! Kubernetes ReadWriteMany volume. No server of our own.
//!
//! Fifty nodes running one pipeline read the same reference panels, BAMs and run folders;
//! without this each fetches them from BaseSpace again. The level sits below the local disk
//! tier: a block one host fetched is read by the others from here.
//!
//! What keeps many writers and readers safe without locks:
//! - **Publishing is atomic.** A block is written under a temporary name in `DIR/tmp/`
//!   (host, process and a counter in the name, so writers never share one), fsynced, then
//!   renamed to `DIR/blocks/ab/<md5 of key>`. Rename is atomic on every POSIX filesystem
//!   and on NFS, so a reader sees a whole block or none; two hosts publishing the same block
//!   both write the same bytes, and the last rename wins.
//! - **Every block is checked on reading**: the key and a CRC-32 of the data are in its
//!   header (the `--cache-dir` format), so a torn, foreign or damaged file is refused (and
//!   removed) and the block fetched from BaseSpace; a block removed by another host between
//!   the open and the read is a miss, never an error.
//! - **The size limit is kept cooperatively.** Each mount scans the directory every
//!   [`SCAN_EVERY_BYTES`] it writes (and at least every [`SCAN_EVERY`] while writing),
//!   and when the directory holds more than its limit removes the least recently used blocks
//!   down to [`EVICT_TO`] of it. "Used" is the file's mtime, which a read refreshes (at most
//!   once a minute per block): atime is often off on NFS mounts. Mounts with different
//!   limits on one directory each keep theirs; the smallest wins.
//! - **Crashed writers** leave only temporaries, never read; any mount removes those older
//!   than [`TMP_GRACE`] (a live writer finishes a block in well under that).
//!
//! Unlike `--cache-dir`, the directory is not locked: that is the point. Nothing is
//! indexed in memory either (other hosts change the directory): `contains` answers "maybe",
//! and a block not there costs one failed open before it is fetched.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

use super::cache::{BlockKey, CacheLevel};
use super::disk::{block_header, file_name, key_of, load_off_thread, read_block};
use super::pool::BufPool;

/// Writes in flight at once (each waits for an fsync on a network filesystem, so more than
/// the local disk tier allows). Blocks beyond it wait in the backlog.
const MAX_PENDING_WRITES: u64 = 64;
/// Bytes of blocks waiting to be published behind the writes in flight, at most. A reader
/// that outruns the directory (a cold `cat` at network speed against an fsync per block)
/// leaves its blocks here, published as writes finish, so another host finds every block
/// this one fetched. The blocks are shared with the memory cache while it holds them;
/// past this budget they are dropped (another host then fetches them again).
const MAX_BACKLOG_BYTES: u64 = 256 << 20;
/// Bytes this mount writes between two scans of the directory for eviction: with a few
/// mounts writing at once the directory overshoots its limit by about this much each.
pub const SCAN_EVERY_BYTES: u64 = 8 << 20;
/// A mount that writes scans at least this often.
const SCAN_EVERY: Duration = Duration::from_secs(30);
/// Eviction goes down to this fraction of the limit, so that scans are not back to back.
const EVICT_TO: f64 = 0.9;
/// Temporaries older than this are a crashed writer's: removed by whoever scans.
pub const TMP_GRACE: Duration = Duration::from_secs(15 * 60);
/// A read refreshes a block's recorded use at most this often (a metadata write on NFS).
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// A failing directory is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
#[error("shared cache directory {dir}: {source}")]
pub struct SharedCacheError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Counters for `bsmount status`.
#[derive(Debug, Default)]
pub struct SharedStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_read: AtomicU64,
    pub writes: AtomicU64,
    pub writes_skipped: AtomicU64,
    pub rejected: AtomicU64,
    pub evictions: AtomicU64,
    pub scans: AtomicU64,
}

pub struct SharedCache {
    dir: PathBuf,
    limit: u64,
    /// Names temporaries apart from every other writer's, on every host.
    writer: String,
    seq: AtomicU64,
    pending: AtomicU64,
    /// Blocks waiting for a writer, oldest first, and their bytes.
    backlog: Mutex<(std::collections::VecDeque<(String, Bytes)>, u64)>,
    /// Bytes written since the last scan, and when it was.
    since_scan: Mutex<(u64, Instant)>,
    /// The directory's size at the last scan (after eviction).
    last_size: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
    pub stats: SharedStats,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .finish()
    }
}

/// This host's name, for temporaries (`/proc`, else the environment, else "host").
fn host_name() -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    h.trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .take(64)
        .collect()
}

impl SharedCache {
    /// Uses (creating if needed) the shared directory `dir` with this mount's `limit`.
    pub fn open(dir: &Path, limit: u64) -> Result<Arc<SharedCache>, SharedCacheError> {
        let io = |source| SharedCacheError {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir.join("blocks")).map_err(io)?;
        fs::create_dir_all(dir.join("tmp")).map_err(io)?;
        let c = Arc::new(SharedCache {
            dir: dir.to_path_buf(),
            limit,
            writer: format!("{}.{}", host_name(), std::process::id()),
            seq: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            backlog: Default::default(),
            since_scan: Mutex::new((0, Instant::now())),
            last_size: AtomicU64::new(0),
            last_warning: Mutex::new(None),
            stats: SharedStats::default(),
        });
        c.scan();
        Ok(c)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The directory's size at the last scan.
    pub fn bytes(&self) -> u64 {
        self.last_size.load(Ordering::Relaxed)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join("blocks").join(&name[..2]).join(name)
    }

    /// A block, checked; `None` if absent, removed meanwhile, or refused (then deleted,
    /// for every host). Blocking.
    pub fn load(&self, key: &str, len: usize, pool: &Arc<BufPool>) -> Option<Bytes> {
        let path = self.path(&file_name(key));
        match read_block(&path, key, len, pool) {
            Ok(b) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
                touch(&path);
                Some(b)
            }
            Err(why) => {
                match fs::symlink_metadata(&path) {
                    Ok(_) => {
                        tracing::warn!(path = %path.display(), "shared cache block rejected ({why}); fetching it again");
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        let _ = fs::remove_file(&path);
                    }
                    Err(_) => {
                        self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None
            }
        }
    }

    /// Publishes a block in the background: at once when a writer is free, else from the
    /// backlog when one is (dropped only when the backlog is full).
    pub fn store(self: &Arc<Self>, key: String, data: Bytes) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_WRITES {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let mut b = self.backlog.lock();
            if b.1 + data.len() as u64 > MAX_BACKLOG_BYTES {
                self.stats.writes_skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            b.1 += data.len() as u64;
            b.0.push_back((key, data));
            drop(b);
            // A writer may have finished between the count and the push: make sure one runs.
            if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_WRITES {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.drain(None));
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.drain(Some((key, data))));
    }

    /// One writer: its block, then blocks from the backlog until it is empty (blocking).
    fn drain(&self, first: Option<(String, Bytes)>) {
        let next = || {
            let mut b = self.backlog.lock();
            let item = b.0.pop_front();
            if let Some((_, d)) = &item {
                b.1 -= d.len() as u64;
            }
            item
        };
        let mut item = first.or_else(next);
        loop {
            while let Some((key, data)) = item {
                if let Err(e) = self.write(&key, &data) {
                    self.warn(&e);
                }
                item = next();
            }
            self.pending.fetch_sub(1, Ordering::AcqRel);
            // A block queued while this writer was stopping: take it up if a slot is free
            // (else a writer still running will).
            if self.backlog.lock().0.is_empty() {
                return;
            }
            if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_WRITES {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            item = next();
        }
    }

    /// Blocks waiting to be published (for tests and status).
    pub fn backlog_blocks(&self) -> usize {
        self.backlog.lock().0.len()
    }

    /// Publishes a block now: temporary, fsync, rename (blocking).
    pub fn write(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        let name = file_name(key);
        let path = self.path(&name);
        if path.exists() {
            touch(&path);
            return Ok(()); // another host published it
        }
        let tmp = self.dir.join("tmp").join(format!(
            "{name}.{}.{}",
            self.writer,
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let header = block_header(key, data);
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&header)?;
            f.write_all(data)?;
            f.sync_all()
        });
        let placed = written
            .and_then(|_| fs::create_dir_all(path.parent().expect("has a parent")))
            .and_then(|_| fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        let size = (header.len() + data.len()) as u64;
        let due = {
            let mut g = self.since_scan.lock();
            g.0 += size;
            if g.0 >= SCAN_EVERY_BYTES
                || g.1.elapsed() >= SCAN_EVERY
                || self.last_size.load(Ordering::Relaxed) + g.0 > self.limit
            {
                *g = (0, Instant::now());
                true
            } else {
                false
            }
        };
        if due {
            self.scan();
        }
        Ok(())
    }

    /// Measures the directory, evicts least recently used blocks past the limit, and
    /// removes crashed writers' temporaries. Blocking; tolerant of files vanishing under it
    /// (other hosts evict too).
    pub fn scan(&self) {
        self.stats.scans.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now();
        if let Ok(tmps) = fs::read_dir(self.dir.join("tmp")) {
            for e in tmps.flatten() {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default() > TMP_GRACE)
                    .unwrap_or(false);
                if old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        let mut blocks: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        if let Ok(subs) = fs::read_dir(self.dir.join("blocks")) {
            for sub in subs.flatten() {
                let Ok(entries) = fs::read_dir(sub.path()) else {
                    continue;
                };
                for e in entries.flatten() {
                    let Ok(md) = e.metadata() else { continue };
                    if md.is_file() {
                        blocks.push((md.modified().unwrap_or(SystemTime::UNIX_EPOCH), md.len(), e.path()));
                    }
                }
            }
        }
        let mut total: u64 = blocks.iter().map(|b| b.1).sum();
        if total > self.limit {
            blocks.sort_unstable_by_key(|b| b.0);
            let target = (self.limit as f64 * EVICT_TO) as u64;
            for (_, size, path) in blocks {
                if total <= target {
                    break;
                }
                if fs::remove_file(&path).is_ok() {
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                total = total.saturating_sub(size);
            }
        }
        self.last_size.store(total, Ordering::Relaxed);
    }

    fn warn(&self, e: &std::io::Error) {
        let mut last = self.last_warning.lock();
        if last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(dir = %self.dir.display(), error = %e, "could not publish a block to the shared cache directory");
    }
}

/// Records a use of a block: its mtime, unless refreshed within [`TOUCH_EVERY`].
fn touch(path: &Path) {
    let fresh = fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().unwrap_or_default() < TOUCH_EVERY);
    if !fresh {
        if let Ok(f) = File::options().write(true).open(path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }
}

/// The shared level: blocking file I/O moved off the async threads.
impl CacheLevel for Arc<SharedCache> {
    fn name(&self) -> &'static str {
        "shared"
    }

    /// Maybe: the directory changes under us (other hosts write and evict), so a block is
    /// looked for by opening it; a miss costs one failed open.
    fn contains(&self, _key: &BlockKey) -> bool {
        true
    }

    fn exact(&self) -> bool {
        false
    }

    fn get<'a>(
        &'a self,
        key: &'a BlockKey,
        len: usize,
        pool: &'a Arc<BufPool>,
    ) -> futures::future::BoxFuture<'a, Option<Bytes>> {
        let part = self.get_many(std::slice::from_ref(key), vec![len], pool);
        Box::pin(async move { part.await.and_then(|mut v| v.pop()) })
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [BlockKey],
        lens: Vec<usize>,
        pool: &'a Arc<BufPool>,
    ) -> futures::future::BoxFuture<'a, Option<Vec<Bytes>>> {
        let me = self.clone();
        load_off_thread(keys, lens, pool, move |k, len, pool| me.load(k, len, pool))
    }

    fn put(&self, key: &BlockKey, data: Bytes) {
        self.store(key_of(key), data);
    }

    fn discard(&self, key: &BlockKey) {
        let _ = fs::remove_file(self.path(&file_name(&key_of(key))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::disk::block_key;

    fn pool() -> Arc<BufPool> {
        BufPool::new(1 << 20, 4)
    }

    fn size_of(dir: &Path) -> u64 {
        let mut n = 0;
        for sub in fs::read_dir(dir.join("blocks")).unwrap().flatten() {
            for e in fs::read_dir(sub.path()).unwrap().flatten() {
                n += e.metadata().unwrap().len();
            }
        }
        n
    }

    #[test]
    fn a_burst_beyond_the_writers_is_published_from_the_backlog_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let c = SharedCache::open(dir.path(), 1 << 30).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let n = 3 * MAX_PENDING_WRITES;
        rt.block_on(async {
            for i in 0..n {
                c.store(block_key("f", "v", i), Bytes::from(vec![i as u8; 64 << 10]));
            }
        });
        let t = Instant::now();
        while c.stats.writes.load(Ordering::Relaxed) < n {
            assert!(t.elapsed() < Duration::from_secs(30), "{:?}", c.stats);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(c.stats.writes_skipped.load(Ordering::Relaxed), 0);
        assert_eq!(c.backlog_blocks(), 0);
        for i in 0..n {
            assert!(
                c.load(&block_key("f", "v", i), 64 << 10, &pool()).is_some(),
                "block {i}"
            );
        }
    }

    #[test]
    fn a_block_published_by_one_mount_is_read_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            SharedCache::open(dir.path(), 1 << 30).unwrap(),
            SharedCache::open(dir.path(), 1 << 30).unwrap(),
        );
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 241) as u8).collect();
        let k = block_key("f", "etag", 3);
        assert!(b.load(&k, data.len(), &pool()).is_none());
        assert_eq!(b.stats.misses.load(Ordering::Relaxed), 1);
        a.write(&k, &data).unwrap();
        assert_eq!(&b.load(&k, data.len(), &pool()).unwrap()[..], &data[..]);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // Evicted by a: a miss for b, not an error.
        a.discard(&BlockKey {
            object: crate::read::cache::ObjectId {
                file: "f".into(),
                version: "etag".into(),
            },
            index: 3,
        });
        assert!(b.load(&k, data.len(), &pool()).is_none());
        assert_eq!(b.stats.rejected.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn torn_or_foreign_blocks_are_refused_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let c = SharedCache::open(dir.path(), 1 << 30).unwrap();
        let data = vec![9u8; 50_000];
        let k = block_key("f", "v", 0);
        c.write(&k, &data).unwrap();
        let p = c.path(&file_name(&k));
        // A writer that did not rename atomically, killed half way: a torn file in place.
        let raw = fs::read(&p).unwrap();
        fs::write(&p, &raw[..raw.len() / 2]).unwrap();
        assert!(c.load(&k, data.len(), &pool()).is_none());
        assert!(!p.exists(), "removed for every host");
        // Another block's bytes under this name.
        c.write(&block_key("g", "v", 0), &data).unwrap();
        fs::copy(c.path(&file_name(&block_key("g", "v", 0))), &p).unwrap();
        assert!(c.load(&k, data.len(), &pool()).is_none());
        assert_eq!(c.stats.rejected.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn mounts_keep_the_directory_near_its_limit_evicting_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 40 * 100_000;
        let (a, b) = (
            SharedCache::open(dir.path(), limit).unwrap(),
            SharedCache::open(dir.path(), limit).unwrap(),
        );
        let block = vec![1u8; 100_000];
        // The first block is used recently (an old mtime on the others makes that clear).
        for i in 0..30 {
            a.write(&block_key("a", "v", i), &block).unwrap();
            b.write(&block_key("b", "v", i), &block).unwrap();
        }
        a.scan();
        let held = size_of(dir.path());
        assert!(held <= limit + 2 * SCAN_EVERY_BYTES, "{held} > {limit}");
        assert!(held <= limit, "a scan evicts down to the limit: {held}");
        assert!(a.stats.evictions.load(Ordering::Relaxed) + b.stats.evictions.load(Ordering::Relaxed) > 0);
        // What was used last survives a scan; what was not used for long goes first.
        let old = SystemTime::now() - Duration::from_secs(3600);
        for sub in fs::read_dir(dir.path().join("blocks")).unwrap().flatten() {
            for e in fs::read_dir(sub.path()).unwrap().flatten() {
                File::options()
                    .write(true)
                    .open(e.path())
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }
        let keep = block_key("b", "v", 29);
        assert!(a.load(&keep, block.len(), &pool()).is_some(), "touched on reading");
        for i in 100..120 {
            a.write(&block_key("a", "v", i), &block).unwrap();
        }
        a.scan();
        assert!(a.load(&keep, block.len(), &pool()).is_some(), "recently used, kept");
        assert!(size_of(dir.path()) <= limit);
    }

    #[test]
    fn crashed_writers_temporaries_are_removed_after_a_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let c = SharedCache::open(dir.path(), 1 << 30).unwrap();
        let stale = dir.path().join("tmp/abc.otherhost.1.0");
        let live = dir.path().join("tmp/abd.otherhost.2.0");
        fs::write(&stale, b"half a block").unwrap();
        fs::write(&live, b"being written").unwrap();
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(SystemTime::now() - TMP_GRACE - Duration::from_secs(1))
            .unwrap();
        c.scan();
        assert!(!stale.exists(), "a crashed writer's temporary");
        assert!(live.exists(), "a live writer's temporary is left alone");
    }
}
