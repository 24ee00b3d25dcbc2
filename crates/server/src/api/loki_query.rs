//! `GET /loki/api/v1/query` (instant) and `/loki/api/v1/query_range`, as
//! Grafana's Loki data source calls them: log queries answer `streams`
//! (times as nanosecond strings, `direction`, `limit`), metric queries a
//! `matrix` over `step` (or, instant, a `vector`; a plain number a
//! `scalar`). LogQL is read by [`tailwater_model::logql`]; the store is
//! read through [`super::loki_read::Scan`].

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::{json, Value as Json};
use tailwater_model::logql::metric::{self, EvalError, Sample, Steps, Value};
use tailwater_model::logql::pipeline::LabelSet;
use tailwater_model::logql::{Expr, MetricExpr};
use tailwater_model::wire::MAX_PAGE_LIMIT;
use tailwater_model::Direction;

use super::loki_read::{now_ns, ns_string, respond, success, view_for, LokiError, Params, Scan};
use super::read::Skipped;
use super::ApiError;
use crate::access::scopes::{CallerView, Principal};
use crate::AppState;

/// The most steps one series may have, as Loki's own limit.
pub const MAX_STEPS: usize = 11_000;
/// What Loki's range queries read when `start` is not given: an hour.
const DEFAULT_RANGE_NS: i64 = 3_600_000_000_000;
/// Parameters Loki takes that change nothing here.
const IGNORED: [&str; 2] = ["interval", "shards"];

pub async fn query(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = instant(&state, principal, Params(pairs)).await;
    respond(&state, result)
}

pub async fn query_range(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = range(&state, principal, Params(pairs)).await;
    respond(&state, result)
}

async fn instant(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    mut params: Params,
) -> Result<Response, LokiError> {
    let principal = principal?;
    let tenant = params.tenant(state, &principal)?;
    let expr = params.query(state)?;
    let time = params.time("time", now_ns())?;
    params.limit()?;
    params.direction()?;
    params.done(&IGNORED)?;
    let Expr::Metric(metric) = expr else {
        return Err(LokiError::bad_query(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        ));
    };
    let steps = Steps {
        start_ns: time,
        end_ns: time,
        step_ns: 1,
    };
    let (value, skipped) = evaluate(state, &principal, tenant, metric, steps).await?;
    let at = seconds(time);
    let data = match value {
        Value::Scalar(number) => {
            json!({"resultType": "scalar", "result": [at, sample_text(number)]})
        }
        Value::Vector(series) => json!({
            "resultType": "vector",
            "result": series.iter().filter_map(|one| {
                let (_, value) = one.points.first()?;
                Some(json!({"metric": one.labels, "value": [at, sample_text(*value)]}))
            }).collect::<Vec<_>>(),
        }),
    };
    Ok(success(data, &skipped))
}

async fn range(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    mut params: Params,
) -> Result<Response, LokiError> {
    let principal = principal?;
    let tenant = params.tenant(state, &principal)?;
    let expr = params.query(state)?;
    let end = params.time("end", now_ns())?;
    let start = params.time("start", end.saturating_sub(DEFAULT_RANGE_NS))?;
    let limit = params.limit()?;
    let direction = params.direction()?;
    let step = params.take("step")?;
    params.done(&IGNORED)?;
    if end < start {
        return Err(LokiError::bad_query(
            "the end timestamp must not be before the start time: swap start and end",
        ));
    }
    match expr {
        Expr::Log(query) => {
            let view = view_for(state, &principal, &tenant, &query)?;
            let state = state.clone();
            tokio::task::spawn_blocking(move || {
                let scan = Scan {
                    state: &state,
                    tenant: &tenant,
                    query: &query,
                    view: view.as_ref(),
                    since_ns: start,
                    until_ns: end,
                    direction,
                    first_page: limit,
                };
                streams(&scan, limit)
            })
            .await
            .map_err(LokiError::internal)?
        }
        Expr::Metric(metric) => {
            let step_ns = match step {
                Some(text) => parse_step(&text)?,
                // Loki's default: the range in about 250 steps, 1 s at least.
                None => ((end - start) / 250).max(1_000_000_000),
            };
            let steps = Steps {
                start_ns: start,
                end_ns: end,
                step_ns,
            };
            if (end - start) / step_ns >= MAX_STEPS as i64 {
                return Err(LokiError::limit(
                    "max_points",
                    format!("exceeded maximum resolution of {MAX_STEPS} points per timeseries: try decreasing the query resolution (a larger step)"),
                ));
            }
            let (value, skipped) = evaluate(state, &principal, tenant, metric, steps).await?;
            let series = match value {
                Value::Scalar(number) => vec![metric::Series {
                    labels: LabelSet::new(),
                    points: (0..steps.count()).map(|index| (index, number)).collect(),
                }],
                Value::Vector(series) => series,
            };
            let result: Vec<Json> = series
                .iter()
                .map(|one| {
                    let values: Vec<Json> = one
                        .points
                        .iter()
                        .map(|(index, value)| {
                            json!([seconds(steps.at(*index)), sample_text(*value)])
                        })
                        .collect();
                    json!({"metric": one.labels, "values": values})
                })
                .collect();
            Ok(success(
                json!({"resultType": "matrix", "result": result}),
                &skipped,
            ))
        }
    }
}

