//! The HTTP API. Every route but `/healthz`, `/readyz`, `/v1/openapi.json`,
//! the web console, Elasticsearch's cluster info and health probes (and
//! `/metrics` with `--public-metrics`) needs a token; every error is
//! `{"error": {"code", "message"}}` with the fitting status, but those of
//! another protocol's routes, which answer in its own shape.

mod cluster;
mod count;
mod drains;
mod es;
mod export;
mod histogram;
mod ingest;
mod internal;
mod json;
mod logs;
mod loki;
mod loki_meta;
mod loki_query;
mod loki_read;
mod loki_tail;
mod ops;
mod otlp;
mod read;
mod requests;
mod runners;
mod status;
mod tenancy;
mod ui;
mod unnumbered;

use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use tailwater_model::wire::ErrorBody;

use crate::access::registry::{RegistryError, TokenRejected};
use crate::access::scopes::{Denied, Principal};
use crate::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/v1/ingest",
            // Our own limit check answers with a clear error; this outer one
            // only stops bodies far larger than it.
            post(ingest::ingest).layer(DefaultBodyLimit::max(
                state.max_batch_bytes.saturating_add(1),
            )),
        )
        .route(
            "/v1/logs",
            // GET reads history; POST is OTLP/HTTP logs (its fixed path).
            get(logs::history)
                .post(otlp::export)
                .layer(DefaultBodyLimit::max(
                    state.max_batch_bytes.saturating_add(1),
                )),
        )
        .route("/v1/logs/tail", get(logs::tail))
        .route("/v1/logs/count", get(count::count))
        .route(
            "/loki/api/v1/push",
            post(loki::push).layer(DefaultBodyLimit::max(
                state.max_batch_bytes.saturating_add(1),
            )),
        )
        .route(
            "/v1/ingest/json",
            post(json::ingest).layer(DefaultBodyLimit::max(
                state.max_batch_bytes.saturating_add(1),
            )),
        )
        // Elasticsearch's API, as log shippers use it; the same under /es.
        .route("/_bulk", es::bulk_route(&state))
        .route("/{index}/_bulk", es::index_bulk_route(&state))
        .route("/_cat/health", es::cat_health_route())
        .route("/_cluster/health", es::cluster_health_route())
        .nest("/es", es::prefixed(&state))
        .route("/es/", get(es::cluster))
        .route("/v1/export", get(export::export))
        .route(
            "/v1/tenants",
            post(tenancy::create_tenant).get(tenancy::list_tenants),
        )
        .route("/v1/tenants/{name}", patch(tenancy::update_tenant))
        .route(
            "/v1/tokens",
            post(tenancy::create_token).get(tenancy::list_tokens),
        )
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(tenancy::revoke_token),
        )
        .route(
            "/v1/apps",
            post(tenancy::create_app).get(tenancy::list_apps),
        )
        .route("/v1/apps/{name}", patch(tenancy::update_app))
        .route(
            "/v1/apps/{name}/drains",
            post(drains::create).get(drains::list),
        )
        .route(
            "/v1/apps/{name}/drains/{id}",
            axum::routing::delete(drains::delete),
        )
        .route("/v1/apps/{name}/drains/{id}/pause", post(drains::pause))
        .route("/v1/apps/{name}/drains/{id}/resume", post(drains::resume))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/histogram", get(histogram::histogram))
        // The web console for a browser, Elasticsearch's cluster info
        // for its clients.
        .route("/", get(es::root))
        .route("/runners", get(ui::page))
        .route("/runners/{runner}", get(ui::page))
        .route("/requests/{id}", get(ui::page))
        .route("/ui/{file}", get(ui::asset))
        .route("/v1/runners", get(runners::list))
        .route("/v1/runners/{runner}", get(runners::show))
        .route("/v1/requests", get(requests::list))
        .route("/v1/requests/{id}", get(requests::show))
        .route("/v1/requests/{id}/logs", get(requests::logs))
        .route("/v1/requests/{id}/logs/tail", get(requests::tail))
        .route("/v1/status", get(status::status))
        .route("/v1/openapi.json", get(ops::openapi))
        .route("/v1/cluster", get(cluster::status))
        // A peer's repair of a gap (node credential only).
        .route("/internal/v1/cluster/records", get(internal::records))
        .route(
            "/internal/v1/cluster/stream-records",
            get(internal::stream_records),
        )
        // The Loki query API, for Grafana's Loki data source.
        .route("/loki/api/v1/query", get(loki_query::query))
        .route("/loki/api/v1/query_range", get(loki_query::query_range))
        .route("/loki/api/v1/labels", get(loki_meta::labels))
        .route(
            "/loki/api/v1/label/{name}/values",
            get(loki_meta::label_values),
        )
        .route("/loki/api/v1/series", get(loki_meta::series))
        .route("/loki/api/v1/index/stats", get(loki_meta::index_stats))
        .route("/loki/api/v1/status/buildinfo", get(loki_meta::buildinfo))
        .route("/loki/api/v1/tail", get(loki_tail::tail))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::time_queries,
        ))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// The errors axum answers by itself (a body over its limit, a method a
