//! The persistent block cache (`--cache-dir`, `--cache-dir-size`).
//!
//! Blocks fetched from BaseSpace are also written here, so a file read yesterday, or before
//! a remount, is read from local disk instead of the network. Users of other mounts
//! complain most about caches that vanish on unmount; this one is kept across mounts and
//! reboots, bounded by its own size with least-recently-used eviction.
//!
//! Layout: `DIR/blocks/ab/<32 hex>` where the name is the md5 of the block's key (file id,
//! version, block index). Each file holds a header (magic, CRC-32 and length of the data,
//! the key itself) and the block's bytes. A block is written to `DIR/tmp/` and renamed into
//! place, so a crash never leaves a half-written block under its real name; a block whose
//! length, key or checksum does not match on reading is deleted and fetched again (a read
//! never returns bytes the cache cannot vouch for). `DIR/lock` is held with `flock` while
//! mounted: two mounts sharing one directory would each evict what the other counts.
//!
//! A file read whole and verified is kept as one plain file under `DIR/files/` instead of
//! blocks ([`super::whole`]), for the kernel to read directly; block reads of it are served
//! from that file.
//!
//! The cache is best effort: writes happen off the read path, a few at a time, and are
//! skipped when the disk falls behind; any I/O error only costs a network fetch.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

use super::cache::{BlockKey, CacheLevel};
use super::pool::BufPool;

const MAGIC: &[u8; 8] = b"BSMBLK01";
/// Header: magic, CRC-32 of the data, data length, key length; then the key.
const FIXED_HEADER: usize = 8 + 4 + 4 + 2;
/// Block writes in flight at once. Each holds its block in memory until written, so this
/// bounds the memory a slow disk can pin (16 MiB); beyond it new blocks are not written.
const MAX_PENDING_WRITES: u64 = 16;
/// How long a new mount waits for the directory's lock: `bsmount unmount` returns when the
/// mount is gone, and the old daemon may take a moment more to exit and let go.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// A failing cache directory (full, read-only) is reported at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DiskCacheError {
    #[error("cache directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache directory {0} is in use by another bsmount mount; give each mount its own --cache-dir")]
    Locked(PathBuf),
}

/// Counters for `bsmount status`.
#[derive(Debug, Default)]
pub struct DiskStats {
    pub hits: AtomicU64,
    pub bytes_read: AtomicU64,
    pub writes: AtomicU64,
    pub writes_skipped: AtomicU64,
    pub corrupt: AtomicU64,
    pub evictions: AtomicU64,
    /// Files kept whole after their verified read ([`super::whole`]), and their bytes.
    pub promoted: AtomicU64,
    pub promoted_bytes: AtomicU64,
    /// Opens answered with the whole file handed to the kernel (FUSE passthrough).
    pub passthrough_opens: AtomicU64,
}

pub(super) struct Index {
    /// File name → size on disk, least recently used first out. Blocks are named by 32 hex
    /// digits; whole files ([`super::whole`]) by `f:` and their name under `files/`.
    pub(super) lru: lru::LruCache<String, u64>,
    pub(super) bytes: u64,
    /// Whole files held open (passthrough handles): never evicted until released.
    pub(super) pinned: std::collections::HashMap<String, u32>,
}

pub struct DiskCache {
    pub(super) dir: PathBuf,
    limit: u64,
    pub(super) index: Mutex<Index>,
    pending: AtomicU64,
    /// Blocks being written: a block put again meanwhile (fetched twice) is written once.
    writing: Mutex<std::collections::HashSet<String>>,
    pub(super) seq: AtomicU64,
    /// Whole files being written into place, for an unmount to wait for.
    pub(super) promoting: super::whole::InFlight,
    /// Versions being copied whole (and by how many copies): their blocks are not written.
    pub(super) spooling: Mutex<std::collections::HashMap<super::cache::ObjectId, u32>>,
    pub stats: DiskStats,
    /// When a write failure was last logged, and how many were not logged since.
    last_warning: Mutex<(Option<Instant>, u64)>,
    /// Held for the cache's lifetime (the flock lives with the descriptor).
    _lock: File,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache")
            .field("dir", &self.dir)
            .field("limit", &self.limit)
            .finish()
    }
}

