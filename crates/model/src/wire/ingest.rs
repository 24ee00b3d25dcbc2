//! `POST /v1/ingest`: a batch of one runner's records, and the answer
//! (what was stored, refused or retimed, and why).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::{Fields, FieldsJson, Level, Source, Stream};

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
