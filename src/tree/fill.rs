//! Filling: a fetched listing becomes a directory's entries. Each `apply_*` merges one kind
//! of listing by name, keeping the inode of what is still the same thing; `finish_listing`
//! frees (or orphans) what the new listing no longer has.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::layout::{self, EntityKind};
use super::names::{self, PlanEntry};
use super::render::{lines, pretty, scalar_text};
use super::*;
use crate::api::model::Reference;
use crate::api::{EntityItem, FileInfo, ListKind, Listed, PropertyItem};
use serde_json::value::RawValue;

impl Tree {
    /// Merges a fetched listing into directory `ino`.
    pub(super) fn install(&self, ino: Ino, kind: &ListKind, l: Listing, ahead: bool) -> Result<(), TreeError> {
        let mut nodes = self.nodes.write();
        if dir_ref(&nodes, ino).is_none() {
            return Err(TreeError::NotFound); // forgotten and freed meanwhile
        }
        let skipped = match l {
            Listing::Files(files) => self.apply_files(&mut nodes, ino, files),
            Listing::Entities(k, items) => self.apply_entities(&mut nodes, ino, k, items),
            Listing::Outputs(items) => self.apply_outputs(&mut nodes, ino, items),
            Listing::Properties(props) => self.apply_properties(&mut nodes, ino, props),
            Listing::FilesMetadata(files) => self.apply_files_metadata(&mut nodes, ino, files),
            Listing::Folder(files) => self.apply_folder(&mut nodes, ino, kind, files),
            Listing::Token(v) => {
                let old = dir_mut(&mut nodes, ino).map(|d| std::mem::take(&mut d.listed));
                let json = self.insert(
                    &mut nodes,
                    leaf(
                        ino,
                        SystemTime::now(),
                        NodeKind::Text(Arc::from(pretty(&v).into_bytes())),
                    ),
                );
                self.finish_listing(
                    &mut nodes,
                    ino,
                    old.unwrap_or_default(),
                    [(".json".into(), json)].into(),
                );
                Vec::new()
            }
        };
        for s in &skipped {
            tracing::warn!(href = %kind.href(), "{s}");
        }
        let error = (!skipped.is_empty()).then(|| skipped.join("\n") + "\n");
        self.set_error(&mut nodes, ino, error.as_deref());
        if let Some(d) = dir_mut(&mut nodes, ino) {
            d.filled_at = Some(Instant::now());
            d.has_listing = true;
            // Marked as it becomes visible: a look that finds it fresh counts its use.
            d.ahead_unused |= ahead;
        }
        Ok(())
    }

    /// Sets (or clears) a directory's `.error`.
    pub(super) fn set_error(&self, nodes: &mut HashMap<Ino, Node>, dir: Ino, text: Option<&str>) {
        let Some(d) = dir_mut(nodes, dir) else { return };
        // What a server said, escaped: no raw ESC or CR reaches a terminal that shows it.
        d.error = text.map(|t| Arc::from(crate::escape::line(t)));
        let has = d.fixed.contains_key(OsStr::new(".error"));
        match (text.is_some(), has) {
            (true, false) => {
                let ino = self.insert(nodes, leaf(dir, SystemTime::now(), NodeKind::Error));
                if let Some(d) = dir_mut(nodes, dir) {
                    d.fixed.insert(".error".into(), ino);
                }
            }
            (false, true) => {
                let gone = d.fixed.remove(OsStr::new(".error"));
                free_subtree(nodes, gone.into_iter().collect());
            }
            _ => {}
        }
    }

