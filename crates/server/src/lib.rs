//! The tailwater server: the HTTP API over the embedded store.
//!
//! - [`access`]: who may do what with whose logs: the registry (tenants,
//!   apps, hashed tokens, the key that seals record ids), the scopes and
//!   the recorded-caller rule.
//! - [`ingest`]: the one ingest pipeline every way in hands batches to.
//! - [`api`]: the routes, thin adapters over the rest: ingest's first edge,
//!   history, live tail, export, histogram, requests, runners, tenancy,
//!   health, and the web UI.
//! - [`tail`]: how live tail follows the store, and what a slow client
//!   misses.
//! - [`limits`]: ingest limits (sizes, rates) and the reports of them.
//! - [`redact`]: secrets replaced before storage.
//! - [`metrics`]: the counters behind `GET /metrics`.
//! - [`tls`]: HTTPS, when given a certificate and key.
//! - [`serve`]: the accept loop and each connection's life (timeouts, the
//!   connection cap), for HTTP and HTTPS alike.
//! - [`runners`]: each runner's state, from its lifecycle records and
//!   heartbeats; lost runners.
//! - [`recovery`]: `system` records of what a damaged write-ahead log lost.
//! - [`cluster`]: distributed mode: nodes meeting on a NATS JetStream
//!   cluster (`--nats`), publishing accepted batches and materializing them.
//! - [`drains`]: an app's records sent on to its owner's URLs (NDJSON,
//!   OTLP, Loki), signed, at least once.
//!
//! [`start`] binds and serves in the background and hands back a
//! [`RunningServer`]; the `tailwater server` and `tailwater demo` commands
//! and the tests all start it this way.

