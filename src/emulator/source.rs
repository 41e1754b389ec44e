//! Where an emulated account comes from: a directory, a synthetic spec, or a catalog.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;

use super::account::{Account, AccountBuilder, ContainerRef, Content};
use crate::units::parse_size;

/// `DIR/Projects/<p>/Samples/<s>/**`, `DIR/Projects/<p>/AppResults/<a>/**`, `DIR/Runs/<r>/**`.
/// A file's `Path` is its path below its sample/appresult/run folder.
///
/// Ids are derived from names and paths, so rescanning a changed directory keeps them.
pub fn from_dir(dir: &Path) -> std::io::Result<Account> {
    let mut b = AccountBuilder::stable("Emulated User");
    for pdir in sorted_dirs(&dir.join("Projects"))? {
        let pname = file_name(&pdir);
        let pid = b.project(&pname);
        let samples = sorted_dirs(&pdir.join("Samples"))?;
        let fastq =
            (!samples.is_empty()).then(|| b.appsession(pid, &format!("FASTQ Generation {pname}"), "FASTQ Generation"));
        for sdir in samples {
            let s = b.sample(pid, &file_name(&sdir), fastq);
            add_tree(&mut b, s, &sdir)?;
        }
        let results = sorted_dirs(&pdir.join("AppResults"))?;
        let analysis =
            (!results.is_empty()).then(|| b.appsession(pid, &format!("Analysis {pname}"), "DRAGEN Germline"));
        for adir in results {
            let a = b.appresult(pid, &file_name(&adir), analysis);
            add_tree(&mut b, a, &adir)?;
        }
        // `Datasets/<d>/**`: datasets made in API v2, as `bs upload dataset` makes them.
        let datasets = sorted_dirs(&pdir.join("Datasets"))?;
        let upload =
            (!datasets.is_empty()).then(|| b.appsession(pid, &format!("BaseSpace CLI {pname}"), "BaseSpace CLI"));
        for ddir in datasets {
            let d = b.dataset(pid, &file_name(&ddir), upload);
            add_tree(&mut b, d, &ddir)?;
        }
    }
    for rdir in sorted_dirs(&dir.join("Runs"))? {
        let r = b.run(&file_name(&rdir));
        add_tree(&mut b, r, &rdir)?;
    }
    Ok(b.build())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sorted_dirs(p: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !p.is_dir() {
        return Ok(vec![]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(p)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

fn add_tree(b: &mut AccountBuilder, parent: ContainerRef, root: &Path) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() || (ft.is_symlink() && e.path().is_file()) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    for f in files {
        let meta = std::fs::metadata(&f)?;
        let rel = f.strip_prefix(root).unwrap_or(&f).to_string_lossy().into_owned();
        b.file(parent, &rel, meta.len(), Content::Disk(f.clone()), meta.modified().ok());
    }
    Ok(())
}

/// `--synthetic SPEC`: comma-separated `key=value`s, all optional.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub projects: u32,
    pub samples: u32,
    pub sample_files: u32,
    pub sample_file_size: u64,
    pub appresults: u32,
    pub appresult_files: u32,
    pub appresult_file_size: u64,
    pub runs: u32,
    pub run_files: u32,
    pub run_file_size: u64,
}

pub const SYNTHETIC_HELP: &str = "\
keys (defaults): projects=2, samples=2 (per project), sample_files=2, sample_file_size=16M, \
appresults=1 (per project), appresult_files=2, appresult_file_size=16M, runs=1, run_files=100, \
run_file_size=64K. Sizes take K/M/G suffixes. Example: --synthetic projects=1,samples=4,sample_file_size=1G,runs=1,run_files=100000";

impl Default for SyntheticSpec {
    fn default() -> Self {
        SyntheticSpec {
            projects: 2,
            samples: 2,
            sample_files: 2,
            sample_file_size: 16 << 20,
            appresults: 1,
            appresult_files: 2,
            appresult_file_size: 16 << 20,
            runs: 1,
            run_files: 100,
            run_file_size: 64 << 10,
        }
    }
}

impl std::str::FromStr for SyntheticSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut spec = SyntheticSpec::default();
        for kv in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{kv:?} is not key=value; {SYNTHETIC_HELP}"))?;
            let count = || v.parse::<u32>().map_err(|_| format!("{k}: {v:?} is not a count"));
            match k {
                "projects" => spec.projects = count()?,
                "samples" => spec.samples = count()?,
                "sample_files" => spec.sample_files = count()?,
                "sample_file_size" => spec.sample_file_size = parse_size(v)?,
                "appresults" => spec.appresults = count()?,
                "appresult_files" => spec.appresult_files = count()?,
                "appresult_file_size" => spec.appresult_file_size = parse_size(v)?,
                "runs" => spec.runs = count()?,
                "run_files" => spec.run_files = count()?,
                "run_file_size" => spec.run_file_size = parse_size(v)?,
                _ => return Err(format!("unknown key {k:?}; {SYNTHETIC_HELP}")),
            }
        }
        Ok(spec)
    }
}

