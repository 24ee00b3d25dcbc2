//! Ingest limits, redaction, `/metrics` and `/readyz` over real HTTP on
//! loopback: each limit's answer, what is stored, its count in the
//! Prometheus exposition (parsed), and its `system` record in the runner's
//! own logs.
//!
//! This file has the limits on lines, rates, labels and fields, and what
//! all the files share; `redaction.rs` the redaction, `metrics.rs`
//! `/metrics` and `/readyz`.

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::{json, Value};
use tailwater_client::Client;
use tailwater_model::tenancy::{AppPatch, NewApp};
use tailwater_model::wire::LogsParams;
use tailwater_model::LogRecord;
use tailwater_server::limits::Rate;
use tailwater_server::{start, RunningServer, ServerConfig};

#[path = "../common/mod.rs"]
mod common;
mod metrics;
mod redaction;

use common::{scrape, server_in};

const ADMIN: &str = "tw_limits_admin";

fn record(seq: u64, message: &str) -> Value {
    json!({"seq": seq, "ts": Timestamp::now().to_string(), "stream": "stdout", "message": message})
}

fn batch(app: &str, runner: &str, records: Vec<Value>) -> Value {
    json!({"app": app, "version": "v1", "runner": runner, "boot": "b1", "records": records})
}

/// POSTs a raw ingest body: status, `Retry-After`, and the JSON answer.
async fn post(server: &RunningServer, body: &Value) -> (u16, Option<u64>, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/ingest", server.url()))
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

async fn runner_logs(client: &Client, runner: &str) -> Vec<LogRecord> {
    let params = LogsParams {
        runner: Some(runner.into()),
        direction: Some("forward".into()),
        limit: Some("10000".into()),
        ..LogsParams::default()
    };
    client.logs(&params).await.unwrap().records
}

fn events<'a>(records: &'a [LogRecord], event: &str) -> Vec<&'a LogRecord> {
    records
        .iter()
        .filter(|record| record.fields.get("event") == Some(&json!(event)))
        .collect()
}

fn sample(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", samples.keys()))
}