pub mod access;
pub mod api;
pub mod cluster;
pub mod count_slots;
pub mod drains;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod protocols;
pub mod recovery;
pub mod redact;
pub mod requests;
pub mod runners;
pub mod serve;
pub mod tail;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tailwater_model::wire::IngestBatch;
use tailwater_store::{Retention, Store, StoreOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::registry::Registry;
use crate::access::{ownership, registry};
use crate::limits::IngestLimits;
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::runners::{RunnerSettings, Runners};

/// The address the server listens on unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Largest ingest request body, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Records one Loki API query (`/loki/api/v1/...`) reads at most, unless
/// configured otherwise: past it, the query is refused with an error that
/// names the limit, never answered in part.
pub const DEFAULT_LOGQL_MAX_RECORDS: usize = 1_000_000;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Ensures this token exists as an admin token (for automation) instead
    /// of generating a random one on first start.
    pub bootstrap_token: Option<String>,
    /// Durability and memtable limits of the embedded store.
    pub store: StoreOptions,
    /// How long records are kept and how much disk they may take.
    pub retention: Retention,
    /// Largest ingest request body; larger ones are refused with 413.
    pub max_batch_bytes: usize,
    /// Whether `POST /v1/ingest` takes binary batches
    /// (`--ingest-binary`, on); off, it answers them 415.
    pub ingest_binary: bool,
    /// Most memory one query regex (or substring, or label regex) may take
    /// once compiled, in bytes; larger ones are refused with 400.
    pub regex_size_limit: usize,
    /// Line, field, label and rate limits of ingest.
    pub limits: IngestLimits,
    /// Whether the default redaction patterns apply (`--no-default-redaction`
    /// turns them off).
    pub redact_defaults: bool,
    /// More redaction patterns (`--redact`), named `custom_1`, ….
    pub redact: Vec<String>,
    /// Whether `/metrics` answers without a token (`--public-metrics`);
    /// otherwise it takes an admin token.
    pub public_metrics: bool,
    /// Serve HTTPS with this certificate and key (`--tls-cert`, `--tls-key`).
    pub tls: Option<tls::TlsFiles>,
    /// Records one Loki API query reads at most (`--logql-max-records`).
    pub logql_max_records: usize,
    /// `request_start` records one page of `GET /v1/requests` reads at most.
    pub requests_scan_max: usize,
    /// The runner table: heartbeat timeout, size.
    pub runners: RunnerSettings,
    /// How many matching records a live tail client may fall behind the
    /// newest before the ones it has not got are skipped and reported.
    pub tail_buffer: u64,
    /// What owners may keep in the registry: token name length, live tokens
    /// and apps per tenant.
    pub registry: registry::RegistryLimits,
    /// Header-read and idle timeouts, the connection cap, head sizes.
    pub connections: serve::ConnectionLimits,
    /// How long after a request's first line its gateway's `request_start`
    /// naming a caller must be stored; a request without one is shown to
    /// callers once its first line is half as old again.
    pub request_owner_grace: std::time::Duration,
    /// Record ids (OTLP `log.record.uid`) remembered per tenant to store a
    /// record sent again once (`ingest::identity`); 0: none.
    pub dedup_uids: usize,
    /// Distributed mode (`--nats`, `--node`): `None`, the embedded default.
    pub cluster: Option<cluster::ClusterConfig>,
    /// How drains batch, retry, connect, and which addresses they may reach.
    pub drains: drains::DrainSettings,
    /// Counts (and histograms) one tenant runs at once
    /// (`--count-concurrency`); see [`count_slots`].
    pub count_concurrency: usize,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            bootstrap_token: None,
            store: StoreOptions::default(),
            retention: Retention::default(),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            ingest_binary: true,
            regex_size_limit: tailwater_model::DEFAULT_REGEX_SIZE_LIMIT,
            limits: IngestLimits::default(),
            redact_defaults: true,
            redact: Vec::new(),
            public_metrics: false,
            tls: None,
            logql_max_records: DEFAULT_LOGQL_MAX_RECORDS,
            requests_scan_max: requests::list::DEFAULT_SCAN_MAX,
            runners: RunnerSettings::default(),
            tail_buffer: tail::DEFAULT_TAIL_BUFFER,
            registry: registry::RegistryLimits::default(),
            connections: serve::ConnectionLimits::default(),
            request_owner_grace: ownership::DEFAULT_REQUEST_OWNER_GRACE,
            dedup_uids: ingest::identity::DEFAULT_DEDUP_UIDS,
            cluster: None,
            drains: drains::DrainSettings::default(),
            count_concurrency: count_slots::DEFAULT_COUNT_CONCURRENCY,
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    /// Turns `true` when the server shuts down, so live tails end and
    /// graceful shutdown does not wait on them forever.
    pub stopping: watch::Sender<bool>,
    pub max_batch_bytes: usize,
    /// See [`ServerConfig::ingest_binary`].
    pub ingest_binary: bool,
    /// See [`ServerConfig::regex_size_limit`].
    pub regex_size_limit: usize,
    /// The one ingest pipeline, which every way in hands batches to.
    pub ingest: Arc<ingest::Pipeline>,
    pub metrics: Arc<Metrics>,
    pub public_metrics: bool,
    /// See [`ServerConfig::logql_max_records`].
    pub logql_max_records: usize,
    /// See [`ServerConfig::requests_scan_max`].
    pub requests_scan_max: usize,
    /// Each runner's state; ingest appends through it.
    pub runners: Arc<Runners>,
    pub tail_buffer: u64,
    pub tail_stats: Arc<tail::TailStats>,
    /// When records were stored: settles requests with no recorded caller.
    pub settling: Arc<ownership::Settling>,
    /// Every app's drains.
    pub drains: Arc<drains::Drains>,
    /// Each tenant's slots for counts running at once.
    pub count_slots: Arc<count_slots::CountSlots>,
    /// This node's connection to its cluster (`--nats`); `None` embedded.
    pub cluster: Option<cluster::Cluster>,
    /// How far this node has stored the cluster's stream (what it may
    /// serve a peer filling a stretch); `None` embedded.
    pub applied: Option<Arc<cluster::applied::Applied>>,
}

impl AppState {
    /// The state of a server over an open store and registry; opens the
    /// runner table (it may replay stored lifecycle records: blocking).
    pub fn open(
        store: Store,
        registry: Registry,
        redactor: Redactor,
        config: &ServerConfig,
    ) -> anyhow::Result<AppState> {
        AppState::open_with(store, registry, redactor, config, ingest::Sink::Local, None)
    }

