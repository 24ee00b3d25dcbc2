//! What the store's unit tests share: an ingest record and a batch of them,
//! with every field a test does not set at a plain value.

use jiff::Timestamp;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Level, Stream};

/// Record `seq` at `ts` saying `message`: stdout, info, no request, no
/// fields.
pub fn record(seq: u64, ts: Timestamp, message: String) -> IngestRecord {
    IngestRecord {
        seq,
        ts,
        stream: Stream::Stdout,
        level: Level::Info,
        request_id: None,
        message,
        fields: Default::default(),
        invalid_utf8: false,
    }
}

/// `records` of runner `runner` (boot `b`) of app `app` (version `v1`).
pub fn batch_of(app: &str, runner: &str, records: Vec<IngestRecord>) -> IngestBatch {
    IngestBatch {
        app: app.into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: "b".into(),
        source: Default::default(),
        records,
    }
}
