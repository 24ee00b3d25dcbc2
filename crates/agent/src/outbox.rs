//! The outbox: every record the agent makes, stamped and in order, held until
//! the server acknowledged it.
//!
//! This is a memory buffer with a byte cap: when the server is away longer
//! than the cap lasts, the oldest records are dropped, counted, and reported
//! in a system record once shipping resumes (and on the agent's stderr if it
//! never does). Nothing is dropped silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use jiff::Timestamp;
use serde_json::json;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{parse_line, Fields, Level, Source, Stream};
use tokio::sync::Notify;

use crate::capture::Line;
use crate::AgentConfig;

/// Bytes a record costs beyond its message and fields, for the buffer cap and
/// batch sizes: an estimate of its JSON framing.
const RECORD_OVERHEAD_BYTES: usize = 96;

pub struct Outbox {
    app: String,
    version: String,
    runner: String,
    boot: String,
    source: Source,
    cap_bytes: usize,
    state: Mutex<State>,
    work: Notify,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    queue: VecDeque<(IngestRecord, usize)>,
    queued_bytes: usize,
    dropped: Option<Dropped>,
}

struct Dropped {
    lines: u64,
    bytes: u64,
    first: Timestamp,
    last: Timestamp,
}

impl Outbox {
    pub fn new(config: &AgentConfig) -> Outbox {
        Outbox {
            app: config.app.clone(),
            version: config.version.clone(),
            runner: config.runner.clone(),
            boot: hex::encode(rand::random::<[u8; 8]>()),
            source: config.source,
            cap_bytes: config.buffer_bytes,
            state: Mutex::new(State::default()),
            work: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// Records one captured line: parsed for level, request id, time and
    /// fields; invalid UTF-8 replaced and marked. A line that names no
    /// request of its own belongs to `in_request`, the one request in flight
    /// when it was read (if exactly one was).
    pub fn record_line(&self, stream: Stream, line: Line, in_request: Option<&str>) {
        let text = String::from_utf8_lossy(&line.bytes);
        let invalid_utf8 = matches!(text, std::borrow::Cow::Owned(_));
        let parsed = parse_line(&text);
        let mut fields = parsed.fields;
        if line.continued {
            fields.insert("continued".into(), true.into());
        }
        self.push(|seq, now| IngestRecord {
            seq,
            ts: parsed.ts.unwrap_or(now),
            stream,
            level: parsed.level.unwrap_or_default(),
            request_id: parsed.request_id.or_else(|| in_request.map(str::to_owned)),
            message: parsed.message,
            fields,
            invalid_utf8,
        });
    }

    /// Records a lifecycle or accounting event of the agent's own.
    pub fn system(&self, level: Level, message: String, fields: Fields) {
        self.push(|seq, now| IngestRecord {
            seq,
            ts: now,
            stream: Stream::System,
            level,
            request_id: None,
            message,
            fields,
            invalid_utf8: false,
        });
    }

    pub fn system_warning(&self, message: String) {
        self.system(Level::Warn, message, Fields::new());
    }

    /// Adds a record made from its sequence number and the current time,
    /// both taken under one lock, so stdout and stderr lines read at once
    /// still have times in sequence order.
    fn push(&self, make: impl FnOnce(u64, Timestamp) -> IngestRecord) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let record = make(state.next_seq, Timestamp::now());
        state.next_seq += 1;
        let bytes = record_bytes(&record);
        state.queued_bytes += bytes;
        state.queue.push_back((record, bytes));
        while state.queued_bytes > self.cap_bytes && state.queue.len() > 1 {
            let (dropped, bytes) = state.queue.pop_front().expect("queue is not empty");
            state.queued_bytes -= bytes;
            let tally = state.dropped.get_or_insert(Dropped {
                lines: 0,
                bytes: 0,
                first: dropped.ts,
                last: dropped.ts,
            });
            tally.lines += 1;
            tally.bytes += dropped.message.len() as u64;
            tally.last = dropped.ts;
        }
        drop(state);
        self.work.notify_one();
    }

    /// The oldest records not yet acknowledged, as one batch of at most
    /// `max_records` records and about `max_bytes` bytes (always at least one
    /// record). `None` when there are none.
    pub fn batch(&self, max_records: usize, max_bytes: usize) -> Option<IngestBatch> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.queue.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let records = state
            .queue
            .iter()
            .take(max_records)
            .take_while(|(_, size)| {
                bytes += size;
                bytes <= max_bytes || bytes == *size
            })
            .map(|(record, _)| record.clone())
            .collect();
        Some(IngestBatch {
            app: self.app.clone(),
            version: self.version.clone(),
            runner: self.runner.clone(),
            boot: self.boot.clone(),
            source: self.source,
            records,
        })
    }

