//! md5 of many byte strings at once: sixteen to a core.
//!
//! MD5 is serial within one string (about 5 cycles a byte: ~580 MB/s here), and verifying
//! what a copy reads against its ETags was half of the mount's CPU time in a cohort copy
//! (hundreds of files, on two cores the emulator and `cp` share). The strings hashed at
//! any moment are many and independent: files fetched whole ahead of a walk, the 8 MiB
//! parts of multipart ETags. So one thread hashes up to [`LANES`] of them side by side in
//! the eight 32-bit lanes of AVX2 registers (the multi-buffer technique of Intel's
//! ISA-L): 3.5 GB/s with eight lanes busy against 0.5 GB/s for one string alone here.
//! With AVX-512VL each of md5's functions and its rotation is one instruction, and with
//! more than eight strings at hand a second group of eight runs beside the first, its
//! steps interleaved with the first's (md5's steps each wait on the one before; the
//! second group fills those cycles): a copy of 64 MiB files spent 0.72 s of the mount's
//! CPU hashing with one group, 0.53 s with two (`perf`). With fewer than [`MIN_WIDE`]
//! strings at hand, or without AVX2, each is hashed alone (`md5-asm`).
//!
//! Jobs are whole strings (pieces in order, already in memory); the digest comes back on
//! a channel. Eight lanes cost what one does, so a string that no read waits for yet
//! waits a little for company (for a group of eight; the second group takes what else is
//! there): a file fetched ahead ([`AHEAD_WAIT`]), a part of a
//! multipart ETag ([`PART_WAIT`], or until [`hurry`]: the read that completes the file
//! needs its digests). A string a read waits for goes at once. A lane that finishes takes
//! the next job, and no job waits for a long one: lanes advance at most
//! [`ROUND_BLOCKS`] blocks before new jobs are let in.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

/// Strings hashed side by side: two groups of the eight 32-bit lanes of a 256-bit register,
/// their steps interleaved. md5's steps depend each on the one before, so one group leaves
/// the core waiting on each step's latency; a second, independent one fills those cycles.
const LANES: usize = 2 * GROUP;
/// The 32-bit lanes of a 256-bit register.
const GROUP: usize = 8;
/// Below this many strings at once, hashing each alone is faster than half-empty lanes.
const MIN_WIDE: usize = 3;
/// 64-byte blocks each lane advances before waiting jobs are taken in (64 KiB: ~0.1 ms).
const ROUND_BLOCKS: usize = 1024;

/// How long a file fetched ahead of a copy (no read waits for it yet) may wait for others
/// to fill the lanes: they arrive every few milliseconds, so its hash costs a fraction of
/// hashing it alone, and the copy reaches it long after. Strings a read waits for are
/// hashed at once, side by side with whatever else is there.
pub const AHEAD_WAIT: Duration = Duration::from_millis(50);

/// How long a completed part of a multipart ETag may wait for others: its digest is
/// needed only once the whole file is read ([`hurry`] ends the wait then), and the pin
/// budget bounds the parts held meanwhile.
pub const PART_WAIT: Duration = Duration::from_millis(100);

/// MD5's initial state.
const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

struct Job {
    pieces: Vec<Bytes>,
    /// Until when it may wait for company.
    until: Instant,
    /// Released once hashed (a share of a memory budget, for one).
    _hold: Box<dyn Send>,
    /// Taken when the digest is sent.
    done: Option<oneshot::Sender<[u8; 16]>>,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    ready: Condvar,
    /// A reader waits for a digest: every string waiting for company goes now.
    hurried: std::sync::atomic::AtomicBool,
}

