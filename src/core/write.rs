//! The write operations (`--write`): `mkdir` makes projects and appresults, `create` and
//! `write` upload into an appresult's `Files/`, `flush` publishes; `rmdir` moves to the
//! trash (`--allow-delete`). What BaseSpace cannot do fails with the errno mountpoint-s3
//! uses for the same: a random write EINVAL, an overwrite EPERM, `rename` ENOSYS; writes
//! where BaseSpace takes none (samples, runs, completed results) EACCES with the reason in
//! the directory's `.error`. Without `--write` every change is EROFS.

use std::ffi::{OsStr, OsString};
use std::sync::Arc;

use tracing::Level;

use super::{CacheMode, FsCore, FsError, Open, Opened};
use crate::api::{write as call, BaseSpaceApi, ListKind};
use crate::tree::layout::EntityKind;
use crate::tree::{Attr, Ino, Place};
use crate::write::spool::{Spool, Target};
use crate::write::{UploadError, Uploader};

/// What `bsmount complete|trash|restore` ask the mount to do (by ioctl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Complete,
    Trash,
    Restore,
}

/// What a write leaves to do on the runtime.
pub enum Pending {
    /// Full parts it completed, to send.
    Parts {
        upload: Arc<crate::write::Upload>,
        parts: crate::write::Parts,
    },
    /// A spooled file grew past [`crate::write::spool::STREAM_ABOVE`]: its upload starts
    /// now, streamed, from what the spool holds.
    Stream {
        fh: u64,
        file: Arc<crate::write::spool::SpoolFile>,
    },
}

/// What `--write` (and `--allow-delete`) give the core.
pub struct WriteMode {
    pub api: Arc<dyn BaseSpaceApi>,
    pub uploader: Arc<Uploader>,
    /// Write-back through a local spool; `None` with `--write-through` (close waits for
    /// the upload).
    pub spool: Option<Arc<Spool>>,
    /// `rmdir` of a project, appresult, sample or run moves it to the trash.
    pub allow_delete: bool,
}

/// How a closed spooled file's upload ended: `None` while it waits or uploads.
pub(super) type Outcome = tokio::sync::watch::Receiver<Option<Result<(), String>>>;

/// A closed spooled file until its upload ends.
pub(super) struct Closed {
    spool: Arc<Spool>,
    n: u64,
    size: u64,
    outcome: Outcome,
}

fn read_only() -> FsError {
    FsError::quiet(libc::EROFS, "read-only filesystem (mount with --write to upload)")
}

impl From<UploadError> for FsError {
    fn from(e: UploadError) -> Self {
        let level = match e {
            UploadError::Api { .. } => Level::ERROR,
            _ => Level::WARN,
        };
        FsError::new(e.errno(), level, e.to_string())
    }
}

impl FsCore {
    pub(super) fn writable(&self) -> Result<&WriteMode, FsError> {
        self.write.as_ref().ok_or_else(read_only)
    }

    /// A refusal to write into `dir`, also shown in its `.error`.
    fn refuse(&self, dir: Ino, errno: i32, why: String) -> FsError {
        self.tree.note(dir, &why);
        FsError::new(errno, Level::WARN, why)
    }

    /// The appresult (and folder in its `Files/`) a new entry of `parent` goes into.
    fn upload_target(&self, parent: Ino, name: &OsStr) -> Result<(String, String), FsError> {
        match self.tree.place(parent) {
            Place::Files {
                appresult,
                dir,
                complete: false,
            } => Ok((appresult, dir)),
            other => Err(self.refusal(parent, name, other)),
        }
    }

    /// Why `name` cannot be written in `parent` (at `place`), also shown in its `.error`.
    fn refusal(&self, parent: Ino, name: &OsStr, place: Place) -> FsError {
        let why = match place {
            Place::Files { .. } => {
                format!("cannot write {name:?}: the appresult is complete (BaseSpace takes no more files)")
            }
            Place::Projects | Place::AppResults { .. } => format!(
                "cannot write {name:?} here: mkdir makes a project or an appresult; files go into an appresult's Files/"
            ),
            Place::Elsewhere(what) => {
                format!("cannot write {name:?} into {what}: only an uncompleted appresult's Files/ takes uploads")
            }
        };
        self.refuse(parent, libc::EACCES, why)
    }

