//! Checking a whole file read sequentially against its ETag.
//!
//! BaseSpace keeps files in S3, whose ETag is the md5 of the bytes for a single-part
//! upload and `md5(md5(part 1) ‖ … ‖ md5(part N))-N` for a multipart one. The part size is
//! not in the ETag, but the size and `N` pin it down: `ceil(size / part) == N` leaves one
//! or two of the sizes uploaders use (BaseSpace's own: 8 MiB), and each is hashed alongside.
//! What is verified, exactly: a handle that reads a file from its first byte to its last in
//! order (reads arriving slightly out of order are held in a bounded backlog) hashes every
//! byte it hands out; the read that completes the file fails with EIO when no candidate
//! matches. Random reads, and files whose ETag is neither form, are not verified. A part
//! fetched ahead of its reader by a walk is hashed as it lands ([`hash_part`]); the handle
//! uses that digest only for bytes it hands out from those very blocks.

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::oneshot;

/// Largest out-of-order backlog kept while hashing; beyond it the handle gives up
/// verifying (the read itself goes on).
const VERIFY_BACKLOG: u64 = 64 << 20;

const MIB: u64 = 1 << 20;
/// Part sizes S3 uploaders use: BaseSpace's uploaders (8 MiB, as its recorded ETags
/// show), the AWS CLI (8 MiB), S3's minimum (5 MiB) and common tool settings.
const PART_SIZES: &[u64] = &[
    5 * MIB,
    8 * MIB,
    10 * MIB,
    15 * MIB,
    16 * MIB,
    20 * MIB,
    25 * MIB,
    32 * MIB,
    50 * MIB,
    64 * MIB,
    100 * MIB,
    128 * MIB,
    256 * MIB,
    512 * MIB,
    1024 * MIB,
    5_000_000,
    8_000_000,
    10_000_000,
    16_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
];

/// What an ETag promises about the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// md5 of the whole file.
    Plain([u8; 16]),
    /// md5 of the part md5s, and how many parts.
    Multipart { digest: [u8; 16], parts: u64 },
}

impl Expect {
    /// Parses `"<32 hex>"` or `"<32 hex>-<N>"`.
    pub fn parse(etag: &str) -> Option<Expect> {
        let v = etag.trim_matches('"');
        let (hexpart, parts) = match v.split_once('-') {
            Some((h, n)) => (h, Some(n.parse::<u64>().ok().filter(|n| *n > 0)?)),
            None => (v, None),
        };
        let mut digest = [0u8; 16];
        (hexpart.len() == 32).then_some(())?;
        hex::decode_to_slice(hexpart, &mut digest).ok()?;
        Some(match parts {
            None => Expect::Plain(digest),
            Some(parts) => Expect::Multipart { digest, parts },
        })
    }
}

/// The multipart ETag of `data` cut in parts of `part` bytes (what S3 computes).
pub fn multipart_etag(data: &[u8], part: usize) -> String {
    let mut outer = Md5::new();
    let mut n = 0;
    for chunk in data.chunks(part.max(1)) {
        outer.update(Md5::digest(chunk));
        n += 1;
    }
    format!("{}-{}", hex::encode(outer.finalize()), n.max(1))
}

/// Hashes one candidate part size. Parts are independent, so a completed part can be
/// hashed on the hashing thread ([`super::lanes`], side by side with other strings) while
/// the next one arrives. Its blocks stay
/// referenced until then, so a part is buffered only while the global [`PIN_BUDGET`] has
/// room; otherwise it is hashed here as it arrives. Either way only the digests are
/// combined in order.
struct PartHasher {
    part: u64,
    /// Where its own hashing starts: its first part's digest comes from the [`Prefix`].
    from: u64,
    in_part: u64,
    current: Part,
    /// Digests of the parts so far, in order.
    digests: Vec<oneshot::Receiver<[u8; 16]>>,
    /// Parts it closed (the current one starts at `from + closed * part`).
    closed: u64,
    /// Where digests of parts hashed ahead are taken from ([`Verifier::early_from`]).
    early: Option<EarlyDigests>,
}

/// Part size whose digests are computed as parts are fetched ahead of their reader: the
/// prefetch's own part ([`super::PART_BLOCKS`] blocks), BaseSpace's upload part.
const EARLY_PART: u64 = super::PART_BLOCKS * super::BLOCK_SIZE;

