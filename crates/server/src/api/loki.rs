//! `POST /loki/api/v1/push`: Loki push, as Promtail, Alloy, Vector's and
//! Fluent Bit's Loki outputs and Loki client libraries send it (snappy
//! protobuf, with or without a `Content-Encoding: snappy` saying so, or
//! JSON with gzip allowed). The token is the bearer, or the
//! password of basic auth (Vector's Loki sink, Fly.io's log shipper).
//! Decoded by [`crate::protocols::loki`], each stream through the pipeline
//! as OTLP's resources are ([`super::unnumbered`]).
//!
//! Answers as Loki does: 204 when every entry was stored (some clients
//! take a 200 for an error); when some were refused, 400 saying how many
//! and why (Loki's clients do not send a 4xx again); a refusal before
//! anything was stored is its own status, 429 and 503 with `Retry-After`
//! (which clients retry). Error bodies are this API's JSON errors.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ingest::with_retry_after;
use super::unnumbered::{self, Failure};
use super::ApiError;
use crate::access::scopes::Principal;
use crate::protocols::loki::{self, Encoding};
use crate::AppState;

/// The protocol's name in the boot of what it sends (`loki-2026-12-07`).
const PROTOCOL: &str = "loki";
const NO_APP: &str = "the stream names no app: give it an app (or service_name) label, or send with an ingest token of one app";

pub async fn push(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match receive(&state, principal, pairs, &headers, body).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err((error, retry_after)) => with_retry_after(error.into_response(), retry_after),
    }
}

async fn receive(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(), Failure> {
    let (principal, tenant) = unnumbered::admit(state, principal, pairs)?;
    let content_type = unnumbered::content_type(headers);
    let Some(encoding) = Encoding::of_content_type(content_type) else {
        return Err((
            unnumbered::unsupported(
                "send a Loki push as application/x-protobuf (snappy) or application/json",
            ),
            None,
        ));
    };
    // Loki reads `Content-Encoding: snappy` on a protobuf push as naming
    // the protobuf's own snappy (tracing-loki sends it): nothing more to
    // undo. On JSON it is an encoding we do not read.
    let own_snappy = encoding == Encoding::SnappyProtobuf
        && headers
            .get(header::CONTENT_ENCODING)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("snappy"));
    let without_snappy;
    let headers = if own_snappy {
        let mut rest = headers.clone();
        rest.remove(header::CONTENT_ENCODING);
        without_snappy = rest;
        &without_snappy
    } else {
        headers
    };
    let body = unnumbered::read_body(state, &principal, &tenant, headers, body)?;
    let (ingest, limit) = (state.ingest.clone(), state.max_batch_bytes);
    let outcome = tokio::task::spawn_blocking(move || {
        let now = jiff::Timestamp::now();
        let streams =
            loki::decode(&body, encoding, limit).map_err(|e| (ApiError::bad_request(e), None))?;
        let sources = loki::sources(streams, now);
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
    match outcome.refusal {
        None => Ok(()),
        Some((error, _)) => Err((
            ApiError::bad_request(format!(
                "{} of {} entries were refused, the rest stored: {}",
                outcome.rejected,
                outcome.rejected + outcome.stored,
                error.message
            )),
            None,
        )),
    }
}
