//! [`super`]'s pages and copies: paging a real store, and a peer on
//! loopback answering what a hostile or failing one could.

use std::collections::BTreeMap;

use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Level, Stream};
use tailwater_store::{Store, StoreOptions};

use super::*;

const PARTITIONS: u32 = 2;

fn batch(runner: &str, seqs: std::ops::Range<u64>, message_bytes: usize) -> IngestBatch {
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
                message: format!("{runner} {seq} {}", "x".repeat(message_bytes)),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

/// Every page of `partition` from `from`: the records' identities,
/// counted, and the pages read.
fn read_all(
    store: &Store,
    partition: u32,
    mut from: Option<RepairCursor>,
) -> (BTreeMap<(String, String, u64), usize>, usize) {
    let mut seen = BTreeMap::new();
    let mut pages = 0;
    loop {
        let page = page(store, PARTITIONS, partition, from.clone()).unwrap();
        pages += 1;
        assert!(pages < 1_000, "the pages never end");
        assert_eq!(page.skipped_blocks, 0);
        for repaired in page.batches {
            let batch = repaired.batch;
            assert_eq!(
                message::partition_of(&repaired.tenant, &batch.app, &batch.runner, PARTITIONS),
                partition
            );
            for record in batch.records {
                let identity = (repaired.tenant.clone(), batch.runner.clone(), record.seq);
                *seen.entry(identity).or_insert(0) += 1;
            }
        }
        match page.next {
            Some(next) => from = Some(next),
            None => return (seen, pages),
        }
    }
}

#[test]
fn pages_hold_every_tenants_records_of_the_partition_once_within_their_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let runners = ["r0", "r1", "r2", "r3", "r4", "r5"];
    // Many small records (more than a page visits) and a few long ones
    // (more bytes than a page carries), in two tenants.
    for tenant in ["acme", "zeta"] {
        for runner in runners {
            store.append(tenant, batch(runner, 0..900, 10)).unwrap();
        }
        store
            .append(tenant, batch("long", 0..12, 1024 * 1024))
            .unwrap();
    }
    store.flush().unwrap();
    for partition in 0..PARTITIONS {
        let (seen, pages) = read_all(&store, partition, None);
        let mut wanted = BTreeMap::new();
        for tenant in ["acme", "zeta"] {
            for (runner, count) in runners.iter().map(|r| (*r, 900)).chain([("long", 12)]) {
                if message::partition_of(tenant, "api", runner, PARTITIONS) == partition {
                    for seq in 0..count {
                        wanted.insert((tenant.to_owned(), runner.to_owned(), seq), 1);
                    }
                }
            }
        }
        assert_eq!(seen, wanted, "partition {partition}");
        // 2 × (5 400 + 12) records visited, PAGE_RECORDS a page.
        assert!(pages >= 2 * 5_412 / PAGE_RECORDS, "{pages} pages");
    }
    let long = message::partition_of("acme", "api", "long", PARTITIONS);
    let first = page(&store, PARTITIONS, long, None).unwrap();
    let carried: usize = first
        .batches
        .iter()
        .flat_map(|repaired| &repaired.batch.records)
        .map(|record| record.message.len())
        .sum();
    assert!(carried < PAGE_BYTES + 2 * 1024 * 1024, "{carried} bytes");

    // A position in a tenant that is gone is not applied to the next
    // one: it is read from its first record.
    let gone = RepairCursor {
        tenant: "mid".into(),
        after_ts_ns: Some(i64::MAX),
        after_position: Some(u64::MAX),
    };
    let zeta_long = message::partition_of("zeta", "api", "long", PARTITIONS);
    let (from_gone, _) = read_all(&store, zeta_long, Some(gone));
    assert!(from_gone.keys().all(|(tenant, _, _)| tenant == "zeta"));
    assert!(from_gone.contains_key(&("zeta".to_owned(), "long".to_owned(), 0)));
}

#[test]
fn a_page_over_its_bound_or_not_a_page_is_refused() {
    assert!(decode_page(&vec![b' '; MAX_PAGE_BODY + 1]).is_err());
    assert!(decode_page(b"{\"batches\": 7}").is_err());
    assert_eq!(
        decode_page(b"{\"batches\": []}").unwrap(),
        RepairPage::default()
    );
}

