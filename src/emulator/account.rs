//! The emulated BaseSpace account: projects, samples, appresults, appsessions, runs, files.
//!
//! Built once from a source (a directory, a synthetic spec, a catalog, or the demo) through
//! [`AccountBuilder`], then served read-only. Ids are digit strings from disjoint ranges,
//! assigned in a deterministic order, so the same source always gives the same ids.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::tree::names;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// A file on disk (the `--data` source).
    Disk(PathBuf),
    /// Deterministic pseudo-random bytes derived from the seed; costs no memory or disk.
    Synthetic { seed: u64 },
    /// Bytes held in memory (demo and catalog files).
    Memory(Bytes),
    /// An upload's parts as they arrived, kept apart (joining a 1 GiB upload would copy it).
    Parts(Arc<Chunks>),
}

/// Consecutive buffers making one file.
#[derive(Debug)]
pub struct Chunks {
    parts: Vec<Bytes>,
    /// Where each part starts in the file.
    starts: Vec<u64>,
}

impl Chunks {
    pub fn new(parts: Vec<Bytes>) -> Chunks {
        let mut starts = Vec::with_capacity(parts.len());
        let mut at = 0u64;
        for p in &parts {
            starts.push(at);
            at += p.len() as u64;
        }
        Chunks { parts, starts }
    }

    /// Up to `len` bytes at `offset` without copying when they lie in one part.
    pub fn slice(&self, offset: u64, len: usize) -> Bytes {
        let i = self.starts.partition_point(|s| *s <= offset).saturating_sub(1);
        let within = (offset - self.starts[i]) as usize;
        let part = &self.parts[i];
        if within + len <= part.len() {
            return part.slice(within..within + len);
        }
        let mut out = vec![0u8; len];
        self.copy(offset, &mut out);
        Bytes::from(out)
    }

    fn copy(&self, mut offset: u64, mut buf: &mut [u8]) -> bool {
        while !buf.is_empty() {
            let i = self.starts.partition_point(|s| *s <= offset).saturating_sub(1);
            let Some(part) = self.parts.get(i) else { return false };
            let within = (offset - self.starts[i]) as usize;
            if within >= part.len() {
                return false;
            }
            let n = (part.len() - within).min(buf.len());
            buf[..n].copy_from_slice(&part[within..within + n]);
            buf = &mut buf[n..];
            offset += n as u64;
        }
        true
    }
}

/// One file.
#[derive(Debug)]
pub struct FileEntry {
    pub id: u64,
    /// Path relative to its sample/appresult/run (may contain '/').
    pub path: String,
    pub size: u64,
    pub content: Content,
    pub content_type: &'static str,
    pub created: SystemTime,
    pub parent: ContainerRef,
    /// S3's ETag of the bytes, computed when the account is built (`hash_all`).
    pub etag: OnceLock<String>,
    /// md5 of the bytes, computed on first need (manifest).
    pub md5: OnceLock<String>,
}

impl FileEntry {
    /// The ETag S3 gives these bytes: their md5 up to [`SMALL_FILE_ETAG_LIMIT`], above it
    /// the multipart form `md5(md5(part 1) ‖ …)-N` with BaseSpace's 8 MiB parts. Real
    /// values, so a client can verify what it read, and they change whenever the bytes do.
    pub fn etag(&self) -> &str {
        self.etag.get_or_init(|| etag_for(&self.content, self.size))
    }

    /// The file name: last component of the path.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// Which kind of container holds files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    Sample,
    AppResult,
    Run,
    /// A dataset made in API v2 (an upload by `bs`, a DRAGEN output): no v1 sample or
    /// appresult behind it, so only the v2 views show it.
    Dataset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    pub kind: ContainerKind,
    pub id: u64,
}

/// A sample, appresult or run.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: u64,
    pub kind: ContainerKind,
    pub name: String,
    pub project: Option<u64>,
    pub appsession: Option<u64>,
    pub created: SystemTime,
    pub files: Vec<u64>,
    /// What it was made from, as BaseSpace's `Input.*` properties say: a sample's run
    /// (`Input.Runs`), an appresult's samples (`Input.Samples`). Set by [`AccountBuilder::build`].
    pub inputs: Vec<ContainerRef>,
    /// `Complete`, or `Running` while an appresult made through the API takes uploads.
    pub status: &'static str,
    /// In the trash (on its own or with its project): no list shows it.
    pub trashed: bool,
    /// A sample's read pairs and read length, when its builder knows them (the demo's
    /// FASTQs); else estimated from the files' size.
    pub reads: Option<(u64, u32)>,
    /// A run's experiment name, as entered on the instrument (else its name).
    pub experiment: Option<String>,
}

