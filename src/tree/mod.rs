//! The inode table: BaseMount's layout ([`layout`]) made of lazily listed directories.
//!
//! Identity and state are apart. An inode is a name in its parent; a re-listing merges the
//! new items into the directory by name, and an entry keeps its inode while it is the same
//! thing (the same entity, the same file id *and version*: a new version of a file gets a
//! new inode, so kept page cache never mixes versions). Entries that the listing no longer
//! has are freed, or kept as orphans while the kernel still holds them.
//!
//! Three kinds of entries live in a directory: `fixed` ones made from its layout row
//! (hidden files, sub-directories), `listed` ones from the API listing that fills it, and
//! `local` ones the mount made itself (they survive every refill).
//!
//! Memory follows what the kernel holds: every entry the kernel learns of (lookup,
//! READDIRPLUS) is counted, and when it forgets a directory the directory's contents are
//! dropped and listed again on the next look. A listed file costs a node of a few hundred
//! bytes; hidden files and `.json` bodies are rendered when read, not stored.
//!
//! Laziness: a list directory is filled from the API the first time it is looked at, and
//! again when its listing is older than the metadata TTL or after `refresh`. Entity
//! directories and their hidden files come from the list item that named them, so
//! `ls -l` or `stat` never costs a request per entry.

pub mod layout;
pub mod names;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::api::{ApiError, BaseSpaceApi, EntityItem, FileInfo, ListKind, Listed, PropertyItem};
use layout::{EntityKind, Holds, Meta};
use names::PlanEntry;

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// Nodes freed by one forget above which the allocator is asked to give memory back.
const TRIM_AFTER_FREED: usize = 4096;

/// Errors of the tree layer.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("an entry of that name exists")]
    Exists,
    #[error("listing {what} failed: {source}")]
    Api { what: String, source: ApiError },
    #[error("the file is still uploading")]
    Uploading,
}

impl TreeError {
    pub fn errno(&self) -> i32 {
        match self {
            TreeError::NotFound => libc::ENOENT,
            TreeError::NotDir => libc::ENOTDIR,
            TreeError::IsDir => libc::EISDIR,
            TreeError::Exists => libc::EEXIST,
            TreeError::Api { source, .. } => source.errno(),
            TreeError::Uploading => libc::EBUSY,
        }
    }
}

/// A BaseSpace file the mount serves: what the read path needs to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub id: String,
    pub size: u64,
    /// Identity of this version of the bytes (cache key): the ETag if known, else date+size.
    pub version: String,
    /// `version` is BaseSpace's ETag (so it can be sent as `If-Match` and verified).
    pub has_etag: bool,
}

impl RemoteFile {
    /// The ETag the bytes must carry, if known.
    pub fn etag(&self) -> Option<&str> {
        self.has_etag.then_some(self.version.as_str())
    }
}

/// Where a directory sits, as far as writing into it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `Projects/`: `mkdir` makes a project.
    Projects,
    /// A project's `AppResults/`: `mkdir` makes an appresult.
    AppResults { project: String },
    /// An appresult's `Files/` or a folder in it (`dir`, `a/b`).
    Files {
        appresult: String,
        dir: String,
        complete: bool,
    },
    /// Anywhere else, and what it is.
    Elsewhere(&'static str),
}

/// What opening a file gives.
#[derive(Debug, Clone)]
pub enum FileContent {
    /// Generated text (README, .json, .id …), rendered now.
    Static(Arc<[u8]>),
    Remote(RemoteFile),
    /// The mount's live figures, generated when opened.
    Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
}

/// An entity as its directory remembers it (for hidden files and re-listings).
#[derive(Debug)]
struct EntityData {
    kind: EntityKind,
    id: String,
    name: String,
    href: String,
    /// The JSON BaseSpace sent, served pretty-printed as `.json`.
    raw: Arc<str>,
    /// The API server, for `.curl`.
    server: Arc<str>,
}

#[derive(Debug, Default)]
struct Dir {
    entity: Option<Arc<EntityData>>,
    /// The listing that fills `listed`, if any.
    listing: Option<ListKind>,
    /// `fixed` has been made from the layout row.
    built: bool,
    fixed: BTreeMap<OsString, Ino>,
    listed: BTreeMap<OsString, Ino>,
    /// For a `Files/` directory: every file of its listing, depth first and by name in each
    /// folder (the order `cp -r`, `tar` and `find` open them in): what prefetch across files
    /// follows. Each file's `seq` is its place here.
    files: Box<[Ino]>,
    local: BTreeMap<OsString, Ino>,
    filled_at: Option<Instant>,
    /// `listed` holds a listing (maybe stale): served when a refill fails.
    has_listing: bool,
    /// Why the last listing failed, or what it skipped: served as `.error`.
    error: Option<Arc<str>>,
}

impl Dir {
    /// A directory with nothing to build or list (a folder of `Files/`, a property array).
    fn folder() -> Dir {
        Dir {
            built: true,
            ..Dir::default()
        }
    }

    fn get(&self, name: &OsStr) -> Option<Ino> {
        self.local
            .get(name)
            .or_else(|| self.fixed.get(name))
            .or_else(|| self.listed.get(name))
            .copied()
    }
}

