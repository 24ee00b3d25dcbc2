//! LogQL, the query language of Loki, as far as Grafana's Loki data source
//! speaks it to tailwater: a pure decoder ([`parse`]) of query text into an
//! [`Expr`], and the pure evaluation of what it asks of records
//! ([`pipeline`]: a log query's labels and stages, line by line;
//! [`metric`]: metric queries over the samples a store read gave).
//!
//! What is understood (anything else is refused with an error that names
//! it, never read as something else):
//!
//! - stream selectors `{app="sdxl", level=~"warn|error"}` with `= != =~ !~`
//!   (regexes match the whole value, as in Loki);
//! - line filters `|= != |~ !~`, chained, with `or` alternatives;
//! - `| json`, `| logfmt` (without parameters), label filters with string
//!   (`= != =~ !~`) and numeric, duration or byte comparisons
//!   (`== != > >= < <=`) joined by `and`, `or`, `,` and parentheses;
//!   `| drop` and `| keep` (names, or `name="value"`); `| line_format`
//!   with `{{.label}}` substitutions only;
//! - metric queries: `count_over_time`, `rate`, `bytes_over_time`,
//!   `bytes_rate` over a log range (`[5m]`, an optional `offset`), `sum`,
//!   `count`, `min`, `max`, `avg` with `by`/`without`, `vector(n)`,
//!   numbers, and `+ - * /` between them.
//!
//! Labels of a record: its stream labels `app`, `version`, `runner`,
//! `source`, `stream`, `level` and `detected_level` (the same as `level`),
//! then its structured metadata: `request_id` and its fields (nested
//! objects flattened with `_`). Hostile input is bounded: the text's
//! length ([`MAX_QUERY_BYTES`]), nesting ([`MAX_DEPTH`]) and every regex's
//! compiled size.

mod lex;
pub mod metric;
mod parse;
pub mod pipeline;

use crate::matcher::{Matcher, Pattern};

pub use lex::duration_ns;
pub use parse::parse;

/// The longest query text read, in bytes (Grafana's longest queries are a
/// few hundred bytes).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// The deepest nesting of parentheses, aggregations and label filters.
pub const MAX_DEPTH: usize = 64;

/// The stream labels every record has, in the order `/labels` lists them.
pub const STREAM_LABELS: [&str; 7] = [
    "app",
    "detected_level",
    "level",
    "runner",
    "source",
    "stream",
    "version",
];

/// A whole query.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Log lines: streams in the answer.
    Log(LogQuery),
    /// Numbers over time: a matrix (or, instant, a vector).
    Metric(MetricExpr),
}

/// A stream selector and the stages its lines go through.
#[derive(Clone, Debug, PartialEq)]
pub struct LogQuery {
    pub selector: Vec<LabelMatcher>,
    pub stages: Vec<Stage>,
}

/// One `name op "value"` of a stream selector.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMatcher {
    pub name: String,
    pub matcher: Matcher,
}

/// One stage of a log pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum Stage {
    /// `|= "a" or "b"`, `!= "a"`, `|~ "re"`, `!~ "re"`: a line passes a
    /// positive filter when it holds any alternative, a negative one when
    /// it holds none.
    Line(LineFilter),
    Json,
    Logfmt,
    Labels(LabelFilter),
    /// Labels taken off (all of a name, or where it has a value).
    Drop(Vec<LabelMatcherOrName>),
    /// Only these labels kept.
    Keep(Vec<LabelMatcherOrName>),
    /// The line rewritten from a template of text and labels.
    LineFormat(Vec<TemplatePart>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LineFilter {
    pub negated: bool,
    pub kind: LineMatch,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LineMatch {
    Contains(Vec<String>),
    Regex(Vec<Pattern>),
}

/// A label of `drop` or `keep`: the name alone, or with a value matcher.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelMatcherOrName {
    Name(String),
    Matcher(LabelMatcher),
}

impl LabelMatcherOrName {
    pub fn name(&self) -> &str {
        match self {
            LabelMatcherOrName::Name(name) => name,
            LabelMatcherOrName::Matcher(matcher) => &matcher.name,
        }
    }
}

/// A piece of a `line_format` template.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Label(String),
}

/// A condition on labels after a `|`.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelFilter {
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    /// `name = "v"`, `name =~ "re"`, …: compares the text.
    Text(LabelMatcher),
    /// `name > 5`, `latency >= 250ms`, `size < 1MB`: the label read as a
    /// number of the literal's kind.
    Number {
        name: String,
        op: Compare,
        value: f64,
        kind: NumberKind,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// How a label's text is read for a numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberKind {
    Plain,
    /// Seconds (`250ms` is 0.25).
    Duration,
    Bytes,
}

/// A query that answers numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricExpr {
    /// `count_over_time({…}[5m])` and its kin.
    Range(RangeExpr),
    Aggregate {
        op: AggregateOp,
        grouping: Option<Grouping>,
        inner: Box<MetricExpr>,
    },
    /// `vector(1)`: one series without labels.
    Vector(f64),
    /// A plain number (a scalar).
    Number(f64),
    Binary {
        op: BinaryOp,
        left: Box<MetricExpr>,
        right: Box<MetricExpr>,
    },
}

/// A function over a log query's lines in a sliding window.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeExpr {
    pub function: RangeFunction,
    pub query: LogQuery,
    /// The window, in nanoseconds.
    pub range_ns: i64,
    /// How far back the window is moved, in nanoseconds.
    pub offset_ns: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeFunction {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateOp {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl Expr {
    /// Every log query the expression reads, in order.
    pub fn log_queries(&self) -> Vec<&LogQuery> {
        match self {
            Expr::Log(query) => vec![query],
            Expr::Metric(metric) => {
                let mut found = Vec::new();
                metric.ranges(&mut found);
                found.into_iter().map(|range| &range.query).collect()
            }
        }
    }
}

impl MetricExpr {
    /// Every range expression inside, in order.
    pub fn ranges<'a>(&'a self, found: &mut Vec<&'a RangeExpr>) {
        match self {
            MetricExpr::Range(range) => found.push(range),
            MetricExpr::Aggregate { inner, .. } => inner.ranges(found),
            MetricExpr::Binary { left, right, .. } => {
                left.ranges(found);
                right.ranges(found);
            }
            MetricExpr::Vector(_) | MetricExpr::Number(_) => {}
        }
    }
}

impl LogQuery {
    /// The request id the query is held to, if it names one for certain: a
    /// label filter `request_id="ID"` of the pipeline, outside any `or`,
    /// before any parser (a caller token's reads must name one).
    pub fn request_id(&self) -> Option<&str> {
        fn in_filter(filter: &LabelFilter) -> Option<&str> {
            match filter {
                LabelFilter::And(left, right) => in_filter(left).or_else(|| in_filter(right)),
                LabelFilter::Text(LabelMatcher {
                    name,
                    matcher: Matcher::Eq(value),
                }) if name == "request_id" && !value.is_empty() => Some(value),
                _ => None,
            }
        }
        self.stages
            .iter()
            .take_while(|stage| matches!(stage, Stage::Line(_) | Stage::Labels(_)))
            .find_map(|stage| match stage {
                Stage::Labels(filter) => in_filter(filter),
                _ => None,
            })
    }

    /// The value a stream label must equal, if the selector says so.
    pub fn selector_value(&self, name: &str) -> Option<&str> {
        self.selector.iter().find_map(|label| match &label.matcher {
            Matcher::Eq(value) if label.name == name => Some(value.as_str()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests;
