//! One intake message, relayed (`intake` pulls them): its identity
//! checked against its subject, then put through the ingest pipeline (a
//! [`Relay`] handed down by `lib.rs`, so `cluster` never imports
//! `ingest`), and acknowledged only once that is done.
//!
//! **The subject is the identity.** NATS permissions decide who may
//! publish on a subject, as an ingest token of that app would (the
//! pipeline makes the app in an existing tenant, as for HTTP); the
//! envelope's tenant, app and runner must equal the subject's, or the
//! message is terminated. Its `retention_secs` is never read: the app's
//! own applies. A message the pipeline cannot take now (a rate limit, the
//! cluster unavailable) is delivered again after the delay it asked for,
//! waiting in its tenant's intake stream. One refused for good is
//! terminated, counted (`tailwater_cluster_intake_refused_total{reason}`),
//! logged, and told in the runner's own logs: a `server_refused` system
//! record (`reason`, `subject`, `detail`) written through the pipeline
//! into the subject's app and runner, so its owner sees what never
//! arrived.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use serde_json::json;
use tailwater_model::lifecycle::{field, Event, EVENT};
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{fields_of, Level};

use super::message;
use super::stats::Stats;
use crate::runners::SERVER_BOOT_SUFFIX;

/// How long a message waits before it comes again when the pipeline could
/// not take it and said no time.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);

