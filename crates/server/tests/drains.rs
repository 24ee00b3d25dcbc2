//! Drains over real HTTP: a receiving server in the test (and a second
//! tailwater server receiving through its own OTLP and Loki endpoints).
//! Every record of the app arrives, signed, in batches with ids, and none
//! of another app's or tenant's; a receiver answering 429 and 500 is
//! retried, then the drain pauses (its state, a record in the app's logs,
//! a metric) and resumes from its cursor; a restart goes on where it was.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{batch, call, scrape, server_in, TOKEN};
use serde_json::{json, Value};
use tailwater_server::drains::{verify, BATCH_ID_HEADER, SIGNATURE_HEADER};
use tailwater_server::{RunningServer, ServerConfig};

/// One delivery as the receiver got it.
#[derive(Clone, Debug)]
struct Delivery {
    batch_id: String,
    signature: String,
    content_type: String,
    authorization: Option<String>,
    body: Bytes,
    /// What the receiver answered.
    status: u16,
    /// When it came.
    at: tokio::time::Instant,
}

/// A receiving HTTP server: it answers its script, then `status` (with `Retry-After: 1`
/// on a 429) and keeps every delivery.
#[derive(Clone, Default)]
struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Answers to give first, in order; then `status`.
    script: Arc<Mutex<std::collections::VecDeque<u16>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        receiver.answer(200);
        let kept = receiver.clone();
        let app = axum::Router::new().route(
            "/in",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let kept = kept.clone();
                async move {
                    let scripted = kept.script.lock().unwrap().pop_front();
                    let status = scripted.unwrap_or_else(|| kept.status.load(Ordering::SeqCst));
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|value| value.to_str().unwrap().to_owned())
                    };
                    kept.deliveries.lock().unwrap().push(Delivery {
                        batch_id: header(BATCH_ID_HEADER).unwrap_or_default(),
                        signature: header(SIGNATURE_HEADER).unwrap_or_default(),
                        content_type: header("content-type").unwrap_or_default(),
                        authorization: header("authorization"),
                        body,
                        status,
                        at: tokio::time::Instant::now(),
                    });
                    let mut response = axum::response::Response::new(axum::body::Body::empty());
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    if status == 429 {
                        response
                            .headers_mut()
                            .insert("retry-after", "1".parse().unwrap());
                    }
                    response
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    /// Answers `statuses` to the next deliveries, one each.
    fn script(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// The records of accepted NDJSON deliveries, by message, checking on
    /// the way that a record delivered twice came under one batch id.
    fn records(&self) -> BTreeMap<String, Value> {
        let mut records = BTreeMap::new();
        let mut batch_of: BTreeMap<String, String> = BTreeMap::new();
        for delivery in self.deliveries() {
            for line in std::str::from_utf8(&delivery.body).unwrap().lines() {
                let record: Value = serde_json::from_str(line).unwrap();
                let id = record["id"].as_str().unwrap().to_owned();
                if let Some(first) = batch_of.insert(id.clone(), delivery.batch_id.clone()) {
                    assert_eq!(
                        first, delivery.batch_id,
                        "record {id} came again under another batch id"
                    );
                }
                if delivery.status == 200 {
                    records.insert(record["message"].as_str().unwrap().to_owned(), record);
                }
            }
        }
        records
    }
}

/// Polls `condition` until it holds (or fails after 30 s, saying `what`).
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fast(config: &mut ServerConfig) {
    config.drains.allow_private = true;
    config.drains.batch_wait = Duration::from_millis(50);
    config.drains.batch_records = 50;
    config.drains.backoff = Duration::from_millis(10);
    config.drains.backoff_max = Duration::from_millis(40);
    config.drains.max_failures = 4;
}

async fn ok(server: &RunningServer, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(server, method, path, TOKEN, Some(body)).await;
    assert!(status < 300, "{method} {path}: {status} {answer}");
    answer
}

async fn ingest(
    server: &RunningServer,
    tenant: &str,
    app: &str,
    runner: &str,
    seqs: std::ops::Range<u64>,
) {
    let body = serde_json::to_value(batch(app, runner, seqs)).unwrap();
    ok(server, "POST", &format!("/v1/ingest?tenant={tenant}"), body).await;
}

