//! BaseMount's layout as data: one row per entity kind, saying what its directory holds.
//!
//! ```text
//! /README  /.bsmount/stats  /.AccessToken/.json  /.Trash/<item>  /.id .type .name .href .json .curl .status
//! /Projects/<project>/{Samples,AppResults,AppSessions,Datasets,Properties}/…, AppSessions.v1 -> AppSessions
//! /Projects/<p>/Samples/<s>/{Files/…, Files.metadata/…, Properties/…, SampleProperties, ParentAppSession ->}
//! /Projects/<p>/AppResults/<a>/{Files/…, Files.metadata/…, Properties/…}
//! /Projects/<p>/AppSessions/<as>/{Sample.<id>.<name> -> ../../Samples/.id.<id>, AppResults.<id>.<name>, Logs/, Properties/}
//! /Projects/<p>/Datasets/<d>/{Files/…, Files.metadata/…, Properties/…, DatasetTypeId, Attributes}
//! /BioSamples/<b>/{Datasets/<d>/…, AppSessions/…, Libraries/…, Properties/…, Status, DefaultProject}
//! /Runs/<run>/{Files/<run folder>, Files.metadata/…, Properties/…}
//! ```
//! Every entity directory holds the hidden files [`HIDDEN`]; every list directory holds
//! `.id.<ID>` links to its entries. The v2 views (BioSamples, Datasets) are rows marked
//! [`Sub::v2`], hidden by `--no-v2`.

use crate::api::ListKind;

/// The kinds of entity that have a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    User,
    Project,
    Sample,
    AppResult,
    Run,
    AppSession,
    BioSample,
    Dataset,
    /// A file's metadata directory under `Files.metadata/`.
    File,
    /// Something in the trash (`.Trash/<item>`).
    TrashItem,
    /// A library prepared from a biosample (v2).
    Library,
}

/// A generated file of an entity directory, rendered from the entity when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Id,
    Type,
    Name,
    Href,
    Json,
    /// The request that fills the directory, with `$BASESPACE_ACCESS_TOKEN` for the token.
    Curl,
    /// The entity's `Status` (`ExecutionStatus` for v2 appsessions).
    Status,
    SampleProperties,
    DatasetTypeId,
    Attributes,
    DefaultProject,
    /// What a trash item was: `DeletedProject (FILEDATA+METADATA)`.
    TrashItemType,
}

/// The listing of an entity (given its id) that fills a directory.
pub type ListingOf = fn(String) -> ListKind;

/// A sub-directory of an entity directory.
pub struct Sub {
    pub name: &'static str,
    pub list: ListingOf,
    /// Part of the v2 views (off with `--no-v2`).
    pub v2: bool,
}

const fn sub(name: &'static str, list: ListingOf) -> Sub {
    Sub { name, list, v2: false }
}

const fn sub_v2(name: &'static str, list: ListingOf) -> Sub {
    Sub { name, list, v2: true }
}

/// A symlink of an entity directory, made with its layout entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// To a sibling entry of this name.
    To(&'static str),
    /// A sample's `ParentAppSession`: the appsession that made it, found through the
    /// project's `AppSessions/` (`../../AppSessions/.parent.<sample id>`, resolved when
    /// followed: the sample's own answer names its appsession).
    ParentAppSession,
}

/// The name a project's `AppSessions/` resolves to the appsession that made sample `id`.
pub fn parent_of(id: &str) -> String {
    format!(".parent.{id}")
}

/// What one entity kind's directory holds.
pub struct Row {
    pub kind: EntityKind,
    /// `.type`, and the v1pre3 path segment of its href.
    pub type_name: &'static str,
    /// Generated files besides [`HIDDEN`].
    pub files: &'static [(&'static str, Meta)],
    /// Sub-directories, each filled by a listing of this entity (given its id).
    pub dirs: &'static [Sub],
    /// Symlinks.
    pub links: &'static [(&'static str, Link)],
    /// A listing that fills the entity directory itself (what an appsession produced).
    pub listing: Option<ListingOf>,
}

/// BaseMount's hidden metadata files, in every entity directory.
pub const HIDDEN: &[(&str, Meta)] = &[
    (".id", Meta::Id),
    (".type", Meta::Type),
    (".name", Meta::Name),
    (".href", Meta::Href),
    (".json", Meta::Json),
    (".curl", Meta::Curl),
    (".status", Meta::Status),
];