impl Container {
    /// A run's `ExperimentName`.
    pub fn experiment(&self) -> &str {
        self.experiment.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub created: SystemTime,
    pub samples: Vec<u64>,
    pub appresults: Vec<u64>,
    pub appsessions: Vec<u64>,
    /// Datasets of its own ([`ContainerKind::Dataset`]).
    pub datasets: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct AppSession {
    pub id: u64,
    pub name: String,
    pub application: String,
    pub project: u64,
    pub created: SystemTime,
    /// Samples and appresults it produced.
    pub outputs: Vec<ContainerRef>,
    /// Its log files (`v2/appsessions/{id}/logfiles`).
    pub logs: Vec<u64>,
    /// `Complete`, or `Running` while its appresults take uploads.
    pub status: &'static str,
}

/// What moved to the trash, and what restoring it puts back.
#[derive(Debug, Clone)]
pub struct TrashItem {
    pub id: u64,
    pub name: String,
    pub deleted: SystemTime,
    pub what: Trashed,
}

#[derive(Debug, Clone)]
pub enum Trashed {
    /// A project, whole (its containers are marked trashed too).
    Project(Project),
    /// A sample, appresult, dataset or run, with the project list it was in.
    Container(ContainerRef),
}

/// The whole account. Cloned (cheaply: files are shared) when the API changes it.
#[derive(Debug, Default, Clone)]
pub struct Account {
    pub user_id: u64,
    pub user_name: String,
    pub projects: Vec<Project>,
    pub containers: HashMap<ContainerRef, Container>,
    pub runs: Vec<u64>,
    pub appsessions: HashMap<u64, AppSession>,
    pub files: HashMap<u64, Arc<FileEntry>>,
    pub trash: Vec<TrashItem>,
    /// What is derived from the rest and asked for again and again (sizes, rendered JSON).
    pub memo: Memo,
}

/// Values derived from an account, computed on first need. An account is never changed in
/// place (the API clones it, edits the copy, swaps it in), and a copy starts with an empty
/// memo, so nothing here is ever stale.
#[derive(Default)]
pub struct Memo {
    sizes: OnceLock<HashMap<ContainerRef, u64>>,
    json: parking_lot::Mutex<HashMap<(ContainerRef, u8), serde_json::Value>>,
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// Id ranges per entity type, shaped like real BaseSpace ids.
const PROJECT_BASE: u64 = 300_000_000;
const SAMPLE_BASE: u64 = 400_000_000;
const APPRESULT_BASE: u64 = 500_000_000;
const RUN_BASE: u64 = 200_000_000;
const APPSESSION_BASE: u64 = 600_000_000;
const DATASET_BASE: u64 = 700_000_000;
const FILE_BASE: u64 = 20_000_000_000;

/// A fixed epoch for generated dates, so the same source gives the same JSON.
pub fn base_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_705_312_800) // 2024-01-15T10:00:00Z
}

/// Builds an [`Account`] with deterministic ids.
#[derive(Debug)]
pub struct AccountBuilder {
    acct: Account,
    next: HashMap<&'static str, u64>,
    /// Ids from a hash of each entity's path instead of a counter, so that re-reading a
    /// changed directory keeps every existing id (what a rescan needs).
    stable: bool,
    used: std::collections::HashSet<u64>,
}

impl Default for AccountBuilder {
    fn default() -> Self {
        Self::new("Emulated User")
    }
}

impl AccountBuilder {
    pub fn new(user_name: &str) -> Self {
        let acct = Account {
            user_id: 19_228_209,
            user_name: user_name.to_string(),
            ..Default::default()
        };
        AccountBuilder {
            acct,
            next: HashMap::new(),
            stable: false,
            used: Default::default(),
        }
    }

    /// A builder whose ids depend only on names and paths (see `stable`).
    pub fn stable(user_name: &str) -> Self {
        AccountBuilder {
            stable: true,
            ..Self::new(user_name)
        }
    }

    fn id(&mut self, kind: &'static str, base: u64, key: &str) -> u64 {
        if !self.stable {
            let n = self.next.entry(kind).or_insert(0);
            *n += 1;
            return base + *n;
        }
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let mut id = base + 1 + splitmix64(h) % 90_000_000;
        while !self.used.insert(id) {
            id += 1; // collision: probe (deterministic for the same set of keys in the same order)
        }
        id
    }

    fn when(&self, id: u64) -> SystemTime {
        base_time() + Duration::from_secs((id % 1_000_000) * 61)
    }

    pub fn project(&mut self, name: &str) -> u64 {
        let id = self.id("project", PROJECT_BASE, name);
        let created = self.when(id);
        self.acct.projects.push(Project {
            id,
            name: name.to_string(),
            description: format!("{name} (emulated)"),
            created,
            samples: vec![],
            appresults: vec![],
            appsessions: vec![],
            datasets: vec![],
        });
        id
    }

