//! Prefetch across files and listings: when to fetch what a walk will open next.
//!
//! Kernel readahead never crosses the end of a file, and the programs users run on folders
//! (`cp -r`, `rsync`, `tar`, `find`, a shell glob such as `Samples/*/Files/*`, BCL Convert
//! walking tiles) open their files and directories one after another: each would pay a
//! round trip before its first byte or entry. When they are opened in walk order (the
//! order `readdir` gives, and the order `cp`, `rsync`, `tar` and a sorted glob use here:
//! names sorted bytewise; see [`crate::tree::walk`] for how a position is defined across
//! sibling samples and projects), what comes next is fetched ahead:
//! - files ([`Reader::ahead`]): whole when small, their first [`FIRST_BYTES`] when large
//!   ([`WHOLE_BYTES`] while the files opened are being read to their end: a copy), under
//!   the global connection limit and within a share of the memory budget; [`FILES_FIRST`]
//!   at a run's first open, twice as many at each further one, up to [`FILES_AHEAD`]. A
//!   copy's files are also opened around the kernel's page cache (read once, they would
//!   only be copied into it and out again);
//! - listings ([`Listings`]): the directories the walk will read next, a few to
//!   [`LISTINGS_AHEAD`] beyond it, at most [`LISTINGS_IN_FLIGHT`] at once; and the first
//!   [`SWEEP_LISTINGS`] of those a shell glob looks up before it reads any.
//!
//! How a walk is detected, per pattern (`Samples/*/Files`, `Projects/*/Samples/*/Files/…`):
//! three opens in a row, each after the one before in walk order (up to [`MAX_SKIP`]
//! places on at the level that moved: `rsync` skips files already up to date) start a run;
//! each further open in order slides it forward. Two are not enough: a BAM and its index
//! are opened that way by every genomics tool, and `ls A B` lists two folders. Two are
//! enough when the first file was read to its end ([`Runs::read_to_end`]): that is a copy
//! (a genomics tool reads a BAM's header, then its index), and its second file is then
//! fetched whole from its open, its parts side by side, with the next ones. A run
//! fetches ahead only across the levels the walk has itself been seen to move at: a glob
//! over one project's samples never reaches into the next project. An open anywhere else
//! ends the run, and what it started that is still in flight is cancelled. Processes are
//! not told apart: `find -exec` and shell loops open each file from a new process, and are
//! the same pattern.
//!
//! [`Reader::ahead`]: super::Reader::ahead

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

use crate::tree::walk::WalkPos;
use crate::tree::{Ino, Tree};

/// How far apart (in places at the level that moved) two opens may be and still be "in
/// order"; an open that moves to a later sibling must also start near its beginning.
pub const MAX_SKIP: u32 = 8;
/// Files fetched ahead of the one being opened, at most: enough to keep the connection
/// limit busy with small files at one round trip each.
pub const FILES_AHEAD: usize = 64;
/// Files fetched ahead at a run's first open; twice as many at each further open, up to
/// [`FILES_AHEAD`]. The file opened next must arrive first: 64 started at once shared the
/// link and the server with it, and the first waited 140-280 ms instead of one round trip.
pub const FILES_FIRST: usize = 4;
/// Of a large file, only its start is fetched ahead; the handle's own window takes over
/// once it is read.
pub const FIRST_BYTES: u64 = 16 << 20;
/// Of each large file, fetched ahead while the files closed last were read to their end
/// (`cp`, `rsync`, `cat`): with only their first 16 MiB ahead, each 64 MiB FASTQ of a
/// copy waited for the rest to be fetched once opened (a round trip and a part's
/// transfer per file: a cohort copy of 64 MiB files went at half the speed of one with
/// the files ahead whole). Header-only walks (`samtools view -H` over many BAMs) keep
/// [`FIRST_BYTES`].
pub const WHOLE_BYTES: u64 = 64 << 20;
/// Listings fetched ahead of a walk, at most, beyond where it is: at 30-300 ms a listing,
/// 16 in flight keep a walk that lists one directory per entry moving at the network's pace.
/// A run starts with [`FIRST_WINDOW`] and doubles with each open in order, so a walk that
/// stops early costs at most that few listings more than it made itself.
pub const LISTINGS_AHEAD: usize = 32;
const FIRST_WINDOW: usize = 4;
/// Listing requests made ahead at once, over the whole mount (they also take one of the
/// content connections each, so reads and listings share one budget).
pub const LISTINGS_IN_FLIGHT: usize = 16;
/// Opens in order, after the first, before fetching ahead: three in a row.
pub const MIN_STREAK: u32 = 2;
/// Listings a sweep of lookups starts, at most (see [`Listings::on_lookup`]): the walk's
/// first directories, listed together instead of one after another as it opens them (three
/// round trips before its own run starts), and all that a sweep which opens nothing costs.
pub const SWEEP_LISTINGS: usize = LISTINGS_IN_FLIGHT;
/// Longest pause between two opens that still continues a run.
const GAP: Duration = Duration::from_secs(30);
/// Walks followed at once (a run per pattern being walked).
const RUNS: usize = 64;

