//! `POST /v1/logs`: OTLP/HTTP logs, as OpenTelemetry SDKs, the Collector,
//! Alloy, Vector and Fluent Bit send them (protobuf or JSON; gzip, zstd or
//! none). The body is decoded by [`crate::protocols::otlp`], and each
//! resource's records go through [`crate::ingest::Pipeline::accept_unnumbered`]:
//! limits, redaction, refusals and metrics as for the agent, the token
//! deciding tenant and app.
//!
//! Answers as the OTLP specification says, in the request's own encoding:
//! 200 with an `ExportLogsServiceResponse`, whose `partialSuccess` counts
//! the records not stored and says why; when nothing was stored, the
//! refusal's status with a `google.rpc.Status`: 400 for a malformed body,
//! 413 past `--max-batch-bytes` (compressed or not), 415 for a content type
//! or encoding OTLP does not use, 401/403 for the token, and 429 or 503
//! with `Retry-After` (the answers clients send again) when the same
//! request will be taken later.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use tailwater_model::wire::IngestRecord;

use super::ingest::{refusal, with_retry_after};
use super::{only_tenant, ApiError};
use crate::access::scopes::{Action, Principal};
use crate::ingest::{Refused, Unnumbered};
use crate::limits;
use crate::protocols::otlp::{self, Encoding};
use crate::protocols::{decompress, Undecoded};
use crate::AppState;

/// The protocol's name in the boot of what it sends (`otlp-2026-12-07`).
const PROTOCOL: &str = "otlp";

pub async fn export(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let encoding = Encoding::of_content_type(content_type);
    // Errors go back in the request's encoding (protobuf when unknown).
    let answer = encoding.unwrap_or(Encoding::Protobuf);
    match receive(&state, principal, pairs, &headers, encoding, body).await {
        Ok(response) => encode(answer, StatusCode::OK, &response, None),
        Err((error, retry_after)) => status(answer, &error, retry_after),
    }
}

type Failure = (ApiError, Option<std::time::Duration>);

async fn receive(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    encoding: Option<Encoding>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExportLogsServiceResponse, Failure> {
    let principal = principal.map_err(|error| (error, None))?;
    let tenant = principal
        .tenant_for(
            only_tenant(pairs).map_err(|e| (e, None))?.as_deref(),
            &state.registry,
        )
        .map_err(|error| (error.into(), None))?;
    principal
        .allow(Action::Ingest)
        .map_err(|denied| (denied.into(), None))?;
    let Some(encoding) = encoding else {
        return Err((
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send OTLP logs as application/x-protobuf or application/json",
            ),
            None,
        ));
    };
    let limit = state.max_batch_bytes;
    let too_large = || {
        let app = principal.app.as_deref().unwrap_or_default();
        state
            .ingest
            .count_unread(&tenant, app, limits::BATCH_TOO_LARGE);
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
    let body = match decompress(&body, encoded, limit) {
        Ok(body) => body,
        Err(Undecoded::TooLarge) => return Err(too_large()),
        Err(Undecoded::Invalid(message)) => return Err((ApiError::bad_request(message), None)),
        Err(Undecoded::Unsupported(message)) => {
            return Err((
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    message,
                ),
                None,
            ))
        }
    };
    let ingest = state.ingest.clone();
    tokio::task::spawn_blocking(move || {
        let now = jiff::Timestamp::now();
        let request =
            otlp::decode(&body, encoding).map_err(|e| (ApiError::bad_request(e), None))?;
        store(
            &ingest,
            &principal,
            &tenant,
            otlp::resources(request, now),
            now,
        )
    })
    .await
    .map_err(|error| (ApiError::internal(error), None))?
}

/// Each resource through the pipeline. A refusal with nothing stored is
/// the answer; after something was stored, it is the partial success's.
fn store(
    ingest: &crate::ingest::Pipeline,
    principal: &Principal,
    tenant: &str,
    resources: Vec<otlp::Resource>,
    now: jiff::Timestamp,
) -> Result<ExportLogsServiceResponse, Failure> {
    let mut stored = 0usize;
    let mut rejected = 0usize;
    let mut first_refusal: Option<Failure> = None;
    for resource in resources {
        let count = resource.records.len();
        if count == 0 {
            continue;
        }
        let Some(app) = resource.app.or_else(|| principal.app.clone()) else {
            rejected += count;
            first_refusal.get_or_insert((
                ApiError::bad_request(
                    "the resource names no app: set service.name (OTEL_SERVICE_NAME), or send with an ingest token of one app",
                ),
                None,
            ));
            continue;
        };
        let batch = Unnumbered {
            app,
            version: resource.version,
            runner: resource.runner,
            records: resource
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
        match ingest.accept_unnumbered(principal, tenant, PROTOCOL, batch, now) {
            Ok(response) => {
                stored += response.accepted + response.duplicates;
                rejected += response.refused;
                if response.refused > 0 {
                    let reason = response.refused_reason.clone().unwrap_or_default();
                    first_refusal.get_or_insert((ApiError::bad_request(reason), None));
                }
            }
            Err(refused) => {
                let retryable = matches!(refused, Refused::Throttled(_) | Refused::Unavailable(_));
                if stored == 0 && retryable {
                    // Nothing is stored: the client sends it all again.
                    return Err(refusal(refused));
                }
                rejected += count;
                first_refusal.get_or_insert(refusal(refused));
            }
        }
    }
    match first_refusal {
        Some(failure) if stored == 0 => Err(failure),
        Some((error, _)) => Ok(ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected as i64,
                error_message: error.message,
            }),
        }),
        None => Ok(ExportLogsServiceResponse {
            partial_success: None,
        }),
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An error as OTLP/HTTP answers it: the status, and a `google.rpc.Status`
/// with the gRPC code that fits it.
fn status(
    encoding: Encoding,
    error: &ApiError,
    retry_after: Option<std::time::Duration>,
) -> Response {
    let code = match error.status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => 3, // INVALID_ARGUMENT
        StatusCode::UNAUTHORIZED => 16,                               // UNAUTHENTICATED
        StatusCode::FORBIDDEN => 7,                                   // PERMISSION_DENIED
        StatusCode::NOT_FOUND => 5,                                   // NOT_FOUND
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 12,                     // UNIMPLEMENTED
        StatusCode::TOO_MANY_REQUESTS | StatusCode::INSUFFICIENT_STORAGE => 8, // RESOURCE_EXHAUSTED
        StatusCode::SERVICE_UNAVAILABLE => 14,                        // UNAVAILABLE
        _ => 13,                                                      // INTERNAL
    };
    let body = Status {
        code,
        message: error.message.clone(),
    };
    encode(encoding, error.status, &body, retry_after)
}

fn encode<T: prost::Message + serde::Serialize>(
    encoding: Encoding,
    status: StatusCode,
    body: &T,
    retry_after: Option<std::time::Duration>,
) -> Response {
    let bytes = match encoding {
        Encoding::Protobuf => body.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(body).expect("a message serializes"),
    };
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    with_retry_after(response, retry_after)
}