/// What became of a batch handed to the pipeline.
pub enum Relayed {
    /// Taken: on the batches stream.
    Taken,
    /// Not now: again after `delay`.
    Later { delay: Duration, reason: String },
    /// Never: the pipeline refuses it (and counted it). `code` is a short
    /// word for metrics (`invalid`, `denied`, `app`).
    Refused { code: &'static str, reason: String },
}

/// The ingest pipeline, as the intake relays use it (blocking calls).
pub trait Relay: Send + Sync {
    /// Puts an agent's batch of `tenant` through the pipeline, as a batch
    /// sent with an ingest token of its app.
    fn relay(&self, tenant: &str, batch: IngestBatch) -> Relayed;
    /// Writes the server's own notice (system records) in a runner's logs.
    fn tell(&self, tenant: &str, notice: IngestBatch) -> Relayed;
}

/// Relays messages of the intake streams on this node.
pub struct Relayer {
    pub relay: Arc<dyn Relay>,
    pub stats: Arc<Stats>,
    /// This node's name: the boot of its notices.
    pub node: String,
}

impl Relayer {
    /// Checks one message's identity, then relays it.
    pub async fn apply(&self, message: Message) {
        let subject = message.subject.to_string();
        let sequence = message.info().map_or(0, |info| info.stream_sequence);
        let (tenant, batch) = match check(&subject, &message.payload) {
            Ok(checked) => checked,
            Err((reason, detail)) => {
                self.refuse(message, &subject, sequence, reason, detail)
                    .await;
                return;
            }
        };
        let relay = self.relay.clone();
        let relayed = tokio::task::spawn_blocking(move || relay.relay(&tenant, batch)).await;
        match relayed {
            Ok(Relayed::Taken) => {
                self.stats.intake.relayed.fetch_add(1, Relaxed);
                if let Err(error) = message.ack().await {
                    tracing::debug!(%error, "acknowledging a relayed intake message failed; it comes again and is stored once");
                }
            }
            Ok(Relayed::Later { delay, reason }) => {
                self.stats.intake.waited.fetch_add(1, Relaxed);
                tracing::debug!(subject, reason, "an intake message waits");
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Ok(Relayed::Refused { code, reason }) => {
                self.refuse(message, &subject, sequence, code, reason).await;
            }
            Err(panicked) => {
                tracing::error!(subject, %panicked, "relaying an intake message panicked");
                let _ = message.ack_with(AckKind::Nak(Some(RETRY_DELAY))).await;
            }
        }
    }

    /// Terminates a message never to be stored: counted, logged, and told
    /// in its runner's logs when its subject names one.
    async fn refuse(
        &self,
        message: Message,
        subject: &str,
        sequence: u64,
        reason: &'static str,
        detail: String,
    ) {
        self.stats.intake.refused(reason);
        tracing::warn!(
            subject,
            sequence,
            reason,
            detail,
            "an intake message is refused; it is not stored"
        );
        let _ = message.ack_with(AckKind::Term).await;
        let Some(notice) = notice(&self.node, subject, sequence, reason, &detail) else {
            return;
        };
        let relay = self.relay.clone();
        let told = tokio::task::spawn_blocking(move || {
            let (tenant, notice) = notice;
            relay.tell(&tenant, notice)
        })
        .await;
        match told {
            Ok(Relayed::Taken) => {}
            Ok(Relayed::Later { reason: why, .. } | Relayed::Refused { reason: why, .. }) => {
                self.stats.intake.untold.fetch_add(1, Relaxed);
                tracing::warn!(
                    subject,
                    why,
                    "cannot tell an intake refusal in its runner's logs"
                );
            }
            Err(panicked) => {
                self.stats.intake.untold.fetch_add(1, Relaxed);
                tracing::error!(subject, %panicked, "telling an intake refusal panicked");
            }
        }
    }
}

/// The tenant and batch of a message whose envelope names what its
/// subject does.
pub fn check(
    subject: &str,
    payload: &[u8],
) -> Result<(String, IngestBatch), (&'static str, String)> {
    let (tenant, app, runner) = message::parse_intake_subject(subject)
        .ok_or(("subject", "not an intake subject".to_owned()))?;
    let envelope = message::decode(payload).map_err(|error| ("undecodable", error.to_string()))?;
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

/// The `server_refused` record for the runner `subject` names (none when
/// it names none), with its tenant.
pub fn notice(
    node: &str,
    subject: &str,
    sequence: u64,
    reason: &str,
    detail: &str,
) -> Option<(String, IngestBatch)> {
    let (tenant, app, runner) = message::parse_intake_subject(subject)?;
    let now = jiff::Timestamp::now();
    // Unique per notice and rising, as the runner table's notices.
    let seq = u64::try_from(now.as_microsecond()).unwrap_or_default();
    let text = format!(
        "a batch this runner's agent published to NATS ({subject}, intake sequence {sequence}) was refused by tailwater node {node} and none of it is stored ({reason}: {detail}); check the agent's version and its --nats-tenant, --app and --runner"
    );
    let fields = fields_of(json!({
        (EVENT): Event::ServerRefused.as_str(),
        (field::REASON): reason,
        "subject": subject,
        "intake_sequence": sequence,
    }));
    let batch = IngestBatch {
        app,
        version: String::new(),
        runner,
        boot: format!("nats-intake-{node}{SERVER_BOOT_SUFFIX}"),
        source: Default::default(),
        records: vec![IngestRecord::system(seq, now, Level::Error, text, fields)],
    };
    Some((tenant, batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_told_to_the_runner_its_subject_names_as_the_servers_notice() {
        let subject = message::intake_subject("acme", "gpu.api", "w-1");
        let (tenant, notice) = notice("a", &subject, 7, "identity", "the envelope names web")
            .expect("an intake subject names a runner");
        assert_eq!(tenant, "acme");
        assert_eq!(
            (notice.app.as_str(), notice.runner.as_str()),
            ("gpu.api", "w-1")
        );
        // The server's own: no sighting of the runner's life.
        assert!(notice.boot.ends_with(SERVER_BOOT_SUFFIX), "{}", notice.boot);
        let [record] = notice.records.as_slice() else {
            panic!("one record: {notice:?}");
        };
        let fields = record.fields.to_map();
        assert_eq!(Event::of(&fields), Some(Event::ServerRefused));
        assert_eq!(fields[field::REASON], "identity");
        assert!(
            record.message.contains("none of it is stored"),
            "{}",
            record.message
        );
        assert!(record.message.contains("sequence 7"), "{}", record.message);
        // Nobody to tell when the subject names no runner.
        assert!(notice_of("tailwater.batches.0").is_none());
    }

    fn notice_of(subject: &str) -> Option<(String, IngestBatch)> {
        notice("a", subject, 1, "subject", "not an intake subject")
    }
}
