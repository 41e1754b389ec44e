//! Reading file bytes: presigned URLs, ranged GETs, a block cache and prefetch.
//!
//! Files are cut into fixed [`BLOCK_SIZE`] blocks keyed by (file id, version, index) and
//! kept in an LRU with a byte budget. A read fetches only the blocks it touches, so random
//! access (samtools, tabix, IGV) costs one small round trip. Each open handle watches its
//! own offsets: once reads are sequential it prefetches ahead with a window that doubles up
//! to [`MAX_WINDOW_BLOCKS`], in parts of up to [`PART_BLOCKS`] blocks fetched in parallel
//! under one global connection limit. Blocks being fetched are shared, so two readers of the
//! same bytes cause one request. Every body is checked (status, Content-Range, length)
//! by the client; a read either returns the right bytes or fails with EIO, never a guess.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::api::{ApiError, BaseSpaceApi, Pieces};
use crate::tree::RemoteFile;

pub mod disk;
mod pool;
use disk::DiskCache;
use pool::BufPool;

/// Cache granularity: large enough to keep request counts sane, small enough that a 4 KiB
/// random read fetches at most 1 MiB (plus one more block if it straddles a boundary).
pub const BLOCK_SIZE: u64 = 1 << 20;
/// Blocks per ranged GET when prefetching: 8 MiB, the size mountpoint-s3 found to reach full
/// throughput per connection.
pub const PART_BLOCKS: u64 = 8;
/// Largest prefetch window per handle (128 MiB): with 8 MiB parts that is 16 ranged GETs in
/// flight, enough to fill a link of 100 MB/s per connection (64 MiB capped a cold `cat` at
/// ~500 MB/s on the benchmark's emulated link).
pub const MAX_WINDOW_BLOCKS: u64 = 128;
/// Free block buffers kept for reuse, at most (and at most 1/8 of the budget).
const POOL_BLOCKS: u64 = 32;
/// Granularity of in-flight memory accounting.
const MEM_UNIT: u64 = 64 << 10;
/// First prefetch window once a handle reads sequentially.
const INITIAL_WINDOW_BLOCKS: u64 = 4;
/// Reads within this distance of where the handle left off still count as sequential:
/// the kernel issues readahead requests concurrently and slightly out of order.
const SEQ_TOLERANCE: u64 = 8 << 20;
/// Renew a presigned URL this long before it expires (or at half its lifetime if that is
/// shorter), so a long sequential read never sends a request with a URL about to lapse.
const URL_MARGIN: Duration = Duration::from_secs(60);
/// Renewals of one part's URL before giving up: a URL refused right after renewal means
/// something else is wrong (clock skew, revoked access).
const MAX_URL_RENEWALS: u32 = 3;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("file {file}: md5 of the bytes read is {got}, BaseSpace's ETag says {expected}; cached blocks dropped")]
    Corrupt {
        file: String,
        expected: String,
        got: String,
    },
    /// The fetch was a prefetch cancelled by a seek; whoever still wants the block fetches
    /// it again (never shown to a reader).
    #[error("prefetch cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReadError {
    pub fn errno(&self) -> i32 {
        match self {
            ReadError::Api(ApiError::Unauthorized { .. } | ApiError::Forbidden { .. }) => libc::EACCES,
            _ => libc::EIO,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Byte budget of the block cache.
    pub cache_bytes: u64,
    /// Ranged GETs in flight at once, over all files.
    pub max_connections: usize,
    /// The persistent tier under `--cache-dir`, if any.
    pub disk: Option<Arc<DiskCache>>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            cache_bytes: 512 << 20,
            max_connections: 32,
            disk: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BlockKey {
    file: Arc<str>,
    version: Arc<str>,
    index: u64,
}

/// LRU of blocks under a byte budget.
///
/// The budget covers cached blocks *and* parts being fetched: `inflight` counts the bytes
/// reserved by fetches, and the cache evicts so that `cached + inflight <= budget`.
struct BlockCache {
    lru: Mutex<(lru::LruCache<BlockKey, Bytes>, u64)>,
    budget: u64,
    inflight: AtomicU64,
}

impl BlockCache {
    fn get(&self, k: &BlockKey) -> Option<Bytes> {
        self.lru.lock().0.get(k).cloned()
    }
    fn put(&self, k: BlockKey, v: Bytes) {
        let mut g = self.lru.lock();
        let (lru, bytes) = &mut *g;
        if let Some(old) = lru.put(k, v.clone()) {
            *bytes -= old.len() as u64;
        }
        *bytes += v.len() as u64;
        Self::evict(
            lru,
            bytes,
            self.budget.saturating_sub(self.inflight.load(Ordering::Relaxed)),
        );
    }

    fn evict(lru: &mut lru::LruCache<BlockKey, Bytes>, bytes: &mut u64, limit: u64) {
        while *bytes > limit {
            match lru.pop_lru() {
                Some((_, b)) => *bytes -= b.len() as u64,
                None => break,
            }
        }
    }

    /// Makes room for a fetch of `n` bytes.
    fn reserve(&self, n: u64) {
        let inflight = self.inflight.fetch_add(n, Ordering::Relaxed) + n;
        let mut g = self.lru.lock();
        let (lru, bytes) = &mut *g;
        Self::evict(lru, bytes, self.budget.saturating_sub(inflight));
    }

    /// Moves blocks to the cold end: first to go when room is needed.
    fn demote(&self, keys: impl Iterator<Item = BlockKey>) {
        let mut g = self.lru.lock();
        for k in keys {
            g.0.demote(&k);
        }
    }

    fn release(&self, n: u64) {
        self.inflight.fetch_sub(n, Ordering::Relaxed);
    }
    fn bytes(&self) -> u64 {
        self.lru.lock().1
    }
}

/// Counters for status and tests.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub parts_fetched: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub url_renewals: AtomicU64,
    pub read_errors: AtomicU64,
    pub files_verified: AtomicU64,
    pub checksum_failures: AtomicU64,
    /// Prefetch parts cancelled because the reader moved elsewhere or closed the file.
    pub prefetch_cancelled: AtomicU64,
}

type BlockFut = Shared<BoxFuture<'static, Result<Bytes, ReadError>>>;
type PartFut = Shared<BoxFuture<'static, Result<Arc<[Bytes]>, ReadError>>>;

/// A block a read needs: already cached, or being fetched (shared with other readers).
enum Block {
    Ready(Bytes),
    Pending(BlockFut),
}

impl Block {
    async fn get(self) -> Result<Bytes, ReadError> {
        match self {
            Block::Ready(b) => Ok(b),
            Block::Pending(f) => f.await,
        }
    }
}

/// The read path shared by all open files.
pub struct Reader {
    api: Arc<dyn BaseSpaceApi>,
    cache: BlockCache,
    urls: Mutex<HashMap<String, (String, Option<SystemTime>)>>,
    /// Blocks being fetched, each with the id of the part fetching it.
    inflight: Mutex<HashMap<BlockKey, (u64, BlockFut)>>,
    next_part: AtomicU64,
    conns: Arc<Semaphore>,
    /// Bytes that fetches may hold at once, in [`MEM_UNIT`]s: half the budget.
    mem: Arc<Semaphore>,
    mem_units: usize,
    pool: Arc<BufPool>,
    disk: Option<Arc<DiskCache>>,
    /// Handles reading sequentially now: they share the cache for what they prefetch.
    prefetching: Arc<AtomicU64>,
    pub stats: ReadStats,
}

/// Per-open-file state: where the reader is and how far ahead we fetch.
#[derive(Debug)]
pub struct Handle {
    pub file: RemoteFile,
    key_file: Arc<str>,
    key_version: Arc<str>,
    state: Mutex<HandleState>,
    verify: Mutex<Option<Verifier>>,
}

/// Largest out-of-order backlog kept while hashing a sequential read; beyond it the handle
/// gives up verifying (the read itself goes on).
const VERIFY_BACKLOG: u64 = 64 << 20;

/// md5 of a whole file read sequentially, checked against a plain (single-part) S3 ETag.
/// Reads may complete out of order (the kernel issues readahead concurrently), so pieces
/// ahead of the hash position wait in a small backlog.
struct Verifier {
    expected: [u8; 16],
    hasher: md5::Md5,
    pos: u64,
    pending: std::collections::BTreeMap<u64, Bytes>,
    pending_bytes: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("pos", &self.pos).finish()
    }
}

