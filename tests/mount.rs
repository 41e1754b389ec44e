//! Real mounts: the `bsmount` binary mounts an in-process emulator over FUSE, and ordinary
//! programs (find, md5sum, cp, samtools, tabix, zcat) read it. Needs root and /dev/fuse
//! (CI has both) plus samtools and tabix (the README's test command installs them).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bsmount::emulator::{self, EmulatorOptions};
use common::fuse::*;
use common::Emu;
use serde_json::Value;

const P1: &str = "Projects/MiSeq: Myeloid RNA Panel (Demo)";
const P2: &str = "Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)";
const AR: &str = "Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)/AppResults/NA12878 DRAGEN Germline/Files";

/// The files `find` sees, without the v2 views' second showing of samples and appresults
/// (BioSamples/, Projects/<p>/Datasets/: tests/v2.rs checks those), but with the datasets
/// only v2 has (they are in the manifest).
fn v1_files(mp: &Path, man: &std::collections::BTreeMap<String, Value>) -> BTreeSet<String> {
    find_files(mp)
        .into_iter()
        .filter(|p| {
            let v2_view = p.starts_with("BioSamples/") || p.split('/').nth(2) == Some("Datasets");
            !v2_view || man.contains_key(p)
        })
        .collect()
}

#[test]
fn layout_names_and_hidden_metadata() {
    let m = Mounted::demo();
    let ls = |rel: &str| -> BTreeSet<String> {
        std::fs::read_dir(m.path(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    let root = ls("");
    for n in ["Projects", "Runs", "README", ".id", ".json"] {
        assert!(root.contains(n), "root lacks {n}: {root:?}");
    }
    assert!(std::fs::read_to_string(m.path("README"))
        .unwrap()
        .contains("bsmount unmount"));
    let projects = ls("Projects");
    assert!(
        projects.contains("MiSeq: Myeloid RNA Panel (Demo)")
            && projects.contains("NovaSeq: Germline Trio (NA12878, NA12891, NA12892)"),
        "{projects:?}"
    );
    // Duplicates get " (2)" in id order; every entry has a .id.<ID> link.
    let samples = ls(&format!("{P1}/Samples"));
    let visible: BTreeSet<&str> = samples
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(
        visible,
        BTreeSet::from(["Brain-Rep1", "Brain-Rep1 (2)", "SeraSeq-Rep1"])
    );
    let first = std::fs::read_to_string(m.path(&format!("{P1}/Samples/Brain-Rep1/.id"))).unwrap();
    let second = std::fs::read_to_string(m.path(&format!("{P1}/Samples/Brain-Rep1 (2)/.id"))).unwrap();
    assert!(first.trim().parse::<u64>().unwrap() < second.trim().parse::<u64>().unwrap());
    assert_eq!(
        std::fs::read_link(m.path(&format!("{P1}/Samples/.id.{}", second.trim()))).unwrap(),
        PathBuf::from("Brain-Rep1 (2)")
    );
    // Entity metadata.
    let sdir = m.path(&format!("{P2}/Samples/NA12878"));
    assert_eq!(std::fs::read_to_string(sdir.join(".type")).unwrap(), "samples\n");
    assert_eq!(std::fs::read_to_string(sdir.join(".name")).unwrap(), "NA12878\n");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(sdir.join(".json")).unwrap()).unwrap();
    assert_eq!(j["Response"]["Name"], "NA12878", "BaseSpace's answer, envelope and all");
    assert!(std::fs::read_to_string(sdir.join(".href"))
        .unwrap()
        .starts_with("v1pre3/samples/"));
    assert!(std::fs::read_to_string(sdir.join("SampleProperties"))
        .unwrap()
        .contains("SampleId: NA12878\n"));
    assert_eq!(
        ls(P2).into_iter().filter(|n| !n.starts_with('.')).collect::<Vec<_>>(),
        [
            "AppResults",
            "AppSessions",
            "AppSessions.v1",
            "Datasets",
            "Properties",
            "Samples"
        ]
    );
    // AppSessions: links named <Type>.<Id>.<Name> that lead to the entity directories.
    let sessions = ls(&format!("{P2}/AppSessions"));
    let dragen = sessions
        .iter()
        .find(|s| s.starts_with("DRAGEN"))
        .expect("DRAGEN appsession")
        .clone();
    let outs = ls(&format!("{P2}/AppSessions/{dragen}"));
    let link = outs
        .iter()
        .find(|n| n.starts_with("AppResults."))
        .expect("appresult link");
    assert!(link.ends_with(".NA12878 DRAGEN Germline"), "{link}");
    let via = std::fs::canonicalize(m.path(&format!("{P2}/AppSessions/{dragen}/{link}"))).unwrap();
    assert_eq!(via, m.path(&format!("{P2}/AppResults/NA12878 DRAGEN Germline")));
    assert!(via.join("Files/NA12878.bam").exists());
    // Run folder keeps nested paths.
    let run = m.path("Runs/240116_A01234_0042_AHDEMOXX/Files");
    for f in [
        "RunInfo.xml",
        "RunParameters.xml",
        "SampleSheet.csv",
        "InterOp/TileMetricsOut.bin",
        "Data/Intensities/BaseCalls/L001/C1.1/s_1_1101.bcl.gz",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    // Attributes: read-only modes, size = API Size, mtime from the API dates.
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(m.path(&format!("{AR}/NA12878.bam"))).unwrap();
    assert_eq!(md.mode() & 0o777, 0o444);
    assert_eq!(std::fs::metadata(m.path(AR)).unwrap().mode() & 0o777, 0o555);
    let man = m.manifest();
    assert_eq!(md.len(), man[&format!("{AR}/NA12878.bam")]["size"].as_u64().unwrap());
    assert!(
        md.mtime() > 1_700_000_000 && md.mtime() < 1_800_000_000,
        "{}",
        md.mtime()
    );
    // No file served by the mount contains the token.
    for f in [".json", "README", ".href"] {
        assert!(!std::fs::read_to_string(m.path(f)).unwrap().contains(&m.emu().token));
    }
}

#[test]
fn every_file_matches_the_manifest_and_cp_r_copies_a_project() {
    let m = Mounted::demo();
    let man = m.manifest();
    let found = v1_files(&m.mp, &man);
    let expected: BTreeSet<String> = man.keys().cloned().collect();
    assert_eq!(found, expected, "the mount shows exactly the emulator's files");
    let files: Vec<PathBuf> = expected.iter().map(|p| m.path(p)).collect();
    let sums = md5sums(&files);
    for (rel, f) in &man {
        assert_eq!(sums[&m.path(rel)], f["md5"].as_str().unwrap(), "{rel}");
    }
    // cp -r of a whole project gives identical bytes.
    let dest = tempfile::tempdir().unwrap();
    run(
        "cp",
        &["-r", m.path(P2).to_str().unwrap(), dest.path().to_str().unwrap()],
    );
    let copied: Vec<(String, PathBuf)> = man
        .keys()
        .filter_map(|p| {
            p.strip_prefix("Projects/")
                .filter(|r| r.starts_with("NovaSeq"))
                .map(|r| (p.clone(), dest.path().join(r)))
        })
        .collect();
    assert!(copied.len() >= 8);
    let sums = md5sums(&copied.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>());
    for (rel, d) in &copied {
        assert_eq!(sums[d], man[rel]["md5"].as_str().unwrap(), "copy of {rel}");
    }
}

#[test]
fn samtools_tabix_and_zcat_read_in_place() {
    let m = Mounted::demo();
    let man = m.manifest();
    let src = tempfile::tempdir().unwrap();
    for name in [
        "NA12878.bam",
        "NA12878.bam.bai",
        "NA12878.hard-filtered.vcf.gz",
        "NA12878.hard-filtered.vcf.gz.tbi",
    ] {
        let id = man[&format!("{AR}/{name}")]["id"].as_str().unwrap();
        std::fs::write(src.path().join(name), m.emu().content(id)).unwrap();
    }
    let before = m.emu().stats()["content_requests"].as_u64().unwrap();
    let mbam = m.path(&format!("{AR}/NA12878.bam"));
    let sbam = src.path().join("NA12878.bam");
    for region in ["chr1:100000-101000", "chr2:999000-1000000", "chr1:1-200"] {
        let a = run("samtools", &["view", mbam.to_str().unwrap(), region]).stdout;
        let b = run("samtools", &["view", sbam.to_str().unwrap(), region]).stdout;
        assert!(!a.is_empty(), "{region} has reads");
        assert_eq!(a, b, "samtools view {region}");
    }
    let region_requests = m.emu().stats()["content_requests"].as_u64().unwrap() - before;
    assert!(
        region_requests <= 12,
        "3 region queries took {region_requests} content requests"
    );
    let mvcf = m.path(&format!("{AR}/NA12878.hard-filtered.vcf.gz"));
    let svcf = src.path().join("NA12878.hard-filtered.vcf.gz");
    for region in ["chr2:1-50000", "chr1:1500000-1600000"] {
        let a = run("tabix", &[mvcf.to_str().unwrap(), region]).stdout;
        assert!(!a.is_empty());
        assert_eq!(
            a,
            run("tabix", &[svcf.to_str().unwrap(), region]).stdout,
            "tabix {region}"
        );
    }
    let fq = m.path(&format!("{P2}/Samples/NA12878/Files/NA12878_S1_L001_R1_001.fastq.gz"));
    let head = run("sh", &["-c", &format!("zcat '{}' | head -4", fq.display())]).stdout;
    let lines: Vec<&str> = std::str::from_utf8(&head).unwrap().lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].starts_with('@') && lines[2] == "+" && lines[1].len() == lines[3].len());
}

#[test]
fn random_preads_are_byte_exact_and_small_reads_stay_small() {
    let m = Mounted::demo();
    let man = m.manifest();
    let rel = format!("{AR}/NA12878.bam");
    let id = man[&rel]["id"].as_str().unwrap();
    let src = m.emu().content(id);
    let size = src.len() as u64;
    let f = std::fs::File::open(m.path(&rel)).unwrap();
    let bytes0 = m.emu().stats()["content_bytes"].as_u64().unwrap();
    // One byte in the middle fetches at most two blocks, not the whole file.
    let mut one = [0u8; 1];
    assert_eq!(f.read_at(&mut one, size / 2).unwrap(), 1);
    assert_eq!(one[0], src[(size / 2) as usize]);
    let fetched = m.emu().stats()["content_bytes"].as_u64().unwrap() - bytes0;
    assert!(fetched <= 2 << 20, "a 1-byte read fetched {fetched} bytes");
    let mut rng = 12345u64;
    let mut cases = vec![
        (0u64, 1usize),
        (size - 1, 1),
        (size - 10, 100),
        (size, 10),
        (size + 5000, 10),
    ];
    for _ in 0..20 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        cases.push((rng % size, 1 + (rng >> 40) as usize % (1 << 20)));
    }
    for (off, len) in cases {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            let n = f.read_at(&mut buf[got..], off + got as u64).unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let want = if off >= size {
            &[][..]
        } else {
            &src[off as usize..(off as usize + len).min(size as usize)]
        };
        assert_eq!(&buf[..got], want, "pread at {off}+{len}");
    }
}

