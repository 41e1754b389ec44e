//! A fault-injecting wrapper around any [`BaseSpaceApi`]: failing listings, failing or
//! corrupted ranged GETs, added delay. Unit tests use it over the fake to drive the layers
//! above into their error paths without a hostile server.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use serde_json::Value;

use super::model::{ContentMeta, EntityItem, FileInfo, Listed, User};
use super::{ApiError, BaseSpaceApi, ListKind, Pieces};

pub struct Faulty {
    inner: Arc<dyn BaseSpaceApi>,
    /// The next this-many listings fail with a server error.
    pub fail_lists: AtomicU32,
    /// The next this-many ranged GETs fail with a transport error.
    pub fail_ranges: AtomicU32,
    /// Ranged GETs return other bytes of the right length.
    pub corrupt_ranges: AtomicBool,
    /// Added to every call.
    pub delay: Mutex<Duration>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn BaseSpaceApi>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            fail_lists: AtomicU32::new(0),
            fail_ranges: AtomicU32::new(0),
            corrupt_ranges: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
        })
    }

    async fn pause(&self) {
        let d = *self.delay.lock();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn list_fault(&self, kind: &ListKind) -> Option<ApiError> {
        Self::take(&self.fail_lists).then(|| ApiError::Server {
            status: 503,
            code: None,
            message: format!("injected failure listing {}", kind.href()),
            attempts: 1,
        })
    }
}

impl BaseSpaceApi for Faulty {
    fn current_user(&self) -> BoxFuture<'_, Result<(User, Value), ApiError>> {
        self.inner.current_user()
    }

    fn list_entities(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<EntityItem>, ApiError>> {
        async move {
            self.pause().await;
            match self.list_fault(&kind) {
                Some(e) => Err(e),
                None => self.inner.list_entities(kind).await,
            }
        }
        .boxed()
    }

    fn list_files(&self, kind: ListKind) -> BoxFuture<'_, Result<Listed<FileInfo>, ApiError>> {
        async move {
            self.pause().await;
            match self.list_fault(&kind) {
                Some(e) => Err(e),
                None => self.inner.list_files(kind).await,
            }
        }
        .boxed()
    }

    fn content_meta(&self, file_id: &str) -> BoxFuture<'_, Result<ContentMeta, ApiError>> {
        self.inner.content_meta(file_id)
    }

    fn url_refused(&self, file_id: &str) {
        self.inner.url_refused(file_id)
    }

    fn get_range(
        &self,
        url: &str,
        start: u64,
        len: u64,
        etag: Option<&str>,
        pieces: Pieces,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>, ApiError>> {
        let (url, etag) = (url.to_string(), etag.map(str::to_string));
        async move {
            self.pause().await;
            if Self::take(&self.fail_ranges) {
                return Err(ApiError::Transport {
                    target: "content".into(),
                    message: "injected failure".into(),
                    attempts: 1,
                });
            }
            let mut out = self.inner.get_range(&url, start, len, etag.as_deref(), pieces).await?;
            if self.corrupt_ranges.load(Ordering::Relaxed) {
                out.iter_mut().for_each(|b| b.iter_mut().for_each(|x| *x = b'Z'));
            }
            Ok(out)
        }
        .boxed()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }
}