/// The digest of one part, hashed from `blocks` (kept by the memory cache while these very
/// blocks are cached there, [`super::cache::MemoryCache::put_part`]).
pub struct PartDigest {
    blocks: Vec<Bytes>,
    digest: oneshot::Receiver<[u8; 16]>,
}

/// Gives the digest of part `index` hashed ahead, taken out, if there is one.
pub type EarlyDigests = std::sync::Arc<dyn Fn(u64) -> Option<PartDigest> + Send + Sync>;

/// A whole part of a file fetched ahead of its reader by a walk (a copy's next files),
/// queued for hashing now, on the hashing thread's lanes beside the file's other parts,
/// instead of once the reader reaches the file's end: the read that completes each 64 MiB
/// file of a copy otherwise waited 25-30 ms for seven of its eight part digests.
pub fn hash_part(blocks: Vec<Bytes>) -> PartDigest {
    PartDigest {
        digest: super::lanes::md5_of(blocks.clone(), (), super::lanes::AHEAD_WAIT),
        blocks,
    }
}

/// Whether a file with this ETag is verified in [`EARLY_PART`] parts first (a multipart
/// ETag that part size fits), so parts hashed ahead can serve its reader.
pub fn early_parts(etag: &str, size: u64) -> bool {
    match Expect::parse(etag) {
        Some(Expect::Multipart { parts, .. }) => Verifier::fitting(size, parts).first() == Some(&EARLY_PART),
        _ => false,
    }
}

/// Whether `pieces`, laid end to end, are the bytes of `blocks` (each [`super::BLOCK_SIZE`]
/// but the last) at the same addresses: slices of the same allocations, which both keep
/// alive and nobody changes.
fn same_memory(pieces: &[Bytes], blocks: &[Bytes]) -> bool {
    let block = super::BLOCK_SIZE as usize;
    let mut at = 0usize;
    for p in pieces {
        let (b, within) = (at / block, at % block);
        let Some(blk) = blocks.get(b) else { return false };
        if within + p.len() > blk.len() || p.as_ptr() != blk.as_ptr().wrapping_add(within) {
            return false;
        }
        at += p.len();
    }
    at == blocks.iter().map(|b| b.len()).sum::<usize>()
}

/// How the current part is being hashed.
enum Part {
    /// Its bytes (references to the blocks read, not copies), for the hashing thread
    /// ([`super::lanes`]); holds a share of the pin budget.
    Buffered(Vec<Bytes>, Pinned),
    Inline(Md5),
    /// Hashed as it was fetched ahead ([`hash_part`]): its bytes as handed out (slices of
    /// the blocks the digest holds, so no pin), to tell they are those blocks.
    Early(Vec<Bytes>, PartDigest),
}

/// Bytes of blocks that buffered parts may hold at once, over every handle: with 8 MiB
/// parts, enough to fill a group of the hashing thread's lanes. Blocks evicted from the memory
/// cache stay alive while a part holds them, so this is memory beyond `--cache-size`:
/// [`limit_pins`] caps it at a quarter of that budget (a 64 MiB cache, 16 MiB).
const PIN_BUDGET: u64 = 64 << 20;
static PIN_LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(PIN_BUDGET);
static PINNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Caps the bytes buffered parts hold by the memory cache's budget (one mount per process).
pub fn limit_pins(cache_bytes: u64) {
    PIN_LIMIT.store(PIN_BUDGET.min(cache_bytes / 4), std::sync::atomic::Ordering::Relaxed);
}

/// A share of [`PIN_BUDGET`], given back when dropped.
struct Pinned(u64);

impl Pinned {
    fn try_take(n: u64) -> Option<Pinned> {
        use std::sync::atomic::Ordering::AcqRel;
        PINNED
            .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |p| {
                (p + n <= PIN_LIMIT.load(std::sync::atomic::Ordering::Relaxed)).then_some(p + n)
            })
            .ok()
            .map(|_| Pinned(n))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        PINNED.fetch_sub(self.0, std::sync::atomic::Ordering::AcqRel);
    }
}

impl PartHasher {
    fn new(part: u64, from: u64) -> PartHasher {
        PartHasher {
            part,
            from,
            in_part: 0,
            current: Self::start(part),
            digests: Vec::new(),
            closed: 0,
            early: None,
        }
    }

