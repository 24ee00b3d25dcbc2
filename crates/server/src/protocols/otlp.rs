//! OTLP logs (`ExportLogsServiceRequest`, protobuf or its JSON form) into
//! ingest batches: one a resource, holding its labels, every record mapped
//! as the table below says. Pure decoding: the HTTP edge is
//! `api::otlp`, the numbering of records `ingest::identity`.
//!
//! | tailwater | from |
//! |---|---|
//! | app | `service.name` (not the SDKs' `unknown_service…` stand-in), else `faas.name`, else the token's app |
//! | version | `service.version`, else `faas.version` |
//! | runner | `service.instance.id`, else `faas.instance`, `host.name`, `k8s.pod.name`, `container.id`; else the token's id |
//! | time | `timeUnixNano`, else `observedTimeUnixNano`, else arrival |
//! | level | `severityNumber` by its ranges (1–4 trace, 5–8 debug, 9–12 info, 13–16 warn, 17–20 error, 21–24 fatal); `severityText` only when the number is 0; else info |
//! | stream | the record's `log.iostream` (`stdout`, `stderr`), else stdout |
//! | request | a `request_id` / `requestId` attribute, else `faas.invocation_id` (the record's, then the resource's) |
//! | message | the body: a string as it is, any other value as JSON |
//! | fields | every other record attribute; the resource's that are not labels; `trace_id` and `span_id` (hex); the scope's name as `otel.scope.name`; `event_name` |
//!
//! A record's `log.record.uid` (when a client sends one) is kept as its
//! field and used to store it once when it is sent again.

use jiff::Timestamp;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord as OtlpRecord;
use serde_json::Value;
use tailwater_model::{Fields, FieldsJson, Level, Stream};

use super::{Record, Source};

/// How the body is written: the `Content-Type` of OTLP/HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names; `None` for one OTLP does not
    /// speak.
    pub fn of_content_type(content_type: &str) -> Option<Encoding> {
        match super::media_type(content_type).as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            "application/json" => Some(Encoding::Json),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// The request, read from its (decompressed) body.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, String> {
    match encoding {
        Encoding::Protobuf => prost::Message::decode(body)
            .map_err(|error| format!("invalid OTLP protobuf body: {error}")),
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|error| format!("invalid OTLP JSON body: {error}"))
        }
    }
}

const APP_KEYS: [&str; 2] = ["service.name", "faas.name"];
const VERSION_KEYS: [&str; 2] = ["service.version", "faas.version"];
const RUNNER_KEYS: [&str; 5] = [
    "service.instance.id",
    "faas.instance",
    "host.name",
    "k8s.pod.name",
    "container.id",
];
const REQUEST_KEYS: [&str; 3] = ["request_id", "requestId", "faas.invocation_id"];
const STREAM_KEY: &str = "log.iostream";
const UID_KEY: &str = "log.record.uid";
/// What OpenTelemetry SDKs name a service that was not named.
const UNNAMED_SERVICE: &str = "unknown_service";

/// The request's resources, each with its records mapped; `now` dates
/// records that carry no time.
pub fn resources(request: ExportLogsServiceRequest, now: Timestamp) -> Vec<Source> {
    request
        .resource_logs
        .into_iter()
        .map(|resource_logs| {
            let attributes = resource_logs
                .resource
                .map(|resource| resource.attributes)
                .unwrap_or_default();
            let mut labels = Attributes::new(attributes);
            let app = labels
                .take_text(&APP_KEYS)
                .filter(|app| !app.is_empty() && !app.starts_with(UNNAMED_SERVICE));
            let version = labels.take_text(&VERSION_KEYS).unwrap_or_default();
            let runner = labels.take_text(&RUNNER_KEYS).filter(|r| !r.is_empty());
            let resource_request = labels.take_text(&["faas.invocation_id"]);
            let shared = labels.into_fields();
            let mut records = Vec::new();
            for scope_logs in resource_logs.scope_logs {
                let scope = scope_logs
                    .scope
                    .map(|scope| scope.name)
                    .filter(|name| !name.is_empty());
                for record in scope_logs.log_records {
                    let mut mapped = map_record(record, now, &shared, scope.as_deref());
                    if mapped.request_id.is_none() {
                        mapped.request_id.clone_from(&resource_request);
                    }
                    records.push(mapped);
                }
            }
            Source {
                app,
                version,
                runner,
                records,
            }
        })
        .collect()
}

