//! The filesystem core: every operation the mount answers, as async functions returning
//! typed replies or an [`FsError`], with no kernel in sight. [`crate::fs`] adapts it to
//! fuser (spawn, reply, log); the tests here drive it directly, so lookup, readdir, open,
//! read, release, forget and every errno are checked without `/dev/fuse`.

pub mod error;
mod write;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

pub use error::FsError;
pub use write::{Act, Pending, WriteMode};

use crate::read::across::Listings;
use crate::read::{Handle, Reader};
use crate::stats::MountStats;
use crate::tree::{Attr, FileContent, Ino, Kind, Tree, TreeError};

/// How long the kernel may cache entries and attributes. Listings have their own TTL in
/// the tree; this only spares repeated lookups of the same name in a burst (`ls -l`).
pub const KERNEL_TTL: Duration = Duration::from_secs(1);

/// What the kernel should do with a file's cached pages at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Keep them: the bytes are immutable (a new version is a new inode) and verified.
    Keep,
    /// Drop them: read through the mount again (not yet verified).
    Refresh,
    /// Bypass the page cache: generated now (size unknown to stat), or read once by a copy
    /// ([`crate::read::Reader::ahead`]).
    Direct,
}

/// An open file or directory handle.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    pub cache: CacheMode,
    /// The file's whole verified copy on local disk, for the kernel to read directly
    /// (FUSE passthrough); if the kernel refuses it, [`FsCore::passthrough_refused`].
    pub backing: Option<std::fs::File>,
}

/// How an inode's open handles are read. The kernel takes one way at a time per inode
/// (an open through the daemon while another is passthrough fails with EIO, and the
/// other way round), so the first open decides until the last is released.
#[derive(Debug, Default)]
struct IoMode {
    through_daemon: u32,
    passthrough: u32,
}

/// Whether opens may be answered with passthrough, and the reasons already logged for
/// opens that were not (each once).
struct Passthrough {
    /// `--no-passthrough` clears it.
    allowed: std::sync::atomic::AtomicBool,
    on: std::sync::atomic::AtomicBool,
    said: Mutex<std::collections::HashSet<&'static str>>,
}

impl Passthrough {
    fn say(&self, why: &'static str) {
        if self.said.lock().insert(why) {
            tracing::info!("reading through the mount, not passthrough: {why} (said once)");
        }
    }
}

/// A directory's entries as listed at opendir, `.` and `..` first.
pub type DirSnapshot = Arc<[(OsString, Attr)]>;

/// What an open handle refers to.
enum Open {
    Static(Arc<[u8]>),
    Remote {
        handle: Arc<Handle>,
        ino: Ino,
        /// Held while the kernel reads it directly (passthrough): pinned in the cache.
        whole: Option<crate::read::whole::WholeFile>,
    },
    /// Every readdir of the handle is served from this snapshot by offset, so reading a
    /// 100,000-entry directory in page-sized pieces stays linear, and entries keep stable
    /// offsets while it is read.
    Dir(DirSnapshot),
    /// A file being spooled for upload into `parent` as `name` (write-back).
    Spooled {
        file: Arc<crate::write::spool::SpoolFile>,
        parent: Ino,
        name: OsString,
        ino: Ino,
    },
    /// A closed file read from its spooled copy while it waits or uploads; `fsync` waits
    /// for its upload.
    SpoolRead {
        reader: crate::write::spool::SpoolReader,
        outcome: write::Outcome,
    },
    /// A file being uploaded into `parent` as `name` (`--write-through`).
    Upload {
        upload: Arc<crate::write::Upload>,
        parent: Ino,
        name: OsString,
        ino: Ino,
    },
}

pub struct FsCore {
    tree: Arc<Tree>,
    reader: Arc<Reader>,
    stats: Arc<MountStats>,
    handles: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
    /// Listings fetched ahead of walks.
    listings: Listings,
    /// `--write`: uploads, creates, the trash.
    write: Option<WriteMode>,
    io_modes: Mutex<HashMap<Ino, IoMode>>,
    passthrough: Passthrough,
    /// Closed spooled files until their upload ends: what an open reads and `fsync` waits for.
    closed: Arc<Mutex<HashMap<Ino, write::Closed>>>,
}

