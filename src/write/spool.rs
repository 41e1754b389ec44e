//! Write-back uploads: what `cp` writes is spooled to local disk, `close` returns once the
//! bytes are durable there, and uploads run behind, many files at once.
//!
//! Why: every file costs at least one round trip to BaseSpace (hundreds of ms on the real
//! service), and `cp -r` writes one file after another, so a folder of many small files
//! crawled at one round trip per file. rclone's VFS write cache is the anchor: return from
//! `close` once on local disk, upload behind, resume after a restart.
//!
//! Layout: `<root>/<account>/<mount>/` holds, per file, `<n>.data` (0600): the bytes and,
//! once closed, a trailer saying where they go ([`TRAILER_MAGIC`]). A failed upload's
//! reason is in `<n>.failed`. Empty `<n>.data` files are made ahead for the next numbers
//! ([`READY_KEPT`]); without a trailer they are nobody's.
//!
//! Durability: at `close` the bytes and the trailer are in the spool file, in the kernel's
//! hands, so a mount killed or crashed right after loses nothing. The `fdatasync` that makes
//! them survive a power cut runs within [`GATHER`] of `close`, for the files of a burst
//! together, before the upload, off the writer's path: on this machine's ext4 it costs
//! 0.6 ms per file, more than everything else a small file's `close` does, and `cp -r` of
//! many small files waits for each `close` in turn. A program that needs more calls
//! `fsync` (done at once) or mounts with `--write-through`.
//! (A new file's directory entry is committed by the journal with that sync on ext4 and XFS.)
//!
//! A mount holds an exclusive `flock` on its own `<mount>/lock`; a mount starting finds the
//! directories of mounts of the same account whose lock is free (killed, crashed, or the
//! machine rebooted), adopts their closed files and uploads them. A `.data` without its
//! trailer was never closed (its writer died) and is dropped, as a killed `cp` publishes
//! nothing in write-through mode either.
//!
//! Nothing uploaded twice: a file adopted from a dead mount may have been completed just
//! before the mount died, so it is first looked for in its appresult's listing (same path
//! and size, and the same MD5 when BaseSpace gives one); found, it is done. Parts of an
//! interrupted multipart upload are not resumed (BaseSpace does not list a pending file's
//! accepted parts); the file is sent again, whole.
//!
//! A file whose upload finally fails (after the client's retries) is never completed: it
//! stays in the spool, marked with its error (in `<n>.failed`, the log, `status` and the
//! directory's `.error`), and is tried again at the next mount, or dropped with
//! `bsmount uploads discard`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Semaphore};

use super::{UploadError, Uploader};
use crate::api::model::FileInfo;
use crate::api::{ApiError, BaseSpaceApi, ListKind};

/// Files uploaded at once by one mount: small files are one request each, so latency, not
/// bandwidth, bounds them; 16 keeps a 100-300 ms link busy and stays within the connection
/// pool (their parts also share [`super::PARTS_IN_FLIGHT`]).
pub const FILES_IN_FLIGHT: usize = 16;

/// Bytes read from a spooled file per write into its upload (part buffers are filled from
/// these; the part size itself is the uploader's).
const READ_CHUNK: usize = 1 << 20;

/// How long after its `close` a file's upload starts (rclone's `--vfs-write-back`, 5 s
/// by default, is the anchor). While a `cp -r` of small files runs, uploads started at once
/// take the CPU and the disk from it (on a 2-core machine `cp` took half again as long);
/// a second later the copy is usually done, or its first files go while it continues.
pub const WRITE_BACK_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// A file written in order past this many bytes is streamed to BaseSpace as it is written
/// (as with `--write-through`), its spooled copy dropped: a big file's upload is bound by
/// the link, not by round trips, so spooling it first would only add a full copy to disk
/// and start the upload late (1 GiB: 98 MB/s spooled, 238 MB/s streamed, on the cloud
/// profile), and its `close` then reports the outcome. Eight parts: small enough that big
/// files stream almost whole, large enough that result folders of many files all spool.
pub const STREAM_ABOVE: u64 = 64 << 20;

/// Empty spool files kept made and open ahead, named for the next files' numbers, so that
/// a `create` takes one without a system call. Creating a file where many were just
/// deleted is slow on ext4 (its inode allocator skips recently deleted inodes one by one:
/// 70 us a file here, more than the rest of a small file's `create`), and a write-back
/// spool deletes a file per upload: an uploaded file is emptied and renamed into the row
/// instead. The row is made at mount and topped up when closes pause ([`Spool::refill`]),
/// never during a burst (made beside it, on the same two cores, they slowed `cp -r` by
/// half). At most an eighth of the open-files limit.
const READY_KEPT: usize = 256;

