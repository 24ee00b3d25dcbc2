//! The spool's tests: real files in a temporary directory. `recovery`
//! holds those of restarts, torn files and durability.

mod recovery;

use super::*;
use crate::line::{Line, Progress};
use jiff::Timestamp;
use tailwater_model::{Fields, FieldsJson, Level, Stream};

/// Opens the spool and adopts every leftover, as the agent does in the
/// background.
pub(super) fn open_recovered(dir: &Path, header: SegmentHeader, cap: u64) -> (Spool, Recovery) {
    let (mut spool, mut recovery) = Spool::open(dir, header, cap).unwrap();
    while let Some(leftover) = spool.next_leftover() {
        spool.adopt(leftover.recover(), &mut recovery);
    }
    (spool, recovery)
}

pub(super) fn header(boot: &str) -> SegmentHeader {
    SegmentHeader {
        app: "app".into(),
        version: "v1".into(),
        runner: "r-1".into(),
        boot: boot.into(),
        source: Source::Run,
    }
}

pub(super) fn record(seq: u64, message: &str) -> IngestRecord {
    IngestRecord {
        seq,
        ts: Timestamp::from_second(1_700_000_000 + seq as i64).unwrap(),
        stream: Stream::Stdout,
        level: Level::Info,
        request_id: None,
        message: message.into(),
        fields: FieldsJson::new(),
        invalid_utf8: false,
    }
}

pub(super) fn append_lines(spool: &mut Spool, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let line = format!("line {seq:04}");
        spool.append(&record(seq, &line), 0, line.len() as u64);
    }
}

pub(super) const ALL: BatchLimits = BatchLimits {
    max_records: usize::MAX,
    max_bytes: u64::MAX,
    lines: None,
    line_bytes: None,
};

/// Reads and acknowledges everything, as the shipper would: the records
/// in order with their boots.
pub(super) fn drain(spool: &mut Spool) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    while let Some(plan) = spool.plan_read() {
        let batch = read_batch(&plan, &ALL).unwrap();
        assert_ne!(batch.stop, Stop::Throttled);
        for record in &batch.records {
            out.push((
                batch.header.boot.clone(),
                record.seq,
                record.message.clone(),
            ));
        }
        spool.acknowledge(&batch.receipt);
    }
    out
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// A leftover segment's checksummed frame may carry any sequence
/// number: acknowledging the highest one must not overflow (found by
/// the `spool` fuzz target).
#[test]
fn a_record_of_the_highest_sequence_number_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    spool.append(&record(u64::MAX, "last"), 0, 4);
    spool.flush();
    let read = drain(&mut spool);
    assert_eq!(read, [("b1".to_owned(), u64::MAX, "last".to_owned())]);
    assert_eq!(spool.backlog().records, 0);
}

#[test]
fn captured_lines_come_back_as_capture_knew_them() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    let stamped = Timestamp::from_second(1_700_000_000).unwrap();
    let captured = [
        Line {
            in_request: Some("in-flight"),
            ..Line::new(Stream::Stderr, br#"{"level":"error","msg":"boom"}"#)
        },
        Line {
            stream: Stream::Stdout,
            bytes: b"50%|#####     | 5/10 \xff",
            continued: true,
            in_request: Some("in-flight"),
            progress: Some(Progress {
                updates: 7,
                last: true,
            }),
        },
    ];
    for (seq, line) in captured.iter().enumerate() {
        spool.append_captured(seq as u64, timestamp_ns(stamped), line, 0);
    }
    let plan = spool.plan_read().unwrap();
    // The spool hands each line to the layer above as it was appended, with
    // its stamp; it parses nothing itself.
    let given = std::cell::RefCell::new(Vec::new());
    let batch = super::read_batch(&plan, &ALL, &mut |seq, ts, line: &Line<'_>| {
        let owned = (
            seq,
            ts,
            line.stream,
            line.bytes.to_vec(),
            line.continued,
            line.in_request.map(str::to_owned),
            line.progress,
        );
        given.borrow_mut().push(owned);
        as_record(seq, ts, line)
    })
    .unwrap();
    let expected: Vec<_> = captured
        .iter()
        .enumerate()
        .map(|(seq, line)| {
            (
                seq as u64,
                stamped,
                line.stream,
                line.bytes.to_vec(),
                line.continued,
                line.in_request.map(str::to_owned),
                line.progress,
            )
        })
        .collect();
    assert_eq!(given.into_inner(), expected);
    assert_eq!(batch.records.len(), 2);
    // Metered by the bytes as written, invalid ones included.
    assert_eq!(
        batch.receipt.line_bytes,
        (captured[0].bytes.len() + captured[1].bytes.len()) as u64
    );
}

