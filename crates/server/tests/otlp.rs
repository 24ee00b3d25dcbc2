//! `POST /v1/logs`, OTLP/HTTP logs, over real HTTP: protobuf and JSON,
//! gzip and zstd; what is stored, field by field, through the read API;
//! records a client sends again with their `log.record.uid` stored once;
//! and every refusal in the protocol's own shape (a `google.rpc.Status`),
//! with nothing stored.

mod common;

use std::io::Write;

use common::{call, TOKEN};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};
use tailwater_server::RunningServer;

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: text(value),
        ..KeyValue::default()
    }
}

/// Attributes as `(key, text)` pairs.
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// A resource's records: `(message, severity number, attributes)` each.
fn resource(labels: Pairs, records: &[(&str, i32, Pairs)]) -> ResourceLogs {
    let now = jiff::Timestamp::now().as_nanosecond() as u64;
    ResourceLogs {
        resource: Some(Resource {
            attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
            ..Resource::default()
        }),
        scope_logs: vec![ScopeLogs {
            log_records: records
                .iter()
                .enumerate()
                .map(|(n, (message, severity, attributes))| LogRecord {
                    time_unix_nano: now + n as u64,
                    severity_number: *severity,
                    body: text(message),
                    attributes: attributes.iter().map(|(k, v)| kv(k, v)).collect(),
                    trace_id: vec![0x5b; 16],
                    ..LogRecord::default()
                })
                .collect(),
            ..ScopeLogs::default()
        }],
        ..ResourceLogs::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// `POST /v1/logs` with `headers`: the status, `Retry-After` and body.
async fn post(
    server: &RunningServer,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/logs", server.url()))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.bytes().await.unwrap().to_vec(),
    )
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

fn protobuf(resources: Vec<ResourceLogs>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: resources,
    }
    .encode_to_vec()
}

/// The error of a protobuf answer: its `google.rpc.Status` code and message.
fn status_of(body: &[u8]) -> (i32, String) {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = Status::decode(body)
        .unwrap_or_else(|_| panic!("a google.rpc.Status: {}", String::from_utf8_lossy(body)));
    (status.code, status.message)
}

/// Every record of `app`, oldest first, as the API returns them.
async fn stored(server: &RunningServer, app: &str) -> Vec<Value> {
    let path = format!("/v1/logs?app={app}&direction=forward&limit=1000");
    let (status, page) = call(server, "GET", &path, TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().unwrap().clone()
}

async fn ingest_token(server: &RunningServer, app: &str) -> String {
    let body = json!({"scope": "ingest", "tenant": "default", "app": app});
    let (status, created) = call(server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn protobuf_gzip_resources_are_stored_with_their_labels_and_fields() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let body = protobuf(vec![
        resource(
            &[
                ("service.name", "sdxl"),
                ("service.version", "v3"),
                ("service.instance.id", "pod-1"),
                ("cloud.region", "eu"),
            ],
            &[
                ("loading", 9, &[("request_id", "req-1")]),
                ("cuda oom", 17, &[("log.iostream", "stderr"), ("gpu", "0")]),
            ],
        ),
        resource(&[("service.name", "whisper")], &[("hello", 0, &[])]),
    ]);
    let (status, _, answer) = post(
        &server,
        Some(TOKEN),
        &[PROTOBUF, ("content-encoding", "gzip")],
        gzip(&body),
    )
    .await;
    assert_eq!(status, 200);
    let answer = ExportLogsServiceResponse::decode(&answer[..]).unwrap();
    assert_eq!(answer.partial_success, None);

    let sdxl = stored(&server, "sdxl").await;
    let [loading, oom] = &sdxl[..] else {
        panic!("{sdxl:?}")
    };
    let day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for record in [loading, oom] {
        assert_eq!(record["version"], "v3");
        assert_eq!(record["runner"], "pod-1");
        assert_eq!(record["boot"], format!("otlp-{day}"));
        assert_eq!(record["fields"]["cloud.region"], "eu");
        assert_eq!(record["fields"]["trace_id"], "5b".repeat(16));
    }
    assert_eq!(
        (
            &loading["message"],
            &loading["level"],
            &loading["request_id"]
        ),
        (&json!("loading"), &json!("info"), &json!("req-1"))
    );
    assert_eq!(
        (&oom["message"], &oom["level"], &oom["stream"]),
        (&json!("cuda oom"), &json!("error"), &json!("stderr"))
    );
    assert_eq!(oom["fields"]["gpu"], "0");
    // Numbered one after the other by the server.
    assert_eq!(loading["seq"], 0);
    assert_eq!(oom["seq"], 1);
    // A resource without an instance is its token's runner.
    let whisper = stored(&server, "whisper").await;
    assert!(
        whisper[0]["runner"].as_str().unwrap().starts_with("token-"),
        "{whisper:?}"
    );
}

#[tokio::test]
async fn json_and_zstd_bodies_and_records_sent_again_are_stored_once() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let now = jiff::Timestamp::now().as_nanosecond().to_string();
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": now, "severityNumber": 13, "body": {"stringValue": "slow"},
             "spanId": "eee19b7ec3c1b174",
             "attributes": [{"key": "log.record.uid", "value": {"stringValue": "u-1"}},
                            {"key": "n", "value": {"intValue": "42"}}]},
            {"timeUnixNano": now, "body": {"stringValue": "plain"},
             "attributes": [{"key": "log.record.uid", "value": {"stringValue": "u-2"}}]}
        ]}]
    }]})
    .to_string();
    let zstd = zstd::encode_all(body.as_bytes(), 3).unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "zstd"),
    ];
    for _ in 0..2 {
        let (status, _, answer) = post(&server, Some(TOKEN), &headers, zstd.clone()).await;
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert!(
            answer.get("partialSuccess").is_none_or(Value::is_null),
            "{answer}"
        );
    }
    let records = stored(&server, "api").await;
    assert_eq!(records.len(), 2, "sent twice, stored once: {records:?}");
    assert_eq!(records[0]["level"], "warn");
    assert_eq!(records[0]["fields"]["n"], 42);
    assert_eq!(records[0]["fields"]["span_id"], "eee19b7ec3c1b174");
}

