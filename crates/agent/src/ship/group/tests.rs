//! The grouping of lines as the shipper reads them back: directly, and
//! through a real recorder and spool (waiting, and a restart).

use std::path::Path;

use tailwater_model::Level;

use super::*;
use crate::recorder::tests::limits;
use crate::recorder::{Options, Recorder};
use crate::spool::Stop;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
}

fn err(text: &str) -> Line<'_> {
    Line::new(Stream::Stderr, text.as_bytes())
}

fn out(text: &str) -> Line<'_> {
    Line::new(Stream::Stdout, text.as_bytes())
}

/// Feeds `lines` (stamp in ms, line) and finishes with nothing more to come.
fn assemble(
    grouping: Option<Grouping>,
    lines: &[(i64, Line<'_>)],
) -> (Vec<IngestRecord>, Assembler) {
    let mut assembler = Assembler::new(grouping);
    let mut records = Vec::new();
    for (seq, (ms, line)) in lines.iter().enumerate() {
        assembler.line(seq as u64, at(*ms), line, &mut records);
    }
    assert_eq!(assembler.finish(None, &mut records), None);
    assert!(!assembler.is_open());
    (records, assembler)
}

const TRACEBACK: [&str; 4] = [
    "Traceback (most recent call last):",
    "  File \"w.py\", line 2, in <module>",
    "    1 / 0",
    "ZeroDivisionError: division by zero",
];

#[test]
fn a_traceback_is_one_error_record_and_the_other_stream_stays_apart() {
    let lines = [
        (0, out("about to divide")),
        (1, err(TRACEBACK[0])),
        (1, err(TRACEBACK[1])),
        // The other stream between its lines: neither joins nor cuts it.
        (2, out("  indented stdout")),
        (2, err(TRACEBACK[2])),
        (3, err(TRACEBACK[3])),
        (4, err("exiting")),
    ];
    let (records, _) = assemble(Some(Grouping::default()), &lines);
    let got: Vec<_> = records
        .iter()
        .map(|r| (r.seq, r.stream, r.level, r.message.as_str()))
        .collect();
    let whole = TRACEBACK.join("\n");
    assert_eq!(
        got,
        [
            (0, Stream::Stdout, Level::Info, "about to divide"),
            (3, Stream::Stdout, Level::Info, "  indented stdout"),
            (1, Stream::Stderr, Level::Error, whole.as_str()),
            (6, Stream::Stderr, Level::Info, "exiting"),
        ]
    );
    assert_eq!(records[2].ts, at(1), "the first line's stamp");
    assert_eq!(records[2].fields.to_map()["multiline"], "python");
}

#[test]
fn off_every_line_is_its_own_record() {
    let lines: Vec<_> = TRACEBACK.iter().map(|t| (0, err(t))).collect();
    let (records, _) = assemble(None, &lines);
    assert_eq!(records.len(), 4);
    assert!(records.iter().all(|r| !r.message.contains('\n')));
}

#[test]
fn never_across_requests_nor_past_the_wait() {
    let in_request = |text| Line {
        in_request: Some("req-1"),
        ..err(text)
    };
    let lines = [
        (0, err(TRACEBACK[0])),
        (1, in_request(TRACEBACK[1])),
        (2, in_request(TRACEBACK[2])),
    ];
    let (records, _) = assemble(Some(Grouping::default()), &lines);
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(records[0].message, TRACEBACK[0], "a start alone is a line");
    assert_eq!(records[1].request_id.as_deref(), Some("req-1"));
    let wait = Grouping::default().wait.as_millis() as i64;
    let patience = wait * UNFINISHED_PATIENCE as i64;
    let lines = [
        (0, err(TRACEBACK[0])),
        // A traceback before its exception line surely goes on: waited
        // for longer.
        (patience - 1, err(TRACEBACK[1])),
        (2 * patience, err(TRACEBACK[2])),
    ];
    let (records, _) = assemble(Some(Grouping::default()), &lines);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].message, TRACEBACK[..2].join("\n"));
    // After its exception line, the plain wait.
    let lines = [
        (0, err(TRACEBACK[0])),
        (1, err(TRACEBACK[3])),
        (1 + wait, err("")),
    ];
    let (records, _) = assemble(Some(Grouping::default()), &lines);
    assert_eq!(records.len(), 2);
}

#[test]
fn a_huge_traceback_is_cut_at_the_cap_losing_nothing() {
    let grouping = Grouping {
        max_bytes: 1000,
        ..Grouping::default()
    };
    let frames: Vec<String> = (0..500)
        .map(|n| format!("  File \"deep.py\", line {n}, in f"))
        .collect();
    let mut lines = vec![(0, err(TRACEBACK[0]))];
    lines.extend(frames.iter().map(|f| (0, err(f))));
    let (records, assembler) = assemble(Some(grouping), &lines);
    assert!(records.len() > 10);
    assert_eq!(assembler.cut.len(), records.len() - 1);
    for record in &records[..records.len() - 1] {
        assert!(record.message.len() <= 1000);
        assert_eq!(record.fields.to_map()["continued"], true);
        assert_eq!(record.level, Level::Error);
    }
    let joined: Vec<&str> = records.iter().map(|r| r.message.as_str()).collect();
    let mut expected = vec![TRACEBACK[0].to_owned()];
    expected.extend(frames);
    assert_eq!(joined.join("\n"), expected.join("\n"));
}