#[tokio::test]
async fn long_lines_are_cut_marked_counted_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |_| {}).await;
    let app = NewApp {
        name: "cut".into(),
        max_line_bytes: Some(100),
        ..NewApp::default()
    };
    client.create_app(None, &app).await.unwrap();
    let long = "x".repeat(250);
    let body = batch(
        "cut",
        "r1",
        vec![record(0, "short"), record(1, &long), record(2, &long)],
    );
    let (status, _, answer) = post(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    // Sent again (a lost answer): nothing more is stored, the report neither.
    let (status, _, answer) = post(&server, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 0);

    let logs = runner_logs(&client, "r1").await;
    let cut: Vec<_> = logs.iter().filter(|r| r.message.starts_with('x')).collect();
    assert_eq!(cut.len(), 2);
    for record in cut {
        assert_eq!(record.message, "x".repeat(100));
        assert_eq!(record.fields["limited"]["message_bytes"], 250);
    }
    assert_eq!(logs[0].message, "short");
    let reports = events(&logs, "ingest_cut");
    assert_eq!(reports.len(), 1, "{logs:#?}");
    assert_eq!(reports[0].stream, tailwater_model::Stream::System);
    assert_eq!(reports[0].fields["lines"]["line_too_long"], 2);
    assert!(
        reports[0].message.contains("2 cut to 100 bytes"),
        "{}",
        reports[0].message
    );
    assert_eq!(reports[0].boot, "b1");

    let samples = scrape(&server, Some(ADMIN)).await;
    assert_eq!(
        sample(
            &samples,
            r#"tailwater_ingest_cut_lines_total{app="cut",reason="line_too_long",tenant="default"}"#
        ),
        2.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn app_rate_limits_answer_429_with_retry_after_and_report_in_the_runner_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |_| {}).await;
    let app = NewApp {
        name: "busy".into(),
        rate_limit_lines_per_sec: Some(100),
        ..NewApp::default()
    };
    client.create_app(None, &app).await.unwrap();
    // 1000 lines at 100 lines/s: taken (a second's burst, then debt), and
    // the next batch waits until the debt is paid: 9 s, long enough for
    // the next request to come within it however loaded the machine.
    let first: Vec<Value> = (0..1000).map(|seq| record(seq, "line")).collect();
    let (status, _, answer) = post(&server, &batch("busy", "r1", first)).await;
    assert_eq!(status, 200, "{answer}");
    let next = batch("busy", "r1", vec![record(1000, "next")]);
    let (status, retry_after, answer) = post(&server, &next).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"]["code"], "rate_limited");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("100 lines/s for the app"), "{message}");
    let retry_after = retry_after.expect("a Retry-After header");
    assert!((1..=9).contains(&retry_after), "{retry_after}");
    assert!(runner_logs(&client, "r1")
        .await
        .iter()
        .all(|r| r.message != "next"));

    let samples = scrape(&server, Some(ADMIN)).await;
    let labels = r#"{app="busy",reason="rate_limit_app_lines",tenant="default"}"#;
    assert_eq!(
        sample(
            &samples,
            &format!("tailwater_ingest_refused_batches_total{labels}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            &format!("tailwater_ingest_refused_lines_total{labels}")
        ),
        1.0
    );

    // Once the limit is lifted the same batch gets in, with the report.
    let lift = AppPatch {
        rate_limit_lines_per_sec: Some(None),
        ..AppPatch::default()
    };
    client.update_app(None, "busy", &lift).await.unwrap();
    let (status, _, answer) = post(&server, &next).await;
    assert_eq!(status, 200, "{answer}");
    let logs = runner_logs(&client, "r1").await;
    assert!(logs.iter().any(|r| r.message == "next"));
    let reports = events(&logs, "rate_limited");
    assert_eq!(reports.len(), 1, "{logs:#?}");
    assert_eq!(reports[0].fields["refused_batches"], 1);
    assert_eq!(reports[0].fields["refused_lines"], 1);
    assert_eq!(reports[0].fields["reason"], "rate_limit_app_lines");
    assert!(reports[0].message.contains("100 lines/s for the app"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn runner_rate_limits_hold_back_one_runner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _client) = server_in(dir.path(), ADMIN, |config| {
        config.limits.runner_rate = Rate {
            lines_per_sec: None,
            bytes_per_sec: Some(1000),
        };
    })
    .await;
    // 10 s of debt: the next batch of r1 comes well within it.
    let big = "y".repeat(11_000);
    let (status, _, _) = post(&server, &batch("shared", "r1", vec![record(0, &big)])).await;
    assert_eq!(status, 200);
    let (status, retry_after, answer) =
        post(&server, &batch("shared", "r1", vec![record(1, "more")])).await;
    assert_eq!(status, 429, "{answer}");
    assert!(retry_after.is_some());
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--runner-rate-bytes"));
    let (status, _, answer) = post(&server, &batch("shared", "r2", vec![record(0, &big)])).await;
    assert_eq!(status, 200, "another runner is not held back: {answer}");
    let samples = scrape(&server, Some(ADMIN)).await;
    assert_eq!(
        sample(
            &samples,
            r#"tailwater_ingest_refused_batches_total{app="shared",reason="rate_limit_runner_bytes",tenant="default"}"#
        ),
        1.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn fields_labels_sequence_numbers_and_batch_size_have_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |config| {
        config.limits.max_fields = 3;
        config.max_batch_bytes = 4096;
    })
    .await;
    let mut wide = record(0, "wide");
    wide["fields"] = json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5});
    wide["request_id"] = json!("r".repeat(300));
    let (status, _, answer) = post(&server, &batch("labels", "r1", vec![wide])).await;
    assert_eq!(status, 200, "{answer}");
    let logs = runner_logs(&client, "r1").await;
    let stored = logs.iter().find(|r| r.message == "wide").unwrap();
    assert_eq!(
        stored.fields.keys().collect::<Vec<_>>(),
        ["a", "b", "c", "limited"]
    );
    assert_eq!(stored.fields["limited"]["fields_dropped"], 2);
    assert_eq!(stored.fields["limited"]["request_id"], "r".repeat(200));
    assert_eq!(stored.request_id, None);
    let report = events(&logs, "ingest_cut")[0];
    assert_eq!(report.fields["lines"]["too_many_fields"], 1);
    assert_eq!(report.fields["lines"]["invalid_request_id"], 1);

    // A label that breaks the rules refuses the batch: nothing stored.
    let mut bad = batch("labels", "r1", vec![record(1, "never stored")]);
    bad["version"] = json!("v\u{1b}[31m");
    let (status, _, answer) = post(&server, &bad).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"]["code"], "invalid_label");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("version") && message.contains("--max-label-bytes"),
        "{message}"
    );
    let (status, _, _) = post(&server, &batch("bad\napp", "r1", vec![record(1, "x")])).await;
    assert_eq!(status, 400);
    // The server's own notices' boot is not a sender's to take (the
    // runner table would not see the runner's life in such batches).
    let mut dressed = batch("labels", "r1", vec![record(1, "never stored")]);
    dressed["boot"] = json!("b1+server");
    let (status, _, answer) = post(&server, &dressed).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_label")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another --boot"),
        "{answer}"
    );
    let reserved = batch("labels", "r1", vec![record(1 << 62, "forged")]);
    let (status, _, answer) = post(&server, &reserved).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_seq"))
    );
    let huge = batch("labels", "r1", vec![record(1, &"z".repeat(5000))]);
    let (status, _, answer) = post(&server, &huge).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("batch_too_large"))
    );
    assert!(runner_logs(&client, "r1")
        .await
        .iter()
        .all(|r| r.seq != 1 && r.message != "never stored"));

    let samples = scrape(&server, Some(ADMIN)).await;
    for (reason, batches) in [("invalid_label", 2.0), ("invalid_seq", 1.0)] {
        let key = format!(
            r#"tailwater_ingest_refused_batches_total{{app="labels",reason="{reason}",tenant="default"}}"#
        );
        assert_eq!(sample(&samples, &key), batches, "{key}");
    }
    assert_eq!(
        sample(
            &samples,
            r#"tailwater_ingest_refused_batches_total{app="",reason="batch_too_large",tenant="default"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"tailwater_ingest_refused_batches_total{app="",reason="invalid_label",tenant="default"}"#
        ),
        1.0
    );
    for reason in ["too_many_fields", "invalid_request_id"] {
        let key = format!(
            r#"tailwater_ingest_cut_lines_total{{app="labels",reason="{reason}",tenant="default"}}"#
        );
        assert_eq!(sample(&samples, &key), 1.0, "{key}");
    }
    server.shutdown().await.unwrap();
}