/// How long the closes of a burst are gathered before they are made durable and their
/// uploads queued, together. Done per file at its `close`, the runtime's threads woke two
/// or three times a file, on the two cores the writer and the kernel's requests share: a
/// `cp -r` of 300 small files took a third longer than with nothing woken. A power cut
/// this long after `close` may lose a file, as one a moment after it could before.
const GATHER: std::time::Duration = std::time::Duration::from_millis(25);

/// Finished uploads remembered for `status`.
const FINISHED_SHOWN: usize = 50;

/// Ends a closed spool file: JSON [`Meta`], its length (8 bytes, little-endian), this.
const TRAILER_MAGIC: &[u8; 8] = b"BSSPOOL1";

/// Where a spooled file goes, as kept in its trailer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub appresult: String,
    /// Folder inside the appresult's `Files/` (`a/b`, or empty).
    pub directory: String,
    pub name: String,
}

impl Target {
    pub fn path(&self) -> String {
        if self.directory.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.directory, self.name)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    #[serde(flatten)]
    target: Target,
    size: u64,
}

/// The trailer of a closed spool file, if it has one.
fn read_trailer(path: &Path) -> Option<Meta> {
    let f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut tail = [0u8; 16];
    f.read_exact_at(&mut tail, len.checked_sub(16)?).ok()?;
    if &tail[8..] != TRAILER_MAGIC {
        return None;
    }
    let n = u64::from_le_bytes(tail[..8].try_into().ok()?);
    let start = len.checked_sub(16 + n).filter(|_| n <= 1 << 20)?;
    let mut json = vec![0u8; n as usize];
    f.read_exact_at(&mut json, start).ok()?;
    let meta: Meta = serde_json::from_slice(&json).ok()?;
    (meta.size == start).then_some(meta)
}

/// Where an upload is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Pending,
    Sending,
    Failed(String),
    Done,
}

#[derive(Debug, Clone)]
struct Job {
    target: Target,
    size: u64,
    sent: Arc<AtomicU64>,
    state: State,
    /// Handles reading the spooled copy while it waits or uploads ([`Spool::hold`]).
    readers: usize,
    /// Uploaded: its copy is being emptied for reuse (or deleted), no new reader.
    retiring: bool,
}

/// A file adopted from a dead mount, not yet shown in the tree.
pub struct Adopted {
    pub n: u64,
    pub target: Target,
    pub size: u64,
    pub outcome: oneshot::Receiver<Result<FileInfo, String>>,
}

/// The spool of one mount.
pub struct Spool {
    dir: PathBuf,
    /// Held for the mount's life: tells other mounts of the account this directory is live.
    _lock: File,
    uploader: Arc<Uploader>,
    api: Arc<dyn BaseSpaceApi>,
    ready: Mutex<Ready>,
    jobs: Mutex<BTreeMap<u64, Job>>,
    /// Files adopted from a dead mount, until the tree shows them ([`Spool::take_adopted`]).
    adopted: Mutex<Vec<Adopted>>,
    finished: Mutex<Vec<(u64, Job)>>,
    files: Arc<Semaphore>,
    /// Files closed since the last batch ([`GATHER`]); the first wakes the batcher.
    closed: Mutex<Vec<Closed>>,
    wake: tokio::sync::Notify,
    batcher: std::sync::Once,
    /// Batches of closed files made durable so far (`.bsmount/stats`).
    batches: AtomicU64,
    /// Bumped at every change of state (waiters watch it).
    changed: watch::Sender<u64>,
}

/// The numbers of new spool files, and empty files made ahead for them ([`READY_KEPT`]).
struct Ready {
    /// The number the next file gets.
    next: u64,
    /// Open, empty `<n>.data` files for `next`, `next + 1`, ... in order.
    files: std::collections::VecDeque<File>,
    /// How many to keep ([`Spool::ready_kept`]).
    kept: usize,
}

impl Ready {
    /// The number of the next file made ahead.
    fn tail(&self) -> u64 {
        self.next + self.files.len() as u64
    }
}

/// A closed file waiting for its batch ([`GATHER`]).
struct Closed {
    n: u64,
    target: Target,
    size: u64,
    sent: Arc<AtomicU64>,
    at: tokio::time::Instant,
    tx: oneshot::Sender<Result<FileInfo, String>>,
}

