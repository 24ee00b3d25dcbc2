//! `GET /v1/histogram`: how many records match, per time bucket and level.
//! The web UI draws it above the logs; it takes the same filters as
//! `/v1/logs` (read by the same code), plus `buckets`.
//!
//! It counts by reading the matching records through the store's query API,
//! newest first, so its cost grows with what matches. Past
//! `histogram_max_records` (a server setting) it stops and says so
//! (`complete: false`, and from when the counts hold), never silently.

use axum::extract::{Query, State};
use axum::Json;
use jiff::Timestamp;
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::{Histogram, HistogramBucket, LevelCounts, MAX_PAGE_LIMIT};
use tailwater_model::{Direction, Query as PageQuery};

use super::logs::params;
use super::read::Skipped;
use super::ApiError;
use crate::access::scopes::Principal;
use crate::AppState;

/// Buckets when the request names no number.
pub const DEFAULT_BUCKETS: usize = 60;
/// The most buckets one histogram may have.
pub const MAX_BUCKETS: usize = 1_000;
/// The window when the request gives no `since`: the last hour.
const DEFAULT_SINCE: &str = "1h";

/// Parameters of `/v1/logs` that page or follow, which a histogram does not.
const PAGING: [&str; 4] = ["limit", "direction", "cursor", "after"];

pub async fn histogram(
    State(state): State<AppState>,
    principal: Principal,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Histogram>, ApiError> {
    let buckets = take_buckets(&mut pairs)?;
    if let Some((name, _)) = pairs
        .iter()
        .find(|(name, _)| PAGING.contains(&name.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown parameter '{name}': the histogram takes the filters of /v1/logs, since, until and buckets"
        )));
    }
    let (mut params, tenant, view) = params(&state, &principal, Query(pairs)).await?;
    params.since.get_or_insert_with(|| DEFAULT_SINCE.to_owned());
    params.until.get_or_insert_with(|| "now".to_owned());
    let now = Timestamp::now();
    let filter = super::read::filter(&state, &params, now)?;
    let (since, until) = (filter.since.unwrap_or(now), filter.until.unwrap_or(now));
    if since >= until {
        return Err(ApiError::bad_request(format!(
            "since ({since}) is not before until ({until}): give a window that ends after it starts"
        )));
    }
    let span_ns = (timestamp_ns(until) - timestamp_ns(since)) as u64;
    let step_ns = span_ns.div_ceil(buckets as u64).max(1);

    let max_records = state.histogram_max_records;
    let store = state.store.clone();
    let registry = state.registry.clone();
    let count = move || {
        let mut counts = vec![LevelCounts::default(); buckets];
        let (mut scanned, mut total) = (0usize, 0u64);
        let mut skipped = Skipped::default();
        let mut query = PageQuery {
            filter,
            direction: Direction::Backward,
            limit: MAX_PAGE_LIMIT,
            cursor: None,
        };
        loop {
            query.limit = MAX_PAGE_LIMIT.min(max_records - scanned).max(1);
            let page = store.query(&tenant, &query)?;
            skipped.add(&page.skipped, view.as_ref(), &registry);
            scanned += page.records.len();
            let oldest = page.records.last().map(|record| record.ts);
            for record in &page.records {
                if view
                    .as_ref()
                    .is_some_and(|view| !view.sees(record, &registry))
                {
                    continue;
                }
                let offset = (timestamp_ns(record.ts) - timestamp_ns(since)) as u64;
                let index = ((offset / step_ns) as usize).min(buckets - 1);
                counts[index].add(record.level);
                total += 1;
            }
            match page.next {
                None => return Ok((counts, total, None, skipped.incomplete())),
                Some(_) if scanned >= max_records => {
                    return Ok((counts, total, oldest, skipped.incomplete()))
                }
                Some(next) => query.cursor = Some(next),
            }
        }
    };
    let (counts, total, cut_at, incomplete) = tokio::task::spawn_blocking(count)
        .await
        .map_err(ApiError::internal)?
        .map_err(|error: tailwater_store::StoreError| ApiError::internal(error))?;
    if cut_at.is_some() {
        tracing::info!(max_records, "a histogram counted only its newest records");
    }
    let buckets = counts
        .into_iter()
        .enumerate()
        .map(|(index, counts)| HistogramBucket {
            start: Timestamp::from_nanosecond(
                since.as_nanosecond() + i128::from(step_ns) * index as i128,
            )
            .unwrap_or(until),
            counts,
        })
        .collect();
    Ok(Json(Histogram {
        since,
        until,
        step_ns,
        buckets,
        total,
        complete: cut_at.is_none() && incomplete.is_none(),
        counted_since: cut_at,
        incomplete,
    }))
}

/// Takes `buckets` out of the query string's pairs.
fn take_buckets(pairs: &mut Vec<(String, String)>) -> Result<usize, ApiError> {
    let mut given = pairs
        .iter()
        .filter(|(name, _)| name == "buckets")
        .map(|(_, value)| value.clone());
    let (first, second) = (given.next(), given.next());
    pairs.retain(|(name, _)| name != "buckets");
    if second.is_some() {
        return Err(ApiError::bad_request(
            "parameter 'buckets' is given twice: give it once",
        ));
    }
    match first.as_deref().filter(|value| !value.is_empty()) {
        None => Ok(DEFAULT_BUCKETS),
        Some(text) => match text.parse::<usize>() {
            Ok(buckets) if (1..=MAX_BUCKETS).contains(&buckets) => Ok(buckets),
            _ => Err(ApiError::bad_request(format!(
                "invalid buckets '{text}': use a whole number from 1 to {MAX_BUCKETS}"
            ))),
        },
    }
}
