//! Reading file bytes, in layers that a read walks down and never back up:
//!
//! 1. [`prefetch`]: the handle's policy. Is it sequential, what to fetch ahead.
//! 2. [`cache`]: the levels. Memory ([`cache::MemoryCache`], an LRU whose byte budget
//!    includes fetches in flight), then each [`cache::CacheLevel`] below (the local disk
//!    tier [`disk`]; later a directory shared by many hosts).
//! 3. [`source`]: presigned URLs and ranged GETs of the exact version listed.
//!
//! Files are cut into fixed [`BLOCK_SIZE`] blocks keyed by (file id, version, index). A
//! read fetches only the blocks it touches, so random access (samtools, tabix, IGV) costs
//! one small round trip; a sequential handle prefetches ahead in parts of up to
//! [`PART_BLOCKS`] blocks under one global connection limit. Blocks being fetched are
//! shared, so two readers of the same bytes cause one request.
//!
//! Bytes are never guessed: every body is checked (status, Content-Range, length, ETag),
//! a whole file read in order is checked against its ETag ([`verify`]), and a handle that
//! saw wrong or changed bytes fails every later read (EIO, or ESTALE for a file replaced
//! on BaseSpace) with nothing wrong left in any cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::api::{ApiError, BaseSpaceApi};
use crate::tree::walk::{Next, WalkPos};
use crate::tree::RemoteFile;

pub mod across;
pub mod cache;
pub mod disk;
mod lanes;
mod pool;
pub mod prefetch;
pub mod shared;
pub mod source;
pub mod verify;
pub mod whole;
use cache::{BlockKey, CacheLevel, MemoryCache, ObjectId};
use pool::BufPool;
use source::ContentSource;
use verify::{Background, Verdict, Verifier};

/// Cache granularity: large enough to keep request counts sane, small enough that a 4 KiB
/// random read fetches at most 1 MiB (plus one more block if it straddles a boundary).
pub const BLOCK_SIZE: u64 = 1 << 20;
/// Reads smaller than this by a program copying around the page cache ([`Reader::ahead`])
/// send the walk's further files back through it: each such read is a round trip through
/// the mount, which kernel readahead would have gathered into megabyte requests (`tar`
/// reads 10 KiB at a time, `md5sum` 32 KiB; `cp` and `cat` read `st_blksize`, 512 KiB).
pub const STREAM_MIN_READ: u64 = 128 << 10;
/// Smaller files of a copy go through the page cache all the same: a read or two each,
/// where its per-byte cost is small and its answer to the read at the end of the file
/// (from the size it knows, without a request) saves a round trip.
pub const STREAM_MIN_SIZE: u64 = BLOCK_SIZE;
/// A read at the start of a file of at most this many blocks fetches the whole file in one
/// GET: the kernel's readahead asks for it a block at a time, the second only once the
/// first is read (two round trips one after the other for a 2 MiB FASTQ), and a read
/// from a file's start nearly always goes on to its end. At most one block more than
/// asked for a read that stops early (a header).
const WHOLE_AT_START: u64 = 2;
/// Blocks per ranged GET when prefetching: 8 MiB, the size mountpoint-s3 found to reach full
/// throughput per connection.
pub const PART_BLOCKS: u64 = 8;
/// Largest prefetch window per handle (128 MiB): with 8 MiB parts that is 16 ranged GETs in
/// flight, enough to fill a link of 100 MB/s per connection (64 MiB capped a cold `cat` at
/// ~500 MB/s on the benchmark's emulated link).
pub const MAX_WINDOW_BLOCKS: u64 = 128;
/// Free block buffers kept for reuse, at most (and at most an eighth of the budget: 64 with
/// the default 512 MiB). A copy of 64 MiB files hands back a file's 64 blocks at each close
/// (drop-behind) and needs as many for the file fetched next: with 32 kept, most were fresh
/// allocations, faulted in and zeroed page by page (12% of the mount's CPU in `perf`). They
/// are mostly what the cache just let go; a quarter of a 64 MiB budget took a load test's
/// peak RSS past the bound it was then held to (the cache + 64 MiB).
const POOL_BLOCKS: u64 = 128;
/// A read away from the handle's position asking at most this much, of blocks nobody
/// has, fetches only around itself ([`Reader::read_small`]): a 4 KiB random read (an index
/// lookup, a BAM region) then costs one round trip and a few KiB, not a 1 MiB block.
const SMALL_READ: u64 = 256 << 10;
/// What such a read is widened to: a BGZF block (BAM, VCF.gz, tabix) is at most 64 KiB,
/// so a reader that decodes one finds the rest of it in the same GET.
const SMALL_UNIT: u64 = 64 << 10;
/// Granularity of in-flight memory accounting.
const MEM_UNIT: u64 = 64 << 10;
/// How long a failed read is remembered: the kernel re-issues a failed readahead at once
/// as a synchronous read of the same pages, which then fails at once instead of waiting
/// out the I/O timeout a second time.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);
/// Files whose last failure is remembered across handles (a few hundred bytes each).
const FAILURES_KEPT: usize = 1024;
/// How long the read that completes a file waits for the hash of the bytes before it
/// (they are normally in flight with it); past this it is delivered unverified.
const FINAL_VERDICT_WAIT: Duration = Duration::from_secs(20);
/// File versions remembered as verified whole (their pages may stay in the kernel's cache
/// across opens).
const VERIFIED_KEPT: usize = 65_536;

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
            ReadError::Api(ApiError::Changed { .. }) => libc::ESTALE,
            _ => libc::EIO,
        }
    }

    /// Errors that stay with the handle: its bytes are wrong or of another version.
    fn is_sticky(&self) -> bool {
        matches!(
            self,
            ReadError::Corrupt { .. } | ReadError::Api(ApiError::Changed { .. })
        )
    }
}

