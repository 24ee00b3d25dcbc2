//! Bodies of the HTTP API, shared by the server, the client and the agent.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::filter::{Cursor, Direction, Filter, Query};
use crate::matcher::{Matcher, Pattern, Substring, DEFAULT_REGEX_SIZE_LIMIT};
use crate::positions::TenantSeal;
use crate::record::{Fields, FieldsJson, Level, LogRecord, Source, Stream};
use crate::time::parse_time;
use crate::words::Phrase;

/// Records one page holds when the request names no limit.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The most records one page may hold.
pub const MAX_PAGE_LIMIT: usize = 10_000;

/// `POST /v1/ingest`: a batch of records from one runner's boot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestBatch {
    pub app: String,
    #[serde(default)]
    pub version: String,
    pub runner: String,
    /// Unique per start of the agent, so sequence numbers may restart at 0.
    pub boot: String,
    #[serde(default)]
    pub source: Source,
    pub records: Vec<IngestRecord>,
}

/// One captured line or lifecycle event, before the server stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IngestRecord {
    /// Per runner boot, from 0, without gaps.
    pub seq: u64,
    pub ts: Timestamp,
    pub stream: Stream,
    #[serde(default)]
    pub level: Level,
    #[serde(default)]
    pub request_id: Option<String>,
    pub message: String,
    /// The record's fields, kept as the JSON text they came as (compacted).
    #[serde(default)]
    pub fields: FieldsJson,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invalid_utf8: bool,
}

impl IngestRecord {
    /// A record the platform writes itself, on the `system` stream: an
    /// agent's lifecycle event, a server's notice in a runner's logs.
    pub fn system(
        seq: u64,
        ts: Timestamp,
        level: Level,
        message: String,
        fields: Fields,
    ) -> IngestRecord {
        IngestRecord {
            seq,
            ts,
            stream: Stream::System,
            level,
            request_id: None,
            message,
            fields: FieldsJson::from_map(&fields),
            invalid_utf8: false,
        }
    }
}

/// The answer to an ingest: how many records were new, and how many had been
/// stored before (a retried batch) and were skipped, and how many were
/// refused and why (by reason in `refused_by_reason`: [`REFUSED_OUT_OF_ORDER`],
/// [`REFUSED_OLDER_THAN_RETENTION`]). Refused records are not stored;
/// sending them again does not help. Records stored at the server's time
/// instead of their own are counted, by reason, in `retimed_by_reason`
/// ([`RETIMED_CLOCK_SKEW`], [`RETIMED_OUT_OF_RANGE`]); each keeps its own time
/// in the field [`ORIGINAL_TS_FIELD`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub duplicates: usize,
    #[serde(default)]
    pub refused: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_reason: Option<String>,
    /// Reason → records refused; the counts add up to `refused`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused_by_reason: BTreeMap<String, usize>,
    /// Reason → records stored (and counted in `accepted`) at the server's
    /// time.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retimed_by_reason: BTreeMap<String, usize>,
}

/// Refused: older than the server's out-of-order window allows, behind the
/// newest record of the same runner's boot.
pub const REFUSED_OUT_OF_ORDER: &str = "out_of_order";
/// Refused: so old that its app's retention would already delete it.
pub const REFUSED_OLDER_THAN_RETENTION: &str = "older_than_retention";
/// Stored at the server's time: dated further ahead of it than the server's
/// `--max-clock-skew`.
pub const RETIMED_CLOCK_SKEW: &str = "clock_skew";
/// Stored at the server's time: dated outside the times the store can hold
/// (before 1677 or after 2262).
pub const RETIMED_OUT_OF_RANGE: &str = "time_out_of_range";
/// The field where a record stored at the server's time keeps the time it
/// came with (RFC 3339).
pub const ORIGINAL_TS_FIELD: &str = "original_ts";

/// `GET /v1/logs`: one page of records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogsPage {
    pub records: Vec<LogRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// The id of the newest record the server had stored when it answered
    /// (opaque, like every id). Live tail from `after=as_of` continues this
    /// read with no gap and no duplicate.
    pub as_of: String,
    /// Present when the page lacks records that match (see [`Incomplete`]);
    /// absent on a complete page, and from servers before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// The query string of `GET /v1/logs` and `GET /v1/logs/tail`, as text, so