/// route does not take, …) are plain text or empty: they are given the
/// API's JSON shape here, so a client reads every error the same way.
/// Errors already in a shape (JSON, or a protocol's protobuf) pass.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value.starts_with("application/json") || value.starts_with("application/x-protobuf")
        });
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_lowercase(),
        Err(_) => String::new(),
    };
    let (code, hint) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "send a smaller body (ingest takes up to --max-batch-bytes, other calls 2 MiB)",
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "use a method this endpoint takes: see the API list in the README",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        status if status.is_server_error() => ("internal", "try again; the server log has details"),
        _ => ("bad_request", "see the API list in the README"),
    };
    let what = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    ApiError::new(status, code, format!("{what}: {hint}")).into_response()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint: see the API list in the README",
    )
}

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Sent as `Retry-After` when the same request may succeed later.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// This error, telling the client to ask again after `wait`.
    pub fn retry_after(self, wait: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait),
            ..self
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The error is logged, not answered: it may name the server's files,
    /// another tenant's among them.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(%error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error: the server log has details; try again later",
        )
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> ApiError {
        match denied {
            Denied::NotFound(message) => ApiError::not_found(message),
            Denied::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            Denied::Private(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "private_logs", message)
            }
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> ApiError {
        match error {
            RegistryError::NotFound(message) => ApiError::not_found(message),
            RegistryError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            RegistryError::Invalid(message) => ApiError::bad_request(message),
            RegistryError::Limit { reason, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, reason, message)
            }
            RegistryError::Unavailable(message) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                message,
            )
            .retry_after(std::time::Duration::from_secs(1)),
            RegistryError::Io(error) => ApiError::internal(format!("{error:#}")),
        }
    }
}

/// The password of an `Authorization: Basic` value, if it is one.
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// The token of an `Authorization: ApiKey` value: the key of
/// `base64(id:key)`, or the value as it is when it is not that.
fn api_key(value: &str) -> String {
    use base64::Engine;
    let encoded = value.trim_start_matches("ApiKey ").trim();
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|text| text.split_once(':').map(|(_, key)| key.to_owned()))
        .unwrap_or_else(|| encoded.to_owned())
}

/// Takes `tenant` out of a query string's pairs: the tenant a request acts
/// on, when not the token's own.
pub(crate) fn take_tenant(pairs: &mut Vec<(String, String)>) -> Result<Option<String>, ApiError> {
    take_param(pairs, "tenant")
}

/// Takes parameter `wanted` out of a query string's pairs: `None` when it
/// is absent or empty, a 400 when it is given twice.
pub(crate) fn take_param(
    pairs: &mut Vec<(String, String)>,
    wanted: &str,
) -> Result<Option<String>, ApiError> {
    let mut found = None;
    let mut error = None;
    pairs.retain(|(name, value)| {
        if name != wanted {
            return true;
        }
        if found.replace(value.clone()).is_some() {
            error = Some(ApiError::bad_request(format!(
                "{wanted} is given more than once: give it once"
            )));
        }
        false
    });
    match error {
        Some(error) => Err(error),
        None => Ok(found.filter(|value| !value.is_empty())),
    }
}

/// Refuses whatever parameter is left in `pairs` once a call took the ones
/// it knows (`takes`, for the message).
pub(crate) fn no_other_params(pairs: &[(String, String)], takes: &str) -> Result<(), ApiError> {
    match pairs.first() {
        Some((name, _)) => Err(ApiError::bad_request(format!(
            "unknown parameter '{name}': this call takes only {takes}"
        ))),
        None => Ok(()),
    }
}

/// The query string of calls that take nothing but `tenant`.
pub(crate) fn only_tenant(mut pairs: Vec<(String, String)>) -> Result<Option<String>, ApiError> {
    let tenant = take_tenant(&mut pairs)?;
    no_other_params(&pairs, "tenant")?;
    Ok(tenant)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody::new(self.code, self.message);
        let mut response =
            ingest::with_retry_after((self.status, Json(body)).into_response(), self.retry_after);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let basic;
        let token = match parts.headers.get(header::AUTHORIZATION) {
            Some(header) => {
                let value = header.to_str().unwrap_or_default();
                match value.strip_prefix("Bearer ") {
                    Some(token) => token.trim(),
                    // Elasticsearch's clients: `base64(id:key)`, the key
                    // the token; or the token as it is.
                    None if value.starts_with("ApiKey ") => {
                        basic = api_key(value);
                        basic.as_str()
                    }
                    // Basic auth's password is the token, the user any
                    // name: shippers that speak only basic auth (Vector's
                    // and Fly.io's Loki sinks) send it so.
                    None => {
                        basic = basic_password(value).ok_or_else(|| {
                            unauthorized(
                                "malformed authorization header: use 'Authorization: Bearer <token>' (or basic auth with the token as the password)",
                            )
                        })?;
                        basic.as_str()
                    }
                }
            }
            // Browsers cannot set headers on a WebSocket; they can offer
            // subprotocols, which stay out of URLs and access logs.
            None => logs::websocket_bearer(&parts.headers)
                .ok_or_else(|| unauthorized("missing token: send 'Authorization: Bearer <token>' (the CLI takes --token or TAILWATER_TOKEN; a browser WebSocket offers the subprotocols tailwater.v1 and tailwater.bearer.<token>)"))?,
        };
        match state.registry.authenticate(token) {
            Ok(identity) => Ok(identity.into()),
            Err(TokenRejected::Unknown) => Err(unauthorized(
                "invalid token: check it, or ask an admin for a new one",
            )),
            Err(TokenRejected::Expired) => Err(unauthorized(
                "this token has expired: ask its tenant's owner or an admin for a new one",
            )),
            Err(TokenRejected::Revoked) => Err(unauthorized(
                "this token was revoked: ask its tenant's owner or an admin for a new one",
            )),
        }
    }
}
