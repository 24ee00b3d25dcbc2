//! Tenants, tokens and apps: `/v1/tenants`, `/v1/tokens`, `/v1/apps`.
//! Who may call what is decided in [`crate::access::scopes`].

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use tailwater_model::tenancy::{
    AppInfo, AppPatch, CreatedToken, NewApp, NewTenant, NewToken, Scope, TenantInfo, TenantPatch,
    TokenInfo,
};

use super::{only_tenant, ApiError};
use crate::access::registry::{no_such_token, validate_app_name};
use crate::access::scopes::{Action, Principal};
use crate::AppState;

type Pairs = Query<Vec<(String, String)>>;

/// A JSON body, with a JSON 400 that says what was wrong.
fn body<T: DeserializeOwned>(bytes: &Bytes, what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|error| ApiError::bad_request(format!("invalid {what}: {error}")))
}

/// Runs a registry change (a file write and fsync) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
}

// --- tenants ---

pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    bytes: Bytes,
) -> Result<(StatusCode, Json<TenantInfo>), ApiError> {
    principal.allow(Action::CreateTenant)?;
    let new: NewTenant = body(
        &bytes,
        "tenant: send {\"name\": \"acme\", \"private_logs\": false}",
    )?;
    let registry = state.registry.clone();
    let info = blocking(move || Ok(registry.create_tenant(&new.name, new.private_logs)?)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<TenantInfo>>, ApiError> {
    principal.allow(Action::ListTenants)?;
    let tenants = state
        .registry
        .tenants()
        .into_iter()
        .filter(|tenant| principal.is_admin() || principal.tenant.as_deref() == Some(&tenant.name))
        .collect();
    Ok(Json(tenants))
}

pub async fn update_tenant(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<TenantInfo>, ApiError> {
    let tenant = principal.tenant_for(Some(&name), &state.registry)?;
    principal.allow(Action::UpdateTenant)?;
    let patch: TenantPatch = body(&bytes, "tenant change: send {\"private_logs\": true}")?;
    let registry = state.registry.clone();
    let info = blocking(move || Ok(registry.update_tenant(&tenant, &patch)?)).await?;
    Ok(Json(info))
}

// --- tokens ---

pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    bytes: Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let new: NewToken = body(
        &bytes,
        "token: send {\"scope\": \"ingest\", \"tenant\": \"acme\", \"app\": \"sdxl\", \"expires_in\": \"30d\"}",
    )?;
    let tenant = match new.scope {
        Scope::Admin => {
            if new.tenant.is_some() || new.app.is_some() {
                principal.allow_new_token(Scope::Admin)?;
                return Err(ApiError::bad_request(
                    "an admin token belongs to no tenant and no app: leave tenant and app out",
                ));
            }
            None
        }
        _ => Some(principal.tenant_for(new.tenant.as_deref(), &state.registry)?),
    };
    principal.allow_new_token(new.scope)?;
    match (new.scope, &new.app) {
        (Scope::Ingest, None) => {
            return Err(ApiError::bad_request(
                "an ingest token is for one app: give its app (--app)",
            ))
        }
        (Scope::Owner, Some(_)) => return Err(ApiError::bad_request(
            "an owner token is for a whole tenant: leave app out, or use scope caller or ingest",
        )),
        (_, Some(app)) => validate_app_name(app)?,
        _ => {}
    }
    let expires = match &new.expires_in {
        None => None,
        Some(text) => {
            let duration = tailwater_model::time::parse_duration(text)
                .map_err(|error| ApiError::bad_request(format!("invalid expires_in: {error}")))?;
            if duration.is_zero() || duration.is_negative() {
                return Err(ApiError::bad_request(
                    "invalid expires_in: give a positive duration such as 30d or 12h",
                ));
            }
            Some(
                jiff::Timestamp::now()
                    .checked_add(duration)
                    .map_err(|_| ApiError::bad_request("invalid expires_in: too far away"))?,
            )
        }
    };
    let registry = state.registry.clone();
    let (token, info) =
        blocking(move || Ok(registry.create_token(new.scope, tenant, new.app, expires, new.name)?))
            .await?;
    tracing::info!(id = %info.id, scope = %info.scope, by = %principal.token_id, "token created");
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })))
}

pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    pairs: Pairs,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let requested = only_tenant(pairs.0)?;
    // An admin lists every token unless it names a tenant.
    let tenant = match (&requested, principal.is_admin()) {
        (None, true) => None,
        _ => Some(principal.tenant_for(requested.as_deref(), &state.registry)?),
    };
    principal.allow(Action::ManageTokens)?;
    let tokens = state
        .registry
        .tokens()
        .into_iter()
        .filter(|token| principal.may_see_token(token.scope, token.tenant.as_deref()))
        .filter(|token| tenant.is_none() || token.tenant == tenant)
        .collect();
    Ok(Json(tokens))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    principal.allow(Action::ManageTokens)?;
    let visible = state
        .registry
        .token(&id)
        .filter(|token| principal.may_see_token(token.scope, token.tenant.as_deref()));
    if visible.is_none() {
        return Err(no_such_token(&id).into());
    }
    let registry = state.registry.clone();
    let info = blocking(move || Ok(registry.revoke_token(&id)?)).await?;
    tracing::info!(id = %info.id, by = %principal.token_id, "token revoked");
    Ok(Json(info))
}

// --- apps ---

pub async fn create_app(
    State(state): State<AppState>,
    principal: Principal,
    pairs: Pairs,
    bytes: Bytes,
) -> Result<(StatusCode, Json<AppInfo>), ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs.0)?.as_deref(), &state.registry)?;
    principal.allow(Action::ManageApps)?;
    let new: NewApp = body(
        &bytes,
        "app: send {\"name\": \"sdxl\", \"private_logs\": true}",
    )?;
    let registry = state.registry.clone();
    let info = blocking(move || Ok(registry.create_app(&tenant, &new)?)).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

pub async fn list_apps(
    State(state): State<AppState>,
    principal: Principal,
    pairs: Pairs,
) -> Result<Json<Vec<AppInfo>>, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs.0)?.as_deref(), &state.registry)?;
    principal.allow(Action::ManageApps)?;
    Ok(Json(state.registry.apps(&tenant)?))
}

pub async fn update_app(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    pairs: Pairs,
    bytes: Bytes,
) -> Result<Json<AppInfo>, ApiError> {
    let tenant = principal.tenant_for(only_tenant(pairs.0)?.as_deref(), &state.registry)?;
    principal.allow(Action::ManageApps)?;
    let patch: AppPatch = body(
        &bytes,
        "app change: send settings such as {\"private_logs\": true, \"retention_days\": 7}",
    )?;
    let registry = state.registry.clone();
    let info = blocking(move || Ok(registry.update_app(&tenant, &name, &patch)?)).await?;
    Ok(Json(info))
}