#[test]
fn listing_is_lazy_and_stat_fetches_no_content() {
    let m = Mounted::demo();
    let s0 = m.emu().stats();
    assert_eq!(s0["content_requests"].as_u64(), Some(0));
    // The mount asked only users/current so far.
    assert_eq!(s0["api_requests"].as_u64(), Some(1), "{s0}");
    let _ = std::fs::read_dir(m.path("Projects")).unwrap().count();
    assert_eq!(
        m.emu().stats()["api_requests"].as_u64(),
        Some(2),
        "ls Projects is one listing"
    );
    let _ = std::fs::read_dir(m.path("Projects")).unwrap().count();
    assert_eq!(m.emu().stats()["api_requests"].as_u64(), Some(2), "listings are cached");
    run("ls", &["-lR", m.path(&format!("{P2}/AppResults")).to_str().unwrap()]);
    let md = std::fs::metadata(m.path(&format!("{AR}/NA12878.bam"))).unwrap();
    assert!(md.len() > 0);
    assert_eq!(
        m.emu().stats()["content_requests"].as_u64(),
        Some(0),
        "stat and ls -l make no content request"
    );
}

#[test]
fn writes_fail_with_erofs() {
    let m = Mounted::demo();
    let erofs = |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(m.path("README"))
            .map(|_| ()),
    );
    erofs(std::fs::File::create(m.path("Projects/new.txt")).map(|_| ()));
    erofs(std::fs::create_dir(m.path("Projects/new")));
    erofs(std::fs::remove_file(m.path("README")));
    erofs(std::fs::rename(m.path("README"), m.path("README2")));
    erofs(std::os::unix::fs::symlink("x", m.path("Runs/link")));
}