    /// [`AppState::open`], keeping accepted batches in `sink`, and
    /// exporting the cluster's `stats` when given.
    pub fn open_with(
        store: Store,
        registry: Registry,
        redactor: Redactor,
        config: &ServerConfig,
        sink: ingest::Sink,
        stats: Option<Arc<cluster::stats::Stats>>,
    ) -> anyhow::Result<AppState> {
        let registry = Arc::new(registry);
        recovery::write_loss_notices(&store, &registry);
        let store = Arc::new(store);
        let runners = Arc::new(Runners::open(
            &config.data_dir,
            store.clone(),
            &registry,
            config.runners.clone(),
        )?);
        let tail_stats = Arc::<tail::TailStats>::default();
        let mut metrics = Metrics::new(store.clone());
        metrics.watch_tail(tail_stats.clone());
        metrics.watch_runners(runners.clone());
        metrics.watch_registry(registry.clone());
        if let Some(stats) = stats {
            metrics.watch_cluster(stats);
        }
        let drains = Arc::new(drains::Drains::open(
            &config.data_dir.join("drains"),
            config.drains.clone(),
            store.clone(),
            registry.clone(),
        )?);
        metrics.watch_drains(drains.clone());
        let settling = Arc::new(ownership::Settling::new(
            store.clone(),
            config.request_owner_grace,
        ));
        let metrics = Arc::new(metrics);
        let ingest = Arc::new(
            ingest::Pipeline::new(
                registry.clone(),
                config.limits.clone(),
                redactor,
                metrics.clone(),
                runners.clone(),
                settling.clone(),
                config.retention.max_age,
            )
            .remembering_uids(config.dedup_uids)
            .keeping_in(sink, boot_suffix(config)),
        );
        Ok(AppState {
            metrics,
            ingest,
            store,
            registry,
            runners,
            stopping: watch::channel(false).0,
            max_batch_bytes: config.max_batch_bytes,
            ingest_binary: config.ingest_binary,
            public_metrics: config.public_metrics,
            regex_size_limit: config.regex_size_limit,
            tail_buffer: config.tail_buffer,
            tail_stats,
            settling,
            drains,
            logql_max_records: config.logql_max_records.max(1),
            requests_scan_max: config.requests_scan_max.max(1),
            count_slots: Arc::new(count_slots::CountSlots::new(config.count_concurrency)),
            cluster: None,
            applied: None,
        })
    }
}

/// What a node adds to the boots it gives senders that number nothing: in
/// distributed mode its name and start in milliseconds (nodes, and lives
/// of one node, number apart: each reads only its own store, which may
/// not yet hold what another numbered), else nothing.
fn boot_suffix(config: &ServerConfig) -> String {
    match &config.cluster {
        Some(cluster) => format!(
            "@{}-{}",
            cluster.node,
            jiff::Timestamp::now().as_millisecond()
        ),
        None => String::new(),
    }
}

/// A server serving in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub tls: bool,
    /// The admin token created on this start, if one was: shown once, never
    /// stored in clear.
    pub new_admin_token: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The runner table's upkeep, which saves it once more as it ends.
    runner_upkeep: JoinHandle<()>,
    /// Distributed mode's consumers and heartbeat, which end with the
    /// server (each consumer finishes the batch it is storing, so the store
    /// closes after them; the heartbeat's key is deleted).
    cluster_tasks: Vec<JoinHandle<()>>,
    /// The drains, whose workers end with the server.
    drains: Arc<drains::Drains>,
}