    /// The digest of the part starting now hashed ahead, if there is one.
    fn take_early(&self) -> Option<PartDigest> {
        let early = self.early.as_ref().filter(|_| self.part == EARLY_PART)?;
        early(self.from / self.part + self.closed)
    }

    /// How the part starting now is hashed: by its digest hashed ahead, if there is one.
    fn begin(&mut self) -> Part {
        match self.take_early() {
            Some(d) => Part::Early(Vec::new(), d),
            None => Self::start(self.part),
        }
    }

    fn start(part: u64) -> Part {
        match Pinned::try_take(part) {
            Some(p) => Part::Buffered(Vec::new(), p),
            None => Part::Inline(Md5::new()),
        }
    }

    /// The bytes at `at`; those before [`PartHasher::from`] are not its to hash.
    fn update(&mut self, at: u64, mut data: Bytes) {
        if at + (data.len() as u64) <= self.from {
            return;
        }
        if at < self.from {
            data = data.slice((self.from - at) as usize..);
        }
        while !data.is_empty() {
            let n = ((self.part - self.in_part) as usize).min(data.len());
            let piece = data.split_to(n);
            match &mut self.current {
                Part::Buffered(pieces, _) | Part::Early(pieces, _) => pieces.push(piece),
                Part::Inline(h) => h.update(&piece),
            }
            self.in_part += n as u64;
            if self.in_part == self.part {
                self.close_part(true);
            }
        }
    }

    fn close_part(&mut self, more: bool) {
        let done = match std::mem::replace(&mut self.current, Part::Inline(Md5::new())) {
            // Its fetch may have landed since the part began.
            Part::Buffered(pieces, pinned) => match self.take_early() {
                Some(d) if same_memory(&pieces, &d.blocks) => d.digest,
                _ => super::lanes::md5_of(pieces, pinned, super::lanes::PART_WAIT),
            },
            Part::Inline(h) => ready(h.finalize().into()),
            Part::Early(pieces, d) if same_memory(&pieces, &d.blocks) => d.digest,
            // Other memory (a block fetched again, a read spanning blocks): hashed here.
            Part::Early(pieces, _) => {
                let mut h = Md5::new();
                pieces.iter().for_each(|p| h.update(p));
                ready(h.finalize().into())
            }
        };
        self.digests.push(done);
        self.in_part = 0;
        self.closed += 1;
        if more {
            self.current = self.begin();
        }
    }

    /// Its first part's digest, computed once for every candidate by the [`Prefix`].
    fn first_part(&mut self, digest: [u8; 16]) {
        self.digests.insert(0, ready(digest));
    }

    /// The ETag digest of the parts, and the parts' own digests.
    fn finish(mut self) -> ([u8; 16], Vec<[u8; 16]>) {
        if self.in_part > 0 {
            self.close_part(false);
        }
        // The read that completes the file waits for these digests: none waits for company.
        super::lanes::hurry();
        // A hashing thread that died (it cannot, short of a panic) gives a digest no ETag has.
        let parts: Vec<[u8; 16]> = self
            .digests
            .into_iter()
            .map(|d| d.blocking_recv().unwrap_or_default())
            .collect();
        let mut outer = Md5::new();
        parts.iter().for_each(|d| outer.update(d));
        (outer.finalize().into(), parts)
    }
}

/// A digest known already, as the hashing thread's answers come.
fn ready(digest: [u8; 16]) -> oneshot::Receiver<[u8; 16]> {
    let (tx, rx) = oneshot::channel();
    let _ = tx.send(digest);
    rx
}

/// The first part of every candidate starts at byte 0, so one running md5 gives them all:
/// its state is copied out at each candidate's first boundary. With a small part count
/// many part sizes fit (a 16 MiB file in 2 parts: five of them); this halves the hashing.
struct Prefix {
    md5: Md5,
    /// (end of a candidate's first part, candidate index), nearest first; those reached
    /// are gone.
    bounds: std::collections::VecDeque<(u64, usize)>,
}

impl Prefix {
    fn update(&mut self, mut at: u64, mut data: &[u8], hs: &mut [PartHasher]) {
        while let Some(&(b, _)) = self.bounds.front() {
            if data.is_empty() {
                return;
            }
            let n = (b.saturating_sub(at) as usize).min(data.len());
            self.md5.update(&data[..n]);
            at += n as u64;
            data = &data[n..];
            if at >= b {
                let digest: [u8; 16] = self.md5.clone().finalize().into();
                while let Some(&(b2, c)) = self.bounds.front() {
                    if b2 != b {
                        break;
                    }
                    self.bounds.pop_front();
                    hs[c].first_part(digest);
                }
            }
        }
    }
}

