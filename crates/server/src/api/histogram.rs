//! `GET /v1/histogram`: how many records match, per time bucket and level.
//! The web UI draws it above the logs; it takes the same filters as
//! `/v1/logs` (read by the same code), plus `buckets`.
//!
//! It counts through the store's count ([`super::count::visible`]): every
//! match in the window, without building records, so its cost grows with
//! the blocks the window and filters leave to read, not with the records
//! that match.

use axum::extract::{Query, State};
use axum::Json;
use jiff::Timestamp;
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::{Histogram, HistogramBucket, LevelCounts};
use tailwater_model::Level;
use tailwater_store::Buckets;

use super::logs::params;
use super::read::refuse_paging;
use super::ApiError;
use crate::access::scopes::Principal;
use crate::AppState;

/// Buckets when the request names no number.
pub const DEFAULT_BUCKETS: usize = 60;
/// The most buckets one histogram may have.
pub const MAX_BUCKETS: usize = 1_000;
/// The window when the request gives no `since`: the last hour.
const DEFAULT_SINCE: &str = "1h";

pub async fn histogram(
    State(state): State<AppState>,
    principal: Principal,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Json<Histogram>, ApiError> {
    let buckets = take_buckets(&mut pairs)?;
    refuse_paging(
        &pairs,
        "the histogram takes the filters of /v1/logs, since, until and buckets",
    )?;
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
    let spec = Buckets {
        since_ns: timestamp_ns(since),
        step_ns,
        count: buckets,
    };
    let (apps, incomplete) =
        super::count::visible(&state, tenant, view, filter, Some(spec)).await?;
    let mut counts = vec![LevelCounts::default(); buckets];
    for app in &apps {
        for (counts, by_level) in counts.iter_mut().zip(&app.buckets) {
            for level in Level::ALL {
                counts.add_many(level, by_level[level.code() as usize]);
            }
        }
    }
    let total = apps.iter().map(|app| app.total).sum();
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
        complete: incomplete.is_none(),
        counted_since: None,
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
