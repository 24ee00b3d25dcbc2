//! `POST /v1/ingest` with a binary batch (`application/x-tailwater-batch`)
//! over real HTTP: stored as the same batch in JSON is (one is the other's
//! duplicate), bad bodies refused in the API's error shape with nothing
//! stored and counted, the body limit and the line limit as for JSON, and
//! `--ingest-binary=false` answering 415, counted.

mod common;

use common::{batch, ingest_token, scrape, stored, TOKEN};
use serde_json::Value;
use tailwater_model::wire::{encode_binary_batch, IngestBatch, BINARY_BATCH_MEDIA_TYPE};
use tailwater_server::RunningServer;

/// POSTs `body` to `/v1/ingest` as `content_type` with `token`: the status
/// and answer.
async fn post_as(
    server: &RunningServer,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/ingest", server.url()))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post(server: &RunningServer, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    post_as(server, TOKEN, content_type, body).await
}

async fn post_binary(server: &RunningServer, batch: &IngestBatch) -> (u16, Value) {
    post(server, BINARY_BATCH_MEDIA_TYPE, encode_binary_batch(batch)).await
}

/// Refused batches of `app` in tenant `default` counted for `reason`
/// (`tailwater_ingest_refused_batches`).
async fn refused(server: &RunningServer, app: &str, reason: &str) -> f64 {
    let key = format!(
        "tailwater_ingest_refused_batches_total{{app=\"{app}\",reason=\"{reason}\",tenant=\"default\"}}"
    );
    scrape(server, Some(TOKEN))
        .await
        .get(&key)
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_binary_batch_is_stored_as_its_json_is() {
    let (_dir, server, _client) = common::server(10_000).await;
    let sent = batch("bin", "r1", 0..20);
    let (status, answer) = post_binary(&server, &sent).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 20);
    // The same batch in JSON is the same records: all duplicates.
    let json = serde_json::to_vec(&sent).unwrap();
    let (status, answer) = post(&server, "application/json", json).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["accepted"], &answer["duplicates"]),
        (&0.into(), &20.into())
    );
    let records = stored(&server, "bin").await;
    assert_eq!(records.len(), 20);
    for (record, sent) in records.iter().zip(&sent.records) {
        assert_eq!(record["message"], sent.message.as_str());
        assert_eq!(record["seq"], sent.seq);
        assert_eq!(record["ts"], sent.ts.to_string().as_str());
        assert_eq!(record["fields"]["step"], sent.seq);
        assert_eq!(record["request_id"].as_str(), sent.request_id.as_deref());
    }
    // Parameters and case of the media type do not matter.
    let more = batch("bin", "r1", 20..21);
    let body = encode_binary_batch(&more);
    let (status, answer) = post(
        &server,
        "Application/X-Tailwater-Batch; charset=binary",
        body,
    )
    .await;
    assert_eq!((status, &answer["accepted"]), (200, &1.into()), "{answer}");
    let bodies = scrape(&server, Some(TOKEN)).await;
    assert_eq!(
        bodies[r#"tailwater_ingest_bodies_total{format="binary"}"#],
        2.0
    );
    assert_eq!(
        bodies[r#"tailwater_ingest_bodies_total{format="json"}"#],
        1.0
    );
}

#[tokio::test]
async fn bad_binary_bodies_are_refused_and_counted_with_nothing_stored() {
    let (_dir, server, _client) = common::server(10_000).await;
    let token = ingest_token(&server, "bad").await;
    let good = encode_binary_batch(&batch("bad", "r1", 0..3));
    let mut wrong_version = good.clone();
    wrong_version[0] = 7;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "cut short",
            good[..good.len() - 5].to_vec(),
            "it ends too soon",
        ),
        (
            "another version",
            wrong_version,
            "unknown binary batch version 7",
        ),
        ("bytes after it", trailing, "2 bytes follow the batch"),
        (
            "a JSON body",
            serde_json::to_vec(&batch("bad", "r1", 0..3)).unwrap(),
            "version 123",
        ),
    ];
    for (what, body, says) in cases {
        let (status, answer) = post_as(&server, &token, BINARY_BATCH_MEDIA_TYPE, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{what}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid ingest batch: "),
            "{what}: {message}"
        );
        assert!(message.contains(says), "{what}: {message}");
        assert!(
            message.contains("or JSON (Content-Type: application/json)"),
            "{message}"
        );
        assert!(message.starts_with(char::is_lowercase), "{what}: {message}");
    }
    assert!(stored(&server, "bad").await.is_empty());
    // Not read, so under the token's app.
    assert_eq!(refused(&server, "bad", "invalid_body").await, 4.0);
}

#[tokio::test]
async fn limits_apply_to_binary_bodies_as_to_json() {
    let (_dir, server, _client) = common::server_with(|config| {
        config.max_batch_bytes = 4096;
        config.limits.max_line_bytes = 100;
    })
    .await;
    // The body limit: 413, counted, nothing stored.
    let token = ingest_token(&server, "lim").await;
    let mut large = batch("lim", "r1", 0..1);
    large.records[0].message = "x".repeat(5000);
    let body = encode_binary_batch(&large);
    let (status, answer) = post_as(&server, &token, BINARY_BATCH_MEDIA_TYPE, body).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "batch_too_large");
    assert_eq!(refused(&server, "lim", "batch_too_large").await, 1.0);
    // The line limit: cut and marked, as JSON's.
    let mut long = batch("lim", "r1", 0..1);
    long.records[0].message = "y".repeat(300);
    let (status, answer) = post_binary(&server, &long).await;
    assert_eq!(status, 200, "{answer}");
    let records = stored(&server, "lim").await;
    assert_eq!(records[0]["message"].as_str().unwrap().len(), 100);
    assert!(records[0]["fields"]["limited"].is_object(), "{records:?}");
    // Sequence numbers and labels: the pipeline's checks, the same 400s.
    let mut high = batch("lim", "r1", 1..2);
    high.records[0].seq = u64::MAX;
    let (status, answer) = post_binary(&server, &high).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &"invalid_seq".into())
    );
    let mut unnamed = batch("lim", "r1", 1..2);
    unnamed.runner = " ".into();
    let (status, answer) = post_binary(&server, &unnamed).await;
    assert_eq!(status, 400, "{answer}");
    // The cut line, and the server's report of the cut: nothing else.
    let records = stored(&server, "lim").await;
    let streams: Vec<&str> = records
        .iter()
        .map(|r| r["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams, ["stdout", "system"], "{records:?}");
}

#[tokio::test]
async fn a_server_that_refuses_binary_answers_415_and_counts_it() {
    let (_dir, server, _client) = common::server_with(|config| config.ingest_binary = false).await;
    let token = ingest_token(&server, "off").await;
    let sent = batch("off", "r1", 0..2);
    let body = encode_binary_batch(&sent);
    let (status, answer) = post_as(&server, &token, BINARY_BATCH_MEDIA_TYPE, body).await;
    assert_eq!(status, 415, "{answer}");
    assert_eq!(answer["error"]["code"], "unsupported_media_type");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("--ingest-binary=false") && message.contains("send the batch as JSON"),
        "{message}"
    );
    assert!(stored(&server, "off").await.is_empty());
    assert_eq!(refused(&server, "off", "unsupported_media_type").await, 1.0);
    // JSON is taken as ever.
    let (status, answer) = post(
        &server,
        "application/json",
        serde_json::to_vec(&sent).unwrap(),
    )
    .await;
    assert_eq!((status, &answer["accepted"]), (200, &2.into()), "{answer}");
}
