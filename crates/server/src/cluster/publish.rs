//! The ingest pipeline's cluster sink: an accepted batch goes to the
//! replicated stream, on its partition's subject, as one message or a few
//! ([`message::encode_within`] the servers' `max_payload`), each with its
//! `Nats-Msg-Id`; the sender is answered only once JetStream has
//! acknowledged every one (stored on a majority of its replicas).

use std::sync::Arc;

use async_nats::jetstream::message::PublishMessage;
use tailwater_model::wire::{IngestBatch, IngestResponse};

use super::message::{self, Envelope};
use super::stats::Stats;
use super::{Cluster, ClusterConfig};

/// Why a batch was not published; the sender sends it again later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PublishFailed(String);

/// Publishes accepted batches; blocking, like the rest of the pipeline.
pub struct Publisher {
    cluster: Cluster,
    runtime: tokio::runtime::Handle,
    stats: Arc<Stats>,
}

impl Publisher {
    /// A publisher over `cluster`, driving its futures on `runtime` (the
    /// pipeline runs on blocking threads).
    pub fn new(cluster: Cluster, runtime: tokio::runtime::Handle, stats: Arc<Stats>) -> Publisher {
        Publisher {
            cluster,
            runtime,
            stats,
        }
    }

    /// Publishes `batch` of `tenant`, whose records are older than
    /// `retention` are refused where it is stored; `batch_id` is
    /// [`message::batch_id`] of the batch as its sender sent it. Blocking:
    /// call it off the async threads.
    pub fn publish(
        &self,
        tenant: &str,
        batch: IngestBatch,
        retention: std::time::Duration,
        batch_id: &str,
    ) -> Result<IngestResponse, PublishFailed> {
        let records = batch.records.len();
        let partition = message::partition_of(
            tenant,
            &batch.app,
            &batch.runner,
            self.cluster.config.partitions,
        );
        let envelope = Envelope {
            tenant: tenant.to_owned(),
            retention_secs: retention.as_secs(),
            batch,
        };
        // Room for the headers (the message id) within max_payload.
        let max_bytes = self.cluster.max_payload().saturating_sub(256).max(1);
        let messages = message::encode_within(&envelope, max_bytes);
        let subject = ClusterConfig::subject(partition);
        let timeout = self.cluster.config.publish_timeout;
        let jetstream = &self.cluster.jetstream;
        let count = messages.len();
        let published = self.runtime.block_on(async {
            let mut duplicates = 0;
            for (index, payload) in messages.into_iter().enumerate() {
                let mut publish = PublishMessage::build().payload(payload.into());
                // An empty batch is a runner's heartbeat: it has no identity
                // (a duplicate is harmless), and every one must reach the
                // runner tables.
                if records > 0 {
                    publish = publish.message_id(message::message_id(batch_id, index));
                }
                let acked = async {
                    let ack = jetstream.send_publish(subject.clone(), publish).await?;
                    ack.await
                };
                let ack = match tokio::time::timeout(timeout, acked).await {
                    Ok(Ok(ack)) => ack,
                    Ok(Err(error)) => return Err(PublishFailed(error.to_string())),
                    Err(_) => {
                        return Err(PublishFailed(format!(
                            "no acknowledgement from JetStream within {timeout:?}"
                        )))
                    }
                };
                duplicates += usize::from(ack.duplicate);
            }
            Ok(duplicates)
        });
        let partition_stats = self.stats.partition(partition);
        match published {
            Ok(duplicate_messages) => {
                let all_duplicates = duplicate_messages == count;
                partition_stats.published(all_duplicates);
                // A batch JetStream already had is all duplicates (its
                // records were counted when it was first published); one
                // partly published before (some of its messages) counts
                // whole, as the store counts a partly stored batch.
                Ok(IngestResponse {
                    accepted: if all_duplicates { 0 } else { records },
                    duplicates: if all_duplicates { records } else { 0 },
                    ..IngestResponse::default()
                })
            }
            Err(failed) => {
                partition_stats.publish_failed();
                Err(failed)
            }
        }
    }
}
