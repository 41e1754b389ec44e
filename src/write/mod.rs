//! Uploads: what `cp` writes into an appresult's `Files/` becomes a BaseSpace file.
//!
//! BaseSpace (S3 behind it) takes a file whole or in numbered parts, and a file exists only
//! once completed, so writes must be sequential and the file is published at `close`:
//! - bytes fill a part buffer; each full part ([`PART_SIZE`]) is sent at once, in the
//!   background, with its `Content-MD5`, while the writer goes on filling the next;
//! - parts in flight are bounded for the whole mount ([`PARTS_IN_FLIGHT`]): a writer faster
//!   than the network waits for a slot in `write`, so memory stays under that many parts
//!   plus one filling buffer per open file, whatever the file size.
//!
//! By default the writer does not drive this itself: [`spool`] keeps what is written on
//! local disk and feeds it to an [`Upload`] behind `close`; with `--write-through` the
//! kernel's writes go straight into an [`Upload`], as described here.
//! - `flush` (the `close` of the writer) sends the rest and completes the upload; a file
//!   smaller than one part goes in one request. Any part that fails after the client's
//!   retries fails the `close` with EIO and the file is never completed: BaseSpace shows no
//!   partial file, and a crash mid-upload leaves nothing either (an upload never completed
//!   is not listed).

pub mod spool;

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
        self.begin_counting(appresult, directory, name, Arc::new(AtomicU64::new(0)))
    }

    /// [`Uploader::begin`], counting the bytes written in `written` (which must be 0): a
    /// spooled file handed over to a streamed upload keeps the size `ls -l` shows.
    pub fn begin_counting(
        self: &Arc<Self>,
        appresult: &str,
        directory: &str,
        name: &str,
        written: Arc<AtomicU64>,
    ) -> Upload {
        Upload {
            up: self.clone(),
            appresult: appresult.to_string(),
            directory: directory.to_string(),
            name: name.to_string(),
            written,
            buf: parking_lot::Mutex::new(Buf {
                bytes: BytesMut::new(),
                next_part: 1,
                ended: false,
            }),
            sending: Mutex::new(Sending {
                file: None,
                parts: JoinSet::new(),
            }),
        }
    }
}

/// The bytes not yet cut into a part, and the next part's number (taken as parts are cut,
/// so parts are numbered in the order their bytes were written).
struct Buf {
    bytes: BytesMut,
    next_part: u32,
    ended: bool,
}

/// The pending file (once the first part is due) and the parts in flight.
struct Sending {
    file: Option<String>,
    parts: JoinSet<Result<(), ApiError>>,
}

/// Full parts cut by a write, to be sent: (number, bytes).
pub type Parts = Vec<(u32, Bytes)>;

/// One file being written.
pub struct Upload {
    up: Arc<Uploader>,
    appresult: String,
    directory: String,
    name: String,
    written: Arc<AtomicU64>,
    buf: parking_lot::Mutex<Buf>,
    sending: Mutex<Sending>,
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

    /// Takes `data` written at `offset`, which must be where the file ends now; copies it
    /// once, into the part being filled. The parts it completed are returned for
    /// [`Upload::send`] (most writes complete none, and need nothing else).
    pub fn append(&self, offset: u64, data: &[u8]) -> Result<Parts, UploadError> {
        let mut b = self.buf.lock();
        if b.ended {
            return Err(UploadError::Ended);
        }
        let written = self.written.load(Ordering::Relaxed);
        if offset != written {
            return Err(UploadError::NotSequential { offset, written });
        }
        let size = self.up.part_size;
        let total = data.len() as u64;
        let mut data = data;
        let mut parts = Parts::new();
        while !data.is_empty() {
            if b.bytes.capacity() == 0 {
                b.bytes.reserve(size);
            }
            let n = data.len().min(size - b.bytes.len());
            b.bytes.extend_from_slice(&data[..n]);
            data = &data[n..];
            if b.bytes.len() == size {
                let n = b.next_part;
                b.next_part += 1;
                parts.push((n, b.bytes.split().freeze()));
            }
        }
        self.written.fetch_add(total, Ordering::Relaxed);
        Ok(parts)
    }

