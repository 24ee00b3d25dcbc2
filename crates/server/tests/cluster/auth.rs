//! NATS credentials beyond the URL (`--nats-nkey`, `--nats-creds`)
//! against real nats-servers: a node given its nkey user's seed joins and
//! stores what is shipped to it; one given a seed the servers do not know
//! is refused at start saying what to check. A creds file (a user JWT and
//! its seed) against servers in operator mode, with an operator, account
//! and user chain signed here: the node joins and stores; a user signed by
//! an account the servers do not know is refused at start.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nkeys::KeyPair;
use tailwater_server::cluster::{Cluster, ClusterConfig};

use super::common::{batch, server_in, TOKEN};
use super::nats::{nkey_accounts, NatsCluster};
use super::operator::OperatorMode;
use super::{wait_stored_once, Node, PARTITIONS};

/// `text` in `dir/name`, readable by its owner only (as tailwater asks).
fn secret(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The tests' cluster settings on `nats`, as the user in `creds` or
/// `nkey`.
fn config(
    nats: &NatsCluster,
    name: &str,
    creds: Option<PathBuf>,
    nkey: Option<PathBuf>,
) -> ClusterConfig {
    let mut cluster = ClusterConfig::new(nats.urls(), name.to_owned());
    cluster.creds = creds;
    cluster.nkey = nkey;
    cluster.partitions = PARTITIONS;
    cluster.max_bytes = 256 * 1024 * 1024;
    cluster.node_ttl = Duration::from_secs(2);
    cluster.publish_timeout = Duration::from_secs(5);
    cluster
}

/// A node started with `cluster`.
async fn node_with(cluster: ClusterConfig) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), TOKEN, |config| {
        config.cluster = Some(cluster);
    })
    .await;
    Node {
        _dir: dir,
        server,
        client,
    }
}

/// Ships a batch to `node` and waits until it stored it (through the
/// stream, so NATS took the node's credentials for writing and reading).
async fn ships_and_stores(node: &Node) {
    let answer = node
        .client
        .ingest(&batch("api", "r1", 0..20))
        .await
        .unwrap();
    assert_eq!(answer.accepted, 20);
    let seqs: Vec<u64> = (0..20).collect();
    wait_stored_once(node, "api", "r1", &seqs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_its_nkey_joins_and_a_wrong_seed_is_refused_at_start() {
    let node_key = KeyPair::new_user();
    let agent_key = KeyPair::new_user();
    let nats = NatsCluster::start_with(
        3,
        &nkey_accounts(&node_key.public_key(), &agent_key.public_key()),
    );
    let dir = tempfile::tempdir().unwrap();

    let seed = secret(dir.path(), "node.nk", &node_key.seed().unwrap());
    let a = node_with(config(&nats, "a", None, Some(seed))).await;
    ships_and_stores(&a).await;

    // A user the servers do not know: refused, at start, saying what.
    let stranger = secret(
        dir.path(),
        "stranger.nk",
        &KeyPair::new_user().seed().unwrap(),
    );
    let refused = Cluster::connect(config(&nats, "b", None, Some(stranger)))
        .await
        .err()
        .expect("a node with an unknown nkey joined");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("the NATS servers refused this node's credentials")
            && refused.contains("authorization violation")
            && refused.contains("--nats-nkey"),
        "{refused}"
    );

    // Credentials in the URL as well: refused before NATS is asked.
    let seed = secret(dir.path(), "again.nk", &node_key.seed().unwrap());
    let mut both = config(&nats, "c", None, Some(seed));
    both.urls = nats.urls_as("node", "nodepw");
    let refused = Cluster::connect(both).await.err().expect("both taken");
    assert!(
        refused
            .to_string()
            .contains("take user:password@ out of the URLs"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_creds_file_joins_servers_in_operator_mode() {
    let mode = OperatorMode::new();
    let nats = NatsCluster::start_with(3, &mode.config());
    let dir = tempfile::tempdir().unwrap();

    let file = secret(
        dir.path(),
        "node.creds",
        &OperatorMode::creds(&mode.account, &[], &[]),
    );
    let a = node_with(config(&nats, "a", Some(file), None)).await;
    ships_and_stores(&a).await;

    // A user of an account the servers do not know.
    let file = secret(
        dir.path(),
        "stranger.creds",
        &OperatorMode::creds(&KeyPair::new_account(), &[], &[]),
    );
    let refused = Cluster::connect(config(&nats, "b", Some(file), None))
        .await
        .err()
        .expect("a node of an unknown account joined");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("the NATS servers refused this node's credentials")
            && refused.contains("--nats-creds"),
        "{refused}"
    );
}
