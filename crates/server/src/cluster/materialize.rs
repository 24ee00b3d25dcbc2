//! Every node reads every partition of the stream into its own store (this
//! slice: each node a full replica, so every query stays local and whole),
//! through one durable pull consumer per partition named after the node
//! (`<node>-p<partition>`): after a restart it resumes where its
//! acknowledgements ended. A message is acknowledged only once its
//! records are durable in this node's store (cluster mode keeps the
//! store's `SyncEachBatch`); one delivered again (an acknowledgement lost
//! in a crash) is recognised by the store's sequence numbers and stored
//! once.
//!
//! A message this node cannot store for now (a full disk) is left for
//! JetStream to deliver again after [`RETRY_DELAY`], while the partition's
//! next messages go on; one that is not a batch is terminated, counted and
//! logged, never retried forever. The app's registry entry is made as on
//! the node that accepted it; if this node's registry will not take it,
//! the records are stored anyway (the accepting node decided) and the
//! reason logged.
//!
//! Each consumer's position is checked against the stream's first
//! sequence when it opens and every [`window::CHECK_EVERY`] after, so
//! messages the stream dropped before this node read them are never
//! missed silently ([`window`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::local::{Arrival, Local};
use super::message;
use super::pull::{stopped, Pulled, Puller};
use super::window::{self, Reader};
use super::{ClusterConfig, STREAM};

/// Messages one pull asks for.
const FETCH_MESSAGES: usize = 128;
/// How long one pull waits for messages before it asks again.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long a message this node could not store waits before JetStream
/// delivers it again.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How long JetStream waits for an acknowledgement before it delivers a
/// message again (a node that died holding it).
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What became of one delivered message.
enum Applied {
    /// Stored (or never to be: terminated).
    Done,
    /// Left for JetStream to deliver again.
    Retried,
}

impl Local {
    /// Materializes every partition, a task each, until `stopping` turns
    /// true.
    pub fn spawn_materializers(
        self: Arc<Self>,
        stopping: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        (0..self.cluster.config.partitions)
            .map(|partition| tokio::spawn(self.clone().materialize(partition, stopping.clone())))
            .collect()
    }

    async fn materialize(self: Arc<Self>, partition: u32, mut stopping: watch::Receiver<bool>) {
        let stop = |stopping: &watch::Receiver<bool>| *stopping.borrow();
        while !stop(&stopping) {
            let (consumer, mut reader) = match self.consumer(partition).await {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::warn!(partition, error = %format!("{error:#}"), "cannot open this node's consumer of a partition; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_DELAY) => continue,
                        _ = stopped(&mut stopping) => return,
                    }
                }
            };
            let mut puller = Puller::new(consumer, FETCH_MESSAGES, FETCH_WAIT);
            let mut checked: Option<tokio::time::Instant> = None;
            while !stop(&stopping) {
                if checked.is_none_or(|at| at.elapsed() >= window::CHECK_EVERY) {
                    let stats = self.stats.partition(partition);
                    let stream = self.cluster.jetstream.get_stream_no_info(STREAM).await;
                    let checking = match &stream {
                        Ok(stream) => reader.check(stream, &self.gaps, stats).await,
                        Err(error) => Err(anyhow::anyhow!("cannot open the stream: {error}")),
                    };
                    // Failed, it is tried again in as long (not before
                    // every message).
                    checked = Some(tokio::time::Instant::now());
                    if let Err(error) = checking {
                        tracing::warn!(partition, error = %format!("{error:#}"), "cannot check this node's consumer against the stream's replay window; trying again in {:?}", window::CHECK_EVERY);
                    }
                }
                match puller.next(&mut stopping).await {
                    Pulled::Message(message) => {
                        let sequence = message.info().map_or(0, |info| info.stream_sequence);
                        match self.apply(partition, *message).await {
                            Applied::Done => reader.unstored.remove(&sequence),
                            Applied::Retried => reader.unstored.insert(sequence),
                        };
                    }
                    Pulled::Ended => {}
                    Pulled::Stopped => return,
                    Pulled::Failed(error) => {
                        tracing::warn!(partition, %error, "pulling a partition's messages failed; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_DELAY) => break,
                            _ = stopped(&mut stopping) => return,
                        }
                    }
                }
            }
        }
    }

    /// This node's durable consumer of `partition`, made on first use, and
    /// what the replay window's checks know of it.
    async fn consumer(&self, partition: u32) -> anyhow::Result<(PullConsumer, Reader)> {
        let config = &self.cluster.config;
        let name = super::status::consumer_name(&config.node, partition);
        let stream = self.cluster.jetstream.get_stream(STREAM).await?;
        let new = match stream.consumer_info(&name).await {
            Ok(_) => false,
            Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => true,
            Err(error) => return Err(error.into()),
        };
        let consumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!(
                        "tailwater node {} materializing partition {partition}",
                        config.node
                    )),
                    filter_subject: ClusterConfig::subject(partition),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: config.max_ack_pending,
                    num_replicas: config.replicas,
                    ..Default::default()
                },
            )
            .await?;
        Ok((consumer, Reader::new(partition, name, new)))
    }

    async fn apply(self: &Arc<Self>, partition: u32, message: Message) -> Applied {
        let stats = self.stats.partition(partition);
        let sequence = message.info().map_or(0, |info| info.stream_sequence);
        let envelope = match message::decode(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(partition, sequence, %error, "a message of the cluster's stream is not a batch this node reads; it is not stored");
                stats.undecodable.fetch_add(1, Relaxed);
                if let Err(error) = message.ack_with(AckKind::Term).await {
                    tracing::warn!(partition, sequence, %error, "cannot terminate an undecodable message");
                }
                return Applied::Done;
            }
        };
        let this = self.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let retention = envelope.retention();
            let message::Envelope { tenant, batch, .. } = envelope;
            this.store(&tenant, batch, Arrival::Stream { retention })
        })
        .await;
        match stored {
            Ok(Ok(response)) => {
                stats.materialized_batches.fetch_add(1, Relaxed);
                stats
                    .materialized_records
                    .fetch_add(response.accepted as u64, Relaxed);
                stats
                    .materialized_refused
                    .fetch_add(response.refused as u64, Relaxed);
                stats.last_sequence.fetch_max(sequence, Relaxed);
                // Durable here: a lost acknowledgement only means the
                // batch comes again and is recognised as stored.
                if let Err(error) = message.ack().await {
                    tracing::debug!(partition, sequence, %error, "acknowledging a stored batch failed; it will come again and be stored once");
                }
                Applied::Done
            }
            Ok(Err(error)) => {
                stats.materialize_failures.fetch_add(1, Relaxed);
                tracing::warn!(partition, sequence, error = %format!("{error:#}"), "cannot store a batch of the cluster's stream for now; it comes again in {RETRY_DELAY:?}");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                Applied::Retried
            }
            Err(panicked) => {
                stats.materialize_failures.fetch_add(1, Relaxed);
                tracing::error!(partition, sequence, %panicked, "storing a batch of the cluster's stream panicked");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
                Applied::Retried
            }
        }
    }
}