/// The md5 a version string promises, if it is a plain 32-hex-digit ETag.
fn plain_md5(version: &str) -> Option<[u8; 16]> {
    let v = version.trim_matches('"');
    let mut out = [0u8; 16];
    (v.len() == 32).then_some(())?;
    hex::decode_to_slice(v, &mut out).ok()?;
    Some(out)
}

enum Verdict {
    Pending,
    Abandoned,
    Good,
    Bad(String),
}

impl Verifier {
    fn feed(&mut self, offset: u64, data: &Bytes, size: u64) -> Verdict {
        use md5::Digest;
        if offset > self.pos {
            self.pending_bytes += data.len() as u64;
            self.pending.insert(offset, data.clone());
            if self.pending_bytes > VERIFY_BACKLOG {
                return Verdict::Abandoned;
            }
            return Verdict::Pending;
        }
        let mut cur = Some((offset, data.clone()));
        while let Some((off, d)) = cur.take() {
            let end = off + d.len() as u64;
            if end > self.pos {
                self.hasher.update(&d[(self.pos - off) as usize..]);
                self.pos = end;
            }
            if let Some((&k, _)) = self.pending.first_key_value() {
                if k <= self.pos {
                    let (k, v) = self.pending.pop_first().expect("non-empty");
                    self.pending_bytes -= v.len() as u64;
                    cur = Some((k, v));
                }
            }
        }
        if self.pos < size {
            return Verdict::Pending;
        }
        let got: [u8; 16] = self.hasher.clone().finalize().into();
        if got == self.expected {
            Verdict::Good
        } else {
            Verdict::Bad(hex::encode(got))
        }
    }
}

