//! JSON documents, as shippers send them (Vector's and Fluent Bit's
//! `http` outputs to `POST /v1/ingest/json`, and each source of an
//! Elasticsearch `_bulk`), into sources: the one mapping of a document to
//! a record, shared by both edges. Pure decoding; the HTTP edges are
//! `api::json` and `api::es`.
//!
//! Bodies of `/v1/ingest/json`: a JSON array of objects (Fluent Bit's
//! `format json`, Vector's `codec json` without framing), or objects one
//! after another (NDJSON: Fluent Bit's `json_lines`, Vector's
//! `newline_delimited` framing; or with no newline, Fluent Bit's
//! `json_stream`).
//!
//! | tailwater | from |
//! |---|---|
//! | app | `app`, else `service.name` (ECS, dotted or nested); else the token's app |
//! | version | `version`, else `service.version` |
//! | runner | `runner`, else `host.name`, `hostname`, `host`, `fromhost` (rsyslog), `pod`, `kubernetes.pod_name` (Fluent Bit), `k8s.pod.name`; else the token's id |
//! | stream | `stream` when it is `stdout` or `stderr`, else stdout |
//! | time, message, level, request id | as [`tailwater_model::parse::parse_document`] reads them (its table); no time: arrival |
//! | fields | every other key |

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::Value;
use tailwater_model::parse::{parse_document, take_text};
use tailwater_model::{Fields, Stream};

use super::{Record, Source};

const APP_KEYS: [&str; 2] = ["app", "service.name"];
const VERSION_KEYS: [&str; 2] = ["version", "service.version"];
const RUNNER_KEYS: [&str; 8] = [
    "runner",
    "host.name",
    "hostname",
    "host",
    "fromhost",
    "pod",
    "kubernetes.pod_name",
    "k8s.pod.name",
];

/// One document, mapped, with the labels it names.
#[derive(Debug, PartialEq)]
pub struct Document {
    /// `None`: the document names no app; the token's is used.
    pub app: Option<String>,
    pub version: String,
    /// `None`: the document names no runner; the token's id is used.
    pub runner: Option<String>,
    pub record: Record,
}

/// Maps one document; `now` dates one that carries no time it can read;
/// `uid` is its own id, where its protocol gives one (an `_id`).
pub fn document(mut object: Fields, now: Timestamp, uid: Option<String>) -> Document {
    let app = take_text(&mut object, &APP_KEYS).filter(|app| !app.is_empty());
    let version = take_text(&mut object, &VERSION_KEYS).unwrap_or_default();
    let runner = take_text(&mut object, &RUNNER_KEYS).filter(|runner| !runner.is_empty());
    let stream = match object.get("stream").and_then(Value::as_str) {
        Some("stdout") => Some(Stream::Stdout),
        Some("stderr") => Some(Stream::Stderr),
        _ => None,
    };
    if stream.is_some() {
        object.remove("stream");
    }
    let parsed = parse_document(object);
    Document {
        app,
        version,
        runner,
        record: Record {
            ts: parsed.ts.unwrap_or(now),
            level: parsed.level.unwrap_or_default(),
            stream: stream.unwrap_or(Stream::Stdout),
            request_id: parsed.request_id,
            message: parsed.message,
            fields: parsed.fields,
            uid,
        },
    }
}

