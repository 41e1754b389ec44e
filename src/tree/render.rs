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
            match m {
                Meta::Id => format!("{}\n", e.id),
                Meta::Type => format!("{}\n", layout::row(e.kind).type_name),
                Meta::Name => format!("{}\n", e.name),
                Meta::Href => format!("{}\n", e.href),
                Meta::Json => pretty(&e.raw),
                Meta::SampleProperties => sample_properties(&e.raw),
                Meta::Curl => curl(e),
                Meta::Status => field_line(&e.raw, &["Status", "ExecutionStatus", "UploadStatus"], &[]),
                Meta::DatasetTypeId => field_line(&e.raw, &["DatasetType"], &["Id"]),
                Meta::DefaultProject => field_line(&e.raw, &["DefaultProject"], &["Name"]),
                Meta::Attributes => attributes(&e.raw),
                Meta::TrashItemType => {
                    let t = field_line(&e.raw, &["TrashItemType"], &[]);
                    let d = field_line(&e.raw, &["DeleteType"], &[]);
                    format!("{} ({})\n", t.trim_end(), d.trim_end())
                }
            }
        }
        _ => return None,
    };
    Some(Arc::from(text.into_bytes()))
}

/// An id as BaseSpace sends it: a string, or a number.
pub(super) fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
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

/// The items of an array property: v1pre3 puts them in `Items`, v2 in `<Kind>Items`
/// (`SampleLibraryItems`, `RunItems`, …).
pub(super) fn property_items(raw: &Value) -> Vec<Value> {
    let Some(m) = raw.as_object() else { return Vec::new() };
    if let Some(Value::Array(a)) = m.get("Items") {
        return a.clone();
    }
    m.iter()
        .find(|(k, v)| k.ends_with("Items") && v.is_array())
        .and_then(|(_, v)| v.as_array().cloned())
        .unwrap_or_default()
}

/// `.curl`: the request that fills the directory, against the configured server (never a
/// host a response named), with `$BASESPACE_ACCESS_TOKEN` where the token goes.
pub(super) fn curl(e: &EntityData) -> String {
    let path = match e.href.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => e.href.as_str(),
    };
    let url = format!("{}/{}", e.server, path.trim_start_matches('/'));
    format!(
        "curl -s -H \"x-access-token: $BASESPACE_ACCESS_TOKEN\" '{}'\n",
        url.replace('\'', "%27")
    )
}

/// The first of `keys` the entity's JSON has, then `inner` fields below it, as one line.
pub(super) fn field_line(raw: &str, keys: &[&str], inner: &[&str]) -> String {
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
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
pub(super) fn attributes(raw: &str) -> String {
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
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let mut out = String::new();
    if let Some(a) = v.get("Attributes") {
        walk("", a, &mut out);
    }
    out
}

pub(super) fn pretty(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        Err(_) => format!("{raw}\n"),
    }
}

/// `Key: value` lines of a sample, as BaseMount's `SampleProperties`.
pub(super) fn sample_properties(raw: &str) -> String {
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
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
