//! Runner bookkeeping: the one home of each runner's state (initializing,
//! ready, running, exited, crashed, oom-killed, lost), kept from the
//! lifecycle `system` records its agent ships (`fields.event`: `start`,
//! `ready`, `request_start`, `request_end`, `stop`, `oom_kill`, `exit`,
//! `spawn_failed`) and from when its batches arrive (an empty batch is a
//! heartbeat). Under `--restart`, each run of the worker begins with its
//! own `start`: the `restart` record before it changes nothing, so while
//! a restart waits (or after a stop signal cancelled it) the runner shows
//! how its last run ended.
//!
//! A runner is `(tenant, app, runner id)`; a new `boot` is a new life of the
//! same runner, and the table shows its latest life. A runner that has not
//! ended and is silent past the heartbeat timeout is marked `lost`, and the
//! server writes a `system` record into its logs saying so (`event: lost`),
//! and another when it is heard from again (`event: returned`). These
//! notices carry the boot `<boot>+server`, so they never collide with the
//! agent's sequence numbers.
//!
//! **Surviving a restart: a snapshot, then a replay.** Rebuilding the whole
//! table from the store would scan every `system` record ever kept at each
//! start; persisting alone would lose what arrived after the last write on a
//! kill -9. So both: every [`SAVE_INTERVAL`] (and at shutdown) the table is
//! written atomically to `<data>/runners/runners.json` with the store id it
//! covers, and at start the `system` records stored after that id are
//! replayed. A record's events are applied once per life (the highest
//! sequence number applied is kept), so a replayed or retried batch changes
//! nothing. Heartbeats are not stored, so after a restart a runner's silence
//! is counted from the later of its last record and the server's start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use anyhow::Context;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tailwater_model::lifecycle::Event as Kind;
use tailwater_model::wire::{IngestBatch, IngestResponse, Runner, RunnerState};
use tailwater_model::{Fields, Filter, Source, Stream};
use tailwater_store::{Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::registry::{write_atomically, Registry};

mod entry;

/// How long a runner that has not ended may be silent before it is lost,
/// unless configured otherwise (`--heartbeat-timeout`). Agents send a
/// heartbeat every 10 s when idle.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Runners the table keeps, unless configured otherwise (`--max-runners`).
/// Past it, the runner heard from longest ago (ended or lost ones first) is
/// forgotten, counted and logged; its records stay in the store.
pub const DEFAULT_MAX_RUNNERS: usize = 50_000;
/// How often a changed table is written to disk: a whole table of
/// `DEFAULT_MAX_RUNNERS` is tens of MB, and a kill -9 loses nothing of what
/// came since (it is replayed from the store).
pub const SAVE_INTERVAL: Duration = Duration::from_secs(10);

const DIR: &str = "runners";
const SNAPSHOT_FILE: &str = "runners.json";
const SNAPSHOT_FORMAT: u32 = 1;
/// Lives remembered per runner, so a late batch of an earlier life is told
/// from a new one.
const LIVES_KEPT: usize = 8;
/// The boot suffix of the server's own notices about a runner.
pub const SERVER_BOOT_SUFFIX: &str = "+server";
/// Records one replay read takes at a time.
const REPLAY_BATCH: usize = 4096;

/// The runner table's settings.
#[derive(Clone, Debug)]
pub struct RunnerSettings {
    pub heartbeat_timeout: Duration,
    pub max_runners: usize,
}

impl Default for RunnerSettings {
    fn default() -> RunnerSettings {
        RunnerSettings {
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            max_runners: DEFAULT_MAX_RUNNERS,
        }
    }
}

/// The runner table, shared by ingest, the runner routes and the upkeep task.
pub struct Runners {
    store: Arc<Store>,
    path: PathBuf,
    settings: RunnerSettings,
    table: Mutex<HashMap<Key, Entry>>,
    /// Held shared by each append and the bookkeeping that follows it, and
    /// exclusively while a snapshot reads the store's newest id: every
    /// record up to that id is then in the table.
    gate: RwLock<()>,
    /// When this server started: silence is counted from here at the
    /// earliest, since heartbeats before it were not kept.
    opened: Timestamp,
    dirty: AtomicBool,
    /// One save at a time (the upkeep task's last one and shutdown's).
    saving: Mutex<()>,
    evicted: AtomicU64,
}

/// `(tenant, app, runner)`.
type Key = (String, String, String);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    runner: Runner,
    /// Recent lives, oldest first, each with the highest sequence number
    /// whose event was applied; the last is the current life.
    lives: Vec<Life>,
    /// The signal the agent was asked to stop with, in this life.
    stop_signal: Option<i32>,
    /// An `oom_kill` record was seen in this life.
    oom_seen: bool,
    /// What the state was before the runner went lost.
    before_lost: Option<RunnerState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Life {
    boot: String,
    applied_seq: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    /// Every stored record up to this id is reflected in `runners`.
    covers_id: u64,
    runners: Vec<Entry>,
}

/// What one batch (or one replayed record) says about its runner.
struct Sighting {
    app: String,
    version: String,
    runner: String,
    boot: String,
    source: Source,
    /// The time of its first record, if it has one.
    first_ts: Option<Timestamp>,
    events: Vec<Event>,
}

/// One lifecycle record.
struct Event {
    seq: u64,
    ts: Timestamp,
    /// `None` for an event tailwater does not know (kept, shown, not acted on).
    kind: Option<Kind>,
    fields: Fields,
}

/// A record the server writes into a runner's logs.
struct Notice {
    tenant: String,
    batch: IngestBatch,
}

impl Runners {
    /// Loads the table from `<data>/runners/` and replays what the store
    /// holds after it.
    pub fn open(
        data_dir: &Path,
        store: Arc<Store>,
        registry: &Registry,
        settings: RunnerSettings,
    ) -> anyhow::Result<Runners> {
        let dir = data_dir.join(DIR);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}: check its permissions", dir.display()))?;
        let path = dir.join(SNAPSHOT_FILE);
        let (covers_id, entries) = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
                Ok(snapshot) if snapshot.format == SNAPSHOT_FORMAT => {
                    (snapshot.covers_id, snapshot.runners)
                }
                Ok(snapshot) => {
                    tracing::warn!(format = snapshot.format, path = %path.display(), "unknown runner table format; rebuilding it from the store");
                    (0, Vec::new())
                }
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "unreadable runner table; rebuilding it from the store");
                    (0, Vec::new())
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => (0, Vec::new()),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        let table = entries
            .into_iter()
            .map(|entry| (entry.key(), entry))
            .collect();
        let runners = Runners {
            store,
            path,
            settings,
            table: Mutex::new(table),
            gate: RwLock::new(()),
            opened: Timestamp::now(),
            dirty: AtomicBool::new(false),
            saving: Mutex::new(()),
            evicted: AtomicU64::new(0),
        };
        let replayed = runners.replay(registry, covers_id);
        tracing::info!(
            runners = runners.lock().len(),
            replayed,
            "runner table loaded"
        );
        Ok(runners)
    }

    /// Applies the `system` records stored after `after`, tenant by tenant.
    fn replay(&self, registry: &Registry, after: u64) -> usize {
        let filter = Filter {
            stream: Some(Stream::System),
            ..Filter::default()
        };
        let mut replayed = 0;
        for tenant in registry.tenants() {
            let mut position = after;
            loop {
                let records = self
                    .store
                    .read_after(&tenant.name, &filter, position, REPLAY_BATCH);
                for record in &records {
                    position = record.position;
                    if record.boot.ends_with(SERVER_BOOT_SUFFIX) {
                        continue;
                    }
                    self.observe(&tenant.name, Sighting::of_record(record), record.ts, false);
                    replayed += 1;
                }
                if records.len() < REPLAY_BATCH {
                    break;
                }
            }
        }
        replayed
    }

    /// The store the table appends to.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stores a batch (refusing records past `retention`, the app's) and
    /// applies what it says about its runner. The one way ingest appends,
    /// so no batch is stored unseen by the table.
    pub fn append(
        &self,
        tenant: &str,
        batch: IngestBatch,
        retention: std::time::Duration,
    ) -> Result<IngestResponse, StoreError> {
        self.append_as(tenant, batch, true, |store, tenant, batch| {
            store.append_within_retention(tenant, batch, retention)
        })
    }

    /// [`Runners::append`], its records numbered from `first` and not
    /// durable until the store is synced ([`Store::append_at`]): a
    /// cluster's stream, stored in its order.
    pub fn append_at(
        &self,
        tenant: &str,
        batch: IngestBatch,
        retention: std::time::Duration,
        first: u64,
    ) -> Result<IngestResponse, StoreError> {
        self.append_as(tenant, batch, true, |store, tenant, batch| {
            store.append_at(tenant, batch, first, retention)
        })
    }

    /// Stores records a peer held and this node missed (a cluster's repair,
    /// `cluster::repair`): past the out-of-order window, each once, seen by
    /// the table as a batch is (no `returned` notice: they are old news).
    pub fn append_repaired(
        &self,
        tenant: &str,
        batch: IngestBatch,
    ) -> Result<IngestResponse, StoreError> {
        self.append_as(tenant, batch, false, Store::append_repaired)
    }

    fn append_as(
        &self,
        tenant: &str,
        batch: IngestBatch,
        live: bool,
        append: impl FnOnce(&Store, &str, IngestBatch) -> Result<IngestResponse, StoreError>,
    ) -> Result<IngestResponse, StoreError> {
        // The server's own notices (a node's, come through the cluster)
        // say nothing of the runner's life, as replay skips them too.
        let sighting =
            (!batch.boot.ends_with(SERVER_BOOT_SUFFIX)).then(|| Sighting::of_batch(&batch));
        let (response, notice) = {
            let _gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
            let response = append(&self.store, tenant, batch)?;
            let notice = sighting
                .and_then(|sighting| self.observe(tenant, sighting, Timestamp::now(), live));
            (response, notice)
        };
        // Outside the gate: the notice is one more append.
        self.write_notices(notice.into_iter().collect());
        Ok(response)
    }

    /// Applies one sighting; `live` when it just arrived (not replayed):
    /// then a lost runner heard from again gets its `returned` notice.
    fn observe(
        &self,
        tenant: &str,
        sighting: Sighting,
        seen_at: Timestamp,
        live: bool,
    ) -> Option<Notice> {
        let key = (
            tenant.to_owned(),
            sighting.app.clone(),
            sighting.runner.clone(),
        );
        let mut table = self.lock();
        if !table.contains_key(&key) {
            self.make_room(&mut table);
            let entry = Entry::new(tenant, &sighting, seen_at);
            table.insert(key.clone(), entry);
        }
        let entry = table.get_mut(&key).expect("inserted above");
        self.dirty.store(true, Ordering::Relaxed);
        let previously_seen = entry.runner.last_seen;
        entry.runner.last_seen = entry.runner.last_seen.max(seen_at);
        let mut notice = None;
        match entry
            .lives
            .iter()
            .position(|life| life.boot == sighting.boot)
        {
            None => entry.begin_life(&sighting, seen_at),
            Some(index) => {
                if entry.runner.state == RunnerState::Lost {
                    entry.runner.state = entry.before_lost.take().unwrap_or(RunnerState::Ready);
                    if live {
                        notice = Some(entry.returned_notice(previously_seen, seen_at));
                    }
                }
                if index + 1 != entry.lives.len() {
                    // A late batch of an earlier life: its runner is alive,
                    // but the table shows the latest life.
                    return notice;
                }
            }
        }
        entry.runner.version = sighting.version;
        entry.runner.source = sighting.source;
        for event in sighting.events {
            let life = entry.lives.last_mut().expect("a runner has a life");
            if life.applied_seq.is_some_and(|applied| event.seq <= applied) {
                continue;
            }
            life.applied_seq = Some(event.seq);
            entry.apply(&event);
        }
        notice
    }

    /// Marks runners silent past the heartbeat timeout as lost, each once
    /// its notice is stored: whoever sees the state finds the notice too.
    pub fn sweep(&self, now: Timestamp) {
        let timeout = SignedDuration::try_from(self.settings.heartbeat_timeout)
            .unwrap_or(SignedDuration::MAX);
        let due: Vec<(Key, Timestamp, Notice)> = self
            .lock()
            .iter()
            .filter(|(_, entry)| entry.may_go_lost())
            .filter(|(_, entry)| {
                let silent_since = entry.runner.last_seen.max(self.opened);
                now.duration_since(silent_since) > timeout
            })
            .map(|(key, entry)| {
                let notice = entry.lost_notice(now, self.settings.heartbeat_timeout);
                (key.clone(), entry.runner.last_seen, notice)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let (marked, notices): (Vec<(Key, Timestamp)>, Vec<Notice>) = due
            .into_iter()
            .map(|(key, seen, notice)| ((key, seen), notice))
            .unzip();
        self.write_notices(notices);
        let mut heard_meanwhile = Vec::new();
        {
            let mut table = self.lock();
            for (key, seen) in marked {
                let Some(entry) = table.get_mut(&key) else {
                    continue;
                };
                if entry.runner.last_seen == seen && entry.may_go_lost() {
                    entry.before_lost = Some(entry.runner.state);
                    entry.runner.state = RunnerState::Lost;
                } else if !entry.runner.state.is_final() {
                    // Heard from while its notice was written: say so too.
                    heard_meanwhile.push(entry.returned_notice(seen, entry.runner.last_seen));
                }
            }
        }
        self.dirty.store(true, Ordering::Relaxed);
        self.write_notices(heard_meanwhile);
    }

    fn write_notices(&self, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        for notice in notices {
            let runner = notice.batch.runner.clone();
            if let Err(error) = self.store.append(&notice.tenant, notice.batch) {
                tracing::error!(%error, runner, "cannot store a runner notice");
            }
        }
    }

    /// Forgets one runner when the table is full: the one heard from
    /// longest ago, ended or lost ones first.
    fn make_room(&self, table: &mut HashMap<Key, Entry>) {
        if table.len() < self.settings.max_runners.max(1) {
            return;
        }
        let oldest = table
            .iter()
            .min_by_key(|(_, entry)| {
                let active =
                    !(entry.runner.state.is_final() || entry.runner.state == RunnerState::Lost);
                (active, entry.runner.last_seen)
            })
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            table.remove(&key);
            let evicted = self.evicted.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                tenant = key.0,
                app = key.1,
                runner = key.2,
                evicted,
                max_runners = self.settings.max_runners,
                "runner table full (--max-runners): forgot the runner heard from longest ago; its records are kept"
            );
        }
    }

    /// Runners forgotten because the table was full, since the server
    /// started.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// How many runners of each tenant and app are in each state (for
    /// `/metrics`): one pass over the table, which `--max-runners` bounds.
    pub fn count_states(&self) -> HashMap<(String, String, RunnerState), u64> {
        let mut counts = HashMap::new();
        for entry in self.lock().values() {
            let runner = &entry.runner;
            let key = (runner.tenant.clone(), runner.app.clone(), runner.state);
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// `tenant`'s runners, newest start first.
    pub fn list(&self, tenant: &str, app: Option<&str>, state: Option<RunnerState>) -> Vec<Runner> {
        let mut runners: Vec<Runner> = self
            .lock()
            .values()
            .filter(|entry| entry.runner.tenant == tenant)
            .filter(|entry| app.is_none_or(|app| entry.runner.app == app))
            .filter(|entry| state.is_none_or(|state| entry.runner.state == state))
            .map(|entry| entry.runner.clone())
            .collect();
        runners.sort_by(|a, b| (b.started, &b.app, &b.runner).cmp(&(a.started, &a.app, &a.runner)));
        runners
    }

    /// The runners of `tenant` with this id (in one app, or in any).
    pub fn find(&self, tenant: &str, runner: &str, app: Option<&str>) -> Vec<Runner> {
        let mut found: Vec<Runner> = self
            .lock()
            .values()
            .filter(|entry| entry.runner.tenant == tenant && entry.runner.runner == runner)
            .filter(|entry| app.is_none_or(|app| entry.runner.app == app))
            .map(|entry| entry.runner.clone())
            .collect();
        found.sort_by(|a, b| a.app.cmp(&b.app));
        found
    }

    /// Writes the table to disk if it changed since the last write.
    pub fn save(&self) -> anyhow::Result<()> {
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let snapshot = {
            let _gate = self.gate.write().unwrap_or_else(|e| e.into_inner());
            Snapshot {
                format: SNAPSHOT_FORMAT,
                covers_id: self.store.last_id(),
                runners: self.lock().values().cloned().collect(),
            }
        };
        let bytes = serde_json::to_vec(&snapshot).expect("the runner table serializes");
        write_atomically(&self.path, &bytes).inspect_err(|_| {
            self.dirty.store(true, Ordering::Relaxed);
        })
    }

    /// Sweeps for lost runners and saves the table in the background, and
    /// once more when the server stops.
    pub fn spawn_upkeep(self: &Arc<Self>, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        let runners = self.clone();
        let tick = (runners.settings.heartbeat_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            let mut last_save = tokio::time::Instant::now();
            loop {
                let stop = tokio::select! {
                    _ = interval.tick() => false,
                    _ = stopping.wait_for(|stopping| *stopping) => true,
                };
                let due = stop || last_save.elapsed() >= SAVE_INTERVAL;
                let work = {
                    let runners = runners.clone();
                    move || {
                        runners.sweep(Timestamp::now());
                        if due {
                            runners.save()
                        } else {
                            Ok(())
                        }
                    }
                };
                match tokio::task::spawn_blocking(work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "cannot save the runner table; will retry"
                        )
                    }
                    Err(error) => tracing::error!(%error, "runner upkeep panicked"),
                }
                if due {
                    last_save = tokio::time::Instant::now();
                }
                if stop {
                    return;
                }
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}
