//! The record: one line of output (or one lifecycle event) with its labels.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// Extra structured fields of a record: a JSON object.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// The fields of a JSON object (`json!({"event": "exit"})`); anything else
/// has none, so a record is never lost to the shape of its fields.
pub fn fields_of(value: serde_json::Value) -> Fields {
    match value {
        serde_json::Value::Object(map) => map,
        _ => Fields::new(),
    }
}

/// An ingested record's fields as the compact JSON text of an object, the
/// form the store keeps them in: ingest carries the text from the wire to
/// the store without building a map of it (most records are neither
/// redacted nor cut), and [`FieldsJson::to_map`] parses it where a map is
/// needed.
///
/// On the wire it is the object itself. Reading accepts only an object, with
/// the errors a [`Fields`] map gives, and keeps it compact: no whitespace
/// outside strings, so never a raw line break (a block's fields column holds
/// one object a line). Whatever is read also parses as a [`Fields`] map:
/// what `serde_json`'s `RawValue` leaves unchecked (lone surrogates, numbers
/// out of range, nesting) is checked here. `{}` counts as no fields.
///
/// Two values are equal when their text is: key order and escapes are kept
/// as written.
#[derive(Clone, Default)]
pub struct FieldsJson(Option<Box<RawValue>>);

/// How deep fields may nest (the object itself is one level): as deep as
/// `serde_json` reads them inside an ingest batch or a page of records (128
/// levels, less the enclosing object, list and record).
pub const FIELDS_MAX_DEPTH: usize = 124;

impl FieldsJson {
    /// No fields.
    pub fn new() -> FieldsJson {
        FieldsJson(None)
    }

    /// The compact JSON text of `fields`.
    pub fn from_map(fields: &Fields) -> FieldsJson {
        if fields.is_empty() {
            return FieldsJson(None);
        }
        let json = serde_json::value::to_raw_value(fields).expect("a map serializes to json");
        FieldsJson(Some(json))
    }

    /// The fields as a map (a parse of the text).
    pub fn to_map(&self) -> Fields {
        match &self.0 {
            None => Fields::new(),
            Some(json) => serde_json::from_str(json.get())
                .expect("fields json is checked to parse as a map when it is made"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The compact JSON text; empty for no fields.
    pub fn as_str(&self) -> &str {
        self.0.as_deref().map_or("", RawValue::get)
    }

    /// The compact JSON text, moved out; empty for no fields.
    pub fn into_string(self) -> String {
        self.0
            .map_or_else(String::new, |json| Box::<str>::from(json).into())
    }

    /// Whether the object may hold more than `limit` keys, answered without
    /// building a map: from the text's length alone when it is too short for
    /// that many (each key takes at least 5 bytes: `"":0,`), else by
    /// counting them. A key written twice counts twice here (a map keeps
    /// its last value), so this is a bound: parse to count exactly.
    pub fn more_keys_than(&self, limit: usize) -> bool {
        let json = self.as_str();
        if json.len() < limit.saturating_mul(5).saturating_add(6) {
            return false;
        }
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let keys = de::Deserializer::deserialize_map(&mut deserializer, KeyCount)
            .expect("fields json is an object");
        keys > limit
    }
}

impl fmt::Debug for FieldsJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldsJson({})", self.as_str())
    }
}

impl PartialEq for FieldsJson {
    fn eq(&self, other: &FieldsJson) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for FieldsJson {}

impl Serialize for FieldsJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(json) => json.serialize(serializer),
            None => Fields::new().serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for FieldsJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FieldsJson, D::Error> {
        let json = Box::<RawValue>::deserialize(deserializer)?;
        if !json.get().starts_with('{') {
            return Err(not_an_object(json.get()));
        }
        let json = match checked_compact(json.get()).map_err(de::Error::custom)? {
            None => json,
            Some(compacted) => RawValue::from_string(compacted).map_err(de::Error::custom)?,
        };
        if json.get() == "{}" {
            return Ok(FieldsJson(None));
        }
        Ok(FieldsJson(Some(json)))
    }
}

/// The error a [`Fields`] map gives for JSON `json` that is no object.
fn not_an_object<E: de::Error>(json: &str) -> E {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let unexpected = match &value {
        serde_json::Value::Null => Unexpected::Unit,
        serde_json::Value::Bool(value) => Unexpected::Bool(*value),
        serde_json::Value::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(unsigned), _) => Unexpected::Unsigned(unsigned),
            (None, Some(signed)) => Unexpected::Signed(signed),
            (None, None) => Unexpected::Float(number.as_f64().unwrap_or_default()),
        },
        serde_json::Value::String(text) => Unexpected::Str(text),
        serde_json::Value::Array(_) => Unexpected::Seq,
        serde_json::Value::Object(_) => Unexpected::Map,
    };
    E::invalid_type(unexpected, &"a map")
}

