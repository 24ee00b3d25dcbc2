//! Distributed mode against a real NATS cluster (three `nats-server`s on
//! loopback, [`nats::NatsCluster`]) and two tailwater nodes in this
//! process, each with its own data directory: a batch accepted by one node
//! is answered only after JetStream has it, and every node reads it into
//! its own store, exactly once: from the sender's retries (to the same
//! node or another), and through the kill -9 of the stream's leader while
//! lines are being shipped (a live tail through it then resumes on the
//! other node with no gap and no duplicate).

mod auth;
#[path = "../common/mod.rs"]
mod common;
mod intake;
mod nats;
mod operator;
mod peers;
mod positions;
mod registry;
mod repair;
mod status;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{batch, metric, server_in, TOKEN};
use futures_util::StreamExt;
use nats::NatsCluster;
use tailwater_client::{Client, ClientError};
use tailwater_model::wire::LogsParams;
use tailwater_server::cluster::ClusterConfig;
use tailwater_server::RunningServer;

/// Few partitions: every one is a consumer per node, and the machine is
/// shared.
const PARTITIONS: u32 = 4;
/// How long a line may take to reach every node.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

struct Node {
    _dir: tempfile::TempDir,
    server: RunningServer,
    client: Client,
}

/// A tailwater node named `name` on `nats`, with the tests' admin token.
async fn node(name: &str, nats: &NatsCluster) -> Node {
    node_in(tempfile::tempdir().unwrap(), name, nats).await
}

/// [`node`], with its data in `dir` (a node started again keeps its own).
async fn node_in(dir: tempfile::TempDir, name: &str, nats: &NatsCluster) -> Node {
    node_at(dir, name, nats.urls()).await
}

/// [`node_in`], connecting to `urls` (which may carry a NATS user).
async fn node_at(dir: tempfile::TempDir, name: &str, urls: Vec<String>) -> Node {
    let (server, client) = server_in(dir.path(), TOKEN, |config| {
        let mut cluster = ClusterConfig::new(urls, name.to_owned());
        cluster.partitions = PARTITIONS;
        // Within the test servers' 1 GB of file storage.
        cluster.max_bytes = 256 * 1024 * 1024;
        cluster.node_ttl = Duration::from_secs(2);
        config.cluster = Some(cluster);
    })
    .await;
    Node {
        _dir: dir,
        server,
        client,
    }
}

/// How many times each sequence number of `app`'s runner `runner` is
/// stored on the node `client` talks to.
async fn stored(client: &Client, app: &str, runner: &str) -> BTreeMap<u64, usize> {
    let params = LogsParams {
        app: Some(app.to_owned()),
        runner: Some(runner.to_owned()),
        limit: Some("10000".to_owned()),
        ..Default::default()
    };
    let page = client.logs(&params).await.unwrap();
    assert!(page.next_cursor.is_none(), "one page holds them all");
    let mut seqs = BTreeMap::new();
    for record in page.records {
        let seq = record
            .message
            .strip_prefix(&format!("{runner} "))
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("a record of the test: {record:?}"));
        *seqs.entry(seq).or_default() += 1;
    }
    seqs
}

