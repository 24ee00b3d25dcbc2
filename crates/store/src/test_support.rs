//! What the store's unit tests share: an ingest record and a batch of them,
//! with every field a test does not set at a plain value; stores of both
//! kinds (memtable only, flushed into parts) and a look at all they hold.

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Level, Stream};
use tailwater_model::{LogRecord, Query};

use crate::{Page, Store, StoreOptions};

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

pub fn batch(runner: &str, boot: &str, seqs: std::ops::Range<u64>, ts_second: i64) -> IngestBatch {
    IngestBatch {
        app: "sdxl".into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: boot.into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                // Several records share each second, to exercise tie-breaks.
                ts: Timestamp::from_second(ts_second + (seq / 3) as i64).unwrap(),
                stream: Stream::Stdout,
                level: if seq % 5 == 0 {
                    Level::Error
                } else {
                    Level::Info
                },
                request_id: Some(format!("req-{}", seq % 4)),
                message: format!("line {seq} of {runner}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// A store that flushes its memtable into parts after every append, so reads
/// go through parts and blocks.
pub fn open_flushing(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            memtable_max_bytes: 1,
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Both kinds of store: memtable-only and flushed-into-parts.
pub fn both(test: impl Fn(&dyn Fn(&Path) -> Store)) {
    test(&open);
    test(&open_flushing);
}

/// One page holding every record of `tenant` (the tests store fewer than
/// 1000), newest first.
pub fn everything(store: &Store, tenant: &str) -> Page {
    store
        .query(
            tenant,
            &Query {
                limit: 1000,
                ..Query::default()
            },
        )
        .unwrap()
}

pub fn messages(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.message.clone()).collect()
}

/// `count` records from `first`, one millisecond apart from `start`.
pub fn run(runner: &str, first: u64, count: u64, start: Timestamp) -> IngestBatch {
    batch_of(
        "sdxl",
        runner,
        (first..first + count)
            .map(|seq| {
                record(
                    seq,
                    start + Duration::from_millis(seq),
                    format!("line {seq} of {runner}"),
                )
            })
            .collect(),
    )
}

pub fn all(store: &Store, tenant: &str) -> Vec<LogRecord> {
    let mut records = Vec::new();
    let mut query = Query {
        limit: 1000,
        direction: tailwater_model::Direction::Forward,
        ..Query::default()
    };
    loop {
        let page = store.query(tenant, &query).unwrap();
        records.extend(page.records);
        match page.next {
            Some(cursor) => query.cursor = Some(cursor),
            None => return records,
        }
    }
}

pub fn start() -> Timestamp {
    "2026-11-20T10:00:00Z".parse().unwrap()
}
