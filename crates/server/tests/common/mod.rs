//! What the server's integration tests share: a server on a free loopback
//! port with its own data directory, batches of numbered records, a
//! plain HTTP call, and the `/metrics` exposition read back.

// Each test file uses some of these.
#![allow(dead_code)]

pub mod tmpfs;

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::Value;
use tailwater_client::Client;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{FieldsJson, SealKey, Stream, TenantSeal};
use tailwater_server::{start, RunningServer, ServerConfig};

pub const TOKEN: &str = "tw_server_test";

/// A server whose live tail clients may fall `tail_buffer` records behind,
/// and a client with its admin token.
pub async fn server(tail_buffer: u64) -> (tempfile::TempDir, RunningServer, Client) {
    server_with(|config| config.tail_buffer = tail_buffer).await
}

/// A server configured by `configure`, and a client with its admin token.
pub async fn server_with(
    configure: impl FnOnce(&mut ServerConfig),
) -> (tempfile::TempDir, RunningServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), TOKEN, configure).await;
    (dir, server, client)
}

/// A server on a free loopback port with its data in `dir` and admin token
/// `token`, configured by `configure`, and a client with that token.
pub async fn server_in(
    dir: &std::path::Path,
    token: &str,
    configure: impl FnOnce(&mut ServerConfig),
) -> (RunningServer, Client) {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(token.into());
    configure(&mut config);
    let server = start(config).await.unwrap();
    let client = Client::new(&server.url(), token).unwrap();
    (server, client)
}

/// How the server with its data in `dir` seals `tenant`'s positions, read
/// from its key file: so a test can check the order ids stand for, which
/// clients cannot.
pub fn seal(dir: &std::path::Path, tenant: &str) -> TenantSeal {
    let key = std::fs::read(dir.join("auth/seal.key")).unwrap();
    SealKey::new(key.try_into().unwrap()).tenant(tenant)
}

/// Records `seqs` of `runner` (app `app`), stamped now: message
/// `"{runner} {seq}"`, field `step` = seq, request `req-{seq}` on every
/// tenth.
pub fn batch(app: &str, runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    IngestBatch {
        app: app.into(),
        version: String::new(),
        runner: runner.into(),
        boot: "b".into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                ts: Timestamp::now(),
                stream: Stream::Stdout,
                level: Default::default(),
                request_id: (seq % 10 == 0).then(|| format!("req-{seq}")),
                message: format!("{runner} {seq}"),
                fields: FieldsJson::from_map(
                    serde_json::json!({ "step": seq }).as_object().unwrap(),
                ),
                invalid_utf8: false,
            })
            .collect(),
    }
}

/// `method path` with `token` (and a JSON body): the status and the answer,
/// as JSON, or as a JSON string when it is not JSON.
pub async fn call(
    server: &RunningServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            format!("http://{}{path}", server.addr),
        )
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The `/metrics` exposition as text, read with `token` (none: the server
/// runs with `--public-metrics`).
pub async fn metrics_text_with(server: &RunningServer, token: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(format!("{}/metrics", server.url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    response.text().await.unwrap()
}

/// The `/metrics` exposition as text, read with [`TOKEN`].
pub async fn metrics_text(server: &RunningServer) -> String {
    metrics_text_with(server, Some(TOKEN)).await
}

/// The exposition read with `token`, parsed: each sample's value by name and
/// labels (`name{a="x",b="y"}`, labels sorted), a histogram's by its count.
pub async fn scrape(server: &RunningServer, token: Option<&str>) -> HashMap<String, f64> {
    let text = metrics_text_with(server, token).await;
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut samples = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(name, value)| format!("{name}=\"{value}\""))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.last().map_or(0.0, |bucket| bucket.count)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        samples.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
    }
    samples
}

/// The sum of the samples of counter or gauge `name` (as exposed, with
/// `_total` for a counter), read with [`TOKEN`]; a metric not exposed at all
/// is a failure, not a zero.
pub async fn metric(server: &RunningServer, name: &str) -> f64 {
    let text = metrics_text(server).await;
    let lines = text.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let values: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => value,
            _ => panic!("{name} is a counter or a gauge"),
        })
        .collect();
    assert!(!values.is_empty(), "no {name} in\n{text}");
    values.iter().sum()
}

/// Every record of `app` (up to 1000), oldest first, as the read API
/// returns them, read with [`TOKEN`].
pub async fn stored(server: &RunningServer, app: &str) -> Vec<Value> {
    let path = format!("/v1/logs?app={app}&direction=forward&limit=1000");
    let (status, page) = call(server, "GET", &path, TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().unwrap().clone()
}

/// A new ingest token of `app` in tenant `default`, its secret.
pub async fn ingest_token(server: &RunningServer, app: &str) -> String {
    let body = serde_json::json!({"scope": "ingest", "tenant": "default", "app": app});
    let (status, created) = call(server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}
