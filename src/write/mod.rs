//! Uploads: what `cp` writes into an appresult's `Files/` becomes a BaseSpace file.
//!
//! BaseSpace (S3 behind it) takes a file whole or in numbered parts, and a file exists only
//! once completed, so writes must be sequential and the file is published at `close`:
//! - bytes fill a part buffer; each full part ([`PART_SIZE`]) is sent at once, in the
//!   background, with its `Content-MD5`, while the writer goes on filling the next;
//! - parts in flight are bounded for the whole mount ([`PARTS_IN_FLIGHT`]): a writer faster
//!   than the network waits for a slot in `write`, so memory stays under that many parts
//!   plus one filling buffer per open file, whatever the file size. (A spool directory would
//!   only move the wait: `close` has to wait for the last part anyway, to say whether the
//!   file made it.)
//! - `flush` (the `close` of the writer) sends the rest and completes the upload; a file
//!   smaller than one part goes in one request. Any part that fails after the client's
//!   retries fails the `close` with EIO and the file is never completed: BaseSpace shows no
//!   partial file, and a crash mid-upload leaves nothing either (an upload never completed
//!   is not listed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;

use crate::api::model::FileInfo;
use crate::api::{write, ApiError, BaseSpaceApi};

/// Bytes per upload part: BaseSpace's own uploaders use 8 MiB parts (the ETags of files
/// they made end in `-<parts>` with 8 MiB parts), above S3's 5 MiB floor.
pub const PART_SIZE: usize = 8 << 20;

/// Parts being sent at once by the whole mount: enough to fill a link several times wider
/// than one stream (uploads are latency-bound per part), and a bound on memory
/// (16 × 8 MiB = 128 MiB).
pub const PARTS_IN_FLIGHT: usize = 16;

/// Why a write or an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("writes must be sequential: offset {offset} asked, {written} bytes written so far (BaseSpace takes a file whole, in order)")]
    NotSequential { offset: u64, written: u64 },
    #[error("the upload already ended")]
    Ended,
    #[error("upload of {path} failed: {source}")]
    Api { path: String, source: ApiError },
}

impl UploadError {
    pub fn errno(&self) -> i32 {
        match self {
            UploadError::NotSequential { .. } => libc::EINVAL,
            UploadError::Ended => libc::EBADF,
            UploadError::Api { .. } => libc::EIO,
        }
    }
}

/// What every upload of the mount shares: the API and the slots for parts in flight.
pub struct Uploader {
    api: Arc<dyn BaseSpaceApi>,
    slots: Arc<Semaphore>,
    part_size: usize,
    /// Bytes sent in completed parts and whole files (for status).
    pub bytes_uploaded: Arc<AtomicU64>,
}

impl Uploader {
    pub fn new(api: Arc<dyn BaseSpaceApi>) -> Arc<Uploader> {
        Self::with_part_size(api, PART_SIZE)
    }

    /// With another part size (tests: small parts make multipart uploads of small files).
    pub fn with_part_size(api: Arc<dyn BaseSpaceApi>, part_size: usize) -> Arc<Uploader> {
        Arc::new(Uploader {
            api,
            slots: Arc::new(Semaphore::new(PARTS_IN_FLIGHT)),
            part_size,
            bytes_uploaded: Arc::default(),
        })
    }

    /// A new file `name` in `directory` (`a/b`, or empty) of appresult `appresult`.
    pub fn begin(self: &Arc<Self>, appresult: &str, directory: &str, name: &str) -> Upload {
        Upload {
            up: self.clone(),
            appresult: appresult.to_string(),
            directory: directory.to_string(),
            name: name.to_string(),
            written: Arc::new(AtomicU64::new(0)),
            state: Mutex::new(State {
                buf: BytesMut::new(),
                file: None,
                next_part: 1,
                parts: JoinSet::new(),
                ended: false,
            }),
        }
    }
}

struct State {
    buf: BytesMut,
    /// The pending file, once the first part is due.
    file: Option<String>,
    next_part: u32,
    parts: JoinSet<Result<(), ApiError>>,
    ended: bool,
}

/// One file being written.
pub struct Upload {
    up: Arc<Uploader>,
    appresult: String,
    directory: String,
    name: String,
    written: Arc<AtomicU64>,
    state: Mutex<State>,
}

