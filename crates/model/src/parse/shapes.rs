//! JSON shapes of popular loggers that do not put the level, message and
//! request id at the top of the object, rewritten into the flat shape
//! [`super::parse_line`] reads, before it reads it:
//!
//! - loguru's `serialize=True`: `{"text", "record": {"message", "level":
//!   {"name"}, "time": {"timestamp"}, "extra", "exception", …}}`: the
//!   record's message, level and time, its `extra` as fields (so a bound
//!   `request_id` is the request), and where it came from (`logger`,
//!   `function`, `line`, `file`); a logged exception's traceback, which
//!   only the `text` holds, goes after the message.
//! - tracing-subscriber's JSON layer: `{"level", "fields": {"message", …},
//!   "target", "span", "spans"}` (unless flattened): the event's fields
//!   come up to the top; a request id found on the current span, or the
//!   innermost span that has one, is the request's.
//! - A traceback held in a key (`exc_info` from python-json-logger,
//!   `exception` from structlog's `format_exc_info`) goes after the
//!   message, so the record holds the whole crash.
//!
//! structlog's message key, `event`, is simply one of the message keys.

use serde_json::Value;

use crate::record::Fields;

use super::REQUEST_ID_KEYS;

/// Rewrites `object` into the flat shape, when it is one of the shapes
/// above; leaves it as it is otherwise.
pub(super) fn flatten(object: &mut Fields) {
    if let Some(flat) = loguru(object) {
        *object = flat;
    } else {
        tracing_fields(object);
    }
    traceback_key(object);
}

