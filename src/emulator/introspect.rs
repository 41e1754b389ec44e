//! `/_emulator/*`: what tests and benchmarks ask the emulator itself (counters, the
//! manifest of every file with its mount path and md5, rescans, emulated outages).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::http::{json_response, Query};
use super::state::Shared;

pub async fn handle(State(s): State<Arc<Shared>>, Path(what): Path<String>, uri: axum::http::Uri) -> Response {
    introspect(&s, &what, &Query::parse(uri.query()))
}

fn introspect(s: &Shared, rest: &str, q: &Query) -> Response {
    match rest {
        "stats" => {
            let st = &s.stats;
            json_response(
                StatusCode::OK,
                &json!({
                    "api_requests": st.api_requests.load(Ordering::Relaxed),
                    "content_requests": st.content_requests.load(Ordering::Relaxed),
                    "content_bytes": st.content_bytes.load(Ordering::Relaxed),
                    "browse_requests": st.browse_requests.load(Ordering::Relaxed),
                    "url_requests": st.url_requests.load(Ordering::Relaxed),
                    "resolved_in_listings": st.resolved_in_listings.load(Ordering::Relaxed),
                    "expired_refusals": st.expired_refusals.load(Ordering::Relaxed),
                    "unauthorized": st.unauthorized.load(Ordering::Relaxed),
                    "faults_injected": s.faults.injected.load(Ordering::Relaxed),
                    "api_in_flight": st.api_in_flight.load(Ordering::Relaxed),
                    "api_in_flight_peak": match q.get("reset") {
                        Some("peak") => st.api_in_flight_peak.swap(0, Ordering::Relaxed),
                        _ => st.api_in_flight_peak.load(Ordering::Relaxed),
                    },
                }),
            )
        }
        "manifest" => {
            let with_md5 = q.get("md5").is_none_or(|v| v != "0" && v != "false");
            let idx = s.browse_index();
            let acct = s.account.read().clone();
            let files: Vec<Value> = idx
                .files
                .iter()
                .map(|(p, f)| {
                    let mut v = json!({"path": p, "id": f.id.to_string(), "size": f.size, "etag": f.etag()});
                    if with_md5 {
                        v["md5"] = json!(acct.md5(f).unwrap_or_default());
                    }
                    v
                })
                .collect();
            json_response(StatusCode::OK, &json!({"files": files}))
        }
        "rescan" => match &s.rescan {
            Some(f) => match tokio::task::block_in_place(|| f()) {
                Ok(account) => {
                    let files = account.files.len();
                    s.replace_account(account);
                    json_response(StatusCode::OK, &json!({"rescanned": true, "files": files}))
                }
                Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"error": e})),
            },
            None => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "this account has no source to rescan (use --data)"}),
            ),
        },
        "outage" => {
            let on = q.get("mode").is_some_and(|m| m == "hang");
            s.outage.send_replace(on);
            json_response(StatusCode::OK, &json!({"outage": on}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "unknown introspection endpoint; try stats or manifest"}),
        ),
    }
}