/// that every bad value gets our own clear error ([`LogsParams::to_query`]).
///
/// The scheme, one condition per parameter, all of them applying:
///
/// | parameter | matches |
/// |---|---|
/// | `app`, `version`, `runner`, `boot` | the label, exactly |
/// | `app_not`, … | any other value of the label |
/// | `app_re`, … | values a regex matches whole (`runner_re=gpu-.*`) |
/// | `app_not_re`, … | values a regex does not match whole |
/// | `request` | one request id, exactly |
/// | `source`, `stream` | `run`/`gateway`/`deploy`, `stdout`/`stderr`/`system` |
/// | `level` | this level and more severe |
/// | `text` | words together in the message, ignoring case (word index) |
/// | `contains` | text anywhere in the message, inside words too, ignoring ASCII case; `case=sensitive` respects case |
/// | `regex` | a regex found anywhere in the message |
/// | `field.KEY` | the field `KEY` has this value (`field.status=200`); several allowed |
/// | `since`, `until` | a time window (RFC 3339, `now`, or a duration ago) |
///
/// plus paging (`limit`, `direction`, `cursor`) and, for live tail, `after`.
/// An empty value counts as absent, except for `field.KEY` (where it wants
/// the empty string). Each parameter may be given once; a label takes one
/// of its four forms; unknown parameters are refused, so a typo is never
/// silently ignored. See [`crate::matcher`] for exactly what each form
/// matches.
///
/// It (de)serializes as a flat map of names to strings, so `serde_urlencoded`
/// (axum's `Query`, reqwest's `.query`) reads and writes it; reading refuses
/// unknown and repeated names with the errors of [`LogsParams::from_pairs`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogsParams {
    pub app: Option<String>,
    pub app_not: Option<String>,
    pub app_re: Option<String>,
    pub app_not_re: Option<String>,
    pub version: Option<String>,
    pub version_not: Option<String>,
    pub version_re: Option<String>,
    pub version_not_re: Option<String>,
    pub runner: Option<String>,
    pub runner_not: Option<String>,
    pub runner_re: Option<String>,
    pub runner_not_re: Option<String>,
    pub boot: Option<String>,
    pub boot_not: Option<String>,
    pub boot_re: Option<String>,
    pub boot_not_re: Option<String>,
    pub request: Option<String>,
    pub source: Option<String>,
    pub stream: Option<String>,
    /// Minimum level.
    pub level: Option<String>,
    /// Words together, ignoring case.
    pub text: Option<String>,
    /// A substring of the message.
    pub contains: Option<String>,
    /// How `contains` treats case: `insensitive` (ASCII, the default) or
    /// `sensitive`.
    pub case: Option<String>,
    /// A regex searched in the message.
    pub regex: Option<String>,
    /// RFC 3339, `now`, or a duration ago (`15m`).
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    /// `forward` (oldest first) or `backward` (newest first, the default).
    pub direction: Option<String>,
    pub cursor: Option<String>,
    /// Live tail only: start after the record with this `id` (as
    /// `Last-Event-ID`), or from the first record with `0`.
    pub after: Option<String>,
    /// `field.KEY=VALUE`, keyed by `KEY` (without the `field.` prefix).
    pub fields: BTreeMap<String, String>,
}

/// The prefix of field conditions in a query string: `field.status=200`.
pub const FIELD_PREFIX: &str = "field.";

/// The labels a query can match, each with four parameter forms.
const LABELS: [&str; 4] = ["app", "version", "runner", "boot"];
/// The suffixes of a label's parameters: equal, not equal, regex, not regex.
const LABEL_FORMS: [&str; 4] = ["", "_not", "_re", "_not_re"];

impl LogsParams {
    /// Every named parameter but `field.KEY`, in a fixed order.
    fn slots(&mut self) -> [(&'static str, &mut Option<String>); 30] {
        [
            ("app", &mut self.app),
            ("app_not", &mut self.app_not),
            ("app_re", &mut self.app_re),
            ("app_not_re", &mut self.app_not_re),
            ("version", &mut self.version),
            ("version_not", &mut self.version_not),
            ("version_re", &mut self.version_re),
            ("version_not_re", &mut self.version_not_re),
            ("runner", &mut self.runner),
            ("runner_not", &mut self.runner_not),
            ("runner_re", &mut self.runner_re),
            ("runner_not_re", &mut self.runner_not_re),
            ("boot", &mut self.boot),
            ("boot_not", &mut self.boot_not),
            ("boot_re", &mut self.boot_re),
            ("boot_not_re", &mut self.boot_not_re),
            ("request", &mut self.request),
            ("source", &mut self.source),
            ("stream", &mut self.stream),
            ("level", &mut self.level),
            ("text", &mut self.text),
            ("contains", &mut self.contains),
            ("case", &mut self.case),
            ("regex", &mut self.regex),
            ("since", &mut self.since),
            ("until", &mut self.until),
            ("limit", &mut self.limit),
            ("direction", &mut self.direction),
            ("cursor", &mut self.cursor),
            ("after", &mut self.after),
        ]
    }

    /// Parameters from a decoded query string's name/value pairs. Refuses an
    /// unknown name, a repeated one, and `field.` without a key.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Result<LogsParams, String>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut params = LogsParams::default();
        for (name, value) in pairs {
            let name = name.as_ref();
            let value = value.into();
            let twice = || {
                format!("parameter '{name}' is given twice: give it once (a regex can match several values, as in runner_re=r1|r2)")
            };
            if let Some(key) = name.strip_prefix(FIELD_PREFIX) {
                if key.is_empty() {
                    return Err(format!(
                        "parameter '{name}' names no field: use {FIELD_PREFIX}KEY=VALUE, as in {FIELD_PREFIX}status=200"
                    ));
                }
                if params.fields.insert(key.to_owned(), value).is_some() {
                    return Err(twice());
                }
                continue;
            }
            let mut slots = params.slots();
            let Some((_, slot)) = slots.iter_mut().find(|(known, _)| *known == name) else {
                return Err(format!(
                    "unknown parameter '{name}': use app, version, runner or boot (each also with _not, _re or _not_re), request, source, stream, level, text, contains, case, regex, {FIELD_PREFIX}KEY, since, until, limit, direction, cursor or after"
                ));
            };
            if slot.replace(value).is_some() {
                return Err(twice());
            }
        }
        Ok(params)
    }

