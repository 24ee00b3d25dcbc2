//! Batches agents publish straight to NATS (docs/agents-on-nats.md): each
//! on its runner's intake subject (`tailwater.intake.<tenant>.<app>.<runner>`,
//! [`message::intake_subject`]) into the work-queue stream
//! [`INTAKE_STREAM`]. Every node pulls from one shared durable consumer
//! ([`INTAKE_CONSUMER`]), so each message is relayed by one node at a time,
//! and relays it through the ingest pipeline (a [`Relay`] handed down by
//! `lib.rs`: labels, rates, cuts, redaction, the app's retention, then the
//! partitioned batches stream, as an HTTP batch), acknowledging it only
//! once that is done.
//!
//! **The subject is the identity.** NATS permissions decide who may
//! publish on a subject, as an ingest token of that app would (the
//! pipeline makes the app in an existing tenant, as for HTTP); the
//! envelope's tenant, app and runner must equal the subject's, or the
//! message is terminated, counted
//! (`tailwater_cluster_intake_refused_total{reason}`) and logged. Its
//! `retention_secs` is never read: the app's own applies. A message the
//! pipeline cannot take now (a rate limit, the cluster unavailable) is
//! delivered again after the delay it asked for; one it refuses for good
//! is terminated and counted (the pipeline counts its refusal too).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{stream, Message};
use futures_util::StreamExt;
use tailwater_model::wire::IngestBatch;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::message;
use super::stats::Stats;
use super::{Cluster, DUPLICATE_WINDOW};

/// The stream agents publish to.
pub const INTAKE_STREAM: &str = "TAILWATER_INTAKE";
/// The one consumer every node pulls intake messages from.
pub const INTAKE_CONSUMER: &str = "intake";
/// Messages one pull asks for.
const FETCH_MESSAGES: usize = 16;
/// How long one pull waits for messages before it asks again (messages
/// that come are handed over at once; shorter, idle nodes' pulls add up:
/// with 1 s, the cluster tests' nodes missed heartbeats under load).
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// How long JetStream waits for a node's acknowledgement before it hands
/// the message to another (a node that died relaying it).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// The most the intake stream holds (or `--nats-max-bytes`, if less): it
/// holds only what no node relayed yet. Full, it refuses new messages
/// (their agents keep them in their spools and send again), never
/// dropping one it acknowledged.
pub const INTAKE_MAX_BYTES: i64 = 1024 * 1024 * 1024;
/// How long a message waits before it comes again when the pipeline could
/// not take it and said no time.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);

/// What became of a batch handed to the pipeline.
pub enum Relayed {
    /// Taken: on the batches stream.
    Taken,
    /// Not now: again after `delay`.
    Later { delay: Duration, reason: String },
    /// Never: the pipeline refuses it (and counted it).
    Refused { reason: String },
}

/// Hands a tenant's batch to the ingest pipeline (blocking).
pub type Relay = Arc<dyn Fn(&str, IngestBatch) -> Relayed + Send + Sync>;

/// Makes sure of the intake stream: `tailwater.intake.*.*.*`, the batches
/// stream's replicas, age and duplicate window, work-queue retention (a
/// message goes once relayed), at most [`INTAKE_MAX_BYTES`], refusing new
/// messages when full.
pub async fn ensure_stream(cluster: &Cluster) -> anyhow::Result<()> {
    let config = &cluster.config;
    cluster
        .jetstream
        .get_or_create_stream(stream::Config {
            name: INTAKE_STREAM.to_owned(),
            description: Some("tailwater batches agents published, to be relayed".into()),
            subjects: vec![format!("{}.*.*.*", message::INTAKE_PREFIX)],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_age: config.max_age,
            max_bytes: config.max_bytes.min(INTAKE_MAX_BYTES),
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        })
        .await
        .map_err(|error| {
            anyhow::anyhow!("cannot create the JetStream stream {INTAKE_STREAM}: {error}")
        })?;
    Ok(())
}

/// A node's relay of the intake stream.
pub struct Intake {
    pub cluster: Cluster,
    pub relay: Relay,
    pub stats: Arc<Stats>,
}

