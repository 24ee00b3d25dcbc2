//! Every node reads the whole stream, in stream order, into its own store
//! (this slice: each node a full replica, so every query stays local and
//! whole), through one durable pull consumer named after the node.
//!
//! Each record is stored at the id the stream gives it ([`position`]: its
//! message's stream sequence and its place in the message), the same on
//! every node. So a record's id, a page's cursor and a live tail's
//! `Last-Event-ID` mean the same record on every node, and a tail or a
//! paging client moves to another node with no gap and no duplicate. For
//! that the stream is applied strictly in its order: a message this node
//! cannot store for now (a full disk) is held and tried again every
//! [`RETRY_DELAY`], and the messages after it wait. (JetStream 2.9 gives a
//! consumer one filter subject, so a node cannot read the partitions
//! apart and still number their records alike.)
//!
//! Messages are stored a few at a time ([`Store::append_at`], the store's
//! fsync deferred), synced once, then acknowledged (the consumer
//! acknowledges all, so the last message's acknowledgement covers the
//! others). Where to start is this node's own: the consumer is made again
//! at every start, from the message after the last one this node stored
//! ([`super::applied`]), so an acknowledgement lost in a crash only means a
//! batch comes again, and the store's sequence numbers store it once.
//!
//! A message that is not a batch is skipped, counted and logged, never
//! retried forever. The app's registry entry is made as on the node that
//! accepted it; if this node's registry will not take it, the records are
//! stored anyway (the accepting node decided) and the reason logged.
//!
//! A jump in the sequences delivered, or a stream whose first sequence
//! has passed the next one this node expects, is the stream having
//! dropped messages before this node read them (past its replay window):
//! a gap. The node stops there and fills it in order from a live peer
//! ([`super::stretch`]), else leaves it to the repair of partitions
//! ([`super::window`], [`super::repair`]).
//!
//! [`Store::append_at`]: tailwater_store::Store::append_at

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::local::{Arrival, Local};
use super::message;
use super::pull::{stopped, Pulled, Puller};
use super::window;
use super::{STREAM, SUBJECT_PREFIX};

/// Messages one pull asks for, and the most stored between two syncs.
const FETCH_MESSAGES: usize = 128;
/// How long one pull waits for messages before it asks again.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long a message this node could not store waits before it is tried
/// again (the messages after it wait too).
pub const RETRY_DELAY: Duration = Duration::from_secs(2);
/// How long JetStream waits for an acknowledgement before it delivers a
/// message again (one held for longer is kept in hand and reported in
/// progress).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Where ids from the stream start: above every id a store numbered by
/// itself (a node upgraded from a version that did keeps those records
/// below), with 46 bits for the sequence.
pub const POSITION_BASE: u64 = 1 << 62;

/// The id of the first record of the message at stream `sequence`; record
/// `i` of the message has `position(sequence) + i`. The lower half of the
/// 16 bits left to a message's records is theirs
/// ([`message::MESSAGE_RECORDS`]); the upper half is room for this node's
/// own notices written between two messages.
pub fn position(sequence: u64) -> u64 {
    POSITION_BASE | (sequence & ((1 << 46) - 1)) << 16
}

/// The consumer through which `node` reads the stream.
pub fn consumer_name(node: &str) -> String {
    format!("{node}-stream")
}

/// The consumers through which `node` read each partition before this
/// version: their positions say where its reading goes on, then they are
/// deleted.
fn old_consumer_name(node: &str, partition: u32) -> String {
    format!("{node}-p{partition}")
}

/// One delivered message, as the blocking store calls need it.
struct Delivered {
    sequence: u64,
    partition: u32,
    payload: bytes::Bytes,
}

/// How far storing a run of messages got.
struct Stored {
    /// Messages stored (and synced), from the run's first.
    through: usize,
    /// Why the next one could not be stored, if one could not.
    failed: Option<anyhow::Error>,
    /// The sequences the stream dropped before the next one, if it came
    /// past a stretch: it waits until they are filled.
    gap: Option<(u64, u64)>,
}

impl Local {
    /// Materializes the stream in a task until `stopping` turns true.
    pub fn spawn_materializer(self: Arc<Self>, stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(self.materialize(stopping))
    }