    /// Merges a listing of entities into `dir`: an entity directory and an `.id.<ID>` link
    /// each. Items whose Id cannot be a file name are skipped (and named), never the list.
    pub(super) fn apply_entities(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        kind: EntityKind,
        listed: Listed<EntityItem>,
    ) -> Vec<String> {
        let mut skipped = listed.skipped;
        let items: Vec<EntityItem> = listed
            .items
            .into_iter()
            .filter(|i| {
                let ok = names::safe_id(&i.entity.id);
                if !ok {
                    skipped.push(format!("skipped an item with an unusable Id {:?}", i.entity.id));
                }
                ok
            })
            .collect();
        let mut reserved: HashSet<String> = items.iter().map(|i| format!(".id.{}", i.entity.id)).collect();
        reserved.extend(names::mount_names());
        let pairs: Vec<(&str, &str)> = items
            .iter()
            .map(|i| (i.entity.id.as_str(), i.entity.name.as_deref().unwrap_or("")))
            .collect();
        let display = names::disambiguate(&pairs, &reserved);
        let row = layout::row(kind);
        let mut old = match dir_mut(nodes, dir) {
            Some(d) => std::mem::take(&mut d.listed),
            None => return skipped,
        };
        let mut new = BTreeMap::new();
        for (item, name) in items.into_iter().zip(display) {
            let e = &item.entity;
            let mtime = e.mtime();
            let data = Arc::new(EntityData {
                kind,
                id: e.id.clone(),
                name: e.name.clone().unwrap_or_default(),
                href: e
                    .href
                    .clone()
                    .unwrap_or_else(|| format!("v1pre3/{}/{}", row.type_name, e.id)),
                raw: item.raw.clone(),
                server: self.server.clone(),
                sizes: Default::default(),
            });
            let name = OsString::from(name);
            let same = old.get(&name).copied().filter(|i| {
                dir_ref(nodes, *i)
                    .and_then(|d| d.entity.as_ref())
                    .is_some_and(|x| x.kind == kind && x.id == e.id)
            });
            let ino = match same {
                Some(ino) => {
                    old.remove(&name);
                    let n = nodes.get_mut(&ino).expect("checked");
                    n.mtime = mtime;
                    if let NodeKind::Dir(d) = &mut n.kind {
                        d.entity = Some(data);
                    }
                    ino
                }
                None => {
                    let d = Dir {
                        entity: Some(data),
                        listing: row.listing.map(|l| l(e.id.clone())),
                        ..Dir::default()
                    };
                    self.insert(nodes, dir_node(dir, mtime, d))
                }
            };
            let link = OsString::from(format!(".id.{}", e.id));
            let target = name.to_string_lossy();
            let link_ino = self.link(nodes, &mut old, &link, dir, &target, mtime);
            new.insert(name, ino);
            new.insert(link, link_ino);
        }
        self.finish_listing(nodes, dir, old, new);
        skipped
    }

    /// A symlink `name` → `target` in `dir`, reusing the old one if it is the same.
    fn link(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        old: &mut BTreeMap<OsString, Ino>,
        name: &OsStr,
        dir: Ino,
        target: &str,
        mtime: SystemTime,
    ) -> Ino {
        let same = old
            .get(name)
            .copied()
            .filter(|i| matches!(nodes.get(i).map(|n| &n.kind), Some(NodeKind::Symlink(t)) if &**t == target));
        match same {
            Some(ino) => {
                old.remove(name);
                ino
            }
            None => self.insert(nodes, leaf(dir, mtime, NodeKind::Symlink(target.into()))),
        }
    }

    /// Links to what an appsession produced. Targets are built from the layout and a
    /// checked id, never from a server string: `../../Samples/.id.<ID>` stays inside the
    /// project whatever the server sent.
    pub(super) fn apply_outputs(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        listed: Listed<EntityItem>,
    ) -> Vec<String> {
        let mut skipped = listed.skipped;
        let mut old = match dir_mut(nodes, dir) {
            Some(d) => std::mem::take(&mut d.listed),
            None => return skipped,
        };
        let mut new = BTreeMap::new();
        for item in listed.items {
            let e = &item.entity;
            let Some(v1) = e.v1pre3_id.as_deref() else { continue };
            let parsed = v1
                .split_once('.')
                .and_then(|(k, id)| Some((layout::output_kind(k)?, id)))
                .filter(|(_, id)| names::safe_id(id));
            let Some(((label, list), id)) = parsed else {
                skipped.push(format!("skipped an output with an unusable V1pre3Id {v1:?}"));
                continue;
            };
            let name = names::sanitize(&format!("{label}.{id}.{}", e.name.as_deref().unwrap_or("")));
            let name = if name.len() > names::NAME_MAX {
                format!("{label}.{id}")
            } else {
                name
            };
            let name = OsString::from(name);
            let target = format!("../../{list}/.id.{id}");
            let ino = self.link(nodes, &mut old, &name, dir, &target, e.mtime());
            new.insert(name, ino);
        }
        self.finish_listing(nodes, dir, old, new);
        skipped
    }