impl Intake {
    /// Relays until `stopping` turns true.
    pub fn spawn(self: Arc<Self>, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let stop = |stopping: &watch::Receiver<bool>| *stopping.borrow();
            while !stop(&stopping) {
                let consumer = match self.consumer().await {
                    Ok(consumer) => consumer,
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "cannot open the intake consumer; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_DELAY) => continue,
                            _ = stopped(&mut stopping) => return,
                        }
                    }
                };
                while !stop(&stopping) {
                    let pull = consumer
                        .batch()
                        .max_messages(FETCH_MESSAGES)
                        .expires(FETCH_WAIT)
                        .messages();
                    let mut messages = tokio::select! {
                        messages = pull => match messages {
                            Ok(messages) => messages,
                            Err(error) => {
                                tracing::warn!(%error, "pulling intake messages failed; trying again");
                                tokio::time::sleep(RETRY_DELAY).await;
                                break;
                            }
                        },
                        _ = stopped(&mut stopping) => return,
                    };
                    loop {
                        // A pull waits up to FETCH_WAIT for messages: a
                        // node stopping does not wait for it (what it was
                        // handed and did not acknowledge goes to another
                        // node after the ack wait).
                        let next = tokio::select! {
                            next = messages.next() => next,
                            _ = stopped(&mut stopping) => return,
                        };
                        match next {
                            Some(Ok(message)) => self.apply(message).await,
                            _ => break,
                        }
                    }
                }
            }
        })
    }

    async fn consumer(&self) -> anyhow::Result<PullConsumer> {
        let stream = self.cluster.jetstream.get_stream(INTAKE_STREAM).await?;
        Ok(stream
            .get_or_create_consumer(
                INTAKE_CONSUMER,
                pull::Config {
                    durable_name: Some(INTAKE_CONSUMER.to_owned()),
                    description: Some("tailwater nodes relaying agents' batches".into()),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    max_ack_pending: self.cluster.config.max_ack_pending,
                    num_replicas: self.cluster.config.replicas,
                    ..Default::default()
                },
            )
            .await?)
    }

    /// Checks one message's identity, then relays it.
    async fn apply(&self, message: Message) {
        let subject = message.subject.to_string();
        let (tenant, batch) = match self.check(&subject, &message.payload) {
            Ok(checked) => checked,
            Err((reason, detail)) => {
                self.stats.intake.refused(reason);
                tracing::warn!(
                    subject,
                    reason,
                    detail,
                    "an intake message is refused; it is not stored"
                );
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let relay = self.relay.clone();
        let relayed = tokio::task::spawn_blocking(move || relay(&tenant, batch)).await;
        match relayed {
            Ok(Relayed::Taken) => {
                self.stats.intake.relayed.fetch_add(1, Relaxed);
                if let Err(error) = message.ack().await {
                    tracing::debug!(%error, "acknowledging a relayed intake message failed; it comes again and is stored once");
                }
            }
            Ok(Relayed::Later { delay, reason }) => {
                tracing::debug!(subject, reason, "an intake message waits");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Ok(Relayed::Refused { reason }) => {
                self.stats.intake.refused("pipeline");
                tracing::warn!(
                    subject,
                    reason,
                    "the pipeline refused an intake message; it is not stored"
                );
                let _ = message.ack_with(AckKind::Term).await;
            }
            Err(panicked) => {
                tracing::error!(subject, %panicked, "relaying an intake message panicked");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
    }

    /// The tenant and batch of a message whose envelope names what its
    /// subject does.
    fn check(
        &self,
        subject: &str,
        payload: &[u8],
    ) -> Result<(String, IngestBatch), (&'static str, String)> {
        let (tenant, app, runner) = message::parse_intake_subject(subject)
            .ok_or(("subject", "not an intake subject".to_owned()))?;
        let envelope =
            message::decode(payload).map_err(|error| ("undecodable", error.to_string()))?;
        let batch = envelope.batch;
        if envelope.tenant != tenant || batch.app != app || batch.runner != runner {
            return Err((
                "identity",
                format!(
                    "the envelope names tenant {:?}, app {:?}, runner {:?}; its subject {tenant:?}, {app:?}, {runner:?}",
                    envelope.tenant, batch.app, batch.runner
                ),
            ));
        }
        Ok((tenant, batch))
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}
