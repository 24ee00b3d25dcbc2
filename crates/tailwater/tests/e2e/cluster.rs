//! Distributed mode with the real binary: `tailwater server --nats …
//! --node …` on a real three-server NATS cluster (the server's tests'
//! harness). A node killed with kill -9 right after acknowledging lines
//! loses none of them: the other node reads them from the stream, and the
//! killed node, started again over its data, catches up on what it
//! missed, each line once. Its heartbeat lapses meanwhile, and the other
//! node sees it gone; `tailwater cluster status` shows both nodes, every
//! partition read by both, then the killed one gone. A live tail
//! (`tailwater logs -f` given both nodes, the doomed one first) moves to
//! the other node and prints every acknowledged line once.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

// The server's tests use all of it, these some.
#[allow(dead_code)]
#[path = "../../../server/tests/cluster/nats.rs"]
pub mod nats;

use super::common::{http, ingest_batch, wait_for, Follower, TestServer, ANY_PORT, TOKEN};
use nats::NatsCluster;

/// A node named `name` with its data under `dir`.
pub(super) fn node(dir: &Path, name: &str, nats: &NatsCluster) -> TestServer {
    // Within the test servers' 1 GB of file storage.
    node_with(dir, name, nats, "268435456")
}

/// [`node`] with the stream's replay window held to `max_bytes` (the
/// first node to start makes the stream).
pub(super) fn node_with(dir: &Path, name: &str, nats: &NatsCluster, max_bytes: &str) -> TestServer {
    let urls = nats.urls().join(",");
    let flags = [
        "--nats",
        &urls,
        "--node",
        name,
        "--nats-partitions",
        "4",
        "--nats-max-bytes",
        max_bytes,
        "--nats-node-ttl",
        "2s",
    ];
    TestServer::start_on_with(ANY_PORT, &dir.join(name), &flags)
}

/// The lines of app `api` a node holds, checking each is there once.
pub(super) fn lines(node: &TestServer) -> BTreeSet<String> {
    let records = node.logs(&["--app", "api"]);
    let lines: BTreeSet<String> = records
        .iter()
        .map(|record| record["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(lines.len(), records.len(), "a line stored twice");
    lines
}

/// The live nodes `node` counts (`tailwater_cluster_nodes`).
pub(super) fn live_nodes(node: &TestServer) -> u64 {
    let (status, metrics) = http("GET", node.port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("tailwater_cluster_nodes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tailwater_cluster_nodes in {metrics}"))
}

/// `tailwater cluster status --json` of `node`.
pub(super) fn cluster_status(node: &TestServer) -> serde_json::Value {
    let output = node
        .command(&["cluster", "status", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tailwater cluster status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

pub(super) fn node_names(status: &serde_json::Value) -> Vec<&str> {
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| node["node"].as_str().unwrap())
        .collect()
}

/// Every partition of the 4 has every live node's consumer with nothing
/// pending.
fn nothing_pending(status: &serde_json::Value) -> bool {
    let partitions = status["partitions"].as_array().unwrap();
    partitions.len() == 4
        && partitions.iter().all(|partition| {
            let consumers = partition["consumers"].as_array().unwrap();
            consumers.len() == node_names(status).len()
                && consumers
                    .iter()
                    .all(|consumer| consumer["pending"] == 0 && consumer["ack_pending"] == 0)
        })
}

/// Waits until `follower` printed each line of `want` (the records whose
/// message starts with `line `), and no other, each once.
pub(super) fn wait_printed_once(follower: &mut Follower, want: &BTreeSet<String>) {
    wait_for(
        "the follower to print every acknowledged line",
        Duration::from_secs(90),
        || {
            assert!(
                follower.running(),
                "the follower ended: {}",
                follower.stderr()
            );
            let printed = follower.printed("line ");
            let twice: Vec<_> = printed.iter().filter(|(_, times)| **times > 1).collect();
            assert!(twice.is_empty(), "printed twice: {twice:?}");
            let unknown: Vec<_> = printed
                .keys()
                .filter(|line| !want.contains(*line))
                .collect();
            assert!(unknown.is_empty(), "never acknowledged: {unknown:?}");
            printed.len() == want.len()
        },
    );
}

/// Waits until `follower`'s live tail is open on `node`.
pub(super) fn wait_following(follower: &mut Follower, node: &TestServer) {
    wait_for("the follower's live tail", Duration::from_secs(30), || {
        assert!(
            follower.running(),
            "the follower ended: {}",
            follower.stderr()
        );
        node.tail_clients() == 1
    });
}

pub(super) fn expected(seqs: std::ops::Range<u64>) -> BTreeSet<String> {
    seqs.map(|seq| format!("line {seq}")).collect()
}

pub(super) fn ship(node: &TestServer, seqs: std::ops::Range<u64>) {
    let body = ingest_batch("api", "r1", seqs);
    let (status, answer) = http("POST", node.port, "/v1/ingest", Some(TOKEN), Some(&body));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_node_killed_after_acknowledging_loses_nothing_and_catches_up_when_it_returns() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", &nats);
    let b = node(dir.path(), "b", &nats);

    wait_for("b to see both nodes", Duration::from_secs(30), || {
        live_nodes(&b) == 2
    });
    // A live tail of both, on a (to be killed) first.
    let a_url = a.url();
    let servers = format!("{a_url},{}", b.url());
    let mut follower = Follower::start(&b, &servers, "api", &[]);
    wait_following(&mut follower, &a);
    ship(&a, 0..100);
    // `tailwater cluster status`: both nodes, every partition read by both.
    wait_for(
        "cluster status to show both nodes with nothing pending",
        Duration::from_secs(60),
        || {
            let status = cluster_status(&b);
            node_names(&status) == ["a", "b"] && nothing_pending(&status)
        },
    );
    let table = b.command(&["cluster", "status"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("answered by node b"), "{table}");
    assert!(table.contains("2 live"), "{table}");
    for consumer in ["a-stream", "b-stream"] {
        assert!(table.contains(consumer), "{table}");
    }
    a.kill_9();
    // Its heartbeat lapses (--nats-node-ttl).
    wait_for("b to see a gone", Duration::from_secs(30), || {
        live_nodes(&b) == 1 && node_names(&cluster_status(&b)) == ["b"]
    });
    wait_for(
        "node b to hold what a acknowledged",
        Duration::from_secs(60),
        || lines(&b) == expected(0..100),
    );

    ship(&b, 100..200);
    let a = node(dir.path(), "a", &nats);
    wait_for("node a to catch up", Duration::from_secs(60), || {
        lines(&a) == expected(0..200)
    });
    assert_eq!(lines(&b), expected(0..200));
    // The tail moved to b with the last line it printed, and went on there.
    wait_printed_once(&mut follower, &expected(0..200));
    let said = follower.stderr();
    assert!(
        said.contains(&format!("{a_url} ")) && said.contains(&format!("following {} now", b.url())),
        "the follower did not say it moved: {said}"
    );
}
