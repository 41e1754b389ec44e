//! The virtual directory model: an inode table laid out like BaseMount.
//!
//! ```text
//! /README
//! /Projects/<project>/{Samples,AppResults,AppSessions}/…
//! /Projects/<p>/Samples/<s>/{Files/…, SampleProperties, .id, .type, .name, .href, .json}
//! /Projects/<p>/AppResults/<a>/Files/…
//! /Projects/<p>/AppSessions/<as>/{AppResults.<id>.<name> -> ../../AppResults/.id.<id>, …}
//! /Runs/<run>/Files/<run folder>
//! ```
//! Every list directory also holds `.id.<ID>` symlinks to its entries.
//!
//! Laziness: a list directory is filled from the API the first time it is looked at, and
//! again when its listing is older than the metadata TTL or after `refresh`. Entity
//! directories and their hidden files are built from the list item that named them, so
//! `ls -l` or `stat` never costs a request per entry. Inode numbers are stable for the life
//! of the mount: an entry that survives a re-listing keeps its inode (keyed by entity id).

pub mod names;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::api::{ApiError, BaseSpaceApi, Entity, FileInfo, ListKind};

pub type Ino = u64;
pub const ROOT: Ino = 1;

/// Errors of the tree layer, each with the errno it means.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("listing {what} failed: {source}")]
    Api { what: String, source: ApiError },
}

impl TreeError {
    pub fn errno(&self) -> i32 {
        match self {
            TreeError::NotFound => libc::ENOENT,
            TreeError::NotDir => libc::ENOTDIR,
            TreeError::IsDir => libc::EISDIR,
            TreeError::Api { source, .. } => match source {
                ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } => libc::EACCES,
                _ => libc::EIO,
            },
        }
    }
}

/// A BaseSpace file the mount serves: what the read path needs to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub id: String,
    pub size: u64,
    /// Identity of this version of the bytes (cache key); ETag if known, else date+size.
    pub version: String,
}

#[derive(Debug, Clone)]
pub enum FileContent {
    /// Generated text (README, .json, .id …), served from memory.
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

/// Where a directory's entries come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// Children fixed at creation.
    Fixed,
    /// Children from an API list.
    List(ListKind),
}

#[derive(Debug)]
struct Dir {
    source: Source,
    /// Entries from the last listing (or all entries of a fixed directory).
    children: BTreeMap<OsString, Ino>,
    /// Entries that exist whatever the listing says (an appsession's hidden files).
    extra: BTreeMap<OsString, Ino>,
    filled_at: Option<Instant>,
    /// Last error listing this directory, served as `.error`.
    error: Option<Arc<[u8]>>,
}

#[derive(Debug)]
enum NodeKind {
    Dir(Dir),
    File(FileContent),
    Symlink(String),
}

#[derive(Debug)]
struct Node {
    parent: Ino,
    mtime: SystemTime,
    kind: NodeKind,
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// How long a listing is trusted before it is fetched again.
    pub metadata_ttl: Duration,
}

/// The inode table.
pub struct Tree {
    api: Arc<dyn BaseSpaceApi>,
    opts: TreeOptions,
    nodes: RwLock<HashMap<Ino, Node>>,
    /// Stable identity ("sample:123", "file:456", "meta:<parent>:.json") → inode.
    keys: Mutex<HashMap<String, Ino>>,
    next_ino: AtomicU64,
    /// One fill at a time per directory; concurrent lookers wait for it.
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
         Runs/<run>/Files/                             the sequencing run folder\n\n\
         Every directory has hidden metadata: .id .type .name .href .json (ls -a).\n\
         Listings are cached; `bsmount refresh PATH` re-reads them.\n\
         To unmount: bsmount unmount <mountpoint>\n"
    )
}

