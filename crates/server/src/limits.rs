//! Ingest limits: what one batch may hold, and how fast an app and a runner
//! may send. The one home of every limit's rule, its reason name and the
//! `system` record that tells a runner's owner about it.
//!
//! | limit | setting | when hit |
//! |---|---|---|
//! | body size | `--max-batch-bytes` | 413 `batch_too_large`: the agent sends smaller batches, and drops (and reports) a single record still too large |
//! | label values (`version`, `runner`, `boot`; `app` by the registry's rule) | `--max-label-bytes`, no control characters | 400 `invalid_label`: nothing stored |
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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tailwater_model::lifecycle::Event;
use tailwater_model::tenancy::AppSettings;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{fields_of, Fields, FieldsJson, Level};

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

/// Which limits one record was cut to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    pub line_too_long: bool,
    pub too_many_fields: bool,
    pub invalid_request_id: bool,
    pub field_key_too_long: bool,
}

impl Cuts {
    pub fn reasons(self) -> impl Iterator<Item = &'static str> {
        [
            (self.line_too_long, LINE_TOO_LONG),
            (self.too_many_fields, TOO_MANY_FIELDS),
            (self.invalid_request_id, INVALID_REQUEST_ID),
            (self.field_key_too_long, FIELD_KEY_TOO_LONG),
        ]
        .into_iter()
        .filter_map(|(hit, reason)| hit.then_some(reason))
    }
}

/// What a batch's records were cut to, for its `system` record.
#[derive(Debug, Default)]
pub struct CutTally {
    /// Reason → records.
    counts: Vec<(&'static str, u64)>,
    first: Option<(u64, jiff::Timestamp)>,
}

impl CutTally {
    pub fn add(&mut self, record: &IngestRecord, cuts: Cuts) {
        let mut any = false;
        for reason in cuts.reasons() {
            any = true;
            match self.counts.iter_mut().find(|(seen, _)| *seen == reason) {
                Some((_, count)) => *count += 1,
                None => self.counts.push((reason, 1)),
            }
        }
        if any && self.first.is_none() {
            self.first = Some((record.seq, record.ts));
        }
    }

