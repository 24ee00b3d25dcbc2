//! A batch of records as each drain format writes it.
//!
//! - `ndjson`: one record a line, the API's record shape (`LogRecord`,
//!   with its id), `application/x-ndjson`.
//! - `otlp`: OTLP/HTTP logs in protobuf: a resource per app, version and
//!   runner (`service.name`, `service.version`, `service.instance.id`),
//!   each record's level as its severity, its message as its body, its
//!   stream (`log.iostream`), request id, boot, id (`log.record.uid`, so
//!   a receiver that deduplicates by it stores a batch sent twice once)
//!   and fields as attributes.
//! - `loki`: a Loki push, snappy-compressed protobuf: a stream per app,
//!   version, runner, stream and level; the message as the line; request
//!   id, boot, id and fields as structured metadata.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord as OtlpRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value;
use tailwater_model::wire::DrainFormat;
use tailwater_model::{Level, LogRecord};

use crate::protocols::loki::{encode_streams, label_set, OutEntry, OutStream};

/// The `Content-Type` of a format's bodies.
pub fn content_type(format: DrainFormat) -> &'static str {
    match format {
        DrainFormat::Ndjson => "application/x-ndjson",
        DrainFormat::Otlp | DrainFormat::Loki => "application/x-protobuf",
    }
}

/// The body of one delivery.
pub fn encode(format: DrainFormat, records: &[LogRecord]) -> Vec<u8> {
    match format {
        DrainFormat::Ndjson => ndjson(records),
        DrainFormat::Otlp => otlp(records),
        DrainFormat::Loki => loki(records),
    }
}

/// About how many bytes a record takes in a body (for batching by size).
pub fn weight(record: &LogRecord) -> usize {
    let fields: usize = record
        .fields
        .iter()
        .map(|(key, value)| key.len() + value.to_string().len() + 8)
        .sum();
    256 + record.message.len() + record.request_id.as_ref().map_or(0, String::len) + fields
}

fn ndjson(records: &[LogRecord]) -> Vec<u8> {
    let mut body = Vec::new();
    for record in records {
        serde_json::to_writer(&mut body, record).expect("a record serializes");
        body.push(b'\n');
    }
    body
}

