//! Record ids from the stream: the same record has the same id on every
//! node, so a live tail and a paging client move from one node to another
//! with no gap and no duplicate, while lines keep coming to both.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use tailwater_model::wire::LogsParams;
use tailwater_model::LogRecord;

use super::common::{batch, server_in, TOKEN};
use super::nats::NatsCluster;
use super::{node, node_in, runner_in_each_partition, wait_stored_once, Node};

/// How long the next record of a tail may take.
const NEXT_WITHIN: Duration = Duration::from_secs(60);

fn api() -> LogsParams {
    LogsParams {
        app: Some("api".to_owned()),
        ..Default::default()
    }
}

/// Node `name`, whose store already holds records of its own (of app
/// `old`): an embedded server's data directory made a cluster node, so
/// the ids its store would give by itself are not the other nodes'.
async fn node_with_history(name: &str, nats: &NatsCluster) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), TOKEN, |_| {}).await;
    let answer = client.ingest(&batch("old", "r", 0..37)).await.unwrap();
    assert_eq!(answer.accepted, 37);
    server.shutdown().await.unwrap();
    node_in(dir, name, nats).await
}

/// `(runner, seq)` of a record of the tests.
fn line(record: &LogRecord) -> (String, u64) {
    let (runner, seq) = record.message.split_once(' ').unwrap();
    (runner.to_owned(), seq.parse().unwrap())
}

/// Sends `per_runner` lines of each runner (one per partition) to `node`,
/// batches of 5 at a time starting at `from`.
async fn ship(node: &Node, runners: &[String], from: u64, per_runner: u64) {
    for first in (from..from + per_runner).step_by(5) {
        for runner in runners {
            let answer = node
                .client
                .ingest(&batch("api", runner, first..first + 5))
                .await
                .unwrap();
            assert_eq!(answer.accepted, 5);
        }
    }
}

/// Takes `count` records from `tail`.
async fn take(
    tail: &mut (impl futures_util::Stream<Item = Result<LogRecord, tailwater_client::ClientError>>
              + Unpin),
    count: usize,
) -> Vec<LogRecord> {
    let mut taken = Vec::new();
    while taken.len() < count {
        let record = tokio::time::timeout(NEXT_WITHIN, tail.next())
            .await
            .unwrap_or_else(|_| panic!("no record within {NEXT_WITHIN:?} after {}", taken.len()))
            .expect("the tail goes on")
            .expect("a record");
        taken.push(record);
    }
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_tail_moves_to_another_node_with_no_gap_and_no_duplicate() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node_with_history("b", &nats).await;
    let runners = runner_in_each_partition();

    let mut on_a = Box::pin(a.client.tail(&api(), None).await.unwrap());
    // Lines to both nodes, in every partition, while the tail reads.
    ship(&a, &runners, 0, 20).await;
    ship(&b, &runners, 20, 20).await;
    let total = runners.len() * 40;
    let seen = take(&mut on_a, total / 2).await;
    let last = seen.last().unwrap().id.clone();
    drop(on_a);

    // The client's node goes; it resumes on the other with the last id it
    // had, while more lines come.
    let mut on_b = Box::pin(b.client.tail(&api(), Some(&last)).await.unwrap());
    ship(&a, &runners, 40, 10).await;
    let rest = take(&mut on_b, total / 2 + runners.len() * 10).await;

    let mut times: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for record in seen.iter().chain(&rest) {
        *times.entry(line(record)).or_default() += 1;
    }
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    for runner in &runners {
        for seq in 0..50 {
            assert!(
                times.contains_key(&(runner.clone(), seq)),
                "{runner} {seq} never delivered"
            );
        }
    }
    // Nothing more comes: every line was delivered once.
    let more = tokio::time::timeout(Duration::from_secs(2), on_b.next()).await;
    assert!(more.is_err(), "an extra record: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_has_the_same_id_on_every_node_and_a_cursor_pages_on_either() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node_with_history("b", &nats).await;
    let runners = runner_in_each_partition();
    // Half of the lines come through each node.
    ship(&a, &runners, 0, 10).await;
    ship(&b, &runners, 10, 10).await;
    let seqs: Vec<u64> = (0..20).collect();
    for runner in &runners {
        wait_stored_once(&a, "api", runner, &seqs).await;
        wait_stored_once(&b, "api", runner, &seqs).await;
    }

    let everything = |node: &Node| {
        let client = node.client.clone();
        async move {
            let params = LogsParams {
                limit: Some("1000".to_owned()),
                ..api()
            };
            client.logs(&params).await.unwrap().records
        }
    };
    let ids = |records: Vec<LogRecord>| -> BTreeMap<(String, u64), String> {
        records
            .into_iter()
            .map(|record| (line(&record), record.id))
            .collect()
    };
    let on_a = ids(everything(&a).await);
    let on_b = ids(everything(&b).await);
    assert_eq!(on_a.len(), runners.len() * 20);
    assert_eq!(on_a, on_b, "each record's id, node by node");

    // A page from one node, the next from the other: together, each
    // record once.
    let first = a
        .client
        .logs(&LogsParams {
            limit: Some("25".to_owned()),
            ..api()
        })
        .await
        .unwrap();
    let mut paged: Vec<LogRecord> = first.records;
    let mut cursor = first.next_cursor;
    let mut nodes = [&b, &a].into_iter().cycle();
    while let Some(next) = cursor {
        let page = nodes
            .next()
            .unwrap()
            .client
            .logs(&LogsParams {
                limit: Some("25".to_owned()),
                cursor: Some(next),
                ..api()
            })
            .await
            .unwrap();
        paged.extend(page.records);
        cursor = page.next_cursor;
    }
    assert_eq!(paged.len(), on_a.len(), "each record once");
    assert_eq!(ids(paged), on_a, "paged across both nodes");
}