/// Creates a 0700 directory (and its parents).
fn private_dir(p: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

fn flock(f: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn fsync_dir(p: &Path) -> std::io::Result<()> {
    File::open(p)?.sync_all()
}

/// The account's spool directory under `root`: one per API server and user.
pub fn account_dir(root: &Path, server: &str, user_id: &str) -> PathBuf {
    use md5::Digest;
    let key = hex::encode(md5::Md5::digest(format!("{server}|{user_id}").as_bytes()));
    root.join(&key[..16])
}

impl Spool {
    /// Opens this mount's spool in `account` (made 0700), adopting what dead mounts of the
    /// same account left; returns the spool and how many files it adopted (queued by
    /// [`Spool::resume`]).
    pub fn open(account: &Path, uploader: Arc<Uploader>, api: Arc<dyn BaseSpaceApi>) -> std::io::Result<Arc<Spool>> {
        private_dir(account)?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = account.join(format!("m{}-{nanos}", std::process::id()));
        private_dir(&dir)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))?;
        if !flock(&lock) {
            return Err(std::io::Error::other("the spool directory is locked by another mount"));
        }
        let spool = Arc::new(Spool {
            dir,
            _lock: lock,
            uploader,
            api,
            ready: Mutex::new(Ready {
                next: 1,
                files: Default::default(),
                kept: Self::ready_kept(),
            }),
            jobs: Mutex::default(),
            adopted: Mutex::default(),
            finished: Mutex::default(),
            files: Arc::new(Semaphore::new(FILES_IN_FLIGHT)),
            closed: Mutex::default(),
            wake: Default::default(),
            batcher: std::sync::Once::new(),
            batches: AtomicU64::new(0),
            changed: watch::channel(0).0,
        });
        spool.refill();
        Ok(spool)
    }

    /// How many empty files to keep open ahead: [`READY_KEPT`], within an eighth of the
    /// open-files limit (which the mount raises to its hard limit at start,
    /// [`crate::mount::raise_open_files_limit`]).
    fn ready_kept() -> usize {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a plain syscall on a struct this function owns.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return 0;
        }
        READY_KEPT.min(usize::try_from(lim.rlim_cur / 8).unwrap_or(usize::MAX))
    }

    /// Makes empty files ahead up to [`READY_KEPT`]. Blocking; off any writer's path (at
    /// mount, and after each batch of closes).
    fn refill(&self) {
        loop {
            // Under the lock: the row's numbers stay in order with `create`'s.
            let mut ready = self.ready.lock();
            if ready.files.len() >= ready.kept {
                return;
            }
            let made = File::options()
                .create_new(true)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(self.data_path(ready.tail()));
            match made {
                Ok(f) => ready.files.push_back(f),
                Err(e) => {
                    tracing::debug!(dir = %self.dir.display(), error = %e, "cannot make spool files ahead");
                    return;
                }
            }
        }
    }

    /// A number for a new file, with the empty file made ahead for it if there is one.
    fn number(&self) -> (u64, Option<File>) {
        let mut ready = self.ready.lock();
        let n = ready.next;
        ready.next += 1;
        (n, ready.files.pop_front())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// At the end of the mount: a spool holding nothing to upload is removed (its files
    /// made ahead and lock too), so mounts that end cleanly leave no directory behind; one
    /// still holding files stays for the next mount of the account to adopt.
    pub fn close(&self) {
        let holds = |p: &Path| {
            std::fs::read_dir(p).into_iter().flatten().flatten().any(|e| {
                let empty = e.metadata().is_ok_and(|m| m.len() == 0);
                !(e.file_name() == "lock" || empty && e.path().extension().is_some_and(|x| x == "data"))
            })
        };
        if holds(&self.dir) {
            tracing::info!(dir = %self.dir.display(), "uploads left in the spool: the next mount of this account resumes them");
            return;
        }
        self.ready.lock().files.clear();
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let _ = std::fs::remove_dir(&self.dir);
        // The account's directory too, when this was its last mount.
        if let Some(account) = self.dir.parent() {
            let _ = std::fs::remove_dir(account);
        }
    }

    fn data_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n}.data"))
    }

    /// Done with spooled file `n`: emptied and put at the end of the row made ahead
    /// ([`READY_KEPT`]), or deleted (always while a handle reads it: a reused copy would
    /// give that reader another file's bytes; deleted, its open descriptor still reads
    /// this one's).
    fn retire(&self, n: u64) {
        let path = self.data_path(n);
        let read = self.jobs.lock().get_mut(&n).is_some_and(|j| {
            j.retiring = true;
            j.readers > 0
        });
        let room = {
            let r = self.ready.lock();
            r.files.len() < r.kept
        };
        if !read && room {
            let emptied = File::options()
                .read(true)
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(0).map(|_| f));
            if let Ok(f) = emptied {
                let mut ready = self.ready.lock();
                if std::fs::rename(&path, self.data_path(ready.tail())).is_ok() {
                    ready.files.push_back(f);
                    return;
                }
            }
        }
        let _ = std::fs::remove_file(path);
    }

    /// Keeps closed file `n`'s spooled copy from reuse while a handle reads it, if it is
    /// still waiting or uploading.
    fn hold(self: &Arc<Self>, n: u64) -> Option<Held> {
        let mut jobs = self.jobs.lock();
        let j = jobs.get_mut(&n).filter(|j| !j.retiring)?;
        j.readers += 1;
        Some(Held { spool: self.clone(), n })
    }

    /// Whether adopted files wait to be shown.
    pub fn has_adopted(&self) -> bool {
        !self.adopted.lock().is_empty()
    }

    /// The adopted files bound for `appresult`'s folder `directory`, taken out of the list:
    /// a new mount shows them in that folder, pending, until they are uploaded.
    pub fn take_adopted(&self, appresult: &str, directory: &str) -> Vec<Adopted> {
        let mut all = self.adopted.lock();
        if all.is_empty() {
            return Vec::new();
        }
        let (mine, rest) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|a| a.target.appresult == appresult && a.target.directory == directory);
        *all = rest;
        mine
    }

    /// The folders directly in `appresult`'s folder `directory` that adopted files not yet
    /// shown go into (below it at any depth), by name.
    pub fn adopted_folders(&self, appresult: &str, directory: &str) -> std::collections::BTreeSet<String> {
        let below = |d: &str| match directory {
            "" => Some(d.to_string()),
            _ => d.strip_prefix(directory)?.strip_prefix('/').map(str::to_string),
        };
        self.adopted
            .lock()
            .iter()
            .filter(|a| a.target.appresult == appresult)
            .filter_map(|a| below(&a.target.directory))
            .filter_map(|rest| rest.split('/').next().filter(|c| !c.is_empty()).map(str::to_string))
            .collect()
    }

    /// A reader of closed file `n`'s spooled copy (`size` bytes) while it waits or uploads.
    pub fn reader(self: &Arc<Self>, n: u64, size: u64) -> Option<SpoolReader> {
        let held = self.hold(n)?;
        let file = File::open(self.data_path(n)).ok()?;
        Some(SpoolReader {
            file,
            size,
            _held: held,
        })
    }

    fn failed_path(&self, n: u64) -> PathBuf {
        self.dir.join(format!("{n}.failed"))
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Adopts the closed files of dead mounts of the account and queues them (and this
    /// mount's own, on a restart of the same directory) for upload. Each is first looked
    /// for in its appresult's listing. Returns how many were queued.
    pub fn resume(self: &Arc<Self>) -> usize {
        let Some(account) = self.dir.parent() else { return 0 };
        let Ok(entries) = std::fs::read_dir(account) else {
            return 0;
        };
        let mut queued = 0;
        for e in entries.flatten() {
            let other = e.path();
            if other == self.dir || !other.is_dir() {
                continue;
            }
            let Ok(lock) = File::open(other.join("lock")).or_else(|_| File::create(other.join("lock"))) else {
                continue;
            };
            if !flock(&lock) {
                continue; // a live mount's
            }
            queued += self.adopt(&other);
            let _ = std::fs::remove_file(other.join("lock"));
            if std::fs::remove_dir(&other).is_err() {
                tracing::warn!(dir = %other.display(), "a dead mount's spool directory still holds files it could not adopt");
            }
        }
        if queued > 0 {
            tracing::info!(files = queued, "uploads left by a mount that stopped are resumed");
        }
        queued
    }

    /// Moves `other`'s closed files into this spool and queues them.
    fn adopt(self: &Arc<Self>, other: &Path) -> usize {
        let Ok(entries) = std::fs::read_dir(other) else {
            return 0;
        };
        let mut queued = 0;
        for e in entries.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("data") => {}
                // Tried again now, its reason is stale; spare files are not needed.
                _ => {
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
            }
            let Some(meta) = read_trailer(&p) else {
                if e.metadata().is_ok_and(|m| m.len() > 0) {
                    tracing::warn!(file = %p.display(), "a file whose writer never closed it is dropped from the spool");
                }
                let _ = std::fs::remove_file(&p);
                continue;
            };
            // Put in place of the empty file made ahead for its number, if any.
            let (n, _ahead) = self.number();
            if let Err(e) = std::fs::rename(&p, self.data_path(n)) {
                tracing::warn!(file = %p.display(), error = %e, "a spooled file could not be adopted");
                continue;
            }
            let outcome = self.queue(n, meta.target.clone(), meta.size, true, 0);
            self.adopted.lock().push(Adopted {
                n,
                target: meta.target,
                size: meta.size,
                outcome,
            });
            queued += 1;
        }
        let _ = fsync_dir(&self.dir);
        queued
    }

    /// A new file to spool.
    pub fn create(self: &Arc<Self>, target: Target) -> std::io::Result<SpoolFile> {
        let (n, ahead) = self.number();
        let file = match ahead {
            Some(f) => f,
            None => std::fs::OpenOptions::new()
                .create_new(true)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(self.data_path(n))?,
        };
        Ok(SpoolFile {
            spool: self.clone(),
            n,
            target,
            file,
            written: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(FileState::Open),
            in_order: std::sync::atomic::AtomicBool::new(true),
            streaming: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Queues spooled file `n` for upload (`readers`: handles reading its copy already);
    /// the outcome goes to the receiver.
    fn queue(
        self: &Arc<Self>,
        n: u64,
        target: Target,
        size: u64,
        adopted: bool,
        readers: usize,
    ) -> oneshot::Receiver<Result<FileInfo, String>> {
        let sent = Arc::new(AtomicU64::new(0));
        self.jobs.lock().insert(
            n,
            Job {
                target: target.clone(),
                size,
                sent: sent.clone(),
                state: State::Pending,
                readers,
                retiring: false,
            },
        );
        self.bump();
        let (tx, rx) = oneshot::channel();
        if adopted {
            tokio::spawn(self.clone().upload(n, target, size, true, sent, tx));
            return rx;
        }
        let first = {
            let mut closed = self.closed.lock();
            closed.push(Closed {
                n,
                target,
                size,
                sent,
                at: tokio::time::Instant::now(),
                tx,
            });
            closed.len() == 1
        };
        if first {
            let me = self.clone();
            self.batcher.call_once(|| drop(tokio::spawn(me.batches())));
            self.wake.notify_one();
        }
        rx
    }

    /// Takes closed files a batch at a time ([`GATHER`]): made durable against a power cut
    /// ([`Spool`] docs) and the row of files made ahead topped up, in one blocking call;
    /// then each upload starts [`WRITE_BACK_DELAY`] after its file's `close`.
    async fn batches(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(GATHER).await;
            let batch = std::mem::take(&mut *self.closed.lock());
            self.batches.fetch_add(1, Ordering::Relaxed);
            let me = self.clone();
            let paths: Vec<(PathBuf, String)> = batch.iter().map(|c| (self.data_path(c.n), c.target.path())).collect();
            let synced = tokio::task::spawn_blocking(move || {
                for (p, name) in paths {
                    if let Err(e) = File::open(p).and_then(|f| f.sync_data()) {
                        tracing::warn!(path = %name, error = %e, "fsync of the spooled copy failed");
                    }
                }
                // Not while closes keep coming: the burst's writer needs the cores.
                if me.closed.lock().is_empty() {
                    me.refill();
                }
            });
            let _ = synced.await;
            for c in batch {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(c.at + WRITE_BACK_DELAY).await;
                    me.upload(c.n, c.target, c.size, false, c.sent, c.tx).await;
                });
            }
        }
    }

    /// Uploads spooled file `n` when a slot is free, and settles its state.
    async fn upload(
        self: Arc<Self>,
        n: u64,
        target: Target,
        size: u64,
        adopted: bool,
        sent: Arc<AtomicU64>,
        tx: oneshot::Sender<Result<FileInfo, String>>,
    ) {
        let _slot = self.files.clone().acquire_owned().await.expect("never closed");
        self.set_state(n, State::Sending);
        let out = match self.send(n, &target, size, adopted, &sent).await {
            Ok(f) => {
                self.retire(n);
                let _ = std::fs::remove_file(self.failed_path(n));
                self.set_state(n, State::Done);
                tracing::debug!(path = %target.path(), appresult = %target.appresult, "uploaded");
                Ok(f)
            }
            Err(e) => {
                let why = crate::escape::line(&e.to_string()).to_string();
                tracing::error!(path = %target.path(), appresult = %target.appresult, error = %why, "upload failed; the spool keeps the file (tried again at the next mount, or bsmount uploads discard)");
                let _ = std::fs::write(self.failed_path(n), format!("{why}\n"));
                self.set_state(n, State::Failed(why.clone()));
                Err(why)
            }
        };
        let _ = tx.send(out);
    }

    fn set_state(&self, n: u64, s: State) {
        let mut jobs = self.jobs.lock();
        if s == State::Done {
            if let Some(mut j) = jobs.remove(&n) {
                j.state = State::Done;
                let mut f = self.finished.lock();
                f.push((n, j));
                if f.len() > FINISHED_SHOWN {
                    f.remove(0);
                }
            }
        } else if let Some(j) = jobs.get_mut(&n) {
            j.state = s;
        }
        drop(jobs);
        self.bump();
    }

    /// Uploads spooled file `n` (an adopted one only if its appresult does not list it yet).
    async fn send(
        &self,
        n: u64,
        t: &Target,
        size: u64,
        adopted: bool,
        sent: &AtomicU64,
    ) -> Result<FileInfo, UploadError> {
        if adopted {
            if let Some(f) = self.already_there(t, size).await {
                tracing::info!(path = %t.path(), "already uploaded before the mount stopped: not sent again");
                return Ok(f);
            }
        }
        let failed = |e: std::io::Error| UploadError::Api {
            path: t.path(),
            source: ApiError::Transport {
                target: "spool".into(),
                message: format!("reading the spooled copy: {e}"),
                attempts: 1,
            },
        };
        // Only the bytes: the trailer stays behind.
        let mut file = File::open(self.data_path(n)).map_err(failed)?.take(size);
        let up = self.uploader.begin(&t.appresult, &t.directory, &t.name);
        let mut off = 0u64;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let got = file.read(&mut buf).map_err(failed)?;
            if got == 0 {
                break;
            }
            up.write(off, &buf[..got]).await?;
            off += got as u64;
            sent.store(off, Ordering::Relaxed);
        }
        if off != size {
            return Err(failed(std::io::Error::other(format!(
                "the spooled copy holds {off} bytes, {size} were written"
            ))));
        }
        up.finish().await
    }

    /// The file BaseSpace already lists at `t` with `size` bytes, if any.
    async fn already_there(&self, t: &Target, size: u64) -> Option<FileInfo> {
        let listed = self
            .api
            .list_files(ListKind::AppResultFiles(t.appresult.clone()))
            .await
            .ok()?;
        let path = t.path();
        listed
            .items
            .into_iter()
            .find(|f| f.path.as_deref().unwrap_or(&f.name) == path && f.size == Some(size))
    }

    /// Waits until no upload into `appresult` (every appresult: `None`) is pending; the
    /// paths of those that failed.
    pub async fn wait(&self, appresult: Option<&str>) -> Vec<String> {
        let mut rx = self.changed.subscribe();
        loop {
            let (pending, failed) = {
                let jobs = self.jobs.lock();
                let mine = jobs
                    .values()
                    .filter(|j| appresult.is_none_or(|a| a == j.target.appresult));
                let mut pending = 0;
                let mut failed = Vec::new();
                for j in mine {
                    match &j.state {
                        State::Failed(_) => failed.push(j.target.path()),
                        _ => pending += 1,
                    }
                }
                (pending, failed)
            };
            if pending == 0 {
                return failed;
            }
            if rx.changed().await.is_err() {
                return failed;
            }
        }
    }

    /// Uploads for `.bsmount/stats`: counts, bytes, and each pending or failed file.
    pub fn summary(&self) -> serde_json::Value {
        let jobs = self.jobs.lock();
        let item = |j: &Job| {
            let (state, error) = match &j.state {
                State::Pending => ("pending", None),
                State::Sending => ("sending", None),
                State::Failed(e) => ("failed", Some(e.clone())),
                State::Done => ("done", None),
            };
            serde_json::json!({
                "appresult": j.target.appresult, "path": j.target.path(), "size": j.size,
                "sent": j.sent.load(Ordering::Relaxed), "state": state, "error": error,
            })
        };
        let failed = jobs.values().filter(|j| matches!(j.state, State::Failed(_))).count();
        let finished = self.finished.lock();
        serde_json::json!({
            "spool": self.dir.display().to_string(),
            "pending": jobs.len() - failed,
            "failed": failed,
            "bytes_pending": jobs.values().filter(|j| !matches!(j.state, State::Failed(_))).map(|j| j.size - j.sent.load(Ordering::Relaxed).min(j.size)).sum::<u64>(),
            "finished": finished.len(),
            "sync_batches": self.batches.load(Ordering::Relaxed),
            "items": jobs.values().map(item).chain(finished.iter().rev().map(|(_, j)| item(j))).collect::<Vec<_>>(),
        })
    }

    /// Takes the failed uploads out of the table.
    fn take_failed(&self) -> Vec<(u64, Job)> {
        let mut jobs = self.jobs.lock();
        let (failed, rest): (BTreeMap<u64, Job>, BTreeMap<u64, Job>) = std::mem::take(&mut *jobs)
            .into_iter()
            .partition(|(_, j)| matches!(j.state, State::Failed(_)));
        *jobs = rest;
        failed.into_iter().collect()
    }

    /// Drops the failed uploads (their spooled bytes too); how many.
    pub fn discard_failed(&self) -> usize {
        let gone = self.take_failed();
        for (n, _) in &gone {
            let _ = std::fs::remove_file(self.failed_path(*n));
            let _ = std::fs::remove_file(self.data_path(*n));
        }
        self.bump();
        gone.len()
    }

    /// Tries the failed uploads again; how many.
    pub fn retry_failed(self: &Arc<Self>) -> usize {
        let again = self.take_failed();
        for (n, j) in &again {
            drop(self.queue(*n, j.target.clone(), j.size, true, j.readers));
        }
        again.len()
    }
}