    pub fn counts(&self) -> &[(&'static str, u64)] {
        &self.counts
    }

    /// The `system` record telling the runner's owner, if anything was cut.
    pub fn report(&self, max_line_bytes: usize, limits: &IngestLimits) -> Option<IngestRecord> {
        let (first_seq, ts) = self.first?;
        let described: Vec<String> = self
            .counts
            .iter()
            .map(|(reason, count)| match *reason {
                LINE_TOO_LONG => format!("{count} cut to {max_line_bytes} bytes (max_line_bytes)"),
                TOO_MANY_FIELDS => format!(
                    "{count} with fields past {} left out (--max-fields)",
                    limits.max_fields
                ),
                FIELD_KEY_TOO_LONG => format!(
                    "{count} with fields whose key is over {} bytes left out (--max-field-key-bytes)",
                    limits.max_field_key_bytes
                ),
                _ => format!(
                    "{count} with a request id over {} bytes or with control characters, kept in the field {MARK_FIELD}.request_id",
                    limits.max_label_bytes
                ),
            })
            .collect();
        let mut counts = serde_json::Map::new();
        for (reason, count) in &self.counts {
            counts.insert((*reason).into(), (*count).into());
        }
        Some(server_record(
            server_seq(first_seq, ReportKind::Cut),
            ts,
            format!(
                "the server cut lines of this batch to its limits: {}; each is marked in its field '{MARK_FIELD}'",
                described.join(", ")
            ),
            json!({ "event": Event::IngestCut, "lines": counts, "max_line_bytes": max_line_bytes }),
        ))
    }
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

/// A batch held back by a rate limit.
#[derive(Debug)]
pub struct Throttled {
    pub reason: &'static str,
    /// When the batch would be taken: `Retry-After`.
    pub retry_after: Duration,
    /// The limit hit, in words: "100 lines/s for the app".
    pub limit: String,
}

impl Throttled {
    pub fn message(&self) -> String {
        format!(
            "rate limit of {} reached: retry in {} s; the agent keeps the lines and sends them again",
            self.limit,
            self.retry_after.as_secs_f64().ceil()
        )
    }
}

/// The rate limits' state: a pace per app and per runner, and what each
/// runner had refused since its last batch that got in.
///
/// Each pace is a GCRA ("theoretical arrival time") bucket with a second's
/// burst that lets a batch go into debt: a batch larger than a second's
/// allowance still gets in when the pace is current, and the next waits
/// until the debt is paid. (Rate limiter crates such as `governor` refuse
/// any request larger than the burst, which would refuse such a batch
/// forever.)
#[derive(Default)]
pub struct RateLimiter {
    state: Mutex<RateState>,
}

#[derive(Default)]
struct RateState {
    paces: HashMap<PaceKey, Pace>,
    refused: HashMap<(String, String, String), RefusedTally>,
}

#[derive(Clone, Hash, PartialEq, Eq)]
enum PaceKey {
    AppLines(String, String),
    AppBytes(String, String),
    RunnerLines(String, String, String),
    RunnerBytes(String, String, String),
}

/// When the pace is caught up: a batch is taken while this is at most a
/// second (the burst) ahead of now.
#[derive(Clone, Copy)]
struct Pace {
    caught_up: Instant,
}

const BURST: Duration = Duration::from_secs(1);
/// Past this many paces, caught-up ones (no different from new) are
/// forgotten.
const PACES_KEPT: usize = 4096;
/// Refusals of a runner that sends nothing that gets in for this long are
/// forgotten (still counted in `/metrics`).
const REFUSED_KEPT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct RefusedTally {
    /// Each limit that refused batches, in the order first hit: a stretch
    /// may meet the app's limit and the runner's, and the report names
    /// each with what it refused, not only the last.
    limits: Vec<LimitTally>,
    since: jiff::Timestamp,
    until: jiff::Timestamp,
    last: Instant,
}

#[derive(Debug)]
struct LimitTally {
    reason: &'static str,
    limit: String,
    batches: u64,
    lines: u64,
}

impl RateLimiter {
    /// Takes the batch if every rate that applies has room, charging them
    /// all; otherwise refuses it and says when to come back.
    pub fn admit(
        &self,
        tenant: &str,
        batch: &IngestBatch,
        app_rate: Rate,
        runner_rate: Rate,
        now: Instant,
    ) -> Result<(), Throttled> {
        if app_rate == Rate::default() && runner_rate == Rate::default() {
            return Ok(());
        }
        let lines = batch.records.len() as u64;
        let bytes: u64 = batch.records.iter().map(|r| r.message.len() as u64).sum();
        let (app, runner) = (batch.app.clone(), batch.runner.clone());
        let t = tenant.to_owned();
        let checks = [
            (
                PaceKey::AppLines(t.clone(), app.clone()),
                app_rate.lines_per_sec,
                lines,
                "rate_limit_app_lines",
                "lines/s for the app (its rate_limit_lines_per_sec, else --app-rate-lines)",
            ),
            (
                PaceKey::AppBytes(t.clone(), app.clone()),
                app_rate.bytes_per_sec,
                bytes,
                "rate_limit_app_bytes",
                "bytes/s for the app (its rate_limit_bytes_per_sec, else --app-rate-bytes)",
            ),
            (
                PaceKey::RunnerLines(t.clone(), app.clone(), runner.clone()),
                runner_rate.lines_per_sec,
                lines,
                "rate_limit_runner_lines",
                "lines/s for each runner (--runner-rate-lines)",
            ),
            (
                PaceKey::RunnerBytes(t, app, runner),
                runner_rate.bytes_per_sec,
                bytes,
                "rate_limit_runner_bytes",
                "bytes/s for each runner (--runner-rate-bytes)",
            ),
        ];
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut refused: Option<Throttled> = None;
        for (key, rate, _, reason, unit) in &checks {
            let Some(rate) = rate else { continue };
            let Some(pace) = state.paces.get(key) else {
                continue;
            };
            let ahead = pace.caught_up.saturating_duration_since(now);
            if ahead > BURST {
                let retry_after = ahead - BURST;
                if refused.as_ref().is_none_or(|r| r.retry_after < retry_after) {
                    refused = Some(Throttled {
                        reason,
                        retry_after,
                        limit: format!("{rate} {unit}"),
                    });
                }
            }
        }
        if let Some(refused) = refused {
            state.note_refused(tenant, batch, &refused, lines, now);
            return Err(refused);
        }
        for (key, rate, cost, _, _) in checks {
            let Some(rate) = rate else { continue };
            let cost = Duration::from_secs_f64(cost as f64 / rate as f64);
            let pace = state.paces.entry(key).or_insert(Pace { caught_up: now });
            pace.caught_up = pace.caught_up.max(now) + cost;
        }
        if state.paces.len() > PACES_KEPT {
            state.paces.retain(|_, pace| pace.caught_up > now);
        }
        Ok(())
    }

    /// The report of what `batch`'s runner had refused since its last batch
    /// that got in, to store with this one; `restore` puts it back if the
    /// batch is not stored after all.
    pub fn take_report(&self, tenant: &str, batch: &IngestBatch) -> Option<PendingReport> {
        let first = batch.records.first()?;
        let key = (tenant.to_owned(), batch.app.clone(), batch.runner.clone());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tally = state.refused.remove(&key)?;
        let batches: u64 = tally.limits.iter().map(|limit| limit.batches).sum();
        let lines: u64 = tally.limits.iter().map(|limit| limit.lines).sum();
        let described: Vec<String> = tally
            .limits
            .iter()
            .map(|limit| {
                format!(
                    "{} batches ({} lines) by its limit of {}",
                    limit.batches, limit.lines, limit.limit
                )
            })
            .collect();
        // The limit that refused the most batches (the first on a tie).
        let main = tally
            .limits
            .iter()
            .rev()
            .max_by_key(|limit| limit.batches)
            .expect("a tally has a limit");
        let mut reasons = serde_json::Map::new();
        for limit in &tally.limits {
            reasons.insert(limit.reason.into(), limit.batches.into());
        }
        let record = server_record(
            server_seq(first.seq, ReportKind::RateLimited),
            first.ts,
            format!(
                "the server's rate limits refused {batches} batches ({lines} lines) of this runner between {} and {} with 429: {}; the agent kept them and sent them again",
                tally.since,
                tally.until,
                described.join(", ")
            ),
            json!({
                "event": Event::RateLimited,
                "reason": main.reason,
                "reasons": reasons,
                "limit": main.limit,
                "refused_batches": batches,
                "refused_lines": lines,
                "since": tally.since.to_string(),
                "until": tally.until.to_string(),
            }),
        );
        Some(PendingReport { key, tally, record })
    }

    pub fn restore(&self, pending: PendingReport) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.refused.entry(pending.key).or_insert(pending.tally);
    }
}

/// A rate-limit report taken to be stored with a batch.
pub struct PendingReport {
    key: (String, String, String),
    tally: RefusedTally,
    pub record: IngestRecord,
}

impl RateState {
    fn note_refused(
        &mut self,
        tenant: &str,
        batch: &IngestBatch,
        refused: &Throttled,
        lines: u64,
        now: Instant,
    ) {
        let wall = jiff::Timestamp::now();
        let limit = refused.limit.clone();
        let key = (tenant.to_owned(), batch.app.clone(), batch.runner.clone());
        let tally = self.refused.entry(key).or_insert_with(|| RefusedTally {
            limits: Vec::new(),
            since: wall,
            until: wall,
            last: now,
        });
        let index = match tally
            .limits
            .iter()
            .position(|seen| seen.reason == refused.reason)
        {
            Some(index) => index,
            None => {
                tally.limits.push(LimitTally {
                    reason: refused.reason,
                    limit: limit.clone(),
                    batches: 0,
                    lines: 0,
                });
                tally.limits.len() - 1
            }
        };
        let hit = &mut tally.limits[index];
        // The rate of a limit may change meanwhile: the latest is named.
        hit.limit = limit;
        hit.batches += 1;
        hit.lines += lines;
        tally.until = wall;
        tally.last = now;
        if self.refused.len() > PACES_KEPT {
            self.refused
                .retain(|_, tally| now.duration_since(tally.last) < REFUSED_KEPT);
        }
    }
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
mod tests {
    use super::*;
    use tailwater_model::Stream;

