//! `POST /v1/ingest`: a batch of records from one runner.
//!
//! In order: the token and the body's size; the batch's shape, labels and
//! sequence numbers ([`crate::limits`]); the app (created with the tenant's
//! defaults on its first batch: agents need no prior step); its rate limits
//! and the runner's (429 with `Retry-After`); then each record redacted
//! ([`crate::redact`]) and held to the line limits, the server's own
//! reports added, and the batch stored (the store refuses records past the
//! app's retention or the out-of-order window, and stores records dated
//! past `--max-clock-skew` at its own time: the answer says how many, by
//! reason). What was refused, retimed, cut, redacted and stored is counted
//! in [`crate::metrics`].

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tailwater_model::wire::{IngestBatch, IngestResponse};
use tailwater_model::Stream;

use super::{only_tenant, ApiError};
use crate::auth::{Action, Principal};
use crate::limits::{self, CutTally, Refusal, Throttled};
use crate::metrics::{AppLabels, PatternLabels, ReasonLabels};
use crate::registry::{validate_app_name, RegistryError};
use crate::AppState;
use tailwater_store::StoreError;

pub async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    Query(pairs): Query<Vec<(String, String)>>,
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
            let app = principal.app.clone().unwrap_or_default();
            count_refused(&state, &tenant, &app, limits::BATCH_TOO_LARGE, None);
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
    let batch: IngestBatch = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "invalid ingest batch: {error}; send a JSON object with app, runner, boot and records"
        ))
    })?;
    for (name, value) in [
        ("app", &batch.app),
        ("runner", &batch.runner),
        ("boot", &batch.boot),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid ingest batch: {name} is empty; every batch names its {name}"
            )));
        }
    }

    principal.allow_ingest_app(&batch.app)?;
    if let Err(error) = validate_app_name(&batch.app) {
        // Not a label value to keep: counted under no app.
        count_refused(&state, &tenant, "", limits::INVALID_LABEL, Some(&batch));
        return Err(error.into());
    }
    if let Err(Refusal { reason, message }) = state.limits.check_batch(&batch) {
        count_refused(&state, &tenant, &batch.app, reason, Some(&batch));
        return Err(ApiError::new(StatusCode::BAD_REQUEST, reason, message));
    }
    // Labels are identity, so never redacted (see redact.rs): refused.
    for (name, value) in [
        ("app", &batch.app),
        ("version", &batch.version),
        ("runner", &batch.runner),
        ("boot", &batch.boot),
    ] {
        if let Some(pattern) = state.redactor.secret_in(value) {
            // Not a label value to keep in metrics: counted under no app.
            count_refused(&state, &tenant, "", limits::SECRET_IN_LABEL, Some(&batch));
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                limits::SECRET_IN_LABEL,
                format!("invalid ingest batch: its {name} looks like a secret (redaction pattern {pattern}); labels name runners and apps to everyone who reads the logs and are never redacted: give the agent another --{name}"),
            ));
        }
    }

    let outcome = tokio::task::spawn_blocking({
        let (state, tenant) = (state.clone(), tenant.clone());
        move || store_batch(&state, &tenant, batch)
    })
    .await
    .map_err(ApiError::internal)??;
    match outcome {
        Stored::Done(response) => {
            if response.accepted > 0 {
                let last_id = state.store.last_id();
                state.settling.stamp(last_id);
                state.new_records.send_replace(last_id);
            }
            Ok(Json(response).into_response())
        }
        Stored::Throttled(throttled) => {
            let seconds = throttled.retry_after.as_secs_f64().ceil().max(1.0) as u64;
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                throttled.message(),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            Ok(response)
        }
        Stored::Unavailable(unavailable) => Ok(unavailable.into_response()),
    }
}

enum Stored {
    Done(IngestResponse),
    Throttled(Throttled),
    Unavailable(Unavailable),
}

/// How long a client is asked to wait (`Retry-After`) when the store
/// cannot take writes for now, before it sends the batch again.
pub const STORE_UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// A batch the store cannot take for now, through no fault of the sender:
/// a full disk (507) or a stalled store (503). Either way nothing is lost
/// by sending it again after `Retry-After`: records already stored are
/// recognised by their sequence numbers and not stored twice.
struct Unavailable {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

const DISK_FULL: Unavailable = Unavailable {
    status: StatusCode::INSUFFICIENT_STORAGE,
    code: "disk_full",
    message: "the server's disk is full: send the batch again after Retry-After (the server's operator must free space)",
};

/// Whether `error` comes, at any depth, from a full disk (or quota).
fn is_disk_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        let io = error.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))) {
            return true;
        }
        next = error.source();
    }
    false
}