/// What the tests make of a captured line: its bytes as the message, the
/// request in flight as its request id (the shipper's parser is not the
/// spool's business).
pub(super) fn as_record(seq: u64, ts: Timestamp, line: &Line<'_>) -> IngestRecord {
    IngestRecord {
        seq,
        ts,
        stream: line.stream,
        level: Level::Info,
        request_id: line.in_request.map(str::to_owned),
        message: String::from_utf8_lossy(line.bytes).into_owned(),
        fields: FieldsJson::new(),
        invalid_utf8: false,
    }
}

/// [`super::read_batch`] with [`as_record`].
pub(super) fn read_batch(plan: &ReadPlan, limits: &BatchLimits) -> io::Result<ReadBatch> {
    super::read_batch(plan, limits, &mut as_record)
}

#[test]
fn records_round_trip_and_acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, recovery) = open_recovered(dir.path(), header("b1"), 64 * 1024);
    assert_eq!(recovery.records, 0);
    append_lines(&mut spool, 0..300);
    assert_eq!(spool.backlog().records, 300);
    assert!(segment_files(dir.path()).len() > 1, "rolled into segments");
    let shipped = drain(&mut spool);
    assert_eq!(shipped.len(), 300);
    assert!(shipped
        .iter()
        .enumerate()
        .all(|(n, (boot, seq, message))| boot == "b1"
            && *seq == n as u64
            && *message == format!("line {n:04}")));
    assert_eq!(spool.backlog(), Backlog::default());
    // Only the open segment is left.
    assert_eq!(segment_files(dir.path()).len(), 1);
    spool.shutdown();
    assert!(!dir.path().exists() || fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn every_part_of_a_record_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    let mut fields = Fields::new();
    fields.insert("gpu".into(), serde_json::json!({ "id": 3, "util": 0.97 }));
    let written = vec![
        IngestRecord {
            request_id: Some("req-7".into()),
            level: Level::Fatal,
            stream: Stream::Stderr,
            invalid_utf8: true,
            fields: FieldsJson::from_map(&fields),
            message: "bad \u{fffd} \"quoted\"\n".into(),
            ..record(0, "")
        },
        IngestRecord {
            stream: Stream::System,
            level: Level::Trace,
            ts: Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap(),
            ..record(1, "")
        },
    ];
    for record in &written {
        spool.append(record, 0, 1);
    }
    let plan = spool.plan_read().unwrap();
    let batch = read_batch(&plan, &ALL).unwrap();
    assert_eq!(batch.stop, Stop::End);
    assert_eq!(batch.records, written);
    // The fields are written as spools always held them: the map's JSON,
    // last in the body.
    let mut body = Vec::new();
    encode_record(&written[0], &mut body);
    assert!(body.ends_with(&serde_json::to_vec(&fields).unwrap()));
}

#[test]
fn over_the_cap_the_oldest_segments_are_dropped_and_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let cap = MIN_SPOOL_MAX_BYTES;
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), cap);
    append_lines(&mut spool, 0..1000);
    assert!(spool.bytes() <= cap, "{} > {cap}", spool.bytes());
    let [tally] = &spool.take_dropped()[..] else {
        panic!("one tally")
    };
    spool.persist();
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(tally.reason, REASON_SPOOL_FULL);
    assert_eq!(tally.lines + shipped.len() as u64, 1000);
    assert_eq!(tally.bytes, tally.lines * 9);
    assert_eq!(
        tally.seqs,
        [SeqRange {
            boot: "b1".into(),
            first: 0,
            last: tally.lines - 1
        }]
    );
    assert_eq!(shipped, (tally.lines..1000).collect::<Vec<_>>());
    assert_eq!(
        (tally.first_ts, tally.last_ts),
        (
            1_700_000_000 * 1_000_000_000,
            (1_700_000_000 + tally.lines as i64 - 1) * 1_000_000_000
        )
    );
}

