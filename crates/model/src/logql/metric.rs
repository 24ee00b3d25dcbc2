//! Metric queries evaluated over the samples of their log queries: each
//! range function at every step of `[start, end]`, then aggregations and
//! arithmetic, series by series (a series keeps only the steps it has a
//! value at, as Loki answers them). The samples come from the caller
//! (`fetch`), which reads the store; this module only counts.

use std::collections::BTreeMap;

use super::pipeline::{LabelSet, ERROR_LABEL};
use super::*;

/// The most points one evaluation may hold (all series, all steps): past
/// it the query is refused rather than answered in part.
pub const MAX_POINTS: usize = 5_000_000;

/// When to evaluate: `start`, then every `step` up to `end` (inclusive), in
/// nanoseconds; an instant query has `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steps {
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
}

impl Steps {
    /// How many steps there are.
    pub fn count(&self) -> usize {
        if self.end_ns < self.start_ns {
            return 0;
        }
        ((self.end_ns - self.start_ns) / self.step_ns.max(1)) as usize + 1
    }

    pub fn at(&self, index: usize) -> i64 {
        self.start_ns + self.step_ns.max(1) * index as i64
    }

    /// The time window a range reads samples from, in nanoseconds:
    /// `(from, through]`.
    pub fn window(&self, range: &RangeExpr) -> (i64, i64) {
        let through = self.end_ns.saturating_sub(range.offset_ns);
        let from = self
            .start_ns
            .saturating_sub(range.offset_ns)
            .saturating_sub(range.range_ns);
        (from, through)
    }
}

/// A range expression's lines, grouped by their labels after the pipeline.
pub type Groups = Vec<(LabelSet, Vec<Sample>)>;
/// What reads a range expression's lines: the caller's store.
pub type Fetch<'a, E> = dyn FnMut(&RangeExpr) -> Result<Groups, E> + 'a;
/// Per step: the sum, count, least and most of the values aggregated.
type Accumulated = BTreeMap<usize, (f64, f64, f64, f64)>;

/// One line a range function counts: its time and its size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub ts_ns: i64,
    pub bytes: u64,
}

/// A series: labels, and `(step index, value)` for the steps it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: LabelSet,
    pub points: Vec<(usize, f64)>,
}

/// What an expression evaluates to.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Series>),
}

/// Why an evaluation stopped: the caller's fetch failed, or the query
/// cannot be answered whole.
#[derive(Debug, PartialEq)]
pub enum EvalError<E> {
    Fetch(E),
    Query(String),
}

/// `expr` at `steps`; `fetch` gives a range expression's lines in
/// [`Steps::window`], grouped by their labels after the pipeline.
pub fn evaluate<E>(
    expr: &MetricExpr,
    steps: Steps,
    fetch: &mut Fetch<'_, E>,
) -> Result<Value, EvalError<E>> {
    let mut points = 0usize;
    eval(expr, steps, fetch, &mut points)
}

fn eval<E>(
    expr: &MetricExpr,
    steps: Steps,
    fetch: &mut Fetch<'_, E>,
    points: &mut usize,
) -> Result<Value, EvalError<E>> {
    Ok(match expr {
        MetricExpr::Number(number) => Value::Scalar(*number),
        MetricExpr::Vector(number) => {
            count_points(points, steps.count())?;
            Value::Vector(vec![Series {
                labels: LabelSet::new(),
                points: (0..steps.count()).map(|index| (index, *number)).collect(),
            }])
        }
        MetricExpr::Range(range) => {
            let groups = fetch(range).map_err(EvalError::Fetch)?;
            let mut series = Vec::with_capacity(groups.len());
            for (labels, mut samples) in groups {
                if let Some(error) = labels.get(ERROR_LABEL) {
                    return Err(EvalError::Query(format!(
                        "pipeline error: a line has {ERROR_LABEL}=\"{error}\": drop such lines with | {ERROR_LABEL}=\"\" (or | drop {ERROR_LABEL})"
                    )));
                }
                samples.sort_unstable_by_key(|sample| sample.ts_ns);
                let values = over_range(range, &samples, steps);
                count_points(points, values.len())?;
                if !values.is_empty() {
                    series.push(Series {
                        labels,
                        points: values,
                    });
                }
            }
            Value::Vector(series)
        }
        MetricExpr::Aggregate {
            op,
            grouping,
            inner,
        } => match eval(inner, steps, fetch, points)? {
            Value::Scalar(_) => {
                return Err(EvalError::Query(
                    "an aggregation takes a vector, not a number: aggregate a metric query".into(),
                ))
            }
            Value::Vector(series) => Value::Vector(aggregate(*op, grouping.as_ref(), series)),
        },
        MetricExpr::Binary { op, left, right } => {
            let left = eval(left, steps, fetch, points)?;
            let right = eval(right, steps, fetch, points)?;
            binary(*op, left, right)
        }
    })
}

