//! Reliability and security through real mounts: injected faults, outages, signals, a
//! broken server, logs at trace level, config permissions, privacy and a short load run.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bsmount::emulator::source::{synthetic, SyntheticSpec};
use bsmount::emulator::{EmulatorOptions, NetProfile};
use common::fuse::*;
use common::Emu;

fn spec(s: &str) -> bsmount::emulator::Account {
    synthetic(&s.parse::<SyntheticSpec>().unwrap())
}

/// Lists a directory completely (errors surface while reading entries, not at open).
fn list(p: &Path) -> std::io::Result<Vec<String>> {
    std::fs::read_dir(p)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect()
}

#[test]
fn cp_r_under_injected_faults_is_byte_identical() {
    let net = NetProfile {
        fail_rate: 0.05,
        reset_rate: 0.03,
        throttle_rate: 0.03,
        seed: 42,
        ..Default::default()
    };
    let acct = spec("projects=2,samples=2,sample_files=2,sample_file_size=24M,appresults=1,appresult_files=2,appresult_file_size=5M,runs=1,run_files=300,run_file_size=20K");
    let emu = Emu::start(
        acct,
        EmulatorOptions {
            net,
            url_ttl: Duration::from_secs(4),
            ..Default::default()
        },
    );
    // The v1 tree only: the v2 views show the same files a second time (tests/v2.rs).
    let m = Mounted::with_args(emu, &["--no-v2"]);
    let man = m.manifest();
    let dest = tempfile::tempdir().unwrap();
    let t = Instant::now();
    for top in ["Projects", "Runs"] {
        let o = Command::new("cp")
            .args(["-r", m.path(top).to_str().unwrap(), dest.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "cp -r {top} reported an error: {}", text(&o));
    }
    let elapsed = t.elapsed();
    let copied = find_files(dest.path());
    assert_eq!(copied, man.keys().cloned().collect::<BTreeSet<_>>());
    let sums = md5sums(&copied.iter().map(|p| dest.path().join(p)).collect::<Vec<_>>());
    for (rel, f) in &man {
        assert_eq!(
            sums[&dest.path().join(rel)],
            f["md5"].as_str().unwrap(),
            "{rel} differs after faults"
        );
    }
    let st = m.emu().stats();
    let bytes: u64 = man.values().map(|f| f["size"].as_u64().unwrap()).sum();
    eprintln!(
        "fault run: {} files, {} bytes in {elapsed:?}; faults injected {}, URLs handed out {}, expired refusals {}",
        man.len(),
        bytes,
        st["faults_injected"],
        st["url_requests"],
        st["expired_refusals"]
    );
    assert!(st["faults_injected"].as_u64().unwrap() >= 5, "{st}");
}

#[test]
fn a_url_that_expires_in_the_middle_of_a_read_is_renewed() {
    let emu = Emu::start(
        spec("projects=1,samples=1,sample_files=1,sample_file_size=48M,appresults=0,runs=0"),
        EmulatorOptions {
            url_ttl: Duration::from_secs(2),
            ..Default::default()
        },
    );
    // A small budget bounds how far ahead prefetch runs, so the second half is fetched later.
    let m = Mounted::with_args(emu, &["--cache-size", "16M"]);
    let (rel, f) = m.manifest().into_iter().next().unwrap();
    let file = std::fs::File::open(m.path(&rel)).unwrap();
    let mut data = vec![0u8; 48 << 20];
    let half = 10 << 20;
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut data[..half], 0).unwrap();
    let first = m.emu().stats()["url_requests"].as_u64().unwrap();
    // Wait for the clock, not for another process: the URL handed out is now stale.
    let until = std::time::SystemTime::now() + Duration::from_millis(2500);
    wait_until("the presigned URL to expire", Duration::from_secs(5), || {
        std::time::SystemTime::now() > until
    });
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut data[half..], half as u64).unwrap();
    assert!(
        m.emu().stats()["url_requests"].as_u64().unwrap() > first,
        "the URL was renewed"
    );
    assert_eq!(format!("{:x}", md5::Md5::digest(&data)), f["md5"].as_str().unwrap());
}

use md5::Digest;

