//! Walk order: where a directory or a file stands in the walk a program makes over many
//! listings, and what comes after it.
//!
//! A walk over a project repeats one path below each of many siblings: `find` and `cp -r`
//! enter `Samples/A/Files`, then `Samples/B/Files`, …; a glob `Samples/*/Files/*` reads the
//! same directories without entering the samples themselves. So a directory's place is
//! given by a *pattern* and indices: climbing from it to the root, every step through a
//! listed entry (a sample in `Samples/`, a project in `Projects/`) is a wildcard with the
//! entry's index among its listed siblings, every other step (`Files`, `Samples`, fixed by
//! the layout) keeps its name. Up to [`WALK_LEVELS`] wildcards are kept: for
//! `Projects/P/Samples/S/Files` the pattern is `Projects/*/Samples/*/Files` and the indices
//! are P's and S's. A file adds its place in its listing's walk order ([`Dir::files`]).
//!
//! What comes after a position is the next one in that order (the last index moving
//! fastest), resolved through the tree as it is: a sibling without the named step is
//! passed over, an index past the end moves the level above, and a listing not fetched yet
//! stops the enumeration there (it says which, so it can be fetched). Positions compare
//! as index sequences, so "the walk is moving forward" is a comparison, not a search.
//!
//! [`Dir::files`]: super::Dir

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::{dir_ref, Ino, Node, NodeKind, RemoteFile, Tree, ROOT};

/// Wildcard levels a pattern keeps: two are enough for `Projects/*/Samples/*/Files` and
/// `BioSamples/*/Datasets/*/Files`, and bound the work of every open.
pub const WALK_LEVELS: usize = 2;
/// Steps climbed from a directory to find its wildcards: a directory deep inside a run
/// folder has no walk worth following above its own folders.
const MAX_CLIMB: usize = 8;
/// Positions tried per enumeration beyond the items asked for (siblings without the
/// named step are passed over, within this).
const MAX_PROBES: usize = 256;

/// One step of a walk's pattern, from its root down.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    /// Any listed sub-directory (the index says which).
    Any,
    /// The entry of this name.
    Name(OsString),
}

/// Where a directory or file stands in a walk: a pattern below a root and an index per
/// wildcard (and a file's place in its listing, last).
#[derive(Debug, Clone)]
pub struct WalkPos {
    /// Identifies the pattern (root, steps, and whether files are walked): positions of
    /// one key compare as index sequences.
    pub key: u64,
    pub at: Box<[u32]>,
    root: Ino,
    steps: Arc<[Step]>,
}

/// What comes next in a walk.
#[derive(Debug)]
pub struct Next<T> {
    /// The items, each with its position, in walk order.
    pub items: Vec<(Box<[u32]>, T)>,
    /// The listing that stopped the enumeration: not fetched yet, and on the walk's way.
    pub blocked: Option<Ino>,
}

impl<T> Default for Next<T> {
    fn default() -> Self {
        Next {
            items: Vec::new(),
            blocked: None,
        }
    }
}

/// What resolving a position found.
enum Found {
    At(Ino),
    /// The index at this wildcard level is past the end of its directory.
    PastEnd(usize),
    /// A named step is missing below the sibling at this wildcard level.
    Missing(usize),
    /// This directory's listing is needed first.
    Unfilled(Ino),
}

/// An index meaning "the last one" (a backward walk entering a directory starts at its end).
const LAST: u32 = u32::MAX;

/// Moves `idx` one place at `level`, forward or backward (the levels below start over, at
/// their first or last place); the level that moved, or `None` when that would move a level
/// above `top` (which the walk has not shown it moves) or before the first place.
fn advance(idx: &mut [u32], level: usize, top: usize, backward: bool) -> Option<usize> {
    if level < top || level >= idx.len() {
        return None;
    }
    let mut at = level;
    if backward {
        // Before the first place: the level above moves back (forward, the index runs
        // past the end and resolving it says so).
        while idx[at] == 0 {
            if at == 0 || at - 1 < top {
                return None;
            }
            at -= 1;
        }
        idx[at] -= 1;
    } else {
        idx[at] = idx[at].saturating_add(1);
    }
    let start = if backward { LAST } else { 0 };
    idx[at + 1..].iter_mut().for_each(|x| *x = start);
    Some(at)
}

fn key_of(root: Ino, steps: &[Step], files: bool) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (root, steps, files).hash(&mut h);
    h.finish()
}

impl WalkPos {
    /// The index in `steps` of wildcard `level`.
    fn any_step(&self, level: usize) -> usize {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == Step::Any)
            .nth(level)
            .map_or(self.steps.len(), |(i, _)| i)
    }
}

impl Tree {
    /// Where directory `ino` stands in a walk, if it is below a listed entry.
    pub fn dir_walk(&self, ino: Ino) -> Option<WalkPos> {
        dir_walk(&self.nodes.read(), ino, false)
    }