    fn record(seq: u64, message: &str) -> IngestRecord {
        IngestRecord {
            seq,
            ts: jiff::Timestamp::now(),
            stream: Stream::Stdout,
            level: Level::Info,
            request_id: None,
            message: message.to_owned(),
            fields: FieldsJson::new(),
            invalid_utf8: false,
        }
    }

    fn fields(value: Value) -> FieldsJson {
        FieldsJson::from_map(value.as_object().unwrap())
    }

    fn batch(lines: usize) -> IngestBatch {
        IngestBatch {
            app: "app".into(),
            version: String::new(),
            runner: "r1".into(),
            boot: "b1".into(),
            source: Default::default(),
            records: (0..lines as u64)
                .map(|seq| record(seq, "0123456789"))
                .collect(),
        }
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary_and_marked() {
        let limits = IngestLimits::default();
        let mut long = record(7, &"é".repeat(10));
        long.fields = fields(json!({ "detail": "x".repeat(30) }));
        let cuts = limits.cut_record(&mut long, 9);
        assert_eq!(long.message, "é".repeat(4));
        let fields = long.fields.to_map();
        assert_eq!(fields["detail"], "x".repeat(9));
        assert_eq!(fields[MARK_FIELD]["message_bytes"], 20);
        assert_eq!(fields[MARK_FIELD]["fields_cut"], json!(["detail"]));
        assert_eq!(cuts.reasons().collect::<Vec<_>>(), vec![LINE_TOO_LONG]);
    }

    #[test]
    fn fields_past_the_limit_and_bad_request_ids_are_marked() {
        let limits = IngestLimits {
            max_fields: 2,
            ..IngestLimits::default()
        };
        let mut many = record(1, "ok");
        many.fields = fields(json!({ "a": 1, "b": 1, "c": 1, "d": 1 }));
        many.request_id = Some("req\n1".into());
        let cuts = limits.cut_record(&mut many, 100);
        let fields = many.fields.to_map();
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["a", "b", MARK_FIELD]);
        assert_eq!(fields[MARK_FIELD]["fields_dropped"], 2);
        assert_eq!(fields[MARK_FIELD]["request_id"], "req\n1");
        assert_eq!(many.request_id, None);
        assert!(cuts.too_many_fields && cuts.invalid_request_id && !cuts.line_too_long);
    }

