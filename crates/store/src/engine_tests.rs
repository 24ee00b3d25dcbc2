//! The engine's moving parts: group commit and the visibility watermark,
//! background flushes, the out-of-order window, statistics and the
//! request index. Merges are in `merge_tests.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::IngestRecord;
use tailwater_model::{Fields, FieldsJson, Filter, Stream};

use super::test_support::{all, batch_of, record, run, start};
use super::*;

#[test]
fn concurrent_appends_share_fsyncs_and_tail_never_skips_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            dir.path(),
            StoreOptions {
                // Small tables: freezes and background flushes happen while
                // the writers write and the reader reads.
                memtable_max_bytes: 64 * 1024,
                ..StoreOptions::default()
            },
        )
        .unwrap(),
    );
    const WRITERS: u64 = 4;
    const BATCHES: u64 = 40;
    const PER_BATCH: u64 = 25;
    let total = WRITERS * BATCHES * PER_BATCH;

    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut after = 0;
            while (seen.len() as u64) < total {
                let records = store.read_after("t", &Filter::default(), after, 500);
                for record in records {
                    seen.push(record.position);
                    after = record.position;
                }
            }
            seen
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = store.clone();
            std::thread::spawn(move || {
                for batch in 0..BATCHES {
                    let runner = format!("r{writer}");
                    let response = store
                        .append("t", run(&runner, batch * PER_BATCH, PER_BATCH, start()))
                        .unwrap();
                    assert_eq!(response.accepted as u64, PER_BATCH);
                    // Acknowledged means readable.
                    assert!(store.last_id() >= PER_BATCH);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let seen = reader.join().unwrap();
    // The live reader saw every id, once, in order: the watermark never let
    // a later id through before an earlier one.
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    assert_eq!(all(&store, "t").len() as u64, total);
    assert!(store.counters().flushes > 0, "the small memtable flushed");

    drop(Arc::into_inner(store).unwrap());
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let records = all(&store, "t");
    let ids: HashSet<u64> = records.iter().map(|r| r.position).collect();
    assert_eq!((records.len() as u64, ids.len() as u64), (total, total));
}

#[test]
fn every_durability_keeps_what_it_acknowledged_across_a_reopen() {
    for durability in [
        Durability::SyncEachBatch,
        Durability::Interval(Duration::from_millis(5)),
        Durability::Buffered,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            durability,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options.clone()).unwrap();
        store.append("t", run("r1", 0, 100, start())).unwrap();
        assert_eq!(
            all(&store, "t").len(),
            100,
            "{durability:?}: readable at once"
        );
        drop(store);
        let store = Store::open(dir.path(), options).unwrap();
        assert_eq!(all(&store, "t").len(), 100, "{durability:?}");
    }
}

#[test]
fn out_of_order_records_within_the_window_are_sorted_and_older_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        out_of_order_window: Duration::from_secs(60),
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let at = |seconds: u64| start() + Duration::from_secs(seconds);
    let line = |seq, seconds, text: &str| record(seq, at(seconds), text.into());
    let first = store
        .append(
            "t",
            batch_of("a", "r1", vec![line(0, 100, "newest so far")]),
        )
        .unwrap();
    assert_eq!((first.accepted, first.refused), (1, 0));
    let late = store
        .append(
            "t",
            batch_of(
                "a",
                "r1",
                vec![
                    line(1, 50, "late but within the window"),
                    line(2, 10, "too late"),
                    line(3, 101, "on time"),
                ],
            ),
        )
        .unwrap();
    assert_eq!((late.accepted, late.duplicates, late.refused), (2, 0, 1));
    let reason = late.refused_reason.unwrap();
    assert!(
        reason.contains("1 records") && reason.contains("1m") && reason.contains("r1"),
        "{reason}"
    );
    // Another runner has a window of its own.
    let other = store
        .append(
            "t",
            batch_of("a", "r2", vec![line(0, 10, "r2 starts early")]),
        )
        .unwrap();
    assert_eq!(other.accepted, 1);
    assert_eq!(store.counters().refused_out_of_order, 1);

    let messages =
        |store: &Store| -> Vec<String> { all(store, "t").into_iter().map(|r| r.message).collect() };
    let expected = [
        "r2 starts early",
        "late but within the window",
        "newest so far",
        "on time",
    ];
    assert_eq!(messages(&store), expected);
    store.flush().unwrap();
    assert_eq!(messages(&store), expected);
    drop(store);
    // The window holds across a restart: the newest time comes from parts.
    let store = Store::open(dir.path(), options).unwrap();
    let again = store
        .append(
            "t",
            batch_of("a", "r1", vec![line(4, 20, "still too late")]),
        )
        .unwrap();
    assert_eq!(again.refused, 1);
    assert_eq!(messages(&store), expected);
}

#[test]
fn times_are_kept_to_the_nanosecond() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let ts: Timestamp = "2026-11-20T10:00:00.123456789Z".parse().unwrap();
    store
        .append("t", batch_of("a", "r", vec![record(0, ts, "x".into())]))
        .unwrap();
    let stored = all(&store, "t")[0].ts;
    assert_eq!(stored, ts);
}

