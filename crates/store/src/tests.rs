//! The store as its callers use it: idempotent appends, paging both ways,
//! filters, tenants apart, ingest order for live tail, retention, and the
//! block cache. Crashes and damage are in `crash_tests.rs`, the comparison
//! with a naive model in `model_tests.rs`.

use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::wire::IngestBatch;
use tailwater_model::{Direction, Filter, Level, Query};

use super::test_support::*;
use super::*;

#[test]
fn retried_batches_are_stored_once_even_after_reopen() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(
            store
                .append("t", batch("r1", "b1", 0..10, 100))
                .unwrap()
                .accepted,
            10
        );
        let overlap = store.append("t", batch("r1", "b1", 5..15, 100)).unwrap();
        assert_eq!((overlap.accepted, overlap.duplicates), (5, 5));
        // A new boot of the same runner restarts its sequence numbers.
        assert_eq!(
            store
                .append("t", batch("r1", "b2", 0..3, 100))
                .unwrap()
                .accepted,
            3
        );
        drop(store);

        let store = open(dir.path());
        assert_eq!(store.last_id(), 18);
        let again = store.append("t", batch("r1", "b1", 0..15, 100)).unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 15));
    });
}

#[test]
fn pages_forward_and_backward_without_gap_or_duplicate() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", "b", 0..50, 100)).unwrap();
        store.append("t", batch("r2", "b", 0..50, 100)).unwrap();

        for direction in [Direction::Forward, Direction::Backward] {
            let mut query = Query {
                direction,
                limit: 7,
                ..Query::default()
            };
            let mut seen = Vec::new();
            loop {
                let page = store.query("t", &query).unwrap();
                seen.extend(page.records.iter().map(Cursor::of));
                match page.next {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            let mut expected = seen.clone();
            expected.sort();
            if direction == Direction::Backward {
                expected.reverse();
            }
            expected.dedup();
            assert_eq!(seen, expected, "{direction:?}: time order, no duplicate");
            assert_eq!(seen.len(), 100, "{direction:?}: no gap");
        }
    });
}

#[test]
fn queries_filter_by_labels_level_text_and_time() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", "b", 0..30, 100)).unwrap();
        store.append("t", batch("r2", "b", 0..30, 100)).unwrap();
        let query = |filter: Filter| {
            store
                .query(
                    "t",
                    &Query {
                        filter,
                        direction: Direction::Forward,
                        limit: 1000,
                        cursor: None,
                    },
                )
                .unwrap()
                .records
        };
        let errors = query(Filter {
            runner: Some("r2".into()),
            min_level: Some(Level::Error),
            ..Filter::default()
        });
        assert_eq!(
            messages(&errors),
            [
                "line 0 of r2",
                "line 5 of r2",
                "line 10 of r2",
                "line 15 of r2",
                "line 20 of r2",
                "line 25 of r2"
            ]
        );

        let request = query(Filter {
            request_id: Some("req-1".into()),
            runner: Some("r1".into()),
            ..Filter::default()
        });
        assert_eq!(request.len(), 8);
        assert!(request
            .iter()
            .all(|r| r.request_id.as_deref() == Some("req-1")));

        let windowed = query(Filter {
            runner: Some("r1".into()),
            since: Some(Timestamp::from_second(101).unwrap()),
            until: Some(Timestamp::from_second(103).unwrap()),
            ..Filter::default()
        });
        assert_eq!(
            messages(&windowed),
            [
                "line 3 of r1",
                "line 4 of r1",
                "line 5 of r1",
                "line 6 of r1",
                "line 7 of r1",
                "line 8 of r1"
            ]
        );

        let text = query(Filter {
            text: Some(tailwater_model::Phrase::new("LINE 29 OF")),
            ..Filter::default()
        });
        assert_eq!(messages(&text), ["line 29 of r1", "line 29 of r2"]);
    });
}

#[test]
fn tenants_never_see_each_other() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("acme", batch("r1", "b", 0..5, 100)).unwrap();
        // The same runner name and boot in another tenant is another runner.
        assert_eq!(
            store
                .append("globex", batch("r1", "b", 0..5, 100))
                .unwrap()
                .accepted,
            5
        );
        let page = everything(&store, "acme");
        assert_eq!(page.records.len(), 5);
        assert!(page.records.iter().all(|r| r.tenant == "acme"));
        assert!(store
            .read_after("nobody", &Filter::default(), 0, 100)
            .is_empty());
    });
}