/// Fields go from the wire to the store as JSON text: sent with whitespace
/// and line breaks, they are stored compact (a block's fields column holds
/// one object a line) and read back whole; what is no object, or would not
/// parse as one, refuses the batch with the parser's words.
#[tokio::test]
async fn fields_are_stored_compact_and_bad_ones_refuse_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |config| {
        // Each append flushes before it answers: the records are read
        // back from a part's blocks.
        config.store.background = false;
        config.store.memtable_max_bytes = 1;
    })
    .await;
    let body = |records: &[(u64, &str)]| {
        let records: Vec<String> = records
            .iter()
            .map(|(seq, fields)| {
                format!(
                    r#"{{"seq":{seq},"ts":"{}","stream":"stdout","message":"m{seq}","fields":{fields}}}"#,
                    Timestamp::now()
                )
            })
            .collect();
        format!(
            r#"{{"app":"raw","runner":"r1","boot":"b1","records":[{}]}}"#,
            records.join(",")
        )
    };
    let send = |body: String| {
        let url = format!("{}/v1/ingest", server.url());
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    for (fields, words) in [
        (
            r#""gpu=3""#,
            r#"invalid type: string "gpu=3", expected a map"#,
        ),
        ("[1, 2]", "invalid type: sequence, expected a map"),
        (r#"{"s":"\ud800"}"#, "unexpected end of hex escape"),
        (r#"{"n":1e400}"#, "number out of range"),
    ] {
        let (status, answer) = send(body(&[(0, "{}"), (1, fields)])).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid ingest batch: ") && message.contains(words),
            "{message}"
        );
    }
    assert!(runner_logs(&client, "r1").await.is_empty());

    let pretty = "{\n  \"gpu\" : { \"id\" : 3 },\r\n\t\"note\" : \"a  b\\nc\"\n}";
    let (status, answer) = send(body(&[(0, pretty), (1, r#"{"after":true}"#), (2, "{ }")])).await;
    assert_eq!(status, 200, "{answer}");
    let logs = runner_logs(&client, "r1").await;
    let fields: Vec<Value> = logs
        .iter()
        .map(|r| Value::Object(r.fields.clone()))
        .collect();
    assert_eq!(
        fields,
        [
            json!({"gpu": {"id": 3}, "note": "a  b\nc"}),
            json!({"after": true}),
            json!({}),
        ]
    );
    server.shutdown().await.unwrap();
}
