//! Bodies of the HTTP API, shared by the server, the client and the agent.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::filter::{Cursor, Direction, Filter, Query};
use crate::record::{Fields, Level, LogRecord, Source, Stream};
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
    #[serde(default)]
    pub fields: Fields,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invalid_utf8: bool,
}

/// The answer to an ingest: how many records were new, and how many had been
/// stored before (a retried batch) and were skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub duplicates: usize,
}

/// `GET /v1/logs`: one page of records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogsPage {
    pub records: Vec<LogRecord>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// The newest record `id` the server had stored when it answered. Live
    /// tail from `after=as_of` continues this read with no gap and no
    /// duplicate.
    pub as_of: u64,
}

/// The query string of `GET /v1/logs` and `GET /v1/logs/tail`, as text, so
/// that every bad value gets our own clear error ([`LogsParams::to_query`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogsParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Minimum level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// RFC 3339, `now`, or a duration ago (`15m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// `forward` (oldest first) or `backward` (newest first, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Live tail only: start after this record `id` (as `Last-Event-ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl LogsParams {
    /// The filter these parameters describe; relative times count back from
    /// `now`.
    pub fn to_filter(&self, now: Timestamp) -> Result<Filter, String> {
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
        Ok(Filter {
            app: non_empty(&self.app),
            version: non_empty(&self.version),
            runner: non_empty(&self.runner),
            request_id: non_empty(&self.request),
            source: parsed::<Source>(&self.source)?,
            stream: parsed::<Stream>(&self.stream)?,
            min_level: parsed::<Level>(&self.level)?,
            text: non_empty(&self.text).map(|text| Phrase::new(&text)),
            since: time(&self.since)?,
            until: time(&self.until)?,
        })
    }

    /// The page query these parameters describe.
    pub fn to_query(&self, now: Timestamp) -> Result<Query, String> {
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
            filter: self.to_filter(now)?,
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
                .map(Cursor::decode)
                .transpose()?,
        })
    }

    /// The `after` id of a live tail, if given.
    pub fn after_id(&self) -> Result<Option<u64>, String> {
        self.after
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(|text| {
                text.parse().map_err(|_| {
                    format!("invalid after '{text}': use the id of the last record you received")
                })
            })
            .transpose()
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let query = params.to_query(now).unwrap();
        assert_eq!(query.limit, DEFAULT_PAGE_LIMIT);
        assert_eq!(query.direction, Direction::Backward);
        assert_eq!(query.filter.app.as_deref(), Some("sdxl"));
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
        let bad = |params: LogsParams| params.to_query(now).unwrap_err();
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
        .after_id()
        .unwrap_err()
        .contains("invalid after"));
    }
}
