//! Emulator conformance over raw HTTP (reqwest directly, not bsmount's client).

mod common;

use std::time::{Duration, Instant};

use bsmount::emulator::source::{synthetic, SyntheticSpec};
use bsmount::emulator::{EmulatorOptions, NetProfile};
use common::Emu;
use md5::{Digest, Md5};
use serde_json::Value;

fn small() -> bsmount::emulator::Account {
    synthetic(&"projects=3,samples=2,sample_files=2,sample_file_size=300K,appresults=1,appresult_files=1,runs=1,run_files=25,run_file_size=10K".parse::<SyntheticSpec>().unwrap())
}

/// The presigned URL of the first 300 KiB file of `small()`.
fn url_of_300k(e: &Emu) -> String {
    let f = e
        .manifest()
        .into_iter()
        .find(|f| f["size"].as_u64() == Some(300 << 10))
        .unwrap();
    e.presigned(f["id"].as_str().unwrap())
}

fn items(v: &Value) -> &Vec<Value> {
    v["Response"]["Items"].as_array().unwrap()
}

#[test]
fn envelope_and_paging_edges() {
    let e = Emu::start(small(), EmulatorOptions::default());
    let v = e.get_json("v1pre3/users/current/projects?Limit=2");
    assert_eq!(v["ResponseStatus"], serde_json::json!({}));
    assert_eq!(v["Notifications"], serde_json::json!([]));
    let r = &v["Response"];
    assert_eq!(
        (
            r["DisplayedCount"].as_u64(),
            r["TotalCount"].as_u64(),
            r["Offset"].as_u64(),
            r["Limit"].as_u64()
        ),
        (Some(2), Some(3), Some(0), Some(2))
    );
    assert_eq!((r["SortDir"].as_str(), r["SortBy"].as_str()), (Some("Asc"), Some("Id")));
    // Ids are digit strings, hrefs relative.
    let p0 = &items(&v)[0];
    assert!(p0["Id"].as_str().unwrap().bytes().all(|c| c.is_ascii_digit()));
    assert!(p0["Href"].as_str().unwrap().starts_with("v1pre3/projects/"));
    // Default limit is 10; case-insensitive names; offset past the end; limit 0; limit above max.
    let run = e.get_json("v1pre3/users/current/runs");
    let rid = items(&run)[0]["Id"].as_str().unwrap().to_string();
    let d = e.get_json(&format!("v1pre3/runs/{rid}/files"));
    assert_eq!(
        (
            d["Response"]["DisplayedCount"].as_u64(),
            d["Response"]["Limit"].as_u64(),
            d["Response"]["TotalCount"].as_u64()
        ),
        (Some(10), Some(10), Some(25))
    );
    let d = e.get_json(&format!("v1pre3/runs/{rid}/files?oFfSeT=20&LIMIT=10"));
    assert_eq!(items(&d).len(), 5);
    let d = e.get_json(&format!("v1pre3/runs/{rid}/files?Offset=100"));
    assert_eq!(
        (items(&d).len(), d["Response"]["DisplayedCount"].as_u64()),
        (0, Some(0))
    );
    let d = e.get_json(&format!("v1pre3/runs/{rid}/files?Limit=0"));
    assert_eq!((items(&d).len(), d["Response"]["TotalCount"].as_u64()), (0, Some(25)));
    let d = e.get_json(&format!("v1pre3/runs/{rid}/files?Limit=5000"));
    assert_eq!(d["Response"]["Limit"].as_u64(), Some(1000), "files cap at 1000");
    let d = e.get_json("v1pre3/users/current/projects?Limit=5000");
    assert_eq!(d["Response"]["Limit"].as_u64(), Some(1024), "lists cap at 1024");
    // Sorting.
    let d = e.get_json(&format!("v1pre3/runs/{rid}/files?Limit=1000&SortBy=Path&SortDir=Desc"));
    let paths: Vec<&str> = items(&d).iter().map(|f| f["Path"].as_str().unwrap()).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(paths, sorted);
    // Pages tile the list exactly.
    let mut ids = Vec::new();
    for off in (0..25).step_by(7) {
        let d = e.get_json(&format!("v1pre3/runs/{rid}/files?Offset={off}&Limit=7"));
        ids.extend(items(&d).iter().map(|f| f["Id"].as_str().unwrap().to_string()));
    }
    let mut uniq = ids.clone();
    uniq.dedup();
    assert_eq!((ids.len(), uniq.len()), (25, 25));
    let nums: Vec<u64> = ids.iter().map(|i| i.parse().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "by Id: {nums:?}");
    // The usual listing (by Id, no filter) takes a shorter way than a filtered one: the same
    // pages either way (`Statuses=complete` keeps every file).
    for dir in ["Asc", "Desc"] {
        let page = |extra: &str| -> Vec<Value> {
            let d = e.get_json(&format!(
                "v1pre3/runs/{rid}/files?Offset=3&Limit=9&SortDir={dir}{extra}"
            ));
            assert_eq!(d["Response"]["TotalCount"].as_u64(), Some(25));
            items(&d).clone()
        };
        assert_eq!(page(""), page("&Statuses=complete"), "{dir}");
    }
    // Files carry BaseSpace's fields; dates have 7 fractional digits.
    let f = &items(&d)[0];
    for k in [
        "Id",
        "Href",
        "HrefContent",
        "Name",
        "ContentType",
        "Size",
        "Path",
        "IsArchived",
        "DateCreated",
        "DateModified",
        "ETag",
    ] {
        assert!(f.get(k).is_some(), "file lacks {k}");
    }
    let date = f["DateCreated"].as_str().unwrap();
    assert_eq!(date.len(), "2018-07-19T23:50:10.0000000Z".len(), "{date}");
}

