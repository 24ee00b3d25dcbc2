//! `GET /v1/logs` (history, paged) and `GET /v1/logs/tail` (live, SSE).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::Stream;
use jiff::Timestamp;
use tailwater_model::wire::{LogsPage, LogsParams};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{take_tenant, ApiError};
use crate::auth::{CallerView, Principal};
use crate::{tail, AppState};

/// The query string as [`LogsParams`], the tenant it reads, and what of it
/// the token may see. Read as plain pairs first, so an unknown or repeated
/// parameter gets the same clear JSON error as a bad value, rather than
/// axum's text rejection.
pub(super) fn params(
    state: &AppState,
    principal: &Principal,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<(LogsParams, String, Option<CallerView>), ApiError> {
    let tenant = principal.tenant_for(take_tenant(&mut pairs)?.as_deref(), &state.registry)?;
    let params = LogsParams::from_pairs(pairs).map_err(ApiError::bad_request)?;
    let view = principal.log_view(
        &tenant,
        params.request.as_deref(),
        params.app.as_deref(),
        &state.registry,
    )?;
    Ok((params, tenant, view))
}

pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    pairs: Query<Vec<(String, String)>>,
) -> Result<Json<LogsPage>, ApiError> {
    let (params, tenant, view) = params(&state, &principal, pairs)?;
    let view = super::requests::restrict_to_recorded_caller(
        &state,
        &tenant,
        view,
        params.request.as_deref(),
    )
    .await?;
    let query = params
        .to_query(Timestamp::now())
        .map_err(ApiError::bad_request)?;
    let store = state.store.clone();
    let page = tokio::task::spawn_blocking(move || store.query(&tenant, &query))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut records = page.records;
    // A caller's page may hold fewer than `limit` records; its cursor still
    // continues exactly where the store stopped.
    if let Some(view) = &view {
        records.retain(|record| view.sees(record, &state.registry));
    }
    Ok(Json(LogsPage {
        records,
        next_cursor: page.next.map(|cursor| cursor.encode()),
        as_of: page.as_of,
    }))
}

/// Server-sent events, one `record` event per record with the record id as
/// the event id. Resumes after `Last-Event-ID` (or `?after=`); without
/// either, starts with the next record stored.
pub async fn tail(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    pairs: Query<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (params, tenant, view) = params(&state, &principal, pairs)?;
    let view = super::requests::restrict_to_recorded_caller(
        &state,
        &tenant,
        view,
        params.request.as_deref(),
    )
    .await?;
    let filter = params
        .to_filter(Timestamp::now())
        .map_err(ApiError::bad_request)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid Last-Event-ID: send the id of the last event you received",
                    )
                })?,
        ),
    };
    let after = match last_event_id {
        Some(id) => id,
        None => params
            .after_id()
            .map_err(ApiError::bad_request)?
            .unwrap_or_else(|| state.store.last_id()),
    };
    let records = tail::follow(&state, tenant, filter, after);
    // A token revoked or expired while its tail is open gets nothing more.
    let (registry, token_id) = (state.registry.clone(), principal.token_id.clone());
    let live = move |_: &tailwater_model::LogRecord| registry.is_live(&token_id);
    let registry = state.registry.clone();
    let visible = move |record: &tailwater_model::LogRecord| {
        view.as_ref()
            .is_none_or(|view| view.sees(record, &registry))
    };
    let events = ReceiverStream::new(records)
        .take_while(live)
        .filter(visible)
        .map(|record| {
            let data = serde_json::to_string(&record).expect("records serialize to json");
            Ok(Event::default()
                .id(record.id.to_string())
                .event("record")
                .data(data))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