#[derive(Debug, Default)]
struct HandleState {
    /// End of the last read; `None` before the first.
    next: Option<u64>,
    window: u64,
    /// Prefetch has been started up to this block (exclusive).
    prefetched_to: u64,
    /// Prefetch parts started by this handle and maybe still running: blocks `[first, end)`.
    prefetches: Vec<(u64, u64, tokio::task::AbortHandle)>,
    /// Present while this handle reads sequentially: counts it among the prefetching handles.
    prefetching: Option<Prefetching>,
}

/// One handle's share of [`Reader::prefetching`], given back when dropped.
#[derive(Debug)]
struct Prefetching(Arc<AtomicU64>);

impl Prefetching {
    fn join(count: &Arc<AtomicU64>) -> Prefetching {
        count.fetch_add(1, Ordering::Relaxed);
        Prefetching(count.clone())
    }
}

impl Drop for Prefetching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl HandleState {
    /// Cancels the prefetches that do not cover blocks `keep` (`[b0, b1]`).
    fn cancel_prefetches(&mut self, keep: Option<(u64, u64)>) {
        self.prefetches.retain(|(first, end, task)| {
            if task.is_finished() {
                return false;
            }
            if keep.is_some_and(|(b0, b1)| *first <= b1 && b0 < *end) {
                return true;
            }
            task.abort();
            false
        });
    }
}

/// A closed file's prefetches are of no use to anyone.
impl Drop for Handle {
    fn drop(&mut self) {
        self.state.get_mut().cancel_prefetches(None);
    }
}