#[test]
fn a_hung_server_gives_eio_in_bounded_time_and_the_mount_recovers() {
    let m = Mounted::with_args(Emu::demo(), &["--io-timeout", "3"]);
    let ar = "Projects/NovaSeq: Germline Trio (NA12878, NA12891, NA12892)/AppResults/NA12878 DRAGEN Germline/Files";
    let listed: Vec<_> = std::fs::read_dir(m.path(ar)).unwrap().collect();
    assert!(!listed.is_empty());
    let _ = std::fs::read_dir(m.path("Runs")).unwrap().count();
    m.emu().get_raw("_emulator/outage?mode=hang", None);
    let t = Instant::now();
    let err = std::fs::read(m.path(&format!("{ar}/NA12878.bam"))).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(t.elapsed() < Duration::from_secs(12), "failed after {:?}", t.elapsed());
    // Listings already made still work; a new one fails in bounded time.
    assert!(!list(&m.path(ar)).unwrap().is_empty());
    let t = Instant::now();
    assert!(list(&m.path("Runs/240116_A01234_0042_AHDEMOXX/Files")).is_err());
    assert!(t.elapsed() < Duration::from_secs(12));
    assert!(is_mounted(&m.mp));
    // Back up: the same reads now work, with the right bytes.
    m.emu().get_raw("_emulator/outage?mode=off", None);
    let got = std::fs::read(m.path(&format!("{ar}/NA12878.bam"))).unwrap();
    let id = m.manifest()[&format!("{ar}/NA12878.bam")]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(got == m.emu().content(&id));
    assert!(!list(&m.path("Runs/240116_A01234_0042_AHDEMOXX/Files"))
        .unwrap()
        .is_empty());
}

