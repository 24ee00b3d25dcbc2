//! The corpus's batches as other protocols' bodies, for the server's
//! protocol ingest figures: as a Loki push ([`loki_body`]), and as OTLP/HTTP: each batch one `ExportLogsServiceRequest` of one resource (the
//! runner's labels as `service.*` attributes), its records carrying what
//! the agent's do: time, severity, body, stream, request id, and each
//! field as an attribute. Protobuf, as SDKs send by default.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use tailwater_model::wire::IngestRecord;
use tailwater_model::{Level, Stream};

use crate::corpus::RunnerLabels;

pub fn body(labels: &RunnerLabels, records: &[IngestRecord]) -> Vec<u8> {
    let resource = Resource {
        attributes: vec![
            text("service.name", &labels.app),
            text("service.version", &labels.version),
            text("service.instance.id", &labels.runner),
        ],
        ..Resource::default()
    };
    let log_records = records.iter().map(record).collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                log_records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

fn record(record: &IngestRecord) -> LogRecord {
    let mut attributes = Vec::new();
    if record.stream == Stream::Stderr {
        attributes.push(text("log.iostream", "stderr"));
    }
    if let Some(request) = &record.request_id {
        attributes.push(text("request_id", request));
    }
    attributes.extend(
        record
            .fields
            .to_map()
            .into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value: Some(any(value)),
                ..KeyValue::default()
            }),
    );
    LogRecord {
        time_unix_nano: u64::try_from(record.ts.as_nanosecond()).unwrap_or(0),
        severity_number: match record.level {
            Level::Trace => 1,
            Level::Debug => 5,
            Level::Info => 9,
            Level::Warn => 13,
            Level::Error => 17,
            Level::Fatal => 21,
        },
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(record.message.clone())),
        }),
        attributes,
        ..LogRecord::default()
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// A field's value as an attribute's: numbers and booleans as themselves,
/// anything nested as its JSON text.
fn any(value: Value) -> AnyValue {
    let value = match value {
        Value::String(text) => any_value::Value::StringValue(text),
        Value::Bool(flag) => any_value::Value::BoolValue(flag),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => any_value::Value::IntValue(integer),
            None => any_value::Value::DoubleValue(number.as_f64().unwrap_or(0.0)),
        },
        other => any_value::Value::StringValue(other.to_string()),
    };
    AnyValue { value: Some(value) }
}

/// A batch's raw lines as a Loki client pushes them: one stream labelled
/// with the runner's labels, each line with its time, as snappy protobuf
/// (Loki's `PushRequest`, as the server's own encoder writes it).
pub fn loki_body(labels: &RunnerLabels, lines: &[(i128, String)]) -> Vec<u8> {
    let quoted = |value: &str| value.replace('\\', "\\\\").replace('"', "\\\"");
    let stream = format!(
        "{{app=\"{}\", version=\"{}\", runner=\"{}\"}}",
        quoted(&labels.app),
        quoted(&labels.version),
        quoted(&labels.runner)
    );
    let entries: Vec<(i128, &str)> = lines
        .iter()
        .map(|(ts, line)| (*ts, line.as_str()))
        .collect();
    tailwater_server::protocols::loki::encode(&[(stream.as_str(), &entries)])
}
