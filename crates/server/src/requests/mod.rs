//! What happened to each request: one request as the store holds it (its
//! app's `request_start` and `request_end` records and its summary, made
//! a [`RequestInfo`]), and the list of a tenant's requests ([`list`]).
//! The API's `/v1/requests` routes are thin edges over this.

pub mod list;

use std::sync::Arc;

use tailwater_model::lifecycle::{Event, EVENT};
use tailwater_model::wire::{RequestInfo, RequestState};
use tailwater_model::{Direction, Filter, LogRecord, Matcher, Stream};
use tailwater_store::{RequestSummary, Store, StoreError};

use crate::access::ownership;
use crate::access::registry::Registry;
use crate::access::scopes::CallerView;
use crate::runners::Runners;

/// One app's `request_start` and `request_end` records of a request.
#[derive(Default)]
pub struct Lifecycle {
    /// Its deciding `request_start` (the first naming a caller, in ingest
    /// order), else its first.
    pub start: Option<LogRecord>,
    pub end: Option<LogRecord>,
    /// Its first record of any stream, when it has no lifecycle record.
    pub first: Option<LogRecord>,
}

/// `app`'s newest `request_end` of request `id`. Blocking.
fn end(store: &Store, tenant: &str, app: &str, id: &str) -> Result<Option<LogRecord>, StoreError> {
    Ok(store
        .query(
            tenant,
            &of_request(app, id, Some(Event::RequestEnd), Direction::Backward),
        )?
        .records
        .pop())
}

/// The query for `app`'s first (or newest) record of request `id`, of
/// `event` if given.
fn of_request(
    app: &str,
    id: &str,
    event: Option<Event>,
    direction: Direction,
) -> tailwater_model::Query {
    tailwater_model::Query {
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
        limit: 1,
        cursor: None,
    }
}

/// `app`'s lifecycle records of request `id`. Blocking.
fn lifecycle(store: &Store, tenant: &str, app: &str, id: &str) -> Result<Lifecycle, StoreError> {
    let mut lifecycle = Lifecycle {
        start: ownership::deciding_start(store, tenant, app, id, 0)
            .or_else(|| ownership::first_start(store, tenant, app, id)),
        end: end(store, tenant, app, id)?,
        first: None,
    };
    if lifecycle.start.is_none() && lifecycle.end.is_none() {
        lifecycle.first = store
            .query(tenant, &of_request(app, id, None, Direction::Forward))?
            .records
            .pop();
    }
    Ok(lifecycle)
}

/// Of the apps holding request `id`, the one whose request `view` may see
/// (every app when `view` is `None`), with its summary and lifecycle. When
/// several may be seen: the one started first in ingest order, else the
/// one whose records are oldest. Blocking.
pub fn find(
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

/// The request as the API shows it, from its summary and lifecycle; a
/// request with no end is unfinished once its runner's life is over.
pub fn info(
    runners: &Runners,
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
            let runner_over = runners
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
        error: failure(&lifecycle.end, request_state, status),
    }
}

/// Why a request failed: its end's `error` field, else, when it did not
/// complete, its end's message; one that completed with a server error
/// (5xx, a failure as runners count it) says its status.
fn failure(end: &Option<LogRecord>, state: RequestState, status: Option<i64>) -> Option<String> {
    let end = end.as_ref()?;
    let error = end.fields.get("error").and_then(serde_json::Value::as_str);
    match (error, state) {
        (Some(error), _) => Some(error.to_owned()),
        (None, RequestState::Completed) => status
            .filter(|status| *status >= 500)
            .map(|status| format!("the worker answered {status}")),
        (None, _) => Some(end.message.clone()),
    }
}
