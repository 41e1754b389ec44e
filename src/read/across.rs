//! Prefetch across files: when to fetch the next files of a folder before they are opened.
//!
//! Kernel readahead never crosses the end of a file, and the programs users run on folders
//! (`cp -r`, `rsync`, `tar`, `find -exec`, BCL Convert walking tiles) open their files one
//! after another: each open would pay a round trip before its first byte, so a folder of
//! small files copies at one file per round trip. When the files of one folder are opened
//! in listing order (the order `readdir` gives, and the order `cp`, `rsync` and `tar` use
//! here: names sorted bytewise), the files listed after the one just opened are fetched
//! ahead: whole when small, their first [`FIRST_BYTES`] when large, under the global
//! connection limit and within a share of the memory budget ([`Reader::ahead`]).
//!
//! How it is detected: per `Files/` listing, three opens in a row of files listed one
//! after the other (up to [`MAX_SKIP`] files apart: `rsync` skips files already up to
//! date) start a run; each further open in order slides the run forward. Two are not
//! enough: a BAM and its index are opened that way by every genomics tool. An open anywhere else in the
//! folder ends it, and what was fetched ahead and is still in flight is cancelled.
//! Processes are not told apart: `find -exec` and shell loops open each file from a new
//! process, and are the same pattern.
//!
//! [`Reader::ahead`]: super::Reader::ahead

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::AbortHandle;

use crate::tree::Ino;

/// How far apart (in listing positions) two opens may be and still be "in order".
pub const MAX_SKIP: u32 = 8;
/// Files fetched ahead of the one being opened, at most: enough to keep the connection
/// limit busy with small files at one round trip each.
pub const FILES_AHEAD: usize = 64;
/// Of a large file, only its start is fetched ahead; the handle's own window takes over
/// once it is read.
pub const FIRST_BYTES: u64 = 16 << 20;
/// Opens in order, after the first, before fetching ahead: three files in a row. Two are
/// often a pair read together and no more (a BAM and its index, a FASTQ's two reads).
const MIN_STREAK: u32 = 2;
/// Longest pause between two opens that still continues a run.
const GAP: Duration = Duration::from_secs(30);
/// Folders followed at once (a run per folder being copied).
const RUNS: usize = 64;

/// One folder's run of in-order opens.
#[derive(Debug)]
struct Run {
    /// Position of the last file opened.
    last: u32,
    /// Opens in order so far (0: none yet, only `last` is known).
    streak: u32,
    /// Files up to this position (exclusive) have been started ahead.
    ahead: u32,
    at: Instant,
    /// Fetches started ahead, maybe still running.
    tasks: Vec<AbortHandle>,
}

/// What an open should start.
#[derive(Debug, PartialEq, Eq)]
pub struct Ahead {
    /// Start the files listed from this position on (those before it were started already).
    pub from: u32,
}

/// Runs of in-order opens, per folder.
#[derive(Debug)]
pub struct Across {
    runs: Mutex<lru::LruCache<Ino, Run>>,
}

impl Default for Across {
    fn default() -> Self {
        Across {
            runs: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(RUNS).expect("non-zero"))),
        }
    }
}

impl Across {
    /// The file at position `seq` of folder `dir` was opened: whether to fetch ahead, and
    /// from which position.
    pub fn on_open(&self, dir: Ino, seq: u32) -> Option<Ahead> {
        self.on_open_at(dir, seq, Instant::now())
    }

    fn on_open_at(&self, dir: Ino, seq: u32, now: Instant) -> Option<Ahead> {
        let mut runs = self.runs.lock();
        let Some(run) = runs.get_mut(&dir) else {
            runs.put(
                dir,
                Run {
                    last: seq,
                    streak: 0,
                    ahead: seq + 1,
                    at: now,
                    tasks: Vec::new(),
                },
            );
            return None;
        };
        let in_order = seq > run.last && seq - run.last <= MAX_SKIP && now.duration_since(run.at) <= GAP;
        if seq == run.last && now.duration_since(run.at) <= GAP {
            // The same file again (a second handle, `rsync`'s re-open): nothing changes.
            run.at = now;
            return (run.streak >= MIN_STREAK).then_some(Ahead { from: run.ahead });
        }
        run.at = now;
        run.last = seq;
        if !in_order {
            run.streak = 0;
            run.ahead = seq + 1;
            run.tasks.drain(..).for_each(|t| t.abort());
            return None;
        }
        run.streak += 1;
        run.ahead = run.ahead.max(seq + 1);
        (run.streak >= MIN_STREAK).then_some(Ahead { from: run.ahead })
    }

    /// Files before position `upto` are now started ahead, by `tasks`.
    pub fn started(&self, dir: Ino, upto: u32, tasks: Vec<AbortHandle>) {
        if let Some(run) = self.runs.lock().get_mut(&dir) {
            run.ahead = run.ahead.max(upto);
            run.tasks.retain(|t| !t.is_finished());
            run.tasks.extend(tasks);
        }
    }

    /// Listings with a run in order now.
    #[cfg(test)]
    fn active(&self) -> usize {
        self.runs.lock().iter().filter(|(_, r)| r.streak >= MIN_STREAK).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_in_listing_order_start_a_run_and_slide_it() {
        let a = Across::default();
        let t = Instant::now();
        assert_eq!(a.on_open_at(7, 0, t), None, "one open is no pattern");
        assert_eq!(
            a.on_open_at(7, 1, t + Duration::from_millis(5)),
            None,
            "a BAM and its index"
        );
        assert_eq!(
            a.on_open_at(7, 2, t + Duration::from_millis(7)),
            Some(Ahead { from: 3 })
        );
        a.started(7, 40, Vec::new());
        assert_eq!(
            a.on_open_at(7, 3, t + Duration::from_millis(9)),
            Some(Ahead { from: 40 })
        );
        // rsync skips files it already has.
        assert_eq!(
            a.on_open_at(7, 6, t + Duration::from_millis(12)),
            Some(Ahead { from: 40 })
        );
        assert_eq!(a.active(), 1);
    }

    #[test]
    fn random_opens_never_start_one_and_a_seek_ends_it() {
        let a = Across::default();
        let t = Instant::now();
        for (i, seq) in [50u32, 3, 99, 20, 70, 4, 41].into_iter().enumerate() {
            assert_eq!(a.on_open_at(1, seq, t + Duration::from_millis(i as u64)), None, "{seq}");
        }
        assert_eq!(a.on_open_at(1, 42, t + Duration::from_millis(20)), None);
        assert_eq!(
            a.on_open_at(1, 43, t + Duration::from_millis(20)),
            Some(Ahead { from: 44 })
        );
        // Backwards: the run ends.
        assert_eq!(a.on_open_at(1, 10, t + Duration::from_millis(21)), None);
        assert_eq!(a.active(), 0);
        // A long pause ends it too.
        assert_eq!(a.on_open_at(1, 11, t + Duration::from_millis(22)), None);
        assert_eq!(
            a.on_open_at(1, 12, t + Duration::from_millis(23)),
            Some(Ahead { from: 13 })
        );
        assert_eq!(a.on_open_at(1, 13, t + Duration::from_secs(60)), None);
    }

    #[test]
    fn folders_are_followed_separately() {
        let a = Across::default();
        let t = Instant::now();
        for k in 0..2 {
            a.on_open_at(1, k, t);
            a.on_open_at(2, 5 + k, t);
        }
        assert!(a.on_open_at(1, 2, t + Duration::from_millis(1)).is_some());
        assert!(a.on_open_at(2, 7, t + Duration::from_millis(1)).is_some());
    }
}
