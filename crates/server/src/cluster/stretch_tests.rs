//! [`super`]'s pages of a stretch of the stream: read from a real store
//! holding records at the stream's ids, and checked as a repairing node
//! checks what a peer sends.

use std::time::Duration;

use tailwater_model::wire::{IngestBatch, IngestRecord, StreamPage, StreamRun};
use tailwater_model::{Level, Stream};
use tailwater_store::{Store, StoreOptions};

use super::*;

const KEEP: Duration = Duration::from_secs(365 * 24 * 3600);

fn batch(runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    IngestBatch {
        app: "api".into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: "b".into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                ts: jiff::Timestamp::now(),
                stream: Stream::Stdout,
                level: Level::Info,
                request_id: None,
                message: format!("{runner} {seq}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    (dir, store)
}

/// Stores `batch` of `tenant` as the message at stream `sequence`.
fn at(store: &Store, tenant: &str, sequence: u64, batch: IngestBatch) {
    store
        .append_at(tenant, batch, position(sequence), KEEP)
        .unwrap();
    store.sync().unwrap();
}

/// Every page of `from..=to`: each record's `(tenant, runner seq, id)`.
fn read_all(store: &Store, from: u64, to: u64) -> (Vec<(String, u64, u64)>, usize) {
    let (mut records, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = page(store, from, to, after);
        pages += 1;
        let past = check_page(&page, from, to, after.unwrap_or(0)).unwrap();
        for run in &page.runs {
            for (index, record) in run.batch.records.iter().enumerate() {
                records.push((run.tenant.clone(), record.seq, run.first + index as u64));
            }
        }
        match page.next_after {
            Some(next) => {
                assert!(next >= past);
                after = Some(next);
            }
            None => return (records, pages),
        }
    }
}

#[test]
fn a_stretch_is_every_tenants_records_in_id_order_with_their_ids() {
    let (_dir, store) = store();
    at(&store, "t1", 4, batch("r1", 0..2));
    at(&store, "t1", 5, batch("r1", 2..5));
    at(&store, "t2", 6, batch("r2", 0..2));
    at(&store, "t1", 7, batch("r1", 5..7));
    at(&store, "t2", 9, batch("r2", 2..3));
    let page = page(&store, 5, 7, None);
    let runs: Vec<(&str, u64, usize)> = page
        .runs
        .iter()
        .map(|run| (run.tenant.as_str(), run.first, run.batch.records.len()))
        .collect();
    assert_eq!(
        runs,
        [
            ("t1", position(5), 3),
            ("t2", position(6), 2),
            ("t1", position(7), 2)
        ]
    );
    assert_eq!(page.next_after, None);
    assert_eq!(page.runs[0].batch.records[0].message, "r1 2");
    assert_eq!(check_page(&page, 5, 7, 0), Ok(position(7) + 1));
}

#[test]
fn a_long_stretch_pages_through_every_record_once() {
    let (_dir, store) = store();
    // More than a page, two tenants interleaved message by message.
    for message in 0..12u64 {
        let tenant = if message % 2 == 0 { "a" } else { "b" };
        let first = (message / 2) * 500;
        at(&store, tenant, 10 + message, batch("r", first..first + 500));
    }
    let (records, pages) = read_all(&store, 10, 21);
    assert_eq!(records.len(), 6_000);
    assert!(pages >= 3, "{pages} pages");
    let ids: Vec<u64> = records.iter().map(|(_, _, id)| *id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in id order");
    let (part, _) = read_all(&store, 12, 13);
    assert_eq!(part.len(), 1_000);
    assert_eq!(part[0], ("a".to_owned(), 500, position(12)));
}

#[test]
fn a_page_out_of_order_outside_the_stretch_or_stuck_is_refused() {
    let run = |first: u64, records: u64| StreamRun {
        tenant: "t".into(),
        first,
        batch: batch("r", 0..records),
    };
    let page = |runs: Vec<StreamRun>, next_after: Option<u64>| StreamPage {
        node: "a".into(),
        runs,
        next_after,
        skipped_blocks: 0,
    };
    let ok = page(vec![run(position(5), 2), run(position(6), 1)], None);
    assert!(check_page(&ok, 5, 6, 0).is_ok());
    for (bad, why) in [
        (page(vec![run(position(5), 0)], None), "empty"),
        (page(vec![run(position(4), 1)], None), "before the stretch"),
        (page(vec![run(position(7), 1)], None), "after it"),
        (
            page(vec![run(position(6), 70_000)], None),
            "running past it",
        ),
        (
            page(vec![run(position(6), 1), run(position(5), 1)], None),
            "not rising",
        ),
        (
            page(vec![run(position(5), 2), run(position(5) + 1, 1)], None),
            "overlapping",
        ),
        (page(vec![run(u64::MAX, 2)], None), "past the largest id"),
        (
            page(vec![run(position(5), 1)], Some(position(4))),
            "going back",
        ),
    ] {
        assert!(check_page(&bad, 5, 6, 0).is_err(), "{why}: {bad:?}");
    }
    // A page that moves nothing is refused when it says there is more.
    assert!(check_page(&page(vec![], Some(7)), 5, 6, 7).is_err());
}

#[test]
fn many_tenants_are_read_a_share_each_and_every_record_comes_once() {
    let (_dir, store) = store();
    // 40 tenants: each read for 64 records a page, not a whole page.
    for message in 0..120u64 {
        let tenant = format!("t{}", message % 40);
        let first = (message / 40) * 30;
        at(&store, &tenant, 1 + message, batch("r", first..first + 30));
    }
    let (records, pages) = read_all(&store, 1, 120);
    assert_eq!(records.len(), 3_600);
    assert!(pages >= 2, "{pages} pages");
    let ids: Vec<u64> = records.iter().map(|(_, _, id)| *id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "in id order");
}

fn page_json(node: &str, first: u64, records: u64, next_after: Option<u64>) -> String {
    serde_json::to_string(&StreamPage {
        node: node.into(),
        runs: vec![StreamRun {
            tenant: "acme".into(),
            first,
            batch: batch("r", 0..records),
        }],
        next_after,
        skipped_blocks: 0,
    })
    .unwrap()
}

/// What [`copy`] of sequences 5..=6 gets from a peer answering `script`:
/// the records stored, or why not.
async fn copy_from(script: Vec<(u16, String)>) -> Result<u64, Unfilled> {
    let (url, _) = crate::cluster::repair::tests::scripted(ROUTE, script).await;
    let client = reqwest::Client::new();
    let peer = Peer {
        node: "p",
        client: &client,
        url: &url,
        key: "k",
    };
    copy(&peer, 5, 6, |runs| async move {
        Ok(runs.iter().map(|run| run.batch.records.len() as u64).sum())
    })
    .await
}

#[tokio::test]
async fn a_copy_of_a_stretch_is_whole_not_held_or_an_error_whatever_the_peer_answers() {
    let first = page_json("p", position(5), 3, Some(position(5) + 2));
    let last = page_json("p", position(6), 2, None);
    let copied = copy_from(vec![(200, first.clone()), (200, last)]).await;
    assert!(matches!(copied, Ok(5)), "{copied:?}");

    let said = copy_from(vec![(409, "{\"error\":{\"code\":\"not_held\"}}".into())]).await;
    assert!(matches!(said, Err(Unfilled::NotHeld(_))), "{said:?}");
    let damaged = {
        let mut page: StreamPage = serde_json::from_str(&first).unwrap();
        page.skipped_blocks = 2;
        serde_json::to_string(&page).unwrap()
    };
    let skipped = copy_from(vec![(200, damaged)]).await;
    assert!(matches!(skipped, Err(Unfilled::NotHeld(_))), "{skipped:?}");

    let huge = format!(
        "{{\"runs\": [], \"pad\": \"{}\"}}",
        "x".repeat(MAX_PAGE_BODY)
    );
    for (what, script) in [
        (
            "failing midway",
            vec![(200, first.clone()), (500, "{}".into())],
        ),
        (
            "the same page again",
            vec![(200, first.clone()), (200, first.clone())],
        ),
        (
            "another node",
            vec![(200, page_json("q", position(5), 1, None))],
        ),
        (
            "outside the stretch",
            vec![(200, page_json("p", position(7), 1, None))],
        ),
        ("not a page", vec![(200, "[1, 2]".into())]),
        ("a page too large", vec![(200, huge)]),
    ] {
        let copied = copy_from(script).await;
        assert!(
            matches!(copied, Err(Unfilled::Failed(_))),
            "{what}: {copied:?}"
        );
    }
}