    #[test]
    fn fields_within_the_limits_keep_their_text_as_it_came() {
        let limits = IngestLimits {
            max_fields: 3,
            ..IngestLimits::default()
        };
        let as_sent = r#"{"z":"abc","a":[1,2],"m":{"k":"v"}}"#;
        let mut kept = record(1, "ok");
        kept.fields = serde_json::from_str(as_sent).unwrap();
        // Short: kept without a look. Longer than the line limit, but no
        // string in it is: parsed, nothing cut, the text kept.
        for max_line_bytes in [100, 4] {
            let cuts = limits.cut_record(&mut kept, max_line_bytes);
            assert_eq!(cuts, Cuts::default());
            assert_eq!(kept.fields.as_str(), as_sent);
        }
        // Three keys are not more than three, however they are counted.
        let mut wide = record(2, "ok");
        wide.fields =
            serde_json::from_str(&format!(r#"{{"a":"{}","b":1,"c":2}}"#, "x".repeat(40))).unwrap();
        let before = wide.fields.clone();
        assert_eq!(limits.cut_record(&mut wide, 100), Cuts::default());
        assert_eq!(wide.fields, before);
        // A cut request id marks fields that needed no parse.
        let mut marked = record(3, "ok");
        marked.fields = serde_json::from_str(as_sent).unwrap();
        marked.request_id = Some("x".repeat(300));
        let cuts = limits.cut_record(&mut marked, 100);
        assert!(cuts.invalid_request_id);
        let fields = marked.fields.to_map();
        assert_eq!(fields["z"], "abc");
        assert_eq!(fields[MARK_FIELD]["request_id"], "x".repeat(200));
    }

    #[test]
    fn a_pace_lets_a_large_batch_in_then_holds_the_next_back() {
        let limiter = RateLimiter::default();
        let rate = Rate {
            lines_per_sec: Some(100),
            bytes_per_sec: None,
        };
        let now = Instant::now();
        limiter
            .admit("t", &batch(500), rate, Rate::default(), now)
            .unwrap();
        let refused = limiter
            .admit("t", &batch(1), rate, Rate::default(), now)
            .unwrap_err();
        assert_eq!(refused.reason, "rate_limit_app_lines");
        assert_eq!(refused.retry_after, Duration::from_secs(4));
        // Paid off: in again.
        limiter
            .admit(
                "t",
                &batch(1),
                rate,
                Rate::default(),
                now + Duration::from_secs(4),
            )
            .unwrap();
        let report = limiter.take_report("t", &batch(3)).unwrap();
        let fields = report.record.fields.to_map();
        assert_eq!(fields["refused_batches"], 1);
        assert_eq!(fields["refused_lines"], 1);
        assert_eq!(report.record.seq, server_seq(0, ReportKind::RateLimited));
        assert!(limiter.take_report("t", &batch(3)).is_none());
    }

    #[test]
    fn runner_rates_apply_to_each_runner_alone() {
        let limiter = RateLimiter::default();
        let rate = Rate {
            lines_per_sec: None,
            bytes_per_sec: Some(10),
        };
        let now = Instant::now();
        let mut other = batch(1);
        other.runner = "r2".into();
        limiter
            .admit("t", &batch(5), Rate::default(), rate, now)
            .unwrap();
        let refused = limiter
            .admit("t", &batch(1), Rate::default(), rate, now)
            .unwrap_err();
        assert_eq!(refused.reason, "rate_limit_runner_bytes");
        limiter
            .admit("t", &other, Rate::default(), rate, now)
            .unwrap();
    }

    #[test]
    fn a_rate_limit_report_names_each_limit_that_refused_and_what_it_refused() {
        let limiter = RateLimiter::default();
        let app_rate = Rate {
            lines_per_sec: Some(100),
            bytes_per_sec: None,
        };
        let runner_rate = Rate {
            lines_per_sec: None,
            bytes_per_sec: Some(10),
        };
        let now = Instant::now();
        // 500 lines put the app 5 s ahead (4 s to wait) and the runner 500 s.
        limiter
            .admit("t", &batch(500), app_rate, Rate::default(), now)
            .unwrap();
        for _ in 0..2 {
            let refused = limiter
                .admit("t", &batch(1), app_rate, Rate::default(), now)
                .unwrap_err();
            assert_eq!(refused.reason, "rate_limit_app_lines");
        }
        let later = now + Duration::from_secs(5);
        limiter
            .admit("t", &batch(2), Rate::default(), runner_rate, later)
            .unwrap();
        let refused = limiter
            .admit("t", &batch(1), Rate::default(), runner_rate, later)
            .unwrap_err();
        assert_eq!(refused.reason, "rate_limit_runner_bytes");

        let report = limiter.take_report("t", &batch(1)).unwrap();
        let fields = report.record.fields.to_map();
        assert_eq!(fields["refused_batches"], 3);
        assert_eq!(fields["reason"], "rate_limit_app_lines");
        assert_eq!(
            fields["reasons"],
            json!({"rate_limit_app_lines": 2, "rate_limit_runner_bytes": 1})
        );
        let message = &report.record.message;
        assert!(
            message.contains("2 batches (2 lines) by its limit of 100 lines/s for the app")
                && message
                    .contains("1 batches (1 lines) by its limit of 10 bytes/s for each runner"),
            "{message}"
        );
    }

    #[test]
    fn labels_and_reserved_sequence_numbers_are_refused() {
        let limits = IngestLimits::default();
        let mut bad = batch(1);
        bad.version = "v\u{7}".into();
        assert_eq!(limits.check_batch(&bad).unwrap_err().reason, INVALID_LABEL);
        let mut bad = batch(1);
        bad.runner = "r".repeat(201);
        assert_eq!(limits.check_batch(&bad).unwrap_err().reason, INVALID_LABEL);
        let mut bad = batch(1);
        bad.records[0].seq = SERVER_SEQ_BASE;
        let refusal = limits.check_batch(&bad).unwrap_err();
        assert_eq!(refusal.reason, INVALID_SEQ);
        assert!(refusal.message.contains("server's own records"));
        limits.check_batch(&batch(3)).unwrap();
    }

    #[test]
    fn fields_with_keys_over_the_limit_are_left_out_and_marked() {
        let limits = IngestLimits::default();
        let long = "k".repeat(DEFAULT_MAX_FIELD_KEY_BYTES + 1);
        let mut record = record(1, "line");
        record.fields = fields(json!({ long.clone(): 1, "ok": 2 }));
        let cuts = limits.cut_record(&mut record, DEFAULT_MAX_LINE_BYTES);
        assert!(cuts.field_key_too_long);
        assert_eq!(cuts.reasons().collect::<Vec<_>>(), vec![FIELD_KEY_TOO_LONG]);
        let kept = record.fields.to_map();
        assert!(!kept.contains_key(&long));
        assert_eq!(kept["ok"], 2);
        assert_eq!(
            kept[MARK_FIELD]["field_keys_too_long"],
            json!(["k".repeat(64)])
        );

        // Keys at the limit, and long values, leave the fields as they came.
        let at = "k".repeat(DEFAULT_MAX_FIELD_KEY_BYTES);
        let mut record = super::tests::record(2, "line");
        record.fields = fields(json!({ at: "v".repeat(500) }));
        let text = record.fields.as_str().to_owned();
        assert_eq!(
            limits.cut_record(&mut record, DEFAULT_MAX_LINE_BYTES),
            Cuts::default()
        );
        assert_eq!(record.fields.as_str(), text);
    }
}
