//! The query language over real HTTP on loopback: label regexes and field
//! conditions in history and live tail, and bad input answered with a JSON
//! 400 that says what to do.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use tailwater_client::{Client, ClientError};
use tailwater_model::wire::{ErrorBody, IngestBatch, IngestRecord, LogsParams};
use tailwater_model::{FieldsJson, Stream};
use tailwater_server::{start, RunningServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "tw_query_test";

fn batch(runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    IngestBatch {
        app: "sdxl".into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: "b".into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                ts: Timestamp::now(),
                stream: Stream::Stdout,
                level: Default::default(),
                request_id: None,
                message: format!("{runner} step {seq}"),
                fields: FieldsJson::from_map(
                    serde_json::json!({"step": seq, "phase": if seq % 2 == 0 { "warmup" } else { "serve" }})
                        .as_object()
                        .unwrap(),
                ),
                invalid_utf8: false,
            })
            .collect(),
    }
}

async fn server() -> (tempfile::TempDir, RunningServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    let server = start(config).await.unwrap();
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    (dir, server, client)
}

/// A raw `GET` with `path_and_query` sent as written: the status and body.
async fn raw_get(server: &RunningServer, path_and_query: &str) -> (u16, String) {
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn messages(records: &[tailwater_model::LogRecord]) -> Vec<&str> {
    records.iter().map(|r| r.message.as_str()).collect()
}

#[tokio::test]
async fn runner_regexes_and_fields_filter_history_and_tail() {
    let (_dir, server, client) = server().await;
    for runner in ["gpu-a100-1", "gpu-a100-2", "cpu-1"] {
        client.ingest(&batch(runner, 0..4)).await.unwrap();
    }

    let page = client
        .logs(&LogsParams {
            runner_re: Some("gpu-a100-.*".into()),
            fields: BTreeMap::from([("phase".to_owned(), "serve".to_owned())]),
            direction: Some("forward".into()),
            ..LogsParams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        messages(&page.records),
        [
            "gpu-a100-1 step 1",
            "gpu-a100-1 step 3",
            "gpu-a100-2 step 1",
            "gpu-a100-2 step 3"
        ]
    );

    // The same scheme by hand: a number field, a not-regex, a substring.
    let (status, body) = raw_get(
        &server,
        "/v1/logs?runner_not_re=gpu-.*&field.step=2&contains=STEP%202",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: tailwater_model::wire::LogsPage = serde_json::from_str(&body).unwrap();
    assert_eq!(messages(&page.records), ["cpu-1 step 2"]);

    // Live tail takes the same conditions.
    let params = LogsParams {
        runner_re: Some("gpu-a100-[0-9]+".into()),
        regex: Some(r"step [13]$".into()),
        ..LogsParams::default()
    };
    let mut live = Box::pin(
        client
            .tail(&params, Some(tailwater_model::wire::AFTER_START))
            .await
            .unwrap(),
    );
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let record = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .expect("a record arrives")
            .expect("the stream goes on")
            .expect("a valid record");
        seen.push(record.message);
    }
    assert_eq!(
        seen,
        [
            "gpu-a100-1 step 1",
            "gpu-a100-1 step 3",
            "gpu-a100-2 step 1",
            "gpu-a100-2 step 3"
        ]
    );
}

#[tokio::test]
async fn bad_query_language_is_a_json_400_that_says_what_to_do() {
    let (_dir, server, client) = server().await;

    let error = client
        .logs(&LogsParams {
            runner_re: Some("gpu-(".into()),
            ..LogsParams::default()
        })
        .await
        .unwrap_err();
    match error {
        ClientError::Api {
            status,
            code,
            message,
        } => {
            assert_eq!((status, code.as_str()), (400, "bad_request"));
            assert!(
                message.starts_with("invalid runner_re 'gpu-(': unclosed group; fix the regex"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }

    for (path, wanted) in [
        ("/v1/logs?regex=%5Cw%7B1000%7D", "too large once compiled"),
        (
            "/v1/logs?runner_regex=gpu",
            "unknown parameter 'runner_regex'",
        ),
        ("/v1/logs?app=a&app=b", "parameter 'app' is given twice"),
        ("/v1/logs?field.=1", "names no field"),
        ("/v1/logs?case=sensitive", "case applies to contains"),
        (
            "/v1/logs/tail?app_re=(",
            "invalid app_re '(': unclosed group",
        ),
    ] {
        let (status, body) = raw_get(&server, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let body: ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(body.error.code, "bad_request");
        assert!(body.error.message.contains(wanted), "{path}: {body:?}");
    }
}
