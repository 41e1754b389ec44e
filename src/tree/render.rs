//! Rendering: the text of generated files (`README`, the hidden `.id .type .name .href .json
//! .curl .status`, `SampleProperties`, `Attributes`, …), made from an entity's JSON when read,
//! never stored.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::layout::{self, Meta};
use super::{dir_ref, EntityData, Ino, Node, NodeKind};

/// The README at the mount root.
pub(super) fn readme(server: &str) -> String {
    format!(
        "This is a bsmount filesystem: your Illumina BaseSpace Sequence Hub account ({server}),\n\
         read-only, laid out like BaseMount.\n\n\
         Projects/<project>/Samples/<sample>/Files/     FASTQ files of a sample\n\
         Projects/<project>/AppResults/<result>/Files/  outputs of an analysis\n\
         Projects/<project>/AppSessions/<analysis>/     what each analysis produced\n\
         Projects/<project>/Datasets/<dataset>/Files/   the same data as API v2 datasets\n\
         BioSamples/<biosample>/Datasets/               datasets by biosample (API v2)\n\
         Runs/<run>/Files/                             the sequencing run folder\n\
         <entity>/Properties/                          inputs and outputs, as links\n\n\
         Every directory has hidden metadata: .id .type .name .href .json (ls -a).\n\
         Listings are cached; `bsmount refresh PATH` re-reads them.\n\
         To unmount: bsmount unmount <mountpoint>\n"
    )
}

/// The bytes of a generated file.
pub(super) fn generated(nodes: &HashMap<Ino, Node>, n: &Node) -> Option<Arc<[u8]>> {
    let text = match &n.kind {
        NodeKind::Text(t) => return Some(t.clone()),
        NodeKind::Error => dir_ref(nodes, n.parent)?.error.as_deref().unwrap_or("").to_string(),
        NodeKind::Meta(m) => {
            let e = dir_ref(nodes, n.parent)?.entity.as_ref()?;
            meta_text(e, &parsed(&e.raw), *m)
        }
        _ => return None,
    };
    Some(Arc::from(text.into_bytes()))
}

/// The size of an entity's generated file `m`, without rendering it again: every file of
/// the entity's row is rendered once, from one parse of its JSON, when the first is asked
/// (`readdir` and `ls -l` ask them all).
pub(super) fn meta_size(e: &EntityData, m: Meta) -> u64 {
    let sizes = e.sizes.get_or_init(|| {
        let v = parsed(&e.raw);
        let row = layout::row(e.kind);
        layout::HIDDEN
            .iter()
            .chain(row.files)
            .map(|(_, m)| (*m, meta_text(e, &v, *m).len() as u64))
            .collect()
    });
    sizes
        .iter()
        .find(|(x, _)| *x == m)
        .map_or_else(|| meta_text(e, &parsed(&e.raw), m).len() as u64, |(_, n)| *n)
}

/// The fields generated files read (a dataset's JSON may carry kilobytes of properties
/// that none of them needs: those are skipped, not built).
const READ_FIELDS: &[&str] = &[
    "Status",
    "ExecutionStatus",
    "UploadStatus",
    "DatasetType",
    "DefaultProject",
    "Attributes",
    "TrashItemType",
    "DeleteType",
    "Name",
    "SampleId",
    "SampleNumber",
    "ExperimentName",
    "NumReadsRaw",
    "NumReadsPF",
    "IsPairedEnd",
    "Read1",
    "Read2",
    "TotalSize",
    "DateCreated",
];

