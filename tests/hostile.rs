//! What a hostile or broken server can do to the mount, on a real mount against a small
//! scripted server on 127.0.0.1 (`common::hostile`): one test per failure found by
//! attacking the mount (issue "Never escape, never unbounded, never wrong bytes").

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use common::fuse::{text, Mounted};
use common::hostile::*;
use serde_json::json;

fn mount(h: &Hostile, extra: &[&str]) -> Mounted {
    Mounted::at(&h.base, TOKEN, extra, None)
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

fn names(m: &Mounted, rel: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m.path(rel))
        .unwrap_or_else(|e| panic!("ls {rel}: {e}"))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// One project "P" (Id 1); everything else from `more`.
fn project_server(more: impl Fn(&Req, &str) -> Option<Response> + Send + Sync + 'static) -> Hostile {
    Hostile::start(move |r, base| match r.path.as_str() {
        "/v1pre3/users/current/projects" => Some(v1_page(vec![entity("1", "P")], 1, 0)),
        _ => more(r, base),
    })
}

// 1. A link target built from a server string escaped the mount.
#[test]
fn an_appsession_output_link_never_leaves_the_mount() {
    let h = project_server(|r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("100", "S")], 1, 0)),
        "/v2/appsessions" => Some(v2_page(vec![entity("7", "A")])),
        "/v2/datasets" => {
            let mut good = entity("ds.1", "good");
            good["V1pre3Id"] = json!("sample.100");
            let mut evil = entity("ds.2", "evil");
            evil["V1pre3Id"] = json!("sample.100/../../../../../../../../../../etc");
            Some(v2_page(vec![good, evil]))
        }
        _ => None,
    });
    let m = mount(&h, &[]);
    let dir = "Projects/P/AppSessions/A";
    let n = names(&m, dir);
    assert!(n.contains(&"Sample.100.good".to_string()), "{n:?}");
    assert!(!n.iter().any(|x| x.contains("evil")), "{n:?}");
    for e in std::fs::read_dir(m.path(dir)).unwrap() {
        let p = e.unwrap().path();
        if let Ok(real) = std::fs::canonicalize(&p) {
            assert!(
                real.starts_with(&m.mp),
                "{} resolves to {}",
                p.display(),
                real.display()
            );
        }
    }
    let o = sh(&format!(
        "tar -chf - -C '{}' . 2>/dev/null | tar -tf - | grep -c passwd",
        m.path(dir).display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "host files read through the mount"
    );
    assert!(std::fs::read_to_string(m.path(&format!("{dir}/.error")))
        .unwrap()
        .contains("V1pre3Id"));
}

// 2. Other bytes of the right length were served with exit status 0.
#[test]
fn wrong_bytes_fail_the_read_small_and_multipart_and_stay_failed() {
    let small: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let big: Vec<u8> = (0..(24u32 << 20) + 5).map(|i| (i % 253) as u8).collect();
    let (se, be) = (md5_hex(&small), multipart_etag(&big, 8 << 20));
    let (se2, be2) = (se.clone(), be.clone());
    let h = project_server(move |r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => Some(v1_page(
            vec![
                file("10", "small.bin", 5000, &se2),
                file("11", "big.bin", big.len() as u64, &be2),
            ],
            2,
            0,
        )),
        p if p.ends_with("/content") => Some(content_meta(base, p.split('/').nth(3).unwrap())),
        // Other bytes of the right length, headers as the real object's.
        "/content/10" => Some(serve(r, &vec![b'Z'; 5000], &se2)),
        "/content/11" => Some(serve(r, &vec![b'Z'; big.len()], &be2)),
        _ => None,
    });
    let m = mount(&h, &[]);
    let f = m.path("Projects/P/Samples/S/Files");
    for name in ["small.bin", "big.bin", "small.bin", "big.bin"] {
        let o = Command::new("cat").arg(f.join(name)).output().unwrap();
        assert!(!o.status.success(), "cat {name} succeeded with wrong bytes");
    }
    let o = Command::new("md5sum").arg(f.join("big.bin")).output().unwrap();
    assert!(
        !o.status.success(),
        "md5sum of a multipart file with wrong bytes succeeded"
    );
}

