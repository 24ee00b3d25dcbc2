//! A row: a record as the store holds it between an append and a part, in
//! the write-ahead log and in the memtable.
//!
//! A row has no labels (tenant, app, version, runner, boot, source: its
//! stream's, kept once) and its fields are compact JSON text, as the
//! ingested record carried it ([`tailwater_model::FieldsJson`]): the log
//! writes that text, and a flush copies it into a block's fields column. A short line's memory is then mostly its message, where a
//! [`LogRecord`] would hold five label strings and a field map node of its
//! own; so a memtable of a given size holds about twice the records, and
//! flushes write blocks large enough for merges to copy.
//!
//! Its serialized form is the log's row format: fields in this order.

use serde::{Deserialize, Serialize};
use tailwater_model::filter::{Labels, RecordParts};
use tailwater_model::time::timestamp_from_ns;
use tailwater_model::wire::IngestRecord;
use tailwater_model::{Fields, Filter, Level, LogRecord, Stream};

use crate::part::block::BlockRecord;
use crate::part::StreamLabels;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub id: u64,
    /// The record's time, in ns since the epoch.
    pub ts_ns: i64,
    pub seq: u64,
    pub level: Level,
    pub stream: Stream,
    pub request_id: Option<String>,
    pub message: String,
    /// The fields as compact JSON; empty for none.
    pub fields: String,
    pub invalid_utf8: bool,
}

impl Row {
    /// A row of an ingested record, with its id and (stored) time.
    pub fn new(id: u64, ts_ns: i64, record: IngestRecord) -> Row {
        Row {
            id,
            ts_ns,
            seq: record.seq,
            level: record.level,
            stream: record.stream,
            request_id: record.request_id,
            message: record.message,
            fields: record.fields.into_string(),
            invalid_utf8: record.invalid_utf8,
        }
    }

    /// The whole record, with its stream's labels.
    pub fn to_record(&self, tenant: &str, labels: &StreamLabels) -> LogRecord {
        LogRecord {
            id: String::new(),
            position: self.id,
            ts: timestamp_from_ns(self.ts_ns),
            tenant: tenant.to_owned(),
            app: labels.app.clone(),
            version: labels.version.clone(),
            runner: labels.runner.clone(),
            boot: labels.boot.clone(),
            seq: self.seq,
            source: labels.source,
            stream: self.stream,
            level: self.level,
            request_id: self.request_id.clone(),
            message: self.message.clone(),
            fields: self.parsed_fields(),
            invalid_utf8: self.invalid_utf8,
        }
    }

    /// Whether `filter` takes this row of a stream with `labels`. The
    /// fields are parsed only for a filter on fields.
    pub fn matches(&self, filter: &Filter, labels: &StreamLabels) -> bool {
        let parts = RecordParts {
            ts: timestamp_from_ns(self.ts_ns),
            level: self.level,
            source: labels.source,
            stream: self.stream,
            request_id: self.request_id.as_deref(),
            labels: Labels {
                app: &labels.app,
                version: &labels.version,
                runner: &labels.runner,
                boot: &labels.boot,
            },
            message: &self.message,
        };
        filter.matches_parts(parts, || self.parsed_fields())
    }

    pub fn parsed_fields(&self) -> Fields {
        match self.fields.as_str() {
            "" => Fields::new(),
            // Checked to parse when it was ingested.
            json => serde_json::from_str(json).unwrap_or_default(),
        }
    }
}

impl BlockRecord for Row {
    fn ts_ns(&self) -> i64 {
        self.ts_ns
    }
    fn id(&self) -> u64 {
        self.id
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn level(&self) -> Level {
        self.level
    }
    fn stream(&self) -> Stream {
        self.stream
    }
    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
    fn message(&self) -> &str {
        &self.message
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.fields.as_bytes());
    }
    fn invalid_utf8(&self) -> bool {
        self.invalid_utf8
    }
    fn status(&self) -> Option<i64> {
        if self.stream != Stream::System || !self.fields.contains("\"status\"") {
            return None;
        }
        self.parsed_fields().get("status")?.as_i64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text an ingested record carried is the row's, as it came: the
    /// append writes it, and only a read parses it.
    #[test]
    fn a_row_keeps_its_records_fields_text() {
        let as_sent = r#"{"z":1,"a":{"s":"x\ny"}}"#;
        let record = IngestRecord {
            seq: 7,
            ts: jiff::Timestamp::UNIX_EPOCH,
            stream: Stream::System,
            level: Level::Warn,
            request_id: None,
            message: "m".into(),
            fields: serde_json::from_str(as_sent).unwrap(),
            invalid_utf8: false,
        };
        let row = Row::new(1, 0, record);
        assert_eq!(row.fields, as_sent);
        assert_eq!(row.parsed_fields()["a"]["s"], "x\ny");
        let mut column = Vec::new();
        row.write_fields(&mut column);
        assert_eq!(column, as_sent.as_bytes());
    }
}
