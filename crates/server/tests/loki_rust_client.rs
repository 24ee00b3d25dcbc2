//! `tracing-loki`, a Loki client as a Rust app uses it, against a real
//! server on loopback: `tracing` events through its layer, pushed by its
//! background task as snappy-compressed protobuf with an ingest token in
//! an `Authorization` header. Its lines are JSON (the event's fields, the
//! spans' fields, extra fields, and `_target`, `_file`, … of where it was
//! written) under a `level` label; what is stored is checked field by
//! field through `GET /v1/logs`.

mod common;

use std::time::Duration;

use common::{call, TOKEN};
use serde_json::{json, Value};
use tailwater_server::RunningServer;
use tracing_subscriber::layer::SubscriberExt;

async fn ingest_token(server: &RunningServer, app: &str) -> String {
    let body = json!({"scope": "ingest", "tenant": "default", "app": app});
    let (status, created) = call(server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

/// Every record of `app`, oldest first.
async fn stored(server: &RunningServer, app: &str) -> Vec<Value> {
    let path = format!("/v1/logs?app={app}&direction=forward&limit=1000");
    let (status, page) = call(server, "GET", &path, TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().unwrap().clone()
}

/// Runs `emit` with tracing-loki's layer as the thread's subscriber, its
/// stream labelled `labels`, sending to `server` with `token`; then shuts
/// its background task down, which pushes what it holds before it ends.
async fn send_through_tracing_loki(
    server: &RunningServer,
    token: &str,
    labels: &[(&str, &str)],
    emit: impl FnOnce(),
) {
    let mut builder = tracing_loki::builder()
        .http_header("authorization", format!("Bearer {token}"))
        .unwrap()
        .extra_field("pid", "4242")
        .unwrap();
    for (name, value) in labels {
        builder = builder.label(*name, *value).unwrap();
    }
    let url = tracing_loki::url::Url::parse(&server.url()).unwrap();
    let (layer, controller, task) = builder.build_controller_url(url).unwrap();
    let task = tokio::spawn(task);
    // Only what `emit` logs goes to Loki: the server's own events, on the
    // same runtime, do not.
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
    controller.shutdown().await;
    // The task ends once everything is pushed; it backs off and tries
    // again on a failure, so a server that refuses it shows here.
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("tracing-loki pushed everything and ended")
        .unwrap();
}

#[tokio::test]
async fn tracing_events_pushed_by_tracing_loki_are_stored_field_by_field() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "sdxl").await;
    let labels = [("app", "sdxl"), ("runner", "pod-1"), ("env", "prod")];
    send_through_tracing_loki(&server, &token, &labels, || {
        tracing::info!(target: "worker", gpu = 0, "model loaded");
        // A request id on the span the events are in.
        let request = tracing::info_span!("handle", request_id = "req-7");
        request.in_scope(|| {
            tracing::warn!(target: "worker", wait_s = 2.5, "queue is long");
            tracing::error!(target: "worker", status = 500, "cuda oom");
        });
        tracing::debug!(target: "worker", request_id = "req-8", "idle");
    })
    .await;

    let records = stored(&server, "sdxl").await;
    assert_eq!(records.len(), 4, "{records:#?}");
    // One stream a level: the push's streams come in whichever order.
    let by_message = |message: &str| {
        records
            .iter()
            .find(|record| record["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {records:#?}"))
    };
    let (loaded, slow) = (by_message("model loaded"), by_message("queue is long"));
    let (oom, idle) = (by_message("cuda oom"), by_message("idle"));
    for record in &records {
        assert_eq!(record["app"], "sdxl", "{record}");
        assert_eq!(record["runner"], "pod-1");
        assert_eq!(record["stream"], "stdout");
        let fields = &record["fields"];
        // Labels that are not tailwater's are fields; the level label is
        // the level, not a field.
        assert_eq!(fields["env"], "prod");
        assert!(fields.get("level").is_none(), "{fields}");
        // The line's own keys: the extra field, and where it was written.
        assert_eq!(fields["pid"], "4242");
        assert_eq!(fields["_target"], "worker");
        assert_eq!(fields["_file"], "crates/server/tests/loki_rust_client.rs");
        assert!(fields["_line"].is_u64(), "{fields}");
        assert!(fields.get("message").is_none(), "{fields}");
        assert!(fields.get("request_id").is_none(), "{fields}");
        let ts: jiff::Timestamp = record["ts"].as_str().unwrap().parse().unwrap();
        assert!(jiff::Timestamp::now().duration_since(ts).as_secs() < 60);
    }
    let summary = |record: &Value| {
        (
            record["level"].clone(),
            record["message"].clone(),
            record["request_id"].clone(),
        )
    };
    assert_eq!(
        summary(loaded),
        (json!("info"), json!("model loaded"), Value::Null)
    );
    assert_eq!(
        summary(slow),
        (json!("warn"), json!("queue is long"), json!("req-7"))
    );
    assert_eq!(
        summary(oom),
        (json!("error"), json!("cuda oom"), json!("req-7"))
    );
    assert_eq!(
        summary(idle),
        (json!("debug"), json!("idle"), json!("req-8"))
    );
    assert_eq!(loaded["fields"]["gpu"], json!(0));
    assert_eq!(slow["fields"]["wait_s"], json!(2.5));
    assert_eq!(oom["fields"]["status"], json!(500));
    assert_eq!(oom["fields"]["_spans"], json!(["handle"]));
    assert_eq!(loaded["fields"]["_spans"], json!([]));
    // The request's records are found by its id.
    let (status, page) = call(&server, "GET", "/v1/logs?request=req-7", TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 2, "{page}");
}