#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Byte budget of the block cache.
    pub cache_bytes: u64,
    /// Ranged GETs in flight at once, over all files.
    pub max_connections: usize,
    /// The persistent tier under `--cache-dir`, if any.
    pub disk: Option<Arc<disk::DiskCache>>,
    /// The level shared by many hosts under `--shared-cache-dir`, if any (below `disk`).
    pub shared: Option<Arc<shared::SharedCache>>,
    /// Check whole-file reads against their ETags ([`verify`]).
    pub verify: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            cache_bytes: 512 << 20,
            max_connections: 32,
            disk: None,
            shared: None,
            verify: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Coverage;

    #[test]
    fn coverage_counts_delivered_and_in_flight_ranges() {
        let mut c = Coverage::default();
        let a = c.begin(0, 10);
        let b = c.begin(10, 20);
        assert!(c.covers(20), "in flight counts");
        c.end(a, true);
        c.end(b, false);
        assert!(!c.covers(20), "a failed read leaves a gap");
        let b = c.begin(10, 20);
        c.end(b, true);
        assert!(c.covers(20));
        assert_eq!(c.fed.len(), 1, "merged");
        let mut gap = Coverage::default();
        let x = gap.begin(5, 20);
        gap.end(x, true);
        assert!(
            !gap.covers(20),
            "bytes served from the page cache never reached this handle"
        );
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
    /// Files whose bytes were fetched ahead of their open ([`across`]).
    pub files_ahead: AtomicU64,
    /// Small random reads served by a GET of their own ([`Reader::read_small`]).
    pub small_fetches: AtomicU64,
    /// Opens of a copy read around the kernel's page cache ([`Reader::ahead`]).
    pub streamed_opens: AtomicU64,
    /// Parts of files fetched ahead hashed as they landed ([`verify::hash_part`]), and
    /// those whose digest a reader took (it hashes the others itself).
    pub parts_hashed_ahead: AtomicU64,
    pub part_digests_taken: AtomicU64,
}

/// File versions verified whole, shared by the reader and the source.
pub(crate) type Verified = Arc<Mutex<lru::LruCache<ObjectId, ()>>>;

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
    memory: Arc<MemoryCache>,
    /// Cache levels below memory, fastest first.
    levels: Vec<Arc<dyn CacheLevel>>,
    disk: Option<Arc<disk::DiskCache>>,
    source: ContentSource,
    /// Blocks being fetched, each with the id of the part fetching it.
    inflight: Mutex<HashMap<BlockKey, (u64, BlockFut)>>,
    next_part: AtomicU64,
    /// Bytes that fetches may hold at once, in [`MEM_UNIT`]s: half the budget.
    mem: Arc<Semaphore>,
    mem_units: usize,
    pool: Arc<BufPool>,
    /// Handles reading sequentially now: they share the cache for what they prefetch.
    prefetching: Arc<AtomicU64>,
    /// The files read last were read to their end (set at a read of a file's last bytes,
    /// cleared when a handle closes short of it): files ahead of a walk are fetched whole
    /// ([`across::WHOLE_BYTES`]).
    reading_whole: std::sync::atomic::AtomicBool,
    /// A handle opened around the page cache was read in pieces under [`STREAM_MIN_READ`]
    /// (`tar`, `md5sum`): each piece is then a round trip through the mount, so the walk's
    /// further files go through the page cache again. Cleared when a walk starts.
    small_streams: std::sync::atomic::AtomicBool,
    /// File versions whose bytes were verified whole (by a reading handle, or by the source
    /// when it fetched a small file in one GET).
    verified: Verified,
    /// Of those, the ones a copy read last around the page cache: the kernel holds no
    /// pages of them, so a walk fetches them ahead again.
    unpaged: Mutex<lru::LruCache<ObjectId, ()>>,
    verify: bool,
    shared: Option<Arc<shared::SharedCache>>,
    /// Runs of files opened in walk order, per walk.
    across: across::Runs,
    /// Blocks whose read failed a moment ago, over every handle: other opens of the file made
    /// before the failure (readers the kernel held on the same pages) fail at once, each
    /// within one --io-timeout of its own start, instead of a fresh wait one after another.
    failed: Mutex<lru::LruCache<ObjectId, Failure>>,
    pub stats: Arc<ReadStats>,
}