#[test]
fn auth_forms_and_bad_tokens() {
    let e = Emu::start(
        small(),
        EmulatorOptions {
            token: Some("s3cr3t".into()),
            ..Default::default()
        },
    );
    let u = e.url("v1pre3/users/current");
    assert_eq!(e.send(|c| c.get(&u).header("x-access-token", "s3cr3t")).0, 200);
    assert_eq!(e.send(|c| c.get(&u).header("Authorization", "Bearer s3cr3t")).0, 200);
    assert_eq!(e.send(|c| c.get(format!("{u}?access_token=s3cr3t"))).0, 200);
    for bad in [
        e.send(|c| c.get(&u)),
        e.send(|c| c.get(&u).header("x-access-token", "wrong")),
        e.send(|c| c.get(&u).header("Authorization", "Bearer s3cr3")),
    ] {
        assert_eq!(bad.0, 401);
        let v: Value = serde_json::from_slice(&bad.2.unwrap()).unwrap();
        assert!(
            v["ResponseStatus"]["ErrorCode"].as_str().is_some(),
            "401 carries an ErrorCode: {v}"
        );
    }
    // Unknown ids: 403 in the envelope, as the real service answers.
    let (s, b) = e.get_raw("v1pre3/projects/42", Some("s3cr3t"));
    assert_eq!(s, 403, "{b}");
    let (s, _) = e.get_raw("v1pre3/nothing/here", Some("s3cr3t"));
    assert_eq!(s, 404);
}