enum Hashing {
    Plain(Md5),
    Multipart(Prefix, Vec<PartHasher>),
}

/// Verdict on a piece fed to a [`Verifier`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pending,
    /// The read went too far out of order to keep verifying.
    Abandoned,
    Good,
    /// The md5 the bytes hash to (for a plain ETag), or a summary.
    Bad(String),
    /// The bytes do not match the ETag cut in the most likely part size, but other sizes fit:
    /// read the file again and check them ([`Verifier::recheck`]).
    Recheck(Box<Recheck>),
}

/// What a second pass needs to settle a multipart ETag that the likely part size did not
/// match: the parts' digests of the bytes handed out, to tell that the second pass reads
/// the same bytes, and the part sizes still to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recheck {
    expect: Expect,
    size: u64,
    /// Part size of the first pass, and the digests of its parts.
    part: u64,
    served: Vec<[u8; 16]>,
    others: Vec<u64>,
}

/// md5 of a whole file read sequentially, checked against its ETag.
pub struct Verifier {
    expect: Expect,
    size: u64,
    hashing: Hashing,
    /// Part sizes that fit the ETag but are not hashed in this pass.
    others: Vec<u64>,
    /// In a second pass: the first pass's part digests, which these bytes must reproduce.
    served: Option<Vec<[u8; 16]>>,
    pos: u64,
    pending: std::collections::BTreeMap<u64, Bytes>,
    pending_bytes: u64,
    /// Where the bytes hashed are also copied, to keep the file whole once they match.
    copy: Option<super::whole::Spool>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("pos", &self.pos).finish()
    }
}

impl Verifier {
    /// A verifier for a file of `size` bytes with this ETag, if the ETag can be checked.
    ///
    /// A multipart ETag is hashed in the most likely part size only (BaseSpace's 8 MiB when
    /// it fits): a match settles it at the cost of one md5 of the bytes. Other sizes that
    /// fit are tried only if it does not match, by a second pass ([`Verdict::Recheck`]).
    pub fn new(etag: &str, size: u64) -> Option<Verifier> {
        if size == 0 {
            return None;
        }
        let expect = Expect::parse(etag)?;
        let mut fits = match &expect {
            Expect::Plain(_) => Vec::new(),
            Expect::Multipart { parts, .. } => Self::fitting(size, *parts),
        };
        if matches!(expect, Expect::Multipart { .. }) && fits.is_empty() {
            return None; // no known part size fits: cannot verify
        }
        let others = fits.split_off(fits.len().min(1));
        Some(Self::hashing(expect, size, fits, others, None))
    }

    /// The second pass of a [`Recheck`]: the first pass's part size (whose digests the bytes
    /// must reproduce) and every other size that fits, hashed together.
    pub fn recheck(r: &Recheck) -> Verifier {
        let sizes = std::iter::once(r.part).chain(r.others.iter().copied()).collect();
        Self::hashing(r.expect.clone(), r.size, sizes, Vec::new(), Some(r.served.clone()))
    }

    /// Part sizes that cut `size` bytes in `parts` parts, the most likely first: 8 MiB
    /// (BaseSpace's uploaders, as its recorded ETags show), then [`PART_SIZES`] in order.
    fn fitting(size: u64, parts: u64) -> Vec<u64> {
        let mut v: Vec<u64> = PART_SIZES
            .iter()
            .copied()
            .filter(|p| size.div_ceil(*p) == parts)
            .collect();
        v.sort_by_key(|p| *p != 8 * MIB);
        v
    }