#[test]
fn awkward_names_from_a_catalog() {
    let long = "L".repeat(300);
    let catalog = serde_json::json!({
        "projects": [
            {"name": "Dup", "samples": [
                {"name": "S", "files": [{"path": "a.txt", "text": "one\n"}]},
                {"name": "S", "files": [{"path": "a.txt", "text": "two\n"}, {"path": "a.txt", "text": "three\n"}]},
                {"name": "S (2)", "files": [{"path": "x", "text": "literal\n"}]}
            ]},
            {"name": "Dup", "appresults": [{"name": "slash/in name", "files": [{"path": "dir/sub/f.bin", "size": 70000}, {"path": "dir", "text": "file named like a folder\n"}]}]},
            {"name": "ctl\u{1}chars\ttab", "samples": [{"name": long, "files": [{"path": format!("{long}.fastq.gz"), "size": 1234}]}]},
            {"name": "Ünïcödé – 測試 🧬", "samples": [{"name": ".", "files": [{"path": "..", "text": "dots\n"}]}, {"name": "..", "files": []}]}
        ],
        "runs": [{"name": "Run: (1)", "files": [{"path": "Data/x y/z.bcl.gz", "size": 10}]}]
    });
    let acct = emulator::source::from_catalog(&catalog.to_string()).unwrap();
    let m = Mounted::new(Emu::start(acct, EmulatorOptions::default()));
    let man = m.manifest();
    let found = v1_files(&m.mp, &man);
    assert_eq!(found, man.keys().cloned().collect::<BTreeSet<_>>());
    for p in &found {
        assert!(p.split('/').all(|c| c.len() <= 255), "{p}");
    }
    assert!(found.contains("Projects/Dup/Samples/S/Files/a.txt"));
    assert!(
        found.contains("Projects/Dup/Samples/S (3)/Files/a.txt")
            && found.contains("Projects/Dup/Samples/S (3)/Files/a.txt (2)"),
        "{found:?}"
    );
    assert!(
        found.contains("Projects/Dup/Samples/S (2)/Files/x"),
        "a literal \"S (2)\" keeps its name"
    );
    assert!(found.contains("Projects/Dup (2)/AppResults/slash\u{2215}in name/Files/dir/sub/f.bin"));
    assert!(found.contains("Projects/Dup (2)/AppResults/slash\u{2215}in name/Files/dir (2)"));
    let sums = md5sums(&found.iter().map(|p| m.path(p)).collect::<Vec<_>>());
    for (rel, f) in &man {
        assert_eq!(sums[&m.path(rel)], f["md5"].as_str().unwrap(), "{rel}");
    }
}

#[test]
fn mount_refuses_bad_setups_with_one_line_reasons() {
    let emu = Emu::start(
        emulator::source::synthetic(&"projects=1".parse().unwrap()),
        EmulatorOptions::default(),
    );
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mp");
    std::fs::create_dir(&mp).unwrap();
    let one_line = |o: &Output, needle: &str| {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    };
    // Wrong token: fails fast, says what to do, and never prints the token.
    let t = Instant::now();
    let o = Command::new(BIN)
        .args(["mount", mp.to_str().unwrap()])
        .env("BASESPACE_API_SERVER", &emu.base)
        .env("BASESPACE_ACCESS_TOKEN", "not-the-token")
        .env("HOME", home.path())
        .output()
        .unwrap();
    one_line(&o, "rejected the access token");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!text(&o).contains("not-the-token"));
    // Unreachable server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = Command::new(BIN)
        .args(["mount", mp.to_str().unwrap()])
        .env("BASESPACE_API_SERVER", format!("http://{closed}"))
        .env("BASESPACE_ACCESS_TOKEN", "x")
        .env("HOME", home.path())
        .output()
        .unwrap();
    one_line(&o, "cannot reach BaseSpace");
    // Mountpoint problems.
    one_line(
        &bsmount(
            &emu,
            &["mount", home.path().join("missing").to_str().unwrap()],
            home.path(),
        ),
        "does not exist",
    );
    std::fs::write(home.path().join("file"), "x").unwrap();
    one_line(
        &bsmount(
            &emu,
            &["mount", home.path().join("file").to_str().unwrap()],
            home.path(),
        ),
        "not a directory",
    );
    std::fs::create_dir(home.path().join("full")).unwrap();
    std::fs::write(home.path().join("full/x"), "x").unwrap();
    one_line(
        &bsmount(
            &emu,
            &["mount", home.path().join("full").to_str().unwrap()],
            home.path(),
        ),
        "not empty",
    );
    // No credentials at all.
    let o = Command::new(BIN)
        .args(["mount", mp.to_str().unwrap()])
        .env_remove("BASESPACE_API_SERVER")
        .env_remove("BASESPACE_ACCESS_TOKEN")
        .env("HOME", home.path())
        .output()
        .unwrap();
    one_line(&o, "bsmount auth");
    // Already mounted.
    let m = Mounted::new(emu);
    one_line(
        &bsmount(m.emu(), &["mount", m.mp.to_str().unwrap()], home.path()),
        "already mounted",
    );
}

#[test]
fn unmount_names_busy_processes_then_succeeds() {
    let m = Mounted::demo();
    let file = m.path(&format!("{AR}/NA12878.bam"));
    // A reader holding the file open.
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3< '{}'; echo ready; exec sleep 60", file.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let o = m.unmount();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("busy") && err.contains(&format!("pid {}", holder.id())) && err.contains("sleep"),
        "{err}"
    );
    assert!(is_mounted(&m.mp));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let o = m.unmount();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!is_mounted(&m.mp));
    assert_eq!(std::fs::read_dir(&m.mp).unwrap().count(), 0);
}

#[test]
fn sigterm_unmounts_cleanly_and_kill_9_leaves_a_mount_unmount_can_clear() {
    let m = Mounted::demo();
    let pid = m.daemon_pid();
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until("the mount to go away after SIGTERM", Duration::from_secs(15), || {
        !is_mounted(&m.mp)
    });
    wait_until("the daemon to exit", Duration::from_secs(15), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
    });
    // Mount again on the same directory, then kill -9: a dead mount that unmount clears.
    let out = bsmount(m.emu(), &["mount", m.mp.to_str().unwrap()], m._dir.path());
    assert!(out.status.success(), "{}", text(&out));
    let pid = m.daemon_pid();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_until("the mount to die", Duration::from_secs(10), || {
        std::fs::metadata(&m.mp).err().and_then(|e| e.raw_os_error()) == Some(libc::ENOTCONN)
    });
    let o = bsmount(m.emu(), &["mount", m.mp.to_str().unwrap()], m._dir.path());
    assert!(!o.status.success() && text(&o).contains("dead mount"), "{}", text(&o));
    let o = m.unmount();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!is_mounted(&m.mp));
    let o = bsmount(m.emu(), &["mount", m.mp.to_str().unwrap()], m._dir.path());
    assert!(o.status.success(), "mount works again: {}", text(&o));
    assert!(m.path("Projects").is_dir());
}