impl Tree {
    /// A tree whose root shows `Projects/`, `Runs/` and `README`. `user` is `users/current`.
    pub fn new(api: Arc<dyn BaseSpaceApi>, server: &str, user: &Value, opts: TreeOptions) -> Arc<Tree> {
        let t = Tree {
            api,
            opts,
            nodes: RwLock::new(HashMap::new()),
            keys: Mutex::new(HashMap::new()),
            next_ino: AtomicU64::new(ROOT + 1),
            fill_locks: Mutex::new(HashMap::new()),
            fills: AtomicU64::new(0),
        };
        let now = SystemTime::now();
        t.nodes.write().insert(
            ROOT,
            Node {
                parent: ROOT,
                mtime: now,
                kind: NodeKind::Dir(fixed_dir()),
            },
        );
        let mut children: BTreeMap<OsString, Ino> = BTreeMap::new();
        children.insert(
            "Projects".into(),
            t.make_dir(ROOT, "dir:Projects", now, Source::List(ListKind::Projects)),
        );
        children.insert(
            "Runs".into(),
            t.make_dir(ROOT, "dir:Runs", now, Source::List(ListKind::Runs)),
        );
        children.insert("README".into(), t.make_static(ROOT, "meta:README", now, readme(server)));
        let ctl = t.make_dir(ROOT, "dir:.bsmount", now, Source::Fixed);
        let stats = t.put("meta:.bsmount/stats", ctl, now, NodeKind::File(FileContent::Stats));
        t.set_children(ctl, BTreeMap::from([(OsString::from("stats"), stats)]));
        children.insert(".bsmount".into(), ctl);
        let uid = user.get("Id").and_then(|v| v.as_str()).unwrap_or("").to_string();
        for (name, ino) in t.hidden_files(
            ROOT,
            &uid,
            "users",
            user.get("Name").and_then(|v| v.as_str()).unwrap_or(""),
            "v1pre3/users/current",
            user,
            now,
        ) {
            children.insert(name, ino);
        }
        t.set_children(ROOT, children);
        Arc::new(t)
    }

    fn alloc(&self, key: &str) -> Ino {
        let mut keys = self.keys.lock();
        *keys
            .entry(key.to_string())
            .or_insert_with(|| self.next_ino.fetch_add(1, Ordering::Relaxed))
    }

    fn put(&self, key: &str, parent: Ino, mtime: SystemTime, kind: NodeKind) -> Ino {
        let ino = self.alloc(key);
        let mut nodes = self.nodes.write();
        match (nodes.get_mut(&ino), kind) {
            // A directory that survives a re-listing keeps its cached children.
            (
                Some(Node {
                    kind: NodeKind::Dir(old),
                    mtime: m,
                    parent: p,
                }),
                NodeKind::Dir(new),
            ) if old.source == new.source => {
                *m = mtime;
                *p = parent;
            }
            (_, kind) => {
                nodes.insert(ino, Node { parent, mtime, kind });
            }
        }
        ino
    }

    fn make_dir(&self, parent: Ino, key: &str, mtime: SystemTime, source: Source) -> Ino {
        self.put(
            key,
            parent,
            mtime,
            NodeKind::Dir(Dir {
                source,
                children: BTreeMap::new(),
                extra: BTreeMap::new(),
                filled_at: None,
                error: None,
            }),
        )
    }

    fn make_static(&self, parent: Ino, key: &str, mtime: SystemTime, text: String) -> Ino {
        self.put(
            key,
            parent,
            mtime,
            NodeKind::File(FileContent::Static(Arc::from(text.into_bytes()))),
        )
    }

    fn set_children(&self, ino: Ino, children: BTreeMap<OsString, Ino>) {
        if let Some(Node {
            kind: NodeKind::Dir(d), ..
        }) = self.nodes.write().get_mut(&ino)
        {
            d.children = children;
            d.filled_at = Some(Instant::now());
            d.error = None;
        }
    }