    /// The parameters as name/value pairs, `field.KEY` last; absent ones
    /// left out.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut copy = self.clone();
        let mut pairs: Vec<(String, String)> = copy
            .slots()
            .into_iter()
            .filter_map(|(name, value)| value.take().map(|value| (name.to_owned(), value)))
            .collect();
        pairs.extend(
            self.fields
                .iter()
                .map(|(key, value)| (format!("{FIELD_PREFIX}{key}"), value.clone())),
        );
        pairs
    }

    /// The parameters as a query string (`app=sdxl&limit=100`), every name
    /// and value percent-encoded: `GET /v1/logs?` followed by this asks for
    /// exactly these parameters.
    pub fn to_query_string(&self) -> String {
        let pairs: Vec<String> = self
            .to_pairs()
            .iter()
            .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
            .collect();
        pairs.join("&")
    }

    /// The parameters that describe `query` (times as RFC 3339): the inverse
    /// of [`LogsParams::to_query`].
    pub fn from_query(query: &Query, seal: &TenantSeal) -> LogsParams {
        let mut params = LogsParams::from_filter(&query.filter);
        params.limit = Some(query.limit.to_string());
        params.direction = Some(
            match query.direction {
                Direction::Forward => "forward",
                Direction::Backward => "backward",
            }
            .to_owned(),
        );
        params.cursor = query.cursor.map(|cursor| cursor.encode(seal));
        params
    }

    /// The parameters that describe `filter` (times as RFC 3339): the inverse
    /// of [`LogsParams::to_filter`].
    pub fn from_filter(filter: &Filter) -> LogsParams {
        let mut params = LogsParams {
            request: filter.request_id.clone(),
            source: filter.source.map(|source| source.as_str().to_owned()),
            stream: filter.stream.map(|stream| stream.as_str().to_owned()),
            level: filter.min_level.map(|level| level.as_str().to_owned()),
            text: filter.text.as_ref().map(|phrase| phrase.text.clone()),
            contains: filter
                .contains
                .as_ref()
                .map(|substring| substring.as_str().to_owned()),
            case: filter
                .contains
                .as_ref()
                .filter(|substring| substring.case_sensitive())
                .map(|_| "sensitive".to_owned()),
            regex: filter
                .regex
                .as_ref()
                .map(|pattern| pattern.as_str().to_owned()),
            since: filter.since.map(|time| time.to_string()),
            until: filter.until.map(|time| time.to_string()),
            fields: filter.fields.clone(),
            ..LogsParams::default()
        };
        let matchers = [&filter.app, &filter.version, &filter.runner, &filter.boot];
        for (label, matcher) in LABELS.into_iter().zip(matchers) {
            let Some(matcher) = matcher else { continue };
            let (suffix, value) = match matcher {
                Matcher::Eq(value) => ("", value.as_str()),
                Matcher::Ne(value) => ("_not", value.as_str()),
                Matcher::Re(pattern) => ("_re", pattern.as_str()),
                Matcher::NotRe(pattern) => ("_not_re", pattern.as_str()),
            };
            let name = format!("{label}{suffix}");
            let mut slots = params.slots();
            let (_, slot) = slots
                .iter_mut()
                .find(|(known, _)| *known == name)
                .expect("every label has its four forms");
            **slot = Some(value.to_owned());
        }
        params
    }

    /// The matcher of `label` (one of [`LABELS`]) from its four forms.
    fn matcher(&mut self, label: &str, regex_size_limit: usize) -> Result<Option<Matcher>, String> {
        let mut given = Vec::new();
        for (name, value) in self.slots() {
            let Some(suffix) = name
                .strip_prefix(label)
                .filter(|suffix| LABEL_FORMS.contains(suffix))
            else {
                continue;
            };
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                given.push((name, suffix, value.to_owned()));
            }
        }
        let Some((name, suffix, value)) = given.pop() else {
            return Ok(None);
        };
        if let Some((other, _, _)) = given.pop() {
            return Err(format!(
                "{other} and {name} are both given: give one of {label}, {label}_not, {label}_re or {label}_not_re (a regex can say the rest, as in {label}_re=a|b)"
            ));
        }
        let pattern = || {
            Pattern::whole_within(&value, regex_size_limit)
                .map_err(|error| format!("invalid {name} '{value}': {error}"))
        };
        Ok(Some(match suffix {
            "" => Matcher::Eq(value),
            "_not" => Matcher::Ne(value),
            "_re" => Matcher::Re(pattern()?),
            "_not_re" => Matcher::NotRe(pattern()?),
            _ => unreachable!("the four forms of a label"),
        }))
    }

    /// The filter these parameters describe; relative times count back from
    /// `now`.
    pub fn to_filter(&self, now: Timestamp) -> Result<Filter, String> {
        self.to_filter_within(now, DEFAULT_REGEX_SIZE_LIMIT)
    }

    /// [`LogsParams::to_filter`], with regexes (and substrings) refused past
    /// `regex_size_limit` bytes once compiled (the server's
    /// `--regex-size-limit`).
    pub fn to_filter_within(
        &self,
        now: Timestamp,
        regex_size_limit: usize,
    ) -> Result<Filter, String> {
        fn non_empty(value: &Option<String>) -> Option<String> {
            value.as_ref().filter(|v| !v.is_empty()).cloned()
        }
        fn parsed<T: std::str::FromStr<Err = String>>(
            value: &Option<String>,
        ) -> Result<Option<T>, String> {
            non_empty(value).map(|v| v.parse()).transpose()
        }
        let time =
            |value: &Option<String>| non_empty(value).map(|v| parse_time(&v, now)).transpose();
        let case_sensitive = match self.case.as_deref().unwrap_or("") {
            "" | "insensitive" => false,
            "sensitive" => true,
            other => {
                return Err(format!(
                    "unknown case '{other}': use sensitive, or insensitive (the default)"
                ))
            }
        };
        let contains = non_empty(&self.contains);
        if contains.is_none() && non_empty(&self.case).is_some() {
            return Err(
                "case applies to contains: add contains=TEXT, or leave case out (text ignores case; a regex can say (?i))"
                    .to_owned(),
            );
        }
        let mut labels = self.clone();
        Ok(Filter {
            app: labels.matcher("app", regex_size_limit)?,
            version: labels.matcher("version", regex_size_limit)?,
            runner: labels.matcher("runner", regex_size_limit)?,
            boot: labels.matcher("boot", regex_size_limit)?,
            request_id: non_empty(&self.request),
            source: parsed::<Source>(&self.source)?,
            stream: parsed::<Stream>(&self.stream)?,
            min_level: parsed::<Level>(&self.level)?,
            text: non_empty(&self.text).map(|text| Phrase::new(&text)),
            contains: contains
                .map(|text| {
                    Substring::within(&text, case_sensitive, regex_size_limit)
                        .map_err(|error| format!("invalid contains: {error}"))
                })
                .transpose()?,
            regex: non_empty(&self.regex)
                .map(|source| {
                    Pattern::search_within(&source, regex_size_limit)
                        .map_err(|error| format!("invalid regex '{source}': {error}"))
                })
                .transpose()?,
            fields: self.fields.clone(),
            since: time(&self.since)?,
            until: time(&self.until)?,
        })
    }

    /// The page query these parameters describe, for the tenant `seal`
    /// opens cursors of.
    pub fn to_query(&self, now: Timestamp, seal: &TenantSeal) -> Result<Query, String> {
        self.to_query_within(now, DEFAULT_REGEX_SIZE_LIMIT, seal)
    }

    /// [`LogsParams::to_query`] with [`LogsParams::to_filter_within`].
    pub fn to_query_within(
        &self,
        now: Timestamp,
        regex_size_limit: usize,
        seal: &TenantSeal,
    ) -> Result<Query, String> {
        let limit = match self.limit.as_deref().filter(|v| !v.is_empty()) {
            None => DEFAULT_PAGE_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => limit,
                _ => {
                    return Err(format!(
                        "invalid limit '{text}': use a whole number from 1 to {MAX_PAGE_LIMIT}"
                    ))
                }
            },
        };
        Ok(Query {
            filter: self.to_filter_within(now, regex_size_limit)?,
            direction: self
                .direction
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(str::parse)
                .transpose()?
                .unwrap_or(Direction::Backward),
            limit,
            cursor: self
                .cursor
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|text| Cursor::decode(text, seal))
                .transpose()?,
        })
    }

    /// The position a live tail starts after, from its `after` id, if
    /// given.
    pub fn after_position(&self, seal: &TenantSeal) -> Result<Option<u64>, String> {
        self.after
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|text| parse_after(text, seal))
            .transpose()
    }
}