/// The documents of a `/v1/ingest/json` body: an array of objects, or
/// objects one after another. Anything else is refused whole, saying
/// which document and why.
pub fn decode(body: &[u8]) -> Result<Vec<Fields>, String> {
    let start = body.iter().position(|byte| !byte.is_ascii_whitespace());
    let values: Vec<Value> = match start.map(|start| body[start]) {
        None => return Ok(Vec::new()),
        Some(b'[') => serde_json::from_slice(body)
            .map_err(|error| format!("invalid JSON array of documents: {error}"))?,
        Some(_) => serde_json::Deserializer::from_slice(body)
            .into_iter::<Value>()
            .enumerate()
            .map(|(index, value)| {
                value.map_err(|error| {
                    format!(
                        "invalid NDJSON: document {} is not JSON: {error}",
                        index + 1
                    )
                })
            })
            .collect::<Result<_, _>>()?,
    };
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| match value {
            Value::Object(object) => Ok(object),
            other => Err(format!(
                "document {} is {}, not a JSON object: send each log record as an object such as {{\"message\": \"…\"}}",
                index + 1,
                kind(&other)
            )),
        })
        .collect()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Documents with the same labels gathered into one source each (in the
/// order each first came), beside the positions of their documents among
/// `documents`' (where an edge answers each document).
pub fn sources(documents: Vec<(usize, Document)>) -> Vec<(Source, Vec<usize>)> {
    let mut sources: Vec<(Source, Vec<usize>)> = Vec::new();
    let mut by_labels: HashMap<(Option<String>, String, Option<String>), usize> = HashMap::new();
    for (position, document) in documents {
        let key = (document.app, document.version, document.runner);
        let index = *by_labels.entry(key.clone()).or_insert_with(|| {
            let (app, version, runner) = key;
            sources.push((
                Source {
                    app,
                    version,
                    runner,
                    records: Vec::new(),
                },
                Vec::new(),
            ));
            sources.len() - 1
        });
        let (source, positions) = &mut sources[index];
        source.records.push(document.record);
        positions.push(position);
    }
    sources
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tailwater_model::Level;

    use super::*;

    fn now() -> Timestamp {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    fn doc(value: Value) -> Document {
        document(value.as_object().unwrap().clone(), now(), None)
    }

    #[test]
    fn labels_come_out_of_the_document() {
        let mapped = doc(json!({
            "@timestamp": "2026-12-07T10:00:00Z", "message": "ready", "level": "warn",
            "service": {"name": "api", "version": "1.2"}, "host": {"name": "gpu-1", "ip": "10.0.0.9"},
            "stream": "stderr", "request_id": "r-1", "gpu": 0
        }));
        assert_eq!(
            (
                mapped.app.as_deref(),
                mapped.version.as_str(),
                mapped.runner.as_deref()
            ),
            (Some("api"), "1.2", Some("gpu-1"))
        );
        let record = &mapped.record;
        assert_eq!(record.ts, "2026-12-07T10:00:00Z".parse().unwrap());
        assert_eq!(
            (
                record.level,
                record.stream,
                record.request_id.as_deref(),
                record.message.as_str()
            ),
            (Level::Warn, Stream::Stderr, Some("r-1"), "ready")
        );
        assert_eq!(
            Value::Object(record.fields.to_map()),
            json!({"host": {"ip": "10.0.0.9"}, "gpu": 0})
        );
    }

    #[test]
    fn a_document_with_nothing_known_is_dated_at_arrival() {
        let mapped = doc(json!({"stream": "app-events", "n": 1}));
        assert_eq!((mapped.app, mapped.runner), (None, None));
        assert_eq!(mapped.record.ts, now());
        assert_eq!(mapped.record.stream, Stream::Stdout);
        assert_eq!(mapped.record.level, Level::Info);
        // `stream` that is not a stream stays a field (and the message).
        assert_eq!(mapped.record.message, r#"{"n":1,"stream":"app-events"}"#);
    }

    #[test]
    fn arrays_ndjson_and_streams_of_objects() {
        let array = br#" [{"log":"a"}, {"log":"b"}] "#;
        let ndjson = b"{\"log\":\"a\"}\n{\"log\":\"b\"}\n";
        let stream = br#"{"log":"a"}{"log":"b"}"#;
        for body in [&array[..], ndjson, stream] {
            let documents = decode(body).unwrap();
            assert_eq!(documents.len(), 2);
            assert_eq!(documents[1]["log"], "b");
        }
        assert_eq!(decode(b"  \n").unwrap(), Vec::<Fields>::new());
    }

    #[test]
    fn anything_but_objects_is_refused_whole() {
        let error = decode(b"{\"log\":\"a\"}\n\"b\"\n").unwrap_err();
        assert!(
            error.starts_with("document 2 is a string, not a JSON object"),
            "{error}"
        );
        let error = decode(b"{\"log\":\"a\"}\n{oops\n").unwrap_err();
        assert!(
            error.starts_with("invalid NDJSON: document 2 is not JSON"),
            "{error}"
        );
        let error = decode(b"[{\"log\":\"a\"}, 5]").unwrap_err();
        assert!(error.starts_with("document 2 is a number"), "{error}");
        assert!(decode(b"[{\"log\":\"a\"}").is_err());
    }

    #[test]
    fn documents_gather_by_labels_keeping_their_positions() {
        let documents = [
            json!({"msg": "1", "host": "a"}),
            json!({"msg": "2", "host": "b"}),
            json!({"msg": "3", "host": "a"}),
            json!({"msg": "4", "app": "web", "host": "a"}),
        ];
        let mapped = documents.into_iter().map(doc).enumerate().collect();
        let sources = sources(mapped);
        let shape: Vec<_> = sources
            .iter()
            .map(|(source, positions)| {
                let messages: Vec<_> = source.records.iter().map(|r| r.message.clone()).collect();
                (
                    source.app.clone(),
                    source.runner.clone().unwrap(),
                    messages,
                    positions.clone(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (
                    None,
                    "a".into(),
                    vec!["1".to_owned(), "3".into()],
                    vec![0, 2]
                ),
                (None, "b".into(), vec!["2".into()], vec![1]),
                (Some("web".into()), "a".into(), vec!["4".into()], vec![3]),
            ]
        );
    }
}