    /// Where listed file `ino` stands in a walk: its listing directory's place, then its own
    /// place in that listing. `None` for files not from a listing (uploads, generated text).
    pub fn file_walk(&self, ino: Ino) -> Option<WalkPos> {
        let nodes = self.nodes.read();
        let n = nodes.get(&ino)?;
        let NodeKind::File(f) = &n.kind else { return None };
        let listing = listing_dir(&nodes, n.parent)?;
        // A file orphaned by a refill has no place any more.
        if dir_ref(&nodes, listing)?.files.get(f.seq as usize) != Some(&ino) {
            return None;
        }
        let mut w = dir_walk(&nodes, listing, true).unwrap_or_else(|| WalkPos {
            key: key_of(listing, &[], true),
            at: Box::default(),
            root: listing,
            steps: Arc::from(Vec::new()),
        });
        let mut at = w.at.into_vec();
        at.push(f.seq);
        w.at = at.into();
        Some(w)
    }

    /// Up to `n` directories after position `after` in `w`'s walk (before it, walking
    /// `backward`: bash globs a pattern's directories in reverse), moving no level above
    /// `top`. Entity directories met on the way have their layout entries made (no request).
    pub fn dirs_after(&self, w: &WalkPos, after: &[u32], top: usize, n: usize, backward: bool) -> Next<Ino> {
        let mut nodes = self.nodes.write();
        let mut out = Next::default();
        let mut idx = after.to_vec();
        if idx.len() != w.steps.iter().filter(|s| **s == Step::Any).count() || idx.is_empty() {
            return out;
        }
        let last = idx.len() - 1;
        let Some(mut moved_at) = advance(&mut idx, last, top, backward) else {
            return out;
        };
        // Where each wildcard level's directory resolved last time: moving the last index
        // only re-resolves the steps below it.
        let mut prefix: Vec<(usize, Ino)> = Vec::new();
        for _ in 0..n + MAX_PROBES {
            prefix.retain(|(level, _)| *level <= moved_at);
            let moved = match self.resolve(&mut nodes, w, &mut idx, &mut prefix) {
                Found::At(ino) => {
                    out.items.push((idx.clone().into(), ino));
                    if out.items.len() >= n {
                        break;
                    }
                    advance(&mut idx, last, top, backward)
                }
                Found::PastEnd(level) if level > 0 => advance(&mut idx, level - 1, top, backward),
                Found::PastEnd(_) => None,
                Found::Missing(level) => advance(&mut idx, level, top, backward),
                Found::Unfilled(ino) => {
                    out.blocked = Some(ino);
                    None
                }
            };
            match moved {
                Some(level) => moved_at = level,
                None => break,
            }
        }
        out
    }

    /// Up to `n` listed files after position `after` in file walk `w`: the rest of the
    /// listing it is in, then those of the listings after it, moving no level above `top`
    /// (the last level is the place within a listing).
    pub fn files_after(&self, w: &WalkPos, after: &[u32], top: usize, n: usize) -> Next<RemoteFile> {
        let mut out = Next::default();
        let Some((&seq, dir_at)) = after.split_last() else {
            return out;
        };
        let first = if dir_at.is_empty() {
            Some(w.root)
        } else {
            match self.resolve(&mut self.nodes.write(), w, &mut dir_at.to_vec(), &mut Vec::new()) {
                Found::At(ino) => Some(ino),
                _ => None,
            }
        };
        let Some(first) = first else { return out };
        let take = |out: &mut Next<RemoteFile>, at: &[u32], dir: Ino, from: u32| -> bool {
            let nodes = self.nodes.read();
            let Some(d) = dir_ref(&nodes, dir) else { return true };
            for (k, i) in d.files.iter().enumerate().skip(from as usize) {
                if out.items.len() >= n {
                    return false;
                }
                if let Some(Node {
                    kind: NodeKind::File(f),
                    ..
                }) = nodes.get(i)
                {
                    let mut pos = at.to_vec();
                    pos.push(k as u32);
                    out.items.push((pos.into(), f.remote()));
                }
            }
            out.items.len() < n
        };
        if !take(&mut out, dir_at, first, seq.saturating_add(1)) || top >= dir_at.len() {
            return out;
        }
        let mut from: Box<[u32]> = dir_at.into();
        while out.items.len() < n {
            let dirs = self.dirs_after(w, &from, top, 16, false);
            let Some((last, _)) = dirs.items.last() else {
                out.blocked = dirs.blocked;
                break;
            };
            from = last.clone();
            for (at, dir) in &dirs.items {
                let filled = dir_ref(&self.nodes.read(), *dir).is_some_and(|d| d.is_filled());
                if !filled {
                    out.blocked = Some(*dir);
                    return out;
                }
                if !take(&mut out, at, *dir, 0) {
                    return out;
                }
            }
        }
        out
    }