    pub fn appsession(&mut self, project: u64, name: &str, application: &str) -> u64 {
        let id = self.id("appsession", APPSESSION_BASE, &format!("{project}/{name}"));
        // Named as BaseSpace names them (`FASTQ Generation 2024-01-15 10:00:00Z`): made then.
        let created = name
            .rsplit_once(' ')
            .and_then(|(head, time)| {
                let date = head.rsplit(' ').next()?;
                crate::api::model::parse_date(&format!("{date}T{time}"))
            })
            .unwrap_or_else(|| self.when(id));
        self.acct.appsessions.insert(
            id,
            AppSession {
                id,
                name: name.to_string(),
                application: application.to_string(),
                project,
                created,
                outputs: vec![],
                logs: vec![],
                status: "Complete",
            },
        );
        if let Some(p) = self.acct.projects.iter_mut().find(|p| p.id == project) {
            p.appsessions.push(id);
        }
        id
    }

    fn container(
        &mut self,
        kind: ContainerKind,
        name: &str,
        project: Option<u64>,
        appsession: Option<u64>,
    ) -> ContainerRef {
        let (key, base) = match kind {
            ContainerKind::Sample => ("sample", SAMPLE_BASE),
            ContainerKind::AppResult => ("appresult", APPRESULT_BASE),
            ContainerKind::Run => ("run", RUN_BASE),
            ContainerKind::Dataset => ("dataset", DATASET_BASE),
        };
        let id = self.id(key, base, &format!("{project:?}/{name}"));
        let r = ContainerRef { kind, id };
        // After the appsession that made it; a run on the day its folder is named for
        // (`240115_A01234_…`).
        let created = match (appsession.and_then(|a| self.acct.appsessions.get(&a)), kind) {
            (Some(a), _) => a.created + Duration::from_secs(60 * (a.outputs.len() as u64 + 1)),
            (None, ContainerKind::Run) => run_date(name).unwrap_or_else(|| self.when(id)),
            _ => self.when(id),
        };
        self.acct.containers.insert(
            r,
            Container {
                id,
                kind,
                name: name.to_string(),
                project,
                appsession,
                created,
                files: vec![],
                inputs: vec![],
                status: "Complete",
                trashed: false,
                reads: None,
                experiment: None,
            },
        );
        if let Some(pid) = project {
            if let Some(p) = self.acct.projects.iter_mut().find(|p| p.id == pid) {
                match kind {
                    ContainerKind::Sample => p.samples.push(id),
                    ContainerKind::AppResult => p.appresults.push(id),
                    ContainerKind::Dataset => p.datasets.push(id),
                    ContainerKind::Run => {}
                }
            }
        }
        if let Some(a) = appsession.and_then(|a| self.acct.appsessions.get_mut(&a)) {
            a.outputs.push(r);
        }
        if kind == ContainerKind::Run {
            self.acct.runs.push(id);
        }
        r
    }

    pub fn sample(&mut self, project: u64, name: &str, appsession: Option<u64>) -> ContainerRef {
        self.container(ContainerKind::Sample, name, Some(project), appsession)
    }

    pub fn appresult(&mut self, project: u64, name: &str, appsession: Option<u64>) -> ContainerRef {
        self.container(ContainerKind::AppResult, name, Some(project), appsession)
    }

    /// A v2-only dataset (type `common.files`) of a project, made by `appsession`.
    pub fn dataset(&mut self, project: u64, name: &str, appsession: Option<u64>) -> ContainerRef {
        self.container(ContainerKind::Dataset, name, Some(project), appsession)
    }

    pub fn run(&mut self, name: &str) -> ContainerRef {
        self.container(ContainerKind::Run, name, None, None)
    }

    /// A run's experiment name, as entered on the instrument.
    pub fn experiment(&mut self, run: ContainerRef, name: &str) {
        if let Some(c) = self.acct.containers.get_mut(&run) {
            c.experiment = Some(name.to_string());
        }
    }

    /// A sample demultiplexed from `run` (else the account's first run is taken).
    pub fn demultiplexed_from(&mut self, sample: ContainerRef, run: ContainerRef) {
        if let Some(c) = self.acct.containers.get_mut(&sample) {
            c.inputs = vec![run];
        }
    }

    /// A sample's FASTQs hold `pairs` read pairs of `length` bases.
    pub fn reads(&mut self, sample: ContainerRef, pairs: u64, length: u32) {
        if let Some(c) = self.acct.containers.get_mut(&sample) {
            c.reads = Some((pairs, length));
        }
    }

    /// Adds a file; `created` defaults to a minute after its container.
    pub fn file(
        &mut self,
        parent: ContainerRef,
        path: &str,
        size: u64,
        content: Content,
        created: Option<SystemTime>,
    ) -> u64 {
        let id = self.entry(parent, path, size, content, created, &format!("{}/{path}", parent.id));
        if let Some(c) = self.acct.containers.get_mut(&parent) {
            c.files.push(id);
        }
        id
    }

