//! One conformance suite, two implementations of `BaseSpaceApi`: the in-crate fake (the
//! emulator's account model, no socket) and the HTTP client talking to the emulator. Both
//! must answer alike, so unit tests on the fake mean what they say about the real path.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bsmount::api::fake::FakeApi;
use bsmount::api::{ApiError, BaseSpaceApi, Credentials, HttpClient, ListKind, Pieces, RetryPolicy, Token};
use bsmount::emulator::account::{Account, AccountBuilder, Content};
use bytes::Bytes;
use serde_json::Value;

fn account() -> Account {
    let mut b = AccountBuilder::stable("Conformance");
    let p = b.project("Proj");
    let a = b.appsession(p, "Analysis", "DRAGEN");
    let s = b.sample(p, "S1", Some(a));
    b.file(s, "R1.fastq.gz", 3000, Content::Synthetic { seed: 1 }, None);
    b.file(
        s,
        "sub/R2.fastq.gz",
        (9 << 20) + 1,
        Content::Synthetic { seed: 2 },
        None,
    );
    b.sample(p, "S1", None);
    b.appresult(p, "Result", Some(a));
    let r = b.run("Run");
    b.file(
        r,
        "RunInfo.xml",
        12,
        Content::Memory(Bytes::from_static(b"<RunInfo/>\n\n")),
        None,
    );
    b.build()
}