#[test]
fn content_redirect_ranges_expiry_and_signatures() {
    let e = Emu::start(small(), EmulatorOptions::default());
    let m = e.manifest();
    let f = m.iter().find(|f| f["size"].as_u64() == Some(300 << 10)).unwrap();
    let id = f["id"].as_str().unwrap();
    let size = f["size"].as_u64().unwrap();
    // 302 to a presigned URL on the same server; following it gives the exact bytes.
    let (s, h, _) = e.send(|c| {
        c.get(e.url(&format!("v1pre3/files/{id}/content")))
            .header("x-access-token", &e.token)
    });
    assert_eq!(s, 302);
    let loc = h["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&e.base) && loc.contains("Expires=") && loc.contains("Signature="),
        "{loc}"
    );
    let (s, _, body) = e.send(|c| c.get(&loc));
    assert_eq!(s, 200);
    let body = body.unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(hex::encode(Md5::digest(&body)), f["md5"].as_str().unwrap());
    // redirect=meta
    let meta = e.get_json(&format!("v1pre3/files/{id}/content?redirect=meta"));
    assert_eq!(meta["Response"]["SupportsRange"], Value::Bool(true));
    assert!(meta["Response"]["Expires"].as_str().unwrap().ends_with('Z'));
    let url = meta["Response"]["HrefContent"].as_str().unwrap().to_string();
    // Ranges: first byte, last byte, middle, suffix, open-ended, past EOF.
    let range = |r: &str| e.send(|c| c.get(&url).header("Range", r));
    let cases: [(&str, u64, u64); 5] = [
        ("bytes=0-0", 0, 0),
        (&format!("bytes={}-{}", size - 1, size - 1), size - 1, size - 1),
        ("bytes=1000-200999", 1000, 200_999),
        ("bytes=-100", size - 100, size - 1),
        (&format!("bytes={}-", size - 5), size - 5, size - 1),
    ]
    .map(|(r, a, b)| (Box::leak(r.to_string().into_boxed_str()) as &str, a, b));
    for (r, a, b) in cases {
        let (s, h, got) = range(r);
        assert_eq!(s, 206, "{r}");
        assert_eq!(
            h["content-range"].to_str().unwrap(),
            format!("bytes {a}-{b}/{size}"),
            "{r}"
        );
        assert_eq!(got.unwrap(), body[a as usize..=b as usize].to_vec(), "{r}");
    }
    let (s, h, _) = range(&format!("bytes={size}-"));
    assert_eq!(s, 416);
    assert_eq!(h["content-range"].to_str().unwrap(), format!("bytes */{size}"));
    // HEAD gives the length without a body.
    let (s, h, b) = e.send(|c| c.head(&url));
    assert_eq!(
        (
            s,
            h["content-length"].to_str().unwrap().parse::<u64>().unwrap(),
            b.unwrap().len()
        ),
        (200, size, 0)
    );
    // Tampered signature: S3-style 403.
    let bad = url.replace("Signature=", "Signature=0");
    let (s, _, b) = e.send(|c| c.get(&bad));
    assert_eq!(s, 403);
    assert!(String::from_utf8(b.unwrap())
        .unwrap()
        .contains("<Code>SignatureDoesNotMatch</Code>"));
    // Expired URL (lifetime 0): 403 AccessDenied, and a fresh one works again.
    let e0 = Emu::start(
        small(),
        EmulatorOptions {
            url_ttl: Duration::ZERO,
            ..Default::default()
        },
    );
    let u0 = e0.presigned(id);
    let (s, _, b) = e0.send(|c| c.get(&u0));
    assert_eq!(s, 403);
    assert!(String::from_utf8(b.unwrap())
        .unwrap()
        .contains("<Code>AccessDenied</Code>"));
}

