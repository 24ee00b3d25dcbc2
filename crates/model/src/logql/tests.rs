use super::metric::{evaluate, EvalError, Sample, Series, Steps, Value};
use super::pipeline::LabelSet;
use super::*;
use crate::record::{Level, LogRecord, Source, Stream};

fn parsed(text: &str) -> Expr {
    parse(text, crate::DEFAULT_REGEX_SIZE_LIMIT).unwrap_or_else(|error| panic!("{text}: {error}"))
}

fn log(text: &str) -> LogQuery {
    match parsed(text) {
        Expr::Log(query) => query,
        other => panic!("{other:?}"),
    }
}

fn record(level: Level, message: &str, fields: serde_json::Value) -> LogRecord {
    LogRecord {
        id: String::new(),
        position: 1,
        ts: jiff::Timestamp::UNIX_EPOCH,
        tenant: "t".into(),
        app: "sdxl".into(),
        version: "v1".into(),
        runner: "pod-1".into(),
        boot: "b".into(),
        seq: 1,
        source: Source::Run,
        stream: Stream::Stdout,
        level,
        request_id: Some("req-1".into()),
        message: message.into(),
        fields: crate::fields_of(fields),
        invalid_utf8: false,
    }
}

fn labels(pairs: &[(&str, &str)]) -> LabelSet {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[test]
fn a_record_has_stream_labels_then_metadata() {
    let record = record(
        Level::Error,
        "cuda oom",
        serde_json::json!({"gpu": {"id": 0}, "tags": [1]}),
    );
    let out = log(r#"{app="sdxl"}"#).run(&record).unwrap();
    assert_eq!(
        out.labels,
        labels(&[
            ("app", "sdxl"),
            ("detected_level", "error"),
            ("gpu_id", "0"),
            ("level", "error"),
            ("request_id", "req-1"),
            ("runner", "pod-1"),
            ("source", "run"),
            ("stream", "stdout"),
            ("version", "v1"),
        ])
    );
    assert_eq!(out.line, "cuda oom");
    assert!(log(r#"{app="other"}"#).run(&record).is_none());
    assert!(log(r#"{app=~"sd.*", level!="info"}"#)
        .run(&record)
        .is_some());
    // Anchored: a part of the value is not a match.
    assert!(log(r#"{app=~"sd"}"#).run(&record).is_none());
}

#[test]
fn line_filters_chain_and_alternatives_are_any_of() {
    let record = record(Level::Info, "loading model sdxl", serde_json::json!({}));
    let passes = |query: &str| log(query).run(&record).is_some();
    assert!(passes(r#"{app="sdxl"} |= "model" != "error""#));
    assert!(!passes(r#"{app="sdxl"} |= "model" |= "error""#));
    assert!(passes(r#"{app="sdxl"} |= "error" or "loading""#));
    assert!(passes(r#"{app="sdxl"} |~ "mod[a-z]+ sd" !~ "^x""#));
    assert!(!passes(r#"{app="sdxl"} != "error" or "model""#));
    // Case matters, as in Loki.
    assert!(!passes(r#"{app="sdxl"} |= "MODEL""#));
}

#[test]
fn json_logfmt_and_label_filters() {
    let json = record(
        Level::Info,
        r#"{"status":503,"took":"250ms","app":"x"}"#,
        serde_json::json!({}),
    );
    let out = log(r#"{app="sdxl"} | json | status >= 500 and took > 100ms"#)
        .run(&json)
        .unwrap();
    assert_eq!(out.labels["status"], "503");
    // A name the record already has is extracted beside it.
    assert_eq!(out.labels["app_extracted"], "x");
    assert_eq!(out.labels["app"], "sdxl");
    assert!(log(r#"{app="sdxl"} | json | status < 500"#)
        .run(&json)
        .is_none());

    let logfmt = record(
        Level::Info,
        r#"method=GET path="/a b" size=2KB"#,
        serde_json::json!({}),
    );
    let out = log(r#"{app="sdxl"} | logfmt | size > 1KB, method="GET""#)
        .run(&logfmt)
        .unwrap();
    assert_eq!(out.labels["path"], "/a b");

    // A line that is not JSON is marked, and `__error__=""` drops it.
    let plain = record(Level::Info, "plain", serde_json::json!({}));
    let out = log(r#"{app="sdxl"} | json"#).run(&plain).unwrap();
    assert_eq!(out.labels["__error__"], "JSONParserErr");
    assert!(log(r#"{app="sdxl"} | json | __error__="""#)
        .run(&plain)
        .is_none());
    let out = log(r#"{app="sdxl"} | json | drop __error__, __error_details__"#)
        .run(&plain)
        .unwrap();
    assert!(!out.labels.contains_key("__error__"));
}

#[test]
fn drop_keep_and_line_format() {
    let record = record(Level::Warn, "vram 91%", serde_json::json!({"gpu": "a100"}));
    let out = log(r#"{app="sdxl"} | keep app, gpu | line_format "{{.gpu}}: {{ .app }}""#)
        .run(&record)
        .unwrap();
    assert_eq!(out.labels, labels(&[("app", "sdxl"), ("gpu", "a100")]));
    assert_eq!(out.line, "a100: sdxl");
    let out = log(r#"{app="sdxl"} | drop gpu="h100", request_id"#)
        .run(&record)
        .unwrap();
    assert_eq!(out.labels["gpu"], "a100");
    assert!(!out.labels.contains_key("request_id"));
}

#[test]
fn the_store_filter_narrows_by_what_it_keeps() {
    let query =
        log(r#"{app="sdxl", stream="stderr", level="error", runner=~"pod-.*"} |= "oom" | json"#);
    let filter = query.store_filter(crate::DEFAULT_REGEX_SIZE_LIMIT);
    assert_eq!(filter.app, Some(crate::Matcher::Eq("sdxl".into())));
    assert_eq!(filter.stream, Some(Stream::Stderr));
    assert_eq!(filter.min_level, Some(Level::Error));
    assert!(filter.runner.is_some());
    assert_eq!(filter.contains.as_ref().map(|s| s.as_str()), Some("oom"));
}

#[test]
fn a_callers_request_id_is_found_only_where_it_binds() {
    let id = |text: &str| log(text).request_id().map(str::to_owned);
    assert_eq!(id(r#"{app="a"} | request_id="r1""#), Some("r1".into()));
    assert_eq!(
        id(r#"{app="a"} |= "x" | level="error", request_id="r1""#),
        Some("r1".into())
    );
    assert_eq!(id(r#"{app="a"} | request_id="r1" or level="error""#), None);
    assert_eq!(id(r#"{app="a"} | json | request_id="r1""#), None);
    assert_eq!(id(r#"{app="a"} | request_id=~"r1""#), None);
}

#[test]
fn errors_say_where_and_what() {
    let error = |text: &str| parse(text, crate::DEFAULT_REGEX_SIZE_LIMIT).unwrap_err();
    assert!(error(r#"{app="a"} | topk"#).contains("unknown stage 'topk'"));
    assert!(error(r#"topk(1, rate({app="a"}[1m]))"#).contains("not supported"));
    assert!(error("{}").contains("at least one"));
    let deep = format!("{}vector(1){}", "(".repeat(100), ")".repeat(100));
    assert!(error(&deep).contains("deeper"));
    assert!(error(&"x".repeat(MAX_QUERY_BYTES + 1)).contains("bytes"));
    assert!(error(r"{app=~`\w{500}{500}`}").contains("invalid regex"));
}

#[test]
fn save_and_test_evaluates_to_two() {
    let Expr::Metric(expr) = parsed("vector(1)+vector(1)") else {
        panic!()
    };
    let steps = Steps {
        start_ns: 10,
        end_ns: 10,
        step_ns: 1,
    };
    let value = evaluate::<()>(&expr, steps, &mut |_| unreachable!()).unwrap();
    assert_eq!(
        value,
        Value::Vector(vec![Series {
            labels: LabelSet::new(),
            points: vec![(0, 2.0)]
        }])
    );
}

#[test]
fn range_functions_slide_over_their_window_and_aggregate() {
    let Expr::Metric(expr) = parsed(r#"sum by (level) (count_over_time({app="a"}[10s]))"#) else {
        panic!()
    };
    let s = 1_000_000_000i64;
    let sample = |ts: i64| Sample {
        ts_ns: ts * s,
        bytes: 5,
    };
    let fetched = vec![
        (
            labels(&[("app", "a"), ("level", "info"), ("runner", "1")]),
            vec![sample(1), sample(10), sample(11)],
        ),
        (
            labels(&[("app", "a"), ("level", "info"), ("runner", "2")]),
            vec![sample(15)],
        ),
        (
            labels(&[("app", "a"), ("level", "error"), ("runner", "1")]),
            vec![sample(25)],
        ),
    ];
    let steps = Steps {
        start_ns: 10 * s,
        end_ns: 30 * s,
        step_ns: 10 * s,
    };
    let value = evaluate::<()>(&expr, steps, &mut |range| {
        assert_eq!(steps.window(range), (0, 30 * s));
        Ok(fetched.clone())
    })
    .unwrap();
    // (0,10]: 1, 10 → 2; (10,20]: 11, 15 → 2; (20,30]: error 25.
    assert_eq!(
        value,
        Value::Vector(vec![
            Series {
                labels: labels(&[("level", "error")]),
                points: vec![(2, 1.0)]
            },
            Series {
                labels: labels(&[("level", "info")]),
                points: vec![(0, 2.0), (1, 2.0)]
            },
        ])
    );
    let Expr::Metric(rate) = parsed(r#"bytes_rate({app="a"}[10s])"#) else {
        panic!()
    };
    let value = evaluate::<()>(&rate, steps, &mut |_| Ok(fetched[..1].to_vec())).unwrap();
    let Value::Vector(series) = value else {
        panic!()
    };
    assert_eq!(series[0].points, vec![(0, 1.0), (1, 0.5)]);
    // A line a parser could not read fails a metric query, as in Loki.
    let broken = vec![(labels(&[("__error__", "JSONParserErr")]), vec![sample(1)])];
    let Expr::Metric(count) = parsed(r#"count_over_time({app="a"} | json [10s])"#) else {
        panic!()
    };
    assert!(matches!(
        evaluate::<()>(&count, steps, &mut |_| Ok(broken.clone())),
        Err(EvalError::Query(_))
    ));
}