    /// `.id .type .name .href .json` for an entity directory.
    #[allow(clippy::too_many_arguments)]
    fn hidden_files(
        &self,
        dir: Ino,
        id: &str,
        typ: &str,
        name: &str,
        href: &str,
        json: &Value,
        mtime: SystemTime,
    ) -> Vec<(OsString, Ino)> {
        let pretty = serde_json::to_string_pretty(json).unwrap_or_default() + "\n";
        [
            (".id", format!("{id}\n")),
            (".type", format!("{typ}\n")),
            (".name", format!("{name}\n")),
            (".href", format!("{href}\n")),
            (".json", pretty),
        ]
        .into_iter()
        .map(|(n, text)| {
            (
                OsString::from(n),
                self.make_static(dir, &format!("meta:{dir}:{n}"), mtime, text),
            )
        })
        .collect()
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, TreeError> {
        let nodes = self.nodes.read();
        let n = nodes.get(&ino).ok_or(TreeError::NotFound)?;
        Ok(attr_of(ino, n))
    }

    /// Symlink target.
    pub fn readlink(&self, ino: Ino) -> Result<String, TreeError> {
        match self.nodes.read().get(&ino).map(|n| &n.kind) {
            Some(NodeKind::Symlink(t)) => Ok(t.clone()),
            Some(_) => Err(TreeError::NotFound),
            None => Err(TreeError::NotFound),
        }
    }

    /// What a file holds (for open).
    pub fn content(&self, ino: Ino) -> Result<FileContent, TreeError> {
        match self.nodes.read().get(&ino).map(|n| &n.kind) {
            Some(NodeKind::File(c)) => Ok(c.clone()),
            Some(NodeKind::Dir(_)) => Err(TreeError::IsDir),
            _ => Err(TreeError::NotFound),
        }
    }

    /// Finds `name` in directory `parent`, listing it first if needed.
    pub async fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr, TreeError> {
        if name == ".error" {
            if let Some(a) = self.error_file(parent) {
                return Ok(a);
            }
        }
        self.ensure_filled(parent).await?;
        let nodes = self.nodes.read();
        let NodeKind::Dir(d) = &nodes.get(&parent).ok_or(TreeError::NotFound)?.kind else {
            return Err(TreeError::NotDir);
        };
        let ino = *d
            .children
            .get(name)
            .or_else(|| d.extra.get(name))
            .ok_or(TreeError::NotFound)?;
        nodes.get(&ino).map(|n| attr_of(ino, n)).ok_or(TreeError::NotFound)
    }

    /// `.error` of a directory whose last listing failed, as a file.
    fn error_file(&self, dir: Ino) -> Option<Attr> {
        let text = match &self.nodes.read().get(&dir)?.kind {
            NodeKind::Dir(d) => d.error.clone()?,
            _ => return None,
        };
        let ino = self.put(
            &format!("meta:{dir}:.error"),
            dir,
            SystemTime::now(),
            NodeKind::File(FileContent::Static(text)),
        );
        self.getattr(ino).ok()
    }

    /// Entries of a directory (without `.` and `..`).
    pub async fn readdir(&self, ino: Ino) -> Result<Vec<(OsString, Attr)>, TreeError> {
        self.ensure_filled(ino).await?;
        let nodes = self.nodes.read();
        let NodeKind::Dir(d) = &nodes.get(&ino).ok_or(TreeError::NotFound)?.kind else {
            return Err(TreeError::NotDir);
        };
        Ok(d.extra
            .iter()
            .chain(&d.children)
            .filter_map(|(name, c)| nodes.get(c).map(|n| (name.clone(), attr_of(*c, n))))
            .collect())
    }

    /// Parent inode (for `..`).
    pub fn parent(&self, ino: Ino) -> Ino {
        self.nodes.read().get(&ino).map(|n| n.parent).unwrap_or(ROOT)
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
            if let Some(Node {
                kind: NodeKind::Dir(d), ..
            }) = nodes.get_mut(&i)
            {
                if d.source != Source::Fixed {
                    d.filled_at = None;
                }
                stack.extend(d.children.values().copied());
            }
        }
    }

