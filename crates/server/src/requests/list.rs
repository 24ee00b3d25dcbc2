//! `GET /v1/requests`: a tenant's requests, newest start first.
//!
//! **A request is listed at its start.** The list reads `request_start`
//! records (the agent's, a gateway's) backwards in time, with the app,
//! runner and time window as the store's own filter, and pages by the
//! store's cursor over them, so pages neither repeat nor skip a request
//! whatever is stored meanwhile. A request may have several starts (a
//! gateway's naming the caller beside the agent's): it is listed once, at
//! the one `requests show` takes as its start, the deciding start
//! ([`ownership::deciding_start`]) if there is one, else the first.
//!
//! **Callers list only their own requests**: those whose deciding start
//! names them (rule 5 of [`crate::access::scopes`]), never one settled to
//! anyone (a caller learns of other requests only by their id), never a
//! private app's.
//!
//! **A page is bounded.** Each start costs a few reads of the store's
//! request index, so one page reads at most `scan_max` starts (the
//! server's `--requests-scan-max`, [`DEFAULT_SCAN_MAX`]): with a `state`
//! that few requests have, a page may hold fewer than `limit` requests and
//! still hand out a cursor.

use tailwater_model::lifecycle::{field, Event, EVENT};
use tailwater_model::wire::{RequestInfo, RequestsQuery};
use tailwater_model::{Cursor, Direction, Filter, LogRecord, Matcher, Query, Stream};
use tailwater_store::{RequestSummary, SkippedBlock, Store, StoreError};

use super::Lifecycle;
use crate::access::ownership::{self, Recorded};
use crate::access::registry::Registry;
use crate::access::scopes::RequestsView;
use crate::runners::Runners;

/// The most `request_start` records one page reads, unless the server is
/// configured otherwise (`--requests-scan-max`).
pub const DEFAULT_SCAN_MAX: usize = 5_000;
/// Starts read at a time when a `state` filter may pass over many.
const STATE_BATCH: usize = 256;

/// One page of requests.
#[derive(Default)]
pub struct Listed {
    pub requests: Vec<RequestInfo>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<Cursor>,
    /// Damaged blocks the read skipped: requests may be missing.
    pub skipped: Vec<SkippedBlock>,
    /// Whether the page stopped at the most starts it may read.
    pub scan_cut: bool,
}

/// Where a list reads, and what it may read for one page.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub store: &'a Store,
    pub registry: &'a Registry,
    pub runners: &'a Runners,
    /// The most `request_start` records one page reads (at least 1).
    pub scan_max: usize,
}

/// The page of `tenant`'s requests `query` asks for, as `view` may see
/// them (all, when `None`). Blocking.
pub fn list(
    sources: &Sources<'_>,
    tenant: &str,
    view: Option<&RequestsView>,
    query: &RequestsQuery,
) -> Result<Listed, StoreError> {
    let Sources {
        store,
        registry,
        runners,
        scan_max,
    } = *sources;
    let scan_max = scan_max.max(1);
    let mut listed = Listed::default();
    if query.is_empty_range() {
        return Ok(listed);
    }
    let mut filter = Filter {
        app: query.app.clone().map(Matcher::Eq),
        runner: query.runner.clone().map(Matcher::Eq),
        stream: Some(Stream::System),
        fields: [(EVENT.to_owned(), Event::RequestStart.as_str().to_owned())].into(),
        since: query.since,
        until: query.until,
        ..Filter::default()
    };
    if let Some(view) = view {
        // Only starts naming this caller can be its; of its app, if it has one.
        filter
            .fields
            .insert(field::CALLER.to_owned(), view.token_id().to_owned());
        if filter.app.is_none() {
            filter.app = view.app().map(|app| Matcher::Eq(app.to_owned()));
        }
    }
    let mut cursor = query.cursor;
    let mut scanned = 0;
    loop {
        let want = query.limit - listed.requests.len();
        let batch = match query.state {
            Some(_) => STATE_BATCH,
            None => want,
        };
        let page = store.query(
            tenant,
            &Query {
                filter: filter.clone(),
                direction: Direction::Backward,
                limit: batch.clamp(1, scan_max - scanned),
                cursor,
            },
        )?;
        scanned += page.records.len();
        listed.skipped.extend(page.skipped);
        let candidates: Vec<(usize, Lifecycle)> = page
            .records
            .iter()
            .enumerate()
            .map(|(at, start)| {
                Ok(listed_start(store, registry, tenant, view, start)?.map(|l| (at, l)))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_, StoreError>>()?;
        let keys: Vec<(String, String)> = candidates
            .iter()
            .map(|(at, _)| {
                let start = &page.records[*at];
                (
                    start.app.clone(),
                    start.request_id.clone().unwrap_or_default(),
                )
            })
            .collect();
        let summaries = store.requests_in_apps(tenant, &keys);
        for ((at, lifecycle), summary) in candidates.into_iter().zip(summaries) {
            let start = &page.records[at];
            let summary = summary.unwrap_or_else(|| only_start(start));
            let info = super::info(runners, tenant.to_owned(), summary, &lifecycle);
            if query
                .state
                .is_some_and(|state| !state.matches(info.state, info.status))
            {
                continue;
            }
            listed.requests.push(info);
            if listed.requests.len() == query.limit {
                let last_of_all = at + 1 == page.records.len() && page.next.is_none();
                listed.next = (!last_of_all).then(|| Cursor::of(start));
                return Ok(listed);
            }
        }
        let Some(next) = page.next else {
            return Ok(listed);
        };
        if scanned >= scan_max {
            listed.next = Some(next);
            listed.scan_cut = true;
            return Ok(listed);
        }
        cursor = Some(next);
    }
}

/// The lifecycle of the request `start` starts, when the list shows it
/// here: `start` is its deciding start, or its first when none decides,
/// and `view` may see it. Blocking.
fn listed_start(
    store: &Store,
    registry: &Registry,
    tenant: &str,
    view: Option<&RequestsView>,
    start: &LogRecord,
) -> Result<Option<Lifecycle>, StoreError> {
    let Some(id) = start.request_id.as_deref() else {
        return Ok(None);
    };
    let app = start.app.as_str();
    let deciding = ownership::deciding_start(store, tenant, app, id, 0);
    let at_start = |found: Option<&LogRecord>| found.is_some_and(|f| f.position == start.position);
    let canonical = match &deciding {
        Some(_) => at_start(deciding.as_ref()),
        None => at_start(ownership::first_start(store, tenant, app, id).as_ref()),
    };
    if !canonical
        || view
            .is_some_and(|view| !view.lists(app, &Recorded::of_start(deciding.as_ref()), registry))
    {
        return Ok(None);
    }
    Ok(Some(Lifecycle {
        start: Some(start.clone()),
        end: super::end(store, tenant, app, id)?,
        first: None,
    }))
}

/// A summary from the start alone, for a request the request index does
/// not know (yet).
fn only_start(start: &LogRecord) -> RequestSummary {
    let ts = tailwater_model::time::timestamp_ns(start.ts);
    RequestSummary {
        id: start.request_id.clone().unwrap_or_default(),
        app: start.app.clone(),
        runner: start.runner.clone(),
        records: 1,
        first_ts: ts,
        last_ts: ts,
        status: None,
    }
}
