//! `GET /v1/cluster`: distributed mode as this node sees it.

use serde::{Deserialize, Serialize};

/// `GET /v1/cluster` (admin tokens only). A server without `--nats`
/// answers `{"mode": "embedded"}` and nothing else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `cluster` (distributed mode) or `embedded` (a server on its own).
    pub mode: String,
    /// The node that answered (`--node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Nodes whose heartbeat is younger than `--nats-node-ttl`, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ClusterNode>,
    /// Every partition of the stream, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<ClusterPartition>,
}

/// A live node, as its heartbeat says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub node: String,
    /// Where its HTTP API listens.
    pub url: String,
    pub version: String,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// How long ago its last heartbeat was stored (ms, by the NATS
    /// server's clock against this node's).
    pub heartbeat_age_ms: u64,
    /// The newest revision of the cluster's shared registry the node had
    /// applied at its last heartbeat (0 from nodes that do not say).
    #[serde(default)]
    pub registry_revision: u64,
}

/// One partition of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterPartition {
    pub partition: u32,
    /// The stream sequence of the partition's last message (0: none yet).
    pub last_sequence: u64,
    /// Each live node's consumer of it (`<node>-p<partition>`).
    pub consumers: Vec<ClusterConsumer>,
}

/// A node's consumer of one partition, as JetStream says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterConsumer {
    pub node: String,
    /// `<node>-p<partition>`.
    pub consumer: String,
    /// The stream sequence last delivered to the node. JetStream moves a
    /// consumer past other partitions' messages, so this (and `ack_floor`)
    /// may be above the partition's `last_sequence`.
    pub delivered: u64,
    /// The stream sequence up to which the node acknowledged everything:
    /// at or above `last_sequence`, with `pending` and `ack_pending` 0,
    /// the node has stored the whole partition.
    pub ack_floor: u64,
    /// Messages of the partition not yet delivered to the node.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged (being stored).
    pub ack_pending: u64,
    /// Why JetStream gave no figures (the consumer is missing, or the
    /// cluster did not answer); the figures are then 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Stretches of the stream the node found gone before it had read
    /// them (past the replay window, `--nats-max-age`/`--nats-max-bytes`):
    /// the partition's messages among them are missing from its store.
    /// The node says so in its heartbeat; kept until its data is removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<ClusterGap>,
}

/// Stream sequences `from_sequence..=to_sequence` (of all partitions) left
/// the stream before a node read them; the partition's messages among them
/// never reached the node's store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterGap {
    pub partition: u32,
    pub from_sequence: u64,
    pub to_sequence: u64,
    /// When the node found it (ms since the epoch).
    pub detected_ms: i64,
    /// When the node had filled it from a live peer's store (ms since the
    /// epoch): every record of the partition that peer held is stored
    /// here too (once). Absent while it is not repaired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_ms: Option<i64>,
    /// The peer it was repaired from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired_from: Option<String>,
}

/// One page of a partition's records, as a node serves them to a peer
/// repairing a gap (`GET /internal/v1/cluster/records`, node credential
/// only): every tenant's, grouped by stream, each record with its
/// identity (tenant, app, runner, boot, seq) and everything stored of it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairPage {
    /// The node that served it (`--node`): a repairing node checks it is
    /// the peer it meant to ask, not one its heartbeat's URL happens to
    /// reach (a node listening on 0.0.0.0 says so in its URL).
    #[serde(default)]
    pub node: String,
    pub batches: Vec<RepairBatch>,
    /// Where the next page starts; `None` when this page was the last.
    #[serde(default)]
    pub next: Option<RepairCursor>,
    /// Blocks of the serving node's store that could not be read (damaged)
    /// and were skipped: a page with any is not the whole partition.
    #[serde(default)]
    pub skipped_blocks: u64,
}

/// Records of one stream of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepairBatch {
    pub tenant: String,
    pub batch: crate::wire::IngestBatch,
}

/// One page of a stretch of the stream's records, as a node that stored
/// them at the ids the stream gives serves them to a peer filling the same
/// stretch in order (`GET /internal/v1/cluster/stream-records`, node
/// credential only): every tenant's, in id order, in runs of consecutive
/// ids of one stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamPage {
    /// The node that served it, as [`RepairPage::node`].
    #[serde(default)]
    pub node: String,
    pub runs: Vec<StreamRun>,
    /// The id the next page starts after; `None` when this page was the
    /// last.
    #[serde(default)]
    pub next_after: Option<u64>,
    /// Blocks of the serving node's store that could not be read (damaged)
    /// and were skipped: a page with any is not the whole stretch.
    #[serde(default)]
    pub skipped_blocks: u64,
}

/// Records of one stream of one tenant whose ids follow each other: record
/// `i` of `batch` has the id `first + i`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamRun {
    pub tenant: String,
    pub first: u64,
    pub batch: crate::wire::IngestBatch,
}

/// Where a page of a partition's records starts: the tenant (in name
/// order), and in it after this time-order position of the serving node's
/// store (none: from its first record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairCursor {
    pub tenant: String,
    #[serde(default)]
    pub after_ts_ns: Option<i64>,
    #[serde(default)]
    pub after_position: Option<u64>,
}
