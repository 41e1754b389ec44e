//! Credentials: where the API server and the access token come from.
//!
//! Order (the `bs` CLI's): environment `BASESPACE_API_SERVER` + `BASESPACE_ACCESS_TOKEN`,
//! else `~/.basespace/NAME.cfg` (`-c NAME`, default `default`). The file format is the one
//! `bs auth` and BaseMount write: `key = value` lines, optional `[DEFAULT]` section header,
//! keys `apiServer` and `accessToken`; other keys are ignored. The token is never accepted
//! on the command line (it would show in `ps` and shell history).

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::ConfigError;

/// Region aliases accepted by `--api-server`, as the bs CLI documents them.
pub const REGIONS: &[(&str, &str, &str)] = &[
    (
        "use1",
        "https://api.basespace.illumina.com",
        "US (Virginia), the default",
    ),
    ("us", "https://api.basespace.illumina.com", "alias of use1"),
    (
        "euc1",
        "https://api.euc1.sh.basespace.illumina.com",
        "Europe (Frankfurt)",
    ),
    ("euw2", "https://api.euw2.sh.basespace.illumina.com", "UK (London)"),
    (
        "cac1",
        "https://api.cac1.sh.basespace.illumina.com",
        "Canada (Montreal)",
    ),
    (
        "aps2",
        "https://api.aps2.sh.basespace.illumina.com",
        "Australia (Sydney)",
    ),
];

/// An access token. Its `Debug` and `Display` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(s: impl Into<String>) -> Self {
        Token(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where to talk to and with which token.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Base URL without trailing slash, e.g. `https://api.basespace.illumina.com`.
    pub api_server: String,
    pub token: Token,
    /// Where these came from, for messages (`environment` or a config path).
    pub source: String,
}

/// Turns a `--api-server` value (URL or region alias) into a base URL.
pub fn resolve_api_server(value: &str) -> Result<String, ConfigError> {
    let v = value.trim();
    if let Some((_, url, _)) = REGIONS.iter().find(|(alias, _, _)| alias.eq_ignore_ascii_case(v)) {
        return Ok(url.to_string());
    }
    let bad = |reason: &str| ConfigError::BadServer {
        value: v.to_string(),
        reason: reason.to_string(),
        regions: REGIONS.iter().map(|r| r.0).collect::<Vec<_>>().join(", "),
    };
    let parsed = url::Url::parse(v).map_err(|e| bad(&e.to_string()))?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(bad("scheme must be http or https"));
    }
    if parsed.host_str().is_none() {
        return Err(bad("no host"));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// `~/.basespace/NAME.cfg`; a NAME containing '/' or ending in `.cfg` is taken as a path.
pub fn config_path(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let file = if name.ends_with(".cfg") {
        name.to_string()
    } else {
        format!("{name}.cfg")
    };
    home_dir().join(".basespace").join(file)
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Parses the bs CLI config format into `(apiServer, accessToken)`.
pub fn parse_config(text: &str) -> (Option<String>, Option<String>) {
    let (mut server, mut token) = (None, None);
    let mut section = String::from("DEFAULT");
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].trim().to_string();
            continue;
        }
        if !section.eq_ignore_ascii_case("DEFAULT") {
            continue; // e.g. BaseMount's [BSFS] plugin section
        }
        if let Some((k, v)) = line.split_once('=').or_else(|| line.split_once(':')) {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "apiServer" => server = Some(v),
                "accessToken" => token = Some(v),
                _ => {}
            }
        }
    }
    (server, token)
}

/// Loads credentials in the documented order. `server_override` is `--api-server`.
pub fn load_credentials(config_name: Option<&str>, server_override: Option<&str>) -> Result<Credentials, ConfigError> {
    let env_server = std::env::var("BASESPACE_API_SERVER").ok().filter(|s| !s.is_empty());
    let env_token = std::env::var("BASESPACE_ACCESS_TOKEN").ok().filter(|s| !s.is_empty());
    if config_name.is_none() {
        if let (Some(server), Some(token)) = (&env_server, &env_token) {
            let server = resolve_api_server(server_override.unwrap_or(server))?;
            return Ok(Credentials {
                api_server: server,
                token: Token::new(token.clone()),
                source: "environment".into(),
            });
        }
    }
    let name = config_name.unwrap_or("default");
    let path = config_path(name);
    let shown = path.display().to_string();
    let text = match read_private_file(&path) {
        Ok(t) => t,
        Err(ConfigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::Missing {
                name: name.to_string(),
                path: shown,
            })
        }
        Err(e) => return Err(e),
    };
    let (server, token) = parse_config(&text);
    let token = token.filter(|t| !t.is_empty()).ok_or(ConfigError::MissingKey {
        path: shown.clone(),
        key: "accessToken",
    })?;
    let server = match server_override {
        Some(s) => resolve_api_server(s)?,
        None => resolve_api_server(&server.ok_or(ConfigError::MissingKey {
            path: shown.clone(),
            key: "apiServer",
        })?)?,
    };
    Ok(Credentials {
        api_server: server,
        token: Token::new(token),
        source: shown,
    })
}

/// Reads a secrets file, refusing one that group or others can read.
fn read_private_file(path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: shown.clone(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions { path: shown, mode });
    }
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: shown, source })
}

/// Writes a config in the bs CLI format with mode 0600 (atomically).
pub fn write_config(path: &Path, api_server: &str, token: &Token) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("cfg.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    writeln!(f, "apiServer = {api_server}")?;
    writeln!(f, "accessToken = {}", token.expose())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bs_cli_format_with_and_without_section() {
        let (s, t) = parse_config("apiServer = https://api.basespace.illumina.com/\naccessToken = abc\n");
        assert_eq!(s.as_deref(), Some("https://api.basespace.illumina.com/"));
        assert_eq!(t.as_deref(), Some("abc"));
        let (s, t) = parse_config(
            "[DEFAULT]\napiServer=http://x:1\napiVersion = v1pre3\naccessToken= tok \n[BSFS]\naccessToken = other\n",
        );
        assert_eq!(s.as_deref(), Some("http://x:1"));
        assert_eq!(t.as_deref(), Some("tok"));
    }

    #[test]
    fn regions_resolve_and_bad_urls_fail() {
        assert_eq!(
            resolve_api_server("euc1").unwrap(),
            "https://api.euc1.sh.basespace.illumina.com"
        );
        assert_eq!(resolve_api_server("US").unwrap(), "https://api.basespace.illumina.com");
        assert_eq!(resolve_api_server("http://127.0.0.1:9/").unwrap(), "http://127.0.0.1:9");
        assert!(resolve_api_server("narnia").is_err());
        assert!(resolve_api_server("ftp://x").is_err());
    }

    #[test]
    fn token_never_formats() {
        let t = Token::new("SECRET123");
        assert!(!format!("{t:?} {t}").contains("SECRET"));
    }
}
