//! The emulator's routes, one table: each path and method to its handler ([`v1`], [`v2`],
//! [`write`], [`content`]), and what every request passes through first: an emulated outage,
//! the latency (`--latency-ms`), then for the API the counters, injected faults and the
//! token. Query parameter names are read case-insensitively by the handlers ([`Req`]); a
//! path BaseSpace does not have gets its own envelope, not axum's.
//!
//! [`Req`]: super::http::Req

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;

use super::account::ContainerKind;
use super::faults::Fault;
use super::http::{error, method_not_allowed, unrecognized, Query};
use super::state::{InFlight, Shared};
use super::{content, introspect, oauth, v1, v2, write};

type S = Arc<Shared>;

/// Every route.
pub fn router(s: S) -> Router {
    use v1::Owner as O1;
    use v2::Owner as O2;
    let mut api: Router<S> = Router::new()
        // v1pre3: the user, the lists a walk starts from
        .route("/v1pre3/users/current", get(v1::user))
        .route("/v1pre3/users/{id}", get(v1::user_by_id))
        .route("/v1pre3/users/current/projects", get(v1::projects))
        .route("/v1pre3/users/current/runs", get(v1::runs))
        .route("/v1pre3/users/current/appsessions", get(v1::appsessions))
        .route("/v1pre3/oauthv2/token/current", get(v1::token_info))
        // projects
        .route("/v1pre3/projects", post(write::create_project))
        .route("/v1pre3/projects/{id}", get(v1::project))
        .route("/v1pre3/projects/{id}/samples", get(v1::project_samples))
        .route(
            "/v1pre3/projects/{id}/appresults",
            get(v1::project_appresults).post(write::create_appresult),
        )
        // samples, appresults, runs
        .route(
            "/v1pre3/samples/{id}",
            get(|r, p| v1::container(ContainerKind::Sample, r, p)),
        )
        .route(
            "/v1pre3/samples/{id}/files",
            get(|r, p| v1::container_files(ContainerKind::Sample, r, p)),
        )
        .route(
            "/v1pre3/appresults/{id}",
            get(|r, p| v1::container(ContainerKind::AppResult, r, p)),
        )
        .route(
            "/v1pre3/appresults/{id}/files",
            get(|r, p| v1::container_files(ContainerKind::AppResult, r, p)).post(write::start_upload),
        )
        .route("/v1pre3/runs/{id}", get(|r, p| v1::container(ContainerKind::Run, r, p)))
        .route(
            "/v1pre3/runs/{id}/files",
            get(|r, p| v1::container_files(ContainerKind::Run, r, p)),
        )
        .route("/v1pre3/runs/{id}/samples", get(v1::run_samples))
        // appsessions, files
        .route("/v1pre3/appsessions/{id}", get(v1::appsession).post(write::set_status))
        .route("/v1pre3/files/{id}", get(v1::file).post(write::complete_upload))
        .route("/v1pre3/files/{id}/content", get(content::content))
        .route("/v1pre3/files/{id}/parts/{n}", put(write::put_part))
        // catalogs
        .route("/v1pre3/genomes", get(v1::genomes))
        .route("/v1pre3/genomes/{id}", get(v1::genome))
        .route("/v1pre3/applications", get(v1::applications))
        .route("/v1pre3/applications/{id}", get(v1::application))
        // v2
        .route("/v2/users/current", get(v2::user))
        .route("/v2/appsessions", get(v2::appsessions))
        .route("/v2/appsessions/{id}", get(v2::appsession))
        .route("/v2/appsessions/{id}/logfiles", get(v2::appsession_logs))
        .route("/v2/biosamples", get(v2::biosamples))
        .route("/v2/biosamples/{id}", get(v2::biosample))
        .route("/v2/biosamples/{id}/libraries", get(v2::biosample_libraries))
        .route("/v2/libraries/{id}", get(v2::library))
        .route("/v2/datasets", get(v2::datasets))
        .route("/v2/datasets/{id}", get(v2::dataset).delete(write::trash_dataset))
        .route("/v2/datasets/{id}/files", get(v2::dataset_files))
        .route("/v2/projects/{id}", get(v2::project).delete(write::trash_project))
        .route("/v2/projects/{id}/datasets", get(v2::project_datasets))
        .route("/v2/runs", get(v2::runs))
        .route("/v2/runs/{id}", get(v2::run).delete(write::trash_run))
        .route("/v2/runs/{id}/files", get(v2::run_files))
        .route("/v2/runs/{id}/sequencingstats", get(v2::run_sequencing_stats))
        .route("/v2/files/{id}", get(v2::file))
        .route("/v2/trash", get(v2::trash))
        .route("/v2/trash/{id}", get(v2::trash_item))
        .route("/v2/trash/{id}/restorefromtrash", post(write::restore));
    // Properties: the list, one property, its items, for every kind that has them.
    for (kind, owner) in [
        ("projects", O1::Projects),
        ("samples", O1::Samples),
        ("appresults", O1::AppResults),
        ("runs", O1::Runs),
        ("appsessions", O1::AppSessions),
        ("files", O1::Files),
    ] {
        api = api
            .route(
                &format!("/v1pre3/{kind}/{{id}}/properties"),
                get(move |r, p| v1::properties(owner, r, p)),
            )
            .route(
                &format!("/v1pre3/{kind}/{{id}}/properties/{{name}}"),
                get(move |r, p| v1::property(owner, r, p)),
            )
            .route(
                &format!("/v1pre3/{kind}/{{id}}/properties/{{name}}/items"),
                get(move |r, p| v1::property_items(owner, r, p)),
            );
    }
    for (kind, owner) in [
        ("datasets", O2::Datasets),
        ("biosamples", O2::BioSamples),
        ("appsessions", O2::AppSessions),
        ("runs", O2::Runs),
        ("projects", O2::Projects),
        ("libraries", O2::Libraries),
    ] {
        api = api
            .route(
                &format!("/v2/{kind}/{{id}}/properties"),
                get(move |r, p| v2::properties(owner, r, p)),
            )
            .route(
                &format!("/v2/{kind}/{{id}}/properties/{{name}}"),
                get(move |r, p| v2::property(owner, r, p)),
            )
            .route(
                &format!("/v2/{kind}/{{id}}/properties/{{name}}/items"),
                get(move |r, p| v2::property_items(owner, r, p)),
            );
    }
    let api = api
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(s.clone(), authorize));
    // The OAuth endpoints are how a client gets its token: no token asked.
    let oauth = Router::new()
        .route("/v1pre3/oauthv2/deviceauthorization", post(oauth::route))
        .route("/v1pre3/oauthv2/token", post(oauth::route));
    let counted = api
        .merge(oauth)
        .layer(middleware::from_fn_with_state(s.clone(), count_and_fault));
    let files = Router::new()
        .route("/content/{*rest}", get(content::presigned_url))
        .route("/browse", get(content::browse_path))
        .route("/browse/", get(content::browse_path))
        .route("/browse/{*rest}", get(content::browse_path));
    counted
        .merge(files)
        .layer(middleware::from_fn_with_state(s.clone(), network))
        .route("/_emulator/{what}", get(introspect::handle).post(introspect::handle))
        .with_state(s)
}