#[test]
fn read_after_follows_ingest_order() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", "b", 0..5, 200)).unwrap();
        // Arrives later but happened earlier: still after id 5 for a tail.
        store.append("t", batch("r2", "b", 0..5, 100)).unwrap();
        let after = store.read_after("t", &Filter::default(), 5, 3);
        assert_eq!(
            messages(&after),
            ["line 0 of r2", "line 1 of r2", "line 2 of r2"]
        );
        assert_eq!(
            after.iter().map(|r| r.position).collect::<Vec<_>>(),
            [6, 7, 8]
        );
    });
}

fn at_day(app: &str, runner: &str, days_ago: i64, now: Timestamp) -> IngestBatch {
    let mut batch = batch(runner, "b", 0..20, now.as_second() - days_ago * 86_400);
    batch.app = app.into();
    batch
}

#[test]
fn retention_deletes_whole_partitions_by_app_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // In the past: records dated ahead of the clock are stored at its time.
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    store.append("t", at_day("short", "r1", 40, now)).unwrap();
    store.append("t", at_day("short", "r2", 1, now)).unwrap();
    store.append("t", at_day("long", "r3", 40, now)).unwrap();
    store.flush().unwrap();

    let mut retention = Retention {
        max_age: Duration::from_secs(30 * 86_400),
        ..Retention::default()
    };
    retention.app_max_age.insert(
        ("t".into(), "long".into()),
        Duration::from_secs(365 * 86_400),
    );
    let deleted = store.apply_retention(&retention, now).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].partition.app.as_str(), deleted[0].reason),
        ("short", DeleteReason::Age)
    );
    assert!(!store.inner.partition_dir(&deleted[0].partition).exists());

    let left = everything(&store, "t").records;
    let runners: std::collections::BTreeSet<&str> =
        left.iter().map(|r| r.runner.as_str()).collect();
    assert_eq!(runners, ["r2", "r3"].into());
    // Nothing else is due.
    assert!(store.apply_retention(&retention, now).unwrap().is_empty());
}

#[test]
fn retention_by_disk_size_deletes_the_oldest_days_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // In the past: records dated ahead of the clock are stored at its time.
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    for days_ago in [5, 3, 4, 1, 2] {
        store
            .append("t", at_day("a", &format!("r{days_ago}"), days_ago, now))
            .unwrap();
        store.flush().unwrap();
    }
    let one_part = load_parts(dir.path()).unwrap()[0].file_len;
    let retention = Retention {
        max_total_bytes: Some(one_part * 2 + one_part / 2),
        ..Retention::default()
    };
    let deleted = store.apply_retention(&retention, now).unwrap();
    let days: Vec<i64> = deleted
        .iter()
        .map(|d| {
            assert_eq!(d.reason, DeleteReason::DiskSize);
            let day: jiff::civil::Date = d.partition.day.parse().unwrap();
            let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
            (today - day).get_days() as i64
        })
        .collect();
    assert_eq!(days, [5, 4, 3]);
    let left = everything(&store, "t").records;
    assert_eq!(left.len(), 40);
}

/// Paging through parts page by page opens each block once: the next page
/// finds the blocks the last one decoded in the block cache, and reads the
/// same records as a store without one.
#[test]
fn paging_through_parts_decodes_each_block_once() {
    let page_through = |cache_bytes: usize| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                memtable_max_bytes: 1,
                background: false,
                block_cache_bytes: cache_bytes,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for runner in ["r1", "r2", "r3"] {
            store.append("t", batch(runner, "b", 0..300, 100)).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .query(
                    "t",
                    &Query {
                        limit: 7,
                        direction: Direction::Forward,
                        cursor,
                        ..Query::default()
                    },
                )
                .unwrap();
            seen.extend(page.records.iter().map(|r| (r.runner.clone(), r.seq)));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        (seen, store.block_cache())
    };
    let (cached, stats) = page_through(DEFAULT_BLOCK_CACHE_BYTES);
    let (uncached, without) = page_through(0);
    assert_eq!(cached.len(), 900);
    assert_eq!(cached, uncached);
    assert_eq!(stats.misses, 3, "one block per runner, each decoded once");
    assert!(stats.hits > 100, "{stats:?}");
    assert!(without.misses > 100 && without.hits == 0, "{without:?}");
}