impl RunningServer {
    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = self.task.await?.context("server failed");
        self.runner_upkeep.await?;
        for task in self.cluster_tasks {
            task.await?;
        }
        self.drains.stopped().await;
        served
    }

    /// The base URL clients use: `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Serves until the process is asked to stop (Ctrl-C or SIGTERM).
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Opens the data directory, binds, and serves in the background.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let redactor =
        Redactor::new(config.redact_defaults, &config.redact).map_err(anyhow::Error::msg)?;
    let tls = config.tls.as_ref().map(tls::load).transpose()?;
    // Tokens and logs: the owner's alone (folders already there are left
    // as the operator set them; the store's own is restricted on open).
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .recursive(true)
        .create(&config.data_dir)?;
    // Bound first: a start that cannot listen changes nothing on disk, and
    // so cannot make an admin token it would never show.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another server using it? pass another --listen",
                config.listen
            )
        })?;
    // Distributed mode joins its cluster before anything is opened: a node
    // that cannot (or is configured unlike the stream) changes nothing.
    // Its peers call it at the URL its heartbeat carries.
    let advertised = match &config.cluster {
        Some(cluster_config) => Some(cluster::peer::advertised(
            cluster_config.advertise.as_deref(),
            config.tls.is_some(),
            listener.local_addr()?,
        )?),
        None => None,
    };
    let cluster = match &config.cluster {
        Some(cluster_config) => {
            anyhow::ensure!(
                config.store.durability == tailwater_store::Durability::SyncEachBatch,
                "distributed mode acknowledges the cluster's batches once they are durable here: run it with --durability sync"
            );
            let cluster = cluster::Cluster::connect(cluster_config.clone()).await?;
            let stats = Arc::new(cluster::stats::Stats::new(cluster_config.partitions));
            Some((cluster, stats))
        }
        None => None,
    };
    let store_dir = config.data_dir.join("store");
    let options = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, options)).await??;
    let auth_dir = config.data_dir.join("auth");
    // Distributed mode: the registry is a replica of the cluster's shared
    // one (`cluster::registry`), whose admin token is made once caught up.
    let (registry, mut new_admin_token, shared_registry) = match &cluster {
        Some((cluster, _)) => {
            let mut registry = Registry::open_replica(&auth_dir)?;
            let bucket = cluster::registry::open(cluster).await?;
            cluster::registry::share_seal_key(
                &bucket,
                &mut registry,
                &auth_dir,
                cluster.config.publish_timeout * 3,
            )
            .await?;
            (registry, None, Some(bucket))
        }
        None => {
            let (registry, shown_once) =
                Registry::open(&auth_dir, config.bootstrap_token.as_deref())?;
            (registry, shown_once, None)
        }
    };
    let registry = registry.with_limits(config.registry.clone());
    let state = {
        let config = config.clone();
        let (sink, stats) = match &cluster {
            Some((cluster, stats)) => {
                let publisher = cluster::publish::Publisher::new(
                    cluster.clone(),
                    tokio::runtime::Handle::current(),
                    stats.clone(),
                );
                (
                    ingest::Sink::Cluster(Arc::new(publisher)),
                    Some(stats.clone()),
                )
            }
            None => (ingest::Sink::Local, None),
        };
        tokio::task::spawn_blocking(move || {
            AppState::open_with(store, registry, redactor, &config, sink, stats)
        })
        .await??
    };
    let mut state = state;
    state.cluster = cluster.as_ref().map(|(cluster, _)| cluster.clone());
    let mut cluster_tasks = Vec::new();
    if let (Some((cluster, _)), Some(bucket)) = (&cluster, shared_registry) {
        let registry = state.registry.clone();
        registry.replicate_to(Arc::new(cluster::registry::SharedRegistry::new(
            bucket.clone(),
            cluster,
        )));
        cluster_tasks.push(cluster::registry::spawn_watch(
            bucket,
            registry.clone(),
            state.stopping.subscribe(),
        ));
        cluster::registry::catch_up(cluster, &registry, cluster.config.publish_timeout * 6).await?;
        let bootstrap = config.bootstrap_token.clone();
        new_admin_token = tokio::task::spawn_blocking(move || {
            let pushed = registry.push_local()?;
            if pushed > 0 {
                tracing::info!(
                    pushed,
                    "this node's tenants, apps and tokens the cluster lacked are now shared"
                );
            }
            registry.ensure_admin(bootstrap.as_deref())
        })
        .await?
        .map_err(|error| anyhow::anyhow!("cannot join the cluster's registry: {error:?}"))?;
    }
    if let (Some((cluster, stats)), Some(url)) = (cluster, advertised) {
        let gaps = Arc::new(cluster::window::Gaps::open(
            config.data_dir.join("cluster-gaps.json"),
        )?);
        let applied = Arc::new(cluster::applied::Applied::open(&config.data_dir));
        state.applied = Some(applied.clone());
        let members = cluster::members::Members::join(
            &cluster,
            url,
            stats.clone(),
            state.registry.clone(),
            gaps.clone(),
        )
        .await?;
        cluster_tasks.push(members.spawn(state.stopping.subscribe()));
        let intake = Arc::new(cluster::intake::Intake {
            cluster: cluster.clone(),
            registry: state.registry.clone(),
            relayer: Arc::new(cluster::relay::Relayer {
                relay: Arc::new(IntakeRelay(state.ingest.clone())),
                stats: stats.clone(),
                node: cluster.config.node.clone(),
            }),
        });
        cluster_tasks.push(intake.spawn(state.stopping.subscribe()));
        let local = Arc::new(cluster::local::Local {
            cluster,
            registry: state.registry.clone(),
            runners: state.runners.clone(),
            settling: state.settling.clone(),
            stats,
            gaps,
            applied: applied.clone(),
        });
        cluster_tasks.push(local.clone().spawn_repairer(state.stopping.subscribe()));
        cluster_tasks.push(local.spawn_materializer(state.stopping.subscribe()));
    }
    let runner_upkeep = state.runners.spawn_upkeep(state.stopping.subscribe());
    state.drains.start(state.stopping.subscribe());
    let drains = state.drains.clone();
    let stopping = state.stopping.clone();
    spawn_store_upkeep(
        state.store.clone(),
        state.registry.clone(),
        config.retention.clone(),
        state.stopping.subscribe(),
    );

    let addr = listener.local_addr()?;
    if config.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving plain HTTP on a non-loopback address: tokens and logs cross the network in clear; pass --tls-cert and --tls-key, or listen on 127.0.0.1 behind a TLS proxy"
        );
    }
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let metrics = state.metrics.clone();
    let app = api::router(state);
    let stopped = async move {
        let _ = shutdown_rx.await;
        stopping.send_replace(true);
    };
    let task = serve::spawn(
        listener,
        tls,
        app,
        config.connections.clone(),
        metrics,
        stopped,
    );
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, scheme, data = %config.data_dir.display(), "tailwater server listening");
    Ok(RunningServer {
        addr,
        tls: config.tls.is_some(),
        new_admin_token,
        shutdown: Some(shutdown),
        task,
        runner_upkeep,
        cluster_tasks,
        drains,
    })
}

