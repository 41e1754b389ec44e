//! The JSON shapes of BaseSpace entities, copied field for field from recorded responses
//! (`tests/fixtures/recorded/`): list items carry fewer fields than single-entity
//! responses (e.g. sample list items have no `HrefFiles`), v1pre3 hrefs are relative, v2
//! hrefs absolute.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::account::{
    biosample_id, dataset_id, library_id, Account, AppSession, Container, ContainerKind, ContainerRef, FileEntry,
    Project,
};
use crate::api::model::format_date;

fn d(t: SystemTime) -> String {
    format_date(t)
}

/// `v` with `fields` moved into the places `json!` left for them (`null`s, so BaseSpace's
/// field order stays): `json!` copies every nested value it is given once more.
fn set<const N: usize>(mut v: Value, fields: [(&str, Value); N]) -> Value {
    for (k, x) in fields {
        v[k] = x;
    }
    v
}

pub fn owner(a: &Account) -> Value {
    json!({
        "Id": a.user_id.to_string(),
        "Href": format!("v1pre3/users/{}", a.user_id),
        "Name": a.user_name,
        "DateCreated": "0001-01-01T00:00:00.0000000Z",
        "GravatarUrl": "https://secure.gravatar.com/avatar/00000000000000000000000000000000.jpg?s=20&d=mm&r=PG"
    })
}

pub fn user(a: &Account) -> Value {
    json!({
        "Id": a.user_id.to_string(),
        "Href": format!("v1pre3/users/{}", a.user_id),
        "Name": a.user_name,
        "Email": "user@example.org",
        "DateCreated": d(super::account::base_time()),
        "DateLastActive": d(SystemTime::now()),
        "GravatarUrl": "https://secure.gravatar.com/avatar/00000000000000000000000000000000.jpg?s=20&d=mm&r=PG",
        "HrefRuns": format!("v1pre3/users/{}/runs", a.user_id),
        "HrefProjects": format!("v1pre3/users/{}/projects", a.user_id)
    })
}

/// Properties carried inline in a single entity's answer, all of them (so a client needs no
/// `…/properties` request).
fn inline_properties(href: &str, props: Vec<Value>) -> Value {
    let n = props.len();
    set(
        json!({"Items": null, "DisplayedCount": n, "TotalCount": n, "Href": format!("{href}/properties")}),
        [("Items", Value::Array(props))],
    )
}

/// What an appresult was made from, as `References`: the samples it read (the SDKs' way from
/// an appresult to its input samples: `Type` and the id at the end of `HrefContent`).
fn references(a: &Account, c: &Container) -> Value {
    Value::Array(
        refs(a, &c.inputs)
            .into_iter()
            .filter(|x| x.kind == ContainerKind::Sample)
            .map(|x| {
                set(
                    json!({"Rel": "using", "Type": "Sample", "Href": format!("v1pre3/samples/{}", x.id),
                           "HrefContent": format!("v1pre3/samples/{}", x.id), "Content": null}),
                    [("Content", sample(a, x, false))],
                )
            })
            .collect(),
    )
}

fn container_size(a: &Account, c: &Container) -> u64 {
    a.size_of(c)
}

fn project_size(a: &Account, p: &Project) -> u64 {
    let s = |k, ids: &Vec<u64>| {
        ids.iter()
            .filter_map(|i| a.container(k, *i))
            .map(|c| container_size(a, c))
            .sum::<u64>()
    };
    s(ContainerKind::Sample, &p.samples)
        + s(ContainerKind::AppResult, &p.appresults)
        + s(ContainerKind::Dataset, &p.datasets)
}

pub fn project(a: &Account, p: &Project, full: bool) -> Value {
    let href = format!("v1pre3/projects/{}", p.id);
    let mut v = set(
        json!({
            "Id": p.id.to_string(),
            "UserOwnedBy": null,
            "Href": href,
            "Name": p.name,
            "Description": p.description,
            "DateCreated": d(p.created),
            "DateModified": d(p.created),
            "HasCollaborators": false,
            "TotalSize": project_size(a, p)
        }),
        [("UserOwnedBy", owner(a))],
    );
    if full {
        let m = v.as_object_mut().unwrap();
        m.insert("HrefSamples".into(), json!(format!("{href}/samples")));
        m.insert("HrefAppResults".into(), json!(format!("{href}/appresults")));
        m.insert(
            "HrefBaseSpaceUI".into(),
            json!(format!("https://basespace.illumina.com/project/{}/emulated", p.id)),
        );
        m.insert("Properties".into(), inline_properties(&href, Vec::new()));
    }
    v
}

/// An application's id: one per application name, stable.
pub fn application_id(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    1_000_000 + h % 9_000_000
}

/// The applications the account's appsessions ran, by name.
pub fn application_names(a: &Account) -> Vec<String> {
    let mut v: Vec<String> = a.appsessions.values().map(|x| x.application.clone()).collect();
    v.sort();
    v.dedup();
    v
}

