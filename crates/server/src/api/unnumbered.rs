//! What the edges of senders that number nothing (OTLP, Loki push,
//! Elasticsearch `_bulk`, JSON documents) share:
//! each source of a request through
//! [`crate::ingest::Pipeline::accept_unnumbered`], and what was stored and
//! refused of the whole, for the edge to answer in its protocol's shape.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::http::{header, HeaderMap, StatusCode};
use tailwater_model::wire::{IngestRecord, IngestResponse};

use super::ingest::refusal;
use super::{only_tenant, ApiError};
use crate::access::scopes::{Action, Principal};
use crate::ingest::{Pipeline, Refused, Unnumbered};
use crate::limits;
use crate::protocols::{decompress, Source, Undecoded};
use crate::AppState;

/// A refusal, and how long to wait before sending the same again when
/// waiting helps.
pub(super) type Failure = (ApiError, Option<Duration>);

/// The token, and the tenant it sends to (`?tenant=` for admin tokens),
/// allowed to ingest.
pub(super) fn admit(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    pairs: Vec<(String, String)>,
) -> Result<(Principal, String), Failure> {
    let tenant = only_tenant(pairs).map_err(|error| (error, None))?;
    admit_to(state, principal, tenant.as_deref())
}

/// [`admit`] with the tenant already read from the query (`None`: the
/// token's own).
pub(super) fn admit_to(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    tenant: Option<&str>,
) -> Result<(Principal, String), Failure> {
    let principal = principal.map_err(|error| (error, None))?;
    let tenant = principal
        .tenant_for(tenant, &state.registry)
        .map_err(|error| (error.into(), None))?;
    principal
        .allow(Action::Ingest)
        .map_err(|denied| (denied.into(), None))?;
    Ok((principal, tenant))
}

/// The request's `Content-Type`, `""` when it has none (or one that is
/// not text).
pub(super) fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

/// A 415 saying what to send instead.
pub(super) fn unsupported(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
    )
}

/// The body, its `Content-Encoding` undone, within `--max-batch-bytes`
/// compressed and not (past it: 413, counted under the token's app).
pub(super) fn read_body(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<u8>, Failure> {
    let limit = state.max_batch_bytes;
    let too_large = || {
        let app = principal.app.as_deref().unwrap_or_default();
        state
            .ingest
            .count_unread(tenant, app, limits::BATCH_TOO_LARGE);
        (
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!("the request is over the limit of {limit} bytes, compressed or not (--max-batch-bytes): send smaller batches"),
            ),
            None,
        )
    };
    let body = match body {
        Ok(body) if body.len() <= limit => body,
        Ok(_)
        | Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            return Err(too_large())
        }
        Err(rejection) => {
            return Err((
                ApiError::bad_request(format!(
                    "cannot read the request body ({}): send it again",
                    rejection.body_text()
                )),
                None,
            ))
        }
    };
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().unwrap_or("unreadable"));
    match decompress(&body, encoded, limit) {
        Ok(body) => Ok(body),
        Err(Undecoded::TooLarge) => Err(too_large()),
        Err(Undecoded::Invalid(message)) => Err((ApiError::bad_request(message), None)),
        Err(Undecoded::Unsupported(message)) => Err((unsupported(message), None)),
    }
}

/// What a request's sources came to, when something was stored or every
/// refusal was final.
pub(super) struct Outcome {
    /// Records stored (a duplicate of one stored before counts).
    pub stored: usize,
    /// Records refused.
    pub rejected: usize,
    /// The first refusal, when there was one.
    pub refusal: Option<Failure>,
}

/// Each source through the pipeline, as `protocol` (the boot's prefix);
/// a source naming no app takes the token's, else is refused with
/// `no_app`. A refusal the sender may retry (a rate, a full disk) before
/// anything was stored is the answer, so the sender sends it all again;
/// so is any refusal when nothing at all was stored.
pub(super) fn store(
    ingest: &Pipeline,
    principal: &Principal,
    tenant: &str,
    (protocol, no_app): (&str, &str),
    sources: Vec<Source>,
    now: jiff::Timestamp,
) -> Result<Outcome, Failure> {
    let mut outcome = Outcome {
        stored: 0,
        rejected: 0,
        refusal: None,
    };
    for source in sources {
        let count = source.records.len();
        if count == 0 {
            continue;
        }
        match store_source(ingest, principal, tenant, (protocol, no_app), source, now) {
            Ok(response) => {
                outcome.stored += response.accepted + response.duplicates;
                outcome.rejected += response.refused;
                if response.refused > 0 {
                    let reason = response.refused_reason.clone().unwrap_or_default();
                    outcome
                        .refusal
                        .get_or_insert((ApiError::bad_request(reason), None));
                }
            }
            Err((failure, retryable)) => {
                if outcome.stored == 0 && retryable {
                    return Err(failure);
                }
                outcome.rejected += count;
                outcome.refusal.get_or_insert(failure);
            }
        }
    }
    match outcome.refusal.take() {
        Some(failure) if outcome.stored == 0 => Err(failure),
        refusal => Ok(Outcome { refusal, ..outcome }),
    }
}

/// One source through the pipeline: the pipeline's answer, or its refusal
/// (nothing of the source stored) and whether the sender may send the same
/// again later (a rate, a full disk). A source naming no app takes the
/// token's, else is refused with `no_app`.
pub(super) fn store_source(
    ingest: &Pipeline,
    principal: &Principal,
    tenant: &str,
    (protocol, no_app): (&str, &str),
    source: Source,
    now: jiff::Timestamp,
) -> Result<IngestResponse, (Failure, bool)> {
    let count = source.records.len();
    let Some(app) = source.app.or_else(|| principal.app.clone()) else {
        ingest.count_undelivered(tenant, limits::NO_APP, count);
        return Err(((ApiError::bad_request(no_app), None), false));
    };
    let batch = Unnumbered {
        app,
        version: source.version,
        runner: source.runner,
        records: source
            .records
            .into_iter()
            .map(|record| {
                let ingest_record = IngestRecord {
                    seq: 0,
                    ts: record.ts,
                    stream: record.stream,
                    level: record.level,
                    request_id: record.request_id,
                    message: record.message,
                    fields: record.fields,
                    invalid_utf8: false,
                };
                (ingest_record, record.uid)
            })
            .collect(),
    };
    ingest
        .accept_unnumbered(principal, tenant, protocol, batch, now)
        .map_err(|refused| {
            let retryable = matches!(refused, Refused::Throttled(_) | Refused::Unavailable(_));
            (refusal(refused), retryable)
        })
}
