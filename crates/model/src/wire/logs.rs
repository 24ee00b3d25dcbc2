//! `GET /v1/logs` and its query string: [`LogsParams`] (text, so every bad
//! value gets a clear error), the [`Query`] and [`Filter`] they describe,
//! and a page of records.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::filter::{Cursor, Direction, Filter, Query};
use crate::matcher::{Matcher, Pattern, Substring, DEFAULT_REGEX_SIZE_LIMIT};
use crate::positions::TenantSeal;
use crate::record::{Level, LogRecord, Source, Stream};
use crate::time::parse_time;
use crate::words::Phrase;

use super::*;

/// Records one page holds when the request names no limit.
pub const DEFAULT_PAGE_LIMIT: usize = 100;
/// The most records one page may hold.
pub const MAX_PAGE_LIMIT: usize = 10_000;

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
/// plus paging (`limit`, `direction`, `cursor`), for live tail `after`, and
/// for history `around` (the records next to one record).
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
    /// History only: the page around the record with this `id` (see
    /// [`LogsParams::around_position`]).
    pub around: Option<String>,
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
    fn slots(&mut self) -> [(&'static str, &mut Option<String>); 31] {
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
            ("around", &mut self.around),
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
                    "unknown parameter '{name}': use app, version, runner or boot (each also with _not, _re or _not_re), request, source, stream, level, text, contains, case, regex, {FIELD_PREFIX}KEY, since, until, limit, direction, cursor, after or around"
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

    /// The position of the record a history page is `around`, if given: the
    /// page holds that record (when the filter matches it) between up to
    /// `limit` matching records before it and `limit` after it, oldest
    /// first. It is its own way of paging, so `cursor`, `direction` and
    /// `after` are refused beside it.
    pub fn around_position(&self, seal: &TenantSeal) -> Result<Option<u64>, String> {
        let Some(text) = self.around.as_deref().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let given = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.is_empty());
        for (name, value) in [
            ("cursor", &self.cursor),
            ("direction", &self.direction),
            ("after", &self.after),
        ] {
            if given(value) {
                return Err(format!(
                    "around and {name} are both given: around reads both ways from one record, so leave {name} out"
                ));
            }
        }
        match seal.position(text) {
            Some(position) => Ok(Some(position)),
            None => {
                let shown: String = text.chars().take(40).collect();
                Err(format!(
                    "invalid around '{shown}': use the id of a record one of this tenant's reads returned, unchanged"
                ))
            }
        }
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