    async fn materialize(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        let stop = |stopping: &watch::Receiver<bool>| *stopping.borrow();
        // The next sequence to store, once known.
        let mut next: Option<u64> = None;
        while !stop(&stopping) {
            let opened = async {
                let start = match next {
                    Some(next) => next,
                    None => self.start_sequence().await?,
                };
                Ok::<_, anyhow::Error>((start, self.consumer(start).await?))
            }
            .await;
            let (start, consumer) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot open this node's consumer of the cluster's stream; trying again");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_DELAY) => continue,
                        _ = stopped(&mut stopping) => return,
                    }
                }
            };
            let mut expected = start;
            next = Some(start);
            let mut puller = Puller::new(consumer, FETCH_MESSAGES, FETCH_WAIT);
            let mut checked: Option<tokio::time::Instant> = None;
            while !stop(&stopping) {
                match puller.next(&mut stopping).await {
                    Pulled::Message(message) => {
                        let mut run = vec![*message];
                        while run.len() < FETCH_MESSAGES {
                            match puller.ready() {
                                Some(message) => run.push(*message),
                                None => break,
                            }
                        }
                        if !self.apply(run, &mut expected, &mut stopping).await {
                            return;
                        }
                        next = Some(expected);
                    }
                    // Between pulls nothing is in hand: the moment to see
                    // whether the stream dropped what this node expects.
                    Pulled::Ended => {
                        if checked.is_none_or(|at| at.elapsed() >= window::CHECK_EVERY) {
                            checked = Some(tokio::time::Instant::now());
                            match self.first_sequence().await {
                                Ok(first) if first > expected => {
                                    if !self.fill(expected, first - 1, &mut stopping).await {
                                        return;
                                    }
                                    expected = first;
                                }
                                Ok(_) => {}
                                Err(error) => {
                                    tracing::warn!(error = %format!("{error:#}"), "cannot check this node's reading against the stream's replay window; trying again in {:?}", window::CHECK_EVERY);
                                }
                            }
                            next = Some(expected);
                        }
                    }
                    Pulled::Stopped => return,
                    Pulled::Failed(error) => {
                        tracing::warn!(%error, "pulling the cluster's stream failed; opening this node's consumer again");
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_DELAY) => break,
                            _ = stopped(&mut stopping) => return,
                        }
                    }
                }
            }
        }
    }

    /// Where this node's reading starts: after the last message it stored,
    /// or, on a node that kept no record of it, where its consumers of the
    /// partitions (of the version before) had read to, or the first message.
    async fn start_sequence(&self) -> anyhow::Result<u64> {
        if let Some(progress) = self.applied.get() {
            if progress.applied == 0 || self.runners.store().last_id() > 0 {
                return Ok(progress.applied + 1);
            }
            // Its store was removed, not what it noted of the stream:
            // going on after that would leave the store without the
            // stream's records, silently.
            tracing::warn!(
                noted = progress.applied,
                "this node's store is empty, yet it noted the stream as stored through this sequence (was its store removed?): reading the stream again from its first message"
            );
            self.applied.restart(1);
            return Ok(1);
        }
        let stream = self.cluster.jetstream.get_stream(STREAM).await?;
        let mut read_through: Option<u64> = None;
        for partition in 0..self.cluster.config.partitions {
            let name = old_consumer_name(&self.cluster.config.node, partition);
            match stream.consumer_info(&name).await {
                Ok(info) => {
                    let read = if info.num_ack_pending > 0 {
                        info.ack_floor.stream_sequence
                    } else {
                        info.delivered.stream_sequence
                    };
                    read_through = Some(read_through.map_or(read, |through| through.min(read)));
                }
                Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => {}
                Err(error) => return Err(error.into()),
            }
        }
        let start = read_through.map_or(1, |through| through + 1);
        self.applied.begin(start);
        Ok(start)
    }

    /// This node's consumer of the stream, made anew to start at `start`;
    /// the consumers of the partitions of the version before go.
    async fn consumer(&self, start: u64) -> anyhow::Result<PullConsumer> {
        let config = &self.cluster.config;
        let name = consumer_name(&config.node);
        let stream = self.cluster.jetstream.get_stream(STREAM).await?;
        match stream.delete_consumer(&name).await {
            Ok(_) => {}
            Err(error) if not_found(&error) => {}
            Err(error) => return Err(error.into()),
        }
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.clone()),
                description: Some(format!(
                    "tailwater node {} materializing the stream, in order",
                    config.node
                )),
                filter_subject: format!("{SUBJECT_PREFIX}.*"),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1),
                },
                ack_policy: AckPolicy::All,
                ack_wait: ACK_WAIT,
                max_ack_pending: config.max_ack_pending,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await?;
        for partition in 0..config.partitions {
            let old = old_consumer_name(&config.node, partition);
            if stream.delete_consumer(&old).await.is_ok() {
                tracing::info!(consumer = old, "deleted this node's consumer of one partition: the node reads the whole stream in order now");
            }
        }
        Ok(consumer)
    }

    /// Stores `run` in stream order, holding at a message that cannot be
    /// stored until it is; false when the node stops first.
    async fn apply(
        self: &Arc<Self>,
        run: Vec<Message>,
        expected: &mut u64,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        // Delivered again (an acknowledgement that did not arrive in
        // time): stored already.
        let mut run: Vec<(u64, Message)> = run
            .into_iter()
            .map(|message| {
                (
                    message.info().map_or(0, |info| info.stream_sequence),
                    message,
                )
            })
            .filter(|(sequence, _)| *sequence >= *expected)
            .collect();
        run.sort_by_key(|(sequence, _)| *sequence);
        run.dedup_by_key(|(sequence, _)| *sequence);
        let mut from = 0;
        while from < run.len() {
            let delivered: Vec<Delivered> = run[from..]
                .iter()
                .map(|(sequence, message)| Delivered {
                    sequence: *sequence,
                    partition: partition_in(&message.subject),
                    payload: message.payload.clone(),
                })
                .collect();
            let this = self.clone();
            let mut expecting = *expected;
            let stored = tokio::task::spawn_blocking(move || {
                let stored = this.store_run(&delivered, &mut expecting);
                (stored, expecting)
            })
            .await;
            let (stored, expecting) = match stored {
                Ok(stored) => stored,
                Err(panicked) => (
                    Stored {
                        through: 0,
                        failed: Some(anyhow::anyhow!("storing panicked: {panicked}")),
                        gap: None,
                    },
                    *expected,
                ),
            };
            *expected = expecting;
            if stored.through > 0 {
                let (sequence, last) = &run[from + stored.through - 1];
                // Durable here: a lost acknowledgement only means the
                // messages come again and are recognised as stored.
                if let Err(error) = last.ack().await {
                    tracing::debug!(sequence, %error, "acknowledging stored messages failed; they will come again and be stored once");
                }
            }
            from += stored.through;
            if let Some((first, last)) = stored.gap {
                if !self.fill(first, last, stopping).await {
                    return false;
                }
                *expected = last + 1;
                continue;
            }
            let Some(error) = stored.failed else {
                continue;
            };
            let (sequence, held) = &run[from];
            let stats = self.stats.partition(partition_in(&held.subject));
            stats.materialize_failures.fetch_add(1, Relaxed);
            tracing::warn!(sequence, error = %format!("{error:#}"), "cannot store a message of the cluster's stream for now; it and the messages after it are tried again in {RETRY_DELAY:?}");
            let _ = held.ack_with(AckKind::Progress).await;
            tokio::select! {
                _ = tokio::time::sleep(RETRY_DELAY) => {}
                _ = stopped(stopping) => return false,
            }
        }
        true
    }

    /// Stores `run` in order, up to a message past a stretch the stream
    /// dropped, then syncs the store; `expected` is the next sequence,
    /// moved past each message stored.
    fn store_run(&self, run: &[Delivered], expected: &mut u64) -> Stored {
        let mut through = 0;
        let mut failed = None;
        let mut gap = None;
        for delivered in run {
            if delivered.sequence > *expected {
                gap = Some((*expected, delivered.sequence - 1));
                break;
            }
            match self.store_message(delivered) {
                Ok(()) => {
                    *expected = delivered.sequence + 1;
                    through += 1;
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        if through > 0 {
            if let Err(error) = self.runners.store().sync() {
                // The store fails for good after a failed fsync: nothing
                // since the last good one is acknowledged.
                return Stored {
                    through: 0,
                    failed: Some(error.into()),
                    gap: None,
                };
            }
            self.applied.stored_through(run[through - 1].sequence);
        }
        Stored {
            through,
            failed,
            gap,
        }
    }

    fn store_message(&self, delivered: &Delivered) -> anyhow::Result<()> {
        let stats = self.stats.partition(delivered.partition);
        let sequence = delivered.sequence;
        let envelope = match message::decode(&delivered.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(partition = delivered.partition, sequence, %error, "a message of the cluster's stream is not a batch this node reads; it is not stored");
                stats.undecodable.fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        let retention = envelope.retention();
        let message::Envelope { tenant, batch, .. } = envelope;
        let response = self.store(
            &tenant,
            batch,
            Arrival::Stream {
                retention,
                first: position(sequence),
            },
        )?;
        stats.materialized_batches.fetch_add(1, Relaxed);
        stats
            .materialized_records
            .fetch_add(response.accepted as u64, Relaxed);
        stats
            .materialized_refused
            .fetch_add(response.refused as u64, Relaxed);
        stats.last_sequence.fetch_max(sequence, Relaxed);
        Ok(())
    }

    /// The stream's first sequence.
    async fn first_sequence(&self) -> anyhow::Result<u64> {
        Ok(self
            .cluster
            .jetstream
            .get_stream(STREAM)
            .await?
            .cached_info()
            .state
            .first_sequence)
    }
}

fn not_found(error: &async_nats::jetstream::stream::ConsumerError) -> bool {
    matches!(
        error.kind(),
        ConsumerErrorKind::JetStream(error) if error.error_code() == ErrorCode::CONSUMER_NOT_FOUND
    )
}

/// The partition a message's subject names (0 for one that names none:
/// only counted under it).
fn partition_in(subject: &str) -> u32 {
    subject
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|partition| partition.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;

    #[test]
    fn positions_rise_with_the_sequence_and_tell_it_back() {
        assert!(position(1) > position(0) + u64::from(u16::MAX));
        assert_eq!(position(77) + 5, POSITION_BASE + (77 << 16) + 5);
        assert!(
            position(0) > u64::from(u32::MAX) << 20,
            "above ids a store gave itself"
        );
        assert_eq!(partition_in("tailwater.batches.7"), 7);
        assert_eq!(partition_in("elsewhere"), 0);
        assert_eq!(ClusterConfig::subject(3), "tailwater.batches.3");
    }
}
