//! `/metrics` (an admin token; ingest, store and query figures) and
//! `/readyz`.

use super::*;

/// Scrapes until sample `key` is `want` (a tail's end is seen by the
/// server a moment after the client leaves).
async fn wait_for_sample(server: &RunningServer, key: &str, want: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let samples = scrape(server, Some(ADMIN)).await;
        let value = samples.get(key).copied();
        if value == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key} is {value:?}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_take_an_admin_token_and_expose_ingest_store_and_query_figures() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |_| {}).await;
    let mut throttled = record(2, "throttled: 40 lines held back");
    throttled["stream"] = json!("system");
    throttled["fields"] = json!({"event": "throttled", "held_lines": 40, "held_bytes": 400});
    let mut dropped = record(3, "dropped 7 lines");
    dropped["stream"] = json!("system");
    dropped["fields"] = json!({"event": "dropped", "reason": "spool_full", "dropped_lines": 7});
    let records = vec![record(0, "hello"), record(1, "world!"), throttled, dropped];
    let (status, _, _) = post(&server, &batch("seen", "r1", records.clone())).await;
    assert_eq!(status, 200);
    // A batch sent again is not counted again.
    post(&server, &batch("seen", "r1", records)).await;
    runner_logs(&client, "r1").await;

    let samples = scrape(&server, Some(ADMIN)).await;
    let app = r#"{app="seen",tenant="default"}"#;
    assert_eq!(
        sample(&samples, &format!("tailwater_ingested_lines_total{app}")),
        4.0
    );
    let text_bytes = ("hello world!".len() - 1
        + "throttled: 40 lines held back".len()
        + "dropped 7 lines".len()) as f64;
    assert_eq!(
        sample(&samples, &format!("tailwater_ingested_bytes_total{app}")),
        text_bytes
    );
    assert_eq!(
        sample(
            &samples,
            &format!("tailwater_agent_throttled_lines_total{app}")
        ),
        40.0
    );
    assert_eq!(
        sample(
            &samples,
            r#"tailwater_agent_dropped_lines_total{app="seen",reason="spool_full",tenant="default"}"#
        ),
        7.0
    );
    assert_eq!(
        sample(&samples, &format!("tailwater_store_records{app}")),
        4.0
    );
    assert_eq!(sample(&samples, "tailwater_store_appended_total{}"), 4.0);
    assert_eq!(sample(&samples, "tailwater_store_duplicates_total{}"), 4.0);
    // Everything is still in the memtable: no block was decoded.
    assert_eq!(
        sample(&samples, "tailwater_store_block_cache_misses_total{}"),
        0.0
    );
    assert_eq!(sample(&samples, "tailwater_store_block_cache_bytes{}"), 0.0);
    assert!(
        sample(
            &samples,
            r#"tailwater_query_duration_seconds_count{endpoint="logs"}"#
        ) >= 1.0
    );
    // The runner table: r1 in one state, nothing forgotten.
    let runners: f64 = samples
        .iter()
        .filter(|(key, _)| key.starts_with("tailwater_runners{") && key.contains(r#"app="seen""#))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(runners, 1.0);
    assert_eq!(sample(&samples, "tailwater_runners_evicted_total{}"), 0.0);
    assert_eq!(
        sample(&samples, "tailwater_tail_missed_notices_total{}"),
        0.0
    );
    assert_eq!(
        sample(&samples, "tailwater_tail_missed_records_total{}"),
        0.0
    );

    // Every query endpoint is timed.
    let http = reqwest::Client::new();
    for path in [
        "/v1/export?app=seen",
        "/v1/histogram?app=seen",
        "/v1/requests/no-such-request/logs",
    ] {
        let response = http
            .get(format!("{}{path}", server.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        response.bytes().await.unwrap();
    }
    let samples = scrape(&server, Some(ADMIN)).await;
    for endpoint in ["export", "histogram", "request_logs"] {
        let key = format!(r#"tailwater_query_duration_seconds_count{{endpoint="{endpoint}"}}"#);
        assert_eq!(sample(&samples, &key), 1.0, "{key}");
    }

    // Live tails are counted while they are open, SSE and WebSocket alike.
    let tail_clients = r#"tailwater_tail_clients{tenant="default"}"#;
    let sse = http
        .get(format!("{}/v1/logs/tail?app=seen", server.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let mut websocket = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}/v1/logs/tail?app=seen", server.addr);
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    };
    wait_for_sample(&server, tail_clients, 2.0).await;
    drop(sse);
    wait_for_sample(&server, tail_clients, 1.0).await;
    websocket.close(None).await.unwrap();
    wait_for_sample(&server, tail_clients, 0.0).await;

    // Who may read them.
    let anonymous = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let owner = client
        .create_token(&tailwater_model::tenancy::NewToken {
            scope: tailwater_model::tenancy::Scope::Owner,
            tenant: Some("default".into()),
            app: None,
            expires_in: None,
            name: None,
        })
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", server.url()))
        .bearer_auth(&owner.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--public-metrics"));
    server.shutdown().await.unwrap();

    // A full runner table forgets the runner heard from longest ago, and
    // says so.
    let (server, _) = server_in(dir.path(), ADMIN, |config| {
        config.public_metrics = true;
        config.runners.max_runners = 1;
    })
    .await;
    let samples = scrape(&server, None).await;
    assert_eq!(
        sample(&samples, &format!("tailwater_store_records{app}")),
        4.0
    );
    let (status, _, _) = post(&server, &batch("seen", "r2", vec![record(0, "hi")])).await;
    assert_eq!(status, 200);
    let samples = scrape(&server, None).await;
    assert_eq!(sample(&samples, "tailwater_runners_evicted_total{}"), 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn readyz_answers_without_a_token_once_the_store_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), ADMIN, |_| {}).await;
    let response = reqwest::get(format!("{}/readyz", server.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    server.shutdown().await.unwrap();
}
