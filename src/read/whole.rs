//! Files kept whole on local disk, for the kernel to read directly (FUSE passthrough).
//!
//! Blocks in `--cache-dir` spare the network, but every byte still goes kernel → daemon →
//! disk → daemon → kernel. A file this host has read whole and verified against its ETag
//! is instead kept as one plain file, `DIR/files/<id>.<md5 of version>` (0600 in a 0700
//! directory), in place of its blocks; an open of that version is then answered with the
//! file handed to the kernel ([`crate::core`] decides, [`crate::fs`] hands it over), and
//! reads, `mmap` and random access never reach the daemon.
//!
//! How a file gets here: the handle that verifies a whole read ([`super::verify`]) copies
//! the bytes it hashes, in order, to `DIR/tmp/`; when they match the ETag the copy is
//! flushed to disk (`fsync`) and renamed into place. A small file fetched and verified in
//! one GET is written the same way. So a whole file holds exactly the bytes this host
//! verified: a copy read from `--shared-cache-dir` is promoted only through such a
//! verifying read, never as found in the shared directory (another host's bytes are
//! trusted no more than the network's).
//!
//! What is checked later: the name (file id and version: a new version is another name,
//! never the old copy) and the size, at every open. The bytes are not hashed again (that
//! would cost what passthrough saves); a whole file is as trustworthy as any local file,
//! and `rm -r DIR/files` is always safe. Whole files share the cache's size limit and its
//! least-recently-used order with blocks; one held open by a passthrough handle is never
//! evicted until released.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::cache::ObjectId;
use super::disk::{block_key, file_name, DiskCache};
use super::pool::BufPool;
use super::BLOCK_SIZE;

/// The subdirectory of whole files.
pub(super) const FILES: &str = "files";
/// Index names of whole files start with this (blocks are 32 hex digits).
pub(super) const PREFIX: &str = "f:";
/// Largest share of the cache one whole file may take: a file bigger than half the cache
/// would evict everything else to stay.
const MAX_SHARE: u64 = 2;

/// The index name of a version's whole file: `f:<id>.<md5 of version>` (an id that is not
/// a plain name is hashed too).
pub fn name_of(object: &ObjectId) -> String {
    let plain = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let id = match plain(&object.file) {
        true => object.file.to_string(),
        false => file_name(&object.file),
    };
    format!("{PREFIX}{id}.{}", file_name(&object.version))
}

/// Creates `p` if needed, readable by its owner only.
pub(super) fn private_dir(p: &Path) -> std::io::Result<()> {
    fs::create_dir_all(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700))
}

/// Whole files a previous mount left: (modified, index name, size).
pub(super) fn found(dir: &Path) -> Vec<(SystemTime, String, u64)> {
    let Ok(entries) = fs::read_dir(dir.join(FILES)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let md = e.metadata().ok().filter(|m| m.is_file())?;
            let name = e.file_name().into_string().ok()?;
            Some((
                md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                format!("{PREFIX}{name}"),
                md.len(),
            ))
        })
        .collect()
}

/// Allocates a whole file's `size` bytes before any is written. Written as the read goes,
/// between everything else the disk writes meanwhile, a 1 GiB copy came out in 23 extents
/// where `cp` of the same bytes made 9; reserved at once it has 9 too, so passthrough reads
/// of it (the point of keeping it) go as a local file's. A disk too full for the copy
/// refuses it here rather than half way. Filesystems without `fallocate` just go on.
fn reserve(file: &File, size: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: a plain syscall on a file descriptor this function borrows.
    match unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } {
        0 => Ok(()),
        _ => match std::io::Error::last_os_error() {
            e if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => Ok(()),
            e => Err(e),
        },
    }
}

/// Promotions under way, for an unmount to wait for (a file read just before `umount`
/// should still be whole at the next mount).
#[derive(Default)]
pub(super) struct InFlight {
    n: std::sync::Mutex<u64>,
    idle: std::sync::Condvar,
}

/// One promotion under way, counted until dropped.
struct Busy(Arc<DiskCache>);

impl Busy {
    fn new(cache: Arc<DiskCache>) -> Busy {
        *cache.promoting.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Busy(cache)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let p = &self.0.promoting;
        let mut n = p.n.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            p.idle.notify_all();
        }
    }
}

/// A whole file being written: the bytes a verifying read hashes, in order, into
/// `DIR/tmp/`. Dropped without [`Spool::finish`] (the bytes did not match, the read went
/// out of order, a write failed), the copy is deleted.
pub struct Spool {
    cache: Arc<DiskCache>,
    object: ObjectId,
    size: u64,
    file: Option<File>,
    path: PathBuf,
    written: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("path", &self.path).finish()
    }
}