#[test]
fn an_open_group_waits_for_its_wait_then_is_finished() {
    let mut assembler = Assembler::new(Some(Grouping::default()));
    let mut records = Vec::new();
    assembler.line(0, at(0), &err("panic: boom"), &mut records);
    assembler.line(1, at(1), &err(""), &mut records);
    assert!(assembler.joins(at(2), &err("goroutine 1 [running]:")));
    assert!(!assembler.joins(at(2), &out("goroutine 1 [running]:")));
    assert!(!assembler.joins(at(2), &err("exit status 2")));
    assert_eq!(
        assembler.finish(Some(at(51)), &mut records),
        Some(Duration::from_millis(150))
    );
    assert!(records.is_empty());
    // A clock that went back does not hold the group.
    assert_eq!(assembler.finish(Some(at(-5000)), &mut records), None);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].message, "panic: boom");
    assert_eq!(records[0].level, Level::Error);
    // A Rust panic's closing note ends it: nothing to wait for.
    assembler.line(
        2,
        at(10),
        &err("thread 'main' panicked at a.rs:1:1:"),
        &mut records,
    );
    assembler.line(3, at(11), &err("boom"), &mut records);
    assert!(
        assembler.finish(Some(at(500)), &mut records).is_some(),
        "a message goes on"
    );
    assembler.line(
        4,
        at(12),
        &err("note: run with `RUST_BACKTRACE=1`"),
        &mut records,
    );
    assert_eq!(assembler.finish(Some(at(12)), &mut records), None);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].message.lines().count(), 3);
}

#[test]
fn hostile_lines_keep_every_byte() {
    let grouping = Grouping {
        max_bytes: 64,
        ..Grouping::default()
    };
    let mut lines = Vec::new();
    let junk: Vec<Vec<u8>> = (0..300u32)
        .map(|n| match n % 5 {
            0 => b"Traceback (most recent call last):".to_vec(),
            1 => vec![b' '; (n % 97) as usize],
            2 => b"\t\xff\xfe at x".to_vec(),
            3 => b"panic: \x00".to_vec(),
            _ => format!("  {n}").into_bytes(),
        })
        .collect();
    for (n, bytes) in junk.iter().enumerate() {
        let stream = if n % 3 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        lines.push((n as i64, Line::new(stream, bytes)));
    }
    let (records, _) = assemble(Some(grouping), &lines);
    // Every line's text is in some record (trailing blank ones trimmed).
    let all: String = records.iter().map(|r| r.message.as_str()).collect();
    for bytes in &junk {
        let text = String::from_utf8_lossy(bytes);
        assert!(all.contains(text.trim()), "{text:?} lost");
    }
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), records.len(), "a sequence number once");
}

fn open(dir: &Path) -> Recorder {
    Recorder::open(&Options::new("app", dir, 1 << 20)).unwrap()
}

/// A batch as the shipper reads it, with a fresh assembler.
fn read(recorder: &Recorder) -> crate::recorder::Batch {
    let mut assembler = Assembler::new(Some(Grouping::default()));
    recorder
        .next_batch(&limits(100), &mut assembler)
        .unwrap()
        .unwrap()
}

#[test]
fn the_spool_waits_for_an_open_group_and_a_restart_groups_it_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let boot = {
        let recorder = open(dir.path());
        recorder.record_line(out("before"));
        recorder.record_line(err(TRACEBACK[0]));
        recorder.record_line(err(TRACEBACK[1]));
        let batch = read(&recorder);
        // The line before ships; the traceback waits before its first line.
        assert!(
            matches!(batch.stop, Stop::Pending(wait) if wait <= DEFAULT_MULTILINE_WAIT * UNFINISHED_PATIENCE)
        );
        let [before] = &batch.body.records[..] else {
            panic!("one record: {:#?}", batch.body.records)
        };
        assert_eq!(before.message, "before");
        recorder.acknowledge(&batch);
        let waiting = read(&recorder);
        assert!(waiting.body.records.is_empty());
        assert!(matches!(waiting.stop, Stop::Pending(_)));
        recorder.release();
        recorder.record_line(err(TRACEBACK[2]));
        recorder.record_line(err(TRACEBACK[3]));
        recorder.flush();
        recorder.boot().to_owned()
        // Killed with the traceback unshipped.
    };
    let recorder = open(dir.path());
    recorder.recover_leftovers();
    let old = read(&recorder);
    assert_eq!(old.body.boot, boot);
    assert_eq!(old.stop, Stop::End, "a finished segment waits for nothing");
    let [traceback] = &old.body.records[..] else {
        panic!("one record: {:#?}", old.body.records)
    };
    assert_eq!(
        (traceback.seq, traceback.level, traceback.message.as_str()),
        (1, Level::Error, TRACEBACK.join("\n").as_str())
    );
}

#[test]
fn a_closed_recorder_ships_an_open_group_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = open(dir.path());
    recorder.record_line(err("panic: boom"));
    recorder.record_line(err("goroutine 1 [running]:"));
    recorder.close();
    let batch = read(&recorder);
    assert_eq!(batch.stop, Stop::End);
    assert_eq!(batch.body.records.len(), 1);
    assert_eq!(
        batch.body.records[0].message,
        "panic: boom\ngoroutine 1 [running]:"
    );
}
