//! The embedded log store: what the server appends to and reads from.
//!
//! [`Store`] is the whole API: [`Store::append`] a batch from one runner
//! (idempotent by runner, boot and sequence), [`Store::query`] a page in time
//! order with an opaque cursor, and [`Store::read_after`] the records ingested
//! after a given id, which is how live tail follows and resumes.
//!
//! Inside, data flows one way:
//!
//! - every appended batch is written to the write-ahead log ([`wal`]) and, by
//!   default, fsynced before `append` returns, so an acknowledged record
//!   survives kill -9 and power loss;
//! - it then sits in the memtable ([`memtable`]), readable at once;
//! - when the memtable is large or old enough, it is flushed into immutable
//!   parts ([`part`]), one per tenant and day, and the log it came from is
//!   deleted;
//! - queries ([`query`]) merge the memtable with the part blocks their
//!   footers cannot rule out.
//!
//! On open, parts are loaded (a damaged one is moved to `quarantine/` and
//! reported, never fatal) and the log is replayed into the memtable; a torn
//! log tail is cut off and reported.
//!
//! ```
//! use tailwater_model::wire::{IngestBatch, IngestRecord};
//! use tailwater_model::{Query, Stream};
//! use tailwater_store::{Store, StoreOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
//! let record = IngestRecord {
//!     seq: 0,
//!     ts: jiff::Timestamp::now(),
//!     stream: Stream::Stdout,
//!     level: Default::default(),
//!     request_id: None,
//!     message: "model loaded".into(),
//!     fields: Default::default(),
//!     invalid_utf8: false,
//! };
//! let batch = IngestBatch {
//!     app: "sdxl".into(),
//!     version: "v1".into(),
//!     runner: "r1".into(),
//!     boot: "b1".into(),
//!     source: Default::default(),
//!     records: vec![record],
//! };
//! assert_eq!(store.append("acme", &batch).unwrap().accepted, 1);
//! assert_eq!(store.append("acme", &batch).unwrap().duplicates, 1);
//! let page = store.query("acme", &Query { limit: 10, ..Query::default() }).unwrap();
//! assert_eq!(page.records[0].message, "model loaded");
//! ```

mod dedup;
mod memtable;
pub mod part;
mod query;
pub mod wal;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tailwater_model::wire::{IngestBatch, IngestResponse};
use tailwater_model::{Cursor, Filter, LogRecord, Query};

use crate::dedup::Dedup;
use crate::memtable::Memtable;
use crate::part::reader::Part;
pub use crate::part::Partition;
use crate::wal::{WalReader, WalWriter};

/// When an append reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync the log before each append returns: an acknowledged batch
    /// survives kill -9 and power loss. The default.
    #[default]
    SyncEachBatch,
    /// Leave flushing to the operating system: survives kill -9 of the
    /// server, not a power loss. For benchmarks and throwaway data.
    Buffered,
}

/// Memtable size that triggers a flush into parts, unless configured
/// otherwise (estimated memory, not message bytes).
pub const DEFAULT_MEMTABLE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Age of the oldest memtable record that triggers a flush on
/// [`Store::maintain`], unless configured otherwise.
pub const DEFAULT_MEMTABLE_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub durability: Durability,
    pub memtable_max_bytes: usize,
    pub memtable_max_age: Duration,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            durability: Durability::default(),
            memtable_max_bytes: DEFAULT_MEMTABLE_MAX_BYTES,
            memtable_max_age: DEFAULT_MEMTABLE_MAX_AGE,
        }
    }
}

/// How long records are kept, and how much disk their parts may take.
/// Retention deletes whole partitions (one tenant's app on one day).
#[derive(Clone, Debug)]
pub struct Retention {
    /// Kept this long, unless their app has an age of its own.
    pub max_age: Duration,
    /// Ages of particular apps, by `(tenant, app)`.
    pub app_max_age: std::collections::HashMap<(String, String), Duration>,
    /// When parts take more than this, the oldest partitions go first.
    pub max_total_bytes: Option<u64>,
}

/// Records are kept this long unless configured otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_age: DEFAULT_RETENTION,
            app_max_age: Default::default(),
            max_total_bytes: None,
        }
    }
}

/// A partition retention deleted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub partition: Partition,
    pub parts: usize,
    pub bytes: u64,
    pub reason: DeleteReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Older than its app's retention.
    Age,
    /// The oldest, while parts took more than the disk limit.
    DiskSize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path} is in use by another tailwater server: stop it, or pass another --data")]
    Locked { path: PathBuf },
    #[error("store i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// One page of a [`Store::query`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub records: Vec<LogRecord>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
    /// The newest record id stored when the page was read.
    pub as_of: u64,
}