fn bad_handle() -> FsError {
    FsError::quiet(libc::EBADF, "no such open handle")
}

impl FsCore {
    pub fn new(tree: Arc<Tree>, reader: Arc<Reader>, stats: Arc<MountStats>) -> Arc<FsCore> {
        Self::with_write(tree, reader, stats, None)
    }

    /// A core that also writes (`--write`).
    pub fn with_write(
        tree: Arc<Tree>,
        reader: Arc<Reader>,
        stats: Arc<MountStats>,
        write: Option<WriteMode>,
    ) -> Arc<FsCore> {
        Arc::new(FsCore {
            listings: Listings::new(tree.clone(), reader.connections()),
            tree,
            reader,
            stats,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            write,
            io_modes: Mutex::new(HashMap::new()),
            closed: Default::default(),
            passthrough: Passthrough {
                allowed: true.into(),
                on: false.into(),
                said: Default::default(),
            },
        })
    }

    /// Whether passthrough could serve anything here: files are kept whole only in a
    /// `--cache-dir`, and only when verified.
    pub fn wants_passthrough(&self) -> bool {
        self.passthrough.allowed.load(Ordering::Relaxed) && self.reader.disk().is_some() && self.reader.verifies()
    }

    /// `--no-passthrough`: every open is read through the mount.
    pub fn without_passthrough(&self) {
        self.passthrough.allowed.store(false, Ordering::Relaxed);
        self.set_passthrough(false);
    }

    /// The kernel accepted passthrough at init (the adapter says so), or it is turned off.
    pub fn set_passthrough(&self, on: bool) {
        let allowed = self.passthrough.allowed.load(Ordering::Relaxed);
        self.passthrough.on.store(on && allowed, Ordering::Relaxed);
    }

