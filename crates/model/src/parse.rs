//! Parsing one line of worker output into a level, message, request id,
//! timestamp and fields.
//!
//! Workers print whatever their language and libraries print. This module
//! understands the common shapes and keeps everything else verbatim:
//!
//! - JSON objects, with the keys loggers use for the level (`level`,
//!   `severity`, `levelname`, `lvl`), the message (`msg`, `message`, and
//!   structlog's `event`), the request (`request_id`, `requestId`) and the
//!   time (`ts`, `time`, `timestamp`). Every other key becomes a field, but
//!   a request id of `null` (no request) is dropped. RunPod's
//!   `{"requestId", "message", "level"}` lines (with its `TIP` level, an
//!   info) and python-json-logger's are cases of this; loguru's and
//!   tracing-subscriber's nested shapes are flattened first ([`shapes`]).
//! - Plain-text level prefixes: `INFO | msg` (and loguru's
//!   `time | LEVEL | msg`), `[ERROR] msg`, `WARNING: msg` (and Python
//!   logging's `WARNING:logger:msg`), and glog's `E1120 12:00:00.000000 42
//!   file.cc:7] msg` (or `E20261120 …`, with the year, as glog 0.6 and
//!   later print by default).
//! - RunPod's logger's text line, printed outside RunPod: `INFO   | job-id |
//!   msg`, the job's id as the request's ([`runpod`]).
//!
//! - The first and last lines of a Python traceback (`Traceback (most recent
//!   call last):` and `ValueError: …`) are errors, kept verbatim, so a
//!   search for errors finds the crash.
//!
//! The recognised level token is removed from the message (the level is kept
//! beside it); nothing else is. A line that fits no shape is kept as it is,
//! with no level, so the caller picks the default.

mod document;
mod runpod;
mod shapes;

pub use document::{parse_document, take_text};

use jiff::Timestamp;
use serde_json::Value;

use crate::record::{Fields, FieldsJson, Level};

/// What [`parse_line`] found in one line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedLine {
    /// `None` when the line names no level.
    pub level: Option<Level>,
    pub message: String,
    pub request_id: Option<String>,
    /// The event time the line states, when it states one we can read.
    pub ts: Option<Timestamp>,
    /// The keys of a JSON line left over (or what a prefix names, such as
    /// Python logging's logger), as the record carries them.
    pub fields: FieldsJson,
}

/// The keys a JSON object names its level, message, request and time
/// with, each list in the order they are looked for.
pub(crate) struct Keys {
    pub level: &'static [&'static str],
    pub message: &'static [&'static str],
    pub request_id: &'static [&'static str],
    pub time: &'static [&'static str],
}

/// The keys of a worker's JSON line.
const LINE_KEYS: Keys = Keys {
    level: &["level", "severity", "levelname", "lvl"],
    message: &MESSAGE_KEYS,
    request_id: &REQUEST_ID_KEYS,
    time: &["ts", "time", "timestamp"],
};
const MESSAGE_KEYS: [&str; 3] = ["msg", "message", "event"];
const REQUEST_ID_KEYS: [&str; 3] = ["request_id", "requestId", "requestID"];

/// Parses one line (without its newline) of worker output.
pub fn parse_line(line: &str) -> ParsedLine {
    if let Some(parsed) = parse_json(line) {
        return parsed;
    }
    if let Some(parsed) = parse_glog(line) {
        return parsed;
    }
    if let Some(parsed) = runpod::parse(line) {
        return parsed;
    }
    if let Some(parsed) = parse_level_prefix(line) {
        return parsed;
    }
    let level = is_python_exception(line).then_some(Level::Error);
    ParsedLine {
        level,
        message: line.to_owned(),
        ..ParsedLine::default()
    }
}

fn parse_json(line: &str) -> Option<ParsedLine> {
    let trimmed = line.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return None;
    }
    let mut object: Fields = serde_json::from_str(trimmed).ok()?;
    shapes::flatten(&mut object);
    Some(read_object(object, &LINE_KEYS, || trimmed.to_owned()))
}