fn count_points<E>(points: &mut usize, more: usize) -> Result<(), EvalError<E>> {
    *points += more;
    if *points > MAX_POINTS {
        return Err(EvalError::Query(format!(
            "the query would hold more than {MAX_POINTS} points: use a larger step, a shorter time range, or fewer series (sum by (...))"
        )));
    }
    Ok(())
}

/// The range function at each step, over `samples` in time order.
fn over_range(range: &RangeExpr, samples: &[Sample], steps: Steps) -> Vec<(usize, f64)> {
    let mut prefix_bytes = Vec::with_capacity(samples.len() + 1);
    prefix_bytes.push(0u64);
    for sample in samples {
        prefix_bytes.push(
            prefix_bytes
                .last()
                .unwrap_or(&0)
                .saturating_add(sample.bytes),
        );
    }
    let seconds = range.range_ns as f64 / 1e9;
    let mut values = Vec::new();
    for index in 0..steps.count() {
        let through = steps.at(index).saturating_sub(range.offset_ns);
        let from = through.saturating_sub(range.range_ns);
        let first = samples.partition_point(|sample| sample.ts_ns <= from);
        let last = samples.partition_point(|sample| sample.ts_ns <= through);
        if last <= first {
            continue;
        }
        let count = (last - first) as f64;
        let bytes = (prefix_bytes[last] - prefix_bytes[first]) as f64;
        let value = match range.function {
            RangeFunction::CountOverTime => count,
            RangeFunction::Rate => count / seconds,
            RangeFunction::BytesOverTime => bytes,
            RangeFunction::BytesRate => bytes / seconds,
        };
        values.push((index, value));
    }
    values
}

fn group_key(labels: &LabelSet, grouping: Option<&Grouping>) -> LabelSet {
    match grouping {
        None => LabelSet::new(),
        Some(Grouping {
            without: false,
            labels: names,
        }) => labels
            .iter()
            .filter(|(name, _)| names.contains(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        Some(Grouping {
            without: true,
            labels: names,
        }) => labels
            .iter()
            .filter(|(name, _)| !names.contains(name))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
    }
}

fn aggregate(op: AggregateOp, grouping: Option<&Grouping>, series: Vec<Series>) -> Vec<Series> {
    // Per group, per step: (sum, count, min, max).
    let mut groups: BTreeMap<LabelSet, Accumulated> = BTreeMap::new();
    for one in series {
        let group = groups.entry(group_key(&one.labels, grouping)).or_default();
        for (index, value) in one.points {
            let entry = group
                .entry(index)
                .or_insert((0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
            entry.0 += value;
            entry.1 += 1.0;
            entry.2 = entry.2.min(value);
            entry.3 = entry.3.max(value);
        }
    }
    groups
        .into_iter()
        .map(|(labels, points)| Series {
            labels,
            points: points
                .into_iter()
                .map(|(index, (sum, count, min, max))| {
                    let value = match op {
                        AggregateOp::Sum => sum,
                        AggregateOp::Count => count,
                        AggregateOp::Min => min,
                        AggregateOp::Max => max,
                        AggregateOp::Avg => sum / count,
                    };
                    (index, value)
                })
                .collect(),
        })
        .collect()
}

fn apply(op: BinaryOp, left: f64, right: f64) -> f64 {
    match op {
        BinaryOp::Add => left + right,
        BinaryOp::Sub => left - right,
        BinaryOp::Mul => left * right,
        BinaryOp::Div => left / right,
    }
}

/// Arithmetic: numbers with numbers, a number with every point of a
/// vector, and vectors point by point between series of the same labels
/// at the same steps (one to one, as Prometheus matches them).
fn binary(op: BinaryOp, left: Value, right: Value) -> Value {
    match (left, right) {
        (Value::Scalar(l), Value::Scalar(r)) => Value::Scalar(apply(op, l, r)),
        (Value::Vector(series), Value::Scalar(r)) => {
            Value::Vector(map(series, |v| apply(op, v, r)))
        }
        (Value::Scalar(l), Value::Vector(series)) => {
            Value::Vector(map(series, |v| apply(op, l, v)))
        }
        (Value::Vector(left), Value::Vector(right)) => {
            let right: BTreeMap<LabelSet, Vec<(usize, f64)>> = right
                .into_iter()
                .map(|series| (series.labels, series.points))
                .collect();
            let joined = left
                .into_iter()
                .filter_map(|series| {
                    let other: BTreeMap<usize, f64> =
                        right.get(&series.labels)?.iter().copied().collect();
                    let points: Vec<(usize, f64)> = series
                        .points
                        .into_iter()
                        .filter_map(|(index, value)| {
                            other.get(&index).map(|r| (index, apply(op, value, *r)))
                        })
                        .collect();
                    (!points.is_empty()).then_some(Series {
                        labels: series.labels,
                        points,
                    })
                })
                .collect();
            Value::Vector(joined)
        }
    }
}

fn map(series: Vec<Series>, f: impl Fn(f64) -> f64) -> Vec<Series> {
    series
        .into_iter()
        .map(|one| Series {
            labels: one.labels,
            points: one
                .points
                .into_iter()
                .map(|(index, value)| (index, f(value)))
                .collect(),
        })
        .collect()
}
