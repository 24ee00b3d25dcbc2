//! Elasticsearch's API, as much of it as log shippers use: `POST`/`PUT`
//! `/_bulk` and `/{index}/_bulk`, `GET /` (cluster info, 8.x, for a
//! client asking for JSON; a browser or `curl` gets the web console), and
//! the health probes
//! shippers send first: `GET /_cat/health` (rsyslog's `omelasticsearch`)
//! and `GET /_cluster/health` (Vector's healthcheck). The same routes are
//! under `/es` too, for a client that cannot tell a console from a
//! cluster: point it at `http://host:port/es`.
//!
//! Every answer carries `X-Elastic-Product: Elasticsearch` (the official
//! clients refuse a server without it), and is written as Elasticsearch
//! writes it: `{"took", "errors", "items"}` for a bulk, each item its
//! `status` and either `result` or an `error` `{"type", "reason"}`; a
//! whole request refused is `{"error": {"root_cause", "type", "reason"},
//! "status"}`. The token is the bearer, the password of basic auth, or an
//! `Authorization: ApiKey` (`base64(id:token)`, or the token as it is).
//! The probes and `GET /` need no token: they tell only that this is an
//! 8.x cluster.
//!
//! Each document is mapped by [`crate::protocols::documents`] and goes
//! through the pipeline as OTLP's resources do ([`super::unnumbered`]);
//! the index names nothing in tailwater (the token and the document say
//! which app). A refusal the sender can retry (429, 503 with
//! `Retry-After`) is the whole answer only when nothing was stored and
//! nothing else was wrong; otherwise each item says its own.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use rand::Rng;
use serde_json::{json, Value};

use super::ingest::with_retry_after;
use super::unnumbered::{self, Failure};
use super::{take_tenant, ApiError};
use crate::access::scopes::Principal;
use crate::ingest::Pipeline;
use crate::protocols::documents;
use crate::protocols::es_bulk::{self, Action, ItemError};
use crate::{limits, AppState};

/// The protocol's name in the boot of what it sends (`es-2026-12-07`).
const PROTOCOL: &str = "es";
const NO_APP: &str = "the document names no app: give it an app (or service.name) key, or send with an ingest token of one app";
/// The Elasticsearch version answered: clients pick their API by it.
const VERSION: &str = "8.17.0";
const PRODUCT: HeaderValue = HeaderValue::from_static("Elasticsearch");

/// `POST`/`PUT /_bulk`.
pub fn bulk_route(state: &AppState) -> MethodRouter<AppState> {
    post(bulk)
        .put(bulk)
        .layer(body_limit(state))
        .layer(axum::middleware::map_response(product))
}

/// `POST`/`PUT /{index}/_bulk`.
pub fn index_bulk_route(state: &AppState) -> MethodRouter<AppState> {
    post(bulk_index)
        .put(bulk_index)
        .layer(body_limit(state))
        .layer(axum::middleware::map_response(product))
}

/// `GET /_cat/health`.
pub fn cat_health_route() -> MethodRouter<AppState> {
    get(cat_health).layer(axum::middleware::map_response(product))
}

/// `GET /_cluster/health`.
pub fn cluster_health_route() -> MethodRouter<AppState> {
    get(cluster_health).layer(axum::middleware::map_response(product))
}

/// The same routes under `/es`, with `/` always the cluster's, and
/// Elasticsearch's own answer to any other path.
pub fn prefixed(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(info))
        .route("/_bulk", bulk_route(state))
        .route("/{index}/_bulk", index_bulk_route(state))
        .route("/_cat/health", cat_health_route())
        .route("/_cluster/health", cluster_health_route())
        .fallback(no_handler)
        .layer(axum::middleware::map_response(product))
}

fn body_limit(state: &AppState) -> DefaultBodyLimit {
    // Our own limit check answers with a clear error; this outer one only
    // stops bodies far larger than it.
    DefaultBodyLimit::max(state.max_batch_bytes.saturating_add(1))
}

async fn product(mut response: Response) -> Response {
    response.headers_mut().insert("x-elastic-product", PRODUCT);
    response
}

/// `GET /`: the cluster's info for a client asking for JSON and not HTML
/// (Elasticsearch's clients ask for `application/json` or
/// `application/vnd.elasticsearch+json`); the web console for anything
/// else (a browser, `curl`).
pub async fn root(headers: HeaderMap) -> Response {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    let json = accept.iter().any(|accept| accept.contains("json"));
    let html = accept.iter().any(|accept| accept.contains("text/html"));
    if json && !html {
        return cluster().await;
    }
    super::ui::page(headers).await
}

/// `GET /es/` (and `/es`): the cluster's info.
pub async fn cluster() -> Response {
    product(info().await).await
}