fn severity(level: Level) -> i32 {
    match level {
        Level::Trace => 1,
        Level::Debug => 5,
        Level::Info => 9,
        Level::Warn => 13,
        Level::Error => 17,
        Level::Fatal => 21,
    }
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn attribute(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::String(text) => any_value::Value::StringValue(text.clone()),
        Value::Bool(flag) => any_value::Value::BoolValue(*flag),
        Value::Number(number) => match number.as_i64() {
            Some(int) => any_value::Value::IntValue(int),
            None => any_value::Value::DoubleValue(number.as_f64().unwrap_or(f64::NAN)),
        },
        other => any_value::Value::StringValue(other.to_string()),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn nanos(record: &LogRecord) -> u64 {
    u64::try_from(record.ts.as_nanosecond()).unwrap_or(0)
}

fn otlp(records: &[LogRecord]) -> Vec<u8> {
    let mut resources: BTreeMap<(&str, &str, &str), Vec<OtlpRecord>> = BTreeMap::new();
    for record in records {
        let mut attributes = vec![
            text("log.iostream", record.stream.as_str()),
            text("log.record.uid", &record.id),
            text("boot", &record.boot),
            text("source", record.source.as_str()),
        ];
        if let Some(request) = &record.request_id {
            attributes.push(text("request_id", request));
        }
        attributes.extend(
            record
                .fields
                .iter()
                .map(|(key, value)| attribute(key, value)),
        );
        let out = OtlpRecord {
            time_unix_nano: nanos(record),
            observed_time_unix_nano: nanos(record),
            severity_number: severity(record.level),
            severity_text: record.level.as_str().to_owned(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(record.message.clone())),
            }),
            attributes,
            ..Default::default()
        };
        resources
            .entry((&record.app, &record.version, &record.runner))
            .or_default()
            .push(out);
    }
    let request = ExportLogsServiceRequest {
        resource_logs: resources
            .into_iter()
            .map(|((app, version, runner), log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", app),
                        text("service.version", version),
                        text("service.instance.id", runner),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    prost::Message::encode_to_vec(&request)
}

type StreamKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn loki(records: &[LogRecord]) -> Vec<u8> {
    let mut streams: BTreeMap<StreamKey, Vec<OutEntry>> = BTreeMap::new();
    for record in records {
        let key = (
            record.app.as_str(),
            record.version.as_str(),
            record.runner.as_str(),
            record.stream.as_str(),
            record.level.as_str(),
        );
        let mut metadata = vec![
            ("id".to_owned(), record.id.clone()),
            ("boot".to_owned(), record.boot.clone()),
        ];
        if let Some(request) = &record.request_id {
            metadata.push(("request_id".to_owned(), request.clone()));
        }
        metadata.extend(record.fields.iter().map(|(key, value)| {
            let value = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), value)
        }));
        streams.entry(key).or_default().push((
            record.ts.as_nanosecond(),
            record.message.clone(),
            metadata,
        ));
    }
    let streams = streams
        .into_iter()
        .map(
            |((app, version, runner, stream, level), entries)| OutStream {
                labels: label_set(&[
                    ("app", app),
                    ("version", version),
                    ("runner", runner),
                    ("stream", stream),
                    ("level", level),
                ]),
                entries,
            },
        )
        .collect();
    encode_streams(streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::{loki as loki_in, otlp as otlp_in};

    fn record(message: &str) -> LogRecord {
        LogRecord {
            id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
            position: 7,
            ts: "2026-01-02T03:04:05.123456789Z".parse().unwrap(),
            tenant: "acme".into(),
            app: "sdxl".into(),
            version: "v1".into(),
            runner: "r-1".into(),
            boot: "b".into(),
            seq: 0,
            source: Default::default(),
            stream: tailwater_model::Stream::Stderr,
            level: Level::Warn,
            request_id: Some("req-1".into()),
            message: message.into(),
            fields: serde_json::json!({"gpu": 3, "model": "x"})
                .as_object()
                .unwrap()
                .clone(),
            invalid_utf8: false,
        }
    }

    #[test]
    fn ndjson_is_the_api_record_shape() {
        let body = encode(DrainFormat::Ndjson, &[record("one"), record("two")]);
        let lines: Vec<LogRecord> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].message, "two");
        assert_eq!(lines[0].id, "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn otlp_reads_back_as_tailwater_reads_otlp() {
        let body = encode(DrainFormat::Otlp, &[record("hello")]);
        let request = otlp_in::decode(&body, otlp_in::Encoding::Protobuf).unwrap();
        let sources = otlp_in::resources(request, jiff::Timestamp::now());
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].app.as_deref(), Some("sdxl"));
        assert_eq!(sources[0].runner.as_deref(), Some("r-1"));
        let got = &sources[0].records[0];
        assert_eq!(got.message, "hello");
        assert_eq!(got.level, Level::Warn);
        assert_eq!(got.request_id.as_deref(), Some("req-1"));
        assert_eq!(got.uid.as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAA"));
        assert_eq!(got.ts, record("").ts);
    }

    #[test]
    fn loki_reads_back_as_tailwater_reads_loki() {
        let body = encode(DrainFormat::Loki, &[record("say \"hi\"")]);
        let streams = loki_in::decode(&body, loki_in::Encoding::SnappyProtobuf, 1 << 20).unwrap();
        let sources = loki_in::sources(streams, jiff::Timestamp::now());
        assert_eq!(sources[0].app.as_deref(), Some("sdxl"));
        let got = &sources[0].records[0];
        assert_eq!(got.message, "say \"hi\"");
        assert_eq!(got.level, Level::Warn);
        assert_eq!(got.ts, record("").ts);
        let fields = got.fields.to_map();
        assert_eq!(fields["request_id"], "req-1");
        assert_eq!(fields["gpu"], "3");
    }
}