impl Handle {
    pub fn new(file: RemoteFile) -> Self {
        let key_file = Arc::from(file.id.as_str());
        let key_version = Arc::from(file.version.as_str());
        let verify = plain_md5(&file.version)
            .filter(|_| file.size > 0)
            .map(|expected| Verifier {
                expected,
                hasher: md5::Digest::new(),
                pos: 0,
                pending: Default::default(),
                pending_bytes: 0,
            });
        Handle {
            file,
            key_file,
            key_version,
            state: Mutex::new(HandleState::default()),
            verify: Mutex::new(verify),
        }
    }
    fn key(&self, index: u64) -> BlockKey {
        BlockKey {
            file: self.key_file.clone(),
            version: self.key_version.clone(),
            index,
        }
    }
}

/// Cleans up after a part however its task ends (done, failed or cancelled by a seek):
/// its blocks leave the in-flight map, its reserved bytes leave the budget.
struct PartGuard {
    reader: Arc<Reader>,
    keys: Vec<BlockKey>,
    part_id: u64,
    reserved: u64,
    tx: Option<tokio::sync::oneshot::Sender<Result<Arc<[Bytes]>, ReadError>>>,
}

impl PartGuard {
    /// Cleans up, then hands the result to whoever waits.
    fn finish(mut self, res: Result<Arc<[Bytes]>, ReadError>) {
        let tx = self.tx.take();
        drop(self);
        if let Some(tx) = tx {
            let _ = tx.send(res);
        }
    }
}

impl Drop for PartGuard {
    // `tx`, if still here (cancelled), drops after this body: waiters wake to a clean state.
    fn drop(&mut self) {
        if self.tx.is_some() {
            self.reader.stats.prefetch_cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.reader.cache.release(self.reserved);
        let mut inflight = self.reader.inflight.lock();
        for k in &self.keys {
            // Only our own entry: a cancelled part's blocks may already be fetched anew.
            if inflight.get(k).is_some_and(|(id, _)| *id == self.part_id) {
                inflight.remove(k);
            }
        }
    }
}

impl Reader {
    pub fn new(api: Arc<dyn BaseSpaceApi>, opts: ReadOptions) -> Arc<Self> {
        let budget = opts.cache_bytes.max(2 * PART_BLOCKS * BLOCK_SIZE);
        let cache = BlockCache {
            lru: Mutex::new((lru::LruCache::unbounded(), 0)),
            budget,
            inflight: AtomicU64::new(0),
        };
        let mem_units = (budget / 2 / MEM_UNIT) as usize;
        Arc::new(Reader {
            api,
            cache,
            urls: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            next_part: AtomicU64::new(0),
            conns: Arc::new(Semaphore::new(opts.max_connections.max(1))),
            mem: Arc::new(Semaphore::new(mem_units)),
            mem_units,
            pool: BufPool::new(BLOCK_SIZE as usize, POOL_BLOCKS.min(budget / 8 / BLOCK_SIZE) as usize),
            disk: opts.disk,
            prefetching: Arc::new(AtomicU64::new(0)),
            stats: ReadStats::default(),
        })
    }

    /// Largest window a sequential handle may have now: [`MAX_WINDOW_BLOCKS`], or less when
    /// many handles prefetch at once, so that together they prefetch at most half the cache.
    /// Beyond that, blocks fetched for one reader are evicted for another before being read,
    /// and fetched twice (16 readers over-fetched 50% before this).
    fn window_cap(&self) -> u64 {
        let share = self.cache.budget / BLOCK_SIZE / 2 / self.prefetching.load(Ordering::Relaxed).max(1);
        share.clamp(1, MAX_WINDOW_BLOCKS)
    }

    /// The persistent tier, if mounted with one.
    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    /// Bytes currently held by the block cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.bytes()
    }

    /// Blocks currently being fetched (0 when idle: nothing is left behind).
    pub fn inflight_blocks(&self) -> usize {
        self.inflight.lock().len()
    }

    /// Bytes fetches hold memory permits for (0 when idle).
    pub fn permits_held_bytes(&self) -> u64 {
        (self.mem_units - self.mem.available_permits()) as u64 * MEM_UNIT
    }