    /// A file of the account that no container lists (an appsession's log): its id comes
    /// from `key`.
    fn entry(
        &mut self,
        parent: ContainerRef,
        path: &str,
        size: u64,
        content: Content,
        created: Option<SystemTime>,
        key: &str,
    ) -> u64 {
        let id = self.id("file", FILE_BASE, key);
        let created = created.unwrap_or_else(|| match self.acct.containers.get(&parent) {
            Some(c) => c.created + Duration::from_secs(60),
            None => self.when(id),
        });
        let entry = FileEntry {
            id,
            path: path.to_string(),
            size,
            content_type: content_type(path),
            content,
            created,
            parent,
            etag: OnceLock::new(),
            md5: OnceLock::new(),
        };
        self.acct.files.insert(id, Arc::new(entry));
        id
    }

    /// Gives file `id` the ETag of an upload in parts of `part` bytes (other uploaders than
    /// BaseSpace's 8 MiB ones; before it is first listed).
    pub fn uploaded_in_parts(&mut self, id: u64, part: u64) {
        if let Some(f) = self.acct.files.get(&id) {
            let etag = etag_in_parts(&f.content, f.size, part);
            let f = Arc::new(FileEntry {
                id: f.id,
                path: f.path.clone(),
                size: f.size,
                content_type: f.content_type,
                content: f.content.clone(),
                created: f.created,
                parent: f.parent,
                etag: OnceLock::from(etag),
                md5: OnceLock::new(),
            });
            self.acct.files.insert(id, f);
        }
    }

    /// The account, with every container's inputs linked the way BaseSpace links them: a
    /// sample was demultiplexed from the account's first run (if it has one); an appresult
    /// analysed the samples of its project whose names start its own name, else all of them.
    pub fn build(mut self) -> Account {
        let first_run = self.acct.runs.first().map(|id| ContainerRef {
            kind: ContainerKind::Run,
            id: *id,
        });
        let projects: Vec<(Vec<u64>, Vec<u64>)> = self
            .acct
            .projects
            .iter()
            .map(|p| (p.samples.clone(), p.appresults.clone()))
            .collect();
        for (samples, results) in projects {
            for s in &samples {
                if let Some(c) = self.acct.containers.get_mut(&ContainerRef {
                    kind: ContainerKind::Sample,
                    id: *s,
                }) {
                    if c.inputs.is_empty() {
                        c.inputs = first_run.into_iter().collect();
                    }
                }
            }
            let named: Vec<(u64, String)> = samples
                .iter()
                .filter_map(|s| self.acct.container(ContainerKind::Sample, *s))
                .map(|c| (c.id, c.name.clone()))
                .collect();
            for a in results {
                let Some(c) = self.acct.containers.get_mut(&ContainerRef {
                    kind: ContainerKind::AppResult,
                    id: a,
                }) else {
                    continue;
                };
                let mut inputs: Vec<u64> = named
                    .iter()
                    .filter(|(_, n)| c.name.starts_with(n.as_str()))
                    .map(|(id, _)| *id)
                    .collect();
                if inputs.is_empty() {
                    inputs = named.iter().map(|(id, _)| *id).collect();
                }
                c.inputs = inputs
                    .into_iter()
                    .map(|id| ContainerRef {
                        kind: ContainerKind::Sample,
                        id,
                    })
                    .collect();
            }
        }
        self.add_logs();
        hash_all(&self.acct);
        self.acct
    }

    /// Every appsession that made something gets the log its application wrote
    /// (`v2/appsessions/{id}/logfiles`, the appsession's `Logs/`).
    fn add_logs(&mut self) {
        let mut sessions: Vec<u64> = self.acct.appsessions.keys().copied().collect();
        sessions.sort_unstable();
        for sid in sessions {
            let s = &self.acct.appsessions[&sid];
            let Some(parent) = s.outputs.first().copied() else {
                continue;
            };
            let when = crate::api::model::format_date(s.created);
            let mut text = format!("{when} [{}] AppSession {:?} started\n", s.application, s.name);
            for r in &s.outputs {
                if let Some(c) = self.acct.containers.get(r) {
                    text.push_str(&format!("{when} [{}] wrote {:?}\n", s.application, c.name));
                }
            }
            text.push_str(&format!("{when} [{}] completed successfully\n", s.application));
            let mut logs = vec![(format!("{}.log", s.application.replace(' ', "_")), text.into_bytes())];
            logs.extend(self.demux_logs(sid));
            let created = s.created;
            for (path, bytes) in logs {
                let size = bytes.len() as u64;
                let id = self.entry(
                    parent,
                    &path,
                    size,
                    Content::Memory(Bytes::from(bytes)),
                    Some(created),
                    &format!("log/{sid}/{path}"),
                );
                if let Some(s) = self.acct.appsessions.get_mut(&sid) {
                    s.logs.push(id);
                }
            }
        }
    }

