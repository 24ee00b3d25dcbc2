//! What an append refuses, retimes and counts: streams kept apart by app,
//! the clock-skew rule, retention at ingest, and counters that count only
//! what was stored.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tailwater_model::wire::{
    IngestBatch, IngestRecord, ORIGINAL_TS_FIELD, REFUSED_OLDER_THAN_RETENTION,
    REFUSED_OUT_OF_ORDER, RETIMED_CLOCK_SKEW, RETIMED_OUT_OF_RANGE,
};
use tailwater_model::Filter;

use super::test_support::{batch_of, record};
use super::*;

/// Record `seq` at `ts`, message `"line {seq}"`.
fn line(seq: u64, ts: Timestamp) -> IngestRecord {
    record(seq, ts, format!("line {seq}"))
}

fn batch(app: &str, seqs: std::ops::Range<u64>, ts: Timestamp) -> IngestBatch {
    batch_of(app, "r1", seqs.map(|seq| line(seq, ts)).collect())
}

fn ago(hours: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_hours(hours)
}

fn records_of(store: &Store, app: &str) -> Vec<LogRecord> {
    let filter = Filter {
        app: Some(tailwater_model::Matcher::Eq(app.into())),
        ..Filter::default()
    };
    store.read_after("t", &filter, 0, 100_000)
}

fn options() -> StoreOptions {
    StoreOptions {
        background: false,
        ..StoreOptions::default()
    }
}

#[test]
fn one_app_never_marks_or_moves_another_apps_runner_and_boot() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(
        store
            .append("t", batch("pub", 0..10, ago(3)))
            .unwrap()
            .accepted,
        10
    );
    // Another app's token sends pub's runner and boot: the sequence
    // numbers pub uses next, and a time two hours (past the window) after
    // pub's records.
    let other = store.append("t", batch("other", 10..20, ago(1))).unwrap();
    assert_eq!(other.accepted, 10);

    let next = store.append("t", batch("pub", 10..20, ago(3))).unwrap();
    assert_eq!(
        (next.accepted, next.duplicates, next.refused),
        (10, 0, 0),
        "{next:?}"
    );
    assert_eq!(records_of(&store, "pub").len(), 20);

    // The same holds once the dedup state is rebuilt from parts.
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), options()).unwrap();
    let again = store.append("t", batch("pub", 0..25, ago(3))).unwrap();
    assert_eq!((again.accepted, again.duplicates), (5, 20), "{again:?}");
    let theirs = store.append("t", batch("other", 10..20, ago(1))).unwrap();
    assert_eq!(theirs.duplicates, 10);
    assert_eq!(records_of(&store, "pub").len(), 25);
    assert_eq!(records_of(&store, "other").len(), 10);
}

#[test]
fn a_record_dated_far_ahead_is_stored_at_the_stores_time_and_refuses_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let ahead = Timestamp::now() + SignedDuration::from_hours(24 * 365);
    let before = Timestamp::now();
    let first = store.append("t", batch("a", 0..1, ahead)).unwrap();
    assert_eq!(first.accepted, 1);
    assert_eq!(first.retimed_by_reason[RETIMED_CLOCK_SKEW], 1);

    // The runner's clock is put right: its next lines are all stored.
    let later = store.append("t", batch("a", 1..11, ago(0))).unwrap();
    assert_eq!((later.accepted, later.refused), (10, 0), "{later:?}");

    let stored = records_of(&store, "a");
    assert_eq!(stored.len(), 11);
    let retimed = &stored[0];
    assert!(
        retimed.ts >= before - SignedDuration::from_millis(1) && retimed.ts <= Timestamp::now()
    );
    let original: Timestamp = retimed.fields[ORIGINAL_TS_FIELD]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(original, ahead);
    // Within the allowed skew, a time is kept as it came.
    let near = Timestamp::now() + SignedDuration::from_secs(60);
    let kept = store.append("t", batch("a", 11..12, near)).unwrap();
    assert!(kept.retimed_by_reason.is_empty());
    assert_eq!(records_of(&store, "a")[11].ts, near, "to the nanosecond");
    assert_eq!(store.counters().retimed_clock_skew, 1);
    assert_eq!(store.counters().appended, 12);
}

