//! What arrives, signed and in batches with ids; retries, a pause by
//! failures and by the owner, resuming, a restart.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tailwater_server::drains::verify;

use super::common::{call, scrape, server_in, TOKEN};
use super::{fast, ingest, ok, tenants, until, Delivery, Receiver};

#[tokio::test]
async fn an_ndjson_drain_delivers_the_apps_records_signed_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, fast).await;
    tenants(&server).await;
    let (receiver, addr) = Receiver::start().await;
    let created = ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": format!("http://{addr}/in"), "name": "archive", "token": "tw_receiver"}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "active");
    assert_eq!(created["format"], "ndjson");

    ingest(&server, "acme", "sdxl", "r1", 0..120).await;
    // Neither another app of the tenant nor the same app of another tenant.
    ingest(&server, "acme", "other", "r1", 0..30).await;
    ingest(&server, "globex", "sdxl", "r1", 0..30).await;
    ingest(&server, "acme", "sdxl", "r2", 0..80).await;
    until("all 200 records", || receiver.records().len() == 200).await;

    let records = receiver.records();
    for runner in ["r1", "r2"] {
        let count = if runner == "r1" { 120 } else { 80 };
        for seq in 0..count {
            let record = &records[&format!("{runner} {seq}")];
            assert_eq!(record["tenant"], "acme");
            assert_eq!(record["app"], "sdxl");
            assert_eq!(record["fields"]["step"], seq);
        }
    }
    let deliveries = receiver.deliveries();
    assert!(
        deliveries.len() >= 4,
        "batches of at most 50: {}",
        deliveries.len()
    );
    let now = jiff::Timestamp::now().as_second();
    let mut batch_ids = BTreeSet::new();
    for delivery in &deliveries {
        assert_eq!(delivery.content_type, "application/x-ndjson");
        assert_eq!(
            delivery.authorization.as_deref(),
            Some("Bearer tw_receiver")
        );
        verify(&secret, &delivery.signature, &delivery.body, now, 300).unwrap();
        assert!(verify("whsec_other", &delivery.signature, &delivery.body, now, 300).is_err());
        assert!(delivery.batch_id.starts_with(&format!("{id}.")));
        assert!(
            batch_ids.insert(delivery.batch_id.clone()),
            "each batch once"
        );
        assert!(std::str::from_utf8(&delivery.body).unwrap().lines().count() <= 50);
    }

    // The list shows the drain, never its secret or token; it counts a
    // batch once its receiver answered (just after the receiver has it).
    let list = loop {
        let path = "/v1/apps/sdxl/drains?tenant=acme";
        let (status, list) = call(&server, "GET", path, TOKEN, None).await;
        assert_eq!(status, 200);
        assert_eq!(list.as_array().unwrap().len(), 1);
        if list[0]["delivered"] == 200 {
            break list;
        }
        assert!(list[0]["delivered"].as_u64().unwrap() < 200, "{list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let shown = list.to_string();
    assert!(
        !shown.contains(&secret) && !shown.contains("tw_receiver"),
        "{shown}"
    );
    let (_, other) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=globex",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(other, json!([]));
    let samples = scrape(&server, Some(TOKEN)).await;
    let labels = format!("{{app=\"sdxl\",drain=\"{id}\",tenant=\"acme\"}}");
    assert_eq!(
        samples[&format!("tailwater_drain_delivered_records_total{labels}")],
        200.0
    );
    assert!(samples.contains_key(&format!("tailwater_drain_lag_seconds{labels}")));

    // Secrets at rest: the drain's file is the server user's alone.
    use std::os::unix::fs::PermissionsExt;
    let file = dir.path().join(format!("drains/{id}.json"));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let folder = std::fs::metadata(dir.path().join("drains")).unwrap();
    assert_eq!(folder.permissions().mode() & 0o777, 0o700);

    // Deleted: it stops, its files go.
    ok(
        &server,
        "DELETE",
        &format!("/v1/apps/sdxl/drains/{id}?tenant=acme"),
        json!(null),
    )
    .await;
    assert!(!file.exists());
    let before = receiver.deliveries().len();
    ingest(&server, "acme", "sdxl", "r3", 0..5).await;
    let (_, list) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(list, json!([]));
    // A drain created now sees only what is stored from now on, and is
    // the one the receiver gets from: nothing from the deleted one.
    let again = ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": format!("http://{addr}/in")}),
    )
    .await;
    ingest(&server, "acme", "sdxl", "r4", 0..3).await;
    let new_id = again["id"].as_str().unwrap().to_owned();
    until("the new drain's batch", || {
        receiver
            .deliveries()
            .iter()
            .any(|d| d.batch_id.starts_with(&new_id))
    })
    .await;
    let after: Vec<Delivery> = receiver.deliveries()[before..].to_vec();
    assert!(after.iter().all(|d| d.batch_id.starts_with(&new_id)));
    assert!(!receiver.records().contains_key("r3 0"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_receiver_answering_429_and_500_is_retried_then_the_drain_pauses_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, fast).await;
    tenants(&server).await;
    let (receiver, addr) = Receiver::start().await;
    let created = ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": format!("http://{addr}/in")}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_owned();

    // 429, 500, 500 (fewer than the 4 failures that pause): retried
    // until it answers 200.
    receiver.script(&[429, 500, 500]);
    ingest(&server, "acme", "sdxl", "r1", 0..10).await;
    until("the 10 records", || receiver.records().len() == 10).await;
    let statuses: Vec<u16> = receiver.deliveries().iter().map(|d| d.status).collect();
    assert_eq!(statuses, [429, 500, 500, 200]);
    // The 429 said `Retry-After: 1`: the next attempt waited that long
    // (the backoff alone is at most 40 ms here).
    let deliveries = receiver.deliveries();
    let waited = deliveries[1].at - deliveries[0].at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    let ids: BTreeSet<String> = receiver
        .deliveries()
        .iter()
        .map(|d| d.batch_id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "every attempt at one batch carries its id");
    let (_, list) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    let state = (list[0]["state"].as_str(), list[0]["failures"].as_u64());
    assert_eq!(state, (Some("active"), Some(0)));

    // Failing on: after 4 in a row it pauses.
    receiver.answer(500);
    ingest(&server, "acme", "sdxl", "r1", 10..20).await;
    let mut paused = Value::Null;
    for _ in 0..1500 {
        let (_, list) = call(
            &server,
            "GET",
            "/v1/apps/sdxl/drains?tenant=acme",
            TOKEN,
            None,
        )
        .await;
        if list[0]["state"] == "paused" {
            paused = list[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(paused["state"], "paused", "the drain paused");
    let reason = paused["paused_reason"].as_str().unwrap();
    assert!(
        reason.contains("4 failed deliveries") && reason.contains("500"),
        "{reason}"
    );
    let failed_at_pause = receiver.deliveries().len();
    // A record in the app's logs says so.
    let (_, page) = call(
        &server,
        "GET",
        "/v1/logs?tenant=acme&app=sdxl&stream=system",
        TOKEN,
        None,
    )
    .await;
    let notice = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["fields"]["event"] == "drain_paused")
        .unwrap_or_else(|| panic!("a drain_paused record in {page}"));
    assert_eq!(notice["fields"]["drain"], id.as_str());
    assert!(notice["message"]
        .as_str()
        .unwrap()
        .contains("tailwater drain resume"));
    let samples = scrape(&server, Some(TOKEN)).await;
    let labels = format!("{{app=\"sdxl\",drain=\"{id}\",tenant=\"acme\"}}");
    assert_eq!(
        samples[&format!("tailwater_drain_pauses_total{labels}")],
        1.0
    );
    assert_eq!(samples[&format!("tailwater_drain_paused{labels}")], 1.0);
    assert!(samples[&format!("tailwater_drain_failed_attempts_total{labels}")] >= 6.0);
    assert_eq!(
        receiver.deliveries().len(),
        failed_at_pause,
        "paused: no more attempts"
    );

    // Resumed: from its cursor, the same batch again, then what came since
    // (the pause notice included).
    receiver.answer(200);
    ingest(&server, "acme", "sdxl", "r1", 20..25).await;
    let resumed = ok(
        &server,
        "POST",
        &format!("/v1/apps/sdxl/drains/{id}/resume?tenant=acme"),
        json!(null),
    )
    .await;
    assert_eq!(resumed["state"], "active");
    until("all 25 records", || {
        (0..25).all(|seq| receiver.records().contains_key(&format!("r1 {seq}")))
    })
    .await;
    until("the pause notice", || {
        receiver.records().keys().any(|m| m.starts_with("drain "))
    })
    .await;

    // Paused by its owner: nothing is sent; resumed: all of it.
    ok(
        &server,
        "POST",
        &format!("/v1/apps/sdxl/drains/{id}/pause?tenant=acme"),
        json!(null),
    )
    .await;
    let quiet = receiver.deliveries().len();
    ingest(&server, "acme", "sdxl", "r1", 25..30).await;
    let (_, list) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(list[0]["paused_reason"], "paused by its owner");
    assert_eq!(receiver.deliveries().len(), quiet);
    // Paused state survives a restart.
    server.shutdown().await.unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, fast).await;
    let (_, list) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(list[0]["state"], "paused");
    ingest(&server, "acme", "sdxl", "r1", 30..35).await;
    ok(
        &server,
        "POST",
        &format!("/v1/apps/sdxl/drains/{id}/resume?tenant=acme"),
        json!(null),
    )
    .await;
    until("all 35 records", || {
        (0..35).all(|seq| receiver.records().contains_key(&format!("r1 {seq}")))
    })
    .await;
    server.shutdown().await.unwrap();
}
