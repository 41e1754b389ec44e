//! The API v2 views and the rest of BaseMount's tree, on real mounts of the demo account:
//! BioSamples and Datasets serve the same bytes as Samples and AppResults, `Properties/`
//! links resolve to the entities they name, and no file of the mount holds the token.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::fuse::*;

const P2: &str = "Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)";

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("ls {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Every file below `pattern`'s `Files/` directories, by file name → md5.
fn sums_below(m: &Mounted, dirs: &[PathBuf]) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    for d in dirs {
        let o = run(
            "find",
            &[d.to_str().unwrap(), "-type", "f", "-path", "*/Files/*", "-print0"],
        );
        files.extend(
            o.stdout
                .split(|b| *b == 0)
                .filter(|r| !r.is_empty())
                .map(|r| PathBuf::from(String::from_utf8(r.to_vec()).unwrap())),
        );
    }
    assert!(!files.is_empty(), "no files under {dirs:?} in {}", m.mp.display());
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, sum) in md5sums(&files) {
        out.entry(p.file_name().unwrap().to_string_lossy().into_owned())
            .or_default()
            .insert(sum);
    }
    out
}

#[test]
fn every_sample_and_appresult_file_is_also_in_its_datasets_byte_identical() {
    let m = Mounted::demo();
    let manifest = m.manifest();
    let bio = sums_below(&m, &[m.path("BioSamples")]);
    let mut checked = 0;
    for (path, f) in &manifest {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < 5 || parts[0] != "Projects" || !matches!(parts[2], "Samples" | "AppResults") {
            continue;
        }
        let want = f["md5"].as_str().unwrap();
        let name = parts.last().unwrap().to_string();
        let pds = sums_below(&m, &[m.path(&format!("Projects/{}/Datasets", parts[1]))]);
        assert!(
            pds.get(&name).is_some_and(|s| s.contains(want)),
            "{path} is not under Projects/{}/Datasets/*/Files",
            parts[1]
        );
        if parts[2] == "Samples" {
            assert!(
                bio.get(&name).is_some_and(|s| s.contains(want)),
                "{path} is not under BioSamples/*/Datasets/*/Files"
            );
        }
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} files checked");
    // A dataset made in v2 has no sample or appresult: it is served at its manifest path.
    let native: Vec<&String> = manifest
        .keys()
        .filter(|p| p.split('/').nth(2) == Some("Datasets"))
        .collect();
    assert!(!native.is_empty(), "the demo has a v2-only dataset");
    let paths: Vec<PathBuf> = native.iter().map(|p| m.path(p)).collect();
    for (p, sum) in md5sums(&paths) {
        let rel = p.strip_prefix(&m.mp).unwrap().to_str().unwrap().to_string();
        assert_eq!(Some(sum.as_str()), manifest[&rel]["md5"].as_str(), "{rel}");
    }
    assert!(!names(&m.path(&format!("{P2}/AppResults"))).contains("Trio QC summary"));
    // Each biosample is named by its BioSampleName and keeps an .id link; dataset ids are `ds.`.
    let bs = names(&m.path("BioSamples"));
    assert!(bs.contains("NA12878"), "{bs:?}");
    let b = m.path("BioSamples/NA12878");
    let all: BTreeSet<String> = std::fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for n in [
        "Datasets",
        "AppSessions",
        "Libraries",
        "Status",
        "DefaultProject",
        ".json",
        ".curl",
    ] {
        assert!(all.contains(n), "biosample lacks {n}: {all:?}");
    }
    let lib = std::fs::read_to_string(b.join("Libraries/NA12878/.type")).unwrap();
    assert_eq!(lib, "libraries\n");
    let ds = names(&b.join("Datasets"));
    assert!(ds.iter().any(|n| n.starts_with(".id.ds.")), "{ds:?}");
    let fastq = ds.iter().find(|n| !n.starts_with('.')).unwrap();
    assert_eq!(
        std::fs::read_to_string(b.join("Datasets").join(fastq).join("DatasetTypeId")).unwrap(),
        "illumina.fastq.v1.8\n"
    );
    assert!(
        std::fs::read_to_string(b.join("Datasets").join(fastq).join("Attributes"))
            .unwrap()
            .contains("common_fastq.TotalReadsPF: ")
    );
}

