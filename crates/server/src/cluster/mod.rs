//! Distributed mode: tailwater nodes meeting on a NATS JetStream cluster
//! (`tailwater server --nats URL[,URL…] --node NAME`). JetStream does the
//! replication, ordering and delivery; tailwater grows no consensus of its
//! own. ARCHITECTURE.md ("Distributed mode") has the design; this slice:
//!
//! - [`message`]: what a batch is on the stream, its partition and its
//!   `Nats-Msg-Id`;
//! - [`publish`]: the ingest pipeline's cluster sink: an accepted batch is
//!   published to the replicated stream and the sender answered only
//!   after JetStream's acknowledgement;
//! - [`materialize`]: every node reads every partition through its own
//!   durable pull consumer into its local store, acknowledging each
//!   message only once its records are durable there;
//! - [`members`]: each node's heartbeat in a key-value bucket, with a TTL;
//! - [`bucket`]: the key-value buckets above, made as nats-server 2.9
//!   makes a bucket's stream (async-nats cannot make one against 2.9);
//! - [`registry`]: tenants, apps, hashed tokens and the seal key shared by
//!   every node through a key-value bucket, watched into each node's
//!   registry;
//! - [`intake`]: batches agents published straight to NATS, a stream and
//!   consumer per tenant, relayed by every node;
//! - [`relay`]: one intake message checked, put through the ingest
//!   pipeline, or refused and told in its runner's logs;
//! - [`pull`]: a consumer's messages, pull by pull;
//! - [`stats`]: what each does, by partition, for `GET /metrics`;
//! - [`status`]: the nodes, partitions and consumers `GET /v1/cluster`
//!   shows;
//! - [`window`]: messages the stream dropped before this node read them,
//!   found, counted, kept and shown;
//! - [`repair`]: such a gap filled from a live peer's store, through a
//!   node-only endpoint;
//! - [`peer`]: how nodes reach each other: the URL a heartbeat carries,
//!   and the one HTTP client peers are called with.

pub mod applied;
pub mod bucket;
pub mod intake;
pub mod local;
pub mod materialize;
pub mod members;
pub mod message;
pub mod peer;
pub mod publish;
pub mod pull;
pub mod registry;
pub mod relay;
pub mod repair;
pub mod stats;
pub mod status;
pub mod stretch;
pub mod window;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use tailwater_model::nats_auth::{self, NatsAuth};

/// The stream every accepted batch goes to.
pub const STREAM: &str = "TAILWATER_BATCHES";
/// Its subjects: `tailwater.batches.<partition>`.
pub const SUBJECT_PREFIX: &str = "tailwater.batches";
/// Partitions unless configured otherwise (`--nats-partitions`). Fixed for
/// the life of a stream: it is written in the stream's description and a
/// node configured otherwise refuses to start.
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Copies JetStream keeps of each batch (`--nats-replicas`).
pub const DEFAULT_REPLICAS: usize = 3;
/// How long a sender waits for JetStream's acknowledgement before it is
/// answered 503 and sends the batch again (`--nats-publish-timeout`): long
/// enough to ride out a stream leader's election (about 6 s on 2.9).
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// The stream's replay window by age (`--nats-max-age`): a node away for
/// longer cannot catch up from the stream alone.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The stream's replay window by size (`--nats-max-bytes`); the oldest
/// batches are dropped past it.
pub const DEFAULT_MAX_BYTES: i64 = 64 * 1024 * 1024 * 1024;
/// The window in which a batch published again with the same
/// `Nats-Msg-Id` is stored once by JetStream (past it, the store's own
/// deduplication still keeps one copy).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Messages a node's consumer of one partition may hold unacknowledged
/// (`--nats-max-ack-pending`). JetStream's default (1000) stalls consumers
/// that acknowledge after a slow write; this bounds a partition's work in
/// flight to what one fetch asks for, twice.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 256;
/// How long a node's heartbeat lasts (`--nats-node-ttl`): a node silent
/// for longer is taken for gone. It beats four times as often.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(10);