/// A peer on loopback answering `route` with the pages of `script` in
/// turn (status and body; past its end, 500), and how many it was asked.
pub(in crate::cluster) async fn scripted(
    route: &str,
    script: Vec<(u16, String)>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::StatusCode;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        route,
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let counter = counter.clone();
            let script = script.clone();
            async move {
                assert_eq!(headers["authorization"], "Bearer k");
                let n = counter.fetch_add(1, Relaxed);
                let (status, body) = script.get(n).cloned().unwrap_or((500, "{}".into()));
                (StatusCode::from_u16(status).unwrap(), body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, asked)
}

fn page_json(runner: &str, seqs: std::ops::Range<u64>, next: Option<&str>) -> String {
    let page = RepairPage {
        node: "p".into(),
        batches: vec![RepairBatch {
            tenant: "acme".into(),
            batch: batch(runner, seqs, 1),
        }],
        next: next.map(|tenant| RepairCursor {
            tenant: tenant.into(),
            after_ts_ns: Some(1),
            after_position: Some(1),
        }),
        skipped_blocks: 0,
    };
    serde_json::to_string(&page).unwrap()
}

/// What [`copy`] gets from a peer answering `script`: its result and
/// the records handed to the store.
async fn copy_from(script: Vec<(u16, String)>, partition: u32) -> (anyhow::Result<u64>, usize) {
    let (url, _) = scripted(ROUTE, script).await;
    let client = reqwest::Client::new();
    let peer = Peer {
        node: "p",
        client: &client,
        url: &url,
        key: "k",
    };
    let handed = std::sync::Mutex::new(0usize);
    let copied = copy(&peer, PARTITIONS, partition, |repaired| {
        let records = repaired.batch.records.len();
        *handed.lock().unwrap() += records;
        async move { anyhow::Ok(records) }
    })
    .await;
    let handed = *handed.lock().unwrap();
    (copied, handed)
}

#[tokio::test]
async fn a_copy_is_whole_or_an_error_whatever_the_peer_answers() {
    let runner = (0..)
        .map(|n| format!("w{n}"))
        .find(|runner| message::partition_of("acme", "api", runner, PARTITIONS) == 0)
        .unwrap();
    let other = (0..)
        .map(|n| format!("w{n}"))
        .find(|runner| message::partition_of("acme", "api", runner, PARTITIONS) == 1)
        .unwrap();
    let first = page_json(&runner, 0..5, Some("acme"));
    let last = page_json(&runner, 5..8, None);

    // Every page: whole.
    let (copied, handed) = copy_from(vec![(200, first.clone()), (200, last)], 0).await;
    assert_eq!(copied.unwrap(), 8);
    assert_eq!(handed, 8);

    // A peer failing midway, sending another partition's records, the
    // same page again, something not a page, or a page over its bound:
    // an error, whatever was stored before.
    let damaged = {
        let mut page: RepairPage = serde_json::from_str(&first).unwrap();
        page.skipped_blocks = 1;
        serde_json::to_string(&page).unwrap()
    };
    let huge = format!(
        "{{\"batches\": [], \"pad\": \"{}\"}}",
        "x".repeat(MAX_PAGE_BODY)
    );
    for (what, script) in [
        (
            "failing midway",
            vec![(200, first.clone()), (500, "{}".to_owned())],
        ),
        (
            "another partition's",
            vec![(200, page_json(&other, 0..2, None))],
        ),
        (
            "the same page again",
            vec![(200, first.clone()), (200, first.clone())],
        ),
        (
            "not a page",
            vec![(200, first.clone()), (200, "[1, 2]".to_owned())],
        ),
        ("a damaged store", vec![(200, damaged)]),
        ("a page too large", vec![(200, huge)]),
        (
            "another node",
            vec![(200, first.replace("\"node\":\"p\"", "\"node\":\"q\""))],
        ),
    ] {
        let (copied, _) = copy_from(script, 0).await;
        assert!(copied.is_err(), "{what}: {copied:?}");
    }
}