async fn info() -> Response {
    axum::Json(json!({
        "name": "tailwater",
        "cluster_name": "tailwater",
        "cluster_uuid": "tailwater",
        "version": {
            "number": VERSION,
            "build_flavor": "default",
            "build_type": "tailwater",
            "build_hash": "tailwater",
            "build_date": "2026-01-01T00:00:00.000Z",
            "build_snapshot": false,
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
        "tailwater": {"version": env!("CARGO_PKG_VERSION")},
    }))
    .into_response()
}

/// `GET /_cat/health`: one line of text, or `?format=json`.
async fn cat_health(Query(pairs): Query<Vec<(String, String)>>) -> Response {
    let now = jiff::Timestamp::now();
    let epoch = now.as_second();
    let time = now.strftime("%H:%M:%S").to_string();
    let json = pairs
        .iter()
        .any(|(name, value)| name == "format" && value == "json");
    if json {
        return axum::Json(json!([{
            "epoch": epoch.to_string(), "timestamp": time, "cluster": "tailwater",
            "status": "green", "node.total": "1", "node.data": "1", "shards": "0",
            "pri": "0", "relo": "0", "init": "0", "unassign": "0",
            "pending_tasks": "0", "max_task_wait_time": "-", "active_shards_percent": "100.0%",
        }]))
        .into_response();
    }
    let line = format!("{epoch} {time} tailwater green 1 1 0 0 0 0 0 0 - 100.0%\n");
    ([(header::CONTENT_TYPE, "text/plain; charset=UTF-8")], line).into_response()
}

/// `GET /_cluster/health`.
async fn cluster_health() -> Response {
    axum::Json(json!({
        "cluster_name": "tailwater", "status": "green", "timed_out": false,
        "number_of_nodes": 1, "number_of_data_nodes": 1, "active_primary_shards": 0,
        "active_shards": 0, "relocating_shards": 0, "initializing_shards": 0,
        "unassigned_shards": 0, "delayed_unassigned_shards": 0,
        "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
        "task_max_waiting_in_queue_millis": 0, "active_shards_percent_as_number": 100.0,
    }))
    .into_response()
}

async fn no_handler(method: Method, uri: Uri) -> Response {
    let error = ApiError::new(
        StatusCode::NOT_FOUND,
        "resource_not_found_exception",
        format!(
            "no handler found for uri [{}] and method [{method}]: tailwater answers _bulk, _cat/health, _cluster/health and / of the Elasticsearch API",
            uri.path().chars().take(200).collect::<String>()
        ),
    );
    error_response(&error, None)
}

async fn bulk(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&state, principal, None, pairs, &headers, body).await
}

async fn bulk_index(
    State(state): State<AppState>,
    Path(index): Path<String>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    answer(&state, principal, Some(index), pairs, &headers, body).await
}

async fn answer(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    index: Option<String>,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    match receive(state, principal, index, pairs, headers, body).await {
        Ok(items) => {
            let errors = items.iter().any(|item| item.result.is_err());
            let items: Vec<Value> = items.into_iter().enumerate().map(item_json).collect();
            let took = started.elapsed().as_millis() as u64;
            axum::Json(json!({"took": took, "errors": errors, "items": items})).into_response()
        }
        Err((error, retry_after)) => error_response(&error, retry_after),
    }
}

/// What is answered of one item.
struct Answer {
    action: Action,
    index: String,
    id: String,
    result: Result<(), ItemError>,
}

async fn receive(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    path_index: Option<String>,
    mut pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<Answer>, Failure> {
    // Elasticsearch's own parameters (refresh, pipeline, timeout, …) are
    // the client's settings of a cluster: taken and let be.
    let tenant = take_tenant(&mut pairs).map_err(|error| (error, None))?;
    let (principal, tenant) = unnumbered::admit_to(state, principal, tenant.as_deref())?;
    let content_type = unnumbered::content_type(headers);
    let media = crate::protocols::media_type(content_type);
    if !matches!(
        media.as_str(),
        "" | "application/json"
            | "application/x-ndjson"
            | "application/vnd.elasticsearch+json"
            | "application/vnd.elasticsearch+x-ndjson"
    ) {
        let message = format!(
            "content-type header [{}] is not supported: send a bulk as application/x-ndjson or application/json",
            content_type.chars().take(100).collect::<String>()
        );
        let error = ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "media_type_header_exception",
            message,
        );
        return Err((error, None));
    }
    let body = unnumbered::read_body(state, &principal, &tenant, headers, body)?;
    let ingest = state.ingest.clone();
    tokio::task::spawn_blocking(move || {
        let now = jiff::Timestamp::now();
        let items = es_bulk::decode(&body, path_index.as_deref()).map_err(|malformed| {
            let error = ApiError::new(StatusCode::BAD_REQUEST, malformed.kind, malformed.reason);
            (error, None)
        })?;
        let mut answers = Vec::with_capacity(items.len());
        let mut mapped = Vec::new();
        for (position, item) in items.into_iter().enumerate() {
            let uid = item.id.as_ref().map(|id| format!("{}/{id}", item.index));
            let result = match item.document {
                Ok(object) => {
                    mapped.push((position, documents::document(object, now, uid)));
                    Ok(())
                }
                Err(error) => {
                    let reason = match item.action {
                        Action::Update | Action::Delete => limits::UNSUPPORTED_ACTION,
                        Action::Index | Action::Create => limits::INVALID_DOCUMENT,
                    };
                    ingest.count_undelivered(&tenant, reason, 1);
                    Err(error)
                }
            };
            answers.push(Answer {
                action: item.action,
                id: item.id.unwrap_or_else(new_id),
                index: item.index,
                result,
            });
        }
        let stored = store(&ingest, &principal, &tenant, mapped, &mut answers, now);
        // Sent again as it is, the whole request may be taken later.
        let all_retryable = answers.iter().all(|answer| {
            answer
                .result
                .as_ref()
                .is_err_and(|error| matches!(error.status, 429 | 503 | 507))
        });
        match stored {
            Err(failure) if all_retryable => Err(failure),
            _ => Ok(answers),
        }
    })
    .await
    .map_err(|error| (ApiError::internal(error), None))?
}