pub fn application(name: &str) -> Value {
    let id = application_id(name);
    json!({
        "Id": id.to_string(),
        "Href": format!("v1pre3/applications/{id}"),
        "Name": name,
        "CompanyName": "Illumina, Inc.",
        "VersionNumber": "1.0.0",
        "ShortDescription": name,
        "PublishStatus": "Published",
        "IsBillingActivated": false,
        "Category": "Native"
    })
}

pub fn appsession_v1(a: &Account, s: &AppSession) -> Value {
    set(
        json!({
            "Id": s.id.to_string(),
            "Name": s.name,
            "Href": format!("v1pre3/appsessions/{}", s.id),
            "Application": null,
            "UserCreatedBy": null,
            "Status": s.status,
            "QcStatus": "Undefined",
            "StatusSummary": summary(s.status),
            "DateCreated": d(s.created),
            "ModifiedOn": d(s.created),
            "DateCompleted": d(s.created),
            "TotalSize": appsession_size(a, s)
        }),
        [
            ("Application", application(&s.application)),
            ("UserCreatedBy", owner(a)),
        ],
    )
}

/// `appsessions/{id}` (v1pre3): the list form with its references and properties inline.
pub fn appsession_v1_full(a: &Account, s: &AppSession) -> Value {
    let href = format!("v1pre3/appsessions/{}", s.id);
    let mut v = appsession_v1(a, s);
    v["OriginatingUri"] = json!(format!(
        "https://basespace.illumina.com/apps/{}",
        application_id(&s.application)
    ));
    v["References"] = json!([]);
    v["Properties"] = inline_properties(&href, appsession_properties(a, s));
    v
}

/// `v2/appsessions/{id}`: the list form with its logs' href and properties inline.
pub fn appsession_v2_full(a: &Account, s: &AppSession, base: &str) -> Value {
    let href = format!("{base}/v2/appsessions/{}", s.id);
    let mut v = appsession_v2(a, s, base);
    v["HrefLogs"] = json!(format!("{href}/logfiles"));
    v["IsDeleted"] = json!(false);
    v["Properties"] = inline_properties(&href, to_v2_properties(appsession_properties(a, s)));
    v
}

fn appsession_size(a: &Account, s: &AppSession) -> u64 {
    s.outputs
        .iter()
        .filter_map(|r| a.containers.get(r))
        .map(|c| container_size(a, c))
        .sum()
}

pub fn appsession_v2(a: &Account, s: &AppSession, base: &str) -> Value {
    set(
        json!({
            "Id": s.id.to_string(),
            "Name": s.name,
            "Href": format!("{base}/v2/appsessions/{}", s.id),
            "Application": null,
            "UserCreatedBy": null,
            "ExecutionStatus": s.status,
            "QcStatus": "Undefined",
            "StatusSummary": summary(s.status),
            "Purpose": "Analysis",
            "DateCreated": d(s.created),
            "DateModified": d(s.created),
            "DateCompleted": d(s.created),
            "TotalSize": appsession_size(a, s),
            "DeliveryStatus": "None",
            "ContainsComments": false,
            "HrefComments": format!("{base}/v2/appsessions/{}/comments", s.id)
        }),
        [
            ("Application", application(&s.application)),
            ("UserCreatedBy", owner(a)),
        ],
    )
}

/// v2 dataset for a sample or appresult (as `datasets?appsessionids=` lists them).
pub fn dataset_v2(a: &Account, c: &Container, base: &str) -> Value {
    let v1 = match c.kind {
        ContainerKind::Sample => Some(format!("sample.{}", c.id)),
        ContainerKind::AppResult => Some(format!("appresult.{}", c.id)),
        _ => None,
    };
    let (dtype, dname, conforms) = super::account::dataset_type(c);
    let ds = dataset_id(c);
    let session = c
        .appsession
        .and_then(|s| a.appsessions.get(&s))
        .map(|s| appsession_v2(a, s, base));
    let proj = c.project.and_then(|p| a.project(p)).map(|p| project_v2(a, p, base));
    set(
        json!({
            "Id": ds,
            "Href": format!("{base}/v2/datasets/{ds}"),
            "HrefFiles": format!("{base}/v2/datasets/{ds}/files"),
            "Name": c.name,
            "DateCreated": d(c.created),
            "DateModified": d(c.created),
            "AppSession": null,
            "Project": null,
            "TotalSize": container_size(a, c),
            "IsArchived": false,
            "UserOwnedBy": null,
            "DatasetType": {"Id": dtype, "Href": format!("{base}/v2/datasettypes/{dtype}"), "Name": dname, "ConformsToIds": conforms},
            "Attributes": null,
            "QcStatus": "Undefined",
            "QcStatusSummary": "",
            "UploadStatus": "Completed",
            "UploadStatusSummary": "",
            "ValidationStatus": "Passed",
            "V1pre3Id": v1,
            "HrefComments": format!("{base}/v2/datasets/{ds}/comments"),
            "ContainsComments": false
        }),
        [
            ("AppSession", session.unwrap_or(Value::Null)),
            ("Project", proj.unwrap_or(Value::Null)),
            ("UserOwnedBy", owner(a)),
            ("Attributes", attributes(a, c)),
        ],
    )
}

