//! Times to the nanosecond and order within a runner: the store keeps the
//! time it is given, a query's bounds and cursors cut between records a
//! nanosecond apart, records of one time come back in the order they were
//! stored (which, within a runner, is its sequence order) on every read
//! path and through flushes and merges, and stores written when times were
//! cut to the millisecond read, filter, page and resume as before.

use jiff::Timestamp;
use tailwater_model::time::{timestamp_from_ns, timestamp_ns};
use tailwater_model::wire::IngestRecord;
use tailwater_model::{Cursor, Direction, Filter, Matcher, Query, Stream};

use super::test_support::{batch_of, record};
use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn store(dir: &std::path::Path) -> Store {
    let options = StoreOptions {
        background: false,
        merge_min_parts: 2,
        ..StoreOptions::default()
    };
    Store::open(dir, options).unwrap()
}

/// Every record `filter` matches, `limit` at a time, by cursor.
fn pages(store: &Store, filter: &Filter, direction: Direction, limit: usize) -> Vec<LogRecord> {
    let mut records = Vec::new();
    let mut query = Query {
        filter: filter.clone(),
        direction,
        limit,
        cursor: None,
    };
    loop {
        let page = store.query("t", &query).unwrap();
        records.extend(page.records);
        match page.next {
            Some(cursor) => query.cursor = Some(cursor),
            None => return records,
        }
    }
}

fn messages(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.message.clone()).collect()
}

fn on(stream: Stream, mut record: IngestRecord) -> IngestRecord {
    record.stream = stream;
    record
}

#[test]
fn times_are_kept_to_the_nanosecond_through_memtable_parts_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let times = [
        "2026-11-20T10:00:00.000000001Z",
        "2026-11-20T10:00:00.000001Z",
        "2026-11-20T10:00:00.000001001Z",
        "2026-11-20T10:00:00.123456789Z",
    ];
    for (seq, ts) in times.iter().enumerate() {
        store
            .append(
                "t",
                batch_of("a", "r", vec![record(seq as u64, at(ts), ts.to_string())]),
            )
            .unwrap();
        store.flush().unwrap();
    }
    let expected: Vec<Timestamp> = times.iter().map(|ts| at(ts)).collect();
    let read = |store: &Store| -> Vec<Timestamp> {
        pages(store, &Filter::default(), Direction::Forward, 1000)
            .iter()
            .map(|r| r.ts)
            .collect()
    };
    assert_eq!(read(&store), expected, "in parts, a part each");
    store.merge().unwrap();
    assert_eq!(store.stats()[0].parts, 1);
    assert_eq!(read(&store), expected, "merged");
    drop(store);
    assert_eq!(read(&self::store(dir.path())), expected, "reopened");
}