    /// Merges a files listing into a `Files/` directory: folders from each file's `Path`,
    /// planned flat (any depth, no recursion), merged level by level.
    pub(super) fn apply_files(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        listed: Listed<FileInfo>,
    ) -> Vec<String> {
        let files = listed.items;
        let pairs: Vec<(&str, &str)> = files.iter().map(|f| (f.id.as_str(), f.rel_path())).collect();
        let plan = names::plan_files(&pairs);
        let mtimes: Vec<SystemTime> = files.iter().map(FileInfo::mtime).collect();
        // Every folder's mtime is the newest of the files below it; folders come after
        // their parents in the plan, so one backward pass carries them up.
        let mut folder_mtime = vec![UNIX_EPOCH; plan.len()];
        for (d, p) in plan.iter().enumerate() {
            folder_mtime[d] = p.files.values().map(|i| mtimes[*i]).max().unwrap_or(UNIX_EPOCH);
        }
        for d in (1..plan.len()).rev() {
            let p = plan[d].parent;
            folder_mtime[p] = folder_mtime[p].max(folder_mtime[d]);
        }
        // Inodes are made in each folder's name order (files and folders together): `cp -r`
        // opens entries by inode number, so it then opens them in listing order too.
        let mut file_ino: Vec<Ino> = vec![0; files.len()];
        let mut stack = vec![(0usize, dir)];
        while let Some((d, ino)) = stack.pop() {
            let mut old = match dir_mut(nodes, ino) {
                Some(x) => std::mem::take(&mut x.listed),
                None => continue,
            };
            let mut new = BTreeMap::new();
            for (name, entry) in plan[d].entries() {
                let name = OsString::from(name);
                let child = match entry {
                    PlanEntry::Dir(sub) => {
                        let same = old
                            .get(&name)
                            .copied()
                            .filter(|i| dir_ref(nodes, *i).is_some_and(|x| x.entity.is_none() && x.listing.is_none()));
                        let child = match same {
                            Some(c) => {
                                old.remove(&name);
                                if let Some(n) = nodes.get_mut(&c) {
                                    n.mtime = folder_mtime[sub];
                                }
                                c
                            }
                            None => self.insert(nodes, dir_node(ino, folder_mtime[sub], Dir::folder())),
                        };
                        stack.push((sub, child));
                        child
                    }
                    PlanEntry::File(i) => {
                        let child = self.file_entry(nodes, &mut old, &name, ino, &files[i], mtimes[i]);
                        file_ino[i] = child;
                        child
                    }
                };
                new.insert(name, child);
            }
            self.finish_listing(nodes, ino, old, new);
        }
        // The order files are met in by a depth-first walk: what prefetch across files follows.
        let order: Vec<Ino> = names::walk_order(&plan).into_iter().map(|i| file_ino[i]).collect();
        for (seq, c) in order.iter().enumerate() {
            if let Some(Node {
                kind: NodeKind::File(x),
                ..
            }) = nodes.get_mut(c)
            {
                x.seq = seq as u32;
            }
        }
        if let Some(x) = dir_mut(nodes, dir) {
            x.files = order.into();
        }
        listed.skipped
    }

