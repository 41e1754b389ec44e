//! Typed views of BaseSpace JSON.
//!
//! Only the fields the mount uses are typed; everything else is ignored on parse, and the
//! raw object is kept next to the typed view so `.json` files show exactly what BaseSpace
//! sent. Ids are strings on the wire (`"11710715826"`) but v2 adds numeric `IdAsLong`, and
//! some SDKs send numbers, so [`de_id`] accepts both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// Accepts `"123"` or `123` (or null, as empty) for an id.
pub fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => {
            return Err(serde::de::Error::custom(format!(
                "id must be a string or number, got {other}"
            )))
        }
    })
}

fn de_u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

/// A file's `Size`: BaseSpace always gives a JSON integer. Anything else (negative, a
/// fraction, a string, a boolean) would show as a file of a size it does not have, so it
/// reads as impossible (`u64::MAX`, refused by [`FileInfo`]'s check, which also refuses
/// null or missing): the file is skipped and named in the directory's `.error`.
fn de_file_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::Number(n) => Some(n.as_u64().unwrap_or(u64::MAX)),
        _ => Some(u64::MAX),
    })
}

/// `ResponseStatus` of the v1pre3 envelope; empty on success.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ResponseStatus {
    pub error_code: Option<String>,
    pub message: Option<String>,
}

/// The v1pre3 envelope `{"Response":…,"ResponseStatus":…,"Notifications":[…]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Envelope {
    #[serde(default)]
    pub response: Option<Value>,
    #[serde(default)]
    pub response_status: Option<ResponseStatus>,
    #[serde(default)]
    pub notifications: Option<Value>,
}

/// Paging fields: inside `Response` for v1pre3, under `Paging` for v2.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Paging {
    #[serde(deserialize_with = "de_u64_lenient")]
    pub displayed_count: Option<u64>,
    #[serde(deserialize_with = "de_u64_lenient")]
    pub total_count: Option<u64>,
    #[serde(deserialize_with = "de_u64_lenient")]
    pub offset: Option<u64>,
    #[serde(deserialize_with = "de_u64_lenient")]
    pub limit: Option<u64>,
    pub sort_dir: Option<String>,
    pub sort_by: Option<String>,
}

/// One page of a list, v1pre3 or v2 shaped.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Value>,
    pub paging: Paging,
}

impl Page {
    /// Parses a list body of either API version. Takes the body so the items move out of
    /// it: a 1000-item page is not copied.
    pub fn from_body(mut body: Value) -> Result<Page, String> {
        let (container, paging) = if let Some(resp) = body.get_mut("Response") {
            let paging = Paging::deserialize(&*resp).map_err(|e| e.to_string())?;
            (resp, paging)
        } else if let Some(p) = body.get("Paging") {
            let paging = Paging::deserialize(p).map_err(|e| e.to_string())?;
            (&mut body, paging)
        } else {
            return Err("neither a v1pre3 Response nor a v2 Paging object".into());
        };
        let items = match container.get_mut("Items").map(Value::take) {
            Some(Value::Array(a)) => a,
            Some(Value::Null) | None => Vec::new(),
            Some(other) => return Err(format!("Items is not a list: {}", truncate(&other.to_string(), 80))),
        };
        Ok(Page { items, paging })
    }
}

/// One page of a list as it arrives: items still as raw JSON text, so each is parsed on
/// its own (a malformed item is skipped, not the page) and an entity's text can be kept
/// for its `.json` without a `Value` tree per item.
#[derive(Debug)]
pub struct RawPage {
    pub items: Vec<Box<serde_json::value::RawValue>>,
    pub paging: Paging,
    /// v2 file listings of one folder: the folders below it.
    pub subdirs: Vec<String>,
}

