//! Ingest limits: what one batch may hold, and how fast an app and a runner
//! may send. The one home of every limit's rule, its reason name and the
//! `system` record that tells a runner's owner about it.
//!
//! | limit | setting | when hit |
//! |---|---|---|
//! | body size | `--max-batch-bytes` | 413 `batch_too_large`: the agent sends smaller batches, and drops (and reports) a single record still too large |
//! | body format | `--ingest-binary` (on) | 415 `unsupported_media_type` for a binary body when off; 400 `invalid_body` counted for a body that does not decode |
//! | label values (`version`, `runner`, `boot`; `app` by the registry's rule) | `--max-label-bytes`, no control characters; a boot not ending in `+server` (the server's own notices') | 400 `invalid_label`: nothing stored |
//! | sequence numbers | below [`MAX_AGENT_SEQ`] | 400 `invalid_seq`: higher ones are the server's own records |
//! | app rate | the app's `rate_limit_lines_per_sec` / `rate_limit_bytes_per_sec`, else `--app-rate-lines` / `--app-rate-bytes` | 429 with `Retry-After`: the agent keeps the batch and sends it again |
//! | runner rate | `--runner-rate-lines` / `--runner-rate-bytes` | 429 with `Retry-After`, the same |
//! | line length | the app's `max_line_bytes`, else `--max-line-bytes` | the message (and any longer string field) is cut, and marked |
//! | field count ("label count": a record's labels are a fixed set, its fields are what grows) | `--max-fields` | fields past it (in key order) are left out, and the record marked |
//! | request id | `--max-label-bytes`, no control characters | moved to the mark, so the line is kept |
//! | field key (top level) | `--max-field-key-bytes` | the field is left out (a cut key could collide with another), its key's start kept in the mark |
//!
//! A line is never lost to a limit: whole batches are refused (and stay
//! with the agent), single records are cut and marked in their field
//! `limited`. Every case is counted in `/metrics` by tenant, app and reason,
//! and whatever was cut or throttled is told in a `system` record in the
//! runner's own logs.
//!
//! Those records need an identity the store can deduplicate, like any
//! other: they take the batch's runner and boot, and a sequence number at
//! or above [`SERVER_SEQ_BASE`] derived from the batch's first record (see
//! [`server_seq`]), so a batch sent twice yields its report once.

use serde_json::Value;
use tailwater_model::tenancy::AppSettings;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{fields_of, Fields, FieldsJson, Level};

mod cuts;
mod rates;

pub use cuts::*;
pub use rates::*;

/// The longest line stored whole, for apps without their own
/// `max_line_bytes`: the agent's own `--max-line-bytes`, so lines it
/// already split are never cut again.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;
/// Fields one record may carry.
pub const DEFAULT_MAX_FIELDS: usize = 256;
/// Bytes of a label value or request id.
pub const DEFAULT_MAX_LABEL_BYTES: usize = 200;
/// Agents number records below this; the server's own records sit above.
pub const MAX_AGENT_SEQ: u64 = 1 << 60;
/// The first sequence number of records the server writes into a runner's
/// logs.
pub const SERVER_SEQ_BASE: u64 = 1 << 62;
/// The field that marks a record a limit changed.
pub const MARK_FIELD: &str = "limited";

/// Reasons, as `/metrics` labels them and `system` records name them.
pub const BATCH_TOO_LARGE: &str = "batch_too_large";
pub const INVALID_LABEL: &str = "invalid_label";
pub const INVALID_SEQ: &str = "invalid_seq";
pub const LINE_TOO_LONG: &str = "line_too_long";
pub const TOO_MANY_FIELDS: &str = "too_many_fields";
pub const INVALID_REQUEST_ID: &str = "invalid_request_id";
/// An ingest body that does not decode (JSON, or a binary batch).
pub const INVALID_BODY: &str = "invalid_body";
/// A binary ingest body sent to a server started with
/// `--ingest-binary=false` (415): the agent sends it again as JSON.
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
/// A source of another protocol (an OTLP resource, a Loki stream) that
/// names no app, sent with a token of none.
pub const NO_APP: &str = "no_app";
/// A batch naming another app than its ingest token's: counted under the
/// token's own app (the name it sent is the sender's to choose, so it is no
/// metric label).
pub const OTHER_APP: &str = "other_app";
/// An Elasticsearch bulk's document that is not a JSON object, or whose
/// `_index` or `_id` is past Elasticsearch's limits.
pub const INVALID_DOCUMENT: &str = "invalid_document";
/// An Elasticsearch bulk's `update` or `delete`: logs are kept as sent.
pub const UNSUPPORTED_ACTION: &str = "unsupported_action";

