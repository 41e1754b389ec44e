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

pub mod budget;
mod fill;
pub mod layout;
mod local;
pub mod names;
mod render;
pub mod walk;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::api::{ApiError, BaseSpaceApi, FileInfo, ListKind, Listed, PropertyItem};
use fill::Listing;
use layout::{EntityKind, Holds, Meta};
use render::{generated, meta_size, readme};

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// Nodes freed (by one forget, or by many since the last time) above which the allocator is
/// asked to give memory back: a walk's directories are forgotten one by one.
const TRIM_AFTER_FREED: usize = 4096;

/// A list directory's files that answer lookups (`cat Projects/.curl`) but are not listed:
/// scripts take the first hidden name of `Projects/` (`ls -a | sed -n 3p`, Python's sorted
/// `listdir`) for a project, which BaseMount's `.id.<ID>` links satisfy and a `.curl`
/// sorting before them would not.
const LOOKUP_ONLY: &[&str] = &[".href", ".curl"];

/// Errors of the tree layer.
#[derive(Debug, Clone, thiserror::Error)]
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
    #[error("listing {what} would take ~{} MiB, more than the mount's memory for listings ({} MiB, --listing-memory): not shown", .bytes >> 20, .limit >> 20)]
    OverBudget { what: String, bytes: u64, limit: u64 },
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
            TreeError::OverBudget { .. } => libc::EIO,
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
    /// Generated text (README, .id, .name …), rendered now.
    Static(Arc<[u8]>),
    Remote(RemoteFile),
    /// The mount's live figures, generated when opened.
    Stats,
    /// A `.json`: BaseSpace's answer to the directory's own request, asked when opened.
    Fetch(Fetch),
}

/// What a `.json` holds, as BaseSpace answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// An entity's own resource (its API path, relative to the server).
    Resource(String),
    /// Every item of a list directory's listing.
    List(ListKind),
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
    /// A file being written through the mount (an upload not finished yet).
    pub writing: bool,
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
    /// Sizes of its generated files, rendered once when first asked ([`render::meta_size`]).
    sizes: std::sync::OnceLock<Box<[(Meta, u64)]>>,
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
    /// The listed sub-directories, by name (the order `readdir` gives): what a walk over
    /// this directory's entries steps through ([`walk`]). Each one's `sibling` is its place here.
    dirs: Box<[Ino]>,
    /// Place among the parent's listed sub-directories, if it is one.
    sibling: Option<u32>,
    local: BTreeMap<OsString, Ino>,
    filled_at: Option<Instant>,
    /// `listed` holds a listing (maybe stale): served when a refill fails.
    has_listing: bool,
    /// Why the last listing failed, or what it skipped: served as `.error`.
    error: Option<Arc<str>>,
    /// Listed ahead of a walk and not looked at since (what a walk's overshoot is counted by).
    ahead_unused: bool,
}

impl Dir {
    /// A directory with nothing to build or list (a folder of `Files/`, a property array).
    fn folder() -> Dir {
        Dir {
            built: true,
            ..Dir::default()
        }
    }

    /// Whether `readdir` fills it from a listing (`Files.metadata/` lists nothing, and so
    /// is never filled to be read).
    fn fills_on_readdir(&self) -> bool {
        self.listing
            .as_ref()
            .is_some_and(|l| !matches!(l, ListKind::FilesMetadata(_)))
    }

    /// Holds its listing (or needs none).
    fn is_filled(&self) -> bool {
        self.listing.is_none() || self.has_listing
    }