impl RawPage {
    /// Parses a v1pre3 (`Response.Items`) or v2 (`Items` + `Paging`) list body.
    pub fn parse(body: &[u8]) -> Result<RawPage, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct V1 {
            #[serde(default)]
            items: Option<Vec<Box<serde_json::value::RawValue>>>,
            #[serde(default, deserialize_with = "de_u64_lenient")]
            displayed_count: Option<u64>,
            #[serde(default, deserialize_with = "de_u64_lenient")]
            total_count: Option<u64>,
            #[serde(default, deserialize_with = "de_u64_lenient")]
            offset: Option<u64>,
            #[serde(default, deserialize_with = "de_u64_lenient")]
            limit: Option<u64>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Body {
            #[serde(default)]
            response: Option<V1>,
            #[serde(default)]
            items: Option<Vec<Box<serde_json::value::RawValue>>>,
            #[serde(default)]
            paging: Option<Paging>,
            #[serde(default)]
            sub_directories: Option<Vec<SubDir>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct SubDir {
            #[serde(default)]
            name: Option<String>,
        }
        let b: Body = serde_json::from_slice(body).map_err(|e| format!("invalid JSON list body: {e}"))?;
        match (b.response, b.paging) {
            (Some(r), _) => Ok(RawPage {
                items: r.items.unwrap_or_default(),
                paging: Paging {
                    displayed_count: r.displayed_count,
                    total_count: r.total_count,
                    offset: r.offset,
                    limit: r.limit,
                    ..Paging::default()
                },
                subdirs: Vec::new(),
            }),
            (None, Some(paging)) => Ok(RawPage {
                items: b.items.unwrap_or_default(),
                paging,
                subdirs: b
                    .sub_directories
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|d| d.name)
                    .collect(),
            }),
            (None, None) => Err("neither a v1pre3 Response nor a v2 Paging object".into()),
        }
    }
}

/// An item of a listing, parsed from its raw JSON text.
pub trait ListItem: Sized + Send + 'static {
    fn from_raw(raw: &serde_json::value::RawValue) -> Result<Self, String>;
    /// The Id a listing is deduplicated by.
    fn id(&self) -> &str;
}

/// An entity as listed: the typed view and the JSON text BaseSpace sent (for `.json`).
#[derive(Debug, Clone)]
pub struct EntityItem {
    pub entity: Entity,
    pub raw: std::sync::Arc<str>,
}

impl ListItem for EntityItem {
    fn from_raw(raw: &serde_json::value::RawValue) -> Result<Self, String> {
        let entity: Entity = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        if entity.id.is_empty() {
            return Err(format!("entity without Id: {}", truncate(raw.get(), 120)));
        }
        Ok(EntityItem {
            entity,
            raw: std::sync::Arc::from(raw.get()),
        })
    }
    fn id(&self) -> &str {
        &self.entity.id
    }
}

/// One property of an entity, as `…/properties` lists it (or an entity carries inline).
/// Values stay as BaseSpace sent them: a `sample[]` of 1,000 samples is 1,000 texts, each
/// read for what the tree needs (an id and a project) without building it as a tree.
#[derive(Debug, Clone)]
pub struct PropertyItem {
    pub name: String,
    /// `Type`: `string`, `sample[]`, `map`, … (empty when absent).
    pub kind: String,
    /// A single value (`Content`).
    pub content: Option<Box<RawValue>>,
    /// An array's items (`Items` in v1pre3, `<Kind>Items` in v2: `SampleLibraryItems`, …).
    pub items: Vec<Box<RawValue>>,
    /// A map's entries (`ContentMap`): each key and its values.
    pub map: Option<Vec<MapEntry>>,
    /// `ItemsDisplayedCount` and `ItemsTotalCount` of an array: fewer shown than there are
    /// means the list here is cut short.
    pub items_shown: Option<u64>,
    pub items_total: Option<u64>,
}

/// One entry of a map property.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapEntry {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub values: Option<Value>,
}