/// NATS's own default `max_payload` (1 MiB), assumed until the server
/// this node is connected to says its own.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// How this node joins the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// NATS servers to connect to (any of them; the client fails over),
    /// with the node's NATS user in them or not (`nats://user:password@…`).
    pub urls: Vec<String>,
    /// The node's NATS user as a creds file (`--nats-creds`) or an nkey
    /// seed's file (`--nats-nkey`) instead, read at connect
    /// (`tailwater_model::nats_auth`).
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
    /// This node's name: unique in the cluster, stable across restarts
    /// (its consumers are named after it).
    pub node: String,
    pub partitions: u32,
    pub replicas: usize,
    pub publish_timeout: Duration,
    pub max_age: Duration,
    pub max_bytes: i64,
    pub max_ack_pending: i64,
    pub node_ttl: Duration,
    /// The most one tenant's intake stream holds waiting to be relayed
    /// (`--nats-intake-tenant-bytes`); past it its agents' publishes are
    /// refused.
    pub intake_tenant_bytes: i64,
    /// The URL the other nodes reach this one at, carried in its
    /// heartbeat (`--nats-advertise`); none: the address it listens on
    /// ([`peer::advertised`]).
    pub advertise: Option<String>,
    /// More certificates the peer client trusts besides the public roots
    /// (`--nats-peer-ca`): the nodes' own, or their CA's ([`peer::client`]).
    pub peer_ca: Option<PathBuf>,
    /// How long a node waits at a stretch the stream dropped for a peer
    /// that can fill it in order (`--nats-fill-wait`).
    pub fill_wait: Duration,
}

impl ClusterConfig {
    pub fn new(urls: Vec<String>, node: String) -> ClusterConfig {
        ClusterConfig {
            urls,
            creds: None,
            nkey: None,
            node,
            partitions: DEFAULT_PARTITIONS,
            replicas: DEFAULT_REPLICAS,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
            max_ack_pending: DEFAULT_MAX_ACK_PENDING,
            node_ttl: DEFAULT_NODE_TTL,
            intake_tenant_bytes: intake::DEFAULT_TENANT_BYTES,
            advertise: None,
            peer_ca: None,
            fill_wait: stretch::DEFAULT_FILL_WAIT,
        }
    }

    /// The subject of `partition`.
    pub fn subject(partition: u32) -> String {
        format!("{SUBJECT_PREFIX}.{partition}")
    }

    /// A node name is a consumer name's part: letters, digits, `-`, `_`.
    pub fn check(&self) -> anyhow::Result<()> {
        let node_ok = !self.node.is_empty()
            && self.node.len() <= 64
            && self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        anyhow::ensure!(
            node_ok,
            "invalid --node {:?}: give each node a name of 1 to 64 letters, digits, '-' or '_', the same at every restart",
            self.node
        );
        anyhow::ensure!(
            (1..=1024).contains(&self.partitions),
            "invalid --nats-partitions {}: use 1 to 1024 (fixed for the life of the stream)",
            self.partitions
        );
        anyhow::ensure!(
            (1..=5).contains(&self.replicas),
            "invalid --nats-replicas {}: JetStream keeps 1 to 5 copies (3 survives the loss of one NATS server)",
            self.replicas
        );
        anyhow::ensure!(
            self.max_ack_pending >= 1,
            "invalid --nats-max-ack-pending {}: a node must be allowed at least one batch in flight",
            self.max_ack_pending
        );
        anyhow::ensure!(
            !self.publish_timeout.is_zero(),
            "invalid --nats-publish-timeout 0s: give JetStream time to acknowledge (10s rides out an election)"
        );
        anyhow::ensure!(
            self.node_ttl >= Duration::from_secs(1),
            "invalid --nats-node-ttl {:?}: give heartbeats at least 1s",
            self.node_ttl
        );
        anyhow::ensure!(
            self.intake_tenant_bytes >= 1024 * 1024,
            "invalid --nats-intake-tenant-bytes {}: give each tenant's intake at least 1 MiB (a batch of the agent's is up to the servers' max_payload)",
            self.intake_tenant_bytes
        );
        anyhow::ensure!(
            !self.urls.is_empty(),
            "--nats needs at least one server URL (nats://host:4222)"
        );
        Ok(())
    }

    /// What the stream's description says, so every node agrees on the
    /// partitions.
    fn description(&self) -> String {
        format!("tailwater batches; partitions={}", self.partitions)
    }
}

/// This node's connection to the cluster.
#[derive(Clone)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub jetstream: jetstream::Context,
    client: async_nats::Client,
    /// The HTTP client peers are called with ([`peer::client`]).
    pub peers: reqwest::Client,
}

