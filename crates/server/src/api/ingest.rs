//! `POST /v1/ingest`: a batch of records from one runner.
//!
//! An app the tenant does not have yet is created with the tenant's
//! defaults on its first batch: agents need no prior step.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use tailwater_model::wire::{IngestBatch, IngestResponse};

use super::{only_tenant, ApiError};
use crate::auth::{Action, Principal};
use crate::registry::validate_app_name;
use crate::AppState;

pub async fn ingest(
    State(state): State<AppState>,
    principal: Principal,
    Query(pairs): Query<Vec<(String, String)>>,
    body: Bytes,
) -> Result<Json<IngestResponse>, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs)?.as_deref(), &state.registry)?;
    principal.allow(Action::Ingest)?;
    if body.len() > state.max_batch_bytes {
        tracing::warn!(
            bytes = body.len(),
            limit = state.max_batch_bytes,
            "ingest batch refused: too large"
        );
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "ingest batch of {} bytes is over the limit of {} bytes (--max-batch-bytes): send smaller batches",
                body.len(),
                state.max_batch_bytes
            ),
        ));
    }
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
    validate_app_name(&batch.app)?;

    let runners = state.runners.clone();
    let registry = state.registry.clone();
    let response = tokio::task::spawn_blocking(move || {
        registry.ensure_app(&tenant, &batch.app)?;
        // Through the runner table: a batch, even an empty heartbeat, is
        // the runner being seen.
        runners.append(&tenant, batch).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    if response.accepted > 0 {
        state.new_records.send_replace(state.store.last_id());
    }
    Ok(Json(response))
}