/// What every request meets first: an emulated outage (the server accepts and answers
/// nothing until it ends), then the emulated latency.
async fn network(State(s): State<S>, req: Request, next: Next) -> Response {
    let mut outage = s.outage.subscribe();
    while *outage.borrow_and_update() {
        if outage.changed().await.is_err() {
            break;
        }
    }
    // Counted as in flight from here: the latency is part of the answer's time.
    let api = !(req.uri().path().starts_with("/content/") || req.uri().path().starts_with("/browse"));
    let _in_flight = api.then(|| InFlight::new(&s.stats));
    if !s.faults.profile.latency.is_zero() {
        tokio::time::sleep(s.faults.profile.latency).await;
    }
    next.run(req).await
}

/// API requests are counted, and some fail on purpose (`--fail-rate`, `--throttle-rate`).
async fn count_and_fault(State(s): State<S>, req: Request, next: Next) -> Response {
    s.stats.api_requests.fetch_add(1, Ordering::Relaxed);
    if let Some(r) = injected_error(&s, false) {
        return r;
    }
    next.run(req).await
}

/// The API takes the token in `x-access-token`, `Authorization: Bearer` or `access_token=`.
async fn authorize(State(s): State<S>, req: Request, next: Next) -> Response {
    if !authorized(&s, req.headers(), &Query::parse(req.uri().query())) {
        s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNAUTHORIZED,
            Some("BASESPACE.COMMON.UNAUTHORIZED"),
            "Please provide a valid access token",
        );
    }
    next.run(req).await
}

fn authorized(s: &Shared, h: &HeaderMap, q: &Query) -> bool {
    let given = h
        .get("x-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            h.get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(|| q.get("access_token").map(str::to_string));
    // Constant-time compare, as a real server would.
    given.is_some_and(|g| {
        g.len() == s.token.len() && g.bytes().zip(s.token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

/// A fault drawn for this request, as the answer it gets instead, if any.
pub fn injected_error(s: &Shared, has_body: bool) -> Option<Response> {
    match s.faults.draw(has_body) {
        Fault::Throttle429 => Some(with_retry_after(error(
            StatusCode::TOO_MANY_REQUESTS,
            Some("BASESPACE.COMMON.TOO_MANY_REQUESTS"),
            "Rate limit exceeded",
        ))),
        Fault::Error500 => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("BASESPACE.COMMON.INTERNAL_SERVER_ERROR"),
            "An internal error occurred (injected)",
        )),
        Fault::Unavailable503 => Some(with_retry_after(error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "Service temporarily unavailable (injected)",
        ))),
        Fault::ResetAfter(_) | Fault::None => None,
    }
}

fn with_retry_after(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
