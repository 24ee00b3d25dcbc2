//! A record as a scan visits it ([`crate::Store::scan`]): borrowed from a
//! block's columns or a memtable row, its labels its stream's (shared by
//! every record of the stream, never cloned), its fields the compact JSON
//! text the store keeps. Nothing is allocated to look at one; a
//! [`LogRecord`] is built only when asked ([`RecordRef::to_record`]), and
//! [`RecordRef::write_json`] writes the JSON a record is sent as straight
//! from the borrowed parts.

use std::io::Write;

use tailwater_model::filter::{Labels, RecordParts};
use tailwater_model::time::timestamp_from_ns;
use tailwater_model::{Cursor, Fields, Level, LogRecord, Stream};

use crate::part::StreamLabels;

/// One stored record, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// The store's ingest order ([`LogRecord::position`]).
    pub position: u64,
    pub ts_ns: i64,
    pub tenant: &'a str,
    /// Its stream's labels: app, version, runner, boot, source.
    pub labels: &'a StreamLabels,
    pub seq: u64,
    pub stream: Stream,
    pub level: Level,
    pub request_id: Option<&'a str>,
    pub message: &'a str,
    /// The fields as compact JSON text, in the order they were sent; empty
    /// for none.
    pub fields_json: &'a [u8],
    pub invalid_utf8: bool,
}

impl<'a> RecordRef<'a> {
    /// Where it stands in time order.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            ts_ns: self.ts_ns,
            position: self.position,
        }
    }

    /// What a filter looks at, borrowed.
    pub fn parts(&self) -> RecordParts<'a> {
        RecordParts {
            ts: timestamp_from_ns(self.ts_ns),
            level: self.level,
            source: self.labels.source,
            stream: self.stream,
            request_id: self.request_id,
            labels: Labels {
                app: &self.labels.app,
                version: &self.labels.version,
                runner: &self.labels.runner,
                boot: &self.labels.boot,
            },
            message: self.message,
        }
    }

    /// The fields, parsed; an error when the stored text is not a JSON
    /// object (bytes the store never writes: a damaged block).
    pub fn fields(&self) -> Result<Fields, String> {
        match self.fields_json {
            b"" => Ok(Fields::new()),
            json => serde_json::from_slice(json)
                .map_err(|error| format!("block fields do not decode: {error}")),
        }
    }

    /// The whole record, as [`crate::Store::query`] returns it (its `id`
    /// empty, as inside the store).
    pub fn to_record(&self) -> Result<LogRecord, String> {
        Ok(LogRecord {
            id: String::new(),
            position: self.position,
            ts: timestamp_from_ns(self.ts_ns),
            tenant: self.tenant.to_owned(),
            app: self.labels.app.clone(),
            version: self.labels.version.clone(),
            runner: self.labels.runner.clone(),
            boot: self.labels.boot.clone(),
            seq: self.seq,
            source: self.labels.source,
            stream: self.stream,
            level: self.level,
            request_id: self.request_id.map(str::to_owned),
            message: self.message.to_owned(),
            fields: self.fields()?,
            invalid_utf8: self.invalid_utf8,
        })
    }

    /// Writes the JSON object of the record with `id` (its sealed id), as
    /// `serde_json` writes [`LogRecord`] (the same keys, in the same order,
    /// the same text for each value), without building it. One difference:
    /// the fields object is the text the store keeps, in the order its
    /// sender gave the keys, where a built record's map sorts them; the
    /// same JSON to any reader. An error, and nothing written, when that
    /// text is not a JSON object (bytes the store never writes: a damaged
    /// block that passed its checksum), as [`RecordRef::to_record`] fails.
    pub fn write_json(&self, id: &str, out: &mut Vec<u8>) -> Result<(), String> {
        if !self.fields_json.is_empty() && !is_an_object(self.fields_json) {
            return Err("block fields do not decode: not a json object".into());
        }
        fn text(out: &mut Vec<u8>, value: &str) {
            serde_json::to_writer(&mut *out, value).expect("a string writes into memory");
        }
        let labels = self.labels;
        out.extend_from_slice(b"{\"id\":");
        text(out, id);
        // As jiff's serde writes a timestamp: its Display.
        let _ = write!(
            out,
            ",\"ts\":\"{}\",\"tenant\":",
            timestamp_from_ns(self.ts_ns)
        );
        text(out, self.tenant);
        out.extend_from_slice(b",\"app\":");
        text(out, &labels.app);
        out.extend_from_slice(b",\"version\":");
        text(out, &labels.version);
        out.extend_from_slice(b",\"runner\":");
        text(out, &labels.runner);
        out.extend_from_slice(b",\"boot\":");
        text(out, &labels.boot);
        let _ = write!(out, ",\"seq\":{},\"source\":", self.seq);
        serde_json::to_writer(&mut *out, &labels.source).expect("writes into memory");
        out.extend_from_slice(b",\"stream\":");
        serde_json::to_writer(&mut *out, &self.stream).expect("writes into memory");
        out.extend_from_slice(b",\"level\":");
        serde_json::to_writer(&mut *out, &self.level).expect("writes into memory");
        out.extend_from_slice(b",\"request_id\":");
        match self.request_id {
            Some(request_id) => text(out, request_id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"message\":");
        text(out, self.message);
        out.extend_from_slice(b",\"fields\":");
        match self.fields_json {
            b"" => out.extend_from_slice(b"{}"),
            json => out.extend_from_slice(json),
        }
        if self.invalid_utf8 {
            out.extend_from_slice(b",\"invalid_utf8\":true");
        }
        out.push(b'}');
        Ok(())
    }
}

/// Whether stored fields text is one JSON object (checked, not built).
fn is_an_object(json: &[u8]) -> bool {
    json.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
}