    /// The kernel would not take a handle's backing file: the handle is read through the
    /// mount instead (its cache mode returned), and passthrough is off for this mount (the
    /// causes, a missing `CAP_SYS_ADMIN`, a backing filesystem the kernel refuses, hold for
    /// every file).
    pub fn passthrough_refused(&self, fh: u64, e: &std::io::Error) -> CacheMode {
        if self.passthrough.on.swap(false, Ordering::Relaxed) {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) => " (handing files to the kernel needs CAP_SYS_ADMIN: mount as root)",
                Some(libc::ELOOP) => " (the cache directory is on a stacked filesystem)",
                _ => "",
            };
            tracing::warn!(error = %e, "the kernel refused a cached file for passthrough{hint}; reading cached files through the mount");
        }
        if let Some(d) = self.reader.disk() {
            d.stats.passthrough_opens.fetch_sub(1, Ordering::Relaxed);
        }
        let mut handles = self.handles.lock();
        if let Some(Open::Remote { ino, whole, .. }) = handles.get_mut(&fh) {
            if whole.take().is_some() {
                let mut modes = self.io_modes.lock();
                let m = modes.entry(*ino).or_default();
                m.passthrough -= 1;
                m.through_daemon += 1;
            }
        }
        CacheMode::Keep
    }

    /// How an open of `ino` is read: its whole copy handed to the kernel when there is
    /// one and no handle of the inode is read through the mount; counted either way.
    fn choose_io(&self, ino: Ino, file: &crate::tree::RemoteFile) -> Option<crate::read::whole::WholeFile> {
        let mut modes = self.io_modes.lock();
        let m = modes.entry(ino).or_default();
        let whole = if !self.passthrough.on.load(Ordering::Relaxed) {
            None
        } else if m.through_daemon > 0 {
            self.passthrough
                .say("another open of the same file is read through the mount");
            None
        } else {
            let w = self.reader.whole_file(file);
            if w.is_none() {
                self.passthrough
                    .say("the file is not yet whole on local disk (a first read verifies it and keeps it)");
            }
            w
        };
        match &whole {
            Some(_) => m.passthrough += 1,
            None => m.through_daemon += 1,
        }
        whole
    }

    pub fn tree(&self) -> &Arc<Tree> {
        &self.tree
    }

    fn add(&self, o: Open) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, o);
        fh
    }

    /// Finds `name` in `parent`; the kernel holds a reference to the entry until `forget`.
    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, FsError> {
        let a = match self.tree.lookup(parent, name).await {
            Err(TreeError::NotFound) if self.show_adopted(parent) => self.tree.lookup(parent, name).await?,
            r => r?,
        };
        if a.kind == Kind::Dir {
            self.listings.on_lookup(a.ino);
        }
        Ok(a)
    }

    /// The kernel took a reference without a lookup (an entry of READDIRPLUS).
    pub fn remember(&self, ino: Ino) {
        self.tree.remember(ino);
    }

    /// The kernel dropped `n` references.
    pub fn forget(&self, ino: Ino, n: u64) {
        self.tree.forget(ino, n);
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        Ok(self.tree.getattr(ino)?)
    }

    pub fn readlink(&self, ino: Ino) -> Result<String, FsError> {
        Ok(self.tree.readlink(ino)?)
    }

    /// Opens a file for reading. Writing is refused: read-only mounts say EROFS; with
    /// `--write` an existing file is BaseSpace's and cannot be overwritten (EPERM); new
    /// files come through [`FsCore::create`].
    pub async fn open(&self, ino: Ino, write: bool) -> Result<Opened, FsError> {
        if write {
            self.writable()?;
            return Err(FsError::new(
                libc::EPERM,
                tracing::Level::WARN,
                "BaseSpace files cannot be overwritten or appended to",
            ));
        }
        if let Some(o) = self.open_spooled(ino) {
            return Ok(o);
        }
        let mut backing = None;
        let (open, cache) = match self.tree.content(ino)? {
            FileContent::Static(b) => (Open::Static(b), CacheMode::Keep),
            FileContent::Remote(r) => {
                let cache = match self.reader.may_keep_cache(&r) {
                    true => CacheMode::Keep,
                    false => CacheMode::Refresh,
                };
                let walk = self.tree.file_walk(ino);
                let copying = walk.as_ref().is_some_and(|w| {
                    self.reader
                        .ahead(&r, w, |after, top, n| self.tree.files_after(w, after, top, n))
                });
                let mut whole = self.choose_io(ino, &r);
                if let Some(w) = &whole {
                    match w.file.try_clone() {
                        Ok(f) => backing = Some(f),
                        Err(e) => {
                            tracing::warn!(path = %w.path().display(), error = %e, "cannot hand a cached file to the kernel");
                            whole = None;
                            let mut modes = self.io_modes.lock();
                            let m = modes.entry(ino).or_default();
                            m.passthrough -= 1;
                            m.through_daemon += 1;
                        }
                    }
                }
                if let (Some(d), Some(_)) = (self.reader.disk(), &whole) {
                    d.stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                }
                // A copy's file read through the mount goes around the page cache; one
                // handed to the kernel whole is read from local disk either way.
                let streamed = copying && whole.is_none();
                let handle = Arc::new(self.reader.open(r, streamed, walk.as_ref()));
                let cache = if streamed { CacheMode::Direct } else { cache };
                (Open::Remote { handle, ino, whole }, cache)
            }
            FileContent::Stats => {
                let text = serde_json::to_string_pretty(&self.stats.snapshot()).unwrap_or_default() + "\n";
                (Open::Static(Arc::from(text.into_bytes())), CacheMode::Direct)
            }
            // Asked now; its size was not known to `stat`.
            FileContent::Fetch(f) => (Open::Static(Arc::from(&*self.tree.fetch(&f).await?)), CacheMode::Direct),
        };
        Ok(Opened {
            fh: self.add(open),
            cache,
            backing,
        })
    }

    /// Up to `size` bytes at `offset` of an open file (fewer only at its end).
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let handle = match self.handles.lock().get(&fh) {
            Some(Open::Static(b)) => {
                let start = (offset as usize).min(b.len());
                let end = (start + size as usize).min(b.len());
                return Ok(Bytes::copy_from_slice(&b[start..end]));
            }
            Some(Open::Remote { handle, .. }) => handle.clone(),
            Some(Open::Dir(_)) => return Err(FsError::quiet(libc::EISDIR, "is a directory")),
            Some(Open::SpoolRead { reader, .. }) => {
                return reader.read(offset, size).map(Bytes::from).map_err(|e| {
                    FsError::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        tracing::Level::ERROR,
                        format!("reading the spooled copy: {e}"),
                    )
                })
            }
            Some(Open::Upload { .. } | Open::Spooled { .. }) => {
                return Err(FsError::quiet(libc::EBADF, "open for writing only"))
            }
            None => return Err(bad_handle()),
        };
        self.stats.reads_in_flight.fetch_add(1, Ordering::Relaxed);
        let r = self.reader.read(&handle, offset, size).await;
        self.stats.reads_in_flight.fetch_sub(1, Ordering::Relaxed);
        let b = r?;
        self.stats.bytes_served.fetch_add(b.len() as u64, Ordering::Relaxed);
        Ok(b)
    }

    pub fn release(&self, fh: u64) {
        let gone = self.handles.lock().remove(&fh);
        if let Some(Open::Remote { ino, whole, handle }) = &gone {
            self.reader.close(handle);
            let mut modes = self.io_modes.lock();
            if let Some(m) = modes.get_mut(ino) {
                match whole {
                    Some(_) => m.passthrough -= 1,
                    None => m.through_daemon -= 1,
                }
                if m.passthrough == 0 && m.through_daemon == 0 {
                    modes.remove(ino);
                }
            }
        }
        match gone {
            Some(Open::Upload {
                upload, parent, name, ..
            }) if !upload.is_finished() => self.drop_upload(upload, parent, name),
            Some(Open::Spooled { file, parent, name, .. }) if !file.is_closed() => {
                file.discard();
                self.note_unpublished(file.written().load(Ordering::Relaxed), parent, name);
            }
            _ => {}
        }
    }

    /// Lists a directory (from the API if its listing is stale) into a snapshot. When a walk
    /// is opening directories in order, the ones it opens next are listed ahead.
    pub async fn opendir(&self, ino: Ino) -> Result<u64, FsError> {
        self.listings.on_opendir(ino);
        let mut entries = self.tree.readdir(ino).await?;
        if self.show_adopted(ino) {
            entries = self.tree.readdir(ino).await?;
        }
        let dots = [(".", ino), ("..", self.tree.parent(ino))]
            .into_iter()
            .filter_map(|(name, i)| Some((OsString::from(name), self.tree.getattr(i).ok()?)));
        let all: DirSnapshot = dots.chain(entries).collect();
        Ok(self.add(Open::Dir(all)))
    }

    /// The snapshot of an open directory; entry `i` has offset `i + 1`.
    pub fn readdir(&self, fh: u64) -> Result<DirSnapshot, FsError> {
        match self.handles.lock().get(&fh) {
            Some(Open::Dir(e)) => Ok(e.clone()),
            Some(_) => Err(FsError::quiet(libc::ENOTDIR, "not a directory handle")),
            None => Err(bad_handle()),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.release(fh);
    }

    /// `bsmount refresh`: re-list a directory (a file: the directory holding it) and
    /// everything below on the next look.
    pub fn refresh(&self, ino: Ino) -> Result<Ino, FsError> {
        let dir = match self.tree.getattr(ino)? {
            a if a.kind == Kind::Dir => ino,
            _ => self.tree.parent(ino),
        };
        self.tree.refresh(dir);
        Ok(dir)
    }

    /// `access(2)`: everything that exists is readable; with `--write` directories are
    /// writable (each operation then decides), files never (BaseSpace files are final).
    pub fn access(&self, ino: Ino, write: bool) -> Result<(), FsError> {
        let a = self.tree.getattr(ino)?;
        if write {
            self.writable()?;
            if a.kind != Kind::Dir && !self.tree.is_pending(ino) {
                return Err(FsError::quiet(libc::EPERM, "BaseSpace files cannot be changed"));
            }
        }
        Ok(())
    }

    /// Handles open now (for tests and status).
    pub fn open_handles(&self) -> usize {
        self.handles.lock().len()
    }
}

#[cfg(test)]
mod tests;
