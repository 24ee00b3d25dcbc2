//! Drains: an app's records sent on, as they are stored, to a URL its
//! owner chose, in NDJSON, OTLP/HTTP or Loki push.
//!
//! - [`config`]: drains and their cursors on disk.
//! - [`worker`]: one task per drain following the store (as live tail
//!   does, woken by [`tailwater_store::Store::subscribe`]), batching,
//!   delivering at least once, retrying, pausing.
//! - [`format`]: the bodies. [`sign`]: the signature header.
//! - [`destination`]: which URLs and addresses a drain may reach.
//! - [`figures`]: what `/metrics` shows of them.
//!
//! A drain never slows ingest: it reads what the store already holds, on
//! its own task, a batch at a time (bounded by [`DrainSettings`]), and
//! one tenant's slow or failing receiver delays only its own drain.

pub mod config;
pub mod destination;
pub mod figures;
pub mod format;
pub mod sign;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;
use tailwater_model::wire::{CreatedDrain, DrainInfo, NewDrain};
use tailwater_store::Store;
use tokio::sync::watch;

use crate::access::registry::{Registry, RegistryError};
use config::{Cursor, DrainConfig, DrainFiles};

pub use sign::{signature, verify, SIGNATURE_HEADER};

/// The header holding a batch's id: the same for every attempt at the same
/// records, before and after a restart.
pub const BATCH_ID_HEADER: &str = "tailwater-batch-id";
/// The header holding the drain's id.
pub const DRAIN_ID_HEADER: &str = "tailwater-drain";
/// Why a drain's creation was refused, as `/metrics` counts it: past
/// `--max-drains-per-app` or `--max-drains-per-tenant`.
pub const TOO_MANY_DRAINS: &str = "too_many_drains";
/// … or its URL (scheme, credentials, a destination that is not public),
/// name or token refused.
pub const INVALID: &str = "invalid";

/// The reason a drain paused by its owner shows.
pub const PAUSED_BY_OWNER: &str = "paused by its owner";

/// How drains batch, retry and connect (`tailwater server --drain-…`).
#[derive(Clone, Debug)]
pub struct DrainSettings {
    /// `--drain-batch-records`: most records one delivery holds.
    pub batch_records: usize,
    /// `--drain-batch-bytes`: a batch is sent once about this large.
    pub batch_bytes: usize,
    /// `--drain-batch-wait`: longest a record waits for a fuller batch.
    pub batch_wait: Duration,
    /// `--drain-max-failures`: failed attempts in a row before a drain
    /// pauses.
    pub max_failures: u32,
    /// `--drain-backoff`: the first retry's delay; it doubles, up to
    /// `backoff_max`, each with jitter (a delay between half and all of it).
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured; a longer one waits this long.
    pub retry_after_max: Duration,
    /// `--drain-delivery-timeout`: one delivery's whole time, connecting included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// `--drain-allow-private`: whether drains may reach loopback and
    /// private addresses (off: a drain cannot probe the server's network).
    pub allow_private: bool,
    /// `--drain-ca-file`: a PEM file of certificate authorities drains
    /// trust besides the public web roots (a receiver whose certificate
    /// an own CA signed).
    pub ca_file: Option<std::path::PathBuf>,
    /// `--max-drains-per-app`.
    pub max_per_app: usize,
    /// `--max-drains-per-tenant`: each drain is a task that reads the
    /// store as records arrive, so one tenant's drains are bounded.
    pub max_per_tenant: usize,
}

impl Default for DrainSettings {
    fn default() -> DrainSettings {
        DrainSettings {
            batch_records: 1000,
            batch_bytes: 1024 * 1024,
            batch_wait: Duration::from_secs(1),
            max_failures: 10,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            allow_private: false,
            ca_file: None,
            max_per_app: 5,
            max_per_tenant: 20,
        }
    }
}

/// What a drain's owner wants of it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Active,
    Paused,
    Deleted,
}

/// What a drain counted since the server started (`/metrics`).
#[derive(Debug, Default)]
struct Stats {
    delivered_records: AtomicU64,
    delivered_batches: AtomicU64,
    failed_attempts: AtomicU64,
    pauses: AtomicU64,
    /// Failed attempts in a row at the batch being sent.
    failures: AtomicU32,
    /// Where its lag is read from (see [`figures`]).
    lag: Mutex<figures::Lag>,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    /// A drain's counts, none yet, its cursor at `delivered`.
    fn at(delivered: u64) -> Stats {
        Stats {
            lag: Mutex::new(figures::Lag::at(delivered)),
            ..Stats::default()
        }
    }

    /// The drain's cursor moved (or was written again) to `delivered`.
    fn delivered_through(&self, delivered: u64) {
        let mut lag = self.lag.lock().unwrap_or_else(|e| e.into_inner());
        if lag.cursor() != delivered {
            *lag = figures::Lag::at(delivered);
        }
    }
}

