//! The recorder over a real spool in a temporary directory.

use std::collections::BTreeSet;

use super::*;
use crate::line::unparsed;
use crate::spool::runner_dir_name;

fn config(dir: &Path, cap: u64) -> Options {
    Options::new("app", dir, cap)
}

/// A stdout line, as capture hands one over (the ship layer's tests too).
pub(crate) fn line(text: &str) -> Line<'_> {
    Line::new(Stream::Stdout, text.as_bytes())
}

/// Batches of at most `max_records`, bytes aplenty.
pub(crate) fn limits(max_records: usize) -> BatchLimits {
    BatchLimits {
        max_records,
        max_bytes: 1 << 20,
        lines: None,
        line_bytes: None,
    }
}

#[test]
fn batches_respect_limits_and_acknowledged_records_leave() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(&config(dir.path(), 1 << 20)).unwrap();
    for n in 0..10 {
        recorder.record_line(line(&format!("line {n}")));
    }
    let first = recorder
        .next_batch(&limits(4), &mut unparsed)
        .unwrap()
        .unwrap();
    assert_eq!((first.body.records.len(), first.stop), (4, Stop::Full));
    recorder.release();
    // A byte limit below one record still ships that one record.
    let mut one = limits(100);
    one.max_bytes = 1;
    assert_eq!(
        recorder
            .next_batch(&one, &mut unparsed)
            .unwrap()
            .unwrap()
            .body
            .records
            .len(),
        1
    );
    recorder.release();
    recorder.acknowledge(&first);
    let rest = recorder
        .next_batch(&limits(100), &mut unparsed)
        .unwrap()
        .unwrap();
    assert_eq!(rest.body.records.first().unwrap().seq, 4);
    recorder.acknowledge(&rest);
    assert!(recorder
        .next_batch(&limits(100), &mut unparsed)
        .unwrap()
        .is_none());
    assert_eq!(recorder.pending(), (0, 0));
    assert_eq!(recorder.shutdown().records, 0);
    assert!(!dir.path().join(runner_dir_name(&rest.body.runner)).exists());
}

#[test]
fn overflow_drops_oldest_and_reports_exact_counts_when_shipping_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(&config(dir.path(), spool::MIN_SPOOL_MAX_BYTES)).unwrap();
    for n in 0..1000 {
        recorder.record_line(line(&format!("line {n:04}")));
    }
    let mut shipped = Vec::new();
    let mut reports = Vec::new();
    while let Some(batch) = recorder.next_batch(&limits(100), &mut unparsed).unwrap() {
        for record in &batch.body.records {
            if record.stream == Stream::System {
                reports.push(record.clone());
            } else {
                shipped.push(record.seq);
            }
        }
        recorder.acknowledge(&batch);
    }
    let [report] = &reports[..] else {
        panic!("one drop record: {reports:?}")
    };
    let report_fields = report.fields.to_map();
    let dropped = report_fields["dropped_lines"].as_u64().unwrap();
    assert_eq!(report.seq, 1000);
    assert_eq!(report.level, Level::Error);
    assert_eq!(report_fields["reason"], "spool_full");
    assert_eq!(dropped + shipped.len() as u64, 1000);
    assert_eq!(report_fields["dropped_bytes"], dropped * 9);
    assert_eq!(shipped, (dropped..1000).collect::<Vec<_>>());
    assert_eq!(
        report_fields["seqs"],
        json!([{ "boot": recorder.boot(), "first": 0, "last": dropped - 1 }])
    );
    assert!(
        report
            .message
            .starts_with(&format!("dropped {dropped} lines ({} bytes)", dropped * 9)),
        "{}",
        report.message
    );
}