    fn hashing(
        expect: Expect,
        size: u64,
        sizes: Vec<u64>,
        others: Vec<u64>,
        served: Option<Vec<[u8; 16]>>,
    ) -> Verifier {
        let hashing = match &expect {
            Expect::Plain(_) => Hashing::Plain(Md5::new()),
            Expect::Multipart { .. } => {
                // One candidate (the usual case) hashes its first part like the others, on
                // the hashing thread; several share it through the prefix.
                let shared = sizes.len() > 1;
                let hs: Vec<PartHasher> = sizes
                    .iter()
                    .map(|p| PartHasher::new(*p, if shared { (*p).min(size) } else { 0 }))
                    .collect();
                let mut bounds: Vec<(u64, usize)> = match shared {
                    true => hs.iter().enumerate().map(|(i, h)| (h.from, i)).collect(),
                    false => Vec::new(),
                };
                bounds.sort_unstable();
                let prefix = Prefix {
                    md5: Md5::new(),
                    bounds: bounds.into(),
                };
                Hashing::Multipart(prefix, hs)
            }
        };
        Verifier {
            expect,
            size,
            hashing,
            others,
            served,
            pos: 0,
            pending: Default::default(),
            pending_bytes: 0,
            copy: None,
        }
    }

    /// Takes the digests of parts hashed as they were fetched ahead ([`hash_part`]) from
    /// `early`, where this handle hands out those very blocks.
    pub fn early_from(&mut self, early: EarlyDigests) {
        if let Hashing::Multipart(_, hs) = &mut self.hashing {
            for h in hs.iter_mut().filter(|h| h.part == EARLY_PART) {
                h.early = Some(early.clone());
                if h.closed == 0 && h.in_part == 0 {
                    h.current = h.begin();
                }
            }
        }
    }

    /// Also copies every byte hashed, in order, to `spool` ([`super::whole`]).
    pub fn copy_to(&mut self, spool: super::whole::Spool) {
        self.copy = Some(spool);
    }

    /// Whether the bytes are being copied.
    pub fn copies(&self) -> bool {
        self.copy.is_some()
    }

    /// Whether this ETag can be verified at all (for the page-cache policy).
    pub fn can_verify(etag: &str, size: u64) -> bool {
        Verifier::new(etag, size).is_some()
    }

    /// Hashes the bytes at `self.pos` (the next in order).
    fn update(&mut self, data: Bytes) {
        let at = self.pos;
        if let Some(c) = &mut self.copy {
            c.write(&data);
        }
        match &mut self.hashing {
            Hashing::Plain(h) => h.update(&data),
            Hashing::Multipart(prefix, hs) => {
                prefix.update(at, &data, hs);
                hs.iter_mut().for_each(|h| h.update(at, data.clone()));
            }
        }
    }

    /// Feeds the bytes at `offset` that a read hands out.
    pub fn feed(&mut self, offset: u64, data: &Bytes) -> Verdict {
        if offset > self.pos + super::prefetch::SEQ_TOLERANCE && self.copy.take().is_some() {
            // A jump (an index lookup, a region): not a whole read. Its blocks go to the
            // cache as blocks again.
            tracing::debug!(offset, "read out of order; the file is not kept whole");
        }
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
                let from = (self.pos - off) as usize;
                self.update(d.slice(from..));
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
        if self.pos < self.size {
            return Verdict::Pending;
        }
        self.verdict()
    }

    fn verdict(&mut self) -> Verdict {
        let hashing = std::mem::replace(&mut self.hashing, Hashing::Plain(Md5::new()));
        match (hashing, &self.expect) {
            (Hashing::Plain(h), Expect::Plain(want)) => {
                let got: [u8; 16] = h.finalize().into();
                if got == *want {
                    Verdict::Good
                } else {
                    Verdict::Bad(hex::encode(got))
                }
            }
            (Hashing::Multipart(_, hs), Expect::Multipart { digest, parts }) => {
                let mut seen = Vec::new();
                let mut first_parts = None;
                for (i, h) in hs.into_iter().enumerate() {
                    let part = h.part;
                    let (got, part_digests) = h.finish();
                    let n = part_digests.len() as u64;
                    if i == 0 {
                        if self.served.as_ref().is_some_and(|s| *s != part_digests) {
                            return Verdict::Bad(
                                "the bytes read again to check other part sizes differ from those read first".into(),
                            );
                        }
                        first_parts = Some((part, part_digests));
                    }
                    if got == *digest && n == *parts {
                        return Verdict::Good;
                    }
                    seen.push(format!("{}-{n} with {part}-byte parts", hex::encode(got)));
                }
                match first_parts {
                    Some((part, served)) if !self.others.is_empty() => Verdict::Recheck(Box::new(Recheck {
                        expect: self.expect.clone(),
                        size: self.size,
                        part,
                        served,
                        others: std::mem::take(&mut self.others),
                    })),
                    _ => Verdict::Bad(seen.join(", ")),
                }
            }
            _ => Verdict::Bad("internal: hashing does not match the ETag's form".into()),
        }
    }
}

