//! The emulator's shared state: the account (swapped whole on every change), its browse
//! index, counters for tests, the token and its scopes, faults, and the presigning secret.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use sha2::Sha256;

use super::account::{Account, FileEntry};
use super::faults::Faults;
use super::json;

/// Characters escaped in URL path segments: everything but RFC 3986 unreserved ones, as S3 does.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Introspection counters (`GET /_emulator/stats`).
#[derive(Debug, Default)]
pub struct Stats {
    pub api_requests: AtomicU64,
    pub content_requests: AtomicU64,
    pub content_bytes: AtomicU64,
    pub browse_requests: AtomicU64,
    pub unauthorized: AtomicU64,
    /// `files/{id}/content` calls (each hands out a fresh presigned URL).
    pub url_requests: AtomicU64,
    /// Presigned URLs handed out inside file JSON (`filehrefcontentresolution=true`).
    pub resolved_in_listings: AtomicU64,
    /// Presigned requests refused because the URL had expired.
    pub expired_refusals: AtomicU64,
    /// API requests being answered now, and the most at once since the last reset
    /// (`/_emulator/stats?reset=peak`): how parallel a client's listings are.
    pub api_in_flight: AtomicU64,
    pub api_in_flight_peak: AtomicU64,
}

/// Counts an API request as in flight until it is answered.
pub struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    pub fn new(s: &'a Stats) -> Self {
        let now = s.api_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        s.api_in_flight_peak.fetch_max(now, Ordering::Relaxed);
        InFlight(s)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.api_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Shared server state.
pub struct Shared {
    pub account: RwLock<Arc<Account>>,
    pub token: String,
    pub base_url: String,
    pub url_ttl: Duration,
    pub faults: Faults,
    pub stats: Stats,
    /// Rebuilds the account from its source (`POST /_emulator/rescan`).
    pub rescan: Option<super::Rescan>,
    /// OAuth device codes handed out → polls so far.
    pub devices: super::oauth::DeviceFlow,
    /// `true` while an outage is emulated: requests hang until it ends.
    pub outage: tokio::sync::watch::Sender<bool>,
    /// Scopes of the token (`oauthv2/token/current`); writes need `CREATE GLOBAL`, the
    /// trash `MOVETOTRASH GLOBAL`.
    pub scopes: Vec<String>,
    /// Uploads in progress, new ids, one change at a time.
    pub writes: super::write::Writes,
    secret: [u8; 32],
    /// Built when first asked after a change (`None`): uploads change the account hundreds
    /// of times a second, and rebuilding the index at each one made every upload O(account).
    browse: RwLock<Option<Arc<BrowseIndex>>>,
}

/// Display path → file, and the set of directories, for `/browse/` and the manifest.
#[derive(Default)]
pub struct BrowseIndex {
    pub files: BTreeMap<String, Arc<FileEntry>>,
    pub dirs: BTreeSet<String>,
}

impl BrowseIndex {
    fn build(a: &Account) -> Self {
        let mut idx = BrowseIndex::default();
        idx.dirs.insert(String::new());
        idx.dirs.insert("Projects".into());
        idx.dirs.insert("Runs".into());
        for (path, f) in a.display_paths() {
            let mut p = path.as_str();
            while let Some(pos) = p.rfind('/') {
                p = &p[..pos];
                idx.dirs.insert(p.to_string());
            }
            idx.files.insert(path, f);
        }
        idx
    }
}

impl Shared {
    pub fn new(account: Account, token: String, base_url: String, url_ttl: Duration, faults: Faults) -> Self {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut secret);
        let browse = RwLock::new(None);
        Shared {
            account: RwLock::new(Arc::new(account)),
            token,
            base_url,
            url_ttl,
            faults,
            stats: Stats::default(),
            outage: tokio::sync::watch::channel(false).0,
            rescan: None,
            devices: Default::default(),
            scopes: super::oauth::DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect(),
            writes: Default::default(),
            secret,
            browse,
        }
    }

    /// Replaces the account (used by rescans).
    pub fn replace_account(&self, account: Account) {
        let mut browse = self.browse.write();
        *self.account.write() = Arc::new(account);
        *browse = None;
    }

    pub fn sign(&self, file_id: u64, expires: u64) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("any key length");
        mac.update(format!("{file_id}:{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A file's JSON; with `resolve`, `HrefContent` is a fresh presigned URL.
    pub fn file_json(&self, f: &FileEntry, full: bool, resolve: bool) -> Value {
        self.file_json_in(f, full, resolve, false)
    }

    /// A file's JSON in a v1pre3 (relative hrefs) or v2 (absolute) listing.
    pub fn file_json_in(&self, f: &FileEntry, full: bool, resolve: bool, v2: bool) -> Value {
        let mut v = if v2 {
            json::file_v2(f, &self.base_url)
        } else {
            json::file(f, full)
        };
        if resolve {
            self.stats.resolved_in_listings.fetch_add(1, Ordering::Relaxed);
            v["HrefContent"] = Value::String(self.presign(f).0);
        }
        v
    }

    pub fn presign(&self, f: &FileEntry) -> (String, SystemTime) {
        let exp_t = SystemTime::now() + self.url_ttl;
        let expires = exp_t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let obj = format!("{:016x}{:016x}", super::account::splitmix64(f.id ^ 0x5a5a), f.id);
        // The name segment is cosmetic (the object key carries the id); "." and ".." would be
        // resolved away by URL normalisation, even percent-encoded.
        let name = match f.name() {
            "" | "." | ".." => "file".to_string(),
            n => utf8_percent_encode(n, SEGMENT).to_string(),
        };
        let url = format!(
            "{}/content/{obj}/{name}?AWSAccessKeyId=BSMOUNTEMULATOR&Expires={expires}&response-content-disposition=filename%3D{name}&response-content-type={}&Signature={}",
            self.base_url,
            utf8_percent_encode(f.content_type, NON_ALPHANUMERIC),
            self.sign(f.id, expires)
        );
        (url, UNIX_EPOCH + Duration::from_secs(expires))
    }
}

impl Shared {
    /// Applies `f` to a copy of the account and publishes it (browse index and manifest too):
    /// readers never see half a change.
    pub fn change<R>(&self, f: impl FnOnce(&mut Account) -> R) -> R {
        let _one = self.writes.change.lock();
        let mut a = (**self.account.read()).clone();
        let r = f(&mut a);
        self.replace_account(a);
        r
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s.eq_ignore_ascii_case(scope))
    }

    /// The browse index (display path → file) as it is now.
    pub fn browse_index(&self) -> Arc<BrowseIndex> {
        if let Some(b) = self.browse.read().clone() {
            return b;
        }
        let mut browse = self.browse.write();
        let b = browse.get_or_insert_with(|| Arc::new(BrowseIndex::build(&self.account.read())));
        b.clone()
    }
}

/// Where the server listens once bound.
pub fn base_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}