/// What `after` (or `Last-Event-ID`) says to start a live tail from the
/// first record stored: the position before every record.
pub const AFTER_START: &str = "0";

/// The position behind the id a live tail resumes after (`after` or
/// `Last-Event-ID`), or [`AFTER_START`].
pub fn parse_after(text: &str, seal: &TenantSeal) -> Result<u64, String> {
    if text == AFTER_START {
        return Ok(0);
    }
    seal.position(text).ok_or_else(|| {
        let shown: String = text.chars().take(40).collect();
        format!("invalid after '{shown}': use the id of the last record you received, unchanged")
    })
}

impl Serialize for LogsParams {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let pairs = self.to_pairs();
        let mut map = serializer.serialize_map(Some(pairs.len()))?;
        for (name, value) in &pairs {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LogsParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = LogsParams;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("query parameters: names and text values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LogsParams, A::Error> {
                let mut pairs: Vec<(String, String)> = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                LogsParams::from_pairs(pairs).map_err(serde::de::Error::custom)
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// The `format` of `GET /v1/export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExportFormat {
    /// `2026-11-21T10:00:00.123456789Z sdxl r-1 stderr ERROR [req-7] message`:
    /// one line per record, its time in full, line breaks in a message
    /// written `\n`.
    #[default]
    Text,
    /// One record per line, in the API's record shape.
    Ndjson,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Text => "text",
            ExportFormat::Ndjson => "ndjson",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<ExportFormat, String> {
        match text {
            "" | "text" => Ok(ExportFormat::Text),
            "ndjson" => Ok(ExportFormat::Ndjson),
            other => Err(format!("unknown format '{other}': use text or ndjson")),
        }
    }
}

/// The notice a live tail client gets when it fell too far behind: over SSE
/// the data of an `event: missed` (whose `id` is the last record skipped);
/// over WebSocket a [`TailMessage::Missed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedNotice {
    /// Records skipped, each one that the tail would have sent.
    pub count: u64,
    /// `GET /v1/logs` with the tail's filters and this `cursor` pages
    /// through exactly the skipped records, in ingest order.
    pub cursor: String,
}

/// One text frame of a WebSocket live tail, tagged by `type`. A client
/// resumes after the `id` of the last message it got (`?after=ID`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TailMessage {
    /// `{"type":"record","id":…,"record":{…}}`, in ingest order.
    Record { id: String, record: Box<LogRecord> },
    /// `{"type":"missed","id":…,"count":…,"cursor":…}`: the records after
    /// the previous message up to `id` that the client fell too far behind
    /// to get; the tail goes on after them.
    Missed {
        id: String,
        #[serde(flatten)]
        notice: MissedNotice,
    },
}

/// `GET /v1/histogram`: how many records match the filters, per time
/// bucket and level, over `[since, until)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub since: Timestamp,
    pub until: Timestamp,
    /// The width of every bucket, in nanoseconds (the last may be cut short
    /// by `until`).
    pub step_ns: u64,
    /// Oldest first; bucket `i` starts at `since + i × step_ns`.
    pub buckets: Vec<HistogramBucket>,
    /// Records counted.
    pub total: u64,
    /// `false` when the counts leave matching records out: more matched
    /// than the server counts for one histogram (the counts then hold only
    /// the newest ones, from `counted_since` on), or some could not be read
    /// (`incomplete`).
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_since: Option<Timestamp>,
    /// Present when records that match could not be read, so the counts
    /// lack them (see [`Incomplete`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// One bucket of a [`Histogram`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistogramBucket {
    pub start: Timestamp,
    pub counts: LevelCounts,
}

/// Records per level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelCounts {
    pub trace: u64,
    pub debug: u64,
    pub info: u64,
    pub warn: u64,
    pub error: u64,
    pub fatal: u64,
}

