//! The Loki query API over real HTTP, replaying the requests Grafana's Loki
//! data source sends (pkg/tsdb/loki/api.go and healthcheck.go, and the
//! frontend's label browser and live tail): "Save & test", Explore's log
//! and metric queries, the volume histogram, the label browser, query
//! hints and live tail over a WebSocket; answers checked in shape (what
//! Grafana's converter reads) and content. Then errors and limits.

mod common;

use base64::Engine;
use common::{call, TOKEN};
use serde_json::{json, Value};
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{FieldsJson, Level, Stream};
use tailwater_server::RunningServer;

/// A query string, as Go's `url.Values.Encode()` writes one.
fn encode(pairs: &[(&str, &str)]) -> String {
    use tailwater_model::wire::percent_encode;
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect();
    pairs.join("&")
}

/// Grafana sends the token as basic auth's password when set up so.
fn basic() -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("grafana:{TOKEN}"));
    format!("Basic {pair}")
}

/// `GET path?pairs` as Grafana sends it (its query strings are
/// `url.Values.Encode()`d: sorted, percent-encoded), with basic auth.
async fn get(server: &RunningServer, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let mut pairs = pairs.to_vec();
    pairs.sort();
    let query = encode(&pairs);
    let response = reqwest::Client::new()
        .get(format!("{}{path}?{query}", server.url()))
        .header("authorization", basic())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// App `sdxl`: runner pod-1 logs 3 info lines and an error, pod-2 a warning
/// with JSON text; `other` app one line.
async fn seed(client: &tailwater_client::Client) -> i64 {
    let base = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30);
    let record = |seq: u64, level: Level, message: &str, request: Option<&str>| IngestRecord {
        seq,
        ts: base + jiff::SignedDuration::from_secs(seq as i64),
        stream: if level >= Level::Error {
            Stream::Stderr
        } else {
            Stream::Stdout
        },
        level,
        request_id: request.map(str::to_owned),
        message: message.to_owned(),
        fields: FieldsJson::from_map(json!({"gpu": {"id": seq}}).as_object().unwrap()),
        invalid_utf8: false,
    };
    let batch = |app: &str, runner: &str, records| IngestBatch {
        app: app.into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: "b".into(),
        source: Default::default(),
        records,
    };
    client
        .ingest(&batch(
            "sdxl",
            "pod-1",
            vec![
                record(1, Level::Info, "loading model", None),
                record(2, Level::Info, "request start", Some("req-1")),
                record(3, Level::Error, "cuda oom at step 3", Some("req-1")),
                record(4, Level::Info, "request end", Some("req-1")),
            ],
        ))
        .await
        .unwrap();
    client
        .ingest(&batch(
            "sdxl",
            "pod-2",
            vec![record(
                5,
                Level::Warn,
                r#"status=503 took=250ms path="/gen a""#,
                None,
            )],
        ))
        .await
        .unwrap();
    client
        .ingest(&batch(
            "other",
            "pod-9",
            vec![record(6, Level::Info, "elsewhere oom", None)],
        ))
        .await
        .unwrap();
    base.as_nanosecond() as i64
}