fn queue() -> Option<&'static Queue> {
    static Q: OnceLock<Option<&'static Queue>> = OnceLock::new();
    *Q.get_or_init(|| {
        let q: &'static Queue = Box::leak(Box::new(Queue {
            jobs: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            hurried: std::sync::atomic::AtomicBool::new(false),
        }));
        // One thread hashes eight strings at the cost of about two; more only where there
        // are many cores to share.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).div_ceil(4);
        let mut started = false;
        for i in 0..threads {
            started |= std::thread::Builder::new()
                .name(format!("bsmount-md5-{i}"))
                .spawn(move || work(q))
                .is_ok();
        }
        started.then_some(q)
    })
}

/// The md5 of `pieces` (in order), on the hashing thread; `hold` is dropped once hashed.
/// It may wait up to `wait` for other strings to hash beside it.
pub fn md5_of(pieces: Vec<Bytes>, hold: impl Send + 'static, wait: Duration) -> oneshot::Receiver<[u8; 16]> {
    let (done, rx) = oneshot::channel();
    let job = Job {
        pieces,
        until: Instant::now() + wait,
        _hold: Box::new(hold),
        done: Some(done),
    };
    match queue() {
        Some(q) => {
            q.jobs.lock().unwrap_or_else(|e| e.into_inner()).push_back(job);
            q.ready.notify_one();
        }
        // No thread could start: hash here.
        None => {
            let mut lane = Lane::new(job);
            while !lane.scalar(usize::MAX) {}
        }
    }
    rx
}

/// Ends the wait for company of every string queued so far (a read waits for one of them).
pub fn hurry() {
    if let Some(q) = queue() {
        let _jobs = q.jobs.lock().unwrap_or_else(|e| e.into_inner());
        q.hurried.store(true, std::sync::atomic::Ordering::Relaxed);
        q.ready.notify_all();
    }
}

/// One string being hashed: its state and where it is.
struct Lane {
    job: Job,
    state: [u32; 4],
    piece: usize,
    at: usize,
    hashed: u64,
}

impl Lane {
    fn new(job: Job) -> Lane {
        let mut l = Lane {
            job,
            state: INIT,
            piece: 0,
            at: 0,
            hashed: 0,
        };
        l.skip_empty();
        l
    }

    fn skip_empty(&mut self) {
        while self.piece < self.job.pieces.len() && self.at >= self.job.pieces[self.piece].len() {
            self.piece += 1;
            self.at = 0;
        }
    }

    /// Whole blocks readable in place from the current piece.
    fn contiguous(&self) -> usize {
        self.job.pieces.get(self.piece).map_or(0, |p| (p.len() - self.at) / 64)
    }

    /// Moves `n` bytes on, across pieces.
    fn advance(&mut self, n: usize) {
        self.hashed += n as u64;
        let mut left = n;
        while left > 0 && self.piece < self.job.pieces.len() {
            let k = (self.job.pieces[self.piece].len() - self.at).min(left);
            self.at += k;
            left -= k;
            self.skip_empty();
        }
        self.skip_empty();
    }

    /// Up to 64 bytes from where the lane is, across pieces; how many.
    fn gather(&self, out: &mut [u8; 64]) -> usize {
        let (mut n, mut piece, mut at) = (0, self.piece, self.at);
        while n < 64 && piece < self.job.pieces.len() {
            let p = &self.job.pieces[piece];
            let k = (p.len() - at).min(64 - n);
            out[n..n + k].copy_from_slice(&p[at..at + k]);
            n += k;
            at += k;
            if at == p.len() {
                piece += 1;
                at = 0;
            }
        }
        n
    }

    /// Hashes up to `max` blocks alone; `true` once the string is finished (digest sent).
    fn scalar(&mut self, max: usize) -> bool {
        let mut left = max;
        while left > 0 {
            let n = self.contiguous().min(left);
            if n > 0 {
                let p = &self.job.pieces[self.piece][self.at..self.at + n * 64];
                md5_asm::compress(&mut self.state, blocks(p));
                self.advance(n * 64);
                left -= n;
            } else if !self.straddle() {
                return self.finish();
            } else {
                left -= 1;
            }
        }
        false
    }