/// Waits until the node `client` talks to holds each of `seqs` of the
/// runner (and nothing else of it), then checks each is there once.
async fn wait_stored_once(node: &Node, app: &str, runner: &str, seqs: &[u64]) {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let stored = stored(&node.client, app, runner).await;
        let complete = seqs.iter().all(|seq| stored.contains_key(seq));
        if complete {
            let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "stored more than once: {twice:?}");
            let unknown: Vec<_> = stored.keys().filter(|seq| !seqs.contains(seq)).collect();
            assert!(unknown.is_empty(), "never acknowledged: {unknown:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} lines on {} after {VISIBLE_WITHIN:?}",
            stored.len(),
            seqs.len(),
            node.server.url()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_shipped_to_one_node_are_read_once_from_every_node() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;

    let answer = a.client.ingest(&batch("api", "r1", 0..100)).await.unwrap();
    assert_eq!((answer.accepted, answer.duplicates), (100, 0));
    let seqs: Vec<u64> = (0..100).collect();
    wait_stored_once(&b, "api", "r1", &seqs).await;
    wait_stored_once(&a, "api", "r1", &seqs).await;

    // Both ways, and many runners (so several partitions).
    for runner in 0..8 {
        let runner = format!("w{runner}");
        let answer = b
            .client
            .ingest(&batch("api", &runner, 0..10))
            .await
            .unwrap();
        assert_eq!(answer.accepted, 10);
    }
    let seqs: Vec<u64> = (0..10).collect();
    for runner in 0..8 {
        wait_stored_once(&a, "api", &format!("w{runner}"), &seqs).await;
    }
    // A batch larger than a message may be (256 KB here): in several, each
    // line once.
    let mut large = batch("api", "big", 0..100);
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    for record in &mut large.records {
        record.message = (0..8 * 1024)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                char::from(b'!' + (noise % 90) as u8)
            })
            .collect();
        record
            .message
            .insert_str(0, &format!("big {} ", record.seq));
    }
    let answer = a.client.ingest(&large).await.unwrap();
    assert_eq!(answer.accepted, 100);
    let seqs: Vec<u64> = (0..100).collect();
    wait_stored_once(&b, "api", "big", &seqs).await;
    let messages = metric(&b.server, "tailwater_cluster_materialized_batches_total").await;
    assert!(
        messages > 10.0,
        "{messages}: 9 batches, the last in several messages"
    );
    assert!(metric(&a.server, "tailwater_cluster_materialized_records_total").await >= 280.0);
    assert_eq!(
        metric(&b.server, "tailwater_cluster_published_batches_total").await,
        8.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_is_stored_once_whichever_node_it_is_sent_to() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;

    let first = batch("api", "r1", 0..50);
    let answer = a.client.ingest(&first).await.unwrap();
    assert_eq!((answer.accepted, answer.duplicates), (50, 0));
    // Its answer lost, the agent sends it again: to the same node, and
    // (failing over) to the other.
    let again = a.client.ingest(&first).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 50));
    let elsewhere = b.client.ingest(&first).await.unwrap();
    assert_eq!((elsewhere.accepted, elsewhere.duplicates), (0, 50));
    // A later batch of the runner: once it is read, everything before it
    // in its partition has been.
    let answer = b.client.ingest(&batch("api", "r1", 50..60)).await.unwrap();
    assert_eq!(answer.accepted, 10);

    let seqs: Vec<u64> = (0..60).collect();
    wait_stored_once(&a, "api", "r1", &seqs).await;
    wait_stored_once(&b, "api", "r1", &seqs).await;
    // Counted as ingested once, and the retries as duplicates.
    let ingested = metric(&a.server, "tailwater_ingested_lines_total").await
        + metric(&b.server, "tailwater_ingested_lines_total").await;
    assert_eq!(ingested, 60.0);
    let duplicates = metric(&a.server, "tailwater_cluster_published_duplicates_total").await
        + metric(&b.server, "tailwater_cluster_published_duplicates_total").await;
    assert_eq!(duplicates, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_away_catches_up_from_the_stream_where_it_left_off() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    for first in (0..50).step_by(10) {
        a.client
            .ingest(&batch("api", "r1", first..first + 10))
            .await
            .unwrap();
    }
    let before: Vec<u64> = (0..50).collect();
    wait_stored_once(&b, "api", "r1", &before).await;

    // B stops (its consumers with it); A goes on taking lines.
    let Node {
        _dir: dir, server, ..
    } = b;
    server.shutdown().await.unwrap();
    for first in [50, 100] {
        let answer = a
            .client
            .ingest(&batch("api", "r1", first..first + 50))
            .await
            .unwrap();
        assert_eq!(answer.accepted, 50);
    }

    // Back under its name and with its data, B reads what it missed, once.
    let b = node_in(dir, "b", &nats).await;
    let all: Vec<u64> = (0..150).collect();
    wait_stored_once(&b, "api", "r1", &all).await;
    // From where its acknowledgements ended, not from the stream's start
    // (the last acknowledgement before it stopped may have been lost).
    let batches = metric(&b.server, "tailwater_cluster_materialized_batches_total").await;
    assert!(
        (2.0..=3.0).contains(&batches),
        "{batches} batches read again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_store_was_removed_reads_the_stream_again_from_its_start() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let answer = a.client.ingest(&batch("api", "r1", 0..30)).await.unwrap();
    assert_eq!(answer.accepted, 30);
    let all: Vec<u64> = (0..30).collect();
    wait_stored_once(&a, "api", "r1", &all).await;
    let Node {
        _dir: dir, server, ..
    } = a;
    server.shutdown().await.unwrap();
    // Its store goes; what it noted of the stream stays.
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    assert!(dir.path().join("cluster-applied").exists());
    let a = node_in(dir, "a", &nats).await;
    wait_stored_once(&a, "api", "r1", &all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_batch_is_counted_and_never_stalls_its_partition() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    // Whoever may publish on the stream's subjects (only tailwater nodes
    // should: ARCHITECTURE.md): bytes that are no batch, another format's,
    // and a frame whose JSON is no envelope, into every partition.
    let client = async_nats::connect(nats.urls()[0].as_str()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut not_json = vec![1];
    not_json.extend(zstd::bulk::compress(b"{\"tenant\":1}", 1).unwrap());
    for partition in 0..PARTITIONS {
        for payload in [b"garbage".to_vec(), b"\x07abc".to_vec(), not_json.clone()] {
            let subject = ClusterConfig::subject(partition);
            let ack = jetstream.publish(subject, payload.into()).await.unwrap();
            ack.await.unwrap();
        }
    }
    // Lines after them, in every partition, are stored all the same.
    let runners = runner_in_each_partition();
    for runner in &runners {
        a.client.ingest(&batch("api", runner, 0..5)).await.unwrap();
    }
    for runner in &runners {
        wait_stored_once(&a, "api", runner, &[0, 1, 2, 3, 4]).await;
    }
    let undecodable = metric(&a.server, "tailwater_cluster_undecodable_total").await;
    assert_eq!(undecodable, f64::from(3 * PARTITIONS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_that_number_nothing_lose_nothing_to_two_nodes_numbering_them() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    // OTLP records carry no sequence: each node numbers them. B numbers a
    // record of the instance; A, having read it, numbers on from it; B,
    // from what it numbered itself. Under one boot the two nodes' numbers
    // would meet, and the store keep only the first.
    send_otlp(&b, &["b0"]).await;
    wait_for_words(&a, &["b0"]).await;
    send_otlp(&a, &["a0", "a1", "a2"]).await;
    send_otlp(&b, &["b1", "b2"]).await;
    let all = ["a0", "a1", "a2", "b0", "b1", "b2"];
    wait_for_words(&a, &all).await;
    wait_for_words(&b, &all).await;
}

/// `words` as the bodies of OTLP records of app `otel`, instance `i-1`,
/// sent to `node`.
async fn send_otlp(node: &Node, words: &[&str]) {
    let now = jiff::Timestamp::now().as_nanosecond().to_string();
    let records: Vec<_> = words
        .iter()
        .map(|word| serde_json::json!({"timeUnixNano": now, "body": {"stringValue": word}}))
        .collect();
    let body = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "otel"}},
            {"key": "service.instance.id", "value": {"stringValue": "i-1"}}
        ]},
        "scopeLogs": [{"logRecords": records}]
    }]});
    let (status, answer) = common::call(&node.server, "POST", "/v1/logs", TOKEN, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Waits until `node` holds as many records of app `otel` as `want`, then
/// checks they are `want` (sorted).
async fn wait_for_words(node: &Node, want: &[&str]) {
    let params = LogsParams {
        app: Some("otel".to_owned()),
        limit: Some("100".to_owned()),
        ..Default::default()
    };
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let page = node.client.logs(&params).await.unwrap();
        let mut words: Vec<_> = page.records.iter().map(|r| r.message.clone()).collect();
        words.sort();
        if words.len() >= want.len() {
            assert_eq!(words, want, "on {}", node.server.url());
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {words:?} on {}",
            node.server.url()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runners_heartbeats_reach_every_nodes_runner_table() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    a.client.ingest(&batch("api", "idle", 0..1)).await.unwrap();
    let first = wait_for_runner(&b, None).await;
    // An idle agent's heartbeat: a batch of no records, sent to A.
    a.client.ingest(&batch("api", "idle", 0..0)).await.unwrap();
    let later = wait_for_runner(&b, Some(first)).await;
    assert!(later > first);
}

/// Waits until `node`'s runner table has runner `idle`, seen after
/// `after` if given; when it was last seen.
async fn wait_for_runner(node: &Node, after: Option<jiff::Timestamp>) -> jiff::Timestamp {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let runners = node.client.runners(None, Some("api"), None).await.unwrap();
        let seen = runners
            .runners
            .iter()
            .find(|runner| runner.runner == "idle")
            .map(|runner| runner.last_seen);
        if let Some(seen) = seen.filter(|seen| after.is_none_or(|after| *seen > after)) {
            return seen;
        }
        assert!(Instant::now() < deadline, "runner idle on b: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_configured_with_other_partitions_refuses_to_start() {
    let nats = NatsCluster::start(3);
    let _a = node("a", &nats).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = tailwater_server::ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    let mut cluster = ClusterConfig::new(nats.urls(), "c".to_owned());
    cluster.partitions = PARTITIONS * 2;
    cluster.max_bytes = 256 * 1024 * 1024;
    config.cluster = Some(cluster);
    let error = tailwater_server::start(config)
        .await
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("--nats-partitions"), "{message}");
    // It changed nothing on disk.
    assert!(!dir.path().join("store").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_see_each_other_and_one_that_leaves_drops_out() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    wait_for_nodes(&a, 2).await;
    wait_for_nodes(&b, 2).await;
    b.server.shutdown().await.unwrap();
    wait_for_nodes(&a, 1).await;
}

/// Waits until `node` counts `count` live nodes.
async fn wait_for_nodes(node: &Node, count: usize) {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let live = metric(&node.server, "tailwater_cluster_nodes").await;
        if live == count as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "{live} live nodes, not {count}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A runner of app `api` (tenant `default`) in each partition, in order.
fn runner_in_each_partition() -> Vec<String> {
    (0..PARTITIONS)
        .map(|partition| {
            (0..)
                .map(|n| format!("w{n}"))
                .find(|runner| {
                    let of = tailwater_server::cluster::message::partition_of;
                    of("default", "api", runner, PARTITIONS) == partition
                })
                .unwrap()
        })
        .collect()
}

/// Sends `seqs` of runner `r1` to `node` until they are acknowledged.
async fn ship_until_acknowledged(node: &Node, seqs: std::ops::Range<u64>) {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        match node.client.ingest(&batch("api", "r1", seqs.clone())).await {
            Ok(_) => return,
            Err(error) => assert!(Instant::now() < deadline, "never acknowledged: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_streams_leader_while_shipping_loses_no_acknowledged_line() {
    let mut nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;

    const BATCHES: u64 = 30;
    const LINES: u64 = 20;
    // A live tail on b throughout the kill, which moves to a afterwards
    // with the last id it had.
    let r1 = LogsParams {
        app: Some("api".to_owned()),
        runner: Some("r1".to_owned()),
        ..Default::default()
    };
    let mut on_b = Box::pin(b.client.tail(&r1, None).await.unwrap());
    let half = (BATCHES * LINES / 2) as usize;
    let seen_on_b = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < half {
            let next = tokio::time::timeout(VISIBLE_WITHIN, on_b.next()).await;
            let record = next
                .unwrap_or_else(|_| panic!("no record within {VISIBLE_WITHIN:?}"))
                .expect("the tail goes on")
                .expect("a record");
            seen.push(record);
        }
        seen
    });
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    let mut killed = 0;
    for index in 0..BATCHES {
        if index == BATCHES / 3 {
            killed = nats.stream_leader(tailwater_server::cluster::STREAM);
            nats.kill(killed);
        }
        let seqs = index * LINES..(index + 1) * LINES;
        // As the agent does: the same batch until it is acknowledged.
        let deadline = Instant::now() + VISIBLE_WITHIN;
        loop {
            match a.client.ingest(&batch("api", "r1", seqs.clone())).await {
                Ok(answer) => {
                    assert_eq!(answer.accepted + answer.duplicates, LINES as usize);
                    acknowledged.extend(seqs);
                    break;
                }
                Err(error) => {
                    // 503 cluster_unavailable: JetStream did not acknowledge.
                    let ClientError::Unavailable { code, .. } = &error else {
                        panic!("a refusal to send again: {error}");
                    };
                    assert_eq!(code, "cluster_unavailable");
                    assert!(Instant::now() < deadline, "never acknowledged: {error}");
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    eprintln!("{refused} refusals while the leader was away");
    assert_eq!(acknowledged.len() as u64, BATCHES * LINES);
    wait_stored_once(&b, "api", "r1", &acknowledged).await;
    wait_stored_once(&a, "api", "r1", &acknowledged).await;
    // Each refusal was answered and counted, not hidden.
    let failures = metric(&a.server, "tailwater_cluster_publish_failures_total").await;
    assert_eq!(failures, f64::from(refused));

    // The killed server back (its JetStream directory kept): the cluster
    // takes it in and shipping goes on.
    tokio::task::block_in_place(|| nats.restart(killed));
    let more = BATCHES * LINES..BATCHES * LINES + LINES;
    ship_until_acknowledged(&a, more.clone()).await;
    acknowledged.extend(more);
    wait_stored_once(&b, "api", "r1", &acknowledged).await;

    // The tail resumed on a after the last record it had from b: each
    // acknowledged line once, and nothing more.
    let mut seen = seen_on_b.await.unwrap();
    let last = seen.last().unwrap().id.clone();
    let mut on_a = Box::pin(a.client.tail(&r1, Some(&last)).await.unwrap());
    while seen.len() < acknowledged.len() {
        let next = tokio::time::timeout(VISIBLE_WITHIN, on_a.next()).await;
        let record = next
            .unwrap_or_else(|_| panic!("{} of {} lines tailed", seen.len(), acknowledged.len()))
            .expect("the tail goes on")
            .expect("a record");
        seen.push(record);
    }
    let mut times: BTreeMap<u64, usize> = BTreeMap::new();
    for record in &seen {
        let seq = record
            .message
            .strip_prefix("r1 ")
            .and_then(|rest| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("a record of the test: {record:?}"));
        *times.entry(seq).or_default() += 1;
    }
    let tailed: Vec<u64> = times.keys().copied().collect();
    let mut want = acknowledged.clone();
    want.sort_unstable();
    assert_eq!(tailed, want, "the lines tailed on b then a");
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tailed twice: {twice:?}");
    let more = tokio::time::timeout(Duration::from_secs(2), on_a.next()).await;
    assert!(more.is_err(), "an extra record: {more:?}");
}
