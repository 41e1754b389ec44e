//! The FUSE adapter: fuser callbacks in, calls into [`Tree`] and [`Reader`], errno out.
//!
//! Every callback that may touch the network is moved onto the tokio runtime and replied
//! to from there, so one slow listing or read never blocks other operations (`ls` stays
//! instant while `cp` runs). The filesystem is read-only: the mount carries `ro`, and any
//! write-type request that still arrives gets EROFS.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyOpen, Request,
};
use parking_lot::Mutex;
use tokio::runtime::Handle as RtHandle;
use tracing::Instrument;

use crate::read::{Handle, Reader};
use crate::stats::MountStats;
use crate::tree::{Attr, FileContent, Kind, Tree};

/// The ioctl `bsmount refresh` sends on an open directory (or file) to re-list it and
/// everything below: `_IO('B', 0x52)`, no data either way. An ioctl rather than an extended
/// attribute because xattrs are left to the kernel to refuse: `ls -l` asks two of them per
/// entry, and answering ENOSYS once stops the kernel from forwarding any (100,000 round
/// trips saved on a large run folder).
pub const REFRESH_IOCTL: u32 = (b'B' as u32) << 8 | 0x52;

/// How long the kernel may cache entries and attributes. Listings have their own TTL in
/// the tree; this only spares repeated lookups of the same name in a burst (`ls -l`).
const KERNEL_TTL: Duration = Duration::from_secs(1);

/// What an open handle refers to.
enum Open {
    Static(Arc<[u8]>),
    Remote(Arc<Handle>),
    /// A directory's entries as listed at opendir, `.` and `..` first. Every readdir of the
    /// handle is served from this snapshot by offset, so reading a 100,000-entry directory
    /// in page-sized pieces stays linear, and entries keep stable offsets while it is read.
    Dir(Arc<[(OsString, Attr)]>),
}

pub struct BsFs {
    tree: Arc<Tree>,
    reader: Arc<Reader>,
    rt: RtHandle,
    stats: Arc<MountStats>,
    attrs: AttrMaker,
    handles: Arc<Mutex<HashMap<u64, Open>>>,
    next_fh: Arc<AtomicU64>,
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
            handles: Arc::new(Mutex::new(HashMap::new())),
            next_fh: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The snapshot behind an open directory handle.
    fn dir_entries(&self, fh: FileHandle) -> Option<Arc<[(OsString, Attr)]>> {
        match self.handles.lock().get(&fh.0) {
            Some(Open::Dir(e)) => Some(e.clone()),
            _ => None,
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
        // READDIRPLUS when the kernel sees it pays (ls -l, stat after readdir); plain READDIR
        // for `find`, which only needs names and types.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
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
            Some(Open::Dir(_)) => return reply.error(Errno::EISDIR),
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

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let tree = self.tree.clone();
        let handles = self.handles.clone();
        let next_fh = self.next_fh.clone();
        let span = tracing::debug_span!("opendir", ino = ino.0);
        self.rt.spawn(
            async move {
                let entries = match tree.readdir(ino.0).await {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(ino = ino.0, error = %e, "listing failed");
                        return reply.error(errno(e.errno()));
                    }
                };
                let dots = [(".", ino.0), ("..", tree.parent(ino.0))]
                    .into_iter()
                    .filter_map(|(name, i)| Some((OsString::from(name), tree.getattr(i).ok()?)));
                let all: Arc<[(OsString, Attr)]> = dots.chain(entries).collect();
                let fh = next_fh.fetch_add(1, Ordering::Relaxed);
                handles.lock().insert(fh, Open::Dir(all));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            .instrument(span),
        );
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(entries) = self.dir_entries(fh) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (name, a)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(a.ino), (i + 1) as u64, file_type(a.kind), name) {
                break;
            }
        }
        reply.ok();
    }

    /// READDIRPLUS: entries with their attributes, so `ls -l` and `find -size` need no
    /// lookup per entry.
    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let Some(entries) = self.dir_entries(fh) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (name, a)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(a.ino),
                (i + 1) as u64,
                name,
                &KERNEL_TTL,
                &self.attrs.make(a),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.handles.lock().remove(&fh.0);
        reply.ok();
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok();
    }

    fn ioctl(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        if cmd != REFRESH_IOCTL {
            return reply.error(Errno::ENOTTY);
        }
        // A file refreshes the directory holding it.
        let dir = match self.tree.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => ino.0,
            Ok(_) => self.tree.parent(ino.0),
            Err(e) => return reply.error(errno(e.errno())),
        };
        self.tree.refresh(dir);
        tracing::info!(ino = dir, "refresh requested");
        reply.ioctl(0, &[]);
    }

    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: fuser::ReplyXattr) {
        reply.error(Errno::ENOSYS);
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
