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

use std::collections::{BTreeMap, HashSet};

/// Linux NAME_MAX.
pub const NAME_MAX: usize = 255;

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
    for i in pending {
        let mut n = 2;
        loop {
            let cand = fit(&bases[i], &format!(" ({n})"));
            if taken.insert(cand.clone()) {
                out[i] = cand;
                break;
            }
            n += 1;
        }
    }
    out
}

/// A folder of a `Files/` view: sub-folders and files by display name.
#[derive(Debug, Default, Clone)]
pub struct FolderLayout {
    pub dirs: BTreeMap<String, FolderLayout>,
    /// display name → index into the input list
    pub files: BTreeMap<String, usize>,
}

/// Builds the folder tree of a `Files/` directory from `(file id, API Path)` pairs.
/// Folders come from '/' in the Path; a file that collides with a folder name or another
/// file is disambiguated like any duplicate (folders keep the bare name).
pub fn files_layout(files: &[(&str, &str)]) -> FolderLayout {
    #[derive(Default)]
    struct Raw<'a> {
        dirs: BTreeMap<String, Raw<'a>>,
        files: Vec<(usize, &'a str, String)>, // (index, id, sanitized leaf)
    }
    let mut root = Raw::default();
    for (i, (id, path)) in files.iter().enumerate() {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let (leaf, dirs) = match comps.split_last() {
            Some((l, d)) => (*l, d),
            None => ("", &[][..]),
        };
        let mut node = &mut root;
        for d in dirs {
            let name = sanitize(d);
            let name = if name.len() > NAME_MAX {
                fit(&name, "~dir")
            } else {
                name
            };
            node = node.dirs.entry(name).or_default();
        }
        node.files.push((i, id, leaf.to_string()));
    }
    fn finish(raw: Raw<'_>) -> FolderLayout {
        let reserved: HashSet<String> = raw.dirs.keys().cloned().collect();
        let entries: Vec<(&str, &str)> = raw.files.iter().map(|(_, id, leaf)| (*id, leaf.as_str())).collect();
        let names = disambiguate(&entries, &reserved);
        let files = raw.files.iter().zip(names).map(|((i, _, _), n)| (n, *i)).collect();
        let dirs = raw.dirs.into_iter().map(|(k, v)| (k, finish(v))).collect();
        FolderLayout { dirs, files }
    }
    finish(root)
}

impl FolderLayout {
    /// Every file as (input index, display path relative to the Files/ folder).
    /// Indices of every file in this folder and below.
    pub fn indices(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        Box::new(
            self.files
                .values()
                .copied()
                .chain(self.dirs.values().flat_map(|d| d.indices())),
        )
    }

    pub fn flatten(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        fn walk(l: &FolderLayout, prefix: &str, out: &mut Vec<(usize, String)>) {
            for (name, i) in &l.files {
                out.push((*i, format!("{prefix}{name}")));
            }
            for (name, sub) in &l.dirs {
                walk(sub, &format!("{prefix}{name}/"), out);
            }
        }
        walk(self, "", &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let l = files_layout(&files);
        let flat: BTreeMap<usize, String> = l.flatten().into_iter().collect();
        assert_eq!(flat[&0], "Data/Intensities/a.bcl");
        assert_eq!(flat[&1], "Data (2)");
        assert_eq!(flat[&2], "RunInfo.xml");
        assert_eq!(flat[&3], "RunInfo.xml (2)");
    }
}