#[test]
fn times_the_store_cannot_hold_are_retimed_or_refused_never_clamped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let far_future: Timestamp = "2400-01-01T00:00:00Z".parse().unwrap();
    let far_past: Timestamp = "1600-01-01T00:00:00Z".parse().unwrap();
    let mut both = batch("a", 0..2, far_future);
    both.records[1].ts = far_past;
    let answer = store.append("t", both).unwrap();
    assert_eq!(answer.accepted, 2);
    assert_eq!(answer.retimed_by_reason[RETIMED_OUT_OF_RANGE], 2);
    let stored = records_of(&store, "a");
    for (record, original) in stored.iter().zip([far_future, far_past]) {
        assert!(record.ts <= Timestamp::now() && record.ts > ago(1));
        assert_eq!(record.fields[ORIGINAL_TS_FIELD], original.to_string());
    }
    // With a retention, a time before any the store holds is past it.
    let old = store
        .append_within_retention("t", batch("a", 2..3, far_past), Duration::from_secs(86400))
        .unwrap();
    assert_eq!(old.refused_by_reason[REFUSED_OLDER_THAN_RETENTION], 1);
    assert_eq!(store.counters().retimed_out_of_range, 2);
}

#[test]
fn records_past_their_retention_are_refused_at_ingest_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let week = Duration::from_secs(7 * 86400);
    let mut mixed = batch("a", 0..3, ago(24 * 9));
    mixed.records[1].ts = ago(24 * 5);
    mixed.records[2].ts = ago(0);
    let answer = store.append_within_retention("t", mixed, week).unwrap();
    assert_eq!((answer.accepted, answer.refused), (2, 1), "{answer:?}");
    assert_eq!(answer.refused_by_reason[REFUSED_OLDER_THAN_RETENTION], 1);
    let reason = answer.refused_reason.unwrap();
    assert!(reason.contains("retention of 7d"), "{reason}");
    assert_eq!(store.counters().refused_older_than_retention, 1);
    // What ingest took, retention keeps.
    store.flush().unwrap();
    let mut retention = Retention {
        max_age: week,
        ..Retention::default()
    };
    retention.app_max_age.clear();
    assert!(store
        .apply_retention(&retention, Timestamp::now())
        .unwrap()
        .is_empty());
    assert_eq!(records_of(&store, "a").len(), 2);
}

#[test]
fn the_out_of_order_refusal_is_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store.append("t", batch("a", 0..1, ago(0))).unwrap();
    let late = store.append("t", batch("a", 1..3, ago(5))).unwrap();
    assert_eq!(late.refused_by_reason[REFUSED_OUT_OF_ORDER], 2);
    assert_eq!(late.refused, 2);
}

#[test]
fn a_failed_append_is_not_counted_as_appended() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store.append("t", batch("a", 0..3, ago(0))).unwrap();
    let segment = wal_segments(dir.path()).unwrap()[0].1.clone();
    let working = std::mem::replace(
        &mut store.inner.lock_writer().wal,
        wal::failing_writer(&segment),
    );
    store
        .append("t", batch("a", 3..6, ago(0)))
        .expect_err("the log cannot be written");
    let counters = store.counters();
    assert_eq!((counters.appended, counters.duplicates), (3, 0));
    // Nothing of the failed batch is taken for stored: sent again, it is.
    store.inner.lock_writer().wal = working;
    let again = store.append("t", batch("a", 3..6, ago(0))).unwrap();
    assert_eq!(again.accepted, 3);
    assert_eq!(store.counters().appended, 6);
}

/// Numbers `from..to` of every other number: `2 × from`, `2 × from + 2`, ….
fn sparse(app: &str, numbers: std::ops::Range<u64>, ts: Timestamp) -> IngestBatch {
    let mut batch = batch(app, 0..0, ts);
    batch.records = numbers.map(|n| line(n * 2, ts)).collect();
    batch
}