#[test]
fn latency_applies_to_every_response_and_requests_run_in_parallel() {
    let e = Emu::with_net(
        small(),
        NetProfile {
            latency: Duration::from_millis(50),
            ..Default::default()
        },
    );
    for p in ["v1pre3/users/current", "v1pre3/users/current/projects", "browse/"] {
        let t = Instant::now();
        let _ = e.get_raw(p, Some(&e.token));
        assert!(t.elapsed() >= Duration::from_millis(50), "{p} took {:?}", t.elapsed());
    }
    let url = e.presigned(e.manifest()[0]["id"].as_str().unwrap());
    let t = Instant::now();
    let _ = e.send(|c| c.get(&url).header("Range", "bytes=0-9"));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // 16 ranged GETs at 200 ms each: serialised they would take 3.2 s.
    let slow = Emu::with_net(
        small(),
        NetProfile {
            latency: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let url = slow.presigned(slow.manifest()[0]["id"].as_str().unwrap());
    let t = Instant::now();
    slow.rt.block_on(async {
        let c = reqwest::Client::new();
        let futs = (0..16).map(|i| {
            let c = c.clone();
            let url = url.clone();
            async move {
                c.get(&url)
                    .header("Range", format!("bytes={}-{}", i * 1000, i * 1000 + 999))
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
                    .len()
            }
        });
        let lens = futures::future::join_all(futs).await;
        assert!(lens.iter().all(|l| *l == 1000));
    });
    assert!(
        t.elapsed() < Duration::from_millis(1600),
        "16 parallel GETs took {:?}",
        t.elapsed()
    );
}

#[test]
fn bandwidth_cap_paces_bodies() {
    let e = Emu::with_net(
        small(),
        NetProfile {
            bandwidth: 1 << 20,
            ..Default::default()
        },
    );
    let url = url_of_300k(&e);
    let t = Instant::now();
    let (_, _, b) = e.send(|c| c.get(&url));
    assert_eq!(b.unwrap().len(), 300 << 10);
    // 300 KiB at 1 MiB/s cannot take less than ~0.29 s.
    assert!(t.elapsed() >= Duration::from_millis(280), "{:?}", t.elapsed());
}

#[test]
fn injected_faults() {
    let e = Emu::with_net(
        small(),
        NetProfile {
            fail_rate: 1.0,
            ..Default::default()
        },
    );
    let (s, h, _) = e.send(|c| c.get(e.url("v1pre3/users/current")).header("x-access-token", &e.token));
    assert!(s == 500 || s == 503, "{s}");
    if s == 503 {
        assert!(h.get("retry-after").is_some());
    }
    let e = Emu::with_net(
        small(),
        NetProfile {
            throttle_rate: 1.0,
            ..Default::default()
        },
    );
    let (s, h, _) = e.send(|c| c.get(e.url("v1pre3/users/current")).header("x-access-token", &e.token));
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"].to_str().unwrap(), "1");
    assert!(e.stats()["faults_injected"].as_u64().unwrap() >= 1);
    // Resets: the body is cut short and the connection dropped.
    let e = Emu::with_net(
        small(),
        NetProfile {
            reset_rate: 1.0,
            seed: 7,
            ..Default::default()
        },
    );
    let url = url_of_300k(&e);
    let (s, _, b) = e.send(|c| c.get(&url));
    assert_eq!(s, 200);
    assert!(b.is_err(), "a reset body must not arrive complete");
}

#[test]
fn faults_repeat_with_the_same_seed() {
    let statuses = |seed| {
        let e = Emu::with_net(
            small(),
            NetProfile {
                fail_rate: 0.3,
                throttle_rate: 0.2,
                seed,
                ..Default::default()
            },
        );
        (0..40)
            .map(|_| e.get_raw("v1pre3/users/current", Some(&e.token)).0)
            .collect::<Vec<_>>()
    };
    let a = statuses(5);
    assert_eq!(a, statuses(5));
    assert!(a.contains(&200) && a.iter().any(|s| *s != 200), "{a:?}");
}

#[test]
fn browse_index_and_manifest() {
    let e = Emu::start(small(), EmulatorOptions::default());
    let (s, _, b) = e.send(|c| c.get(e.url("browse/")));
    assert_eq!(s, 200);
    let html = String::from_utf8(b.unwrap()).unwrap();
    assert!(
        html.contains("href=\"Projects/\"") && html.contains("href=\"Runs/\""),
        "{html}"
    );
    let m = e.manifest();
    assert_eq!(m.len(), 3 * 2 * 2 + 3 + 25);
    for f in m.iter().take(4) {
        let path = f["path"].as_str().unwrap();
        let url = e.url(&format!(
            "browse/{}",
            path.split('/')
                .map(|c| c.replace(' ', "%20"))
                .collect::<Vec<_>>()
                .join("/")
        ));
        let (s, h, _) = e.send(|c| c.head(&url));
        assert_eq!(s, 200, "{url}");
        assert_eq!(
            h["content-length"].to_str().unwrap().parse::<u64>().unwrap(),
            f["size"].as_u64().unwrap()
        );
        let (s, _, body) = e.send(|c| c.get(&url).header("Range", "bytes=0-99"));
        assert_eq!(s, 206);
        assert_eq!(body.unwrap(), e.content(f["id"].as_str().unwrap())[..100].to_vec());
    }
    let st = e.stats();
    for k in ["api_requests", "content_requests", "content_bytes", "faults_injected"] {
        assert!(st[k].is_u64(), "stats lacks {k}");
    }
}

// `filehrefcontentresolution=true` on file listings and on `files/{id}`: `HrefContent` is
// the presigned URL itself (absolute, with its expiry), fetchable with no further request;
// without it, the relative API path as recorded.
#[test]
fn file_listings_resolve_content_urls_when_asked() {
    let e = Emu::start(small(), EmulatorOptions::default());
    let samples = e.get_json("v1pre3/users/current/projects?Limit=1");
    let pid = items(&samples)[0]["Id"].as_str().unwrap().to_string();
    let s = e.get_json(&format!("v1pre3/projects/{pid}/samples?Limit=1"));
    let sid = items(&s)[0]["Id"].as_str().unwrap().to_string();
    let plain = e.get_json(&format!("v1pre3/samples/{sid}/files"));
    let f0 = &items(&plain)[0];
    assert_eq!(
        f0["HrefContent"].as_str().unwrap(),
        format!("v1pre3/files/{}/content", f0["Id"].as_str().unwrap())
    );
    let resolved = e.get_json(&format!("v1pre3/samples/{sid}/files?filehrefcontentresolution=true"));
    let before = e.stats()["url_requests"].as_u64().unwrap();
    for f in items(&resolved) {
        let url = f["HrefContent"].as_str().unwrap();
        assert!(
            url.starts_with(&e.base) && url.contains("Expires=") && url.contains("Signature="),
            "{url}"
        );
        let (s, _, body) = e.send(|c| c.get(url).header("Range", "bytes=0-99"));
        assert_eq!(s, 206);
        assert_eq!(body.unwrap().len(), 100);
    }
    assert_eq!(
        e.stats()["url_requests"].as_u64().unwrap(),
        before,
        "no content-URL requests"
    );
    let id = f0["Id"].as_str().unwrap();
    let one = e.get_json(&format!("v1pre3/files/{id}?FileHrefContentResolution=true"));
    assert!(one["Response"]["HrefContent"].as_str().unwrap().starts_with(&e.base));
}

#[test]
fn v2_filters_are_honoured_not_ignored() {
    let e = Emu::demo();
    let ids = |p: &str| -> Vec<String> {
        e.get_json(p)["Items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["Id"].as_str().unwrap().to_string())
            .collect()
    };
    let projects = e.get_json("v1pre3/users/current/projects");
    let p2 = items(&projects)[1]["Id"].as_str().unwrap().to_string();
    let named = e.get_json("v1pre3/users/current/projects?name=MiSeq%3A%20Myeloid%20RNA%20Panel%20(Demo)");
    assert_eq!(items(&named).len(), 1, "{named}");
    let all = ids("v2/datasets");
    let in_p2 = ids(&format!("v2/datasets?projectid={p2}"));
    assert!(!in_p2.is_empty() && in_p2.len() < all.len(), "{in_p2:?} of {all:?}");
    assert!(ids("v2/datasets?projectid=1").is_empty());
    let bios = ids(&format!("v2/biosamples?projectid={p2}"));
    assert_eq!(bios.len(), 3);
    assert_eq!(ids("v2/biosamples").len(), 6);
    let b = &bios[0];
    let fastq = ids(&format!("v2/datasets?inputbiosamples={b}&datasettypes=~common.fastq"));
    assert_eq!(fastq.len(), 1, "one FASTQ dataset per biosample");
    let from_b = ids(&format!("v2/datasets?inputbiosamples={b}"));
    assert!(
        from_b.len() > 1,
        "the biosample's analysis is a dataset made from it too: {from_b:?}"
    );
    let files_only = ids("v2/datasets?datasettypes=common.files");
    assert!(files_only.iter().all(|d| !fastq.contains(d)) && !files_only.is_empty());
    let ds = e.get_json(&format!("v2/datasets/{}", fastq[0]));
    assert_eq!(ds["DatasetType"]["Id"], "illumina.fastq.v1.8");
    let files = e.get_json(&format!("v2/datasets/{}/files", fastq[0]));
    let f = &files["Items"][0];
    assert!(
        f["HrefContent"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/v2/files/", e.base)),
        "{f}"
    );
    let sessions = ids(&format!("v2/appsessions?input.biosamples={b}"));
    assert_eq!(sessions.len(), 2, "FASTQ generation and the analysis: {sessions:?}");
    let (s, _) = e.get_raw("v2/datasets/ds.00000000000000000000000000000000", Some(&e.token));
    assert_eq!(s, 403);
    // v1pre3 property lists: an appresult's input samples.
    let results = e.get_json(&format!("v1pre3/projects/{p2}/appresults"));
    let ar = &items(&results)[0]["Id"];
    let props = e.get_json(&format!("v1pre3/appresults/{}/properties", ar.as_str().unwrap()));
    let p = &items(&props)[0];
    assert_eq!(
        (p["Name"].as_str(), p["Type"].as_str()),
        (Some("Input.Samples"), Some("sample[]"))
    );
    assert_eq!(p["Items"][0]["Name"], "NA12878");
}

#[test]
fn dataset_files_list_one_folder_with_its_sub_directories() {
    let e = Emu::demo();
    let ds: Vec<Value> = e.get_json("v2/datasets?datasettypes=common.files")["Items"]
        .as_array()
        .unwrap()
        .clone();
    let dragen = ds.iter().find(|d| d["Name"] == "NA12878 DRAGEN Germline").unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let root = e.get_json(&format!("v2/datasets/{dragen}/files?directory=%2F"));
    let names: Vec<&str> = root["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["Path"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(names.iter().all(|p| !p.contains('/')));
    assert_eq!(root["SubDirectories"][0]["Name"], "metrics");
    let sub = e.get_json(&format!("v2/datasets/{dragen}/files?directory=%2Fmetrics%2F"));
    assert_eq!(sub["Items"][0]["Path"], "metrics/NA12878.mapping_metrics.csv");
    let all = e.get_json(&format!(
        "v2/datasets/{dragen}/files?directory=%2F&includesubdirectories=true"
    ));
    assert_eq!(all["Items"].as_array().unwrap().len(), 5);
}

#[test]
fn the_demo_hangs_together() {
    use std::io::Read;
    let e = Emu::demo();
    let runs = e.get_json("v1pre3/users/current/runs");
    let run_of = |experiment: &str| -> Value {
        items(&runs)
            .iter()
            .find(|r| r["ExperimentName"] == experiment)
            .unwrap_or_else(|| panic!("no run of experiment {experiment}"))
            .clone()
    };
    let projects = e.get_json("v1pre3/users/current/projects");
    let mut names_seen = Vec::new();
    for p in items(&projects) {
        let pid = p["Id"].as_str().unwrap();
        let samples = e.get_json(&format!("v1pre3/projects/{pid}/samples?Limit=100"));
        for s in items(&samples) {
            let sid = s["Id"].as_str().unwrap();
            names_seen.push(s["Name"].as_str().unwrap().to_string());
            let run = run_of(s["ExperimentName"].as_str().unwrap());
            // A MiSeq panel was sequenced on a MiSeq, the trio on a NovaSeq.
            let kind = run["InstrumentType"].as_str().unwrap();
            let family = kind.trim_end_matches(|c: char| c.is_ascii_digit() || c == 'X' || c == 'P');
            assert!(
                p["Name"].as_str().unwrap().starts_with(family),
                "{} on {kind}",
                p["Name"]
            );
            // The reads the sample reports are the reads its FASTQ holds, named by its run.
            let files = e.get_json(&format!("v1pre3/samples/{sid}/files?Extensions=fastq.gz"));
            let r1 = items(&files)
                .iter()
                .find(|f| f["Name"].as_str().unwrap().contains("_R1_"))
                .unwrap();
            let mut text = String::new();
            flate2::read::MultiGzDecoder::new(&e.content(r1["Id"].as_str().unwrap())[..])
                .read_to_string(&mut text)
                .unwrap();
            let reads = text.lines().count() as u64 / 4;
            assert_eq!(s["NumReadsPF"].as_u64(), Some(reads), "{}", s["Name"]);
            let first = text.lines().next().unwrap();
            let prefix = format!(
                "@{}:{}:{}:",
                run["InstrumentName"].as_str().unwrap(),
                run["Number"],
                run["FlowcellBarcode"].as_str().unwrap()
            );
            assert!(first.starts_with(&prefix), "{first} from {prefix}");
            let len = text.lines().nth(1).unwrap().len() as u64;
            assert_eq!(
                (s["Read1"].as_u64(), run["NumCyclesRead1"].as_u64()),
                (Some(len), Some(len))
            );
        }
    }
    // Deliberately awkward: two samples share a name (re-sequenced under the same name).
    assert_eq!(names_seen.iter().filter(|n| *n == "Brain-Rep1").count(), 2);
    // Appsessions are named after the moment they were created; applications differ.
    let sessions = e.get_json("v1pre3/users/current/appsessions?Limit=100");
    let mut apps = std::collections::BTreeMap::new();
    for s in items(&sessions) {
        let name = s["Name"].as_str().unwrap();
        let when = &name[name.len() - 20..];
        let created = s["DateCreated"].as_str().unwrap();
        assert_eq!(
            when.replace(' ', "T").trim_end_matches('Z'),
            &created[..19],
            "{name} created {created}"
        );
        let app = &s["Application"];
        let prev = apps.insert(app["Name"].as_str().unwrap().to_string(), app["Id"].clone());
        assert!(prev.is_none_or(|p| p == app["Id"]), "one id per application");
    }
    let ids: std::collections::BTreeSet<String> = apps.values().map(|v| v.to_string()).collect();
    assert_eq!(ids.len(), apps.len(), "every application its own id: {apps:?}");
}

#[test]
fn v1_filters_and_sorts_are_honoured_not_ignored() {
    let e = Emu::demo();
    let projects = e.get_json("v1pre3/users/current/projects");
    let trio = items(&projects)[1]["Id"].as_str().unwrap().to_string();
    let results = e.get_json(&format!("v1pre3/projects/{trio}/appresults"));
    let ar = items(&results)[0]["Id"].as_str().unwrap().to_string();
    let names = |q: &str| -> Vec<String> {
        items(&e.get_json(&format!("v1pre3/appresults/{ar}/files?{q}")))
            .iter()
            .map(|f| f["Path"].as_str().unwrap().to_string())
            .collect()
    };
    let all = names("Limit=100");
    assert_eq!(names("Extensions=bam"), ["NA12878.bam"]);
    let bam_vcf = names("Extensions=bam,vcf.gz");
    assert_eq!(bam_vcf.len(), 2, "{bam_vcf:?}");
    assert!(names("Extensions=.bai").iter().all(|n| n.ends_with(".bai")));
    let no_idx = names("ExcludeExtensions=bai,tbi&Limit=100");
    assert_eq!(no_idx.len(), all.len() - 2, "{no_idx:?}");
    assert_eq!(names("PathPrefix=metrics/"), ["metrics/NA12878.mapping_metrics.csv"]);
    // Statuses: nothing in the demo is running.
    assert!(items(&e.get_json(&format!("v1pre3/projects/{trio}/appresults?Statuses=Running"))).is_empty());
    assert_eq!(
        items(&e.get_json(&format!("v1pre3/projects/{trio}/appresults?Statuses=Complete"))).len(),
        1
    );
    // A valid SortBy is applied and echoed; one the resource does not take answers with
    // its default, and says so.
    let by_path = e.get_json(&format!(
        "v1pre3/appresults/{ar}/files?SortBy=Path&SortDir=Desc&Limit=100"
    ));
    assert_eq!(by_path["Response"]["SortBy"], "Path");
    let paths: Vec<&str> = items(&by_path).iter().map(|f| f["Path"].as_str().unwrap()).collect();
    let mut want = paths.clone();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(paths, want);
    let bogus = e.get_json(&format!("v1pre3/projects/{trio}/samples?SortBy=Flavour"));
    assert_eq!(bogus["Response"]["SortBy"], "Id");
}