/// A listed file, compactly.
#[derive(Debug)]
struct FileNode {
    id: Box<str>,
    size: u64,
    version: Box<str>,
    has_etag: bool,
    /// Position in its listing's walk order ([`Dir::files`] of the `Files/` directory).
    seq: u32,
}

impl FileNode {
    /// A listed (or just uploaded) file: its version is the ETag when BaseSpace gives one,
    /// else date and size.
    fn of(f: &FileInfo, seq: u32) -> FileNode {
        let size = f.size.unwrap_or(0);
        let (version, has_etag) = match &f.etag {
            Some(e) if !e.is_empty() => (e.trim_matches('"').to_string(), true),
            _ => (format!("{}-{size}", f.date_modified.as_deref().unwrap_or("")), false),
        };
        FileNode {
            id: f.id.as_str().into(),
            size,
            version: version.into(),
            has_etag,
            seq,
        }
    }

    fn remote(&self) -> RemoteFile {
        RemoteFile {
            id: self.id.to_string(),
            size: self.size,
            version: self.version.to_string(),
            has_etag: self.has_etag,
        }
    }
}

/// Where an opened file stands in its listing's walk order ([`Tree::position`]), for
/// prefetch across files: the `Files/` directory and the place in its walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub dir: Ino,
    pub seq: u32,
}

#[derive(Debug)]
enum NodeKind {
    Dir(Box<Dir>),
    File(FileNode),
    /// Rendered from the parent directory's entity.
    Meta(Meta),
    /// The parent directory's `.error`.
    Error,
    Text(Arc<[u8]>),
    Stats,
    Symlink(Box<str>),
    /// A file being uploaded (a local entry): its size so far.
    Pending(Arc<AtomicU64>),
}

#[derive(Debug)]
struct Node {
    parent: Ino,
    /// References the kernel holds (lookups and READDIRPLUS entries not yet forgotten).
    lookups: u64,
    /// No longer in its parent: freed when the kernel forgets it.
    orphan: bool,
    mtime: SystemTime,
    kind: NodeKind,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// How long a listing is trusted before it is fetched again.
    pub metadata_ttl: Duration,
    /// Show the v2 views (`BioSamples/`, `Projects/<p>/Datasets/`); `--no-v2` turns them off.
    pub v2: bool,
}

/// The inode table.
pub struct Tree {
    api: Arc<dyn BaseSpaceApi>,
    opts: TreeOptions,
    /// The API server (for `.curl`).
    server: Arc<str>,
    nodes: RwLock<HashMap<Ino, Node>>,
    next_ino: AtomicU64,
    /// One fill at a time per directory; concurrent lookers wait for it. Entries leave
    /// when the fill ends.
    fill_locks: Mutex<HashMap<Ino, Arc<tokio::sync::Mutex<()>>>>,
    /// Directory fills performed (for tests and status).
    pub fills: AtomicU64,
}

/// The README at the mount root.
fn readme(server: &str) -> String {
    format!(
        "This is a bsmount filesystem: your Illumina BaseSpace Sequence Hub account ({server}),\n\
         read-only, laid out like BaseMount.\n\n\
         Projects/<project>/Samples/<sample>/Files/     FASTQ files of a sample\n\
         Projects/<project>/AppResults/<result>/Files/  outputs of an analysis\n\
         Projects/<project>/AppSessions/<analysis>/     what each analysis produced\n\
         Projects/<project>/Datasets/<dataset>/Files/   the same data as API v2 datasets\n\
         BioSamples/<biosample>/Datasets/               datasets by biosample (API v2)\n\
         Runs/<run>/Files/                             the sequencing run folder\n\
         <entity>/Properties/                          inputs and outputs, as links\n\n\
         Every directory has hidden metadata: .id .type .name .href .json (ls -a).\n\
         Listings are cached; `bsmount refresh PATH` re-reads them.\n\
         To unmount: bsmount unmount <mountpoint>\n"
    )
}

fn dir_node(parent: Ino, mtime: SystemTime, d: Dir) -> Node {
    Node {
        parent,
        lookups: 0,
        orphan: false,
        mtime,
        kind: NodeKind::Dir(Box::new(d)),
    }
}

fn leaf(parent: Ino, mtime: SystemTime, kind: NodeKind) -> Node {
    Node {
        parent,
        lookups: 0,
        orphan: false,
        mtime,
        kind,
    }
}

