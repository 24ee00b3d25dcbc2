//! `GET /v1/requests/{id}` (where and when a request ran, and how it ended),
//! `GET /v1/requests/{id}/logs` and `GET /v1/requests/{id}/logs/tail` (its
//! records: the `/v1/logs` handlers with `request=ID`), and the rule that a
//! request recorded with a caller is that caller's alone.
//!
//! **How a gateway records the caller.** The request's `request_start`
//! system record carries `fields.caller`: the public id (`tok_…`, as
//! `POST /v1/tokens` returns it and `GET /v1/tokens` lists it) of the caller
//! token the request was made with. Caller tokens then read that request only
//! if they are that token (see [`crate::access::scopes`], rule 5); owners and admins
//! read every request of their tenant. A request is its app's: the app's
//! first `request_start` naming a caller, in ingest order, decides, and
//! another app sending the same request id has a request of its own
//! ([`crate::access::ownership`]).
//!
//! A request that does not exist, and one the token may not see, are both
//! 404, so a caller cannot learn that another caller's request exists.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use tailwater_model::lifecycle::{Event, EVENT};
use tailwater_model::wire::{LogsPage, RequestInfo, RequestState};
use tailwater_model::{Direction, Filter, LogRecord, Matcher, Stream};
use tailwater_store::{RequestSummary, Store, StoreError};

use super::{only_tenant, take_tenant, ApiError};
use crate::access::ownership;
use crate::access::registry::Registry;
use crate::access::scopes::{CallerView, Principal};
use crate::AppState;

/// One app's `request_start` and `request_end` records of a request.
#[derive(Default)]
struct Lifecycle {
    /// Its deciding `request_start` (the first naming a caller, in ingest
    /// order), else its first.
    start: Option<LogRecord>,
    end: Option<LogRecord>,
    /// Its first record of any stream, when it has no lifecycle record.
    first: Option<LogRecord>,
}

/// `app`'s lifecycle records of request `id`. Blocking.
fn lifecycle(store: &Store, tenant: &str, app: &str, id: &str) -> Result<Lifecycle, StoreError> {
    let query = |event: Option<Event>, direction, limit| tailwater_model::Query {
        filter: Filter {
            app: Some(Matcher::Eq(app.to_owned())),
            request_id: Some(id.to_owned()),
            stream: event.map(|_| Stream::System),
            fields: event
                .map(|event| [(EVENT.to_owned(), event.as_str().to_owned())].into())
                .unwrap_or_default(),
            ..Filter::default()
        },
        direction,
        limit,
        cursor: None,
    };
    let mut lifecycle = Lifecycle {
        start: ownership::deciding_start(store, tenant, app, id, 0)
            .or_else(|| ownership::first_start(store, tenant, app, id)),
        end: store
            .query(
                tenant,
                &query(Some(Event::RequestEnd), Direction::Backward, 1),
            )?
            .records
            .pop(),
        first: None,
    };
    if lifecycle.start.is_none() && lifecycle.end.is_none() {
        lifecycle.first = store
            .query(tenant, &query(None, Direction::Forward, 1))?
            .records
            .pop();
    }
    Ok(lifecycle)
}

/// Of the apps holding request `id`, the one whose request `view` may see
/// (every app when `view` is `None`), with its summary and lifecycle. When
/// several may be seen: the one started first in ingest order, else the
/// one whose records are oldest. Blocking.
fn find_request(
    store: &Arc<Store>,
    registry: &Registry,
    view: Option<&CallerView>,
    tenant: &str,
    id: &str,
) -> Result<Option<(RequestSummary, Lifecycle)>, StoreError> {
    let mut best: Option<(RequestSummary, Lifecycle)> = None;
    for app in store.request_apps(tenant, id) {
        if view.is_some_and(|view| !view.sees_request_of(&app, registry)) {
            continue;
        }
        let Some(summary) = store.request_in_app(tenant, &app, id) else {
            continue;
        };
        let lifecycle = lifecycle(store, tenant, &app, id)?;
        let order = |(summary, lifecycle): &(RequestSummary, Lifecycle)| {
            let start = lifecycle
                .start
                .as_ref()
                .map_or(u64::MAX, |start| start.position);
            (start, summary.first_ts)
        };
        let candidate = (summary, lifecycle);
        if best
            .as_ref()
            .is_none_or(|best| order(&candidate) < order(best))
        {
            best = Some(candidate);
        }
    }
    Ok(best)
}