// 2 (continued). The same attack through the presigned URLs a file listing resolves
// (`filehrefcontentresolution=true`): the mount opens such files with no further request,
// and must still refuse other bytes.
#[test]
fn wrong_bytes_behind_urls_resolved_in_listings_fail_the_read() {
    let small: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let big: Vec<u8> = (0..(24u32 << 20) + 5).map(|i| (i % 253) as u8).collect();
    let (se, be) = (md5_hex(&small), multipart_etag(&big, 8 << 20));
    let (se2, be2) = (se.clone(), be.clone());
    let meta_calls = Arc::new(AtomicU64::new(0));
    let calls = meta_calls.clone();
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 7 * 24 * 3600;
    let h = project_server(move |r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => {
            let resolved = |mut f: serde_json::Value, id: &str| {
                f["HrefContent"] = json!(format!("{base}/content/{id}?Expires={expires}&Signature=s"));
                f
            };
            Some(v1_page(
                vec![
                    resolved(file("10", "small.bin", 5000, &se2), "10"),
                    resolved(file("11", "big.bin", big.len() as u64, &be2), "11"),
                ],
                2,
                0,
            ))
        }
        p if p.ends_with("/content") => {
            calls.fetch_add(1, Ordering::Relaxed);
            Some(content_meta(base, p.split('/').nth(3).unwrap()))
        }
        "/content/10" => Some(serve(r, &vec![b'Z'; 5000], &se2)),
        "/content/11" => Some(serve(r, &vec![b'Z'; big.len()], &be2)),
        _ => None,
    });
    let m = mount(&h, &[]);
    let f = m.path("Projects/P/Samples/S/Files");
    for name in ["small.bin", "big.bin", "big.bin"] {
        let o = Command::new("cat").arg(f.join(name)).output().unwrap();
        assert!(!o.status.success(), "cat {name} succeeded with wrong bytes");
    }
    assert_eq!(
        meta_calls.load(Ordering::Relaxed),
        0,
        "the listing's URLs were not the ones used"
    );
}

// 2 (continued). A file replaced on the server while a reader holds it open.
#[test]
fn a_file_replaced_under_an_open_reader_gives_the_old_bytes_or_an_error() {
    use bsmount::emulator::account::{AccountBuilder, Content};
    let build = |seed: u8| {
        let mut b = AccountBuilder::stable("U");
        let p = b.project("P");
        let s = b.sample(p, "S", None);
        let d: Vec<u8> = (0..(20u32 << 20)).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
        b.file(s, "mid.bin", d.len() as u64, Content::Memory(Bytes::from(d)), None);
        b.build()
    };
    let old: Vec<u8> = (0..(20u32 << 20)).map(|i| (i as u8).wrapping_mul(7) ^ 1).collect();
    let emu = common::Emu::start(build(1), Default::default());
    let m = Mounted::with_args(emu, &["--cache-size", "4M"]);
    let path = m.path("Projects/P/Samples/S/Files/mid.bin");
    let mut f = std::fs::File::open(&path).unwrap();
    let mut first = vec![0u8; 1 << 20];
    std::io::Read::read_exact(&mut f, &mut first).unwrap();
    m.emu().emu.as_ref().unwrap().replace_account(build(2));
    let o = m.cmd(&["refresh", m.path("Projects/P/Samples/S").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut rest = Vec::new();
    match std::io::Read::read_to_end(&mut f, &mut rest) {
        Ok(_) => {
            first.extend(rest);
            assert!(first == old, "a mix of two versions was read");
        }
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}"),
    }
}

// 3. Two entities with the same Id shared their folders.
#[test]
fn a_sample_and_a_run_with_one_id_keep_their_own_folders() {
    let h = project_server(|r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("100", "S")], 1, 0)),
        "/v1pre3/users/current/runs" => Some(v1_page(vec![entity("100", "R")], 1, 0)),
        "/v1pre3/samples/100/files" => Some(v1_page(vec![file("1", "Data/sample.txt", 1, "e1")], 1, 0)),
        "/v1pre3/runs/100/files" => Some(v1_page(vec![file("2", "Data/run.bcl", 1, "e2")], 1, 0)),
        _ => None,
    });
    let m = mount(&h, &[]);
    assert_eq!(names(&m, "Runs/R/Files/Data"), ["run.bcl"]);
    assert_eq!(names(&m, "Projects/P/Samples/S/Files/Data"), ["sample.txt"]);
    assert_eq!(names(&m, "Runs/R/Files/Data"), ["run.bcl"]);
}