/// A rate: lines and bytes (of message text) per second; `None` is no
/// limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    pub lines_per_sec: Option<u64>,
    pub bytes_per_sec: Option<u64>,
}

/// The server's ingest limits (`tailwater server` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestLimits {
    pub max_line_bytes: usize,
    pub max_fields: usize,
    pub max_label_bytes: usize,
    pub max_field_key_bytes: usize,
    /// For apps without rate limits of their own.
    pub app_rate: Rate,
    /// Each runner's, whatever its app.
    pub runner_rate: Rate,
}

impl Default for IngestLimits {
    fn default() -> IngestLimits {
        IngestLimits {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_fields: DEFAULT_MAX_FIELDS,
            max_label_bytes: DEFAULT_MAX_LABEL_BYTES,
            max_field_key_bytes: DEFAULT_MAX_FIELD_KEY_BYTES,
            app_rate: Rate::default(),
            runner_rate: Rate::default(),
        }
    }
}

/// A whole batch refused: nothing of it is stored.
#[derive(Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl IngestLimits {
    /// The batch's labels and sequence numbers, checked before anything is
    /// stored.
    pub fn check_batch(&self, batch: &IngestBatch) -> Result<(), Refusal> {
        for (name, value) in [
            ("version", &batch.version),
            ("runner", &batch.runner),
            ("boot", &batch.boot),
        ] {
            if value.len() > self.max_label_bytes || value.chars().any(char::is_control) {
                return Err(Refusal {
                    reason: INVALID_LABEL,
                    message: format!(
                        "invalid ingest batch: {name} '{}' must be at most {} bytes without control characters (--max-label-bytes); fix the agent's --{name}",
                        cut_str(value, 64).escape_debug(),
                        self.max_label_bytes,
                    ),
                });
            }
        }
        if let Some(record) = batch.records.iter().find(|r| r.seq >= MAX_AGENT_SEQ) {
            return Err(Refusal {
                reason: INVALID_SEQ,
                message: format!(
                    "invalid ingest batch: seq {} is not below {MAX_AGENT_SEQ}; higher sequence numbers are kept for the server's own records",
                    record.seq
                ),
            });
        }
        Ok(())
    }

    /// The longest line `app` keeps whole.
    pub fn max_line_bytes(&self, app: Option<&AppSettings>) -> usize {
        app.and_then(|app| app.max_line_bytes)
            .and_then(|bytes| usize::try_from(bytes).ok())
            .unwrap_or(self.max_line_bytes)
    }

    /// `app`'s rate: its own settings, else the server's default.
    pub fn app_rate(&self, app: Option<&AppSettings>) -> Rate {
        Rate {
            lines_per_sec: app
                .and_then(|app| app.rate_limit_lines_per_sec)
                .or(self.app_rate.lines_per_sec),
            bytes_per_sec: app
                .and_then(|app| app.rate_limit_bytes_per_sec)
                .or(self.app_rate.bytes_per_sec),
        }
    }

    /// Holds `record` to the line, field and request id limits; returns
    /// which it was cut to (none, almost always). Its fields are parsed
    /// only when their text may be over a limit, and written again only
    /// when cut.
    pub fn cut_record(&self, record: &mut IngestRecord, max_line_bytes: usize) -> Cuts {
        let mut cuts = Cuts::default();
        let mut mark = Fields::new();
        let mut fields = self
            .fields_may_be_cut(&record.fields, max_line_bytes)
            .then(|| record.fields.to_map());
        if let Some(request_id) = &record.request_id {
            if request_id.len() > self.max_label_bytes || request_id.chars().any(char::is_control) {
                mark.insert(
                    "request_id".into(),
                    cut_str(request_id, self.max_label_bytes).into(),
                );
                record.request_id = None;
                cuts.invalid_request_id = true;
            }
        }
        if let Some(fields) = fields.as_mut().filter(|f| f.len() > self.max_fields) {
            let extra: Vec<String> = fields.keys().skip(self.max_fields).cloned().collect();
            for key in &extra {
                fields.remove(key);
            }
            mark.insert("fields_dropped".into(), extra.len().into());
            cuts.too_many_fields = true;
        }
        if let Some(fields) = fields.as_mut() {
            if let Some(keys) = drop_long_keys(fields, self.max_field_key_bytes) {
                mark.insert("field_keys_too_long".into(), keys);
                cuts.field_key_too_long = true;
            }
        }
        if record.message.len() > max_line_bytes {
            mark.insert("message_bytes".into(), record.message.len().into());
            let kept = cut_str(&record.message, max_line_bytes).len();
            record.message.truncate(kept);
            cuts.line_too_long = true;
        }
        let mut cut_fields = Vec::new();
        for (key, value) in fields.iter_mut().flatten() {
            if cut_value(value, max_line_bytes) {
                cut_fields.push(Value::from(key.as_str()));
            }
        }
        if !cut_fields.is_empty() {
            mark.insert("fields_cut".into(), cut_fields.into());
            cuts.line_too_long = true;
        }
        if !mark.is_empty() {
            let mut fields = fields.unwrap_or_else(|| record.fields.to_map());
            fields.insert(MARK_FIELD.into(), Value::Object(mark));
            record.fields = FieldsJson::from_map(&fields);
        }
        cuts
    }

    /// Whether fields written as `json` may hold more keys than
    /// `--max-fields` or a string longer than `max_line_bytes`, told
    /// without parsing them: a string is never longer than the text that
    /// holds it (escapes only shorten it).
    fn fields_may_be_cut(&self, json: &FieldsJson, max_line_bytes: usize) -> bool {
        json.as_str().len() > max_line_bytes
            || json.more_keys_than(self.max_fields)
            || has_long_key(json, self.max_field_key_bytes)
    }
}

