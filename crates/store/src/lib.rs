//! The embedded log store: what the server appends to and reads from.
//!
//! [`Store`] is the whole API: [`Store::append`] a batch from one runner
//! (idempotent by runner, boot and sequence), [`Store::query`] a page in time
//! order with an opaque cursor, and [`Store::read_after`] the records ingested
//! after a given id, which is how live tail follows and resumes.
//!
//! Inside, data flows one way:
//!
//! - every appended batch is checked against what is stored (duplicates are
//!   skipped, records older than the out-of-order window or their
//!   retention refused, records dated too far ahead stored at the store's
//!   time), written
//!   to the write-ahead log ([`wal`]) and, by default, fsynced before
//!   `append` returns (appends that arrive together share one fsync), so an
//!   acknowledged record survives kill -9 and power loss ([`append`]);
//! - it then sits in the memtable ([`memtable`]), readable once durable;
//! - when the memtable is large or old enough, it is frozen and a background
//!   thread flushes it into immutable parts ([`part`]), one per tenant, app
//!   and day, then deletes the log it came from; the same thread merges a
//!   partition's small parts into larger ones ([`flush`]);
//! - queries merge the memtable with the part blocks their footers cannot
//!   rule out ([`query`] chooses them, [`scan`] reads them in time order,
//!   building records for a page or lending them borrowed to a visitor).
//!
//! On open ([`open`]), parts are loaded (a damaged one is moved to
//! `quarantine/` and reported, never fatal) and the log is replayed into the
//! memtable; damage in the log is skipped (the frames after it are kept),
//! copied to `damaged/` and reported ([`recovery`]). Retention
//! ([`retention`]) deletes whole partitions.
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
//! assert_eq!(store.append("acme", batch.clone()).unwrap().accepted, 1);
//! assert_eq!(store.append("acme", batch).unwrap().duplicates, 1);
//! let page = store.query("acme", &Query { limit: 10, ..Query::default() }).unwrap();
//! assert_eq!(page.records[0].message, "model loaded");
//! ```

mod append;
mod cache;
mod count;
mod damage;
mod dedup;
mod flush;
mod follow;
mod memtable;
mod merge;
mod open;
mod options;
pub mod part;
mod query;
mod record_ref;
mod recovery;
mod requests;
mod retention;
mod row;
mod scan;
mod scan_threads;
mod visibility;
mod wal;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use tailwater_model::wire::{IngestBatch, IngestResponse};
use tailwater_model::{Cursor, Filter, LogRecord, Query};

use crate::append::Rules;
use crate::cache::BlockCache;
pub use crate::cache::CacheStats;
pub use crate::count::{AppCount, Buckets, Counts, LEVELS};
pub use crate::damage::{DamagedPart, SkippedBlock};
use crate::dedup::Dedup;
use crate::memtable::Memtable;
#[cfg(test)]
use crate::open::{load_parts, wal_segments};
pub use crate::options::*;

/// User plus system CPU time of the calling thread so far, in ns.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}
use crate::part::reader::Part;
pub use crate::part::Partition;
pub use crate::record_ref::RecordRef;
pub use crate::recovery::{DamageKind, RecoveryReport, WalDamage, DAMAGED_DIR};
pub use crate::retention::{DeleteReason, Deleted};
use crate::visibility::Visibility;
use crate::wal::WalWriter;

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
    #[error("the store cannot flush its memtable ({0}) and has no room for more: free disk space or fix the data directory; appends resume by themselves")]
    Stalled(String),
    #[error("app {app:?} of tenant {tenant:?} cannot be stored for {day} at the moment (the server's log says why); its records received so far are kept and retried: send this batch again later")]
    PartitionUnwritable {
        tenant: String,
        app: String,
        day: String,
    },
    #[error("the store stopped accepting writes after a failure it cannot recover from while running ({0}); fix the cause and restart the server: what was acknowledged is safe")]
    Failed(String),
    #[error("this count would read {records} stored records, more than the server's count scan limit of {limit} (--count-scan-limit): narrow it with since and until, or app, or ask the server's admin to raise the limit")]
    CountTooLarge { records: u64, limit: u64 },
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
    /// The newest record id readable when the page was read.
    pub as_of: u64,
    /// Blocks that may hold matches but could not be read (damaged on
    /// disk), skipped: when not empty, the page lacks their matches.
    pub skipped: Vec<SkippedBlock>,
}