// 4. A path 4,000 levels deep overflowed the daemon's stack.
#[test]
fn a_path_thousands_of_levels_deep_does_not_kill_the_mount() {
    let deep = "d/".repeat(4000) + "leaf.txt";
    let h = Hostile::start(move |r, _| match r.path.as_str() {
        "/v1pre3/users/current/runs" => Some(v1_page(vec![entity("5", "R")], 1, 0)),
        "/v1pre3/runs/5/files" => Some(v1_page(
            vec![file("1", &deep, 1, "e"), file("2", "top.txt", 1, "e")],
            2,
            0,
        )),
        _ => None,
    });
    let m = mount(&h, &[]);
    let o = sh(&format!("find '{}' | wc -l", m.path("Runs/R/Files").display()));
    let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert!(n >= 4002, "find saw {n} entries");
    assert_eq!(names(&m, "Runs/R/Files"), ["d", "top.txt"], "the mount is still alive");
}

// 5. A lying TotalCount cost gigabytes and never ended.
#[test]
fn a_lying_total_count_costs_bounded_memory_and_time() {
    let pages = Arc::new(AtomicU64::new(0));
    let p2 = pages.clone();
    let h = project_server(move |r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => {
            let n = p2.fetch_add(1, Ordering::Relaxed);
            let (off, lim) = (r.offset(), r.limit().min(1000));
            let items = if n >= 50 {
                vec![]
            } else {
                (off..off + lim)
                    .map(|i| {
                        file(
                            &(9_000_000 + i).to_string(),
                            &format!("f{i:09}"),
                            6,
                            &format!("{i:032x}"),
                        )
                    })
                    .collect()
            };
            Some(v1_page(items, 1_000_000_000_000, off))
        }
        _ => None,
    });
    let m = mount(&h, &["--io-timeout", "20"]);
    let t = Instant::now();
    let o = Command::new("ls")
        .arg(m.path("Projects/P/Samples/S/Files"))
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "ls took {took:?}");
    assert!(o.status.success(), "{}", text(&o));
    let listed = String::from_utf8_lossy(&o.stdout).lines().count();
    assert!((1000..=50_000).contains(&listed), "{listed} entries");
    let peak = peak_rss_mib(m.daemon_pid());
    assert!(peak < 256, "peak RSS {peak} MiB");
    assert!(
        pages.load(Ordering::Relaxed) < 100,
        "{} pages requested",
        pages.load(Ordering::Relaxed)
    );
}

// 6. One bad Id hid a whole directory, and went unescaped into a URL.
#[test]
fn an_unusable_id_is_skipped_and_never_reaches_a_url() {
    let h = project_server(|r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(
            vec![
                entity("../../../../etc", "evil"),
                entity("5", "good"),
                entity("6", "fine"),
            ],
            3,
            0,
        )),
        "/v1pre3/samples/5/files" => Some(v1_page(vec![file("1", "a.txt", 1, "e")], 1, 0)),
        _ => None,
    });
    let m = mount(&h, &[]);
    let n = names(&m, "Projects/P/Samples");
    assert!(n.contains(&"good".into()) && n.contains(&"fine".into()), "{n:?}");
    assert!(!n.contains(&"evil".into()), "{n:?}");
    assert_eq!(names(&m, "Projects/P/Samples/good/Files"), ["a.txt"]);
    let err = std::fs::read_to_string(m.path("Projects/P/Samples/.error")).unwrap();
    assert!(err.contains("../../../../etc"), "{err}");
    let reqs = h.requests();
    assert!(
        reqs.iter().all(|r| r.starts_with("/v1pre3/") || r.starts_with("/v2/")),
        "a request left the API's paths: {reqs:?}"
    );
}