/// [`dataset_v2`] with its properties inline, as `v2/datasets?include=properties` lists it.
pub fn dataset_v2_with_properties(a: &Account, c: &Container, base: &str) -> Value {
    a.rendered(c, 2, || dataset_with_properties_json(a, c, base))
}

fn dataset_with_properties_json(a: &Account, c: &Container, base: &str) -> Value {
    let mut v = dataset_v2(a, c, base);
    let props = dataset_properties(a, c, base);
    let href = format!("{}/properties", v["Href"].as_str().unwrap_or(""));
    let n = props.len();
    v["Properties"] = set(
        json!({"Items": null, "DisplayedCount": n, "TotalCount": n, "Href": href}),
        [("Items", Value::Array(props))],
    );
    v
}

/// The reference genomes (`genomes`): id, display name, species, source, build.
pub const GENOMES: &[(u64, &str, &str, &str, &str)] = &[
    (4, "Homo sapiens - UCSC (hg19)", "Homo sapiens", "UCSC", "hg19"),
    (12, "Mus musculus - UCSC (mm10)", "Mus musculus", "UCSC", "mm10"),
    (31, "Homo sapiens - UCSC (hg38)", "Homo sapiens", "UCSC", "hg38"),
];

pub fn genome(g: &(u64, &str, &str, &str, &str)) -> Value {
    let (id, display, species, source, build) = *g;
    json!({
        "Id": id.to_string(), "DisplayName": display, "SpeciesName": species, "Source": source,
        "Build": build, "Href": format!("v1pre3/genomes/{id}"), "HrefAnnotations": format!("v1pre3/genomes/{id}/annotations")
    })
}

fn library(a: &Account, c: &Container) -> Value {
    let lib = c.id + 100_000_000;
    let project = c.project.and_then(|p| a.project(p)).map(|p| project(a, p, false));
    let biological = set(
        json!({
            "Id": (c.id + 200_000_000).to_string(),
            "Href": format!("v1pre3/biologicalsamples/{}", c.id + 200_000_000),
            "UserSampleId": c.name,
            "NucleicAcid": "DNA",
            "Project": null,
            "UserOwnedBy": null,
            "DateModified": d(c.created)
        }),
        [
            ("Project", project.clone().unwrap_or(Value::Null)),
            ("UserOwnedBy", owner(a)),
        ],
    );
    set(
        json!({
            "OwnerUser": null,
            "Id": lib.to_string(),
            "Href": format!("v1pre3/libraries/{lib}"),
            "BiologicalSample": null,
            "Index1": {"Id": "6497495", "Name": "7015", "Sequence": "ACGTACGT", "Incompatibility": "None"},
            "Index2": {"Id": "6497504", "Name": "5002", "Sequence": "TGCATGCA", "Incompatibility": "None"},
            "DateModified": d(c.created),
            "LibraryPrep": {
                "Id": "1014015", "Href": "v1pre3/libraryprepkits/1014015", "Name": "Unknown",
                "ValidIndexingStrategies": "None,SingleIndex,DualIndex", "ValidReadTypes": "SingleRead,PairedEnd",
                "NumIndexCycles": 0, "DateModified": d(c.created), "State": "Active", "DefaultRead1Cycles": 0, "DefaultRead2Cycles": 0
            },
            "Project": null,
            "LibraryName": c.name,
            "State": "Active"
        }),
        [
            ("OwnerUser", owner(a)),
            ("BiologicalSample", biological),
            ("Project", project.unwrap_or(Value::Null)),
        ],
    )
}

pub fn sample(a: &Account, c: &Container, full: bool) -> Value {
    a.rendered(c, full as u8, || sample_json(a, c, full))
}

fn sample_json(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/samples/{}", c.id);
    let clusters = reads_of(a, c);
    let mut v = set(
        json!({
            "Id": c.id.to_string(),
            "Href": href,
            "IsMerged": false,
            "UserOwnedBy": null,
            "Name": c.name,
            "ExperimentName": experiment_name(a, c),
            "SampleId": c.name,
            "Status": "Complete",
            "StatusSummary": "Application completed successfully",
            "DateCreated": d(c.created),
            "TotalSize": container_size(a, c),
            "Library": null,
            "Genome": null,
            "Read1": read_length(c),
            "Read2": read_length(c),
            // As recorded for paired-end samples: NumReads* and TotalClusters* count read
            // pairs (the records of R1), TotalReads* both reads.
            "NumReadsPF": clusters,
            "NumReadsRaw": clusters,
            "TotalReadsRaw": 2 * clusters,
            "TotalReadsPF": 2 * clusters,
            "TotalClustersRaw": clusters,
            "TotalClustersPF": clusters,
            "IsPairedEnd": true
        }),
        [
            ("UserOwnedBy", owner(a)),
            ("Library", library(a, c)),
            ("Genome", genome(&GENOMES[0])),
        ],
    );
    if full {
        let m = v.as_object_mut().unwrap();
        m.insert("HrefGenome".into(), json!("v1pre3/genomes/4"));
        m.insert("SampleNumber".into(), json!(1));
        m.insert("HrefFiles".into(), json!(format!("{href}/files")));
        m.insert("References".into(), json!([]));
        m.insert(
            "Properties".into(),
            inline_properties(&href, container_properties(a, c)),
        );
        let session = c
            .appsession
            .and_then(|s| a.appsessions.get(&s))
            .map(|s| appsession_v1(a, s));
        m.insert("AppSession".into(), session.unwrap_or(Value::Null));
        let projects: Vec<Value> = c
            .project
            .and_then(|p| a.project(p))
            .map(|p| project(a, p, false))
            .into_iter()
            .collect();
        m.insert("Projects".into(), Value::Array(projects));
    }
    v
}