/// The documents through the pipeline, a source (an app and runner) at a
/// time, each source's outcome written into its documents' answers. `Err`:
/// nothing was stored, and a refusal the sender may retry (a rate, a full
/// disk) was met, the first of them.
fn store(
    ingest: &Pipeline,
    principal: &Principal,
    tenant: &str,
    mapped: Vec<(usize, documents::Document)>,
    answers: &mut [Answer],
    now: jiff::Timestamp,
) -> Result<usize, Failure> {
    let mut stored = 0;
    let mut retry: Option<Failure> = None;
    for (source, positions) in documents::sources(mapped) {
        let count = source.records.len();
        let outcome =
            unnumbered::store_source(ingest, principal, tenant, (PROTOCOL, NO_APP), source, now);
        let error = match outcome {
            Ok(response) if response.refused == 0 => {
                stored += count;
                continue;
            }
            Ok(response) => {
                stored += response.accepted + response.duplicates;
                // The store says how many, not which.
                let reason = format!(
                    "{} of the {count} documents of this app and runner in the request were refused, the rest stored (which ones is not known): {}",
                    response.refused,
                    response.refused_reason.unwrap_or_default()
                );
                ItemError::new(400, "illegal_argument_exception", reason)
            }
            Err(((error, retry_after), retryable)) => {
                let item = item_error(&error);
                if retryable {
                    retry.get_or_insert((error, retry_after));
                }
                item
            }
        };
        for position in positions {
            let reason = error.reason.clone();
            answers[position].result = Err(ItemError::new(error.status, error.kind, reason));
        }
    }
    match retry {
        Some(failure) if stored == 0 => Err(failure),
        _ => Ok(stored),
    }
}

/// An id for a document sent without one: 20 characters of URL-safe
/// base64, as Elasticsearch makes them.
fn new_id() -> String {
    use base64::Engine;
    let bytes: [u8; 15] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn item_json((seq, answer): (usize, Answer)) -> Value {
    let body = match answer.result {
        Ok(()) => json!({
            "_index": answer.index, "_id": answer.id, "_version": 1, "result": "created",
            "_shards": {"total": 1, "successful": 1, "failed": 0},
            "_seq_no": seq, "_primary_term": 1, "status": 201,
        }),
        Err(error) => json!({
            "_index": answer.index, "_id": answer.id, "status": error.status,
            "error": {"type": error.kind, "reason": error.reason, "index": answer.index},
        }),
    };
    json!({ answer.action.name(): body })
}

/// Elasticsearch's type of an error: the error's own code when it is one
/// of Elasticsearch's, else the one it gives that status.
fn es_type(error: &ApiError) -> &'static str {
    if error.code.ends_with("_exception") {
        return error.code;
    }
    match error.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "security_exception",
        StatusCode::NOT_FOUND => "resource_not_found_exception",
        StatusCode::TOO_MANY_REQUESTS => "es_rejected_execution_exception",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE => {
            "cluster_block_exception"
        }
        status if status.is_server_error() => "exception",
        _ => "illegal_argument_exception",
    }
}

fn item_error(error: &ApiError) -> ItemError {
    ItemError::new(error.status.as_u16(), es_type(error), error.message.clone())
}

/// A whole request refused, in Elasticsearch's error shape; tailwater's
/// own code of it beside (`tailwater_code`).
fn error_response(error: &ApiError, retry_after: Option<std::time::Duration>) -> Response {
    let kind = es_type(error);
    let cause = json!({"type": kind, "reason": error.message, "tailwater_code": error.code});
    let body = json!({
        "error": {"root_cause": [cause], "type": kind, "reason": error.message, "tailwater_code": error.code},
        "status": error.status.as_u16(),
    });
    let mut response = (error.status, axum::Json(body)).into_response();
    if error.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tailwater\", Bearer, ApiKey"),
        );
    }
    response.headers_mut().insert("x-elastic-product", PRODUCT);
    with_retry_after(response, retry_after)
}