/// An entity's JSON with only [`READ_FIELDS`] (`Null` if it is not an object).
fn parsed(raw: &str) -> Value {
    struct Picked(Value);
    impl<'de> serde::Deserialize<'de> for Picked {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Picked;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Picked, A::Error> {
                    let mut out = serde_json::Map::new();
                    while let Some(k) = m.next_key::<String>()? {
                        if READ_FIELDS.contains(&k.as_str()) {
                            out.insert(k, m.next_value()?);
                        } else {
                            m.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                    Ok(Picked(Value::Object(out)))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Picked>(raw).map_or(Value::Null, |p| p.0)
}

/// The text of an entity's generated file `m`, from its JSON `v`.
fn meta_text(e: &EntityData, v: &Value, m: Meta) -> String {
    match m {
        Meta::Id => format!("{}\n", e.id),
        Meta::Type => format!("{}\n", layout::row(e.kind).type_name),
        Meta::Name => format!("{}\n", e.name),
        Meta::Href => format!("{}\n", e.href),
        // As BaseSpace sent it.
        Meta::Json => format!("{}\n", e.raw),
        Meta::SampleProperties => sample_properties(v),
        Meta::Curl => curl(e),
        Meta::Status => field_line(v, &["Status", "ExecutionStatus", "UploadStatus"], &[]),
        Meta::DatasetTypeId => field_line(v, &["DatasetType"], &["Id"]),
        Meta::DefaultProject => field_line(v, &["DefaultProject"], &["Name"]),
        Meta::Attributes => attributes(v),
        Meta::TrashItemType => {
            let t = field_line(v, &["TrashItemType"], &[]);
            let d = field_line(v, &["DeleteType"], &[]);
            format!("{} ({})\n", t.trim_end(), d.trim_end())
        }
    }
}

/// A scalar as text (a string without its quotes).
pub(super) fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Lines of text, each ended by a newline.
pub(super) fn lines(items: &[String]) -> Arc<[u8]> {
    let mut out = String::new();
    for l in items {
        out.push_str(l);
        if !l.ends_with('\n') {
            out.push('\n');
        }
    }
    Arc::from(out.into_bytes())
}

/// The API path of an href, relative to the server (v2 hrefs are absolute URLs: a host a
/// response names is never used).
pub(super) fn api_path(href: &str) -> String {
    let path = match href.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => href,
    };
    path.trim_start_matches('/').to_string()
}

/// `.curl`: the request that fills the directory, against the configured server (never a
/// host a response named), with `$BASESPACE_ACCESS_TOKEN` where the token goes.
fn curl(e: &EntityData) -> String {
    curl_line(&e.server, &e.href)
}

/// A `curl` command line for `href` on `server`.
pub(super) fn curl_line(server: &str, href: &str) -> String {
    let url = format!("{}/{}", server, api_path(href));
    format!(
        "curl -s -H \"x-access-token: $BASESPACE_ACCESS_TOKEN\" '{}'\n",
        url.replace('\'', "%27")
    )
}

/// The first of `keys` the entity's JSON has, then `inner` fields below it, as one line.
pub(super) fn field_line(v: &Value, keys: &[&str], inner: &[&str]) -> String {
    let mut x = keys.iter().find_map(|k| v.get(*k)).unwrap_or(&Value::Null);
    for k in inner {
        x = x.get(*k).unwrap_or(&Value::Null);
    }
    match x {
        Value::Null => String::new(),
        other => scalar_text(other) + "\n",
    }
}

/// A dataset's `Attributes` as `key: value` lines, nested keys joined by `.`
/// (`common_fastq.TotalReadsPF: 1688304`).
fn attributes(v: &Value) -> String {
    fn walk(prefix: &str, v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            other => out.push_str(&format!("{prefix}: {}\n", scalar_text(other))),
        }
    }
    let mut out = String::new();
    if let Some(a) = v.get("Attributes") {
        walk("", a, &mut out);
    }
    out
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// `Key: value` lines of a sample, as BaseMount's `SampleProperties`.
fn sample_properties(v: &Value) -> String {
    let mut out = String::new();
    for k in [
        "Name",
        "SampleId",
        "SampleNumber",
        "ExperimentName",
        "Status",
        "NumReadsRaw",
        "NumReadsPF",
        "IsPairedEnd",
        "Read1",
        "Read2",
        "TotalSize",
        "DateCreated",
    ] {
        if let Some(x) = v.get(k) {
            let s = match x {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            out.push_str(&format!("{k}: {s}\n"));
        }
    }
    out
}
