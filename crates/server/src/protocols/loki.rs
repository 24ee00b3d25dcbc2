//! Loki push (`POST /loki/api/v1/push`), as Promtail, Alloy, Vector's and
//! Fluent Bit's Loki outputs and Loki client libraries send it, into
//! sources: one a stream. Pure decoding; the HTTP edge is `api::loki`.
//!
//! Bodies: snappy-compressed protobuf (`application/x-protobuf`, Loki's
//! `PushRequest`, the stream's labels one `{a="b", …}` string), or JSON
//! (`application/json`: `{"streams": [{"stream": {labels}, "values":
//! [["<ns>", "<line>", {metadata}]]}]}`, gzip allowed).
//!
//! | tailwater | from |
//! |---|---|
//! | app | the `app` label, else `service_name`, else the token's app |
//! | version | the `version` label |
//! | runner | the `runner` label, else `instance`, `host`, `pod`; else the token's id |
//! | time | the entry's |
//! | stream | the `stream` label (`stdout`, `stderr`), else stdout |
//! | level, message, request id, fields | the line, read as the agent reads a worker's ([`tailwater_model::parse_line`]); a `level`, `detected_level` or `severity` label when the line names none |
//! | fields | also every other label, and the entry's structured metadata |

use jiff::Timestamp;
use serde::Deserialize;
use tailwater_model::{parse_line, Fields, FieldsJson, Level, Stream};

use super::{Record, Source};

/// How the body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Snappy-compressed protobuf.
    SnappyProtobuf,
    Json,
}

impl Encoding {
    pub fn of_content_type(content_type: &str) -> Option<Encoding> {
        match super::media_type(content_type).as_str() {
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::SnappyProtobuf),
            // Loki reads a push without a content type as JSON too.
            "application/json" | "" => Some(Encoding::Json),
            _ => None,
        }
    }
}

/// One stream of a push: its labels and entries.
#[derive(Debug, Default, PartialEq)]
pub struct PushStream {
    pub labels: Vec<(String, String)>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, PartialEq)]
pub struct Entry {
    /// Nanoseconds since the epoch.
    pub ts_ns: i128,
    pub line: String,
    pub metadata: Vec<(String, String)>,
}

/// The push's streams, read from its body (decompressed of any
/// `Content-Encoding`, but not of the protobuf's own snappy).
pub fn decode(body: &[u8], encoding: Encoding, limit: usize) -> Result<Vec<PushStream>, String> {
    match encoding {
        Encoding::SnappyProtobuf => {
            let length = snap::raw::decompress_len(body)
                .map_err(|error| format!("invalid snappy body: {error}"))?;
            if length > limit {
                return Err(format!(
                    "the push is over the limit of {limit} bytes once decompressed (--max-batch-bytes): send smaller batches"
                ));
            }
            let raw = snap::raw::Decoder::new()
                .decompress_vec(body)
                .map_err(|error| format!("invalid snappy body: {error}"))?;
            let request: wire::PushRequest = prost::Message::decode(&raw[..])
                .map_err(|error| format!("invalid Loki protobuf body: {error}"))?;
            request
                .streams
                .into_iter()
                .map(|stream| {
                    let labels = parse_labels(&stream.labels)?;
                    let entries = stream
                        .entries
                        .into_iter()
                        .map(|entry| Entry {
                            ts_ns: entry.timestamp.map_or(0, |ts| {
                                i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos)
                            }),
                            line: entry.line,
                            metadata: entry
                                .structured_metadata
                                .into_iter()
                                .map(|pair| (pair.name, pair.value))
                                .collect(),
                        })
                        .collect();
                    Ok(PushStream { labels, entries })
                })
                .collect()
        }
        Encoding::Json => {
            let request: json::PushRequest = serde_json::from_slice(body)
                .map_err(|error| format!("invalid Loki JSON body: {error}"))?;
            request
                .streams
                .into_iter()
                .map(|stream| {
                    let entries = stream
                        .values
                        .into_iter()
                        .map(|value| {
                            let ts_ns = value.0.trim().parse::<i128>().map_err(|_| {
                                format!(
                                    "invalid Loki JSON body: a value's time '{}' is not nanoseconds since the epoch as a string of digits",
                                    value.0.chars().take(40).collect::<String>()
                                )
                            })?;
                            Ok(Entry {
                                ts_ns,
                                line: value.1,
                                metadata: value.2.unwrap_or_default().into_iter().collect(),
                            })
                        })
                        .collect::<Result<_, String>>()?;
                    Ok(PushStream {
                        labels: stream.stream.into_iter().collect(),
                        entries,
                    })
                })
                .collect()
        }
    }
}

/// A stream's labels as Loki writes them: `{app="api", env="prod"}`,
/// values in double quotes with `\"`, `\\` and `\n` escapes.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let bad = |why: &str| {
        let shown: String = text.chars().take(80).collect();
        format!("invalid Loki labels '{shown}': {why}; write them as {{name=\"value\", …}}")
    };
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| bad("not in braces"))?;
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            name.push(c);
        }
        if name.is_empty() {
            return Err(bad("a label has no name"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(bad(&format!("label {name} has no =\"value\"")));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                None => return Err(bad(&format!("label {name}'s value is not closed"))),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => return Err(bad(&format!("label {name}'s value is not closed"))),
                },
                Some(c) => value.push(c),
            }
        }
        labels.push((name, value));
    }
}