    /// What a FASTQ generation (an appsession that demultiplexed samples from a run) leaves
    /// in its logs besides its own log, as BaseSpace's do: the demultiplexing figures
    /// (`Stats.json`, bcl2fastq's shape) and the run's `RunInfo.xml`.
    fn demux_logs(&self, sid: u64) -> Vec<(String, Vec<u8>)> {
        let s = &self.acct.appsessions[&sid];
        let samples: Vec<&Container> = s
            .outputs
            .iter()
            .filter_map(|r| self.acct.containers.get(r))
            .filter(|c| c.kind == ContainerKind::Sample)
            .collect();
        let Some(run) = samples
            .iter()
            .flat_map(|c| c.inputs.iter())
            .find(|r| r.kind == ContainerKind::Run)
            .and_then(|r| self.acct.containers.get(r))
        else {
            return Vec::new();
        };
        let (flowcell, number) = {
            let i = super::json::instrument(&run.name);
            (i.flowcell.to_string(), i.number)
        };
        let demux: Vec<serde_json::Value> = samples
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let pairs = c.reads.map_or(0, |(p, _)| p);
                serde_json::json!({"SampleId": c.name, "SampleName": c.name, "IndexMetrics": [],
                    "NumberReads": pairs, "Yield": pairs * 2 * c.reads.map_or(151, |(_, l)| l as u64),
                    "ReadMetrics": [{"ReadNumber": 1}, {"ReadNumber": 2}], "SampleNumber": k + 1})
            })
            .collect();
        let total: u64 = samples.iter().map(|c| c.reads.map_or(0, |(p, _)| p)).sum();
        let stats = serde_json::json!({
            "Flowcell": flowcell, "RunNumber": number, "RunId": run.name,
            "ConversionResults": [{"LaneNumber": 1, "TotalClustersRaw": total + total / 10, "TotalClustersPF": total,
                                   "Yield": 0, "DemuxResults": demux}],
            "UnknownBarcodes": []
        });
        let mut out = vec![(
            "Stats.json".to_string(),
            serde_json::to_vec_pretty(&stats).unwrap_or_default(),
        )];
        let run_info = run
            .files
            .iter()
            .filter_map(|f| self.acct.files.get(f))
            .find(|f| f.path == "RunInfo.xml");
        if let Some(f) = run_info {
            let mut buf = vec![0u8; f.size as usize];
            if fill(&f.content, 0, &mut buf).is_ok() {
                out.push(("RunInfo.xml".to_string(), buf));
            }
        }
        out
    }
}

/// The day a run folder is named for (`YYMMDD_…`), at 08:00.
fn run_date(name: &str) -> Option<SystemTime> {
    let d = name.get(..6).filter(|d| d.bytes().all(|b| b.is_ascii_digit()))?;
    crate::api::model::parse_date(&format!("20{}-{}-{}T08:00:00Z", &d[..2], &d[2..4], &d[4..6]))
}

/// Up to this size the ETag is the md5 of the bytes (S3's single-part uploads); above it
/// the multipart form, as BaseSpace's uploaders (8 MiB parts) produce.
const SMALL_FILE_ETAG_LIMIT: u64 = 8 << 20;
/// Part size of the emulated multipart uploads: what BaseSpace's recorded ETags show
/// (a 48,526,491-byte file with `-6`).
pub const UPLOAD_PART_SIZE: u64 = 8 << 20;

fn etag_for(content: &Content, size: u64) -> String {
    etag_in_parts(content, size, UPLOAD_PART_SIZE)
}

/// The ETag S3 gives the bytes uploaded in parts of `part` bytes (the md5 when small).
/// One pass over the bytes: the whole-file digest or the part digests, never both.
fn etag_in_parts(content: &Content, size: u64, part: u64) -> String {
    use md5::{Digest, Md5};
    let part = part.max(1);
    let small = size <= SMALL_FILE_ETAG_LIMIT;
    let mut outer = Md5::new();
    let mut whole = Md5::new();
    let mut buf = vec![0u8; part.min(size.max(1)) as usize];
    let (mut off, mut parts) = (0u64, 0u64);
    while off < size {
        let n = part.min(size - off) as usize;
        if fill(content, off, &mut buf[..n]).is_err() {
            // Unreadable now (a file removed under a rescan): an ETag no bytes will match.
            return format!("{:032x}-1", size);
        }
        match small {
            true => whole.update(&buf[..n]),
            false => outer.update(Md5::digest(&buf[..n])),
        }
        off += n as u64;
        parts += 1;
    }
    match small {
        true => hex::encode(whole.finalize()),
        false => format!("{}-{parts}", hex::encode(outer.finalize())),
    }
}

/// Gives every file its ETag before the account is served, on all cores: S3 has an
/// object's ETag from its upload, so no request may pay for hashing it. (Hashed on first
/// request instead, a benchmark's first reader paid seconds of the emulator's CPU per GiB
/// that a second reader of the same files did not.)
fn hash_all(acct: &Account) {
    let files: Vec<&Arc<FileEntry>> = acct.files.values().filter(|f| f.etag.get().is_none()).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while let Some(f) = files.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                    f.etag();
                }
            });
        }
    });
}

