//! `GET /v1/requests` (a tenant's requests, newest first: [`requests::list`]),
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

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Json;
use jiff::Timestamp;
use tailwater_model::wire::{LogsPage, RequestInfo, RequestList, RequestsParams};
use tailwater_store::RequestSummary;

use super::read::Skipped;
use super::{only_tenant, take_tenant, ApiError};
use crate::access::scopes::Principal;
use crate::requests;
use crate::AppState;

/// `GET /v1/requests`: a page of the tenant's requests, newest start first
/// ([`requests::list`]), as this token may see them.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RequestList>, ApiError> {
    let tenant = principal.tenant_for(take_tenant(&mut pairs)?.as_deref(), &state.registry)?;
    let params = RequestsParams::from_pairs(pairs).map_err(ApiError::bad_request)?;
    let seal = state.registry.seal(&tenant);
    let query = params
        .to_query(Timestamp::now(), &seal)
        .map_err(ApiError::bad_request)?;
    let view = principal.requests_view(&tenant, query.app.as_deref(), &state.registry)?;
    // A caller is not told of damage in apps it may not see.
    let told_damage = view.is_none();
    let (store, registry, runners) = (
        state.store.clone(),
        state.registry.clone(),
        state.runners.clone(),
    );
    let scan_max = state.requests_scan_max;
    let listed = tokio::task::spawn_blocking(move || {
        let sources = requests::list::Sources {
            store: &store,
            registry: &registry,
            runners: &runners,
            scan_max,
        };
        requests::list::list(&sources, &tenant, view.as_ref(), &query)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    if listed.scan_cut {
        state.metrics.requests_list_scan_cut();
    }
    let incomplete = told_damage
        .then(|| Skipped::of(&listed.skipped, None, &state.registry))
        .flatten();
    Ok(Json(RequestList {
        requests: listed.requests,
        next_cursor: listed.next.map(|cursor| cursor.encode(&seal)),
        incomplete,
    }))
}

/// The request as this token may see it; 404 when it does not exist or may
/// not be seen.
async fn visible_request(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    id: &str,
) -> Result<(RequestSummary, requests::Lifecycle), ApiError> {
    let view = principal.log_view(tenant, Some(id), None, &state.registry, &state.settling)?;
    let (store, registry) = (state.store.clone(), state.registry.clone());
    let (tenant, request) = (tenant.to_owned(), id.to_owned());
    let find = move || requests::find(&store, &registry, view.as_ref(), &tenant, &request);
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
    Ok(Json(requests::info(
        &state.runners,
        tenant,
        summary,
        &lifecycle,
    )))
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
