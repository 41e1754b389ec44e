//! How BaseSpace names become file names.
//!
//! BaseSpace names can hold anything: spaces, colons, '/', control characters, 300 bytes,
//! and two entities in one list can share a name. The rules (BaseMount's where it has them):
//! - names are shown verbatim, except '/' → '∕' (U+2215) and NUL → '�' (U+FFFD);
//!   "" → `(unnamed)`, "." → `(dot)`, ".." → `(dotdot)`;
//! - duplicates: ordered by Id, the first keeps the name, the next get ` (2)`, ` (3)`…
//!   (BaseMount's convention), skipping any suffix another entry already uses;
//! - over 255 bytes: cut at a character boundary and tagged `~<id>` so it stays unique.
//!
//! The emulator's manifest uses these same functions, so tests can compare paths exactly.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Linux NAME_MAX.
pub const NAME_MAX: usize = 255;

/// Longest id used in a name or link target.
const ID_MAX: usize = 128;

/// Whether a server-given id may become part of a file name, a link target or a URL
/// segment: BaseSpace ids are digits (v1) or `ds.`-style tokens (v2). Anything with `/`,
/// NUL, spaces, or equal to `.`/`..` is refused, so an id can never steer a path.
pub fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ID_MAX
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Makes one path component out of an arbitrary name.
pub fn sanitize(raw: &str) -> String {
    match raw {
        "" => return "(unnamed)".into(),
        "." => return "(dot)".into(),
        ".." => return "(dotdot)".into(),
        _ => {}
    }
    raw.chars()
        .map(|c| match c {
            '/' => '\u{2215}',
            '\0' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// Cuts `base` so that `base + suffix` fits NAME_MAX bytes.
fn fit(base: &str, suffix: &str) -> String {
    let room = NAME_MAX.saturating_sub(suffix.len());
    if base.len() <= room {
        return format!("{base}{suffix}");
    }
    let mut end = room;
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &base[..end])
}

/// Orders ids numerically when they are digit strings (BaseSpace ids), else as text.
pub fn id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let num = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if num(a) && num(b) {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    } else {
        a.cmp(b)
    }
}

/// Names the mount itself may put in any directory it lists (a listing's `.error`, a list
/// directory's `.json`): a server entry so named is disambiguated like a duplicate, so the
/// mount's file never hides it.
pub const MOUNT_NAMES: &[&str] = &[".error", ".json"];

/// [`MOUNT_NAMES`], as a set to extend.
pub fn mount_names() -> HashSet<String> {
    MOUNT_NAMES.iter().map(|n| n.to_string()).collect()
}

/// Display names for `(id, raw name)` entries of one directory, returned in input order.
/// `reserved` are names the directory already uses for other things (e.g. `.id`).
pub fn disambiguate(entries: &[(&str, &str)], reserved: &HashSet<String>) -> Vec<String> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| id_order(entries[a].0, entries[b].0).then(a.cmp(&b)));
    let mut taken: HashSet<String> = reserved.clone();
    // Names are first claimed bare, in id order, so a literal "X (2)" keeps its own name.
    let bases: Vec<String> = entries
        .iter()
        .map(|(id, raw)| {
            let s = sanitize(raw);
            if s.len() > NAME_MAX {
                fit(&s, &format!("~{id}"))
            } else {
                s
            }
        })
        .collect();
    let mut out = vec![String::new(); entries.len()];
    let mut pending = Vec::new();
    for &i in &order {
        if taken.insert(bases[i].clone()) {
            out[i] = bases[i].clone();
        } else {
            pending.push(i);
        }
    }
    // Each base remembers the next suffix to try, so 20,000 entries of one name cost
    // 20,000 tries, not 200 million.
    let mut next: HashMap<String, u64> = HashMap::new();
    for i in pending {
        let n = next.entry(bases[i].clone()).or_insert(2);
        loop {
            let cand = fit(&bases[i], &format!(" ({n})"));
            *n += 1;
            if taken.insert(cand.clone()) {
                out[i] = cand;
                break;
            }
        }
    }
    out
}