impl Tree {
    /// A tree whose root is the user's directory: `Projects/`, `Runs/`, `README`,
    /// `.bsmount/stats` and the hidden files of `users/current`.
    pub fn new(api: Arc<dyn BaseSpaceApi>, server: &str, user: &Value, opts: TreeOptions) -> Arc<Tree> {
        let t = Tree {
            api,
            opts,
            server: Arc::from(server.trim_end_matches('/')),
            nodes: RwLock::new(HashMap::new()),
            next_ino: AtomicU64::new(ROOT + 1),
            fill_locks: Mutex::new(HashMap::new()),
            fills: AtomicU64::new(0),
        };
        let now = SystemTime::now();
        let s = |k: &str| user.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
        let user_entity = EntityData {
            kind: EntityKind::User,
            id: s("Id"),
            name: s("Name"),
            href: "v1pre3/users/current".into(),
            raw: Arc::from(user.to_string()),
            server: t.server.clone(),
        };
        {
            let mut nodes = t.nodes.write();
            nodes.insert(
                ROOT,
                dir_node(
                    ROOT,
                    now,
                    Dir {
                        entity: Some(Arc::new(user_entity)),
                        ..Dir::default()
                    },
                ),
            );
            t.build_fixed(&mut nodes, ROOT);
            let readme = t.insert(
                &mut nodes,
                leaf(ROOT, now, NodeKind::Text(Arc::from(readme(server).into_bytes()))),
            );
            let ctl = t.insert(&mut nodes, dir_node(ROOT, now, Dir::default()));
            let stats = t.insert(&mut nodes, leaf(ctl, now, NodeKind::Stats));
            if let Some(d) = dir_mut(&mut nodes, ctl) {
                d.built = true;
                d.fixed.insert("stats".into(), stats);
            }
            let root = dir_mut(&mut nodes, ROOT).expect("root");
            root.fixed.insert("README".into(), readme);
            root.fixed.insert(".bsmount".into(), ctl);
        }
        Arc::new(t)
    }

    fn insert(&self, nodes: &mut HashMap<Ino, Node>, n: Node) -> Ino {
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        nodes.insert(ino, n);
        ino
    }

    /// Makes a directory's entries from its layout row, once.
    fn build_fixed(&self, nodes: &mut HashMap<Ino, Node>, dir: Ino) {
        let Some(n) = nodes.get(&dir) else { return };
        let mtime = n.mtime;
        let NodeKind::Dir(d) = &n.kind else { return };
        if d.built {
            return;
        }
        let mut fixed = BTreeMap::new();
        if let Some(e) = d.entity.clone() {
            let row = layout::row(e.kind);
            for (name, m) in layout::HIDDEN.iter().chain(row.files) {
                fixed.insert(
                    OsString::from(*name),
                    self.insert(nodes, leaf(dir, mtime, NodeKind::Meta(*m))),
                );
            }
            for d in row.dirs.iter().filter(|d| self.opts.v2 || !d.v2) {
                let sub = Dir {
                    listing: Some((d.list)(e.id.clone())),
                    built: true,
                    ..Dir::default()
                };
                fixed.insert(OsString::from(d.name), self.insert(nodes, dir_node(dir, mtime, sub)));
            }
        }
        if let Some(d) = dir_mut(nodes, dir) {
            d.fixed.extend(fixed);
            d.built = true;
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, TreeError> {
        let nodes = self.nodes.read();
        attr_of(&nodes, ino).ok_or(TreeError::NotFound)
    }

    /// Symlink target.
    pub fn readlink(&self, ino: Ino) -> Result<String, TreeError> {
        match self.nodes.read().get(&ino).map(|n| &n.kind) {
            Some(NodeKind::Symlink(t)) => Ok(t.to_string()),
            _ => Err(TreeError::NotFound),
        }
    }

    /// What a file holds (for open).
    pub fn content(&self, ino: Ino) -> Result<FileContent, TreeError> {
        let nodes = self.nodes.read();
        let n = nodes.get(&ino).ok_or(TreeError::NotFound)?;
        match &n.kind {
            NodeKind::File(f) => Ok(FileContent::Remote(f.remote())),
            NodeKind::Stats => Ok(FileContent::Stats),
            NodeKind::Dir(_) => Err(TreeError::IsDir),
            NodeKind::Symlink(_) => Err(TreeError::NotFound),
            NodeKind::Pending(_) => Err(TreeError::Uploading),
            _ => Ok(FileContent::Static(
                render(&nodes, n).unwrap_or_else(|| Arc::from(&b""[..])),
            )),
        }
    }

    /// A listed file's `Files/` directory and place in its walk order (cheap: asked at
    /// every open).
    pub fn position(&self, ino: Ino) -> Option<Position> {
        let nodes = self.nodes.read();
        let n = nodes.get(&ino)?;
        let NodeKind::File(f) = &n.kind else { return None };
        // The listing's order is kept by the `Files/` directory the listing filled.
        let mut dir = n.parent;
        let d = loop {
            let d = dir_ref(&nodes, dir)?;
            if d.listing.is_some() || dir == ROOT {
                break d;
            }
            dir = nodes.get(&dir)?.parent;
        };
        // A file orphaned by a refill has no place any more.
        (d.files.get(f.seq as usize) == Some(&ino)).then_some(Position { dir, seq: f.seq })
    }

    /// Up to `max` files after `pos` in its listing's walk order (`readdir` order).
    pub fn files_after(&self, pos: Position, max: usize) -> Vec<RemoteFile> {
        let nodes = self.nodes.read();
        let Some(d) = dir_ref(&nodes, pos.dir) else {
            return Vec::new();
        };
        d.files
            .get(pos.seq as usize + 1..)
            .unwrap_or_default()
            .iter()
            .take(max)
            .filter_map(|i| match &nodes.get(i)?.kind {
                NodeKind::File(x) => Some(x.remote()),
                _ => None,
            })
            .collect()
    }

    /// Finds `name` in directory `parent`, listing it first if needed, and counts the
    /// kernel's reference to it (given back by [`Tree::forget`]).
    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, TreeError> {
        if name == ".error" {
            // Readable even while the listing it explains keeps failing.
            let mut nodes = self.nodes.write();
            if let Some(ino) = dir_ref(&nodes, parent).and_then(|d| d.fixed.get(name).copied()) {
                return remember(&mut nodes, ino);
            }
        }
        self.ensure_filled(parent).await?;
        let mut nodes = self.nodes.write();
        let d = dir_ref(&nodes, parent).ok_or(TreeError::NotDir)?;
        let ino = d.get(name).ok_or(TreeError::NotFound)?;
        remember(&mut nodes, ino)
    }

    /// Counts a reference the kernel took without a lookup (a READDIRPLUS entry).
    pub fn remember(&self, ino: Ino) {
        let _ = remember(&mut self.nodes.write(), ino);
    }

    /// The kernel dropped `n` references to `ino`. At zero a directory's contents are
    /// freed (listed again when next looked at), and an orphan is freed whole.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT {
            return;
        }
        let freed = {
            let mut nodes = self.nodes.write();
            let Some(node) = nodes.get_mut(&ino) else { return };
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups > 0 {
                return;
            }
            if node.orphan {
                free_subtree(&mut nodes, vec![ino])
            } else if let NodeKind::Dir(d) = &mut node.kind {
                // Only what can be made again is dropped: a listing (listed again on the
                // next look) and an entity's layout entries. A folder inside `Files/` is
                // part of its `Files/` listing and goes when that one is forgotten.
                let mut kids: Vec<Ino> = Vec::new();
                if d.listing.is_some() {
                    kids.extend(std::mem::take(&mut d.listed).into_values());
                    d.files = Box::default();
                    kids.extend(d.fixed.remove(OsStr::new(".error")));
                    d.filled_at = None;
                    d.has_listing = false;
                    d.error = None;
                }
                if d.entity.is_some() {
                    kids.extend(std::mem::take(&mut d.fixed).into_values());
                    d.built = false;
                }
                free_subtree(&mut nodes, kids)
            } else {
                0
            }
        };
        if freed >= TRIM_AFTER_FREED {
            trim_heap();
        }
    }

