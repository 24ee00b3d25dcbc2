//! `GET /v1/cluster`: what `tailwater cluster status` shows, read from the
//! real cluster.

use std::time::Instant;

use tailwater_model::wire::ClusterStatus;

use super::common::{batch, server, TOKEN};
use super::nats::NatsCluster;
use super::{node, runner_in_each_partition, Node, PARTITIONS, VISIBLE_WITHIN};

/// Asks `node` for the cluster's status until `done` holds of it.
pub(super) async fn wait_status(
    node: &Node,
    what: &str,
    done: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let status = node.client.cluster_status().await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "never {what}: {status:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn node_names(status: &ClusterStatus) -> Vec<&str> {
    status.nodes.iter().map(|node| node.node.as_str()).collect()
}

/// Every partition has messages and every live node's consumer of it has
/// stored (acknowledged) all of them.
fn all_materialized(status: &ClusterStatus) -> bool {
    status.partitions.iter().all(|partition| {
        partition.last_sequence > 0
            && partition.consumers.len() == status.nodes.len()
            && partition.consumers.iter().all(|consumer| {
                consumer.error.is_none()
                    && consumer.pending == 0
                    && consumer.ack_pending == 0
                    // Stream sequences: JetStream moves a filtered
                    // consumer past other partitions' messages too.
                    && consumer.ack_floor >= partition.last_sequence
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_node_and_partition_and_drops_a_node_that_stops() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    // A line in every partition, shipped to either node.
    for (n, runner) in runner_in_each_partition().iter().enumerate() {
        let to = if n % 2 == 0 { &a } else { &b };
        let answer = to.client.ingest(&batch("api", runner, 0..5)).await.unwrap();
        assert_eq!(answer.accepted, 5);
    }

    let status = wait_status(&a, "both nodes with nothing pending", |status| {
        node_names(status) == ["a", "b"] && all_materialized(status)
    })
    .await;
    assert_eq!(status.mode, "cluster");
    assert_eq!(status.node.as_deref(), Some("a"));
    let partitions: Vec<u32> = status.partitions.iter().map(|p| p.partition).collect();
    assert_eq!(partitions, (0..PARTITIONS).collect::<Vec<_>>());
    for partition in &status.partitions {
        let consumers: Vec<&str> = partition
            .consumers
            .iter()
            .map(|c| c.consumer.as_str())
            .collect();
        // Each node reads every partition through its one consumer.
        assert_eq!(consumers, ["a-stream", "b-stream"]);
    }
    for node in &status.nodes {
        assert!(node.url.starts_with("http://127.0.0.1:"), "{node:?}");
        // Heartbeats every quarter of the 2 s TTL.
        assert!(node.heartbeat_age_ms < 2_000, "{node:?}");
    }
    // The other node sees the same cluster, as itself.
    let seen_by_b = wait_status(&b, "both nodes with nothing pending", all_materialized).await;
    assert_eq!(seen_by_b.node.as_deref(), Some("b"));
    assert_eq!(node_names(&seen_by_b), ["a", "b"]);

    b.server.shutdown().await.unwrap();
    let status = wait_status(&a, "b dropped", |status| node_names(status) == ["a"]).await;
    for partition in &status.partitions {
        let consumers: Vec<&str> = partition
            .consumers
            .iter()
            .map(|c| c.node.as_str())
            .collect();
        assert_eq!(consumers, ["a"]);
    }
}

#[tokio::test]
async fn an_embedded_server_says_so() {
    let (_dir, server, _client) = server(16).await;
    let (status, body) = super::common::call(&server, "GET", "/v1/cluster", TOKEN, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"mode": "embedded"}));
}