impl LevelCounts {
    pub fn add(&mut self, level: Level) {
        let count = match level {
            Level::Trace => &mut self.trace,
            Level::Debug => &mut self.debug,
            Level::Info => &mut self.info,
            Level::Warn => &mut self.warn,
            Level::Error => &mut self.error,
            Level::Fatal => &mut self.fatal,
        };
        *count += 1;
    }

    pub fn total(&self) -> u64 {
        self.trace + self.debug + self.info + self.warn + self.error + self.fatal
    }
}

/// Every API error: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `bad_request`, …
    pub code: String,
    /// Lowercase, and says what to do.
    pub message: String,
}

impl ErrorBody {
    /// The body of every error answer, from the server's API and from the
    /// agent's proxy alike.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Where a runner's life stands (`GET /v1/runners`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerState {
    /// Started, not ready yet.
    Initializing,
    /// Ready, no request in flight.
    Ready,
    /// Serving at least one request.
    Running,
    /// Exit code 0, or stopped by the stop signal it was asked to stop with.
    Exited,
    /// A non-zero exit code, or killed by a signal nobody asked for.
    Crashed,
    /// Killed by the kernel's OOM killer.
    OomKilled,
    /// Not ended, and silent past the server's heartbeat timeout.
    Lost,
}

impl RunnerState {
    pub const ALL: [RunnerState; 7] = [
        RunnerState::Initializing,
        RunnerState::Ready,
        RunnerState::Running,
        RunnerState::Exited,
        RunnerState::Crashed,
        RunnerState::OomKilled,
        RunnerState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Initializing => "initializing",
            RunnerState::Ready => "ready",
            RunnerState::Running => "running",
            RunnerState::Exited => "exited",
            RunnerState::Crashed => "crashed",
            RunnerState::OomKilled => "oom-killed",
            RunnerState::Lost => "lost",
        }
    }

    /// Whether the life is over: exited, crashed or OOM-killed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunnerState::Exited | RunnerState::Crashed | RunnerState::OomKilled
        )
    }
}

impl std::fmt::Display for RunnerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RunnerState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunnerState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| {
                format!("unknown runner state '{text}': use one of initializing, ready, running, exited, crashed, oom-killed, lost")
            })
    }
}

/// How a runner's life ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub oom_killed: bool,
}

/// A runner's requests in its current life.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRequests {
    /// Requests that ended (whatever the outcome).
    pub served: u64,
    pub in_flight: u64,
}

/// One runner (tenant, app, runner id) and its latest life (`boot`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runner {
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
    pub source: Source,
    pub state: RunnerState,
    /// When this life started (its first record), as the agent stamped it.
    pub started: Timestamp,
    pub ready_at: Option<Timestamp>,
    /// When the server last heard from it (a batch arrived, heartbeats too).
    pub last_seen: Timestamp,
    pub exited_at: Option<Timestamp>,
    pub exit: Option<RunnerExit>,
    pub requests: RunnerRequests,
}

/// `GET /v1/runners`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerList {
    /// Newest start first.
    pub runners: Vec<Runner>,
}

/// `GET /v1/runners/{runner}`: the runner and its lifecycle records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerDetail {
    #[serde(flatten)]
    pub runner: Runner,
    /// Its newest `system` records (lifecycle, and the server's `lost` and
    /// `returned`), oldest first.
    pub events: Vec<LogRecord>,
}

/// Where a request stands (`GET /v1/requests/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Started, not ended yet.
    InFlight,
    /// Ended with a response (whatever its status).
    Completed,
    /// Failed: the worker did not answer, or the client went away.
    Error,
    /// Still in flight when its worker exited.
    Unfinished,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::InFlight => "in_flight",
            RequestState::Completed => "completed",
            RequestState::Error => "error",
            RequestState::Unfinished => "unfinished",
        }
    }
}

/// `GET /v1/requests/{id}`: where and when a request ran, and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub request_id: String,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub state: RequestState,
    pub status: Option<i64>,
    /// Its start (the `request_start` record, else its first record).
    pub started: Timestamp,
    /// Its end, once it ended.
    pub ended: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    /// Records stored for it.
    pub records: u64,
}

/// `GET /v1/status`: the server's version, who the token is, and (for
/// tokens that may see it) the size of the tenant's stored logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The server's version (`tailwater --version` of the server binary).
    pub version: String,
    /// The tenant the token acts on.
    pub tenant: String,
    /// The token's scope: `admin`, `owner`, `ingest` or `caller`.
    pub scope: crate::tenancy::Scope,
    /// The token's public id (`tok_…`).
    pub token_id: String,
    /// The tenant's stored logs; `None` for scopes that may not manage the
    /// tenant's apps (ingest and caller tokens).
    pub store: Option<StoreStatus>,
}

/// The size of one tenant's stored logs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub records: u64,
    /// Bytes of message text, as captured.
    pub raw_bytes: u64,
    /// Bytes on disk of its compressed parts (recent records still in
    /// memory count in `records` and `raw_bytes` only).
    pub stored_bytes: u64,
    pub apps: Vec<AppStatus>,
    /// Parts the server found damaged: quarantined when it started, or
    /// with blocks it could not read since. Their unreadable records are
    /// not in `records`. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_parts: Vec<DamagedPartStatus>,
}

/// One damaged part of [`StoreStatus::damaged_parts`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedPartStatus {
    /// Its file, relative to the server's data directory.
    pub path: String,
    /// Its app, when its footer could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// `true`: it could not be opened and was moved to `quarantine/`, and
    /// none of its records is served. `false`: the blocks in `blocks`
    /// could not be read; its other blocks are served.
    pub quarantined: bool,
    /// Why, from the first failure found.
    pub reason: String,
    /// The unreadable blocks found so far (by index).
    #[serde(default)]
    pub blocks: Vec<u64>,
    /// Records those blocks hold; absent for a quarantined part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

