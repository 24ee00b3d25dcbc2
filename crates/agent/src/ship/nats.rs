//! Publishing straight to a tailwater cluster's NATS (`tailwater run
//! --nats URL[,URL…]`, docs/agents-on-nats.md): each batch on its runner's
//! intake subject (`tailwater.intake.<tenant>.<app>.<runner>`), in the
//! cluster's message format with the batch's `Nats-Msg-Id` (both from
//! `tailwater_model::cluster`, as the nodes' publisher makes them), so a
//! batch sent again is stored once. A batch is `Accepted` only once
//! JetStream acknowledged every one of its messages (on a majority of the
//! intake stream's replicas); a node then puts it through the ingest
//! pipeline. The NATS credential allows only this app's subjects: a
//! permissions violation is `Rejected`, said with what to check.
//!
//! The NATS user is the one in the URLs, or a creds file (`--nats-creds`)
//! or an nkey seed's file (`--nats-nkey`), read and checked at start
//! (`tailwater_model::nats_auth`); while NATS refuses it, each send is
//! `Unavailable` saying so, and the lines wait in the spool.
//!
//! The client connects with an inbox prefix of this app's
//! (`_INBOX_<tenant>.<app>`), the only subjects its credential may
//! subscribe to, and moves between the given servers itself.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use tailwater_model::cluster::{
    batch_id, encode_within, intake_subject, message_id, subject_token, Envelope,
};
use tailwater_model::nats_auth::{self, NatsAuth};
use tailwater_model::wire::{IngestBatch, IngestResponse};

use super::status::ShipStatus;
use super::transport::{Outcome, Transport};
use crate::config::NatsTarget;

/// How long a message waits for JetStream's acknowledgement (an election
/// of the stream's leader takes about 6 s on 2.9).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent waits before it publishes again to a tenant's full
/// intake stream.
pub const FULL_RETRY_AFTER: Duration = Duration::from_secs(5);
/// NATS's own `max_payload` (1 MiB), assumed until the server says.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// An app's batches to the cluster's intake stream.
pub struct Nats {
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    tenant: String,
    /// The servers (without credentials) and the subject, for messages.
    destination: String,
    /// The last permissions violation the server reported, taken by the
    /// send it refused.
    violation: Arc<Mutex<Option<String>>>,
    /// NATS's refusal of the credentials, since the client last
    /// connected: each send it holds back says so.
    refused: Arc<Mutex<Option<String>>>,
    moves: Arc<Moves>,
}

/// Which NATS server the client is connected to, and its moves from one
/// to another (the client's own failovers), for the agent's status.
#[derive(Default)]
struct Moves {
    client: OnceLock<async_nats::Client>,
    status: OnceLock<Arc<ShipStatus>>,
    /// The server connected to now, or last before the connection was
    /// lost.
    server: Mutex<Option<String>>,
}

impl Moves {
    /// The client (re)connected: a move when the server is another.
    fn connected(&self) {
        let Some(client) = self.client.get() else {
            return;
        };
        let info = client.server_info();
        let now = format!("nats://{}:{}", info.host, info.port);
        let before = self
            .server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(now.clone());
        let Some(status) = self.status.get() else {
            return;
        };
        match before {
            Some(before) if before != now => {
                let failovers = status.failed_over(&before, &now, "the connection was lost");
                eprintln!(
                    "tailwater: the connection to {before} was lost; publishing through {now} from now on (failover {failovers}), the lines not yet acknowledged stay in the spool and go there"
                );
            }
            _ => status.connected_to(&now),
        }
    }
}