pub fn appresult(a: &Account, c: &Container, full: bool) -> Value {
    a.rendered(c, full as u8, || appresult_json(a, c, full))
}

fn appresult_json(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/appresults/{}", c.id);
    let session = c
        .appsession
        .and_then(|s| a.appsessions.get(&s))
        .map(|s| appsession_v1(a, s));
    let mut v = set(
        json!({
            "Id": c.id.to_string(),
            "Href": href,
            "UserOwnedBy": null,
            "Name": c.name,
            "Status": c.status,
            "StatusSummary": summary(c.status),
            "DateCreated": d(c.created),
            "TotalSize": container_size(a, c),
            "AppSession": null
        }),
        [
            ("UserOwnedBy", owner(a)),
            ("AppSession", session.unwrap_or(Value::Null)),
        ],
    );
    if full {
        let m = v.as_object_mut().unwrap();
        m.insert("Description".into(), json!(c.name));
        m.insert("HrefFiles".into(), json!(format!("{href}/files")));
        m.insert("References".into(), references(a, c));
        m.insert(
            "Properties".into(),
            inline_properties(&href, container_properties(a, c)),
        );
        let projects: Vec<Value> = c
            .project
            .and_then(|p| a.project(p))
            .map(|p| project(a, p, false))
            .into_iter()
            .collect();
        m.insert("Projects".into(), Value::Array(projects));
    }
    v
}

/// A run's instrument, read off its folder name (`YYMMDD_<instrument>_<number>_<flowcell>`,
/// as instruments name them): the instrument id, its type and the flowcell.
pub struct Instrument<'a> {
    pub name: &'a str,
    pub kind: &'static str,
    pub number: u64,
    pub flowcell: &'a str,
}

pub fn instrument(run_name: &str) -> Instrument<'_> {
    let parts: Vec<&str> = run_name.split('_').collect();
    let name = parts.get(1).copied().unwrap_or("A01234");
    let kind = match name {
        n if n.starts_with("LH") => "NovaSeqXPlus",
        n if n.starts_with("VH") => "NextSeq2000",
        n if n.starts_with("NB") || n.starts_with("NS") => "NextSeq",
        n if n.starts_with("FS") => "iSeq100",
        n if n.starts_with('M') => "MiSeq",
        n if n.starts_with('K') || n.starts_with('J') || n.starts_with('E') => "HiSeq",
        _ => "NovaSeq6000",
    };
    let flowcell = parts.get(3).copied().unwrap_or("EMULATEDXX");
    // NovaSeq runs name the flowcell after its side (`AH…`/`BH…`).
    let flowcell = match kind {
        "NovaSeq6000" if flowcell.len() > 1 && (flowcell.starts_with('A') || flowcell.starts_with('B')) => {
            &flowcell[1..]
        }
        _ => flowcell,
    };
    let number = parts.get(2).and_then(|n| n.parse().ok()).unwrap_or(1);
    Instrument {
        name,
        kind,
        number,
        flowcell,
    }
}

/// Whether a run passes the run filters (`InstrumentType`, `FlowcellBarcode`,
/// `ReagentBarcode`, v2 `experimentname`).
pub fn run_matches(_a: &Account, c: &Container, q: &super::http::Query) -> bool {
    let i = instrument(&c.name);
    let is = |k: &str, v: &str| q.list(k).is_none_or(|vs| vs.iter().any(|x| x.eq_ignore_ascii_case(v)));
    is("instrumenttype", i.kind)
        && is("flowcellbarcode", i.flowcell)
        && is("reagentbarcode", &reagent(c))
        && is("experimentname", c.experiment())
}

fn reagent(c: &Container) -> String {
    format!("RGT{:08}", c.id % 100_000_000)
}