/// Up to `limit` lines of a log query, grouped into streams by their
/// labels, each stream's lines in the query's direction.
fn streams(scan: &Scan<'_>, limit: usize) -> Result<Response, LokiError> {
    let mut streams: BTreeMap<LabelSet, Vec<[String; 2]>> = BTreeMap::new();
    let (mut scanned, mut returned, mut skipped) = (0usize, 0usize, Skipped::default());
    scan.run(&mut scanned, &mut skipped, |record, output| {
        streams
            .entry(output.labels)
            .or_default()
            .push([ns_string(record), output.line]);
        returned += 1;
        returned < limit
    })?;
    let result: Vec<Json> = streams
        .into_iter()
        .map(|(labels, values)| json!({"stream": labels, "values": values}))
        .collect();
    let data = json!({
        "resultType": "streams",
        "result": result,
        "stats": {"summary": {"totalLinesProcessed": scanned, "totalEntriesReturned": returned}},
    });
    Ok(success(data, &skipped))
}

/// A metric query at `steps`, each of its log queries read by the store
/// under the principal's view of it.
async fn evaluate(
    state: &AppState,
    principal: &Principal,
    tenant: String,
    metric: MetricExpr,
    steps: Steps,
) -> Result<(Value, Skipped), LokiError> {
    let mut ranges = Vec::new();
    metric.ranges(&mut ranges);
    let views: Vec<Option<CallerView>> = ranges
        .iter()
        .map(|range| view_for(state, principal, &tenant, &range.query))
        .collect::<Result<_, _>>()?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let (mut scanned, mut skipped, mut next) = (0usize, Skipped::default(), 0usize);
        let mut fetch = |range: &tailwater_model::logql::RangeExpr| {
            let view = views[next.min(views.len() - 1)].as_ref();
            next += 1;
            let (from, through) = steps.window(range);
            let scan = Scan {
                state: &state,
                tenant: &tenant,
                query: &range.query,
                view,
                since_ns: from.saturating_add(1),
                until_ns: through.saturating_add(1),
                direction: Direction::Forward,
                first_page: MAX_PAGE_LIMIT,
            };
            let mut groups: HashMap<LabelSet, Vec<Sample>> = HashMap::new();
            scan.run(&mut scanned, &mut skipped, |record, output| {
                groups.entry(output.labels).or_default().push(Sample {
                    ts_ns: tailwater_model::time::timestamp_ns(record.ts),
                    bytes: output.line.len() as u64,
                });
                true
            })?;
            Ok::<_, LokiError>(groups.into_iter().collect())
        };
        let value = metric::evaluate(&metric, steps, &mut fetch).map_err(|error| match error {
            EvalError::Fetch(error) => error,
            EvalError::Query(message) if message.contains("points") => {
                LokiError::limit("max_points", message)
            }
            EvalError::Query(message) => LokiError::bad_query(message),
        })?;
        Ok((value, skipped))
    })
    .await
    .map_err(LokiError::internal)?
}

/// `step` as Loki reads it: a duration (`15000ms`, `1m`) or seconds.
fn parse_step(text: &str) -> Result<i64, LokiError> {
    let ns = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => Some((seconds * 1e9) as i64),
        _ => tailwater_model::logql::duration_ns(text),
    };
    ns.filter(|ns| *ns > 0).ok_or_else(|| {
        LokiError::bad_query(format!(
            "invalid step '{text}': give a positive duration (15s, 1m) or a number of seconds"
        ))
    })
}

/// A step's time as Loki writes it in a matrix or vector: seconds.
fn seconds(ns: i64) -> Json {
    json!(ns as f64 / 1e9)
}

/// A sample's value as Prometheus writes it.
fn sample_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}