    /// The server has the oldest `count` records: forget them. If records
    /// were dropped while it was away, say so now that it is back.
    pub fn acknowledge(&self, count: usize) {
        let dropped = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..count.min(state.queue.len()) {
                let (_, bytes) = state.queue.pop_front().expect("queue is not empty");
                state.queued_bytes -= bytes;
            }
            state.dropped.take()
        };
        if let Some(dropped) = dropped {
            self.system(
                Level::Error,
                format!(
                    "dropped {} lines ({} bytes) written between {} and {}: the server was unreachable and the agent's buffer (--buffer-bytes {}) was full",
                    dropped.lines, dropped.bytes, dropped.first, dropped.last, self.cap_bytes
                ),
                fields(json!({
                    "event": "dropped",
                    "dropped_lines": dropped.lines,
                    "dropped_bytes": dropped.bytes,
                    "first": dropped.first.to_string(),
                    "last": dropped.last.to_string(),
                    "reason": "buffer_full",
                })),
            );
        }
    }

    /// Lines and bytes not yet acknowledged, counting those dropped.
    pub fn pending(&self) -> (u64, u64) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (dropped_lines, dropped_bytes) = state
            .dropped
            .as_ref()
            .map_or((0, 0), |dropped| (dropped.lines, dropped.bytes));
        (
            state.queue.len() as u64 + dropped_lines,
            state.queued_bytes as u64 + dropped_bytes,
        )
    }

    /// No more records will come: the shipper stops once the outbox is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.work.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits until a record is added or the outbox is closed.
    pub async fn wait_for_work(&self) {
        self.work.notified().await;
    }
}

fn record_bytes(record: &IngestRecord) -> usize {
    let fields: usize = record
        .fields
        .iter()
        .map(|(key, value)| key.len() + value.to_string().len())
        .sum();
    RECORD_OVERHEAD_BYTES + record.message.len() + fields
}

/// A JSON object literal as [`Fields`].
pub fn fields(value: serde_json::Value) -> Fields {
    match value {
        serde_json::Value::Object(map) => map,
        _ => Fields::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(cap_bytes: usize) -> Outbox {
        let mut config = AgentConfig::new("http://127.0.0.1:1", "t", "app", vec!["true".into()]);
        config.buffer_bytes = cap_bytes;
        Outbox::new(&config)
    }

    fn line(text: &str) -> Line {
        Line {
            bytes: text.as_bytes().to_vec(),
            continued: false,
        }
    }

    #[test]
    fn lines_are_sequenced_parsed_and_marked() {
        let outbox = outbox(1 << 20);
        outbox.record_line(
            Stream::Stdout,
            line(r#"{"level":"warn","msg":"hot","requestId":"r9"}"#),
            None,
        );
        outbox.record_line(
            Stream::Stderr,
            Line {
                bytes: b"bad \xff byte".to_vec(),
                continued: true,
            },
            None,
        );
        let batch = outbox.batch(10, 1 << 20).unwrap();
        let [first, second] = &batch.records[..] else {
            panic!("two records")
        };
        assert_eq!(
            (first.seq, first.level, first.message.as_str()),
            (0, Level::Warn, "hot")
        );
        assert_eq!(first.request_id.as_deref(), Some("r9"));
        assert_eq!((second.seq, second.stream), (1, Stream::Stderr));
        assert!(second.invalid_utf8);
        assert_eq!(second.message, "bad \u{fffd} byte");
        assert_eq!(second.fields.get("continued"), Some(&true.into()));
    }

    #[test]
    fn batches_respect_limits_and_acknowledged_records_leave() {
        let outbox = outbox(1 << 20);
        for n in 0..10 {
            outbox.record_line(Stream::Stdout, line(&format!("line {n}")), None);
        }
        assert_eq!(outbox.batch(4, 1 << 20).unwrap().records.len(), 4);
        // A byte limit below one record still ships that one record.
        assert_eq!(outbox.batch(100, 1).unwrap().records.len(), 1);
        outbox.acknowledge(4);
        let rest = outbox.batch(100, 1 << 20).unwrap();
        assert_eq!(rest.records.first().unwrap().seq, 4);
        outbox.acknowledge(6);
        assert!(outbox.batch(100, 1 << 20).is_none());
    }

    #[test]
    fn overflow_drops_oldest_and_reports_exact_counts_when_shipping_resumes() {
        let per_record = RECORD_OVERHEAD_BYTES + "line 00".len();
        let outbox = outbox(per_record * 5);
        for n in 0..12 {
            outbox.record_line(Stream::Stdout, line(&format!("line {n:02}")), None);
        }
        assert_eq!(outbox.pending(), (12, (per_record * 5 + 7 * 7) as u64));
        let batch = outbox.batch(100, 1 << 20).unwrap();
        let messages: Vec<_> = batch.records.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(
            messages,
            ["line 07", "line 08", "line 09", "line 10", "line 11"]
        );
        outbox.acknowledge(5);
        let report = outbox.batch(100, 1 << 20).unwrap();
        let [summary] = &report.records[..] else {
            panic!("one drop record")
        };
        assert_eq!(summary.stream, Stream::System);
        assert_eq!(summary.seq, 12);
        assert_eq!(summary.fields.get("dropped_lines"), Some(&7.into()));
        assert_eq!(summary.fields.get("dropped_bytes"), Some(&49.into()));
        assert!(
            summary.message.starts_with("dropped 7 lines (49 bytes)"),
            "{}",
            summary.message
        );
    }
}