    async fn ensure_filled(&self, ino: Ino) -> Result<(), TreeError> {
        let fresh = |t: &Tree| -> Result<Option<ListKind>, TreeError> {
            let nodes = t.nodes.read();
            match &nodes.get(&ino).ok_or(TreeError::NotFound)?.kind {
                NodeKind::Dir(d) => match &d.source {
                    Source::Fixed => Ok(None),
                    Source::List(k) => match d.filled_at {
                        Some(at) if at.elapsed() < t.opts.metadata_ttl => Ok(None),
                        _ => Ok(Some(k.clone())),
                    },
                },
                _ => Err(TreeError::NotDir),
            }
        };
        if fresh(self)?.is_none() {
            return Ok(());
        }
        let lock = self.fill_locks.lock().entry(ino).or_default().clone();
        let _guard = lock.lock().await;
        let Some(kind) = fresh(self)? else {
            return Ok(());
        }; // filled while we waited
        self.fills.fetch_add(1, Ordering::Relaxed);
        match self.api.list(kind.clone()).await {
            Ok(items) => {
                let children = self.build_children(ino, &kind, &items);
                self.set_children(ino, children);
                Ok(())
            }
            Err(e) => {
                let code = e.error_code().map(|c| format!(" [{c}]")).unwrap_or_default();
                tracing::warn!(href = %kind.href(), error = %e, "listing failed{code}");
                let msg: Arc<[u8]> = Arc::from(format!("{}: {e}\n", kind.href()).into_bytes());
                let mut nodes = self.nodes.write();
                if let Some(Node {
                    kind: NodeKind::Dir(d), ..
                }) = nodes.get_mut(&ino)
                {
                    d.error = Some(msg);
                    if d.filled_at.is_some() {
                        // Keep serving the stale listing; retry after another TTL.
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

    /// Builds the entries of a listed directory from the API items.
    fn build_children(&self, dir: Ino, kind: &ListKind, items: &[Value]) -> BTreeMap<OsString, Ino> {
        match kind {
            ListKind::SampleFiles(id) | ListKind::AppResultFiles(id) | ListKind::RunFiles(id) => {
                self.build_files(dir, id, items)
            }
            ListKind::AppSessionOutputs(_) => self.build_outputs(dir, items),
            _ => self.build_entities(dir, kind, items),
        }
    }

    fn build_entities(&self, dir: Ino, kind: &ListKind, items: &[Value]) -> BTreeMap<OsString, Ino> {
        let mut ents: Vec<(Entity, &Value)> = Vec::new();
        for v in items {
            match Entity::parse(v) {
                Ok(e) => ents.push((e, v)),
                Err(e) => tracing::warn!(href = %kind.href(), "skipping malformed item: {e}"),
            }
        }
        let display: Vec<String> = {
            let pairs: Vec<(&str, &str)> = ents
                .iter()
                .map(|(e, _)| (e.id.as_str(), e.name.as_deref().unwrap_or("")))
                .collect();
            let reserved: HashSet<String> = ents.iter().map(|(e, _)| format!(".id.{}", e.id)).collect();
            names::disambiguate(&pairs, &reserved)
        };
        let (typ, singular) = match kind {
            ListKind::Projects => ("projects", "project"),
            ListKind::Runs => ("runs", "run"),
            ListKind::Samples(_) => ("samples", "sample"),
            ListKind::AppResults(_) => ("appresults", "appresult"),
            _ => ("appsessions", "appsession"),
        };
        let mut children = BTreeMap::new();
        for ((e, raw), name) in ents.iter().zip(display) {
            let mtime = e.mtime();
            let source = match kind {
                ListKind::AppSessions(_) => Source::List(ListKind::AppSessionOutputs(e.id.clone())),
                _ => Source::Fixed,
            };
            let ino = self.make_dir(dir, &format!("{singular}:{}", e.id), mtime, source);
            let href = e.href.clone().unwrap_or_else(|| format!("v1pre3/{typ}/{}", e.id));
            let mut kids: BTreeMap<OsString, Ino> = self
                .hidden_files(ino, &e.id, typ, e.name.as_deref().unwrap_or(""), &href, raw, mtime)
                .into_iter()
                .collect();
            let sub = |t: &Tree, n: &str, k: ListKind| {
                (
                    OsString::from(n),
                    t.make_dir(ino, &format!("{singular}:{}:{n}", e.id), mtime, Source::List(k)),
                )
            };
            match kind {
                ListKind::Projects => {
                    kids.extend([
                        sub(self, "Samples", ListKind::Samples(e.id.clone())),
                        sub(self, "AppResults", ListKind::AppResults(e.id.clone())),
                        sub(self, "AppSessions", ListKind::AppSessions(e.id.clone())),
                    ]);
                }
                ListKind::Samples(_) => {
                    kids.extend([sub(self, "Files", ListKind::SampleFiles(e.id.clone()))]);
                    let props = sample_properties(raw);
                    kids.insert(
                        "SampleProperties".into(),
                        self.make_static(ino, &format!("meta:{ino}:SampleProperties"), mtime, props),
                    );
                }
                ListKind::AppResults(_) => kids.extend([sub(self, "Files", ListKind::AppResultFiles(e.id.clone()))]),
                ListKind::Runs => kids.extend([sub(self, "Files", ListKind::RunFiles(e.id.clone()))]),
                ListKind::AppSessions(_) => {
                    // An appsession directory is itself listed (what the session produced);
                    // its hidden files stay whatever that listing says.
                    if let Some(Node {
                        kind: NodeKind::Dir(d), ..
                    }) = self.nodes.write().get_mut(&ino)
                    {
                        d.extra = std::mem::take(&mut kids);
                    }
                }
                _ => {}
            }
            if !kids.is_empty() {
                self.set_children(ino, kids);
            }
            children.insert(OsString::from(&name), ino);
            children.insert(
                OsString::from(format!(".id.{}", e.id)),
                self.symlink(dir, &e.id, &name, mtime),
            );
        }
        children
    }

    fn symlink(&self, dir: Ino, id: &str, target: &str, mtime: SystemTime) -> Ino {
        self.put(
            &format!("link:{dir}:{id}"),
            dir,
            mtime,
            NodeKind::Symlink(target.to_string()),
        )
    }

    fn build_outputs(&self, dir: Ino, items: &[Value]) -> BTreeMap<OsString, Ino> {
        let mut children = BTreeMap::new();
        for v in items {
            let Ok(e) = Entity::parse(v) else { continue };
            let Some((kind, id)) = e.v1pre3_id.as_deref().and_then(|x| x.split_once('.')) else {
                continue;
            };
            let (label, list) = match kind {
                "sample" => ("Samples", "Samples"),
                "appresult" => ("AppResults", "AppResults"),
                _ => continue,
            };
            let name = names::sanitize(&format!("{label}.{id}.{}", e.name.as_deref().unwrap_or("")));
            let name = if name.len() > names::NAME_MAX {
                format!("{label}.{id}")
            } else {
                name
            };
            let target = format!("../../{list}/.id.{id}");
            let ino = self.put(
                &format!("link:{dir}:{kind}.{id}"),
                dir,
                e.mtime(),
                NodeKind::Symlink(target),
            );
            children.insert(OsString::from(name), ino);
        }
        children
    }

    fn build_files(&self, dir: Ino, container: &str, items: &[Value]) -> BTreeMap<OsString, Ino> {
        let mut files: Vec<FileInfo> = Vec::new();
        for v in items {
            match FileInfo::parse(v) {
                Ok(f) => files.push(f),
                Err(e) => tracing::warn!(container, "skipping malformed file item: {e}"),
            }
        }
        let pairs: Vec<(&str, &str)> = files.iter().map(|f| (f.id.as_str(), f.rel_path())).collect();
        let layout = names::files_layout(&pairs);
        // Dates parsed once: every folder's mtime is the newest of the files below it.
        let mtimes: Vec<SystemTime> = files.iter().map(FileInfo::mtime).collect();
        self.folder(dir, &format!("{container}:"), &layout, &files, &mtimes)
    }

    fn folder(
        &self,
        dir: Ino,
        prefix: &str,
        layout: &names::FolderLayout,
        files: &[FileInfo],
        mtimes: &[SystemTime],
    ) -> BTreeMap<OsString, Ino> {
        let mut children = BTreeMap::new();
        for (name, idx) in &layout.files {
            let f = &files[*idx];
            let size = f.size.unwrap_or(0);
            let version = f
                .etag
                .clone()
                .unwrap_or_else(|| format!("{}-{size}", f.date_modified.as_deref().unwrap_or("")));
            // A new version of a file gets a new inode, so kept page cache never mixes versions.
            let key = format!("file:{}:{version}", f.id);
            let content = FileContent::Remote(RemoteFile {
                id: f.id.clone(),
                size,
                version,
            });
            children.insert(
                OsString::from(name),
                self.put(&key, dir, mtimes[*idx], NodeKind::File(content)),
            );
        }
        for (name, sub) in &layout.dirs {
            let p = format!("{prefix}{name}/");
            let mtime = sub.indices().map(|i| mtimes[i]).max().unwrap_or(UNIX_EPOCH);
            let ino = self.make_dir(dir, &format!("folder:{p}"), mtime, Source::Fixed);
            let kids = self.folder(ino, &p, sub, files, mtimes);
            self.set_children(ino, kids);
            children.insert(OsString::from(name), ino);
        }
        children
    }
}

fn fixed_dir() -> Dir {
    Dir {
        source: Source::Fixed,
        children: BTreeMap::new(),
        extra: BTreeMap::new(),
        filled_at: None,
        error: None,
    }
}

fn attr_of(ino: Ino, n: &Node) -> Attr {
    let (kind, size) = match &n.kind {
        NodeKind::Dir(_) => (Kind::Dir, 0),
        NodeKind::File(FileContent::Static(b)) => (Kind::File, b.len() as u64),
        NodeKind::File(FileContent::Remote(r)) => (Kind::File, r.size),
        NodeKind::File(FileContent::Stats) => (Kind::File, 0),
        NodeKind::Symlink(t) => (Kind::Symlink, t.len() as u64),
    };
    Attr {
        ino,
        kind,
        size,
        mtime: n.mtime,
    }
}

/// `Key: value` lines of a sample, as BaseMount's `SampleProperties`.
fn sample_properties(v: &Value) -> String {
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
