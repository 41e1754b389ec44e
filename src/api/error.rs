//! Errors of the API layer.
//!
//! Every variant carries what a user needs to act on it; none carries the access token
//! (URLs are passed through [`crate::api::redact_url`] before they are stored here).

use std::time::Duration;

/// What went wrong talking to BaseSpace (API server or presigned content host).
#[derive(Debug, thiserror::Error, Clone)]
pub enum ApiError {
    /// 401: the token is missing, revoked or for another server.
    #[error("BaseSpace rejected the access token (HTTP 401{}): run `bsmount auth` or check BASESPACE_ACCESS_TOKEN", code_suffix(.code))]
    Unauthorized { code: Option<String> },
    /// 403: the token may not read this resource (BaseSpace also answers 403 for ids that do not exist).
    #[error("access denied by BaseSpace (HTTP 403{}): {message}", code_suffix(.code))]
    Forbidden { code: Option<String>, message: String },
    /// 404: no such resource or path.
    #[error("not found on BaseSpace (HTTP 404{}): {message}", code_suffix(.code))]
    NotFound { code: Option<String>, message: String },
    /// 410: removed by its owner.
    #[error("removed from BaseSpace (HTTP 410{}): {message}", code_suffix(.code))]
    Gone { code: Option<String>, message: String },
    /// 429 after all retries.
    #[error("BaseSpace is throttling requests (HTTP 429); gave up after {attempts} attempts")]
    Throttled { attempts: u32 },
    /// 5xx after all retries.
    #[error("BaseSpace server error (HTTP {status}{}) after {attempts} attempts: {message}", code_suffix(.code))]
    Server {
        status: u16,
        code: Option<String>,
        message: String,
        attempts: u32,
    },
    /// Any other unexpected status (not retried).
    #[error("unexpected HTTP {status} from BaseSpace{}: {message}", code_suffix(.code))]
    Status {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Connection refused, reset, timed out... after all retries.
    #[error("cannot reach {target}: {message} (after {attempts} attempts)")]
    Transport {
        target: String,
        message: String,
        attempts: u32,
    },
    /// The presigned URL expired or its signature was refused (S3-style 403).
    #[error("presigned content URL refused (expired or bad signature)")]
    UrlExpired,
    /// The body did not match what was asked (short read, wrong Content-Range, bad JSON).
    #[error("malformed response from {target}: {message}")]
    Malformed { target: String, message: String },
    /// The file's bytes are no longer the version the mount listed (`If-Match` refused
    /// with 412, or another ETag in the response): the file was replaced on BaseSpace.
    #[error("the file changed on BaseSpace since it was listed (ETag {expected}, now {got}); re-open it")]
    Changed { expected: String, got: String },
    /// A response larger than the mount accepts for its kind.
    #[error("response from {target} is larger than {limit} bytes; refused")]
    TooLarge { target: String, limit: u64 },
    /// A URL the server gave points where the mount does not connect (`netguard`).
    #[error("{target}: {message}")]
    Refused { target: String, message: String },
    /// A listing with more entries than the mount takes (`--max-listing`).
    #[error("{target} lists more than {limit} entries (the server claims {claimed}); refused whole rather than shown in part (raise --max-listing to list it)")]
    TooManyEntries { target: String, claimed: u64, limit: u64 },
    /// The whole retry budget ran out.
    #[error("gave up on {target} after {elapsed:?}: {last}")]
    Deadline {
        target: String,
        elapsed: Duration,
        last: String,
    },
}

fn code_suffix(code: &Option<String>) -> String {
    match code {
        Some(c) if !c.is_empty() => format!(", {c}"),
        _ => String::new(),
    }
}

impl ApiError {
    /// True when repeating the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Throttled { .. }
                | ApiError::Server { .. }
                | ApiError::Transport { .. }
                | ApiError::Malformed { .. }
        )
    }

    /// The BaseSpace `ErrorCode`, when the server sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ApiError::Unauthorized { code }
            | ApiError::Forbidden { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Gone { code, .. }
            | ApiError::Server { code, .. }
            | ApiError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The errno a filesystem operation failing with this error should return.
    pub fn errno(&self) -> i32 {
        match self {
            ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } => libc::EACCES,
            ApiError::NotFound { .. } | ApiError::Gone { .. } => libc::ENOENT,
            ApiError::Changed { .. } => libc::ESTALE,
            _ => libc::EIO,
        }
    }
}

/// Errors reading credentials.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no BaseSpace credentials: set BASESPACE_API_SERVER and BASESPACE_ACCESS_TOKEN, or run `bsmount auth{}` to create {path}", config_flag(.name))]
    Missing { name: String, path: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} has no `{key}` entry")]
    MissingKey { path: String, key: &'static str },
    #[error("{path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: String, mode: u32 },
    #[error("invalid API server {value:?}: {reason} (use a URL like https://api.basespace.illumina.com or a region: {regions})")]
    BadServer {
        value: String,
        reason: String,
        regions: String,
    },
}

fn config_flag(name: &str) -> String {
    if name == "default" {
        String::new()
    } else {
        format!(" -c {name}")
    }
}