impl Unavailable {
    fn of(error: &StoreError) -> Option<Unavailable> {
        match error {
            error if is_disk_full(error) => Some(DISK_FULL),
            // Its reason may name another tenant's files: only the log has it.
            // This app's day alone: every other app goes on being stored.
            StoreError::PartitionUnwritable { .. } => Some(Unavailable {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "unwritable",
                message: "this app's records of that day cannot be written to disk for now (the server's log says why; other apps are not affected): send the batch again after Retry-After",
            }),
            StoreError::Stalled(_) => Some(Unavailable {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "store_stalled",
                message: "the server cannot store records for now (its log says why): send the batch again after Retry-After",
            }),
            _ => None,
        }
    }

    fn into_response(self) -> Response {
        let mut response = ApiError::new(self.status, self.code, self.message).into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(STORE_UNAVAILABLE_RETRY_AFTER.as_secs()),
        );
        response
    }
}

/// The app's checks, limits and redaction, then the store: blocking work
/// (the registry's file, redaction of a large batch, the store's fsync).
fn store_batch(state: &AppState, tenant: &str, mut batch: IngestBatch) -> Result<Stored, ApiError> {
    let registry = &state.registry;
    if let Err(error) = registry.ensure_app(tenant, &batch.app) {
        if let RegistryError::Io(io) = &error {
            if is_disk_full(io.as_ref()) {
                tracing::warn!(error = %format!("{io:#}"), tenant, app = %batch.app, "ingest batch refused: the disk is full");
                count_refused(state, tenant, &batch.app, DISK_FULL.code, Some(&batch));
                return Ok(Stored::Unavailable(DISK_FULL));
            }
        }
        return Err(error.into());
    }
    let settings = registry.app(tenant, &batch.app).map(|app| app.settings);
    let app_rate = state.limits.app_rate(settings.as_ref());
    if let Err(throttled) = state.rates.admit(
        tenant,
        &batch,
        app_rate,
        state.limits.runner_rate,
        Instant::now(),
    ) {
        count_refused(state, tenant, &batch.app, throttled.reason, Some(&batch));
        tracing::debug!(tenant, app = %batch.app, runner = %batch.runner, reason = throttled.reason, "ingest batch throttled");
        return Ok(Stored::Throttled(throttled));
    }

    let max_line_bytes = state.limits.max_line_bytes(settings.as_ref());
    let mut cut = CutTally::default();
    let mut replaced = Vec::new();
    let mut agent_reports = AgentReports::default();
    for record in &mut batch.records {
        state
            .redactor
            .redact(&mut record.message, &mut record.fields, &mut replaced);
        state.redactor.redact_request_id(record, &mut replaced);
        let cuts = state.limits.cut_record(record, max_line_bytes);
        cut.add(record, cuts);
        agent_reports.read(record);
    }
    let app = batch.app.clone();
    let labels = |reason: &str| ReasonLabels {
        tenant: tenant.to_owned(),
        app: app.clone(),
        reason: reason.to_owned(),
    };
    if let Some(report) = cut.report(max_line_bytes, &state.limits) {
        batch.records.push(report);
    }
    let rate_report = state.rates.take_report(tenant, &batch);
    if let Some(pending) = &rate_report {
        batch.records.push(pending.record.clone());
    }

    let late = state
        .settling
        .mark_late_starts(tenant, &batch.app, &mut batch.records);
    if late > 0 {
        tracing::info!(tenant, app = %batch.app, late, "request_start records naming a caller came later than --request-owner-grace after their request's first line; they decide nothing");
        state
            .metrics
            .late_request_starts
            .get_or_create(&AppLabels {
                tenant: tenant.to_owned(),
                app: batch.app.clone(),
            })
            .inc_by(late);
    }
    let total = batch.records.len();
    let message_bytes: u64 = batch.records.iter().map(|r| r.message.len() as u64).sum();
    let retention = settings
        .as_ref()
        .and_then(|settings| settings.retention_days)
        .map_or(state.retention_max_age, |days| {
            std::time::Duration::from_secs(u64::from(days) * 24 * 60 * 60)
        });
    let response = match state.runners.append(tenant, batch, retention) {
        Ok(response) => response,
        Err(error) => {
            if let Some(pending) = rate_report {
                state.rates.restore(pending);
            }
            return match Unavailable::of(&error) {
                Some(unavailable) => {
                    tracing::warn!(%error, tenant, app = %app, "ingest batch refused: the store cannot take writes now");
                    count_refused_lines(state, tenant, &app, unavailable.code, total);
                    Ok(Stored::Unavailable(unavailable))
                }
                None => Err(ApiError::internal(error)),
            };
        }
    };
    let app_labels = AppLabels {
        tenant: tenant.to_owned(),
        app: app.clone(),
    };
    // Refused records are not stored, so a batch sent again is refused
    // (and counted) again, as its answer says.
    for (reason, count) in &response.refused_by_reason {
        state
            .metrics
            .refused_records
            .get_or_create(&labels(reason))
            .inc_by(*count as u64);
    }
    for (reason, count) in &response.retimed_by_reason {
        state
            .metrics
            .retimed_records
            .get_or_create(&labels(reason))
            .inc_by(*count as u64);
    }
    // A batch sent again after a lost answer is all duplicates: its lines,
    // cuts, redactions and the agents' reports in it were counted the
    // first time.
    if response.accepted > 0 {
        let metrics = &state.metrics;
        metrics
            .ingested_lines
            .get_or_create(&app_labels)
            .inc_by(response.accepted as u64);
        // Exact unless a batch is partly duplicates (rare: an agent's
        // batches are cut the same way when sent again): then pro rata.
        let stored_bytes = message_bytes * response.accepted as u64 / total.max(1) as u64;
        metrics
            .ingested_bytes
            .get_or_create(&app_labels)
            .inc_by(stored_bytes);
        for (reason, count) in cut.counts() {
            metrics
                .cut_lines
                .get_or_create(&labels(reason))
                .inc_by(*count);
        }
        for (pattern, count) in &replaced {
            metrics
                .redactions
                .get_or_create(&PatternLabels {
                    tenant: tenant.to_owned(),
                    app: app.clone(),
                    pattern: state.redactor.name(*pattern).to_owned(),
                })
                .inc_by(*count);
        }
        if agent_reports.throttled > 0 {
            metrics
                .agent_throttled_lines
                .get_or_create(&app_labels)
                .inc_by(agent_reports.throttled);
        }
        for (reason, lines) in agent_reports.dropped {
            metrics
                .agent_dropped_lines
                .get_or_create(&labels(&reason))
                .inc_by(lines);
        }
    }
    Ok(Stored::Done(response))
}