    /// `creat`/`open(O_CREAT)` of a new file: an upload starts (bytes go at the first full
    /// part, or at close).
    pub async fn create(&self, parent: Ino, name: &OsStr) -> Result<(Attr, Opened), FsError> {
        let w = self.writable()?;
        let (appresult, dir) = self.upload_target(parent, name)?;
        let text = name
            .to_str()
            .ok_or_else(|| FsError::quiet(libc::EINVAL, "file names must be UTF-8 for BaseSpace"))?;
        if self.tree.lookup(parent, name).await.is_ok() {
            return Err(FsError::new(
                libc::EPERM,
                Level::WARN,
                format!("{text:?} exists: BaseSpace files cannot be overwritten"),
            ));
        }
        let fh = match &w.spool {
            Some(spool) => {
                let target = Target {
                    appresult,
                    directory: dir,
                    name: text.to_string(),
                };
                let file = spool.create(target).map_err(|e| {
                    FsError::new(
                        e.raw_os_error().unwrap_or(libc::EIO),
                        Level::ERROR,
                        format!("cannot spool {text:?} in {}: {e}", spool.dir().display()),
                    )
                })?;
                let file = Arc::new(file);
                let attr = self.tree.add_pending(parent, name, file.written())?;
                (
                    self.add(Open::Spooled {
                        file,
                        parent,
                        name: name.to_os_string(),
                        ino: attr.ino,
                    }),
                    attr,
                )
            }
            None => {
                let upload = Arc::new(w.uploader.begin(&appresult, &dir, text));
                let attr = self.tree.add_pending(parent, name, upload.written())?;
                (
                    self.add(Open::Upload {
                        upload,
                        parent,
                        name: name.to_os_string(),
                        ino: attr.ino,
                    }),
                    attr,
                )
            }
        };
        let (fh, attr) = fh;
        Ok((
            attr,
            Opened {
                fh,
                cache: CacheMode::Direct,
                backing: None,
            },
        ))
    }

    /// Bytes of an upload; they must follow each other. Copied into the part being filled
    /// at once; `Some` when full parts are to be sent (then [`FsCore::send_parts`]).
    pub fn write_now(&self, fh: u64, offset: u64, data: &[u8]) -> Result<Option<Pending>, FsError> {
        let upload = match self.handles.lock().get(&fh) {
            Some(Open::Upload { upload, .. }) => upload.clone(),
            Some(Open::Spooled { file, .. }) => {
                let file = file.clone();
                // A local pwrite: done here, in the kernel's request thread.
                file.write(offset, data).map_err(|errno| {
                    FsError::new(
                        errno,
                        Level::ERROR,
                        format!("writing the spooled copy failed (errno {errno})"),
                    )
                })?;
                return Ok(file.take_stream().then_some(Pending::Stream { fh, file }));
            }
            Some(_) => return Err(FsError::quiet(libc::EBADF, "not open for writing")),
            None => return Err(super::bad_handle()),
        };
        let parts = upload.append(offset, data)?;
        Ok((!parts.is_empty()).then_some(Pending::Parts { upload, parts }))
    }

    /// Sends the parts a write completed (waits for a free slot: backpressure).
    pub async fn send_parts(&self, p: Pending) -> Result<(), FsError> {
        match p {
            Pending::Parts { upload, parts } => Ok(upload.send(parts).await?),
            Pending::Stream { fh, file } => self.stream(fh, file).await,
        }
    }