// 7. Unbounded bodies: a huge listing parsed whole, a huge error body buffered per retry.
#[test]
fn huge_bodies_are_refused_without_holding_them() {
    let h = project_server(|r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S"), entity("3", "T")], 2, 0)),
        "/v1pre3/samples/2/files" => Some(endless_body(StatusCode::OK, 300)),
        "/v1pre3/samples/3/files" => Some(v1_page(vec![file("1", "x.bin", 4096, "e")], 1, 0)),
        "/v1pre3/files/1/content" => Some(content_meta(base, "1")),
        "/content/1" => Some(endless_body(StatusCode::INTERNAL_SERVER_ERROR, 300)),
        _ => None,
    });
    let m = mount(&h, &["--io-timeout", "5"]);
    let o = Command::new("ls")
        .arg(m.path("Projects/P/Samples/S/Files"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "a 300 MiB listing was accepted");
    let o = Command::new("cat")
        .arg(m.path("Projects/P/Samples/T/Files/x.bin"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let peak = peak_rss_mib(m.daemon_pid());
    assert!(peak < 160, "peak RSS {peak} MiB");
}

/// A body of `mib` MiB of JSON-ish filler, streamed.
fn endless_body(status: StatusCode, mib: usize) -> Response {
    let chunk = Bytes::from(vec![b' '; 1 << 20]);
    let head = Bytes::from_static(b"{\"Response\": {\"Items\": [");
    let stream = futures::stream::iter(
        std::iter::once(head)
            .chain(std::iter::repeat_n(chunk, mib))
            .map(Ok::<_, std::io::Error>),
    );
    Response::builder()
        .status(status)
        .body(Body::from_stream(stream))
        .unwrap()
}

// 8. One read took twice --io-timeout: the kernel re-issues a failed read.
#[test]
fn a_read_that_times_out_costs_one_timeout_not_two() {
    let h = project_server(|r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => Some(v1_page(vec![file("1", "slow.bin", 10 << 20, "e")], 1, 0)),
        "/v1pre3/files/1/content" => Some(content_meta(base, "1")),
        "/content/1" => {
            // The right headers, then a body that never comes.
            let range = r
                .headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("bytes=0-0");
            let range = range.trim_start_matches("bytes=").to_string();
            let never = futures::stream::pending::<Result<Bytes, std::io::Error>>();
            Some(
                Response::builder()
                    .status(StatusCode::PARTIAL_CONTENT)
                    .header("content-range", format!("bytes {range}/{}", 10 << 20))
                    .body(Body::from_stream(never))
                    .unwrap(),
            )
        }
        _ => None,
    });
    let m = mount(&h, &["--io-timeout", "4"]);
    let t = Instant::now();
    let o = Command::new("dd")
        .arg(format!(
            "if={}",
            m.path("Projects/P/Samples/S/Files/slow.bin").display()
        ))
        .args(["of=/dev/null", "bs=4k", "count=1"])
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(!o.status.success(), "{}", text(&o));
    assert!(took >= Duration::from_secs(3), "failed too early: {took:?}");
    assert!(
        took < Duration::from_millis(6500),
        "one read took {took:?} with --io-timeout 4"
    );
}

// 9. Naming was quadratic: 20,000 files of one name took 24 s to list.
#[test]
fn twenty_thousand_files_of_one_name_list_quickly() {
    let all: Vec<serde_json::Value> = (0..20_000)
        .map(|i| file(&(100_000 + i).to_string(), "same.fastq.gz", 1, "e"))
        .collect();
    let h = project_server(move |r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => Some(v1_paged(r, &all)),
        _ => None,
    });
    let m = mount(&h, &[]);
    let t = Instant::now();
    let n = names(&m, "Projects/P/Samples/S/Files");
    let took = t.elapsed();
    assert_eq!(n.len(), 20_000);
    assert!(n.contains(&"same.fastq.gz (20000)".to_string()));
    assert!(took < Duration::from_secs(8), "listing took {took:?}");
}

// 10. Versions no longer listed were never freed.
#[test]
fn relisting_files_whose_versions_keep_changing_does_not_grow_memory() {
    let gen = Arc::new(AtomicU64::new(0));
    let g2 = gen.clone();
    let h = project_server(move |r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => {
            let v = g2.fetch_add(1, Ordering::Relaxed);
            let all: Vec<serde_json::Value> = (0..1000)
                .map(|i| file(&(100_000 + i).to_string(), &format!("f{i}"), 1, &format!("{v}-{i}")))
                .collect();
            Some(v1_paged(r, &all))
        }
        _ => None,
    });
    let m = mount(&h, &[]);
    let dir = m.path("Projects/P/Samples/S/Files");
    let relist = || {
        let o = m.cmd(&["refresh", dir.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let o = Command::new("ls").arg("-l").arg(&dir).output().unwrap();
        assert!(o.status.success());
    };
    for _ in 0..20 {
        relist();
    }
    let inodes = |m: &Mounted| -> u64 {
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(m.path(".bsmount/stats")).unwrap()).unwrap();
        s["inodes"].as_u64().unwrap()
    };
    let (rss0, ino0) = (rss_mib(m.daemon_pid()), inodes(&m));
    for _ in 0..150 {
        relist();
    }
    let (rss1, ino1) = (rss_mib(m.daemon_pid()), inodes(&m));
    assert!(gen.load(Ordering::Relaxed) >= 170);
    assert!(ino1 <= ino0 + 1000, "inodes {ino0} -> {ino1}");
    assert!(rss1 <= rss0 + 16, "RSS {rss0} -> {rss1} MiB");
}

