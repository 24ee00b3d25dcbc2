//! The Loki API's reads about streams rather than lines, as Grafana's label
//! browser and query hints call them: `/labels`, `/label/{name}/values`,
//! `/series`, `/index/stats`, and `/status/buildinfo`. Labels are the
//! stream labels every record has ([`logql::STREAM_LABELS`]); values,
//! series and stats are read from the records of the time window (the
//! last 6 hours by default, as Loki), within `--logql-max-records`.
//! Owners and admins only: a caller reads one request's lines, never which
//! apps or runners exist.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tailwater_model::logql::pipeline::{stream_labels, LabelSet};
use tailwater_model::logql::{self, Expr, LogQuery};
use tailwater_model::wire::MAX_PAGE_LIMIT;
use tailwater_model::Direction;

use super::loki_read::{now_ns, respond, success, LokiError, Params, Scan};
use super::read::Skipped;
use super::ApiError;
use crate::access::scopes::{Action, Principal};
use crate::AppState;

/// What label reads look at when `start` is not given, as Loki: 6 hours.
const DEFAULT_WINDOW_NS: i64 = 6 * 3_600_000_000_000;
/// The Loki version Grafana is told: the API this module answers.
const LOKI_VERSION: &str = "3.0.0";

pub async fn labels(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = read(&state, principal, Params(pairs), None, Read::Names).await;
    respond(&state, result)
}

pub async fn label_values(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Path(name): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = read(&state, principal, Params(pairs), None, Read::Values(name)).await;
    respond(&state, result)
}

pub async fn series(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let mut matches = Vec::new();
    let mut rest = Vec::new();
    for (name, value) in pairs {
        if name == "match[]" || name == "match" {
            matches.push(value);
        } else {
            rest.push((name, value));
        }
    }
    let result = read(&state, principal, Params(rest), Some(matches), Read::Series).await;
    respond(&state, result)
}

pub async fn index_stats(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = read(&state, principal, Params(pairs), None, Read::Stats).await;
    respond(&state, result)
}

/// `GET /loki/api/v1/status/buildinfo`: the Loki API version answered.
pub async fn buildinfo(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
) -> Response {
    let result = principal.map_err(LokiError::from).map(|_| {
        Json(json!({
            "version": LOKI_VERSION,
            "revision": concat!("tailwater-", env!("CARGO_PKG_VERSION")),
            "branch": "tailwater",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        }))
        .into_response()
    });
    respond(&state, result)
}

enum Read {
    Names,
    Values(String),
    Series,
    Stats,
}

async fn read(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    mut params: Params,
    matches: Option<Vec<String>>,
    what: Read,
) -> Result<Response, LokiError> {
    let principal = principal?;
    let tenant = params.tenant(state, &principal)?;
    principal.allow(Action::ReadLogs)?;
    if principal.scope == tailwater_model::tenancy::Scope::Caller {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "a caller token reads one request's lines, not labels or series: query {app=\"name\"} | request_id=\"ID\"",
        )
        .into());
    }
    let end = params.time("end", now_ns())?;
    // `since`: a duration before `end`, as Loki reads it.
    let window = match params.take("since")? {
        None => DEFAULT_WINDOW_NS,
        Some(text) => logql::duration_ns(&text)
            .filter(|ns| *ns > 0)
            .ok_or_else(|| {
                LokiError::bad_query(format!(
                    "invalid since '{text}': give a duration such as 1h"
                ))
            })?,
    };
    let start = params.time("start", end.saturating_sub(window))?;
    let texts = match matches {
        Some(matches) => matches,
        None => params.take("query")?.into_iter().collect(),
    };
    params.done(&["step", "interval"])?;
    let mut queries = Vec::new();
    for text in texts.iter().filter(|text| !text.trim().is_empty()) {
        match logql::parse(text, state.regex_size_limit).map_err(LokiError::bad_query)? {
            Expr::Log(query) => queries.push(query),
            Expr::Metric(_) => {
                return Err(LokiError::bad_query(
                    "give a stream selector (with line filters if you like), not a metric query",
                ))
            }
        }
    }
    if queries.is_empty() {
        if matches!(what, Read::Stats | Read::Series) {
            return Err(LokiError::bad_query(
                "give the streams to read: a stream selector such as {app=\"name\"}",
            ));
        }
        // Every record of the tenant.
        queries.push(LogQuery {
            selector: Vec::new(),
            stages: Vec::new(),
        });
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let (mut scanned, mut skipped) = (0usize, Skipped::default());
        let mut sets: BTreeSet<LabelSet> = BTreeSet::new();
        let (mut entries, mut bytes) = (0u64, 0u64);
        for query in &queries {
            let scan = Scan {
                state: &state,
                tenant: &tenant,
                query,
                view: None,
                since_ns: start,
                until_ns: end,
                direction: Direction::Backward,
                // One record names every label; values want them all.
                first_page: if matches!(what, Read::Names) {
                    16
                } else {
                    MAX_PAGE_LIMIT
                },
            };
            scan.run(&mut scanned, &mut skipped, |record, output| {
                entries += 1;
                bytes += output.line.len() as u64;
                let labels = stream_labels(record);
                // A record with every stream label says them all.
                let all = labels.len() == logql::STREAM_LABELS.len();
                sets.insert(labels);
                !(all && matches!(what, Read::Names))
            })?;
        }
        let data = match &what {
            Read::Names => {
                let names: BTreeSet<&String> = sets.iter().flat_map(|set| set.keys()).collect();
                json!(names)
            }
            Read::Values(name) => {
                let values: BTreeSet<&String> =
                    sets.iter().filter_map(|set| set.get(name)).collect();
                json!(values)
            }
            Read::Series => json!(sets),
            Read::Stats => {
                // Bare, as Loki answers its index statistics.
                let streams = sets.len();
                let stats: BTreeMap<&str, u64> = BTreeMap::from([
                    ("streams", streams as u64),
                    ("chunks", streams as u64),
                    ("entries", entries),
                    ("bytes", bytes),
                ]);
                return Ok(Json(stats).into_response());
            }
        };
        Ok(success(data, &skipped))
    })
    .await
    .map_err(LokiError::internal)?
}
