//! Rust's OpenTelemetry SDK as an app uses it, against a real server on
//! loopback: `tracing` events through `opentelemetry-appender-tracing`
//! into an `SdkLoggerProvider` whose batch processor exports with
//! `opentelemetry-otlp`'s OTLP/HTTP protobuf exporter (gzip), sending an
//! ingest token. What is stored is checked field by field through
//! `GET /v1/logs`. The token decides the app: a service left unnamed is
//! the token's app, and one naming another app is refused. On a full disk
//! the SDK is told to send again, and does: nothing is lost.

mod common;

use std::collections::HashMap;

use common::{call, TOKEN};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_otlp::{Compression, Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{json, Value};
use tailwater_server::RunningServer;
use tracing_subscriber::layer::SubscriberExt;

/// A kilobyte of message.
const PAD: &str = concat!(
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN_ID: &str = "00f067aa0ba902b7";

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

/// Runs `emit` with the SDK's tracing bridge as the thread's subscriber,
/// its resource holding `resource`, exporting to `server` with `token`;
/// then shuts the provider down, which exports what its batch holds. On
/// a thread of its own: the exporter's client blocks.
async fn send_through_sdk(
    url: String,
    token: &str,
    resource: &[(&'static str, &'static str)],
    emit: impl FnOnce() + Send + 'static,
) {
    let endpoint = format!("{url}/v1/logs");
    let headers = HashMap::from([("authorization".to_owned(), format!("Bearer {token}"))]);
    let resource = Resource::builder()
        .with_attributes(resource.iter().map(|(k, v)| KeyValue::new(*k, *v)))
        .build();
    tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_headers(headers)
            .with_compression(Compression::Gzip)
            .build()
            .expect("the exporter builds");
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build();
        let subscriber =
            tracing_subscriber::registry().with(OpenTelemetryTracingBridge::new(&provider));
        tracing::subscriber::with_default(subscriber, emit);
        provider
            .shutdown()
            .expect("the provider exports and shuts down");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn tracing_events_through_the_sdk_are_stored_field_by_field() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "sdxl").await;
    let resource = [
        ("service.name", "sdxl"),
        ("service.version", "v3"),
        ("service.instance.id", "pod-1"),
        ("cloud.region", "eu"),
    ];
    send_through_sdk(server.url(), &token, &resource, || {
        // Inside a span of a trace (as a request from a traced caller is):
        // the SDK stamps each record with its ids.
        let span = SpanContext::new(
            TraceId::from_hex(TRACE_ID).unwrap(),
            SpanId::from_hex(SPAN_ID).unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let in_trace = Context::current().with_remote_span_context(span).attach();
        tracing::info!(target: "worker", request_id = "req-1", gpu = 0, "loading weights");
        tracing::warn!(target: "worker", slow = true, wait_s = 2.5, "queue is long");
        tracing::error!(target: "worker", request_id = "req-1", status = 500, "cuda oom");
        drop(in_trace);
        tracing::debug!(target: "worker", "idle");
    })
    .await;

    let records = stored(&server, "sdxl").await;
    let [loading, slow, oom, idle] = &records[..] else {
        panic!("{records:#?}")
    };
    for record in &records {
        // The labels, from the resource.
        assert_eq!(record["app"], "sdxl", "{record}");
        assert_eq!(record["version"], "v3");
        assert_eq!(record["runner"], "pod-1");
        assert_eq!(record["stream"], "stdout");
        // The resource's other attributes, and the SDK's own, are fields.
        let fields = &record["fields"];
        assert_eq!(fields["cloud.region"], "eu");
        assert_eq!(fields["telemetry.sdk.language"], "rust");
        assert_eq!(fields["telemetry.sdk.name"], "opentelemetry");
        assert!(fields["telemetry.sdk.version"].is_string(), "{fields}");
        // The tracing target is the instrumentation scope; the event's
        // name, where it was written.
        assert_eq!(fields["otel.scope.name"], "worker");
        let event = fields["event_name"].as_str().unwrap();
        assert!(
            event.starts_with("event ") && event.contains("otlp_rust_client.rs:"),
            "{event}"
        );
        for label in ["service.name", "service.version", "service.instance.id"] {
            assert!(fields.get(label).is_none(), "{label} in {fields}");
        }
        assert!(fields.get("request_id").is_none(), "{fields}");
        // Stamped when the SDK took it (the bridge sets no event time).
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
        summary(loading),
        (json!("info"), json!("loading weights"), json!("req-1"))
    );
    assert_eq!(
        summary(slow),
        (json!("warn"), json!("queue is long"), Value::Null)
    );
    assert_eq!(
        summary(oom),
        (json!("error"), json!("cuda oom"), json!("req-1"))
    );
    assert_eq!(summary(idle), (json!("debug"), json!("idle"), Value::Null));
    // Attributes as fields, with their types.
    assert_eq!(loading["fields"]["gpu"], json!(0));
    assert_eq!(slow["fields"]["slow"], json!(true));
    assert_eq!(slow["fields"]["wait_s"], json!(2.5));
    assert_eq!(oom["fields"]["status"], json!(500));
    // The trace's ids on the records made inside it, none outside.
    for record in [loading, slow, oom] {
        assert_eq!(record["fields"]["trace_id"], TRACE_ID);
        assert_eq!(record["fields"]["span_id"], SPAN_ID);
    }
    assert!(idle["fields"].get("trace_id").is_none(), "{idle}");
    assert!(idle["fields"].get("span_id").is_none(), "{idle}");
    // The request's records are found by its id.
    let (status, page) = call(&server, "GET", "/v1/logs?request=req-1", TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 2, "{page}");
}

#[tokio::test]
async fn the_ingest_token_decides_the_app() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "sdxl").await;
    // An app that names no service: the SDK says `unknown_service…`, and
    // the token's app is taken.
    send_through_sdk(server.url(), &token, &[], || {
        tracing::info!(target: "worker", "unnamed service");
    })
    .await;
    let records = stored(&server, "sdxl").await;
    let [unnamed] = &records[..] else {
        panic!("{records:#?}")
    };
    assert_eq!(unnamed["message"], "unnamed service");
    let runner = unnamed["runner"].as_str().unwrap();
    assert!(runner.starts_with("token-"), "{runner}");

    // A resource naming another app than the token's is refused, and
    // nothing of it is stored, under either app.
    send_through_sdk(server.url(), &token, &[("service.name", "whisper")], || {
        tracing::info!(target: "worker", "not mine to send");
    })
    .await;
    assert_eq!(stored(&server, "whisper").await, Vec::<Value>::new());
    assert_eq!(stored(&server, "sdxl").await, records);
    // ... and the refusal is counted under the token's own app (the name
    // the sender chose is no metric label).
    let metrics = common::scrape(&server, Some(TOKEN)).await;
    let refused =
        r#"tailwater_ingest_refused_lines_total{app="sdxl",reason="other_app",tenant="default"}"#;
    assert_eq!(metrics.get(refused), Some(&1.0), "{metrics:#?}");
}