/// Bytes queued for hashing threads, at most, over every handle: reads wait beyond it (the
/// hash keeps up with the network on any core of this decade; this only bounds memory when
/// it does not).
const QUEUE_BYTES: u32 = 32 << 20;

fn queue_budget() -> std::sync::Arc<tokio::sync::Semaphore> {
    static Q: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    Q.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES as usize)))
        .clone()
}

/// A [`Verifier`] running on its own thread, so hashing never holds up the async workers
/// that stream the HTTP bodies: reads hand it their bytes (a reference, no copy) and go on;
/// only the read that completes the file waits for the verdict.
pub struct Background {
    tx: std::sync::mpsc::Sender<(u64, Bytes, tokio::sync::OwnedSemaphorePermit)>,
    queue: std::sync::Arc<tokio::sync::Semaphore>,
    verdict: tokio::sync::watch::Receiver<Option<Verdict>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").finish()
    }
}

impl Background {
    /// Starts the hashing thread; it ends with a verdict or when the handle is dropped.
    pub fn start(mut v: Verifier) -> std::io::Result<Background> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, Bytes, tokio::sync::OwnedSemaphorePermit)>();
        let (vtx, verdict) = tokio::sync::watch::channel(None);
        std::thread::Builder::new()
            .name("bsmount-verify".into())
            .spawn(move || {
                while let Ok((offset, data, permit)) = rx.recv() {
                    let r = v.feed(offset, &data);
                    drop((data, permit));
                    if r != Verdict::Pending {
                        let good = r == Verdict::Good;
                        let _ = vtx.send(Some(r));
                        // After the verdict, so the read waiting for it goes on meanwhile.
                        if let Some(copy) = v.copy.take().filter(|_| good) {
                            copy.finish();
                        }
                        return;
                    }
                }
            })?;
        Ok(Background {
            tx,
            queue: queue_budget(),
            verdict,
        })
    }

    /// Hands over the bytes a read delivers at `offset` (waiting only while the queue is
    /// full). Returns the verdict if there is one already.
    pub async fn feed(&self, offset: u64, data: &Bytes) -> Option<Verdict> {
        if let Some(v) = self.verdict() {
            return Some(v);
        }
        let n = (data.len() as u32).clamp(1, QUEUE_BYTES);
        let Ok(permit) = self.queue.clone().acquire_many_owned(n).await else {
            return self.verdict();
        };
        let _ = self.tx.send((offset, data.clone(), permit));
        self.verdict()
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict.borrow().as_ref().map(Verdict::copy)
    }

    /// Waits at most `limit` for the verdict (`None`: still pending, e.g. a gap the reader
    /// never read).
    pub async fn wait(&self, limit: std::time::Duration) -> Option<Verdict> {
        let mut rx = self.verdict.clone();
        let r = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
        match r {
            Ok(Ok(v)) => v.as_ref().map(Verdict::copy),
            _ => None,
        }
    }
}