/// Counts an object's keys, reading past their values.
struct KeyCount;

impl<'de> Visitor<'de> for KeyCount {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let mut keys = 0;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
            keys += 1;
        }
        Ok(keys)
    }
}

/// Checks valid JSON `json` for what a map would refuse and `RawValue` does
/// not (lone surrogates in `\u` escapes, numbers beyond `f64`, nesting past
/// [`FIELDS_MAX_DEPTH`]), with `serde_json`'s words, and strips the
/// whitespace outside strings: `None` when there is none, so the text is
/// kept as it is.
fn checked_compact(json: &str) -> Result<Option<String>, &'static str> {
    let bytes = json.as_bytes();
    let mut compacted: Option<String> = None;
    // `json[..copied]` is in `compacted` (once there is one).
    let mut copied = 0;
    let mut depth = 0;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => at = string_end(bytes, at + 1)?,
            b'{' | b'[' => {
                depth += 1;
                if depth > FIELDS_MAX_DEPTH {
                    return Err("recursion limit exceeded");
                }
                at += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                at += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                while bytes
                    .get(at)
                    .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    at += 1;
                }
                check_number(&json[start..at])?;
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                let out = compacted.get_or_insert_with(|| String::with_capacity(json.len()));
                out.push_str(&json[copied..at]);
                while bytes
                    .get(at)
                    .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                {
                    at += 1;
                }
                copied = at;
            }
            _ => at += 1,
        }
    }
    Ok(compacted.map(|mut out| {
        out.push_str(&json[copied..]);
        out
    }))
}

/// The index past the closing quote of the valid JSON string whose text
/// starts at `at`, once its `\u` escapes are checked to pair surrogates.
fn string_end(bytes: &[u8], mut at: usize) -> Result<usize, &'static str> {
    loop {
        let Some(found) = memchr::memchr2(b'"', b'\\', &bytes[at..]) else {
            return Ok(bytes.len());
        };
        at += found;
        if bytes[at] == b'"' {
            return Ok(at + 1);
        }
        if bytes.get(at + 1) != Some(&b'u') {
            at += 2;
            continue;
        }
        let unit = hex_escape(bytes, at);
        at += 6;
        match unit {
            0xDC00..=0xDFFF => return Err("lone leading surrogate in hex escape"),
            0xD800..=0xDBFF => {
                if bytes.get(at..at + 2) != Some(b"\\u") {
                    return Err("unexpected end of hex escape");
                }
                if !(0xDC00..=0xDFFF).contains(&hex_escape(bytes, at)) {
                    return Err("lone leading surrogate in hex escape");
                }
                at += 6;
            }
            _ => {}
        }
    }
}

/// The code unit of the `\uXXXX` escape at `at` (its hex digits checked by
/// the JSON parser).
fn hex_escape(bytes: &[u8], at: usize) -> u32 {
    let digits = bytes.get(at + 2..at + 6).unwrap_or_default();
    digits.iter().fold(0, |unit, &digit| {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            b'A'..=b'F' => digit - b'A' + 10,
            _ => 0,
        };
        unit * 16 + u32::from(value)
    })
}

/// A number a map reads as an `f64` must be finite. One without an
/// exponent needs over 300 digits to overflow, so short ones are let by.
fn check_number(number: &str) -> Result<(), &'static str> {
    if number.len() < 300 && !number.contains(['e', 'E']) {
        return Ok(());
    }
    match number.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(()),
        _ => Err("number out of range"),
    }
}