    /// Entries of a directory (without `.` and `..`).
    pub async fn readdir(&self, ino: Ino) -> Result<Vec<(OsString, Attr)>, TreeError> {
        // `Files.metadata/` lists nothing (its entries are hidden, as BaseMount's are) and so
        // costs no listing: `find`, `du` and `cp -r` pass it by; `cd` into a path fills it.
        let hidden = matches!(
            dir_ref(&self.nodes.read(), ino).and_then(|d| d.listing.as_ref()),
            Some(ListKind::FilesMetadata(_))
        );
        if !hidden {
            self.ensure_filled(ino).await?;
        }
        let nodes = self.nodes.read();
        let d = dir_ref(&nodes, ino).ok_or(TreeError::NotDir)?;
        let mut out = Vec::with_capacity(d.local.len() + d.fixed.len() + d.listed.len());
        let shadowed = |name: &OsStr| d.local.contains_key(name) || d.fixed.contains_key(name);
        for (name, c) in d.local.iter().chain(&d.fixed) {
            out.extend(attr_of(&nodes, *c).map(|a| (name.clone(), a)));
        }
        for (name, c) in &d.listed {
            // Inside `Files.metadata/` the per-file directories stay hidden too.
            let hidden = hidden
                || dir_ref(&nodes, *c)
                    .and_then(|x| x.entity.as_ref())
                    .is_some_and(|e| e.kind == EntityKind::File);
            if !shadowed(name) && !hidden {
                out.extend(attr_of(&nodes, *c).map(|a| (name.clone(), a)));
            }
        }
        Ok(out)
    }

    /// Parent inode (for `..`).
    pub fn parent(&self, ino: Ino) -> Ino {
        self.nodes.read().get(&ino).map(|n| n.parent).unwrap_or(ROOT)
    }