/// The level, message, request id and time of a (flattened) JSON object,
/// found under `keys`; the keys left are its fields. With no message key,
/// the message is `whole` (the object's text), so text search still finds
/// it; its keys are fields as well.
pub(crate) fn read_object(
    mut object: Fields,
    keys: &Keys,
    whole: impl FnOnce() -> String,
) -> ParsedLine {
    let mut parsed = ParsedLine::default();
    if let Some((key, level)) = take_first(&object, keys.level, json_level) {
        object.remove(&key);
        parsed.level = Some(level);
    }
    parsed.message = match take_first(&object, keys.message, json_string) {
        Some((key, message)) => {
            object.remove(&key);
            message
        }
        None => whole(),
    };
    if let Some((key, request_id)) = take_first(&object, keys.request_id, json_string) {
        object.remove(&key);
        parsed.request_id = Some(request_id);
    }
    // A request id of null says the line belongs to no request (RunPod's
    // worker prints `"requestId": null` outside a job): no field to keep.
    object.retain(|key, value| !(value.is_null() && keys.request_id.contains(&key.as_str())));
    if let Some((key, ts)) = take_first(&object, keys.time, json_timestamp) {
        object.remove(&key);
        parsed.ts = Some(ts);
    }
    parsed.fields = FieldsJson::from_map(&object);
    parsed
}

/// The first of `keys` present in `object` whose value `read` accepts. A value
/// it does not accept stays in the object, as a field.
fn take_first<T>(
    object: &Fields,
    keys: &[&str],
    read: impl Fn(&Value) -> Option<T>,
) -> Option<(String, T)> {
    keys.iter().find_map(|key| {
        let value = object.get(*key)?;
        read(value).map(|found| ((*key).to_owned(), found))
    })
}

fn json_level(value: &Value) -> Option<Level> {
    match value {
        Value::String(name) => Level::from_name(name.trim()),
        Value::Number(number) => Level::from_number(number.as_i64()?),
        _ => None,
    }
}

fn json_string(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// RFC 3339 text, or a Unix time in seconds, milliseconds, microseconds or
/// nanoseconds (told apart by magnitude).
fn json_timestamp(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => {
            // Integers are scaled exactly; floats (`1763632800.25`) as floats.
            let nanos = match number.as_i64() {
                Some(value) => {
                    let value = i128::from(value);
                    match value.unsigned_abs() {
                        v if v < 100_000_000_000 => value * 1_000_000_000,
                        v if v < 100_000_000_000_000 => value * 1_000_000,
                        v if v < 100_000_000_000_000_000 => value * 1_000,
                        _ => value,
                    }
                }
                None => {
                    let value = number.as_f64()?;
                    let scale = match value.abs() {
                        v if v < 1e11 => 1e9,
                        v if v < 1e14 => 1e6,
                        v if v < 1e17 => 1e3,
                        _ => 1.0,
                    };
                    // Whole and fraction scaled apart: `1796637600.25` s
                    // times 1e9 in one f64 misses its last microseconds.
                    let whole = value.trunc();
                    whole as i128 * scale as i128 + ((value - whole) * scale).round() as i128
                }
            };
            Timestamp::from_nanosecond(nanos).ok()
        }
        _ => None,
    }
}

/// glog / abseil: `Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg`, where
/// `L` is `I`, `W`, `E` or `F`; glog 0.6 and later print the year too
/// (`Lyyyymmdd …`, its `log_year_in_prefix`, on by default). The thread id
/// is padded with spaces.
fn parse_glog(line: &str) -> Option<ParsedLine> {
    let level = match line.as_bytes().first()? {
        b'I' => Level::Info,
        b'W' => Level::Warn,
        b'E' => Level::Error,
        b'F' => Level::Fatal,
        _ => return None,
    };
    // The first byte is ASCII: the rest starts on a character.
    let (date, rest) = line[1..].split_once(' ')?;
    if !matches!(date.len(), 4 | 8) || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (time, rest) = rest.split_once(' ')?;
    if !is_glog_time(time) {
        return None;
    }
    let (header, message) = match rest.split_once("] ") {
        Some(split) => split,
        None => (rest.strip_suffix(']')?, ""),
    };
    let mut parts = header.split_whitespace();
    let thread = parts.next()?.parse::<u64>().ok()?;
    let location = parts.next()?;
    if parts.next().is_some() || !location.contains(':') {
        return None;
    }
    let mut fields = Fields::new();
    fields.insert("thread".into(), thread.into());
    fields.insert("location".into(), location.into());
    Some(ParsedLine {
        level: Some(level),
        message: message.to_owned(),
        fields: FieldsJson::from_map(&fields),
        ..ParsedLine::default()
    })
}