/// One drain: its settings, what its owner wants, its counts.
struct Drain {
    config: Mutex<DrainConfig>,
    control: watch::Sender<Control>,
    stats: Stats,
}

impl Drain {
    fn config(&self) -> DrainConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn info(&self) -> DrainInfo {
        let mut info = self.config().info();
        info.failures = self.stats.failures.load(Ordering::Relaxed);
        info.delivered = self.stats.delivered_records.load(Ordering::Relaxed);
        info.last_error = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        info
    }
}

/// What every drain's worker shares.
struct Shared {
    /// Held while a drain's files change (creation, pause, resume,
    /// deletion), so they change one at a time, in the order the drains'
    /// state does; readers never wait for it.
    writing: Mutex<()>,
    files: DrainFiles,
    settings: DrainSettings,
    store: Arc<Store>,
    registry: Arc<Registry>,
    client: reqwest::Client,
}

/// Every drain of the server.
pub struct Drains {
    shared: Arc<Shared>,
    drains: Mutex<BTreeMap<String, Arc<Drain>>>,
    stopping: Mutex<Option<watch::Receiver<bool>>>,
    /// Every worker started: [`Drains::stopped`] waits for them.
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Creations refused, by tenant and reason (`/metrics`).
    refused: Mutex<BTreeMap<(String, &'static str), u64>>,
}

/// Why a drain call was refused.
pub type DrainError = RegistryError;

impl Drains {
    /// The drains kept in `dir`; none delivers before [`Drains::start`].
    pub fn open(
        dir: &Path,
        settings: DrainSettings,
        store: Arc<Store>,
        registry: Arc<Registry>,
    ) -> anyhow::Result<Drains> {
        let files = DrainFiles::open(dir)?;
        let client = destination::client(&settings)?;
        let mut drains = BTreeMap::new();
        for (config, cursor) in files.load()? {
            let control = match config.paused {
                Some(_) => Control::Paused,
                None => Control::Active,
            };
            let drain = Drain {
                config: Mutex::new(config.clone()),
                control: watch::channel(control).0,
                stats: Stats::at(cursor.delivered),
            };
            drains.insert(config.id, Arc::new(drain));
        }
        Ok(Drains {
            shared: Arc::new(Shared {
                writing: Mutex::new(()),
                files,
                settings,
                store,
                registry,
                client,
            }),
            drains: Mutex::new(drains),
            refused: Mutex::default(),
            workers: Mutex::default(),
            stopping: Mutex::new(None),
        })
    }

    fn drains(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Drain>>> {
        self.drains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts every drain's worker; they end when `stopping` turns true.
    pub fn start(&self, stopping: watch::Receiver<bool>) {
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = Some(stopping.clone());
        for drain in self.drains().values() {
            let worker = worker::spawn(self.shared.clone(), drain.clone(), stopping.clone());
            self.keep_worker(worker);
        }
    }

    fn keep_worker(&self, worker: tokio::task::JoinHandle<()>) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        // Deleted drains' workers have ended: nothing to wait for.
        workers.retain(|worker| !worker.is_finished());
        workers.push(worker);
    }

    /// Returns once every worker has ended (after `stopping` turned true):
    /// none holds the store or writes a cursor any more.
    pub async fn stopped(&self) {
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|e| e.into_inner()));
        for worker in workers {
            let _ = worker.await;
        }
    }

    /// A new drain of `tenant`'s `app`, delivering the records stored from
    /// now on (blocking: writes its files).
    pub fn create(
        &self,
        tenant: &str,
        app: &str,
        new: NewDrain,
    ) -> Result<CreatedDrain, DrainError> {
        let created = self.try_create(tenant, app, new);
        let reason = match &created {
            Err(RegistryError::Limit { reason, .. }) => Some(*reason),
            Err(RegistryError::Invalid(_)) => Some(INVALID),
            _ => None,
        };
        if let Some(reason) = reason {
            let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            *refused.entry((tenant.to_owned(), reason)).or_default() += 1;
        }
        created
    }

    /// Drain creations refused since the server started: tenant, reason
    /// ([`TOO_MANY_DRAINS`], [`INVALID`]: a URL, destination, name or
    /// token refused), count.
    pub fn refused(&self) -> Vec<(String, &'static str, u64)> {
        let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        refused
            .iter()
            .map(|((tenant, reason), count)| (tenant.clone(), *reason, *count))
            .collect()
    }