    /// Number of inodes held (for tests and status).
    pub fn len(&self) -> usize {
        self.nodes.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an entry the mount made itself (an upload in progress, say): it stays through
    /// every refill until removed. `content` is what it reads as.
    pub fn add_local(&self, parent: Ino, name: &OsStr, content: Arc<[u8]>) -> Result<Attr, TreeError> {
        let mut nodes = self.nodes.write();
        let d = dir_ref(&nodes, parent).ok_or(TreeError::NotDir)?;
        if d.get(name).is_some() {
            return Err(TreeError::Exists);
        }
        let ino = self.insert(&mut nodes, leaf(parent, SystemTime::now(), NodeKind::Text(content)));
        dir_mut(&mut nodes, parent)
            .expect("checked above")
            .local
            .insert(name.to_os_string(), ino);
        attr_of(&nodes, ino).ok_or(TreeError::NotFound)
    }

    /// Removes a local entry.
    pub fn remove_local(&self, parent: Ino, name: &OsStr) -> Result<(), TreeError> {
        let mut nodes = self.nodes.write();
        let d = dir_mut(&mut nodes, parent).ok_or(TreeError::NotDir)?;
        let ino = d.local.remove(name).ok_or(TreeError::NotFound)?;
        free_subtree(&mut nodes, vec![ino]);
        Ok(())
    }

    /// Adds a local entry of `kind` (not listed by BaseSpace, kept through refills).
    fn add_local_node(&self, parent: Ino, name: &OsStr, kind: NodeKind) -> Result<Attr, TreeError> {
        let mut nodes = self.nodes.write();
        let d = dir_ref(&nodes, parent).ok_or(TreeError::NotDir)?;
        if d.get(name).is_some() {
            return Err(TreeError::Exists);
        }
        let ino = self.insert(&mut nodes, leaf(parent, SystemTime::now(), kind));
        let d = dir_mut(&mut nodes, parent).expect("checked above");
        d.local.insert(name.to_os_string(), ino);
        remember(&mut nodes, ino)
    }

    /// A file being uploaded, shown at once with the size written so far; counted as a
    /// lookup (the kernel holds what `create` returns).
    pub fn add_pending(&self, parent: Ino, name: &OsStr, size: Arc<AtomicU64>) -> Result<Attr, TreeError> {
        self.add_local_node(parent, name, NodeKind::Pending(size))
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
                        .map(|e| field_line(&e.raw, &["Status"], &[]))
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

    /// The entity a directory shows: kind and id.
    pub fn entity(&self, ino: Ino) -> Option<(EntityKind, String)> {
        let nodes = self.nodes.read();
        dir_ref(&nodes, ino)
            .and_then(|d| d.entity.as_ref())
            .map(|e| (e.kind, e.id.clone()))
    }

    /// Marks `ino` and every listed directory below it stale, so the next look re-lists.
    pub fn refresh(&self, ino: Ino) {
        let mut nodes = self.nodes.write();
        let mut stack = vec![ino];
        let mut seen = HashSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            if let Some(d) = dir_mut(&mut nodes, i) {
                d.filled_at = None;
                stack.extend(d.fixed.values().chain(d.listed.values()).copied());
            }
        }
    }

    async fn ensure_filled(&self, ino: Ino) -> Result<(), TreeError> {
        let stale = |t: &Tree| -> Result<Option<ListKind>, TreeError> {
            let check = |d: &Dir| match (&d.listing, d.filled_at) {
                (Some(_), Some(at)) if at.elapsed() < t.opts.metadata_ttl => None,
                (Some(k), _) => Some(k.clone()),
                (None, _) => None,
            };
            {
                let nodes = t.nodes.read();
                match nodes.get(&ino).map(|n| &n.kind) {
                    None => return Err(TreeError::NotFound),
                    Some(NodeKind::Dir(d)) if d.built => return Ok(check(d)),
                    Some(NodeKind::Dir(_)) => {}
                    Some(_) => return Err(TreeError::NotDir),
                }
            }
            let mut nodes = t.nodes.write();
            t.build_fixed(&mut nodes, ino);
            dir_ref(&nodes, ino).map(check).ok_or(TreeError::NotFound)
        };
        if stale(self)?.is_none() {
            return Ok(());
        }
        let lock = self.fill_locks.lock().entry(ino).or_default().clone();
        let _guard = lock.lock().await;
        let result = match stale(self)? {
            None => Ok(()), // filled while we waited
            Some(kind) => self.fill(ino, kind).await,
        };
        self.fill_locks.lock().remove(&ino);
        result
    }

    async fn fill(&self, ino: Ino, kind: ListKind) -> Result<(), TreeError> {
        self.fills.fetch_add(1, Ordering::Relaxed);
        let listed = match layout::holds(&kind) {
            Holds::Files => self.api.list_files(kind.clone()).await.map(Listing::Files),
            Holds::Entities(k) => self
                .api
                .list_entities(kind.clone())
                .await
                .map(|l| Listing::Entities(k, l)),
            Holds::Outputs => self.api.list_entities(kind.clone()).await.map(Listing::Outputs),
            Holds::Properties => self.api.list_properties(kind.clone()).await.map(Listing::Properties),
            Holds::FilesMetadata => self.api.list_entities(kind.clone()).await.map(Listing::FilesMetadata),
            Holds::Token => self.api.token_info().await.map(Listing::Token),
            Holds::Folder => self.api.list_files(kind.clone()).await.map(Listing::Folder),
        };
        match listed {
            Ok(l) => {
                let large = l.len() >= TRIM_AFTER_FREED;
                let r = self.install(ino, &kind, l);
                if large {
                    // A large listing's parsing (pages, plan, names) is freed by now.
                    trim_heap();
                }
                r
            }
            Err(e) => {
                let mut nodes = self.nodes.write();
                self.set_error(&mut nodes, ino, Some(&format!("{}: {e}\n", kind.href())));
                if let Some(d) = dir_mut(&mut nodes, ino) {
                    if d.has_listing {
                        // Keep serving the stale listing; retry after another TTL.
                        tracing::warn!(href = %kind.href(), error = %e, "listing failed; serving the previous listing");
                        d.filled_at = Some(Instant::now());
                        return Ok(());
                    }
                }
                Err(TreeError::Api {
                    what: kind.href(),
                    source: e,
                })
            }
        }
    }

    /// Merges a fetched listing into directory `ino`.
    fn install(&self, ino: Ino, kind: &ListKind, l: Listing) -> Result<(), TreeError> {
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
                        NodeKind::Text(Arc::from(pretty(&v.to_string()).into_bytes())),
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
        }
        Ok(())
    }