impl<'de> Deserialize<'de> for PropertyItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = PropertyItem;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a property object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<PropertyItem, A::Error> {
                let mut p = PropertyItem {
                    name: String::new(),
                    kind: String::new(),
                    content: None,
                    items: Vec::new(),
                    map: None,
                    items_shown: None,
                    items_total: None,
                };
                // Each value is taken as sent and read leniently: a field of an unexpected
                // shape is left out, not the property.
                let lenient = |r: &RawValue| serde_json::from_str::<Value>(r.get()).ok();
                while let Some(k) = m.next_key::<String>()? {
                    let raw: Box<RawValue> = m.next_value()?;
                    match k.as_str() {
                        "Name" => {
                            p.name = lenient(&raw)
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        }
                        "Type" => {
                            p.kind = lenient(&raw)
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        }
                        "Content" => p.content = Some(raw),
                        "ContentMap" => p.map = serde_json::from_str(raw.get()).ok(),
                        "ItemsDisplayedCount" => p.items_shown = lenient(&raw).and_then(|v| v.as_u64()),
                        "ItemsTotalCount" => p.items_total = lenient(&raw).and_then(|v| v.as_u64()),
                        k if k.ends_with("Items") && (k == "Items" || p.items.is_empty()) => {
                            if let Ok(items) = serde_json::from_str::<Vec<Box<RawValue>>>(raw.get()) {
                                p.items = items;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_map(Fields)
    }
}

impl ListItem for PropertyItem {
    fn from_raw(raw: &RawValue) -> Result<Self, String> {
        let p: PropertyItem = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        if p.name.is_empty() {
            return Err(format!("property without Name: {}", truncate(raw.get(), 120)));
        }
        Ok(p)
    }
    fn id(&self) -> &str {
        &self.name
    }
}

impl PropertyItem {
    /// The properties an entity's JSON carries inline (`Properties.Items`: v1pre3 single
    /// entities, v2 datasets listed with `include=properties`), when they are all there:
    /// every property listed (`TotalCount`) and every array whole (`ItemsTotalCount`).
    /// `None` when they are absent or cut short: then only `…/properties` has them all.
    pub fn inline(entity: &str) -> Option<Listed<PropertyItem>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Holder {
            #[serde(default)]
            properties: Option<Inline>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Inline {
            #[serde(default)]
            items: Option<Vec<Box<RawValue>>>,
            #[serde(default, deserialize_with = "de_u64_lenient")]
            total_count: Option<u64>,
        }
        let props = serde_json::from_str::<Holder>(entity).ok()?.properties?;
        let items = props.items?;
        if props.total_count.is_some_and(|t| t > items.len() as u64) {
            return None;
        }
        let mut out = Listed::default();
        for raw in items {
            match PropertyItem::from_raw(&raw) {
                Ok(p) if p.items_shown.zip(p.items_total).is_some_and(|(s, t)| s < t) => return None,
                Ok(p) => out.items.push(p),
                Err(m) => out.skipped.push(format!("skipped a property: {m}")),
            }
        }
        Some(out)
    }
}

/// What the tree reads of an entity a property refers to: its id, and the project it names.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Reference {
    #[serde(deserialize_with = "de_opt_id")]
    pub id: Option<String>,
    pub projects: Option<Vec<EntityRef>>,
    pub project: Option<EntityRef>,
    pub default_project: Option<EntityRef>,
    /// A v1pre3 sample names its project only through its library (recorded: sample items
    /// of `Input.Samples` and `Output.Samples` carry `Library.Project`, no `Projects`).
    pub library: Option<LibraryRef>,
}

/// A sample's library, for the project it belongs to.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct LibraryRef {
    pub project: Option<EntityRef>,
}

impl Reference {
    /// The project the entity names itself (`Projects[0]`, `Project`, `DefaultProject`,
    /// `Library.Project`).
    pub fn own_project(&self) -> Option<&str> {
        self.projects
            .as_ref()
            .and_then(|p| p.first())
            .or(self.project.as_ref())
            .or(self.default_project.as_ref())
            .or(self.library.as_ref().and_then(|l| l.project.as_ref()))
            .map(|p| p.id.as_str())
            .filter(|p| !p.is_empty())
    }
}

fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

impl ListItem for FileInfo {
    fn from_raw(raw: &serde_json::value::RawValue) -> Result<Self, String> {
        let f: FileInfo = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        f.check().map_err(|m| format!("{m}: {}", truncate(raw.get(), 120)))?;
        Ok(f)
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// A list item kept as BaseSpace sent it (for a list directory's `.json`), with its Id.
#[derive(Debug)]
pub struct RawItem {
    pub id: String,
    pub raw: Box<RawValue>,
}

impl ListItem for RawItem {
    fn from_raw(raw: &RawValue) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct IdOnly {
            #[serde(default, deserialize_with = "de_opt_id")]
            id: Option<String>,
            #[serde(default)]
            name: Option<String>,
        }
        let i: IdOnly = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
        let id = i.id.or(i.name).filter(|x| !x.is_empty());
        let id = id.ok_or_else(|| format!("item without Id: {}", truncate(raw.get(), 120)))?;
        Ok(RawItem {
            id,
            raw: raw.to_owned(),
        })
    }
    fn id(&self) -> &str {
        &self.id
    }
}

/// A list's items, and what was skipped as malformed (shown in the directory's `.error`).
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub skipped: Vec<String>,
    /// Folders directly below, for a listing of one folder (v2 `SubDirectories`).
    pub subdirs: Vec<String>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            items: Vec::new(),
            skipped: Vec::new(),
            subdirs: Vec::new(),
        }
    }
}

/// A reference to an entity (`{"Id","Href","Name"}`), as nested in other objects.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EntityRef {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    pub name: Option<String>,
    pub href: Option<String>,
}