/// The suite: everything the layers above rely on.
async fn conforms(api: Arc<dyn BaseSpaceApi>, acct: &Account) {
    let (user, _) = api.current_user().await.unwrap();
    assert_eq!(user.name.as_deref(), Some("Conformance"));
    let projects = api.list_entities(ListKind::Projects).await.unwrap();
    assert_eq!(projects.items.len(), 1);
    assert!(projects.skipped.is_empty());
    let pid = projects.items[0].entity.id.clone();
    assert_eq!(projects.items[0].entity.name.as_deref(), Some("Proj"));
    let raw: serde_json::Value = serde_json::from_str(&projects.items[0].raw).unwrap();
    assert_eq!(raw["Id"].as_str(), Some(pid.as_str()), ".json text is the item's own");
    let samples = api.list_entities(ListKind::Samples(pid.clone())).await.unwrap().items;
    let mut names: Vec<_> = samples.iter().map(|s| s.entity.name.clone().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["S1", "S1"]);
    let results = api
        .list_entities(ListKind::AppResults(pid.clone()))
        .await
        .unwrap()
        .items;
    assert_eq!(results.len(), 1);
    let sessions = api
        .list_entities(ListKind::AppSessions(pid.clone()))
        .await
        .unwrap()
        .items;
    assert_eq!(sessions.len(), 1);
    let outputs = api
        .list_entities(ListKind::AppSessionOutputs(sessions[0].entity.id.clone()))
        .await
        .unwrap()
        .items;
    let mut v1: Vec<String> = outputs
        .iter()
        .map(|o| {
            o.entity
                .v1pre3_id
                .clone()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    v1.sort();
    assert_eq!(v1, ["appresult", "sample"]);
    // Files: the first S1 (lowest id) has two.
    let mut sids: Vec<u64> = samples.iter().map(|s| s.entity.id.parse().unwrap()).collect();
    sids.sort();
    let with_files = sids
        .iter()
        .find(|id| {
            !acct
                .container(bsmount::emulator::account::ContainerKind::Sample, **id)
                .unwrap()
                .files
                .is_empty()
        })
        .unwrap();
    let files = api
        .list_files(ListKind::SampleFiles(with_files.to_string()))
        .await
        .unwrap()
        .items;
    let mut paths: Vec<_> = files.iter().map(|f| f.rel_path().to_string()).collect();
    paths.sort();
    assert_eq!(paths, ["R1.fastq.gz", "sub/R2.fastq.gz"]);
    for f in &files {
        let entry = &acct.files[&f.id.parse::<u64>().unwrap()];
        assert_eq!(f.size, Some(entry.size));
        assert_eq!(f.etag.as_deref(), Some(entry.etag()));
        let meta = api.content_meta(&f.id).await.unwrap();
        let start = f.size.unwrap() / 3;
        let len = 4096.min(f.size.unwrap() - start);
        let got = api
            .get_range(&meta.href_content, start, len, f.etag.as_deref(), Pieces::whole())
            .await
            .unwrap()
            .concat();
        let mut want = vec![0u8; len as usize];
        bsmount::emulator::account::fill(&entry.content, start, &mut want).unwrap();
        assert_eq!(got, want, "bytes of {}", f.rel_path());
        // Another version's ETag: refused as changed, never other bytes.
        let e = api
            .get_range(
                &meta.href_content,
                0,
                10,
                Some("0123456789abcdef0123456789abcdef"),
                Pieces::whole(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Changed { .. }), "{e:?}");
    }
    // Multipart ETags are S3's: 8 MiB parts above 8 MiB.
    let big = files.iter().find(|f| f.size.unwrap() > 8 << 20).unwrap();
    assert!(big.etag.as_deref().unwrap().ends_with("-2"), "{:?}", big.etag);
    // Unknown ids are errors, not empty answers.
    assert!(api.list_files(ListKind::SampleFiles("999".into())).await.is_err());
    assert!(api.content_meta("999").await.is_err());
}

#[test]
fn the_fake_conforms() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acct = account();
    rt.block_on(conforms(FakeApi::new(account()), &acct));
}

#[test]
fn the_http_client_against_the_emulator_conforms() {
    let emu = common::Emu::start(account(), Default::default());
    let client = HttpClient::new(
        Credentials {
            api_server: emu.base.clone(),
            token: Token::new(emu.token.clone()),
            source: "test".into(),
        },
        RetryPolicy {
            max_attempts: 2,
            deadline: Duration::from_secs(10),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    let acct = account();
    emu.rt.block_on(conforms(Arc::new(client), &acct));
}

// ---------------------------------------------------------------------------------------
// SDK call shapes: what public BaseSpace clients send and how they parse the answer,
// replayed against the emulator so it cannot drift from what they need.
//
// v1pre3: BaseSpacePy (`basespace/basespace-python-sdk`). Its `APIClient.deserialize`
// walks each model's `swaggerTypes`: a field present as `int` goes through `int(value)`
// (null raises), `datetime` through `dateutil.parser.parse` (null raises), `list<...>`
// is iterated, a model is recursed into, and a property's model is picked by its `Type`.
// Its `QueryParameters` lets only `SortBy` in Id|Name|DateCreated|Path|Position and
// `SortDir` in Asc|Desc through.
//
// v2: a client generated from the v2 swagger ("Basespace API" 5.0.0): lists are
// `{Items, Paging}` (both required) and `Paging.SortBy` must be one of the list's
// `...SortFields` enum, `SortDir` Asc|Desc; entities require `Id` and `Href`.
// ---------------------------------------------------------------------------------------

/// BaseSpacePy's models, as (field, type) per its `swaggerTypes`.
const MODELS: &[(&str, &[(&str, &str)])] = &[
    (
        "User",
        &[
            ("Name", "str"),
            ("Email", "str"),
            ("DateLastActive", "datetime"),
            ("GravatarUrl", "str"),
            ("HrefProjects", "str"),
            ("DateCreated", "datetime"),
            ("Id", "str"),
            ("Href", "str"),
            ("HrefRuns", "str"),
        ],
    ),
    (
        "UserCompact",
        &[("Name", "str"), ("Id", "str"), ("Href", "str"), ("GravatarUrl", "str")],
    ),
    (
        "Project",
        &[
            ("Name", "str"),
            ("HrefSamples", "str"),
            ("HrefAppResults", "str"),
            ("HrefBaseSpaceUI", "str"),
            ("DateCreated", "datetime"),
            ("Id", "str"),
            ("Href", "str"),
            ("UserOwnedBy", "UserCompact"),
            ("Properties", "PropertyList"),
        ],
    ),
    (
        "Run",
        &[
            ("Name", "str"),
            ("Number", "int"),
            ("HrefFiles", "str"),
            ("HrefSamples", "str"),
            ("UserUploadedBy", "UserCompact"),
            ("UserOwnedBy", "UserCompact"),
            ("DateUploadCompleted", "datetime"),
            ("DateUploadStarted", "datetime"),
            ("HrefBaseSpaceUI", "str"),
            ("Id", "str"),
            ("Href", "str"),
            ("ExperimentName", "str"),
            ("Status", "str"),
            ("DateCreated", "datetime"),
            ("DateModified", "datetime"),
            ("Properties", "PropertyList"),
            ("ReagentBarcode", "str"),
            ("FlowcellBarcode", "str"),
            ("TotalSize", "int"),
            ("PlatformName", "str"),
            ("Workflow", "str"),
            ("InstrumentName", "str"),
            ("InstrumentType", "str"),
            ("NumCyclesRead1", "int"),
            ("NumCyclesRead2", "int"),
            ("NumCyclesIndex1", "int"),
            ("NumCyclesIndex2", "int"),
            ("LibraryCount", "int"),
        ],
    ),
    (
        "Sample",
        &[
            ("HrefGenome", "str"),
            ("SampleNumber", "int"),
            ("ExperimentName", "str"),
            ("HrefFiles", "str"),
            ("IsPairedEnd", "int"),
            ("Read1", "int"),
            ("Read2", "int"),
            ("NumReadsRaw", "int"),
            ("NumReadsPF", "int"),
            ("Id", "str"),
            ("Href", "str"),
            ("UserOwnedBy", "UserCompact"),
            ("Name", "str"),
            ("SampleId", "str"),
            ("Status", "str"),
            ("StatusSummary", "str"),
            ("DateCreated", "datetime"),
            ("References", "dict"),
            ("TotalSize", "int"),
            ("AppSession", "AppSessionSemiCompact"),
            ("Properties", "PropertyList"),
            ("Projects", "list<Project>"),
        ],
    ),
    (
        "AppResult",
        &[
            ("Name", "str"),
            ("Status", "str"),
            ("Description", "str"),
            ("StatusSummary", "str"),
            ("HrefFiles", "str"),
            ("DateCreated", "datetime"),
            ("Id", "str"),
            ("Href", "str"),
            ("UserOwnedBy", "UserCompact"),
            ("StatusDetail", "str"),
            ("HrefGenome", "str"),
            ("AppSession", "AppSessionSemiCompact"),
            ("References", "dict"),
            ("TotalSize", "int"),
            ("Properties", "PropertyList"),
        ],
    ),
    (
        "AppSession",
        &[
            ("Id", "str"),
            ("Href", "str"),
            ("Type", "str"),
            ("Name", "str"),
            ("UserCreatedBy", "UserCompact"),
            ("DateCreated", "datetime"),
            ("ModifiedOn", "datetime"),
            ("Status", "str"),
            ("StatusSummary", "str"),
            ("Application", "Application"),
            ("References", "list<AppSessionLaunchObject>"),
            ("Properties", "PropertyList"),
            ("AuthorizationCode", "str"),
            ("OriginatingUri", "str"),
        ],
    ),
    (
        "AppSessionSemiCompact",
        &[
            ("Id", "str"),
            ("Href", "str"),
            ("Name", "str"),
            ("UserCreatedBy", "UserCompact"),
            ("Status", "str"),
            ("StatusSummary", "str"),
            ("Application", "Application"),
            ("DateCreated", "datetime"),
            ("ModifiedOn", "datetime"),
        ],
    ),
    (
        "AppSessionLaunchObject",
        &[
            ("Content", "dict"),
            ("Href", "str"),
            ("HrefContent", "str"),
            ("Rel", "str"),
            ("Type", "str"),
        ],
    ),
    (
        "Application",
        &[
            ("Id", "str"),
            ("Href", "str"),
            ("Name", "str"),
            ("HrefLogo", "str"),
            ("HomepageUri", "str"),
            ("ShortDescription", "str"),
            ("DateCreated", "datetime"),
        ],
    ),
    (
        "File",
        &[
            ("Name", "str"),
            ("HrefCoverage", "str"),
            ("HrefParts", "str"),
            ("DateCreated", "datetime"),
            ("UploadStatus", "str"),
            ("Id", "str"),
            ("Href", "str"),
            ("HrefContent", "str"),
            ("HrefVariants", "str"),
            ("ContentType", "str"),
            ("Path", "str"),
            ("Size", "int"),
            ("Properties", "PropertyList"),
        ],
    ),
    (
        "GenomeV1",
        &[
            ("Source", "str"),
            ("SpeciesName", "str"),
            ("Build", "str"),
            ("Id", "str"),
            ("Href", "str"),
            ("DisplayName", "str"),
        ],
    ),
    (
        "PropertyList",
        &[
            ("Items", "list<DynamicType>"),
            ("Href", "str"),
            ("DisplayedCount", "int"),
            ("TotalCount", "int"),
            ("Offset", "int"),
            ("Limit", "int"),
            ("SortDir", "str"),
            ("SortBy", "str"),
        ],
    ),
    (
        "ResourceList",
        &[
            ("Items", "list<Str>"),
            ("DisplayedCount", "int"),
            ("SortDir", "str"),
            ("TotalCount", "int"),
            ("Offset", "int"),
            ("SortBy", "str"),
            ("Limit", "int"),
        ],
    ),
];

/// A property's model by its `Type` (BaseSpacePy's `PropertyList._dynamicType`), and the
/// model of what it holds: `Content` for one, `Items` for an array.
const PROPERTY_TYPES: &[(&str, &str)] = &[
    ("string", "str"),
    ("string[]", "list<Str>"),
    ("project", "Project"),
    ("project[]", "list<Project>"),
    ("appresult", "AppResult"),
    ("appresult[]", "list<AppResult>"),
    ("sample", "Sample"),
    ("sample[]", "list<Sample>"),
    ("file", "File"),
    ("file[]", "list<File>"),
    ("run", "Run"),
    ("run[]", "list<Run>"),
];

fn model(name: &str) -> &'static [(&'static str, &'static str)] {
    MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no model {name}"))
        .1
}

/// `dateutil.parser.parse` of BaseSpace's dates: `2024-01-15T10:00:00.0000000Z`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s[..4].parse::<u16>().is_ok()
        && (1..=12).contains(&s[5..7].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&s[8..10].parse::<u8>().unwrap_or(0))
}

/// Deserializes `v` as BaseSpacePy does into `ty`; the error says where it would raise.
fn sdk_parse(v: &Value, ty: &str, at: &str) -> Result<(), String> {
    match ty {
        "str" | "Str" | "dict" => Ok(()),
        // `int(None)` raises; `int("12")` does not.
        "int" => match v {
            Value::Number(_) => Ok(()),
            Value::Bool(_) => Ok(()),
            Value::String(s) if s.trim().parse::<i64>().is_ok() => Ok(()),
            _ => Err(format!("{at}: int() of {v}")),
        },
        "datetime" => match v.as_str() {
            Some(s) if is_date(s) => Ok(()),
            _ => Err(format!("{at}: dateutil cannot parse {v}")),
        },
        t if t.starts_with("list<") => {
            let inner = &t[5..t.len() - 1];
            let items = v.as_array().ok_or_else(|| format!("{at}: not a list: {v}"))?;
            for (i, x) in items.iter().enumerate() {
                sdk_parse(x, inner, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        "DynamicType" => {
            // A property: its model by `Type`; unknown types are skipped by the SDK.
            let kind = v["Type"]
                .as_str()
                .ok_or_else(|| format!("{at}: property without Type"))?;
            let Some((_, holds)) = PROPERTY_TYPES.iter().find(|(k, _)| *k == kind) else {
                return Ok(());
            };
            let field = if kind.ends_with("[]") { "Items" } else { "Content" };
            for f in ["Name", "Href"] {
                if !v[f].is_string() {
                    return Err(format!("{at}: property lacks {f}"));
                }
            }
            match v.get(field) {
                Some(x) => sdk_parse(x, holds, &format!("{at}.{field}")),
                None if kind.ends_with("[]") => Ok(()),
                None => Err(format!("{at}: {kind} property without Content")),
            }
        }
        m => {
            let obj = v
                .as_object()
                .ok_or_else(|| format!("{at}: {m} is not an object: {v}"))?;
            for (field, ft) in model(m) {
                if let Some(x) = obj.get(*field) {
                    sdk_parse(x, ft, &format!("{at}.{field}"))?;
                }
            }
            Ok(())
        }
    }
}

/// BaseSpacePy's envelope checks: `Response` present and no `ResponseStatus.ErrorCode`.
fn response<'a>(v: &'a Value, call: &str) -> &'a Value {
    assert!(
        v["ResponseStatus"].get("ErrorCode").is_none(),
        "{call}: the SDK raises on {v}"
    );
    v.get("Response")
        .unwrap_or_else(|| panic!("{call}: no Response in {v}"))
}

/// One BaseSpacePy call: GET `path`, parse its `Response` as `ty` (`list<M>` for lists),
/// with `required` fields present in the entity (or in every listed item: list items are
/// compact, as recorded, without `HrefFiles` and alike).
fn v1_call(e: &common::Emu, call: &str, path: &str, ty: &str, required: &[&str]) -> Value {
    let v = e.get_json(path);
    let r = response(&v, call).clone();
    if let Some(m) = ty.strip_prefix("list<").and_then(|t| t.strip_suffix('>')) {
        sdk_parse(&r, "ResourceList", call).unwrap();
        for (k, t) in model("ResourceList") {
            assert!(r.get(*k).is_some(), "{call}: list lacks {k} ({t})");
        }
        let items = r["Items"].as_array().unwrap();
        assert!(!items.is_empty(), "{call}: the demo lists something here");
        for (i, it) in items.iter().enumerate() {
            sdk_parse(it, m, &format!("{call}.Items[{i}]")).unwrap();
            for f in required {
                assert!(it[*f].is_string(), "{call}.Items[{i}] lacks {f}: {it}");
            }
        }
    } else {
        sdk_parse(&r, ty, call).unwrap();
        for f in required {
            assert!(!r[*f].is_null(), "{call} lacks {f}: {r}");
        }
    }
    r
}

fn first_id(list: &Value) -> String {
    list["Items"][0]["Id"].as_str().unwrap().to_string()
}

#[test]
fn basespacepy_calls_parse_as_the_sdk_parses_them() {
    let e = common::Emu::demo();
    let user = v1_call(
        &e,
        "getUserById(current)",
        "v1pre3/users/current",
        "User",
        &["Id", "Href", "HrefProjects", "HrefRuns"],
    );
    assert!(user["Email"].is_string());
    let ids = ["Id", "Href", "Name"];
    let projects = v1_call(
        &e,
        "getProjectByUser",
        "v1pre3/users/current/projects?Limit=10",
        "list<Project>",
        &ids,
    );
    let trio = projects["Items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Name"].as_str().unwrap().starts_with("NovaSeq"))
        .unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    v1_call(
        &e,
        "getProjectById",
        &format!("v1pre3/projects/{trio}"),
        "Project",
        &["Id", "HrefSamples", "HrefAppResults"],
    );
    v1_call(
        &e,
        "getProjectPropertiesById",
        &format!("v1pre3/projects/{trio}/properties"),
        "PropertyList",
        &[],
    );

    let runs = v1_call(
        &e,
        "getAccessibleRunsByUser",
        "v1pre3/users/current/runs",
        "list<Run>",
        &ids,
    );
    let run = first_id(&runs);
    let r = v1_call(
        &e,
        "getRunById",
        &format!("v1pre3/runs/{run}"),
        "Run",
        &["Id", "HrefFiles", "Properties"],
    );
    assert!(
        r.get("SequencingStats").is_some(),
        "a run answers with its SequencingStats"
    );
    v1_call(
        &e,
        "getRunPropertiesById",
        &format!("v1pre3/runs/{run}/properties"),
        "PropertyList",
        &[],
    );
    v1_call(
        &e,
        "getRunFilesById",
        &format!("v1pre3/runs/{run}/files?Limit=5"),
        "list<File>",
        &ids,
    );
    let run_samples = v1_call(
        &e,
        "getRunSamplesById",
        &format!("v1pre3/runs/{run}/samples"),
        "list<Sample>",
        &ids,
    );

    let samples = v1_call(
        &e,
        "getSamplesByProject",
        &format!("v1pre3/projects/{trio}/samples"),
        "list<Sample>",
        &ids,
    );
    let sample = first_id(&samples);
    let s = v1_call(
        &e,
        "getSampleById",
        &format!("v1pre3/samples/{sample}"),
        "Sample",
        &["Id", "HrefFiles", "NumReadsPF", "Read1", "IsPairedEnd", "Properties"],
    );
    // The FASTQ hold the reads the sample reports.
    let (pf, read1) = (s["NumReadsPF"].as_u64().unwrap(), s["Read1"].as_u64().unwrap());
    assert!(pf > 0 && read1 > 0);
    v1_call(
        &e,
        "getSamplePropertiesById",
        &format!("v1pre3/samples/{sample}/properties"),
        "PropertyList",
        &[],
    );
    let fastq = v1_call(
        &e,
        "getSampleFilesById(Extensions=gz)",
        &format!("v1pre3/samples/{sample}/files?Extensions=gz"),
        "list<File>",
        &["Id", "Href", "Name", "Path"],
    );
    assert!(fastq["Items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["Name"].as_str().unwrap().ends_with(".gz")));
    let file = first_id(&fastq);
    v1_call(
        &e,
        "getFileById",
        &format!("v1pre3/files/{file}"),
        "File",
        &["Id", "HrefContent", "Size"],
    );
    let fp = e.get_json(&format!("v1pre3/files/{file}/properties"));
    sdk_parse(
        response(&fp, "getFilePropertiesById"),
        "PropertyList",
        "getFilePropertiesById",
    )
    .unwrap();
    // Run samples are samples too.
    assert!(run_samples["Items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["Href"].as_str().unwrap().starts_with("v1pre3/samples/")));

    let results = v1_call(
        &e,
        "getAppResultsByProject(statuses=[Complete])",
        &format!("v1pre3/projects/{trio}/appresults?Statuses=Complete"),
        "list<AppResult>",
        &ids,
    );
    assert!(results["Items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["Status"] == "Complete"));
    let running = e.get_json(&format!("v1pre3/projects/{trio}/appresults?Statuses=Running"));
    assert_eq!(
        running["Response"]["Items"].as_array().unwrap().len(),
        0,
        "Statuses filters"
    );
    let ar = first_id(&results);
    let a = v1_call(
        &e,
        "getAppResultById",
        &format!("v1pre3/appresults/{ar}"),
        "AppResult",
        &["Id", "AppSession", "References", "Properties"],
    );
    // SDK navigation from an appresult to its input samples: References and Input.Samples.
    assert!(!a["References"].as_array().unwrap().is_empty(), "References: {a}");
    let inputs = a["Properties"]["Items"].as_array().unwrap();
    assert!(
        inputs
            .iter()
            .any(|p| p["Name"] == "Input.Samples" && !p["Items"].as_array().unwrap().is_empty()),
        "inline Input.Samples: {inputs:?}"
    );
    v1_call(
        &e,
        "getAppResultPropertiesById",
        &format!("v1pre3/appresults/{ar}/properties"),
        "PropertyList",
        &[],
    );
    let bams = v1_call(
        &e,
        "getAppResultFilesById(Extensions=bam)",
        &format!("v1pre3/appresults/{ar}/files?Extensions=bam"),
        "list<File>",
        &ids,
    );
    assert!(bams["Items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["Name"].as_str().unwrap().ends_with(".bam")));

    let session = a["AppSession"]["Id"].as_str().unwrap().to_string();
    v1_call(
        &e,
        "getAppSession",
        &format!("v1pre3/appsessions/{session}"),
        "AppSession",
        &["Id", "Href", "Name", "Status", "Application"],
    );
    let props = v1_call(
        &e,
        "getAppSessionPropertiesById",
        &format!("v1pre3/appsessions/{session}/properties"),
        "PropertyList",
        &[],
    );
    assert!(
        props["Items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Name"].as_str().unwrap().starts_with("Input.")),
        "getAppSessionInputsById finds inputs"
    );
    // getAppResultFromAppSessionId: the items of Output.AppResults, typed by Response.Type.
    let outs = e.get_json(&format!(
        "v1pre3/appsessions/{session}/properties/Output.AppResults/items"
    ));
    let r = response(&outs, "getAppSessionPropertyByName");
    assert_eq!(
        r["Type"], "appresult[]",
        "MultiValuePropertyResponse picks its model by Type: {r}"
    );
    let items = r["Items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one appresult per DRAGEN appsession");
    assert!(items[0]["Id"].is_string());
    sdk_parse(&items[0]["Content"], "AppResult", "Output.AppResults[0].Content").unwrap();
    assert_eq!(items[0]["Content"]["Id"].as_str(), Some(ar.as_str()));
    v1_call(
        &e,
        "users/current/appsessions",
        "v1pre3/users/current/appsessions",
        "list<AppSession>",
        &["Id", "Href", "Name"],
    );

    let genomes = v1_call(
        &e,
        "getAvailableGenomes",
        "v1pre3/genomes",
        "list<GenomeV1>",
        &["Id", "Href", "DisplayName"],
    );
    v1_call(
        &e,
        "getGenomeById",
        &format!("v1pre3/genomes/{}", first_id(&genomes)),
        "GenomeV1",
        &["Id", "Build"],
    );
    let apps = e.get_json("v1pre3/applications");
    let apps = response(&apps, "applications")["Items"].as_array().unwrap().clone();
    let mut app_ids: Vec<&str> = apps.iter().map(|a| a["Id"].as_str().unwrap()).collect();
    app_ids.sort();
    app_ids.dedup();
    assert_eq!(app_ids.len(), apps.len(), "every application has an id of its own");
    assert!(apps.len() >= 2);

    // QueryParameters: SortBy and SortDir as the SDK lets them through, applied and echoed.
    let sorted = e.get_json(&format!("v1pre3/projects/{trio}/samples?SortBy=Name&SortDir=Desc"));
    let r = response(&sorted, "getSamplesByProject(SortBy=Name)");
    assert_eq!(
        (r["SortBy"].as_str(), r["SortDir"].as_str()),
        (Some("Name"), Some("Desc"))
    );
    let names: Vec<&str> = r["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Name"].as_str().unwrap())
        .collect();
    let mut want = names.clone();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(names, want);
}

/// The v2 swagger's sort fields per list, copied from the swagger on purpose rather than
/// imported from the emulator (`emulator::paging`): the two must agree, not share a mistake.
const V2_SORTS: &[(&str, &[&str])] = &[
    (
        "biosamples",
        &[
            "Id",
            "BioSampleName",
            "Nickname",
            "DateModified",
            "UserOwnedBy",
            "Project",
            "Subject",
            "LabStatus",
            "Status",
        ],
    ),
    (
        "datasets",
        &[
            "Name",
            "DateCreated",
            "DateModified",
            "AppSessionName",
            "ApplicationName",
            "ProjectName",
            "Size",
            "QcStatus",
        ],
    ),
    (
        "appsessions",
        &[
            "Name",
            "Id",
            "AppId",
            "ExecutionStatus",
            "ModifiedOn",
            "DateCreated",
            "AppName",
            "TotalSize",
            "QcStatus",
            "DeliveryStatus",
        ],
    ),
    (
        "runs",
        &[
            "Id",
            "DateCreated",
            "ExperimentName",
            "FlowcellBarcode",
            "LaneAndQcStatus",
            "PlatformName",
            "Status",
            "InstrumentName",
            "TotalSize",
        ],
    ),
    (
        "libraries",
        &[
            "Id",
            "Name",
            "DateCreated",
            "DateModified",
            "ProjectName",
            "Biomolecule",
            "Status",
            "UserOwnedBy",
        ],
    ),
    ("files", &["Id", "DateCreated", "Path", "Name"]),
    ("properties", &["Name"]),
    ("items", &["DateCreated"]),
];

/// One call of a swagger-generated v2 client: a list (`sorts` names its enum) or an entity.
fn v2_call(e: &common::Emu, call: &str, path: &str, sorts: Option<&str>) -> Value {
    let v = e.get_json(path);
    match sorts {
        Some(kind) => {
            let items = v["Items"]
                .as_array()
                .unwrap_or_else(|| panic!("{call}: Items required: {v}"));
            let p = &v["Paging"];
            for k in ["DisplayedCount", "TotalCount", "Offset", "Limit"] {
                assert!(p[k].is_u64(), "{call}: Paging.{k} is an integer: {p}");
            }
            assert!(
                matches!(p["SortDir"].as_str(), Some("Asc" | "Desc")),
                "{call}: SortDir enum: {p}"
            );
            let allowed = V2_SORTS.iter().find(|(k, _)| *k == kind).unwrap().1;
            let by = p["SortBy"].as_str().unwrap_or("");
            assert!(
                allowed.contains(&by),
                "{call}: SortBy {by:?} not in the swagger's {allowed:?}"
            );
            assert_eq!(p["DisplayedCount"].as_u64(), Some(items.len() as u64), "{call}");
            for it in items {
                if kind != "properties" && kind != "items" {
                    assert!(
                        it["Id"].is_string() && it["Href"].is_string(),
                        "{call}: Id and Href required: {it}"
                    );
                }
            }
        }
        None => assert!(
            v["Id"].is_string() && v["Href"].is_string(),
            "{call}: Id and Href required: {v}"
        ),
    }
    v
}

#[test]
fn v2_calls_parse_as_a_swagger_client_parses_them() {
    let e = common::Emu::demo();
    v2_call(&e, "GetV2UsersCurrent", "v2/users/current", None);
    let projects = e.get_json("v1pre3/users/current/projects");
    let pid = projects["Response"]["Items"][1]["Id"].as_str().unwrap().to_string();
    v2_call(&e, "GetV2ProjectsId", &format!("v2/projects/{pid}"), None);
    v2_call(
        &e,
        "GetV2ProjectsIdDatasets",
        &format!("v2/projects/{pid}/datasets"),
        Some("datasets"),
    );
    let bios = v2_call(
        &e,
        "GetV2Biosamples",
        &format!("v2/biosamples?projectid={pid}&sortby=BioSampleName&sortdir=Desc"),
        Some("biosamples"),
    );
    assert_eq!(
        bios["Paging"]["SortBy"], "BioSampleName",
        "a valid sort is applied and echoed"
    );
    let names: Vec<&str> = bios["Items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["BioSampleName"].as_str().unwrap())
        .collect();
    let mut want = names.clone();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(names, want);
    // Recorded: biosamples asked `sortby=Name` answer sorted by Id and say so.
    let invalid = v2_call(
        &e,
        "GetV2Biosamples(sortby=Name)",
        "v2/biosamples?sortby=Name",
        Some("biosamples"),
    );
    assert_eq!(invalid["Paging"]["SortBy"], "Id");
    let b = bios["Items"][0]["Id"].as_str().unwrap().to_string();
    v2_call(&e, "GetV2BiosamplesId", &format!("v2/biosamples/{b}"), None);
    let libs = v2_call(
        &e,
        "GetV2BiosamplesIdLibraries",
        &format!("v2/biosamples/{b}/libraries"),
        Some("libraries"),
    );
    v2_call(
        &e,
        "GetV2LibrariesId",
        &format!("v2/libraries/{}", libs["Items"][0]["Id"].as_str().unwrap()),
        None,
    );
    let ds = v2_call(
        &e,
        "GetV2Datasets",
        &format!("v2/datasets?inputbiosamples={b}&datasettypes=~common.fastq"),
        Some("datasets"),
    );
    let d = ds["Items"][0]["Id"].as_str().unwrap().to_string();
    v2_call(&e, "GetV2DatasetsId", &format!("v2/datasets/{d}"), None);
    let files = v2_call(
        &e,
        "GetV2DatasetsIdFiles",
        &format!("v2/datasets/{d}/files?directory=%2F&extensions=.fastq.gz"),
        Some("files"),
    );
    assert!(files["Items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["Name"].as_str().unwrap().ends_with(".fastq.gz")));
    let sessions = v2_call(
        &e,
        "GetV2Appsessions",
        &format!("v2/appsessions?input.biosamples={b}"),
        Some("appsessions"),
    );
    let s = sessions["Items"][0]["Id"].as_str().unwrap().to_string();
    v2_call(&e, "GetV2AppsessionsId", &format!("v2/appsessions/{s}"), None);
    let props = v2_call(
        &e,
        "GetV2AppsessionsIdProperties",
        &format!("v2/appsessions/{s}/properties"),
        Some("properties"),
    );
    let name = props["Items"][0]["Name"].as_str().unwrap().to_string();
    v2_call(
        &e,
        "GetV2AppsessionsIdPropertiesNameItems",
        &format!("v2/appsessions/{s}/properties/{name}/items"),
        Some("items"),
    );
    v2_call(
        &e,
        "GetV2AppsessionsIdLogfiles",
        &format!("v2/appsessions/{s}/logfiles"),
        Some("files"),
    );
    let runs = v2_call(&e, "GetV2Runs", "v2/runs", Some("runs"));
    let run = runs["Items"][0]["Id"].as_str().unwrap().to_string();
    let r = v2_call(&e, "GetV2RunsId", &format!("v2/runs/{run}"), None);
    assert!(r["HrefFiles"].is_string());
    v2_call(
        &e,
        "GetV2RunsIdFiles",
        &format!("v2/runs/{run}/files?directory=%2F"),
        Some("files"),
    );
    let stats = e.get_json(&format!("v2/runs/{run}/sequencingstats"));
    assert!(stats["NumCyclesRead1"].is_u64(), "{stats}");
}
