//! A full disk, for real: the data directory on a size-capped tmpfs filled
//! to the last byte. Ingest answers 507 with `Retry-After` in the JSON error
//! shape (the client reads it as "try again then"), nothing is lost, and
//! once space is freed the same batch is stored exactly once.

use std::time::Duration;

use tailwater_client::{Client, ClientError};
use tailwater_model::wire::LogsParams;
use tailwater_server::{start, ServerConfig};

mod common;

use common::tmpfs::{fill, Tmpfs};
use common::TOKEN;

#[tokio::test]
async fn a_full_disk_answers_507_with_retry_after_and_loses_nothing() {
    let disk = Tmpfs::mount("16m");
    let mut config = ServerConfig::new(disk.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    let server = start(config).await.unwrap();
    let client = Client::new(&server.url(), TOKEN).unwrap();
    client
        .ingest(&common::batch("full", "r1", 0..10))
        .await
        .unwrap();

    let filler = fill(&disk.path().join("filler"));
    let batch = common::batch("full", "r1", 10..2010);
    match client.ingest(&batch).await {
        Err(ClientError::Unavailable {
            status,
            retry_after,
            code,
            message,
        }) => {
            assert_eq!(status, 507, "{message}");
            assert_eq!(code, "disk_full");
            assert_eq!(retry_after, Some(Duration::from_secs(10)));
            assert!(
                message.starts_with("the server's disk is full: send"),
                "{message}"
            );
        }
        other => panic!("expected a 507 asking to retry, got {other:?}"),
    }
    // The answer itself, as any client sees it.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/ingest", server.url()))
        .bearer_auth(TOKEN)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 507);
    assert_eq!(response.headers()["retry-after"], "10");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let (_, metrics) = common::call(&server, "GET", "/metrics", TOKEN, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("tailwater_ingest_refused_batches_total{tenant=\"default\",app=\"full\",reason=\"disk_full\"}"),
        "the refusal is counted"
    );

    // Space again: the same batch is stored, once.
    std::fs::remove_file(filler).unwrap();
    let stored = client.ingest(&batch).await.unwrap();
    assert_eq!(stored.accepted + stored.duplicates, 2000, "{stored:?}");
    let params = LogsParams {
        app: Some("full".into()),
        limit: Some("5000".into()),
        ..LogsParams::default()
    };
    let page = client.logs(&params).await.unwrap();
    let mut seqs: Vec<String> = page.records.iter().map(|r| r.message.clone()).collect();
    let total = seqs.len();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "no record twice");
    assert_eq!(total, 2010, "every record once");
    server.shutdown().await.unwrap();
}