    /// Sends full parts in the background, once slots are free (the writer waits here when
    /// the network is slower than it). A part that already failed fails the writer now.
    pub async fn send(&self, parts: Parts) -> Result<(), UploadError> {
        if parts.is_empty() {
            return Ok(());
        }
        let mut st = self.sending.lock().await;
        while let Some(done) = st.parts.try_join_next() {
            done.unwrap_or_else(|e| Err(join_error(e)))
                .map_err(|e| self.failed(e))?;
        }
        let file = self.started(&mut st).await?;
        for (n, part) in parts {
            let permit = self.up.slots.clone().acquire_owned().await.expect("never closed");
            let (api, done, file) = (self.up.api.clone(), self.up.bytes_uploaded.clone(), file.clone());
            st.parts.spawn(async move {
                let _slot = permit;
                let len = part.len() as u64;
                api.send(write::upload_part(&file, n, part)).await?;
                done.fetch_add(len, Ordering::Relaxed);
                Ok(())
            });
        }
        Ok(())
    }

    /// The pending file's id, starting the multipart upload the first time.
    async fn started(&self, st: &mut Sending) -> Result<String, UploadError> {
        if let Some(f) = &st.file {
            return Ok(f.clone());
        }
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
        Ok(id)
    }

    /// [`Upload::append`] then [`Upload::send`].
    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<(), UploadError> {
        let parts = self.append(offset, data)?;
        self.send(parts).await
    }