#[test]
fn dedup_memory_of_sparse_sequence_numbers_is_freed_once_they_are_in_parts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let ts = ago(1);
    let records = 20_000;
    for start in (0..records).step_by(500) {
        let answer = store
            .append("t", sparse("a", start..start + 500, ts))
            .unwrap();
        assert_eq!(answer.accepted, 500);
    }
    let held = |store: &Store| store.inner.lock_writer().dedup.ranges_held();
    // In the memtable: one range a record, each about 40 bytes in a B-tree.
    assert_eq!(held(&store), records as usize);
    store.flush().unwrap();
    assert!(
        held(&store) <= dedup::COMPACT_MIN_RANGES,
        "{}",
        held(&store)
    );

    // Still exactly once: the numbers sent are duplicates (found in the
    // parts), the numbers between them new.
    let again = store.append("t", sparse("a", 0..1000, ts)).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1000));
    let mut gaps = sparse("a", 0..1000, ts);
    for record in &mut gaps.records {
        record.seq += 1;
    }
    assert_eq!(store.append("t", gaps.clone()).unwrap().accepted, 1000);
    // Those are in the memtable, below the watermark: answered from memory.
    assert_eq!(store.append("t", gaps).unwrap().duplicates, 1000);
    assert_eq!(records_of(&store, "a").len(), records as usize + 1000);

    // After a reopen, what the footers fill in is compacted too.
    store.flush().unwrap();
    drop(store);
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(
        held(&store) <= dedup::COMPACT_MIN_RANGES,
        "{}",
        held(&store)
    );
    let again = store.append("t", sparse("a", 0..records + 10, ts)).unwrap();
    assert_eq!((again.accepted, again.duplicates), (10, records as usize));
}

#[test]
fn the_highest_sequence_number_of_a_stream_survives_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.highest_seq("t", "pub", "r1", "b"), None);
    store.append("t", batch("pub", 0..10, ago(1))).unwrap();
    store.append("t", batch("pub", 20..25, ago(1))).unwrap();
    assert_eq!(store.highest_seq("t", "pub", "r1", "b"), Some(24));
    // Another app, runner, boot or tenant has none of it.
    assert_eq!(store.highest_seq("t", "other", "r1", "b"), None);
    assert_eq!(store.highest_seq("t", "pub", "r2", "b"), None);
    assert_eq!(store.highest_seq("t", "pub", "r1", "b2"), None);
    assert_eq!(store.highest_seq("u", "pub", "r1", "b"), None);
    store.flush().unwrap();
    assert_eq!(store.highest_seq("t", "pub", "r1", "b"), Some(24));
    drop(store);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.highest_seq("t", "pub", "r1", "b"), Some(24));
}

#[test]
fn a_repair_stores_records_older_than_the_window_once_and_duplicates_never() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    // What this node read from the stream: lines 0..10 three hours ago, then
    // 20..30 now (the stream dropped 10..20 before it read them).
    store.append("t", batch("api", 0..10, ago(3))).unwrap();
    store.append("t", batch("api", 20..30, ago(0))).unwrap();
    // The missing lines, sent as ingest would: past the out-of-order window.
    let refused = store.append("t", batch("api", 10..20, ago(3))).unwrap();
    assert_eq!(refused.accepted, 0);
    assert_eq!(refused.refused_by_reason[REFUSED_OUT_OF_ORDER], 10);

    // A repair from a peer sends everything it holds of the stream, the
    // lines this store has among them: the missing ones are stored, the
    // others recognised, in the memtable and once flushed to a part.
    let mut peer: Vec<IngestRecord> = (0..10).map(|seq| line(seq, ago(3))).collect();
    peer.extend((10..20).map(|seq| line(seq, ago(3))));
    let repaired = store
        .append_repaired("t", batch_of("api", "r1", peer.clone()))
        .unwrap();
    assert_eq!((repaired.accepted, repaired.duplicates), (10, 10));
    assert_eq!(repaired.refused, 0);
    store.flush().unwrap();
    peer.extend((20..30).map(|seq| line(seq, ago(0))));
    let again = store
        .append_repaired("t", batch_of("api", "r1", peer))
        .unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 30));

    let records = records_of(&store, "api");
    let mut seqs: Vec<u64> = records.iter().map(|record| record.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "each line once");

    // After a restart too (deduplication read back from disk).
    drop(store);
    let store = Store::open(dir.path(), options()).unwrap();
    let after = store
        .append_repaired("t", batch("api", 0..30, ago(3)))
        .unwrap();
    assert_eq!((after.accepted, after.duplicates), (0, 30));
    assert_eq!(records_of(&store, "api").len(), 30);
}