    /// Bytes reserved by fetches in progress.
    pub fn inflight_bytes(&self) -> u64 {
        self.cache.inflight.load(Ordering::Relaxed)
    }

    /// Reads up to `size` bytes at `offset`: fewer only at end of file.
    pub async fn read(self: &Arc<Self>, h: &Handle, offset: u64, size: u32) -> Result<Bytes, ReadError> {
        let fsize = h.file.size;
        if offset >= fsize || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + size as u64).min(fsize);
        let (b0, b1) = (offset / BLOCK_SIZE, (end - 1) / BLOCK_SIZE);
        let last_block = (fsize - 1) / BLOCK_SIZE;
        // Sequential? Then grow the window and decide what to prefetch.
        let (prefetch, sequential) = {
            let mut st = h.state.lock();
            let sequential = st
                .next
                .is_some_and(|n| offset + SEQ_TOLERANCE >= n && offset <= n + SEQ_TOLERANCE);
            if sequential {
                if st.prefetching.is_none() {
                    st.prefetching = Some(Prefetching::join(&self.prefetching));
                }
                st.window = if st.window == 0 {
                    INITIAL_WINDOW_BLOCKS
                } else {
                    st.window * 2
                }
                .min(self.window_cap());
            } else {
                st.window = 0;
                st.prefetched_to = 0;
                st.prefetching = None;
                // A seek: what was prefetched for the old position is no longer useful.
                st.cancel_prefetches(Some((b0, b1)));
            }
            st.next = Some(st.next.map_or(end, |n| if sequential { n.max(end) } else { end }));
            let from = st.prefetched_to.max(b1 + 1);
            let to = (b1 + 1 + st.window).min(last_block + 1);
            // Whole parts only: a window sliding one block per read would otherwise send
            // a 1 MiB request per read, paying a round trip for each.
            let worth = from < to && (to - from >= PART_BLOCKS.min(st.window) || to == last_block + 1);
            if st.window > 0 && worth {
                st.prefetched_to = to;
                (Some((from, to)), sequential)
            } else {
                (None, sequential)
            }
        };
        let part = if prefetch.is_some() { PART_BLOCKS } else { 1 };
        let (needed, _) = self.blocks(h, b0, b1 + 1, part, false);
        if let Some((from, to)) = prefetch {
            // Started, not awaited. What did not fit in memory is tried again on the next read.
            let (_, stopped) = self.blocks(h, from, to, PART_BLOCKS, true);
            if let Some(stopped) = stopped {
                let mut st = h.state.lock();
                st.prefetched_to = st.prefetched_to.min(stopped);
            }
        }
        let mut out = BytesMut::with_capacity(if b0 == b1 { 0 } else { (end - offset) as usize });
        let mut single = None;
        for (idx, fut) in needed {
            let block = match fut.get().await {
                // Another handle's prefetch, cancelled under us: fetch it ourselves.
                Err(ReadError::Cancelled) => self.refetch(h, idx).await,
                r => r,
            };
            let block = block.inspect_err(|e| {
                self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %h.file.id, offset, size, error = %e, "read failed");
            })?;
            let bstart = idx * BLOCK_SIZE;
            let lo = offset.max(bstart) - bstart;
            let hi = end.min(bstart + block.len() as u64) - bstart;
            if lo > hi || hi as usize > block.len() {
                return Err(ReadError::Internal(format!(
                    "block {idx} of file {} is {} bytes",
                    h.file.id,
                    block.len()
                )));
            }
            // Within one block (the kernel's aligned 1 MiB reads): the block's own bytes,
            // no copy.
            if b0 == b1 {
                single = Some(block.slice(lo as usize..hi as usize));
                break;
            }
            out.extend_from_slice(&block[lo as usize..hi as usize]);
        }
        let out = single.unwrap_or_else(|| out.freeze());
        if out.len() as u64 != end - offset {
            return Err(ReadError::Internal(format!(
                "assembled {} bytes, wanted {}",
                out.len(),
                end - offset
            )));
        }
        self.check(h, offset, &out)?;
        if sequential {
            // Read through: the page cache has these bytes now, and the blocks prefetched
            // ahead (for this and other readers) are worth more than the ones behind.
            let done = if end == fsize { b1 + 1 } else { end / BLOCK_SIZE };
            self.cache.demote((b0..done).map(|i| h.key(i)));
        }
        Ok(out)
    }

    /// Block `idx` again after the fetch it joined was cancelled.
    async fn refetch(self: &Arc<Self>, h: &Handle, idx: u64) -> Result<Bytes, ReadError> {
        for _ in 0..3 {
            let (mut v, _) = self.blocks(h, idx, idx + 1, 1, false);
            let Some((_, b)) = v.pop() else { break };
            match b.get().await {
                Err(ReadError::Cancelled) => continue,
                r => return r,
            }
        }
        Err(ReadError::Internal(format!(
            "block {idx} of file {}: fetch cancelled repeatedly",
            h.file.id
        )))
    }

    /// Feeds a sequential handle's hash; at end of file a wrong md5 fails the read and
    /// drops the file's cached blocks, so a retry fetches afresh.
    fn check(&self, h: &Handle, offset: u64, data: &Bytes) -> Result<(), ReadError> {
        let mut g = h.verify.lock();
        let Some(v) = g.as_mut() else { return Ok(()) };
        match v.feed(offset, data, h.file.size) {
            Verdict::Pending => Ok(()),
            Verdict::Abandoned => {
                *g = None;
                Ok(())
            }
            Verdict::Good => {
                self.stats.files_verified.fetch_add(1, Ordering::Relaxed);
                *g = None;
                Ok(())
            }
            Verdict::Bad(got) => {
                *g = None;
                self.purge(&h.key_file);
                self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                let e = ReadError::Corrupt {
                    file: h.file.id.clone(),
                    expected: h.file.version.clone(),
                    got,
                };
                tracing::error!(error = %e, "checksum mismatch");
                Err(e)
            }
        }
    }

    /// Drops every cached block of a file.
    fn purge(&self, file: &Arc<str>) {
        let mut g = self.cache.lru.lock();
        let (lru, bytes) = &mut *g;
        let keys: Vec<BlockKey> = lru
            .iter()
            .filter(|(k, _)| &k.file == file)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(b) = lru.pop(&k) {
                *bytes -= b.len() as u64;
            }
        }
    }

    /// Futures for blocks `[from, to)`: cached, in flight, or newly started in parts of up
    /// to `part` blocks.
    ///
    /// A demand read waits for memory; a prefetch (`prefetch = true`) starts only the parts
    /// that fit now and returns where it stopped, so the window never outgrows the budget.
    fn blocks(
        self: &Arc<Self>,
        h: &Handle,
        from: u64,
        to: u64,
        part: u64,
        prefetch: bool,
    ) -> (Vec<(u64, Block)>, Option<u64>) {
        let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
        let mut missing: Vec<u64> = Vec::new();
        {
            let inflight = self.inflight.lock();
            for i in from..to {
                let k = h.key(i);
                if let Some(b) = self.cache.get(&k) {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    out.push((i, Block::Ready(b)));
                } else if let Some((_, f)) = inflight.get(&k) {
                    self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                    out.push((i, Block::Pending(f.clone())));
                } else {
                    self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
                    missing.push(i);
                }
            }
        }
        // Group consecutive missing blocks into parts, each read wholly from the disk
        // cache or wholly from the network.
        let mut groups: Vec<(u64, u64, bool)> = Vec::new();
        for i in missing {
            let on_disk = self
                .disk
                .as_ref()
                .is_some_and(|d| d.contains(&disk::block_key(&h.file.id, &h.file.version, i)));
            match groups.last_mut() {
                Some((s, n, d)) if *s + *n == i && *n < part && *d == on_disk => *n += 1,
                _ => groups.push((i, 1, on_disk)),
            }
        }
        let mut stopped = None;
        for (first, n, on_disk) in groups {
            let permit = if prefetch {
                match self.mem.clone().try_acquire_many_owned(self.units(h, first, n)) {
                    Ok(p) => Some(p),
                    Err(_) => {
                        stopped = Some(first);
                        break;
                    }
                }
            } else {
                None
            };
            let (futs, task) = self.start_part(h, first, n, on_disk, permit);
            if prefetch {
                let mut st = h.state.lock();
                // Only running parts are kept: a long sequential read starts thousands.
                st.prefetches.retain(|(_, _, t)| !t.is_finished());
                st.prefetches.push((first, first + n, task));
            }
            out.extend(futs.into_iter().map(|(i, f)| (i, Block::Pending(f))));
        }
        out.sort_by_key(|(i, _)| *i);
        (out, stopped)
    }

    /// Memory units a part of `n` blocks at `first` needs.
    fn units(&self, h: &Handle, first: u64, n: u64) -> u32 {
        let len = (n * BLOCK_SIZE).min(h.file.size.saturating_sub(first * BLOCK_SIZE));
        len.div_ceil(MEM_UNIT) as u32
    }

    fn start_part(
        self: &Arc<Self>,
        h: &Handle,
        first: u64,
        n: u64,
        on_disk: bool,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> (Vec<(u64, BlockFut)>, tokio::task::AbortHandle) {
        let units = self.units(h, first, n);
        let keys: Vec<BlockKey> = (first..first + n).map(|i| h.key(i)).collect();
        let part_id = self.next_part.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        // The sender goes with the task: a task dropped unfinished (cancelled) drops it,
        // and everyone waiting sees Cancelled, after the guard has cleaned up.
        let part: PartFut = async move { rx.await.unwrap_or(Err(ReadError::Cancelled)) }
            .boxed()
            .shared();
        let mut out = Vec::with_capacity(n as usize);
        {
            let mut inflight = self.inflight.lock();
            for (j, k) in keys.iter().enumerate() {
                let p = part.clone();
                let f: BlockFut = async move {
                    let blocks = p.await?;
                    blocks
                        .get(j)
                        .cloned()
                        .ok_or_else(|| ReadError::Internal(format!("part has {} blocks, not {}", blocks.len(), j + 1)))
                }
                .boxed()
                .shared();
                inflight.insert(k.clone(), (part_id, f.clone()));
                out.push((first + j as u64, f));
            }
        }
        // Registered before the task exists, so it cannot finish and deregister first.
        let mut guard = PartGuard {
            reader: self.clone(),
            keys,
            part_id,
            reserved: 0,
            tx: Some(tx),
        };
        let me = self.clone();
        let file = h.file.clone();
        let task = tokio::spawn(async move {
            let res = async {
                // Memory first (demand reads wait here), then the bytes are reserved in the cache.
                let permit = match permit {
                    Some(p) => p,
                    None => me
                        .mem
                        .clone()
                        .acquire_many_owned(units)
                        .await
                        .map_err(|e| ReadError::Internal(format!("memory limiter closed: {e}")))?,
                };
                guard.reserved = units as u64 * MEM_UNIT;
                me.cache.reserve(guard.reserved);
                let cached = match on_disk {
                    true => me.load_part(&file, first, n).await,
                    false => None,
                };
                let blocks = match cached {
                    Some(b) => b,
                    None => {
                        let b = me.fetch_part(&file, first, n).await?;
                        if let Some(d) = &me.disk {
                            for (j, x) in b.iter().enumerate() {
                                d.store(disk::block_key(&file.id, &file.version, first + j as u64), x.clone());
                            }
                        }
                        b
                    }
                };
                for (k, b) in guard.keys.iter().zip(blocks.iter()) {
                    me.cache.put(k.clone(), b.clone());
                }
                drop(permit);
                Ok(Arc::<[Bytes]>::from(blocks))
            }
            .await;
            guard.finish(res);
        });
        (out, task.abort_handle())
    }

    /// Blocks `[first, first+n)` from the disk cache, or `None` if any is missing or fails
    /// its checks (the part is then fetched from the network).
    async fn load_part(self: &Arc<Self>, file: &RemoteFile, first: u64, n: u64) -> Option<Vec<Bytes>> {
        let disk = self.disk.clone()?;
        let pool = self.pool.clone();
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            (first..first + n)
                .map(|i| {
                    let len = BLOCK_SIZE.min(file.size - i * BLOCK_SIZE) as usize;
                    disk.load(&disk::block_key(&file.id, &file.version, i), len, &pool)
                })
                .collect()
        })
        .await
        .ok()
        .flatten()
    }

    /// One ranged GET for blocks `[first, first+n)`, renewing the URL once if it expired.
    async fn fetch_part(&self, file: &RemoteFile, first: u64, n: u64) -> Result<Vec<Bytes>, ReadError> {
        let start = first * BLOCK_SIZE;
        let len = (n * BLOCK_SIZE).min(file.size - start);
        let _permit = self
            .conns
            .acquire()
            .await
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        // A whole file in one GET is checked against a plain-md5 ETag right away.
        let expected = plain_md5(&file.version).filter(|_| start == 0 && len == file.size);
        let (mut renewals, mut corrupt) = (0, 0);
        loop {
            let url = self.url(&file.id, renewals > 0).await?;
            let pool = self.pool.clone();
            let pieces = Pieces {
                size: BLOCK_SIZE as usize,
                alloc: Arc::new(move |want| pool.take(want)),
            };
            match self.api.get_range(&url, start, len, pieces).await {
                Ok(bufs) => {
                    let b: Vec<Bytes> = bufs.into_iter().map(|v| self.pool.freeze(v)).collect();
                    let got_len: u64 = b.iter().map(|x| x.len() as u64).sum();
                    if b.len() as u64 != n || got_len != len {
                        return Err(ReadError::Internal(format!(
                            "asked {n} blocks ({len} bytes), got {} ({got_len} bytes)",
                            b.len()
                        )));
                    }
                    self.stats.parts_fetched.fetch_add(1, Ordering::Relaxed);
                    self.stats.bytes_fetched.fetch_add(len, Ordering::Relaxed);
                    if let Some(exp) = expected {
                        use md5::Digest;
                        let mut hasher = md5::Md5::new();
                        b.iter().for_each(|x| hasher.update(x));
                        let got: [u8; 16] = hasher.finalize().into();
                        if got != exp {
                            self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                            corrupt += 1;
                            if corrupt < 2 {
                                continue;
                            }
                            let (expected, got) = (hex::encode(exp), hex::encode(got));
                            return Err(ReadError::Corrupt {
                                file: file.id.clone(),
                                expected,
                                got,
                            });
                        }
                        self.stats.files_verified.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(b);
                }
                // Expired (or about to be, when retries took long): renew and go on.
                Err(ApiError::UrlExpired) if renewals < MAX_URL_RENEWALS => {
                    tracing::info!(file = %file.id, "presigned URL refused; renewing");
                    self.stats.url_renewals.fetch_add(1, Ordering::Relaxed);
                    renewals += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The presigned URL of a file, resolved on first use and kept until shortly before it
    /// expires (`force` re-resolves).
    async fn url(&self, file_id: &str, force: bool) -> Result<String, ReadError> {
        if !force {
            if let Some((u, renew_at)) = self.urls.lock().get(file_id) {
                if renew_at.is_none_or(|r| r > SystemTime::now()) {
                    return Ok(u.clone());
                }
            }
        }
        let meta = self.api.content_meta(file_id).await?;
        let now = SystemTime::now();
        let renew_at = meta.expiry().map(|exp| {
            let life = exp.duration_since(now).unwrap_or_default();
            exp - URL_MARGIN.min(life / 2)
        });
        self.urls
            .lock()
            .insert(file_id.to_string(), (meta.href_content.clone(), renew_at));
        Ok(meta.href_content)
    }
}
