//! A JSON document a shipper sends (Elasticsearch `_bulk`, Vector's and
//! Fluent Bit's `http` outputs, rsyslog's `omelasticsearch`) read into a
//! level, message, request id, time and fields: the line parser's reading
//! of a JSON object ([`super::read_object`], the loggers' shapes
//! flattened first), with the keys shippers add besides a logger's:
//!
//! | what | keys, in the order they are looked for |
//! |---|---|
//! | time | `@timestamp`, `timestamp`, `time`, `ts`, `date`, `timereported`: RFC 3339, or epoch seconds, milliseconds, microseconds or nanoseconds by magnitude (Fluent Bit's `date` is float seconds) |
//! | message | `message`, `msg`, `log`, `MESSAGE`, `event`, `short_message`; read as the agent reads a worker's line ([`super::parse_line`]): the level, request id, time and fields the line names fill what the document does not say |
//! | level | `level`, `log.level` (ECS, dotted or nested), `severity`, `levelname`, `lvl`, `priority` (by name); else a syslog severity number (0–7) in `syslog.severity`, `log.syslog.severity.code`, `PRIORITY` (journald) or `syslogseverity` |
//! | request id | `request_id`, `requestId`, `requestID` |
//!
//! Every other key is a field. Which keys are labels (app, runner, …) is
//! the server's to say, before the rest is read here ([`take_text`]).

use serde_json::Value;

use super::{read_object, Keys, ParsedLine, REQUEST_ID_KEYS};
use crate::record::{Fields, FieldsJson, Level};

const DOCUMENT_KEYS: Keys = Keys {
    level: &[
        "level",
        "log.level",
        "severity",
        "levelname",
        "lvl",
        "priority",
    ],
    message: &["message", "msg", "log", "MESSAGE", "event", "short_message"],
    request_id: &REQUEST_ID_KEYS,
    time: &[
        "@timestamp",
        "timestamp",
        "time",
        "ts",
        "date",
        "timereported",
    ],
};

/// Keys holding a syslog severity number (0 emergency … 7 debug).
const SYSLOG_SEVERITY_KEYS: [&str; 4] = [
    "syslog.severity",
    "log.syslog.severity.code",
    "PRIORITY",
    "syslogseverity",
];

/// Reads one document. With no message key, the message is the document's
/// JSON text.
pub fn parse_document(mut object: Fields) -> ParsedLine {
    super::shapes::flatten(&mut object);
    // ECS nests `log.level` (and Filebeat's `log` holds more than it).
    if let Some(level) = take_text(&mut object, &["log.level"]) {
        object.insert("log.level".into(), level.into());
    }
    let syslog = if DOCUMENT_KEYS
        .level
        .iter()
        .any(|key| object.contains_key(*key))
    {
        None
    } else {
        take_syslog_severity(&mut object)
    };
    let text = serde_json::to_string(&object).unwrap_or_default();
    let mut whole = false;
    let mut parsed = read_object(object, &DOCUMENT_KEYS, || {
        whole = true;
        text
    });
    parsed.level = parsed.level.or(syslog);
    if !whole {
        read_message(&mut parsed);
    }
    parsed
}

/// The message read as the agent reads a worker's line (a shipper that
/// tails a file sends the line as it was printed): its level, request id,
/// time and fields fill what the document does not say; the message is
/// the line's.
fn read_message(parsed: &mut ParsedLine) {
    let line = super::parse_line(&parsed.message);
    parsed.message = line.message;
    parsed.level = parsed.level.or(line.level);
    parsed.request_id = parsed.request_id.take().or(line.request_id);
    parsed.ts = parsed.ts.or(line.ts);
    if !line.fields.as_str().is_empty() {
        let mut fields = line.fields.to_map();
        fields.extend(parsed.fields.to_map());
        parsed.fields = FieldsJson::from_map(&fields);
    }
}