impl Upload {
    /// Bytes written so far (the size `ls -l` shows while it uploads).
    pub fn written(&self) -> Arc<AtomicU64> {
        self.written.clone()
    }

    fn path(&self) -> String {
        if self.directory.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.directory, self.name)
        }
    }

    fn failed(&self, source: ApiError) -> UploadError {
        UploadError::Api {
            path: self.path(),
            source,
        }
    }

    /// Takes `data` written at `offset`, which must be where the file ends now.
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), UploadError> {
        let mut st = self.state.lock().await;
        if st.ended {
            return Err(UploadError::Ended);
        }
        let written = self.written.load(Ordering::Relaxed);
        if offset != written {
            return Err(UploadError::NotSequential { offset, written });
        }
        // A part that already failed fails the writer now, not only at close.
        while let Some(done) = st.parts.try_join_next() {
            done.unwrap_or_else(|e| Err(join_error(e)))
                .map_err(|e| self.failed(e))?;
        }
        st.buf.extend_from_slice(data);
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        while st.buf.len() >= self.up.part_size {
            let part = st.buf.split_to(self.up.part_size).freeze();
            self.send_part(&mut st, part).await?;
        }
        Ok(())
    }

    /// Sends one part in the background, once a slot is free.
    async fn send_part(&self, st: &mut State, part: Bytes) -> Result<(), UploadError> {
        let file = match &st.file {
            Some(f) => f.clone(),
            None => {
                let call = write::start_upload(&self.appresult, &self.directory, &self.name);
                let v = self.up.api.send(call).await.map_err(|e| self.failed(e))?;
                let id = v
                    .get("Id")
                    .and_then(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .or_else(|| x.as_u64().map(|n| n.to_string()))
                    })
                    .ok_or_else(|| {
                        self.failed(ApiError::Malformed {
                            target: "start upload".into(),
                            message: "the pending file has no Id".into(),
                        })
                    })?;
                st.file = Some(id.clone());
                id
            }
        };
        let permit = self.up.slots.clone().acquire_owned().await.expect("never closed");
        let n = st.next_part;
        st.next_part += 1;
        let (api, done) = (self.up.api.clone(), self.up.bytes_uploaded.clone());
        st.parts.spawn(async move {
            let _slot = permit;
            let len = part.len() as u64;
            api.send(write::upload_part(&file, n, part)).await?;
            done.fetch_add(len, Ordering::Relaxed);
            Ok(())
        });
        Ok(())
    }

    /// Sends what is left and completes the file; the completed file as BaseSpace lists it.
    pub async fn finish(&self) -> Result<FileInfo, UploadError> {
        let mut st = self.state.lock().await;
        if st.ended {
            return Err(UploadError::Ended);
        }
        st.ended = true;
        let rest = std::mem::take(&mut st.buf).freeze();
        let v = if st.file.is_none() {
            // Smaller than a part: one request (an empty file is refused by BaseSpace).
            let len = rest.len() as u64;
            let call = write::upload_whole(&self.appresult, &self.directory, &self.name, rest);
            let v = self.up.api.send(call).await.map_err(|e| self.failed(e))?;
            self.up.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
            v
        } else {
            if !rest.is_empty() {
                self.send_part(&mut st, rest).await?;
            }
            let mut first_error = None;
            while let Some(done) = st.parts.join_next().await {
                if let Err(e) = done.unwrap_or_else(|e| Err(join_error(e))) {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(self.failed(e));
            }
            let file = st.file.clone().expect("started");
            self.up
                .api
                .send(write::complete_upload(&file))
                .await
                .map_err(|e| self.failed(e))?
        };
        FileInfo::parse(&v).map_err(|message| {
            self.failed(ApiError::Malformed {
                target: "completed file".into(),
                message,
            })
        })
    }

    /// Whether `finish` (or `abort`) ran.
    pub fn is_finished(&self) -> bool {
        self.state.try_lock().map_or(true, |s| s.ended)
    }

    /// Gives up: parts in flight are cancelled, nothing is completed.
    pub async fn abort(&self) {
        let mut st = self.state.lock().await;
        st.ended = true;
        st.parts.abort_all();
    }
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::Transport {
        target: "upload part".into(),
        message: e.to_string(),
        attempts: 1,
    }
}
