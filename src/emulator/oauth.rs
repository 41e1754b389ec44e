//! The OAuth device flow, as BaseSpace runs it for `bs auth` and BaseMount:
//! `POST v1pre3/oauthv2/deviceauthorization` hands out a device code and a URL for the user;
//! `POST v1pre3/oauthv2/token` with `grant_type=device` answers `authorization_pending`
//! (HTTP 400) until the user approves. The emulator approves on the second poll, so the
//! whole flow runs in tests without a browser.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use super::http::{json_response, Query};
use super::state::Shared;

/// `POST v1pre3/oauthv2/<endpoint>`: parameters come in the query or as a form body.
pub async fn route(State(s): State<Arc<Shared>>, uri: Uri, method: Method, body: Bytes) -> Response {
    let endpoint = uri.path().rsplit('/').next().unwrap_or("");
    let mut params = Query::parse(std::str::from_utf8(&body).ok());
    params.0.extend(Query::parse(uri.query()).0);
    s.devices.handle(&s.token, &s.base_url, endpoint, &method, &params)
}

/// Polls answered `authorization_pending` before the emulated user approves.
const PENDING_POLLS: u32 = 1;

/// Device codes handed out and not yet redeemed: code → (polls so far, scope).
#[derive(Default)]
pub struct DeviceFlow {
    devices: parking_lot::Mutex<std::collections::HashMap<String, (u32, String)>>,
}

/// Scopes of the emulator's token unless `--scopes` says otherwise: what `bs whoami` shows
/// for a default `bs auth` token.
pub const DEFAULT_SCOPES: &[&str] = &[
    "READ GLOBAL",
    "CREATE GLOBAL",
    "BROWSE GLOBAL",
    "MOVETOTRASH GLOBAL",
    "WRITE GLOBAL",
];

fn oauth_error(code: &str, description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": code, "error_description": description}),
    )
}

impl DeviceFlow {
    /// Answers `POST v1pre3/oauthv2/<endpoint>`; an approved device gets `token`.
    pub fn handle(&self, token: &str, base_url: &str, endpoint: &str, method: &Method, p: &Query) -> Response {
        if method != Method::POST {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "invalid_request", "error_description": "use POST"}),
            );
        }
        match endpoint {
            "deviceauthorization" => {
                if p.get("response_type") != Some("device_code") {
                    return oauth_error("unsupported_response_type", "response_type must be device_code");
                }
                if p.get("client_id").is_none_or(str::is_empty) {
                    return oauth_error("invalid_client", "client_id is required");
                }
                let device_code = super::random_token();
                let user_code: String = device_code.chars().take(5).collect();
                let scope = p.get("scope").unwrap_or("browse global, read global").to_string();
                self.devices.lock().insert(device_code.clone(), (0, scope));
                let uri = format!("{}/oauth/device", base_url);
                json_response(
                    StatusCode::OK,
                    &json!({
                        "verification_uri": uri,
                        "verification_with_code_uri": format!("{uri}?code={user_code}"),
                        "user_code": user_code,
                        "expires_in": 1800,
                        "device_code": device_code,
                        "interval": 1
                    }),
                )
            }
            "token" => {
                if p.get("grant_type") != Some("device") {
                    return oauth_error("unsupported_grant_type", "grant_type must be device");
                }
                let Some(code) = p.get("code").or(p.get("device_code")) else {
                    return oauth_error("invalid_request", "code is required");
                };
                let mut devices = self.devices.lock();
                let Some(entry) = devices.get_mut(code) else {
                    return oauth_error("invalid_grant", "unknown or expired device code");
                };
                if entry.0 < PENDING_POLLS {
                    entry.0 += 1;
                    return oauth_error("authorization_pending", "The user has not yet approved this device");
                }
                devices.remove(code);
                json_response(
                    StatusCode::OK,
                    &json!({"access_token": token, "expires_in": 31_536_000}),
                )
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "invalid_request", "error_description": "unknown OAuth endpoint"}),
            ),
        }
    }
}
