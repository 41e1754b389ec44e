//! The FUSE adapter: fuser callbacks in, calls into [`Tree`] and [`Reader`], errno out.
//!
//! Every callback that may touch the network is moved onto the tokio runtime and replied
//! to from there, so one slow listing or read never blocks other operations (`ls` stays
//! instant while `cp` runs). The filesystem is read-only: the mount carries `ro`, and any
//! write-type request that still arrives gets EROFS.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};
use parking_lot::Mutex;
use tokio::runtime::Handle as RtHandle;
use tracing::Instrument;

use crate::read::{Handle, Reader};
use crate::stats::MountStats;
use crate::tree::{Attr, FileContent, Kind, Tree};

/// The extended attribute `bsmount refresh` reads to re-list a directory and below.
pub const REFRESH_XATTR: &str = "user.bsmount.refresh";

/// How long the kernel may cache entries and attributes. Listings have their own TTL in
/// the tree; this only spares repeated lookups of the same name in a burst (`ls -l`).
const KERNEL_TTL: Duration = Duration::from_secs(1);

/// What an open file handle refers to.
enum Open {
    Static(Arc<[u8]>),
    Remote(Arc<Handle>),
}

pub struct BsFs {
    tree: Arc<Tree>,
    reader: Arc<Reader>,
    rt: RtHandle,
    stats: Arc<MountStats>,
    attrs: AttrMaker,
    handles: Mutex<HashMap<u64, Open>>,
    next_fh: AtomicU64,
}

impl BsFs {
    pub fn new(tree: Arc<Tree>, reader: Arc<Reader>, rt: RtHandle, stats: Arc<MountStats>) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        BsFs {
            tree,
            reader,
            rt,
            stats,
            attrs: AttrMaker { uid, gid },
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
        }
    }
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

impl Filesystem for BsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // 1 MiB requests (max_pages follows max_write/readahead) and more requests in flight.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree.clone();
        let name = name.to_os_string();
        let attrs = self.attrs;
        let span = tracing::debug_span!("lookup", parent = parent.0, ?name);
        self.rt.spawn(
            async move {
                match tree.lookup(parent.0, &name).await {
                    Ok(a) => reply.entry(&KERNEL_TTL, &attrs.make(&a), Generation(0)),
                    Err(e) => {
                        if e.errno() != libc::ENOENT {
                            tracing::warn!(parent = parent.0, ?name, error = %e, "lookup failed");
                        }
                        reply.error(errno(e.errno()))
                    }
                }
            }
            .instrument(span),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.getattr(ino.0) {
            Ok(a) => reply.attr(&KERNEL_TTL, &self.attrs.make(&a)),
            Err(e) => reply.error(errno(e.errno())),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e.errno())),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let (open, flags) = match self.tree.content(ino.0) {
            // Files are immutable (a new version has a new inode): keep the page cache.
            Ok(FileContent::Static(b)) => (Open::Static(b), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(FileContent::Remote(r)) => (Open::Remote(Arc::new(Handle::new(r))), FopenFlags::FOPEN_KEEP_CACHE),
            // Generated now; its size is unknown to stat, so bypass the page cache.
            Ok(FileContent::Stats) => {
                let text = serde_json::to_string_pretty(&self.stats.snapshot()).unwrap_or_default() + "\n";
                (Open::Static(Arc::from(text.into_bytes())), FopenFlags::FOPEN_DIRECT_IO)
            }
            Err(e) => return reply.error(errno(e.errno())),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, open);
        reply.opened(FileHandle(fh), flags);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = match self.handles.lock().get(&fh.0) {
            Some(Open::Static(b)) => {
                let start = (offset as usize).min(b.len());
                let end = (start + size as usize).min(b.len());
                return reply.data(&b[start..end]);
            }
            Some(Open::Remote(h)) => h.clone(),
            None => return reply.error(Errno::EBADF),
        };
        let reader = self.reader.clone();
        let stats = self.stats.clone();
        stats.reads_in_flight.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size);
        self.rt.spawn(
            async move {
                let r = reader.read(&handle, offset, size).await;
                stats.reads_in_flight.fetch_sub(1, Ordering::Relaxed);
                match r {
                    Ok(b) => {
                        stats.bytes_served.fetch_add(b.len() as u64, Ordering::Relaxed);
                        reply.data(&b)
                    }
                    Err(e) => {
                        stats.read_errors.fetch_add(1, Ordering::Relaxed);
                        reply.error(errno(e.errno()))
                    }
                }
            }
            .instrument(span),
        );
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let tree = self.tree.clone();
        let span = tracing::debug_span!("readdir", ino = ino.0, offset);
        self.rt.spawn(
            async move {
                let entries = match tree.readdir(ino.0).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(ino = ino.0, error = %e, "readdir failed");
                        return reply.error(errno(e.errno()));
                    }
                };
                let parent = tree.parent(ino.0);
                let dots = [
                    (ino.0, FileType::Directory, OsStr::new(".")),
                    (parent, FileType::Directory, OsStr::new("..")),
                ];
                let all = dots
                    .into_iter()
                    .chain(entries.iter().map(|(n, a)| (a.ino, file_type(a.kind), n.as_os_str())));
                for (i, (ino, kind, name)) in all.enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            .instrument(span),
        );
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: fuser::ReplyXattr) {
        if name != REFRESH_XATTR {
            return reply.error(Errno::ENODATA);
        }
        // `bsmount refresh PATH`: a file refreshes the directory holding it.
        let dir = match self.tree.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => ino.0,
            Ok(_) => self.tree.parent(ino.0),
            Err(e) => return reply.error(errno(e.errno())),
        };
        self.tree.refresh(dir);
        tracing::info!(ino = dir, "refresh requested");
        let value = b"refreshed";
        if size == 0 {
            reply.size(value.len() as u32)
        } else if (size as usize) < value.len() {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(value)
        }
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 1 << 20, 255, 1 << 20);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        if mask.contains(fuser::AccessFlags::W_OK) && self.tree.getattr(ino.0).is_ok() {
            return reply.error(Errno::EROFS);
        }
        reply.ok();
    }
}

/// Tree attributes → FUSE attributes (owner = the mounting user).
#[derive(Clone, Copy)]
struct AttrMaker {
    uid: u32,
    gid: u32,
}

impl AttrMaker {
    fn make(&self, a: &Attr) -> FileAttr {
        let (kind, perm) = match a.kind {
            Kind::Dir => (FileType::Directory, 0o555),
            Kind::File => (FileType::RegularFile, 0o444),
            Kind::Symlink => (FileType::Symlink, 0o777),
        };
        FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind,
            perm,
            nlink: if a.kind == Kind::Dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}