/// Per-open-file state: where the reader is and how far ahead we fetch.
#[derive(Debug)]
pub struct Handle {
    pub file: RemoteFile,
    object: ObjectId,
    window: Mutex<prefetch::Window>,
    verify: Mutex<Verify>,
    coverage: Mutex<Coverage>,
    failure: Mutex<Option<Failure>>,
    /// The bytes of this handle's last small read ([`Reader::read_small`]) and where they
    /// start: the reads right after it (the rest of a BGZF block) are served from them.
    small: Mutex<Option<(u64, Bytes)>>,
    /// The second pass of a multipart check ([`Verdict::Recheck`]), run once for all the
    /// reads that wait on it.
    rechecked: tokio::sync::OnceCell<Verdict>,
    /// When it was opened: a failure by another handle after this counts for it too.
    opened: Instant,
    /// Opened around the page cache as part of a copy ([`Reader::ahead`]): its reads are
    /// the program's own, sequential from the first.
    streamed: bool,
    /// Its walk and position in it, if opened in one: a read to its end is told to the walk's
    /// run ([`across::Runs::read_to_end`]).
    walk: Option<(u64, Box<[u32]>)>,
    /// Fetched ahead of a walk ([`Reader::ahead`]): its whole parts are hashed as they land.
    walk_ahead: bool,
}

/// Which bytes of a file a handle has handed out, and which reads are under way: the read
/// that completes the file waits for the hash only if together they cover it
/// (pages the kernel served from its cache, filled through another handle, never reach
/// this one, and then no verdict can come).
#[derive(Debug, Default)]
struct Coverage {
    /// Delivered ranges, merged: start → end.
    fed: std::collections::BTreeMap<u64, u64>,
    inflight: HashMap<u64, (u64, u64)>,
    next_id: u64,
}

/// Ranges tracked per handle at most (random readers fragment them); beyond it the handle
/// no longer waits for verdicts.
const COVERAGE_RANGES: usize = 4096;

impl Coverage {
    fn begin(&mut self, start: u64, end: u64) -> u64 {
        self.next_id += 1;
        self.inflight.insert(self.next_id, (start, end));
        self.next_id
    }

    fn end(&mut self, id: u64, fed: bool) {
        let Some((mut s, mut e)) = self.inflight.remove(&id) else {
            return;
        };
        if !fed || self.fed.len() >= COVERAGE_RANGES {
            return;
        }
        // Merge with every range it touches.
        let touching: Vec<u64> = self
            .fed
            .range(..=e)
            .filter(|(_, end)| **end >= s)
            .map(|(start, _)| *start)
            .collect();
        for k in touching {
            let end = self.fed.remove(&k).expect("present");
            s = s.min(k);
            e = e.max(end);
        }
        self.fed.insert(s, e);
    }

    /// Whether delivered and in-flight ranges together cover `[0, size)`.
    fn covers(&self, size: u64) -> bool {
        let mut all: Vec<(u64, u64)> = self.fed.iter().map(|(s, e)| (*s, *e)).collect();
        all.extend(self.inflight.values().copied());
        all.sort_unstable();
        let mut reach = 0;
        for (s, e) in all {
            if s > reach {
                return false;
            }
            reach = reach.max(e);
        }
        reach >= size
    }
}

/// A handle's verification: not started, hashing on its own thread, or over.
#[derive(Debug)]
enum Verify {
    Ready(Box<Verifier>),
    Running(Arc<Background>),
    Off,
}

/// A read of this handle that failed.
#[derive(Debug)]
struct Failure {
    error: ReadError,
    at: Instant,
    blocks: (u64, u64),
}

/// A closed file's prefetches are of no use to anyone.
impl Drop for Handle {
    fn drop(&mut self) {
        self.window.get_mut().cancel(None);
    }
}

impl Handle {
    /// A handle on `file` that verifies whole-file reads when its ETag allows.
    pub fn new(file: RemoteFile) -> Self {
        Handle::with_verify(file, true)
    }

    /// A handle on `file`; `verify = false` never hashes.
    pub fn with_verify(file: RemoteFile, verify: bool) -> Self {
        let object = ObjectId::of(&file);
        let verify = match file.etag().filter(|_| verify).and_then(|e| Verifier::new(e, file.size)) {
            Some(v) => Verify::Ready(Box::new(v)),
            None => Verify::Off,
        };
        Handle {
            file,
            object,
            window: Mutex::new(prefetch::Window::default()),
            verify: Mutex::new(verify),
            coverage: Mutex::new(Coverage::default()),
            failure: Mutex::new(None),
            small: Mutex::new(None),
            rechecked: tokio::sync::OnceCell::new(),
            opened: Instant::now(),
            streamed: false,
            walk_ahead: false,
            walk: None,
        }
    }

    fn key(&self, index: u64) -> BlockKey {
        BlockKey {
            object: self.object.clone(),
            index,
        }
    }

    /// A read of blocks `b0..=b1` that must fail at once: the handle saw wrong or changed
    /// bytes, or these blocks failed a moment ago.
    fn failed(&self, b0: u64, b1: u64) -> Option<ReadError> {
        let f = self.failure.lock();
        let f = f.as_ref()?;
        let recent = f.at.elapsed() < FAILURE_MEMORY && f.blocks.0 <= b1 && b0 <= f.blocks.1;
        (f.error.is_sticky() || recent).then(|| f.error.clone())
    }