/// What [`Store::scan`] says besides the records it visited: a
/// [`Page`] without its records.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanPage {
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
    /// The newest record id readable when the page was read.
    pub as_of: u64,
    /// Blocks that may hold matches but could not be read, skipped.
    pub skipped: Vec<SkippedBlock>,
}

/// What one tenant's app holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppStats {
    pub tenant: String,
    pub app: String,
    pub records: u64,
    /// Bytes of message text, as captured.
    pub raw_bytes: u64,
    /// Bytes of its parts on disk (records still in the memtable count in
    /// `records` and `raw_bytes`, not here).
    pub stored_bytes: u64,
    pub parts: u64,
}

/// One request: where it ran, when, and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSummary {
    pub id: String,
    /// App and runner of its first record.
    pub app: String,
    pub runner: String,
    pub records: u64,
    /// Time of its first and last record, in ns since the epoch.
    pub first_ts: i64,
    pub last_ts: i64,
    /// The status its end record reported (a numeric `status` field on a
    /// system record of the request), once there is one.
    pub status: Option<i64>,
}

/// Counters since the store opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub appended: u64,
    pub duplicates: u64,
    /// Records refused for being older than the out-of-order window.
    pub refused_out_of_order: u64,
    /// Records refused for being older than their app's retention.
    pub refused_older_than_retention: u64,
    /// Records stored at the store's time: dated further ahead than
    /// [`StoreOptions::max_clock_skew`].
    pub retimed_clock_skew: u64,
    /// Records stored at the store's time: dated outside the times it can
    /// hold.
    pub retimed_out_of_range: u64,
    pub flushes: u64,
    pub merges: u64,
    /// Blocks merges wrote into their part as they were, without decoding.
    pub merge_blocks_copied: u64,
    /// Blocks merges wrote anew, from records of overlapping or small
    /// blocks.
    pub merge_blocks_written: u64,
    /// Flushed parts settled: written again at the merge level once the
    /// store was idle ([`Store::settle`]).
    pub parts_settled: u64,
    /// Flushes a settling step made between its blocks, as they came due
    /// (frozen tables, or an old active one), rather than keep them
    /// waiting until the step ended.
    pub settle_flushes: u64,
    /// The longest a settling step went without looking for a due flush
    /// (between looks, or from the last to its end), in ns: the most a
    /// flush waited behind settling.
    pub settle_longest_flush_wait_ns: u64,
    /// CPU time merges and settling took, in ns (the merging thread's).
    pub merge_cpu_ns: u64,
    /// Parts in which a merge found a block it could not read: each is
    /// left as it is (queries serve its readable blocks) and out of every
    /// later merge, and the error is logged once.
    pub unmergeable_parts: u64,
    /// Reads of a block that could not be read (a checksum mismatch, bad
    /// compression, bad columns), by queries: each skipped the block. A
    /// block read again counts again.
    pub damaged_block_reads: u64,
    /// Stretches of the write-ahead log that open found damaged with valid
    /// frames after them (acknowledged records lost), their bytes, and the
    /// records they held where the ids around them tell ([`recovery`]).
    pub wal_lost_regions: u64,
    pub wal_lost_bytes: u64,
    pub wal_lost_records: u64,
    /// Bytes of torn log tails open cut off (most likely never
    /// acknowledged).
    pub wal_torn_tail_bytes: u64,
    /// Log tails open cut off that were one whole frame failing its
    /// checksum (a damaged byte; its records may have been acknowledged),
    /// and the records their payload still told ([`recovery`]).
    pub wal_possibly_lost_regions: u64,
    pub wal_possibly_lost_records: u64,
    /// Records [`Store::append_at`] could not store at their position (not
    /// above the store's last id) and stored at the next id instead.
    pub positions_moved: u64,
    /// Batches refused because a partition they hold could not be written
    /// into parts (see [`StoreError::PartitionUnwritable`]).
    pub refused_unwritable: u64,
}

