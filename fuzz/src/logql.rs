//! The `logql` target: a LogQL query as the Loki API reads it, then run
//! over records and samples. Beyond "no panic": what the store is told to
//! filter by itself (`store_filter`) never drops a record the query
//! matches, so pushing it down loses nothing; and a metric query evaluates
//! within its point limit.

use tailwater_model::logql::metric::{self, Sample, Steps};
use tailwater_model::logql::pipeline::LabelSet;
use tailwater_model::logql::{self, Expr, LogQuery};
use tailwater_model::{Level, LogRecord, Source, Stream};

/// Small enough that the fuzzer meets the limit, large enough for real
/// patterns.
const REGEX_SIZE_LIMIT: usize = 64 * 1024;

/// Records of every level and stream, with JSON, logfmt and plain lines.
fn records() -> Vec<LogRecord> {
    let messages = [
        r#"{"status":503,"took":"250ms","msg":"cuda oom","nested":{"a":"b"}}"#,
        r#"status=200 took=1.5s path="/gen a" flag"#,
        "loading model sdxl error",
        "",
    ];
    let mut records = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        for level in [Level::Info, Level::Error] {
            records.push(LogRecord {
                id: String::new(),
                position: records.len() as u64 + 1,
                ts: jiff::Timestamp::from_second(1_800_000_000 + index as i64).unwrap(),
                tenant: "acme".into(),
                app: if index % 2 == 0 { "sdxl" } else { "" }.into(),
                version: "v1".into(),
                runner: format!("pod-{index}"),
                boot: "b".into(),
                seq: index as u64,
                source: Source::Run,
                stream: if level == Level::Error {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                level,
                request_id: (index == 1).then(|| "req-1".to_owned()),
                message: (*message).to_owned(),
                fields: tailwater_model::fields_of(serde_json::json!({"gpu": index, "k.v": "x"})),
                invalid_utf8: false,
            });
        }
    }
    records
}

fn run_over(query: &LogQuery, records: &[LogRecord]) {
    let filter = query.store_filter(REGEX_SIZE_LIMIT);
    for record in records {
        if query.run(record).is_some() {
            assert!(
                filter.matches(record),
                "the store's filter drops a record the query matches: {record:?}"
            );
        }
    }
}

pub fn logql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = logql::parse(text, REGEX_SIZE_LIMIT) else {
        return;
    };
    let records = records();
    for query in expr.log_queries() {
        run_over(query, &records);
        let _ = query.request_id();
    }
    if let Expr::Metric(metric) = expr {
        let steps = Steps {
            start_ns: 1_800_000_000_000_000_000,
            end_ns: 1_800_000_010_000_000_000,
            step_ns: 1_000_000_000,
        };
        let mut fetch = |range: &logql::RangeExpr| {
            let groups: Vec<(LabelSet, Vec<Sample>)> = records
                .iter()
                .filter_map(|record| {
                    let output = range.query.run(record)?;
                    let sample = Sample {
                        ts_ns: tailwater_model::time::timestamp_ns(record.ts),
                        bytes: output.line.len() as u64,
                    };
                    Some((output.labels, vec![sample]))
                })
                .collect();
            Ok::<_, ()>(groups)
        };
        let _ = metric::evaluate(&metric, steps, &mut fetch);
    }
}