#[test]
fn statistics_per_tenant_and_app() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    store.append("acme", run("r1", 0, 10, start())).unwrap();
    let mut other_app = run("r2", 0, 5, start());
    other_app.app = "whisper".into();
    store.append("acme", other_app).unwrap();
    store.append("globex", run("r1", 0, 3, start())).unwrap();
    let raw = |count: u64, runner: &str| -> u64 {
        (0..count)
            .map(|seq| format!("line {seq} of {runner}").len() as u64)
            .sum()
    };
    let stats = store.stats();
    let summary: Vec<(&str, &str, u64, u64, u64)> = stats
        .iter()
        .map(|s| {
            (
                s.tenant.as_str(),
                s.app.as_str(),
                s.records,
                s.raw_bytes,
                s.stored_bytes,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("acme", "sdxl", 10, raw(10, "r1"), 0),
            ("acme", "whisper", 5, raw(5, "r2"), 0),
            ("globex", "sdxl", 3, raw(3, "r1"), 0),
        ],
        "in the memtable: counted, nothing on disk yet"
    );
    store.flush().unwrap();
    for stats in store.stats() {
        assert!(stats.stored_bytes > 0 && stats.parts == 1, "{stats:?}");
    }
    assert_eq!(store.stats().iter().map(|s| s.records).sum::<u64>(), 18);
}

#[test]
fn a_part_indexes_requests_with_their_runner_times_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut records: Vec<IngestRecord> = (0..5)
        .map(|seq| {
            let mut r = record(
                seq,
                start() + Duration::from_secs(seq),
                format!("work {seq}"),
            );
            r.request_id = Some("req-1".into());
            r
        })
        .collect();
    let mut end = record(5, start() + Duration::from_secs(9), "request end".into());
    end.stream = Stream::System;
    end.request_id = Some("req-1".into());
    end.fields = FieldsJson::from_map(&Fields::from_iter([("status".to_owned(), 503.into())]));
    records.push(end);
    let store = Store::open(
        dir.path(),
        StoreOptions {
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store.append("t", batch_of("a", "r7", records)).unwrap();
    let expected = RequestSummary {
        id: "req-1".into(),
        app: "a".into(),
        runner: "r7".into(),
        records: 6,
        first_ts: timestamp_ns(start()),
        last_ts: timestamp_ns(start() + Duration::from_secs(9)),
        status: Some(503),
    };
    assert_eq!(
        store.request("t", "req-1"),
        Some(expected.clone()),
        "from the memtable"
    );
    assert_eq!(
        store.request("other", "req-1"),
        None,
        "tenants see their own"
    );
    store.flush().unwrap();
    assert_eq!(
        store.request("t", "req-1"),
        Some(expected),
        "from the footers"
    );
    assert_eq!(store.request("t", "req-2"), None);
    let parts = load_parts(dir.path()).unwrap();
    let footer = &parts[0].footer;
    let meta = &footer.requests[0];
    assert_eq!(meta.key, crate::part::request_key("req-1"));
    assert_eq!(footer.streams[meta.stream as usize].labels.runner, "r7");
    assert_eq!((meta.records, meta.status), (6, Some(503)));
    assert_eq!(meta.duration, Duration::from_secs(9).as_nanos() as u64);
}

/// A request id is the sender's to choose: two apps may use the same one,
/// and each app's request is summarized apart, before and after a flush.
#[test]
fn each_app_holding_a_request_id_has_a_summary_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let of_request = |seqs: std::ops::Range<u64>, at: Timestamp| {
        seqs.map(|seq| {
            let mut r = record(seq, at, format!("line {seq}"));
            r.request_id = Some("req-1".into());
            r
        })
        .collect::<Vec<_>>()
    };
    store
        .append("t", batch_of("pub", "p1", of_request(0..3, start())))
        .unwrap();
    // Dated an hour earlier: the merged summary takes its app and runner.
    let earlier = start() - Duration::from_secs(3600);
    store
        .append("t", batch_of("other", "o1", of_request(0..2, earlier)))
        .unwrap();
    for when in ["from the memtable", "from the part"] {
        assert_eq!(store.request_apps("t", "req-1"), ["other", "pub"], "{when}");
        assert_eq!(
            store.request_apps("u", "req-1"),
            Vec::<String>::new(),
            "{when}"
        );
        let pub_request = store.request_in_app("t", "pub", "req-1").unwrap();
        assert_eq!(
            (pub_request.app.as_str(), pub_request.runner.as_str()),
            ("pub", "p1")
        );
        assert_eq!(
            (pub_request.records, pub_request.first_ts),
            (3, timestamp_ns(start())),
            "{when}"
        );
        let other = store.request_in_app("t", "other", "req-1").unwrap();
        assert_eq!((other.runner.as_str(), other.records), ("o1", 2), "{when}");
        assert_eq!(store.request_in_app("t", "none", "req-1"), None, "{when}");
        assert_eq!(store.request("t", "req-1").unwrap().records, 5, "{when}");
        store.flush().unwrap();
    }
}