/// The embedded store. Cheap to share behind an `Arc`; every method takes
/// `&self`. Dropping it stops its background thread.
pub struct Store {
    inner: Arc<Inner>,
    background: Option<JoinHandle<()>>,
}

struct Inner {
    dir: PathBuf,
    options: StoreOptions,
    /// Taken by appends, in turn: what assigns ids and writes the log.
    writer: Mutex<Writer>,
    /// What readers see: the memtable and the parts.
    state: RwLock<State>,
    /// The highest id readers may see, and the wake-up that rises with it.
    visible: Arc<Visibility>,
    /// The highest id known to be on disk.
    durable: AtomicU64,
    /// Held by the append whose fsync covers the others waiting (group
    /// commit).
    commit: Mutex<()>,
    /// Appends wait on it (with the writer lock) while too many frozen
    /// tables wait to be flushed.
    room: Condvar,
    /// One flush or merge at a time.
    flushing: Mutex<()>,
    /// Wakes the background thread; `true` asks it to stop.
    wake: (Mutex<bool>, Condvar),
    /// Why the store stopped taking writes, if it did.
    failed: Mutex<Option<String>>,
    /// Why the last flush failed, while flushes fail: appends that find
    /// held tables over their bound answer with it instead of waiting
    /// forever. Says no path: clients see it.
    stalled: Mutex<Option<String>>,
    /// Partitions a flush could not write, by tenant and app, then day
    /// number: appends to them are refused until a write of theirs succeeds.
    unwritable: Mutex<std::collections::HashMap<(String, String), std::collections::HashSet<i64>>>,
    next_part: AtomicU64,
    /// Parts left out of merges: a merge found a damaged block in them.
    unmergeable: Mutex<std::collections::HashSet<PathBuf>>,
    /// Parts quarantined at open, and unreadable blocks found since.
    damage: Mutex<damage::Damage>,
    counters: Mutex<Counters>,
    /// What open found damaged in the log.
    recovery: RecoveryReport,
    /// The helper threads counts share.
    scan_threads: scan_threads::ScanThreads,
    /// Decoded blocks kept for the next page.
    cache: BlockCache,
    _lock: File,
}

struct Writer {
    wal: WalWriter,
    segment: u64,
    dedup: Dedup,
    last_id: u64,
}

struct State {
    memtable: Memtable,
    parts: Vec<Arc<Part>>,
}

/// The name of the store's background thread (flushes and merges), as
/// `/proc/<pid>/task/*/comm` shows it (at most 15 bytes).
pub const THREAD_NAME: &str = "tailwater-store";
const LOCK_FILE: &str = "LOCK";
const WAL_DIR: &str = "wal";
const PARTS_DIR: &str = "parts";
const QUARANTINE_DIR: &str = "quarantine";
/// Frozen tables waiting for their flush before appends wait too: bounds
/// memory when flushes fall behind.
const MAX_FROZEN_TABLES: usize = 2;
/// Memory held tables (rows of partitions a flush could not write) may
/// take, in memtables: past it every append waits, then fails, as when
/// flushes fail for all. One failing partition holds at most the rows it
/// had in the tables in flight (three) when it failed, since its appends
/// are refused from then on.
const MAX_HELD_MEMTABLES: usize = 4;