/// Why an answer lacks records that match: [`LogsPage::incomplete`],
/// [`Histogram::incomplete`], and the last line of an export
/// ([`ExportFormat::incomplete_line`]). Readers skip a block of stored
/// records they cannot read (damaged on disk: a checksum mismatch, bad
/// compression, bad columns) rather than fail, and say so here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    /// Why, as a code: [`Incomplete::DAMAGED_BLOCKS`].
    pub reason: String,
    /// The same for people, with what to do.
    pub message: String,
    /// Blocks skipped as unreadable.
    pub damaged_blocks: u64,
    /// Records those blocks hold, matching or not: at most this many
    /// matching records are missing.
    pub records: u64,
}

impl Incomplete {
    /// Blocks of stored records could not be read.
    pub const DAMAGED_BLOCKS: &'static str = "damaged_blocks";

    /// `damaged_blocks` unreadable blocks holding `records` records were
    /// skipped.
    pub fn damaged_blocks(damaged_blocks: u64, records: u64) -> Incomplete {
        let (blocks, were) = match damaged_blocks {
            1 => ("block", "was"),
            _ => ("blocks", "were"),
        };
        Incomplete {
            reason: Incomplete::DAMAGED_BLOCKS.to_owned(),
            message: format!(
                "incomplete: {damaged_blocks} damaged {blocks} of stored logs could not be read and {were} skipped (up to {records} records missing); the server's admin finds the parts in `tailwater status` and the server log"
            ),
            damaged_blocks,
            records,
        }
    }
}

/// The first line of an export's [`ExportFormat::Text`] trailer: no record's
/// line starts with `#` (each starts with its time).
pub const EXPORT_TEXT_TRAILER: &str = "# tailwater: ";

/// The last line of an NDJSON export that lacks records:
/// `{"incomplete":{…}}`, an object no record is (records have no field
/// `incomplete`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTrailer {
    pub incomplete: Incomplete,
}

impl ExportFormat {
    /// The line (with its newline) an export in this format ends with when
    /// it lacks records: NDJSON, an [`ExportTrailer`]; text,
    /// [`EXPORT_TEXT_TRAILER`], the message, then the [`ExportTrailer`].
    pub fn incomplete_line(self, incomplete: &Incomplete) -> String {
        let trailer = serde_json::to_string(&ExportTrailer {
            incomplete: incomplete.clone(),
        })
        .expect("a trailer serializes");
        match self {
            ExportFormat::Ndjson => format!("{trailer}\n"),
            ExportFormat::Text => {
                format!("{EXPORT_TEXT_TRAILER}{} {trailer}\n", incomplete.message)
            }
        }
    }

    /// What `line` (one line of an export in this format, without its
    /// newline) says is missing, if it is an export's trailer.
    pub fn parse_incomplete_line(self, line: &[u8]) -> Option<Incomplete> {
        const TRAILER_START: &[u8] = br#"{"incomplete":"#;
        let json = match self {
            ExportFormat::Ndjson => line,
            ExportFormat::Text => {
                let rest = line.strip_prefix(EXPORT_TEXT_TRAILER.as_bytes())?;
                let start = rest
                    .windows(TRAILER_START.len())
                    .position(|window| window == TRAILER_START)?;
                &rest[start..]
            }
        };
        serde_json::from_slice::<ExportTrailer>(json)
            .ok()
            .map(|trailer| trailer.incomplete)
    }
}

/// The size of one app's stored logs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: String,
    pub records: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}