/// Project, sample, appresult, run, appsession or dataset: the fields the tree needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Entity {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    /// Biosamples (v2) are named by `BioSampleName`.
    #[serde(alias = "BioSampleName")]
    pub name: Option<String>,
    pub href: Option<String>,
    pub date_created: Option<String>,
    pub date_modified: Option<String>,
    /// AppSessions report `ModifiedOn` instead of `DateModified` in v1pre3.
    pub modified_on: Option<String>,
    pub status: Option<String>,
    pub execution_status: Option<String>,
    pub experiment_name: Option<String>,
    #[serde(deserialize_with = "de_u64_lenient")]
    pub total_size: Option<u64>,
    pub app_session: Option<EntityRef>,
    /// v2 datasets: `sample.123` / `appresult.456`.
    #[serde(rename = "V1pre3Id")]
    pub v1pre3_id: Option<String>,
}

impl Entity {
    pub fn parse(v: &Value) -> Result<Entity, String> {
        let e = Entity::deserialize(v).map_err(|e| e.to_string())?;
        if e.id.is_empty() {
            return Err(format!("entity without Id: {}", truncate(&v.to_string(), 120)));
        }
        Ok(e)
    }

    /// The most recent of the modification dates, else the creation date.
    pub fn mtime(&self) -> SystemTime {
        self.date_modified
            .as_deref()
            .or(self.modified_on.as_deref())
            .or(self.date_created.as_deref())
            .and_then(parse_date)
            .unwrap_or(UNIX_EPOCH)
    }
}

/// A file as listed by `…/files` or returned by `files/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileInfo {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    pub name: String,
    pub path: Option<String>,
    #[serde(deserialize_with = "de_file_size")]
    pub size: Option<u64>,
    pub content_type: Option<String>,
    pub href: Option<String>,
    pub href_content: Option<String>,
    pub date_created: Option<String>,
    pub date_modified: Option<String>,
    #[serde(rename = "ETag")]
    pub etag: Option<String>,
    pub is_archived: Option<bool>,
    pub upload_status: Option<String>,
}

impl FileInfo {
    pub fn parse(v: &Value) -> Result<FileInfo, String> {
        let f = FileInfo::deserialize(v).map_err(|e| e.to_string())?;
        f.check()
            .map_err(|m| format!("{m}: {}", truncate(&v.to_string(), 120)))?;
        Ok(f)
    }

    /// What a file must have to be served: an Id, and a size a file system can show
    /// (`st_size` is signed: 2^63 and above would read as negative).
    fn check(&self) -> Result<(), String> {
        if self.id.is_empty() {
            return Err("file without Id".into());
        }
        match self.size {
            None => return Err(format!("file {} has no Size", self.id)),
            Some(s) if s > i64::MAX as u64 => return Err(format!("file {} has an impossible Size", self.id)),
            Some(_) => {}
        }
        Ok(())
    }

    /// Path inside its container; falls back to the name.
    pub fn rel_path(&self) -> &str {
        match self.path.as_deref() {
            Some(p) if !p.trim_matches('/').is_empty() => p.trim_matches('/'),
            _ => &self.name,
        }
    }

    /// `DateModified`, else `DateCreated`.
    pub fn mtime(&self) -> SystemTime {
        self.date_modified
            .as_deref()
            .or(self.date_created.as_deref())
            .and_then(parse_date)
            .unwrap_or(UNIX_EPOCH)
    }
}

/// `users/current`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct User {
    #[serde(deserialize_with = "de_id")]
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub href_projects: Option<String>,
    pub href_runs: Option<String>,
}

/// `files/{id}/content?redirect=meta`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContentMeta {
    pub href_content: String,
    #[serde(default)]
    pub expires: Option<String>,
    #[serde(default)]
    pub supports_range: Option<bool>,
}

impl ContentMeta {
    /// When the presigned URL stops working: `Expires` if given, else the URL's `Expires=` epoch.
    pub fn expiry(&self) -> Option<SystemTime> {
        if let Some(t) = self.expires.as_deref().and_then(parse_date) {
            return Some(t);
        }
        let url = url::Url::parse(&self.href_content).ok()?;
        let secs = url
            .query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case("Expires"))?
            .1
            .parse::<u64>()
            .ok()?;
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }
}

