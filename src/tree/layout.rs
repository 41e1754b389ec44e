//! BaseMount's layout as data: one row per entity kind, saying what its directory holds.
//!
//! ```text
//! /README  /.bsmount/stats  /.id .type .name .href .json      (the user)
//! /Projects/<project>/{Samples,AppResults,AppSessions}/…
//! /Projects/<p>/Samples/<s>/{Files/…, SampleProperties}
//! /Projects/<p>/AppResults/<a>/Files/…
//! /Projects/<p>/AppSessions/<as>/{Samples.<id>.<name> -> ../../Samples/.id.<id>, …}
//! /Runs/<run>/Files/<run folder>
//! ```
//! Every entity directory holds the hidden files [`HIDDEN`]; every list directory holds
//! `.id.<ID>` links to its entries. Adding a view (v2 BioSamples, Datasets) is adding rows
//! here and the listings that fill them in [`crate::api::ListKind`].

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
}

/// A generated file of an entity directory, rendered from the entity when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meta {
    Id,
    Type,
    Name,
    Href,
    Json,
    SampleProperties,
}

/// The listing of an entity (given its id) that fills a directory.
pub type ListingOf = fn(String) -> ListKind;

/// What one entity kind's directory holds.
pub struct Row {
    pub kind: EntityKind,
    /// `.type`, and the v1pre3 path segment of its href.
    pub type_name: &'static str,
    /// Generated files besides [`HIDDEN`].
    pub files: &'static [(&'static str, Meta)],
    /// Sub-directories, each filled by a listing of this entity (given its id).
    pub dirs: &'static [(&'static str, ListingOf)],
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
];

fn projects(_: String) -> ListKind {
    ListKind::Projects
}
fn runs(_: String) -> ListKind {
    ListKind::Runs
}

const ROWS: &[Row] = &[
    Row {
        kind: EntityKind::User,
        type_name: "users",
        files: &[],
        dirs: &[("Projects", projects), ("Runs", runs)],
        listing: None,
    },
    Row {
        kind: EntityKind::Project,
        type_name: "projects",
        files: &[],
        dirs: &[
            ("Samples", ListKind::Samples),
            ("AppResults", ListKind::AppResults),
            ("AppSessions", ListKind::AppSessions),
        ],
        listing: None,
    },
    Row {
        kind: EntityKind::Sample,
        type_name: "samples",
        files: &[("SampleProperties", Meta::SampleProperties)],
        dirs: &[("Files", ListKind::SampleFiles)],
        listing: None,
    },
    Row {
        kind: EntityKind::AppResult,
        type_name: "appresults",
        files: &[],
        dirs: &[("Files", ListKind::AppResultFiles)],
        listing: None,
    },
    Row {
        kind: EntityKind::Run,
        type_name: "runs",
        files: &[],
        dirs: &[("Files", ListKind::RunFiles)],
        listing: None,
    },
    Row {
        kind: EntityKind::AppSession,
        type_name: "appsessions",
        files: &[],
        dirs: &[],
        listing: Some(ListKind::AppSessionOutputs),
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
}

pub fn holds(list: &ListKind) -> Holds {
    match list {
        ListKind::Projects => Holds::Entities(EntityKind::Project),
        ListKind::Runs => Holds::Entities(EntityKind::Run),
        ListKind::Samples(_) => Holds::Entities(EntityKind::Sample),
        ListKind::AppResults(_) => Holds::Entities(EntityKind::AppResult),
        ListKind::AppSessions(_) => Holds::Entities(EntityKind::AppSession),
        ListKind::AppSessionOutputs(_) => Holds::Outputs,
        ListKind::SampleFiles(_) | ListKind::AppResultFiles(_) | ListKind::RunFiles(_) => Holds::Files,
    }
}

/// Where an appsession output (`V1pre3Id` = `sample.N` / `appresult.N`) is shown: the
/// link's label and the sibling list directory its target lies in.
pub fn output_kind(prefix: &str) -> Option<(&'static str, &'static str)> {
    match prefix {
        "sample" => Some(("Samples", "Samples")),
        "appresult" => Some(("AppResults", "AppResults")),
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
        ] {
            assert_eq!(ROWS.iter().filter(|r| r.kind == k).count(), 1, "{k:?}");
        }
        assert_eq!(holds(&(row(EntityKind::Sample).dirs[0].1)("7".into())), Holds::Files);
        assert_eq!(
            holds(&(row(EntityKind::Project).dirs[0].1)("7".into())),
            Holds::Entities(EntityKind::Sample)
        );
        assert_eq!(
            holds(&(row(EntityKind::AppSession).listing.unwrap())("7".into())),
            Holds::Outputs
        );
    }
}