fn projects(_: String) -> ListKind {
    ListKind::Projects
}
fn runs(_: String) -> ListKind {
    ListKind::Runs
}
fn biosamples(_: String) -> ListKind {
    ListKind::BioSamples
}
fn access_token(_: String) -> ListKind {
    ListKind::AccessToken
}
fn trash(_: String) -> ListKind {
    ListKind::Trash
}
fn meta_of(files: ListingOf) -> impl Fn(String) -> ListKind {
    move |id| ListKind::FilesMetadata(Box::new(files(id)))
}
fn sample_meta(id: String) -> ListKind {
    meta_of(ListKind::SampleFiles)(id)
}
fn appresult_meta(id: String) -> ListKind {
    meta_of(ListKind::AppResultFiles)(id)
}
fn run_meta(id: String) -> ListKind {
    meta_of(ListKind::RunFiles)(id)
}
fn run_logs(id: String) -> ListKind {
    ListKind::RunFolder(id, "/Logs/".into())
}
fn dataset_root(id: String) -> ListKind {
    ListKind::DatasetFolder(id, "/".into())
}
fn dataset_meta(id: String) -> ListKind {
    meta_of(ListKind::DatasetFiles)(id)
}
fn props(resource: &'static str) -> impl Fn(String) -> ListKind {
    move |id| ListKind::Properties(resource, id)
}
fn project_props(id: String) -> ListKind {
    props("projects")(id)
}
fn sample_props(id: String) -> ListKind {
    props("samples")(id)
}
fn appresult_props(id: String) -> ListKind {
    props("appresults")(id)
}
fn run_props(id: String) -> ListKind {
    props("runs")(id)
}
fn appsession_props(id: String) -> ListKind {
    props("appsessions")(id)
}
fn dataset_props(id: String) -> ListKind {
    props("datasets")(id)
}
fn biosample_props(id: String) -> ListKind {
    props("biosamples")(id)
}

const ROWS: &[Row] = &[
    Row {
        kind: EntityKind::User,
        type_name: "users",
        files: &[],
        dirs: &[
            sub("Projects", projects),
            sub("Runs", runs),
            sub_v2("BioSamples", biosamples),
            sub(".AccessToken", access_token),
            sub(".Trash", trash),
        ],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::Project,
        type_name: "projects",
        files: &[],
        dirs: &[
            sub("Samples", ListKind::Samples),
            sub("AppResults", ListKind::AppResults),
            sub("AppSessions", ListKind::AppSessions),
            sub_v2("Datasets", ListKind::ProjectDatasets),
            sub("Properties", project_props),
        ],
        // BaseMount 0.15's name for the same list; scripts written then still use it. A link,
        // so `find`, `du` and `cp -r` walk the sessions once.
        links: &[("AppSessions.v1", Link::To("AppSessions"))],
        listing: None,
    },
    Row {
        kind: EntityKind::Sample,
        type_name: "samples",
        files: &[("SampleProperties", Meta::SampleProperties)],
        dirs: &[
            sub("Files", ListKind::SampleFiles),
            sub("Files.metadata", sample_meta),
            sub("Properties", sample_props),
        ],
        // A link, so walks (`find`, `cp -r`) do not enter it: it costs a request when followed.
        links: &[("ParentAppSession", Link::ParentAppSession)],
        listing: None,
    },
    Row {
        kind: EntityKind::AppResult,
        type_name: "appresults",
        files: &[],
        dirs: &[
            sub("Files", ListKind::AppResultFiles),
            sub("Files.metadata", appresult_meta),
            sub("Properties", appresult_props),
        ],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::Run,
        type_name: "runs",
        files: &[],
        dirs: &[
            sub("Files", ListKind::RunFiles),
            sub("Files.metadata", run_meta),
            // The run folder's `Logs/`, as BaseMount shows it next to `Files/`.
            sub("Logs", run_logs),
            sub("Properties", run_props),
        ],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::AppSession,
        type_name: "appsessions",
        files: &[],
        dirs: &[
            sub("Logs", ListKind::AppSessionLogs),
            sub("Properties", appsession_props),
        ],
        links: &[],
        listing: Some(ListKind::AppSessionOutputs),
    },
    Row {
        kind: EntityKind::BioSample,
        type_name: "biosamples",
        files: &[("Status", Meta::Status), ("DefaultProject", Meta::DefaultProject)],
        dirs: &[
            sub_v2("Datasets", ListKind::BioSampleDatasets),
            sub_v2("AppSessions", ListKind::BioSampleAppSessions),
            sub_v2("Libraries", ListKind::BioSampleLibraries),
            sub_v2("Properties", biosample_props),
        ],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::Dataset,
        type_name: "datasets",
        files: &[("DatasetTypeId", Meta::DatasetTypeId), ("Attributes", Meta::Attributes)],
        dirs: &[
            sub_v2("Files", dataset_root),
            sub_v2("Files.metadata", dataset_meta),
            sub_v2("Properties", dataset_props),
        ],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::File,
        type_name: "files",
        files: &[],
        dirs: &[],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::Library,
        type_name: "libraries",
        files: &[],
        dirs: &[],
        links: &[],
        listing: None,
    },
    Row {
        kind: EntityKind::TrashItem,
        type_name: "trash",
        files: &[("TrashItemType", Meta::TrashItemType)],
        dirs: &[],
        links: &[],
        listing: None,
    },
];