impl Store {
    /// Opens (or creates) the store in `dir`: loads its parts and replays its
    /// write-ahead log, then starts the background thread.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let inner = Arc::new(open::open(dir, options)?);
        // What the parts' footers filled dedup with is kept as watermarks.
        inner.compact_dedup();
        let background = inner.options.background.then(|| {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name(THREAD_NAME.into())
                .spawn(move || flush::background(&inner))
                .expect("the store's background thread starts")
        });
        Ok(Store { inner, background })
    }

    /// Stores a batch from one runner. Records whose `(app, runner, boot,
    /// seq)` is already stored are skipped and counted as duplicates, so a
    /// client may retry a batch it is unsure about; records older than the
    /// out-of-order window of their stream are refused and counted; records
    /// dated more than [`StoreOptions::max_clock_skew`] ahead, or outside
    /// the times the store holds, are stored at the store's time with their
    /// own in the field `original_ts`, and counted.
    pub fn append(&self, tenant: &str, batch: IngestBatch) -> Result<IngestResponse, StoreError> {
        self.inner.append(
            tenant,
            batch,
            Rules {
                window: true,
                ..Rules::default()
            },
        )
    }

    /// [`Store::append`], and records so old that a retention of `max_age`
    /// would delete their day at once (the rule of
    /// [`Store::apply_retention`]) are refused and counted rather than
    /// stored and deleted moments later.
    pub fn append_within_retention(
        &self,
        tenant: &str,
        batch: IngestBatch,
        max_age: std::time::Duration,
    ) -> Result<IngestResponse, StoreError> {
        self.inner.append(
            tenant,
            batch,
            Rules {
                max_age: Some(max_age),
                window: true,
                ..Rules::default()
            },
        )
    }

    /// [`Store::append_within_retention`], with the ids given: record `i`
    /// of the batch as given (refused and duplicate ones included) is
    /// numbered `first + i`, so a batch numbered by its place in a log
    /// every node reads in order (a cluster's stream) has the same ids on
    /// every node, and a live tail or a cursor moves between them. Ids
    /// still only rise: a record whose position is not above the store's
    /// last id (another writer took it) gets the next id instead, counted
    /// in [`Counters::positions_moved`].
    ///
    /// Returns once the batch is written, before it is durable or
    /// readable: call [`Store::sync`] before telling anyone it is stored
    /// (one sync covers every batch appended before it).
    pub fn append_at(
        &self,
        tenant: &str,
        batch: IngestBatch,
        first: u64,
        max_age: std::time::Duration,
    ) -> Result<IngestResponse, StoreError> {
        self.inner.append(
            tenant,
            batch,
            Rules {
                max_age: Some(max_age),
                window: true,
                first: Some(first),
                deferred: true,
            },
        )
    }

    /// Makes every batch appended so far durable and readable: what
    /// [`Store::append_at`] leaves to its caller.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.inner.sync()
    }

    /// [`Store::append`] without the out-of-order window: for records
    /// another node of a cluster stored and this one missed (a repair),
    /// which are older than their stream's newest here for good reason.
    /// Deduplication by `(app, runner, boot, seq)` still keeps one copy of
    /// each, so a repair that reads records this store holds stores none
    /// of them again.
    pub fn append_repaired(
        &self,
        tenant: &str,
        batch: IngestBatch,
    ) -> Result<IngestResponse, StoreError> {
        self.inner.append(tenant, batch, Rules::default())
    }

    /// One page of `tenant`'s records matching the query, in time order.
    pub fn query(&self, tenant: &str, query: &Query) -> Result<Page, StoreError> {
        let as_of = self.inner.visible.load();
        let state = self.inner.read();
        let page = scan::page(
            tenant,
            query,
            &state.memtable,
            &state.parts,
            &self.inner.cache,
            as_of,
        );
        drop(state);
        self.inner.note_skipped(&page.skipped);
        Ok(page)
    }

    /// Visits the records [`Store::query`] would return for `query`, in
    /// the same order and with the same cursor, without building them:
    /// each is borrowed from the block's columns or the memtable
    /// ([`RecordRef`]), its labels shared by its stream. What reads every
    /// record (an export) pays for the records it writes, not for records
    /// built and dropped.
    ///
    /// `visit` runs under the store's read lock: it must not wait for
    /// anything (write into memory, send afterwards). An error from it says
    /// the record cannot be read (as [`RecordRef::write_json`] fails on a
    /// damaged block): the rest of its block is skipped and returned in
    /// [`ScanPage::skipped`], as a page skips a damaged block.
    pub fn scan(
        &self,
        tenant: &str,
        query: &Query,
        mut visit: impl FnMut(RecordRef<'_>) -> Result<(), String>,
    ) -> Result<ScanPage, StoreError> {
        let as_of = self.inner.visible.load();
        let state = self.inner.read();
        let scanned = scan::scan(
            tenant,
            query,
            (&state.memtable, &state.parts, &self.inner.cache),
            &mut visit,
        );
        drop(state);
        self.inner.note_skipped(&scanned.skipped);
        Ok(ScanPage {
            next: scanned.next,
            as_of,
            skipped: scanned.skipped,
        })
    }

    /// How many of `tenant`'s records match `filter` (its time window
    /// included), by app, and by time bucket and level when `buckets` are
    /// given: the number of records paging through [`Store::query`] with
    /// the same filter returns, found without building them, on up to
    /// [`StoreOptions::query_threads`] threads (the caller's and helpers
    /// free in the store's one pool). Unreadable blocks are skipped,
    /// counted and returned, as a page's. A count that would read more
    /// than [`StoreOptions::count_scan_limit`] stored records is refused
    /// ([`StoreError::CountTooLarge`]) before it reads any.
    pub fn count(
        &self,
        tenant: &str,
        filter: &Filter,
        buckets: Option<Buckets>,
    ) -> Result<Counts, StoreError> {
        let as_of = self.inner.visible.load();
        let state = self.inner.read();
        let mut apps = count::in_memtable(tenant, filter, buckets, &state.memtable);
        let parts = state.parts.clone();
        drop(state);
        let (in_parts, skipped) = count::in_parts(
            tenant,
            filter,
            buckets,
            &parts,
            &count::Budget {
                threads: self.inner.options.query_threads,
                pool: &self.inner.scan_threads,
                scan_limit: self.inner.options.count_scan_limit,
            },
        )?;
        count::merge(&mut apps, in_parts);
        self.inner.note_skipped(&skipped);
        Ok(Counts {
            apps,
            as_of,
            skipped,
        })
    }

    /// Up to `limit` of `tenant`'s records matching `filter` whose id is above
    /// `after_id`, in ingest (id) order. Unreadable blocks are skipped,
    /// counted and listed in [`Store::damaged_parts`];
    /// [`Store::read_after_reporting`] also says which.
    pub fn read_after(
        &self,
        tenant: &str,
        filter: &Filter,
        after_id: u64,
        limit: usize,
    ) -> Vec<LogRecord> {
        self.read_after_reporting(tenant, filter, after_id, limit).0
    }

    /// [`Store::read_after`], with the blocks it skipped as unreadable.
    pub fn read_after_reporting(
        &self,
        tenant: &str,
        filter: &Filter,
        after_id: u64,
        limit: usize,
    ) -> (Vec<LogRecord>, Vec<SkippedBlock>) {
        let state = self.inner.read();
        let (records, skipped) = follow::after_id(
            tenant,
            filter,
            after_id,
            limit,
            &state.memtable,
            &state.parts,
        );
        drop(state);
        self.inner.note_skipped(&skipped);
        (records, skipped)
    }

    /// The highest sequence number stored of `runner`'s `boot` in `tenant`'s
    /// `app`, if any: where a sender that numbers nothing itself goes on
    /// from (the server numbers its records, see the server's ingest
    /// identity).
    pub fn highest_seq(&self, tenant: &str, app: &str, runner: &str, boot: &str) -> Option<u64> {
        self.inner
            .lock_writer()
            .dedup
            .highest(tenant, app, runner, boot)
    }

    /// `tenant`'s damaged parts: quarantined at open (a quarantined part
    /// whose footer could not be read is known by its folder, which names
    /// its tenant), and served parts with blocks found unreadable since.
    pub fn damaged_parts(&self, tenant: &str) -> Vec<DamagedPart> {
        let served: std::collections::HashSet<PathBuf> = self
            .inner
            .read()
            .parts
            .iter()
            .map(|part| part.path().to_owned())
            .collect();
        let folder = dir_name(tenant);
        self.inner
            .damage()
            .list(&self.inner.dir, |path| served.contains(path))
            .into_iter()
            .filter(|part| match &part.partition {
                Some(partition) => partition.tenant == tenant,
                None => part
                    .path
                    .components()
                    .nth(1)
                    .is_some_and(|name| name.as_os_str() == folder.as_str()),
            })
            .collect()
    }

    /// What is known of one of `tenant`'s requests, found through the part
    /// footers' request index and the memtable (no block is read).
    pub fn request(&self, tenant: &str, request_id: &str) -> Option<RequestSummary> {
        let state = self.inner.read();
        requests::request_summary(tenant, None, request_id, &state.memtable, &state.parts)
    }

    /// What is known of one request of one of `tenant`'s apps: a request
    /// id is the sender's to choose, so another app may use the same one,
    /// and each app's request is its own.
    pub fn request_in_app(
        &self,
        tenant: &str,
        app: &str,
        request_id: &str,
    ) -> Option<RequestSummary> {
        let state = self.inner.read();
        requests::request_summary(tenant, Some(app), request_id, &state.memtable, &state.parts)
    }

    /// [`Store::request_in_app`] of many requests at once (`(app, id)`
    /// each), in their order, for a list of requests: one pass over the
    /// memtable for them all.
    pub fn requests_in_apps(
        &self,
        tenant: &str,
        requests: &[(String, String)],
    ) -> Vec<Option<RequestSummary>> {
        let state = self.inner.read();
        requests::request_summaries(tenant, requests, &state.memtable, &state.parts)
    }

    /// The apps of `tenant` holding records of a request, in name order.
    pub fn request_apps(&self, tenant: &str, request_id: &str) -> Vec<String> {
        let state = self.inner.read();
        requests::request_apps(tenant, request_id, &state.memtable, &state.parts)
    }

    /// The id of the newest readable record (0 when empty).
    pub fn last_id(&self) -> u64 {
        self.inner.visible.load()
    }

    /// A wake-up that rises with [`Store::last_id`]: whoever appends (the
    /// ingest pipeline, the server's own records, recovery), a reader
    /// following the store learns of it here, with no one to remember to
    /// tell it. Cheap to hold; never lowered.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.visible.subscribe()
    }

    /// Writes everything in the memtable into parts now, and waits for it.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush_all()
    }

    /// Merges every partition's small parts now, until no tier has enough
    /// parts to merge, and waits for it (the background thread does this on
    /// its own).
    pub fn merge(&self) -> Result<(), StoreError> {
        while self.inner.merge_all()? > 0 {}
        Ok(())
    }

    /// Settles every flushed part now: each is written again at
    /// [`StoreOptions::merge_zstd_level`] (the background thread settles
    /// one a tick while no append comes). Returns how many.
    pub fn settle(&self) -> Result<u64, StoreError> {
        let mut settled = 0;
        while self.inner.settle_one()? {
            settled += 1;
        }
        Ok(settled)
    }

    /// Deletes partitions past their app's retention age, then the oldest
    /// ones while parts take more than the disk limit. Each deletion is
    /// logged and returned.
    pub fn apply_retention(
        &self,
        retention: &Retention,
        now: jiff::Timestamp,
    ) -> Result<Vec<Deleted>, StoreError> {
        retention::apply(&self.inner, retention, now)
    }

    /// Records, raw and stored bytes per tenant and app.
    pub fn stats(&self) -> Vec<AppStats> {
        let state = self.inner.read();
        let damage = self.inner.damage();
        let mut apps: std::collections::BTreeMap<(String, String), AppStats> = Default::default();
        for part in &state.parts {
            let partition = &part.footer.partition;
            let entry = apps
                .entry((partition.tenant.clone(), partition.app.clone()))
                .or_default();
            // Records in blocks known unreadable are not served: not counted.
            entry.records += part
                .footer
                .records
                .saturating_sub(damage.unreadable_records(part.path()));
            entry.raw_bytes += part.footer.raw_bytes;
            entry.stored_bytes += part.file_len;
            entry.parts += 1;
        }
        for (tenant, app, records, raw_bytes) in state.memtable.app_totals() {
            let entry = apps.entry((tenant, app)).or_default();
            entry.records += records;
            entry.raw_bytes += raw_bytes;
        }
        apps.into_iter()
            .map(|((tenant, app), mut stats)| {
                stats.tenant = tenant;
                stats.app = app;
                stats
            })
            .collect()
    }

    /// Counters since the store opened.
    pub fn counters(&self) -> Counters {
        self.inner.counters().clone()
    }

    /// What the block cache did since the store opened.
    pub fn block_cache(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// What opening the store found damaged in its write-ahead log: lost
    /// records (to report to their owner and the operator) and torn tails.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(background) = self.background.take() {
            let (stop, wake) = &self.inner.wake;
            *stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_all();
            let _ = background.join();
        }
        // A closed store keeps no spare log file: it is only worth its disk
        // space while segments come and go.
        let _ = std::fs::remove_file(spare_wal_path(&self.inner.dir));
    }
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn damage(&self) -> std::sync::MutexGuard<'_, damage::Damage> {
        self.damage.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts and notes blocks a read skipped; logs each block the first
    /// time it is found.
    fn note_skipped(&self, skipped: &[SkippedBlock]) {
        if skipped.is_empty() {
            return;
        }
        self.counters().damaged_block_reads += skipped.len() as u64;
        let mut damage = self.damage();
        for block in skipped {
            if damage.skipped(block) {
                tracing::error!(
                    part = %block.part.display(),
                    block = block.block,
                    records = block.records,
                    reason = %block.reason,
                    "a block could not be read: reads skip it and say so"
                );
            }
        }
    }

    fn check_failed(&self) -> Result<(), StoreError> {
        match &*self.failed.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(reason) => Err(StoreError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the store stops taking writes");
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
    }

    fn wake_background(&self) {
        self.wake.1.notify_all();
    }

    /// `parts/<tenant>/<app>/<day>`.
    fn partition_dir(&self, partition: &Partition) -> PathBuf {
        self.dir
            .join(PARTS_DIR)
            .join(dir_name(&partition.tenant))
            .join(dir_name(&partition.app))
            .join(&partition.day)
    }
}

