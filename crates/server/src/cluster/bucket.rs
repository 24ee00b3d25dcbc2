//! The cluster's key-value buckets (`TAILWATER_NODES`, the heartbeats;
//! `TAILWATER_REGISTRY`, the shared registry), made by hand as nats-server
//! makes a bucket's stream: `KV_<name>` over `$KV.<name>.>`, one value per
//! key, rollups, deletes denied, direct gets. async-nats 0.46's
//! `create_key_value` first reads the account's information, which it
//! cannot parse from a 2.9 server; `get_key_value` then opens it.

use std::time::Duration;

use async_nats::jetstream::{kv, stream};

use super::Cluster;

/// What differs between the buckets.
pub struct Bucket {
    pub name: &'static str,
    pub description: &'static str,
    /// How long a value lives (`None`: until replaced); 2.9 has
    /// bucket-wide TTLs only.
    pub ttl: Option<Duration>,
}

/// Makes the bucket on first use (R = `--nats-replicas`) and opens it. A
/// JetStream still electing its meta leader, or the new stream's, is
/// waited for up to three publish timeouts.
pub async fn open(cluster: &Cluster, bucket: &Bucket) -> anyhow::Result<kv::Store> {
    let config = &cluster.config;
    let name = bucket.name;
    let ttl = bucket.ttl.unwrap_or_default();
    let stream = stream::Config {
        name: format!("KV_{name}"),
        description: Some(bucket.description.to_owned()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: ttl,
        duplicate_window: if ttl.is_zero() {
            Duration::from_secs(120)
        } else {
            ttl.min(Duration::from_secs(120))
        },
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + config.publish_timeout * 3;
    loop {
        match cluster.jetstream.get_or_create_stream(stream.clone()).await {
            Ok(_) => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, bucket = name, "waiting for JetStream to make a key-value bucket");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => anyhow::bail!("cannot make the key-value bucket {name}: {error}"),
        }
    }
    cluster
        .jetstream
        .get_key_value(name)
        .await
        .map_err(|error| anyhow::anyhow!("cannot open the key-value bucket {name}: {error}"))
}
