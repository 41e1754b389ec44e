//! The JSON shapes of BaseSpace entities, copied field for field from recorded responses
//! (`tests/fixtures/recorded/`): list items carry fewer fields than single-entity
//! responses (e.g. sample list items have no `HrefFiles`), v1pre3 hrefs are relative, v2
//! hrefs absolute.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::account::{Account, AppSession, Container, ContainerKind, FileEntry, Project};
use crate::api::model::format_date;

fn d(t: SystemTime) -> String {
    format_date(t)
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
    c.files.iter().filter_map(|f| a.files.get(f)).map(|f| f.size).sum()
}

fn project_size(a: &Account, p: &Project) -> u64 {
    let s = |k, ids: &Vec<u64>| {
        ids.iter()
            .filter_map(|i| a.container(k, *i))
            .map(|c| container_size(a, c))
            .sum::<u64>()
    };
    s(ContainerKind::Sample, &p.samples) + s(ContainerKind::AppResult, &p.appresults)
}

pub fn project(a: &Account, p: &Project, full: bool) -> Value {
    let href = format!("v1pre3/projects/{}", p.id);
    let mut v = json!({
        "Id": p.id.to_string(),
        "UserOwnedBy": owner(a),
        "Href": href,
        "Name": p.name,
        "Description": p.description,
        "DateCreated": d(p.created),
        "DateModified": d(p.created),
        "HasCollaborators": false,
        "TotalSize": project_size(a, p)
    });
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
    json!({
        "Id": s.id.to_string(),
        "Name": s.name,
        "Href": format!("v1pre3/appsessions/{}", s.id),
        "Application": application(&s.application),
        "UserCreatedBy": owner(a),
        "Status": "Complete",
        "QcStatus": "Undefined",
        "StatusSummary": "Application completed successfully",
        "DateCreated": d(s.created),
        "ModifiedOn": d(s.created),
        "DateCompleted": d(s.created),
        "TotalSize": appsession_size(a, s)
    })
}

fn appsession_size(a: &Account, s: &AppSession) -> u64 {
    s.outputs
        .iter()
        .filter_map(|r| a.containers.get(r))
        .map(|c| container_size(a, c))
        .sum()
}

pub fn appsession_v2(a: &Account, s: &AppSession, base: &str) -> Value {
    json!({
        "Id": s.id.to_string(),
        "Name": s.name,
        "Href": format!("{base}/v2/appsessions/{}", s.id),
        "Application": application(&s.application),
        "UserCreatedBy": owner(a),
        "ExecutionStatus": "Complete",
        "QcStatus": "Undefined",
        "StatusSummary": "Application completed successfully",
        "Purpose": "Analysis",
        "DateCreated": d(s.created),
        "DateModified": d(s.created),
        "DateCompleted": d(s.created),
        "TotalSize": appsession_size(a, s),
        "DeliveryStatus": "None",
        "ContainsComments": false,
        "HrefComments": format!("{base}/v2/appsessions/{}/comments", s.id)
    })
}

