//! The shared registry: tenants, apps, hashed tokens and the seal key are
//! the same on every node, kept in the key-value bucket [`BUCKET`] (a key
//! per tenant, app and token: `access::registry::replica` has the keys and
//! how a change is decided and written by compare-and-set). Every node
//! watches the bucket into its own registry, so token checks stay local
//! (and go on while NATS is unreachable); a write waits for the watch to
//! apply it here.
//!
//! A bucket of keys, not a stream of the journal: each key's revision is
//! what compare-and-set needs (`Nats-Expected-Last-Subject-Sequence`), and
//! the bucket keeps one value per key, so a node catching up reads the
//! registry's size, not its history.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Cluster;
use crate::access::registry::replica::{self, Entry, Replication, WriteFailed, SEAL_KEY};
use crate::access::registry::{seal, Registry};

/// The bucket of the shared registry.
pub const BUCKET: &str = "TAILWATER_REGISTRY";
/// Values the watch applies at once (one journal fsync for them all).
const APPLY_AT_ONCE: usize = 512;
/// How long the watch waits before it is made again after it failed
/// (NATS unreachable).
const REWATCH_AFTER: Duration = Duration::from_secs(1);

/// The bucket, as a registry writes to it (blocking).
pub struct SharedRegistry {
    bucket: kv::Store,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

/// Opens the bucket, made on first use: one value per key, no TTL, never
/// deleted from.
pub async fn open(cluster: &Cluster) -> anyhow::Result<kv::Store> {
    let bucket = super::bucket::Bucket {
        name: BUCKET,
        description: "tailwater registry: tenants, apps, hashed tokens",
        ttl: None,
    };
    super::bucket::open(cluster, &bucket).await
}

/// The key sealing record ids is the cluster's: the first node puts its
/// own (create); every other adopts the one there, replacing its own in
/// `dir` (ids and cursors it handed out before no longer open). A bucket
/// just made may not take writes until its stream has a leader (several
/// nodes starting at once on a loaded machine): failures other than "it
/// exists" are tried again for `patience`, which is safe because a create
/// that did land is then found as the cluster's key, equal to this one.
pub async fn share_seal_key(
    bucket: &kv::Store,
    registry: &mut Registry,
    dir: &std::path::Path,
    patience: Duration,
) -> anyhow::Result<()> {
    let mine = seal::read_bytes(dir)?;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match bucket.create(SEAL_KEY, mine.clone().into()).await {
            Ok(_) => {
                tracing::info!("this node's seal key is now the cluster's");
                return Ok(());
            }
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => break,
            Err(error) if tokio::time::Instant::now() < deadline => {
                tracing::info!(%error, "waiting for the registry's bucket to take the seal key");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => anyhow::bail!("cannot share the seal key through {BUCKET}: {error}"),
        }
    }
    let theirs = bucket
        .get(SEAL_KEY)
        .await
        .map_err(|error| anyhow::anyhow!("cannot read the cluster's seal key: {error}"))?
        .ok_or_else(|| anyhow::anyhow!("the cluster's seal key was deleted from {BUCKET}: restore it (key `seal`) from a node's auth/seal.key"))?;
    if theirs.as_ref() != mine.as_slice() {
        registry.adopt_seal_key(dir, &theirs)?;
        tracing::warn!("this node had a seal key of its own: it now uses the cluster's, and record ids and cursors it handed out before no longer open (clients start their reads again)");
    }
    Ok(())
}

impl SharedRegistry {
    pub fn new(bucket: kv::Store, cluster: &Cluster) -> SharedRegistry {
        SharedRegistry {
            bucket,
            runtime: tokio::runtime::Handle::current(),
            timeout: cluster.config.publish_timeout,
        }
    }
}

impl Replication for SharedRegistry {
    fn write(&self, key: &str, value: Vec<u8>, expected: Option<u64>) -> Result<u64, WriteFailed> {
        let timeout = self.timeout;
        self.runtime.block_on(async {
            let written = async {
                match expected {
                    None => {
                        self.bucket
                            .create(key, value.into())
                            .await
                            .map_err(|error| match error.kind() {
                                kv::CreateErrorKind::AlreadyExists => WriteFailed::Conflict,
                                _ => WriteFailed::Unavailable(error.to_string()),
                            })
                    }
                    Some(revision) => self
                        .bucket
                        .update(key, value.into(), revision)
                        .await
                        .map_err(|error| match error.kind() {
                            kv::UpdateErrorKind::WrongLastRevision => WriteFailed::Conflict,
                            _ => WriteFailed::Unavailable(error.to_string()),
                        }),
                }
            };
            tokio::time::timeout(timeout, written)
                .await
                .unwrap_or_else(|_| {
                    Err(WriteFailed::Unavailable(format!(
                        "no answer from JetStream within {timeout:?}"
                    )))
                })
        })
    }