/// One walk's run of in-order opens.
#[derive(Debug)]
struct Run {
    /// Position of the last open.
    last: Box<[u32]>,
    /// Opens in order so far (0: none yet, only `last` is known).
    streak: u32,
    /// Which way the walk goes, once it has moved.
    backward: Option<bool>,
    /// Everything up to this position (down to it, backward) was started ahead.
    ahead: Option<Box<[u32]>>,
    /// The shallowest level the walk has moved at: fetching ahead moves no level above it.
    top: usize,
    at: Instant,
    /// Fetches started ahead, maybe still running.
    tasks: Vec<AbortHandle>,
    /// The file at `last` was read to its end.
    whole: bool,
    /// An open in order followed a file read to its end: a copy, going from its second open.
    copying: bool,
    /// It has gone ahead already (a [`Go`] was given).
    going: bool,
}

impl Run {
    fn new(at: &[u32], now: Instant) -> Run {
        Run {
            last: at.into(),
            streak: 0,
            backward: None,
            ahead: None,
            top: at.len().saturating_sub(1),
            at: now,
            tasks: Vec::new(),
            whole: false,
            copying: false,
            going: false,
        }
    }

    fn go(&mut self) -> Option<Go> {
        let backward = self.backward.unwrap_or(false);
        let first = !self.going;
        let started = |a: &[u32]| (a >= &*self.last) != backward || a == &*self.last;
        let fresh = self.ahead.as_deref().is_none_or(|a| !started(a));
        let go = (self.streak >= MIN_STREAK || self.copying).then(|| Go {
            after: match &self.ahead {
                Some(a) if (**a > *self.last) != backward => a.clone(),
                _ => self.last.clone(),
            },
            top: self.top,
            streak: self.streak,
            backward,
            first,
            fresh,
            copying: self.copying,
        });
        self.going |= go.is_some();
        go
    }
}

/// What an open in order should start.
#[derive(Debug, PartialEq, Eq)]
pub struct Go {
    /// Start what comes after this position (what is before it was started already).
    pub after: Box<[u32]>,
    /// Move no level above this one.
    pub top: usize,
    /// Opens in order so far.
    pub streak: u32,
    /// The walk goes backward (bash globs a pattern's directories in reverse).
    pub backward: bool,
    /// The run's first.
    pub first: bool,
    /// The file opened now was not started ahead by an earlier open (the run's first, or
    /// the first in a directory the walk had not been seen to reach).
    pub fresh: bool,
    /// A copy: it began with a file read to its end ([`Runs::read_to_end`]).
    pub copying: bool,
}

impl Go {
    /// Whether position `at` lies beyond `after`, in the walk's direction.
    pub fn beyond(&self, at: &[u32]) -> bool {
        match self.backward {
            false => at > &*self.after,
            true => at < &*self.after,
        }
    }
}

/// How many files after the one opened a run fetches ahead at its `streak`-th open in order
/// (a copy starts at its first, [`FILES_FIRST`] as a run of three does).
pub fn files_ahead(streak: u32) -> usize {
    (FILES_FIRST << streak.saturating_sub(MIN_STREAK).min(8)).min(FILES_AHEAD)
}

/// The level at which `new` comes next to `last` in walk order, if it does closely, and
/// whether backward: the first level that differs moved by at most [`MAX_SKIP`], and
/// (forward) the levels below it start near their beginning.
fn step(last: &[u32], new: &[u32]) -> Option<(usize, bool)> {
    if last.len() != new.len() {
        return None;
    }
    let k = last.iter().zip(new).position(|(a, b)| a != b)?;
    if new[k] > last[k] {
        let near = new[k] - last[k] <= MAX_SKIP && new[k + 1..].iter().all(|x| *x <= MAX_SKIP);
        near.then_some((k, false))
    } else {
        (last[k] - new[k] <= MAX_SKIP).then_some((k, true))
    }
}