/// The embedded store. Cheap to share behind an `Arc`; every method takes
/// `&self`.
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    state: RwLock<State>,
    _lock: File,
}

struct State {
    wal: WalWriter,
    wal_segment: u64,
    memtable: Memtable,
    parts: Vec<Arc<Part>>,
    dedup: Dedup,
    last_id: u64,
    next_part: u64,
}

const LOCK_FILE: &str = "LOCK";
const WAL_DIR: &str = "wal";
const PARTS_DIR: &str = "parts";
const QUARANTINE_DIR: &str = "quarantine";

impl Store {
    /// Opens (or creates) the store in `dir`: loads its parts and replays its
    /// write-ahead log.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        fs::create_dir_all(dir.join(WAL_DIR)).map_err(StoreError::io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(StoreError::io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked {
                path: dir.to_owned(),
            });
        }

        let parts = load_parts(dir)?;
        let mut dedup = Dedup::default();
        let mut last_id = 0;
        let mut next_part = 1;
        for part in &parts {
            for stream in &part.footer.streams {
                for (start, end) in &stream.seq_ranges {
                    dedup.insert_range(
                        &part.footer.partition.tenant,
                        &stream.labels.runner,
                        &stream.labels.boot,
                        *start,
                        *end,
                    );
                }
            }
            last_id = last_id.max(part.footer.max_id);
            next_part = next_part.max(part_number(part.path()).unwrap_or(0) + 1);
        }

        let mut memtable = Memtable::default();
        let segments = wal_segments(dir)?;
        let mut last_segment = 0;
        for (number, path) in &segments {
            let recovered = WalReader::recover(path, |payload| {
                match serde_json::from_slice::<Vec<LogRecord>>(payload) {
                    Ok(records) => {
                        for record in records {
                            last_id = last_id.max(record.id);
                            // Already flushed into a part before a crash cut the
                            // log's deletion short.
                            if dedup.contains(
                                &record.tenant,
                                &record.runner,
                                &record.boot,
                                record.seq,
                            ) {
                                continue;
                            }
                            dedup.insert(&record.tenant, &record.runner, &record.boot, record.seq);
                            memtable.insert(record);
                        }
                        true
                    }
                    Err(_) => false,
                }
            })
            .map_err(StoreError::io(path))?;
            if recovered.discarded_bytes > 0 {
                tracing::warn!(
                    path = %path.display(),
                    discarded_bytes = recovered.discarded_bytes,
                    kept_batches = recovered.batches,
                    "write-ahead log had a torn or corrupt tail (a write cut short by a crash, never acknowledged): truncated it"
                );
                // Cut it now, so the segment is whole if appended to.
                WalWriter::open(path, recovered.valid_len, options.durability)
                    .map_err(StoreError::io(path))?;
            }
            last_segment = *number;
        }
        let wal_segment = last_segment.max(1);
        let wal_path = wal_path(dir, wal_segment);
        let valid_len = fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
        let wal = WalWriter::open(&wal_path, valid_len, options.durability)
            .map_err(StoreError::io(&wal_path))?;
        tracing::info!(
            path = %dir.display(),
            parts = parts.len(),
            memtable_records = memtable.len(),
            last_id,
            "store opened"
        );
        Ok(Store {
            dir: dir.to_owned(),
            options,
            state: RwLock::new(State {
                wal,
                wal_segment,
                memtable,
                parts,
                dedup,
                last_id,
                next_part,
            }),
            _lock: lock,
        })
    }

    /// Stores a batch from one runner. Records whose `(runner, boot, seq)`
    /// is already stored are skipped and counted as duplicates, so a client
    /// may retry a batch it is unsure about.
    pub fn append(&self, tenant: &str, batch: &IngestBatch) -> Result<IngestResponse, StoreError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::new();
        for record in &batch.records {
            if state
                .dedup
                .contains(tenant, &batch.runner, &batch.boot, record.seq)
            {
                continue;
            }
            state
                .dedup
                .insert(tenant, &batch.runner, &batch.boot, record.seq);
            fresh.push(LogRecord {
                id: state.last_id + 1 + fresh.len() as u64,
                ts: record.ts,
                tenant: tenant.to_owned(),
                app: batch.app.clone(),
                version: batch.version.clone(),
                runner: batch.runner.clone(),
                boot: batch.boot.clone(),
                seq: record.seq,
                source: batch.source,
                stream: record.stream,
                level: record.level,
                request_id: record.request_id.clone(),
                message: record.message.clone(),
                fields: record.fields.clone(),
                invalid_utf8: record.invalid_utf8,
            });
        }
        let response = IngestResponse {
            accepted: fresh.len(),
            duplicates: batch.records.len() - fresh.len(),
        };
        if fresh.is_empty() {
            return Ok(response);
        }
        let payload = serde_json::to_vec(&fresh).expect("records serialize to json");
        if let Err(error) = state.wal.append(&payload) {
            for record in &fresh {
                state
                    .dedup
                    .remove(tenant, &record.runner, &record.boot, record.seq);
            }
            return Err(StoreError::io(state.wal.path())(error));
        }
        state.last_id += fresh.len() as u64;
        for record in fresh {
            state.memtable.insert(record);
        }
        if state.memtable.bytes() >= self.options.memtable_max_bytes {
            self.flush_locked(&mut state)?;
        }
        Ok(response)
    }

    /// One page of `tenant`'s records matching the query, in time order.
    pub fn query(&self, tenant: &str, query: &Query) -> Result<Page, StoreError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(query::page(
            tenant,
            query,
            &state.memtable,
            &state.parts,
            state.last_id,
        ))
    }

    /// Up to `limit` of `tenant`'s records matching `filter` whose id is above
    /// `after_id`, in ingest (id) order.
    pub fn read_after(
        &self,
        tenant: &str,
        filter: &Filter,
        after_id: u64,
        limit: usize,
    ) -> Vec<LogRecord> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        query::after_id(
            tenant,
            filter,
            after_id,
            limit,
            &state.memtable,
            &state.parts,
        )
    }

    /// The id of the newest stored record (0 when empty).
    pub fn last_id(&self) -> u64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).last_id
    }

    /// Background upkeep, for a timer to call: flushes a memtable older than
    /// its maximum age.
    pub fn maintain(&self) -> Result<(), StoreError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !state.memtable.is_empty() && state.memtable.age() >= self.options.memtable_max_age {
            self.flush_locked(&mut state)?;
        }
        Ok(())
    }

    /// Deletes partitions past their app's retention age, then the oldest
    /// ones while parts take more than the disk limit. Each deletion is
    /// logged and returned.
    pub fn apply_retention(
        &self,
        retention: &Retention,
        now: jiff::Timestamp,
    ) -> Result<Vec<Deleted>, StoreError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut partitions: std::collections::BTreeMap<Partition, (usize, u64)> =
            Default::default();
        for part in &state.parts {
            let entry = partitions.entry(part.footer.partition.clone()).or_default();
            entry.0 += 1;
            entry.1 += part.file_len;
        }
        let mut doomed = Vec::new();
        for (partition, (parts, bytes)) in &partitions {
            let max_age = retention
                .app_max_age
                .get(&(partition.tenant.clone(), partition.app.clone()))
                .copied()
                .unwrap_or(retention.max_age);
            if day_end(&partition.day)
                .is_some_and(|end| now.as_second() - end.as_second() >= max_age.as_secs() as i64)
            {
                doomed.push(Deleted {
                    partition: partition.clone(),
                    parts: *parts,
                    bytes: *bytes,
                    reason: DeleteReason::Age,
                });
            }
        }
        if let Some(limit) = retention.max_total_bytes {
            let mut total: u64 = partitions.values().map(|(_, bytes)| bytes).sum::<u64>()
                - doomed.iter().map(|d| d.bytes).sum::<u64>();
            // Partitions sort oldest day first.
            for (partition, (parts, bytes)) in &partitions {
                if total <= limit {
                    break;
                }
                if doomed.iter().any(|d| d.partition == *partition) {
                    continue;
                }
                total -= bytes;
                doomed.push(Deleted {
                    partition: partition.clone(),
                    parts: *parts,
                    bytes: *bytes,
                    reason: DeleteReason::DiskSize,
                });
            }
        }
        for deleted in &doomed {
            state
                .parts
                .retain(|part| part.footer.partition != deleted.partition);
            let dir = self.partition_dir(&deleted.partition);
            fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
            tracing::info!(
                tenant = %deleted.partition.tenant,
                app = %deleted.partition.app,
                day = %deleted.partition.day,
                parts = deleted.parts,
                bytes = deleted.bytes,
                reason = ?deleted.reason,
                "retention deleted a partition"
            );
        }
        Ok(doomed)
    }

    /// Writes the memtable into parts now.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.flush_locked(&mut state)
    }

    /// `parts/<tenant>/<app>/<day>`.
    fn partition_dir(&self, partition: &Partition) -> PathBuf {
        self.dir
            .join(PARTS_DIR)
            .join(dir_name(&partition.tenant))
            .join(dir_name(&partition.app))
            .join(&partition.day)
    }

    /// Memtable → parts (one per tenant, app and day), then a fresh log segment
    /// and the old one deleted. A crash anywhere in between loses nothing:
    /// until the old log is gone, replay restores what is not in a part.
    fn flush_locked(&self, state: &mut State) -> Result<(), StoreError> {
        if state.memtable.is_empty() {
            return Ok(());
        }
        let records = state.memtable.take();
        let mut groups: std::collections::BTreeMap<Partition, Vec<LogRecord>> = Default::default();
        for record in records {
            let partition = Partition {
                day: day_of(record.ts),
                tenant: record.tenant.clone(),
                app: record.app.clone(),
            };
            groups.entry(partition).or_default().push(record);
        }
        let started = std::time::Instant::now();
        let mut flushed = 0;
        let groups: Vec<(Partition, Vec<LogRecord>)> = groups.into_iter().collect();
        for (index, (partition, records)) in groups.iter().enumerate() {
            let dir = self.partition_dir(partition);
            let name = format!("{:012}", state.next_part);
            let written =
                part::writer::write_part(&dir, &name, partition, records).and_then(|(path, _)| {
                    Part::open(&path).map_err(|error| std::io::Error::other(error.to_string()))
                });
            match written {
                Ok(part) => {
                    state.next_part += 1;
                    flushed += records.len();
                    state.parts.push(Arc::new(part));
                }
                Err(error) => {
                    // What is not in a part goes back to the memtable; the
                    // log, not rotated, still holds all of it.
                    for (_, records) in &groups[index..] {
                        for record in records {
                            state.memtable.insert(record.clone());
                        }
                    }
                    return Err(StoreError::io(&dir)(error));
                }
            }
        }
        let old_segment = state.wal_segment;
        let new_path = wal_path(&self.dir, old_segment + 1);
        state.wal = WalWriter::open(&new_path, 0, self.options.durability)
            .map_err(StoreError::io(&new_path))?;
        state.wal_segment = old_segment + 1;
        for (number, path) in wal_segments(&self.dir)? {
            if number <= old_segment {
                fs::remove_file(&path).map_err(StoreError::io(&path))?;
            }
        }
        tracing::info!(
            records = flushed,
            parts = groups.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "memtable flushed into parts"
        );
        Ok(())
    }
}

