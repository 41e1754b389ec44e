//! The OAuth device flow `bsmount auth` uses, as `bs auth` and BaseMount do: ask for a
//! device code, show the user a URL, poll until they approve, get an access token.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::config::Token;
use super::redact_url;

/// The BaseSpace application bsmount authenticates as. BaseSpace only issues tokens to
/// registered applications: set `BSMOUNT_CLIENT_ID` (and `BSMOUNT_CLIENT_SECRET`) to your
/// app's credentials from the BaseSpace developer portal.
pub const DEFAULT_CLIENT_ID: &str = "bsmount";

/// Scopes a read-only mount needs.
/// What BaseMount asks for since v0.14: browse and read, and create (`--write`) and move to
/// the trash (`--allow-delete`); nothing is written unless a mount asks with those flags.
pub const DEFAULT_SCOPES: &str = "BROWSE GLOBAL, READ GLOBAL, CREATE GLOBAL, MOVETOTRASH GLOBAL";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot reach {server}: {message}")]
    Transport { server: String, message: String },
    #[error("BaseSpace refused the request: {error}{}", desc(.description))]
    Refused { error: String, description: Option<String> },
    #[error("authorization was denied in the browser")]
    Denied,
    #[error("the code expired before it was approved; run `bsmount auth` again")]
    Expired,
    #[error("unexpected answer from {server}: {message}")]
    Malformed { server: String, message: String },
}

fn desc(d: &Option<String>) -> String {
    d.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct DeviceCode {
    pub verification_uri: Option<String>,
    pub verification_with_code_uri: Option<String>,
    pub user_code: Option<String>,
    pub expires_in: Option<u64>,
    pub device_code: String,
    pub interval: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Runs the device flow against `server`; `show` gets the URL the user must open.
pub async fn device_flow(server: &str, scopes: &str, show: impl FnOnce(&DeviceCode)) -> Result<Token, AuthError> {
    let client_id = std::env::var("BSMOUNT_CLIENT_ID").unwrap_or_else(|_| DEFAULT_CLIENT_ID.into());
    let client_secret = std::env::var("BSMOUNT_CLIENT_SECRET").unwrap_or_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| AuthError::Transport {
            server: server.into(),
            message: e.to_string(),
        })?;
    let transport = |e: reqwest::Error| AuthError::Transport {
        server: server.into(),
        message: redact_url(&e.to_string()),
    };
    let url = format!("{server}/v1pre3/oauthv2/deviceauthorization");
    let form = [
        ("response_type", "device_code"),
        ("client_id", client_id.as_str()),
        ("scope", scopes),
    ];
    let resp = http.post(&url).form(&form).send().await.map_err(transport)?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(transport)?;
    if !status.is_success() {
        let a: TokenAnswer = serde_json::from_slice(&body).map_err(|e| AuthError::Malformed {
            server: server.into(),
            message: format!("HTTP {status}: {e}"),
        })?;
        return Err(AuthError::Refused {
            error: a.error.unwrap_or_else(|| status.to_string()),
            description: a.error_description,
        });
    }
    let code: DeviceCode = serde_json::from_slice(&body).map_err(|e| AuthError::Malformed {
        server: server.into(),
        message: e.to_string(),
    })?;
    show(&code);
    let interval = Duration::from_secs(code.interval.unwrap_or(5).max(1));
    let deadline = Instant::now() + Duration::from_secs(code.expires_in.unwrap_or(1800));
    let token_url = format!("{server}/v1pre3/oauthv2/token");
    loop {
        if Instant::now() > deadline {
            return Err(AuthError::Expired);
        }
        tokio::time::sleep(interval).await;
        let form = [
            ("client_id", client_id.as_str()),
            ("client_secret", client_secret.as_str()),
            ("code", code.device_code.as_str()),
            ("grant_type", "device"),
        ];
        let resp = http.post(&token_url).form(&form).send().await.map_err(transport)?;
        let status = resp.status();
        let a: TokenAnswer =
            serde_json::from_slice(&resp.bytes().await.map_err(transport)?).map_err(|e| AuthError::Malformed {
                server: server.into(),
                message: format!("HTTP {status}: {e}"),
            })?;
        match (a.access_token, a.error.as_deref()) {
            (Some(t), _) if status.is_success() && !t.is_empty() => return Ok(Token::new(t)),
            (_, Some("authorization_pending")) | (_, Some("slow_down")) => continue,
            (_, Some("access_denied")) | (_, Some("AccessDenied")) => return Err(AuthError::Denied),
            (_, Some("expired_token")) => return Err(AuthError::Expired),
            (_, e) => {
                return Err(AuthError::Refused {
                    error: e.unwrap_or("no token").to_string(),
                    description: a.error_description,
                })
            }
        }
    }
}