// Low: a content URL that is not http(s) is refused at once, not retried 8 times.
#[test]
fn a_non_http_content_url_fails_at_once() {
    let h = project_server(|r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => Some(v1_page(vec![file("1", "x.txt", 10, "e")], 1, 0)),
        "/v1pre3/files/1/content" => Some(json_ok(&json!({"Response": {"HrefContent": "file:///etc/passwd"}}))),
        _ => None,
    });
    let m = mount(&h, &["--io-timeout", "30"]);
    let t = Instant::now();
    let o = Command::new("cat")
        .arg(m.path("Projects/P/Samples/S/Files/x.txt"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("root:"));
}

// Low: an impossible Size skips that file; duplicate Ids within one page show once.
#[test]
fn impossible_sizes_and_duplicate_ids_in_one_page_are_dropped() {
    let h = project_server(|r, _| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => Some(v1_page(
            vec![
                file("1", "ok.txt", 3, "e"),
                file("2", "huge.bin", 1u64 << 63, "e"),
                file("1", "ok-again.txt", 3, "e"),
            ],
            3,
            0,
        )),
        _ => None,
    });
    let m = mount(&h, &[]);
    assert_eq!(names(&m, "Projects/P/Samples/S/Files"), [".error", "ok.txt"]);
    assert_eq!(
        std::fs::metadata(m.path("Projects/P/Samples/S/Files/ok.txt"))
            .unwrap()
            .len(),
        3
    );
}

// Issue 22, 4. An error body with a newline forged a log line; CR and ESC reached the log and
// `.error`.
#[test]
fn server_text_never_starts_a_log_line_nor_puts_raw_controls_in_error_files() {
    const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR forged line";
    let h = project_server(|r, _| {
        match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(
            Response::builder()
                .status(StatusCode::NOT_FOUND)
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"ResponseStatus": {"ErrorCode": "NotFound", "Message": format!("gone\n{FORGED}\rover\x1b[2Jwritten")}})
                        .to_string(),
                ))
                .unwrap(),
        ),
        _ => None,
    }
    });
    let m = mount(&h, &[]);
    assert!(std::fs::read_dir(m.path("Projects/P/Samples")).is_err());
    let error = std::fs::read(m.path("Projects/P/Samples/.error"))
        .or_else(|_| std::fs::read(m.path("Projects/P/.error")))
        .unwrap();
    let error = String::from_utf8(error).unwrap();
    assert!(error.contains("forged line"), "{error:?}");
    assert!(
        !error.trim_end_matches('\n').contains(['\n', '\r', '\x1b']),
        "{error:?}"
    );
    let log = m.log();
    assert!(log.contains("forged line"), "the failure is logged: {log}");
    assert!(!log.lines().any(|l| l.starts_with(FORGED)), "{log}");
    assert!(!log.contains(['\r', '\x1b']), "{log:?}");
}

