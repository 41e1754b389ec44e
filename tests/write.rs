//! Write mode on real mounts: `mkdir` makes a project and an appresult, `cp -r` uploads a
//! tree into its `Files/`, `bsmount complete` finishes it, and a fresh read-only mount
//! serves the same bytes; what BaseSpace cannot do fails with a clear errno; the trash;
//! write-back through the spool: a mount killed after `cp` loses nothing, a failed upload
//! is kept and named.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::Digest;

use bsmount::emulator::{self, EmulatorOptions, NetProfile};
use common::fuse::*;
use common::Emu;

const MIB: usize = 1 << 20;

/// A source tree of `n` files (one of `big` bytes, the rest small, some nested).
fn source_tree(dir: &Path, n: usize, big: usize) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut bytes = |len: usize| -> Vec<u8> {
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            v.extend_from_slice(&seed.to_le_bytes());
        }
        v.truncate(len);
        v
    };
    for i in 0..n {
        let rel = match i {
            0 => "nested/deeper/big.bin".to_string(),
            i if i % 5 == 0 => format!("nested/part_{i}.txt"),
            i if i % 7 == 0 => format!("nested/deeper/f_{i}.dat"),
            i => format!("f_{i}.txt"),
        };
        let len = if i == 0 { big } else { 1 + i * 4099 };
        out.insert(rel, bytes(len));
    }
    for (rel, b) in &out {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b).unwrap();
    }
    out
}

/// md5 of every file below `dir`, by path relative to it.
fn sums(dir: &Path) -> BTreeMap<String, String> {
    let o = run("find", &[dir.to_str().unwrap(), "-type", "f", "-print0"]);
    let files: Vec<PathBuf> = o
        .stdout
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| PathBuf::from(String::from_utf8(r.to_vec()).unwrap()))
        .collect();
    md5sums(&files)
        .into_iter()
        .map(|(p, s)| (p.strip_prefix(dir).unwrap().to_str().unwrap().to_string(), s))
        .collect()
}

fn write_mount(emu: Emu, extra: &[&str]) -> Mounted {
    let mut args = vec!["--write"];
    args.extend_from_slice(extra);
    Mounted::with_args(emu, &args)
}

/// mkdir a project and an appresult; the appresult's `Files/`.
fn new_appresult(m: &Mounted, project: &str, result: &str) -> PathBuf {
    let p = m.path(&format!("Projects/{project}"));
    std::fs::create_dir(&p).expect("mkdir of a project");
    std::fs::create_dir(p.join("AppResults").join(result)).expect("mkdir of an appresult");
    let files = p.join("AppResults").join(result).join("Files");
    assert!(files.is_dir(), "a new appresult has Files/");
    files
}