/// Severity, ordered from least to most severe so `level >= Level::Warn` reads
/// as "warnings and worse".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    /// The level as one byte, as stored parts and spools keep it: its rank,
    /// from 0 (trace). Written to disk, so never renumbered.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The level of a [`Level::code`]; `None` for a byte that is none.
    pub fn from_code(code: u8) -> Option<Level> {
        Level::ALL.get(usize::from(code)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// Reads the level names loggers of many languages write, in any case:
    /// `WARNING`, `err`, `CRITICAL`, `notice`, `panic`, …
    pub fn from_name(name: &str) -> Option<Level> {
        let level = match name.to_ascii_lowercase().as_str() {
            "trace" | "trc" => Level::Trace,
            "debug" | "dbg" => Level::Debug,
            // RunPod's logger has a `TIP` level between info and warn.
            "info" | "inf" | "information" | "informational" | "notice" | "tip" => Level::Info,
            "warn" | "wrn" | "warning" => Level::Warn,
            "error" | "err" | "eror" => Level::Error,
            "fatal" | "crit" | "critical" | "panic" | "emerg" | "emergency" | "alert" => {
                Level::Fatal
            }
            _ => return None,
        };
        Some(level)
    }

    /// Numeric levels as pino and bunyan write them (10 trace … 60 fatal).
    pub fn from_number(number: i64) -> Option<Level> {
        let level = match number {
            ..=14 => Level::Trace,
            15..=24 => Level::Debug,
            25..=34 => Level::Info,
            35..=44 => Level::Warn,
            45..=54 => Level::Error,
            _ => Level::Fatal,
        };
        (number > 0).then_some(level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::from_name(s).ok_or_else(|| {
            format!("unknown level '{s}': use one of trace, debug, info, warn, error, fatal")
        })
    }
}

/// Which output a record came from. `System` records are written by tailwater
/// itself: lifecycle events, drop and throttle accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::System];

    /// The stream as one byte, as stored parts and spools keep it: 0
    /// stdout, 1 stderr, 2 system. Written to disk, so never renumbered.
    pub fn code(self) -> u8 {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::System => 2,
        }
    }

    /// The stream of a [`Stream::code`]; `None` for a byte that is none.
    pub fn from_code(code: u8) -> Option<Stream> {
        Stream::ALL.get(usize::from(code)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
}

impl FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Stream::Stdout),
            "stderr" => Ok(Stream::Stderr),
            "system" => Ok(Stream::System),
            _ => Err(format!(
                "unknown stream '{s}': use one of stdout, stderr, system"
            )),
        }
    }
}

/// Which part of the platform produced a record: the worker itself (`run`),
/// the request gateway in front of it, or the deployment machinery.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Run,
    Gateway,
    Deploy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Run => "run",
            Source::Gateway => "gateway",
            Source::Deploy => "deploy",
        }
    }

    /// The source as one byte, as binary ingest batches carry it. Sent
    /// between processes, so never renumbered.
    pub fn code(self) -> u8 {
        match self {
            Source::Run => 0,
            Source::Gateway => 1,
            Source::Deploy => 2,
        }
    }

    /// The source of a [`Source::code`]; `None` for a byte that is none.
    pub fn from_code(code: u8) -> Option<Source> {
        [Source::Run, Source::Gateway, Source::Deploy]
            .get(usize::from(code))
            .copied()
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "run" => Ok(Source::Run),
            "gateway" => Ok(Source::Gateway),
            "deploy" => Ok(Source::Deploy),
            _ => Err(format!(
                "unknown source '{s}': use one of run, gateway, deploy"
            )),
        }
    }
}