/// Cuts every string in `value` longer than `max` bytes; whether any was.
fn cut_value(value: &mut Value, max: usize) -> bool {
    match value {
        Value::String(text) if text.len() > max => {
            let kept = cut_str(text, max).len();
            text.truncate(kept);
            true
        }
        Value::Array(values) => values
            .iter_mut()
            .fold(false, |cut, value| cut_value(value, max) | cut),
        Value::Object(map) => map
            .values_mut()
            .fold(false, |cut, value| cut_value(value, max) | cut),
        _ => false,
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut_str(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The kinds of report the server writes into a runner's logs; each batch
/// yields at most one of each.
#[derive(Clone, Copy)]
pub enum ReportKind {
    Cut = 0,
    RateLimited = 1,
}

/// The sequence number of the server's `kind` report about the batch whose
/// first record is `first_seq`: the same for the same batch sent again, so
/// the store keeps it once, and never one an agent uses.
pub fn server_seq(first_seq: u64, kind: ReportKind) -> u64 {
    debug_assert!(first_seq < MAX_AGENT_SEQ);
    SERVER_SEQ_BASE + first_seq * 4 + kind as u64
}

fn server_record(seq: u64, ts: jiff::Timestamp, message: String, fields: Value) -> IngestRecord {
    IngestRecord::system(seq, ts, Level::Warn, message, fields_of(fields))
}

/// Longest top-level field key, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_FIELD_KEY_BYTES: usize = 128;
pub const FIELD_KEY_TOO_LONG: &str = "field_key_too_long";
/// A label value matched a redaction pattern: the batch is refused (labels
/// are identity, never redacted).
pub const SECRET_IN_LABEL: &str = "secret_in_label";

/// Whether fields written as `json` have a top-level key longer than `max`
/// bytes, told without building a map or copying a key: only when the text
/// is long enough to hold one.
fn has_long_key(json: &FieldsJson, max: usize) -> bool {
    use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

    struct KeyLen(usize);
    impl<'de> de::Deserialize<'de> for KeyLen {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KeyLen, D::Error> {
            struct Len;
            impl Visitor<'_> for Len {
                type Value = KeyLen;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a key")
                }
                fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyLen, E> {
                    Ok(KeyLen(key.len()))
                }
            }
            deserializer.deserialize_str(Len)
        }
    }
    struct Longest(usize);
    impl<'de> Visitor<'de> for Longest {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut long = false;
            while let Some(KeyLen(len)) = map.next_key()? {
                long |= len > self.0;
                map.next_value::<IgnoredAny>()?;
            }
            Ok(long)
        }
    }
    let text = json.as_str();
    if text.len() <= max {
        return false;
    }
    serde_json::Deserializer::from_str(text)
        .deserialize_map(Longest(max))
        .unwrap_or(true)
}

/// Leaves out the fields whose key is longer than `max` bytes; the start
/// of each such key, if any was.
fn drop_long_keys(fields: &mut Fields, max: usize) -> Option<Value> {
    let long: Vec<String> = fields
        .keys()
        .filter(|key| key.len() > max)
        .cloned()
        .collect();
    if long.is_empty() {
        return None;
    }
    let starts = long
        .iter()
        .map(|key| {
            fields.remove(key);
            Value::from(cut_str(key, 64))
        })
        .collect();
    Some(Value::Array(starts))
}

#[cfg(test)]
mod tests;
