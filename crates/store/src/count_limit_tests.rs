//! What one count may spend: past `count_scan_limit` stored records it is
//! refused before reading, naming the setting; within it, it counts all;
//! and concurrent counts share one pool of helper threads.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::Filter;

use crate::test_support::run;
use crate::{Store, StoreError, StoreOptions};

fn store_with(dir: &std::path::Path, count_scan_limit: u64, query_threads: usize) -> Store {
    Store::open(
        dir,
        StoreOptions {
            memtable_max_bytes: 1,
            background: false,
            count_scan_limit,
            query_threads,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn fill(store: &Store) {
    let start = Timestamp::from_second(1_700_000_000).unwrap();
    for batch in 0..10 {
        store.append("t", run("r1", batch * 10, 10, start)).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn a_count_past_the_scan_limit_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 50, 4);
    fill(&store);
    let error = store.count("t", &Filter::default(), None).unwrap_err();
    let StoreError::CountTooLarge { records, limit } = &error else {
        panic!("not refused for its size: {error}");
    };
    assert_eq!((*records, *limit), (100, 50));
    let message = error.to_string();
    assert!(message.contains("--count-scan-limit"), "{message}");
    assert_eq!(message, message.to_lowercase(), "{message}");
    // A narrower count (one runner's first batches, by time) is within it.
    let narrow = Filter {
        until: Some(Timestamp::from_second(1_700_000_000).unwrap() + Duration::from_millis(30)),
        ..Filter::default()
    };
    assert_eq!(store.count("t", &narrow, None).unwrap().total(), 30);
    // Another tenant, with nothing stored, is not refused for it.
    assert_eq!(
        store.count("u", &Filter::default(), None).unwrap().total(),
        0
    );
}

#[test]
fn a_count_within_the_limit_counts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 100, 4);
    fill(&store);
    assert_eq!(
        store.count("t", &Filter::default(), None).unwrap().total(),
        100
    );
}

#[test]
fn concurrent_counts_share_the_pool_and_all_finish_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store_with(dir.path(), 1_000, 3));
    fill(&store);
    let counters: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let tenant = if i % 2 == 0 { "t" } else { "u" };
                (0..20)
                    .map(|_| {
                        store
                            .count(tenant, &Filter::default(), None)
                            .unwrap()
                            .total()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, counter) in counters.into_iter().enumerate() {
        let totals = counter.join().unwrap();
        let expected = if i % 2 == 0 { 100 } else { 0 };
        assert!(totals.iter().all(|total| *total == expected), "{totals:?}");
    }
}