#[test]
fn a_large_run_folder_lists_completely_with_one_request_per_page() {
    let spec: emulator::source::SyntheticSpec = "projects=0,runs=1,run_files=20000,run_file_size=100".parse().unwrap();
    let m = Mounted::new(Emu::start(
        emulator::source::synthetic(&spec),
        EmulatorOptions::default(),
    ));
    let man = m.manifest();
    let a0 = m.emu().stats()["api_requests"].as_u64().unwrap();
    let found = v1_files(&m.mp, &man);
    assert_eq!(found, man.keys().cloned().collect::<BTreeSet<_>>());
    let used = m.emu().stats()["api_requests"].as_u64().unwrap() - a0;
    // runs + the run + 20 pages of 1000 files, plus the run's Properties/, BioSamples/,
    // .Trash/ and .AccessToken/ (find enters them all); no request per file, and
    // Files.metadata/ costs none.
    assert!(used <= 28, "{used} API requests to list 20,000 files");
    // Every entry of the biggest folder, with its size, in one `ls -l`, still with no request.
    let big = found
        .iter()
        .filter_map(|p| Path::new(p).parent())
        .fold(std::collections::BTreeMap::<&Path, usize>::new(), |mut c, d| {
            *c.entry(d).or_default() += 1;
            c
        })
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    let o = run("ls", &["-l", m.path(big.0.to_str().unwrap()).to_str().unwrap()]);
    let listed: Vec<&str> = std::str::from_utf8(&o.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('-'))
        .collect();
    assert_eq!(listed.len(), big.1, "ls -l shows every file of {:?}", big.0);
    assert!(
        listed.iter().all(|l| l.split_whitespace().nth(4) == Some("100")),
        "sizes"
    );
    assert_eq!(m.emu().stats()["api_requests"].as_u64().unwrap() - a0, used);
    // Extended attributes are refused by the kernel after the first ENOSYS: `ls -l` does not
    // cost two round trips per entry.
    let c = std::ffi::CString::new(m.path("Runs").as_os_str().as_encoded_bytes()).unwrap();
    let name = c"security.selinux";
    // SAFETY: valid C strings; a zero-length query.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(r, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EOPNOTSUPP));
}

