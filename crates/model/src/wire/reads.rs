//! What reads of records answer besides records: an export's format and
//! trailer, a live tail's messages and missed notices, the histogram, and
//! the note of what a read lacks.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::{Level, LogRecord};

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

/// `GET /v1/logs/count`: how many records match the filters of
/// `/v1/logs` (all of history unless `since` or `until` bound it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsCount {
    pub total: u64,
    /// `false` when matching records could not be read (`incomplete`), so
    /// `total` lacks them.
    pub complete: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
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
    /// `false` when the counts leave matching records out: some could not
    /// be read (`incomplete`), or (from servers before counts were read
    /// from the store's columns) more matched than the server counted for
    /// one histogram, and the counts hold only the newest ones, from
    /// `counted_since` on.
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
        self.add_many(level, 1);
    }

    /// Adds `count` records of `level`.
    pub fn add_many(&mut self, level: Level, count: u64) {
        let counted = match level {
            Level::Trace => &mut self.trace,
            Level::Debug => &mut self.debug,
            Level::Info => &mut self.info,
            Level::Warn => &mut self.warn,
            Level::Error => &mut self.error,
            Level::Fatal => &mut self.fatal,
        };
        *counted += count;
    }

    pub fn total(&self) -> u64 {
        self.trace + self.debug + self.info + self.warn + self.error + self.fatal
    }
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