/// Fills `buf` with the bytes at `offset` of a file's content.
pub fn fill(content: &Content, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    match content {
        Content::Disk(p) => {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(p)?;
            f.read_exact_at(buf, offset)
        }
        Content::Synthetic { seed } => {
            synth_fill(*seed, offset, buf);
            Ok(())
        }
        Content::Parts(c) => match c.copy(offset, buf) {
            true => Ok(()),
            false => Err(std::io::Error::other("range past end of uploaded file")),
        },
        Content::Memory(b) => {
            let start = offset as usize;
            let src = b
                .get(start..start + buf.len())
                .ok_or_else(|| std::io::Error::other("range past end of in-memory file"))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }
}

/// Synthetic bytes: the 8-byte word at index w is splitmix64(seed ^ w), so any range is
/// computable directly at several GB/s.
pub fn synth_fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut off = offset;
    while pos < buf.len() {
        let w = off / 8;
        let word = splitmix64(seed ^ w.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes();
        let skip = (off % 8) as usize;
        let n = (8 - skip).min(buf.len() - pos);
        buf[pos..pos + n].copy_from_slice(&word[skip..skip + n]);
        pos += n;
        off += n as u64;
    }
}

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn content_type(path: &str) -> &'static str {
    let p = path.to_ascii_lowercase();
    if p.ends_with(".gz") || p.ends_with(".bgz") {
        "application/x-gzip"
    } else if p.ends_with(".txt") || p.ends_with(".csv") || p.ends_with(".xml") || p.ends_with(".vcf") {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}

/// A sample's biosample id: BaseSpace shows every v1 sample as a biosample (API v2).
pub fn biosample_id(sample: u64) -> u64 {
    sample + BIOSAMPLE_OFFSET
}
/// Biosample (and library) ids sit this far above their sample's id, clear of every range.
const BIOSAMPLE_OFFSET: u64 = 1_000_000_000;
const LIBRARY_OFFSET: u64 = 2_000_000_000;

/// A sample's library id (`Input.Libraries` of its FASTQ dataset).
pub fn library_id(sample: u64) -> u64 {
    sample + LIBRARY_OFFSET
}

/// The v2 dataset id of a sample or appresult: `ds.` and 32 hex digits, the container's id
/// in the first 16 so it maps back ([`Account::dataset`]).
pub fn dataset_id(c: &Container) -> String {
    format!("ds.{:016x}{:016x}", c.id, splitmix64(c.id ^ c.kind as u64))
}

/// The filters `v2/datasets` honours (each `None` when not asked).
#[derive(Debug, Default)]
pub struct DatasetQuery {
    /// `inputruns`: made from one of these runs (FASTQ datasets demultiplexed from them).
    pub runs: Option<Vec<u64>>,
    /// `appsessionids`: made by one of these appsessions.
    pub appsessions: Option<Vec<u64>>,
    /// `inputbiosamples`: made from one of these biosamples.
    pub biosamples: Option<Vec<u64>>,
    /// `projectid` (an id that does not parse matches nothing).
    pub project: Option<Option<u64>>,
    /// `datasettypes`: type ids, or `~type` for any type conforming to it.
    pub types: Option<Vec<String>>,
}

impl DatasetQuery {
    pub fn matches(&self, c: &Container) -> bool {
        self.appsessions
            .as_ref()
            .is_none_or(|ss| c.appsession.is_some_and(|x| ss.contains(&x)))
            && self.biosamples.as_ref().is_none_or(|bs| uses_biosample(c, bs))
            && self.project.is_none_or(|p| p.is_some() && c.project == p)
            && self.types.as_ref().is_none_or(|ts| ts.iter().any(|t| dataset_is(c, t)))
            && self.runs.as_ref().is_none_or(|rs| {
                c.inputs
                    .iter()
                    .any(|r| r.kind == ContainerKind::Run && rs.contains(&r.id))
            })
    }
}

/// A sample or appresult made from one of these biosamples: a FASTQ dataset's own
/// biosample, an analysis's input samples' ones.
pub fn uses_biosample(c: &Container, bios: &[u64]) -> bool {
    let b = |id: u64| bios.contains(&biosample_id(id));
    match c.kind {
        ContainerKind::Sample => b(c.id),
        _ => c.inputs.iter().any(|r| r.kind == ContainerKind::Sample && b(r.id)),
    }
}

/// A dataset's type id and the types it conforms to: samples are FASTQ datasets, appresults
/// plain file sets.
pub fn dataset_type(c: &Container) -> (&'static str, &'static str, &'static [&'static str]) {
    match c.kind {
        // What `bs upload dataset` makes by default.
        ContainerKind::Dataset => ("common.files", "Files", &["common.files"]),
        ContainerKind::Sample => (
            "illumina.fastq.v1.8",
            "Illumina Fastq",
            &["common.files", "common.fastq"],
        ),
        _ => ("common.files", "Files", &["common.files"]),
    }
}