    /// Steps from `dir` up to the root: how many `../` a link in `dir` needs to reach it.
    fn depth(nodes: &HashMap<Ino, Node>, mut dir: Ino) -> usize {
        let mut n = 0;
        while dir != ROOT && n < 4096 {
            match nodes.get(&dir) {
                Some(x) => dir = x.parent,
                None => break,
            }
            n += 1;
        }
        n
    }

    /// The project a reference below `dir` is read in: the enclosing project directory, else
    /// the project the nearest entity names (a dataset's `Project`, a biosample's
    /// `DefaultProject`).
    fn context_project(nodes: &HashMap<Ino, Node>, dir: Ino) -> Option<String> {
        let mut entities = Vec::new();
        let mut at = dir;
        for _ in 0..4096 {
            if let Some(e) = dir_ref(nodes, at).and_then(|d| d.entity.as_ref()) {
                if e.kind == EntityKind::Project {
                    return Some(e.id.clone());
                }
                entities.push(e.clone());
            }
            if at == ROOT {
                break;
            }
            at = nodes.get(&at)?.parent;
        }
        // Outside a project: the nearest entity that names one.
        entities.iter().find_map(|e| {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Named {
                project: Option<crate::api::model::EntityRef>,
                default_project: Option<crate::api::model::EntityRef>,
            }
            let n: Named = serde_json::from_str(&e.raw).ok()?;
            n.project
                .or(n.default_project)
                .map(|p| p.id)
                .filter(|p| names::safe_id(p))
        })
    }

    /// Fills a `Properties/` directory: a string property is a file, an array a directory of
    /// `0`, `1`, …, a map a directory of its keys; an entity reference is a symlink to the
    /// entity's directory, built from the layout and a checked id (never a server path), so
    /// it never leaves the mount. Rebuilt whole on every fill: properties are few.
    pub(super) fn apply_properties(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        listed: Listed<PropertyItem>,
    ) -> Vec<String> {
        let mut skipped = listed.skipped;
        let old = match dir_mut(nodes, dir) {
            Some(d) => std::mem::take(&mut d.listed),
            None => return skipped,
        };
        let project = Self::context_project(nodes, dir);
        let depth = Self::depth(nodes, dir);
        let mtime = nodes.get(&dir).map_or(UNIX_EPOCH, |n| n.mtime);
        let mut new = BTreeMap::new();
        for p in listed.items {
            let name = names::sanitize(&p.name);
            if new.contains_key(OsStr::new(&name)) {
                skipped.push(format!("skipped a second property named {:?}", p.name));
                continue;
            }
            let kind = if p.kind.is_empty() { "string" } else { p.kind.as_str() };
            let base = kind.trim_end_matches("[]");
            let ino = if kind.ends_with("[]") {
                let mut entries = BTreeMap::new();
                for (i, item) in p.items.iter().enumerate() {
                    let e = self.property_entry(nodes, dir, base, item, project.as_deref(), depth + 1, mtime);
                    entries.insert(OsString::from(i.to_string()), e);
                }
                self.folder_with(nodes, dir, mtime, entries)
            } else if let Some(map) = &p.map {
                let mut entries = BTreeMap::new();
                for kv in map {
                    let Some(k) = &kv.key else { continue };
                    let text: Vec<String> = match &kv.values {
                        Some(Value::Array(vs)) => vs.iter().map(scalar_text).collect(),
                        Some(v) => vec![scalar_text(v)],
                        None => Vec::new(),
                    };
                    let f = self.insert(nodes, leaf(dir, mtime, NodeKind::Text(lines(&text))));
                    entries.insert(OsString::from(names::sanitize(k)), f);
                }
                self.folder_with(nodes, dir, mtime, entries)
            } else {
                let null = RawValue::from_string("null".into()).expect("valid JSON");
                let content = p.content.as_deref().unwrap_or(&null);
                self.property_entry(nodes, dir, base, content, project.as_deref(), depth, mtime)
            };
            new.insert(OsString::from(name), ino);
        }
        self.finish_listing(nodes, dir, old, new);
        skipped
    }