#[test]
fn the_disk_cache_survives_remounts_stays_in_its_size_and_refuses_damaged_blocks() {
    let spec: emulator::source::SyntheticSpec =
        "projects=1,samples=1,sample_files=1,sample_file_size=24M,appresults=0,runs=0"
            .parse()
            .unwrap();
    let m = Mounted::new(Emu::start(
        emulator::source::synthetic(&spec),
        EmulatorOptions::default(),
    ));
    let (rel, want) = m
        .manifest()
        .into_iter()
        .map(|(p, f)| (p, f["md5"].as_str().unwrap().to_string()))
        .next()
        .unwrap();
    m.unmount();
    let cache = tempfile::tempdir().unwrap();
    let mp = m.mp.to_str().unwrap();
    let dir = cache.path().to_str().unwrap();
    let mount = |size: &str| {
        let o = bsmount(
            m.emu(),
            &["mount", mp, "--cache-dir", dir, "--cache-dir-size", size],
            m._dir.path(),
        );
        assert!(o.status.success(), "{}", text(&o));
    };
    let stats = || -> Value { serde_json::from_slice(&std::fs::read(m.path(".bsmount/stats")).unwrap()).unwrap() };
    let content = || m.emu().stats()["content_requests"].as_u64().unwrap();
    let md5 = || md5sums(&[m.path(&rel)]).into_values().next().unwrap();
    let on_disk = || -> u64 {
        walk(&cache.path().join("blocks"))
            .iter()
            .map(|p| p.metadata().unwrap().len())
            .sum()
    };

    // First mount: read from the network, written to disk behind the reader. The cache is
    // under twice the file's size, so the file is kept as blocks, not whole (the test
    // below covers whole files).
    mount("40M");
    assert_eq!(md5(), want);
    // Each block written or skipped once (a block fetched twice is written once).
    let t = std::time::Instant::now();
    loop {
        let last = stats()["disk_cache"].clone();
        if last["writes"].as_u64().unwrap() + last["writes_skipped"].as_u64().unwrap() == 24 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the blocks did not reach the disk: {last}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = stats()["disk_cache"]["writes"].as_u64().unwrap();
    assert!(written >= 16, "{written} of 24 blocks written");
    assert!(m.unmount().status.success());

    // Remounted: the written blocks come from disk, only skipped ones from the network.
    mount("40M");
    let c0 = content();
    assert_eq!(md5(), want);
    assert_eq!(stats()["disk_cache"]["hits"].as_u64().unwrap(), written);
    let status = text(&m.cmd(&["status", mp]));
    assert!(status.contains(&format!("{written} blocks read from it")), "{status}");
    assert!(content() - c0 <= 24 - written, "{} content requests", content() - c0);
    assert!(m.unmount().status.success());

    // A damaged block is refused (checksum), deleted and fetched again: the bytes stay right.
    let blocks: Vec<PathBuf> = walk(&cache.path().join("blocks"));
    let victim = &blocks[blocks.len() / 2];
    let mut raw = std::fs::read(victim).unwrap();
    let n = raw.len();
    raw[n - 100] ^= 0xff;
    std::fs::write(victim, &raw).unwrap();
    mount("40M");
    let c0 = content();
    assert_eq!(md5(), want);
    assert_eq!(stats()["disk_cache"]["rejected"].as_u64(), Some(1));
    assert!(content() > c0, "the damaged block came from the network");
    wait_until("the block to be written anew", Duration::from_secs(20), || {
        stats()["disk_cache"]["writes"].as_u64() == Some(1)
    });
    assert_ne!(std::fs::read(victim).unwrap(), raw, "replaced by the good block");
    assert!(m.unmount().status.success());

    // A smaller size evicts down to it at once and stays there while reading.
    mount("5M");
    assert!(on_disk() <= 5 << 20);
    assert_eq!(md5(), want);
    let d = stats()["disk_cache"].clone();
    assert!(d["bytes"].as_u64().unwrap() <= 5 << 20, "{d}");
    assert!(m.unmount().status.success());
    assert!(on_disk() <= 5 << 20);
}

#[test]
fn a_file_read_whole_is_kept_whole_and_handed_to_the_kernel_from_then_on() {
    use bsmount::emulator::account::{AccountBuilder, Content};
    use std::os::unix::fs::PermissionsExt;
    const SIZE: usize = 6 << 20;
    let bytes = |seed: u8| -> Vec<u8> { (0..SIZE as u32).map(|i| (i as u8).wrapping_mul(13) ^ seed).collect() };
    let build = |seed: u8| {
        let mut b = AccountBuilder::stable("U");
        let p = b.project("P");
        let s = b.sample(p, "S", None);
        b.file(s, "reads.bam", SIZE as u64, Content::Memory(bytes(seed).into()), None);
        // A small file, fetched and checked in one GET.
        b.file(s, "reads.bam.bai", 3000, Content::Memory(vec![7u8; 3000].into()), None);
        b.build()
    };
    let m = Mounted::new(Emu::start(build(1), EmulatorOptions::default()));
    m.unmount();
    let cache = tempfile::tempdir().unwrap();
    let (mp, dir) = (m.mp.to_str().unwrap(), cache.path().to_str().unwrap());
    let mount = |extra: &[&str]| {
        let args = [&["mount", mp, "--cache-dir", dir][..], extra].concat();
        let o = bsmount(m.emu(), &args, m._dir.path());
        assert!(o.status.success(), "{}", text(&o));
    };
    let rel = "Projects/P/Samples/S/Files/reads.bam";
    let stats = || -> Value { serde_json::from_slice(&std::fs::read(m.path(".bsmount/stats")).unwrap()).unwrap() };
    let disk = |k: &str| stats()["disk_cache"][k].as_u64().unwrap();
    let content = || m.emu().stats()["content_requests"].as_u64().unwrap();
    let read_all = || run("cat", &[m.path(rel).to_str().unwrap()]).stdout;

    let bai = m.path("Projects/P/Samples/S/Files/reads.bam.bai");
    // A whole read is verified, then kept as one private file in place of its blocks.
    mount(&[]);
    assert!(read_all() == bytes(1));
    assert_eq!(std::fs::read(&bai).unwrap(), vec![7u8; 3000]);
    wait_until("the files to be kept whole", Duration::from_secs(20), || {
        disk("files_kept_whole") == 2
    });
    let files = cache.path().join("files");
    assert_eq!(files.metadata().unwrap().permissions().mode() & 0o777, 0o700);
    let kept: Vec<PathBuf> = std::fs::read_dir(&files).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(kept.len(), 2);
    for k in &kept {
        assert_eq!(k.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let b = std::fs::read(k).unwrap();
        assert!(b == bytes(1) || b == vec![7u8; 3000]);
    }
    assert_eq!(disk("writes"), 0, "no blocks written for a file kept whole");
    assert!(m.unmount().status.success());

    // Remounted: opens hand the file to the kernel. Sequential, random and mmap reads are
    // right, and neither the network nor the daemon serves a byte.
    mount(&[]);
    let c0 = content();
    assert!(read_all() == bytes(1));
    let f = std::fs::File::open(m.path(rel)).unwrap();
    let mut buf = vec![0u8; 4096];
    for off in [SIZE - 4096, 12345, 3 << 20] {
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf[..] == bytes(1)[off..off + 4096], "pread at {off}");
    }
    let py = "import mmap,sys; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); sys.stdout.buffer.write(m[1000:2000])";
    let o = run("python3", &["-c", py, m.path(rel).to_str().unwrap()]);
    assert!(o.stdout[..] == bytes(1)[1000..2000], "mmap: {}", text(&o));
    drop(f);
    assert_eq!(std::fs::read(&bai).unwrap(), vec![7u8; 3000]);
    assert_eq!(content(), c0, "content requests for a file kept whole");
    assert!(disk("passthrough_opens") >= 4, "{}", stats()["disk_cache"]);
    assert_eq!(
        stats()["reads"]["bytes_served"].as_u64(),
        Some(0),
        "the daemon served bytes"
    );
    let status = text(&m.cmd(&["status", mp]));
    assert!(status.contains("opens handed to the kernel"), "{status}");
    assert!(m.unmount().status.success());

    // Without passthrough the same copy serves reads through the mount, still no network.
    mount(&["--no-passthrough"]);
    assert!(read_all() == bytes(1));
    assert_eq!(content(), c0);
    assert_eq!(disk("passthrough_opens"), 0);
    assert_eq!(stats()["reads"]["bytes_served"].as_u64(), Some(SIZE as u64));

    // A new version on the server is read as such, never from the old copy; it is then
    // kept whole in turn, beside the old one's name.
    m.emu().emu.as_ref().unwrap().replace_account(build(2));
    let o = m.cmd(&["refresh", m.path("Projects/P/Samples/S").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    run("ls", &["-l", m.path("Projects/P/Samples/S/Files").to_str().unwrap()]);
    assert!(read_all() == bytes(2), "the old version's copy was read");
    assert!(content() > c0);
    wait_until("the new version to be kept whole", Duration::from_secs(20), || {
        disk("files_kept_whole") == 1
    });
    assert!(m.unmount().status.success());
    mount(&[]);
    let c1 = content();
    assert!(read_all() == bytes(2));
    assert_eq!(content(), c1);
    assert!(disk("passthrough_opens") >= 1);
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// A run-like folder: `n` folders of `per` files of `size` bytes each, distinct bytes.
fn folder_account(n: usize, per: usize, size: usize) -> emulator::account::Account {
    use bsmount::emulator::account::{AccountBuilder, Content};
    let mut b = AccountBuilder::stable("U");
    let p = b.project("P");
    let s = b.sample(p, "S", None);
    for d in 0..n {
        for t in 0..per {
            let seed = (d * per + t) as u8;
            let data: Vec<u8> = (0..size).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let path = format!("C{d}.1/s_1_{t:04}.bcl");
            b.file(s, &path, size as u64, Content::Memory(bytes::Bytes::from(data)), None);
        }
    }
    b.build()
}

fn stat_u64(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn mount_stats(m: &Mounted) -> Value {
    serde_json::from_slice(&std::fs::read(m.path(".bsmount/stats")).unwrap()).unwrap()
}

// Issue 11: a serial copy runs ahead of its opens, across folders, with no API request per
// file; sizes come from the listing (ls -l, du, find -size fetch nothing); bytes are exact.
#[test]
fn a_serial_copy_fetches_the_next_files_ahead_across_folders() {
    let net = emulator::NetProfile {
        latency: Duration::from_millis(20),
        ..Default::default()
    };
    let m = Mounted::new(Emu::with_net(folder_account(12, 5, 40_000), net));
    let files = m.path("Projects/P/Samples/S/Files");
    let ls = run("ls", &["-lR", files.to_str().unwrap()]);
    assert!(ls.status.success());
    run("du", &["-s", files.to_str().unwrap()]);
    let found = run("find", &[files.to_str().unwrap(), "-size", "+30k", "-type", "f"]).stdout;
    assert_eq!(String::from_utf8_lossy(&found).lines().count(), 60);
    let s0 = m.emu().stats();
    assert_eq!(stat_u64(&s0, "content_requests"), 0, "ls, du and find fetched content");
    // Read the files one by one in listing order, as cp -r does: from the second (the
    // first read to its end), the next ones are being fetched before they are opened.
    let mut order: Vec<PathBuf> = Vec::new();
    for d in 0..12 {
        for t in 0..5 {
            order.push(files.join(format!("C{d}.1/s_1_{t:04}.bcl")));
        }
    }
    // Listing order is by name: C0.1, C1.1, C10.1, C11.1, C2.1, …
    order.sort_by(|a, b| {
        let key = |p: &PathBuf| p.strip_prefix(&files).unwrap().to_string_lossy().into_owned();
        key(a).cmp(&key(b))
    });
    for (k, p) in order.iter().enumerate().take(4) {
        std::fs::read(p).unwrap();
        if k == 3 {
            let want = k as u64 + 3;
            wait_until("content requests ahead of the opens", Duration::from_secs(10), || {
                stat_u64(&m.emu().stats(), "content_requests") >= want
            });
        }
    }
    // cp starts over from the first file, which ends the run and would cancel fetches still
    // in flight (then fetched again): let them land first, so each file is fetched once.
    wait_until("the files fetched ahead have landed", Duration::from_secs(20), || {
        mount_stats(&m)["cache"]["inflight_bytes"].as_u64() == Some(0)
    });
    let dst = tempfile::tempdir().unwrap();
    let out = dst.path().join("copy");
    let cp = run("cp", &["-r", files.to_str().unwrap(), out.to_str().unwrap()]);
    assert!(cp.status.success(), "{}", text(&cp));
    let s1 = m.emu().stats();
    assert_eq!(
        stat_u64(&s1, "url_requests"),
        0,
        "a listed file cost an API request to open"
    );
    assert_eq!(stat_u64(&s1, "content_requests"), 60, "each file fetched once: {s1}");
    let st = mount_stats(&m);
    assert!(st["fetch"]["files_ahead"].as_u64().unwrap() >= 55, "{}", st["fetch"]);
    for (path, e) in m.manifest() {
        if let Some(rel) = path.strip_prefix("Projects/P/Samples/S/Files/") {
            let got = md5sums(&[out.join(rel)]);
            assert_eq!(got.values().next().unwrap(), e["md5"].as_str().unwrap(), "{rel}");
        }
    }
}

// Issue 19: the kernel asks for a cold file in megabytes. It gives a FUSE mount 128 KiB of
// readahead and INIT may only lower it: a copy reading 1 MiB at a time then sent 128 KiB
// requests, 26 for this 3 MiB file, each a round trip; the mount widens it in sysfs (2 MiB with
// the default cache).
#[test]
fn the_kernel_reads_a_cold_file_in_megabytes() {
    use std::os::unix::fs::MetadataExt;
    let m = Mounted::new(Emu::start(folder_account(1, 1, 3 << 20), EmulatorOptions::default()));
    let dev = std::fs::metadata(m.path("")).unwrap().dev();
    let knob = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    assert_eq!(std::fs::read_to_string(&knob).unwrap().trim(), "2048", "{knob}");
    let f = m.path("Projects/P/Samples/S/Files/C0.1/s_1_0000.bcl");
    let dd = run("dd", &[&format!("if={}", f.display()), "of=/dev/null", "bs=1M"]);
    assert!(dd.status.success(), "{}", text(&dd));
    // Every read the kernel sends meets the cache once per block it touches (a hit, or a
    // miss that starts the fetch).
    let c = &mount_stats(&m)["cache"];
    let reads = stat_u64(c, "hits") + stat_u64(c, "misses");
    assert!(reads <= 8, "the kernel asked in small pieces: {c}");
    let (_, e) = m
        .manifest()
        .into_iter()
        .find(|(p, _)| p.ends_with("s_1_0000.bcl"))
        .unwrap();
    assert_eq!(md5sums(&[f]).values().next().unwrap(), e["md5"].as_str().unwrap());
}

/// `cp` sizes its buffer from `st_blksize` and maps it afresh for every file: the mount
/// suggests 512 KiB, the smallest size whose reads the kernel still gathers into whole 1 MiB
/// blocks (at 128 KiB its readahead started at 256 KiB, and every later request straddled
/// two blocks, each answer a copy).
#[test]
fn cp_out_of_the_mount_reads_whole_blocks() {
    use std::os::unix::fs::MetadataExt;
    let m = Mounted::new(Emu::start(folder_account(1, 2, 4 << 20), EmulatorOptions::default()));
    let dir = m.path("Projects/P/Samples/S/Files/C0.1");
    let f = dir.join("s_1_0000.bcl");
    assert_eq!(std::fs::metadata(&f).unwrap().blksize(), 512 << 10);
    let dst = tempfile::tempdir().unwrap();
    let cp = run("cp", &[f.to_str().unwrap(), dst.path().to_str().unwrap()]);
    assert!(cp.status.success(), "{}", text(&cp));
    // Every read the kernel sends meets the cache once per block it touches (counted: 6 for
    // these four blocks in whole-block requests, 10 at 128 KiB; once in a CI run under the
    // other tests' load, 7: the kernel's readahead split one request differently).
    let c = &mount_stats(&m)["cache"];
    let reads = stat_u64(c, "hits") + stat_u64(c, "misses");
    assert!(reads <= 8, "the kernel's requests straddled blocks: {c}");
    assert_eq!(
        std::fs::read(dst.path().join("s_1_0000.bcl")).unwrap(),
        std::fs::read(&f).unwrap()
    );
}

// Issue 11: files opened out of order fetch only themselves.
#[test]
fn files_opened_out_of_order_fetch_nothing_ahead() {
    let m = Mounted::new(Emu::start(folder_account(4, 10, 20_000), EmulatorOptions::default()));
    let files = m.path("Projects/P/Samples/S/Files");
    let picks = [
        (2, 7),
        (0, 3),
        (3, 9),
        (1, 0),
        (2, 1),
        (0, 8),
        (3, 2),
        (1, 5),
        (0, 0),
        (2, 4),
    ];
    for (d, t) in picks {
        let p = files.join(format!("C{d}.1/s_1_{t:04}.bcl"));
        let seed = (d * 10 + t) as u8;
        let want: Vec<u8> = (0..20_000).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
        assert!(std::fs::read(&p).unwrap() == want, "{}", p.display());
    }
    assert_eq!(stat_u64(&m.emu().stats(), "content_requests"), picks.len() as u64);
    assert_eq!(mount_stats(&m)["fetch"]["files_ahead"].as_u64(), Some(0));
}

// Issue 11: a small read away from where the reader was fetches around itself, not a
// whole block; the bytes are exact, and reading on from there streams as before.
#[test]
fn small_random_reads_fetch_little() {
    use bsmount::emulator::account::{AccountBuilder, Content};
    let size = 48usize << 20;
    let data: Vec<u8> = (0..size).map(|i| ((i * 7) >> 3) as u8 ^ (i >> 16) as u8).collect();
    let mut b = AccountBuilder::stable("U");
    let p = b.project("P");
    let s = b.sample(p, "S", None);
    b.file(
        s,
        "big.bin",
        size as u64,
        Content::Memory(bytes::Bytes::from(data.clone())),
        None,
    );
    let m = Mounted::new(Emu::start(b.build(), EmulatorOptions::default()));
    let f = std::fs::File::open(m.path("Projects/P/Samples/S/Files/big.bin")).unwrap();
    let b0 = stat_u64(&m.emu().stats(), "content_bytes");
    let offsets = [5u64 << 20, 17 << 20, (31 << 20) + 12345, (40 << 20) + 999, 1 << 20];
    for off in offsets {
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, off).unwrap();
        assert!(buf[..] == data[off as usize..off as usize + 4096], "pread at {off}");
    }
    let fetched = stat_u64(&m.emu().stats(), "content_bytes") - b0;
    assert!(
        fetched <= offsets.len() as u64 * (256 << 10),
        "{fetched} bytes fetched for {} reads of 4 KiB",
        offsets.len()
    );
    // Reading on from a random position streams whole blocks again, exactly.
    let mut rest = vec![0u8; 8 << 20];
    f.read_exact_at(&mut rest, (20 << 20) + 77).unwrap();
    assert!(rest[..] == data[(20 << 20) + 77..(28 << 20) + 77]);
}

fn shared_account(files: usize, size: usize) -> (emulator::account::Account, Vec<Vec<u8>>) {
    use bsmount::emulator::account::{AccountBuilder, Content};
    let mut b = AccountBuilder::stable("U");
    let p = b.project("Shared");
    let s = b.sample(p, "S", None);
    let mut all = Vec::new();
    for k in 0..files {
        let data: Vec<u8> = (0..size)
            .map(|i| ((i * 13) >> 2) as u8 ^ (k as u8).wrapping_mul(77))
            .collect();
        b.file(
            s,
            &format!("f{k}.bin"),
            size as u64,
            Content::Memory(bytes::Bytes::from(data.clone())),
            None,
        );
        all.push(data);
    }
    (b.build(), all)
}

// Issue 14: a file read through mount A is read through mount B from the shared directory,
// with no content request; nothing is left in its temporaries.
#[test]
fn a_file_read_through_one_mount_is_read_through_another_from_the_shared_cache() {
    let (acct, data) = shared_account(1, (24 << 20) + 5);
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "--shared-cache-dir",
        cache.path().to_str().unwrap(),
        "--shared-cache-dir-size",
        "1G",
    ];
    let a = Mounted::with_args(Emu::start(acct, EmulatorOptions::default()), &args);
    let b = Mounted::at(&a.server, &a.token, &args, None);
    let rel = "Projects/Shared/Samples/S/Files/f0.bin";
    assert!(std::fs::read(a.path(rel)).unwrap() == data[0]);
    let blocks = data[0].len().div_ceil(1 << 20) as u64;
    wait_until("mount A published every block", Duration::from_secs(30), || {
        let s = &mount_stats(&a)["shared_cache"];
        s["writes"].as_u64().unwrap() + s["writes_skipped"].as_u64().unwrap() >= blocks
    });
    assert_eq!(mount_stats(&a)["shared_cache"]["writes_skipped"].as_u64(), Some(0));
    let c0 = stat_u64(&a.emu().stats(), "content_requests");
    assert!(
        std::fs::read(b.path(rel)).unwrap() == data[0],
        "mount B read other bytes"
    );
    assert_eq!(
        stat_u64(&a.emu().stats(), "content_requests"),
        c0,
        "mount B fetched from BaseSpace what mount A had shared"
    );
    assert!(mount_stats(&b)["shared_cache"]["hits"].as_u64().unwrap() >= blocks);
    assert_eq!(std::fs::read_dir(cache.path().join("tmp")).unwrap().count(), 0);
}

// Issue 14: four mounts reading the same and different files at once through a directory
// smaller than the data evict each other's blocks and still return exact bytes; one killed
// with SIGKILL mid-read leaves nothing the others accept; the directory stays near its limit.
#[test]
fn four_mounts_share_a_small_directory_exactly_while_evicting_each_other() {
    let (acct, data) = shared_account(4, 24 << 20);
    let cache = tempfile::tempdir().unwrap();
    let limit: u64 = 40 << 20;
    let args = [
        "--shared-cache-dir",
        cache.path().to_str().unwrap(),
        "--shared-cache-dir-size",
        "40M",
    ];
    let first = Mounted::with_args(Emu::start(acct, EmulatorOptions::default()), &args);
    let mut mounts = vec![first];
    for _ in 0..3 {
        let m = Mounted::at(&mounts[0].server, &mounts[0].token, &args, None);
        mounts.push(m);
    }
    // Kill one mid-read: a block it was publishing stays a temporary, never a block.
    let victim = Mounted::at(&mounts[0].server, &mounts[0].token, &args, None);
    let vpath = victim.path("Projects/Shared/Samples/S/Files/f3.bin");
    let reader = std::thread::spawn(move || {
        let _ = std::fs::read(vpath);
    });
    wait_until("the victim is reading", Duration::from_secs(10), || {
        mount_stats(&victim)["reads"]["bytes_served"].as_u64().unwrap_or(0) > 0
    });
    unsafe { libc::kill(victim.daemon_pid(), libc::SIGKILL) };
    let _ = reader.join();
    std::thread::scope(|s| {
        for m in &mounts {
            for (k, want) in data.iter().enumerate() {
                let path = m.path(&format!("Projects/Shared/Samples/S/Files/f{k}.bin"));
                s.spawn(move || {
                    let got = std::fs::read(&path).unwrap();
                    assert!(got == *want, "{} differs", path.display());
                });
            }
        }
    });
    let mut evictions = 0;
    let mut rejected = 0;
    for m in &mounts {
        let s = &mount_stats(m)["shared_cache"];
        evictions += s["evictions"].as_u64().unwrap();
        rejected += s["rejected"].as_u64().unwrap();
    }
    assert!(evictions > 0, "a directory smaller than the data must evict");
    assert_eq!(rejected, 0, "a block that was published whole failed its checks");
    let mut held = 0;
    for sub in std::fs::read_dir(cache.path().join("blocks")).unwrap().flatten() {
        for e in std::fs::read_dir(sub.path()).unwrap().flatten() {
            held += e.metadata().unwrap().len();
        }
    }
    // Each mount may write one scan interval (8 MiB) past the limit before it looks.
    assert!(
        held <= limit + 4 * (8 << 20) + (4 << 20),
        "{held} bytes for a limit of {limit}"
    );
}

/// Scripts written against BaseMount look where its documentation and users' scripts look:
/// these are the paths and formats they rely on (issue 21's list).
#[test]
fn basemount_paths_scripts_rely_on() {
    let m = Mounted::demo();
    let sh = |script: &str| -> String {
        let o = Command::new("bash")
            .args(["-c", script])
            .current_dir(&m.mp)
            .env("BASESPACE_ACCESS_TOKEN", &m.token)
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    // Appsession outputs are `Sample.<id>.<name>` (scripts glob `Sample.*`).
    let outs = sh("ls -d Projects/*/AppSessions/FASTQ*/Sample.*");
    let outs: Vec<&str> = outs.lines().collect();
    assert_eq!(outs.len(), 6, "{outs:?}");
    for o in &outs {
        let name = o.rsplit('/').next().unwrap();
        let mut parts = name.splitn(3, '.');
        assert_eq!(parts.next(), Some("Sample"));
        assert!(parts.next().unwrap().parse::<u64>().is_ok(), "{name}");
        assert!(
            Path::new(&m.mp).join(o).join("Files").is_dir(),
            "{o} leads to the sample"
        );
    }
    assert!(!sh("ls Projects/*/AppSessions/DRAGEN*/")
        .lines()
        .any(|l| l.starts_with("Samples.")));
    // A run's Logs/, and the logs of the appsession that made a run's sample.
    let run = "Runs/240116_A01234_0042_AHDEMOXX";
    let logs = sh(&format!("ls {run}/Logs/"));
    assert!(logs.lines().any(|l| l.ends_with(".log")), "{logs}");
    let parent = format!("{run}/Properties/Output.Samples/0/ParentAppSession");
    let plogs = sh(&format!("ls {parent}/Logs/"));
    for f in ["Stats.json", "RunInfo.xml"] {
        assert!(plogs.lines().any(|l| l == f), "{f} not in {plogs}");
    }
    let stats: Value = serde_json::from_str(&sh(&format!("cat {parent}/Logs/Stats.json"))).unwrap();
    assert_eq!(stats["RunId"], "240116_A01234_0042_AHDEMOXX", "{stats}");
    assert!(sh(&format!("cat {parent}/.name")).starts_with("FASTQ Generation"));
    // `.json` is BaseSpace's answer to the directory's own request, envelope and all.
    let seq = sh(&format!("jq -c .Response.SequencingStats {run}/.json"));
    assert!(seq.starts_with('{') && seq.contains("NumCyclesRead1"), "{seq}");
    assert_eq!(
        sh(&format!("jq -r .Response.HrefFiles {run}/.json")).trim(),
        format!("v1pre3/runs/{}/files", sh(&format!("cat {run}/.id")).trim())
    );
    assert_eq!(sh("jq '.Response.Items | length' Projects/.json").trim(), "2");
    // ... and `stat` of it asks BaseSpace nothing.
    let before = m.emu().stats()["api_requests"].as_u64().unwrap();
    let _ = std::fs::metadata(m.path("Runs/.json")).unwrap();
    let _ = std::fs::metadata(m.path(&format!("{P1}/Samples/.json"))).unwrap();
    assert_eq!(m.emu().stats()["api_requests"].as_u64().unwrap(), before);
    // Files.metadata/ shows the folders of Files/, dated as the files in them.
    let fm = m.path(&format!("{P2}/AppResults/NA12878 DRAGEN Germline/Files.metadata"));
    let folders: Vec<String> = std::fs::read_dir(&fm)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(folders, ["metrics"]);
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(fm.join("metrics")).unwrap().mtime() > 1_700_000_000);
    // Every `.curl` under the mount, run with the token set, answers 200.
    let curls = sh("find . -name .curl");
    let curls: Vec<&str> = curls.lines().collect();
    assert!(curls.len() >= 40, "{}", curls.len());
    for c in curls {
        let cmd = sh(&format!("cat '{c}'"));
        let code = sh(&format!("{} -o /dev/null -w '%{{http_code}}'", cmd.trim()));
        assert_eq!(code, "200", "{c}: {cmd}");
    }
}

/// BaseMount's command line, through symlinks named as its programs.
#[test]
fn basemount_and_basemount_cmd_work_as_symlinks() {
    let emu = Emu::demo();
    let dir = tempfile::tempdir().unwrap();
    for name in ["basemount", "bm-cmd"] {
        std::os::unix::fs::symlink(BIN, dir.path().join(name)).unwrap();
    }
    let mp = dir.path().join("BaseSpace");
    let run = |prog: &str, args: &[&str], cwd: &Path| -> Output {
        Command::new(dir.path().join(prog))
            .args(args)
            .current_dir(cwd)
            .env("BASESPACE_API_SERVER", &emu.base)
            .env("BASESPACE_ACCESS_TOKEN", &emu.token)
            .env("HOME", dir.path())
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // A missing mount point is created (BaseMount asks; no answer takes its default, yes).
    let o = run(
        "basemount",
        &["--threads=4", "--use-v2-api", mp.to_str().unwrap()],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("--threads=4"),
        "the ignored option is noted: {}",
        text(&o)
    );
    assert!(is_mounted(&mp));
    let project = mp.join(P2);
    let o = run("bm-cmd", &[], &project);
    assert!(o.status.success(), "{}", text(&o));
    let listed = text(&o);
    assert!(
        listed.contains("refresh") && listed.contains("move-to-trash"),
        "{listed}"
    );
    assert!(
        !listed.contains("mark-as-complete") && !listed.contains("unmount"),
        "{listed}"
    );
    let o = run("bm-cmd", &["refresh"], &project);
    assert!(o.status.success(), "{}", text(&o));
    let o = run("bm-cmd", &["--path", "Samples", "refresh"], &project);
    assert!(o.status.success() && text(&o).contains("Samples"), "{}", text(&o));
    // Scripts grep for "Error" and check the exit code.
    let o = run("bm-cmd", &["mark-as-complete"], &project);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).starts_with("Error: "), "{}", text(&o));
    let o = run("bm-cmd", &["relaunch"], &project);
    assert!(
        !o.status.success() && text(&o).contains("not supported"),
        "{}",
        text(&o)
    );
    // Run on a mounted directory, BaseMount offers to unmount; without an answer it does not.
    let o = run("basemount", &[mp.to_str().unwrap()], dir.path());
    assert!(o.status.success() && is_mounted(&mp), "{}", text(&o));
    let o = run("basemount", &["--unmount", mp.to_str().unwrap()], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(!is_mounted(&mp));
}
