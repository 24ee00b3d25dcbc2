//! `GET /v1/runners` (a tenant's runners and their states) and
//! `GET /v1/runners/{runner}` (one runner and its lifecycle records), for
//! owners and admins. The table itself is [`crate::runners`].

use axum::extract::{Path, Query, State};
use axum::Json;
use tailwater_model::wire::{RunnerDetail, RunnerList, RunnerState};
use tailwater_model::{Direction, Filter, Matcher, Stream};

use super::{no_other_params, take_param, take_tenant, ApiError};
use crate::access::scopes::{Action, Principal};
use crate::AppState;

/// A runner's newest `system` records `GET /v1/runners/{runner}` returns.
pub const RUNNER_EVENTS_LIMIT: usize = 200;

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RunnerList>, ApiError> {
    let tenant = principal.tenant_for(take_tenant(&mut pairs)?.as_deref(), &state.registry)?;
    principal.allow(Action::ReadRunners)?;
    let app = take_param(&mut pairs, "app")?;
    let wanted = take_param(&mut pairs, "state")?
        .map(|text| text.parse::<RunnerState>())
        .transpose()
        .map_err(ApiError::bad_request)?;
    no_other_params(&pairs, "tenant, app and state")?;
    let runners = state.runners.list(&tenant, app.as_deref(), wanted);
    Ok(Json(RunnerList { runners }))
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<RunnerDetail>, ApiError> {
    let tenant = principal.tenant_for(take_tenant(&mut pairs)?.as_deref(), &state.registry)?;
    principal.allow(Action::ReadRunners)?;
    let app = take_param(&mut pairs, "app")?;
    no_other_params(&pairs, "tenant and app")?;
    let mut found = state.runners.find(&tenant, &id, app.as_deref());
    let runner = match found.len() {
        0 => {
            return Err(ApiError::not_found(format!(
                "no runner '{id}'{}: list them with `tailwater runners ls`",
                app.map(|app| format!(" in app '{app}'"))
                    .unwrap_or_default()
            )))
        }
        1 => found.remove(0),
        _ => {
            let apps: Vec<&str> = found.iter().map(|runner| runner.app.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "runner id '{id}' is in several apps ({}): add app=NAME (`--app`)",
                apps.join(", ")
            )));
        }
    };
    let query = tailwater_model::Query {
        filter: Filter {
            app: Some(Matcher::Eq(runner.app.clone())),
            runner: Some(Matcher::Eq(runner.runner.clone())),
            stream: Some(Stream::System),
            ..Filter::default()
        },
        direction: Direction::Backward,
        limit: RUNNER_EVENTS_LIMIT,
        cursor: None,
    };
    let store = state.store.clone();
    let page = tokio::task::spawn_blocking(move || store.query(&tenant, &query))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let mut events = page.records;
    events.reverse();
    debug_assert!(events.windows(2).all(|pair| pair[0].ts <= pair[1].ts));
    Ok(Json(RunnerDetail { runner, events }))
}