/// Tenants acme and globex, each with apps sdxl and other.
async fn tenants(server: &RunningServer) {
    for tenant in ["acme", "globex"] {
        ok(server, "POST", "/v1/tenants", json!({"name": tenant})).await;
        for app in ["sdxl", "other"] {
            ok(
                server,
                "POST",
                &format!("/v1/apps?tenant={tenant}"),
                json!({"name": app}),
            )
            .await;
        }
    }
}

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

#[tokio::test]
async fn refusals_say_what_to_do_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |_| {}).await;
    tenants(&server).await;
    for (body, status, says) in [
        (
            json!({"url": "http://127.0.0.1:9/in"}),
            400,
            "--drain-allow-private",
        ),
        (
            json!({"url": "http://169.254.169.254/latest"}),
            400,
            "not a public one",
        ),
        (
            json!({"url": "ftp://example.com/"}),
            400,
            "http:// or https://",
        ),
        (
            json!({"url": "https://example.com/", "format": "xml"}),
            400,
            "unknown variant",
        ),
        (
            json!({"url": "https://example.com/", "colour": 1}),
            400,
            "unknown field",
        ),
        (
            json!({"url": "https://user:pw@example.com/"}),
            400,
            "user or password",
        ),
        (
            json!({"url": "https://example.com/", "token": "a b"}),
            400,
            "printable",
        ),
    ] {
        let (got, answer) = call(
            &server,
            "POST",
            "/v1/apps/sdxl/drains?tenant=acme",
            TOKEN,
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (got, _) = call(
        &server,
        "POST",
        "/v1/apps/nope/drains?tenant=acme",
        TOKEN,
        Some(json!({"url": "https://example.com/"})),
    )
    .await;
    assert_eq!(got, 404);
    let (got, _) = call(
        &server,
        "POST",
        "/v1/apps/sdxl/drains/drn_nope/pause?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(got, 404);
    let (_, list) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(list, json!([]));
    assert!(std::fs::read_dir(dir.path().join("drains"))
        .unwrap()
        .next()
        .is_none());
    // At most --max-drains-per-app (5).
    for n in 0..5 {
        ok(
            &server,
            "POST",
            "/v1/apps/sdxl/drains?tenant=acme",
            json!({"url": format!("https://example.com/{n}")}),
        )
        .await;
    }
    let (got, answer) = call(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        Some(json!({"url": "https://example.com/6"})),
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (400, Some("too_many_drains"))
    );
    // Each refusal that reached the drains is counted: five URLs, names or
    // tokens (the two bodies that did not parse are the API's), one limit.
    let samples = scrape(&server, Some(TOKEN)).await;
    let refused = |reason: &str| {
        samples[&format!("tailwater_drain_refused_total{{reason=\"{reason}\",tenant=\"acme\"}}")]
    };
    assert_eq!((refused("invalid"), refused("too_many_drains")), (5.0, 1.0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_drain_to_localhost_by_name_is_refused_as_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |config| {
        fast(config);
        config.drains.allow_private = false;
    })
    .await;
    tenants(&server).await;
    let (receiver, addr) = Receiver::start().await;
    let url = format!("http://localhost:{}/in", addr.port());
    let created = ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": url}),
    )
    .await;
    ingest(&server, "acme", "sdxl", "r1", 0..3).await;
    let mut last = Value::Null;
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
            last = list[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["id"], created["id"]);
    let error = last["last_error"].as_str().unwrap();
    assert!(error.contains("not public"), "{error}");
    assert!(
        receiver.deliveries().is_empty(),
        "nothing reached the loopback receiver"
    );
    server.shutdown().await.unwrap();
}

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

#[tokio::test]
async fn a_tenant_has_at_most_its_drains() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |config| {
        config.drains.max_per_app = 2;
        config.drains.max_per_tenant = 3;
    })
    .await;
    tenants(&server).await;
    let url = json!({"url": "https://drains.invalid/in"});
    for app in ["sdxl", "sdxl", "other"] {
        let path = format!("/v1/apps/{app}/drains?tenant=acme");
        ok(&server, "POST", &path, url.clone()).await;
    }
    let (status, answer) = call(
        &server,
        "POST",
        "/v1/apps/other/drains?tenant=acme",
        TOKEN,
        Some(url.clone()),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("too_many_drains"))
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-drains-per-tenant"), "{message}");
    // Another tenant is not held to this one's count.
    ok(&server, "POST", "/v1/apps/other/drains?tenant=globex", url).await;
    server.shutdown().await.unwrap();
}
