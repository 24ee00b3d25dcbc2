//! The engine's moving parts: group commit and the visibility watermark,
//! background flushes, merges, the out-of-order window, statistics and the
//! request index.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Fields, FieldsJson, Filter, Query, Stream};

use super::test_support::{batch_of, record};
use super::*;

/// `count` records from `first`, one millisecond apart from `start`.
fn run(runner: &str, first: u64, count: u64, start: Timestamp) -> IngestBatch {
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

fn all(store: &Store, tenant: &str) -> Vec<LogRecord> {
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

fn start() -> Timestamp {
    "2026-11-20T10:00:00Z".parse().unwrap()
}

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
fn small_parts_merge_into_one_without_losing_or_repeating_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 4,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for flush in 0..6u64 {
        for runner in ["r1", "r2"] {
            store
                .append("t", run(runner, flush * 50, 50, start()))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let before = all(&store, "t");
    assert_eq!(before.len(), 600);
    assert_eq!(store.stats()[0].parts, 6);
    store.merge().unwrap();
    assert_eq!(store.stats()[0].parts, 1, "six small parts became one");
    assert_eq!(store.counters().merges, 1);
    assert_eq!(
        all(&store, "t"),
        before,
        "the same records, in the same order"
    );
    let runner_two = store
        .query(
            "t",
            &Query {
                filter: Filter {
                    runner: Some("r2".into()),
                    ..Filter::default()
                },
                limit: 1000,
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(runner_two.records.len(), 300);
    drop(store);

    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t"), before);
    let again = store.append("t", run("r1", 0, 300, start())).unwrap();
    assert_eq!(again.duplicates, 300, "merged parts keep ingest idempotent");
}

#[test]
fn a_merge_copies_large_blocks_and_rewrites_small_ones_together() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 3,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let large = crate::DEFAULT_MERGE_COPY_MIN_RECORDS as u64;
    for flush in 0..3u64 {
        // r1: a large block a flush, in time order; request "span" runs
        // from the end of the first flush into the second, where it ends.
        let mut big = run("r1", flush * large, large, start());
        if flush < 2 {
            let records = &mut big.records;
            let at = if flush == 0 { records.len() - 3 } else { 0 };
            for record in &mut records[at..at + 3] {
                record.request_id = Some("span".into());
            }
            if flush == 1 {
                records[2].stream = Stream::System;
                records[2].fields =
                    FieldsJson::from_map(&Fields::from_iter([("status".to_owned(), 200.into())]));
            }
        }
        store.append("t", big).unwrap();
        // r2: small blocks, to be rewritten together into one.
        store
            .append("t", run("r2", flush * 10, 10, start()))
            .unwrap();
        // r3: three flushes whose records interleave in time (every third
        // millisecond each): rewritten in time order.
        let interleaved = (0..20u64)
            .map(|n| {
                let seq = n * 3 + flush;
                record(
                    seq,
                    start() + Duration::from_millis(seq),
                    format!("r3 {seq}"),
                )
            })
            .collect();
        store
            .append("t", batch_of("sdxl", "r3", interleaved))
            .unwrap();
        // r4: two flushes of large blocks whose times interleave: copied
        // as they are, and still read back in time order.
        if flush < 2 {
            let interleaved = (0..large)
                .map(|n| {
                    let seq = n * 2 + flush;
                    record(
                        seq,
                        start() + Duration::from_millis(seq),
                        format!("r4 {seq}"),
                    )
                })
                .collect();
            store
                .append("t", batch_of("sdxl", "r4", interleaved))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let before = all(&store, "t");
    let request = store.request("t", "span").unwrap();
    assert_eq!((request.records, request.status), (6, Some(200)));
    let stats = store.stats();
    store.merge().unwrap();
    let counters = store.counters();
    assert_eq!(counters.merges, 1);
    assert_eq!(
        (counters.merge_blocks_copied, counters.merge_blocks_written),
        (5, 2),
        "r1's three blocks and r4's two copied; r2's and r3's records rewritten, a block each"
    );
    assert_eq!(
        all(&store, "t"),
        before,
        "the same records, in the same order"
    );
    assert_eq!(store.request("t", "span"), Some(request.clone()));
    let after = store.stats();
    assert_eq!(
        (after[0].records, after[0].raw_bytes, after[0].parts),
        (stats[0].records, stats[0].raw_bytes, 1)
    );
    let span_only = store
        .query(
            "t",
            &Query {
                filter: Filter {
                    request_id: Some("span".into()),
                    ..Filter::default()
                },
                limit: 100,
                direction: tailwater_model::Direction::Forward,
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(
        span_only.records.len(),
        6,
        "the request index finds both blocks"
    );
    let newest_of_r4 = store
        .query(
            "t",
            &Query {
                filter: Filter {
                    runner: Some("r4".into()),
                    ..Filter::default()
                },
                limit: 4,
                direction: tailwater_model::Direction::Backward,
                ..Query::default()
            },
        )
        .unwrap();
    let seqs: Vec<u64> = newest_of_r4.records.iter().map(|r| r.seq).collect();
    let last = 2 * large - 1;
    assert_eq!(
        seqs,
        [last, last - 1, last - 2, last - 3],
        "overlapping blocks, newest first"
    );
    drop(store);

    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t"), before);
    assert_eq!(store.request("t", "span"), Some(request));
    let again = store.append("t", run("r1", 0, 3 * large, start())).unwrap();
    assert_eq!(
        again.duplicates as u64,
        3 * large,
        "copied blocks keep ingest idempotent"
    );
    let r3 = run("r3", 0, 60, start());
    assert_eq!(store.append("t", r3).unwrap().duplicates, 60);
}

#[test]
fn a_crash_after_a_merge_before_its_inputs_are_deleted_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 2,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    store.append("t", run("r1", 0, 40, start())).unwrap();
    store.flush().unwrap();
    store.append("t", run("r1", 40, 40, start())).unwrap();
    store.flush().unwrap();
    let inputs: Vec<(PathBuf, Vec<u8>)> = load_parts(dir.path())
        .unwrap()
        .iter()
        .map(|part| (part.path().to_owned(), std::fs::read(part.path()).unwrap()))
        .collect();
    store.merge().unwrap();
    drop(store);
    // As if the crash came between the merged part's rename and the
    // deletion of its inputs.
    for (path, bytes) in &inputs {
        std::fs::write(path, bytes).unwrap();
    }
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t").len(), 80);
    assert!(
        inputs.iter().all(|(path, _)| !path.exists()),
        "the inputs are deleted"
    );
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

#[test]
fn a_merge_that_meets_a_damaged_block_leaves_that_part_out_from_then_on() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 2,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let mut next_seq = 0;
    let mut flush_a_part = |store: &Store| {
        store.append("t", run("r1", next_seq, 40, start())).unwrap();
        store.flush().unwrap();
        next_seq += 40;
    };
    flush_a_part(&store);
    flush_a_part(&store);
    // Damage the first part's only block, as a bad disk sector would.
    let damaged = load_parts(dir.path()).unwrap()[0].path().to_owned();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    file.write_all_at(b"\xff\xff\xff\xff", 8).unwrap();

    store.merge().unwrap();
    let counters = store.counters();
    assert_eq!((counters.merges, counters.unmergeable_parts), (0, 1));
    assert_eq!(store.stats()[0].parts, 2, "both parts left as they were");
    assert_eq!(all(&store, "t").len(), 40, "the readable part is served");
    // Asked again, the damaged part is not tried again.
    store.merge().unwrap();
    assert_eq!(store.counters().unmergeable_parts, 1);

    // New parts merge among themselves, without it.
    flush_a_part(&store);
    flush_a_part(&store);
    store.merge().unwrap();
    let counters = store.counters();
    assert_eq!((counters.merges, counters.unmergeable_parts), (1, 1));
    assert_eq!(store.stats()[0].parts, 2, "the damaged part and one merged");
    assert!(damaged.exists(), "the damaged part is kept as it is");
    assert_eq!(all(&store, "t").len(), 120);
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