/// `hh:mm:ss.uuuuuu`: digits where digits go, and some of a second.
fn is_glog_time(time: &str) -> bool {
    let bytes = time.as_bytes();
    bytes.len() > 9
        && bytes.iter().enumerate().all(|(at, byte)| match at {
            2 | 5 => *byte == b':',
            8 => *byte == b'.',
            _ => byte.is_ascii_digit(),
        })
}

/// `INFO | msg`, `time | INFO | msg`, `[ERROR] msg`, `WARNING: msg`,
/// `WARNING:logger:msg`.
fn parse_level_prefix(line: &str) -> Option<ParsedLine> {
    parse_pipe_prefix(line)
        .or_else(|| parse_bracket_prefix(line))
        .or_else(|| parse_colon_prefix(line))
}

fn parse_pipe_prefix(line: &str) -> Option<ParsedLine> {
    let mut segment_start = 0;
    // The level is the first or second `|`-separated segment.
    for _ in 0..2 {
        let rest = &line[segment_start..];
        let end = rest.find('|')?;
        if let Some(level) = Level::from_name(rest[..end].trim()) {
            let message = without_token(&line[..segment_start], &rest[end + 1..]);
            return Some(with_level(level, message));
        }
        segment_start += end + 1;
    }
    None
}

fn parse_bracket_prefix(line: &str) -> Option<ParsedLine> {
    let mut offset = 0;
    // The level is one of the first three `[…]` groups: `[ts] [host] [ERROR]`.
    for _ in 0..3 {
        let rest = &line[offset..];
        if !rest.starts_with('[') {
            return None;
        }
        let close = rest.find(']')?;
        if let Some(level) = Level::from_name(rest[1..close].trim()) {
            let message = without_token(&line[..offset], &rest[close + 1..]);
            return Some(with_level(level, message));
        }
        offset += close + 1;
        offset += line[offset..].len() - line[offset..].trim_start().len();
    }
    None
}

/// The message once the level token between `before` and `after` is taken
/// out.
fn without_token(before: &str, after: &str) -> String {
    let (before, after) = (before.trim_end(), after.trim_start());
    if before.is_empty() {
        after.to_owned()
    } else {
        format!("{before} {after}")
    }
}

fn parse_colon_prefix(line: &str) -> Option<ParsedLine> {
    let colon = line.find(':')?;
    let level = Level::from_name(&line[..colon])?;
    let rest = &line[colon + 1..];
    // Python logging's default format: `LEVEL:logger:message`, no spaces.
    if let Some(logger_end) = rest.find(':') {
        let logger = &rest[..logger_end];
        let is_logger_name = !logger.is_empty()
            && logger
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if is_logger_name {
            let mut parsed = with_level(level, rest[logger_end + 1..].trim_start().to_owned());
            let fields = Fields::from_iter([("logger".to_owned(), logger.into())]);
            parsed.fields = FieldsJson::from_map(&fields);
            return Some(parsed);
        }
    }
    Some(with_level(level, rest.trim_start().to_owned()))
}

/// `Traceback (most recent call last):`, or the exception line that ends a
/// traceback: `ModuleNotFoundError: No module named 'av'`,
/// `torch.OutOfMemoryError: CUDA out of memory`.
fn is_python_exception(line: &str) -> bool {
    if line.starts_with("Traceback (most recent call last):") {
        return true;
    }
    let Some(colon) = line.find(": ") else {
        return false;
    };
    let name = &line[..colon];
    let type_name = name.rsplit('.').next().unwrap_or(name);
    let is_dotted_identifier = name.split('.').all(|part| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    });
    is_dotted_identifier
        && ["Error", "Exception", "Exit", "Interrupt", "Warning"]
            .iter()
            .any(|suffix| type_name.ends_with(suffix) && type_name.len() > suffix.len())
}