impl Nats {
    /// A client of `target`'s servers (`nats://[user:password@]host:port`)
    /// for its tenant's `app`, as the NATS user in the URLs or in its
    /// creds or nkey file (read and checked here, so a wrong one fails the
    /// start); connects in the background, so the worker starts while
    /// NATS is away.
    pub async fn connect(target: &NatsTarget, app: &str) -> anyhow::Result<Nats> {
        let (urls, tenant) = (&target.urls, target.tenant.as_str());
        anyhow::ensure!(
            !urls.is_empty(),
            "--nats needs at least one server URL (nats://host:4222)"
        );
        let addrs = urls
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                anyhow::anyhow!("invalid --nats URL ({error}): give nats://[user:password@]host:port, comma-separated")
            })?;
        let url_user = addrs.iter().find(|addr| addr.username().is_some());
        let auth = nats_auth::load(
            target.creds.as_deref(),
            target.nkey.as_deref(),
            url_user.is_some(),
        )
        .map_err(anyhow::Error::msg)?;
        let violation = Arc::new(Mutex::new(None));
        let refused = Arc::new(Mutex::new(None));
        let moves = Arc::new(Moves::default());
        let moved = moves.clone();
        let mut options = async_nats::ConnectOptions::new();
        // The client does not read the user from URLs.
        if let Some(addr) = url_user {
            let user = addr.username().unwrap_or_default().to_owned();
            let password = addr.password().unwrap_or_default().to_owned();
            options = options.user_and_password(user, password);
        }
        match &auth {
            NatsAuth::Url => {}
            NatsAuth::Nkey { seed, .. } => options = options.nkey(seed.clone()),
            NatsAuth::Creds { text, .. } => {
                options = options.credentials(text).map_err(|error| {
                    anyhow::anyhow!("--nats-creds: async-nats cannot read the creds file ({error})")
                })?;
            }
        }
        let (seen, told) = (violation.clone(), refused.clone());
        let client = options
            .name(format!("tailwater-agent-{app}"))
            .custom_inbox_prefix(format!(
                "_INBOX_{}.{}",
                subject_token(tenant),
                subject_token(app)
            ))
            .connection_timeout(PUBLISH_TIMEOUT)
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let (seen, told, moved) = (seen.clone(), told.clone(), moved.clone());
                async move {
                    match &event {
                        async_nats::Event::ServerError(async_nats::ServerError::Other(error))
                            if error.to_ascii_lowercase().contains("permissions violation") =>
                        {
                            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
                        }
                        async_nats::Event::ServerError(error)
                            if nats_auth::refused(&error.to_string()) =>
                        {
                            *told.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(error.to_string());
                        }
                        async_nats::Event::ClientError(error)
                            if nats_auth::refused(&error.to_string()) =>
                        {
                            *told.lock().unwrap_or_else(|p| p.into_inner()) =
                                Some(error.to_string());
                        }
                        async_nats::Event::Connected => {
                            *told.lock().unwrap_or_else(|p| p.into_inner()) = None;
                            moved.connected();
                        }
                        _ => {}
                    }
                }
            })
            .connect(addrs.clone())
            .await?;
        let _ = moves.client.set(client.clone());
        let jetstream = async_nats::jetstream::ContextBuilder::new()
            .timeout(PUBLISH_TIMEOUT)
            .build(client.clone());
        let servers: Vec<String> = addrs
            .iter()
            .map(|addr| format!("nats://{}:{}", addr.host(), addr.port()))
            .collect();
        Ok(Nats {
            client,
            jetstream,
            tenant: tenant.to_owned(),
            destination: format!(
                "{} ({})",
                servers.join(","),
                intake_subject(tenant, app, "*").replace("%2A", "*")
            ),
            violation,
            refused,
            moves,
        })
    }

    /// Tells `status` the server in use and each move from one to another.
    pub fn report_to(&self, status: Arc<ShipStatus>) {
        let _ = self.moves.status.set(status);
        if self.client.connection_state() == async_nats::connection::State::Connected {
            self.moves.connected();
        }
    }

    /// The largest message the server takes, room left for the headers.
    fn max_message_bytes(&self) -> usize {
        let max = match self.client.server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            max => max,
        };
        max.saturating_sub(256).max(1)
    }

    /// A send that got no acknowledgement: refused by the credential's
    /// permissions, the credentials refused (the lines wait in the spool
    /// for them to be fixed), or JetStream away.
    fn unacknowledged(&self, subject: &str, error: String) -> Outcome {
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(refused) = refused {
            return Outcome::Unavailable {
                retry_after: None,
                answered: false,
                elsewhere: false,
                reason: format!(
                    "the NATS servers refused the agent's credentials ({refused}): check --nats-nkey, --nats-creds or the user in the --nats URLs against the nats-server's users (docs/agents-on-nats.md); the lines stay in the spool"
                ),
            };
        }
        let violation = self
            .violation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match violation {
            Some(violation) => Outcome::Rejected {
                reason: format!(
                    "permissions violation: the NATS user may not publish to {subject} (nats-server said: {violation}); check its permissions (docs/agents-on-nats.md) and --nats-tenant, --app and --runner"
                ),
            },
            None => Outcome::Unavailable {
                retry_after: None,
                answered: false,
                // The client moves between the servers itself.
                elsewhere: false,
                reason: error,
            },
        }
    }
}