/// Runs of in-order opens, one per walk pattern.
#[derive(Debug)]
pub struct Runs {
    runs: Mutex<lru::LruCache<u64, Run>>,
}

impl Default for Runs {
    fn default() -> Self {
        Runs {
            runs: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(RUNS).expect("non-zero"))),
        }
    }
}

impl Runs {
    /// Something at position `at` of walk `key` was opened: whether to fetch ahead, and from
    /// where.
    pub fn on_open(&self, key: u64, at: &[u32]) -> Option<Go> {
        self.on_open_at(key, at, Instant::now())
    }

    fn on_open_at(&self, key: u64, at: &[u32], now: Instant) -> Option<Go> {
        let mut runs = self.runs.lock();
        let Some(run) = runs.get_mut(&key) else {
            if let Some((_, old)) = runs.push(key, Run::new(at, now)) {
                old.tasks.iter().for_each(AbortHandle::abort);
            }
            return None;
        };
        let recent = now.duration_since(run.at) <= GAP;
        if *run.last == *at && recent {
            // The same again (a second handle, `rsync`'s re-open): nothing changes.
            run.at = now;
            return run.go().map(|g| Go {
                first: false,
                fresh: false,
                ..g
            });
        }
        let way = step(&run.last, at).filter(|(_, back)| recent && run.backward.is_none_or(|b| b == *back));
        match way {
            Some((level, back)) => {
                run.at = now;
                run.last = at.into();
                run.streak += 1;
                run.copying |= std::mem::take(&mut run.whole);
                run.backward = Some(back);
                run.top = run.top.min(level);
                run.go()
            }
            None => {
                run.tasks.drain(..).for_each(|t| t.abort());
                *run = Run::new(at, now);
                None
            }
        }
    }

    /// Where the run of walk `key` stands, if its last open is still `at` (to go on after a
    /// listing it waited for came in).
    pub fn resume(&self, key: u64, at: &[u32]) -> Option<Go> {
        let mut runs = self.runs.lock();
        let run = runs.get_mut(&key)?;
        (*run.last == *at).then(|| run.go()).flatten()
    }

    /// The file at position `at` of walk `key` was read to its end: if it is the walk's
    /// last open, the next open in order continues a copy.
    pub fn read_to_end(&self, key: u64, at: &[u32]) {
        if let Some(run) = self.runs.lock().peek_mut(&key) {
            if *run.last == *at {
                run.whole = true;
            }
        }
    }

    /// What comes up to position `upto` is now started ahead, by `tasks`.
    pub fn started(&self, key: u64, upto: &[u32], tasks: Vec<AbortHandle>) {
        if let Some(run) = self.runs.lock().get_mut(&key) {
            let backward = run.backward.unwrap_or(false);
            if run.ahead.as_deref().is_none_or(|a| (a < upto) != backward && a != upto) {
                run.ahead = Some(upto.into());
            }
            run.tasks.retain(|t| !t.is_finished());
            run.tasks.extend(tasks);
        }
    }

    /// Walks with a run in order now.
    #[cfg(test)]
    fn active(&self) -> usize {
        self.runs.lock().iter().filter(|(_, r)| r.streak >= MIN_STREAK).count()
    }
}

/// Listings fetched ahead of a walk: when directories are opened in walk order, the ones the
/// walk will open next are listed before it gets there.
#[derive(Clone)]
pub struct Listings(Arc<Inner>);

struct Inner {
    tree: Arc<Tree>,
    runs: Runs,
    /// Lookups in walk order, followed apart from the opens: a sweep ends when the walk
    /// starts opening from its first directory, and must not cancel what it started.
    sweeps: Runs,
    slots: Arc<Semaphore>,
    /// The content connections, shared.
    connections: Arc<Semaphore>,
}

impl Listings {
    pub fn new(tree: Arc<Tree>, connections: Arc<Semaphore>) -> Listings {
        Listings(Arc::new(Inner {
            tree,
            runs: Runs::default(),
            sweeps: Runs::default(),
            slots: Arc::new(Semaphore::new(LISTINGS_IN_FLIGHT)),
            connections,
        }))
    }

    /// Directory `ino` is being opened: when a walk is under way, lists what it opens next.
    /// Needs a tokio runtime.
    pub fn on_opendir(&self, ino: Ino) {
        let Some(w) = self.0.tree.dir_walk(ino) else { return };
        if let Some(go) = self.0.runs.on_open(w.key, &w.at) {
            self.start(&w, go);
        }
    }

