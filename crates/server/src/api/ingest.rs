//! `POST /v1/ingest`: a batch of records from one runner, tailwater's own
//! JSON shape, or the same batch in binary (`Content-Type:
//! application/x-tailwater-batch`, [`tailwater_model::wire::decode_binary_batch`]),
//! which the agent sends; 415 when `--ingest-binary=false`. The edge of
//! [`crate::ingest`]: the token and the body's size, the body decoded,
//! then the pipeline; its answer, or its refusal in this API's error shape
//! (429 and 503/507 with `Retry-After`).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tailwater_model::wire::{decode_binary_batch, IngestBatch, BINARY_BATCH_MEDIA_TYPE};

use super::{only_tenant, ApiError};
use crate::access::scopes::{Action, Principal};
use crate::ingest::Refused;
use crate::limits;
use crate::AppState;

pub async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs)?.as_deref(), &state.registry)?;
    principal.allow(Action::Ingest)?;
    let body = match body {
        Ok(body) if body.len() <= state.max_batch_bytes => body,
        Ok(_)
        | Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            tracing::warn!(
                limit = state.max_batch_bytes,
                "ingest batch refused: too large"
            );
            // The body is not read, so its app is the token's, if it has one.
            let app = principal.app.as_deref().unwrap_or_default();
            state
                .ingest
                .count_unread(&tenant, app, limits::BATCH_TOO_LARGE);
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!(
                    "ingest batch is over the limit of {} bytes (--max-batch-bytes): send smaller batches",
                    state.max_batch_bytes
                ),
            ));
        }
        Err(rejection) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the ingest body ({}): send it again",
                rejection.body_text()
            )))
        }
    };
    let binary = is_binary(&headers);
    if binary && !state.ingest_binary {
        let app = principal.app.as_deref().unwrap_or_default();
        state
            .ingest
            .count_unread(&tenant, app, limits::UNSUPPORTED_MEDIA_TYPE);
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            limits::UNSUPPORTED_MEDIA_TYPE,
            format!("this server does not take {BINARY_BATCH_MEDIA_TYPE} bodies (--ingest-binary=false): send the batch as JSON (Content-Type: application/json)"),
        ));
    }
    let pipeline = state.ingest.clone();
    let metrics = state.metrics.clone();
    // Decoding a large body takes a while: off the async threads, with
    // the pipeline.
    let accepted = tokio::task::spawn_blocking(move || {
        let batch = decode(&body, binary).map_err(|message| {
            let app = principal.app.as_deref().unwrap_or_default();
            pipeline.count_unread(&tenant, app, limits::INVALID_BODY);
            ApiError::bad_request(message)
        })?;
        metrics.ingest_body(if binary { "binary" } else { "json" });
        Ok::<_, ApiError>(pipeline.accept(&principal, &tenant, batch))
    })
    .await
    .map_err(ApiError::internal)??;
    match accepted {
        Ok(response) => Ok(Json(response).into_response()),
        Err(refused) => {
            let (error, retry_after) = refusal(refused);
            Ok(with_retry_after(error.into_response(), retry_after))
        }
    }
}

/// Whether the body is a binary batch: its `Content-Type`'s media type
/// (parameters aside, any case). Any other type is read as JSON, as
/// before binary batches were.
fn is_binary(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(BINARY_BATCH_MEDIA_TYPE))
}

/// The batch of a JSON or binary body, or the error message of a 400.
fn decode(body: &[u8], binary: bool) -> Result<IngestBatch, String> {
    if binary {
        return decode_binary_batch(body).map_err(|error| {
            format!("invalid ingest batch: {error}; send a binary batch as tailwater's agent encodes it, or JSON (Content-Type: application/json)")
        });
    }
    serde_json::from_slice(body).map_err(|error| {
        format!(
            "invalid ingest batch: {error}; send a JSON object with app, runner, boot and records"
        )
    })
}

/// A refusal of the pipeline as an error of this API, with how long to
/// wait before sending the same batch again when waiting helps (429, and
/// 503/507 with `Retry-After`). Every edge maps it to its protocol's shape.
pub(super) fn refusal(refused: Refused) -> (ApiError, Option<std::time::Duration>) {
    match refused {
        Refused::Invalid { code, message } => {
            (ApiError::new(StatusCode::BAD_REQUEST, code, message), None)
        }
        Refused::Denied(denied) => (denied.into(), None),
        Refused::Registry(error) => (error.into(), None),
        Refused::Internal(error) => (ApiError::internal(error), None),
        Refused::Throttled(throttled) => (
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                throttled.message(),
            ),
            Some(throttled.retry_after),
        ),
        Refused::Unavailable(unavailable) => (
            ApiError::new(
                match unavailable {
                    crate::ingest::Unavailable::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                },
                unavailable.code(),
                unavailable.message(),
            ),
            Some(unavailable.retry_after()),
        ),
    }
}

/// `response` with `Retry-After` in whole seconds (at least 1), if given.
pub(super) fn with_retry_after(
    mut response: Response,
    retry_after: Option<std::time::Duration>,
) -> Response {
    if let Some(wait) = retry_after {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