/// Builds the synthetic account: content is derived from each file's id.
pub fn synthetic(spec: &SyntheticSpec) -> Account {
    let mut b = AccountBuilder::new("Synthetic User");
    for p in 1..=spec.projects {
        let pid = b.project(&format!("Synthetic Project {p}"));
        let fq = b.appsession(pid, &format!("FASTQ Generation {p}"), "FASTQ Generation");
        for s in 1..=spec.samples {
            let sref = b.sample(pid, &format!("SYN-P{p}-S{s}"), Some(fq));
            for f in 1..=spec.sample_files {
                let path = format!("SYN-P{p}-S{s}_S{s}_L001_R{f}_001.fastq.gz");
                add_synth(&mut b, sref, &path, spec.sample_file_size);
            }
        }
        let an = b.appsession(pid, &format!("Analysis {p}"), "DRAGEN Germline");
        for a in 1..=spec.appresults {
            let aref = b.appresult(pid, &format!("SYN-P{p}-Result{a}"), Some(an));
            for f in 1..=spec.appresult_files {
                add_synth(&mut b, aref, &format!("result_{f}.bin"), spec.appresult_file_size);
            }
        }
    }
    for r in 1..=spec.runs {
        let rref = b.run(&format!("240115_A01234_{r:04}_SYNTHFLOW{r}"));
        // Spread run files like a NovaSeq folder: lanes × cycles × tiles.
        for i in 0..spec.run_files {
            let lane = i % 4 + 1;
            let cycle = (i / 4) % 151 + 1;
            let tile = i / (4 * 151) + 1101;
            let path = format!("Data/Intensities/BaseCalls/L{lane:03}/C{cycle}.1/s_{lane}_{tile}.bcl.gz");
            add_synth(&mut b, rref, &path, spec.run_file_size);
        }
    }
    b.build()
}

fn add_synth(b: &mut AccountBuilder, parent: ContainerRef, path: &str, size: u64) {
    // The seed only needs to differ per file; mixing the path keeps it stable across specs.
    let seed = super::account::splitmix64(path.bytes().fold(size, |h, c| h.rotate_left(5) ^ c as u64));
    b.file(parent, path, size, Content::Synthetic { seed }, None);
}

/// `--catalog FILE`: names a directory cannot hold (duplicates, '/', control characters,
/// 300-byte names, unicode). Files give `size` (synthetic bytes) or `text` (exact bytes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub projects: Vec<CatalogProject>,
    #[serde(default)]
    pub runs: Vec<CatalogContainer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogProject {
    pub name: String,
    #[serde(default)]
    pub samples: Vec<CatalogContainer>,
    #[serde(default)]
    pub appresults: Vec<CatalogContainer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogContainer {
    pub name: String,
    #[serde(default)]
    pub files: Vec<CatalogFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    pub path: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub text: Option<String>,
}

pub const CATALOG_HELP: &str = r#"JSON: {"projects":[{"name":"P","samples":[{"name":"S","files":[{"path":"a/b.txt","text":"hello\n"},{"path":"big.bin","size":1048576}]}],"appresults":[...]}],"runs":[{"name":"R","files":[...]}]}"#;

pub fn from_catalog(text: &str) -> Result<Account, String> {
    let cat: Catalog =
        serde_json::from_str(text).map_err(|e| format!("invalid catalog: {e}; expected {CATALOG_HELP}"))?;
    let mut b = AccountBuilder::new("Catalog User");
    let add = |b: &mut AccountBuilder, r: ContainerRef, files: &[CatalogFile]| {
        for f in files {
            match (&f.text, f.size) {
                (Some(t), _) => {
                    b.file(
                        r,
                        &f.path,
                        t.len() as u64,
                        Content::Memory(Bytes::from(t.clone().into_bytes())),
                        None,
                    );
                }
                (None, size) => add_synth(b, r, &f.path, size.unwrap_or(0)),
            }
        }
    };
    for p in &cat.projects {
        let pid = b.project(&p.name);
        let fq = (!p.samples.is_empty()).then(|| b.appsession(pid, "FASTQ Generation", "FASTQ Generation"));
        for s in &p.samples {
            let r = b.sample(pid, &s.name, fq);
            add(&mut b, r, &s.files);
        }
        let an = (!p.appresults.is_empty()).then(|| b.appsession(pid, "Analysis", "DRAGEN Germline"));
        for a in &p.appresults {
            let r = b.appresult(pid, &a.name, an);
            add(&mut b, r, &a.files);
        }
    }
    for r in &cat.runs {
        let rr = b.run(&r.name);
        add(&mut b, rr, &r.files);
    }
    Ok(b.build())
}