#[tokio::test]
async fn bad_requests_get_the_protocols_errors_and_store_nothing() {
    let (_dir, server, _admin) = common::server_with(|config| {
        config.max_batch_bytes = 64 * 1024;
    })
    .await;
    let api_token = ingest_token(&server, "api").await;
    let good = protobuf(vec![resource(
        &[("service.name", "api")],
        &[("ok", 9, &[])],
    )]);
    let bomb = gzip(&vec![b'a'; 1 << 20]);
    // (what, token, headers, body, HTTP status, gRPC code, the message says)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        i32,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no token",
            None,
            vec![PROTOBUF],
            good.clone(),
            401,
            16,
            "token",
        ),
        (
            "bad protobuf",
            Some(TOKEN),
            vec![PROTOBUF],
            b"\xff\xff\xff\xff".to_vec(),
            400,
            3,
            "invalid OTLP protobuf body",
        ),
        (
            "bad gzip",
            Some(TOKEN),
            vec![PROTOBUF, ("content-encoding", "gzip")],
            good.clone(),
            400,
            3,
            "invalid gzip body",
        ),
        (
            "a gzip bomb",
            Some(TOKEN),
            vec![PROTOBUF, ("content-encoding", "gzip")],
            bomb,
            413,
            3,
            "--max-batch-bytes",
        ),
        (
            "text",
            Some(TOKEN),
            vec![("content-type", "text/plain")],
            good.clone(),
            415,
            12,
            "application/x-protobuf",
        ),
        (
            "brotli",
            Some(TOKEN),
            vec![PROTOBUF, ("content-encoding", "br")],
            good.clone(),
            415,
            12,
            "gzip, deflate, zstd or none",
        ),
        (
            "another app's token",
            Some(&api_token),
            vec![PROTOBUF],
            protobuf(vec![resource(&[("service.name", "web")], &[("x", 9, &[])])]),
            403,
            7,
            "web",
        ),
        (
            "no app at all",
            Some(TOKEN),
            vec![PROTOBUF],
            protobuf(vec![resource(&[], &[("x", 9, &[])])]),
            400,
            3,
            "service.name",
        ),
    ];
    for (name, token, headers, body, http, grpc, says) in cases {
        let (status, _, answer) = post(&server, token, &headers, body).await;
        assert_eq!(status, http, "{name}: {}", String::from_utf8_lossy(&answer));
        let (code, message) = status_of(&answer);
        assert_eq!(code, grpc, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
    }
    let (_, page) = call(&server, "GET", "/v1/logs?limit=10", TOKEN, None).await;
    assert_eq!(page["records"], json!([]), "nothing stored");
    // The resource that named no app is counted as refused.
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains(
            r#"tailwater_ingest_refused_lines_total{tenant="default",app="",reason="no_app"} 1"#
        ),
        "{metrics}"
    );

    // An app token's own app is taken when the resource names none; a
    // resource of another app in the same request is refused alone.
    let mixed = protobuf(vec![
        resource(&[], &[("mine", 9, &[])]),
        resource(
            &[("service.name", "web")],
            &[("theirs", 9, &[]), ("too", 9, &[])],
        ),
    ]);
    let (status, _, answer) = post(&server, Some(&api_token), &[PROTOBUF], mixed).await;
    assert_eq!(status, 200);
    let partial = ExportLogsServiceResponse::decode(&answer[..])
        .unwrap()
        .partial_success
        .expect("a partial success");
    assert_eq!(partial.rejected_log_records, 2);
    assert!(partial.error_message.contains("web"), "{partial:?}");
    let api = stored(&server, "api").await;
    assert_eq!(api.len(), 1);
    assert_eq!(api[0]["message"], "mine");
}

#[tokio::test]
async fn over_a_rate_limit_the_answer_is_429_with_retry_after() {
    let (_dir, server, _admin) = common::server_with(|config| {
        config.limits.app_rate.lines_per_sec = Some(2);
    })
    .await;
    let many = protobuf(vec![resource(
        &[("service.name", "api")],
        &[
            ("1", 9, &[]),
            ("2", 9, &[]),
            ("3", 9, &[]),
            ("4", 9, &[]),
            ("5", 9, &[]),
        ],
    )]);
    // A second's worth goes at once; the next request finds the rate spent.
    let (status, _, _) = post(&server, Some(TOKEN), &[PROTOBUF], many.clone()).await;
    assert_eq!(status, 200);
    let stored_first = stored(&server, "api").await.len();
    let (status, retry_after, answer) = post(&server, Some(TOKEN), &[PROTOBUF], many).await;
    assert_eq!(status, 429);
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!(seconds >= 1);
    assert_eq!(status_of(&answer).0, 8);
    assert_eq!(
        stored(&server, "api").await.len(),
        stored_first,
        "nothing more stored"
    );
}
