//! Memory for listings across the whole mount.
//!
//! One listing is capped by entries (`--max-listing`), but a server (or an account) with
//! many large directories could still fill memory one directory at a time: the kernel
//! holds a directory it walked through, so forgetting alone frees nothing while a walk
//! goes on. So every installed listing is charged an estimate of what it costs, and when
//! the total passes the budget (`--listing-memory`) the least recently looked-at listings
//! are dropped (listed again when next looked at, as after a forget). A listing that could
//! never fit is refused whole: EIO, with the reason in the directory's `.error`. One
//! endless directory thus costs at most the budget and never makes the others fail.
//!
//! The charge table is authoritative only after a purge: directories freed or forgotten
//! elsewhere leave their entries behind, and the purge that runs before any eviction
//! drops those, so nothing has to report frees here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::fill::Listing;
use super::Ino;

/// What a listed entry costs beyond the bytes it carries: its node in the inode table,
/// its name in the directory's map and the table's own slots (measured: ~300 bytes of
/// RSS per listed file on the hostile endless-directory server, before names).
pub const ENTRY_BYTES: u64 = 320;

/// Default budget: a few listings of the largest size one listing may have
/// ([`crate::api::client::MAX_LIST_ENTRIES`] entries), well inside a laptop's memory.
pub const DEFAULT_LISTING_MEMORY: u64 = 512 << 20;

/// The charges of installed listings.
pub struct Budget {
    limit: u64,
    /// Per directory: its charge and when it was last looked at.
    charged: Mutex<HashMap<Ino, Charge>>,
    tick: AtomicU64,
    /// Listings dropped to make room (for tests and status).
    pub evicted: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Charge {
    bytes: u64,
    used: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit: limit.max(1),
            charged: Mutex::default(),
            tick: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether a listing of `bytes` could be held at all.
    pub fn fits(&self, bytes: u64) -> bool {
        bytes <= self.limit
    }

    /// Charges directory `ino` for its new listing (replacing its previous charge).
    pub fn charge(&self, ino: Ino, bytes: u64) {
        let used = self.tick.fetch_add(1, Ordering::Relaxed);
        self.charged.lock().insert(ino, Charge { bytes, used });
    }

    /// Marks directory `ino` as looked at now.
    pub fn touch(&self, ino: Ino) {
        if let Some(c) = self.charged.lock().get_mut(&ino) {
            c.used = self.tick.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the charges pass the budget (before any purge).
    pub fn is_over(&self) -> bool {
        self.charged() > self.limit
    }

    /// The charged directories.
    pub fn inos(&self) -> Vec<Ino> {
        self.charged.lock().keys().copied().collect()
    }

    /// The directories to drop so that the charges left fit the budget; `keep` is never
    /// chosen. `rank` says whether a charged directory still holds its listing (`None`:
    /// its charge is forgotten first) and in which class it goes: class 0 before class 1
    /// (a listing whose sub-directories hold listings of their own is dropped last, as
    /// dropping it frees little while the kernel holds those), least recently used first
    /// within a class.
    pub fn over(&self, keep: Ino, rank: impl Fn(Ino) -> Option<u8>) -> Vec<Ino> {
        let mut charged = self.charged.lock();
        let total: u64 = charged.values().map(|c| c.bytes).sum();
        if total <= self.limit {
            return Vec::new();
        }
        let mut classes = HashMap::new();
        charged.retain(|ino, _| match rank(*ino) {
            Some(c) => {
                classes.insert(*ino, c);
                true
            }
            None => *ino == keep,
        });
        let mut total: u64 = charged.values().map(|c| c.bytes).sum();
        let mut by_age: Vec<(u8, u64, Ino, u64)> = charged
            .iter()
            .filter(|(ino, _)| **ino != keep)
            .map(|(ino, c)| (classes.get(ino).copied().unwrap_or(0), c.used, *ino, c.bytes))
            .collect();
        by_age.sort_unstable();
        let mut out = Vec::new();
        for (_, _, ino, bytes) in by_age {
            if total <= self.limit {
                break;
            }
            charged.remove(&ino);
            total -= bytes;
            out.push(ino);
        }
        self.evicted.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Bytes charged now (an over-estimate until the next purge).
    pub fn charged(&self) -> u64 {
        self.charged.lock().values().map(|c| c.bytes).sum()
    }
}

impl Listing {
    /// What holding this listing costs, estimated: [`ENTRY_BYTES`] per entry it makes, plus
    /// the names and the raw JSON kept for `.json` and hidden files.
    pub(super) fn cost(&self) -> u64 {
        let n = |len: usize| len as u64;
        match self {
            Listing::Files(l) | Listing::Folder(l) => l
                .items
                .iter()
                .map(|f| ENTRY_BYTES + n(f.name.len()) + n(f.path.as_deref().map_or(0, str::len)))
                .sum(),
            // An entity directory and its `.id.<ID>` link each.
            Listing::Entities(_, l) | Listing::Outputs(l) | Listing::FilesMetadata(l) => l
                .items
                .iter()
                .map(|e| 2 * ENTRY_BYTES + n(e.raw.len()) + 2 * n(e.entity.name.as_deref().map_or(0, str::len)))
                .sum(),
            Listing::Properties(l) => l
                .items
                .iter()
                .map(|p| {
                    let values: usize = p.content.iter().chain(&p.items).map(|v| v.get().len()).sum();
                    ENTRY_BYTES * (1 + n(p.items.len())) + n(values)
                })
                .sum(),
            Listing::Token(v) => ENTRY_BYTES + n(v.to_string().len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_and_the_new_one_stays() {
        let b = Budget::new(100);
        b.charge(1, 40);
        b.charge(2, 40);
        b.touch(1);
        b.charge(3, 40);
        // 120 > 100: 2 is the oldest look (1 was touched after it).
        assert_eq!(b.over(3, |_| Some(0)), [2]);
        assert_eq!(b.charged(), 80);
        b.charge(4, 90);
        assert_eq!(b.over(4, |_| Some(0)), [1, 3]);
        // Charges of directories gone meanwhile are dropped before anything is evicted.
        b.charge(5, 20);
        assert_eq!(b.over(5, |ino| (ino != 4).then_some(0)), Vec::<Ino>::new());
        // A parent of other listings goes after the leaves, however old.
        let b = Budget::new(100);
        b.charge(1, 10);
        b.charge(2, 50);
        b.charge(3, 50);
        assert_eq!(b.over(3, |ino| Some(u8::from(ino == 1))), [2]);
        assert!(!b.fits(101));
    }
}
