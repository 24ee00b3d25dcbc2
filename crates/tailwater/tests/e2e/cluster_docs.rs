//! docs/cluster.md's NATS configuration is real: three servers started
//! from its `conf` block (its ports moved to free loopback ones, its store
//! into a temporary directory, the routes to those) make a JetStream
//! cluster a tailwater node runs on.

use std::time::Duration;

use super::cluster::nats::{free_port, NatsCluster};
use super::cluster::{expected, lines, node, ship};
use super::common::wait_for;
use super::readme::blocks;

/// `text` with `from` replaced by `to`, which must be there.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "docs/cluster.md's configuration has no {from:?}: {text}"
    );
    text.replace(from, to)
}

#[test]
fn the_ops_pages_nats_configuration_makes_a_cluster_a_node_runs_on() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/cluster.md"
    ))
    .expect("docs/cluster.md");
    let block = blocks(&page, "```conf").join("\n");
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let (client, a) = free_port();
        let (monitor, b) = free_port();
        let (route, c) = free_port();
        held.extend([a, b, c]);
        ports.push((client, monitor, route));
    }
    let configs = ports
        .iter()
        .enumerate()
        .map(|(index, &(client, monitor, route))| {
            let name = format!("nats-{}", index + 1);
            let mut text = replaced(
                &block,
                "server_name: nats-1",
                &format!("server_name: {name}"),
            );
            text = replaced(&text, "0.0.0.0:4222", &format!("127.0.0.1:{client}"));
            text = replaced(&text, "127.0.0.1:8222", &format!("127.0.0.1:{monitor}"));
            text = replaced(&text, "0.0.0.0:6222", &format!("127.0.0.1:{route}"));
            text = replaced(&text, "/var/lib/nats/jetstream", "{dir}");
            for (peer, &(_, _, peer_route)) in ports.iter().enumerate() {
                text = replaced(
                    &text,
                    &format!("nats-route://nats-{}:6222", peer + 1),
                    &format!("nats-route://127.0.0.1:{peer_route}"),
                );
            }
            (name, text, client, monitor)
        })
        .collect();
    drop(held);
    let nats = NatsCluster::with_configs(configs);

    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", &nats);
    ship(&a, 0..10);
    wait_for(
        "the node to store what it took",
        Duration::from_secs(30),
        || lines(&a) == expected(0..10),
    );
}