// Issue 22, 6. A server entry named `.error` was hidden by the mount's own; impossible sizes
// showed as empty files with no note.
#[test]
fn server_entries_are_never_hidden_by_the_mounts_files_and_impossible_sizes_are_named() {
    let h = Hostile::start(|r, base| match r.path.as_str() {
        "/v1pre3/users/current/projects" => Some(v1_page(vec![entity("1", "P"), entity("2", ".error")], 2, 0)),
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("100", "S")], 1, 0)),
        "/v1pre3/samples/100/files" => {
            let mut files = vec![
                file("10", ".error", 5, &md5_hex(b"hello")),
                file("11", "good.txt", 5, &md5_hex(b"hello")),
            ];
            for (id, size) in [
                ("12", json!(-1)),
                ("13", json!(null)),
                ("14", json!("12")),
                ("15", json!(i64::MIN)),
            ] {
                let mut f = file(id, &format!("bad{id}.txt"), 0, "e");
                f["Size"] = size;
                files.push(f);
            }
            let mut missing = file("16", "bad16.txt", 0, "e");
            missing.as_object_mut().unwrap().remove("Size");
            files.push(missing);
            Some(v1_page(files, 7, 0))
        }
        p if p.starts_with("/v1pre3/files/") && p.ends_with("/content") => Some(content_meta(
            base,
            p.trim_start_matches("/v1pre3/files/").trim_end_matches("/content"),
        )),
        p if p.starts_with("/content/") => Some(serve(r, b"hello", &md5_hex(b"hello"))),
        _ => None,
    });
    let m = mount(&h, &[]);
    let projects = names(&m, "Projects");
    assert!(projects.contains(&".error (2)".to_string()), "{projects:?}");
    let dir = "Projects/P/Samples/S/Files";
    let files = names(&m, dir);
    for n in [".error", ".error (2)", "good.txt"] {
        assert!(files.contains(&n.to_string()), "{n} missing: {files:?}");
    }
    assert!(!files.iter().any(|n| n.starts_with("bad")), "{files:?}");
    assert_eq!(std::fs::read(m.path(&format!("{dir}/.error (2)"))).unwrap(), b"hello");
    let note = std::fs::read_to_string(m.path(&format!("{dir}/.error"))).unwrap();
    for id in ["12", "13", "14", "15", "16"] {
        assert!(note.contains(&format!("file {id} has")), "{id} not named: {note}");
    }
}

// Issue 22, 1. A file listed without an ETag and replaced after a few ranged GETs was read
// whole as a mix of two versions.
#[test]
fn a_file_listed_without_an_etag_is_never_read_as_a_mix_of_versions() {
    const SIZE: usize = 64 << 20;
    let v1: Arc<Vec<u8>> = Arc::new((0..SIZE).map(|i| (i % 251) as u8).collect());
    let v2: Arc<Vec<u8>> = Arc::new((0..SIZE).map(|i| (i % 241) as u8 ^ 0x55).collect());
    let gets = Arc::new(AtomicU64::new(0));
    let (a, b, n) = (v1.clone(), v2.clone(), gets.clone());
    let h = project_server(move |r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("100", "S")], 1, 0)),
        "/v1pre3/samples/100/files" => {
            let mut f = file("9", "big.bin", SIZE as u64, "");
            f.as_object_mut().unwrap().remove("ETag");
            Some(v1_page(vec![f], 1, 0))
        }
        "/v1pre3/files/9/content" => Some(content_meta(base, "9")),
        // The file is replaced after the third ranged GET; If-Match is ignored.
        "/content/9" => Some(match n.fetch_add(1, Ordering::Relaxed) < 3 {
            true => serve(r, &a, "v1"),
            false => serve(r, &b, "v2"),
        }),
        _ => None,
    });
    let m = mount(&h, &[]);
    let path = m.path("Projects/P/Samples/S/Files/big.bin");
    let out = Command::new("cat").arg(&path).output().unwrap();
    assert!(
        gets.load(Ordering::Relaxed) > 3,
        "the file was read in more than three GETs"
    );
    if out.status.success() {
        assert!(
            out.stdout == *v1 || out.stdout == *v2,
            "a whole read gave a mix of versions"
        );
    }
    // Read again (from the cache where it holds it): never the other version's bytes mixed in.
    let again = Command::new("cat").arg(&path).output().unwrap();
    if again.status.success() {
        assert!(
            again.stdout == *v1 || again.stdout == *v2,
            "a second read gave a mix of versions"
        );
    }
    assert!(!out.status.success() || !again.status.success() || out.stdout == again.stdout);
}

/// A body that never comes, after the right headers (a server dripping nothing).
fn stalled_content(r: &Req, size: u64) -> Response {
    let range = r
        .headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("bytes=0-0")
        .trim_start_matches("bytes=")
        .to_string();
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header("content-range", format!("bytes {range}/{size}"))
        .body(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >()))
        .unwrap()
}