#[test]
fn a_drop_report_dropped_in_turn_is_counted_again() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Recorder::open(&config(dir.path(), spool::MIN_SPOOL_MAX_BYTES)).unwrap();
    for n in 0..500 {
        recorder.record_line(line(&format!("line {n:04}")));
    }
    // Shipping works for one batch: the drops so far are reported (seq
    // 500), then a flood pushes the report out before it is shipped.
    let batch = recorder
        .next_batch(&limits(10), &mut unparsed)
        .unwrap()
        .unwrap();
    recorder.acknowledge(&batch);
    let mut shipped: BTreeSet<u64> = batch.body.records.iter().map(|r| r.seq).collect();
    for n in 500..1500 {
        recorder.record_line(line(&format!("line {n:04}")));
    }
    let mut reports = Vec::new();
    while let Some(batch) = recorder.next_batch(&limits(100), &mut unparsed).unwrap() {
        for record in &batch.body.records {
            if record.fields.to_map().get("event") == Some(&json!("dropped")) {
                reports.push(record.clone());
            } else {
                shipped.insert(record.seq);
            }
        }
        recorder.acknowledge(&batch);
    }
    let [report] = &reports[..] else {
        panic!("one report reached the server: {reports:?}")
    };
    assert_eq!(report.seq, 1501);
    let tally = Tally::from_fields(&report.fields.to_map()).unwrap();
    let mut dropped = BTreeSet::new();
    for range in &tally.seqs {
        assert_eq!(range.boot, recorder.boot());
        dropped.extend(range.first..=range.last);
    }
    assert!(dropped.contains(&500), "the first report was dropped");
    assert!(dropped.is_disjoint(&shipped));
    assert_eq!(
        dropped.union(&shipped).copied().collect::<Vec<_>>(),
        (0..=1500).collect::<Vec<_>>()
    );
    assert_eq!(tally.lines, dropped.len() as u64);
    // Every dropped line's 9 bytes, and the first report's message.
    let first_report_bytes = tally.bytes - (dropped.len() as u64 - 1) * 9;
    assert!(
        (100..400).contains(&first_report_bytes),
        "{first_report_bytes}"
    );
}

#[test]
fn a_restart_reports_what_it_found_and_ships_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 1 << 20);
    let first_boot = {
        let recorder = Recorder::open(&config).unwrap();
        for n in 0..3 {
            recorder.record_line(line(&format!("line {n}")));
        }
        recorder.flush();
        recorder.boot().to_owned()
        // Killed: no shutdown.
    };
    config.app = "renamed".into();
    let recorder = Recorder::open(&config).unwrap();
    recorder.recover_leftovers();
    let old = recorder
        .next_batch(&limits(100), &mut unparsed)
        .unwrap()
        .unwrap();
    assert_eq!(
        (old.body.boot.as_str(), old.body.app.as_str()),
        (first_boot.as_str(), "app")
    );
    assert_eq!(old.body.records.len(), 3);
    recorder.acknowledge(&old);
    let new = recorder
        .next_batch(&limits(100), &mut unparsed)
        .unwrap()
        .unwrap();
    assert_eq!(
        (new.body.boot.as_str(), new.body.app.as_str()),
        (recorder.boot(), "renamed")
    );
    let [found] = &new.body.records[..] else {
        panic!("one record")
    };
    let found_fields = found.fields.to_map();
    assert_eq!(found_fields["event"], "spool_recovered");
    assert_eq!(found_fields["lines"], 3);
    assert_eq!(found.seq, 0);
}

#[test]
fn with_spool_fsync_an_acknowledgement_leaves_no_fsync_owed() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = config(dir.path(), 1 << 20);
    options.spool_durability = spool::Durability::Machine;
    let recorder = Recorder::open(&options).unwrap();
    for n in 0..3 {
        recorder.record_line(line(&format!("line {n}")));
    }
    let batch = recorder
        .next_batch(&limits(100), &mut unparsed)
        .unwrap()
        .unwrap();
    recorder.acknowledge(&batch);
    // The ledger naming the acknowledgement is fsynced by the call, not left
    // for a flusher that only wakes when the worker writes again.
    assert!(recorder.lock().spool.take_unsynced().is_empty());
}