    /// Hands spooled file `file` (open as `fh`) over to a streamed upload: what the spool
    /// holds is sent first, then the handle writes into the upload as `--write-through`
    /// does, and its `close` reports the outcome. The spooled copy is dropped. If the hand
    /// over fails the file simply stays spooled.
    async fn stream(&self, fh: u64, file: Arc<crate::write::spool::SpoolFile>) -> Result<(), FsError> {
        let w = self.writable()?;
        let t = file.target().clone();
        let counter = file.written();
        let held = counter.swap(0, std::sync::atomic::Ordering::Relaxed);
        let upload = Arc::new(
            w.uploader
                .begin_counting(&t.appresult, &t.directory, &t.name, counter.clone()),
        );
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < held {
            let want = buf.len().min((held - off) as usize);
            let sent = match file.read_at(&mut buf[..want], off) {
                Ok(0) => Err(UploadError::Ended.into()),
                Ok(got) => upload
                    .write(off, &buf[..got])
                    .await
                    .map(|()| got)
                    .map_err(FsError::from),
                Err(e) => Err(FsError::new(
                    libc::EIO,
                    Level::ERROR,
                    format!("reading the spooled copy: {e}"),
                )),
            };
            match sent {
                Ok(got) => off += got as u64,
                Err(e) => {
                    // The file stays spooled (uploaded from the spool after close).
                    tracing::warn!(path = %t.path(), error = %e.message, "streaming a large file failed; it stays in the spool");
                    upload.abort().await;
                    counter.fetch_max(held, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
        tracing::debug!(path = %t.path(), bytes = held, "a large file is streamed from now on");
        let mut handles = self.handles.lock();
        if let Some(Open::Spooled { parent, name, ino, .. }) = handles.remove(&fh) {
            handles.insert(
                fh,
                Open::Upload {
                    upload,
                    parent,
                    name,
                    ino,
                },
            );
        }
        drop(handles);
        file.discard();
        Ok(())
    }

    /// [`FsCore::write_now`] then [`FsCore::send_parts`].
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        if let Some(p) = self.write_now(fh, offset, data)? {
            self.send_parts(p).await?;
        }
        Ok(data.len() as u32)
    }

    /// `close` of an upload: sends the rest and completes the file, or fails with EIO and
    /// the file is not published (nor kept in the tree).
    /// `pid` is the closing process: one killed by a signal (its descriptors closed as it
    /// dies) publishes nothing, so a killed `cp` never leaves a truncated file.
    pub async fn flush(&self, fh: u64, pid: u32) -> Result<(), FsError> {
        if let Some(r) = self.flush_now(fh, pid) {
            return r;
        }
        let (upload, parent, name, ino) = match self.handles.lock().get(&fh) {
            Some(Open::Upload {
                upload,
                parent,
                name,
                ino,
            }) => (upload.clone(), *parent, name.clone(), *ino),
            _ => return Ok(()),
        };
        if upload.written().load(std::sync::atomic::Ordering::Relaxed) == 0 {
            // Nothing written yet: this close may be of a duplicate (`dd` dups its output
            // and closes the original before writing). The file is decided at release.
            return Ok(());
        }
        if killed_by_signal(pid) {
            tracing::warn!(
                ?name,
                pid,
                "the writer was killed: the upload is dropped, nothing published"
            );
            upload.abort().await;
            self.tree.remove_pending(parent, &name);
            return Err(FsError::quiet(libc::EIO, "the writer was killed"));
        }
        match upload.finish().await {
            Ok(f) => {
                self.tree.publish(ino, &f);
                Ok(())
            }
            Err(UploadError::Ended) => Ok(()), // a second close of a dup'd descriptor
            Err(e) => {
                let _ = self.tree.remove_local(parent, &name);
                let e = FsError::from(e);
                self.tree.note(parent, &e.message);
                Err(e)
            }
        }
    }

    /// `close` of a spooled file, which needs no wait (the adapter answers it in the
    /// kernel's request thread, within the runtime); `None` for any other handle.
    pub fn flush_now(&self, fh: u64, pid: u32) -> Option<Result<(), FsError>> {
        let (file, parent, name, ino) = match self.handles.lock().get(&fh) {
            Some(Open::Spooled {
                file,
                parent,
                name,
                ino,
            }) => (file.clone(), *parent, name.clone(), *ino),
            _ => return None,
        };
        Some(self.flush_spooled(file, parent, name, ino, pid))
    }

    /// `close` of a spooled file: once its bytes are in the spool it is queued
    /// and `close` returns; the upload runs behind and publishes the file (or names the
    /// failure in the directory's `.error`) when it ends.
    fn flush_spooled(
        &self,
        file: Arc<crate::write::spool::SpoolFile>,
        parent: Ino,
        name: OsString,
        ino: Ino,
        pid: u32,
    ) -> Result<(), FsError> {
        if file.written().load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return Ok(()); // decided at release, as for write-through
        }
        if killed_by_signal(pid) {
            tracing::warn!(
                ?name,
                pid,
                "the writer was killed: the file is dropped, nothing published"
            );
            file.discard();
            self.tree.remove_pending(parent, &name);
            return Err(FsError::quiet(libc::EIO, "the writer was killed"));
        }
        let outcome = match file.close() {
            Ok(Some(rx)) => rx,
            Ok(None) => return Ok(()), // a second close of a dup'd descriptor
            Err(errno) => {
                self.tree.remove_pending(parent, &name);
                let e = FsError::new(
                    errno,
                    Level::ERROR,
                    format!("{name:?} was not spooled (errno {errno}): nothing is uploaded"),
                );
                self.tree.note(parent, &e.message);
                return Err(e);
            }
        };
        let spool = self.writable()?.spool.clone().ok_or_else(super::bad_handle)?;
        let size = file.written().load(std::sync::atomic::Ordering::Relaxed);
        self.track(spool, file.n(), size, (parent, name, ino), outcome);
        Ok(())
    }

    /// Follows the upload of closed spooled file `n` (shown as `name` in `parent`, inode
    /// `ino`): until it ends it is read from its spooled copy; then it becomes the file
    /// BaseSpace lists, or goes with the reason in `.error`.
    fn track(
        &self,
        spool: Arc<Spool>,
        n: u64,
        size: u64,
        (parent, name, ino): (Ino, OsString, Ino),
        outcome: tokio::sync::oneshot::Receiver<Result<crate::api::FileInfo, String>>,
    ) {
        let (tx, rx) = tokio::sync::watch::channel(None);
        let closed = Closed {
            spool,
            n,
            size,
            outcome: rx,
        };
        self.closed.lock().insert(ino, closed);
        let (tree, closed) = (self.tree.clone(), self.closed.clone());
        tokio::spawn(async move {
            let ended = match outcome.await {
                Ok(Ok(f)) => {
                    tree.publish(ino, &f);
                    Ok(())
                }
                Ok(Err(why)) => {
                    tree.remove_pending(parent, &name);
                    let why = format!("{name:?} was not uploaded (kept in the spool): {why}");
                    tree.note(parent, &why);
                    Err(why)
                }
                Err(_) => Err(format!("{name:?}: the upload was dropped")),
            };
            closed.lock().remove(&ino);
            let _ = tx.send(Some(ended));
        });
    }

    /// Files a dead mount left bound for directory `dir` (an uncompleted appresult's
    /// `Files/` or a folder in it), resumed by this mount: shown there as pending, read
    /// from their spooled copies, until uploaded. Called once `dir` is listed, so a file
    /// uploaded just before the crash is not shown twice. Whether it showed any.
    pub(super) fn show_adopted(&self, dir: Ino) -> bool {
        let Some(spool) = self
            .write
            .as_ref()
            .and_then(|w| w.spool.clone())
            .filter(|s| s.has_adopted())
        else {
            return false;
        };
        let Place::Files {
            appresult, dir: folder, ..
        } = self.tree.place(dir)
        else {
            return false;
        };
        let mut any = false;
        for sub in spool.adopted_folders(&appresult, &folder) {
            any |= self.tree.add_adopted_dir(dir, OsStr::new(&sub)).is_ok();
        }
        let adopted = spool.take_adopted(&appresult, &folder);
        any |= !adopted.is_empty();
        for a in adopted {
            let name = OsString::from(&a.target.name);
            let size = Arc::new(std::sync::atomic::AtomicU64::new(a.size));
            match self.tree.add_adopted(dir, &name, size) {
                Ok(ino) => self.track(spool.clone(), a.n, a.size, (dir, name, ino), a.outcome),
                // Listed already (uploaded before the crash): its upload finds it there.
                Err(_) => drop(a.outcome),
            }
        }
        any
    }

    /// An open of a closed file whose upload has not ended: read from its spooled copy, so
    /// `md5sum`, `cmp` or `diff -r` right after a `cp` see what was written.
    pub(super) fn open_spooled(&self, ino: Ino) -> Option<Opened> {
        self.write.as_ref()?;
        let (spool, n, size, outcome) = {
            let closed = self.closed.lock();
            let c = closed.get(&ino)?;
            (c.spool.clone(), c.n, c.size, c.outcome.clone())
        };
        // Opened outside the lock: an open of one file does not wait for another's.
        let reader = spool.reader(n, size)?;
        Some(Opened {
            fh: self.add(Open::SpoolRead { reader, outcome }),
            // Not kept by the kernel: once uploaded, later opens read what BaseSpace lists.
            cache: CacheMode::Direct,
            backing: None,
        })
    }

    /// `fsync`: of a file being written, its spooled copy is made durable on local disk
    /// (its upload starts at `close`); of a closed file opened again while it uploads
    /// (`sync FILE`), waits for the upload and reports how it ended.
    pub async fn fsync(&self, fh: u64) -> Result<(), FsError> {
        let open = match self.handles.lock().get(&fh) {
            Some(Open::Spooled { file, .. }) => Ok(file.clone()),
            Some(Open::SpoolRead { outcome, .. }) => Err(outcome.clone()),
            _ => return Ok(()),
        };
        let file = match open {
            Ok(file) => file,
            Err(mut outcome) => {
                let ended = outcome
                    .wait_for(Option::is_some)
                    .await
                    .map(|o| o.clone().unwrap_or(Ok(())))
                    .unwrap_or_else(|_| Err("the mount is shutting down".to_string()));
                return ended.map_err(|why| FsError::new(libc::EIO, Level::WARN, why));
            }
        };
        tokio::task::block_in_place(|| file.sync()).map_err(|e| {
            FsError::new(
                e.raw_os_error().unwrap_or(libc::EIO),
                Level::ERROR,
                format!("fsync of the spooled copy: {e}"),
            )
        })
    }

    /// An upload's last descriptor closed without a completing flush: an empty file (which
    /// BaseSpace refuses) or a writer that died; nothing is published either way.
    pub(super) fn drop_upload(&self, upload: Arc<crate::write::Upload>, parent: Ino, name: OsString) {
        self.note_unpublished(
            upload.written().load(std::sync::atomic::Ordering::Relaxed),
            parent,
            name,
        );
        tokio::spawn(async move { upload.abort().await });
    }

    /// Why a file closed without a completing flush was not published.
    pub(super) fn note_unpublished(&self, written: u64, parent: Ino, name: OsString) {
        if written == 0 {
            let why = format!("{name:?} was not uploaded: BaseSpace refuses zero-byte files");
            tracing::warn!("{why}");
            self.tree.note(parent, &why);
        } else {
            tracing::warn!(?name, "an upload was closed without a flush: nothing was published");
        }
        self.tree.remove_pending(parent, &name);
    }

    /// `mkdir`: a project in `Projects/`, an appresult (and its appsession) in a project's
    /// `AppResults/`, a folder inside an uncompleted appresult's `Files/`.
    pub async fn mkdir(&self, parent: Ino, name: &OsStr) -> Result<Attr, FsError> {
        let w = self.writable()?;
        let text = name
            .to_str()
            .ok_or_else(|| FsError::quiet(libc::EINVAL, "names must be UTF-8 for BaseSpace"))?
            .to_string();
        if self.tree.lookup(parent, name).await.is_ok() {
            return Err(FsError::quiet(libc::EEXIST, "exists"));
        }
        let made = match self.tree.place(parent) {
            Place::Projects => call::create_project(&text),
            Place::AppResults { project } => call::create_appresult(&project, &text),
            Place::Files { complete: false, .. } => return Ok(self.tree.add_local_dir(parent, name)?),
            other => return Err(self.refusal(parent, name, other)),
        };
        w.api.send(made).await.map_err(|e| {
            let e = FsError::new(e.errno(), Level::ERROR, format!("creating {text:?} failed: {e}"));
            self.tree.note(parent, &e.message);
            e
        })?;
        self.tree.stale(parent);
        Ok(self.tree.lookup(parent, name).await?)
    }

    /// `rmdir`: an empty local folder goes; with `--allow-delete` a project, appresult,
    /// sample, run or dataset moves to BaseSpace's trash (restore with `bsmount restore`).
    pub async fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        let w = self.writable()?;
        if self.tree.is_empty_local_dir(parent, name) {
            return Ok(self.tree.remove_local(parent, name)?);
        }
        let attr = self.tree.lookup(parent, name).await?;
        self.tree.forget(attr.ino, 1);
        let Some((kind, id)) = self.tree.entity(attr.ino) else {
            return Err(FsError::new(
                libc::EPERM,
                Level::WARN,
                format!("{name:?} is not a project, appresult, sample, run or dataset: it cannot be removed"),
            ));
        };
        if !w.allow_delete {
            return Err(self.refuse(
                parent,
                libc::EPERM,
                format!("{name:?} was not moved to the trash: mount with --allow-delete (or run bsmount trash)"),
            ));
        }
        self.trash(parent, name, kind, id).await
    }

    /// Moves entity `id` (shown as `name` in `parent`) to BaseSpace's trash.
    async fn trash(&self, parent: Ino, name: &OsStr, kind: EntityKind, id: String) -> Result<(), FsError> {
        let w = self.writable()?;
        let (resource, target) = match kind {
            EntityKind::Project => ("projects", id),
            EntityKind::Run => ("runs", id),
            EntityKind::Dataset => ("datasets", id),
            EntityKind::AppResult | EntityKind::Sample => {
                let project = match self.tree.place(parent) {
                    Place::AppResults { project } => project,
                    _ => self.tree.project_of(parent).unwrap_or_default(),
                };
                let prefix = if kind == EntityKind::Sample {
                    "sample"
                } else {
                    "appresult"
                };
                (
                    "datasets",
                    self.dataset_of(&w.api, &project, &format!("{prefix}.{id}")).await?,
                )
            }
            _ => {
                return Err(FsError::new(
                    libc::EPERM,
                    Level::WARN,
                    format!("{name:?} cannot be moved to the trash"),
                ))
            }
        };
        w.api.send(call::move_to_trash(resource, &target)).await.map_err(|e| {
            FsError::new(
                e.errno(),
                Level::ERROR,
                format!("moving {name:?} to the trash failed: {e}"),
            )
        })?;
        tracing::info!(?name, resource, id = %target, "moved to the trash");
        self.tree.stale(parent);
        Ok(())
    }

    /// The v2 dataset id of a v1 sample or appresult (`V1pre3Id`), from its project's datasets.
    async fn dataset_of(&self, api: &Arc<dyn BaseSpaceApi>, project: &str, v1: &str) -> Result<String, FsError> {
        let listed = api
            .list_entities(ListKind::ProjectDatasets(project.to_string()))
            .await
            .map_err(|e| FsError::new(e.errno(), Level::ERROR, format!("finding the dataset of {v1}: {e}")))?;
        listed
            .items
            .into_iter()
            .find(|i| i.entity.v1pre3_id.as_deref() == Some(v1))
            .map(|i| i.entity.id)
            .ok_or_else(|| {
                FsError::new(
                    libc::ENOENT,
                    Level::WARN,
                    format!("no dataset of {v1} in project {project}"),
                )
            })
    }

    /// `bsmount complete|trash|restore` on directory `ino` (an ioctl): done with the mount's
    /// own credentials. `complete` first waits for every spooled upload into the appresult
    /// and refuses, naming them, if any failed.
    pub async fn act(&self, ino: Ino, act: Act) -> Result<String, FsError> {
        let w = self.writable()?;
        let parent = self.tree.parent(ino);
        let Some((kind, id)) = self.tree.entity(ino) else {
            return Err(self.refuse(ino, libc::EINVAL, "not a BaseSpace entity directory".into()));
        };
        let name = OsString::from(format!("{kind:?} {id}"));
        match (act, kind) {
            (Act::Complete, EntityKind::AppResult | EntityKind::AppSession) => {
                if let (Some(spool), EntityKind::AppResult) = (&w.spool, kind) {
                    let failed = spool.wait(Some(&id)).await;
                    if !failed.is_empty() {
                        let why = format!(
                            "not completed: {} file(s) failed to upload and are kept in the spool ({}); bsmount uploads retry, or discard",
                            failed.len(),
                            failed.join(", ")
                        );
                        return Err(self.refuse(ino, libc::EIO, why));
                    }
                }
                let session = match kind {
                    EntityKind::AppSession => id.clone(),
                    _ => self.session_of(&w.api, &id).await?,
                };
                w.api
                    .send(call::set_appsession_status(
                        &session,
                        "Complete",
                        "Marked complete with bsmount",
                    ))
                    .await
                    .map_err(|e| self.refuse(ino, e.errno(), format!("completing failed: {e}")))?;
                self.tree.stale(parent);
                self.tree.stale(ino);
                Ok("complete".into())
            }
            (Act::Trash, _) => {
                self.trash(parent, &name, kind, id).await?;
                Ok("moved to the trash".into())
            }
            (Act::Restore, EntityKind::TrashItem) => {
                w.api
                    .send(call::restore_from_trash(&id))
                    .await
                    .map_err(|e| self.refuse(ino, e.errno(), format!("restoring failed: {e}")))?;
                self.tree.stale(parent);
                Ok("restored".into())
            }
            _ => Err(self.refuse(ino, libc::EINVAL, format!("{act:?} does not apply to a {kind:?}"))),
        }
    }

    /// The appsession that made appresult `id`.
    async fn session_of(&self, api: &Arc<dyn BaseSpaceApi>, id: &str) -> Result<String, FsError> {
        let path = format!("v1pre3/appresults/{}", crate::api::segment(id));
        let body = api
            .get_raw(&path)
            .await
            .map_err(|e| FsError::new(e.errno(), Level::ERROR, format!("{path}: {e}")))?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        v.pointer("/Response/AppSession/Id")
            .and_then(|x| {
                x.as_str()
                    .map(str::to_string)
                    .or_else(|| x.as_u64().map(|n| n.to_string()))
            })
            .ok_or_else(|| FsError::new(libc::EIO, Level::ERROR, format!("{path} names no appsession")))
    }

    /// The upload spool, if this mount writes back.
    pub fn spool(&self) -> Option<Arc<Spool>> {
        self.write.as_ref().and_then(|w| w.spool.clone())
    }

    /// `bsmount uploads retry|discard`: the uploads that failed for good are tried again
    /// (`retry`) or dropped with their spooled bytes; how many. EROFS on a mount that does
    /// not write back.
    pub fn failed_uploads(&self, retry: bool) -> Result<usize, FsError> {
        let s = self
            .spool()
            .ok_or_else(|| FsError::quiet(libc::EROFS, "this mount does not write back uploads"))?;
        let n = match retry {
            true => s.retry_failed(),
            false => s.discard_failed(),
        };
        tracing::info!(files = n, retry, "failed uploads retried or discarded");
        Ok(n)
    }

    /// `unlink`: BaseSpace removes whole appresults (to the trash), never single files.
    pub fn unlink(&self, parent: Ino, name: &OsStr) -> Result<(), FsError> {
        self.writable()?;
        Err(self.refuse(
            parent,
            libc::EPERM,
            format!("{name:?} was not removed: BaseSpace deletes whole appresults (rmdir with --allow-delete, or bsmount trash), not single files"),
        ))
    }

    /// `rename`: BaseSpace has no rename of files or entities through this API.
    pub fn rename(&self) -> Result<(), FsError> {
        self.writable()?;
        Err(FsError::new(
            libc::ENOSYS,
            Level::WARN,
            "rename is not supported: BaseSpace files cannot be renamed (rsync: use --inplace)",
        ))
    }

    /// `truncate`/`chmod`/`utimes`: times and modes are BaseSpace's; a size change only as
    /// a no-op on a file being written (`O_TRUNC` of a new file).
    pub fn setattr(&self, ino: Ino, size: Option<u64>) -> Result<Attr, FsError> {
        let attr = self.tree.getattr(ino)?;
        if let Some(n) = size {
            self.writable()?;
            if n != attr.size || !self.tree.is_pending(ino) {
                return Err(FsError::new(
                    libc::EPERM,
                    Level::WARN,
                    "BaseSpace files cannot be truncated or extended",
                ));
            }
        }
        Ok(attr)
    }

    /// Whether this mount writes (for the adapter: mount options, permissions).
    pub fn writes(&self) -> bool {
        self.write.is_some()
    }
}

/// Linux's task flag for a process that is exiting (`PF_EXITING`).
const PF_EXITING: u64 = 0x4;

/// Whether process `pid` is dying of a signal (`SIGKILL`, `SIGTERM`, …): its descriptors
/// are being closed by the kernel, not by the program. Read from `/proc/<pid>/stat`: the
/// task's flags (field 9) and its exit code (field 52, the signal in its low 7 bits).
pub fn killed_by_signal(pid: u32) -> bool {
    use std::io::Read;
    // One read (every `close` of a written file asks): the line is a few hundred bytes.
    let mut buf = [0u8; 2048];
    let Ok(n) = std::fs::File::open(format!("/proc/{pid}/stat")).and_then(|mut f| f.read(&mut buf)) else {
        return false;
    };
    let stat = String::from_utf8_lossy(&buf[..n]);
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| f.get(n - 3).and_then(|x| x.parse::<u64>().ok());
    let exiting = field(9).is_some_and(|flags| flags & PF_EXITING != 0);
    exiting && field(52).is_some_and(|code| code & 0x7f != 0)
}
