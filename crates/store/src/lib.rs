//! The embedded log store: what the server appends to and reads from.
//!
//! [`Store`] is the whole API: [`Store::append`] a batch from one runner
//! (idempotent by runner, boot and sequence), [`Store::query`] a page in time
//! order with an opaque cursor, and [`Store::read_after`] the records ingested
//! after a given id, which is how live tail follows and resumes.
//!
//! Every appended batch is first written to the write-ahead log ([`wal`]) and,
//! by default, fsynced before `append` returns, so an acknowledged record
//! survives a crash. This first engine keeps its index in memory and rebuilds
//! it from the log on open; the on-disk engine with parts, blocks and bloom
//! filters replaces the inside without changing this API.
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

mod memory;
pub mod part;
pub mod wal;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use tailwater_model::wire::{IngestBatch, IngestResponse};
use tailwater_model::{Cursor, Filter, LogRecord, Query};

use crate::memory::MemoryIndex;
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

#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    pub durability: Durability,
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
    state: RwLock<State>,
    _lock: File,
}

struct State {
    wal: WalWriter,
    index: MemoryIndex,
}

const WAL_FILE: &str = "wal-000001.log";
const LOCK_FILE: &str = "LOCK";

impl Store {
    /// Opens (or creates) the store in `dir`, replaying its write-ahead log.
    /// A torn tail left by a crash is cut off and reported in the log output.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::create(&lock_path).map_err(StoreError::io(&lock_path))?;
        if lock.try_lock().is_err() {
            return Err(StoreError::Locked {
                path: dir.to_owned(),
            });
        }

        let wal_path = dir.join(WAL_FILE);
        let mut index = MemoryIndex::default();
        let recovered = WalReader::recover(&wal_path, |payload| {
            match serde_json::from_slice::<Vec<LogRecord>>(payload) {
                Ok(records) => {
                    index.insert_all(records);
                    true
                }
                Err(_) => false,
            }
        })
        .map_err(StoreError::io(&wal_path))?;
        if recovered.discarded_bytes > 0 {
            tracing::warn!(
                path = %wal_path.display(),
                discarded_bytes = recovered.discarded_bytes,
                kept_batches = recovered.batches,
                "write-ahead log had a torn or corrupt tail (an unacknowledged write cut short by a crash): truncated it"
            );
        }
        tracing::info!(records = index.last_id(), path = %dir.display(), "store opened");
        let wal = WalWriter::open(&wal_path, recovered.valid_len, options.durability)
            .map_err(StoreError::io(&wal_path))?;
        Ok(Store {
            state: RwLock::new(State { wal, index }),
            _lock: lock,
        })
    }

    /// Stores a batch from one runner. Records whose `(runner, boot, seq)`
    /// is already stored are skipped and counted as duplicates, so a client
    /// may retry a batch it is unsure about.
    pub fn append(&self, tenant: &str, batch: &IngestBatch) -> Result<IngestResponse, StoreError> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let State { wal, index } = &mut *state;
        let fresh = index.assign_fresh(tenant, batch);
        let response = IngestResponse {
            accepted: fresh.len(),
            duplicates: batch.records.len() - fresh.len(),
        };
        if fresh.is_empty() {
            return Ok(response);
        }
        let payload = serde_json::to_vec(&fresh).expect("records serialize to json");
        if let Err(error) = wal.append(&payload) {
            index.forget_unwritten(&fresh);
            return Err(StoreError::io(wal.path())(error));
        }
        index.insert_all(fresh);
        Ok(response)
    }

    /// One page of `tenant`'s records matching the query, in time order.
    pub fn query(&self, tenant: &str, query: &Query) -> Result<Page, StoreError> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state.index.query(tenant, query))
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
        state.index.read_after(tenant, filter, after_id, limit)
    }

    /// The id of the newest stored record (0 when empty).
    pub fn last_id(&self) -> u64 {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.index.last_id()
    }
}

#[cfg(test)]
mod tests;