#[tokio::test]
async fn on_a_full_disk_the_sdk_is_told_to_send_again_and_nothing_is_lost() {
    let disk = common::tmpfs::Tmpfs::mount("16m");
    let (server, _admin) = common::server_in(&disk.path().join("data"), TOKEN, |_| {}).await;
    let token = ingest_token(&server, "sdxl").await;
    let resource = [("service.name", "sdxl"), ("service.instance.id", "pod-1")];
    send_through_sdk(server.url(), &token, &resource, || {
        tracing::info!(target: "worker", "before the disk filled");
    })
    .await;

    let filler = common::tmpfs::fill(&disk.path().join("filler"));
    let (url, sender_token) = (server.url(), token.clone());
    let sending = tokio::spawn(async move {
        // Enough that the store needs pages it cannot get: 200 KiB.
        send_through_sdk(url, &sender_token, &resource, || {
            for n in 0..200 {
                tracing::info!(target: "worker", "while the disk was full {n} {}", PAD);
            }
        })
        .await
    });
    // The export is refused (a 503 with a Retry-After the SDK honours:
    // OTLP clients send nothing again after a 507) and counted ...
    let refused =
        r#"tailwater_ingest_refused_batches_total{app="sdxl",reason="disk_full",tenant="default"}"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !common::scrape(&server, Some(TOKEN))
        .await
        .contains_key(refused)
    {
        assert!(std::time::Instant::now() < deadline, "no refusal counted");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The answer itself, as any client sees it.
    let records: Vec<Value> = (0..200)
        .map(|_| json!({"body": {"stringValue": PAD}}))
        .collect();
    let body = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]});
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.url()))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "4");
    let status: Value = answer.json().await.unwrap();
    assert_eq!(status["code"], 14, "UNAVAILABLE: {status}");
    // ... and once there is space again, the SDK's next try is stored.
    std::fs::remove_file(filler).unwrap();
    sending.await.unwrap();
    let messages: Vec<String> = stored(&server, "sdxl")
        .await
        .iter()
        .map(|record| record["message"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = std::iter::once("before the disk filled".to_owned())
        .chain((0..200).map(|n| format!("while the disk was full {n} {PAD}")))
        .collect();
    assert_eq!(messages, expected, "every record, once, in order");
    server.shutdown().await.unwrap();
}
