//! Operations endpoints: `GET /metrics` (Prometheus), `GET /readyz`,
//! `GET /v1/openapi.json` (the API described, OpenAPI 3.1), and the timing
//! of queries for `tailwater_query_duration_seconds`.
//!
//! `/metrics` names every tenant and app, so it takes an admin token
//! (Prometheus sends one with `authorization: {credentials: …}` in its
//! scrape config) unless the server runs with `--public-metrics`, for a
//! scraper on a trusted network.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::ApiError;
use crate::access::scopes::Principal;
use crate::AppState;

/// Paths whose answer time is a query's latency, and their endpoint label.
/// A request's logs (`/v1/requests/{id}/logs`) are timed as `request_logs`.
const TIMED_QUERIES: &[(&str, &str)] = &[
    ("/v1/logs", "logs"),
    ("/v1/export", "export"),
    ("/v1/histogram", "histogram"),
    ("/v1/logs/count", "count"),
    ("/v1/requests", "requests"),
    ("/loki/api/v1/query", "loki_query"),
    ("/loki/api/v1/query_range", "loki_query_range"),
];

pub async fn metrics(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
) -> Result<Response, ApiError> {
    if !state.public_metrics && !principal?.is_admin() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "/metrics takes an admin token (they cover every tenant); or start the server with --public-metrics to let anyone who can reach it scrape",
        ));
    }
    // Off the async threads: some figures are read from the store (a
    // drain's lag).
    let metrics = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.render())
        .await
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// The API's description, kept beside the routes (`openapi.json`; a test
/// holds it and the router to the same paths). Public: it names no tenant.
const OPENAPI: &str = include_str!("openapi.json");

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Ready while the server takes requests: it binds only once the store is
/// open and the registry loaded, and says 503 `shutting_down` once a
/// graceful shutdown began, so a load balancer stops sending first.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if *state.stopping.borrow() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down: send to another one",
        )
        .into_response();
    }
    Json(serde_json::json!({ "status": "ready" })).into_response()
}

/// Times the queries of [`TIMED_QUERIES`] until their response starts.
pub async fn time_queries(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let endpoint = TIMED_QUERIES
        .iter()
        .find(|(timed, _)| *timed == path)
        .map(|(_, endpoint)| *endpoint)
        .or_else(|| is_request_logs(path).then_some("request_logs"));
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(endpoint) = endpoint {
        state.metrics.observe_query(endpoint, started.elapsed());
    }
    response
}

/// `/v1/requests/{id}/logs` (its tail is live, not a query).
fn is_request_logs(path: &str) -> bool {
    path.strip_prefix("/v1/requests/")
        .and_then(|rest| rest.strip_suffix("/logs"))
        .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::registry::Registry;
    use crate::redact::Redactor;
    use crate::ServerConfig;

    #[tokio::test]
    async fn readyz_says_503_with_the_reason_once_shutdown_began() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::new(dir.path().to_owned());
        let store =
            tailwater_store::Store::open(&dir.path().join("store"), config.store.clone()).unwrap();
        let (registry, _) = Registry::open(&dir.path().join("auth"), None).unwrap();
        let state = crate::AppState::open(store, registry, Redactor::none(), &config).unwrap();
        assert_eq!(readyz(State(state.clone())).await.status(), StatusCode::OK);

        state.stopping.send_replace(true);
        let response = readyz(State(state)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "shutting_down");
    }
}