/// `text` with every byte but the unreserved ones (ASCII letters, digits,
/// `-`, `.`, `_`, `~`) written `%XX`: safe as one path segment or one query
/// name or value, whatever it holds.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::SealKey;

    fn key() -> SealKey {
        SealKey::new([3; SealKey::LEN])
    }

    /// What agents send today reads and writes back byte for byte, fields
    /// included; fields sent with whitespace are kept compact.
    #[test]
    fn an_ingest_batch_round_trips_as_it_was_sent() {
        let sent = r#"{"app":"sdxl","version":"v1","runner":"r-1","boot":"b","source":"run","records":[{"seq":0,"ts":"2026-11-20T10:00:00Z","stream":"stdout","level":"info","request_id":null,"message":"hi","fields":{}},{"seq":1,"ts":"2026-11-20T10:00:01Z","stream":"system","level":"warn","request_id":"req-7","message":"x","fields":{"event":"exit","gpu":{"id":3,"util":0.97}},"invalid_utf8":true}]}"#;
        let batch: IngestBatch = serde_json::from_str(sent).unwrap();
        assert_eq!(serde_json::to_string(&batch).unwrap(), sent);
        assert_eq!(batch.records[1].fields.to_map()["gpu"]["id"], 3);

        let spaced = sent.replace(r#"{"id":3,"util":0.97}"#, "{ \"id\": 3,\n \"util\": 0.97 }");
        let batch: IngestBatch = serde_json::from_str(&spaced).unwrap();
        assert_eq!(serde_json::to_string(&batch).unwrap(), sent);

        let without_fields = r#"{"app":"a","runner":"r","boot":"b","records":[{"seq":0,"ts":"2026-11-20T10:00:00Z","stream":"stdout","message":"m"}]}"#;
        let batch: IngestBatch = serde_json::from_str(without_fields).unwrap();
        assert!(batch.records[0].fields.is_empty());
    }

    #[test]
    fn params_become_a_query_with_defaults() {
        let now: Timestamp = "2026-11-20T12:00:00Z".parse().unwrap();
        let params = LogsParams {
            app: Some("sdxl".into()),
            level: Some("warning".into()),
            since: Some("1h".into()),
            runner: Some(String::new()),
            ..LogsParams::default()
        };
        let query = params.to_query(now, &key().tenant("t")).unwrap();
        assert_eq!(query.limit, DEFAULT_PAGE_LIMIT);
        assert_eq!(query.direction, Direction::Backward);
        assert_eq!(query.filter.app, Some(Matcher::Eq("sdxl".into())));
        assert_eq!(query.filter.runner, None);
        assert_eq!(query.filter.min_level, Some(Level::Warn));
        assert_eq!(
            query.filter.since,
            Some("2026-11-20T11:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn bad_params_get_clear_errors() {
        let now = Timestamp::UNIX_EPOCH;
        let bad = |params: LogsParams| params.to_query(now, &key().tenant("t")).unwrap_err();
        assert!(bad(LogsParams {
            limit: Some("0".into()),
            ..Default::default()
        })
        .contains("from 1 to 10000"));
        assert!(bad(LogsParams {
            level: Some("loud".into()),
            ..Default::default()
        })
        .contains("unknown level"));
        assert!(bad(LogsParams {
            stream: Some("stdin".into()),
            ..Default::default()
        })
        .contains("unknown stream"));
        assert!(bad(LogsParams {
            cursor: Some("x".into()),
            ..Default::default()
        })
        .contains("invalid cursor"));
        assert!(LogsParams {
            after: Some("x".into()),
            ..Default::default()
        }
        .after_position(&key().tenant("t"))
        .unwrap_err()
        .contains("invalid after"));
    }

    #[test]
    fn label_forms_regexes_text_and_fields_become_a_filter() {
        let params = LogsParams::from_pairs([
            ("app_not", "whisper"),
            ("runner_re", "gpu-.*"),
            ("version_not_re", "v0.*"),
            ("boot", "b1"),
            ("contains", "Out Of"),
            ("case", "sensitive"),
            ("regex", "step [0-9]+"),
            ("field.status", "200"),
            ("field.gpu.id", "0"),
        ])
        .unwrap();
        let filter = params.to_filter(Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(filter.app, Some(Matcher::Ne("whisper".into())));
        assert_eq!(
            filter.runner,
            Some(Matcher::Re(Pattern::whole("gpu-.*").unwrap()))
        );
        assert_eq!(
            filter.version,
            Some(Matcher::NotRe(Pattern::whole("v0.*").unwrap()))
        );
        assert_eq!(filter.boot, Some(Matcher::Eq("b1".into())));
        assert_eq!(
            filter.contains,
            Some(Substring::new("Out Of", true).unwrap())
        );
        assert_eq!(filter.regex, Some(Pattern::search("step [0-9]+").unwrap()));
        assert_eq!(
            filter.fields,
            BTreeMap::from([
                ("gpu.id".to_owned(), "0".to_owned()),
                ("status".to_owned(), "200".to_owned())
            ])
        );
        // contains ignores ASCII case unless told otherwise.
        let default_case = LogsParams {
            contains: Some("oom".into()),
            ..LogsParams::default()
        };
        assert!(!default_case
            .to_filter(Timestamp::UNIX_EPOCH)
            .unwrap()
            .contains
            .unwrap()
            .case_sensitive());
    }

    #[test]
    fn params_and_filters_round_trip_both_ways() {
        let key = key();
        let seal = key.tenant("t");
        let params = LogsParams {
            app: Some("sdxl".into()),
            version_not: Some("v1".into()),
            runner_re: Some("gpu-(a|b)".into()),
            boot_not_re: Some("old.*".into()),
            request: Some("req-1".into()),
            source: Some("gateway".into()),
            stream: Some("stderr".into()),
            level: Some("warn".into()),
            text: Some("out of memory".into()),
            contains: Some("CUDA".into()),
            case: Some("sensitive".into()),
            regex: Some("(?i)oom".into()),
            since: Some("2026-11-20T10:00:00Z".into()),
            until: Some("2026-11-20T11:00:00.5Z".into()),
            limit: Some("25".into()),
            direction: Some("forward".into()),
            cursor: Some(
                Cursor {
                    ts_ns: 7,
                    position: 9,
                }
                .encode(&seal),
            ),
            fields: BTreeMap::from([
                ("status".to_owned(), "200".to_owned()),
                ("empty".to_owned(), String::new()),
            ]),
            ..LogsParams::default()
        };
        let now = Timestamp::UNIX_EPOCH;
        let query = params.to_query(now, &seal).unwrap();
        assert_eq!(LogsParams::from_query(&query, &seal), params);
        assert_eq!(
            LogsParams::from_query(&query, &seal)
                .to_query(now, &seal)
                .unwrap(),
            query
        );
        // As pairs, and through serde as a query string's flat map.
        assert_eq!(LogsParams::from_pairs(params.to_pairs()).unwrap(), params);
        let encoded = serde_urlencoded::to_string(&params).unwrap();
        assert!(encoded.contains("runner_re=gpu-%28a%7Cb%29"), "{encoded}");
        assert!(encoded.contains("field.status=200"), "{encoded}");
        assert_eq!(
            serde_urlencoded::from_str::<LogsParams>(&encoded).unwrap(),
            params
        );
        assert_eq!(
            serde_urlencoded::to_string(LogsParams::default()).unwrap(),
            ""
        );
        // As the query string a client sends.
        let sent = params.to_query_string();
        assert!(sent.contains("runner_re=gpu-%28a%7Cb%29"), "{sent}");
        assert_eq!(
            serde_urlencoded::from_str::<LogsParams>(&sent).unwrap(),
            params
        );
        assert_eq!(LogsParams::default().to_query_string(), "");
    }

    #[test]
    fn a_system_record_is_on_the_system_stream_with_its_fields() {
        let ts = Timestamp::UNIX_EPOCH;
        let fields = crate::fields_of(serde_json::json!({"event": "lost"}));
        let record = IngestRecord::system(7, ts, Level::Warn, "gone".into(), fields.clone());
        assert_eq!(
            (record.seq, record.ts, record.stream),
            (7, ts, Stream::System)
        );
        assert_eq!(
            (record.level, record.message.as_str()),
            (Level::Warn, "gone")
        );
        assert_eq!(record.request_id, None);
        assert_eq!(record.fields.to_map(), fields);
    }

    #[test]
    fn an_error_body_has_the_api_shape() {
        assert_eq!(
            serde_json::to_value(ErrorBody::new("bad_gateway", "the worker is not listening"))
                .unwrap(),
            serde_json::json!({"error": {"code": "bad_gateway", "message": "the worker is not listening"}})
        );
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(percent_encode("abc-_.~XYZ09"), "abc-_.~XYZ09");
        assert_eq!(percent_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
        assert_eq!(percent_encode("a b&c?d#é"), "a%20b%26c%3Fd%23%C3%A9");
        assert_eq!(percent_encode(""), "");
    }

    #[test]
    fn bad_query_language_gets_clear_errors() {
        let now = Timestamp::UNIX_EPOCH;
        let error = |pairs: &[(&str, &str)]| {
            let pairs = pairs.iter().map(|&(name, value)| (name, value));
            match LogsParams::from_pairs(pairs) {
                Err(error) => error,
                Ok(params) => params.to_filter(now).unwrap_err(),
            }
        };
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Pairs, &[&str]); 9] = [
            (
                &[("runner_re", "gpu-(")],
                &["invalid runner_re 'gpu-(': unclosed group; fix the regex"],
            ),
            (&[("regex", "a{2,1}")], &["invalid regex 'a{2,1}': "]),
            (
                &[("regex", r"\w{1000}")],
                &["invalid regex '\\w{1000}': too large once compiled (past the 1 MiB limit)"],
            ),
            (
                &[("runner_regex", "x")],
                &["unknown parameter 'runner_regex'", "runner_re"],
            ),
            (&[("app", "a"), ("app", "b")], &["'app' is given twice"]),
            (
                &[("field.x", "1"), ("field.x", "2")],
                &["'field.x' is given twice"],
            ),
            (&[("field.", "1")], &["names no field", "field.KEY=VALUE"]),
            (
                &[("runner", "a"), ("runner_re", "b")],
                &["runner and runner_re are both given"],
            ),
            (&[("case", "sensitive")], &["case applies to contains"]),
        ];
        for (pairs, wanted) in cases {
            let error = error(pairs);
            for part in wanted {
                assert!(error.contains(part), "{pairs:?}: {error}");
            }
            assert!(!error.contains('\n'), "{error}");
        }
        assert!(error(&[("contains", "x"), ("case", "upper")]).contains("unknown case 'upper'"));
        // Through serde too, as the server reads it.
        let error = serde_urlencoded::from_str::<LogsParams>("app=a&aap=b").unwrap_err();
        assert!(
            error.to_string().contains("unknown parameter 'aap'"),
            "{error}"
        );
    }

    /// An answer that lacks records says so, and one from a server without
    /// the field still reads (complete); a complete one carries nothing new.
    #[test]
    fn incompleteness_is_optional_on_the_wire_both_ways() {
        let old: LogsPage =
            serde_json::from_str(r#"{"records":[],"next_cursor":null,"as_of":"x"}"#).unwrap();
        assert_eq!(old.incomplete, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("incomplete"));
        let page = LogsPage {
            incomplete: Some(Incomplete::damaged_blocks(2, 900)),
            ..LogsPage::default()
        };
        let json = serde_json::to_value(&page).unwrap();
        assert_eq!(json["incomplete"]["reason"], "damaged_blocks");
        assert_eq!(json["incomplete"]["damaged_blocks"], 2);
        assert_eq!(json["incomplete"]["records"], 900);
        assert_eq!(serde_json::from_value::<LogsPage>(json).unwrap(), page);
        let status: StoreStatus =
            serde_json::from_str(r#"{"records":1,"raw_bytes":2,"stored_bytes":3,"apps":[]}"#)
                .unwrap();
        assert!(status.damaged_parts.is_empty());
    }

    #[test]
    fn an_export_trailer_is_told_apart_from_records_in_both_formats() {
        let incomplete = Incomplete::damaged_blocks(1, 40);
        for format in [ExportFormat::Text, ExportFormat::Ndjson] {
            let line = format.incomplete_line(&incomplete);
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let parsed = format.parse_incomplete_line(line.trim_end().as_bytes());
            assert_eq!(parsed.as_ref(), Some(&incomplete), "{line}");
        }
        let text = ExportFormat::Text.incomplete_line(&incomplete);
        assert!(
            text.starts_with("# tailwater: incomplete: 1 damaged block of stored logs"),
            "{text}"
        );
        let record = LogRecord {
            id: String::new(),
            position: 1,
            ts: Timestamp::UNIX_EPOCH,
            tenant: "t".into(),
            app: "a".into(),
            version: String::new(),
            runner: "r".into(),
            boot: "b".into(),
            seq: 0,
            source: Source::Run,
            stream: Stream::Stdout,
            level: Level::Info,
            request_id: None,
            message:
                r#"{"incomplete":{"reason":"x","message":"m","damaged_blocks":1,"records":1}}"#
                    .into(),
            fields: Default::default(),
            invalid_utf8: false,
        };
        let ndjson = serde_json::to_string(&record).unwrap();
        assert_eq!(
            ExportFormat::Ndjson.parse_incomplete_line(ndjson.as_bytes()),
            None
        );
        let line = record.text_line().to_string();
        assert_eq!(
            ExportFormat::Text.parse_incomplete_line(line.as_bytes()),
            None
        );
    }
}