    fn revision(&self, key: &str) -> Result<Option<u64>, WriteFailed> {
        let timeout = self.timeout;
        self.runtime.block_on(async {
            match tokio::time::timeout(timeout, self.bucket.entry(key)).await {
                Ok(Ok(entry)) => Ok(entry.map(|entry| entry.revision)),
                Ok(Err(error)) => Err(WriteFailed::Unavailable(error.to_string())),
                Err(_) => Err(WriteFailed::Unavailable(format!(
                    "no answer from JetStream within {timeout:?}"
                ))),
            }
        })
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The newest revision in the bucket now (its stream's last sequence).
pub async fn newest_revision(cluster: &Cluster) -> anyhow::Result<u64> {
    let mut stream = cluster
        .jetstream
        .get_stream(format!("KV_{BUCKET}"))
        .await
        .map_err(|error| anyhow::anyhow!("cannot read the bucket {BUCKET}: {error}"))?;
    let info = stream
        .info()
        .await
        .map_err(|error| anyhow::anyhow!("cannot read the bucket {BUCKET}: {error}"))?;
    Ok(info.state.last_sequence)
}

/// Waits until this node's registry holds everything the bucket held when
/// called, up to `timeout`.
pub async fn catch_up(
    cluster: &Cluster,
    registry: &Arc<Registry>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let newest = newest_revision(cluster).await?;
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || replica::caught_up(&registry, newest, timeout)).await?
}

/// Watches the bucket into `registry` until `stopping`: first every key's
/// newest value, then each change as it is made. When the watch fails
/// (NATS unreachable) it is made again, from the revision after the last
/// applied, every [`REWATCH_AFTER`].
pub fn spawn_watch(
    bucket: kv::Store,
    registry: Arc<Registry>,
    mut stopping: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let applied = registry.applied_revision();
            let watched = if applied == 0 {
                bucket.watch_with_history(">").await
            } else {
                bucket.watch_all_from_revision(applied + 1).await
            };
            match watched {
                Ok(mut entries) => loop {
                    let first = tokio::select! {
                        entry = entries.next() => entry,
                        _ = stopping.wait_for(|stopping| *stopping) => return,
                    };
                    let mut batch = Vec::new();
                    let mut failed = None;
                    let mut next = first;
                    loop {
                        match next {
                            Some(Ok(entry)) => batch.push(Entry {
                                value: (entry.operation == kv::Operation::Put)
                                    .then(|| entry.value.to_vec()),
                                key: entry.key,
                                revision: entry.revision,
                                pending: entry.delta,
                            }),
                            Some(Err(error)) => {
                                failed = Some(error.to_string());
                                break;
                            }
                            None => {
                                failed = Some("the watch ended".to_owned());
                                break;
                            }
                        }
                        if batch.len() >= APPLY_AT_ONCE {
                            break;
                        }
                        match entries.next().now_or_never() {
                            Some(entry) => next = entry,
                            None => break,
                        }
                    }
                    let registry = registry.clone();
                    let applied =
                        tokio::task::spawn_blocking(move || registry.apply_replicated(&batch))
                            .await;
                    match applied {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::error!(error = %format!("{error:#}"), "cannot apply the cluster's registry changes here; watching again from the last applied");
                            break;
                        }
                        Err(panicked) => {
                            tracing::error!(%panicked, "applying the cluster's registry changes panicked");
                            break;
                        }
                    }
                    if let Some(why) = failed {
                        tracing::warn!(
                            why,
                            "the watch of the cluster's registry stopped; watching again"
                        );
                        break;
                    }
                },
                Err(error) => {
                    tracing::debug!(%error, "cannot watch the cluster's registry now; trying again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(REWATCH_AFTER) => {}
                _ = stopping.wait_for(|stopping| *stopping) => return,
            }
        }
    })
}