/// Whether a dataset matches a `datasettypes` entry: its type id, or with a leading `~` any
/// type it conforms to (`~common.fastq`).
pub fn dataset_is(c: &Container, filter: &str) -> bool {
    let (id, _, conforms) = dataset_type(c);
    match filter.strip_prefix('~') {
        Some(t) => t == id || conforms.contains(&t),
        None => filter == id,
    }
}

impl Account {
    /// The bytes of a container's files.
    pub fn size_of(&self, c: &Container) -> u64 {
        let sizes = self.memo.sizes.get_or_init(|| {
            self.containers
                .iter()
                .map(|(r, c)| {
                    (
                        *r,
                        c.files.iter().filter_map(|f| self.files.get(f)).map(|f| f.size).sum(),
                    )
                })
                .collect()
        });
        sizes
            .get(&ContainerRef { kind: c.kind, id: c.id })
            .copied()
            .unwrap_or(0)
    }

    /// The JSON `render` makes of container `c` in form `variant`, made once.
    pub fn rendered(
        &self,
        c: &Container,
        variant: u8,
        render: impl FnOnce() -> serde_json::Value,
    ) -> serde_json::Value {
        let key = (ContainerRef { kind: c.kind, id: c.id }, variant);
        if let Some(v) = self.memo.json.lock().get(&key) {
            return v.clone();
        }
        let v = render();
        self.memo.json.lock().insert(key, v.clone());
        v
    }

    /// The datasets a `v2/datasets` query lists, by id.
    pub fn datasets_where(&self, q: &DatasetQuery) -> Vec<&Container> {
        self.datasets().into_iter().filter(|c| q.matches(c)).collect()
    }

    /// The appsessions that read one of these biosamples (`input.biosamples`).
    pub fn appsessions_reading(&self, bios: &[u64]) -> Vec<&AppSession> {
        let mut v: Vec<&AppSession> = self
            .appsessions
            .values()
            .filter(|x| {
                x.outputs
                    .iter()
                    .filter_map(|r| self.containers.get(r))
                    .any(|c| uses_biosample(c, bios))
            })
            .collect();
        v.sort_by_key(|x| x.id);
        v
    }

    /// The sample or appresult behind a v2 dataset id.
    pub fn dataset(&self, ds: &str) -> Option<&Container> {
        let hex = ds.strip_prefix("ds.").filter(|h| h.len() == 32)?;
        let id = u64::from_str_radix(&hex[..16], 16).ok()?;
        [ContainerKind::Sample, ContainerKind::AppResult, ContainerKind::Dataset]
            .into_iter()
            .filter_map(|k| self.container(k, id))
            .find(|c| dataset_id(c) == ds)
    }

