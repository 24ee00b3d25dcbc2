//! A second tailwater server receiving through its own endpoints.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use super::common::{call, server_in, TOKEN};
use super::{fast, ingest, ok, tenants};

/// A second tailwater server receives through its own OTLP and Loki
/// endpoints, each drain with an ingest token of the receiver's: every
/// record of the app arrives once, with its runner, level, stream, request
/// id and fields.
#[tokio::test]
async fn otlp_and_loki_drains_feed_a_second_tailwater() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, fast).await;
    tenants(&server).await;
    let other_dir = tempfile::tempdir().unwrap();
    let (receiving, _) = server_in(other_dir.path(), TOKEN, |_| {}).await;
    for app in ["sdxl", "copy"] {
        ok(&receiving, "POST", "/v1/apps", json!({"name": app})).await;
    }
    let token = |app: &'static str| {
        let receiving = &receiving;
        async move {
            let created = ok(
                receiving,
                "POST",
                "/v1/tokens",
                json!({"scope": "ingest", "app": app}),
            )
            .await;
            created["token"].as_str().unwrap().to_owned()
        }
    };
    let otlp_token = token("sdxl").await;
    ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": format!("{}/v1/logs", receiving.url()), "format": "otlp", "token": otlp_token}),
    )
    .await;
    // The Loki drain goes to another tenant of the receiving server, so
    // each format's records are counted apart.
    ok(&receiving, "POST", "/v1/tenants", json!({"name": "mirror"})).await;
    ok(
        &receiving,
        "POST",
        "/v1/apps?tenant=mirror",
        json!({"name": "sdxl"}),
    )
    .await;
    let created = ok(
        &receiving,
        "POST",
        "/v1/tokens",
        json!({"scope": "ingest", "tenant": "mirror", "app": "sdxl"}),
    )
    .await;
    let loki_token = created["token"].as_str().unwrap().to_owned();
    ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": format!("{}/loki/api/v1/push", receiving.url()), "format": "loki", "token": loki_token}),
    )
    .await;

    ingest(&server, "acme", "sdxl", "r1", 0..75).await;
    ingest(&server, "acme", "other", "r1", 0..5).await;
    let read = |tenant: &'static str| {
        let receiving = &receiving;
        async move {
            let path = format!("/v1/logs?tenant={tenant}&app=sdxl&limit=1000&direction=forward");
            let (status, page) = call(receiving, "GET", &path, TOKEN, None).await;
            assert_eq!(status, 200, "{page}");
            page["records"].as_array().unwrap().clone()
        }
    };
    for tenant in ["default", "mirror"] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let records = loop {
            let records = read(tenant).await;
            if records.len() >= 75 || tokio::time::Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let messages: BTreeSet<&str> = records
            .iter()
            .map(|r| r["message"].as_str().unwrap())
            .collect();
        let wanted: BTreeSet<String> = (0..75).map(|seq| format!("r1 {seq}")).collect();
        let wanted: BTreeSet<&str> = wanted.iter().map(String::as_str).collect();
        assert_eq!(messages, wanted, "{tenant}: exactly the app's records");
        assert_eq!(records.len(), 75, "{tenant}: each once");
        let tenth = records.iter().find(|r| r["message"] == "r1 10").unwrap();
        assert_eq!(tenth["runner"], "r1", "{tenant}");
        assert_eq!(tenth["level"], "info", "{tenant}");
        assert_eq!(tenth["stream"], "stdout", "{tenant}");
        match tenant {
            "default" => assert_eq!(tenth["request_id"], "req-10"),
            _ => assert_eq!(tenth["fields"]["request_id"], "req-10"),
        }
        assert_eq!(
            tenth["fields"]["step"],
            if tenant == "default" {
                json!(10)
            } else {
                json!("10")
            }
        );
    }
    server.shutdown().await.unwrap();
    receiving.shutdown().await.unwrap();
}