/// Appends `meta`'s trailer to a spool file holding `meta.size` bytes.
fn write_trailer(f: &File, meta: &Meta) -> std::io::Result<()> {
    let json = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let mut t = json;
    let n = t.len() as u64;
    t.extend_from_slice(&n.to_le_bytes());
    t.extend_from_slice(TRAILER_MAGIC);
    // The file holds exactly `meta.size` bytes (writes never end past `written`, and a
    // file made ahead or reused starts empty): the trailer goes right after them.
    f.write_all_at(&t, meta.size)
}

#[derive(Debug)]
enum FileState {
    Open,
    /// A write failed (ENOSPC, say): the file is never published.
    Broken(i32),
    Closed,
}

/// One file being written into the spool.
pub struct SpoolFile {
    spool: Arc<Spool>,
    n: u64,
    target: Target,
    file: File,
    written: Arc<AtomicU64>,
    state: Mutex<FileState>,
    /// Every write so far started where the file ended.
    in_order: std::sync::atomic::AtomicBool,
    /// Handed over to a streamed upload ([`STREAM_ABOVE`]).
    streaming: std::sync::atomic::AtomicBool,
}

impl SpoolFile {
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the file is to be streamed from now on ([`STREAM_ABOVE`]); true once.
    pub fn take_stream(&self) -> bool {
        self.in_order.load(Ordering::Relaxed)
            && self.written.load(Ordering::Relaxed) >= STREAM_ABOVE
            && matches!(*self.state.lock(), FileState::Open)
            && !self.streaming.swap(true, Ordering::Relaxed)
    }