/// The push's streams as sources; entries whose time is out of range are
/// dated `now` (the store dates what it cannot keep at arrival anyway).
pub fn sources(streams: Vec<PushStream>, now: Timestamp) -> Vec<Source> {
    streams
        .into_iter()
        .map(|stream| {
            let mut labels = stream.labels;
            let mut take = |names: &[&str]| {
                let index = names
                    .iter()
                    .find_map(|name| labels.iter().position(|(key, _)| key == name))?;
                Some(labels.remove(index).1)
            };
            let app = take(&["app", "service_name"]).filter(|app| !app.is_empty());
            let version = take(&["version"]).unwrap_or_default();
            let runner = take(&["runner", "instance", "host", "pod"]).filter(|r| !r.is_empty());
            let stream_name = take(&["stream"]);
            let label_level =
                take(&["level", "detected_level", "severity"]).and_then(|l| Level::from_name(&l));
            let output = match stream_name.as_deref() {
                Some("stderr") => Stream::Stderr,
                _ => Stream::Stdout,
            };
            let mut shared = Fields::new();
            if let Some(name) =
                stream_name.filter(|name| !matches!(name.as_str(), "stdout" | "stderr"))
            {
                shared.insert("stream".into(), name.into());
            }
            shared.extend(labels.into_iter().map(|(key, value)| (key, value.into())));
            let records = stream
                .entries
                .into_iter()
                .map(|entry| record(entry, now, output, label_level, &shared))
                .collect();
            Source {
                app,
                version,
                runner,
                records,
            }
        })
        .collect()
}

fn record(
    entry: Entry,
    now: Timestamp,
    stream: Stream,
    label_level: Option<Level>,
    shared: &Fields,
) -> Record {
    let parsed = parse_line(&entry.line);
    let mut fields = shared.clone();
    fields.extend(parsed.fields.to_map());
    fields.extend(
        entry
            .metadata
            .into_iter()
            .map(|(key, value)| (key, value.into())),
    );
    Record {
        ts: Timestamp::from_nanosecond(entry.ts_ns).unwrap_or(now),
        level: parsed.level.or(label_level).unwrap_or_default(),
        stream,
        request_id: parsed.request_id,
        message: parsed.message,
        fields: FieldsJson::from_map(&fields),
        uid: None,
    }
}

/// Loki's protobuf messages (`logproto.PushRequest`).
mod wire {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<EntryAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `google.protobuf.Timestamp`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Loki's JSON push.
mod json {
    use std::collections::BTreeMap;

    use super::Deserialize;

    #[derive(Deserialize)]
    pub struct PushRequest {
        pub streams: Vec<PushStream>,
    }

    #[derive(Deserialize)]
    pub struct PushStream {
        #[serde(default)]
        pub stream: BTreeMap<String, String>,
        pub values: Vec<Value>,
    }

    /// `["<ns>", "<line>"]` or `["<ns>", "<line>", {metadata}]`.
    #[derive(Deserialize)]
    pub struct Value(
        pub String,
        pub String,
        #[serde(default)] pub Option<BTreeMap<String, String>>,
    );
}

#[cfg(test)]
mod tests;

/// The protobuf body of `streams`, snappy-compressed, as Loki clients
/// send it: for tests and the benchmark.
pub fn encode(streams: &[(&str, &[(i128, &str)])]) -> Vec<u8> {
    let request = wire::PushRequest {
        streams: streams
            .iter()
            .map(|(labels, entries)| wire::StreamAdapter {
                labels: (*labels).to_owned(),
                entries: entries
                    .iter()
                    .map(|(ns, line)| wire::EntryAdapter {
                        timestamp: Some(wire::Timestamp {
                            seconds: (ns / 1_000_000_000) as i64,
                            nanos: (ns % 1_000_000_000) as i32,
                        }),
                        line: (*line).to_owned(),
                        structured_metadata: Vec::new(),
                    })
                    .collect(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&request))
        .expect("snappy compresses in memory")
}

/// One entry of a push as drains write it: time in ns, line, structured
/// metadata.
pub type OutEntry = (i128, String, Vec<(String, String)>);

/// One stream of a push as drains write it: its labels (`{a="b", …}`,
/// see [`label_set`]) and its entries.
pub struct OutStream {
    pub labels: String,
    pub entries: Vec<OutEntry>,
}

/// The protobuf body of `streams` with their structured metadata,
/// snappy-compressed: what a drain in the Loki format sends.
pub fn encode_streams(streams: Vec<OutStream>) -> Vec<u8> {
    let request = wire::PushRequest {
        streams: streams
            .into_iter()
            .map(|stream| wire::StreamAdapter {
                labels: stream.labels,
                entries: stream
                    .entries
                    .into_iter()
                    .map(|(ns, line, metadata)| wire::EntryAdapter {
                        timestamp: Some(wire::Timestamp {
                            seconds: ns.div_euclid(1_000_000_000) as i64,
                            nanos: ns.rem_euclid(1_000_000_000) as i32,
                        }),
                        line,
                        structured_metadata: metadata
                            .into_iter()
                            .map(|(name, value)| wire::LabelPair { name, value })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    snap::raw::Encoder::new()
        .compress_vec(&prost::Message::encode_to_vec(&request))
        .expect("snappy compresses in memory")
}

/// `{name="value", …}` with `\` and `"` escaped as PromQL and LogQL read
/// them (the inverse of [`parse_labels`]).
pub fn label_set(labels: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(name, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}
