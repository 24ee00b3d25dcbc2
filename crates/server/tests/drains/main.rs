//! Drains over real HTTP: a receiving server in the test (and a second
//! tailwater server receiving through its own OTLP and Loki endpoints).
//! Every record of the app arrives, signed, in batches with ids, and none
//! of another app's or tenant's; a receiver answering 429 and 500 is
//! retried, then the drain pauses (its state, a record in the app's logs,
//! a metric) and resumes from its cursor; a restart goes on where it was.
//!
//! The files: `delivery.rs` (what arrives, signed; retries, pauses,
//! resumes, restarts), `refusals.rs` (what is refused, and counted),
//! `tailwater.rs` (a second tailwater receiving), `https.rs` (an HTTPS
//! receiver, trusted through `--drain-ca-file` or refused for its
//! certificate; a paused drain's lag); the receiver and the
//! helpers they share are here.

#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod https;
mod refusals;
mod tailwater;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{batch, call, TOKEN};
use serde_json::{json, Value};
use tailwater_server::drains::{BATCH_ID_HEADER, SIGNATURE_HEADER};
use tailwater_server::{RunningServer, ServerConfig};

/// One delivery as the receiver got it.
#[derive(Clone, Debug)]
pub(crate) struct Delivery {
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
pub(crate) struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// Answers to give first, in order; then `status`.
    script: Arc<Mutex<VecDeque<u16>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    pub(crate) async fn start() -> (Receiver, SocketAddr) {
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
    pub(crate) fn script(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    pub(crate) fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub(crate) fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    /// The records of accepted NDJSON deliveries, by message, checking on
    /// the way that a record delivered twice came under one batch id.
    pub(crate) fn records(&self) -> BTreeMap<String, Value> {
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
pub(crate) async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn fast(config: &mut ServerConfig) {
    config.drains.allow_private = true;
    config.drains.batch_wait = Duration::from_millis(50);
    config.drains.batch_records = 50;
    config.drains.backoff = Duration::from_millis(10);
    config.drains.backoff_max = Duration::from_millis(40);
    config.drains.max_failures = 4;
}

pub(crate) async fn ok(server: &RunningServer, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = call(server, method, path, TOKEN, Some(body)).await;
    assert!(status < 300, "{method} {path}: {status} {answer}");
    answer
}

pub(crate) async fn ingest(
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
pub(crate) async fn tenants(server: &RunningServer) {
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