/// The text of the first of `keys` present as a string or a number, taken
/// out of `object`. A dotted key (`host.name`) is found written so, or
/// nested (`{"host": {"name": …}}`, an object left empty then removed).
pub fn take_text(object: &mut Fields, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| {
        if let Some(text) = object.get(*key).and_then(text_of) {
            object.remove(*key);
            return Some(text);
        }
        let (parent, leaf) = key.split_once('.')?;
        let Some(Value::Object(inner)) = object.get_mut(parent) else {
            return None;
        };
        let text = take_text(inner, &[leaf])?;
        if inner.is_empty() {
            object.remove(parent);
        }
        Some(text)
    })
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn take_syslog_severity(object: &mut Fields) -> Option<Level> {
    let (key, level) = SYSLOG_SEVERITY_KEYS.iter().find_map(|key| {
        let number = match object.get(*key)? {
            Value::Number(number) => number.as_u64()?,
            Value::String(text) => text.trim().parse().ok()?,
            _ => return None,
        };
        Some((*key, syslog_level(number)?))
    })?;
    object.remove(key);
    Some(level)
}

/// A syslog severity (RFC 5424): 0–2 fatal, 3 error, 4 warn, 5–6 info, 7
/// debug.
fn syslog_level(severity: u64) -> Option<Level> {
    Some(match severity {
        0..=2 => Level::Fatal,
        3 => Level::Error,
        4 => Level::Warn,
        5 | 6 => Level::Info,
        7 => Level::Debug,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document(value: Value) -> ParsedLine {
        parse_document(value.as_object().unwrap().clone())
    }

    fn fields(parsed: &ParsedLine) -> Value {
        Value::Object(parsed.fields.to_map())
    }

    #[test]
    fn ecs_documents_as_filebeat_and_vector_send_them() {
        let parsed = document(json!({
            "@timestamp": "2026-12-07T10:00:00.250Z",
            "message": "GET /health 200",
            "log": {"level": "warn", "file": {"path": "/var/log/app.log"}},
            "request_id": "req-1",
            "http": {"status": 200}
        }));
        assert_eq!(parsed.message, "GET /health 200");
        assert_eq!(parsed.level, Some(Level::Warn));
        assert_eq!(parsed.request_id.as_deref(), Some("req-1"));
        assert_eq!(parsed.ts, Some("2026-12-07T10:00:00.250Z".parse().unwrap()));
        assert_eq!(
            fields(&parsed),
            json!({"log": {"file": {"path": "/var/log/app.log"}}, "http": {"status": 200}})
        );
        // Dotted, as some shippers flatten it.
        let parsed = document(json!({"log.level": "error", "message": "m"}));
        assert_eq!(parsed.level, Some(Level::Error));
        assert_eq!(fields(&parsed), json!({}));
    }

    #[test]
    fn fluent_bit_records_date_as_float_seconds_and_the_line_as_log() {
        let parsed =
            document(json!({"date": 1796637600.25, "log": "worker ready", "stream": "stdout"}));
        assert_eq!(parsed.message, "worker ready");
        assert_eq!(parsed.ts.unwrap().as_millisecond(), 1_796_637_600_250);
        assert_eq!(fields(&parsed), json!({"stream": "stdout"}));
    }

    #[test]
    fn times_by_magnitude() {
        for (value, ms) in [
            (json!(1796637600), 1_796_637_600_000),
            (json!(1796637600123_i64), 1_796_637_600_123),
            (json!(1796637600123456_i64), 1_796_637_600_123),
            (json!(1796637600123456789_i64), 1_796_637_600_123),
            (json!("2026-12-07T10:00:00.123+00:00"), 1_796_637_600_123),
        ] {
            let parsed = document(json!({"ts": value, "msg": "m"}));
            assert_eq!(parsed.ts.unwrap().as_millisecond(), ms, "{value}");
        }
        // Not a time: kept as a field, the record dated by its receiver.
        let parsed = document(json!({"time": "yesterday", "msg": "m"}));
        assert_eq!(
            (parsed.ts, fields(&parsed)),
            (None, json!({"time": "yesterday"}))
        );
    }

    #[test]
    fn rsyslog_and_journald_severities() {
        // omelasticsearch's default template: the priority by name.
        let parsed = document(
            json!({"message": " disk full", "fromhost": "gpu-1", "facility": "user", "priority": "err", "timereported": "2026-12-07T10:00:00+00:00"}),
        );
        assert_eq!(parsed.level, Some(Level::Error));
        assert_eq!(parsed.ts.unwrap().as_second(), 1_796_637_600);
        assert_eq!(
            fields(&parsed),
            json!({"fromhost": "gpu-1", "facility": "user"})
        );
        // journald's PRIORITY, a syslog number as text.
        let parsed = document(json!({"MESSAGE": "oom-killer", "PRIORITY": "3"}));
        assert_eq!(
            (parsed.level, parsed.message.as_str()),
            (Some(Level::Error), "oom-killer")
        );
        assert_eq!(fields(&parsed), json!({}));
        let parsed = document(json!({"msg": "m", "syslog.severity": 7}));
        assert_eq!(parsed.level, Some(Level::Debug));
        // A level key wins; the syslog number stays a field.
        let parsed = document(json!({"msg": "m", "level": "info", "PRIORITY": "3"}));
        assert_eq!(parsed.level, Some(Level::Info));
        assert_eq!(fields(&parsed), json!({"PRIORITY": "3"}));
    }

    #[test]
    fn the_message_is_read_as_a_workers_line() {
        // A tailed file's JSON line, inside Fluent Bit's `log`.
        let parsed = document(
            json!({"log": "{\"level\":\"error\",\"msg\":\"cuda oom\",\"request_id\":\"r-1\",\"gpu\":0}", "stream": "stderr"}),
        );
        assert_eq!(
            (
                parsed.message.as_str(),
                parsed.level,
                parsed.request_id.as_deref()
            ),
            ("cuda oom", Some(Level::Error), Some("r-1"))
        );
        assert_eq!(fields(&parsed), json!({"gpu": 0, "stream": "stderr"}));
        // The document's own keys win over the line's.
        let parsed = document(
            json!({"message": "[ERROR] failed", "level": "warn", "gpu": 1, "request_id": "doc"}),
        );
        assert_eq!(
            (
                parsed.message.as_str(),
                parsed.level,
                parsed.request_id.as_deref()
            ),
            ("failed", Some(Level::Warn), Some("doc"))
        );
        let parsed = document(json!({"message": "Traceback (most recent call last):"}));
        assert_eq!(parsed.level, Some(Level::Error));
    }

    #[test]
    fn without_a_message_key_the_document_is_the_message() {
        let parsed = document(json!({"level": "info", "gpu": 0}));
        assert_eq!(parsed.message, r#"{"gpu":0,"level":"info"}"#);
        assert_eq!(parsed.level, Some(Level::Info));
    }

    #[test]
    fn loggers_shapes_are_read_as_in_lines() {
        // structlog's `event`, python-json-logger's `levelname`.
        let parsed = document(json!({"event": "loaded", "levelname": "WARNING", "requestId": "r"}));
        assert_eq!(
            (
                parsed.message.as_str(),
                parsed.level,
                parsed.request_id.as_deref()
            ),
            ("loaded", Some(Level::Warn), Some("r"))
        );
    }

    #[test]
    fn labels_are_taken_dotted_or_nested() {
        let mut object = json!({"host": {"name": "gpu-1"}, "service.name": "api", "n": 5})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            take_text(&mut object, &["host.name"]).as_deref(),
            Some("gpu-1")
        );
        assert_eq!(
            take_text(&mut object, &["service.name"]).as_deref(),
            Some("api")
        );
        assert_eq!(
            take_text(&mut object, &["missing", "n"]).as_deref(),
            Some("5")
        );
        assert_eq!(Value::Object(object), json!({}));
        // Objects and arrays are not text: left as they are.
        let mut object = json!({"host": {"ip": ["10.0.0.1"]}})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(take_text(&mut object, &["host", "host.ip"]), None);
        assert_eq!(object.len(), 1);
    }
}