impl Verdict {
    pub fn copy(&self) -> Verdict {
        match self {
            Verdict::Pending => Verdict::Pending,
            Verdict::Abandoned => Verdict::Abandoned,
            Verdict::Good => Verdict::Good,
            Verdict::Bad(s) => Verdict::Bad(s.clone()),
            Verdict::Recheck(r) => Verdict::Recheck(r.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn feed_all(v: &mut Verifier, d: &[u8], chunk: usize) -> Verdict {
        let mut last = Verdict::Pending;
        for (i, c) in d.chunks(chunk).enumerate() {
            last = v.feed((i * chunk) as u64, &Bytes::copy_from_slice(c));
        }
        last
    }

    // A part's digest hashed as it was fetched ahead serves the reader that hands out those
    // very blocks, and only it: planted wrong, it fails the file read from the same blocks;
    // a reader of copies of the same bytes hashes them itself; one that began buffering the
    // part before the digest came takes it at the part's end.
    #[test]
    fn a_part_hashed_ahead_serves_only_a_reader_of_the_same_blocks() {
        use std::sync::{Arc, Mutex};
        // 16 MiB + 5 in 8 MiB parts: 3 parts; 8 MiB is tried first.
        let d = data((16 << 20) + 5);
        let etag = multipart_etag(&d, 8 << 20);
        let blocks: Vec<Bytes> = d.chunks(1 << 20).map(Bytes::copy_from_slice).collect();
        let kept: Arc<Mutex<Vec<(u64, PartDigest)>>> = Arc::default();
        let take = |kept: &Arc<Mutex<Vec<(u64, PartDigest)>>>| -> EarlyDigests {
            let kept = kept.clone();
            Arc::new(move |i| {
                let mut k = kept.lock().unwrap();
                let at = k.iter().position(|(j, _)| *j == i)?;
                Some(k.remove(at).1)
            })
        };
        // Reads of 512 KiB, as `cp`'s.
        let read = |same: bool| {
            let mut v = Verifier::new(&etag, d.len() as u64).unwrap();
            v.early_from(take(&kept));
            let mut last = Verdict::Pending;
            for (i, b) in blocks.iter().enumerate() {
                let b = if same { b.clone() } else { Bytes::copy_from_slice(b) };
                let half = b.len().div_ceil(2);
                last = v.feed((i << 20) as u64, &b.slice(..half));
                if half < b.len() {
                    last = v.feed(((i << 20) + half) as u64, &b.slice(half..));
                }
            }
            last
        };
        let wrong = |from: usize, to: usize| PartDigest {
            blocks: blocks[from..to].to_vec(),
            digest: ready([0; 16]),
        };
        kept.lock().unwrap().push((1, wrong(8, 16)));
        assert!(
            !matches!(read(true), Verdict::Good),
            "the digest hashed ahead was not used"
        );
        kept.lock().unwrap().push((1, wrong(8, 16)));
        assert_eq!(read(false), Verdict::Good, "other memory: hashed again");
        kept.lock().unwrap().clear();
        // A part buffered (the pin budget had room) before its digest came takes it at its
        // end; planted wrong, that is the digest it gives.
        let mut h = PartHasher::new(8 << 20, 0);
        h.current = Part::Buffered(Vec::new(), Pinned(0));
        h.early = Some(take(&kept));
        for (i, b) in blocks[..8].iter().enumerate() {
            h.update((i << 20) as u64, b.clone());
            if i == 0 {
                kept.lock().unwrap().push((0, wrong(0, 8)));
            }
        }
        assert_eq!(h.finish().1[0], [0; 16], "taken at the part's end");
        // Hashed ahead for real: the same verdict, and every digest is taken.
        for (i, (from, to)) in [(0, (0, 8)), (1, (8, 16)), (2, (16, 17))] {
            kept.lock().unwrap().push((i, hash_part(blocks[from..to].to_vec())));
        }
        assert_eq!(read(true), Verdict::Good);
        assert!(kept.lock().unwrap().is_empty());
    }

    #[test]
    fn plain_md5_etags_verify_and_catch_other_bytes() {
        let d = data(3 << 20);
        let etag = hex::encode(Md5::digest(&d));
        assert_eq!(
            feed_all(&mut Verifier::new(&etag, d.len() as u64).unwrap(), &d, 1 << 20),
            Verdict::Good
        );
        let mut bad = d.clone();
        bad[12345] ^= 1;
        assert!(matches!(
            feed_all(&mut Verifier::new(&etag, d.len() as u64).unwrap(), &bad, 1 << 20),
            Verdict::Bad(_)
        ));
    }

    #[test]
    fn multipart_etags_verify_by_the_part_size_that_fits() {
        // 20 MiB + 3 in 8 MiB parts: 3 parts (as BaseSpace's uploader cuts them).
        let d = data((20 << 20) + 3);
        let etag = multipart_etag(&d, 8 << 20);
        assert!(etag.ends_with("-3"), "{etag}");
        assert_eq!(
            feed_all(&mut Verifier::new(&etag, d.len() as u64).unwrap(), &d, 1 << 20),
            Verdict::Good
        );
        let z = vec![b'Z'; d.len()];
        let (v, _) = verify_twice(&etag, &z, &z, 1 << 20);
        assert!(matches!(v, Verdict::Bad(_)), "{v:?}");
    }

    /// First pass, and the second when the first asks for it.
    fn verify_twice(etag: &str, first: &[u8], again: &[u8], chunk: usize) -> (Verdict, bool) {
        match feed_all(&mut Verifier::new(etag, first.len() as u64).unwrap(), first, chunk) {
            Verdict::Recheck(r) => (feed_all(&mut Verifier::recheck(&r), again, chunk), true),
            v => (v, false),
        }
    }

    #[test]
    fn every_part_size_that_fits_is_checked_from_one_shared_prefix() {
        // 16 MiB in 2 parts fits five known part sizes; each must verify, with chunks that
        // straddle every boundary: 8 MiB (BaseSpace's) in one pass, the others in two.
        let d = data(16 << 20);
        for p in [8 << 20, 10 << 20, 15 << 20, 10_000_000, 16_000_000] {
            let etag = multipart_etag(&d, p);
            assert!(etag.ends_with("-2"), "{etag}");
            let (v, twice) = verify_twice(&etag, &d, &d, 777_777);
            assert_eq!(v, Verdict::Good, "{p}-byte parts");
            assert_eq!(twice, p != 8 << 20, "{p}-byte parts");
        }
        // The second pass must read the bytes the first one did.
        let mut other = d.clone();
        other[100] ^= 1;
        let etag = multipart_etag(&other, 10 << 20);
        let (v, twice) = verify_twice(&etag, &d, &other, 1 << 20);
        assert!(
            twice && matches!(v, Verdict::Bad(ref m) if m.contains("differ")),
            "{v:?}"
        );
        // One part: the whole file is the first part.
        let etag = multipart_etag(&d[..3000], 8 << 20);
        assert_eq!(
            feed_all(&mut Verifier::new(&etag, 3000).unwrap(), &d[..3000], 1000),
            Verdict::Good
        );
        let mut bad = d.clone();
        bad[9_000_000] ^= 1;
        let etag = multipart_etag(&d, 10 << 20);
        let (v, twice) = verify_twice(&etag, &bad, &bad, 1 << 20);
        assert!(twice && matches!(v, Verdict::Bad(_)), "{v:?}");
    }

    #[test]
    fn out_of_order_pieces_are_hashed_in_order() {
        let d = data(4 << 20);
        let etag = hex::encode(Md5::digest(&d));
        let mut v = Verifier::new(&etag, d.len() as u64).unwrap();
        let piece = |i: usize| Bytes::copy_from_slice(&d[i << 20..(i + 1) << 20]);
        assert_eq!(v.feed(1 << 20, &piece(1)), Verdict::Pending);
        assert_eq!(v.feed(3 << 20, &piece(3)), Verdict::Pending);
        assert_eq!(v.feed(0, &piece(0)), Verdict::Pending);
        assert_eq!(v.feed(2 << 20, &piece(2)), Verdict::Good);
    }

    #[test]
    fn the_background_verifier_gives_its_verdict_to_whoever_waits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let d = data((9 << 20) + 1);
        let good = multipart_etag(&d, 8 << 20);
        rt.block_on(async {
            for (etag, ok) in [(good.as_str(), true), ("0123456789abcdef0123456789abcdef-2", false)] {
                let bg = Background::start(Verifier::new(etag, d.len() as u64).unwrap()).unwrap();
                for (i, c) in d.chunks(1 << 20).enumerate() {
                    bg.feed((i << 20) as u64, &Bytes::copy_from_slice(c)).await;
                }
                let v = bg.wait(std::time::Duration::from_secs(10)).await.unwrap();
                assert_eq!(v == Verdict::Good, ok, "{v:?}");
            }
            // A gap never filled: no verdict, and the wait is bounded.
            let bg = Background::start(Verifier::new(&good, d.len() as u64).unwrap()).unwrap();
            bg.feed(1 << 20, &Bytes::from_static(b"x")).await;
            assert!(bg.wait(std::time::Duration::from_millis(50)).await.is_none());
        });
    }

    #[test]
    fn unverifiable_etags_are_recognised() {
        assert!(Verifier::new("not-an-etag", 10).is_none());
        assert!(Verifier::new("2019-01-01-10", 10).is_none());
        // 3 parts for 1 KiB fits no known part size.
        assert!(Verifier::new(&format!("{}-3", "a".repeat(32)), 1024).is_none());
        assert!(Verifier::new(&"a".repeat(32), 0).is_none());
        assert!(Verifier::can_verify(&format!("{}-6", "a".repeat(32)), 48526491));
    }
}