fn map_record(record: OtlpRecord, now: Timestamp, shared: &Fields, scope: Option<&str>) -> Record {
    let ts = [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|&ns| ns > 0)
        .and_then(|ns| Timestamp::from_nanosecond(i128::from(ns)).ok())
        .unwrap_or(now);
    let level = level_of(record.severity_number, &record.severity_text);
    let mut attributes = Attributes::new(record.attributes);
    let stream = match attributes.take_text(&[STREAM_KEY]).as_deref() {
        Some("stderr") => Stream::Stderr,
        _ => Stream::Stdout,
    };
    let request_id = attributes
        .take_text(&REQUEST_KEYS)
        .filter(|id| !id.is_empty());
    let uid = attributes.text(UID_KEY);
    let mut fields = shared.clone();
    fields.extend(attributes.into_fields());
    if !record.trace_id.is_empty() {
        fields.insert("trace_id".into(), hex::encode(&record.trace_id).into());
    }
    if !record.span_id.is_empty() {
        fields.insert("span_id".into(), hex::encode(&record.span_id).into());
    }
    if let Some(scope) = scope {
        fields.insert("otel.scope.name".into(), scope.into());
    }
    if !record.event_name.is_empty() {
        fields.insert("event_name".into(), record.event_name.into());
    }
    let message = match record.body.and_then(|body| body.value) {
        None => String::new(),
        Some(any_value::Value::StringValue(text)) => text,
        Some(other) => json_of(other).to_string(),
    };
    Record {
        ts,
        level,
        stream,
        request_id,
        message,
        fields: FieldsJson::from_map(&fields),
        uid,
    }
}

/// The level of a severity number by the ranges of the OpenTelemetry log
/// data model, or of the text when the number is unset (0); info when
/// neither says.
pub fn level_of(number: i32, text: &str) -> Level {
    match number {
        1..=4 => Level::Trace,
        5..=8 => Level::Debug,
        9..=12 => Level::Info,
        13..=16 => Level::Warn,
        17..=20 => Level::Error,
        21..=24 => Level::Fatal,
        _ => Level::from_name(text.trim()).unwrap_or(Level::Info),
    }
}

/// Attributes as a list, some taken out as labels, the rest left as fields.
struct Attributes(Vec<KeyValue>);

impl Attributes {
    fn new(attributes: Vec<KeyValue>) -> Attributes {
        Attributes(attributes)
    }

    /// The text of the first of `keys` present (a string, or a number or
    /// boolean written as text), taken out.
    fn take_text(&mut self, keys: &[&str]) -> Option<String> {
        let (index, text) = keys.iter().find_map(|key| {
            let index = self.0.iter().position(|kv| kv.key == *key)?;
            let text = text_of(self.0[index].value.as_ref()?)?;
            Some((index, text))
        })?;
        self.0.remove(index);
        Some(text)
    }

    /// The text of `key`, left in place.
    fn text(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| text_of(kv.value.as_ref()?))
    }

    fn into_fields(self) -> Fields {
        self.0
            .into_iter()
            .filter(|kv| !kv.key.is_empty())
            .map(|kv| {
                let value = kv
                    .value
                    .and_then(|value| value.value)
                    .map_or(Value::Null, json_of);
                (kv.key, value)
            })
            .collect()
    }
}

fn text_of(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        any_value::Value::IntValue(number) => Some(number.to_string()),
        any_value::Value::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// An attribute value as JSON: bytes as base64, a key-value list as an
/// object, a double that JSON cannot write (NaN, infinity) as its text.
fn json_of(value: any_value::Value) -> Value {
    use base64::Engine;
    match value {
        any_value::Value::StringValue(text) => text.into(),
        any_value::Value::BoolValue(flag) => flag.into(),
        any_value::Value::IntValue(number) => number.into(),
        any_value::Value::DoubleValue(number) => serde_json::Number::from_f64(number)
            .map_or_else(|| Value::String(number.to_string()), Value::Number),
        any_value::Value::BytesValue(bytes) => base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into(),
        any_value::Value::ArrayValue(array) => array
            .values
            .into_iter()
            .map(|value| value.value.map_or(Value::Null, json_of))
            .collect(),
        any_value::Value::KvlistValue(list) => Value::Object(Attributes(list.values).into_fields()),
        any_value::Value::StringValueStrindex(_) => Value::Null,
    }
}

#[cfg(test)]
mod tests;