    /// Directory `ino`, not listed yet, was looked up. A shell glob (`Samples/*/Files/*`)
    /// looks up every sample's `Files` before it opens the first: three lookups in walk
    /// order start the listings of the directories they passed, this one and those after
    /// it, [`SWEEP_LISTINGS`] in all, once per sweep; the opens that follow drive the rest.
    /// Needs a tokio runtime.
    pub fn on_lookup(&self, ino: Ino) {
        let tree = &self.0.tree;
        if !tree.wants_listing(ino) {
            return;
        }
        let Some(w) = tree.dir_walk(ino) else { return };
        let Some(go) = self.0.sweeps.on_open(w.key, &w.at) else {
            return;
        };
        if go.streak != MIN_STREAK {
            return;
        }
        let passed = tree.dirs_after(&w, &w.at, go.top, MIN_STREAK as usize, !go.backward);
        let after = tree.dirs_after(&w, &w.at, go.top, SWEEP_LISTINGS - 1 - passed.items.len(), go.backward);
        let dirs = passed.items.iter().chain(after.items.iter()).map(|(_, d)| *d);
        let tasks = std::iter::once(ino)
            .chain(dirs)
            .filter(|d| tree.wants_listing(*d))
            .map(|d| self.fill(d, None))
            .collect();
        self.0.sweeps.started(w.key, &w.at, tasks);
    }

    /// Starts the listings after `w` that `go` allows and that are not started yet. A
    /// listing the walk needs to go on (the next project's `Samples/`, say) is fetched
    /// first, and the walk's run goes on from there once it is in.
    fn start(&self, w: &WalkPos, go: Go) {
        let tree = &self.0.tree;
        let window = (FIRST_WINDOW << go.streak.saturating_sub(MIN_STREAK).min(4)).min(LISTINGS_AHEAD);
        let next = tree.dirs_after(w, &w.at, go.top, window, go.backward);
        let mut tasks = Vec::new();
        let mut upto = None;
        for (at, dir) in next.items {
            if !go.beyond(&at) {
                continue;
            }
            if tree.wants_listing(dir) {
                tasks.push(self.fill(dir, None));
            }
            upto = Some(at);
        }
        if let Some(dir) = next.blocked {
            tasks.push(self.fill(dir, Some(w.clone())));
        }
        self.0.runs.started(w.key, upto.as_deref().unwrap_or(&go.after), tasks);
    }

