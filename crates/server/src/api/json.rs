//! `POST /v1/ingest/json`: plain JSON documents, as Vector's and Fluent
//! Bit's `http` outputs send them (a JSON array, or NDJSON; gzip, zstd or
//! none). Each document is mapped by [`crate::protocols::documents`] (the
//! same mapping as Elasticsearch `_bulk`'s), and the documents of each
//! app and runner go through the pipeline as OTLP's resources do
//! ([`super::unnumbered`]).
//!
//! Answers as `POST /v1/ingest` does: 200 with `{"accepted", "refused",
//! "refused_reason"}` when something was stored or nothing was refused; a
//! body that is not documents is a 400 that stores nothing; a refusal
//! before anything was stored is its own status, 429 and 503 with
//! `Retry-After` (which both shippers retry).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tailwater_model::wire::IngestResponse;

use super::ingest::with_retry_after;
use super::unnumbered::{self, Failure};
use super::ApiError;
use crate::access::scopes::Principal;
use crate::protocols::documents;
use crate::AppState;

/// The protocol's name in the boot of what it sends (`json-2026-12-07`).
const PROTOCOL: &str = "json";
const NO_APP: &str = "the document names no app: give it an app (or service.name) key, or send with an ingest token of one app";

pub async fn ingest(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match receive(&state, principal, pairs, &headers, body).await {
        Ok(response) => Json(response).into_response(),
        Err((error, retry_after)) => with_retry_after(error.into_response(), retry_after),
    }
}

async fn receive(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<IngestResponse, Failure> {
    let (principal, tenant) = unnumbered::admit(state, principal, pairs)?;
    let content_type = unnumbered::content_type(headers);
    let media = crate::protocols::media_type(content_type);
    if !matches!(
        media.as_str(),
        "" | "application/json" | "application/x-ndjson" | "application/jsonl"
    ) {
        return Err((
            unnumbered::unsupported(
                "send JSON documents as application/json (an array, or one object a line) or application/x-ndjson",
            ),
            None,
        ));
    }
    let body = unnumbered::read_body(state, &principal, &tenant, headers, body)?;
    let ingest = state.ingest.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let now = jiff::Timestamp::now();
        let objects = documents::decode(&body).map_err(|e| (ApiError::bad_request(e), None))?;
        let mapped = objects
            .into_iter()
            .map(|object| documents::document(object, now, None))
            .enumerate()
            .collect();
        let sources = documents::sources(mapped)
            .into_iter()
            .map(|(source, _)| source)
            .collect();
        unnumbered::store(
            &ingest,
            &principal,
            &tenant,
            (PROTOCOL, NO_APP),
            sources,
            now,
        )
    })
    .await
    .map_err(|error| (ApiError::internal(error), None))??;
    Ok(IngestResponse {
        accepted: outcome.stored,
        refused: outcome.rejected,
        refused_reason: outcome.refusal.map(|(error, _)| error.message),
        ..IngestResponse::default()
    })
}