#[test]
fn the_segment_being_shipped_is_not_dropped_and_tallies_persist() {
    let dir = tempfile::tempdir().unwrap();
    let cap = MIN_SPOOL_MAX_BYTES;
    let first_batch = {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), cap);
        append_lines(&mut spool, 0..10);
        let plan = spool.plan_read().unwrap();
        append_lines(&mut spool, 10..1000);
        let batch = read_batch(&plan, &ALL).unwrap();
        assert_eq!(batch.records.first().unwrap().seq, 0);
        spool.acknowledge(&batch.receipt);
        spool.flush();
        // The agent dies before reporting the drops.
        batch.records.len() as u64
    };
    let (mut spool, _) = open_recovered(dir.path(), header("b2"), cap);
    let [tally] = &spool.take_dropped()[..] else {
        panic!("the tally was kept in the ledger")
    };
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    let [range] = &tally.seqs[..] else {
        panic!("one range")
    };
    // The pinned first segment stayed (its first batch shipped before
    // the restart, its rest after); the range after it was dropped; the
    // newest records are left.
    assert!(range.first > first_batch);
    assert_eq!(tally.lines, range.last - range.first + 1);
    assert_eq!(
        shipped,
        (first_batch..range.first)
            .chain(range.last + 1..1000)
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_rate_allowance_stops_a_batch_but_not_unmetered_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    let mut system = record(0, "agent says");
    system.stream = Stream::System;
    spool.append(&system, FLAG_UNMETERED, 10);
    append_lines(&mut spool, 1..10);
    let plan = spool.plan_read().unwrap();
    let none = BatchLimits {
        lines: Some(0),
        ..ALL
    };
    let batch = read_batch(&plan, &none).unwrap();
    assert_eq!((batch.records.len(), batch.stop), (1, Stop::Throttled));
    assert_eq!(batch.receipt.metered_lines, 0);
    let bytes = BatchLimits {
        line_bytes: Some(20),
        ..ALL
    };
    let batch = read_batch(&plan, &bytes).unwrap();
    // The system record, then two lines of 9 bytes.
    assert_eq!((batch.records.len(), batch.stop), (3, Stop::Throttled));
    assert_eq!(
        (batch.receipt.metered_lines, batch.receipt.metered_bytes),
        (2, 18)
    );
    // A line bigger than the allowance goes when it is the first.
    let tiny = BatchLimits {
        line_bytes: Some(1),
        ..ALL
    };
    assert_eq!(read_batch(&plan, &tiny).unwrap().records.len(), 2);
}

#[test]
fn records_that_cannot_be_written_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    append_lines(&mut spool, 0..3);
    spool.flush();
    append_lines(&mut spool, 3..5);
    // The disk is full for the next write.
    let full = Arc::new(OpenOptions::new().write(true).open("/dev/full").unwrap());
    let file = std::mem::replace(&mut spool.segments.back_mut().unwrap().file, full);
    spool.flush();
    spool.segments.back_mut().unwrap().file = file;

    let [problem] = &spool.take_problems()[..] else {
        panic!("one problem")
    };
    assert!(problem.starts_with("cannot write to "), "{problem}");
    let [tally] = &spool.take_dropped()[..] else {
        panic!("one tally")
    };
    assert_eq!(
        (tally.reason.as_str(), tally.lines, tally.bytes),
        (REASON_WRITE_FAILED, 2, 18)
    );
    assert_eq!(
        tally.seqs,
        [SeqRange {
            boot: "b1".into(),
            first: 3,
            last: 4
        }]
    );
    assert_eq!(spool.backlog().records, 3);
    // The next records go to a new segment.
    append_lines(&mut spool, 5..6);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, [0, 1, 2, 5]);
}

#[test]
fn runner_ids_become_safe_directory_names() {
    assert_eq!(runner_dir_name("r-gpu-a100_1.x"), "r-gpu-a100_1.x");
    assert_eq!(runner_dir_name("../etc"), "%2E.%2Fetc");
    assert_eq!(runner_dir_name("a b/é"), "a%20b%2F%C3%A9");
}
