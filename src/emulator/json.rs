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

fn properties(href: String) -> Value {
    json!({"Items": [], "DisplayedCount": 0, "TotalCount": 0, "Href": format!("{href}/properties")})
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
        m.insert("Properties".into(), properties(href));
    }
    v
}

fn application(name: &str) -> Value {
    json!({
        "Id": "1375375",
        "Href": "v1pre3/applications/1375375",
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

fn genome() -> Value {
    json!({
        "Id": "4", "DisplayName": "Homo sapiens - UCSC (hg19)", "SpeciesName": "Homo sapiens", "Source": "UCSC",
        "Build": "hg19", "Href": "v1pre3/genomes/4", "HrefAnnotations": "v1pre3/genomes/4/annotations"
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
    let reads = (container_size(a, c) / 150).max(1);
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
            "Read1": 151,
            "Read2": 151,
            "NumReadsPF": reads,
            "NumReadsRaw": reads,
            "TotalReadsRaw": reads,
            "TotalReadsPF": reads,
            "TotalClustersRaw": reads / 2,
            "TotalClustersPF": reads / 2,
            "IsPairedEnd": true
        }),
        [
            ("UserOwnedBy", owner(a)),
            ("Library", library(a, c)),
            ("Genome", genome()),
        ],
    );
    if full {
        let m = v.as_object_mut().unwrap();
        m.insert("HrefGenome".into(), json!("v1pre3/genomes/4"));
        m.insert("SampleNumber".into(), json!(1));
        m.insert("HrefFiles".into(), json!(format!("{href}/files")));
        m.insert("References".into(), json!([]));
        m.insert("Properties".into(), properties(href));
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
        m.insert("References".into(), json!([]));
        m.insert("Properties".into(), properties(href));
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

pub fn run(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/runs/{}", c.id);
    let mut v = set(
        json!({
            "Id": c.id.to_string(),
            "Href": href,
            "Name": c.name,
            "Number": c.id % 10000,
            "ExperimentName": c.name,
            "Status": "Complete",
            "ReagentBarcode": "NV0000000-RGSBS",
            "FlowcellBarcode": "EMULATEDXX",
            "DateCreated": d(c.created),
            "DateModified": d(c.created),
            "UserOwnedBy": null,
            "UserUploadedBy": null,
            "TotalSize": container_size(a, c),
            "PlatformName": "NovaSeq6000",
            "Workflow": "Generate FASTQ",
            "InstrumentName": "A01234",
            "InstrumentType": "NovaSeq6000",
            "NumCyclesRead1": 151,
            "NumCyclesRead2": 151,
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
        m.insert("Properties".into(), properties(href.clone()));
        m.insert(
            "SequencingStats".into(),
            json!({"Href": format!("{href}/sequencingstats"), "NumLanes": 4, "PercentGtQ30": 91.2}),
        );
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
        m.insert("Properties".into(), properties(href));
    } else {
        m.insert("IdAsLong".into(), json!(f.id));
    }
    v
}

/// A sample's `ExperimentName`: that of the run it was demultiplexed from (a run's
/// experiment name is its name here), else its project's name.
fn experiment_name(a: &Account, c: &Container) -> String {
    c.inputs
        .iter()
        .find(|r| r.kind == ContainerKind::Run)
        .and_then(|r| a.containers.get(r))
        .map(|r| r.name.clone())
        .or_else(|| c.project.and_then(|p| a.project(p)).map(|p| p.name.clone()))
        .unwrap_or_default()
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
fn compact(a: &Account, c: &Container) -> Value {
    match c.kind {
        ContainerKind::Sample => sample(a, c, true),
        ContainerKind::AppResult => appresult(a, c, true),
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
    let reads = (container_size(a, c) / 150).max(1);
    json!({"common_fastq": {
        "MaxLengthRead1": 151, "MaxLengthRead2": 151, "IsPairedEnd": true,
        "TotalClustersPF": reads / 2, "TotalClustersRaw": reads / 2,
        "TotalReadsPF": reads, "TotalReadsRaw": reads,
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