impl Cluster {
    /// Connects (waiting for a server to answer, up to the publish timeout)
    /// and makes sure the stream is there, as configured. Credentials
    /// NATS refuses fail the start, saying which to check.
    pub async fn connect(config: ClusterConfig) -> anyhow::Result<Cluster> {
        config.check()?;
        let peers = peer::client(&config)?;
        let addrs = config
            .urls
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .context("invalid --nats URL: give nats://host:port, comma-separated")?;
        let url_user = addrs.iter().find(|addr| addr.username().is_some());
        let auth = nats_auth::load(
            config.creds.as_deref(),
            config.nkey.as_deref(),
            url_user.is_some(),
        )
        .map_err(anyhow::Error::msg)?;
        let mut options = async_nats::ConnectOptions::new();
        // The NATS user (`nats://user:password@host:port`, see
        // docs/cluster.md): the client does not read it from URLs.
        if let Some(addr) = url_user {
            let user = addr.username().unwrap_or_default().to_owned();
            let password = addr.password().unwrap_or_default().to_owned();
            options = options.user_and_password(user, password);
        }
        match &auth {
            NatsAuth::Url => {}
            NatsAuth::Nkey { seed, .. } => options = options.nkey(seed.clone()),
            NatsAuth::Creds { text, .. } => {
                options = options
                    .credentials(text)
                    .context("--nats-creds: async-nats cannot read the creds file")?;
            }
        }
        if let Some(public_key) = auth.public_key() {
            tracing::info!(user = public_key, "connecting to NATS as this nkey user");
        }
        let refused = Arc::new(Mutex::new(None::<String>));
        let (connected_tx, mut connected) = tokio::sync::watch::channel(false);
        let connected_tx = Arc::new(connected_tx);
        let seen = refused.clone();
        let client = options
            .name(format!("tailwater-{}", config.node))
            .connection_timeout(config.publish_timeout)
            .request_timeout(Some(config.publish_timeout))
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let (seen, connected_tx) = (seen.clone(), connected_tx.clone());
                async move {
                    if let Some(error) = refusal(&event) {
                        tracing::warn!(%error, "the NATS servers refused this node's credentials: check --nats-nkey, --nats-creds or the user in the --nats URLs against the nats-server's users (docs/cluster.md)");
                        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
                        connected_tx.send_replace(true);
                    } else if event == async_nats::Event::Connected {
                        *seen.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        connected_tx.send_replace(true);
                    }
                }
            })
            .connect(addrs)
            .await
            .context("cannot connect to NATS: is --nats right and the server up?")?;
        // The first answer: connected, or the credentials refused (then
        // the client would only try again, and the stream's creation time
        // out saying nothing of them).
        let _ =
            tokio::time::timeout(config.publish_timeout, connected.wait_for(|told| *told)).await;
        if let Some(error) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
            anyhow::bail!(
                "the NATS servers refused this node's credentials ({error}): check --nats-nkey, --nats-creds or the user in the --nats URLs against the users of the nats-server configuration (docs/cluster.md)"
            );
        }
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .build(client.clone());
        let cluster = Cluster {
            config,
            jetstream,
            client,
            peers,
        };
        cluster.ensure_stream().await?;
        Ok(cluster)
    }

    /// The largest message the server this node is connected to takes (its
    /// `max_payload`), or NATS's default before it has said.
    pub fn max_payload(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            max_payload => max_payload,
        }
    }

    async fn ensure_stream(&self) -> anyhow::Result<()> {
        let config = &self.config;
        let wanted = stream::Config {
            name: STREAM.to_owned(),
            description: Some(config.description()),
            subjects: vec![format!("{SUBJECT_PREFIX}.*")],
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: config.max_age,
            max_bytes: config.max_bytes,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let deadline = tokio::time::Instant::now() + config.publish_timeout * 3;
        let stream = loop {
            // A cluster just started has no JetStream meta leader for a
            // moment: retried until the deadline.
            match self.jetstream.get_or_create_stream(wanted.clone()).await {
                Ok(stream) => break stream,
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(%error, "waiting for JetStream to create the stream");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(error) => {
                    return Err(anyhow::anyhow!(error)).context(format!(
                        "cannot create the JetStream stream {STREAM}: is JetStream enabled on the NATS servers, with room for --nats-max-bytes on --nats-replicas of them?"
                    ))
                }
            }
        };
        let described = stream.cached_info().config.description.clone();
        anyhow::ensure!(
            described.as_deref() == Some(config.description().as_str()),
            "the stream {STREAM} was made with {:?}, this node is configured with partitions={}: give every node the same --nats-partitions",
            described.unwrap_or_default(),
            config.partitions
        );
        Ok(())
    }
}

/// The server's refusal of the client's credentials, as async-nats tells
/// it: at connect (a client error, as the client keeps trying) or on a
/// live connection.
fn refusal(event: &async_nats::Event) -> Option<String> {
    let error = match event {
        async_nats::Event::ServerError(error) => error.to_string(),
        async_nats::Event::ClientError(error) => error.to_string(),
        _ => return None,
    };
    nats_auth::refused(&error).then_some(error)
}