/// The end (next midnight, UTC) of a `YYYY-MM-DD` day.
fn day_end(day: &str) -> Option<jiff::Timestamp> {
    let date: jiff::civil::Date = day.parse().ok()?;
    date.tomorrow()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}

/// The UTC day of a time, as `YYYY-MM-DD`.
fn day_of(ts: jiff::Timestamp) -> String {
    ts.strftime("%Y-%m-%d").to_string()
}

fn wal_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(WAL_DIR).join(format!("{segment:012}.log"))
}

/// The log segments, oldest first.
fn wal_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let wal_dir = dir.join(WAL_DIR);
    let mut segments = Vec::new();
    for entry in fs::read_dir(&wal_dir).map_err(StoreError::io(&wal_dir))? {
        let path = entry.map_err(StoreError::io(&wal_dir))?.path();
        let number = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok());
        if let (Some(number), Some("log")) = (number, path.extension().and_then(|e| e.to_str())) {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

fn part_number(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Every part under `parts/`. A part that does not open is moved to
/// `quarantine/` and reported; the others load.
fn load_parts(dir: &Path) -> Result<Vec<Arc<Part>>, StoreError> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.join(PARTS_DIR)];
    while let Some(folder) = stack.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(StoreError::io(&folder)(error)),
        };
        for entry in entries {
            let path = entry.map_err(StoreError::io(&folder))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some(part::EXTENSION) {
                paths.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                // A part whose write a crash interrupted: its records are
                // still in the log.
                let _ = fs::remove_file(&path);
            }
        }
    }
    paths.sort_by_key(|path| part_number(path));
    let mut parts = Vec::new();
    for path in paths {
        match Part::open(&path) {
            Ok(part) => parts.push(Arc::new(part)),
            Err(error) => {
                let quarantine = dir.join(QUARANTINE_DIR);
                let moved_to = quarantine.join(path.file_name().expect("a part file has a name"));
                let moved =
                    fs::create_dir_all(&quarantine).and_then(|()| fs::rename(&path, &moved_to));
                tracing::error!(%error, quarantined = %moved_to.display(), moved = moved.is_ok(), "a part could not be opened: moved aside, the other parts are served");
            }
        }
    }
    Ok(parts)
}

/// A tenant's or app's folder name: the name itself when it is plain, else
/// an encoding that cannot escape the parts folder.
fn dir_name(tenant: &str) -> String {
    let plain = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        tenant.to_owned()
    } else {
        format!(
            "x-{}",
            tenant
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

#[cfg(test)]
mod query_tests;
#[cfg(test)]
mod tests;