    /// The runs an appsession read: its outputs' input runs.
    pub fn appsession_runs(&self, s: &AppSession) -> Vec<u64> {
        let mut v: Vec<u64> = s
            .outputs
            .iter()
            .filter_map(|r| self.containers.get(r))
            .flat_map(|c| c.inputs.iter())
            .filter(|r| r.kind == ContainerKind::Run)
            .map(|r| r.id)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The projects holding samples demultiplexed from run `c`.
    pub fn run_projects(&self, c: &Container) -> Vec<u64> {
        let me = ContainerRef { kind: c.kind, id: c.id };
        let mut v: Vec<u64> = self
            .containers
            .values()
            .filter(|s| s.kind == ContainerKind::Sample && s.inputs.contains(&me))
            .filter_map(|s| s.project)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The sample behind a library id.
    pub fn library(&self, id: u64) -> Option<&Container> {
        self.container(ContainerKind::Sample, id.checked_sub(LIBRARY_OFFSET)?)
    }

    /// The sample behind a biosample id.
    pub fn biosample(&self, id: u64) -> Option<&Container> {
        self.container(ContainerKind::Sample, id.checked_sub(BIOSAMPLE_OFFSET)?)
    }

    /// Every sample and appresult, as the datasets `v2/datasets` lists (by id).
    pub fn datasets(&self) -> Vec<&Container> {
        let mut v: Vec<&Container> = self
            .containers
            .values()
            .filter(|c| c.kind != ContainerKind::Run)
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Every sample, as the biosamples `v2/biosamples` lists (by id).
    pub fn biosamples(&self) -> Vec<&Container> {
        let mut v: Vec<&Container> = self
            .containers
            .values()
            .filter(|c| c.kind == ContainerKind::Sample)
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    pub fn project(&self, id: u64) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    /// A container, unless it is in the trash.
    pub fn container(&self, kind: ContainerKind, id: u64) -> Option<&Container> {
        self.containers.get(&ContainerRef { kind, id }).filter(|c| !c.trashed)
    }

    /// md5 of a file's bytes (cached after the first call).
    pub fn md5(&self, f: &FileEntry) -> std::io::Result<String> {
        if let Some(m) = f.md5.get() {
            return Ok(m.clone());
        }
        use md5::{Digest, Md5};
        let mut h = Md5::new();
        let mut buf = vec![0u8; 4 << 20];
        let mut off = 0;
        while off < f.size {
            let n = (f.size - off).min(buf.len() as u64) as usize;
            fill(&f.content, off, &mut buf[..n])?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        let m = hex::encode(h.finalize());
        let _ = f.md5.set(m.clone());
        Ok(m)
    }

    /// Every file with the path the mount shows for it, using the mount's naming rules.
    pub fn display_paths(&self) -> Vec<(String, Arc<FileEntry>)> {
        let reserved = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut add_container = |prefix: String, c: &Container| {
            let files: Vec<&Arc<FileEntry>> = c.files.iter().filter_map(|id| self.files.get(id)).collect();
            let ids: Vec<String> = files.iter().map(|f| f.id.to_string()).collect();
            let pairs: Vec<(&str, &str)> = files
                .iter()
                .zip(&ids)
                .map(|(f, id)| (id.as_str(), f.path.as_str()))
                .collect();
            for (i, p) in names::flatten(&names::plan_files(&pairs)) {
                out.push((format!("{prefix}/Files/{p}"), files[i].clone()));
            }
        };
        // The names a list directory shows for (id, name) entries.
        let shown = |entries: Vec<(String, &str)>| -> Vec<String> {
            let pairs: Vec<(&str, &str)> = entries.iter().map(|(id, n)| (id.as_str(), *n)).collect();
            names::disambiguate(&pairs, &reserved)
        };
        let pnames = shown(
            self.projects
                .iter()
                .map(|p| (p.id.to_string(), p.name.as_str()))
                .collect(),
        );
        for (p, pname) in self.projects.iter().zip(pnames) {
            for (kind, list, dir) in [
                (ContainerKind::Sample, &p.samples, "Samples"),
                (ContainerKind::AppResult, &p.appresults, "AppResults"),
            ] {
                let cs: Vec<&Container> = list.iter().filter_map(|id| self.container(kind, *id)).collect();
                let cnames = shown(cs.iter().map(|c| (c.id.to_string(), c.name.as_str())).collect());
                for (c, cname) in cs.into_iter().zip(cnames) {
                    add_container(format!("Projects/{pname}/{dir}/{cname}"), c);
                }
            }
            // v2-only datasets are named among all the project's datasets, as `Datasets/` lists them.
            let all: Vec<&Container> = self
                .datasets_where(&DatasetQuery {
                    project: Some(Some(p.id)),
                    ..DatasetQuery::default()
                })
                .into_iter()
                .collect();
            let dnames = shown(all.iter().map(|c| (dataset_id(c), c.name.as_str())).collect());
            for (c, dname) in all.into_iter().zip(dnames) {
                if c.kind == ContainerKind::Dataset {
                    add_container(format!("Projects/{pname}/Datasets/{dname}"), c);
                }
            }
        }
        let runs: Vec<&Container> = self
            .runs
            .iter()
            .filter_map(|id| self.container(ContainerKind::Run, *id))
            .collect();
        let rnames = shown(runs.iter().map(|c| (c.id.to_string(), c.name.as_str())).collect());
        for (c, rname) in runs.into_iter().zip(rnames) {
            add_container(format!("Runs/{rname}"), c);
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_its_etag_before_the_account_is_served() {
        // Hashed on first request, a benchmark's first reader paid the emulator's hashing.
        let mut b = AccountBuilder::stable("Tester");
        let p = b.project("P");
        let s = b.sample(p, "S", None);
        let data: Vec<u8> = (0..(9u32 << 20) + 3).map(|i| (i % 251) as u8).collect();
        b.file(
            s,
            "big.bin",
            data.len() as u64,
            Content::Memory(Bytes::from(data.clone())),
            None,
        );
        b.file(s, "small.txt", 5, Content::Memory(Bytes::from_static(b"hello")), None);
        let acct = b.build();
        let etags: Vec<&str> = acct
            .files
            .values()
            .filter_map(|f| f.etag.get().map(String::as_str))
            .collect();
        assert_eq!(
            etags.len(),
            acct.files.len(),
            "a file was left to hash on first request"
        );
        // The forms S3 gives: the md5 when small, the part digests' md5 with 8 MiB parts.
        assert!(etags.contains(&crate::read::verify::multipart_etag(&data, 8 << 20).as_str()));
        assert!(etags.contains(&hex::encode(<md5::Md5 as md5::Digest>::digest(b"hello")).as_str()));
    }
}
