//! `--regex-size-limit` over real HTTP on loopback: a regex within the
//! default but past a server's configured limit is a JSON 400 that names the
//! limit and the setting, in history, live tail, export and histogram; one
//! within it runs.

use jiff::Timestamp;
use tailwater_client::{Client, ClientError};
use tailwater_model::wire::{IngestBatch, IngestRecord, LogsParams};
use tailwater_model::Stream;
use tailwater_server::{start, ServerConfig};

const TOKEN: &str = "tw_regex_limit_test";

#[tokio::test]
async fn a_regex_past_the_configured_size_limit_is_refused_with_a_json_400() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    config.regex_size_limit = 4 * 1024;
    let server = start(config).await.unwrap();
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    client
        .ingest(&IngestBatch {
            app: "sdxl".into(),
            version: "v1".into(),
            runner: "r1".into(),
            boot: "b".into(),
            source: Default::default(),
            records: vec![IngestRecord {
                seq: 0,
                ts: Timestamp::now(),
                stream: Stream::Stdout,
                level: Default::default(),
                request_id: None,
                message: "xxxx loaded".into(),
                fields: Default::default(),
                invalid_utf8: false,
            }],
        })
        .await
        .unwrap();

    // Fine under the 1 MiB default, too large for 4 KiB.
    let large = LogsParams {
        regex: Some("x{1000}".into()),
        ..LogsParams::default()
    };
    match client.logs(&large).await.unwrap_err() {
        ClientError::Api {
            status,
            code,
            message,
        } => {
            assert_eq!((status, code.as_str()), (400, "bad_request"));
            assert!(
                message.starts_with(
                    "invalid regex 'x{1000}': too large once compiled (past the 4 KiB limit)"
                ),
                "{message}"
            );
            assert!(message.contains("--regex-size-limit"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let tail = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/logs/tail?regex=x%7B1000%7D",
            server.addr
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status().as_u16(), 400);

    // Every read of records holds to the same limit: export and histogram
    // too, with the same JSON 400.
    for path in ["/v1/histogram", "/v1/export", "/v1/export?format=ndjson"] {
        let separator = if path.contains('?') { '&' } else { '?' };
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}{path}{separator}regex=x%7B1000%7D",
                server.addr
            ))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "invalid regex 'x{1000}': too large once compiled (past the 4 KiB limit)"
            ) && message.contains("--regex-size-limit"),
            "{path}: {message}"
        );
    }

    let small = LogsParams {
        regex: Some("x{4} loaded".into()),
        ..LogsParams::default()
    };
    assert_eq!(client.logs(&small).await.unwrap().records.len(), 1);
    server.shutdown().await.unwrap();
}