/// One folder of a `Files/` view, in a flat plan: folders refer to each other by index,
/// so a `Path` thousands of levels deep costs no recursion to build, walk or drop.
#[derive(Debug, Default, Clone)]
pub struct PlanDir {
    /// Display name (empty for the `Files/` folder itself, index 0).
    pub name: String,
    /// Index of the enclosing folder (0 for index 0).
    pub parent: usize,
    /// Sub-folders: display name → index.
    pub dirs: BTreeMap<String, usize>,
    /// Files: display name → index into the input list.
    pub files: BTreeMap<String, usize>,
}

/// Plans the folders of a `Files/` directory from `(file id, API Path)` pairs. Folders
/// come from '/' in the Path; a file that collides with a folder name or another file is
/// disambiguated like any duplicate (folders keep the bare name).
pub fn plan_files(files: &[(&str, &str)]) -> Vec<PlanDir> {
    let mut plan = vec![PlanDir::default()];
    let mut leaves: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (i, (_, path)) in files.iter().enumerate() {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let (leaf, dirs) = match comps.split_last() {
            Some((l, d)) => (*l, d),
            None => ("", &[][..]),
        };
        let mut cur = 0;
        for d in dirs {
            let name = sanitize(d);
            let name = if name.len() > NAME_MAX {
                fit(&name, "~dir")
            } else if MOUNT_NAMES.contains(&name.as_str()) {
                format!("{name} (dir)")
            } else {
                name
            };
            cur = match plan[cur].dirs.get(&name) {
                Some(&j) => j,
                None => {
                    let j = plan.len();
                    plan[cur].dirs.insert(name.clone(), j);
                    plan.push(PlanDir {
                        name,
                        parent: cur,
                        ..PlanDir::default()
                    });
                    leaves.push(Vec::new());
                    j
                }
            };
        }
        leaves[cur].push((i, leaf));
    }
    for (d, ls) in leaves.into_iter().enumerate() {
        let mut reserved: HashSet<String> = plan[d].dirs.keys().cloned().collect();
        reserved.extend(mount_names());
        let entries: Vec<(&str, &str)> = ls.iter().map(|(i, leaf)| (files[*i].0, *leaf)).collect();
        let names = disambiguate(&entries, &reserved);
        plan[d].files = ls.iter().zip(names).map(|((i, _), n)| (n, *i)).collect();
    }
    plan
}

/// One entry of a planned folder: a sub-folder (plan index) or a file (input index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanEntry {
    Dir(usize),
    File(usize),
}