/// How often the store's upkeep (flushing an old memtable, retention) runs.
const STORE_UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

fn spawn_store_upkeep(
    store: Arc<Store>,
    registry: Arc<Registry>,
    retention: Retention,
    mut stopping: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(STORE_UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stopping.wait_for(|stopping| *stopping) => return,
            }
            let store = store.clone();
            let mut retention = retention.clone();
            // Apps' own `retention_days`, as the registry has them now.
            retention.app_max_age.extend(registry.app_retention());
            let upkeep = move || {
                store
                    .apply_retention(&retention, jiff::Timestamp::now())
                    .map(drop)
            };
            match tokio::task::spawn_blocking(upkeep).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "store upkeep failed; will retry"),
                Err(error) => tracing::error!(%error, "store upkeep panicked"),
            }
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// How the intake relays hand an agent's batch to the pipeline: as a batch
/// sent with an ingest token of its app (the NATS permissions on its
/// subject stand for the token), through every check, into the cluster.
struct IntakeRelay(Arc<ingest::Pipeline>);

impl cluster::relay::Relay for IntakeRelay {
    fn relay(&self, tenant: &str, batch: IngestBatch) -> cluster::relay::Relayed {
        let principal = access::scopes::Principal {
            token_id: "nats-intake".to_owned(),
            scope: tailwater_model::tenancy::Scope::Ingest,
            tenant: Some(tenant.to_owned()),
            app: Some(batch.app.clone()),
        };
        relayed(self.0.accept(&principal, tenant, batch))
    }

    fn tell(&self, tenant: &str, notice: IngestBatch) -> cluster::relay::Relayed {
        // The server's notice goes the way the runner's batches go.
        relayed(self.0.accept_notice(tenant, notice))
    }
}

/// What the pipeline's answer means to an intake relay.
fn relayed(
    accepted: Result<tailwater_model::wire::IngestResponse, ingest::Refused>,
) -> cluster::relay::Relayed {
    use cluster::relay::{Relayed, RETRY_DELAY};
    match accepted {
        Ok(_) => Relayed::Taken,
        Err(ingest::Refused::Throttled(throttled)) => Relayed::Later {
            delay: throttled.retry_after,
            reason: throttled.limit,
        },
        Err(ingest::Refused::Unavailable(unavailable)) => Relayed::Later {
            delay: RETRY_DELAY,
            reason: format!("{unavailable:?}"),
        },
        Err(ingest::Refused::Internal(error)) => Relayed::Later {
            delay: RETRY_DELAY,
            reason: error,
        },
        Err(ingest::Refused::Invalid { code, message }) => Relayed::Refused {
            code: "invalid",
            reason: format!("{code}: {message}"),
        },
        Err(ingest::Refused::Denied(denied)) => Relayed::Refused {
            code: "denied",
            reason: format!("{denied:?}"),
        },
        Err(ingest::Refused::Registry(error)) => Relayed::Refused {
            code: "app",
            reason: format!("{error:?}"),
        },
    }
}