fn upload_complete_and_reread(emu: Emu, n: usize, big: usize) {
    let src = tempfile::tempdir().unwrap();
    let tree = source_tree(src.path(), n, big);
    let m = write_mount(emu, &[]);
    let files = new_appresult(&m, "Uploads", "Run 1 results");
    // The appsession BaseSpace makes for it is named as BaseMount's were.
    let sessions: Vec<String> = std::fs::read_dir(m.path("Projects/Uploads/AppSessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(
        sessions.iter().any(|s| s.starts_with("BaseSpaceCLI - ")),
        "{sessions:?}"
    );
    let cp = Command::new("cp")
        .args(["-r", &format!("{}/.", src.path().display()), files.to_str().unwrap()])
        .output()
        .unwrap();
    let ar = files.parent().unwrap().to_path_buf();
    if !cp.status.success() {
        // Under faults an upload may fail for good: then cp says so, and nothing is complete.
        eprintln!("cp failed under faults: {}", text(&cp));
        let status = std::fs::read_to_string(ar.join(".status")).unwrap();
        assert_ne!(
            status.trim(),
            "Complete",
            "cp failed ({}) yet the appresult is complete",
            text(&cp)
        );
        assert!(text(&cp).contains("Input/output error"), "{}", text(&cp));
        return;
    }
    // Sizes show at once, before any refresh.
    let big_attr = std::fs::metadata(files.join("nested/deeper/big.bin")).unwrap();
    assert_eq!(big_attr.len(), big as u64);
    let o = m.cmd(&["complete", ar.to_str().unwrap()]);
    if !o.status.success() {
        // Under faults an upload may fail for good (after the client's retries): then
        // `complete` names it and refuses, and nothing is complete.
        assert!(text(&o).contains("failed to upload"), "bsmount complete: {}", text(&o));
        let status = std::fs::read_to_string(ar.join(".status")).unwrap();
        assert_ne!(status.trim(), "Complete");
        let o = m.cmd(&["unmount", "--force", m.mp.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        return;
    }
    assert_eq!(std::fs::read_to_string(ar.join(".status")).unwrap(), "Complete\n");
    // A completed appresult takes no more files.
    let late = std::fs::write(files.join("late.txt"), b"late\n");
    assert_eq!(late.unwrap_err().raw_os_error(), Some(libc::EACCES));
    let o = m.unmount();
    assert!(o.status.success(), "{}", text(&o));
    // A fresh read-only mount: the same bytes, and the emulator's manifest agrees.
    let fresh = Mounted::at(&m.server, &m.token, &[], None);
    let dir = fresh.path("Projects/Uploads/AppResults/Run 1 results/Files");
    let want: BTreeMap<String, String> = tree
        .iter()
        .map(|(p, b)| (p.clone(), hex::encode(md5::Md5::digest(b))))
        .collect();
    assert_eq!(sums(&dir), want, "the uploaded files read back byte for byte");
    let man = m.manifest();
    for (rel, sum) in &want {
        let key = format!("Projects/Uploads/AppResults/Run 1 results/Files/{rel}");
        assert_eq!(
            man.get(&key).and_then(|f| f["md5"].as_str()),
            Some(sum.as_str()),
            "{key}"
        );
    }
    // A multipart upload carries S3's multipart ETag (8 MiB parts).
    let json = std::fs::read_to_string(
        fresh.path("Projects/Uploads/AppResults/Run 1 results/Files.metadata/nested/deeper/big.bin/.json"),
    )
    .unwrap();
    assert!(json.contains(&format!("-{}\"", big.div_ceil(8 * MIB))), "{json}");
}

#[test]
fn mkdir_cp_r_complete_and_a_fresh_mount_reads_the_same_bytes() {
    upload_complete_and_reread(Emu::demo(), 50, 300 * MIB);
}

#[test]
fn uploads_under_faults_are_byte_identical_or_fail_loudly() {
    let emu = Emu::start(
        emulator::demo::account(),
        EmulatorOptions {
            net: NetProfile {
                fail_rate: 0.05,
                reset_rate: 0.03,
                seed: 7,
                ..NetProfile::default()
            },
            ..Default::default()
        },
    );
    upload_complete_and_reread(emu, 50, 40 * MIB);
}

#[test]
fn what_basespace_cannot_do_fails_clearly_and_publishes_nothing() {
    // Write-through: the errors come at the call that caused them (a spooled file takes
    // random writes; its errors come at upload, see the spool tests).
    let m = write_mount(Emu::demo(), &["--write-through"]);
    let files = new_appresult(&m, "Refusals", "R");
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    // Samples and runs take no uploads; the reason is in the directory's .error.
    let sample = m.path("Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)/Samples/NA12878/Files");
    assert_eq!(errno(std::fs::write(sample.join("x.txt"), b"x")), Some(libc::EACCES));
    assert!(std::fs::read_to_string(sample.join(".error"))
        .unwrap()
        .contains("sample"));
    // A random write: EINVAL, as mountpoint-s3 answers; nothing is published.
    let o = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", files.join("holes.bin").display()),
            "bs=4096",
            "seek=3",
            "count=1",
            "conv=notrunc",
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Invalid argument"),
        "{}",
        text(&o)
    );
    // An empty file: BaseSpace refuses zero-byte files; it does not appear, and .error says why.
    drop(std::fs::File::create(files.join("empty.txt")).unwrap());
    wait_until("the empty file to go", std::time::Duration::from_secs(10), || {
        !files.join("empty.txt").exists()
    });
    assert!(std::fs::read_to_string(files.join(".error"))
        .unwrap()
        .contains("zero-byte"));
    // A good one, then an overwrite (EPERM), a rename (ENOSYS), an rm (EPERM).
    std::fs::write(files.join("ok.txt"), b"fine\n").unwrap();
    assert_eq!(std::fs::read(files.join("ok.txt")).unwrap(), b"fine\n");
    assert_eq!(
        errno(std::fs::write(files.join("ok.txt"), b"again\n")),
        Some(libc::EPERM)
    );
    assert_eq!(
        errno(std::fs::rename(files.join("ok.txt"), files.join("moved.txt"))),
        Some(libc::ENOSYS)
    );
    assert_eq!(errno(std::fs::remove_file(files.join("ok.txt"))), Some(libc::EPERM));
    // A writer killed mid-upload publishes nothing (its descriptors close as it dies).
    let mut child = Command::new("sh")
        .args(["-c", &format!("cat > '{}'", files.join("killed.bin").display())])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(&vec![7u8; 3 * MIB]).unwrap();
    wait_until(
        "the upload to show its bytes",
        std::time::Duration::from_secs(10),
        || std::fs::metadata(files.join("killed.bin")).is_ok_and(|a| a.len() == 3 * MIB as u64),
    );
    Command::new("pkill")
        .args(["-KILL", "-P", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    wait_until("the killed upload to go", std::time::Duration::from_secs(10), || {
        !files.join("killed.bin").exists()
    });
    let names: Vec<String> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names, ["ok.txt"], "only the good upload is there");
    // BaseSpace agrees: one file in the appresult.
    let man = m.manifest();
    let ours: Vec<&String> = man.keys().filter(|k| k.starts_with("Projects/Refusals/")).collect();
    assert_eq!(ours, ["Projects/Refusals/AppResults/R/Files/ok.txt"]);
}

#[test]
fn read_only_unless_asked_and_write_needs_the_create_scope() {
    let m = Mounted::demo();
    let e = std::fs::create_dir(m.path("Projects/New")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    drop(m);
    let emu = Emu::start(
        emulator::demo::account(),
        EmulatorOptions {
            scopes: Some(vec!["BROWSE GLOBAL".into(), "READ GLOBAL".into()]),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let o = bsmount(&emu, &["mount", mp.to_str().unwrap(), "--write"], dir.path());
    assert!(!o.status.success(), "mounted --write with a read-only token");
    let t = text(&o);
    assert!(t.contains("CREATE GLOBAL") && t.contains("bsmount auth --force"), "{t}");
    assert!(!is_mounted(&mp));
}

#[test]
fn the_trash_needs_allow_delete_and_restores() {
    let m = write_mount(Emu::demo(), &[]);
    let files = new_appresult(&m, "Trash Me", "Old results");
    std::fs::write(files.join("a.txt"), b"a\n").unwrap();
    let results = m.path("Projects/Trash Me/AppResults");
    let e = std::fs::remove_dir(results.join("Old results")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "no --allow-delete");
    assert!(results.join("Old results").is_dir());
    m.unmount();
    let m2 = Mounted::at(&m.server, &m.token, &["--write", "--allow-delete"], None);
    let results = m2.path("Projects/Trash Me/AppResults");
    std::fs::remove_dir(results.join("Old results")).expect("rmdir moves to the trash");
    assert!(!results.join("Old results").exists());
    let trash = m2.path(".Trash");
    let items: Vec<String> = std::fs::read_dir(&trash)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(items, ["Old results"]);
    assert_eq!(
        std::fs::read_to_string(trash.join("Old results/TrashItemType")).unwrap(),
        "DeletedAppResult (FILEDATA+METADATA)\n"
    );
    let o = m2.cmd(&["restore", trash.join("Old results").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = m2.cmd(&["refresh", results.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(results.join("Old results/Files/a.txt")).unwrap(), b"a\n");
    // The explicit command works on a whole project too, and nothing is ever purged.
    let o = m2.cmd(&["trash", m2.path("Projects/Trash Me").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    // (The kernel may keep the name for its 1 s entry cache.)
    wait_until(
        "the project to leave Projects/",
        std::time::Duration::from_secs(5),
        || !m2.path("Projects/Trash Me").exists(),
    );
    assert!(m2.path(".Trash/Trash Me").is_dir());
}

#[test]
fn a_mount_killed_mid_upload_leaves_no_file_behind() {
    let m = write_mount(Emu::demo(), &["--write-through"]);
    let files = new_appresult(&m, "Crash", "R");
    // A writer that has sent several parts and keeps the file open.
    let mut child = Command::new("sh")
        .args(["-c", &format!("cat > '{}'", files.join("half.bin").display())])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.as_mut().unwrap().write_all(&vec![3u8; 20 * MIB]).unwrap();
    wait_until("the parts to go out", std::time::Duration::from_secs(20), || {
        m.emu().stats()["api_requests"].as_u64().unwrap_or(0) > 0
            && std::fs::metadata(files.join("half.bin")).is_ok_and(|a| a.len() == 20 * MIB as u64)
    });
    // The mount dies (kill -9): nothing completes the upload.
    unsafe { libc::kill(m.daemon_pid(), libc::SIGKILL) };
    drop(child.stdin.take());
    let _ = child.wait();
    let o = m.unmount();
    assert!(o.status.success(), "unmount clears the dead mount: {}", text(&o));
    let fresh = Mounted::at(&m.server, &m.token, &[], None);
    let f = fresh.path("Projects/Crash/AppResults/R/Files");
    assert_eq!(
        std::fs::read_dir(&f).unwrap().count(),
        0,
        "no file, complete or partial"
    );
    assert!(!m.manifest().keys().any(|k| k.starts_with("Projects/Crash/")));
}

// Issue 20: a mount killed right after `cp -r` returned (uploads still spooled) loses
// nothing: the next mount of the account resumes them, `bsmount complete` waits for them,
// and nothing is uploaded twice.
#[test]
fn a_mount_killed_after_cp_resumes_its_uploads_at_the_next_mount_once_each() {
    let emu = Emu::demo();
    let spool = tempfile::tempdir().unwrap();
    let sp = spool.path().to_str().unwrap().to_string();
    let m = write_mount(emu, &["--spool-dir", &sp]);
    let files = new_appresult(&m, "Spooled", "R");
    let src = tempfile::tempdir().unwrap();
    let tree = source_tree(src.path(), 40, 9 * MIB);
    let cp = Command::new("cp")
        .args(["-r", &format!("{}/.", src.path().display()), files.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", text(&cp));
    // `close` returned before the uploads (they start a second later): the bytes are
    // in the spool, and the status says they are pending.
    let st = m.cmd(&["status", m.mp.to_str().unwrap()]);
    assert!(text(&st).contains("uploads"), "{}", text(&st));
    unsafe { libc::kill(m.daemon_pid(), libc::SIGKILL) };
    let o = m.cmd(&["unmount", m.mp.to_str().unwrap()]);
    assert!(o.status.success(), "unmount clears the dead mount: {}", text(&o));
    // The next mount of the account adopts the spool and uploads what it holds.
    let m2 = Mounted::at(&m.server, &m.token, &["--write", "--spool-dir", &sp], None);
    let ar = m2.path("Projects/Spooled/AppResults/R");
    let o = m2.cmd(&["complete", ar.to_str().unwrap()]);
    assert!(o.status.success(), "bsmount complete: {}", text(&o));
    assert_eq!(std::fs::read_to_string(ar.join(".status")).unwrap(), "Complete\n");
    let o = m2.unmount();
    assert!(o.status.success(), "{}", text(&o));
    let fresh = Mounted::at(&m.server, &m.token, &[], None);
    let dir = fresh.path("Projects/Spooled/AppResults/R/Files");
    let want: BTreeMap<String, String> = tree
        .iter()
        .map(|(p, b)| (p.clone(), hex::encode(md5::Md5::digest(b))))
        .collect();
    assert_eq!(sums(&dir), want, "every file, byte for byte");
    // Once each: BaseSpace lists as many files as were written.
    let man = m.manifest();
    let ours = man.keys().filter(|k| k.starts_with("Projects/Spooled/")).count();
    assert_eq!(ours, tree.len(), "nothing uploaded twice");
    // Nothing is left in the spool: the dead mount's directory was adopted, and a mount that
    // ends with nothing to upload removes its own.
    wait_until("the spool to be empty", std::time::Duration::from_secs(10), || {
        walkdir(spool.path()).is_empty()
    });
}

// Issue 20: uploads a killed mount left are shown by the next mount where they go, pending
// and readable from the spool, until uploaded; `sync` waits for them.
#[test]
fn a_new_mount_shows_the_uploads_it_resumed_and_reads_them() {
    // Slow enough that the resumed uploads are still under way when the folder is read.
    let net = NetProfile {
        latency: std::time::Duration::from_millis(500),
        ..Default::default()
    };
    let spool = tempfile::tempdir().unwrap();
    let sp = spool.path().to_str().unwrap().to_string();
    let m = write_mount(Emu::with_net(emulator::demo::account(), net), &["--spool-dir", &sp]);
    let files = new_appresult(&m, "Resumed", "R");
    let src = tempfile::tempdir().unwrap();
    let tree = source_tree(src.path(), 40, MIB);
    let cp = Command::new("cp")
        .args(["-r", &format!("{}/.", src.path().display()), files.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(cp.status.success(), "{}", text(&cp));
    unsafe { libc::kill(m.daemon_pid(), libc::SIGKILL) };
    let o = m.cmd(&["unmount", m.mp.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let m2 = Mounted::at(&m.server, &m.token, &["--write", "--spool-dir", &sp], None);
    let files = m2.path("Projects/Resumed/AppResults/R/Files");
    let want: BTreeMap<String, String> = tree
        .iter()
        .map(|(p, b)| (p.clone(), hex::encode(md5::Md5::digest(b))))
        .collect();
    let prefix = "Projects/Resumed/AppResults/R/Files/";
    let uploaded = |m: &Mounted| m.manifest().keys().filter(|k| k.starts_with(prefix)).count();
    let listed: std::collections::BTreeSet<String> = walkdir(&files)
        .iter()
        .map(|p| p.strip_prefix(&files).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, want.keys().cloned().collect(), "every file shown");
    // Checked after the listing: some were shown while still uploading.
    assert!(
        uploaded(&m) < tree.len(),
        "all uploaded before the folder was read: the test shows nothing"
    );
    assert_eq!(sums(&files), want, "byte for byte");
    let all: Vec<String> = want
        .keys()
        .map(|p| files.join(p).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["sync"];
    args.extend(all.iter().map(String::as_str));
    run("sync", &args[1..]);
    assert_eq!(uploaded(&m), tree.len(), "sync returned before the uploads");
    let ar = m2.path("Projects/Resumed/AppResults/R");
    let o = m2.cmd(&["complete", ar.to_str().unwrap()]);
    assert!(o.status.success(), "bsmount complete: {}", text(&o));
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

// Issue 20: an upload that fails for good is never completed and never lost: `.error`,
// `status`, `complete` (which refuses, naming it) and `unmount` (which refuses) say so;
// the spool keeps it until `bsmount uploads discard`.
#[test]
fn a_failed_upload_is_kept_named_and_blocks_complete_and_unmount_until_discarded() {
    let emu = Emu::demo();
    let m = write_mount(emu, &[]);
    let files = new_appresult(&m, "Clash", "R");
    std::fs::write(files.join("ok.txt"), b"ok\n").unwrap();
    // Another client puts `dup.txt` into the appresult; this mount's listing (made for
    // ok.txt, trusted for the metadata TTL) does not show it yet, so its own `dup.txt` is
    // spooled, and BaseSpace refuses that upload (409: the name exists).
    let other = Mounted::at(&m.server, &m.token, &["--write", "--write-through"], None);
    std::fs::write(
        other.path("Projects/Clash/AppResults/R/Files/dup.txt"),
        b"from another client\n",
    )
    .unwrap();
    std::fs::write(files.join("dup.txt"), b"from this mount\n").unwrap();
    // `sync FILE` waits for the upload and reports its failure.
    let o = Command::new("sync").arg(files.join("dup.txt")).output().unwrap();
    assert!(
        !o.status.success() && text(&o).contains("Input/output error"),
        "{}",
        text(&o)
    );
    let ar = m.path("Projects/Clash/AppResults/R");
    let o = m.cmd(&["complete", ar.to_str().unwrap()]);
    assert!(!o.status.success(), "completed with a failed upload");
    assert!(text(&o).contains("dup.txt"), "{}", text(&o));
    assert_ne!(std::fs::read_to_string(ar.join(".status")).unwrap().trim(), "Complete");
    let st = text(&m.cmd(&["status", m.mp.to_str().unwrap()]));
    assert!(st.contains("1 failed") && st.contains("dup.txt"), "{st}");
    assert!(std::fs::read_to_string(files.join(".error"))
        .unwrap()
        .contains("dup.txt"));
    let o = m.unmount();
    assert!(!o.status.success(), "unmounted with a failed upload");
    assert!(text(&o).contains("uploads retry|discard"), "{}", text(&o));
    // Discarded: the unmount goes through, and BaseSpace has the other client's file.
    let o = m.cmd(&["uploads", "discard", m.mp.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let o = m.unmount();
    assert!(o.status.success(), "{}", text(&o));
    let man = m.manifest();
    assert!(man.contains_key("Projects/Clash/AppResults/R/Files/ok.txt"));
    assert_eq!(
        std::fs::read(other.path("Projects/Clash/AppResults/R/Files/dup.txt")).unwrap(),
        b"from another client\n"
    );
}

// Issue 20: a file just copied in reads back at once, from its spooled copy (`cmp`,
// `md5sum` or `diff -r` right after `cp`), and `sync FILE` (fsync) returns once BaseSpace
// has it.
#[test]
fn a_copied_file_reads_back_while_it_uploads_and_sync_waits_for_its_upload() {
    // Slow enough that the upload (a second after close, then three requests) is still
    // under way when the copy is read back.
    let net = NetProfile {
        latency: std::time::Duration::from_millis(400),
        ..Default::default()
    };
    let m = write_mount(Emu::with_net(emulator::demo::account(), net), &[]);
    let files = new_appresult(&m, "Back", "R");
    let src = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..3 * MIB + 17).map(|i| (i * 7 % 251) as u8).collect();
    let a = src.path().join("a.bin");
    std::fs::write(&a, &data).unwrap();
    let dst = files.join("a.bin");
    assert!(run("cp", &[a.to_str().unwrap(), dst.to_str().unwrap()])
        .status
        .success());
    run("cmp", &[a.to_str().unwrap(), dst.to_str().unwrap()]);
    // A reader that stays open across the upload keeps reading these bytes, even after
    // the spooled copy is done with and the next file is spooled.
    let held = std::fs::File::open(&dst).unwrap();
    assert_eq!(
        m.emu().stats()["content_requests"].as_u64(),
        Some(0),
        "read back from BaseSpace, not from the spooled copy"
    );
    let key = "Projects/Back/AppResults/R/Files/a.bin";
    assert!(!m.manifest().contains_key(key), "uploaded before sync was asked");
    run("sync", &[dst.to_str().unwrap()]);
    let want = hex::encode(md5::Md5::digest(&data));
    assert_eq!(
        m.manifest().get(key).and_then(|f| f["md5"].as_str()),
        Some(want.as_str()),
        "sync returned before the upload"
    );
    // Published: read again, now from BaseSpace.
    run("cmp", &[a.to_str().unwrap(), dst.to_str().unwrap()]);
    std::fs::write(files.join("b.bin"), vec![9u8; MIB]).unwrap();
    let mut back = Vec::new();
    use std::io::Read;
    (&held).read_to_end(&mut back).unwrap();
    assert!(back == data, "a held reader read other bytes");
}

// Issue 20: a full spool fails the write with ENOSPC at once; nothing is published, and the
// directory's `.error` says why (a file larger than the free spool space needs
// `--write-through`, which streams it).
#[test]
fn a_full_spool_fails_the_write_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs", spool.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _tmpfs = Unmount(spool.clone());
    let m = write_mount(Emu::demo(), &["--spool-dir", spool.to_str().unwrap()]);
    let files = new_appresult(&m, "Full", "R");
    let e = std::fs::write(files.join("big.bin"), vec![5u8; 4 * MIB]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // (The kernel may keep the name for its 1 s entry cache.)
    wait_until("the failed file to go", std::time::Duration::from_secs(5), || {
        !files.join("big.bin").exists()
    });
    assert!(std::fs::read_to_string(files.join(".error"))
        .unwrap()
        .contains("big.bin"));
    // What fits still goes.
    std::fs::write(files.join("small.txt"), b"small\n").unwrap();
    let o = m.cmd(&["complete", files.parent().unwrap().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let man = m.manifest();
    let ours: Vec<&String> = man.keys().filter(|k| k.starts_with("Projects/Full/")).collect();
    assert_eq!(ours, ["Projects/Full/AppResults/R/Files/small.txt"]);
}