#[test]
fn a_refused_server_gives_eio_and_the_mount_recovers_when_it_returns() {
    let acct = || spec("projects=1,samples=1,sample_files=1,sample_file_size=3M,appresults=0,runs=0");
    let emu = Emu::start(
        acct(),
        EmulatorOptions {
            token: Some("tok".into()),
            ..Default::default()
        },
    );
    let addr = emu.emu.as_ref().unwrap().addr;
    let m = Mounted::with_args(emu, &["--io-timeout", "3"]);
    let files = find_files(&m.mp.join("Projects"));
    let f = m.path(&format!("Projects/{}", files.iter().next().unwrap()));
    // Stop the server: connections are refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    m.emu().emu.as_ref().unwrap().shutdown_now();
    let t = Instant::now();
    assert_eq!(std::fs::read(&f).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(t.elapsed() < Duration::from_secs(12));
    assert!(is_mounted(&m.mp));
    // The server comes back on the same address (new URL signing key): reads work again.
    let back = rt
        .block_on(bsmount::emulator::start(
            acct(),
            EmulatorOptions {
                listen: addr,
                token: Some("tok".into()),
                ..Default::default()
            },
        ))
        .unwrap();
    let got = std::fs::read(&f).unwrap();
    assert_eq!(got.len(), 3 << 20);
    drop(back);
}

#[test]
fn sigint_during_heavy_reads_unmounts_cleanly_with_exit_0() {
    let emu = Emu::with_net(
        spec("projects=1,samples=1,sample_files=1,sample_file_size=200M,appresults=0,runs=0"),
        NetProfile {
            bandwidth: 20 << 20,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let mut daemon = Command::new(BIN)
        .args(["mount", "-f", mp.to_str().unwrap()])
        .env("BASESPACE_API_SERVER", &emu.base)
        .env("BASESPACE_ACCESS_TOKEN", &emu.token)
        .env("HOME", dir.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the foreground mount", Duration::from_secs(20), || is_mounted(&mp));
    let file = mp.join(format!(
        "Projects/{}",
        find_files(&mp.join("Projects")).into_iter().next().unwrap()
    ));
    let mut reader = Command::new("cat")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the copy to be under way", Duration::from_secs(20), || {
        emu.stats()["content_bytes"].as_u64().unwrap() > 8 << 20
    });
    // SAFETY: plain kill(2).
    unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "bsmount exited with {status}");
    assert!(!is_mounted(&mp));
    let _ = reader.wait();
}

#[test]
fn a_broken_server_breaks_only_what_it_breaks() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(broken::start());
    let m = Mounted::at(&server, "t", &["--io-timeout", "3"], None);
    let projects: BTreeSet<String> = std::fs::read_dir(m.path("Projects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with(".id.") && !matches!(n.as_str(), ".error" | ".json" | ".href" | ".curl"))
        .collect();
    // What was skipped is said in the directory's `.error`.
    let skipped = std::fs::read_to_string(m.path("Projects/.error")).unwrap();
    assert!(skipped.contains("without Id"), "{skipped}");
    let long = format!("{}~8", "x".repeat(253));
    let expected: BTreeSet<String> = [
        "Good",
        "Good (2)",
        "BrokenJSON",
        "ServerError",
        "a\u{2215}b",
        "nul\u{FFFD}byte",
        "ctl\u{1}x",
        "(dot)",
        "(dotdot)",
        long.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(projects, expected, "items without an Id are skipped, names made safe");
    // The good parts work.
    let files = m.path("Projects/Good/Samples/S/Files");
    assert_eq!(
        std::fs::read_to_string(files.join("good.txt")).unwrap(),
        "hello world\n"
    );
    // A file whose bytes disagree with its Size: EIO, never short or wrong data.
    assert_eq!(
        std::fs::read(files.join("short.bin")).unwrap_err().raw_os_error(),
        Some(libc::EIO)
    );
    // An absurd size: listed as the API says, reads fail cleanly.
    assert_eq!(std::fs::metadata(files.join("absurd.bin")).unwrap().len(), 1 << 50);
    let f = std::fs::File::open(files.join("absurd.bin")).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(
        std::os::unix::fs::FileExt::read_at(&f, &mut b, 1 << 40)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    // Malformed JSON and a persistent 5xx: the directory fails, its .error says why.
    let e = list(&m.path("Projects/BrokenJSON/Samples")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let why = std::fs::read_to_string(m.path("Projects/BrokenJSON/Samples/.error")).unwrap();
    assert!(why.contains("invalid JSON"), "{why}");
    let t = Instant::now();
    assert!(list(&m.path("Projects/ServerError/Samples")).is_err());
    assert!(t.elapsed() < Duration::from_secs(10));
    let why = std::fs::read_to_string(m.path("Projects/ServerError/Samples/.error")).unwrap();
    assert!(why.contains("BASESPACE.COMMON.BOOM"), "{why}");
    // …and the rest of the tree keeps working, with the error code in the log.
    assert_eq!(
        std::fs::read_to_string(files.join("good.txt")).unwrap(),
        "hello world\n"
    );
    assert!(
        m.log().contains("BASESPACE.COMMON.BOOM"),
        "log lacks the ErrorCode:\n{}",
        m.log()
    );
}

#[test]
fn the_token_never_reaches_logs_even_at_trace_level() {
    let emu = Emu::start(
        spec("projects=1,samples=1,sample_files=2,sample_file_size=2M,runs=1,run_files=3"),
        EmulatorOptions {
            token: Some("SUPERSECRETTOKEN123".into()),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    let log = dir.path().join("trace.log");
    let o = Command::new(BIN)
        .args(["mount", mp.to_str().unwrap(), "--log-file", log.to_str().unwrap()])
        .env("BASESPACE_API_SERVER", &emu.base)
        .env("BASESPACE_ACCESS_TOKEN", "SUPERSECRETTOKEN123")
        .env("RUST_LOG", "trace")
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let files = find_files(&mp);
    assert!(!files.is_empty());
    for f in &files {
        std::fs::read(mp.join(f)).unwrap();
    }
    let _ = std::fs::read(mp.join("Projects/nope/x"));
    // Process arguments of the daemon do not carry it either.
    let mut found_daemon = false;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            if cmd
                .windows(mp.as_os_str().len())
                .any(|w| w == mp.as_os_str().as_encoded_bytes())
            {
                found_daemon = true;
                assert!(!String::from_utf8_lossy(&cmd).contains("SUPERSECRET"));
            }
        }
    }
    assert!(found_daemon);
    run(BIN, &["unmount", mp.to_str().unwrap()]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() > 5, "trace logging produced output");
    assert!(!text.contains("SUPERSECRETTOKEN123"), "token in the log");
    for (i, _) in text.match_indices("Signature=") {
        assert!(
            text[i..].starts_with("Signature=REDACTED"),
            "unredacted signature: {}",
            &text[i..i + 40]
        );
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn config_files_readable_by_others_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let emu = Emu::start(spec("projects=1"), EmulatorOptions::default());
    let home = tempfile::tempdir().unwrap();
    let mp = home.path().join("mnt");
    std::fs::create_dir(&mp).unwrap();
    std::fs::create_dir(home.path().join(".basespace")).unwrap();
    let cfg = home.path().join(".basespace/lab.cfg");
    std::fs::write(
        &cfg,
        format!("[DEFAULT]\napiServer = {}\naccessToken = {}\n", emu.base, emu.token),
    )
    .unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mount = || {
        Command::new(BIN)
            .args(["mount", mp.to_str().unwrap(), "-c", "lab"])
            .env_remove("BASESPACE_API_SERVER")
            .env_remove("BASESPACE_ACCESS_TOKEN")
            .env("HOME", home.path())
            .output()
            .unwrap()
    };
    let o = mount();
    assert!(!o.status.success());
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    assert!(!text(&o).contains(&emu.token));
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = mount();
    assert!(o.status.success(), "{}", text(&o));
    assert!(mp.join("Projects").is_dir());
    run(BIN, &["unmount", mp.to_str().unwrap()]);
}

#[test]
fn mounts_are_private_unless_allow_other() {
    let as_nobody = |p: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "ls",
                p.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    let m = Mounted::new(Emu::start(spec("projects=1"), EmulatorOptions::default()));
    let o = as_nobody(&m.mp);
    assert!(
        !o.status.success() && text(&o).contains("Permission denied"),
        "{}",
        text(&o)
    );
    let shared = Mounted::with_args(
        Emu::start(spec("projects=1"), EmulatorOptions::default()),
        &["--allow-other"],
    );
    // The mountpoint's parent must be traversable by others for this check.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared._dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = as_nobody(&shared.mp);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Projects"));
}

#[test]
fn short_load_many_readers_and_listing_storms() {
    let emu = Emu::start(
        spec("projects=2,samples=4,sample_files=2,sample_file_size=12M,runs=1,run_files=2000,run_file_size=2K"),
        EmulatorOptions::default(),
    );
    let m = Arc::new(Mounted::with_args(emu, &["--cache-size", "64M"]));
    let man = Arc::new(m.manifest());
    let big: Vec<String> = man
        .iter()
        .filter(|(_, f)| f["size"].as_u64() == Some(12 << 20))
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(big.len(), 16);
    let pid = m.daemon_pid();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut threads = Vec::new();
    // 16 readers on different files and 8 on the same one, each re-reading until the deadline.
    for i in 0..24 {
        let (m, man) = (m.clone(), man.clone());
        let rel = if i < 16 { big[i].clone() } else { big[0].clone() };
        threads.push(std::thread::spawn(move || {
            let mut rounds = 0;
            while rounds == 0 || Instant::now() < deadline {
                let o = Command::new("md5sum").arg(m.path(&rel)).output().unwrap();
                assert!(o.status.success(), "{}", text(&o));
                assert!(
                    String::from_utf8_lossy(&o.stdout).starts_with(man[&rel]["md5"].as_str().unwrap()),
                    "{rel}"
                );
                rounds += 1;
            }
            rounds
        }));
    }
    for _ in 0..4 {
        let m = m.clone();
        threads.push(std::thread::spawn(move || {
            let mut rounds = 0;
            while rounds == 0 || Instant::now() < deadline {
                run("find", &[m.mp.to_str().unwrap(), "-type", "f"]);
                run("ls", &["-lR", m.path("Projects").to_str().unwrap()]);
                rounds += 1;
            }
            rounds
        }));
    }
    let rounds: Vec<usize> = threads
        .into_iter()
        .map(|t| t.join().expect("no reader failed"))
        .collect();
    eprintln!("load rounds per worker: {rounds:?}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("daemon peak RSS: {} MiB", hwm_kb / 1024);
    // The cache budget, plus 80 MiB for the tree, the spare blocks, and the HTTP client's
    // read buffers (up to 400 KiB per connection, kept in malloc's arenas once freed: see
    // `main`). Peaks seen: 80-102 MiB with those buffers mapped and unmapped each time,
    // 94-122 MiB kept.
    assert!(
        hwm_kb * 1024 <= (64 << 20) + (80 << 20),
        "peak RSS {hwm_kb} KiB exceeds cache budget + 80 MiB"
    );
}

/// A scripted BaseSpace that misbehaves in specific places.
mod broken {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use serde_json::{json, Value};

    fn ok(v: Value) -> Response {
        Response::new(Body::from(
            json!({"Response": v, "ResponseStatus": {}, "Notifications": []}).to_string(),
        ))
    }

    fn list(items: Vec<Value>) -> Response {
        let n = items.len();
        ok(
            json!({"Items": items, "DisplayedCount": n, "TotalCount": n, "Offset": 0, "Limit": 1024, "SortDir": "Asc", "SortBy": "Id"}),
        )
    }

    fn file(id: u64, name: &str, size: Value) -> Value {
        json!({"Id": id.to_string(), "Href": format!("v1pre3/files/{id}"), "HrefContent": format!("v1pre3/files/{id}/content"),
               "Name": name, "Path": name, "Size": size, "ContentType": "application/octet-stream",
               "DateCreated": "2020-01-01T00:00:00.0000000Z", "DateModified": "2020-01-01T00:00:00.0000000Z", "ETag": "x-1"})
    }

    fn content(id: u64) -> &'static [u8] {
        match id {
            101 => b"hello world\n",
            102 => &[7u8; 50], // listed as 100 bytes
            _ => b"0123456789",
        }
    }

    async fn handle(req: Request) -> Response {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        let base = format!("http://{host}");
        let path = req.uri().path().to_string();
        if let Some(id) = path.strip_prefix("/content/") {
            let id: u64 = id.parse().unwrap_or(0);
            let data = content(id);
            let range = req
                .headers()
                .get(header::RANGE)
                .and_then(|r| r.to_str().ok())
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.split_once('-'))
                .map(|(a, b)| (a.parse::<usize>().unwrap_or(0), b.parse::<usize>().unwrap_or(0)));
            let (a, b) = range.unwrap_or((0, data.len() - 1));
            if a >= data.len() {
                return Response::builder().status(416).body(Body::empty()).unwrap();
            }
            let b = b.min(data.len() - 1);
            return Response::builder()
                .status(206)
                .header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{}", data.len()))
                .body(Body::from(data[a..=b].to_vec()))
                .unwrap();
        }
        match path.as_str() {
            "/v1pre3/users/current" => ok(json!({"Id": "1", "Name": "Broken", "Href": "v1pre3/users/1"})),
            "/v1pre3/users/current/projects" => list(vec![
                json!({"Id": "1", "Name": "Good"}),
                json!({"Id": "2", "Name": "BrokenJSON"}),
                json!({"Id": "3", "Name": "ServerError"}),
                json!({"Name": "NoId"}),
                json!({"Id": "4", "Name": "a/b"}),
                json!({"Id": "5", "Name": "nul\u{0}byte"}),
                json!({"Id": "6", "Name": "ctl\u{1}x"}),
                json!({"Id": "7", "Name": "."}),
                json!({"Id": "10", "Name": ".."}),
                json!({"Id": "8", "Name": "x".repeat(300)}),
                json!({"Id": "9", "Name": "Good"}),
            ]),
            "/v1pre3/users/current/runs" => list(vec![]),
            "/v1pre3/projects/1/samples" => list(vec![json!({"Id": "11", "Name": "S"})]),
            "/v1pre3/projects/2/samples" => Response::new(Body::from("{\"Response\": {\"Items\": [")),
            "/v1pre3/projects/3/samples" => Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .body(Body::from(
                    json!({"ResponseStatus": {"ErrorCode": "BASESPACE.COMMON.BOOM", "Message": "boom"}}).to_string(),
                ))
                .unwrap(),
            "/v1pre3/samples/11/files" => list(vec![
                file(101, "good.txt", json!(12)),
                file(102, "short.bin", json!(100)),
                file(103, "absurd.bin", json!(1u64 << 50)),
                file(104, "negative.bin", json!(-5)),
            ]),
            p if p.starts_with("/v1pre3/files/") && p.ends_with("/content") => {
                let id = p.trim_start_matches("/v1pre3/files/").trim_end_matches("/content");
                ok(
                    json!({"HrefContent": format!("{base}/content/{id}"), "Expires": "2099-01-01T00:00:00.0000000Z", "SupportsRange": true}),
                )
            }
            p if p.ends_with("/appresults") => list(vec![]),
            "/v2/appsessions" => Response::new(Body::from(
                json!({"Items": [], "Paging": {"DisplayedCount": 0, "TotalCount": 0, "Offset": 0, "Limit": 1024}})
                    .to_string(),
            )),
            _ => Response::builder().status(404).body(Body::from("{}")).unwrap(),
        }
    }

    pub async fn start() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, axum::Router::new().fallback(handle)).await.unwrap() });
        format!("http://{addr}")
    }
}