    /// A folder in `dir` holding `entries`.
    fn folder_with(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        mtime: SystemTime,
        entries: BTreeMap<OsString, Ino>,
    ) -> Ino {
        let sub = self.insert(nodes, dir_node(dir, mtime, Dir::folder()));
        for i in entries.values() {
            if let Some(n) = nodes.get_mut(i) {
                n.parent = sub;
            }
        }
        set_listed(nodes, sub, entries);
        sub
    }

    /// One property value in `dir` (`depth` steps below the root): a link for an entity of
    /// a kind that has a directory, else its text.
    #[allow(clippy::too_many_arguments)]
    fn property_entry(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        kind: &str,
        v: &RawValue,
        project: Option<&str>,
        depth: usize,
        mtime: SystemTime,
    ) -> Ino {
        let text = v.get().trim_start();
        let reference = match text.starts_with('{') {
            true => serde_json::from_str::<Reference>(text).ok(),
            false => None,
        };
        let target = reference.and_then(|r| {
            // The project named by the entity itself wins over the one it is read in.
            let project = r.own_project().filter(|p| names::safe_id(p)).or(project);
            let id = r.id.as_deref().filter(|id| names::safe_id(id))?;
            layout::entity_path(kind, id, project)
        });
        let node = match target {
            Some(t) => NodeKind::Symlink(format!("{}{t}", "../".repeat(depth)).into()),
            None => {
                let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                match v.is_object() || v.is_array() {
                    true => NodeKind::Text(Arc::from(pretty(&v).into_bytes())),
                    false => NodeKind::Text(lines(&[scalar_text(&v)])),
                }
            }
        };
        self.insert(nodes, leaf(dir, mtime, node))
    }

    /// Fills `Files.metadata/`: the folders of the `Files/` listing, and for each file a
    /// directory (hidden from `readdir`) holding its `.id .type .name .href .json .curl`.
    /// Merged by name, level by level: folders already shown (mirrored from `Files/`) keep
    /// their inodes.
    pub(super) fn apply_files_metadata(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        listed: Listed<EntityItem>,
    ) -> Vec<String> {
        let files = listed.items;
        let paths: Vec<String> = files
            .iter()
            .map(|f| {
                serde_json::from_str::<Value>(&f.raw)
                    .ok()
                    .and_then(|v| v.get("Path").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| f.entity.name.clone().unwrap_or_default())
            })
            .collect();
        let pairs: Vec<(&str, &str)> = files
            .iter()
            .zip(&paths)
            .map(|(f, p)| (f.entity.id.as_str(), p.as_str()))
            .collect();
        let plan = names::plan_files(&pairs);
        let mut stack = vec![(0usize, dir)];
        while let Some((d, ino)) = stack.pop() {
            let mut old = match dir_mut(nodes, ino) {
                Some(x) => std::mem::take(&mut x.listed),
                None => continue,
            };
            let mut entries = BTreeMap::new();
            for (name, entry) in plan[d].entries() {
                let name = OsString::from(name);
                let child = match entry {
                    PlanEntry::Dir(sub) => {
                        let same = old
                            .get(&name)
                            .copied()
                            .filter(|i| dir_ref(nodes, *i).is_some_and(|x| x.entity.is_none()));
                        let c = match same {
                            Some(c) => {
                                old.remove(&name);
                                c
                            }
                            None => self.insert(nodes, dir_node(ino, UNIX_EPOCH, Dir::folder())),
                        };
                        stack.push((sub, c));
                        c
                    }
                    PlanEntry::File(i) => {
                        let f = &files[i];
                        let e = &f.entity;
                        let same = old.get(&name).copied().filter(|c| {
                            dir_ref(nodes, *c)
                                .and_then(|x| x.entity.as_ref())
                                .is_some_and(|x| x.id == e.id && *x.raw == *f.raw)
                        });
                        match same {
                            Some(c) => {
                                old.remove(&name);
                                c
                            }
                            None => {
                                let data = EntityData {
                                    kind: EntityKind::File,
                                    id: e.id.clone(),
                                    name: e.name.clone().unwrap_or_default(),
                                    href: e.href.clone().unwrap_or_else(|| format!("v1pre3/files/{}", e.id)),
                                    raw: f.raw.clone(),
                                    server: self.server.clone(),
                                    sizes: Default::default(),
                                };
                                let d = Dir {
                                    entity: Some(Arc::new(data)),
                                    ..Dir::default()
                                };
                                self.insert(nodes, dir_node(ino, e.mtime(), d))
                            }
                        }
                    }
                };
                entries.insert(name, child);
            }
            self.finish_listing(nodes, ino, old, entries);
        }
        listed.skipped
    }