#[test]
fn property_links_resolve_to_the_entities_they_name() {
    let m = Mounted::demo();
    let ar = m.path(&format!("{P2}/AppResults/NA12878 DRAGEN Germline"));
    let link = ar.join("Properties/Input.Samples/0");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "{} is not a link", link.display());
    let target = std::fs::canonicalize(&link).unwrap();
    assert_eq!(
        target,
        std::fs::canonicalize(m.path(&format!("{P2}/Samples/NA12878"))).unwrap()
    );
    assert!(names(&link.join("Files")).iter().any(|n| n.ends_with(".fastq.gz")));
    // An appsession's input run and sample sheet; a run's samples.
    let sessions = names(&m.path(&format!("{P2}/AppSessions")));
    let fq = sessions
        .iter()
        .find(|s| s.starts_with("FASTQ"))
        .expect("a FASTQ generation");
    let props = m.path(&format!("{P2}/AppSessions/{fq}/Properties"));
    let sheet = std::fs::read_to_string(props.join("Input.sample-sheet")).unwrap();
    assert!(sheet.contains("[Data]") && sheet.contains("NA12878"), "{sheet}");
    assert!(names(&props.join("Input.Runs/0/Files")).contains("RunInfo.xml"));
    // Its log, as the application wrote it.
    let logs = m.path(&format!("{P2}/AppSessions/{fq}/Logs"));
    let log = names(&logs)
        .into_iter()
        .find(|n| n.ends_with(".log"))
        .expect("a log file");
    let text = std::fs::read_to_string(logs.join(&log)).unwrap();
    assert!(
        text.contains("FASTQ Generation") && text.contains("\"NA12878\""),
        "{text}"
    );
    let runs = names(&m.path("Runs"));
    let run = runs.iter().find(|r| !r.starts_with('.')).unwrap();
    let out = m.path(&format!("Runs/{run}/Properties/Output.Samples/0"));
    assert!(names(&out).contains("SampleProperties"), "{}", out.display());
    // BaseMount 0.15's AppSessions.v1 holds the same sessions.
    assert_eq!(names(&m.path(&format!("{P2}/AppSessions.v1"))), sessions);
    // The sample's ExperimentName is its run's, as the instrument recorded it.
    let props = std::fs::read_to_string(m.path(&format!("{P2}/Samples/NA12878/SampleProperties"))).unwrap();
    let params = std::fs::read_to_string(m.path("Runs/240116_A01234_0042_AHDEMOXX/Files/RunParameters.xml")).unwrap();
    assert!(props.contains("ExperimentName: Germline_Trio\n"), "{props}");
    assert!(
        params.contains("<ExperimentName>Germline_Trio</ExperimentName>"),
        "{params}"
    );
}

#[test]
fn files_metadata_hides_per_file_directories_that_cd_finds() {
    let m = Mounted::demo();
    let s = m.path(&format!("{P2}/Samples/NA12878"));
    let files = names(&s.join("Files"));
    let first = files.iter().next().unwrap();
    assert!(
        names(&s.join("Files.metadata")).is_empty(),
        "per-file directories are hidden"
    );
    let d = s.join("Files.metadata").join(first);
    assert_eq!(std::fs::read_to_string(d.join(".name")).unwrap(), format!("{first}\n"));
    assert_eq!(std::fs::read_to_string(d.join(".type")).unwrap(), "files\n");
    let id = std::fs::read_to_string(d.join(".id")).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join(".json")).unwrap()).unwrap();
    // BaseMount's `.json` is the response of the directory's own request.
    assert_eq!(json["Response"]["Id"].as_str(), Some(id.trim()), "{json}");
}

#[test]
fn no_file_of_the_mount_holds_the_token_and_curl_names_its_variable() {
    let m = Mounted::demo();
    // Fill the metadata a user would look at first, then search everything.
    let curl = std::fs::read_to_string(m.path(&format!("{P2}/.curl"))).unwrap();
    assert!(
        curl.contains("$BASESPACE_ACCESS_TOKEN") && curl.contains(&m.emu().base),
        "{curl}"
    );
    let token_info = std::fs::read_to_string(m.path(".AccessToken/.json")).unwrap();
    assert!(token_info.contains("Scopes"), "{token_info}");
    let o = std::process::Command::new("grep")
        .args(["-r", "-l", "-F", &m.token, m.mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "grep found the token: {}", text(&o));
    // And grep did read the mount (a grep that reads nothing also finds nothing).
    let o = std::process::Command::new("grep")
        .args(["-r", "-l", "-F", "BASESPACE_ACCESS_TOKEN", m.mp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).lines().count() > 20, "{}", text(&o));
}

#[test]
fn no_v2_shows_the_v1_tree_only() {
    let m = Mounted::with_args(common::Emu::demo(), &["--no-v2"]);
    assert!(!names(&m.mp).contains("BioSamples"));
    let p = names(&m.path(P2));
    assert!(
        !p.contains("Datasets") && p.contains("Samples") && p.contains("AppSessions"),
        "{p:?}"
    );
}

#[test]
fn a_dataset_lists_one_folder_per_request() {
    let m = Mounted::demo();
    let d = m.path(&format!("{P2}/Datasets/NA12878 DRAGEN Germline"));
    assert!(d.join("DatasetTypeId").exists());
    let api = || m.emu().stats()["api_requests"].as_u64().unwrap();
    let a0 = api();
    let top = names(&d.join("Files"));
    assert!(top.contains("metrics") && top.contains("NA12878.bam"), "{top:?}");
    assert!(
        !top.iter().any(|n| n.contains("mapping_metrics")),
        "sub-folder files stay in it: {top:?}"
    );
    assert_eq!(api() - a0, 1, "the first folder costs one request (directory=/)");
    let sub = names(&d.join("Files/metrics"));
    assert_eq!(sub.into_iter().collect::<Vec<_>>(), ["NA12878.mapping_metrics.csv"]);
    assert_eq!(api() - a0, 2, "and each folder below one more");
}