/// The key of a block, as stored in its file.
pub fn block_key(file: &str, version: &str, index: u64) -> String {
    format!("{file}\0{version}\0{index}")
}

pub(super) fn key_of(k: &BlockKey) -> String {
    block_key(&k.object.file, &k.object.version, k.index)
}

/// The local disk level: blocking file I/O moved off the async threads.
impl CacheLevel for Arc<DiskCache> {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn contains(&self, key: &BlockKey) -> bool {
        self.has_whole(&key.object) || self.has_key(&key_of(key))
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
        if let Some(first) = keys.first().filter(|k| self.has_whole(&k.object)) {
            let (object, indices) = (first.object.clone(), keys.iter().map(|k| k.index).collect());
            return Box::pin(async move {
                let pool = pool.clone();
                tokio::task::spawn_blocking(move || me.load_whole(&object, indices, lens, &pool))
                    .await
                    .ok()
                    .flatten()
            });
        }
        load_off_thread(keys, lens, pool, move |k, len, pool| me.load(k, len, pool))
    }

    fn put(&self, key: &BlockKey, data: Bytes) {
        // A file kept whole (or being copied whole) needs its blocks no more: writing them
        // would double the disk's work, and deleting them after, with discard, more still.
        if !self.has_whole(&key.object) && !self.spooling.lock().contains_key(&key.object) {
            self.store(key_of(key), data);
        }
    }

    fn discard(&self, key: &BlockKey) {
        self.forget(&file_name(&key_of(key)));
    }
}

pub(super) fn file_name(key: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(key.as_bytes()))
}

impl DiskCache {
    /// Opens (creating if needed) the cache in `dir`, indexes what a previous mount left,
    /// and trims it to `limit` bytes.
    pub fn open(dir: &Path, limit: u64) -> Result<Arc<DiskCache>, DiskCacheError> {
        Self::open_waiting(dir, limit, LOCK_WAIT)
    }