    /// Gives folder `meta` (of `Files.metadata/`) the folders of `files` (of `Files/`), at
    /// every depth, with their times; what it holds besides stays.
    pub(super) fn mirror_folders(&self, nodes: &mut HashMap<Ino, Node>, files: Ino, meta: Ino) {
        let mut stack = vec![(files, meta)];
        while let Some((src, dst)) = stack.pop() {
            let folders: Vec<(OsString, Ino, SystemTime)> = match dir_ref(nodes, src) {
                Some(d) => d
                    .listed
                    .iter()
                    .filter(|(_, c)| dir_ref(nodes, **c).is_some_and(|x| x.entity.is_none()))
                    .map(|(n, c)| (n.clone(), *c, nodes.get(c).map_or(UNIX_EPOCH, |x| x.mtime)))
                    .collect(),
                None => continue,
            };
            if folders.is_empty() {
                continue;
            }
            let mut entries = match dir_mut(nodes, dst) {
                Some(d) => std::mem::take(&mut d.listed),
                None => continue,
            };
            for (name, from, mtime) in folders {
                let have = entries
                    .get(&name)
                    .copied()
                    .filter(|i| dir_ref(nodes, *i).is_some_and(|x| x.entity.is_none()));
                let to = match have {
                    Some(c) => c,
                    None => {
                        let c = self.insert(nodes, dir_node(dst, mtime, Dir::folder()));
                        entries.insert(name, c);
                        c
                    }
                };
                if let Some(n) = nodes.get_mut(&to) {
                    n.mtime = mtime;
                }
                stack.push((from, to));
            }
            set_listed(nodes, dst, entries);
        }
    }

    /// The node of listed file `f` named `name` in `dir`: the old one if it is the same file
    /// and version (its inode and page cache stay), else a new one.
    fn file_entry(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        old: &mut BTreeMap<OsString, Ino>,
        name: &OsStr,
        dir: Ino,
        f: &FileInfo,
        mtime: SystemTime,
    ) -> Ino {
        let node = FileNode::of(f, 0);
        let same = old.get(name).copied().filter(|c| {
            matches!(nodes.get(c).map(|n| &n.kind),
                Some(NodeKind::File(x)) if x.id == node.id && x.version == node.version)
        });
        match same {
            Some(c) => {
                old.remove(name);
                c
            }
            None => self.insert(nodes, leaf(dir, mtime, NodeKind::File(node))),
        }
    }