impl Transport for Nats {
    fn destination(&self) -> &str {
        &self.destination
    }

    async fn send(&self, batch: &IngestBatch) -> Outcome {
        let subject = intake_subject(&self.tenant, &batch.app, &batch.runner);
        let records = batch.records.len();
        let id = batch_id(&self.tenant, batch);
        let envelope = Envelope {
            tenant: self.tenant.clone(),
            // Never read: the app's own retention applies.
            retention_secs: 0,
            batch: batch.clone(),
        };
        let messages = encode_within(&envelope, self.max_message_bytes());
        let count = messages.len();
        let mut duplicates = 0;
        for (index, payload) in messages.into_iter().enumerate() {
            let mut publish = PublishMessage::build().payload(payload.into());
            // A heartbeat (no records) has no identity: every one counts.
            if records > 0 {
                publish = publish.message_id(message_id(&id, index));
            }
            let acked = async {
                let ack = self
                    .jetstream
                    .send_publish(subject.clone(), publish)
                    .await?;
                ack.await
            };
            match tokio::time::timeout(PUBLISH_TIMEOUT, acked).await {
                Ok(Ok(ack)) => duplicates += usize::from(ack.duplicate),
                Ok(Err(error)) => {
                    let reason = match error.kind() {
                        PublishErrorKind::StreamNotFound => format!(
                            "no intake stream takes {subject}: is a tailwater node running with --nats on this NATS, and does tenant {} exist?",
                            self.tenant
                        ),
                        // The tenant's intake stream is full
                        // (--nats-intake-tenant-bytes on the nodes): its
                        // lines wait for the nodes to relay what it holds.
                        _ if full(&error.to_string()) => {
                            return Outcome::RetryAfter {
                                retry_after: Some(FULL_RETRY_AFTER),
                                reason: format!(
                                    "the intake of tenant {} on NATS is full ({error}): the nodes have not relayed what it holds yet (are they up? is an app of the tenant over its rate limit?); the lines stay in the spool and are sent again",
                                    self.tenant
                                ),
                            };
                        }
                        _ if error.to_string().contains("maximum payload") => {
                            return Outcome::TooLarge {
                                reason: error.to_string(),
                            }
                        }
                        _ => format!("publishing to {subject} failed: {error}"),
                    };
                    return self.unacknowledged(&subject, reason);
                }
                Err(_) => {
                    return self.unacknowledged(
                        &subject,
                        format!("no acknowledgement from JetStream within {PUBLISH_TIMEOUT:?}"),
                    )
                }
            }
        }
        let all_duplicates = records > 0 && duplicates == count;
        Outcome::Accepted(IngestResponse {
            accepted: if all_duplicates { 0 } else { records },
            duplicates: if all_duplicates { records } else { 0 },
            ..IngestResponse::default()
        })
    }
}

/// Whether JetStream refused a message because its stream is full
/// (discard new: "maximum bytes exceeded", "maximum messages exceeded").
fn full(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("maximum bytes exceeded") || error.contains("maximum messages exceeded")
}

#[cfg(test)]
mod tests {
    use super::full;

    #[test]
    fn a_full_intake_is_told_from_other_failures() {
        // As nats-server 2.9 answers a publish to a full discard-new stream.
        assert!(full("nats: maximum bytes exceeded"));
        assert!(full("publish failed: Maximum Messages Exceeded"));
        assert!(!full("no stream found for given subject"));
        assert!(!full("timed out: didn't receive ack in time"));
    }
}
