//! Ids given from outside ([`Store::append_at`]): a batch numbered by its
//! place in a log every node reads in order keeps those ids here, through
//! duplicates, refusals, a reopen and a flush, and ids still only rise.

use std::time::Duration;

use super::test_support::*;
use super::*;

const KEEP: Duration = Duration::from_secs(365 * 24 * 3600);
const BASE: u64 = 1 << 62;

fn positions(store: &Store) -> Vec<(u64, u64)> {
    let filter = Filter::default();
    store
        .read_after("t", &filter, 0, 1000)
        .into_iter()
        .map(|record| (record.seq, record.position))
        .collect()
}

fn recent(runner: &str, first: u64, count: u64) -> IngestBatch {
    run(runner, first, count, jiff::Timestamp::now())
}

#[test]
fn each_record_takes_its_place_in_the_batch_as_its_id() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let response = store
            .append_at("t", recent("r1", 0, 3), BASE | 7 << 16, KEEP)
            .unwrap();
        assert_eq!(response.accepted, 3);
        store.sync().unwrap();
        // Records 1 and 2 are stored already: record 3 keeps index 3.
        let response = store
            .append_at("t", recent("r1", 1, 3), BASE | 9 << 16, KEEP)
            .unwrap();
        assert_eq!((response.accepted, response.duplicates), (1, 2));
        store.sync().unwrap();
        assert_eq!(
            positions(&store),
            vec![
                (0, BASE | 7 << 16),
                (1, BASE | 7 << 16 | 1),
                (2, BASE | 7 << 16 | 2),
                (3, BASE | 9 << 16 | 2),
            ]
        );
        assert_eq!(store.last_id(), BASE | 9 << 16 | 2);
        assert_eq!(store.counters().positions_moved, 0);
    });
}

#[test]
fn an_append_at_is_readable_only_once_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut woken = store.subscribe();
    store
        .append_at("t", recent("r1", 0, 2), BASE | 1 << 16, KEEP)
        .unwrap();
    assert!(positions(&store).is_empty(), "not durable yet");
    assert_eq!(store.last_id(), 0);
    store.sync().unwrap();
    assert_eq!(positions(&store).len(), 2);
    assert!(woken.has_changed().unwrap());
    assert_eq!(*woken.borrow_and_update(), BASE | 1 << 16 | 1);
}

#[test]
fn a_position_not_above_the_last_id_moves_to_the_next_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append_at("t", recent("r1", 0, 2), BASE | 5 << 16, KEEP)
        .unwrap();
    // Another writer (the server's own notices) takes the next id.
    store.append("t", recent("r2", 0, 1)).unwrap();
    // A batch placed below what is stored still rises.
    store
        .append_at("t", recent("r3", 0, 2), BASE | 4 << 16, KEEP)
        .unwrap();
    store.sync().unwrap();
    let ids: Vec<u64> = positions(&store).iter().map(|(_, id)| *id).collect();
    assert_eq!(
        ids,
        vec![
            BASE | 5 << 16,
            BASE | 5 << 16 | 1,
            BASE | 5 << 16 | 2,
            BASE | 5 << 16 | 3,
            BASE | 5 << 16 | 4,
        ]
    );
    assert_eq!(store.counters().positions_moved, 2);
}

#[test]
fn positions_survive_a_reopen_and_a_flush_and_the_next_id_stays_above() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append_at("t", recent("r1", 0, 3), BASE | 3 << 16, KEEP)
        .unwrap();
    store.sync().unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.last_id(), BASE | 3 << 16 | 2);
    store.flush().unwrap();
    store.append("t", recent("r2", 0, 1)).unwrap();
    let stored = positions(&store);
    assert_eq!(
        stored[..3].iter().map(|(_, id)| *id).collect::<Vec<_>>(),
        vec![BASE | 3 << 16, BASE | 3 << 16 | 1, BASE | 3 << 16 | 2]
    );
    assert_eq!(stored[3].1, BASE | 3 << 16 | 3);
    // A live tail that saw the first record goes on from it.
    let after = store.read_after("t", &Filter::default(), BASE | 3 << 16, 10);
    assert_eq!(after.len(), 3);
    // Refused records (older than the retention) hold their index.
    let mut old = recent("r4", 0, 2);
    old.records[0].ts = jiff::Timestamp::from_second(1_000_000).unwrap();
    let response = store.append_at("t", old, BASE | 8 << 16, KEEP).unwrap();
    assert_eq!((response.accepted, response.refused), (1, 1));
    store.sync().unwrap();
    assert_eq!(store.last_id(), BASE | 8 << 16 | 1);
}