    /// The node at `idx` in `w`'s pattern, building entity directories on the way.
    /// `prefix` holds, per wildcard level already resolved for these indices, the directory
    /// that level is looked up in; it is extended as levels resolve. An index [`LAST`]
    /// resolves to its directory's last entry, and is set to that place.
    fn resolve(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        w: &WalkPos,
        idx: &mut [u32],
        prefix: &mut Vec<(usize, Ino)>,
    ) -> Found {
        let (mut at, mut level, start) = match prefix.last() {
            Some((l, ino)) => (*ino, *l, w.any_step(*l)),
            None => (w.root, 0usize, 0),
        };
        for step in w.steps[start..].iter() {
            self.build_fixed(nodes, at);
            let Some(d) = dir_ref(nodes, at) else {
                return Found::Missing(level.saturating_sub(1));
            };
            match step {
                Step::Any => {
                    if !d.is_filled() {
                        return match d.fills_on_readdir() {
                            true => Found::Unfilled(at),
                            false => Found::Missing(level.saturating_sub(1)),
                        };
                    }
                    if prefix.last().is_none_or(|(l, _)| *l < level) {
                        prefix.push((level, at));
                    }
                    if idx[level] == LAST {
                        match d.dirs.len().checked_sub(1) {
                            Some(i) => idx[level] = i as u32,
                            None => return Found::PastEnd(level),
                        }
                    }
                    match d.dirs.get(idx[level] as usize) {
                        Some(c) => at = *c,
                        None => return Found::PastEnd(level),
                    }
                    level += 1;
                }
                Step::Name(name) => match d.get(name) {
                    Some(c) => at = c,
                    None if !d.is_filled() && d.fills_on_readdir() => return Found::Unfilled(at),
                    None => return Found::Missing(level.saturating_sub(1)),
                },
            }
        }
        Found::At(at)
    }
}

/// The directory whose listing holds a file: the nearest one up with a listing (a file may
/// sit in folders of its `Files/` listing).
fn listing_dir(nodes: &HashMap<Ino, Node>, mut dir: Ino) -> Option<Ino> {
    for _ in 0..4096 {
        let d = dir_ref(nodes, dir)?;
        if d.listing.is_some() || dir == ROOT {
            return Some(dir);
        }
        dir = nodes.get(&dir)?.parent;
    }
    None
}

