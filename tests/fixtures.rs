//! Ground truth: real BaseSpace responses, recorded and scrubbed (tokens and signatures
//! replaced), kept in `tests/fixtures/recorded/` so the repository tests on its own.
//! 1. Every JSON body parses into the client's types (lists, entities, files, content
//!    metadata, error envelopes) without error.
//! 2. The emulator answers the same requests with the same shapes: same envelope, same
//!    paging fields, and for each entity kind the same set of top-level keys.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use bsmount::api::client::status_error;
use bsmount::api::model::{ContentMeta, Envelope, Page};
use bsmount::api::{ApiError, Entity, FileInfo};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recorded")
}

struct Interaction {
    file: String,
    path: String,
    status: u16,
    body: String,
}

fn interactions() -> Vec<Interaction> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/recorded holds the recorded responses")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for it in v.as_array().unwrap() {
            out.push(Interaction {
                file: f.file_name().unwrap().to_string_lossy().into_owned(),
                path: it["path"].as_str().unwrap().to_string(),
                status: it["status"].as_u64().unwrap() as u16,
                body: it["body"].as_str().unwrap_or("").to_string(),
            });
        }
    }
    out
}

fn is_files_path(p: &str) -> bool {
    p.ends_with("/files")
}

#[test]
fn every_recorded_api_body_parses() {
    let all = interactions();
    let (mut lists, mut singles, mut errors, mut content) = (0, 0, 0, 0);
    for it in &all {
        let ctx = format!("{} {}", it.file, it.path);
        let Ok(body) = serde_json::from_str::<Value>(&it.body) else {
            // Only presigned content bodies (S3) are not JSON.
            assert!(
                !it.path.starts_with("/v1pre3") && !it.path.starts_with("/v2"),
                "{ctx}: API body is not JSON"
            );
            content += 1;
            continue;
        };
        if it.status >= 400 {
            let e = status_error(reqwest::StatusCode::from_u16(it.status).unwrap(), it.body.as_bytes());
            match (it.status, &e) {
                (403, ApiError::Forbidden { code, message }) => {
                    assert_eq!(
                        code.as_deref(),
                        Some("BASESPACE.COMMON.INSUFFICIENT_RESOURCE_PERMISSIONS"),
                        "{ctx}"
                    );
                    assert!(message.contains("READ access"), "{ctx}: {message}");
                }
                (404, ApiError::NotFound { message, .. }) => {
                    assert!(message.contains("recognized path"), "{ctx}")
                }
                _ => panic!("{ctx}: HTTP {} mapped to {e:?}", it.status),
            }
            errors += 1;
            continue;
        }
        if body.get("Paging").is_some() || body.get("Response").and_then(|r| r.get("Items")).is_some() {
            let page = Page::from_body(body.clone()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert!(page.paging.total_count.is_some(), "{ctx}: no TotalCount");
            assert_eq!(page.paging.displayed_count, Some(page.items.len() as u64), "{ctx}");
            for item in &page.items {
                if is_files_path(&it.path) {
                    let f = FileInfo::parse(item).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert!(f.size.is_some() && !f.rel_path().is_empty(), "{ctx}");
                } else {
                    let e = Entity::parse(item).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                    assert!(
                        e.date_created
                            .as_deref()
                            .and_then(bsmount::api::model::parse_date)
                            .is_some(),
                        "{ctx}: date"
                    );
                }
            }
            lists += 1;
            continue;
        }
        let resp = match serde_json::from_value::<Envelope>(body.clone()) {
            Ok(Envelope { response: Some(r), .. }) => r,
            _ => body.clone(), // v2 single resources are bare
        };
        if it.path.ends_with("/content") {
            let m: ContentMeta = serde_json::from_value(resp).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert!(m.expiry().is_some(), "{ctx}: no expiry");
            assert_eq!(m.supports_range, Some(true));
        } else if it.path.contains("/files/") {
            FileInfo::parse(&resp).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        } else {
            Entity::parse(&resp).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        }
        singles += 1;
    }
    eprintln!("parsed {lists} lists, {singles} single resources, {errors} errors; {content} content bodies");
    assert!(
        lists >= 30 && singles >= 15 && errors >= 8,
        "fixtures went missing? {lists}/{singles}/{errors}"
    );
}

/// The top-level keys of the first recorded body matching `path_pred`, at `pointer`.
fn recorded_keys(path_pred: impl Fn(&str) -> bool, pointer: &str) -> BTreeSet<String> {
    recorded_keys_in(|it| path_pred(&it.path), pointer)
}

fn recorded_keys_in(pred: impl Fn(&Interaction) -> bool, pointer: &str) -> BTreeSet<String> {
    for it in interactions() {
        if it.status == 200 && pred(&it) {
            if let Ok(v) = serde_json::from_str::<Value>(&it.body) {
                if let Some(Value::Object(m)) = v.pointer(pointer) {
                    return m.keys().cloned().collect();
                }
            }
        }
    }
    panic!("no recorded body for {pointer}");
}

fn keys(v: &Value, pointer: &str) -> BTreeSet<String> {
    v.pointer(pointer)
        .and_then(|x| x.as_object())
        .unwrap_or_else(|| panic!("no object at {pointer} in {v}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn emulator_shapes_match_recorded_shapes() {
    let emu = common::Emu::demo();
    let get = |p: &str| emu.get_json(p);
    let projects = get("v1pre3/users/current/projects?Limit=1");
    let pid = projects["Response"]["Items"][0]["Id"].as_str().unwrap().to_string();
    // Project 2 has samples, appresults and an appsession with outputs.
    let projects_all = get("v1pre3/users/current/projects");
    let p2 = projects_all["Response"]["Items"][1]["Id"].as_str().unwrap().to_string();
    let samples = get(&format!("v1pre3/projects/{p2}/samples"));
    let sid = samples["Response"]["Items"][0]["Id"].as_str().unwrap().to_string();
    let results = get(&format!("v1pre3/projects/{p2}/appresults"));
    let aid = results["Response"]["Items"][0]["Id"].as_str().unwrap().to_string();
    let files = get(&format!("v1pre3/appresults/{aid}/files"));
    let fid = files["Response"]["Items"][0]["Id"].as_str().unwrap().to_string();
    let sessions = get(&format!("v2/appsessions?output.projects={p2}"));
    let asid = sessions["Items"][0]["Id"].as_str().unwrap().to_string();
    let biosamples = get(&format!("v2/biosamples?projectid={p2}"));
    let bid = biosamples["Items"][0]["Id"].as_str().unwrap().to_string();
    let fastq = get(&format!(
        "v2/datasets?include=properties&propertyfilters=Input.Libraries%2CInput.Runs%2CBaseSpace.Metrics.FastQ&datasettypes=~common.fastq&inputbiosamples={bid}"
    ));
    assert_eq!(fastq["Items"].as_array().map(Vec::len), Some(1), "{fastq}");
    let dsid = fastq["Items"][0]["Id"].as_str().unwrap().to_string();
    let ds_files = get(&format!("v2/datasets/{dsid}/files"));
    let recorded_fastq = || recorded_keys_in(|i| i.file == "scandir__datasets_folder_v2.json", "/Items/0");
    let prop = |v: &Value, name: &str| -> Value {
        v.pointer("/Items/0/Properties/Items")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| p["Name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no property {name} in {v}"))
    };
    let recorded_fastq_body: Value = interactions()
        .into_iter()
        .find(|i| i.file == "scandir__datasets_folder_v2.json")
        .map(|i| serde_json::from_str(&i.body).unwrap())
        .unwrap();

    let checks: Vec<(&str, BTreeSet<String>, BTreeSet<String>)> = vec![
        (
            "envelope",
            recorded_keys(|p| p == "/v1pre3/users/current/projects", ""),
            keys(&projects, ""),
        ),
        (
            "v1 list paging",
            recorded_keys(|p| p == "/v1pre3/users/current/projects", "/Response"),
            keys(&projects, "/Response"),
        ),
        (
            "project list item",
            recorded_keys(|p| p == "/v1pre3/users/current/projects", "/Response/Items/0"),
            keys(&projects, "/Response/Items/0"),
        ),
        (
            "project",
            recorded_keys(|p| p == "/v1pre3/projects/86591915", "/Response"),
            keys(&get(&format!("v1pre3/projects/{pid}")), "/Response"),
        ),
        (
            "sample list item",
            recorded_keys(
                |p| p.ends_with("/samples") && p.starts_with("/v1pre3/projects"),
                "/Response/Items/0",
            ),
            keys(&samples, "/Response/Items/0"),
        ),
        (
            "sample",
            recorded_keys(|p| p == "/v1pre3/samples/155127035", "/Response"),
            keys(&get(&format!("v1pre3/samples/{sid}")), "/Response"),
        ),
        (
            "appresult list item",
            recorded_keys(|p| p.ends_with("/appresults"), "/Response/Items/0"),
            keys(&results, "/Response/Items/0"),
        ),
        (
            "appresult",
            recorded_keys(|p| p == "/v1pre3/appresults/137682553", "/Response"),
            keys(&get(&format!("v1pre3/appresults/{aid}")), "/Response"),
        ),
        (
            "file list item",
            recorded_keys(
                |p| p.starts_with("/v1pre3/appresults/") && p.ends_with("/files"),
                "/Response/Items/0",
            ),
            keys(&files, "/Response/Items/0"),
        ),
        (
            "file",
            recorded_keys(|p| p == "/v1pre3/files/11710715826", "/Response"),
            keys(&get(&format!("v1pre3/files/{fid}")), "/Response"),
        ),
        (
            "content meta",
            recorded_keys(|p| p.ends_with("/content"), "/Response"),
            keys(&get(&format!("v1pre3/files/{fid}/content?redirect=meta")), "/Response"),
        ),
        (
            "v2 list",
            recorded_keys(|p| p == "/v2/appsessions", ""),
            keys(&sessions, ""),
        ),
        (
            "v2 paging",
            recorded_keys(|p| p == "/v2/appsessions", "/Paging"),
            keys(&sessions, "/Paging"),
        ),
        (
            "v2 appsession",
            recorded_keys(|p| p == "/v2/appsessions", "/Items/0"),
            keys(&sessions, "/Items/0"),
        ),
        (
            "v2 dataset",
            recorded_keys_in(|i| i.file == "scandir__appsessions_datasets.json", "/Items/0"),
            keys(&get(&format!("v2/datasets?appsessionids={asid}")), "/Items/0"),
        ),
        (
            "v2 biosample",
            recorded_keys(|p| p == "/v2/biosamples", "/Items/0"),
            keys(&biosamples, "/Items/0"),
        ),
        (
            "v2 biosample paging",
            recorded_keys(|p| p == "/v2/biosamples", "/Paging"),
            keys(&biosamples, "/Paging"),
        ),
        (
            // BaseSpace's own FASTQ datasets have no V1pre3Id; ours are v1 samples, which do.
            "v2 dataset with properties",
            recorded_fastq().into_iter().chain(["V1pre3Id".to_string()]).collect(),
            keys(&fastq, "/Items/0"),
        ),
        (
            "v2 dataset properties",
            recorded_keys_in(|i| i.file == "scandir__datasets_folder_v2.json", "/Items/0/Properties"),
            keys(&fastq, "/Items/0/Properties"),
        ),
        (
            "v2 library[] property",
            keys(&prop(&recorded_fastq_body, "Input.Libraries"), ""),
            keys(&prop(&fastq, "Input.Libraries"), ""),
        ),
        (
            "v2 library",
            keys(&prop(&recorded_fastq_body, "Input.Libraries"), "/SampleLibraryItems/0"),
            keys(&prop(&fastq, "Input.Libraries"), "/SampleLibraryItems/0"),
        ),
        (
            "v2 map property",
            keys(&prop(&recorded_fastq_body, "BaseSpace.Metrics.FastQ"), ""),
            keys(&prop(&fastq, "BaseSpace.Metrics.FastQ"), ""),
        ),
        (
            "v2 dataset file",
            recorded_keys(|p| p.starts_with("/v2/datasets/") && p.ends_with("/files"), "/Items/0"),
            keys(&ds_files, "/Items/0"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, recorded, ours) in checks {
        if recorded != ours {
            failures.push(format!(
                "{what}: missing {:?}, extra {:?}",
                recorded.difference(&ours).collect::<Vec<_>>(),
                ours.difference(&recorded).collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "emulator shapes differ from BaseSpace:\n{}",
        failures.join("\n")
    );
}

#[test]
fn emulator_errors_match_recorded_errors() {
    let emu = common::Emu::demo();
    let (status, body) = emu.get_raw("v1pre3/files/11111111111", Some(&emu.token));
    let recorded: Value = serde_json::from_str(
        &interactions()
            .into_iter()
            .find(|i| i.path == "/v1pre3/files/11111111111")
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(status, 403);
    let ours: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ours["ResponseStatus"]["ErrorCode"],
        recorded["ResponseStatus"]["ErrorCode"]
    );
    assert_eq!(keys(&ours, ""), keys(&recorded, ""));
    let (status, body) = emu.get_raw("v2/v2/datasets", Some(&emu.token));
    let recorded = interactions()
        .into_iter()
        .find(|i| i.path == "/v2/v2/datasets")
        .unwrap();
    assert_eq!(status, recorded.status);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::from_str::<Value>(&recorded.body).unwrap()
    );
}
