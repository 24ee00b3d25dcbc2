//! Membership: every node puts a heartbeat under `node.<name>` in the
//! key-value bucket [`BUCKET`] every quarter of `--nats-node-ttl`; the
//! bucket keeps each value for the TTL (nats-server 2.9 has bucket-wide
//! TTLs, not per key), so a node that stops (or is killed, or frozen)
//! drops out of [`Members::live`] within the TTL, and one that shuts down
//! deletes its own key at once. The first slice counts live nodes
//! (`tailwater_cluster_nodes`); partition assignment by compare-and-set
//! on `assign.<partition>` keys builds on it (ARCHITECTURE.md).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::stats::Stats;
use super::window::Gaps;
use super::Cluster;
use crate::access::registry::Registry;

/// The bucket of heartbeats (and, next, of partition assignments).
pub const BUCKET: &str = "TAILWATER_NODES";

/// What a node says of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    /// Where its HTTP API listens.
    pub url: String,
    /// When it started (ms since the epoch): a restart is a new life.
    pub started_ms: i64,
    pub version: String,
    /// The newest revision of the shared registry this node had applied
    /// (`cluster::registry`).
    #[serde(default)]
    pub registry_revision: u64,
    /// Messages the stream dropped before this node read them
    /// ([`super::window`]), so every node's status shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<tailwater_model::wire::ClusterGap>,
}

/// This node in the bucket.
pub struct Members {
    bucket: kv::Store,
    me: Heartbeat,
    interval: Duration,
    stats: Arc<Stats>,
    registry: Arc<Registry>,
    gaps: Arc<Gaps>,
}

impl Members {
    /// Opens the bucket (made on first use) for the node `cluster` is
    /// configured as, listening at `url`.
    pub async fn join(
        cluster: &Cluster,
        url: String,
        stats: Arc<Stats>,
        registry: Arc<Registry>,
        gaps: Arc<Gaps>,
    ) -> anyhow::Result<Members> {
        let config = &cluster.config;
        // The bucket's TTL is the heartbeats': a node that stops putting
        // its own drops out within it.
        let bucket = super::bucket::Bucket {
            name: BUCKET,
            description: "tailwater nodes: heartbeats",
            ttl: Some(config.node_ttl),
        };
        let bucket = super::bucket::open(cluster, &bucket).await?;
        Ok(Members {
            bucket,
            me: Heartbeat {
                node: config.node.clone(),
                url,
                started_ms: jiff::Timestamp::now().as_millisecond(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                registry_revision: 0,
                gaps: Vec::new(),
            },
            interval: (config.node_ttl / 4).max(Duration::from_millis(100)),
            stats,
            registry,
            gaps,
        })
    }

    fn key(&self) -> String {
        format!("node.{}", self.me.node)
    }

    /// The nodes whose heartbeat is younger than the TTL.
    pub async fn live(&self) -> anyhow::Result<Vec<Heartbeat>> {
        Ok(live_in(&self.bucket)
            .await?
            .into_iter()
            .map(|(heartbeat, _)| heartbeat)
            .collect())
    }

    /// Beats until `stopping`, then leaves (deletes its key).
    pub fn spawn(mut self, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.interval);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopping.wait_for(|stopping| *stopping) => break,
                }
                self.me.registry_revision = self.registry.applied_revision();
                self.me.gaps = self.gaps.list();
                let value = serde_json::to_vec(&self.me).expect("a heartbeat serializes");
                if let Err(error) = self.bucket.put(self.key(), value.into()).await {
                    tracing::warn!(%error, "cannot put this node's heartbeat; others may take it for gone");
                }
                match self.live().await {
                    Ok(live) => self.stats.live_nodes.store(live.len() as u64, Relaxed),
                    Err(error) => tracing::debug!(%error, "cannot list the live nodes"),
                }
            }
            if let Err(error) = self.bucket.delete(self.key()).await {
                tracing::debug!(%error, "cannot delete this node's heartbeat; it expires");
            }
        })
    }
}

/// Opens the bucket of heartbeats (made by [`Members::join`]).
pub async fn open(cluster: &Cluster) -> anyhow::Result<kv::Store> {
    cluster
        .jetstream
        .get_key_value(BUCKET)
        .await
        .map_err(|error| anyhow::anyhow!("cannot open the key-value bucket {BUCKET}: {error}"))
}

/// How long one listing of the heartbeats may take. Listing keys reads
/// them through an ordered consumer that can wait forever for a key that
/// expired (or was put again) while it was listed (seen against
/// nats-server 2.9 with a node frozen and resumed): such a listing is
/// given up and made again.
const LIST_WITHIN: Duration = Duration::from_secs(3);
/// Listings tried before the heartbeats are said to be unreadable.
const LIST_ATTEMPTS: u32 = 3;

/// The heartbeats in `bucket` younger than its TTL, each with when the
/// NATS server stored it (ms since the epoch).
pub async fn live_in(bucket: &kv::Store) -> anyhow::Result<Vec<(Heartbeat, i64)>> {
    for attempt in 1..LIST_ATTEMPTS {
        match tokio::time::timeout(LIST_WITHIN, list(bucket)).await {
            Ok(listed) => return listed,
            Err(_) => tracing::debug!(
                attempt,
                "listing the nodes' heartbeats did not end within {LIST_WITHIN:?}; listing again"
            ),
        }
    }
    tokio::time::timeout(LIST_WITHIN, list(bucket))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "cannot list the nodes' heartbeats in {BUCKET} within {LIST_WITHIN:?}, {LIST_ATTEMPTS} times"
            )
        })?
}

async fn list(bucket: &kv::Store) -> anyhow::Result<Vec<(Heartbeat, i64)>> {
    let mut keys = bucket.keys().await?;
    let mut live = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        if !key.starts_with("node.") {
            continue;
        }
        if let Some(entry) = bucket.entry(&key).await? {
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match serde_json::from_slice(&entry.value) {
                Ok(heartbeat) => {
                    let stored_ms = entry.created.unix_timestamp_nanos() / 1_000_000;
                    live.push((heartbeat, i64::try_from(stored_ms).unwrap_or(0)));
                }
                Err(error) => tracing::warn!(key, %error, "a heartbeat this node cannot read"),
            }
        }
    }
    Ok(live)
}
