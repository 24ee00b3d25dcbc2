use std::fs::OpenOptions;

use jiff::Timestamp;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Direction, Filter, Level, Query, Stream};

use super::*;

fn batch(runner: &str, boot: &str, seqs: std::ops::Range<u64>, ts_second: i64) -> IngestBatch {
    IngestBatch {
        app: "sdxl".into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: boot.into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                // Several records share each second, to exercise tie-breaks.
                ts: Timestamp::from_second(ts_second + (seq / 3) as i64).unwrap(),
                stream: Stream::Stdout,
                level: if seq % 5 == 0 {
                    Level::Error
                } else {
                    Level::Info
                },
                request_id: Some(format!("req-{}", seq % 4)),
                message: format!("line {seq} of {runner}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

fn messages(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.message.clone()).collect()
}

#[test]
fn retried_batches_are_stored_once_even_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(
        store
            .append("t", &batch("r1", "b1", 0..10, 100))
            .unwrap()
            .accepted,
        10
    );
    let overlap = store.append("t", &batch("r1", "b1", 5..15, 100)).unwrap();
    assert_eq!((overlap.accepted, overlap.duplicates), (5, 5));
    // A new boot of the same runner restarts its sequence numbers.
    assert_eq!(
        store
            .append("t", &batch("r1", "b2", 0..3, 100))
            .unwrap()
            .accepted,
        3
    );
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.last_id(), 18);
    let again = store.append("t", &batch("r1", "b1", 0..15, 100)).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 15));
}

#[test]
fn pages_forward_and_backward_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", &batch("r1", "b", 0..50, 100)).unwrap();
    store.append("t", &batch("r2", "b", 0..50, 100)).unwrap();

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
}

#[test]
fn queries_filter_by_labels_level_text_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", &batch("r1", "b", 0..30, 100)).unwrap();
    store.append("t", &batch("r2", "b", 0..30, 100)).unwrap();
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
}

#[test]
fn tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("acme", &batch("r1", "b", 0..5, 100)).unwrap();
    // The same runner name and boot in another tenant is another runner.
    assert_eq!(
        store
            .append("globex", &batch("r1", "b", 0..5, 100))
            .unwrap()
            .accepted,
        5
    );
    let page = store
        .query(
            "acme",
            &Query {
                limit: 100,
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(page.records.len(), 5);
    assert!(page.records.iter().all(|r| r.tenant == "acme"));
    assert!(store
        .read_after("nobody", &Filter::default(), 0, 100)
        .is_empty());
}

#[test]
fn read_after_follows_ingest_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", &batch("r1", "b", 0..5, 200)).unwrap();
    // Arrives later but happened earlier: still after id 5 for a tail.
    store.append("t", &batch("r2", "b", 0..5, 100)).unwrap();
    let after = store.read_after("t", &Filter::default(), 5, 3);
    assert_eq!(
        messages(&after),
        ["line 0 of r2", "line 1 of r2", "line 2 of r2"]
    );
    assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), [6, 7, 8]);
}

#[test]
fn a_torn_log_tail_loses_only_the_unfinished_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", &batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", &batch("r1", "b", 10..20, 100)).unwrap();
    drop(store);
    let wal = dir.path().join(WAL_FILE);
    let len = std::fs::metadata(&wal).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let store = open(dir.path());
    assert_eq!(store.last_id(), 10);
    // The agent retries the batch it never saw acknowledged.
    assert_eq!(
        store
            .append("t", &batch("r1", "b", 10..20, 100))
            .unwrap()
            .accepted,
        10
    );
    drop(store);
    assert_eq!(open(dir.path()).last_id(), 20);
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("in use by another tailwater server"),
        "{error}"
    );
}
