//! Prefetch policy per open handle: is this handle reading sequentially, and which blocks
//! should be fetched ahead of it.
//!
//! A handle's window starts at [`INITIAL_WINDOW_BLOCKS`] once two reads follow each other
//! and doubles per read up to a cap the reader gives (its fair share of the cache when many
//! handles prefetch at once). A seek resets it and cancels the parts fetched for the old
//! position. Prefetch starts whole parts only: a window sliding one block per read would
//! otherwise send a 1 MiB request per read, paying a round trip for each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::PART_BLOCKS;

/// First prefetch window once a handle reads sequentially.
pub const INITIAL_WINDOW_BLOCKS: u64 = 4;
/// Reads within this distance of where the handle left off still count as sequential:
/// the kernel issues readahead requests concurrently and slightly out of order.
pub const SEQ_TOLERANCE: u64 = 8 << 20;

/// What a read should do besides fetching its own blocks.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub sequential: bool,
    /// Blocks `[from, to)` to start fetching ahead.
    pub prefetch: Option<(u64, u64)>,
}

/// One handle's share of the reader's count of prefetching handles, given back when
/// dropped.
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

/// Per-handle cursor and window.
#[derive(Debug, Default)]
pub struct Window {
    /// End of the last read; `None` before the first.
    next: Option<u64>,
    window: u64,
    /// Prefetch has been started up to this block (exclusive).
    prefetched_to: u64,
    /// Prefetch parts started by this handle and maybe still running: blocks `[first, end)`.
    parts: Vec<(u64, u64, tokio::task::AbortHandle)>,
    /// Present while this handle reads sequentially.
    prefetching: Option<Prefetching>,
}

impl Window {
    /// The window of a handle known to read from the start to the end (a copy's): its first
    /// read, at offset 0, already counts as sequential.
    pub fn from_start() -> Window {
        Window {
            next: Some(0),
            ..Window::default()
        }
    }

    /// Decides for a read of bytes `[offset, end)` (blocks `b0..=b1`, file's last block
    /// `last`); `cap` is the largest window allowed now, `count` the reader's count of
    /// prefetching handles.
    #[allow(clippy::too_many_arguments)]
    pub fn on_read(
        &mut self,
        offset: u64,
        end: u64,
        b0: u64,
        b1: u64,
        last: u64,
        cap: impl Fn() -> u64,
        count: &Arc<AtomicU64>,
    ) -> Plan {
        let sequential = self
            .next
            .is_some_and(|n| offset + SEQ_TOLERANCE >= n && offset <= n + SEQ_TOLERANCE);
        if sequential {
            if self.prefetching.is_none() {
                self.prefetching = Some(Prefetching::join(count));
            }
            self.window = if self.window == 0 {
                INITIAL_WINDOW_BLOCKS
            } else {
                self.window * 2
            }
            .min(cap());
        } else {
            self.window = 0;
            self.prefetched_to = 0;
            self.prefetching = None;
            // A seek: what was prefetched for the old position is no longer useful.
            self.cancel(Some((b0, b1)));
        }
        self.next = Some(self.next.map_or(end, |n| if sequential { n.max(end) } else { end }));
        let from = self.prefetched_to.max(b1 + 1);
        let to = (b1 + 1 + self.window).min(last + 1);
        let worth = from < to && (to - from >= PART_BLOCKS.min(self.window) || to == last + 1);
        let prefetch = (self.window > 0 && worth).then(|| {
            self.prefetched_to = to;
            (from, to)
        });
        Plan { sequential, prefetch }
    }

    /// Where the handle's reads have reached (the end of the furthest sequential read).
    pub fn reached(&self) -> Option<u64> {
        self.next
    }

    /// Records a prefetch part started for blocks `[first, end)`.
    pub fn started(&mut self, first: u64, end: u64, task: tokio::task::AbortHandle) {
        // Only running parts are kept: a long sequential read starts thousands.
        self.parts.retain(|(_, _, t)| !t.is_finished());
        self.parts.push((first, end, task));
    }

    /// Prefetch stopped at `block` (memory was short): try again from there next read.
    pub fn stopped_at(&mut self, block: u64) {
        self.prefetched_to = self.prefetched_to.min(block);
    }

    /// The parts still running, handed to whoever outlives this window.
    pub fn take_parts(&mut self) -> Vec<tokio::task::AbortHandle> {
        self.parts
            .drain(..)
            .map(|(_, _, t)| t)
            .filter(|t| !t.is_finished())
            .collect()
    }

    /// Cancels the parts that do not cover blocks `keep` (`[b0, b1]`).
    pub fn cancel(&mut self, keep: Option<(u64, u64)>) {
        self.parts.retain(|(first, end, task)| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_grow_while_sequential_and_reset_on_a_seek() {
        let count = Arc::new(AtomicU64::new(0));
        let mut w = Window::default();
        let mb = 1u64 << 20;
        let p = w.on_read(0, mb, 0, 0, 999, || 128, &count);
        assert_eq!(
            p,
            Plan {
                sequential: false,
                prefetch: None
            }
        );
        let p = w.on_read(mb, 2 * mb, 1, 1, 999, || 128, &count);
        assert!(p.sequential);
        assert_eq!(p.prefetch, Some((2, 6)), "the first window");
        let p = w.on_read(2 * mb, 3 * mb, 2, 2, 999, || 128, &count);
        assert_eq!(p.prefetch, None, "5 more blocks are less than a whole part");
        let p = w.on_read(3 * mb, 4 * mb, 3, 3, 999, || 128, &count);
        assert_eq!(p.prefetch, Some((6, 20)), "the window doubled to 16");
        assert_eq!(count.load(Ordering::Relaxed), 1);
        let p = w.on_read(500 * mb, 501 * mb, 500, 500, 999, || 128, &count);
        assert_eq!(
            p,
            Plan {
                sequential: false,
                prefetch: None
            }
        );
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_window_respects_its_cap_and_the_end_of_the_file() {
        let count = Arc::new(AtomicU64::new(0));
        let mut w = Window::default();
        let mb = 1u64 << 20;
        let mut last = None;
        for i in 0..10 {
            last = w
                .on_read(i * mb, (i + 1) * mb, i, i, 11, || 2, &count)
                .prefetch
                .or(last);
        }
        assert_eq!(last.map(|(_, to)| to), Some(12), "never past the last block");
    }
}