/// A run's sequencing figures, from what it holds (cycles from the emulated instrument).
pub fn sequencing_stats(a: &Account, c: &Container, href_base: &str) -> Value {
    let samples = a
        .containers
        .values()
        .filter(|s| s.kind == ContainerKind::Sample && s.inputs.contains(&ContainerRef { kind: c.kind, id: c.id }))
        .map(|s| reads_of(a, s))
        .sum::<u64>();
    let i = instrument(&c.name);
    let read = run_cycles(a, c);
    let lanes = match i.kind {
        "MiSeq" | "iSeq100" => 1,
        "NovaSeq6000" => 2,
        _ => 4,
    };
    let clusters_pf = samples / 2;
    let yield_gb = (samples as f64 * read as f64) / 1e9;
    json!({
        "Href": format!("{href_base}/runs/{}/sequencingstats", c.id),
        "Chemistry": "Default",
        "NumLanes": lanes,
        "NumCyclesRead1": read, "NumCyclesRead2": read, "NumCyclesIndex1": 8, "NumCyclesIndex2": 8,
        "IsIndexed": true,
        "ClustersPf": clusters_pf,
        "Clusters": clusters_pf + clusters_pf / 10,
        "PercentPf": 90.9,
        "PercentGtQ30": 91.2,
        "PercentGtQ30R1": 93.4,
        "PercentGtQ30R2": 89.1,
        "ReadsPfTotal": samples,
        "ReadsTotal": samples + samples / 10,
        "YieldTotal": (yield_gb * 1000.0).round() / 1000.0,
        "ErrorRate": 0.31,
        "PercentAligned": 0.0
    })
}

pub fn run(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/runs/{}", c.id);
    let i = instrument(&c.name);
    let mut v = set(
        json!({
            "Id": c.id.to_string(),
            "Href": href,
            "Name": c.name,
            "Number": i.number,
            "ExperimentName": c.experiment(),
            "Status": "Complete",
            "ReagentBarcode": reagent(c),
            "FlowcellBarcode": i.flowcell,
            "DateCreated": d(c.created),
            "DateModified": d(c.created),
            "UserOwnedBy": null,
            "UserUploadedBy": null,
            "TotalSize": container_size(a, c),
            "PlatformName": i.kind,
            "Workflow": "Generate FASTQ",
            "InstrumentName": i.name,
            "InstrumentType": i.kind,
            "NumCyclesRead1": run_cycles(a, c),
            "NumCyclesRead2": run_cycles(a, c),
            "NumCyclesIndex1": 8,
            "NumCyclesIndex2": 8,
            "HrefBaseSpaceUI": format!("https://basespace.illumina.com/run/{}/emulated", c.id),
            "HasCollaborators": false,
            "IsArchived": false
        }),
        [("UserOwnedBy", owner(a)), ("UserUploadedBy", owner(a))],
    );
    if full {
        let m = v.as_object_mut().unwrap();
        m.insert("HrefFiles".into(), json!(format!("{href}/files")));
        m.insert("HrefSamples".into(), json!(format!("{href}/samples")));
        m.insert(
            "Properties".into(),
            inline_properties(&href, container_properties(a, c)),
        );
        m.insert("SequencingStats".into(), sequencing_stats(a, c, "v1pre3"));
    }
    v
}

/// A v2 run (`runs`, `runs/{id}`): v2 names, absolute hrefs, its v1pre3 id.
pub fn run_v2(a: &Account, c: &Container, base: &str, full: bool) -> Value {
    let i = instrument(&c.name);
    let href = format!("{base}/v2/runs/{}", c.id);
    let mut v = set(
        json!({
            "Id": c.id.to_string(),
            "Name": c.name,
            "ExperimentName": c.experiment(),
            "DateCreated": d(c.created),
            "DateModified": d(c.created),
            "Status": "Complete",
            "UserOwnedBy": null,
            "Instrument": {"Id": i.number, "Name": i.name, "PlatformName": i.kind, "Type": i.kind},
            "FlowcellBarcode": i.flowcell,
            "ReagentBarcode": reagent(c),
            "LaneAndQcStatus": "QcPassed",
            "Workflow": "Generate FASTQ",
            "TotalSize": container_size(a, c),
            "UserUploadedBy": null,
            "UploadStatus": "Completed",
            "IsDeleted": false,
            "IsFileDataDeleted": false,
            "IsArchived": false,
            "Href": href,
            "HrefFiles": format!("{href}/files"),
            "V1Pre3Id": c.id.to_string()
        }),
        [("UserOwnedBy", owner(a)), ("UserUploadedBy", owner(a))],
    );
    if full {
        v["SequencingStats"] = sequencing_stats(a, c, &format!("{base}/v2"));
        v["Properties"] = inline_properties(&href, to_v2_properties(container_properties(a, c)));
    }
    v
}

pub fn file(f: &FileEntry, full: bool) -> Value {
    let href = format!("v1pre3/files/{}", f.id);
    let mut v = json!({
        "Id": f.id.to_string(),
        "Href": href,
        "HrefContent": format!("{href}/content"),
        "Name": f.name(),
        "ContentType": f.content_type,
        "Size": f.size,
        "Path": f.path,
        "IsArchived": false,
        "DateCreated": d(f.created),
        "DateModified": d(f.created),
        "ETag": f.etag()
    });
    let m = v.as_object_mut().unwrap();
    if full {
        m.insert("UploadStatus".into(), json!("complete"));
        m.insert("Properties".into(), inline_properties(&href, Vec::new()));
    } else {
        m.insert("IdAsLong".into(), json!(f.id));
    }
    v
}