/// The mode of every folder the store creates, and of every file: the logs
/// are readable by the server's user alone, whatever its umask.
const PRIVATE_DIR_MODE: u32 = 0o700;
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents, each readable by the owner alone.
fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
}

/// Options that create a file readable by the owner alone.
fn private_file() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.mode(PRIVATE_FILE_MODE);
    options
}

/// The UTC day of a time, as `YYYY-MM-DD`.
fn day_of(ts_ns: i64) -> String {
    tailwater_model::time::timestamp_from_ns(ts_ns)
        .strftime("%Y-%m-%d")
        .to_string()
}

fn wal_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(WAL_DIR).join(format!("{segment:012}.log"))
}

/// Where a flushed log segment's file waits to be reused.
fn spare_wal_path(dir: &Path) -> PathBuf {
    dir.join(WAL_DIR).join(wal::SPARE)
}

fn part_number(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

/// Tenant and app names kept as they are in folder names: longer or other
/// names are hashed.
const PLAIN_NAME_MAX_BYTES: usize = 64;
/// The readable start a hashed folder name keeps of its name.
const HASHED_NAME_PREFIX_BYTES: usize = 40;

/// A tenant's or app's folder name. A plain name (ASCII letters, digits,
/// `-` and `_`, at most 64 bytes) is kept as it is; any other name becomes
/// its first bytes with the others replaced by `_`, a `.` and 128 bits of
/// the SHA-256 of the whole name. Plain names hold no `.`, so the two kinds
/// never meet, and the hash tells hashed names apart: no two names share a
/// folder, and no folder name is longer than 73 bytes, whatever users name
/// things. (Stores written before kept `x-<hex>` folders: their parts load
/// by their footers' partition, wherever they are.)
fn dir_name(name: &str) -> String {
    let plain_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if !name.is_empty() && name.len() <= PLAIN_NAME_MAX_BYTES && name.bytes().all(plain_byte) {
        return name.to_owned();
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(name.as_bytes());
    let mut folder: String = name
        .bytes()
        .take(HASHED_NAME_PREFIX_BYTES)
        .map(|b| if plain_byte(b) { b as char } else { '_' })
        .collect();
    if folder.is_empty() {
        folder.push('_');
    }
    folder.push('.');
    for byte in &hash[..16] {
        folder.push_str(&format!("{byte:02x}"));
    }
    folder
}

#[cfg(test)]
mod append_tests;
#[cfg(test)]
mod count_limit_tests;
#[cfg(test)]
mod count_word_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod merge_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod names_tests;
#[cfg(test)]
mod position_tests;
#[cfg(test)]
mod query_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_tests;
#[cfg(test)]
mod wal_tests;