    /// Drops the listing (listed again on the next look); the entries to free.
    fn drop_listing(&mut self) -> Vec<Ino> {
        let mut kids: Vec<Ino> = std::mem::take(&mut self.listed).into_values().collect();
        self.files = Box::default();
        self.dirs = Box::default();
        kids.extend(self.fixed.remove(OsStr::new(".error")));
        self.filled_at = None;
        self.has_listing = false;
        self.error = None;
        kids
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

#[derive(Debug)]
enum NodeKind {
    Dir(Box<Dir>),
    File(FileNode),
    /// Rendered from the parent directory's entity.
    Meta(Meta),
    /// The parent directory's `.error`.
    Error,
    /// A list directory's `.json` (its listing, asked when opened).
    ListJson,
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
    /// What all listings together may hold in memory ([`budget`]).
    pub listing_memory: u64,
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
    /// Listings that just failed, when, and why: the lookers that waited on the fill get the
    /// same answer at once instead of a fresh wait of their own each.
    failed_fills: Mutex<HashMap<Ino, (Instant, TreeError)>>,
    /// Directory fills performed (for tests and status).
    pub fills: AtomicU64,
    /// Of those, fills made ahead of a walk ([`Tree::fill_ahead`]).
    pub fills_ahead: AtomicU64,
    /// Fills ahead of a walk started (some are cancelled, or find the listing made already).
    pub fills_ahead_started: AtomicU64,
    /// Listings made ahead that the walk then looked at: `fills_ahead` minus this is what
    /// listing ahead cost beyond the walk's own requests (its overshoot).
    pub fills_ahead_used: AtomicU64,
    /// Nodes freed since the allocator was last asked to give memory back.
    freed_since_trim: std::sync::atomic::AtomicUsize,
    /// Memory charged to listings across the mount.
    pub budget: budget::Budget,
}

/// Removes a directory's fill lock from the table when its fill ends.
struct FillEntry<'a>(&'a Tree, Ino);

impl Drop for FillEntry<'_> {
    fn drop(&mut self) {
        self.0.fill_locks.lock().remove(&self.1);
    }
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
            budget: budget::Budget::new(opts.listing_memory),
            api,
            opts,
            server: Arc::from(server.trim_end_matches('/')),
            nodes: RwLock::new(HashMap::new()),
            next_ino: AtomicU64::new(ROOT + 1),
            fill_locks: Mutex::new(HashMap::new()),
            failed_fills: Mutex::new(HashMap::new()),
            fills: AtomicU64::new(0),
            fills_ahead: AtomicU64::new(0),
            fills_ahead_started: AtomicU64::new(0),
            fills_ahead_used: AtomicU64::new(0),
            freed_since_trim: Default::default(),
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
            sizes: Default::default(),
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
                let listing = (d.list)(e.id.clone());
                let lists_entities = matches!(layout::holds(&listing), Holds::Entities(_));
                let sub = self.insert(
                    nodes,
                    dir_node(
                        dir,
                        mtime,
                        Dir {
                            listing: Some(listing.clone()),
                            built: true,
                            ..Dir::default()
                        },
                    ),
                );
                if lists_entities {
                    // A list directory has BaseMount's `.json` (the list response), `.href` and
                    // `.curl`; the last two answer lookups but stay out of `readdir`
                    // ([`LOOKUP_ONLY`]).
                    let href = listing.href();
                    let own = [
                        (".json", NodeKind::ListJson),
                        (".href", NodeKind::Text(Arc::from(format!("{href}\n").into_bytes()))),
                        (
                            ".curl",
                            NodeKind::Text(Arc::from(render::curl_line(&self.server, &href).into_bytes())),
                        ),
                    ];
                    for (name, kind) in own {
                        let f = self.insert(nodes, leaf(sub, mtime, kind));
                        if let Some(x) = dir_mut(nodes, sub) {
                            x.fixed.insert(name.into(), f);
                        }
                    }
                }
                fixed.insert(OsString::from(d.name), sub);
            }
            for (name, link) in row.links {
                let target = match link {
                    layout::Link::To(t) => t.to_string(),
                    layout::Link::ParentAppSession => format!("../../AppSessions/{}", layout::parent_of(&e.id)),
                };
                fixed.insert(
                    OsString::from(*name),
                    self.insert(nodes, leaf(dir, mtime, NodeKind::Symlink(target.into()))),
                );
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
            NodeKind::Meta(Meta::Json) => {
                let e = dir_ref(&nodes, n.parent).and_then(|d| d.entity.as_ref());
                let e = e.ok_or(TreeError::NotFound)?;
                Ok(FileContent::Fetch(Fetch::Resource(render::api_path(&e.href))))
            }
            NodeKind::ListJson => {
                let l = dir_ref(&nodes, n.parent).and_then(|d| d.listing.clone());
                Ok(FileContent::Fetch(Fetch::List(l.ok_or(TreeError::NotFound)?)))
            }
            NodeKind::Dir(_) => Err(TreeError::IsDir),
            NodeKind::Symlink(_) => Err(TreeError::NotFound),
            NodeKind::Pending(_) => Err(TreeError::Uploading),
            _ => Ok(FileContent::Static(
                generated(&nodes, n).unwrap_or_else(|| Arc::from(&b""[..])),
            )),
        }
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
        match self.metadata_root(parent) {
            // `Files.metadata/`: its folders are there already (mirrored from `Files/`); a
            // file's own directory needs the listing of files with their metadata.
            Some(root) => {
                // (The read guard must be gone before `remember` takes the write lock: an
                // `if let` would keep it alive through its block.)
                let known = dir_ref(&self.nodes.read(), parent).and_then(|d| d.get(name));
                if let Some(ino) = known {
                    return remember(&mut self.nodes.write(), ino);
                }
                self.ensure_filled(root).await?;
            }
            None => {
                self.ensure_filled(parent).await?;
            }
        }
        let found = dir_ref(&self.nodes.read(), parent).and_then(|d| d.get(name));
        let ino = match found {
            Some(i) => i,
            None => self.parent_appsession(parent, name).await?,
        };
        remember(&mut self.nodes.write(), ino)
    }

    /// `.parent.<sample id>` in a project's `AppSessions/`: the `.id.<ID>` link of the
    /// appsession that made the sample, which the sample's own answer names.
    async fn parent_appsession(&self, dir: Ino, name: &OsStr) -> Result<Ino, TreeError> {
        let sample = name
            .to_str()
            .and_then(|n| n.strip_prefix(".parent."))
            .filter(|i| names::safe_id(i));
        let lists_sessions = matches!(
            dir_ref(&self.nodes.read(), dir).and_then(|d| d.listing.as_ref()),
            Some(ListKind::AppSessions(_))
        );
        let (Some(sample), true) = (sample, lists_sessions) else {
            return Err(TreeError::NotFound);
        };
        let path = format!("v1pre3/samples/{}", crate::api::segment(sample));
        let body = self
            .api
            .get_raw(&path)
            .await
            .map_err(|source| TreeError::Api { what: path, source })?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Made {
            response: Option<MadeBy>,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct MadeBy {
            app_session: Option<crate::api::model::EntityRef>,
        }
        let session = serde_json::from_slice::<Made>(&body)
            .ok()
            .and_then(|m| m.response?.app_session)
            .map(|s| s.id)
            .filter(|id| names::safe_id(id))
            .ok_or(TreeError::NotFound)?;
        let nodes = self.nodes.read();
        dir_ref(&nodes, dir)
            .and_then(|d| d.get(OsStr::new(&format!(".id.{session}"))))
            .ok_or(TreeError::NotFound)
    }

    /// The `Files.metadata/` directory `dir` is (or is a folder of), if any.
    fn metadata_root(&self, mut dir: Ino) -> Option<Ino> {
        let nodes = self.nodes.read();
        for _ in 0..4096 {
            let d = dir_ref(&nodes, dir)?;
            match &d.listing {
                Some(ListKind::FilesMetadata(_)) => return Some(dir),
                Some(_) => return None,
                None if d.entity.is_some() || dir == ROOT => return None,
                None => dir = nodes.get(&dir)?.parent,
            }
        }
        None
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
                    kids = d.drop_listing();
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
        let since = self.freed_since_trim.fetch_add(freed, Ordering::Relaxed) + freed;
        if since >= TRIM_AFTER_FREED {
            self.freed_since_trim.store(0, Ordering::Relaxed);
            trim_heap();
        }
    }

    /// Entries of a directory (without `.` and `..`).
    pub async fn readdir(&self, ino: Ino) -> Result<Vec<(OsString, Attr)>, TreeError> {
        // `Files.metadata/` shows the folders of `Files/` (its per-file directories are
        // hidden, as BaseMount's are), from `Files/`'s listing: it costs no request of its
        // own, so `find`, `du` and `cp -r` pass it by; `cd` into a file's directory lists
        // the files' metadata then.
        let metadata = dir_ref(&self.nodes.read(), ino).is_some_and(|d| d.listing.is_some() && !d.fills_on_readdir());
        match metadata {
            true => self.mirror_files(ino).await?,
            false => {
                self.ensure_filled(ino).await?;
            }
        }
        let nodes = self.nodes.read();
        let d = dir_ref(&nodes, ino).ok_or(TreeError::NotDir)?;
        let mut out = Vec::with_capacity(d.local.len() + d.fixed.len() + d.listed.len());
        let shadowed = |name: &OsStr| d.local.contains_key(name) || d.fixed.contains_key(name);
        let list_dir = d
            .listing
            .as_ref()
            .is_some_and(|l| matches!(layout::holds(l), Holds::Entities(_)));
        for (name, c) in d.local.iter().chain(&d.fixed) {
            if list_dir && LOOKUP_ONLY.iter().any(|n| name == n) {
                continue;
            }
            out.extend(attr_of(&nodes, *c).map(|a| (name.clone(), a)));
        }
        for (name, c) in &d.listed {
            // Inside `Files.metadata/` the per-file directories stay hidden.
            let hidden = dir_ref(&nodes, *c)
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

    /// The listing directory `ino` needs now, if it is missing or older than the TTL (its
    /// layout entries are made on the way).
    fn due(&self, ino: Ino) -> Result<Option<ListKind>, TreeError> {
        let check = |d: &Dir| match (&d.listing, d.filled_at) {
            (Some(_), Some(at)) if at.elapsed() < self.opts.metadata_ttl => None,
            (Some(k), _) => Some(k.clone()),
            (None, _) => None,
        };
        {
            let nodes = self.nodes.read();
            match nodes.get(&ino).map(|n| &n.kind) {
                None => return Err(TreeError::NotFound),
                Some(NodeKind::Dir(d)) if d.built => return Ok(check(d)),
                Some(NodeKind::Dir(_)) => {}
                Some(_) => return Err(TreeError::NotDir),
            }
        }
        let mut nodes = self.nodes.write();
        self.build_fixed(&mut nodes, ino);
        dir_ref(&nodes, ino).map(check).ok_or(TreeError::NotFound)
    }

    /// Lists `ino` if its listing is due, one fill at a time (who comes while it runs waits
    /// for it); whether this call fetched it.
    async fn ensure_filled(&self, ino: Ino) -> Result<bool, TreeError> {
        self.budget.touch(ino);
        if self.due(ino)?.is_none() {
            self.note_use(ino);
            return Ok(false);
        }
        self.fill_locked(ino, false).await
    }

    /// Counts the first look at a listing made ahead of a walk.
    fn note_use(&self, ino: Ino) {
        let unused = |n: &HashMap<Ino, Node>| dir_ref(n, ino).is_some_and(|d| d.ahead_unused);
        if !unused(&self.nodes.read()) {
            return;
        }
        if let Some(d) = dir_mut(&mut self.nodes.write(), ino).filter(|d| d.ahead_unused) {
            d.ahead_unused = false;
            self.fills_ahead_used.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Tree::ensure_filled`] once the listing is known to be due; `ahead` when a walk's
    /// listing ahead asks (the listing is marked for [`Tree::note_use`] as it is installed,
    /// so a look that finds it fresh, waiting or not, counts its use: marked after, a look
    /// in between went uncounted, and `listings_ahead - listings_ahead_used` overstated the
    /// overshoot by one, as a fresh-clone CI run of `tests/walk.rs` caught).
    async fn fill_locked(&self, ino: Ino, ahead: bool) -> Result<bool, TreeError> {
        let arrived = Instant::now();
        let lock = self.fill_locks.lock().entry(ino).or_default().clone();
        let _guard = lock.lock().await;
        // The entry leaves however this ends (a fill ahead of a walk may be cancelled).
        let _entry = FillEntry(self, ino);
        // A listing that failed while this looker waited for it (a timeout, most often)
        // fails for it too, at once: each `ls` waits at most one --io-timeout from its own
        // start, not one per looker queued behind the fill. A looker that comes after the
        // failure tries afresh (the server may be back).
        {
            let mut failed = self.failed_fills.lock();
            match failed.get(&ino) {
                Some((at, e)) if *at >= arrived => return Err(e.clone()),
                Some(_) => {
                    failed.remove(&ino);
                }
                None => {}
            }
        }
        let Some(kind) = self.due(ino)? else {
            // Filled while we waited.
            if !ahead {
                self.note_use(ino);
            }
            return Ok(false);
        };
        if let Err(e) = self.fill(ino, kind, ahead).await {
            self.failed_fills.lock().insert(ino, (Instant::now(), e.clone()));
            return Err(e);
        }
        if ahead {
            self.fills_ahead.fetch_add(1, Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Gives `Files.metadata/` directory `meta` the folders of its sibling `Files/` (listed
    /// first if need be), merged by name: folders it has keep their inodes and contents.
    async fn mirror_files(&self, meta: Ino) -> Result<(), TreeError> {
        let files = {
            let nodes = self.nodes.read();
            let parent = nodes.get(&meta).ok_or(TreeError::NotFound)?.parent;
            dir_ref(&nodes, parent).and_then(|d| d.fixed.get(OsStr::new("Files")).copied())
        };
        let Some(files) = files else { return Ok(()) };
        self.ensure_filled(files).await?;
        self.mirror_folders(&mut self.nodes.write(), files, meta);
        Ok(())
    }

    /// BaseSpace's answer for a `.json` ([`Fetch`]).
    pub async fn fetch(&self, f: &Fetch) -> Result<bytes::Bytes, TreeError> {
        let (what, r) = match f {
            Fetch::Resource(path) => (path.clone(), self.api.get_raw(path).await),
            Fetch::List(kind) => (kind.href(), self.api.list_raw(kind.clone()).await),
        };
        r.map_err(|source| TreeError::Api { what, source })
    }

    /// Whether `readdir` of directory `ino` would fetch its listing now.
    pub fn wants_listing(&self, ino: Ino) -> bool {
        let nodes = self.nodes.read();
        dir_ref(&nodes, ino)
            .is_some_and(|d| d.fills_on_readdir() && d.filled_at.is_none_or(|t| t.elapsed() >= self.opts.metadata_ttl))
    }

    /// Lists directory `ino` ahead of a walk, as its `readdir` would; whether it fetched.
    /// A failure is left for the walk's own `readdir` to meet (and retry).
    pub async fn fill_ahead(&self, ino: Ino) -> bool {
        if !self.wants_listing(ino) {
            return false;
        }
        match self.fill_locked(ino, true).await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::debug!(ino, error = %e, "listing ahead of a walk failed");
                false
            }
        }
    }

    /// The properties the entity above `Properties/` directory `ino` carries inline, when
    /// they are complete (v2 datasets are listed with theirs): no request needed.
    fn inline_properties(&self, ino: Ino) -> Option<Listed<PropertyItem>> {
        let nodes = self.nodes.read();
        let parent = nodes.get(&ino)?.parent;
        let e = dir_ref(&nodes, parent)?.entity.clone()?;
        drop(nodes);
        PropertyItem::inline(&e.raw)
    }

    async fn fill(&self, ino: Ino, kind: ListKind, ahead: bool) -> Result<(), TreeError> {
        let inline = match layout::holds(&kind) {
            Holds::Properties => self.inline_properties(ino),
            _ => None,
        };
        if inline.is_none() {
            self.fills.fetch_add(1, Ordering::Relaxed);
        }
        let listed = match layout::holds(&kind) {
            Holds::Files => self.api.list_files(kind.clone()).await.map(Listing::Files),
            Holds::Entities(k) => self
                .api
                .list_entities(kind.clone())
                .await
                .map(|l| Listing::Entities(k, l)),
            Holds::Outputs => self.api.list_entities(kind.clone()).await.map(Listing::Outputs),
            Holds::Properties => match inline {
                Some(l) => Ok(l),
                None => self.api.list_properties(kind.clone()).await,
            }
            .map(Listing::Properties),
            Holds::FilesMetadata => self.api.list_entities(kind.clone()).await.map(Listing::FilesMetadata),
            Holds::Token => self.api.token_info().await.map(Listing::Token),
            Holds::Folder => self.api.list_files(kind.clone()).await.map(Listing::Folder),
        };
        match listed {
            Ok(l) => {
                let large = l.len() >= TRIM_AFTER_FREED;
                let cost = l.cost();
                let r = if self.budget.fits(cost) {
                    self.install(ino, &kind, l, ahead).map(|()| self.charge(ino, cost))
                } else {
                    drop(l);
                    let e = TreeError::OverBudget {
                        what: kind.href(),
                        bytes: cost,
                        limit: self.budget.limit(),
                    };
                    tracing::warn!("{e}");
                    self.set_error(&mut self.nodes.write(), ino, Some(&format!("{e}\n")));
                    Err(e)
                };
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
}

impl Tree {
    /// Charges directory `ino` for the listing it now holds, and drops the least recently
    /// looked-at listings of others while all of them together pass the budget.
    fn charge(&self, ino: Ino, cost: u64) {
        self.budget.charge(ino, cost);
        if !self.budget.is_over() {
            return;
        }
        let evict = {
            let nodes = self.nodes.read();
            // Directories above other listings: dropped last.
            let mut above = HashSet::new();
            for mut i in self.budget.inos() {
                for _ in 0..4096 {
                    let Some(n) = nodes.get(&i).filter(|_| i != ROOT) else {
                        break;
                    };
                    i = n.parent;
                    if !above.insert(i) {
                        break;
                    }
                }
            }
            self.budget.over(ino, |i| {
                dir_ref(&nodes, i)
                    .filter(|d| d.has_listing)
                    .map(|_| u8::from(above.contains(&i)))
            })
        };
        if evict.is_empty() {
            return;
        }
        let freed = {
            let mut nodes = self.nodes.write();
            let mut kids = Vec::new();
            for i in &evict {
                if let Some(d) = dir_mut(&mut nodes, *i) {
                    tracing::debug!(href = %d.listing.as_ref().map(|l| l.href()).unwrap_or_default(), "listing dropped");
                    kids.extend(d.drop_listing());
                }
            }
            free_subtree(&mut nodes, kids)
        };
        tracing::info!(
            dropped = evict.len(),
            nodes = freed,
            limit = self.budget.limit(),
            "listings dropped to stay within --listing-memory (listed again when looked at)"
        );
        trim_heap();
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

fn attr_of(nodes: &HashMap<Ino, Node>, ino: Ino) -> Option<Attr> {
    let n = nodes.get(&ino)?;
    let (kind, size) = match &n.kind {
        NodeKind::Dir(_) => (Kind::Dir, 0),
        NodeKind::File(f) => (Kind::File, f.size),
        NodeKind::Stats => (Kind::File, 0),
        NodeKind::Symlink(t) => (Kind::Symlink, t.len() as u64),
        NodeKind::Pending(n) => (Kind::File, n.load(Ordering::Relaxed)),
        // Its size is known once it is read (it is read with direct I/O).
        NodeKind::Meta(Meta::Json) | NodeKind::ListJson => (Kind::File, 0),
        NodeKind::Meta(m) => {
            let e = dir_ref(nodes, n.parent).and_then(|d| d.entity.as_ref());
            (Kind::File, e.map_or(0, |e| meta_size(e, *m)))
        }
        _ => (Kind::File, generated(nodes, n).map_or(0, |b| b.len() as u64)),
    };
    Some(Attr {
        ino,
        kind,
        size,
        mtime: n.mtime,
        writing: matches!(n.kind, NodeKind::Pending(_)),
    })
}

#[cfg(test)]
pub(crate) mod tests;