/// Runs `op` in threads started `starts` apart; how long each took from its own start.
fn staggered(starts: &[f64], op: impl Fn() + Send + Sync + 'static) -> Vec<Duration> {
    let op = Arc::new(op);
    let t0 = Instant::now();
    let threads: Vec<_> = starts
        .iter()
        .map(|s| {
            let (op, at) = (op.clone(), t0 + Duration::from_secs_f64(*s));
            std::thread::spawn(move || {
                std::thread::sleep(at.saturating_duration_since(Instant::now()));
                let t = Instant::now();
                op();
                t.elapsed()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

// Issue 22, 2. Readers and listers queued behind one stalled fetch each waited a fresh
// --io-timeout after the one before (30-50 s for four with --io-timeout 10).
#[test]
fn every_waiter_on_a_stalled_server_returns_within_one_io_timeout_of_its_own_start() {
    let h = project_server(|r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S"), entity("3", "L")], 2, 0)),
        "/v1pre3/samples/2/files" => Some(v1_page(vec![file("1", "slow.bin", 10 << 20, "e")], 1, 0)),
        "/v1pre3/samples/3/files" => Some(
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .body(Body::from_stream(futures::stream::pending::<
                    Result<Bytes, std::io::Error>,
                >()))
                .unwrap(),
        ),
        "/v1pre3/files/1/content" => Some(content_meta(base, "1")),
        "/content/1" => Some(stalled_content(r, 10 << 20)),
        _ => None,
    });
    let m = mount(&h, &["--io-timeout", "3"]);
    let file = m.path("Projects/P/Samples/S/Files/slow.bin");
    let dir = m.path("Projects/P/Samples/L/Files");
    let starts = [0.0, 1.0, 2.0, 2.8];
    let readers = staggered(&starts, move || {
        let mut buf = [0u8; 4096];
        let _ = std::fs::File::open(&file).and_then(|mut f| std::io::Read::read(&mut f, &mut buf));
    });
    let listers = staggered(&starts, move || {
        let _ = std::fs::read_dir(&dir).map(|d| d.count());
    });
    for (what, took) in [("reader", &readers), ("lister", &listers)] {
        for (i, t) in took.iter().enumerate() {
            assert!(
                *t < Duration::from_secs(4),
                "{what} {i} took {t:?} with --io-timeout 3: {took:?}"
            );
        }
    }
}

// Issue 22, 3. A directory whose pages never end (fresh Ids, TotalCount 10^9) was listed up
// to a million entries, 520 MB each, and four of them held 1.7 GB.
#[test]
fn endless_directories_fail_whole_within_the_listing_cap_and_others_keep_working() {
    let h = project_server(|r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(
            vec![entity("2", "A"), entity("3", "B"), entity("4", "C"), entity("5", "ok")],
            4,
            0,
        )),
        p @ ("/v1pre3/samples/2/files" | "/v1pre3/samples/3/files" | "/v1pre3/samples/4/files") => {
            let (off, lim) = (r.offset(), r.limit().min(1000));
            let salt = &p[17..18];
            let items = (off..off + lim)
                .map(|i| file(&format!("{salt}{i:09}"), &format!("f{i:09}"), 6, "e"))
                .collect();
            Some(v1_page(items, 1_000_000_000, off))
        }
        "/v1pre3/samples/5/files" => Some(v1_page(vec![file("9", "ok.bin", 5, &md5_hex(b"hello"))], 1, 0)),
        "/v1pre3/files/9/content" => Some(content_meta(base, "9")),
        "/content/9" => Some(serve(r, b"hello", &md5_hex(b"hello"))),
        _ => None,
    });
    let m = mount(&h, &["--max-listing", "20000"]);
    for s in ["A", "B", "C"] {
        let dir = format!("Projects/P/Samples/{s}/Files");
        let e = std::fs::read_dir(m.path(&dir)).map(|d| d.count()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{s}: {e}");
        let note = std::fs::read_to_string(m.path(&format!("{dir}/.error"))).unwrap();
        assert!(note.contains("more than 20000 entries"), "{note}");
    }
    assert_eq!(
        std::fs::read(m.path("Projects/P/Samples/ok/Files/ok.bin")).unwrap(),
        b"hello"
    );
    let peak = peak_rss_mib(m.daemon_pid());
    assert!(peak < 200, "peak RSS {peak} MiB");
}

// Issue 22, 3. Listings across directories had no bound: each large directory the kernel
// still held kept its entries, one after another, until memory ran out.
#[test]
fn listings_across_directories_stay_within_the_listing_memory() {
    let a_pages = Arc::new(AtomicU64::new(0));
    let a2 = a_pages.clone();
    let h = project_server(move |r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(
            ["A", "B", "C", "Huge", "ok"]
                .iter()
                .enumerate()
                .map(|(i, n)| entity(&(i + 2).to_string(), n))
                .collect(),
            5,
            0,
        )),
        p @ ("/v1pre3/samples/2/files"
        | "/v1pre3/samples/3/files"
        | "/v1pre3/samples/4/files"
        | "/v1pre3/samples/5/files") => {
            let salt = &p[16..17];
            if salt == "2" {
                a2.fetch_add(1, Ordering::Relaxed);
            }
            // 5,000 files each (~1.7 MB charged), 20,000 for "Huge" (~7 MB).
            let total = if salt == "5" { 20_000 } else { 5_000 };
            let (off, lim) = (r.offset(), r.limit().min(1000));
            let items = (off..(off + lim).min(total))
                .map(|i| file(&format!("{salt}{i:09}"), &format!("f{i:09}"), 6, "e"))
                .collect();
            Some(v1_page(items, total, off))
        }
        "/v1pre3/samples/6/files" => Some(v1_page(vec![file("9", "ok.bin", 5, &md5_hex(b"hello"))], 1, 0)),
        "/v1pre3/files/9/content" => Some(content_meta(base, "9")),
        "/content/9" => Some(serve(r, b"hello", &md5_hex(b"hello"))),
        _ => None,
    });
    let m = mount(&h, &["--listing-memory", "4M"]);
    let count = |s: &str| std::fs::read_dir(m.path(&format!("Projects/P/Samples/{s}/Files"))).map(|d| d.count());
    for s in ["A", "B", "C"] {
        assert_eq!(count(s).unwrap(), 5000, "{s}");
    }
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(m.path(".bsmount/stats")).unwrap()).unwrap();
    assert!(stats["listings_dropped"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["listings_memory"].as_u64().unwrap() <= 4 << 20, "{stats}");
    // A, the least recently looked at, was dropped: listed again (and complete) when looked at.
    let before = a_pages.load(Ordering::Relaxed);
    assert_eq!(count("A").unwrap(), 5000);
    assert!(
        a_pages.load(Ordering::Relaxed) > before,
        "A was not listed again: {}",
        m.log()
    );
    // A listing that can never fit fails whole, says why, and the others keep working.
    let e = count("Huge").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let note = std::fs::read_to_string(m.path("Projects/P/Samples/Huge/Files/.error")).unwrap();
    assert!(note.contains("--listing-memory"), "{note}");
    assert_eq!(count("B").unwrap(), 5000);
    assert_eq!(
        std::fs::read(m.path("Projects/P/Samples/ok/Files/ok.bin")).unwrap(),
        b"hello"
    );
}

// Issue 22, 5. A content URL pointing at a private, link-local or unspecified address (a
// cloud metadata service, this host) was fetched, and its answer served as file content.
#[test]
fn content_urls_to_addresses_the_api_server_is_not_on_are_refused() {
    let h = project_server(|r, base| match r.path.as_str() {
        "/v1pre3/projects/1/samples" => Some(v1_page(vec![entity("2", "S")], 1, 0)),
        "/v1pre3/samples/2/files" => Some(v1_page(vec![file("1", "secret.txt", 5, &md5_hex(b"hello"))], 1, 0)),
        // 0.0.0.0 connects to this host: the API server is on loopback, not on "unspecified".
        "/v1pre3/files/1/content" => Some(content_meta(&base.replace("127.0.0.1", "0.0.0.0"), "1")),
        "/content/1" => Some(serve(r, b"hello", &md5_hex(b"hello"))),
        _ => None,
    });
    let m = mount(&h, &[]);
    let f = m.path("Projects/P/Samples/S/Files/secret.txt");
    let e = std::fs::read(&f).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert!(
        !h.requests().iter().any(|r| r.contains("/content/1")),
        "{:?}",
        h.requests()
    );
    assert!(m.log().contains("refused to connect to 0.0.0.0"), "{}", m.log());
    drop(m);
    // The flag lifts the rule.
    let m = mount(&h, &["--allow-private-addresses"]);
    assert_eq!(
        std::fs::read(m.path("Projects/P/Samples/S/Files/secret.txt")).unwrap(),
        b"hello"
    );
}
