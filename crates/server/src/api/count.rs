//! `GET /v1/logs/count`: how many records match the filters of `/v1/logs`
//! (read by the same code, under the same scopes), over all of history
//! unless `since` or `until` bound it. And [`visible`], the one home of
//! counting for a caller, which the histogram counts through too.
//!
//! The store counts without building records ([`Store::count`]), by app;
//! a caller token sees the apps (and its request's records in them) its
//! view shows, exactly what paging `/v1/logs` would have shown it.

use axum::extract::{Query, State};
use axum::Json;
use jiff::Timestamp;
use tailwater_model::wire::{Incomplete, LogsCount};
use tailwater_model::Filter;
use tailwater_store::{AppCount, Buckets, Store};

use super::logs::params;
use super::read::{refuse_paging, Skipped};
use super::ApiError;
use crate::access::registry::Registry;
use crate::access::scopes::{CallerView, Principal};
use crate::AppState;

pub async fn count(
    State(state): State<AppState>,
    principal: Principal,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<LogsCount>, ApiError> {
    refuse_paging(
        &pairs,
        "a count takes the filters of /v1/logs, since and until",
    )?;
    let (params, tenant, view) = params(&state, &principal, Query(pairs)).await?;
    let filter = super::read::filter(&state, &params, Timestamp::now())?;
    let (apps, incomplete) = visible(&state, tenant, view, filter, None).await?;
    Ok(Json(LogsCount {
        total: apps.iter().map(|app| app.total).sum(),
        complete: incomplete.is_none(),
        incomplete,
    }))
}

/// What of `tenant`'s matches of `filter` the caller `view` (or anyone,
/// when `None`) sees, per app, and what it lacks of them: counted off the
/// async threads, as a count may read many blocks.
pub(super) async fn visible(
    state: &AppState,
    tenant: String,
    view: Option<CallerView>,
    filter: Filter,
    buckets: Option<Buckets>,
) -> Result<(Vec<AppCount>, Option<Incomplete>), ApiError> {
    let store = state.store.clone();
    let registry = state.registry.clone();
    tokio::task::spawn_blocking(move || {
        count_as(&store, &registry, &tenant, view.as_ref(), &filter, buckets)
    })
    .await
    .map_err(ApiError::internal)?
}

fn count_as(
    store: &Store,
    registry: &Registry,
    tenant: &str,
    view: Option<&CallerView>,
    filter: &Filter,
    buckets: Option<Buckets>,
) -> Result<(Vec<AppCount>, Option<Incomplete>), ApiError> {
    if view.is_some_and(|view| filter.request_id.as_deref() != Some(view.request_id())) {
        // Not reached: a caller's view is of the request its filter names.
        return Ok((Vec::new(), None));
    }
    let counts = store
        .count(tenant, filter, buckets)
        .map_err(ApiError::internal)?;
    let incomplete = Skipped::of(&counts.skipped, view, registry);
    let apps = counts
        .apps
        .into_iter()
        // A caller's view asked for its request (the filter holds it), so
        // every record counted is of it: the app decides what it sees.
        .filter(|(app, _)| view.is_none_or(|view| view.shows_request_in(app, registry)))
        .map(|(_, count)| count)
        .collect();
    Ok((apps, incomplete))
}