fn with_level(level: Level, message: String) -> ParsedLine {
    ParsedLine {
        level: Some(level),
        message,
        ..ParsedLine::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> FieldsJson {
        FieldsJson::from_map(value.as_object().unwrap())
    }

    #[test]
    fn json_line_with_common_keys() {
        let parsed = parse_line(
            r#"{"level":"ERROR","msg":"cuda oom","request_id":"r-1","ts":"2026-11-20T10:00:00Z","gpu":0}"#,
        );
        assert_eq!(parsed.level, Some(Level::Error));
        assert_eq!(parsed.message, "cuda oom");
        assert_eq!(parsed.request_id.as_deref(), Some("r-1"));
        assert_eq!(
            parsed.ts,
            Some("2026-11-20T10:00:00Z".parse::<Timestamp>().unwrap())
        );
        assert_eq!(parsed.fields, fields(json!({"gpu": 0})));
    }

    #[test]
    fn runpod_structured_line() {
        let parsed = parse_line(
            r#"{"requestId": "sync-123-u1", "message": "Started job", "level": "INFO"}"#,
        );
        assert_eq!(parsed.level, Some(Level::Info));
        assert_eq!(parsed.message, "Started job");
        assert_eq!(parsed.request_id.as_deref(), Some("sync-123-u1"));
        assert!(parsed.fields.is_empty());

        // Outside a job the worker prints a null request id: no request,
        // and no field either.
        let parsed = parse_line(
            r#"{"requestId": null, "message": "GPU memory: 9.46 GiB", "level": "INFO"}"#,
        );
        assert_eq!(parsed.message, "GPU memory: 9.46 GiB");
        assert_eq!(parsed.request_id, None);
        assert!(parsed.fields.is_empty());
        // Other nulls are kept as fields.
        let parsed = parse_line(r#"{"msg": "x", "request_id": null, "gpu": null}"#);
        assert_eq!(parsed.fields, fields(json!({"gpu": null})));
    }

    #[test]
    fn json_alternative_keys_severity_levelname_message_time() {
        let parsed = parse_line(r#"{"severity":"warning","message":"slow","time":1763632800}"#);
        assert_eq!(parsed.level, Some(Level::Warn));
        assert_eq!(parsed.message, "slow");
        assert_eq!(parsed.ts, Some(Timestamp::from_second(1763632800).unwrap()));

        let parsed =
            parse_line(r#"{"levelname":"CRITICAL","message":"dead","timestamp":1763632800123}"#);
        assert_eq!(parsed.level, Some(Level::Fatal));
        assert_eq!(
            parsed.ts,
            Some(Timestamp::from_millisecond(1763632800123).unwrap())
        );
    }

    #[test]
    fn json_numeric_pino_levels() {
        let parsed = parse_line(r#"{"level":40,"msg":"careful"}"#);
        assert_eq!(parsed.level, Some(Level::Warn));
    }

    #[test]
    fn json_without_message_keeps_whole_line_and_fields() {
        let line = r#"{"step": 10, "loss": 0.25}"#;
        let parsed = parse_line(line);
        assert_eq!(parsed.level, None);
        assert_eq!(parsed.message, line);
        assert_eq!(parsed.fields, fields(json!({"step": 10, "loss": 0.25})));
        assert_eq!(parsed.fields.as_str(), r#"{"loss":0.25,"step":10}"#);
    }

    #[test]
    fn json_with_unknown_level_value_keeps_it_as_a_field() {
        let parsed = parse_line(r#"{"level":"loud","msg":"x"}"#);
        assert_eq!(parsed.level, None);
        assert_eq!(parsed.fields, fields(json!({"level": "loud"})));
    }

    #[test]
    fn broken_json_is_verbatim() {
        let line = r#"{"level":"info","msg":"#;
        assert_eq!(
            parse_line(line),
            ParsedLine {
                message: line.into(),
                ..ParsedLine::default()
            }
        );
    }

    #[test]
    fn pipe_prefix() {
        let parsed = parse_line("INFO | loading weights");
        assert_eq!(parsed.level, Some(Level::Info));
        assert_eq!(parsed.message, "loading weights");
    }

    #[test]
    fn loguru_pipe_prefix_after_time() {
        let parsed = parse_line("2026-11-20 10:00:00.123 | WARNING  | app:main:12 - queue is long");
        assert_eq!(parsed.level, Some(Level::Warn));
        assert_eq!(
            parsed.message,
            "2026-11-20 10:00:00.123 | app:main:12 - queue is long"
        );
    }

    #[test]
    fn bracket_prefix() {
        let parsed = parse_line("[ERROR] failed to load model");
        assert_eq!(parsed.level, Some(Level::Error));
        assert_eq!(parsed.message, "failed to load model");

        let parsed = parse_line("[2026-11-20 10:00:00] [warn] disk almost full");
        assert_eq!(parsed.level, Some(Level::Warn));
        assert_eq!(parsed.message, "[2026-11-20 10:00:00] disk almost full");
    }

    #[test]
    fn colon_prefix_and_python_logging_default_format() {
        let parsed = parse_line("WARNING: torch not compiled with flash attention");
        assert_eq!(parsed.level, Some(Level::Warn));
        assert_eq!(parsed.message, "torch not compiled with flash attention");

        let parsed = parse_line("ERROR:handler:job failed: timeout");
        assert_eq!(parsed.level, Some(Level::Error));
        assert_eq!(parsed.message, "job failed: timeout");
        assert_eq!(parsed.fields, fields(json!({"logger": "handler"})));

        let parsed = parse_line("INFO:     Uvicorn running on http://0.0.0.0:8000");
        assert_eq!(parsed.level, Some(Level::Info));
        assert_eq!(parsed.message, "Uvicorn running on http://0.0.0.0:8000");
        assert!(parsed.fields.is_empty());
    }

    #[test]
    fn glog_prefix() {
        let parsed = parse_line(
            "E1120 10:11:12.123456  4242 engine.cc:88] NCCL error: unhandled cuda error",
        );
        assert_eq!(parsed.level, Some(Level::Error));
        assert_eq!(parsed.message, "NCCL error: unhandled cuda error");
        assert_eq!(
            parsed.fields,
            fields(json!({"thread": 4242, "location": "engine.cc:88"}))
        );
    }

    #[test]
    fn glog_prefix_with_the_year_and_every_level() {
        // glog 0.6 and later print the year; the thread id is padded.
        for (line, level) in [
            (
                "I20261207 12:34:56.789012  1234 main.cc:42] ready",
                Level::Info,
            ),
            (
                "W20261207 12:34:56.789012  1234 main.cc:42] ready",
                Level::Warn,
            ),
            ("E1207 12:34:56.789012 1234 main.cc:42] ready", Level::Error),
            ("F1207 12:34:56.789012 1234 main.cc:42] ready", Level::Fatal),
        ] {
            let parsed = parse_line(line);
            assert_eq!(parsed.level, Some(level), "{line}");
            assert_eq!(parsed.message, "ready", "{line}");
            assert_eq!(
                parsed.fields,
                fields(json!({"thread": 1234, "location": "main.cc:42"})),
                "{line}"
            );
        }
        // A message of nothing, and one that holds `] `.
        let parsed = parse_line("I1207 12:34:56.789012 7 a.py:1]");
        assert_eq!(
            (parsed.level, parsed.message.as_str()),
            (Some(Level::Info), "")
        );
        let parsed = parse_line("W1207 12:34:56.789012 7 a.py:1] [x] done] ok");
        assert_eq!(parsed.message, "[x] done] ok");
    }

    #[test]
    fn glog_lookalikes_are_verbatim() {
        for line in [
            "E120 12:34:56.789012 1234 main.cc:42] short date",
            "E123456 12:34:56.789012 1234 main.cc:42] six digits",
            "E1207 12:34:56 1234 main.cc:42] no fraction",
            "E1207 12-34-56.789012 1234 main.cc:42] dashes",
            "E1207 12:34:56.789012 main main.cc:42] named thread",
            "E1207 12:34:56.789012 1234 main.cc] no line",
            "E1207 12:34:56.789012 1234 main.cc:42 extra] too many",
            "E1207 12:34:56.789012 1234 main.cc:42 no bracket",
            "Iñ207 12:34:56.789012 1234 main.cc:42] not ascii",
        ] {
            let parsed = parse_line(line);
            assert_eq!(parsed.level, None, "{line}");
            assert_eq!(parsed.message, line);
        }
    }

    #[test]
    fn python_traceback_ends_are_errors_kept_verbatim() {
        for line in [
            "Traceback (most recent call last):",
            "ModuleNotFoundError: No module named 'flash_attn'",
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB.",
        ] {
            let parsed = parse_line(line);
            assert_eq!(parsed.level, Some(Level::Error), "{line}");
            assert_eq!(parsed.message, line);
        }
    }

    #[test]
    fn plain_lines_are_verbatim_without_level() {
        for line in [
            "  File \"/app/handler.py\", line 3, in <module>",
            "Errors: 3 of 10 files",
            "my error: something",       // has a space: not an exception type
            "Information is power | ok", // not a level word
            "Epoch 3: loss=0.1",
            "",
            "I am not glog",
            "[step 3] done",
        ] {
            let parsed = parse_line(line);
            assert_eq!(parsed.level, None, "{line}");
            assert_eq!(parsed.message, line);
            assert!(parsed.fields.is_empty());
        }
    }
}