    fn try_create(
        &self,
        tenant: &str,
        app: &str,
        new: NewDrain,
    ) -> Result<CreatedDrain, DrainError> {
        let settings = &self.shared.settings;
        let url = destination::check_url(new.url.trim(), settings.allow_private)
            .map_err(RegistryError::Invalid)?;
        if let Some(name) = &new.name {
            if name.len() > 200 || name.chars().any(char::is_control) {
                return Err(RegistryError::Invalid(
                    "a drain name is at most 200 bytes with no control characters: give a shorter one".into(),
                ));
            }
        }
        if let Some(token) = &new.token {
            let printable = token.bytes().all(|b| b.is_ascii_graphic());
            if token.is_empty() || token.len() > 4096 || !printable {
                return Err(RegistryError::Invalid(
                    "a drain token is 1 to 4096 printable ASCII characters, no spaces: give the receiver's token as it issued it".into(),
                ));
            }
        }
        let _writing = self
            .shared
            .writing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (of_tenant, of_app) = self
            .drains()
            .values()
            .map(|drain| drain.config())
            .filter(|config| config.tenant == tenant)
            .fold((0, 0), |(all, same), config| {
                (all + 1, same + usize::from(config.app == app))
            });
        if of_app >= settings.max_per_app || of_tenant >= settings.max_per_tenant {
            let message = match of_app >= settings.max_per_app {
                true => format!(
                    "app {app} has {of_app} drains, the most an app may have (--max-drains-per-app): delete one first"
                ),
                false => format!(
                    "tenant {tenant} has {of_tenant} drains, the most a tenant may have (--max-drains-per-tenant): delete one first"
                ),
            };
            return Err(RegistryError::Limit {
                reason: TOO_MANY_DRAINS,
                message,
            });
        }
        let mut bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut bytes);
        let id = format!("drn_{}", hex::encode(bytes));
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let config = DrainConfig {
            id: id.clone(),
            tenant: tenant.to_owned(),
            app: app.to_owned(),
            name: new.name,
            url: url.to_string(),
            format: new.format,
            created: jiff::Timestamp::now(),
            secret: format!("whsec_{}", hex::encode(secret)),
            token: new.token,
            paused: None,
        };
        let from_now = self.shared.store.last_id();
        self.shared.files.create(
            &config,
            Cursor {
                delivered: from_now,
                pending: None,
            },
        )?;
        let drain = Arc::new(Drain {
            config: Mutex::new(config.clone()),
            control: watch::channel(Control::Active).0,
            stats: Stats::at(from_now),
        });
        self.drains().insert(id, drain.clone());
        if let Some(stopping) = self
            .stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            let worker = worker::spawn(self.shared.clone(), drain.clone(), stopping);
            self.keep_worker(worker);
        }
        tracing::info!(drain = %config.id, tenant, app, url = %config.url, "drain created");
        Ok(CreatedDrain {
            secret: config.secret.clone(),
            info: drain.info(),
        })
    }

    /// `tenant`'s drains of `app`.
    pub fn list(&self, tenant: &str, app: &str) -> Vec<DrainInfo> {
        self.drains()
            .values()
            .map(|drain| drain.info())
            .filter(|info| info.tenant == tenant && info.app == app)
            .collect()
    }

    fn find(&self, tenant: &str, app: &str, id: &str) -> Result<Arc<Drain>, DrainError> {
        self.drains()
            .get(id)
            .filter(|drain| {
                let config = drain.config();
                config.tenant == tenant && config.app == app
            })
            .cloned()
            .ok_or_else(|| {
                RegistryError::NotFound(format!(
                    "no drain '{id}' of app {app}: list them with `tailwater drain list --app {app}`"
                ))
            })
    }

    /// Pauses a drain (blocking: writes its file). Its cursor stays.
    pub fn pause(&self, tenant: &str, app: &str, id: &str) -> Result<DrainInfo, DrainError> {
        let drain = self.find(tenant, app, id)?;
        set_paused(&self.shared, &drain, Some(PAUSED_BY_OWNER.into()))?;
        drain.control.send_replace(Control::Paused);
        Ok(drain.info())
    }

    /// Resumes a paused drain from its cursor, its failures forgotten.
    pub fn resume(&self, tenant: &str, app: &str, id: &str) -> Result<DrainInfo, DrainError> {
        let drain = self.find(tenant, app, id)?;
        set_paused(&self.shared, &drain, None)?;
        drain.stats.failures.store(0, Ordering::Relaxed);
        drain.control.send_replace(Control::Active);
        tracing::info!(drain = %id, tenant, app, "drain resumed");
        Ok(drain.info())
    }

    /// Deletes a drain: it stops, and its files go.
    pub fn delete(&self, tenant: &str, app: &str, id: &str) -> Result<DrainInfo, DrainError> {
        let _writing = self
            .shared
            .writing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let drain = self.find(tenant, app, id)?;
        self.shared.files.delete(id)?;
        self.drains().remove(id);
        drain.control.send_replace(Control::Deleted);
        tracing::info!(drain = %id, tenant, app, "drain deleted");
        Ok(drain.info())
    }
}

/// Writes a drain's paused state (`None`: active) to its file, then to
/// the drain.
fn set_paused(shared: &Shared, drain: &Drain, paused: Option<String>) -> Result<(), DrainError> {
    let _writing = shared.writing.lock().unwrap_or_else(|e| e.into_inner());
    let mut changed = drain.config();
    changed.paused = paused;
    shared.files.save_config(&changed)?;
    *drain.config.lock().unwrap_or_else(|e| e.into_inner()) = changed;
    Ok(())
}
