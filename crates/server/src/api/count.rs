//! `GET /v1/logs/count`: how many records match the filters of `/v1/logs`
//! (read by the same code, under the same scopes), over all of history
//! unless `since` or `until` bound it. And [`visible`], the one home of
//! counting for a caller, which the histogram counts through too.
//!
//! The store counts without building records ([`Store::count`]), by app;
//! a caller token sees the apps (and its request's records in them) its
//! view shows, exactly what paging `/v1/logs` would have shown it.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use tailwater_model::wire::{Incomplete, LogsCount};
use tailwater_model::Filter;
use tailwater_store::{AppCount, Buckets, StoreError};

use super::logs::params;
use super::read::{refuse_paging, Skipped};
use super::ApiError;
use crate::access::scopes::{CallerView, Principal};
use crate::count_slots::{COUNT_RETRY_AFTER, COUNT_WAIT};
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

/// A count refused as one of more than `--count-concurrency` of its
/// tenant's at once.
pub const COUNT_BUSY: &str = "count_busy";
/// A count refused as reading more than `--count-scan-limit` records.
pub const COUNT_TOO_LARGE: &str = "count_too_large";

/// What of `tenant`'s matches of `filter` the caller `view` (or anyone,
/// when `None`) sees, per app, and what it lacks of them: counted off the
/// async threads, as a count may read many blocks, in one of the tenant's
/// count slots ([`crate::count_slots`]). Refusals are counted per tenant.
pub(super) async fn visible(
    state: &AppState,
    tenant: String,
    view: Option<CallerView>,
    filter: Filter,
    buckets: Option<Buckets>,
) -> Result<(Vec<AppCount>, Option<Incomplete>), ApiError> {
    let Some(slot) = state.count_slots.take(&tenant, COUNT_WAIT).await else {
        state.metrics.count_refused(&tenant, COUNT_BUSY);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            COUNT_BUSY,
            format!(
                "this tenant already runs {} counts or histograms at once (the server's --count-concurrency): ask again when one ends",
                state.count_slots.per_tenant()
            ),
        )
        .retry_after(COUNT_RETRY_AFTER));
    };
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        count_as(&state, &tenant, view.as_ref(), &filter, buckets)
    })
    .await
    .map_err(ApiError::internal)?
}

fn count_as(
    state: &AppState,
    tenant: &str,
    view: Option<&CallerView>,
    filter: &Filter,
    buckets: Option<Buckets>,
) -> Result<(Vec<AppCount>, Option<Incomplete>), ApiError> {
    if view.is_some_and(|view| filter.request_id.as_deref() != Some(view.request_id())) {
        // Not reached: a caller's view is of the request its filter names.
        return Ok((Vec::new(), None));
    }
    let registry = &state.registry;
    let counts = state
        .store
        .count(tenant, filter, buckets)
        .map_err(|error| match error {
            StoreError::CountTooLarge { limit, .. } => {
                state.metrics.count_refused(tenant, COUNT_TOO_LARGE);
                // Not how many it would read: a caller token would learn
                // of records in apps its view does not show.
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    COUNT_TOO_LARGE,
                    format!("this count would read more than {limit} stored records, the server's limit for one count (--count-scan-limit): narrow it with since and until, or app, or ask the server's admin to raise the limit"),
                )
            }
            error => ApiError::internal(error),
        })?;
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

#[cfg(test)]
mod tests {
    use axum::response::IntoResponse;

    use super::*;
    use crate::access::registry::Registry;
    use crate::redact::Redactor;
    use crate::ServerConfig;

    #[tokio::test]
    async fn a_tenant_past_its_slots_gets_429_with_retry_after_and_others_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(dir.path().to_owned());
        config.count_concurrency = 1;
        let store =
            tailwater_store::Store::open(&dir.path().join("store"), config.store.clone()).unwrap();
        let (registry, _) = Registry::open(&dir.path().join("auth"), None).unwrap();
        let state = crate::AppState::open(store, registry, Redactor::none(), &config).unwrap();

        // Tenant a's one slot is held (as by a long count of its own).
        let held = state.count_slots.take("a", COUNT_WAIT).await.unwrap();
        let busy = visible(&state, "a".into(), None, Filter::default(), None)
            .await
            .unwrap_err()
            .into_response();
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(busy.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(busy.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], COUNT_BUSY);
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("--count-concurrency"), "{message}");
        let metrics = state.metrics.render();
        assert!(
            metrics.contains(r#"tailwater_count_refused_total{tenant="a",reason="count_busy"} 1"#),
            "{metrics}"
        );

        // Tenant b counts meanwhile; a counts again once its slot is free.
        visible(&state, "b".into(), None, Filter::default(), None)
            .await
            .unwrap();
        drop(held);
        visible(&state, "a".into(), None, Filter::default(), None)
            .await
            .unwrap();
    }
}