    /// Sets (or clears) a directory's `.error`.
    fn set_error(&self, nodes: &mut HashMap<Ino, Node>, dir: Ino, text: Option<&str>) {
        let Some(d) = dir_mut(nodes, dir) else { return };
        d.error = text.map(Arc::from);
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
    fn apply_entities(
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
        let reserved: HashSet<String> = items.iter().map(|i| format!(".id.{}", i.entity.id)).collect();
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
    fn apply_outputs(&self, nodes: &mut HashMap<Ino, Node>, dir: Ino, listed: Listed<EntityItem>) -> Vec<String> {
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
    fn apply_files(&self, nodes: &mut HashMap<Ino, Node>, dir: Ino, listed: Listed<FileInfo>) -> Vec<String> {
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
    fn context_project(nodes: &HashMap<Ino, Node>, mut dir: Ino) -> Option<String> {
        let mut named = None;
        for _ in 0..4096 {
            if let Some(e) = dir_ref(nodes, dir).and_then(|d| d.entity.as_ref()) {
                if e.kind == EntityKind::Project {
                    return Some(e.id.clone());
                }
                if named.is_none() {
                    let v: Value = serde_json::from_str(&e.raw).unwrap_or(Value::Null);
                    named = ["Project", "DefaultProject"]
                        .iter()
                        .find_map(|k| v.get(k)?.get("Id").and_then(id_text));
                }
            }
            if dir == ROOT {
                break;
            }
            dir = nodes.get(&dir)?.parent;
        }
        named.filter(|p| names::safe_id(p))
    }

    /// Fills a `Properties/` directory: a string property is a file, an array a directory of
    /// `0`, `1`, …, a map a directory of its keys; an entity reference is a symlink to the
    /// entity's directory, built from the layout and a checked id (never a server path), so
    /// it never leaves the mount. Rebuilt whole on every fill: properties are few.
    fn apply_properties(&self, nodes: &mut HashMap<Ino, Node>, dir: Ino, listed: Listed<PropertyItem>) -> Vec<String> {
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
            let ty = p.raw.get("Type").and_then(Value::as_str).unwrap_or("string");
            let base = ty.trim_end_matches("[]");
            let ino = if ty.ends_with("[]") {
                let mut entries = BTreeMap::new();
                for (i, item) in property_items(&p.raw).iter().enumerate() {
                    let e = self.property_entry(nodes, dir, base, item, project.as_deref(), depth + 1, mtime);
                    entries.insert(OsString::from(i.to_string()), e);
                }
                self.folder_with(nodes, dir, mtime, entries)
            } else if let Some(map) = p.raw.get("ContentMap").and_then(Value::as_array) {
                let mut entries = BTreeMap::new();
                for kv in map {
                    let Some(k) = kv.get("Key").and_then(Value::as_str) else {
                        continue;
                    };
                    let text: Vec<String> = match kv.get("Values") {
                        Some(Value::Array(vs)) => vs.iter().map(scalar_text).collect(),
                        Some(v) => vec![scalar_text(v)],
                        None => Vec::new(),
                    };
                    let f = self.insert(nodes, leaf(dir, mtime, NodeKind::Text(lines(&text))));
                    entries.insert(OsString::from(names::sanitize(k)), f);
                }
                self.folder_with(nodes, dir, mtime, entries)
            } else {
                let content = p.raw.get("Content").cloned().unwrap_or(Value::Null);
                self.property_entry(nodes, dir, base, &content, project.as_deref(), depth, mtime)
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
        if let Some(d) = dir_mut(nodes, sub) {
            d.listed = entries;
        }
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
        v: &Value,
        project: Option<&str>,
        depth: usize,
        mtime: SystemTime,
    ) -> Ino {
        // The project named by the entity itself wins over the one it is read in.
        let own = [("Projects", true), ("Project", false), ("DefaultProject", false)]
            .iter()
            .find_map(|(k, list)| {
                let p = v.get(*k)?;
                let p = if *list { p.get(0)? } else { p };
                p.get("Id").and_then(id_text)
            })
            .filter(|p| names::safe_id(p));
        let project = own.as_deref().or(project);
        let target = v
            .get("Id")
            .and_then(id_text)
            .filter(|id| names::safe_id(id))
            .and_then(|id| layout::entity_path(kind, &id, project));
        let node = match target {
            Some(t) => NodeKind::Symlink(format!("{}{t}", "../".repeat(depth)).into()),
            None if v.is_object() || v.is_array() => NodeKind::Text(Arc::from(pretty(&v.to_string()).into_bytes())),
            None => NodeKind::Text(lines(&[scalar_text(v)])),
        };
        self.insert(nodes, leaf(dir, mtime, node))
    }

    /// Fills `Files.metadata/`: the folders of the `Files/` listing, and for each file a
    /// directory (hidden from `readdir`) holding its `.id .type .name .href .json .curl`.
    fn apply_files_metadata(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        listed: Listed<EntityItem>,
    ) -> Vec<String> {
        let old = match dir_mut(nodes, dir) {
            Some(d) => std::mem::take(&mut d.listed),
            None => return listed.skipped,
        };
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
        free_subtree(nodes, old.into_values().collect());
        let mut stack = vec![(0usize, dir)];
        while let Some((d, ino)) = stack.pop() {
            let mut entries = BTreeMap::new();
            for (name, entry) in plan[d].entries() {
                let child = match entry {
                    PlanEntry::Dir(sub) => {
                        let c = self.insert(nodes, dir_node(ino, UNIX_EPOCH, Dir::folder()));
                        stack.push((sub, c));
                        c
                    }
                    PlanEntry::File(i) => {
                        let f = &files[i];
                        let e = &f.entity;
                        let data = EntityData {
                            kind: EntityKind::File,
                            id: e.id.clone(),
                            name: e.name.clone().unwrap_or_default(),
                            href: e.href.clone().unwrap_or_else(|| format!("v1pre3/files/{}", e.id)),
                            raw: f.raw.clone(),
                            server: self.server.clone(),
                        };
                        let d = Dir {
                            entity: Some(Arc::new(data)),
                            ..Dir::default()
                        };
                        self.insert(nodes, dir_node(ino, e.mtime(), d))
                    }
                };
                entries.insert(OsString::from(name), child);
            }
            if let Some(x) = dir_mut(nodes, ino) {
                x.listed = entries;
            }
        }
        listed.skipped
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
    fn apply_folder(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        kind: &ListKind,
        listed: Listed<FileInfo>,
    ) -> Vec<String> {
        let mut skipped = listed.skipped;
        let ListKind::DatasetFolder(ds, path) = kind else {
            return skipped;
        };
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
            let listing = ListKind::DatasetFolder(ds.clone(), format!("{path}{sub}/"));
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
    fn finish_listing(
        &self,
        nodes: &mut HashMap<Ino, Node>,
        dir: Ino,
        old: BTreeMap<OsString, Ino>,
        new: BTreeMap<OsString, Ino>,
    ) {
        if let Some(d) = dir_mut(nodes, dir) {
            d.listed = new;
        }
        free_subtree(nodes, old.into_values().collect());
    }
}

/// What a fill fetched.
enum Listing {
    Files(Listed<FileInfo>),
    Entities(EntityKind, Listed<EntityItem>),
    Outputs(Listed<EntityItem>),
    Properties(Listed<PropertyItem>),
    FilesMetadata(Listed<EntityItem>),
    Token(Value),
    Folder(Listed<FileInfo>),
}

impl Listing {
    fn len(&self) -> usize {
        match self {
            Listing::Files(l) | Listing::Folder(l) => l.items.len(),
            Listing::Entities(_, l) | Listing::Outputs(l) | Listing::FilesMetadata(l) => l.items.len(),
            Listing::Properties(l) => l.items.len(),
            Listing::Token(_) => 1,
        }
    }
}

fn dir_ref(nodes: &HashMap<Ino, Node>, ino: Ino) -> Option<&Dir> {
    match &nodes.get(&ino)?.kind {
        NodeKind::Dir(d) => Some(d),
        _ => None,
    }
}

fn dir_mut(nodes: &mut HashMap<Ino, Node>, ino: Ino) -> Option<&mut Dir> {
    match &mut nodes.get_mut(&ino)?.kind {
        NodeKind::Dir(d) => Some(d),
        _ => None,
    }
}

fn remember(nodes: &mut HashMap<Ino, Node>, ino: Ino) -> Result<Attr, TreeError> {
    let attr = attr_of(nodes, ino).ok_or(TreeError::NotFound)?;
    if let Some(n) = nodes.get_mut(&ino) {
        n.lookups += 1;
    }
    Ok(attr)
}

/// Frees nodes and everything below them, without recursion. A node the kernel still
/// holds is kept as an orphan (with what is below it) until it is forgotten. Returns how
/// many nodes were freed.
fn free_subtree(nodes: &mut HashMap<Ino, Node>, mut stack: Vec<Ino>) -> usize {
    let mut freed = 0;
    while let Some(i) = stack.pop() {
        if i == ROOT {
            continue;
        }
        match nodes.get_mut(&i) {
            Some(n) if n.lookups > 0 => n.orphan = true,
            Some(_) => {
                let n = nodes.remove(&i).expect("present");
                freed += 1;
                if let NodeKind::Dir(d) = n.kind {
                    let d = *d;
                    stack.extend(
                        d.fixed
                            .into_values()
                            .chain(d.listed.into_values())
                            .chain(d.local.into_values()),
                    );
                }
            }
            None => {}
        }
    }
    freed
}

/// Gives freed heap memory back to the system (glibc keeps it otherwise).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The bytes of a generated file.
fn render(nodes: &HashMap<Ino, Node>, n: &Node) -> Option<Arc<[u8]>> {
    let text = match &n.kind {
        NodeKind::Text(t) => return Some(t.clone()),
        NodeKind::Error => dir_ref(nodes, n.parent)?.error.as_deref().unwrap_or("").to_string(),
        NodeKind::Meta(m) => {
            let e = dir_ref(nodes, n.parent)?.entity.as_ref()?;
            match m {
                Meta::Id => format!("{}\n", e.id),
                Meta::Type => format!("{}\n", layout::row(e.kind).type_name),
                Meta::Name => format!("{}\n", e.name),
                Meta::Href => format!("{}\n", e.href),
                Meta::Json => pretty(&e.raw),
                Meta::SampleProperties => sample_properties(&e.raw),
                Meta::Curl => curl(e),
                Meta::Status => field_line(&e.raw, &["Status", "ExecutionStatus", "UploadStatus"], &[]),
                Meta::DatasetTypeId => field_line(&e.raw, &["DatasetType"], &["Id"]),
                Meta::DefaultProject => field_line(&e.raw, &["DefaultProject"], &["Name"]),
                Meta::Attributes => attributes(&e.raw),
                Meta::TrashItemType => {
                    let t = field_line(&e.raw, &["TrashItemType"], &[]);
                    let d = field_line(&e.raw, &["DeleteType"], &[]);
                    format!("{} ({})\n", t.trim_end(), d.trim_end())
                }
            }
        }
        _ => return None,
    };
    Some(Arc::from(text.into_bytes()))
}

/// An id as BaseSpace sends it: a string, or a number.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A scalar as text (a string without its quotes).
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Lines of text, each ended by a newline.
fn lines(items: &[String]) -> Arc<[u8]> {
    let mut out = String::new();
    for l in items {
        out.push_str(l);
        if !l.ends_with('\n') {
            out.push('\n');
        }
    }
    Arc::from(out.into_bytes())
}

/// The items of an array property: v1pre3 puts them in `Items`, v2 in `<Kind>Items`
/// (`SampleLibraryItems`, `RunItems`, …).
fn property_items(raw: &Value) -> Vec<Value> {
    let Some(m) = raw.as_object() else { return Vec::new() };
    if let Some(Value::Array(a)) = m.get("Items") {
        return a.clone();
    }
    m.iter()
        .find(|(k, v)| k.ends_with("Items") && v.is_array())
        .and_then(|(_, v)| v.as_array().cloned())
        .unwrap_or_default()
}

/// `.curl`: the request that fills the directory, against the configured server (never a
/// host a response named), with `$BASESPACE_ACCESS_TOKEN` where the token goes.
fn curl(e: &EntityData) -> String {
    let path = match e.href.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => e.href.as_str(),
    };
    let url = format!("{}/{}", e.server, path.trim_start_matches('/'));
    format!(
        "curl -s -H \"x-access-token: $BASESPACE_ACCESS_TOKEN\" '{}'\n",
        url.replace('\'', "%27")
    )
}

/// The first of `keys` the entity's JSON has, then `inner` fields below it, as one line.
fn field_line(raw: &str, keys: &[&str], inner: &[&str]) -> String {
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let mut x = keys.iter().find_map(|k| v.get(*k)).unwrap_or(&Value::Null);
    for k in inner {
        x = x.get(*k).unwrap_or(&Value::Null);
    }
    match x {
        Value::Null => String::new(),
        other => scalar_text(other) + "\n",
    }
}

/// A dataset's `Attributes` as `key: value` lines, nested keys joined by `.`
/// (`common_fastq.TotalReadsPF: 1688304`).
fn attributes(raw: &str) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            other => out.push_str(&format!("{prefix}: {}\n", scalar_text(other))),
        }
    }
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let mut out = String::new();
    if let Some(a) = v.get("Attributes") {
        walk("", a, &mut out);
    }
    out
}

fn pretty(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        Err(_) => format!("{raw}\n"),
    }
}

fn attr_of(nodes: &HashMap<Ino, Node>, ino: Ino) -> Option<Attr> {
    let n = nodes.get(&ino)?;
    let (kind, size) = match &n.kind {
        NodeKind::Dir(_) => (Kind::Dir, 0),
        NodeKind::File(f) => (Kind::File, f.size),
        NodeKind::Stats => (Kind::File, 0),
        NodeKind::Symlink(t) => (Kind::Symlink, t.len() as u64),
        NodeKind::Pending(n) => (Kind::File, n.load(Ordering::Relaxed)),
        _ => (Kind::File, render(nodes, n).map_or(0, |b| b.len() as u64)),
    };
    Some(Attr {
        ino,
        kind,
        size,
        mtime: n.mtime,
    })
}

/// `Key: value` lines of a sample, as BaseMount's `SampleProperties`.
fn sample_properties(raw: &str) -> String {
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let mut out = String::new();
    for k in [
        "Name",
        "SampleId",
        "SampleNumber",
        "ExperimentName",
        "Status",
        "NumReadsRaw",
        "NumReadsPF",
        "IsPairedEnd",
        "Read1",
        "Read2",
        "TotalSize",
        "DateCreated",
    ] {
        if let Some(x) = v.get(k) {
            let s = match x {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            out.push_str(&format!("{k}: {s}\n"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
