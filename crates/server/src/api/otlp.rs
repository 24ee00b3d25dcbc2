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
//! with `Retry-After` (the answers clients send again; a full disk is a
//! 503 here, and the wait at most 4 s) when the same request will be
//! taken later.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};

use super::ingest::with_retry_after;
use super::unnumbered::{self, Failure};
use super::ApiError;
use crate::access::scopes::Principal;
use crate::protocols::otlp::{self, Encoding};
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
    let content_type = unnumbered::content_type(&headers);
    let encoding = Encoding::of_content_type(content_type);
    // Errors go back in the request's encoding (protobuf when unknown).
    let answer = encoding.unwrap_or(Encoding::Protobuf);
    match receive(&state, principal, pairs, &headers, encoding, body).await {
        Ok(response) => encode(answer, StatusCode::OK, &response, None),
        Err((error, retry_after)) => {
            let (error, retry_after) = as_clients_retry(error, retry_after);
            status(answer, &error, retry_after)
        }
    }
}

/// The longest wait an OTLP client is asked for. SDKs give an export 10 s
/// in all (`OTEL_EXPORTER_OTLP_TIMEOUT`), waits included, and drop it
/// rather than wait past that: a longer wait (a full disk's 10 s) would
/// lose what they hold.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(4);

/// A refusal the sender may send again, as OTLP clients read one: they send
/// again only after 429, 502, 503 or 504, so a full disk (507 on the other
/// edges) is a 503 here; and within [`MAX_RETRY_AFTER`].
fn as_clients_retry(
    mut error: ApiError,
    retry_after: Option<std::time::Duration>,
) -> (ApiError, Option<std::time::Duration>) {
    if error.status == StatusCode::INSUFFICIENT_STORAGE {
        error.status = StatusCode::SERVICE_UNAVAILABLE;
    }
    (error, retry_after.map(|wait| wait.min(MAX_RETRY_AFTER)))
}

async fn receive(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
    encoding: Option<Encoding>,
    body: Result<Bytes, BytesRejection>,
) -> Result<ExportLogsServiceResponse, Failure> {
    let (principal, tenant) = unnumbered::admit(state, principal, pairs)?;
    let Some(encoding) = encoding else {
        return Err((
            unnumbered::unsupported("send OTLP logs as application/x-protobuf or application/json"),
            None,
        ));
    };
    let body = unnumbered::read_body(state, &principal, &tenant, headers, body)?;
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

/// Each resource through the pipeline; the answer OTLP gives of it.
fn store(
    ingest: &crate::ingest::Pipeline,
    principal: &Principal,
    tenant: &str,
    resources: Vec<crate::protocols::Source>,
    now: jiff::Timestamp,
) -> Result<ExportLogsServiceResponse, Failure> {
    const NO_APP: &str = "the resource names no app: set service.name (OTEL_SERVICE_NAME), or send with an ingest token of one app";
    let outcome = unnumbered::store(
        ingest,
        principal,
        tenant,
        (PROTOCOL, NO_APP),
        resources,
        now,
    )?;
    Ok(ExportLogsServiceResponse {
        partial_success: outcome.refusal.map(|(error, _)| ExportLogsPartialSuccess {
            rejected_log_records: outcome.rejected as i64,
            error_message: error.message,
        }),
    })
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
        StatusCode::TOO_MANY_REQUESTS => 8,                           // RESOURCE_EXHAUSTED
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
