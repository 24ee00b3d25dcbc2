//! Batches agents publish straight to NATS (docs/agents-on-nats.md): each
//! on its runner's intake subject (`tailwater.intake.<tenant>.<app>.<runner>`,
//! [`message::intake_subject`]), into **its tenant's own work-queue
//! stream** `TAILWATER_INTAKE_<tenant>` ([`stream_name`], subjects
//! `tailwater.intake.<tenant>.*.*`), relayed by every node through the
//! tenant's own durable consumer ([`INTAKE_CONSUMER`]) by a task of its
//! own ([`super::relay`] for each message).
//!
//! One tenant's intake never holds another's: a tenant whose messages
//! wait (its apps over their rate limits) fills only its own consumer's
//! `max_ack_pending` and its own stream, which holds at most
//! `--nats-intake-tenant-bytes` and then refuses its agents' publishes
//! (discard new: they keep their lines in their spools and say so),
//! never dropping a message it acknowledged.
//!
//! The streams follow the registry: every node makes (or finds) the
//! stream and consumer of each tenant its registry has, checked every
//! [`TENANTS_EVERY`] (the registry's watch brings the cluster's tenants),
//! and stops relaying a tenant no longer there. A tenant that does not
//! exist has no stream: its agents' publishes find none (no
//! acknowledgement; they wait in the spools).
//!
//! The one shared stream of before (`TAILWATER_INTAKE`, over every
//! tenant's subjects) overlaps the tenants' streams: a node finding it
//! moves it off the agents' subjects (so the tenants' streams can be made
//! and it takes no new message), relays what it holds and deletes it once
//! empty ([`LEGACY_STREAM`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
use async_nats::jetstream::{stream, ErrorCode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::message;
use super::pull::{stopped, Pulled, Puller};
use super::relay::{Relayer, RETRY_DELAY};
use super::{Cluster, DUPLICATE_WINDOW};
use crate::access::registry::Registry;

/// The one stream every tenant's agents published to before each tenant
/// had its own: relayed until empty, then deleted.
pub const LEGACY_STREAM: &str = "TAILWATER_INTAKE";
/// The subject the legacy stream is moved to while it is relayed: none
/// an agent publishes on.
pub const LEGACY_DRAINED: &str = "tailwater.legacy_intake.drained";
/// Each tenant's stream is this, then the tenant's name.
pub const STREAM_PREFIX: &str = "TAILWATER_INTAKE_";
/// Each intake stream's one consumer, pulled by every node.
pub const INTAKE_CONSUMER: &str = "intake";
/// The most one tenant's intake stream holds unless configured otherwise
/// (`--nats-intake-tenant-bytes`; at most `--nats-max-bytes`).
pub const DEFAULT_TENANT_BYTES: i64 = 64 * 1024 * 1024;
/// Messages one pull asks for.
const FETCH_MESSAGES: usize = 16;
/// How long one pull waits for messages before it asks again (messages
/// that come are handed over at once; shorter, idle nodes' pulls add up:
/// with 1 s, the cluster tests' nodes missed heartbeats under load).
const FETCH_WAIT: Duration = Duration::from_secs(5);
/// How long JetStream waits for a node's acknowledgement before it hands
/// the message to another (a node that died relaying it).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// How often, at most, a node measures a tenant's intake stream (between
/// pulls) for the metrics.
const MEASURE_EVERY: Duration = Duration::from_secs(5);
/// How often a node compares the tenants it relays with its registry's.
pub const TENANTS_EVERY: Duration = Duration::from_secs(1);

/// The intake stream of `tenant` (tenant names are `a-z 0-9 - _`, valid
/// in stream names and one subject token as they are).
pub fn stream_name(tenant: &str) -> String {
    format!("{STREAM_PREFIX}{tenant}")
}

/// Makes sure of `tenant`'s intake stream: its agents' subjects, the
/// batches stream's replicas, age and duplicate window, work-queue
/// retention (a message goes once relayed), at most
/// `--nats-intake-tenant-bytes` (and `--nats-max-bytes`), refusing new
/// messages when full. A bound changed since is set.
pub async fn ensure_stream(cluster: &Cluster, tenant: &str) -> anyhow::Result<()> {
    let config = &cluster.config;
    let name = stream_name(tenant);
    let wanted = stream::Config {
        name: name.clone(),
        description: Some(format!(
            "tailwater batches tenant {tenant}'s agents published, to be relayed"
        )),
        subjects: vec![format!(
            "{}.{}.*.*",
            message::INTAKE_PREFIX,
            message::subject_token(tenant)
        )],
        num_replicas: config.replicas,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        max_age: config.max_age,
        max_bytes: config.intake_tenant_bytes.min(config.max_bytes),
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let made = cluster
        .jetstream
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|error| anyhow::anyhow!("cannot make the JetStream stream {name}: {error}"))?;
    if made.cached_info().config.max_bytes != wanted.max_bytes {
        cluster
            .jetstream
            .update_stream(wanted)
            .await
            .map_err(|error| anyhow::anyhow!("cannot set the bound of {name}: {error}"))?;
    }
    Ok(())
}

/// A node's relays of the intake streams.
pub struct Intake {
    pub cluster: Cluster,
    pub registry: Arc<Registry>,
    pub relayer: Arc<Relayer>,
}

/// A tenant's relay task and how to stop it.
struct Relaying {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Intake {
    /// Relays every tenant's intake (and the legacy stream's, while it
    /// exists) until `stopping` turns true.
    pub fn spawn(self: Arc<Self>, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut relaying: HashMap<String, Relaying> = HashMap::new();
            let legacy = tokio::spawn(self.clone().relay_legacy(stopping.clone()));
            loop {
                let tenants: HashSet<String> = self
                    .registry
                    .tenants()
                    .into_iter()
                    .map(|tenant| tenant.name)
                    .collect();
                relaying.retain(|tenant, relay| {
                    let kept = tenants.contains(tenant);
                    if !kept {
                        tracing::info!(tenant, "the tenant is gone: no longer relaying its intake");
                        relay.stop.send_replace(true);
                        self.relayer.stats.intake.forget(tenant);
                    }
                    kept
                });
                for tenant in tenants {
                    if let std::collections::hash_map::Entry::Vacant(vacant) =
                        relaying.entry(tenant)
                    {
                        let (stop, stopping) = watch::channel(false);
                        let tenant = vacant.key().clone();
                        let task = tokio::spawn(self.clone().relay(tenant, stopping));
                        vacant.insert(Relaying { stop, task });
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(TENANTS_EVERY) => {}
                    _ = stopped(&mut stopping) => break,
                }
            }
            for relay in relaying.values() {
                relay.stop.send_replace(true);
            }
            for (_, relay) in relaying {
                let _ = relay.task.await;
            }
            let _ = legacy.await;
        })
    }

    /// Relays `tenant`'s intake stream until `stopping`.
    async fn relay(self: Arc<Self>, tenant: String, mut stopping: watch::Receiver<bool>) {
        let stream = stream_name(&tenant);
        loop {
            let opened = async {
                ensure_stream(&self.cluster, &tenant).await?;
                self.consumer(&stream).await
            };
            let consumer = match opened.await {
                Ok(consumer) => consumer,
                Err(error) => {
                    tracing::warn!(tenant, error = %format!("{error:#}"), "cannot open the tenant's intake stream; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_DELAY) => continue,
                        _ = stopped(&mut stopping) => return,
                    }
                }
            };
            let mut puller = Puller::new(consumer, FETCH_MESSAGES, FETCH_WAIT);
            let mut measured: Option<tokio::time::Instant> = None;
            loop {
                match puller.next(&mut stopping).await {
                    Pulled::Message(message) => self.relayer.apply(*message).await,
                    Pulled::Ended => {
                        if measured.is_none_or(|at| at.elapsed() >= MEASURE_EVERY) {
                            measured = Some(tokio::time::Instant::now());
                            self.measure(&tenant, &stream).await;
                        }
                    }
                    Pulled::Stopped => return,
                    Pulled::Failed(error) => {
                        tracing::warn!(
                            tenant,
                            error,
                            "pulling intake messages failed; trying again"
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_DELAY) => break,
                            _ = stopped(&mut stopping) => return,
                        }
                    }
                }
            }
        }
    }

    /// Notes what `tenant`'s intake stream holds, for the metrics.
    async fn measure(&self, tenant: &str, stream: &str) {
        match self.cluster.jetstream.get_stream(stream).await {
            Ok(handle) => {
                let info = handle.cached_info();
                self.relayer
                    .stats
                    .intake
                    .measured(tenant, info.state.bytes, info.config.max_bytes);
            }
            Err(error) => {
                tracing::debug!(tenant, %error, "cannot measure the tenant's intake stream")
            }
        }
    }

    /// Relays the legacy stream, if there is one, until it is empty, then
    /// deletes it (the tenants' streams can then be made).
    async fn relay_legacy(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        loop {
            let consumer = match self.cluster.jetstream.get_stream(LEGACY_STREAM).await {
                // Not there (the usual case): nothing to do.
                Err(error) if not_found(&error) => return,
                Err(error) => Err(anyhow::anyhow!(error)),
                Ok(stream) => match self.close_legacy(stream).await {
                    Ok(()) => self.consumer(LEGACY_STREAM).await,
                    Err(error) => Err(error),
                },
            };
            let consumer = match consumer {
                Ok(consumer) => consumer,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot open the legacy intake stream {LEGACY_STREAM}; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_DELAY) => continue,
                        _ = stopped(&mut stopping) => return,
                    }
                }
            };
            tracing::warn!("the legacy intake stream {LEGACY_STREAM} (one for every tenant) is here: relaying what it holds, then deleting it so that each tenant gets its own");
            let mut puller = Puller::new(consumer, FETCH_MESSAGES, Duration::from_secs(1));
            loop {
                match puller.next(&mut stopping).await {
                    Pulled::Message(message) => self.relayer.apply(*message).await,
                    Pulled::Ended => match self.delete_legacy_if_empty().await {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "cannot delete the legacy intake stream; trying again")
                        }
                    },
                    Pulled::Stopped => return,
                    Pulled::Failed(error) => {
                        tracing::warn!(
                            error,
                            "pulling the legacy intake stream failed; trying again"
                        );
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_DELAY) => break,
                            _ = stopped(&mut stopping) => return,
                        }
                    }
                }
            }
        }
    }

    /// Moves the legacy stream off the agents' subjects (onto
    /// [`LEGACY_DRAINED`], which nobody publishes on), so it takes no new
    /// message and overlaps no tenant's stream: what it holds stays, to be
    /// relayed, and deleting it once empty loses nothing.
    async fn close_legacy(&self, stream: stream::Stream) -> anyhow::Result<()> {
        let mut config = stream.cached_info().config.clone();
        if config.subjects == [LEGACY_DRAINED] {
            return Ok(());
        }
        config.subjects = vec![LEGACY_DRAINED.to_owned()];
        self.cluster
            .jetstream
            .update_stream(config)
            .await
            .map_err(|error| {
                anyhow::anyhow!("cannot take {LEGACY_STREAM} off the agents' subjects: {error}")
            })?;
        Ok(())
    }

    /// Deletes the legacy stream when it holds nothing (true: gone).
    async fn delete_legacy_if_empty(&self) -> anyhow::Result<bool> {
        let jetstream = &self.cluster.jetstream;
        let mut stream = match jetstream.get_stream(LEGACY_STREAM).await {
            Ok(stream) => stream,
            Err(error) if not_found(&error) => return Ok(true),
            Err(error) => return Err(error.into()),
        };
        if stream.info().await?.state.messages > 0 {
            return Ok(false);
        }
        match jetstream.delete_stream(LEGACY_STREAM).await {
            Ok(_) => {
                tracing::info!("the legacy intake stream {LEGACY_STREAM} is relayed and deleted; each tenant has its own from now on");
                Ok(true)
            }
            Err(error) if not_found(&error) => Ok(true),
            Err(error) => Err(error.into()),
        }
    }

    /// The one consumer of `stream`, made on first use.
    async fn consumer(&self, stream: &str) -> anyhow::Result<PullConsumer> {
        let handle = self.cluster.jetstream.get_stream(stream).await?;
        Ok(handle
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
}

/// Whether JetStream said the stream does not exist.
fn not_found(error: &GetStreamError) -> bool {
    matches!(error.kind(), GetStreamErrorKind::JetStream(error) if error.error_code() == ErrorCode::STREAM_NOT_FOUND)
}
