//! Where batches go: a [`Transport`] sends one and says how the receiver
//! took it, in the shipper's terms ([`Outcome`]), so the shipper decides
//! what to do (wait, split, drop, retry) without knowing the protocol.
//! [`Http`] (the server's `/v1/ingest` through `tailwater_client`) is the
//! first implementation, [`Nats`](super::nats::Nats) (a cluster's intake
//! stream) the second; [`Receiver`] is either, as the agent was told.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Where this agent ships: a server over HTTP (`--server`, one of several
/// under a [`Failover`](super::Failover)), or a cluster's NATS (`--nats`).
pub enum Receiver {
    Http(Http),
    Nats(Box<super::nats::Nats>),
}

impl Transport for Receiver {
    fn destination(&self) -> &str {
        match self {
            Receiver::Http(http) => http.destination(),
            Receiver::Nats(nats) => nats.destination(),
        }
    }

    async fn send(&self, batch: &IngestBatch) -> Outcome {
        match self {
            Receiver::Http(http) => http.send(batch).await,
            Receiver::Nats(nats) => nats.send(batch).await,
        }
    }
}

/// The server's ingest API over HTTP: batches in binary
/// (`application/x-tailwater-batch`) while the server takes them; once it
/// answers 415 (`--ingest-binary=false`), or 400 to a batch it then takes
/// as JSON (a server older than binary batches), the same batch and every
/// later one in JSON.
///
/// A server that takes the connection but never answers (frozen,
/// SIGSTOPped, its disk hung) is given up on after `timeout`
/// (`--send-timeout`) and taken for unreachable, so a
/// [`Failover`](super::failover) moves on; the batch stays in the spool and
/// a copy the frozen server stores later is recognised by its sequence
/// numbers and stored once.
pub struct Http {
    client: Client,
    binary: AtomicBool,
    timeout: Duration,
}

impl Http {
    pub fn new(client: Client, timeout: Duration) -> Http {
        Http {
            client,
            binary: AtomicBool::new(true),
            timeout,
        }
    }

    /// Whether batches go in binary (until the server refuses it).
    pub fn sends_binary(&self) -> bool {
        self.binary.load(Ordering::Relaxed)
    }
}

impl Transport for Http {
    fn destination(&self) -> &str {
        self.client.server()
    }

    async fn send(&self, batch: &IngestBatch) -> Outcome {
        match tokio::time::timeout(self.timeout, self.send_in_time(batch)).await {
            Ok(outcome) => outcome,
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

impl Http {
    /// One batch, binary first (see the type), without the time limit.
    async fn send_in_time(&self, batch: &IngestBatch) -> Outcome {
        if !self.sends_binary() {
            return self.send_json(batch).await;
        }
        match self.client.ingest_binary(batch).await {
            Ok(answer) => Outcome::Accepted(answer),
            Err(ClientError::Api { status: 415, .. }) => {
                self.to_json();
                self.send_json(batch).await
            }
            // A server older than binary batches reads every body as JSON,
            // so it answers 400: the same batch as JSON tells it from a
            // batch that is bad whatever its form.
            Err(ClientError::Api { status: 400, .. }) => match self.client.ingest(batch).await {
                Ok(answer) => {
                    self.to_json();
                    Outcome::Accepted(answer)
                }
                Err(error) => outcome_of(error),
            },
            Err(error) => outcome_of(error),
        }
    }

    async fn send_json(&self, batch: &IngestBatch) -> Outcome {
        match self.client.ingest(batch).await {
            Ok(answer) => Outcome::Accepted(answer),
            Err(error) => outcome_of(error),
        }
    }

    /// From now on, JSON: the server does not take binary batches.
    fn to_json(&self) {
        self.binary.store(false, Ordering::Relaxed);
        tracing::info!(
            server = self.client.server(),
            "the server does not take binary batches: sending JSON from now on"
        );
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tailwater_model::wire::IngestRecord;

    use super::*;

    /// A server as tailwater's were before binary batches (no such server
    /// can run in a test): every body read as JSON, 400 in the API's shape
    /// when it is not a batch; `bad`, a batch it refuses in any form.
    /// Answers its address and the bodies' first bytes, in order.
    async fn older_server(bad: bool) -> (String, tokio::sync::mpsc::UnboundedReceiver<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, bodies) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let seen = seen.clone();
                let service = hyper::service::service_fn(
                    move |request: Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let body: Bytes =
                                request.into_body().collect().await.unwrap().to_bytes();
                            seen.send(body.first().copied().unwrap_or(0)).unwrap();
                            let answer = match serde_json::from_slice::<IngestBatch>(&body) {
                                Ok(batch) if !bad => {
                                    Response::new(Full::new(Bytes::from(format!(
                                        r#"{{"accepted":{},"duplicates":0}}"#,
                                        batch.records.len()
                                    ))))
                                }
                                _ => {
                                    let mut answer = Response::new(Full::new(Bytes::from(
                                        r#"{"error":{"code":"bad_request","message":"invalid ingest batch: expected value at line 1 column 1"}}"#,
                                    )));
                                    *answer.status_mut() = hyper::StatusCode::BAD_REQUEST;
                                    answer
                                }
                            };
                            Ok::<_, Infallible>(answer)
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (format!("http://{addr}"), bodies)
    }

    fn batch() -> IngestBatch {
        IngestBatch {
            app: "a".into(),
            version: String::new(),
            runner: "r".into(),
            boot: "b".into(),
            source: Default::default(),
            records: vec![IngestRecord::system(
                0,
                jiff::Timestamp::now(),
                Default::default(),
                "hello".into(),
                Default::default(),
            )],
        }
    }

    #[tokio::test]
    async fn an_older_server_gets_json_from_its_first_400_on() {
        let (url, mut bodies) = older_server(false).await;
        let http = Http::new(Client::new(&url, "tw_x").unwrap(), Duration::from_secs(30));
        assert!(http.sends_binary());
        for _ in 0..2 {
            let outcome = http.send(&batch()).await;
            assert!(
                matches!(outcome, Outcome::Accepted(ref a) if a.accepted == 1),
                "{outcome:?}"
            );
        }
        assert!(!http.sends_binary());
        // Binary once (its version byte), then JSON (`{`) only.
        let mut sent = Vec::new();
        while let Ok(first) = bodies.try_recv() {
            sent.push(first);
        }
        assert_eq!(sent, [1, b'{', b'{']);
    }

    #[tokio::test]
    async fn a_batch_refused_in_any_form_is_rejected_and_binary_kept() {
        let (url, _bodies) = older_server(true).await;
        let http = Http::new(Client::new(&url, "tw_x").unwrap(), Duration::from_secs(30));
        let outcome = http.send(&batch()).await;
        assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");
        assert!(
            http.sends_binary(),
            "a bad batch says nothing of the server"
        );
    }
}
