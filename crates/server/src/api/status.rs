//! `GET /v1/status`: is the server there, which version is it, who is this
//! token, and how much does its tenant store (and which of its parts are
//! damaged). What `tailwater status` and
//! `tailwater login` ask before anything else.

use axum::extract::{Query, State};
use axum::Json;
use tailwater_model::wire::{AppStatus, DamagedPartStatus, StatusInfo, StoreStatus};

use super::{only_tenant, ApiError};
use crate::access::scopes::{Action, Principal};
use crate::AppState;

pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Json<StatusInfo>, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs)?.as_deref(), &state.registry)?;
    // Store sizes name the tenant's apps: only for tokens that manage them.
    let store = match principal.allow(Action::ManageApps) {
        Ok(()) => Some(store_status(&state, &tenant).await?),
        Err(_) => None,
    };
    Ok(Json(StatusInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        tenant,
        scope: principal.scope,
        token_id: principal.token_id,
        store,
    }))
}

async fn store_status(state: &AppState, tenant: &str) -> Result<StoreStatus, ApiError> {
    let store = state.store.clone();
    // `stats` walks every part's footer under the store's lock: off the
    // async threads.
    let owner = tenant.to_owned();
    let (stats, damaged) =
        tokio::task::spawn_blocking(move || (store.stats(), store.damaged_parts(&owner)))
            .await
            .map_err(ApiError::internal)?;
    let mut status = StoreStatus::default();
    for app in stats.into_iter().filter(|app| app.tenant == tenant) {
        status.records += app.records;
        status.raw_bytes += app.raw_bytes;
        status.stored_bytes += app.stored_bytes;
        status.apps.push(AppStatus {
            app: app.app,
            records: app.records,
            raw_bytes: app.raw_bytes,
            stored_bytes: app.stored_bytes,
        });
    }
    status.damaged_parts = damaged
        .into_iter()
        .map(|part| DamagedPartStatus {
            path: part.path.display().to_string(),
            app: part.partition.map(|partition| partition.app),
            quarantined: part.quarantined,
            reason: part.reason,
            blocks: part.blocks.into_iter().map(|block| block as u64).collect(),
            records: part.records,
        })
        .collect();
    Ok(status)
}