/// Parses BaseSpace dates: `2018-07-19T23:50:10.0000000Z` (any number of fractional digits,
/// optional `Z`). Returns `None` for anything else.
pub fn parse_date(s: &str) -> Option<SystemTime> {
    let s = s.trim().trim_end_matches('Z');
    let (date, time) = s.split_once('T').or_else(|| s.split_once(' '))?;
    let mut d = date.split('-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (hms, frac) = match time.split_once('.') {
        Some((a, b)) => (a, b),
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let (hh, mm, ss): (u64, u64, u64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next().unwrap_or("0").parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = days_from_civil(y, m, day);
    if days < 0 {
        return Some(UNIX_EPOCH); // 0001-01-01 placeholders in nested user objects
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let n: u32 = digits.parse().ok()?;
        n * 10u32.pow(9 - digits.len() as u32)
    };
    Some(UNIX_EPOCH + Duration::new(days as u64 * 86400 + hh * 3600 + mm * 60 + ss, nanos))
}

/// Formats like BaseSpace: 7 fractional digits and `Z`.
pub fn format_date(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, dd) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:07}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos() / 100
    )
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_item_names_its_project_through_its_library() {
        // Trimmed from a recorded `Input.Samples` item.
        let r: Reference = serde_json::from_str(
            r#"{"Id":"155135036","Href":"v1pre3/samples/155135036","Name":"Myeloid-RNA-SeraSeq-Rep7",
                "Library":{"Id":"58863469","Project":{"Id":"86591915","Name":"MiSeq"}}}"#,
        )
        .unwrap();
        assert_eq!(r.own_project(), Some("86591915"));
        let own: Reference =
            serde_json::from_str(r#"{"Id":"1","Projects":[{"Id":"7"}],"Library":{"Project":{"Id":"9"}}}"#).unwrap();
        assert_eq!(own.own_project(), Some("7"), "the entity's own Projects first");
    }

    #[test]
    fn dates_round_trip_with_seven_digits() {
        let t = parse_date("2018-07-19T23:50:10.0000000Z").unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1532044210);
        assert_eq!(format_date(t), "2018-07-19T23:50:10.0000000Z");
        let t = parse_date("2025-05-28T08:00:57.3893800Z").unwrap();
        assert_eq!(format_date(t), "2025-05-28T08:00:57.3893800Z");
        assert!(parse_date("0001-01-01T00:00:00.0000000Z").is_some());
        assert!(parse_date("yesterday").is_none());
        assert!(parse_date("2018-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn raw_pages_of_both_versions_parse_and_keep_item_text() {
        let v1 = br#"{"Response":{"Items":[{"Id":"1","Name":"a"},{"Name":"no id"}],"DisplayedCount":2,"TotalCount":9,"Offset":0,"Limit":2},"ResponseStatus":{},"Notifications":[]}"#;
        let p = RawPage::parse(v1).unwrap();
        assert_eq!((p.items.len(), p.paging.total_count), (2, Some(9)));
        let e = EntityItem::from_raw(&p.items[0]).unwrap();
        assert_eq!(&*e.raw, r#"{"Id":"1","Name":"a"}"#);
        assert!(
            EntityItem::from_raw(&p.items[1]).is_err(),
            "an item without Id is refused alone"
        );
        let v2 = br#"{"Items":[{"Id":"ds.1","Name":"x"}],"Paging":{"DisplayedCount":1,"TotalCount":1}}"#;
        assert_eq!(RawPage::parse(v2).unwrap().items.len(), 1);
        assert!(RawPage::parse(b"{\"Other\":1}").is_err());
        assert!(RawPage::parse(b"[1,2").is_err());
    }

    #[test]
    fn impossible_file_sizes_are_refused() {
        let ok = serde_json::json!({"Id": "1", "Name": "x", "Size": i64::MAX});
        assert!(FileInfo::parse(&ok).is_ok());
        let bad = serde_json::json!({"Id": "1", "Name": "x", "Size": (i64::MAX as u64) + 1});
        assert!(FileInfo::parse(&bad).is_err());
    }

    #[test]
    fn ids_accept_strings_and_numbers() {
        let f = FileInfo::parse(&serde_json::json!({"Id": 42, "Name": "x", "Size": 3})).unwrap();
        assert_eq!(f.id, "42");
        assert!(FileInfo::parse(&serde_json::json!({"Name": "x"})).is_err());
        use serde_json::json;
        for size in [
            json!(-1),
            json!(i64::MIN),
            json!(null),
            json!("12"),
            json!(1.5),
            json!(true),
        ] {
            let v = json!({"Id": "1", "Name": "x", "Size": size});
            assert!(FileInfo::parse(&v).is_err(), "{v}");
            let raw = serde_json::value::RawValue::from_string(v.to_string()).unwrap();
            assert!(<FileInfo as ListItem>::from_raw(&raw).is_err(), "{v}");
        }
        assert!(FileInfo::parse(&json!({"Id": "1", "Name": "x"})).is_err(), "no Size");
    }
}