/// A stored record, as every read API returns it.
///
/// `(tenant, app, runner, boot, seq)` identifies the line the agent
/// captured, so a batch delivered twice is stored once. `id` is opaque: the
/// record's ingest position sealed for its tenant ([`crate::positions`]);
/// live tail resumes after an `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Filled by the server as the record leaves it; empty inside.
    #[serde(default)]
    pub id: String,
    /// The store's ingest order, across all tenants: live tail follows it,
    /// history breaks ties of time with it. Never sent.
    #[serde(skip)]
    pub position: u64,
    pub ts: Timestamp,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
    pub seq: u64,
    pub source: Source,
    pub stream: Stream,
    pub level: Level,
    pub request_id: Option<String>,
    pub message: String,
    #[serde(default)]
    pub fields: Fields,
    /// The captured bytes were not valid UTF-8; invalid sequences in
    /// `message` were replaced with U+FFFD.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invalid_utf8: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields_json(json: &str) -> Result<FieldsJson, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    #[test]
    fn level_and_stream_codes_are_the_bytes_on_disk() {
        // Parts and spools already written hold these bytes.
        let levels = Level::ALL.map(Level::code);
        assert_eq!(levels, [0, 1, 2, 3, 4, 5]);
        assert_eq!(Stream::ALL.map(Stream::code), [0, 1, 2]);
        for level in Level::ALL {
            assert_eq!(Level::from_code(level.code()), Some(level));
        }
        for stream in Stream::ALL {
            assert_eq!(Stream::from_code(stream.code()), Some(stream));
        }
        assert_eq!(Level::from_code(6), None);
        assert_eq!(Stream::from_code(3), None);
    }

    #[test]
    fn fields_of_an_object_and_of_anything_else() {
        let fields = fields_of(serde_json::json!({"event": "exit", "code": 0}));
        assert_eq!(fields["event"], "exit");
        assert_eq!(fields.len(), 2);
        assert!(fields_of(serde_json::json!([1, 2])).is_empty());
        assert!(fields_of(serde_json::Value::Null).is_empty());
    }

    #[test]
    fn fields_json_keeps_a_compact_object_as_it_came() {
        let json = r#"{"z":1,"a":{"b":[1,2.5,null,true]},"s":"x y\n\"\\é😀\u00e9"}"#;
        let fields = fields_json(json).unwrap();
        assert_eq!(fields.as_str(), json);
        assert_eq!(serde_json::to_string(&fields).unwrap(), json);
        assert_eq!(fields.to_map()["s"], "x y\n\"\\é😀é");
        assert_eq!(fields.to_map()["a"]["b"][1], 2.5);
    }

    #[test]
    fn fields_json_strips_whitespace_outside_strings_only() {
        let pretty = "{\n  \"a\" : { \"b\" : [ 1 , -2e3 ] } ,\r\n\t\"s\" : \"{ \\\" \\\\ }\\n keep  this\" ,\n \"u\": \"é 😀\\u00e9 \\ud83d\\ude00\"\n}";
        let fields = fields_json(pretty).unwrap();
        assert_eq!(
            fields.as_str(),
            r#"{"a":{"b":[1,-2e3]},"s":"{ \" \\ }\n keep  this","u":"é 😀\u00e9 \ud83d\ude00"}"#
        );
        assert!(!fields.as_str().contains('\n'));
        assert_eq!(
            fields.to_map(),
            serde_json::from_str::<Fields>(pretty).unwrap()
        );
    }

    #[test]
    fn an_empty_object_is_no_fields() {
        for json in ["{}", "{ }", "{\n}"] {
            let fields = fields_json(json).unwrap();
            assert!(fields.is_empty(), "{json}");
            assert_eq!(fields.as_str(), "");
            assert_eq!(serde_json::to_string(&fields).unwrap(), "{}");
        }
        assert_eq!(FieldsJson::from_map(&Fields::new()), FieldsJson::new());
        assert_eq!(FieldsJson::new().to_map(), Fields::new());
        assert_eq!(FieldsJson::new().into_string(), "");
    }

    #[test]
    fn fields_json_and_a_map_convert_both_ways() {
        let map: Fields = serde_json::from_str(r#"{"b":{"c":[1,"two"]},"a":"x"}"#).unwrap();
        let fields = FieldsJson::from_map(&map);
        assert_eq!(fields.as_str(), r#"{"a":"x","b":{"c":[1,"two"]}}"#);
        assert_eq!(fields.to_map(), map);
        assert_eq!(fields.into_string(), r#"{"a":"x","b":{"c":[1,"two"]}}"#);
    }

    /// Records' fields read as a map and as text, in the envelope of an
    /// ingest batch (an object, its list of records, a record), which
    /// counts towards `serde_json`'s nesting limit.
    fn read_both(fields: &str) -> (Result<Fields, String>, Result<FieldsJson, String>) {
        #[derive(Deserialize)]
        struct Batch<T> {
            records: Vec<Record<T>>,
        }
        #[derive(Deserialize)]
        struct Record<T> {
            fields: T,
        }
        fn read<T: serde::de::DeserializeOwned>(fields: &str) -> Result<T, String> {
            let batch = format!(r#"{{"records":[{{"fields":{fields}}}]}}"#);
            match serde_json::from_str::<Batch<T>>(&batch) {
                Ok(mut batch) => Ok(batch.records.remove(0).fields),
                // Words only: the column may differ (after a refused list
                // rather than at its start).
                Err(error) => {
                    let text = error.to_string();
                    Err(text[..text.find(" at line").unwrap_or(text.len())].to_owned())
                }
            }
        }
        (read(fields), read(fields))
    }

    fn nested(levels: usize) -> String {
        format!(r#"{{"deep":{}{}}}"#, "[".repeat(levels), "]".repeat(levels))
    }

    /// The errors of today's map, so a bad batch gets the same 400.
    #[test]
    fn what_a_map_refuses_is_refused_with_its_words() {
        for value in [
            r#""text""#.to_owned(),
            "7".into(),
            "-7".into(),
            "1.5".into(),
            "null".into(),
            "true".into(),
            "[1]".into(),
            r#"{"s":"\udc00"}"#.into(),
            r#"{"s":"\ud800"}"#.into(),
            r#"{"s":"\ud800\u0041"}"#.into(),
            r#"{"n":1e400}"#.into(),
            r#"{"n":-1E+999}"#.into(),
            format!(r#"{{"n":{}}}"#, "9".repeat(400)),
            nested(FIELDS_MAX_DEPTH),
        ] {
            let (map, json) = read_both(&value);
            let map_error = map.unwrap_err();
            assert!(!map_error.is_empty());
            assert_eq!(json.unwrap_err(), map_error, "{value}");
        }
    }

    #[test]
    fn what_a_map_reads_is_read() {
        for value in [
            r#"{"s":"\ud83d\ude00 \u0000 \/"}"#.to_owned(),
            r#"{"n":1.7976931348623157e308,"m":1e-400,"z":0e999}"#.into(),
            format!(r#"{{"n":{}}}"#, "9".repeat(300)),
            nested(FIELDS_MAX_DEPTH - 1),
        ] {
            let (map, json) = read_both(&value);
            assert_eq!(json.unwrap().to_map(), map.unwrap(), "{value}");
        }
    }

    #[test]
    fn keys_are_counted_without_a_map() {
        let three = fields_json(r#"{"a":1,"b":{"x":1,"y":2,"z":3},"c":"d,e:f"}"#).unwrap();
        assert!(three.more_keys_than(2));
        assert!(!three.more_keys_than(3));
        assert!(!three.more_keys_than(256));
        let long_values = fields_json(&format!(r#"{{"a":"{}"}}"#, "x".repeat(2000))).unwrap();
        assert!(!long_values.more_keys_than(1));
        assert!(long_values.more_keys_than(0));
        // A key written twice counts twice (the map keeps the last one).
        let twice = fields_json(r#"{"a":1,"a":2}"#).unwrap();
        assert!(twice.more_keys_than(1));
        assert_eq!(twice.to_map().len(), 1);
        assert!(!FieldsJson::new().more_keys_than(0));
    }

    #[test]
    fn levels_order_from_least_to_most_severe() {
        assert!(Level::Trace < Level::Debug);
        assert!(Level::Warn < Level::Error);
        assert!(Level::Error < Level::Fatal);
    }

    #[test]
    fn level_names_of_common_loggers_are_understood() {
        assert_eq!(Level::from_name("WARNING"), Some(Level::Warn));
        assert_eq!(Level::from_name("Critical"), Some(Level::Fatal));
        assert_eq!(Level::from_name("err"), Some(Level::Error));
        assert_eq!(Level::from_name("verbose"), None);
        assert_eq!(Level::from_number(30), Some(Level::Info));
        assert_eq!(Level::from_number(50), Some(Level::Error));
    }

    #[test]
    fn unknown_level_error_says_what_to_use() {
        let error = "loud".parse::<Level>().unwrap_err();
        assert!(error.contains("use one of trace"), "{error}");
    }
}