/// The row of an entity kind.
pub fn row(kind: EntityKind) -> &'static Row {
    ROWS.iter().find(|r| r.kind == kind).expect("every kind has a row")
}

/// What the items of a listing become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Entity directories of this kind, with `.id.<ID>` links.
    Entities(EntityKind),
    /// A `Files/` tree, folders from each file's `Path`.
    Files,
    /// Links to the samples and appresults an appsession produced.
    Outputs,
    /// A `Properties/` tree: text files, arrays as `0`, `1`, …, entity links.
    Properties,
    /// `Files.metadata/`: the `Files/` tree with a hidden metadata directory per file.
    FilesMetadata,
    /// `.AccessToken/`: the token's scopes and dates as `.json`.
    Token,
    /// One folder of a dataset's files: its files, and its sub-folders listed on their own.
    Folder,
}

pub fn holds(list: &ListKind) -> Holds {
    match list {
        ListKind::Projects => Holds::Entities(EntityKind::Project),
        ListKind::Runs => Holds::Entities(EntityKind::Run),
        ListKind::Samples(_) => Holds::Entities(EntityKind::Sample),
        ListKind::AppResults(_) => Holds::Entities(EntityKind::AppResult),
        ListKind::AppSessions(_) | ListKind::BioSampleAppSessions(_) => Holds::Entities(EntityKind::AppSession),
        ListKind::BioSamples => Holds::Entities(EntityKind::BioSample),
        ListKind::BioSampleLibraries(_) => Holds::Entities(EntityKind::Library),
        ListKind::BioSampleDatasets(_) | ListKind::ProjectDatasets(_) => Holds::Entities(EntityKind::Dataset),
        ListKind::AppSessionOutputs(_) => Holds::Outputs,
        ListKind::SampleFiles(_)
        | ListKind::AppResultFiles(_)
        | ListKind::RunFiles(_)
        | ListKind::DatasetFiles(_)
        | ListKind::AppSessionLogs(_) => Holds::Files,
        ListKind::Properties(..) => Holds::Properties,
        ListKind::FilesMetadata(_) => Holds::FilesMetadata,
        ListKind::AccessToken => Holds::Token,
        ListKind::Trash => Holds::Entities(EntityKind::TrashItem),
        ListKind::DatasetFolder(..) | ListKind::RunFolder(..) => Holds::Folder,
    }
}

/// Where an appsession output (`V1pre3Id` = `sample.N` / `appresult.N`) is shown: the
/// link's label and the sibling list directory its target lies in. BaseMount names them
/// `<Type>.<Id>.<Name>` with the type as its documentation shows it for appresults
/// (`AppResults.20208193.NA12878_L1_S1`) and as users saw it for samples (`Sample.<id>.<name>`,
/// which scripts glob).
pub fn output_kind(prefix: &str) -> Option<(&'static str, &'static str)> {
    match prefix {
        "sample" => Some(("Sample", "Samples")),
        "appresult" => Some(("AppResults", "AppResults")),
        _ => None,
    }
}

/// Where an entity a property refers to lives, from the mount's root: the property's
/// `Type` (without `[]`), the entity's id and the project the reference is read in
/// (`None` outside a project). `None` for types that have no directory.
pub fn entity_path(kind: &str, id: &str, project: Option<&str>) -> Option<String> {
    let in_project = |list: &str| project.map(|p| format!("Projects/.id.{p}/{list}/.id.{id}"));
    match kind {
        "project" => Some(format!("Projects/.id.{id}")),
        "run" => Some(format!("Runs/.id.{id}")),
        "biosample" => Some(format!("BioSamples/.id.{id}")),
        "sample" => in_project("Samples"),
        "appresult" => in_project("AppResults"),
        "appsession" => in_project("AppSessions"),
        "dataset" => in_project("Datasets"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_row_and_listings_match_their_rows() {
        for k in [
            EntityKind::User,
            EntityKind::Project,
            EntityKind::Sample,
            EntityKind::AppResult,
            EntityKind::Run,
            EntityKind::AppSession,
            EntityKind::BioSample,
            EntityKind::Dataset,
            EntityKind::File,
            EntityKind::TrashItem,
            EntityKind::Library,
        ] {
            assert_eq!(ROWS.iter().filter(|r| r.kind == k).count(), 1, "{k:?}");
        }
        assert_eq!(holds(&(row(EntityKind::Sample).dirs[0].list)("7".into())), Holds::Files);
        assert_eq!(
            holds(&(row(EntityKind::Project).dirs[0].list)("7".into())),
            Holds::Entities(EntityKind::Sample)
        );
        assert_eq!(
            holds(&(row(EntityKind::AppSession).listing.unwrap())("7".into())),
            Holds::Outputs
        );
    }
}