    /// A whole block spread over two pieces, hashed from a copy; `false` if fewer than 64
    /// bytes are left.
    fn straddle(&mut self) -> bool {
        let mut b = [0u8; 64];
        if self.gather(&mut b) < 64 {
            return false;
        }
        md5_asm::compress(&mut self.state, &[b]);
        self.advance(64);
        true
    }

    /// Pads the last bytes, sends the digest; `true`.
    fn finish(&mut self) -> bool {
        let mut tail = [0u8; 128];
        let mut first = [0u8; 64];
        let n = self.gather(&mut first);
        tail[..n].copy_from_slice(&first[..n]);
        tail[n] = 0x80;
        let total = self.hashed + n as u64;
        let blocks = if n < 56 { 1 } else { 2 };
        tail[blocks * 64 - 8..blocks * 64].copy_from_slice(&(total * 8).to_le_bytes());
        md5_asm::compress(&mut self.state, self::blocks(&tail[..blocks * 64]));
        let mut digest = [0u8; 16];
        for (i, w) in self.state.iter().enumerate() {
            digest[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        if let Some(done) = self.job.done.take() {
            let _ = done.send(digest);
        }
        true
    }
}

/// The whole 64-byte blocks at the start of `p`.
fn blocks(p: &[u8]) -> &[[u8; 64]] {
    // SAFETY: `[u8; 64]` has the alignment of `u8`; the slice covers `len / 64` whole
    // blocks of `p`, borrowed for as long as `p`.
    unsafe { std::slice::from_raw_parts(p.as_ptr().cast(), p.len() / 64) }
}

fn work(q: &'static Queue) {
    let wide = wide_available();
    let mut lanes: Vec<Lane> = Vec::with_capacity(LANES);
    loop {
        {
            let mut jobs = q.jobs.lock().unwrap_or_else(|e| e.into_inner());
            while lanes.is_empty() && jobs.is_empty() {
                jobs = q.ready.wait(jobs).unwrap_or_else(|e| e.into_inner());
            }
            while lanes.len() < LANES {
                match jobs.pop_front() {
                    Some(j) => lanes.push(Lane::new(j)),
                    None => break,
                }
            }
            if q.hurried.swap(false, std::sync::atomic::Ordering::Relaxed) {
                let now = Instant::now();
                lanes.iter_mut().for_each(|l| l.job.until = now);
                jobs.iter_mut().for_each(|j| j.until = now);
            }
            // Lanes to spare, and every string may still wait: wait for company.
            let until = lanes.iter().map(|l| l.job.until).min();
            if let Some(wait) = until.and_then(|t| t.checked_duration_since(Instant::now())) {
                if wide && lanes.len() < GROUP {
                    drop(q.ready.wait_timeout(jobs, wait));
                    continue;
                }
            }
        }
        if wide && lanes.len() >= MIN_WIDE {
            let n = lanes.iter().map(Lane::contiguous).min().unwrap_or(0).min(ROUND_BLOCKS);
            if n > 0 {
                wide_round(&mut lanes, n);
            }
            // Lanes at a piece's end, or at the string's end: one step alone.
            let mut i = 0;
            while i < lanes.len() {
                let l = &mut lanes[i];
                let done = l.contiguous() == 0 && !l.straddle() && l.finish();
                match done {
                    true => drop(lanes.swap_remove(i)),
                    false => i += 1,
                }
            }
        } else {
            lanes.retain_mut(|l| !l.scalar(ROUND_BLOCKS));
        }
    }
}

fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the lanes' steps can use AVX-512's three-input logic and rotation on the same
/// 256-bit registers: seven instructions a step instead of eleven (the hash was 45% of the
/// mount's CPU in a copy of 64 MiB files).
fn vl_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `n` blocks of every lane (each has at least `n` in place), side by side.
fn wide_round(lanes: &mut [Lane], n: usize) {
    wide_round_with(lanes, n, vl_available())
}

#[cfg(target_arch = "x86_64")]
fn wide_round_with(lanes: &mut [Lane], n: usize, vl: bool) {
    static IDLE: [u8; 64] = [0; 64];
    let mut ptrs = [IDLE.as_ptr(); LANES];
    let mut state = [[0u32; LANES]; 4];
    for (l, lane) in lanes.iter().enumerate() {
        ptrs[l] = lane.job.pieces[lane.piece][lane.at..].as_ptr();
        for (w, v) in lane.state.iter().enumerate() {
            state[w][l] = *v;
        }
    }
    // SAFETY: AVX2 was detected ([`wide_available`]), and AVX-512VL for `vl`
    // ([`vl_available`]); every pointer has `n` blocks readable behind it (idle lanes
    // re-read one static block: their stride is 0).
    unsafe {
        match (vl, lanes.len() > GROUP) {
            (true, true) => x8::compress_vl::<2>(&mut state, ptrs, lanes.len(), n),
            (true, false) => x8::compress_vl::<1>(&mut state, ptrs, lanes.len(), n),
            (false, true) => x8::compress::<2>(&mut state, ptrs, lanes.len(), n),
            (false, false) => x8::compress::<1>(&mut state, ptrs, lanes.len(), n),
        }
    };
    for (l, lane) in lanes.iter_mut().enumerate() {
        for (w, v) in lane.state.iter_mut().enumerate() {
            *v = state[w][l];
        }
        lane.advance(n * 64);
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn wide_round_with(_: &mut [Lane], _: usize, _: bool) {
    unreachable!("wide rounds run only where AVX2 was detected")
}

#[cfg(target_arch = "x86_64")]
mod x8 {
    use std::arch::x86_64::*;

    use super::{GROUP, LANES};

    /// MD5 states (`state[word][lane]`) over `n` blocks from each pointer, in `N` groups
    /// of eight lanes (lanes beyond them are left alone); lanes from `active` on are idle
    /// (read one block again and again). Two of them: AVX2 alone, and with AVX-512VL's
    /// ternary logic and rotation.
    macro_rules! compress {
        ($name:ident, $feat:literal, $rounds:ident) => {
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name<const N: usize>(
                state: &mut [[u32; LANES]; 4],
                mut ptrs: [*const u8; LANES],
                active: usize,
                n: usize,
            ) {
                let mut s: [[__m256i; 4]; N] = std::array::from_fn(|g| {
                    std::array::from_fn(|w| _mm256_loadu_si256(state[w][g * GROUP..].as_ptr() as *const __m256i))
                });
                for _ in 0..n {
                    let mut m = [[_mm256_setzero_si256(); 16]; N];
                    for (g, mg) in m.iter_mut().enumerate() {
                        for half in 0..2 {
                            let r: [__m256i; GROUP] = std::array::from_fn(|l| {
                                _mm256_loadu_si256(ptrs[g * GROUP + l].add(half * 32) as *const __m256i)
                            });
                            mg[half * 8..half * 8 + 8].copy_from_slice(&transpose(r));
                        }
                    }
                    for p in ptrs.iter_mut().take(active) {
                        *p = p.add(64);
                    }
                    let saved = s;
                    $rounds::<N>(&mut s, &m);
                    for (sg, saved) in s.iter_mut().zip(saved) {
                        for (w, v) in sg.iter_mut().zip(saved) {
                            *w = _mm256_add_epi32(*w, v);
                        }
                    }
                }
                for (g, sg) in s.iter().enumerate() {
                    for (w, v) in sg.iter().enumerate() {
                        _mm256_storeu_si256(state[w][g * GROUP..].as_mut_ptr() as *mut __m256i, *v);
                    }
                }
            }
        };
    }
    compress!(compress, "avx2", rounds);
    compress!(compress_vl, "avx2,avx512f,avx512vl", rounds_vl);

    /// Rows of eight 32-bit words (one lane's 32 bytes each) into columns (word `j` of
    /// every lane).
    #[inline(always)]
    unsafe fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    #[inline(always)]
    unsafe fn f(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
        _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
    }
    #[inline(always)]
    unsafe fn g(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
        _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)))
    }
    #[inline(always)]
    unsafe fn h(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_xor_si256(b, c), d)
    }
    #[inline(always)]
    unsafe fn i(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
        _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, _mm256_set1_epi32(-1))))
    }

    /// The 64 steps of one block for each group, with the four functions and the rotation
    /// given; the groups' steps side by side.
    macro_rules! steps {
        ($s:ident, $m:ident, $f:ident, $g:ident, $h:ident, $i:ident, $rot:ident) => {
            macro_rules! step {
                ($fn:ident, $a:literal, $b:literal, $c:literal, $d:literal, $w:literal, $sh:literal, $k:literal) => {
                    let k = _mm256_set1_epi32($k as u32 as i32);
                    for (sg, mg) in $s.iter_mut().zip($m.iter()) {
                        let t = _mm256_add_epi32(
                            _mm256_add_epi32(sg[$a], $fn(sg[$b], sg[$c], sg[$d])),
                            _mm256_add_epi32(k, mg[$w]),
                        );
                        sg[$a] = _mm256_add_epi32(sg[$b], $rot!(t, $sh));
                    }
                };
            }
            step!($f, 0, 1, 2, 3, 0, 7, 0xd76aa478);
            step!($f, 3, 0, 1, 2, 1, 12, 0xe8c7b756);
            step!($f, 2, 3, 0, 1, 2, 17, 0x242070db);
            step!($f, 1, 2, 3, 0, 3, 22, 0xc1bdceee);
            step!($f, 0, 1, 2, 3, 4, 7, 0xf57c0faf);
            step!($f, 3, 0, 1, 2, 5, 12, 0x4787c62a);
            step!($f, 2, 3, 0, 1, 6, 17, 0xa8304613);
            step!($f, 1, 2, 3, 0, 7, 22, 0xfd469501);
            step!($f, 0, 1, 2, 3, 8, 7, 0x698098d8);
            step!($f, 3, 0, 1, 2, 9, 12, 0x8b44f7af);
            step!($f, 2, 3, 0, 1, 10, 17, 0xffff5bb1);
            step!($f, 1, 2, 3, 0, 11, 22, 0x895cd7be);
            step!($f, 0, 1, 2, 3, 12, 7, 0x6b901122);
            step!($f, 3, 0, 1, 2, 13, 12, 0xfd987193);
            step!($f, 2, 3, 0, 1, 14, 17, 0xa679438e);
            step!($f, 1, 2, 3, 0, 15, 22, 0x49b40821);
            step!($g, 0, 1, 2, 3, 1, 5, 0xf61e2562);
            step!($g, 3, 0, 1, 2, 6, 9, 0xc040b340);
            step!($g, 2, 3, 0, 1, 11, 14, 0x265e5a51);
            step!($g, 1, 2, 3, 0, 0, 20, 0xe9b6c7aa);
            step!($g, 0, 1, 2, 3, 5, 5, 0xd62f105d);
            step!($g, 3, 0, 1, 2, 10, 9, 0x02441453);
            step!($g, 2, 3, 0, 1, 15, 14, 0xd8a1e681);
            step!($g, 1, 2, 3, 0, 4, 20, 0xe7d3fbc8);
            step!($g, 0, 1, 2, 3, 9, 5, 0x21e1cde6);
            step!($g, 3, 0, 1, 2, 14, 9, 0xc33707d6);
            step!($g, 2, 3, 0, 1, 3, 14, 0xf4d50d87);
            step!($g, 1, 2, 3, 0, 8, 20, 0x455a14ed);
            step!($g, 0, 1, 2, 3, 13, 5, 0xa9e3e905);
            step!($g, 3, 0, 1, 2, 2, 9, 0xfcefa3f8);
            step!($g, 2, 3, 0, 1, 7, 14, 0x676f02d9);
            step!($g, 1, 2, 3, 0, 12, 20, 0x8d2a4c8a);
            step!($h, 0, 1, 2, 3, 5, 4, 0xfffa3942);
            step!($h, 3, 0, 1, 2, 8, 11, 0x8771f681);
            step!($h, 2, 3, 0, 1, 11, 16, 0x6d9d6122);
            step!($h, 1, 2, 3, 0, 14, 23, 0xfde5380c);
            step!($h, 0, 1, 2, 3, 1, 4, 0xa4beea44);
            step!($h, 3, 0, 1, 2, 4, 11, 0x4bdecfa9);
            step!($h, 2, 3, 0, 1, 7, 16, 0xf6bb4b60);
            step!($h, 1, 2, 3, 0, 10, 23, 0xbebfbc70);
            step!($h, 0, 1, 2, 3, 13, 4, 0x289b7ec6);
            step!($h, 3, 0, 1, 2, 0, 11, 0xeaa127fa);
            step!($h, 2, 3, 0, 1, 3, 16, 0xd4ef3085);
            step!($h, 1, 2, 3, 0, 6, 23, 0x04881d05);
            step!($h, 0, 1, 2, 3, 9, 4, 0xd9d4d039);
            step!($h, 3, 0, 1, 2, 12, 11, 0xe6db99e5);
            step!($h, 2, 3, 0, 1, 15, 16, 0x1fa27cf8);
            step!($h, 1, 2, 3, 0, 2, 23, 0xc4ac5665);
            step!($i, 0, 1, 2, 3, 0, 6, 0xf4292244);
            step!($i, 3, 0, 1, 2, 7, 10, 0x432aff97);
            step!($i, 2, 3, 0, 1, 14, 15, 0xab9423a7);
            step!($i, 1, 2, 3, 0, 5, 21, 0xfc93a039);
            step!($i, 0, 1, 2, 3, 12, 6, 0x655b59c3);
            step!($i, 3, 0, 1, 2, 3, 10, 0x8f0ccc92);
            step!($i, 2, 3, 0, 1, 10, 15, 0xffeff47d);
            step!($i, 1, 2, 3, 0, 1, 21, 0x85845dd1);
            step!($i, 0, 1, 2, 3, 8, 6, 0x6fa87e4f);
            step!($i, 3, 0, 1, 2, 15, 10, 0xfe2ce6e0);
            step!($i, 2, 3, 0, 1, 6, 15, 0xa3014314);
            step!($i, 1, 2, 3, 0, 13, 21, 0x4e0811a1);
            step!($i, 0, 1, 2, 3, 4, 6, 0xf7537e82);
            step!($i, 3, 0, 1, 2, 11, 10, 0xbd3af235);
            step!($i, 2, 3, 0, 1, 2, 15, 0x2ad7d2bb);
            step!($i, 1, 2, 3, 0, 9, 21, 0xeb86d391);
        };
    }

    // The same four functions in one instruction each (the immediates are their truth
    // tables over b, c, d).
    macro_rules! ternary {
        ($($name:ident = $imm:literal),*) => {$(
            #[target_feature(enable = "avx2,avx512f,avx512vl")]
            #[inline]
            fn $name(b: __m256i, c: __m256i, d: __m256i) -> __m256i {
                _mm256_ternarylogic_epi32::<$imm>(b, c, d)
            }
        )*};
    }
    ternary!(f_vl = 0xca, g_vl = 0xe4, h_vl = 0x96, i_vl = 0x39);

    macro_rules! rotate {
        ($t:expr, $s:literal) => {
            _mm256_or_si256(_mm256_slli_epi32::<$s>($t), _mm256_srli_epi32::<{ 32 - $s }>($t))
        };
    }
    macro_rules! rotate_vl {
        ($t:expr, $s:literal) => {
            _mm256_rol_epi32::<$s>($t)
        };
    }

    /// The 64 steps of one block, for each of `N` groups (`s[group][word]`).
    #[inline(always)]
    unsafe fn rounds<const N: usize>(s: &mut [[__m256i; 4]; N], m: &[[__m256i; 16]; N]) {
        steps!(s, m, f, g, h, i, rotate);
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl")]
    #[inline]
    fn rounds_vl<const N: usize>(s: &mut [[__m256i; 4]; N], m: &[[__m256i; 16]; N]) {
        steps!(s, m, f_vl, g_vl, h_vl, i_vl, rotate_vl);
    }
}

