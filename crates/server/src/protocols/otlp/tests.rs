use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use serde_json::json;

use super::*;

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.into())),
    })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
        ..KeyValue::default()
    }
}

fn request(resource: Vec<KeyValue>, records: Vec<OtlpRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(OtlpResource {
                attributes: resource,
                ..OtlpResource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app.worker".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn now() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

#[test]
fn labels_come_from_the_resource_and_the_rest_is_fields() {
    let record = OtlpRecord {
        time_unix_nano: 1_796_637_600_123_456_789,
        severity_number: 17,
        severity_text: "INFO".into(),
        body: text("cuda out of memory"),
        attributes: vec![
            kv("log.iostream", text("stderr")),
            kv("requestId", text("req-7")),
            kv(
                "attempt",
                Some(AnyValue {
                    value: Some(any_value::Value::IntValue(3)),
                }),
            ),
            kv("log.record.uid", text("01JEXAMPLE")),
        ],
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        ..OtlpRecord::default()
    };
    let resources = resources(
        request(
            vec![
                kv("service.name", text("sdxl")),
                kv("service.version", text("v3")),
                kv("host.name", text("gpu-box")),
                kv("service.instance.id", text("pod-1")),
                kv("cloud.region", text("eu-west-1")),
            ],
            vec![record],
        ),
        now(),
    );
    let [resource] = &resources[..] else {
        panic!("{resources:?}")
    };
    assert_eq!(resource.app.as_deref(), Some("sdxl"));
    assert_eq!(resource.version, "v3");
    // service.instance.id comes before host.name, which stays a field.
    assert_eq!(resource.runner.as_deref(), Some("pod-1"));
    let [record] = &resource.records[..] else {
        panic!("{resource:?}")
    };
    assert_eq!(record.ts.as_nanosecond(), 1_796_637_600_123_456_789);
    // The number decides, not the text.
    assert_eq!(record.level, Level::Error);
    assert_eq!(record.stream, Stream::Stderr);
    assert_eq!(record.request_id.as_deref(), Some("req-7"));
    assert_eq!(record.message, "cuda out of memory");
    assert_eq!(record.uid.as_deref(), Some("01JEXAMPLE"));
    assert_eq!(
        serde_json::Value::Object(record.fields.to_map()),
        json!({
            "host.name": "gpu-box", "cloud.region": "eu-west-1", "attempt": 3,
            "log.record.uid": "01JEXAMPLE",
            "trace_id": "ab".repeat(16), "span_id": "cd".repeat(8),
            "otel.scope.name": "app.worker"
        })
    );
}

#[test]
fn severities_map_by_range_and_text_only_when_unset() {
    let cases = [
        (1, "", Level::Trace),
        (4, "", Level::Trace),
        (5, "", Level::Debug),
        (9, "", Level::Info),
        (13, "", Level::Warn),
        (16, "", Level::Warn),
        (17, "", Level::Error),
        (21, "", Level::Fatal),
        (24, "", Level::Fatal),
        (0, "WARN", Level::Warn),
        (0, "error", Level::Error),
        (0, "", Level::Info),
        (0, "loud", Level::Info),
        // Pino's 50 is not OTLP's: out of range, so the text decides.
        (50, "", Level::Info),
        (-3, "fatal", Level::Fatal),
    ];
    for (number, text, level) in cases {
        assert_eq!(level_of(number, text), level, "{number} {text:?}");
    }
}

#[test]
fn missing_labels_times_and_bodies_have_fallbacks() {
    let records = vec![
        OtlpRecord {
            observed_time_unix_nano: 1_796_637_600_000_000_000,
            body: Some(AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("msg", text("structured"))],
                })),
            }),
            ..OtlpRecord::default()
        },
        OtlpRecord::default(),
    ];
    let resources = resources(
        request(
            vec![
                kv("service.name", text("unknown_service:python")),
                kv("faas.invocation_id", text("inv-1")),
            ],
            records,
        ),
        now(),
    );
    let resource = &resources[0];
    // The SDKs' stand-in names no app; no instance names no runner.
    assert_eq!(
        (resource.app.as_deref(), resource.runner.as_deref()),
        (None, None)
    );
    let [first, second] = &resource.records[..] else {
        panic!()
    };
    assert_eq!(first.ts.as_nanosecond(), 1_796_637_600_000_000_000);
    assert_eq!(first.message, r#"{"msg":"structured"}"#);
    assert_eq!(first.request_id.as_deref(), Some("inv-1"));
    assert_eq!((second.ts, second.message.as_str()), (now(), ""));
    assert_eq!(second.level, Level::Info);
}

#[test]
fn json_bodies_use_hex_ids_and_string_integers() {
    let body = json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": "1796637600000000001",
            "severityNumber": 13,
            "body": {"stringValue": "slow"},
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
            "attributes": [{"key": "n", "value": {"intValue": "42"}}]
        }]}]
    }]});
    let request = decode(body.to_string().as_bytes(), Encoding::Json).unwrap();
    let resources = resources(request, now());
    let record = &resources[0].records[0];
    assert_eq!(record.ts.as_nanosecond(), 1_796_637_600_000_000_001);
    assert_eq!(record.level, Level::Warn);
    let fields = record.fields.to_map();
    assert_eq!(fields["trace_id"], "5b8efff798038103d269b633813fc60c");
    assert_eq!(fields["span_id"], "eee19b7ec3c1b174");
    assert_eq!(fields["n"], 42);
}

#[test]
fn bad_bodies_get_clear_errors_and_content_types_are_read() {
    let error = decode(b"\xff\xff\xff", Encoding::Protobuf).unwrap_err();
    assert!(error.starts_with("invalid OTLP protobuf body"), "{error}");
    let error = decode(b"{\"resourceLogs\": 3}", Encoding::Json).unwrap_err();
    assert!(error.starts_with("invalid OTLP JSON body"), "{error}");
    assert_eq!(
        Encoding::of_content_type("application/x-protobuf"),
        Some(Encoding::Protobuf)
    );
    assert_eq!(
        Encoding::of_content_type("Application/JSON; charset=utf-8"),
        Some(Encoding::Json)
    );
    assert_eq!(Encoding::of_content_type("text/plain"), None);
}