/// A sample's `ExperimentName`: that of the run it was demultiplexed from, else its
/// project's name.
fn experiment_name(a: &Account, c: &Container) -> String {
    c.inputs
        .iter()
        .find(|r| r.kind == ContainerKind::Run)
        .and_then(|r| a.containers.get(r))
        .map(|r| r.experiment().to_string())
        .or_else(|| c.project.and_then(|p| a.project(p)).map(|p| p.name.clone()))
        .unwrap_or_default()
}

/// `v2/users/current`.
pub fn user_v2(a: &Account, base: &str) -> Value {
    let mut v = user(a);
    v["Href"] = json!(format!("{base}/v2/users/{}", a.user_id));
    v["HrefRuns"] = json!(format!("{base}/v2/runs"));
    v["HrefProjects"] = json!(format!("{base}/v2/projects"));
    v["IsWorkgroup"] = json!(false);
    v["IsPublicDomainUser"] = json!(false);
    v
}

/// `v2/projects/{id}`.
pub fn project_v2_full(a: &Account, p: &Project, base: &str) -> Value {
    let mut v = project(a, p, true);
    let href = format!("{base}/v2/projects/{}", p.id);
    v["Href"] = json!(href);
    v["HrefSamples"] = json!(format!("{href}/samples"));
    v["HrefAppResults"] = json!(format!("{href}/appresults"));
    v["Properties"] = inline_properties(&href, Vec::new());
    v
}

/// v1pre3 properties in the v2 shape: an array's items under `<Kind>Items` (`RunItems`,
/// `ContentItems` for strings, …), as BaseSpace's v2 answers carry them.
pub fn to_v2_properties(props: Vec<Value>) -> Vec<Value> {
    props
        .into_iter()
        .map(|mut p| {
            let kind = p["Type"].as_str().unwrap_or("").trim_end_matches("[]").to_string();
            if let Some(items) = p.as_object_mut().and_then(|m| m.remove("Items")) {
                let key = match kind.as_str() {
                    "string" => "ContentItems".to_string(),
                    "biosample" => "BioSampleItems".to_string(),
                    "appsession" => "AppSessionItems".to_string(),
                    "library" => "SampleLibraryItems".to_string(),
                    k => {
                        let mut c = k.chars();
                        c.next()
                            .map_or(String::new(), |f| f.to_ascii_uppercase().to_string() + c.as_str())
                            + "Items"
                    }
                };
                p[key.as_str()] = items;
            }
            p
        })
        .collect()
}