impl Spool {
    /// Appends the next bytes; a failed write ends the copy (the read goes on).
    pub fn write(&mut self, data: &[u8]) {
        let Some(f) = &mut self.file else { return };
        match f.write_all(data) {
            Ok(()) => self.written += data.len() as u64,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot keep the file whole");
                self.file = None;
            }
        }
    }

    /// The bytes matched the ETag: flushes them to disk and puts the file in place. Blocking.
    pub fn finish(mut self) {
        let Some(f) = self.file.take() else { return };
        if self.written != self.size {
            return;
        }
        let cache = self.cache.clone();
        let _busy = Busy::new(cache.clone());
        let name = name_of(&self.object);
        let dest = cache.path(&name);
        // Durable before it has its name: a crash never leaves a file of the right size
        // holding what the disk had not written yet.
        if let Err(e) = f.sync_all().and_then(|_| fs::rename(&self.path, &dest)) {
            tracing::warn!(path = %dest.display(), error = %e, "cannot keep the file whole in the cache directory");
            return;
        }
        cache.placed(&self.object, name, self.size);
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Renamed already when finished; otherwise a partial or unverified copy.
        let _ = fs::remove_file(&self.path);
        let mut spooling = self.cache.spooling.lock();
        if let Some(n) = spooling.get_mut(&self.object) {
            *n -= 1;
            if *n == 0 {
                spooling.remove(&self.object);
            }
        }
    }
}

/// A whole file opened for the kernel, pinned against eviction while held.
#[derive(Debug)]
pub struct WholeFile {
    pub file: File,
    pin: Pin,
}

impl WholeFile {
    /// Where it is (for logs).
    pub fn path(&self) -> PathBuf {
        self.pin.cache.path(&self.pin.name)
    }
}

#[derive(Debug)]
struct Pin {
    cache: Arc<DiskCache>,
    name: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut idx = self.cache.index.lock();
        if let Some(n) = idx.pinned.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                idx.pinned.remove(&self.name);
            }
        }
    }
}

impl DiskCache {
    /// Whether this version is kept whole.
    pub fn has_whole(&self, object: &ObjectId) -> bool {
        self.index.lock().lru.contains(&name_of(object))
    }