/// v2 dataset for a sample or appresult (as `datasets?appsessionids=` lists them).
pub fn dataset_v2(a: &Account, c: &Container, base: &str) -> Value {
    let (prefix, dtype, dname, conforms) = match c.kind {
        ContainerKind::Sample => (
            "sample",
            "illumina.fastq.v1.8",
            "Illumina Fastq",
            json!(["common.files", "common.fastq"]),
        ),
        _ => ("appresult", "common.files", "Files", json!(["common.files"])),
    };
    let ds = format!(
        "ds.{:032x}",
        super::account::splitmix64(c.id) as u128 | ((c.id as u128) << 64)
    );
    let session = c
        .appsession
        .and_then(|s| a.appsessions.get(&s))
        .map(|s| appsession_v2(a, s, base));
    let proj = c.project.and_then(|p| a.project(p)).map(|p| project(a, p, false));
    json!({
        "Id": ds,
        "Href": format!("{base}/v2/datasets/{ds}"),
        "HrefFiles": format!("{base}/v2/datasets/{ds}/files"),
        "Name": c.name,
        "DateCreated": d(c.created),
        "DateModified": d(c.created),
        "AppSession": session,
        "Project": proj,
        "TotalSize": container_size(a, c),
        "IsArchived": false,
        "UserOwnedBy": owner(a),
        "DatasetType": {"Id": dtype, "Href": format!("{base}/v2/datasettypes/{dtype}"), "Name": dname, "ConformsToIds": conforms},
        "Attributes": {},
        "QcStatus": "Undefined",
        "QcStatusSummary": "",
        "UploadStatus": "Completed",
        "UploadStatusSummary": "",
        "ValidationStatus": "Passed",
        "V1pre3Id": format!("{prefix}.{}", c.id),
        "HrefComments": format!("{base}/v2/datasets/{ds}/comments"),
        "ContainsComments": false
    })
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
    json!({
        "OwnerUser": owner(a),
        "Id": lib.to_string(),
        "Href": format!("v1pre3/libraries/{lib}"),
        "BiologicalSample": {
            "Id": (c.id + 200_000_000).to_string(),
            "Href": format!("v1pre3/biologicalsamples/{}", c.id + 200_000_000),
            "UserSampleId": c.name,
            "NucleicAcid": "DNA",
            "Project": project,
            "UserOwnedBy": owner(a),
            "DateModified": d(c.created)
        },
        "Index1": {"Id": "6497495", "Name": "7015", "Sequence": "ACGTACGT", "Incompatibility": "None"},
        "Index2": {"Id": "6497504", "Name": "5002", "Sequence": "TGCATGCA", "Incompatibility": "None"},
        "DateModified": d(c.created),
        "LibraryPrep": {
            "Id": "1014015", "Href": "v1pre3/libraryprepkits/1014015", "Name": "Unknown",
            "ValidIndexingStrategies": "None,SingleIndex,DualIndex", "ValidReadTypes": "SingleRead,PairedEnd",
            "NumIndexCycles": 0, "DateModified": d(c.created), "State": "Active", "DefaultRead1Cycles": 0, "DefaultRead2Cycles": 0
        },
        "Project": project,
        "LibraryName": c.name,
        "State": "Active"
    })
}

pub fn sample(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/samples/{}", c.id);
    let reads = (container_size(a, c) / 150).max(1);
    let mut v = json!({
        "Id": c.id.to_string(),
        "Href": href,
        "IsMerged": false,
        "UserOwnedBy": owner(a),
        "Name": c.name,
        "ExperimentName": "Emulated_Experiment",
        "SampleId": c.name,
        "Status": "Complete",
        "StatusSummary": "Application completed successfully",
        "DateCreated": d(c.created),
        "TotalSize": container_size(a, c),
        "Library": library(a, c),
        "Genome": genome(),
        "Read1": 151,
        "Read2": 151,
        "NumReadsPF": reads,
        "NumReadsRaw": reads,
        "TotalReadsRaw": reads,
        "TotalReadsPF": reads,
        "TotalClustersRaw": reads / 2,
        "TotalClustersPF": reads / 2,
        "IsPairedEnd": true
    });
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
        m.insert("Projects".into(), json!(projects));
    }
    v
}

pub fn appresult(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/appresults/{}", c.id);
    let session = c
        .appsession
        .and_then(|s| a.appsessions.get(&s))
        .map(|s| appsession_v1(a, s));
    let mut v = json!({
        "Id": c.id.to_string(),
        "Href": href,
        "UserOwnedBy": owner(a),
        "Name": c.name,
        "Status": "Complete",
        "StatusSummary": "Application completed successfully",
        "DateCreated": d(c.created),
        "TotalSize": container_size(a, c),
        "AppSession": session
    });
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
        m.insert("Projects".into(), json!(projects));
    }
    v
}

pub fn run(a: &Account, c: &Container, full: bool) -> Value {
    let href = format!("v1pre3/runs/{}", c.id);
    let mut v = json!({
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
        "UserOwnedBy": owner(a),
        "UserUploadedBy": owner(a),
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
    });
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