    /// Fills one folder of a dataset from its own listing: its files, and a directory per
    /// sub-folder that is listed when it is looked at.
    pub(super) fn apply_folder(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        kind: &ListKind,
        listed: Listed<FileInfo>,
    ) -> Vec<String> {
        let mut skipped = listed.skipped;
        if kind.folder().is_none() {
            return skipped;
        }
        let mut old = match dir_mut(nodes, dir) {
            Some(d) => std::mem::take(&mut d.listed),
            None => return skipped,
        };
        let mut new: BTreeMap<OsString, Ino> = BTreeMap::new();
        let mtime = nodes.get(&dir).map_or(UNIX_EPOCH, |n| n.mtime);
        for sub in &listed.subdirs {
            let name = names::sanitize(sub);
            if sub.is_empty() || sub.contains('/') || new.contains_key(OsStr::new(&name)) {
                skipped.push(format!("skipped a folder with an unusable name {sub:?}"));
                continue;
            }
            let Some(listing) = kind.subfolder(sub) else { continue };
            let same = old
                .get(OsStr::new(&name))
                .copied()
                .filter(|i| dir_ref(nodes, *i).is_some_and(|d| d.listing.as_ref() == Some(&listing)));
            let ino = match same {
                Some(i) => {
                    old.remove(OsStr::new(&name));
                    i
                }
                None => self.insert(
                    nodes,
                    dir_node(
                        dir,
                        mtime,
                        Dir {
                            listing: Some(listing),
                            built: true,
                            ..Dir::default()
                        },
                    ),
                ),
            };
            new.insert(OsString::from(name), ino);
        }
        let mut files: Vec<&FileInfo> = listed.items.iter().collect();
        files.sort_by(|a, b| a.rel_path().cmp(b.rel_path()));
        for f in files {
            let base = f.rel_path().rsplit('/').next().unwrap_or("");
            let mut name = names::sanitize(base);
            if new.contains_key(OsStr::new(&name)) {
                name = format!("{name} ({})", f.id);
            }
            let name = OsString::from(name);
            let ino = self.file_entry(nodes, &mut old, &name, dir, f, f.mtime());
            new.insert(name, ino);
        }
        // Prefetch across files follows this folder's files in name order.
        let order: Vec<Ino> = new
            .values()
            .copied()
            .filter(|i| matches!(nodes.get(i).map(|n| &n.kind), Some(NodeKind::File(_))))
            .collect();
        for (seq, i) in order.iter().enumerate() {
            if let Some(Node {
                kind: NodeKind::File(x),
                ..
            }) = nodes.get_mut(i)
            {
                x.seq = seq as u32;
            }
        }
        self.finish_listing(nodes, dir, old, new);
        if let Some(d) = dir_mut(nodes, dir) {
            d.files = order.into();
        }
        skipped
    }

    /// Installs a directory's new listed entries; what the old listing had and the new one
    /// does not is freed, or orphaned while the kernel still holds it.
    pub(super) fn finish_listing(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        old: BTreeMap<OsString, Ino>,
        new: BTreeMap<OsString, Ino>,
    ) {
        set_listed(nodes, dir, new);
        free_subtree(nodes, old.into_values().collect());
    }
}

/// Makes `entries` the listed entries of `dir`, and numbers its sub-directories in name
/// order (the order a walk over them takes, [`super::walk`]).
fn set_listed(nodes: &mut HashMap<Ino, Node>, dir: Ino, entries: BTreeMap<OsString, Ino>) {
    let subdirs: Vec<Ino> = entries
        .values()
        .copied()
        .filter(|i| dir_ref(nodes, *i).is_some())
        .collect();
    for (k, i) in subdirs.iter().enumerate() {
        if let Some(d) = dir_mut(nodes, *i) {
            d.sibling = Some(k as u32);
        }
    }
    if let Some(d) = dir_mut(nodes, dir) {
        d.listed = entries;
        d.dirs = subdirs.into();
    }
}

/// What a fill fetched.
pub(super) enum Listing {
    Files(Listed<FileInfo>),
    Entities(EntityKind, Listed<EntityItem>),
    Outputs(Listed<EntityItem>),
    Properties(Listed<PropertyItem>),
    FilesMetadata(Listed<EntityItem>),
    Token(Value),
    Folder(Listed<FileInfo>),
}

impl Listing {
    pub(super) fn len(&self) -> usize {
        match self {
            Listing::Files(l) | Listing::Folder(l) => l.items.len(),
            Listing::Entities(_, l) | Listing::Outputs(l) | Listing::FilesMetadata(l) => l.items.len(),
            Listing::Properties(l) => l.items.len(),
            Listing::Token(_) => 1,
        }
    }
}