    /// Reads back spooled bytes at `offset` (to hand them to a streamed upload).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    /// Bytes written so far (the size `ls -l` shows).
    pub fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    /// Writes `data` at `offset` into the spooled copy (any order: the copy is local). A
    /// failed write (a full disk: ENOSPC) fails at once and the file will not be published.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), i32> {
        match &*self.state.lock() {
            FileState::Open => {}
            FileState::Broken(e) => return Err(*e),
            FileState::Closed => return Err(libc::EBADF),
        }
        if offset != self.written.load(Ordering::Relaxed) {
            self.in_order.store(false, Ordering::Relaxed);
        }
        if let Err(e) = self.file.write_all_at(data, offset) {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            *self.state.lock() = FileState::Broken(errno);
            // Its space goes back at once (a full spool must not stay full until release).
            let _ = self.file.set_len(0);
            tracing::error!(path = %self.target.path(), error = %e, "writing the spooled copy failed: the file will not be uploaded");
            return Err(errno);
        }
        self.written.fetch_max(offset + data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// `fsync` of the writer: the bytes so far are made durable in the spool.
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    /// `close`: ends the copy with where it goes and queues its upload (synced right after,
    /// see the module docs); the
    /// upload's outcome arrives on the receiver. `None` on a second close.
    pub fn close(&self) -> Result<Option<oneshot::Receiver<Result<FileInfo, String>>>, i32> {
        let mut st = self.state.lock();
        match &*st {
            FileState::Open => {}
            FileState::Broken(e) => return Err(*e),
            FileState::Closed => return Ok(None),
        }
        let size = self.written.load(Ordering::Relaxed);
        let meta = Meta {
            target: self.target.clone(),
            size,
        };
        let durable = write_trailer(&self.file, &meta);
        if let Err(e) = durable {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            *st = FileState::Broken(errno);
            tracing::error!(path = %self.target.path(), error = %e, "the spooled copy could not be made durable: the file will not be uploaded");
            return Err(errno);
        }
        *st = FileState::Closed;
        drop(st);
        Ok(Some(self.spool.queue(self.n, self.target.clone(), size, false, 0)))
    }

    /// Drops a file never closed (its writer died, or it is empty): nothing is published.
    pub fn discard(&self) {
        let mut st = self.state.lock();
        if !matches!(*st, FileState::Closed) {
            *st = FileState::Broken(libc::EBADF);
            self.spool.retire(self.n);
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.state.lock(), FileState::Closed)
    }

    /// Its number in the spool.
    pub fn n(&self) -> u64 {
        self.n
    }
}

/// A closed file's spooled copy kept from reuse, released when dropped.
struct Held {
    spool: Arc<Spool>,
    n: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(j) = self.spool.jobs.lock().get_mut(&self.n) {
            j.readers = j.readers.saturating_sub(1);
        }
    }
}

