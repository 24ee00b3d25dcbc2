//! Where batches go: a [`Transport`] sends one and says how the receiver
//! took it, in the shipper's terms ([`Outcome`]), so the shipper decides
//! what to do (wait, split, drop, retry) without knowing the protocol.
//! [`Http`] (the server's `/v1/ingest` through `tailwater_client`) is the
//! first implementation.

use std::future::Future;
use std::time::Duration;

use tailwater_client::{Client, ClientError};
use tailwater_model::wire::{IngestBatch, IngestResponse};

/// How the receiver took a batch.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Stored (lines it refused for good, if any, are in the answer).
    Accepted(IngestResponse),
    /// Slow down (HTTP 429): wait at least `retry_after` when given; the
    /// lines stay in the spool.
    RetryAfter {
        retry_after: Option<Duration>,
        reason: String,
    },
    /// Too large for the receiver (HTTP 413): send less at once.
    TooLarge { reason: String },
    /// The receiver refuses this sender or request (a wrong token, an
    /// invalid batch): kept and tried again with backoff, for an operator
    /// can fix it. `reason` says what to check.
    Rejected { reason: String },
    /// Not stored now: the receiver could not be reached (`answered`
    /// false), or answered that it cannot store for now (HTTP 507: its disk
    /// is full; 503: its store is stalled), for `retry_after` when given.
    /// `elsewhere`: another node may take it (this one could not be reached,
    /// or answered 502, 503 or 504), so a [`Failover`](super::failover)
    /// moves on; a 507 or a 4xx means the same on every node.
    Unavailable {
        retry_after: Option<Duration>,
        answered: bool,
        elsewhere: bool,
        reason: String,
    },
}

impl Outcome {
    /// What went wrong, for messages; empty for [`Outcome::Accepted`].
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Accepted(_) => "",
            Outcome::RetryAfter { reason, .. }
            | Outcome::TooLarge { reason }
            | Outcome::Rejected { reason }
            | Outcome::Unavailable { reason, .. } => reason,
        }
    }
}

/// Sends batches to one receiver.
pub trait Transport: Send + Sync + 'static {
    /// The receiver, as messages name it (the server's URL; with several,
    /// the one in use).
    fn destination(&self) -> &str;

    /// Sends `batch` (an empty one is a heartbeat) and says how it was
    /// taken.
    fn send(&self, batch: &IngestBatch) -> impl Future<Output = Outcome> + Send;
}

/// A shared transport (the agent keeps one to name the server in use).
impl<T: Transport> Transport for std::sync::Arc<T> {
    fn destination(&self) -> &str {
        (**self).destination()
    }

    fn send(&self, batch: &IngestBatch) -> impl Future<Output = Outcome> + Send {
        (**self).send(batch)
    }
}

/// The server's ingest API over HTTP. A server that takes the connection
/// but never answers (frozen, SIGSTOPped, its disk hung) is given up on
/// after `timeout` (`--send-timeout`) and taken for unreachable, so a
/// [`Failover`](super::failover) moves on; the batch stays in the spool and
/// a copy the frozen server stores later is recognised by its sequence
/// numbers and stored once.
pub struct Http {
    pub client: Client,
    pub timeout: Duration,
}

impl Transport for Http {
    fn destination(&self) -> &str {
        self.client.server()
    }

    async fn send(&self, batch: &IngestBatch) -> Outcome {
        match tokio::time::timeout(self.timeout, self.client.ingest(batch)).await {
            Ok(Ok(answer)) => Outcome::Accepted(answer),
            Ok(Err(error)) => outcome_of(error),
            Err(_) => Outcome::Unavailable {
                retry_after: None,
                answered: false,
                elsewhere: true,
                reason: format!(
                    "no answer within {}s (--send-timeout)",
                    self.timeout.as_secs_f64()
                ),
            },
        }
    }
}

/// An HTTP failure in the shipper's terms.
fn outcome_of(error: ClientError) -> Outcome {
    match error {
        ClientError::RateLimited {
            retry_after,
            message,
            ..
        } => Outcome::RetryAfter {
            retry_after,
            reason: message,
        },
        ClientError::Unavailable {
            status,
            retry_after,
            message,
            ..
        } => Outcome::Unavailable {
            retry_after,
            answered: true,
            elsewhere: status == 503,
            reason: format!("{status}: {message}"),
        },
        ClientError::Api {
            status: 413,
            message,
            ..
        } => Outcome::TooLarge { reason: message },
        ClientError::Api { status, .. } if (400..500).contains(&status) => {
            let hint = match status {
                401 | 403 => {
                    " (check --token / TAILWATER_TOKEN: an ingest or admin token of this server)"
                }
                _ => "",
            };
            Outcome::Rejected {
                reason: format!("{error}{hint}"),
            }
        }
        ClientError::InvalidUrl(_) => Outcome::Rejected {
            reason: error.to_string(),
        },
        ClientError::Unreachable { .. } | ClientError::Protocol(_) | ClientError::Api { .. } => {
            // A gateway's 502 or 504, or no answer at all: this node is
            // away; another may be up. A 500 is this request's own trouble.
            let elsewhere = match &error {
                ClientError::Api { status, .. } => matches!(status, 502 | 504),
                _ => true,
            };
            Outcome::Unavailable {
                retry_after: None,
                answered: false,
                elsewhere,
                reason: error.to_string(),
            }
        }
    }
}
