//! The fuser adapter: each callback hands its request to [`FsCore`], replies with what
//! comes back and logs a failure once. Callbacks that may touch the network run on the
//! tokio runtime and reply from there, so one slow listing or read never blocks other
//! operations (`ls` stays instant while `cp` runs). Nothing here decides anything.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;

use parking_lot::Mutex;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, Request,
};
use tokio::runtime::Handle as RtHandle;
use tracing::Instrument;

use crate::core::{CacheMode, FsCore, FsError, KERNEL_TTL};
use crate::tree::{Attr, Kind};

/// The ioctl `bsmount refresh` sends on an open directory (or file) to re-list it and
/// everything below: `_IO('B', 0x52)`, no data either way. An ioctl rather than an extended
/// attribute because xattrs are left to the kernel to refuse: `ls -l` asks two of them per
/// entry, and answering ENOSYS once stops the kernel from forwarding any (100,000 round
/// trips saved on a large run folder).
pub const REFRESH_IOCTL: u32 = (b'B' as u32) << 8 | 0x52;

/// The ioctls `bsmount complete|trash|restore` send on the entity's directory, so the change
/// is made with the mount's own credentials (and `complete` waits for the mount's spooled
/// uploads into the appresult): `_IO('B', 'C' | 'T' | 'U')`. The reason of a refusal is in
/// the directory's `.error`.
pub const COMPLETE_IOCTL: u32 = (b'B' as u32) << 8 | 0x43;
pub const TRASH_IOCTL: u32 = (b'B' as u32) << 8 | 0x54;
pub const RESTORE_IOCTL: u32 = (b'B' as u32) << 8 | 0x55;
/// `bsmount uploads retry|discard` on the mount: the failed uploads of its spool.
pub const RETRY_IOCTL: u32 = (b'B' as u32) << 8 | 0x72;
pub const DISCARD_IOCTL: u32 = (b'B' as u32) << 8 | 0x64;

/// The I/O size `stat` suggests (`st_blksize`) for files read from BaseSpace. `cp` sizes
/// its buffer from it and allocates that buffer afresh for every file: at 1 MiB, a copy of
/// many files out of the mount had `cp` fault in and zero a fresh MiB per file (a sixth of
/// its CPU in `perf` during a cohort copy). What reaches the mount does not depend on it:
/// reads are gathered by the kernel's readahead (`mount::readahead_kb`).
const READ_BLKSIZE: u32 = 512 << 10;
/// For files being written through the mount: each `write` is one request to the mount
/// (up to `max_write`, 1 MiB), and `cp` writes in blocks of this size.
const WRITE_BLKSIZE: u32 = 1 << 20;

pub struct BsFs {
    core: Arc<FsCore>,
    rt: RtHandle,
    attrs: AttrMaker,
    backings: Arc<Mutex<Backings>>,
}

/// Backing files registered with the kernel for passthrough opens. The kernel wants every
/// passthrough open of one inode to name the same backing file, and each stays registered
/// until its inode's last such handle is released (closing it earlier fails later reads).
#[derive(Default)]
struct Backings {
    by_ino: HashMap<u64, (Arc<BackingId>, u32)>,
    /// Passthrough handles and their inode.
    by_fh: HashMap<u64, u64>,
}

impl Backings {
    /// The inode's backing id, registering `file` if it has none yet.
    fn take(
        &mut self,
        ino: u64,
        fh: u64,
        register: impl FnOnce() -> std::io::Result<BackingId>,
    ) -> std::io::Result<Arc<BackingId>> {
        let id = match self.by_ino.get_mut(&ino) {
            Some((id, n)) => {
                *n += 1;
                id.clone()
            }
            None => {
                let id = Arc::new(register()?);
                self.by_ino.insert(ino, (id.clone(), 1));
                id
            }
        };
        self.by_fh.insert(fh, ino);
        Ok(id)
    }

    fn release(&mut self, fh: u64) {
        let Some(ino) = self.by_fh.remove(&fh) else { return };
        if let Some((_, n)) = self.by_ino.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                self.by_ino.remove(&ino);
            }
        }
    }
}

impl BsFs {
    pub fn new(core: Arc<FsCore>, rt: RtHandle) -> Self {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let write = core.writes();
        BsFs {
            core,
            rt,
            attrs: AttrMaker { uid, gid, write },
            backings: Default::default(),
        }
    }
}

/// Logs once, then the errno for the kernel.
impl BsFs {
    /// Runs `op` here, in the kernel's request thread, when it completes without waiting
    /// (a lookup in a listed directory, a create in the spool, a read of blocks already in
    /// memory: most of them), else on the runtime. A hop to the runtime and back costs more
    /// than such an operation itself, and `cp -r` of many small files waits for each in turn.
    fn now_or_spawn(&self, op: impl std::future::Future<Output = ()> + Send + 'static) {
        use std::task::Context;
        let mut op = Box::pin(op);
        let _in_runtime = self.rt.enter();
        let waker = futures::task::noop_waker();
        // A future polled once here and then handed to the runtime is polled again there
        // with the runtime's waker, which replaces this one: nothing is lost.
        if op.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() {
            self.rt.spawn(op);
        }
    }
}