#[cfg(test)]
mod tests {
    use md5::{Digest, Md5};

    use super::*;

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        (0..n)
            .map(|i| (crate::emulator::account::splitmix64(seed ^ i as u64) & 0xff) as u8)
            .collect()
    }

    /// Cuts `data` into pieces at `cuts` (offsets), as blocks and parts are.
    fn pieces(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&data.len())) {
            let c = c.min(data.len()).max(from);
            out.push(Bytes::copy_from_slice(&data[from..c]));
            from = c;
        }
        out
    }

    #[test]
    fn every_length_and_cut_hashes_as_md5_alone_and_side_by_side() {
        // Lengths around the padding edges and block multiples; cuts inside blocks and
        // empty pieces. Queued together, so the thread runs them in lanes (on AVX2).
        let lens = [
            0,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            120,
            128,
            1000,
            4096,
            65_537,
            1 << 20,
            (1 << 20) + 7,
            3 << 20,
        ];
        let mut waiting = Vec::new();
        for (k, &n) in lens.iter().enumerate() {
            let data = bytes(n, k as u64);
            let want: [u8; 16] = Md5::digest(&data).into();
            for cuts in [vec![], vec![n / 3, n / 3, n / 2 + 1], vec![64, 100, 1 << 20]] {
                waiting.push((want, md5_of(pieces(&data, &cuts), (), AHEAD_WAIT), n, cuts));
            }
        }
        for (want, rx, n, cuts) in waiting {
            assert_eq!(rx.blocking_recv().expect("digest"), want, "length {n}, cuts {cuts:?}");
        }
    }

    #[test]
    fn lanes_side_by_side_match_one_at_a_time() {
        // Direct: a wide round over lanes of uneven lengths, then each finished alone.
        if !wide_available() {
            return;
        }
        // All sixteen lanes busy, eleven (the second group's five last idle), and three with
        // five idle in one group; AVX2 alone, and with AVX-512VL where there is.
        let flavours: &[bool] = if vl_available() { &[false, true] } else { &[false] };
        for (busy, &vl) in [LANES, GROUP + 3, MIN_WIDE]
            .into_iter()
            .flat_map(|b| flavours.iter().map(move |v| (b, v)))
        {
            let datas: Vec<Vec<u8>> = (0..busy).map(|k| bytes(64 * (20 + k * 3) + k, 99 + k as u64)).collect();
            let mut lanes: Vec<Lane> = datas
                .iter()
                .map(|d| {
                    let (done, _) = oneshot::channel();
                    Lane::new(Job {
                        pieces: vec![Bytes::copy_from_slice(d)],
                        until: Instant::now(),
                        _hold: Box::new(()),
                        done: Some(done),
                    })
                })
                .collect();
            wide_round_with(&mut lanes, 20, vl);
            for (lane, d) in lanes.iter_mut().zip(&datas) {
                let (done, rx) = oneshot::channel();
                lane.job.done = Some(done);
                while !lane.scalar(usize::MAX) {}
                assert_eq!(
                    rx.blocking_recv().expect("digest"),
                    <[u8; 16]>::from(Md5::digest(d)),
                    "{busy} lanes, AVX-512VL {vl}"
                );
            }
        }
    }
}
