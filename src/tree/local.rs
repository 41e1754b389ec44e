//! Local entries: what the mount made itself (uploads in progress, folders made by `mkdir`,
//! notes), kept through every refill, and where a directory stands for the write operations.

use std::ffi::OsStr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::SystemTime;

use super::render::field_line;
use super::*;
use crate::api::{FileInfo, ListKind};

impl Tree {
    /// Adds an entry the mount made itself (an upload in progress, say): it stays through
    /// every refill until removed. `content` is what it reads as.
    pub fn add_local(&self, parent: Ino, name: &OsStr, content: Arc<[u8]>) -> Result<Attr, TreeError> {
        let mut nodes = self.nodes.write();
        let ino = self.insert_local(&mut nodes, parent, name, NodeKind::Text(content))?;
        attr_of(&nodes, ino).ok_or(TreeError::NotFound)
    }

    /// Inserts local entry `name` of `kind` in `parent` (not listed by BaseSpace, kept
    /// through refills), unless the name is taken.
    fn insert_local(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        parent: Ino,
        name: &OsStr,
        kind: NodeKind,
    ) -> Result<Ino, TreeError> {
        let d = dir_ref(nodes, parent).ok_or(TreeError::NotDir)?;
        if d.get(name).is_some() {
            return Err(TreeError::Exists);
        }
        let ino = self.insert(nodes, leaf(parent, SystemTime::now(), kind));
        dir_mut(nodes, parent)
            .expect("checked above")
            .local
            .insert(name.to_os_string(), ino);
        Ok(ino)
    }

    /// Removes a local entry.
    pub fn remove_local(&self, parent: Ino, name: &OsStr) -> Result<(), TreeError> {
        let mut nodes = self.nodes.write();
        let d = dir_mut(&mut nodes, parent).ok_or(TreeError::NotDir)?;
        let ino = d.local.remove(name).ok_or(TreeError::NotFound)?;
        free_subtree(&mut nodes, vec![ino]);
        Ok(())
    }

    /// Adds a local entry of `kind`, counted as a lookup.
    fn add_local_node(&self, parent: Ino, name: &OsStr, kind: NodeKind) -> Result<Attr, TreeError> {
        let mut nodes = self.nodes.write();
        let ino = self.insert_local(&mut nodes, parent, name, kind)?;
        remember(&mut nodes, ino)
    }

    /// A file being uploaded, shown at once with the size written so far; counted as a
    /// lookup (the kernel holds what `create` returns).
    pub fn add_pending(&self, parent: Ino, name: &OsStr, size: Arc<AtomicU64>) -> Result<Attr, TreeError> {
        self.add_local_node(parent, name, NodeKind::Pending(size))
    }

    /// A file a dead mount left uploading, resumed by this one: shown pending like one
    /// being written, but not counted as a lookup (the kernel did not ask for it).
    pub fn add_adopted(&self, parent: Ino, name: &OsStr, size: Arc<AtomicU64>) -> Result<Ino, TreeError> {
        self.insert_local(&mut self.nodes.write(), parent, name, NodeKind::Pending(size))
    }

    /// A folder that files a dead mount left uploading go into, not listed yet: local
    /// until their uploads are listed, not counted as a lookup.
    pub fn add_adopted_dir(&self, parent: Ino, name: &OsStr) -> Result<Ino, TreeError> {
        let kind = NodeKind::Dir(Box::new(Dir::folder()));
        self.insert_local(&mut self.nodes.write(), parent, name, kind)
    }

    /// A folder made by `mkdir` inside `Files/`: BaseSpace has no empty folders, so it lives
    /// here until the files uploaded into it are listed.
    pub fn add_local_dir(&self, parent: Ino, name: &OsStr) -> Result<Attr, TreeError> {
        let d = Box::new(Dir::folder());
        self.add_local_node(parent, name, NodeKind::Dir(d))
    }

    /// An upload completed: the entry becomes the file BaseSpace now lists, readable.
    pub fn publish(&self, ino: Ino, f: &FileInfo) {
        if let Some(n) = self.nodes.write().get_mut(&ino) {
            n.mtime = f.mtime();
            n.kind = NodeKind::File(FileNode::of(f, u32::MAX));
        }
    }