/// loguru's `serialize=True` line, flattened; `None` when it is not one.
fn loguru(object: &Fields) -> Option<Fields> {
    let record = object.get("record")?.as_object()?;
    let text = object.get("text")?.as_str()?;
    let message = record.get("message")?.as_str()?;
    let level = record.get("level")?.get("name")?.as_str()?;
    let mut flat = Fields::new();
    if let Some(Value::Object(extra)) = record.get("extra") {
        flat.extend(extra.clone());
    }
    let mut message = message.to_owned();
    if let Some(Value::Object(exception)) = record.get("exception") {
        // The traceback is only in the text, after its first line.
        if let Some((_, traceback)) = text.split_once('\n') {
            let traceback = traceback.trim_end();
            if !traceback.is_empty() {
                message.push('\n');
                message.push_str(traceback);
            }
        }
        let kept: Fields = exception
            .iter()
            .filter(|(key, _)| matches!(key.as_str(), "type" | "value"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        flat.insert("exception".into(), Value::Object(kept));
    }
    flat.insert("message".into(), message.into());
    flat.insert("level".into(), level.into());
    if let Some(timestamp) = record.get("time").and_then(|time| time.get("timestamp")) {
        flat.insert("time".into(), timestamp.clone());
    }
    for (from, to) in [
        ("name", "logger"),
        ("function", "function"),
        ("line", "line"),
    ] {
        if let Some(value) = record.get(from) {
            flat.insert(to.into(), value.clone());
        }
    }
    if let Some(file) = record.get("file").and_then(|file| file.get("name")) {
        flat.insert("file".into(), file.clone());
    }
    Some(flat)
}

/// tracing-subscriber's event `fields`, with its `message`, brought up to
/// the top (keys already there are kept); a span's request id as the
/// request's.
fn tracing_fields(object: &mut Fields) {
    let nested_message = object
        .get("fields")
        .and_then(|fields| fields.get("message"))
        .is_some_and(Value::is_string);
    if !nested_message
        || super::MESSAGE_KEYS
            .iter()
            .any(|key| object.contains_key(*key))
    {
        return;
    }
    let Some(Value::Object(fields)) = object.remove("fields") else {
        return;
    };
    for (key, value) in fields {
        object.entry(key).or_insert(value);
    }
    if REQUEST_ID_KEYS.iter().any(|key| object.contains_key(*key)) {
        return;
    }
    // The current span first, then the others from the innermost out.
    let spans = object.get("span").into_iter().chain(
        object
            .get("spans")
            .and_then(Value::as_array)
            .into_iter()
            .flat_map(|spans| spans.iter().rev()),
    );
    let from_span = spans
        .filter_map(Value::as_object)
        .find_map(|span| REQUEST_ID_KEYS.iter().find_map(|key| span.get(*key)))
        .filter(|id| id.is_string() || id.is_number())
        .cloned();
    if let Some(id) = from_span {
        object.insert("request_id".into(), id);
    }
}

/// Keys that loggers put a formatted traceback in.
const TRACEBACK_KEYS: [&str; 2] = ["exc_info", "exception"];

/// A Python traceback held in a key, moved after the message.
fn traceback_key(object: &mut Fields) {
    let Some(key) = TRACEBACK_KEYS.iter().find(|key| {
        object
            .get(**key)
            .and_then(Value::as_str)
            .is_some_and(|text| text.contains("Traceback (most recent call last):"))
    }) else {
        return;
    };
    let Some((message_key, message)) = super::MESSAGE_KEYS.iter().find_map(|key| {
        let message = object.get(*key)?.as_str()?;
        Some((*key, message.to_owned()))
    }) else {
        return;
    };
    let traceback = object
        .remove(*key)
        .and_then(|value| value.as_str().map(|text| text.trim_end().to_owned()))
        .unwrap_or_default();
    object.insert(message_key.into(), format!("{message}\n{traceback}").into());
}

#[cfg(test)]
mod tests {
    //! Lines as the real libraries print them (captured from structlog
    //! 25, loguru 0.7, python-json-logger 3, runpod 1.8 and
    //! tracing-subscriber 0.3).

    use serde_json::json;

    use crate::parse::parse_line;
    use crate::record::Level;

    fn fields(line: &str) -> serde_json::Value {
        serde_json::Value::Object(parse_line(line).fields.to_map())
    }

    #[test]
    fn structlog_says_its_message_as_event() {
        let line = r#"{"user": "alice", "request_id": "req-1", "event": "user logged in", "level": "info", "timestamp": "2026-12-07T07:43:57.457708Z"}"#;
        let parsed = parse_line(line);
        assert_eq!(parsed.message, "user logged in");
        assert_eq!(parsed.level, Some(Level::Info));
        assert_eq!(parsed.request_id.as_deref(), Some("req-1"));
        assert_eq!(
            parsed.ts,
            Some("2026-12-07T07:43:57.457708Z".parse().unwrap())
        );
        assert_eq!(fields(line), json!({"user": "alice"}));
    }

    #[test]
    fn loguru_serialized_records_are_flattened() {
        let line = r#"{"text": "2026-12-07 07:43:57.480 | WARNING  | __main__:<module>:9 - disk 91% full\n", "record": {"elapsed": {"repr": "0:00:00.008858", "seconds": 0.008858}, "exception": null, "extra": {"request_id": "req-2", "pct": 91}, "file": {"name": "shapes.py", "path": "/tmp/shapes.py"}, "function": "<module>", "level": {"icon": "⚠️", "name": "WARNING", "no": 30}, "line": 9, "message": "disk 91% full", "module": "shapes", "name": "__main__", "process": {"id": 2718, "name": "MainProcess"}, "thread": {"id": 140614024765504, "name": "MainThread"}, "time": {"repr": "2026-12-07 07:43:57.480827+00:00", "timestamp": 1796629437.480827}}}"#;
        let parsed = parse_line(line);
        assert_eq!(parsed.message, "disk 91% full");
        assert_eq!(parsed.level, Some(Level::Warn));
        assert_eq!(parsed.request_id.as_deref(), Some("req-2"));
        let ts = parsed.ts.unwrap();
        assert_eq!(ts.as_second(), 1796629437);
        assert_eq!(
            fields(line),
            json!({"pct": 91, "logger": "__main__", "function": "<module>", "line": 9, "file": "shapes.py"})
        );
    }

    #[test]
    fn a_loguru_exception_keeps_its_traceback_in_the_message() {
        let line = r#"{"text": "2026-12-07 07:43:57.481 | ERROR    | __main__:<module>:13 - boom\nTraceback (most recent call last):\n\n> File \"/tmp/shapes.py\", line 11, in <module>\n    1/0\n\nZeroDivisionError: division by zero\n", "record": {"elapsed": {"repr": "0:00:00.009038", "seconds": 0.009038}, "exception": {"type": "ZeroDivisionError", "value": "division by zero", "traceback": true}, "extra": {}, "file": {"name": "shapes.py", "path": "/tmp/shapes.py"}, "function": "<module>", "level": {"icon": "❌", "name": "ERROR", "no": 40}, "line": 13, "message": "boom", "module": "shapes", "name": "__main__", "process": {"id": 2718, "name": "MainProcess"}, "thread": {"id": 140614024765504, "name": "MainThread"}, "time": {"repr": "2026-12-07 07:43:57.481007+00:00", "timestamp": 1796629437.481007}}}"#;
        let parsed = parse_line(line);
        assert_eq!(parsed.level, Some(Level::Error));
        assert!(
            parsed
                .message
                .starts_with("boom\nTraceback (most recent call last):\n"),
            "{}",
            parsed.message
        );
        assert!(parsed
            .message
            .ends_with("ZeroDivisionError: division by zero"));
        assert_eq!(
            fields(line)["exception"],
            json!({"type": "ZeroDivisionError", "value": "division by zero"})
        );
    }

    #[test]
    fn python_json_logger_and_its_traceback() {
        let line = r#"{"asctime": "2026-12-07 07:43:57,485", "levelname": "INFO", "name": "svc", "message": "started", "request_id": "req-3", "gpu": 0}"#;
        let parsed = parse_line(line);
        assert_eq!(
            (parsed.level, parsed.message.as_str()),
            (Some(Level::Info), "started")
        );
        assert_eq!(parsed.request_id.as_deref(), Some("req-3"));
        assert_eq!(
            fields(line),
            json!({"asctime": "2026-12-07 07:43:57,485", "name": "svc", "gpu": 0})
        );
        let crashed = r#"{"levelname": "ERROR", "message": "job failed", "exc_info": "Traceback (most recent call last):\n  File \"w.py\", line 3, in <module>\nValueError: bad"}"#;
        let parsed = parse_line(crashed);
        assert_eq!(
            parsed.message,
            "job failed\nTraceback (most recent call last):\n  File \"w.py\", line 3, in <module>\nValueError: bad"
        );
        assert_eq!(fields(crashed), json!({}));
    }

    #[test]
    fn runpod_lines_and_its_tip_level() {
        let parsed = parse_line(r#"{"requestId": "req-4", "message": "hello", "level": "INFO"}"#);
        assert_eq!(parsed.request_id.as_deref(), Some("req-4"));
        let parsed =
            parse_line(r#"{"requestId": null, "message": "use a bigger gpu", "level": "TIP"}"#);
        assert_eq!(
            (parsed.level, parsed.request_id, parsed.message.as_str()),
            (Some(Level::Info), None, "use a bigger gpu")
        );
    }

    #[test]
    fn tracing_subscriber_json_fields_and_span_request_ids() {
        let plain = r#"{"timestamp":"2026-12-07T07:46:19.109908Z","level":"INFO","fields":{"message":"model loaded","gpu":0},"target":"trjson"}"#;
        let parsed = parse_line(plain);
        assert_eq!(
            (parsed.level, parsed.message.as_str()),
            (Some(Level::Info), "model loaded")
        );
        assert_eq!(fields(plain), json!({"gpu": 0, "target": "trjson"}));
        let in_span = r#"{"timestamp":"2026-12-07T07:46:19.110027Z","level":"ERROR","fields":{"message":"inference failed","status":500},"target":"trjson","span":{"request_id":"req-9","name":"handle"},"spans":[{"request_id":"req-9","name":"handle"}]}"#;
        let parsed = parse_line(in_span);
        assert_eq!(parsed.message, "inference failed");
        assert_eq!(parsed.request_id.as_deref(), Some("req-9"));
        assert_eq!(fields(in_span)["status"], json!(500));
        // The event's own request id wins over its span's.
        let own = r#"{"level":"INFO","fields":{"message":"m","request_id":"own"},"span":{"request_id":"span"}}"#;
        assert_eq!(parse_line(own).request_id.as_deref(), Some("own"));
    }

    #[test]
    fn lookalikes_are_left_alone() {
        // A `record` that is not loguru's, `fields` with no message, and a
        // message key beside `fields`: read as flat objects.
        let line = r#"{"msg": "saved", "record": {"id": 7}, "fields": {"message": "inner"}}"#;
        let parsed = parse_line(line);
        assert_eq!(parsed.message, "saved");
        assert_eq!(
            fields(line),
            json!({"record": {"id": 7}, "fields": {"message": "inner"}})
        );
        let line = r#"{"level": "info", "fields": {"a": 1}}"#;
        assert_eq!(fields(line), json!({"fields": {"a": 1}}));
        // An exception key that holds no traceback stays a field.
        let line = r#"{"msg": "retrying", "exception": "timeout"}"#;
        assert_eq!(parse_line(line).message, "retrying");
        assert_eq!(fields(line), json!({"exception": "timeout"}));
    }
}