    /// A copy to write the verified bytes of `object` (`size` bytes) into, unless it is
    /// whole already or too big for the cache.
    pub fn spool(self: &Arc<Self>, object: &ObjectId, size: u64) -> Option<Spool> {
        if size == 0 || size > self.limit() / MAX_SHARE || self.has_whole(object) {
            return None;
        }
        let path = self.dir.join("tmp").join(format!(
            "whole.{}.{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .inspect_err(|e| tracing::debug!(path = %path.display(), error = %e, "cannot keep the file whole"))
            .ok()?;
        reserve(&file, size)
            .inspect_err(|e| tracing::debug!(path = %path.display(), error = %e, "cannot keep the file whole"))
            .ok()?;
        // Two copies of one version may run (a handle's, and the one-GET check of a small
        // file it set off): the same bytes, renamed into place atomically, either wins.
        *self.spooling.lock().entry(object.clone()).or_default() += 1;
        Some(Spool {
            cache: self.clone(),
            object: object.clone(),
            size,
            file: Some(file),
            path,
            written: 0,
        })
    }

    /// A small file verified as it was fetched in one GET: kept whole, in the background.
    pub fn keep_whole(self: &Arc<Self>, object: &ObjectId, size: u64, pieces: Vec<Bytes>) {
        let Some(mut spool) = self.spool(object, size) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Counted from now, not from when the blocking thread starts.
        let busy = Busy::new(self.clone());
        rt.spawn_blocking(move || {
            pieces.iter().for_each(|p| spool.write(p));
            spool.finish();
            drop(busy);
        });
    }

    /// The whole file of `object`, opened read-only and pinned, if it is here with the
    /// listed size. One that is not (truncated, replaced by hand) is dropped.
    pub fn open_whole(self: &Arc<Self>, object: &ObjectId, size: u64) -> Option<WholeFile> {
        let name = name_of(object);
        {
            let mut idx = self.index.lock();
            idx.lru.get(&name)?;
            *idx.pinned.entry(name.clone()).or_default() += 1;
        }
        let pin = Pin {
            cache: self.clone(),
            name,
        };
        let path = self.path(&pin.name);
        match File::open(&path).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((len, file)) if len == size => Some(WholeFile { file, pin }),
            r => {
                let why = r.map_or_else(
                    |e| e.to_string(),
                    |(len, _)| format!("{len} bytes where the file has {size}"),
                );
                tracing::warn!(path = %path.display(), "whole cached file refused ({why}); reading it again");
                let name = pin.name.clone();
                drop(pin);
                self.forget(&name);
                None
            }
        }
    }

    /// Blocks `indices` of a whole file (`lens[i]` bytes each), read from it. Blocking.
    pub(super) fn load_whole(
        &self,
        object: &ObjectId,
        indices: Vec<u64>,
        lens: Vec<usize>,
        pool: &Arc<BufPool>,
    ) -> Option<Vec<Bytes>> {
        let name = name_of(object);
        let f = File::open(self.path(&name)).ok()?;
        let out = indices
            .into_iter()
            .zip(lens)
            .map(|(i, len)| {
                let mut buf = pool.take(len);
                buf.resize(len, 0);
                f.read_exact_at(&mut buf, i * BLOCK_SIZE).ok()?;
                Some(pool.freeze(buf))
            })
            .collect::<Option<Vec<Bytes>>>();
        match out {
            Some(v) => {
                self.index.lock().lru.promote(&name);
                self.stats.hits.fetch_add(v.len() as u64, Ordering::Relaxed);
                self.stats
                    .bytes_read
                    .fetch_add(v.iter().map(|b| b.len() as u64).sum(), Ordering::Relaxed);
                Some(v)
            }
            None => {
                tracing::warn!(path = %self.path(&name).display(), "whole cached file unreadable; fetching it again");
                self.forget(&name);
                None
            }
        }
    }

    /// A whole file was put in place: indexed, and its blocks (no longer needed) dropped.
    fn placed(&self, object: &ObjectId, name: String, size: u64) {
        {
            let mut idx = self.index.lock();
            if let Some(old) = idx.lru.put(name, size) {
                idx.bytes -= old;
            }
            idx.bytes += size;
        }
        self.stats.promoted.fetch_add(1, Ordering::Relaxed);
        self.stats.promoted_bytes.fetch_add(size, Ordering::Relaxed);
        for i in 0..size.div_ceil(BLOCK_SIZE) {
            let block = file_name(&block_key(&object.file, &object.version, i));
            if self.has_key_named(&block) {
                self.forget(&block);
            }
        }
        self.trim();
    }

    /// Waits at most `limit` for whole files being put in place; false if some were not.
    pub fn wait_promotions(&self, limit: Duration) -> bool {
        let n = self.promoting.n.lock().unwrap_or_else(|e| e.into_inner());
        let (n, _) = self
            .promoting
            .idle
            .wait_timeout_while(n, limit, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *n == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: &str) -> ObjectId {
        ObjectId {
            file: Arc::from("123"),
            version: Arc::from(v),
        }
    }

    #[test]
    fn a_verified_copy_replaces_its_blocks_and_is_opened_only_for_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
        let data: Vec<u8> = (0..(BLOCK_SIZE as usize + 10)).map(|i| (i % 251) as u8).collect();
        c.write(&block_key("123", "v1", 0), &data[..BLOCK_SIZE as usize])
            .unwrap();
        let mut s = c.spool(&object("v1"), data.len() as u64).unwrap();
        s.write(&data[..100]);
        s.write(&data[100..]);
        s.finish();
        assert!(c.has_whole(&object("v1")) && !c.has_whole(&object("v2")));
        assert!(!c.has_key(&block_key("123", "v1", 0)), "its blocks are dropped");
        assert_eq!(c.bytes(), data.len() as u64);
        let files = dir.path().join(FILES);
        assert_eq!(fs::metadata(&files).unwrap().permissions().mode() & 0o777, 0o700);
        let w = c.open_whole(&object("v1"), data.len() as u64).unwrap();
        assert_eq!(w.file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert!(
            c.open_whole(&object("v2"), data.len() as u64).is_none(),
            "another version"
        );
        // Blocks are served from it.
        let pool = BufPool::new(BLOCK_SIZE as usize, 2);
        let got = c.load_whole(&object("v1"), vec![1], vec![10], &pool).unwrap();
        assert_eq!(&got[0][..], &data[BLOCK_SIZE as usize..]);
        // Pinned while open: eviction passes it over, then takes it once released.
        c.evict_to(0);
        assert!(c.has_whole(&object("v1")));
        drop(w);
        c.evict_to(0);
        assert!(!c.has_whole(&object("v1")) && fs::read_dir(&files).unwrap().count() == 0);
        // Reopening finds whole files left by a previous mount.
        let mut s = c.spool(&object("v3"), 5).unwrap();
        s.write(b"hello");
        s.finish();
        drop(c);
        let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
        assert!(c.open_whole(&object("v3"), 5).is_some());
        assert!(
            c.open_whole(&object("v3"), 6).is_none(),
            "a size that differs is refused"
        );
        assert!(!c.has_whole(&object("v3")), "and dropped");
    }

    #[test]
    fn an_unfinished_or_short_copy_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
        let s = c.spool(&object("v1"), 10).unwrap();
        drop(s);
        let mut s = c.spool(&object("v1"), 10).unwrap();
        s.write(b"short");
        s.finish();
        assert!(!c.has_whole(&object("v1")));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(c.spool(&object("v1"), 1 << 30).is_none(), "over half the cache");
        assert!(c.wait_promotions(Duration::ZERO));
    }

    #[test]
    fn a_copy_has_its_space_before_its_first_byte() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 30).unwrap();
        let size = 8 * BLOCK_SIZE;
        let s = c.spool(&object("v1"), size).unwrap();
        let md = fs::metadata(&s.path).unwrap();
        assert!(
            md.blocks() * 512 >= size,
            "{} bytes allocated of {size}",
            md.blocks() * 512
        );
    }
}
