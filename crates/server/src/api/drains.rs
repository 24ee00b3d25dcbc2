//! `/v1/apps/{app}/drains`: an app's drains, for its tenant's owner (and
//! admins). Ingest and caller tokens are refused, other tenants are 404.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use tailwater_model::wire::{CreatedDrain, DrainInfo, NewDrain};

use super::{only_tenant, ApiError};
use crate::access::scopes::{Action, Principal};
use crate::AppState;

type Pairs = Query<Vec<(String, String)>>;

/// The tenant a drain call acts on, once the token may manage its apps and
/// the app exists.
fn owner_of(
    state: &AppState,
    principal: &Principal,
    pairs: Pairs,
    app: &str,
) -> Result<String, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs.0)?.as_deref(), &state.registry)?;
    principal.allow(Action::ManageApps)?;
    if state.registry.app(&tenant, app).is_none() {
        return Err(ApiError::not_found(format!(
            "no app '{app}' in tenant {tenant}: check the name (`tailwater app list`)"
        )));
    }
    Ok(tenant)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(app): Path<String>,
    pairs: Pairs,
    bytes: Bytes,
) -> Result<(StatusCode, Json<CreatedDrain>), ApiError> {
    let tenant = owner_of(&state, &principal, pairs, &app)?;
    let new: NewDrain = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::bad_request(format!(
            "invalid drain: {error}: send {{\"url\": \"https://logs.example.com/in\", \"format\": \"ndjson\"}} (format: ndjson, otlp or loki)"
        ))
    })?;
    let drains = state.drains.clone();
    let created = blocking(move || Ok(drains.create(&tenant, &app, new)?)).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(app): Path<String>,
    pairs: Pairs,
) -> Result<Json<Vec<DrainInfo>>, ApiError> {
    let tenant = owner_of(&state, &principal, pairs, &app)?;
    Ok(Json(state.drains.list(&tenant, &app)))
}

/// What `POST …/{id}/pause`, `…/resume` and `DELETE …/{id}` do.
#[derive(Clone, Copy)]
enum Change {
    Pause,
    Resume,
    Delete,
}

async fn change(
    state: AppState,
    principal: Principal,
    (app, id): (String, String),
    pairs: Pairs,
    change: Change,
) -> Result<Json<DrainInfo>, ApiError> {
    let tenant = owner_of(&state, &principal, pairs, &app)?;
    let drains = state.drains.clone();
    let info = blocking(move || {
        Ok(match change {
            Change::Pause => drains.pause(&tenant, &app, &id)?,
            Change::Resume => drains.resume(&tenant, &app, &id)?,
            Change::Delete => drains.delete(&tenant, &app, &id)?,
        })
    })
    .await?;
    Ok(Json(info))
}

pub async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<(String, String)>,
    pairs: Pairs,
) -> Result<Json<DrainInfo>, ApiError> {
    change(state, principal, path, pairs, Change::Pause).await
}

pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<(String, String)>,
    pairs: Pairs,
) -> Result<Json<DrainInfo>, ApiError> {
    change(state, principal, path, pairs, Change::Resume).await
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(path): Path<(String, String)>,
    pairs: Pairs,
) -> Result<Json<DrainInfo>, ApiError> {
    change(state, principal, path, pairs, Change::Delete).await
}