    /// [`DiskCache::open`], waiting at most `wait` for another mount to let go of `dir`.
    pub fn open_waiting(dir: &Path, limit: u64, wait: Duration) -> Result<Arc<DiskCache>, DiskCacheError> {
        let io = |source| DiskCacheError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir.join("blocks")).map_err(io)?;
        fs::create_dir_all(dir.join("tmp")).map_err(io)?;
        super::whole::private_dir(&dir.join(super::whole::FILES)).map_err(io)?;
        super::whole::private_dir(&dir.join("tmp")).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        let t0 = Instant::now();
        // SAFETY: a valid descriptor.
        while unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if t0.elapsed() >= wait {
                return Err(DiskCacheError::Locked(dir.to_path_buf()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Left by a crash mid-write: never renamed into place, never valid.
        for e in fs::read_dir(dir.join("tmp")).map_err(io)?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        // Oldest first, so the most recently written or used end up most recent.
        let mut found: Vec<(SystemTime, String, u64)> = Vec::new();
        for sub in fs::read_dir(dir.join("blocks")).map_err(io)?.flatten() {
            let Ok(entries) = fs::read_dir(sub.path()) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(md) = e.metadata() else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                if md.is_file() && name.len() == 32 {
                    found.push((md.modified().unwrap_or(SystemTime::UNIX_EPOCH), name, md.len()));
                }
            }
        }
        found.extend(super::whole::found(dir));
        found.sort();
        let mut index = Index {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
            pinned: Default::default(),
        };
        for (_, name, size) in found {
            index.bytes += size;
            index.lru.put(name, size);
        }
        let cache = Arc::new(DiskCache {
            dir: dir.to_path_buf(),
            limit,
            index: Mutex::new(index),
            pending: AtomicU64::new(0),
            writing: Default::default(),
            seq: AtomicU64::new(0),
            stats: DiskStats::default(),
            last_warning: Mutex::new((None, 0)),
            promoting: Default::default(),
            spooling: Default::default(),
            _lock: lock,
        });

        cache.trim();
        Ok(cache)
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        match name.strip_prefix(super::whole::PREFIX) {
            Some(whole) => self.dir.join(super::whole::FILES).join(whole),
            None => self.dir.join("blocks").join(&name[..2]).join(name),
        }
    }

    /// Whether a block is on disk (by the index; it may still fail its checks on loading).
    pub fn has_key(&self, key: &str) -> bool {
        self.has_key_named(&file_name(key))
    }

    /// Whether a file of this index name is on disk.
    pub(super) fn has_key_named(&self, name: &str) -> bool {
        self.index.lock().lru.contains(name)
    }

    /// Bytes the cache holds on disk.
    pub fn bytes(&self) -> u64 {
        self.index.lock().bytes
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reads a block back, checking key, length and checksum; a block failing any check is
    /// deleted. Blocking: run it off the async threads.
    pub fn load(&self, key: &str, len: usize, pool: &Arc<BufPool>) -> Option<Bytes> {
        let name = file_name(key);
        let path = self.path(&name);
        match read_block(&path, key, len, pool) {
            Ok(b) => {
                self.index.lock().lru.promote(&name);
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes_read.fetch_add(b.len() as u64, Ordering::Relaxed);
                Some(b)
            }
            Err(why) => {
                if path.exists() {
                    tracing::warn!(path = %path.display(), "cached block rejected ({why}); fetching it again");
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                }
                self.forget(&name);
                None
            }
        }
    }

    /// Writes a block in the background unless it is already on disk (a part refetched
    /// for one bad block) or being written, or too many writes are already pending.
    pub fn store(self: &Arc<Self>, key: String, data: Bytes) {
        if self.has_key(&key) || !self.writing.lock().insert(key.clone()) {
            return;
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_WRITES {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.writing.lock().remove(&key);
            self.stats.writes_skipped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = me.write(&key, &data) {
                me.write_failed(&e);
            }
            me.writing.lock().remove(&key);
            me.pending.fetch_sub(1, Ordering::AcqRel);
        });
    }

    /// Writes a block now (blocking).
    pub fn write(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        let name = file_name(key);
        let tmp = self.dir.join("tmp").join(format!(
            "{name}.{}.{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = File::create(&tmp)?;
        let header = block_header(key, data);
        let written = f.write_all(&header).and_then(|_| f.write_all(data));
        drop(f);
        let path = self.path(&name);
        let placed = written
            .and_then(|_| fs::create_dir_all(path.parent().expect("has a parent")))
            .and_then(|_| fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let size = (header.len() + data.len()) as u64;
        {
            let mut idx = self.index.lock();
            if let Some(old) = idx.lru.put(name, size) {
                idx.bytes -= old;
            }
            idx.bytes += size;
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.trim();
        Ok(())
    }

    pub(super) fn forget(&self, name: &str) {
        let mut idx = self.index.lock();
        if let Some(size) = idx.lru.pop(name) {
            idx.bytes -= size;
        }
        drop(idx);
        let _ = fs::remove_file(self.path(name));
    }

    /// A background write failed: a full disk makes room (the directory's filesystem is
    /// fuller than `--cache-dir-size` allows, so the cache gives back an eighth of what it
    /// holds), and the warning is logged once a minute, not once a block.
    fn write_failed(&self, e: &std::io::Error) {
        let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        if full {
            let held = self.bytes();
            self.evict_to(held - held / 8);
        }
        let mut last = self.last_warning.lock();
        let (at, suppressed) = &mut *last;
        if at.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            *suppressed += 1;
            return;
        }
        let more = std::mem::take(suppressed);
        *at = Some(Instant::now());
        drop(last);
        let action = if full { "; evicted blocks to make room" } else { "" };
        tracing::warn!(dir = %self.dir.display(), error = %e, "could not write a block to the cache directory{action} ({more} more such failures since the last warning)");
    }

    /// Evicts least recently used blocks until the cache fits its limit.
    pub(super) fn trim(&self) {
        self.evict_to(self.limit);
    }

    /// Evicts least recently used blocks and whole files until the cache holds at most
    /// `target` bytes. A whole file held open by a passthrough handle is passed over (it
    /// goes once released and still least recently used).
    pub(super) fn evict_to(&self, target: u64) {
        let mut passed = 0;
        loop {
            let victim = {
                let mut idx = self.index.lock();
                if idx.bytes <= target || passed > idx.pinned.len() {
                    return;
                }
                match idx.lru.pop_lru() {
                    Some((name, size)) if idx.pinned.contains_key(&name) => {
                        idx.lru.put(name, size);
                        passed += 1;
                        continue;
                    }
                    Some((name, size)) => {
                        idx.bytes -= size;
                        name
                    }
                    None => return,
                }
            };
            let _ = fs::remove_file(self.path(&victim));
            self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Blocks of a level kept as files, loaded by `load` on the blocking pool: one hand-off
/// for a whole part, all or nothing (a level's `get_many`).
pub(super) fn load_off_thread(
    keys: &[BlockKey],
    lens: Vec<usize>,
    pool: &Arc<BufPool>,
    load: impl Fn(&str, usize, &Arc<BufPool>) -> Option<Bytes> + Send + 'static,
) -> futures::future::BoxFuture<'static, Option<Vec<Bytes>>> {
    let pool = pool.clone();
    let keys: Vec<String> = keys.iter().map(key_of).collect();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || {
            keys.iter()
                .zip(lens)
                .map(|(k, len)| load(k, len, &pool))
                .collect::<Option<Vec<Bytes>>>()
        })
        .await
        .ok()
        .flatten()
    })
}

/// The header a block file starts with: magic, CRC-32 and length of the data, the key.
pub(super) fn block_header(key: &str, data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(FIXED_HEADER + key.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    header.extend_from_slice(&(data.len() as u32).to_le_bytes());
    header.extend_from_slice(&(key.len() as u16).to_le_bytes());
    header.extend_from_slice(key.as_bytes());
    header
}

/// One block file, checked; the error says why it was refused.
pub(super) fn read_block(path: &Path, key: &str, len: usize, pool: &Arc<BufPool>) -> Result<Bytes, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut head = [0u8; FIXED_HEADER];
    f.read_exact(&mut head).map_err(|e| format!("header: {e}"))?;
    if &head[..8] != MAGIC {
        return Err("not a bsmount block".into());
    }
    let crc = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let data_len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes")) as usize;
    let key_len = u16::from_le_bytes(head[16..18].try_into().expect("2 bytes")) as usize;
    if data_len != len {
        return Err(format!("{data_len} bytes where the block has {len}"));
    }
    let mut stored_key = vec![0u8; key_len];
    f.read_exact(&mut stored_key).map_err(|e| format!("key: {e}"))?;
    if stored_key != key.as_bytes() {
        return Err("holds another block (name collision)".into());
    }
    let mut buf = pool.take(len);
    (&mut f)
        .take(len as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("data: {e}"))?;
    if buf.len() != len {
        return Err(format!("{} bytes of data, header says {len}", buf.len()));
    }
    if crc32fast::hash(&buf) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(pool.freeze(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<BufPool> {
        BufPool::new(1 << 20, 4)
    }

    #[test]
    fn blocks_survive_reopening_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let k1 = block_key("f1", "etag", 0);
        let k2 = block_key("f1", "etag", 1);
        {
            let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
            c.write(&k1, &data).unwrap();
            c.write(&k2, &data[..10]).unwrap();
            assert!(matches!(
                DiskCache::open_waiting(dir.path(), 1 << 30, Duration::ZERO),
                Err(DiskCacheError::Locked(_))
            ));
        }
        let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
        assert!(c.has_key(&k1) && c.has_key(&k2), "kept across reopening");
        assert_eq!(&c.load(&k1, data.len(), &pool()).unwrap()[..], &data[..]);
        assert!(c.load(&k1, data.len() - 1, &pool()).is_none(), "wrong length refused");
        assert!(!c.has_key(&k1), "and deleted");
        // Flip one data byte of k2: the checksum catches it.
        let p = c.path(&file_name(&k2));
        let mut raw = fs::read(&p).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        fs::write(&p, raw).unwrap();
        assert!(c.load(&k2, 10, &pool()).is_none());
        assert_eq!(c.stats.corrupt.load(Ordering::Relaxed), 2);
        assert!(!p.exists());
        assert_eq!(c.bytes(), 0);
        assert!(c.load(&block_key("f1", "other-version", 0), 10, &pool()).is_none());
    }

    #[test]
    fn stays_within_its_size_evicting_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let block = vec![7u8; 1000];
        let c = DiskCache::open(dir.path(), 3500).unwrap();
        let k = |i: u64| block_key("f", "v", i);
        for i in 0..3 {
            c.write(&k(i), &block).unwrap();
        }
        // Use block 0, so block 1 is the least recently used when 3 arrives.
        assert!(c.load(&k(0), 1000, &pool()).is_some());
        c.write(&k(3), &block).unwrap();
        assert!(c.bytes() <= 3500);
        assert!(c.has_key(&k(0)) && !c.has_key(&k(1)) && c.has_key(&k(2)) && c.has_key(&k(3)));
        let on_disk: u64 = walk(dir.path());
        assert_eq!(on_disk, c.bytes(), "the index matches the files");
        drop(c);
        // A smaller limit on reopening trims at once.
        let c = DiskCache::open(dir.path(), 1500).unwrap();
        assert!(c.bytes() <= 1500 && walk(dir.path()) == c.bytes());
    }

    #[test]
    fn a_full_disk_makes_room_and_is_reported_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
        for i in 0..16 {
            c.write(&block_key("f", "v", i), &[1u8; 1000]).unwrap();
        }
        let held = c.bytes();
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        c.write_failed(&full);
        assert!(c.bytes() <= held - held / 8, "{} of {held}", c.bytes());
        assert!(!c.has_key(&block_key("f", "v", 0)), "the least recently used go first");
        c.write_failed(&full);
        c.write_failed(&std::io::Error::from_raw_os_error(libc::EROFS));
        assert_eq!(
            c.last_warning.lock().1,
            2,
            "later failures within a minute are counted, not logged"
        );
        assert_eq!(walk(dir.path()), c.bytes());
    }

    // A block put again while its first write is pending (fetched twice) is written once:
    // the writes a test or `status` counts are the blocks on disk.
    #[test]
    fn a_block_put_twice_at_once_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(DiskCache::open(dir.path(), 1 << 30).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let _in = rt.enter();
        for _ in 0..2 {
            c.store("k".into(), Bytes::from(vec![1u8; 1 << 20]));
        }
        while c.pending.load(Ordering::Acquire) > 0 {
            std::thread::yield_now();
        }
        assert_eq!(c.stats.writes.load(Ordering::Relaxed), 1);
        assert!(c.has_key("k"));
    }

    #[test]
    fn leftovers_of_a_crash_mid_write_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskCache::open(dir.path(), 1 << 20).unwrap());
        fs::write(dir.path().join("tmp/abc.1.1"), b"half a block").unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(c.bytes(), 0);
    }

    fn walk(dir: &Path) -> u64 {
        let mut n = 0;
        for sub in fs::read_dir(dir.join("blocks")).unwrap().flatten() {
            for e in fs::read_dir(sub.path()).unwrap().flatten() {
                n += e.metadata().unwrap().len();
            }
        }
        n
    }
}