#[tokio::test]
async fn save_and_test_gets_two() {
    let (_dir, server, _client) = common::server(1000).await;
    // healthcheck.go: an instant query at Unix 4 s, its direction unset.
    let (status, body) = get(
        &server,
        "/loki/api/v1/query",
        &[
            ("query", "vector(1)+vector(1)"),
            ("direction", ""),
            ("time", "4000000000"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "vector");
    // Loki reads a time of 10 digits or fewer as seconds; Grafana checks
    // the one value only.
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(result[0]["metric"], json!({}));
    assert_eq!(result[0]["value"][1], "2");
    let (status, body) = get(&server, "/loki/api/v1/status/buildinfo", &[]).await;
    assert_eq!(status, 200);
    assert!(body["version"].as_str().unwrap().starts_with('3'), "{body}");
}

#[tokio::test]
async fn explore_reads_log_streams_with_labels_and_metadata() {
    let (_dir, server, client) = common::server(1000).await;
    let base = seed(&client).await;
    let (start, end) = ((base - 1).to_string(), now_ns().to_string());
    // api.go: a range query with start, end, limit, direction and step in ms.
    let range = |query: &'static str, direction: &'static str, limit: &'static str| {
        let (start, end) = (start.clone(), end.clone());
        let server = &server;
        async move {
            get(
                server,
                "/loki/api/v1/query_range",
                &[
                    ("query", query),
                    ("direction", direction),
                    ("limit", limit),
                    ("start", &start),
                    ("end", &end),
                    ("step", "2000ms"),
                ],
            )
            .await
        }
    };
    let (status, body) = range(
        r#"{app="sdxl", runner="pod-1"} |= "oom""#,
        "backward",
        "1000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "streams");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(
        result[0]["stream"],
        json!({
            "app": "sdxl", "version": "v1", "runner": "pod-1", "source": "run",
            "stream": "stderr", "level": "error", "detected_level": "error",
            "request_id": "req-1", "gpu_id": "3",
        })
    );
    let values = result[0]["values"].as_array().unwrap();
    let expected_ns = (base + 3_000_000_000).to_string();
    assert_eq!(values, &vec![json!([expected_ns, "cuda oom at step 3"])]);

    // Newest first, cut at the limit; forward, oldest first.
    let lines = |body: &Value| -> Vec<(String, String)> {
        let mut lines: Vec<(String, String)> = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|stream| stream["values"].as_array().unwrap().clone())
            .map(|pair| {
                (
                    pair[0].as_str().unwrap().to_owned(),
                    pair[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        lines.sort();
        lines
    };
    let (_, newest) = range(r#"{app="sdxl"}"#, "backward", "2").await;
    let newest: Vec<String> = lines(&newest).into_iter().map(|(_, line)| line).collect();
    assert_eq!(
        newest,
        ["request end", "status=503 took=250ms path=\"/gen a\""]
    );
    let (_, oldest) = range(r#"{app="sdxl"}"#, "forward", "2").await;
    let oldest: Vec<String> = lines(&oldest).into_iter().map(|(_, line)| line).collect();
    assert_eq!(oldest, ["loading model", "request start"]);

    // Parsers and label filters.
    let (status, body) = range(
        r#"{app="sdxl"} | logfmt | status >= 500 and took > 100ms"#,
        "backward",
        "100",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(result[0]["stream"]["path"], "/gen a");
    assert_eq!(result[0]["stream"]["status"], "503");
    let (_, body) = range(
        r#"{app=~"sd.*"} | request_id="req-1" | line_format "{{.level}}: {{.runner}}""#,
        "forward",
        "100",
    )
    .await;
    let got: Vec<String> = lines(&body).into_iter().map(|(_, line)| line).collect();
    assert_eq!(got, ["info: pod-1", "error: pod-1", "info: pod-1"]);
}

#[tokio::test]
async fn the_volume_histogram_and_metric_queries_answer_matrices() {
    let (_dir, server, client) = common::server(1000).await;
    let base = seed(&client).await;
    // Steps every 10 s from the first record: windows (t-10s, t].
    let start = base.to_string();
    let end = (base + 30_000_000_000).to_string();
    let matrix = |query: &'static str| {
        let (start, end, server) = (start.clone(), end.clone(), &server);
        async move {
            let (status, body) = get(
                server,
                "/loki/api/v1/query_range",
                &[
                    ("query", query),
                    ("start", &start),
                    ("end", &end),
                    ("step", "10000ms"),
                    ("direction", "backward"),
                ],
            )
            .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["resultType"], "matrix", "{body}");
            body["data"]["result"].as_array().unwrap().clone()
        }
    };
    // Grafana's logs volume, with Logs Drilldown's `| drop __error__`.
    let volume = matrix(
        r#"sum by (level, detected_level) (count_over_time({app="sdxl"} | drop __error__[10s]))"#,
    )
    .await;
    let t = |seconds: i64| json!((base + seconds * 1_000_000_000) as f64 / 1e9);
    assert_eq!(
        volume,
        vec![
            json!({"metric": {"detected_level": "error", "level": "error"}, "values": [[t(10), "1"]]}),
            json!({"metric": {"detected_level": "info", "level": "info"}, "values": [[t(10), "3"]]}),
            json!({"metric": {"detected_level": "warn", "level": "warn"}, "values": [[t(10), "1"]]}),
        ]
    );
    let rate = matrix(r#"sum(rate({app="sdxl"} |= "request" [10s]))"#).await;
    assert_eq!(
        rate,
        vec![json!({"metric": {}, "values": [[t(10), "0.2"]]})]
    );
    let by_runner = matrix(r#"count by (runner) (bytes_over_time({app="sdxl"}[10s])) * 2"#).await;
    assert_eq!(by_runner.len(), 2);
    assert_eq!(by_runner[0]["metric"], json!({"runner": "pod-1"}));
    // pod-1's 4 lines have 4 label sets (levels, request ids, fields).
    assert_eq!(by_runner[0]["values"], json!([[t(10), "8"]]));
    // A parser error fails a metric query, as in Loki, until dropped.
    let (status, body) = get(
        &server,
        "/loki/api/v1/query_range",
        &[
            ("query", r#"count_over_time({app="sdxl"} | json [10s])"#),
            ("start", &start),
            ("end", &end),
            ("step", "10s"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("__error__"),
        "{body}"
    );
}

#[tokio::test]
async fn the_label_browser_series_and_stats() {
    let (_dir, server, client) = common::server(1000).await;
    let base = seed(&client).await;
    let (start, end) = (base.to_string(), now_ns().to_string());
    let window = [("start", start.as_str()), ("end", end.as_str())];
    let (status, body) = get(&server, "/loki/api/v1/labels", &window).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!([
            "app",
            "detected_level",
            "level",
            "runner",
            "source",
            "stream",
            "version"
        ])
    );
    let (_, body) = get(&server, "/loki/api/v1/label/app/values", &window).await;
    assert_eq!(body["data"], json!(["other", "sdxl"]));
    // `since` instead of `start`, as Loki takes it.
    let (_, body) = get(&server, "/loki/api/v1/label/app/values", &[("since", "1h")]).await;
    assert_eq!(body["data"], json!(["other", "sdxl"]));
    let (status, _) = get(
        &server,
        "/loki/api/v1/label/app/values",
        &[("since", "soon")],
    )
    .await;
    assert_eq!(status, 400);
    let mut scoped = window.to_vec();
    scoped.push(("query", r#"{app="sdxl"}"#));
    let (_, body) = get(&server, "/loki/api/v1/label/runner/values", &scoped).await;
    assert_eq!(body["data"], json!(["pod-1", "pod-2"]));
    let (_, body) = get(&server, "/loki/api/v1/label/nope/values", &window).await;
    assert_eq!(body["data"], json!([]));

    let mut series = window.to_vec();
    series.push(("match[]", r#"{app="sdxl", level="error"}"#));
    let (status, body) = get(&server, "/loki/api/v1/series", &series).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!([{"app": "sdxl", "detected_level": "error", "level": "error", "runner": "pod-1",
                "source": "run", "stream": "stderr", "version": "v1"}])
    );
    let (status, body) = get(&server, "/loki/api/v1/index/stats", &scoped).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entries"], 5);
    // pod-1's info and error lines, pod-2's warning.
    assert_eq!(body["streams"], 3);
    // What Grafana may ask and tailwater does not answer: 404, and Grafana
    // turns those features off.
    for path in [
        "/loki/api/v1/detected_fields",
        "/loki/api/v1/patterns",
        "/loki/api/v1/index/volume",
    ] {
        let (status, _) = get(&server, path, &scoped).await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn errors_are_lokis_shape_and_limits_are_named_and_counted() {
    let (_dir, server, client) = common::server_with(|config| config.logql_max_records = 3).await;
    let base = seed(&client).await;
    let (start, end) = (base.to_string(), now_ns().to_string());
    let query_range = |query: &'static str, limit: &'static str| {
        let (start, end, server) = (start.clone(), end.clone(), &server);
        async move {
            get(
                server,
                "/loki/api/v1/query_range",
                &[
                    ("query", query),
                    ("limit", limit),
                    ("start", &start),
                    ("end", &end),
                ],
            )
            .await
        }
    };
    let (status, body) = query_range(r#"{app="sdxl""#, "10").await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("parse error at"), "{message}");
    // Past the records a query may read: refused, naming the setting.
    let (status, body) = query_range(r#"{app="sdxl"}"#, "10").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--logql-max-records"),
        "{body}"
    );
    // Fewer lines than that are answered.
    let (status, _) = query_range(r#"{app="sdxl"}"#, "2").await;
    assert_eq!(status, 200);
    let (status, body) = query_range(r#"{app="sdxl"}"#, "100000").await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_entries_limit"),
        "{body}"
    );
    let (status, body) = get(
        &server,
        "/loki/api/v1/query",
        &[("query", r#"{app="sdxl"}"#)],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("range query"),
        "{body}"
    );
    let (status, body) = get(
        &server,
        "/loki/api/v1/query_range",
        &[
            ("query", r#"rate({app="sdxl"}[1m])"#),
            ("start", "0"),
            ("end", &end),
            ("step", "1s"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("maximum resolution"),
        "{body}"
    );
    let metrics = common::metrics_text(&server).await;
    for reason in ["bad_query", "max_records", "max_entries", "max_points"] {
        assert!(
            metrics.contains(&format!(
                "tailwater_loki_queries_refused_total{{reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
    // Without a token: 401 in the same shape.
    let response = reqwest::get(format!("{}/loki/api/v1/labels", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("token"),
        "{body}"
    );
}

#[tokio::test]
async fn live_tail_sends_history_then_new_lines_over_a_websocket() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let (_dir, server, client) = common::server(1000).await;
    let base = seed(&client).await;
    let query = encode(&[
        ("query", r#"{app="sdxl"} |= "request""#),
        ("delay_for", "0"),
        ("limit", "1"),
        ("start", &base.to_string()),
    ]);
    let mut request = format!("ws://{}/loki/api/v1/tail?{query}", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", basic().parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut next_frame = async || loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                return serde_json::from_str::<Value>(&text).unwrap()
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("no frame: {other:?}"),
        }
    };
    // History: the newest matching line (limit 1).
    let history = next_frame().await;
    assert_eq!(
        history["streams"][0]["values"][0][1], "request end",
        "{history}"
    );
    // Then what is stored from now on, if it matches.
    let mut batch = common::batch("sdxl", "pod-3", 0..2);
    batch.records[0].message = "request begins".into();
    batch.records[1].message = "unrelated".into();
    client.ingest(&batch).await.unwrap();
    let live = next_frame().await;
    assert_eq!(
        live["streams"][0]["values"][0][1], "request begins",
        "{live}"
    );
    assert_eq!(live["streams"][0]["stream"]["runner"], "pod-3");
    socket.close(None).await.unwrap();

    // Not an upgrade: a clear 400.
    let (status, body) = get(
        &server,
        "/loki/api/v1/tail",
        &[("query", r#"{app="sdxl"}"#)],
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("websocket"),
        "{body}"
    );
}

#[tokio::test]
async fn a_caller_reads_its_request_only_and_never_labels() {
    let (_dir, server, client) = common::server_with(|config| {
        config.request_owner_grace = std::time::Duration::from_millis(20)
    })
    .await;
    let base = seed(&client).await;
    let caller = client
        .create_token(&tailwater_model::tenancy::NewToken {
            name: Some("grafana-caller".into()),
            scope: tailwater_model::tenancy::Scope::Caller,
            tenant: None,
            app: None,
            expires_in: None,
        })
        .await
        .unwrap()
        .token;
    let (start, end) = (base.to_string(), (now_ns() + 60_000_000_000).to_string());
    let read = |query: &'static str| {
        let (start, end, server, caller) = (start.clone(), end.clone(), &server, caller.clone());
        async move {
            let path = format!(
                "/loki/api/v1/query_range?{}",
                encode(&[
                    ("query", query),
                    ("start", &start),
                    ("end", &end),
                    ("direction", "forward")
                ])
            );
            call(server, "GET", &path, &caller, None).await
        }
    };
    let (status, body) = read(r#"{app="sdxl"}"#).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("request_id"),
        "{body}"
    );
    // Its request's lines, once the request's owner settled (no recorded
    // caller: after the grace).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let (status, body) = read(r#"{app=~".+"} | request_id="req-1""#).await;
        assert_eq!(status, 200, "{body}");
        let lines: Vec<(String, String)> = body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|stream| {
                let request = stream["stream"]["request_id"].as_str().unwrap().to_owned();
                stream["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(move |pair| (request.clone(), pair[1].as_str().unwrap().to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if lines.len() == 3 || std::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines.iter().all(|(request, _)| request == "req-1"),
        "{lines:?}"
    );
    let (status, _) = call(&server, "GET", "/loki/api/v1/labels", &caller, None).await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &server,
        "GET",
        "/loki/api/v1/series?match%5B%5D=%7Bapp%3D%22sdxl%22%7D",
        &caller,
        None,
    )
    .await;
    assert_eq!(status, 403);
}