    /// Sends what is left and completes the file; the completed file as BaseSpace lists it.
    pub async fn finish(&self) -> Result<FileInfo, UploadError> {
        let (rest, last) = {
            let mut b = self.buf.lock();
            if b.ended {
                return Err(UploadError::Ended);
            }
            b.ended = true;
            let n = b.next_part;
            (b.bytes.split().freeze(), n)
        };
        let mut st = self.sending.lock().await;
        let v = if last == 1 {
            // Smaller than a part: one request (an empty file is refused by BaseSpace).
            let len = rest.len() as u64;
            let call = write::upload_whole(&self.appresult, &self.directory, &self.name, rest);
            let v = self.up.api.send(call).await.map_err(|e| self.failed(e))?;
            self.up.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
            v
        } else {
            drop(st);
            if !rest.is_empty() {
                self.send(vec![(last, rest)]).await?;
            }
            st = self.sending.lock().await;
            let mut first_error = None;
            while let Some(done) = st.parts.join_next().await {
                if let Err(e) = done.unwrap_or_else(|e| Err(join_error(e))) {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(self.failed(e));
            }
            let file = self.started(&mut st).await?;
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
        self.buf.lock().ended
    }

    /// Gives up: parts in flight are cancelled, nothing is completed.
    pub async fn abort(&self) {
        self.buf.lock().ended = true;
        self.sending.lock().await.parts.abort_all();
    }
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::Transport {
        target: "upload part".into(),
        message: e.to_string(),
        attempts: 1,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::model::{ContentMeta, EntityItem, Listed, User};
    use crate::api::{ListKind, Pieces};
    use futures::future::BoxFuture;
    use serde_json::{json, Value};

    /// Records every write call; fails the part numbers in `fail_parts`.
    #[derive(Default)]
    pub(crate) struct Recorder {
        pub(crate) calls: parking_lot::Mutex<Vec<(String, usize)>>,
        fail_parts: Vec<u32>,
    }

    impl BaseSpaceApi for Recorder {
        fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>> {
            unimplemented!()
        }
        fn list_entities(&self, _: ListKind) -> BoxFuture<'_, Result<Listed<EntityItem>, ApiError>> {
            unimplemented!()
        }
        fn list_files(&self, _: ListKind) -> BoxFuture<'_, Result<Listed<FileInfo>, ApiError>> {
            unimplemented!()
        }
        fn content_meta(&self, _: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>> {
            unimplemented!()
        }
        fn get_range(
            &self,
            _: &str,
            _: u64,
            _: u64,
            _: Option<&str>,
            _: Pieces,
        ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>> {
            unimplemented!()
        }
        fn send(&self, call: write::Call) -> BoxFuture<'_, Result<Value, ApiError>> {
            let failing = self
                .fail_parts
                .iter()
                .any(|n| call.path.ends_with(&format!("/parts/{n}")));
            self.calls.lock().push((call.path.clone(), call.body.len()));
            let total: usize = self
                .calls
                .lock()
                .iter()
                .filter(|(p, _)| p.contains("/parts/"))
                .map(|(_, n)| n)
                .sum();
            let whole = call.path.contains("/files?") && !call.path.contains("multipart");
            Box::pin(async move {
                if failing {
                    return Err(ApiError::Status {
                        status: 500,
                        code: None,
                        message: "part refused".into(),
                    });
                }
                let size = if whole { call.body.len() } else { total };
                Ok(json!({"Id": "77", "Name": "f.bin", "Path": "d/f.bin", "Size": size, "ETag": "e"}))
            })
        }
    }

    pub(crate) fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn parts_are_cut_in_order_sent_with_their_numbers_and_completed() {
        let api = Arc::new(Recorder::default());
        let up = Uploader::with_part_size(api.clone(), 1000);
        rt().block_on(async {
            let u = up.begin("5", "d", "f.bin");
            // Writes that do not line up with parts: 700 + 700 + 1100 + 150 = 2650 bytes.
            let mut off = 0;
            for n in [700usize, 700, 1100, 150] {
                u.write(off, &vec![1u8; n]).await.unwrap();
                off += n as u64;
            }
            let err = u.write(10, b"x").await.unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL, "a write before the end");
            let f = u.finish().await.unwrap();
            assert_eq!(f.size, Some(2650));
        });
        let calls = api.calls.lock().clone();
        assert_eq!(
            calls[0].0,
            "v1pre3/appresults/5/files?name=f%2Ebin&directory=d&multipart=true"
        );
        let mut parts: Vec<(String, usize)> = calls.iter().filter(|(p, _)| p.contains("/parts/")).cloned().collect();
        parts.sort();
        assert_eq!(
            parts,
            [
                ("v1pre3/files/77/parts/1".to_string(), 1000),
                ("v1pre3/files/77/parts/2".to_string(), 1000),
                ("v1pre3/files/77/parts/3".to_string(), 650)
            ]
        );
        assert_eq!(calls.last().unwrap().0, "v1pre3/files/77?uploadstatus=complete");
    }

    #[test]
    fn a_small_file_is_one_request_and_a_failed_part_completes_nothing() {
        let api = Arc::new(Recorder::default());
        let up = Uploader::with_part_size(api.clone(), 1000);
        rt().block_on(async {
            let u = up.begin("5", "", "small.txt");
            u.write(0, b"hello").await.unwrap();
            u.finish().await.unwrap();
        });
        assert_eq!(
            api.calls.lock().clone(),
            [("v1pre3/appresults/5/files?name=small%2Etxt&directory=".to_string(), 5)]
        );
        let api = Arc::new(Recorder {
            fail_parts: vec![2],
            ..Recorder::default()
        });
        let up = Uploader::with_part_size(api.clone(), 1000);
        rt().block_on(async {
            let u = up.begin("5", "", "big.bin");
            let _ = u.write(0, &vec![0u8; 3500]).await;
            let e = u.finish().await.unwrap_err();
            assert_eq!(e.errno(), libc::EIO);
            assert!(e.to_string().contains("part refused"), "{e}");
        });
        assert!(
            !api.calls
                .lock()
                .iter()
                .any(|(p, _)| p.contains("uploadstatus=complete")),
            "nothing completed after a failed part"
        );
    }
}