/// The request as this token may see it; 404 when it does not exist or may
/// not be seen.
async fn visible_request(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    id: &str,
) -> Result<(RequestSummary, Lifecycle), ApiError> {
    let view = principal.log_view(tenant, Some(id), None, &state.registry, &state.settling)?;
    let (store, registry) = (state.store.clone(), state.registry.clone());
    let (tenant, request) = (tenant.to_owned(), id.to_owned());
    let find = move || find_request(&store, &registry, view.as_ref(), &tenant, &request);
    let found = tokio::task::spawn_blocking(find)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "no request '{id}': check the id (the gateway returns it in X-Request-Id)"
        ))
    })
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RequestInfo>, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs)?.as_deref(), &state.registry)?;
    let (summary, lifecycle) = visible_request(&state, &principal, &tenant, &id).await?;
    Ok(Json(request_info(&state, tenant, summary, &lifecycle)))
}

fn request_info(
    state: &AppState,
    tenant: String,
    summary: RequestSummary,
    lifecycle: &Lifecycle,
) -> RequestInfo {
    let int = |record: &Option<LogRecord>, key: &str| {
        record
            .as_ref()
            .and_then(|record| record.fields.get(key))
            .and_then(serde_json::Value::as_i64)
    };
    let any = lifecycle
        .start
        .as_ref()
        .or(lifecycle.end.as_ref())
        .or(lifecycle.first.as_ref());
    let started = match &lifecycle.start {
        Some(start) => start.ts,
        None => tailwater_model::time::timestamp_from_ns(summary.first_ts),
    };
    let ended = lifecycle.end.as_ref().map(|end| end.ts);
    let duration_ms = int(&lifecycle.end, "duration_ms")
        .and_then(|ms| u64::try_from(ms).ok())
        .or_else(|| {
            let took = ended?.duration_since(started);
            u64::try_from(took.as_millis()).ok()
        });
    let status = int(&lifecycle.end, "status").or(summary.status);
    let request_state: RequestState = match &lifecycle.end {
        Some(end) => match end.fields.get("outcome").and_then(|value| value.as_str()) {
            Some("unfinished") => RequestState::Unfinished,
            Some("completed") | None => RequestState::Completed,
            Some(_) => RequestState::Error,
        },
        // No end yet: unfinished if its runner's life is over (an agent
        // killed before it could say so), else still in flight.
        None => {
            let boot = any.map(|record| record.boot.as_str()).unwrap_or_default();
            let runner_over = state
                .runners
                .find(&tenant, &summary.runner, Some(&summary.app))
                .into_iter()
                .any(|runner| runner.state.is_final() || runner.boot != boot);
            if runner_over {
                RequestState::Unfinished
            } else {
                RequestState::InFlight
            }
        }
    };
    RequestInfo {
        request_id: summary.id,
        tenant,
        app: summary.app,
        version: any.map(|record| record.version.clone()).unwrap_or_default(),
        runner: summary.runner,
        state: request_state,
        status,
        started,
        ended,
        duration_ms,
        records: summary.records,
        error: failure(&lifecycle.end, request_state),
    }
}

/// Why a request failed: its end's `error` field, else, when it did not
/// complete, its end's message.
fn failure(end: &Option<LogRecord>, state: RequestState) -> Option<String> {
    let end = end.as_ref()?;
    let error = end.fields.get("error").and_then(serde_json::Value::as_str);
    match (error, state) {
        (Some(error), _) => Some(error.to_owned()),
        (None, RequestState::Completed) => None,
        (None, _) => Some(end.message.clone()),
    }
}

/// The query string of `/v1/requests/{id}/logs…`: its own parameters with
/// `request=ID`, once the request is known to be visible.
async fn request_pairs(
    state: &AppState,
    principal: &Principal,
    id: String,
    mut pairs: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, ApiError> {
    if pairs.iter().any(|(name, _)| name == "request") {
        return Err(ApiError::bad_request(
            "the request id is in the path: leave request= out",
        ));
    }
    let mut probe = pairs.clone();
    let tenant = principal.tenant_for(take_tenant(&mut probe)?.as_deref(), &state.registry)?;
    visible_request(state, principal, &tenant, &id).await?;
    pairs.push(("request".into(), id));
    Ok(pairs)
}

/// `GET /v1/requests/{id}/logs`: a page, as `GET /v1/logs?request=ID`.
pub async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<LogsPage>, ApiError> {
    let pairs = request_pairs(&state, &principal, id, pairs).await?;
    super::logs::history(State(state), principal, Query(pairs)).await
}

/// `GET /v1/requests/{id}/logs/tail`: live, as `GET /v1/logs/tail?request=ID`.
pub async fn tail(
    State(state): State<AppState>,
    principal: Principal,
    transport: super::logs::TailTransport,
    Path(id): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let pairs = request_pairs(&state, &principal, id, pairs).await?;
    let events = super::logs::tail(State(state), principal, transport, Query(pairs)).await?;
    Ok(events)
}