/// Climbs from directory `ino` to its pattern: wildcards for listed steps (up to
/// [`WALK_LEVELS`]), names for the others.
fn dir_walk(nodes: &HashMap<Ino, Node>, ino: Ino, files: bool) -> Option<WalkPos> {
    let mut steps: Vec<Step> = Vec::new();
    let mut at: Vec<u32> = Vec::new();
    // How many steps (from the bottom) reach the topmost wildcard found so far.
    let mut keep = 0;
    let mut root = None;
    let mut node = ino;
    for _ in 0..MAX_CLIMB {
        if node == ROOT {
            break;
        }
        let parent = nodes.get(&node)?.parent;
        let p = dir_ref(nodes, parent)?;
        let d = dir_ref(nodes, node)?;
        match d.sibling.filter(|k| p.dirs.get(*k as usize) == Some(&node)) {
            Some(k) => {
                steps.push(Step::Any);
                at.push(k);
                keep = steps.len();
                root = Some(parent);
                if at.len() == WALK_LEVELS {
                    break;
                }
            }
            None => {
                let name = p.local.iter().chain(&p.fixed).find(|(_, i)| **i == node)?.0.clone();
                steps.push(Step::Name(name));
            }
        }
        node = parent;
    }
    let root = root?;
    steps.truncate(keep);
    steps.reverse();
    at.reverse();
    Some(WalkPos {
        key: key_of(root, &steps, files),
        at: at.into(),
        root,
        steps: steps.into(),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::tests::{rt, tree_over, walk};
    use super::*;
    use crate::api::fake::FakeApi;
    use crate::emulator::account::{Account, AccountBuilder, Content};

    /// Projects A and B with samples s1..s3 each (one file `f.txt` each), and a run.
    fn two_projects() -> Account {
        let mut b = AccountBuilder::stable("Tester");
        for p in ["A", "B"] {
            let p = b.project(p);
            for s in ["s1", "s2", "s3"] {
                let s = b.sample(p, s, None);
                b.file(s, "f.txt", 1, Content::Memory(Bytes::from_static(b"x")), None);
            }
        }
        b.build()
    }

    fn ino(t: &Tree, path: &str) -> Ino {
        rt().block_on(walk(t, path)).unwrap().ino
    }

    fn names(t: &Tree, inos: &[Ino]) -> Vec<String> {
        let mut out = Vec::new();
        let nodes = t.nodes.read();
        for i in inos {
            let mut parts = Vec::new();
            let mut at = *i;
            while at != ROOT {
                let p = nodes[&at].parent;
                let d = dir_ref(&nodes, p).unwrap();
                let name = d
                    .local
                    .iter()
                    .chain(&d.fixed)
                    .chain(&d.listed)
                    .find(|(_, x)| **x == at)
                    .unwrap()
                    .0;
                parts.push(name.to_string_lossy().into_owned());
                at = p;
            }
            parts.reverse();
            out.push(parts.join("/"));
        }
        out
    }

    #[test]
    fn a_directory_stands_by_pattern_and_sibling_indices() {
        let t = tree_over(FakeApi::new(two_projects()));
        let f2 = t.dir_walk(ino(&t, "Projects/A/Samples/s2/Files")).unwrap();
        let f3 = t.dir_walk(ino(&t, "Projects/B/Samples/s3/Files")).unwrap();
        let p1 = t.dir_walk(ino(&t, "Projects/A/Samples/s1/Properties")).unwrap();
        assert_eq!((&*f2.at, &*f3.at), (&[0, 1][..], &[1, 2][..]));
        assert_eq!(f2.key, f3.key, "one pattern: Projects/*/Samples/*/Files");
        assert_ne!(f2.key, p1.key, "Properties is another walk");
        let s = t.dir_walk(ino(&t, "Projects/B/Samples")).unwrap();
        assert_eq!(&*s.at, &[1]);
        assert!(t.dir_walk(ino(&t, "Projects")).is_none(), "nothing listed above it");
    }

    #[test]
    fn what_comes_next_stays_within_the_levels_the_walk_moved_at() {
        let t = tree_over(FakeApi::new(two_projects()));
        let w = t.dir_walk(ino(&t, "Projects/A/Samples/s1/Files")).unwrap();
        let within = t.dirs_after(&w, &w.at, 1, 10, false);
        assert_eq!(
            names(&t, &within.items.iter().map(|x| x.1).collect::<Vec<_>>()),
            ["Projects/A/Samples/s2/Files", "Projects/A/Samples/s3/Files"]
        );
        assert_eq!(within.blocked, None);
        // Across projects: B's Samples/ is not listed yet, so the walk says it needs it.
        let across = t.dirs_after(&w, &w.at, 0, 10, false);
        assert_eq!(across.items.len(), 2);
        assert_eq!(across.blocked, Some(ino(&t, "Projects/B/Samples")));
        // Once it is listed, the enumeration goes on into it, in order.
        let _ = ino(&t, "Projects/B/Samples/s1");
        let across = t.dirs_after(&w, &w.at, 0, 4, false);
        assert_eq!(
            names(&t, &across.items.iter().map(|x| x.1).collect::<Vec<_>>()),
            [
                "Projects/A/Samples/s2/Files",
                "Projects/A/Samples/s3/Files",
                "Projects/B/Samples/s1/Files",
                "Projects/B/Samples/s2/Files"
            ]
        );
        assert_eq!(&*across.items[2].0, &[1, 0]);
        // Backward (bash globs directories in reverse): from B's s1 into A's last sample.
        let w = t.dir_walk(ino(&t, "Projects/B/Samples/s2/Files")).unwrap();
        let back = t.dirs_after(&w, &w.at, 0, 3, true);
        assert_eq!(
            names(&t, &back.items.iter().map(|x| x.1).collect::<Vec<_>>()),
            [
                "Projects/B/Samples/s1/Files",
                "Projects/A/Samples/s3/Files",
                "Projects/A/Samples/s2/Files"
            ]
        );
        assert_eq!(&*back.items[1].0, &[0, 2]);
    }

    #[test]
    fn files_follow_their_listing_then_the_next_ones() {
        let t = tree_over(FakeApi::new(two_projects()));
        for s in ["s1", "s2", "s3"] {
            let _ = ino(&t, &format!("Projects/A/Samples/{s}/Files/f.txt"));
        }
        let w = t.file_walk(ino(&t, "Projects/A/Samples/s1/Files/f.txt")).unwrap();
        assert_eq!(&*w.at, &[0, 0, 0]);
        let within = t.files_after(&w, &w.at, 2, 10);
        assert!(
            within.items.is_empty(),
            "s1 has one file, and the walk has not moved on"
        );
        let next = t.files_after(&w, &w.at, 1, 10);
        let at: Vec<&[u32]> = next.items.iter().map(|x| &*x.0).collect();
        assert_eq!(at, [&[0, 1, 0][..], &[0, 2, 0][..]]);
        // Position of a file that another listing holds is the same key.
        assert_eq!(
            t.file_walk(ino(&t, "Projects/A/Samples/s3/Files/f.txt")).unwrap().key,
            w.key
        );
    }
}