    fn record_failure(&self, b0: u64, b1: u64, error: &ReadError) {
        let mut f = self.failure.lock();
        if f.as_ref().is_some_and(|f| f.error.is_sticky()) {
            return;
        }
        *f = Some(Failure {
            error: error.clone(),
            at: Instant::now(),
            blocks: (b0, b1),
        });
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
        self.reader.memory.release(self.reserved);
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
        let mem_units = (budget / 2 / MEM_UNIT) as usize;
        verify::limit_pins(budget);
        let pool = BufPool::new(BLOCK_SIZE as usize, POOL_BLOCKS.min(budget / 8 / BLOCK_SIZE) as usize);
        let stats = Arc::new(ReadStats::default());
        let verified: Verified = Arc::new(Mutex::new(lru::LruCache::new(
            std::num::NonZeroUsize::new(VERIFIED_KEPT).expect("non-zero"),
        )));
        // Fastest first: the local disk, then the directory shared by many hosts.
        let levels: Vec<Arc<dyn CacheLevel>> = opts
            .disk
            .iter()
            .map(|d| Arc::new(d.clone()) as Arc<dyn CacheLevel>)
            .chain(opts.shared.iter().map(|s| Arc::new(s.clone()) as Arc<dyn CacheLevel>))
            .collect();
        Arc::new(Reader {
            memory: Arc::new(MemoryCache::new(budget)),

            levels,
            disk: opts.disk.clone(),
            shared: opts.shared,
            source: ContentSource::new(
                api,
                opts.max_connections,
                pool.clone(),
                stats.clone(),
                opts.verify.then(|| verified.clone()),
                opts.disk.clone().filter(|_| opts.verify),
            ),
            inflight: Mutex::new(HashMap::new()),
            next_part: AtomicU64::new(0),
            mem: Arc::new(Semaphore::new(mem_units)),
            mem_units,
            pool,
            prefetching: Arc::new(AtomicU64::new(0)),
            reading_whole: Default::default(),
            small_streams: Default::default(),
            verified: verified.clone(),
            unpaged: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(VERIFIED_KEPT).expect("non-zero"),
            )),
            verify: opts.verify,
            across: across::Runs::default(),
            failed: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(FAILURES_KEPT).expect("non-zero"),
            )),
            stats,
        })
    }

    /// A listed file at position `walk` was opened: when files are being opened in walk
    /// order, fetches the ones after it ahead of their opens ([`across`]), within a quarter
    /// of the memory budget (the files being read, and other readers, keep the rest): the
    /// next [`across::FILES_FIRST`] at the run's first open, twice as many at each further
    /// one, up to [`across::FILES_AHEAD`] (all 64 at once made the first of them wait for
    /// the bandwidth of the other 63). `next(after, top, n)` gives up to `n` files after a
    /// position (see [`crate::tree::Tree::files_after`]), asked only when fetching ahead.
    /// Needs a tokio runtime.
    ///
    /// Returns whether to open `file` around the kernel's page cache: it continues a copy
    /// (files opened in walk order, the ones before read to their end in pieces of at least
    /// [`STREAM_MIN_READ`]) and is at least [`STREAM_MIN_SIZE`]. Those bytes are read once;
    /// through the page cache each would be copied into fresh pages and out again, and
    /// leave a second copy of everything copied in memory (a cohort copy spent a fifth of
    /// its CPU there).
    pub fn ahead(
        self: &Arc<Self>,
        file: &RemoteFile,
        walk: &WalkPos,
        next: impl Fn(&[u32], usize, usize) -> Next<RemoteFile>,
    ) -> bool {
        let Some(go) = self.across.on_open(walk.key, &walk.at).filter(|g| !g.backward) else {
            return false;
        };
        if go.first {
            self.small_streams.store(false, Ordering::Relaxed);
        }
        let whole = self.reading_whole.load(Ordering::Relaxed);
        let budget = self.memory.budget / if whole { 2 } else { 4 };
        let each = match whole {
            true => across::WHOLE_BYTES,
            false => across::FIRST_BYTES,
        };
        let n = across::files_ahead(go.streak);
        let (mut bytes, mut upto, mut tasks) = (0, None, Vec::new());
        // The file opened too, if no earlier open started it (the run's first, or the first in
        // a directory the run could not reach before): its own window would start at a block
        // and widen a round trip at a time.
        let this = go.fresh.then(|| (walk.at.clone(), file.clone()));
        let mut files = next(&walk.at, go.top, n).items;
        if go.copying && go.top > 0 && files.len() < n {
            // A copy that has only been seen within one directory, at its end: the next
            // directory's first file too (most copies go on there; one that stops has fetched
            // one file more than it read).
            let last = files.last().map_or(walk.at.clone(), |(at, _)| at.clone());
            let more = next(&walk.at, go.top - 1, files.len() + 1).items;
            files.extend(more.into_iter().filter(|(at, _)| *at > last).take(1));
        }
        for (at, f) in this.into_iter().chain(files) {
            let first = f.size.min(each);
            bytes += first;
            if bytes > budget {
                break;
            }
            if !go.beyond(&at) && at != walk.at {
                continue; // started by an earlier open
            }
            let object = ObjectId::of(&f);
            if self.verified_whole(&object) && !self.unpaged.lock().contains(&object) {
                upto = Some(at);
                continue; // the kernel keeps its pages ([`Reader::close`])
            }
            if first > 0 {
                let mut h = Handle::with_verify(f, false);
                h.walk_ahead = true;
                let (_, stopped) = self.blocks(&h, 0, first.div_ceil(BLOCK_SIZE), PART_BLOCKS, true);
                tasks.extend(h.window.lock().take_parts());
                if stopped.is_some() {
                    break; // memory is short: the next open tries again
                }
                self.stats.files_ahead.fetch_add(1, Ordering::Relaxed);
            }
            upto = Some(at);
        }
        self.across
            .started(walk.key, upto.as_deref().unwrap_or(&go.after), tasks);
        whole && file.size >= STREAM_MIN_SIZE && !self.small_streams.load(Ordering::Relaxed)
    }

    /// The connection limit ranged GETs share (listings fetched ahead take from it too).
    pub fn connections(&self) -> Arc<Semaphore> {
        self.source.connections()
    }

    /// Largest window a sequential handle may have now: [`MAX_WINDOW_BLOCKS`], or less when
    /// many handles prefetch at once, so that together they prefetch at most half the cache.
    /// Beyond that, blocks fetched for one reader are evicted for another before being read,
    /// and fetched twice (16 readers over-fetched 50% before this).
    fn window_cap(&self) -> u64 {
        let share = self.memory.budget / BLOCK_SIZE / 2 / self.prefetching.load(Ordering::Relaxed).max(1);
        share.clamp(1, MAX_WINDOW_BLOCKS)
    }

    /// Whether whole reads are hashed (not `--no-verify`).
    pub fn verifies(&self) -> bool {
        self.verify
    }

    /// The persistent tier, if mounted with one.
    pub fn disk(&self) -> Option<&Arc<disk::DiskCache>> {
        self.disk.as_ref()
    }

    /// The level shared by many hosts, if mounted with one.
    pub fn shared(&self) -> Option<&Arc<shared::SharedCache>> {
        self.shared.as_ref()
    }

    /// Bytes currently held by the block cache.
    pub fn cached_bytes(&self) -> u64 {
        self.memory.bytes()
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
        self.memory.inflight_bytes()
    }

    /// The whole verified copy of `file`'s listed version on local disk, opened and pinned
    /// for the kernel to read ([`whole`]); `None` without one, or with `--no-verify`.
    pub fn whole_file(&self, file: &RemoteFile) -> Option<whole::WholeFile> {
        let disk = self.disk.as_ref().filter(|_| self.verify)?;
        disk.open_whole(&ObjectId::of(file), file.size)
    }

    /// A handle for reading `file`, verified as this reader is configured; `streamed`: the
    /// open was answered around the page cache ([`Reader::ahead`]), so no kernel readahead
    /// comes before its reads and its window opens at the first.
    pub fn open(&self, file: RemoteFile, streamed: bool, walk: Option<&WalkPos>) -> Handle {
        let mut h = Handle::with_verify(file, self.verify);
        h.walk = walk.map(|w| (w.key, w.at.clone()));
        if let Verify::Ready(v) = h.verify.get_mut() {
            let (memory, stats, object) = (self.memory.clone(), self.stats.clone(), h.object.clone());
            v.early_from(Arc::new(move |part| {
                let first = BlockKey {
                    object: object.clone(),
                    index: part * PART_BLOCKS,
                };
                let d = memory.take_digest(&first);
                if d.is_some() {
                    stats.part_digests_taken.fetch_add(1, Ordering::Relaxed);
                }
                d
            }));
        }
        if streamed {
            h.streamed = true;
            *h.window.get_mut() = prefetch::Window::from_start();
            self.stats.streamed_opens.fetch_add(1, Ordering::Relaxed);
        }
        h
    }

    /// Whether the kernel may keep this file's pages across opens: only bytes that were
    /// verified whole, or that no ETag could verify anyway. Everything else is read
    /// through the mount again at each open, so a page that turned out wrong never stays.
    pub fn may_keep_cache(&self, file: &RemoteFile) -> bool {
        let verifiable = self.verify && file.etag().is_some_and(|e| Verifier::can_verify(e, file.size));
        !verifiable || self.verified.lock().contains(&ObjectId::of(file))
    }

    /// This version was read whole and verified (the kernel keeps its pages).
    fn verified_whole(&self, object: &ObjectId) -> bool {
        self.verify && self.verified.lock().contains(object)
    }

    /// A handle is closed. Drop-behind: the kernel keeps a verified file's pages across
    /// opens ([`Reader::may_keep_cache`]), so its blocks held here too were the same
    /// memory twice, and a copy streaming many files filled the whole budget with fresh
    /// buffers (a page fault per 4 KiB: a sixth of the mount's CPU in a cohort copy).
    /// Dropped at close, they go back to the pool for the next file.
    ///
    /// A copy's file read around the page cache ([`Reader::ahead`]) is dropped the same:
    /// a copy keeps no second copy in memory (a read of it again fetches it again, or
    /// reads it from `--cache-dir`).
    pub fn close(&self, h: &Handle) {
        if self.verified_whole(&h.object) {
            self.memory.purge(&h.object, h.file.size.div_ceil(BLOCK_SIZE));
        }
        let whole = h.window.lock().reached() == Some(h.file.size);
        if !whole {
            self.reading_whole.store(false, Ordering::Relaxed);
        }
        if h.streamed {
            self.unpaged.lock().put(h.object.clone(), ());
        } else if whole {
            self.unpaged.lock().pop(&h.object);
        }
    }

    /// Reads up to `size` bytes at `offset`: fewer only at end of file.
    pub async fn read(self: &Arc<Self>, h: &Handle, offset: u64, size: u32) -> Result<Bytes, ReadError> {
        let fsize = h.file.size;
        if offset >= fsize || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + size as u64).min(fsize);
        let (b0, b1) = (offset / BLOCK_SIZE, (end - 1) / BLOCK_SIZE);
        if let Some(e) = h.failed(b0, b1).or_else(|| self.failed_lately(h, b0, b1)) {
            return Err(e);
        }
        if offset == 0 {
            self.copy_whole(h);
        }
        if h.streamed && end < fsize && (size as u64) < STREAM_MIN_READ {
            self.small_streams.store(true, Ordering::Relaxed);
        }
        let id = h.coverage.lock().begin(offset, end);
        let r = self.read_blocks(h, offset, end, b0, b1, id).await;
        h.coverage.lock().end(id, false); // a read that failed (or was dropped) delivers nothing
        if let Err(e) = &r {
            self.stats.read_errors.fetch_add(1, Ordering::Relaxed);
            h.record_failure(b0, b1, e);
            if !matches!(e, ReadError::Cancelled) {
                self.failed.lock().put(
                    h.object.clone(),
                    Failure {
                        error: e.clone(),
                        at: Instant::now(),
                        blocks: (b0, b1),
                    },
                );
            }
        }
        r
    }

    /// A failure of these blocks of this version a moment ago, by another handle, after
    /// this one was opened: its reader was (most likely) held by the kernel on the same
    /// pages while that fetch ran, and has waited long enough. A handle opened after the
    /// failure tries afresh (the server may be back).
    fn failed_lately(&self, h: &Handle, b0: u64, b1: u64) -> Option<ReadError> {
        // `peek`: every read asks, and asking must not reorder the LRU under its lock.
        let failed = self.failed.lock();
        let f = failed.peek(&h.object)?;
        (h.opened <= f.at && f.at.elapsed() < FAILURE_MEMORY && f.blocks.0 <= b1 && b0 <= f.blocks.1)
            .then(|| f.error.clone())
    }

    async fn read_blocks(
        self: &Arc<Self>,
        h: &Handle,
        offset: u64,
        end: u64,
        b0: u64,
        b1: u64,
        id: u64,
    ) -> Result<Bytes, ReadError> {
        let fsize = h.file.size;
        let last_block = (fsize - 1) / BLOCK_SIZE;
        let plan = h
            .window
            .lock()
            .on_read(offset, end, b0, b1, last_block, || self.window_cap(), &self.prefetching);
        if plan.sequential && end == fsize {
            // Before its close: the kernel releases a file after the next one is opened.
            self.reading_whole.store(true, Ordering::Relaxed);
        }
        if (plan.sequential || offset == 0) && end == fsize {
            if let Some((key, at)) = &h.walk {
                self.across.read_to_end(*key, at);
            }
        }
        let kept = h.small.lock().as_ref().and_then(|(start, b)| {
            (offset >= *start && end <= start + b.len() as u64)
                .then(|| b.slice((offset - start) as usize..(end - start) as usize))
        });
        if let Some(out) = kept {
            self.check(h, offset, &out, id).await?;
            return Ok(out);
        }
        if !plan.sequential && offset > 0 && end - offset <= SMALL_READ && self.cold(h, b0, b1) {
            return self.read_small(h, offset, end, id).await;
        }
        let part = if plan.prefetch.is_some() { PART_BLOCKS } else { 1 };
        let (needed, _) = if offset == 0 && !plan.sequential && last_block < WHOLE_AT_START {
            // The file's start, and the file is small: all of it in one GET.
            let (mut all, stopped) = self.blocks(h, 0, last_block + 1, PART_BLOCKS, false);
            all.retain(|(i, _)| *i <= b1);
            (all, stopped)
        } else {
            self.blocks(h, b0, b1 + 1, part, false)
        };
        if let Some((from, to)) = plan.prefetch {
            // Started, not awaited. What did not fit in memory is tried again on the next read.
            let (_, stopped) = self.blocks(h, from, to, PART_BLOCKS, true);
            if let Some(stopped) = stopped {
                h.window.lock().stopped_at(stopped);
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
                tracing::error!(file = %h.file.id, offset, size = end - offset, error = %e, "read failed");
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
        self.check(h, offset, &out, id).await?;
        if plan.sequential {
            // Read through: the page cache has these bytes now (or, read around it, they
            // were read once), and the blocks prefetched ahead (for this and other readers)
            // are worth more than the ones behind.
            let done = if end == fsize { b1 + 1 } else { end / BLOCK_SIZE };
            self.memory.demote((b0..done).map(|i| h.key(i)));
        }
        Ok(out)
    }

    /// Whether no level holds, and nobody is fetching, any of blocks `b0..=b1`.
    fn cold(&self, h: &Handle, b0: u64, b1: u64) -> bool {
        let inflight = self.inflight.lock();
        (b0..=b1).all(|i| {
            let k = h.key(i);
            !inflight.contains_key(&k)
                && self.memory.get(&k).is_none()
                && !self.levels.iter().any(|l| l.exact() && l.contains(&k))
        })
    }

    /// A small read away from where the handle was (a seek: an index lookup, a BAM region):
    /// one GET of the bytes asked, widened to [`SMALL_UNIT`]s, instead of whole blocks.
    /// Not cached as blocks; if the reader goes on from here, its window fetches blocks.
    async fn read_small(self: &Arc<Self>, h: &Handle, offset: u64, end: u64, id: u64) -> Result<Bytes, ReadError> {
        let start = offset / SMALL_UNIT * SMALL_UNIT;
        let stop = end.div_ceil(SMALL_UNIT).saturating_mul(SMALL_UNIT).min(h.file.size);
        let b = self.source.fetch_range(&h.file, start, stop - start).await?;
        let out = b.slice((offset - start) as usize..(end - start) as usize);
        *h.small.lock() = Some((start, b));
        self.check(h, offset, &out, id).await?;
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

    /// Feeds a handle's hash (on its own thread). A read after which the handle has
    /// delivered (or has in flight) every byte of the file waits for the verdict and fails when the bytes do not match the ETag; so does
    /// any read after a bad verdict, and every cached block of that version is dropped.
    async fn check(self: &Arc<Self>, h: &Handle, offset: u64, data: &Bytes, id: u64) -> Result<(), ReadError> {
        let bg = {
            let mut g = h.verify.lock();
            match std::mem::replace(&mut *g, Verify::Off) {
                Verify::Off => return Ok(()),
                Verify::Running(b) => {
                    *g = Verify::Running(b.clone());
                    b
                }
                // Verified whole already (a small file fetched in one GET is checked as it
                // arrives, often ahead of its open): its bytes are not hashed twice.
                Verify::Ready(_) if self.verified.lock().contains(&h.object) => return Ok(()),
                Verify::Ready(v) => match Background::start(*v) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        *g = Verify::Running(b.clone());
                        b
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a verifying thread; this read goes unverified");
                        return Ok(());
                    }
                },
            }
        };
        let mut verdict = bg.feed(offset, data).await;
        // Whichever read completes the file waits, not only the one at its end: the kernel
        // sends readahead in parallel, and the read of the last bytes may be answered
        // before a read of earlier bytes has even arrived.
        let covered = {
            let mut c = h.coverage.lock();
            c.end(id, true);
            c.covers(h.file.size)
        };
        if verdict.is_none() && covered {
            verdict = bg.wait(FINAL_VERDICT_WAIT).await;
        }
        if let Some(Verdict::Recheck(r)) = verdict {
            let v = h.rechecked.get_or_init(|| self.recheck(h, r)).await;
            verdict = Some(v.copy());
        }
        match verdict {
            None | Some(Verdict::Pending) | Some(Verdict::Recheck(_)) => Ok(()),
            Some(Verdict::Abandoned) => {
                *h.verify.lock() = Verify::Off;
                Ok(())
            }
            Some(Verdict::Good) => {
                if matches!(
                    std::mem::replace(&mut *h.verify.lock(), Verify::Off),
                    Verify::Running(_)
                ) {
                    self.stats.files_verified.fetch_add(1, Ordering::Relaxed);
                    self.verified.lock().put(h.object.clone(), ());
                }
                Ok(())
            }
            Some(Verdict::Bad(got)) => {
                let first = matches!(
                    std::mem::replace(&mut *h.verify.lock(), Verify::Off),
                    Verify::Running(_)
                );
                let e = ReadError::Corrupt {
                    file: h.file.id.clone(),
                    expected: h.file.version.clone(),
                    got,
                };
                if first {
                    self.purge(h);
                    self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "checksum mismatch");
                }
                Err(e)
            }
        }
    }

    /// A read at the start of a file that will be verified: the bytes it hashes are also
    /// copied, to be kept whole for the kernel if they match ([`whole`]). Set up before the
    /// first fetch, so none of the file's blocks is written to the disk level meanwhile.
    fn copy_whole(&self, h: &Handle) {
        let Some(disk) = &self.disk else { return };
        if let Verify::Ready(v) = &mut *h.verify.lock() {
            if !v.copies() {
                if let Some(copy) = disk.spool(&h.object, h.file.size) {
                    v.copy_to(copy);
                }
            }
        }
    }

    /// The second pass of a multipart check: the whole file read again in order through the
    /// cache levels (where the bytes just handed out usually still are) and hashed in every
    /// part size that fits, the first pass's included (the bytes must be the same). Bounded
    /// by [`FINAL_VERDICT_WAIT`]; past it, or if the file cannot be read, the handle's
    /// bytes count as unverified, not wrong.
    async fn recheck(self: &Arc<Self>, h: &Handle, r: Box<verify::Recheck>) -> Verdict {
        tracing::info!(file = %h.file.id, "the ETag does not match 8 MiB parts; checking the other part sizes that fit");
        let pass = async {
            let mut v = Verifier::recheck(&r);
            let last = (h.file.size - 1) / BLOCK_SIZE;
            let mut i = 0;
            while i <= last {
                let to = (i + 4 * PART_BLOCKS).min(last + 1);
                let (blocks, _) = self.blocks(h, i, to, PART_BLOCKS, false);
                let mut got = Vec::with_capacity(blocks.len());
                for (idx, b) in blocks {
                    got.push((idx * BLOCK_SIZE, b.get().await.ok()?));
                }
                let (back, verdict) = tokio::task::spawn_blocking(move || {
                    let mut last = Verdict::Pending;
                    for (off, b) in got {
                        last = v.feed(off, &b);
                    }
                    (v, last)
                })
                .await
                .ok()?;
                if verdict != Verdict::Pending {
                    return Some(verdict);
                }
                v = back;
                i = to;
            }
            None
        };
        match tokio::time::timeout(FINAL_VERDICT_WAIT, pass).await {
            Ok(Some(v @ (Verdict::Good | Verdict::Bad(_)))) => v,
            _ => {
                tracing::warn!(file = %h.file.id, "could not read the file again to check its ETag; its bytes are unverified");
                Verdict::Abandoned
            }
        }
    }

    /// Drops every cached block of a handle's file version, in every level.
    fn purge(&self, h: &Handle) {
        let blocks = h.file.size.div_ceil(BLOCK_SIZE);
        self.memory.purge(&h.object, blocks);
        for l in &self.levels {
            for i in 0..blocks {
                let k = h.key(i);
                if l.contains(&k) {
                    l.discard(&k);
                }
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
                if let Some(b) = self.memory.get(&k) {
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
        // Group consecutive missing blocks into parts, each read wholly from one level
        // (the first that holds the block) or wholly from the source (`None`).
        let mut groups: Vec<(u64, u64, Option<usize>)> = Vec::new();
        for i in missing {
            let k = h.key(i);
            let level = self.levels.iter().position(|l| l.contains(&k));
            match groups.last_mut() {
                Some((s, n, l)) if *s + *n == i && *n < part && *l == level => *n += 1,
                _ => groups.push((i, 1, level)),
            }
        }
        let mut stopped = None;
        for (first, n, level) in groups {
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
            let (futs, task) = self.start_part(h, first, n, level, permit);
            if prefetch {
                h.window.lock().started(first, first + n, task);
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
        level: Option<usize>,
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
        let ahead = permit.is_some(); // a prefetch: no read waits for it yet
        let last = h.file.size.div_ceil(BLOCK_SIZE);
        let hash = h.walk_ahead
            && self.verify
            && first.is_multiple_of(PART_BLOCKS)
            && (n == PART_BLOCKS || first + n == last)
            && h.file.etag().is_some_and(|e| verify::early_parts(e, h.file.size));

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
                me.memory.reserve(guard.reserved);
                let from_level = match level {
                    Some(l) => me.load_part(l, &file, &guard.keys).await.map(|b| (b, l)),
                    None => None,
                };
                let (blocks, found_at) = match from_level {
                    Some(x) => x,
                    None => (me.source.fetch(&file, first, n, ahead).await?, me.levels.len()),
                };
                // On the way back up: every level above the one that had the bytes.
                for l in &me.levels[..found_at] {
                    for (k, b) in guard.keys.iter().zip(&blocks) {
                        l.put(k, b.clone());
                    }
                }
                let digest = hash.then(|| {
                    me.stats.parts_hashed_ahead.fetch_add(1, Ordering::Relaxed);
                    verify::hash_part(blocks.clone())
                });
                me.memory.put_part(&guard.keys, &blocks, digest);
                drop(permit);
                Ok(Arc::<[Bytes]>::from(blocks))
            }
            .await;
            guard.finish(res);
        });
        (out, task.abort_handle())
    }

    /// The blocks `keys` from cache level `l`, or `None` if any is missing or fails its
    /// checks (the part is then fetched from the source).
    async fn load_part(&self, l: usize, file: &RemoteFile, keys: &[BlockKey]) -> Option<Vec<Bytes>> {
        let lens = keys
            .iter()
            .map(|k| BLOCK_SIZE.min(file.size - k.index * BLOCK_SIZE) as usize)
            .collect();
        self.levels[l].get_many(keys, lens, &self.pool).await
    }
}