/// What the agents' own `system` records in a batch report: lines their
/// rate limit held back (`throttled`) and lines they dropped (`dropped`,
/// by reason). See the agent's `shipper.rs` and `spool.rs`.
#[derive(Default)]
struct AgentReports {
    throttled: u64,
    dropped: Vec<(String, u64)>,
}

impl AgentReports {
    fn read(&mut self, record: &tailwater_model::wire::IngestRecord) {
        if record.stream != Stream::System {
            return;
        }
        let fields = record.fields.to_map();
        let number = |key: &str| fields.get(key).and_then(|value| value.as_u64());
        match fields.get("event").and_then(|event| event.as_str()) {
            Some("throttled") => self.throttled += number("held_lines").unwrap_or(0),
            Some("dropped") => {
                // A reason is a metric label: only a short snake_case word
                // (as agents write them) is kept, so series stay few.
                let reason = fields
                    .get("reason")
                    .and_then(|reason| reason.as_str())
                    .filter(|reason| {
                        !reason.is_empty()
                            && reason.len() <= 40
                            && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                    .unwrap_or("other")
                    .to_owned();
                let lines = number("dropped_lines").unwrap_or(0);
                match self.dropped.iter_mut().find(|(seen, _)| *seen == reason) {
                    Some((_, total)) => *total += lines,
                    None => self.dropped.push((reason, lines)),
                }
            }
            _ => {}
        }
    }
}

/// Counts a refused batch (and its lines, when it was read).
fn count_refused(
    state: &AppState,
    tenant: &str,
    app: &str,
    reason: &str,
    batch: Option<&IngestBatch>,
) {
    count_refused_lines(
        state,
        tenant,
        app,
        reason,
        batch.map_or(0, |batch| batch.records.len()),
    );
}

fn count_refused_lines(state: &AppState, tenant: &str, app: &str, reason: &str, lines: usize) {
    let labels = ReasonLabels {
        tenant: tenant.to_owned(),
        app: app.to_owned(),
        reason: reason.to_owned(),
    };
    state.metrics.refused_batches.get_or_create(&labels).inc();
    if lines > 0 {
        state
            .metrics
            .refused_lines
            .get_or_create(&labels)
            .inc_by(lines as u64);
    }
}