/// The property named `name` among `props` (names compare case-insensitively).
pub fn find_property(props: Vec<Value>, name: &str) -> Option<Value> {
    props
        .into_iter()
        .find(|p| p["Name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
}

/// A property's values: an array's items, or its one `Content`.
pub fn property_values(mut p: Value) -> Vec<Value> {
    let Some(m) = p.as_object_mut() else { return Vec::new() };
    let key = m.keys().find(|k| k.ends_with("Items") && m[*k].is_array()).cloned();
    match key.and_then(|k| m.remove(&k)) {
        Some(Value::Array(items)) => items,
        _ => m.remove("Content").into_iter().collect(),
    }
}

/// A v2 project object (inside biosamples and datasets).
fn project_v2(a: &Account, p: &Project, base: &str) -> Value {
    let mut v = project(a, p, false);
    v["Href"] = json!(format!("{base}/v2/projects/{}", p.id));
    v
}

/// A v2 biosample for a sample (`v2/biosamples` item and `v2/biosamples/{id}`).
pub fn biosample(a: &Account, c: &Container, base: &str) -> Value {
    let id = biosample_id(c.id);
    let project = c.project.and_then(|p| a.project(p)).map(|p| project_v2(a, p, base));
    set(
        json!({
            "Id": id.to_string(),
            "Href": format!("{base}/v2/biosamples/{id}"),
            "UserOwnedBy": null,
            "BioSampleName": c.name,
            "DefaultProject": null,
            "DateModified": d(c.created),
            "DateCreated": d(c.created),
            "Status": "New",
            "LabStatus": "Sequencing"
        }),
        [
            ("UserOwnedBy", owner(a)),
            ("DefaultProject", project.unwrap_or(Value::Null)),
        ],
    )
}

/// A sample's library (`Input.Libraries` of its FASTQ dataset).
pub fn library_v2(a: &Account, c: &Container, base: &str) -> Value {
    let id = library_id(c.id);
    let project = c.project.and_then(|p| a.project(p)).map(|p| project_v2(a, p, base));
    set(
        json!({
            "Id": id.to_string(),
            "Href": format!("{base}/v2/libraries/{id}"),
            "Name": c.name,
            "DateCreated": d(c.created),
            "DateModified": d(c.created),
            "Status": "Active",
            "BioSample": null,
            "Biomolecule": "DNA",
            "LibraryPrep": {"Id": "1", "Href": format!("{base}/v2/libraryprep/1"), "Name": "Illumina DNA Prep"},
            "Project": null,
            "UserOwnedBy": null
        }),
        [
            ("BioSample", biosample(a, c, base)),
            ("Project", project.unwrap_or(Value::Null)),
            ("UserOwnedBy", owner(a)),
        ],
    )
}

/// A v2 file (dataset files, appsession log files): v2 hrefs are absolute.
pub fn file_v2(f: &FileEntry, base: &str) -> Value {
    let mut v = file(f, false);
    v["Href"] = json!(format!("{base}/v2/files/{}", f.id));
    v["HrefContent"] = json!(format!("{base}/v2/files/{}/content", f.id));
    v
}

/// One property in the v1pre3 shape: `Content` for a single value, `Items` for an array.
fn property(owner_href: &str, name: &str, kind: &str, value: Value) -> Value {
    let mut p = json!({
        "Type": kind,
        "Href": format!("{owner_href}/properties/{name}"),
        "Name": name,
        "Description": ""
    });
    match value {
        Value::Array(items) => {
            let n = items.len();
            p["Items"] = Value::Array(items);
            p["ItemsDisplayedCount"] = json!(n);
            p["ItemsTotalCount"] = json!(n);
        }
        other => p["Content"] = other,
    }
    p
}

/// The v2 shape of an array property: items under `<Kind>Items`, as BaseSpace's v2
/// responses carry them (`SampleLibraryItems` for `library[]`, recorded).
fn property_v2(owner_href: &str, name: &str, kind: &str, items_key: &str, items: Vec<Value>) -> Value {
    let n = items.len();
    let mut p = json!({
        "Type": kind,
        "Href": format!("{owner_href}/properties/{name}"),
        "Name": name,
        "Description": "",
        items_key: null,
        "HrefItems": format!("{owner_href}/properties/{name}/items"),
        "ItemsDisplayedCount": n,
        "ItemsTotalCount": n
    });
    p[items_key] = Value::Array(items);
    p
}

fn refs<'a>(a: &'a Account, rs: impl IntoIterator<Item = &'a ContainerRef>) -> Vec<&'a Container> {
    rs.into_iter().filter_map(|r| a.containers.get(r)).collect()
}

/// An entity as a property item: in full, so it names its project (`Projects`).
/// A sample's read pairs: what its builder counted in its FASTQs, else an estimate from
/// their size (~150 bytes a read, gzipped, two reads a pair).
pub fn reads_of(a: &Account, c: &Container) -> u64 {
    c.reads
        .map_or_else(|| (container_size(a, c) / 300).max(1), |(pairs, _)| pairs)
}

/// A sample's read length (151 unless its builder says).
pub fn read_length(c: &Container) -> u32 {
    c.reads.map_or(151, |(_, len)| len)
}

/// The cycles of a run's reads: its samples' read length.
fn run_cycles(a: &Account, c: &Container) -> u32 {
    let me = ContainerRef { kind: c.kind, id: c.id };
    a.containers
        .values()
        .filter(|s| s.kind == ContainerKind::Sample && s.inputs.contains(&me))
        .map(read_length)
        .min()
        .unwrap_or(151)
}

/// An entity as a property item: its list form, as recorded (a sample's project is in its
/// `Library`).
fn compact(a: &Account, c: &Container) -> Value {
    match c.kind {
        ContainerKind::Sample => sample(a, c, false),
        ContainerKind::AppResult => appresult(a, c, false),
        ContainerKind::Run => run(a, c, false),
        ContainerKind::Dataset => json!({"Id": dataset_id(c), "Name": c.name}),
    }
}

/// `v1pre3/{samples|appresults|runs}/{id}/properties`: how a container was made and what
/// was made of it.
pub fn container_properties(a: &Account, c: &Container) -> Vec<Value> {
    let href = match c.kind {
        ContainerKind::Sample => format!("v1pre3/samples/{}", c.id),
        ContainerKind::AppResult => format!("v1pre3/appresults/{}", c.id),
        ContainerKind::Run => format!("v1pre3/runs/{}", c.id),
        ContainerKind::Dataset => return Vec::new(),
    };
    let list = |cs: Vec<&Container>| Value::Array(cs.into_iter().map(|x| compact(a, x)).collect());
    match c.kind {
        ContainerKind::Sample => vec![property(&href, "Input.Runs", "run[]", list(refs(a, &c.inputs)))],
        ContainerKind::AppResult => vec![property(&href, "Input.Samples", "sample[]", list(refs(a, &c.inputs)))],
        ContainerKind::Dataset => Vec::new(),
        ContainerKind::Run => {
            let me = ContainerRef {
                kind: ContainerKind::Run,
                id: c.id,
            };
            let made: Vec<&Container> = a.datasets().into_iter().filter(|s| s.inputs.contains(&me)).collect();
            vec![property(&href, "Output.Samples", "sample[]", list(made))]
        }
    }
}

/// `v1pre3/appsessions/{id}/properties`: its inputs (the run and its sample sheet for a
/// FASTQ generation, the samples for an analysis) and outputs.
pub fn appsession_properties(a: &Account, s: &AppSession) -> Vec<Value> {
    let href = format!("v1pre3/appsessions/{}", s.id);
    let outs = refs(a, &s.outputs);
    let mut inputs: Vec<ContainerRef> = Vec::new();
    for c in &outs {
        for i in &c.inputs {
            if !inputs.contains(i) {
                inputs.push(*i);
            }
        }
    }
    let list = |cs: Vec<&Container>| Value::Array(cs.into_iter().map(|x| compact(a, x)).collect());
    let of = |k: ContainerKind| -> Vec<&Container> { refs(a, inputs.iter().filter(|r| r.kind == k)) };
    let mut props = Vec::new();
    let runs = of(ContainerKind::Run);
    if let Some(run) = runs.first() {
        let mut sheet = format!(
            "[Header]\nExperiment Name,{}\n\n[Data]\nSample_ID,Sample_Name\n",
            run.name
        );
        for c in outs.iter().filter(|c| c.kind == ContainerKind::Sample) {
            sheet.push_str(&format!("{},{}\n", c.name, c.name));
        }
        props.push(property(&href, "Input.sample-sheet", "string", json!(sheet)));
    }
    if !runs.is_empty() {
        props.push(property(&href, "Input.Runs", "run[]", list(runs)));
    }
    let samples = of(ContainerKind::Sample);
    if !samples.is_empty() {
        props.push(property(&href, "Input.Samples", "sample[]", list(samples)));
    }
    for (k, name, t) in [
        (ContainerKind::Sample, "Output.Samples", "sample[]"),
        (ContainerKind::AppResult, "Output.AppResults", "appresult[]"),
    ] {
        let made: Vec<&Container> = outs.iter().copied().filter(|c| c.kind == k).collect();
        if !made.is_empty() {
            props.push(property(&href, name, t, list(made)));
        }
    }
    props
}

/// `v2/datasets/{id}/properties`: a FASTQ dataset's library and run (as recorded,
/// `Input.Libraries` of type `library[]`), an analysis dataset's input biosamples.
pub fn dataset_properties(a: &Account, c: &Container, base: &str) -> Vec<Value> {
    let href = format!("{base}/v2/datasets/{}", dataset_id(c));
    match c.kind {
        ContainerKind::Sample => {
            let runs: Vec<Value> = refs(a, &c.inputs).into_iter().map(|r| run(a, r, false)).collect();
            let mut v = vec![
                json!({
                    "Type": "map",
                    "Href": format!("{href}/properties/BaseSpace.Metrics.FastQ"),
                    "Name": "BaseSpace.Metrics.FastQ",
                    "Description": "",
                    "ContentMap": [{"Key": "LaneNumber", "Values": ["1"]}]
                }),
                property_v2(
                    &href,
                    "Input.Libraries",
                    "library[]",
                    "SampleLibraryItems",
                    vec![library_v2(a, c, base)],
                ),
            ];
            if !runs.is_empty() {
                v.push(property_v2(&href, "Input.Runs", "run[]", "RunItems", runs));
            }
            v
        }
        _ => {
            let bios: Vec<Value> = refs(a, &c.inputs).into_iter().map(|s| biosample(a, s, base)).collect();
            vec![property_v2(
                &href,
                "Input.BioSamples",
                "biosample[]",
                "BioSampleItems",
                bios,
            )]
        }
    }
}

/// A dataset's `Attributes`: read counts for FASTQ datasets (as recorded), none otherwise.
fn attributes(a: &Account, c: &Container) -> Value {
    if c.kind != ContainerKind::Sample {
        return json!({});
    }
    let clusters = reads_of(a, c);
    json!({"common_fastq": {
        "MaxLengthRead1": read_length(c), "MaxLengthRead2": read_length(c), "IsPairedEnd": true,
        "TotalClustersPF": clusters, "TotalClustersRaw": clusters,
        "TotalReadsPF": 2 * clusters, "TotalReadsRaw": 2 * clusters,
        "MaxLengthIndexRead1": 8, "MaxLengthIndexRead2": 8
    }})
}

/// What BaseSpace says of an appsession or appresult in this status.
fn summary(status: &str) -> &'static str {
    match status {
        "Complete" => "Application completed successfully",
        _ => "",
    }
}

/// A trash item (`v2/trash`): `TrashItemType` says what it was, `DeleteType` what went.
pub fn trash_item(a: &Account, t: &super::account::TrashItem, base: &str) -> Value {
    use super::account::Trashed;
    let (kind, size) = match &t.what {
        Trashed::Project(p) => ("DeletedProject", project_size(a, p)),
        Trashed::Container(r) => {
            let size = a.containers.get(r).map_or(0, |c| container_size(a, c));
            let kind = match r.kind {
                ContainerKind::Sample => "DeletedSample",
                ContainerKind::AppResult => "DeletedAppResult",
                ContainerKind::Dataset => "DeletedDataset",
                ContainerKind::Run => "DeletedRun",
            };
            (kind, size)
        }
    };
    json!({
        "Id": t.id.to_string(),
        "Href": format!("{base}/v2/trash/{}", t.id),
        "Name": t.name,
        "TrashItemType": kind,
        "DeleteType": "FILEDATA+METADATA",
        "DateDeleted": d(t.deleted),
        "DateCreated": d(t.deleted),
        "Size": size,
        "UserOwnedBy": owner(a)
    })
}