/// Reads of a closed file's spooled copy (its bytes, never the trailer after them).
pub struct SpoolReader {
    file: File,
    size: u64,
    _held: Held,
}

impl SpoolReader {
    /// Up to `size` bytes at `offset`. Blocking (a local file, usually in the page cache).
    pub fn read(&self, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
        let n = self.size.saturating_sub(offset).min(u64::from(size)) as usize;
        let mut buf = vec![0u8; n];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::tests::{rt, Recorder};
    use std::os::unix::fs::MetadataExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    // Issue 20: a burst of small files costs no file creation and one wake-up per batch:
    // each `create` takes an empty file made ahead for its number, the closes are made
    // durable together, and an uploaded file is emptied into the row again.
    #[test]
    fn a_burst_of_files_uses_files_made_ahead_and_is_synced_in_one_batch() {
        let account = tempfile::tempdir().unwrap();
        let api = Arc::new(Recorder::default());
        let rt = rt();
        let spool = {
            let _in = rt.enter();
            Spool::open(account.path(), Uploader::new(api.clone()), api.clone()).unwrap()
        };
        let kept = spool.ready.lock().kept;
        assert!(kept >= 16, "{kept}");
        let made = names(spool.dir());
        assert_eq!(made.len(), kept + 1, "the row and the lock: {made:?}");
        assert!(made.contains(&"1.data".to_string()));
        let outcomes: Vec<_> = (0..10)
            .map(|i| {
                let _in = rt.enter();
                let f = spool
                    .create(Target {
                        appresult: "5".into(),
                        directory: String::new(),
                        name: format!("f{i}.txt"),
                    })
                    .unwrap();
                // The file made ahead for its number, not a new one.
                let ino = std::fs::metadata(spool.data_path(f.n())).unwrap().ino();
                assert_eq!(f.file.metadata().unwrap().ino(), ino);
                f.write(0, format!("file {i}\n").as_bytes()).unwrap();
                // A writer's pace: ten closes within one gathering, not within a wake-up.
                std::thread::sleep(std::time::Duration::from_millis(1));
                f.close().unwrap().unwrap()
            })
            .collect();
        assert_eq!(names(spool.dir()).len(), kept + 1, "no file was created");
        rt.block_on(async {
            for rx in outcomes {
                rx.await.unwrap().unwrap();
            }
        });
        // One batch, or two if the machine stalled across the end of the first.
        let batches = spool.batches.load(Ordering::Relaxed);
        assert!((1..=2).contains(&batches), "ten closes in {batches} batches");
        assert_eq!(api.calls.lock().len(), 10);
        // Uploaded: emptied and renamed to the end of the row.
        let after = names(spool.dir());
        assert_eq!(after.len(), kept + 1, "{after:?}");
        assert!(!after.contains(&"1.data".to_string()), "{after:?}");
        assert!(after.contains(&format!("{}.data", kept + 10)), "{after:?}");
        for n in after.iter().filter(|n| n.ends_with(".data")) {
            assert_eq!(std::fs::metadata(spool.dir().join(n)).unwrap().len(), 0, "{n}");
        }
        // A clean end leaves nothing behind.
        spool.close();
        assert!(!spool.dir().exists());
    }
}