#[test]
fn query_bounds_and_cursors_cut_between_records_a_nanosecond_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let base = timestamp_ns(at("2026-11-20T10:00:00Z"));
    let batch = |first: u64| {
        (first..first + 5)
            .map(|n| record(n, timestamp_from_ns(base + n as i64), format!("n{n}")))
            .collect::<Vec<_>>()
    };
    // Half in a part (pruned by the footer's and blocks' ns ranges), half
    // in the memtable.
    store.append("t", batch_of("a", "r", batch(0))).unwrap();
    store.flush().unwrap();
    store.append("t", batch_of("a", "r", batch(5))).unwrap();
    for (since, until) in [(0, 10), (3, 4), (4, 6), (5, 5), (9, 10), (1, 9)] {
        let filter = Filter {
            since: Some(timestamp_from_ns(base + since)),
            until: Some(timestamp_from_ns(base + until)),
            ..Filter::default()
        };
        let expected: Vec<String> = (since..until).map(|n| format!("n{n}")).collect();
        for direction in [Direction::Forward, Direction::Backward] {
            let mut got = messages(&pages(&store, &filter, direction, 1));
            if direction == Direction::Backward {
                got.reverse();
            }
            assert_eq!(got, expected, "[{since}, {until}) ns, {direction:?}");
        }
    }
    // A cursor a nanosecond before a record resumes at that record.
    let page = store
        .query(
            "t",
            &Query {
                limit: 1,
                direction: Direction::Forward,
                cursor: Some(Cursor {
                    ts_ns: base + 6,
                    position: 0,
                }),
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(messages(&page.records), ["n6"]);
}

/// Runner `a` prints eight lines, alternating stdout and stderr, all in one
/// millisecond (as the agent stamped them before it stamped microseconds),
/// in batches runner `b`'s lines of that millisecond arrive between.
/// However flushed and merged, each runner's lines read in sequence order
/// on every path, and the time order's ties follow the store's order.
#[test]
fn lines_of_one_time_read_in_sequence_order_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let ts = at("2026-11-20T10:00:00.007Z");
    let line = |runner: &str, seq: u64| {
        let stream = if seq.is_multiple_of(2) {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        on(stream, record(seq, ts, format!("{runner}{seq}")))
    };
    for round in 0..4u64 {
        for runner in ["a", "b"] {
            let seqs = round * 2..round * 2 + 2;
            let lines = seqs.map(|seq| line(runner, seq)).collect();
            store.append("t", batch_of("sdxl", runner, lines)).unwrap();
        }
        if round == 1 {
            store.flush().unwrap();
        }
    }
    let of_runner = |records: &[LogRecord], runner: &str| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r.runner == runner)
            .map(|r| r.seq)
            .collect()
    };
    let in_order: Vec<u64> = (0..8).collect();
    let check = |store: &Store, when: &str| {
        for limit in [1, 3, 1000] {
            let forward = pages(store, &Filter::default(), Direction::Forward, limit);
            let mut backward = pages(store, &Filter::default(), Direction::Backward, limit);
            backward.reverse();
            assert_eq!(forward, backward, "{when}: both directions, limit {limit}");
            for runner in ["a", "b"] {
                assert_eq!(of_runner(&forward, runner), in_order, "{when}: {runner}");
            }
            let positions: Vec<u64> = forward.iter().map(|r| r.position).collect();
            assert!(positions.is_sorted(), "{when}: ties by the store's order");
            // One runner's stdout and stderr together.
            let filter = Filter {
                runner: Some(Matcher::Eq("a".into())),
                ..Filter::default()
            };
            let only_a = pages(store, &filter, Direction::Forward, limit);
            assert_eq!(of_runner(&only_a, "a"), in_order, "{when}: runner a alone");
        }
        let tail = store.read_after("t", &Filter::default(), 0, 1000);
        for runner in ["a", "b"] {
            assert_eq!(of_runner(&tail, runner), in_order, "{when}: live tail");
        }
    };
    check(&store, "memtable and a part");
    store.flush().unwrap();
    check(&store, "two parts");
    store.merge().unwrap();
    assert_eq!(store.stats()[0].parts, 1);
    check(&store, "merged");
    drop(store);
    check(&self::store(dir.path()), "reopened");
}

/// A store written when times were cut to the millisecond (the old path's
/// records: ms times, many in one millisecond), and cursors handed out
/// then, still read, filter, page and resume; new microsecond records of
/// the same runner follow them in order.
#[test]
fn millisecond_records_and_their_cursors_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let ms = |n: i64| timestamp_from_ns(timestamp_ns(at("2026-11-20T10:00:00Z")) + n * 1_000_000);
    let old_cursor;
    {
        let store = store(dir.path());
        // Three records a millisecond, for ten milliseconds.
        let records = (0..30u64)
            .map(|seq| record(seq, ms(seq as i64 / 3), format!("old {seq}")))
            .collect();
        store.append("t", batch_of("a", "r", records)).unwrap();
        store.flush().unwrap();
        // A page of 4 handed out its cursor: after "old 3".
        let page = store
            .query(
                "t",
                &Query {
                    limit: 4,
                    direction: Direction::Forward,
                    ..Query::default()
                },
            )
            .unwrap();
        assert_eq!(messages(&page.records).last().unwrap(), "old 3");
        old_cursor = page.next.unwrap();
    }
    let store = store(dir.path());
    // New lines, stamped in microseconds, later in the last millisecond.
    let new = (30..33u64)
        .map(|seq| {
            let ts = timestamp_from_ns(timestamp_ns(ms(9)) + (seq as i64 - 29) * 1_000);
            record(seq, ts, format!("new {seq}"))
        })
        .collect();
    store.append("t", batch_of("a", "r", new)).unwrap();
    let all = pages(&store, &Filter::default(), Direction::Forward, 7);
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..33).collect::<Vec<_>>(), "old then new, in order");
    assert_eq!(all[3].ts, ms(1));
    // Resuming from the cursor made before: the rest, in order.
    let rest = store
        .query(
            "t",
            &Query {
                limit: 1000,
                direction: Direction::Forward,
                cursor: Some(old_cursor),
                ..Query::default()
            },
        )
        .unwrap();
    let seqs: Vec<u64> = rest.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (4..33).collect::<Vec<_>>());
    // Millisecond bounds take whole milliseconds, as before.
    let filter = Filter {
        since: Some(ms(2)),
        until: Some(ms(4)),
        ..Filter::default()
    };
    let seqs: Vec<u64> = pages(&store, &filter, Direction::Backward, 2)
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, [11, 10, 9, 8, 7, 6]);
}