fn fail(op: &str, e: FsError) -> Errno {
    e.log(op);
    Errno::from_i32(e.errno)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn fopen(c: CacheMode) -> FopenFlags {
    match c {
        CacheMode::Keep => FopenFlags::FOPEN_KEEP_CACHE,
        CacheMode::Refresh => FopenFlags::empty(),
        CacheMode::Direct => FopenFlags::FOPEN_DIRECT_IO,
    }
}

impl Filesystem for BsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // 1 MiB requests (max_pages follows max_write) and more requests in flight. The
        // readahead asked for here is capped by the kernel's offer (128 KiB); the mount
        // widens it afterwards (`mount::widen_readahead`).
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // READDIRPLUS when the kernel sees it pays (ls -l, stat after readdir); plain READDIR
        // for `find`, which only needs names and types.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // Files a copy reads around the page cache may still be mapped (Linux 6.6 and later;
        // without it `mmap(MAP_SHARED)` of such a file fails with ENODEV).
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        // Passthrough for files kept whole in the cache directory. Stack depth 2: the cache
        // directory may itself be on a stacked filesystem (overlayfs in a container).
        if self.core.wants_passthrough() {
            let on = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok();
            if on {
                let _ = config.set_max_stack_depth(2);
            } else {
                tracing::info!("this kernel offers no FUSE passthrough (Linux 6.9 or later does); cached files are read through the mount");
            }
            self.core.set_passthrough(on);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (core, attrs, name) = (self.core.clone(), self.attrs, name.to_os_string());
        let span = tracing::debug_span!("lookup", parent = parent.0, ?name);
        self.now_or_spawn(
            async move {
                match core.lookup(parent.0, &name).await {
                    Ok(a) => reply.entry(&KERNEL_TTL, &attrs.make(&a), Generation(0)),
                    Err(e) => reply.error(fail("lookup", e)),
                }
            }
            .instrument(span),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.core.getattr(ino.0) {
            Ok(a) => reply.attr(&KERNEL_TTL, &self.attrs.make(&a)),
            Err(e) => reply.error(fail("getattr", e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.core.readlink(ino.0) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(fail("readlink", e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // Opening may start fetches ahead, or ask BaseSpace for a `.json`.
        let (core, backings) = (self.core.clone(), self.backings.clone());
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let span = tracing::debug_span!("open", ino = ino.0);
        self.rt.spawn(
            async move {
                match core.open(ino.0, write).await {
                    Ok(o) => match o.backing {
                        None => reply.opened(FileHandle(o.fh), fopen(o.cache)),
                        Some(file) => match backings.lock().take(ino.0, o.fh, || reply.open_backing(&file)) {
                            Ok(id) => reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), &id),
                            Err(e) => reply.opened(FileHandle(o.fh), fopen(core.passthrough_refused(o.fh, &e))),
                        },
                    },
                    Err(e) => reply.error(fail("open", e)),
                }
            }
            .instrument(span),
        );
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
        let core = self.core.clone();
        let span = tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size);
        self.now_or_spawn(
            async move {
                match core.read(fh.0, offset, size).await {
                    Ok(b) => reply.data(&b),
                    Err(e) => reply.error(fail("read", e)),
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
        // Releasing an upload may start its abort (a task on the runtime).
        let _rt = self.rt.enter();
        self.core.release(fh.0);
        self.backings.lock().release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let core = self.core.clone();
        let span = tracing::debug_span!("opendir", ino = ino.0);
        self.rt.spawn(
            async move {
                match core.opendir(ino.0).await {
                    Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                    Err(e) => reply.error(fail("opendir", e)),
                }
            }
            .instrument(span),
        );
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let entries = match self.core.readdir(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(fail("readdir", e)),
        };
        for (i, (name, a)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(a.ino), (i + 1) as u64, file_type(a.kind), name) {
                break;
            }
        }
        reply.ok();
    }

    /// READDIRPLUS: entries with their attributes, so `ls -l` and `find -size` need no
    /// lookup per entry. Each entry sent (but `.` and `..`) is a reference the kernel holds.
    fn readdirplus(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let entries = match self.core.readdir(fh.0) {
            Ok(e) => e,
            Err(e) => return reply.error(fail("readdirplus", e)),
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
            if name != "." && name != ".." {
                self.core.remember(a.ino);
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    /// `close()`: an upload is completed here, so `close` reports whether it made it.
    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // A read-only mount has nothing to finish at close: ENOSYS tells the kernel to stop
        // asking (for the mount's life), which spares every `close` a round trip here.
        if !self.core.writes() {
            return reply.error(Errno::ENOSYS);
        }
        // A spooled file closes without waiting: answered here.
        let now = {
            let _in_runtime = self.rt.enter();
            self.core.flush_now(fh.0, req.pid())
        };
        match now {
            Some(Ok(())) => return reply.ok(),
            Some(Err(e)) => return reply.error(fail("flush", e)),
            None => {}
        }
        let (core, pid) = (self.core.clone(), req.pid());
        let span = tracing::debug_span!("flush", ino = ino.0, fh = fh.0);
        self.rt.spawn(
            async move {
                match core.flush(fh.0, pid).await {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(fail("flush", e)),
                }
            }
            .instrument(span),
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        let (core, attrs, name) = (self.core.clone(), self.attrs, name.to_os_string());
        let span = tracing::debug_span!("create", parent = parent.0, ?name);
        self.now_or_spawn(
            async move {
                match core.create(parent.0, &name).await {
                    Ok((a, o)) => reply.created(
                        &KERNEL_TTL,
                        &attrs.make(&a),
                        Generation(0),
                        FileHandle(o.fh),
                        fopen(o.cache),
                    ),
                    Err(e) => reply.error(fail("create", e)),
                }
            }
            .instrument(span),
        );
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        // The bytes are copied once, into the part being filled, here; only a write that
        // fills a part goes to the runtime (to wait for a slot and send it).
        let n = data.len() as u32;
        match self.core.write_now(fh.0, offset, data) {
            Ok(None) => reply.written(n),
            Ok(Some(parts)) => {
                let core = self.core.clone();
                let span = tracing::debug_span!("write", ino = ino.0, fh = fh.0, offset, size = n);
                self.rt.spawn(
                    async move {
                        match core.send_parts(parts).await {
                            Ok(()) => reply.written(n),
                            Err(e) => reply.error(fail("write", e)),
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => reply.error(fail("write", e)),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, _mode: u32, _umask: u32, reply: ReplyEntry) {
        let (core, attrs, name) = (self.core.clone(), self.attrs, name.to_os_string());
        let span = tracing::debug_span!("mkdir", parent = parent.0, ?name);
        self.rt.spawn(
            async move {
                match core.mkdir(parent.0, &name).await {
                    Ok(a) => reply.entry(&KERNEL_TTL, &attrs.make(&a), Generation(0)),
                    Err(e) => reply.error(fail("mkdir", e)),
                }
            }
            .instrument(span),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let (core, name) = (self.core.clone(), name.to_os_string());
        let span = tracing::debug_span!("rmdir", parent = parent.0, ?name);
        self.rt.spawn(
            async move {
                match core.rmdir(parent.0, &name).await {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(fail("rmdir", e)),
                }
            }
            .instrument(span),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.core.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("unlink", e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.core.rename() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("rename", e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.core.setattr(ino.0, size) {
            Ok(a) => reply.attr(&KERNEL_TTL, &self.attrs.make(&a)),
            Err(e) => reply.error(fail("setattr", e)),
        }
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
        if cmd == RETRY_IOCTL || cmd == DISCARD_IOCTL {
            let _in_runtime = self.rt.enter();
            return match self.core.failed_uploads(cmd == RETRY_IOCTL) {
                Ok(_) => reply.ioctl(0, &[]),
                Err(e) => reply.error(fail("ioctl", e)),
            };
        }
        let act = match cmd {
            REFRESH_IOCTL => None,
            COMPLETE_IOCTL => Some(crate::core::Act::Complete),
            TRASH_IOCTL => Some(crate::core::Act::Trash),
            RESTORE_IOCTL => Some(crate::core::Act::Restore),
            _ => return reply.error(Errno::ENOTTY),
        };
        if let Some(act) = act {
            let core = self.core.clone();
            let span = tracing::info_span!("ioctl", ino = ino.0, ?act);
            self.rt.spawn(
                async move {
                    match core.act(ino.0, act).await {
                        Ok(done) => {
                            tracing::info!("{done}");
                            reply.ioctl(0, &[]);
                        }
                        Err(e) => reply.error(fail("ioctl", e)),
                    }
                }
                .instrument(span),
            );
            return;
        }
        match self.core.refresh(ino.0) {
            Ok(dir) => {
                tracing::info!(ino = dir, "refresh requested");
                reply.ioctl(0, &[]);
            }
            Err(e) => reply.error(fail("refresh", e)),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.fsync(fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("fsync", e)),
            }
        });
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
        match self.core.access(ino.0, mask.contains(fuser::AccessFlags::W_OK)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("access", e)),
        }
    }
}

/// Tree attributes → FUSE attributes (owner = the mounting user).
#[derive(Clone, Copy)]
struct AttrMaker {
    uid: u32,
    gid: u32,
    /// `--write`: directories are writable (each operation decides what it takes).
    write: bool,
}

impl AttrMaker {
    fn make(&self, a: &Attr) -> FileAttr {
        let (kind, perm) = match a.kind {
            Kind::Dir if self.write => (FileType::Directory, 0o755),
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
            blksize: if a.writing { WRITE_BLKSIZE } else { READ_BLKSIZE },
            flags: 0,
        }
    }
}