    /// Lists `dir` ahead; then, for a listing that blocked walk `then`, goes on with the
    /// walk's run if it is still where it was.
    fn fill(&self, dir: Ino, then: Option<WalkPos>) -> AbortHandle {
        self.0.tree.fills_ahead_started.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            {
                let inner = &me.0;
                let Ok(_slot) = inner.slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok(_conn) = inner.connections.clone().acquire_owned().await else {
                    return;
                };
                inner.tree.fill_ahead(dir).await;
            }
            if let Some(w) = then {
                if let Some(go) = me.0.runs.resume(w.key, &w.at) {
                    me.start(&w, go);
                }
            }
        })
        .abort_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t: Instant, n: u64) -> Instant {
        t + Duration::from_millis(n)
    }

    #[test]
    fn opens_in_listing_order_start_a_run_and_slide_it() {
        let a = Runs::default();
        let t = Instant::now();
        assert_eq!(a.on_open_at(7, &[0], t), None, "one open is no pattern");
        assert_eq!(a.on_open_at(7, &[1], ms(t, 5)), None, "a BAM and its index");
        let go = a.on_open_at(7, &[2], ms(t, 7)).unwrap();
        assert_eq!((&*go.after, go.top), (&[2][..], 0));
        a.started(7, &[39], Vec::new());
        assert_eq!(&*a.on_open_at(7, &[3], ms(t, 9)).unwrap().after, &[39]);
        // rsync skips files it already has.
        assert_eq!(&*a.on_open_at(7, &[6], ms(t, 12)).unwrap().after, &[39]);
        assert_eq!(a.active(), 1);
    }

    // A file read to its end, then the next in order: a copy, going from its second open
    // (the second file is the run's first, fetched ahead from its open). Read partly (a BAM's
    // header, then its index), two opens are still no pattern.
    #[test]
    fn a_file_read_to_its_end_makes_the_next_open_a_copy() {
        let a = Runs::default();
        let t = Instant::now();
        assert_eq!(a.on_open_at(3, &[0], t), None);
        assert_eq!(a.on_open_at(3, &[1], ms(t, 1)), None, "the first not read to its end");
        let b = Runs::default();
        assert_eq!(b.on_open_at(3, &[0], t), None);
        b.read_to_end(3, &[5]); // another file's end: not the walk's last open
        b.read_to_end(3, &[0]);
        let go = b.on_open_at(3, &[1], ms(t, 1)).unwrap();
        assert!(go.first && go.fresh && go.streak == 1 && *go.after == [1]);
        assert_eq!(files_ahead(go.streak), FILES_FIRST);
        b.started(3, &[3], Vec::new());
        let again = b.on_open_at(3, &[2], ms(t, 2)).unwrap();
        assert!(!again.first, "the run goes on, whether or not each file is read whole");
        assert!(!again.fresh, "started ahead");
        assert!(
            b.on_open_at(3, &[4], ms(t, 3)).unwrap().fresh,
            "beyond what was started"
        );
    }

    #[test]
    fn random_opens_never_start_one_and_a_seek_ends_it() {
        let a = Runs::default();
        let t = Instant::now();
        for (i, seq) in [50u32, 3, 99, 20, 70, 4, 41].into_iter().enumerate() {
            assert_eq!(a.on_open_at(1, &[seq], ms(t, i as u64)), None, "{seq}");
        }
        assert_eq!(a.on_open_at(1, &[42], ms(t, 20)), None);
        assert!(a.on_open_at(1, &[43], ms(t, 20)).is_some());
        // Backwards: the run ends.
        assert_eq!(a.on_open_at(1, &[10], ms(t, 21)), None);
        assert_eq!(a.active(), 0);
        // A long pause ends it too.
        assert_eq!(a.on_open_at(1, &[11], ms(t, 22)), None);
        assert!(a.on_open_at(1, &[12], ms(t, 23)).is_some());
        assert_eq!(a.on_open_at(1, &[13], t + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_walk_backward_is_a_walk_too_and_turning_ends_it() {
        // bash globs `Samples/*/Files/*` reading the samples' Files/ last to first.
        let a = Runs::default();
        let t = Instant::now();
        a.on_open_at(4, &[0, 9], t);
        assert_eq!(a.on_open_at(4, &[0, 8], ms(t, 1)), None);
        let go = a.on_open_at(4, &[0, 7], ms(t, 2)).unwrap();
        assert!(go.backward && go.beyond(&[0, 6]) && !go.beyond(&[0, 8]));
        a.started(4, &[0, 3], Vec::new());
        assert_eq!(&*a.on_open_at(4, &[0, 6], ms(t, 3)).unwrap().after, &[0, 3]);
        assert_eq!(a.on_open_at(4, &[0, 7], ms(t, 4)), None, "turning forward ends it");
    }

    #[test]
    fn walks_are_followed_separately() {
        let a = Runs::default();
        let t = Instant::now();
        for k in 0..2 {
            a.on_open_at(1, &[k], t);
            a.on_open_at(2, &[5 + k], t);
        }
        assert!(a.on_open_at(1, &[2], ms(t, 1)).is_some());
        assert!(a.on_open_at(2, &[7], ms(t, 1)).is_some());
    }

    #[test]
    fn a_walk_across_siblings_moves_the_level_it_has_shown_and_no_higher() {
        let a = Runs::default();
        let t = Instant::now();
        // Two files in each of the samples of a project: [project, sample, file].
        a.on_open_at(3, &[0, 0, 0], t);
        assert_eq!(a.on_open_at(3, &[0, 0, 1], ms(t, 1)), None);
        let go = a.on_open_at(3, &[0, 1, 0], ms(t, 2)).unwrap();
        assert_eq!(
            go.top, 1,
            "the walk moved from sample to sample, not yet across projects"
        );
        let go = a.on_open_at(3, &[1, 0, 0], ms(t, 3)).unwrap();
        assert_eq!(go.top, 0, "now it did");
        // A sibling far ahead, or the middle of the next sibling, is not the walk going on.
        assert_eq!(a.on_open_at(3, &[1, 20, 0], ms(t, 4)), None);
        a.on_open_at(3, &[1, 21, 0], ms(t, 5));
        assert_eq!(a.on_open_at(3, &[1, 22, 30], ms(t, 6)), None);
    }
}