    /// Local entries of a directory with their inodes (empty local folders are the only
    /// ones `rmdir` may remove).
    pub fn is_empty_local_dir(&self, parent: Ino, name: &OsStr) -> bool {
        let nodes = self.nodes.read();
        let Some(ino) = dir_ref(&nodes, parent).and_then(|d| d.local.get(name).copied()) else {
            return false;
        };
        dir_ref(&nodes, ino).is_some_and(|d| d.local.is_empty() && d.listed.is_empty() && d.listing.is_none())
    }

    /// Removes a local entry if it is still an upload in progress (never a published file).
    pub fn remove_pending(&self, parent: Ino, name: &OsStr) {
        let pending = {
            let nodes = self.nodes.read();
            dir_ref(&nodes, parent)
                .and_then(|d| d.local.get(name))
                .and_then(|i| nodes.get(i))
                .is_some_and(|n| matches!(n.kind, NodeKind::Pending(_)))
        };
        if pending {
            let _ = self.remove_local(parent, name);
        }
    }

    /// Whether `ino` is a file being uploaded.
    pub fn is_pending(&self, ino: Ino) -> bool {
        matches!(self.nodes.read().get(&ino).map(|n| &n.kind), Some(NodeKind::Pending(_)))
    }

    /// Only `dir` (not what is below) is listed again on the next look.
    pub fn stale(&self, dir: Ino) {
        if let Some(d) = dir_mut(&mut self.nodes.write(), dir) {
            d.filled_at = None;
        }
    }

    /// The id of the project `dir` is in, if any.
    pub fn project_of(&self, mut dir: Ino) -> Option<String> {
        let nodes = self.nodes.read();
        for _ in 0..4096 {
            if let Some(e) = dir_ref(&nodes, dir).and_then(|d| d.entity.as_ref()) {
                if e.kind == EntityKind::Project {
                    return Some(e.id.clone());
                }
            }
            if dir == ROOT {
                return None;
            }
            dir = nodes.get(&dir)?.parent;
        }
        None
    }

    /// Sets a directory's `.error` (why a write there was refused).
    pub fn note(&self, dir: Ino, text: &str) {
        let mut nodes = self.nodes.write();
        self.set_error(&mut nodes, dir, Some(&format!("{}\n", text.trim_end())));
    }

    /// What directory `dir` is, for the write operations.
    pub fn place(&self, dir: Ino) -> Place {
        let nodes = self.nodes.read();
        let mut folders: Vec<String> = Vec::new();
        let mut at = dir;
        for _ in 0..4096 {
            let Some(n) = nodes.get(&at) else {
                return Place::Elsewhere("gone");
            };
            let NodeKind::Dir(d) = &n.kind else {
                return Place::Elsewhere("not a directory");
            };
            if d.entity.is_some() {
                return Place::Elsewhere("an entity directory");
            }
            match &d.listing {
                None if at == ROOT => return Place::Elsewhere("the root"),
                None => {
                    let name = dir_ref(&nodes, n.parent)
                        .and_then(|p| p.local.iter().chain(&p.listed).find(|(_, i)| **i == at))
                        .map(|(k, _)| k.to_string_lossy().into_owned());
                    match name {
                        Some(x) => folders.push(x),
                        None => return Place::Elsewhere("a folder"),
                    }
                    at = n.parent;
                }
                Some(ListKind::Projects) => return Place::Projects,
                Some(ListKind::AppResults(p)) => return Place::AppResults { project: p.clone() },
                Some(ListKind::AppResultFiles(a)) => {
                    let status = dir_ref(&nodes, n.parent)
                        .and_then(|x| x.entity.as_ref())
                        .map(|e| field_line(&serde_json::from_str(&e.raw).unwrap_or_default(), &["Status"], &[]))
                        .unwrap_or_default();
                    folders.reverse();
                    return Place::Files {
                        appresult: a.clone(),
                        dir: folders.join("/"),
                        complete: status.trim().eq_ignore_ascii_case("complete"),
                    };
                }
                Some(ListKind::SampleFiles(_)) => {
                    return Place::Elsewhere("a sample's files (samples are uploaded with `bs upload sample`)")
                }
                Some(ListKind::RunFiles(_)) => {
                    return Place::Elsewhere("a run's files (runs are uploaded by the instrument)")
                }
                Some(_) => return Place::Elsewhere("a listing BaseSpace makes"),
            }
        }
        Place::Elsewhere("too deep")
    }
}