impl PlanDir {
    /// Sub-folders and files together, by name: the order `readdir` lists them in.
    pub fn entries(&self) -> Vec<(&str, PlanEntry)> {
        let mut v: Vec<(&str, PlanEntry)> = self
            .dirs
            .iter()
            .map(|(n, j)| (n.as_str(), PlanEntry::Dir(*j)))
            .chain(self.files.iter().map(|(n, i)| (n.as_str(), PlanEntry::File(*i))))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
}

/// The input indices of every file of a plan in the order a depth-first walk that takes
/// each folder's entries by name meets them: the order `cp -r`, `tar` and `find` open
/// them in. No recursion (folders may nest thousands deep).
pub fn walk_order(plan: &[PlanDir]) -> Vec<usize> {
    let mut out = Vec::new();
    // Each frame: a folder's entries, reversed, so the next one is popped from the end.
    let mut stack: Vec<Vec<PlanEntry>> = vec![plan[0].entries().into_iter().rev().map(|(_, e)| e).collect()];
    while let Some(top) = stack.last_mut() {
        match top.pop() {
            None => {
                stack.pop();
            }
            Some(PlanEntry::File(i)) => out.push(i),
            Some(PlanEntry::Dir(j)) => stack.push(plan[j].entries().into_iter().rev().map(|(_, e)| e).collect()),
        }
    }
    out
}

/// Every file of a plan as (input index, display path relative to the `Files/` folder).
pub fn flatten(plan: &[PlanDir]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut stack = vec![(0usize, String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for (name, i) in &plan[d].files {
            out.push((*i, format!("{prefix}{name}")));
        }
        for (name, j) in &plan[d].dirs {
            stack.push((*j, format!("{prefix}{name}/")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_order_is_depth_first_by_name_with_folders_among_files() {
        let files = [
            ("1", "b.txt"),
            ("2", "a/z.bin"),
            ("3", "a/c/x"),
            ("4", "C1.1/t2"),
            ("5", "C1.1/t1"),
            ("6", "C10.1/t1"),
            ("7", "a.txt"),
        ];
        let plan = plan_files(&files);
        let ids: Vec<&str> = walk_order(&plan).into_iter().map(|i| files[i].0).collect();
        // "C…" < "a" < "a.txt" < "b.txt" bytewise; inside a/: "c/" before "z.bin".
        assert_eq!(ids, ["5", "4", "6", "3", "2", "7", "1"]);
    }

    #[test]
    fn duplicates_get_suffixes_in_id_order() {
        let e = [
            ("30", "NA12877_L1"),
            ("4", "NA12877_L1"),
            ("100", "NA12877_L1"),
            ("5", "other"),
        ];
        let n = disambiguate(&e, &HashSet::new());
        assert_eq!(n, ["NA12877_L1 (2)", "NA12877_L1", "NA12877_L1 (3)", "other"]);
    }

    #[test]
    fn literal_suffix_names_are_not_stolen() {
        let e = [("1", "A"), ("2", "A"), ("3", "A (2)")];
        let n = disambiguate(&e, &HashSet::new());
        assert_eq!(n, ["A", "A (3)", "A (2)"]);
    }

    #[test]
    fn awkward_names() {
        assert_eq!(sanitize("a/b"), "a\u{2215}b");
        assert_eq!(sanitize("x\0y"), "x\u{FFFD}y");
        assert_eq!(sanitize(".."), "(dotdot)");
        let long = "é".repeat(200); // 400 bytes
        let n = disambiguate(&[("77", &long), ("78", &long)], &HashSet::new());
        assert!(n.iter().all(|s| s.len() <= NAME_MAX), "{n:?}");
        assert_ne!(n[0], n[1]);
        assert!(n[0].ends_with("~77"));
    }

    #[test]
    fn folders_from_paths_and_collisions() {
        let files = [
            ("1", "Data/Intensities/a.bcl"),
            ("2", "Data"),
            ("3", "RunInfo.xml"),
            ("4", "RunInfo.xml"),
        ];
        let flat: BTreeMap<usize, String> = flatten(&plan_files(&files)).into_iter().collect();
        assert_eq!(flat[&0], "Data/Intensities/a.bcl");
        assert_eq!(flat[&1], "Data (2)");
        assert_eq!(flat[&2], "RunInfo.xml");
        assert_eq!(flat[&3], "RunInfo.xml (2)");
    }

    #[test]
    fn many_duplicates_are_named_in_linear_time() {
        let ids: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        let e: Vec<(&str, &str)> = ids.iter().map(|i| (i.as_str(), "same.txt")).collect();
        let t = std::time::Instant::now();
        let n = disambiguate(&e, &HashSet::new());
        assert_eq!(n.iter().collect::<HashSet<_>>().len(), 20_000);
        assert_eq!(n[19_999], "same.txt (20000)");
        // Quadratic naming took 24 s here; linear takes milliseconds even unoptimised.
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[test]
    fn a_path_thousands_of_levels_deep_is_planned_without_recursion() {
        let deep = "d/".repeat(10_000) + "leaf.txt";
        let plan = plan_files(&[("1", deep.as_str())]);
        assert_eq!(plan.len(), 10_001);
        let flat = flatten(&plan);
        assert_eq!(flat[0].1, deep);
    }

    #[test]
    fn only_plain_ids_are_safe() {
        for ok in ["123", "ds.0a1b", "sample-1_x"] {
            assert!(safe_id(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../../etc", "a/b", "x\0y", "a b", &"9".repeat(200)] {
            assert!(!safe_id(bad), "{bad:?}");
        }
    }
}
