//! The spool's tests: real files in a temporary directory.

use super::*;
use crate::line::{Line, Progress};
use jiff::Timestamp;
use tailwater_model::{Fields, FieldsJson, Level, Stream};

/// Opens the spool and adopts every leftover, as the agent does in the
/// background.
fn open_recovered(dir: &Path, header: SegmentHeader, cap: u64) -> (Spool, Recovery) {
    let (mut spool, mut recovery) = Spool::open(dir, header, cap).unwrap();
    while let Some(leftover) = spool.next_leftover() {
        spool.adopt(leftover.recover(), &mut recovery);
    }
    (spool, recovery)
}

#[test]
fn leftovers_ship_first_and_stay_in_the_ledger_until_adopted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..3);
        spool.flush();
    }
    {
        // Opened, new records written, killed before the leftover was
        // read: nothing is readable meanwhile, and nothing is lost.
        let (mut spool, recovery) = Spool::open(dir.path(), header("b2"), 1 << 20).unwrap();
        assert_eq!(recovery.records, 0, "not read at open");
        append_lines(&mut spool, 0..2);
        assert!(spool.plan_read().is_none(), "the leftover ships first");
        assert!(!spool.leftovers_recovered());
    }
    {
        // Killed again with one leftover adopted, one not: the ledger
        // still names both.
        let (mut spool, mut found) = Spool::open(dir.path(), header("b3"), 1 << 20).unwrap();
        let first = spool.next_leftover().unwrap();
        spool.adopt(first.recover(), &mut found);
        assert_eq!(found.records, 3);
        assert!(!spool.leftovers_recovered());
    }
    let (mut spool, recovery) = Spool::open(dir.path(), header("b4"), 1 << 20).unwrap();
    append_lines(&mut spool, 0..1);
    let mut found = Recovery::default();
    while let Some(leftover) = spool.next_leftover() {
        spool.adopt(leftover.recover(), &mut found);
    }
    assert!(recovery.ledger_problem.is_none());
    assert_eq!(
        (found.records, found.boots.clone()),
        (5, vec!["b1".to_owned(), "b2".to_owned()])
    );
    let shipped = drain(&mut spool);
    let boots: Vec<&str> = shipped.iter().map(|(boot, _, _)| boot.as_str()).collect();
    assert_eq!(boots, ["b1", "b1", "b1", "b2", "b2", "b4"]);
}

fn header(boot: &str) -> SegmentHeader {
    SegmentHeader {
        app: "app".into(),
        version: "v1".into(),
        runner: "r-1".into(),
        boot: boot.into(),
        source: Source::Run,
    }
}

fn record(seq: u64, message: &str) -> IngestRecord {
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

fn append_lines(spool: &mut Spool, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        let line = format!("line {seq:04}");
        spool.append(&record(seq, &line), 0, line.len() as u64);
    }
}

const ALL: BatchLimits = BatchLimits {
    max_records: usize::MAX,
    max_bytes: u64::MAX,
    lines: None,
    line_bytes: None,
};

/// Reads and acknowledges everything, as the shipper would: the records
/// in order with their boots.
fn drain(spool: &mut Spool) -> Vec<(String, u64, String)> {
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

fn segment_files(dir: &Path) -> Vec<PathBuf> {
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
    let batch = super::read_batch(&plan, &ALL, |seq, ts, line| {
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
fn as_record(seq: u64, ts: Timestamp, line: &Line<'_>) -> IngestRecord {
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
fn read_batch(plan: &ReadPlan, limits: &BatchLimits) -> io::Result<ReadBatch> {
    super::read_batch(plan, limits, as_record)
}

#[test]
fn with_machine_durability_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        spool.set_durability(Durability::Machine);
        append_lines(&mut spool, 0..10);
        spool.flush();
        assert!(spool.take_problems().is_empty());
        // Killed: no shutdown.
    }
    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 10);
    assert_eq!(drain(&mut spool).len(), 10);
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
fn a_restart_ships_what_was_not_acknowledged_with_its_boot_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..10);
        let plan = spool.plan_read().unwrap();
        let limits = BatchLimits {
            max_records: 4,
            ..ALL
        };
        let batch = read_batch(&plan, &limits).unwrap();
        assert_eq!((batch.records.len(), batch.stop), (4, Stop::Full));
        spool.acknowledge(&batch.receipt);
        // Flushed, but the agent dies without a shutdown.
        spool.flush();
    }
    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 6);
    assert_eq!(recovery.boots, ["b1"]);
    assert_eq!(recovery.line_bytes, 6 * 9);
    append_lines(&mut spool, 0..2);
    let shipped = drain(&mut spool);
    let expected: Vec<_> = (4..10)
        .map(|seq| ("b1".to_owned(), seq, format!("line {seq:04}")))
        .chain((0..2).map(|seq| ("b2".to_owned(), seq, format!("line {seq:04}"))))
        .collect();
    assert_eq!(shipped, expected);
}

