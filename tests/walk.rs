//! Walks across many samples on a real mount (issue 19): listings fetched ahead of `find`
//! and of a glob, in parallel, and not for a lone `ls`; a walk that turns away cancels what
//! it no longer needs; files opened across samples arrive before their opens.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bsmount::emulator::account::{Account, AccountBuilder, Content};
use bsmount::emulator::{self, EmulatorOptions};
use common::fuse::*;
use common::Emu;
use serde_json::Value;

/// Project "Cohort" with `samples` samples `S000`, `S001`, … of `files` FASTQs of `size`
/// bytes each (distinct bytes per file).
fn cohort(samples: usize, files: usize, size: u64) -> Account {
    let mut b = AccountBuilder::stable("Walker");
    let p = b.project("Cohort");
    for i in 0..samples {
        let s = b.sample(p, &format!("S{i:03}"), None);
        for r in 1..=files {
            let seed = (i * 10 + r) as u64;
            b.file(
                s,
                &format!("S{i:03}_R{r}.fastq.gz"),
                size,
                Content::Synthetic { seed },
                None,
            );
        }
    }
    b.build()
}

fn emu(account: Account, latency_ms: u64) -> Emu {
    Emu::start(
        account,
        EmulatorOptions {
            net: emulator::NetProfile {
                latency: Duration::from_millis(latency_ms),
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

fn stat(e: &Emu, k: &str) -> u64 {
    e.stats()[k].as_u64().unwrap_or_else(|| panic!("no {k}"))
}

fn mount_stats(m: &Mounted) -> Value {
    serde_json::from_slice(&std::fs::read(m.path(".bsmount/stats")).unwrap()).unwrap()
}

fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const SAMPLES: &str = "Projects/Cohort/Samples";

#[test]
fn a_walk_lists_ahead_in_parallel_and_a_lone_ls_lists_only_itself() {
    let n = 40;
    let m = Mounted::new(emu(cohort(n, 2, 1000), 50));
    let e = m.emu();
    // A lone `ls` of the samples, then of one sample's files: one request each.
    ls(&m.path("Projects/Cohort"));
    let a0 = stat(e, "api_requests");
    assert_eq!(ls(&m.path(SAMPLES)).iter().filter(|x| !x.starts_with('.')).count(), n);
    assert_eq!(stat(e, "api_requests") - a0, 1, "ls of Samples/");
    let a1 = stat(e, "api_requests");
    ls(&m.path(&format!("{SAMPLES}/S007/Files")));
    assert_eq!(stat(e, "api_requests") - a1, 1, "ls of one sample's Files/");
    // A listing ahead is started before `opendir` answers: none was.
    assert_eq!(mount_stats(&m)["listings_ahead_started"].as_u64(), Some(0));

    // `find` over every sample: each needs its Files/ and Properties/ listed once.
    let _ = e.get_json("_emulator/stats?reset=peak");
    let a2 = stat(e, "api_requests");
    let found = run("find", &[m.path(SAMPLES).to_str().unwrap()]);
    let made = stat(e, "api_requests") - a2;
    // S007/Files is listed already; every other Files/ and every Properties/ once.
    assert_eq!(
        made,
        2 * n as u64 - 1,
        "the walk listed something twice or more than it needed"
    );
    let peak = stat(e, "api_in_flight_peak");
    assert!((4..=16 + 1).contains(&peak), "listings in flight at once: {peak}");
    let ahead = mount_stats(&m)["listings_ahead"].as_u64().unwrap();
    assert!(ahead >= made - 12, "only {ahead} of {made} listings were made ahead");
    assert_eq!(
        mount_stats(&m)["listings_ahead_used"].as_u64(),
        Some(ahead),
        "a walk to its end uses all"
    );
    assert!(String::from_utf8_lossy(&found.stdout).lines().count() > n * 10);
}

#[test]
fn a_globs_lookups_start_its_first_listings_together() {
    use bsmount::read::across::SWEEP_LISTINGS;
    let n = 40;
    let m = Mounted::new(emu(cohort(n, 2, 1000), 50));
    let e = m.emu();
    ls(&m.path(SAMPLES));
    // A shell glob `Samples/*/Files/*` looks up every sample's Files/, in order, before it
    // reads the first (as these `stat`s do): without listing them then, its first three
    // listings went one after another.
    let a0 = stat(e, "api_requests");
    for i in 0..n {
        std::fs::metadata(m.path(&format!("{SAMPLES}/S{i:03}/Files"))).unwrap();
    }
    wait_until("the listings in flight to land", Duration::from_secs(20), || {
        stat(e, "api_in_flight") == 0
    });
    assert_eq!(
        stat(e, "api_requests") - a0,
        SWEEP_LISTINGS as u64,
        "a sweep of lookups lists its first directories, and one that opens nothing costs no more"
    );
    assert!(stat(e, "api_in_flight_peak") >= 4, "listed one after another");
    // The glob itself: every Files/ listed once, the first ones from the sweep.
    let glob = run("sh", &["-c", &format!("echo {}/*/Files/*", m.path(SAMPLES).display())]);
    assert_eq!(String::from_utf8_lossy(&glob.stdout).split_whitespace().count(), 2 * n);
    assert_eq!(stat(e, "api_requests") - a0, n as u64, "a Files/ listed twice");
    let used = mount_stats(&m)["listings_ahead_used"].as_u64().unwrap();
    assert!(
        used >= SWEEP_LISTINGS as u64,
        "the glob used {used} listings made ahead"
    );
}

#[test]
fn a_walk_that_stops_costs_at_most_what_was_in_flight() {
    let n = 60;
    let m = Mounted::new(emu(cohort(n, 1, 100), 50));
    let e = m.emu();
    ls(&m.path(SAMPLES));
    let a0 = stat(e, "api_requests");
    // The first ten samples in order, then the walk stops (`find | head`, a script's loop
    // that breaks).
    let walked = 10;
    for i in 0..walked {
        ls(&m.path(&format!("{SAMPLES}/S{i:03}/Files")));
    }
    wait_until("the listings in flight to land", Duration::from_secs(20), || {
        stat(e, "api_in_flight") == 0
    });
    let s = mount_stats(&m);
    let (ahead, used) = (
        s["listings_ahead"].as_u64().unwrap(),
        s["listings_ahead_used"].as_u64().unwrap(),
    );
    let overshoot = stat(e, "api_requests") - a0 - walked;
    assert!(used >= 5, "the walk was served ahead: {used} of {walked}");
    assert_eq!(
        overshoot,
        ahead - used,
        "every request beyond the walk's own is an unused listing ahead"
    );
    assert!(
        (1..=bsmount::read::across::LISTINGS_AHEAD as u64).contains(&overshoot),
        "overshoot {overshoot}: bounded by the walk's window ahead (it grows while the walk goes on in order)"
    );
}

#[test]
fn a_walk_that_turns_away_cancels_what_it_no_longer_needs() {
    // Slow enough that nothing listed ahead can land before the walk turns away.
    let m = Mounted::new(emu(cohort(30, 1, 100), 1500));
    let e = m.emu();
    ls(&m.path(SAMPLES));
    // S002 first (so that the walk's third step is instant) and S025 (far off: not a walk),
    // then S000, S001, S002 in order: the third in order starts listings ahead, and at once
    // the walk goes elsewhere.
    for s in ["S002", "S025", "S000", "S001", "S002", "S020"] {
        ls(&m.path(&format!("{SAMPLES}/{s}/Files")));
    }
    assert!(mount_stats(&m)["listings_ahead_started"].as_u64().unwrap() >= 1);
    let started = stat(e, "api_requests");
    // What was in flight was dropped: the next sample in order is listed by a request of its
    // own (a listing still in flight would have been waited for, one landed used).
    ls(&m.path(&format!("{SAMPLES}/S003/Files")));
    assert_eq!(stat(e, "api_requests"), started + 1, "S003 was listed ahead after all");
    assert_eq!(
        mount_stats(&m)["listings_ahead"].as_u64(),
        Some(0),
        "a cancelled listing landed"
    );
}

/// Every FASTQ of the cohort, in the order `cp Samples/*/Files/*.fastq.gz` opens them.
fn fastqs(m: &Mounted, samples: usize, files: usize) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for i in 0..samples {
        for r in 1..=files {
            v.push(m.path(&format!("{SAMPLES}/S{i:03}/Files/S{i:03}_R{r}.fastq.gz")));
        }
    }
    v
}

/// `cp GLOB DST/`, as users type it.
fn cp_glob(glob: &str, dst: &Path) {
    let cp = run("sh", &["-c", &format!("cp {glob} {}", dst.display())]);
    assert!(cp.status.success(), "{}", text(&cp));
}

/// Every one of `files`, copied flat into `dst`, has the bytes the manifest lists.
fn assert_copied(m: &Mounted, files: &[PathBuf], dst: &Path) {
    let man = m.manifest();
    for p in files {
        let rel = p.strip_prefix(&m.mp).unwrap().to_string_lossy().into_owned();
        let got = md5sums(&[dst.join(p.file_name().unwrap())]);
        assert_eq!(
            got.values().next().unwrap(),
            man[&rel]["md5"].as_str().unwrap(),
            "{rel}"
        );
    }
}

#[test]
fn files_opened_across_samples_arrive_before_their_opens() {
    let (samples, files) = (12, 2);
    let m = Mounted::new(emu(cohort(samples, files, 300_000), 20));
    let e = m.emu();
    // The glob lists every sample's Files/ (ahead, after the third).
    let glob = format!("{}/*/Files/*.fastq.gz", m.path(SAMPLES).display());
    let sh = run("bash", &["-c", &format!("ls {glob} | wc -l")]);
    assert_eq!(
        String::from_utf8_lossy(&sh.stdout).trim(),
        (samples * files).to_string()
    );
    assert_eq!(stat(e, "content_requests"), 0);
    let all = fastqs(&m, samples, files);
    // Two files of S000, then S001's first: the walk across samples is under way.
    for p in &all[..3] {
        std::fs::read(p).unwrap();
    }
    wait_until("files fetched ahead", Duration::from_secs(20), || {
        mount_stats(&m)["cache"]["inflight_bytes"].as_u64() == Some(0)
            && mount_stats(&m)["fetch"]["files_ahead"].as_u64().unwrap_or(0) >= 4
    });
    let before = (
        stat(e, "content_requests"),
        mount_stats(&m)["fetch"]["files_ahead"].as_u64().unwrap(),
    );
    // The next samples' files are read with no request of their own: every request made
    // meanwhile fetches a file further ahead (each open in order slides the run on).
    for p in &all[3..8] {
        std::fs::read(p).unwrap();
    }
    let ahead = mount_stats(&m)["fetch"]["files_ahead"].as_u64().unwrap() - before.1;
    assert_eq!(
        stat(e, "content_requests") - before.0,
        ahead,
        "a file across samples was not fetched ahead"
    );
    // And a copy of all of them, as users type it, gets every byte right, each file once.
    // It starts over from the first file, which ends the run and cancels what it still
    // has in flight (fetched again then): let that land first.
    wait_until("the files fetched ahead have landed", Duration::from_secs(20), || {
        mount_stats(&m)["cache"]["inflight_bytes"].as_u64() == Some(0)
    });
    let dst = tempfile::tempdir().unwrap();
    cp_glob(&glob, dst.path());
    assert_eq!(
        stat(e, "content_requests"),
        (samples * files) as u64,
        "a file was fetched twice"
    );
    assert_copied(&m, &all, dst.path());
    // Verified and closed, their blocks left the mount's memory (the kernel keeps the
    // pages), and a second copy fetches nothing: not the files, not their starts ahead.
    assert_eq!(mount_stats(&m)["cache"]["cached_bytes"].as_u64(), Some(0));
    let again = tempfile::tempdir().unwrap();
    cp_glob(&glob, again.path());
    assert_eq!(
        stat(e, "content_requests"),
        (samples * files) as u64,
        "a second copy fetched again"
    );
    let diff = run(
        "diff",
        &["-r", &dst.path().to_string_lossy(), &again.path().to_string_lossy()],
    );
    assert!(diff.status.success(), "{}", text(&diff));
}

#[test]
fn files_read_to_their_end_are_fetched_ahead_whole() {
    // Larger than the 16 MiB start fetched ahead of a walk that reads only file heads.
    let (samples, files, size) = (3, 2, 18 << 20);
    let m = Mounted::new(emu(cohort(samples, files, size), 20));
    let e = m.emu();
    // Listed first, as the shell's glob of a `cp` does.
    let glob = format!("{}/*/Files/*.fastq.gz", m.path(SAMPLES).display());
    assert!(run("bash", &["-c", &format!("ls {glob}")]).status.success());
    let all = fastqs(&m, samples, files);
    for p in &all[..3] {
        assert_eq!(std::fs::read(p).unwrap().len() as u64, size);
    }
    wait_until("files fetched ahead", Duration::from_secs(60), || {
        let s = mount_stats(&m);
        s["cache"]["inflight_bytes"].as_u64() == Some(0) && s["fetch"]["files_ahead"].as_u64().unwrap_or(0) >= 3
    });
    let before = stat(e, "content_requests");
    for p in &all[3..] {
        assert_eq!(std::fs::read(p).unwrap().len() as u64, size);
    }
    assert_eq!(
        stat(e, "content_requests"),
        before,
        "the rest of a file read to its end was fetched only at its open"
    );
}

// A copy's files are read around the kernel's page cache from the second on (each byte
// copied into fresh pages and out again, and a second copy of everything copied left in
// memory, otherwise): none of their pages stays there; they can still be mapped; a second
// copy fetches them ahead again.
#[test]
fn a_copy_reads_its_files_around_the_page_cache() {
    let (samples, files, size) = (6, 2, 3 << 19);
    let m = Mounted::new(emu(cohort(samples, files, size), 20));
    let e = m.emu();
    let glob = format!("{}/*/Files/*.fastq.gz", m.path(SAMPLES).display());
    let dst = tempfile::tempdir().unwrap();
    cp_glob(&glob, dst.path());
    let all = fastqs(&m, samples, files);
    assert_copied(&m, &all, dst.path());
    let st = mount_stats(&m);
    assert_eq!(
        st["fetch"]["streamed_opens"].as_u64(),
        Some(all.len() as u64 - 1),
        "{st}"
    );
    // The first went through the page cache (no copy yet: read to its end, it makes the next
    // open one), the others around it.
    let resident: Vec<u64> = all
        .iter()
        .map(|p| {
            let o = run(
                "fincore",
                &["--bytes", "--noheadings", "--output", "RES", &p.to_string_lossy()],
            );
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        })
        .collect();
    // (The kernel may have reclaimed a page or two of it: a CI run saw one gone.)
    assert!(resident[0] > size / 2, "{resident:?}");
    assert!(resident[1..].iter().all(|r| *r == 0), "{resident:?}");
    // A program that maps a file it opened in such a walk reads it all the same.
    let py = "import mmap, hashlib, sys\n\
              ps = sys.argv[1:]\n\
              for p in ps[:3]:\n\
              \x20   open(p, 'rb').read()\n\
              for p in ps[3:5]:\n\
              \x20   with open(p, 'rb') as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:\n\
              \x20       print(hashlib.md5(m[:]).hexdigest())\n";
    let streamed = st["fetch"]["streamed_opens"].as_u64().unwrap();
    let mut args = vec!["-c", py];
    let paths: Vec<String> = all.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    args.extend(paths.iter().map(String::as_str));
    let out = run("python3", &args);
    let sums: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    let man = m.manifest();
    for (k, p) in all[3..5].iter().enumerate() {
        let rel = p.strip_prefix(&m.mp).unwrap().to_string_lossy().into_owned();
        assert_eq!(sums[k], man[&rel]["md5"].as_str().unwrap(), "{rel} mapped");
    }
    let st = mount_stats(&m);
    assert!(st["fetch"]["streamed_opens"].as_u64().unwrap() > streamed, "{st}");
    // A second copy: what the first read around the page cache is fetched ahead again.
    let ahead = st["fetch"]["files_ahead"].as_u64().unwrap();
    let again = tempfile::tempdir().unwrap();
    cp_glob(&glob, again.path());
    let diff = run(
        "diff",
        &["-r", &dst.path().to_string_lossy(), &again.path().to_string_lossy()],
    );
    assert!(diff.status.success(), "{}", text(&diff));
    assert!(
        mount_stats(&m)["fetch"]["files_ahead"].as_u64().unwrap() >= ahead + 6,
        "the second copy waited for each file at its open"
    );
    assert!(stat(e, "content_requests") >= 2 * all.len() as u64 - 4);
    // `tar` reads 10 KiB at a time, each piece a round trip if read around the page cache:
    // after the first file it read that way, the walk's files go through the page cache.
    let streamed = mount_stats(&m)["fetch"]["streamed_opens"].as_u64().unwrap();
    let t = tempfile::tempdir().unwrap();
    let tar = t.path().join("x.tar");
    let sh = format!(
        "tar cf {} {glob} 2>/dev/null && tar xf {} -C {} --transform 's|.*/||'",
        tar.display(),
        tar.display(),
        t.path().display()
    );
    run("sh", &["-c", &sh]);
    assert_copied(&m, &all, t.path());
    let more = mount_stats(&m)["fetch"]["streamed_opens"].as_u64().unwrap() - streamed;
    assert!(more <= 1, "tar's files were read around the page cache: {more}");
}

#[test]
fn the_v2_views_walk_ahead_too() {
    let m = Mounted::new(emu(cohort(10, 1, 50_000), 20));
    let e = m.emu();
    // BioSamples/*/Datasets/*/Files: a glob through two wildcard levels.
    let glob = format!("{}/BioSamples/*/Datasets/*/Files/*.fastq.gz", m.mp.display());
    let a0 = stat(e, "api_requests");
    let list = run("sh", &["-c", &format!("ls -d {glob}")]);
    let paths: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(paths.len(), 10, "{paths:?}");
    assert!(
        mount_stats(&m)["listings_ahead"].as_u64().unwrap() >= 5,
        "{}",
        mount_stats(&m)
    );
    // BioSamples/, each biosample's Datasets/, each dataset's Files/: nothing twice.
    assert_eq!(stat(e, "api_requests") - a0, 1 + 10 + 10);
    let before = stat(e, "content_requests");
    for p in &paths {
        std::fs::read(p).unwrap();
    }
    assert_eq!(stat(e, "content_requests") - before, 10, "each file once");
    assert!(mount_stats(&m)["fetch"]["files_ahead"].as_u64().unwrap() >= 5);
}
