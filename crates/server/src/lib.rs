//! The tailwater server: the HTTP API over the embedded store.
//!
//! - [`registry`]: tenants, apps and their settings, and API tokens (hashed),
//!   in one durable file.
//! - [`auth`]: the scope rules: the [`auth::Principal`] a request acts as,
//!   and what it may do.
//! - [`api`]: the routes: ingest, history, live tail, histogram, health,
//!   and the web UI.
//! - [`tail`]: how live tail learns that new records arrived.
//! - [`runners`]: each runner's state, from its lifecycle records and
//!   heartbeats; lost runners.
//!
//! [`start`] binds and serves in the background and hands back a
//! [`RunningServer`]; the `tailwater server` and `tailwater demo` commands
//! and the tests all start it this way.

pub mod api;
pub mod auth;
pub mod registry;
pub mod runners;
pub mod tail;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tailwater_store::{Retention, Store, StoreOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::registry::Registry;
use crate::runners::{RunnerSettings, Runners};

/// The address the server listens on unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Largest ingest request body, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Records one `GET /v1/histogram` counts at most, unless configured
/// otherwise: past it, the answer holds the newest and says so.
pub const DEFAULT_HISTOGRAM_MAX_RECORDS: usize = 1_000_000;

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
    /// Records one histogram counts at most (the newest first).
    pub histogram_max_records: usize,
    /// The runner table: heartbeat timeout, size.
    pub runners: RunnerSettings,
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
            histogram_max_records: DEFAULT_HISTOGRAM_MAX_RECORDS,
            runners: RunnerSettings::default(),
        }
    }
}

/// What every request handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    /// The newest stored record id; live tails wait on it.
    pub new_records: watch::Sender<u64>,
    /// Turns `true` when the server shuts down, so live tails end and
    /// graceful shutdown does not wait on them forever.
    pub stopping: watch::Sender<bool>,
    pub max_batch_bytes: usize,
    pub histogram_max_records: usize,
    /// Each runner's state; ingest appends through it.
    pub runners: Arc<Runners>,
}

/// A server serving in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The admin token created on this start, if one was: shown once, never
    /// stored in clear.
    pub new_admin_token: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    /// The runner table's upkeep, which saves it once more as it ends.
    runner_upkeep: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, finishes requests in flight, and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let served = self.task.await?.context("server failed");
        self.runner_upkeep.await?;
        served
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
    let store_dir = config.data_dir.join("store");
    let options = config.store.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&store_dir, options)).await??;
    let (registry, new_admin_token) = Registry::open(
        &config.data_dir.join("auth"),
        config.bootstrap_token.as_deref(),
    )?;
    let registry = Arc::new(registry);
    let (new_records, _) = watch::channel(store.last_id());
    let store = Arc::new(store);
    let runners = {
        let (data_dir, store, new_records) =
            (config.data_dir.clone(), store.clone(), new_records.clone());
        let settings = config.runners.clone();
        let registry = registry.clone();
        tokio::task::spawn_blocking(move || {
            Runners::open(&data_dir, store, new_records, &registry, settings)
        })
        .await??
    };
    let runners = Arc::new(runners);
    let state = AppState {
        store,
        registry,
        new_records,
        stopping: watch::channel(false).0,
        max_batch_bytes: config.max_batch_bytes,
        histogram_max_records: config.histogram_max_records.max(1),
        runners: runners.clone(),
    };
    let runner_upkeep = runners.spawn_upkeep(state.stopping.subscribe());
    let stopping = state.stopping.clone();
    spawn_store_upkeep(
        state.store.clone(),
        state.registry.clone(),
        config.retention.clone(),
        state.stopping.subscribe(),
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another server using it? pass another --listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let app = api::router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
                stopping.send_replace(true);
            })
            .await
    });
    tracing::info!(%addr, data = %config.data_dir.display(), "tailwater server listening");
    Ok(RunningServer {
        addr,
        new_admin_token,
        shutdown: Some(shutdown),
        task,
        runner_upkeep,
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