#[test]
fn a_half_written_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..5);
        spool.flush();
    }
    let [segment] = &segment_files(dir.path())[..] else {
        panic!("one segment")
    };
    let len = fs::metadata(segment).unwrap().len();
    // Cut the last record in the middle of its JSON.
    let file = OpenOptions::new().write(true).open(segment).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);

    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 4);
    let record_bytes = (len - 10) - fs::metadata(segment).unwrap().len();
    assert_eq!(recovery.truncated_bytes, record_bytes);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, [0, 1, 2, 3]);
}

#[test]
fn a_record_failing_its_checksum_ends_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..5);
        spool.flush();
    }
    let [segment] = &segment_files(dir.path())[..] else {
        panic!("one segment")
    };
    // Flip a byte of the fourth record's message.
    let mut bytes = fs::read(segment).unwrap();
    let at = bytes.windows(9).position(|w| w == b"line 0003").unwrap();
    bytes[at + 8] = b'X';
    fs::write(segment, &bytes).unwrap();

    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 3);
    assert!(recovery.truncated_bytes > 0);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, [0, 1, 2]);
}

#[test]
fn a_segment_without_a_whole_header_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("000000000003.seg"), b"TWSPOOL1\x20\x00").unwrap();
    let (mut spool, recovery) = open_recovered(dir.path(), header("b1"), 1 << 20);
    assert_eq!(recovery.discarded.len(), 1);
    append_lines(&mut spool, 0..1);
    spool.flush();
    // Numbering goes on after the discarded file.
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join("000000000004.seg")]
    );
}

#[test]
fn the_ledger_survives_a_restart_and_a_torn_ledger_ships_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..8);
        let plan = spool.plan_read().unwrap();
        let batch = read_batch(
            &plan,
            &BatchLimits {
                max_records: 5,
                ..ALL
            },
        )
        .unwrap();
        spool.acknowledge(&batch.receipt);
        spool.flush();
    }
    let ledger = read_ledger(dir.path()).unwrap().unwrap();
    let [segment] = &segment_files(dir.path())[..] else {
        panic!("one segment")
    };
    assert_eq!(segment, &segment_path(dir.path(), ledger.acked_segment));
    assert!(ledger.acked_offset > 0);
    {
        let (spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
        assert_eq!(recovery.records, 3);
        assert!(recovery.ledger_problem.is_none());
        drop(spool);
    }
    // A torn ledger: nothing counts as acknowledged (the server
    // deduplicates what it has), and the problem is reported.
    let path = dir.path().join(LEDGER_FILE);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let (mut spool, recovery) = open_recovered(dir.path(), header("b3"), 1 << 20);
    assert!(recovery.ledger_problem.is_some());
    assert_eq!(recovery.records, 8);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, (0..8).collect::<Vec<_>>());
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
fn a_second_agent_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    let Err(error) = Spool::open(dir.path(), header("b2"), 1 << 20) else {
        panic!("opened twice")
    };
    assert!(error.in_use);
    assert!(
        error.message.contains("in use by another `tailwater run`")
            && error
                .message
                .contains(&format!("pid {}", std::process::id())),
        "{error}"
    );
}

#[test]
fn runner_ids_become_safe_directory_names() {
    assert_eq!(runner_dir_name("r-gpu-a100_1.x"), "r-gpu-a100_1.x");
    assert_eq!(runner_dir_name("../etc"), "%2E.%2Fetc");
    assert_eq!(runner_dir_name("a b/é"), "a%20b%2F%C3%A9");
}

#[test]
fn machine_durability_owes_its_fsyncs_to_whoever_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    append_lines(&mut spool, 0..3);
    spool.flush();
    assert!(spool.take_unsynced().is_empty(), "nothing owed by default");
    spool.set_durability(Durability::Machine);
    let _ = spool.take_unsynced();
    append_lines(&mut spool, 3..6);
    spool.flush();
    let owed = spool.take_unsynced();
    assert!(!owed.is_empty(), "the segment flushed to is owed an fsync");
    owed.sync(dir.path()).unwrap();
    assert!(spool.take_unsynced().is_empty(), "owed once");
    assert_eq!(drain(&mut spool).len(), 6);
}
