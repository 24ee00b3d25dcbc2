//! The recorder: every record the agent makes, stamped and in order, kept in
//! the [`spool`](crate::spool) on disk until the server acknowledged it.
//!
//! Producers (the supervisor and capture) call [`Recorder::record_line`],
//! [`Recorder::system`], [`Recorder::request_event`] and
//! [`Recorder::system_warning`]; the time and the per-boot sequence number
//! are taken under one lock, so records are in sequence order and their
//! times too. A captured line goes into the spool as it was read and is
//! parsed when it is read back for shipping (by the parser the shipper
//! hands [`Recorder::next_batch`]): the worker's pipe is drained at the
//! cost of a copy a line. The shipper takes batches with
//! [`Recorder::next_batch`] and hands them back with
//! [`Recorder::acknowledge`] (or [`Recorder::release`] when sending failed).
//!
//! Nothing is dropped silently: what the spool's cap dropped, what could not
//! be written, and what the server refused for good are counted, kept in the
//! spool's ledger, and reported in a system record as soon as shipping works
//! (after a restart too).
//!
//! The files: this one (opening, stamping and sequencing), `queue` (the
//! shipper's side), `reports` (what the spool found or dropped, told),
//! `flush` (the flusher thread, owed fsyncs, shutdown).

mod flush;
mod queue;
mod reports;
mod stamp;
#[cfg(test)]
pub(crate) mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Fields, FieldsJson, Level, Source, Stream};
use tokio::sync::Notify;

use crate::line::Line;
use crate::lock::lock;
use crate::runner_id;
use crate::spool::{
    self, read_batch, Assemble, Backlog, BatchLimits, Receipt, Recovery, SegmentHeader, Spool,
    Stop, Tally, FLAG_DROP_REPORT, FLAG_UNMETERED,
};
pub use flush::Flusher;
use flush::*;
pub use queue::Batch;

/// What the recorder is opened with: the labels of this boot's records and
/// where and how they are spooled (`AgentConfig::recorder` makes it).
#[derive(Clone, Debug)]
pub struct Options {
    pub app: String,
    pub version: String,
    pub source: Source,
    /// `--runner`; `None`: the host name ([`runner_id`]).
    pub runner: Option<String>,
    /// `--spool`; `None`: [`spool::default_spool_root`].
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub spool_durability: spool::Durability,
}

impl Options {
    /// An app's recorder in `spool_dir`, capped at `spool_max_bytes`, with the
    /// defaults otherwise (the tests').
    pub fn new(app: &str, spool_dir: &Path, spool_max_bytes: u64) -> Options {
        Options {
            app: app.to_owned(),
            version: String::new(),
            source: Source::Run,
            runner: None,
            spool_dir: Some(spool_dir.to_owned()),
            spool_max_bytes,
            spool_durability: spool::Durability::default(),
        }
    }
}

pub struct Recorder {
    boot: String,
    /// This boot's labels, as its batches carry them.
    labels: SegmentHeader,
    runner_origin: runner_id::Origin,
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the shipper when it waits for records ([`Recorder::wait_for_work`]).
    work: Notify,
    /// The shipper is waiting: the next record wakes it. Otherwise records
    /// wake no one (a task wake-up per line cost more than the line).
    shipper_waiting: AtomicBool,
    /// Records added so far, so the shipper can tell a quiet worker by
    /// looking twice.
    appended: AtomicU64,
    /// Wakes the flusher thread.
    flush: FlushSignal,
    closed: AtomicBool,
}

struct State {
    next_seq: u64,
    /// The last time given a record, in ns: the next is later
    /// ([`State::stamp`], [`stamp::next`]).
    last_ts_ns: i64,
    spool: Spool,
}

impl State {
    /// The next record's sequence number and time, taken together under
    /// the recorder's lock: one runner's records, stdout, stderr and the
    /// agent's own, get strictly increasing times in sequence order, so
    /// reading them in time order is reading them in capture order.
    fn stamp(&mut self) -> (u64, i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = spool::timestamp_ns(Timestamp::now());
        self.last_ts_ns = stamp::next(self.last_ts_ns, now);
        (seq, self.last_ts_ns)
    }
}

impl Recorder {
    /// Opens the runner's spool (`--spool`, or the default place) for a new
    /// boot, without reading what a previous agent left there: that is
    /// [`Recorder::recover_leftovers`]' job, in the background, and it ships
    /// first.
    pub fn open(config: &Options) -> anyhow::Result<Recorder> {
        let boot = hex::encode(rand::random::<[u8; 8]>());
        let header = SegmentHeader {
            app: config.app.clone(),
            version: config.version.clone(),
            // Chosen with the spool.
            runner: String::new(),
            boot: boot.clone(),
            source: config.source,
        };
        let runner_id::Opened {
            mut spool,
            recovery,
            header,
            origin,
        } = open_spool(config, &header)?;
        spool.set_durability(config.spool_durability);
        let recorder = Recorder {
            boot,
            labels: header,
            runner_origin: origin,
            dir: spool.dir().to_owned(),
            state: Mutex::new(State {
                next_seq: 0,
                last_ts_ns: i64::MIN,
                spool,
            }),
            work: Notify::new(),
            shipper_waiting: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            flush: FlushSignal::default(),
            closed: AtomicBool::new(false),
        };
        recorder.report_recovery(recovery);
        Ok(recorder)
    }

    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// The app this agent's records are of.
    pub fn app(&self) -> &str {
        &self.labels.app
    }

    /// The runner this agent runs as.
    pub fn runner(&self) -> &str {
        &self.labels.runner
    }

    /// Where the runner id came from.
    pub fn runner_origin(&self) -> runner_id::Origin {
        self.runner_origin
    }

    /// The runner's spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records one captured line, as it was read: stamped with its time and
    /// sequence number, and spooled without parsing (the shipper parses it
    /// when it reads it back), so capturing a line costs a copy.
    pub fn record_line(&self, line: Line<'_>) {
        let was_empty = {
            let mut state = self.lock();
            let (seq, ts) = state.stamp();
            state.spool.append_captured(seq, ts, &line, 0)
        };
        self.added(was_empty);
    }

    /// Records a lifecycle or accounting event of the agent's own. These
    /// are not metered by the shipping rate limit.
    pub fn system(&self, level: Level, message: String, fields: Fields) {
        self.push(
            FLAG_UNMETERED,
            None,
            system_record(level, message, fields, None),
        );
    }

    /// Records an event of one request's (its start and end): a system
    /// record with its request id, found with the request's own lines.
    pub fn request_event(&self, request_id: &str, level: Level, message: String, fields: Fields) {
        let record = system_record(level, message, fields, Some(request_id.to_owned()));
        self.push(FLAG_UNMETERED, None, record);
    }

    pub fn system_warning(&self, message: String) {
        self.system(Level::Warn, message, Fields::new());
    }

    /// Adds a record made from its sequence number and the current time,
    /// both taken under one lock, so stdout and stderr lines read at once
    /// still have times in sequence order.
    fn push(
        &self,
        flags: u8,
        line_bytes: Option<u64>,
        make: impl FnOnce(u64, Timestamp) -> IngestRecord,
    ) {
        let was_empty = push_locked(&mut self.lock(), flags, line_bytes, make);
        self.added(was_empty);
    }

    /// A record was added: the shipper may want it, and the write buffer
    /// wants flushing soon if it was empty before.
    fn added(&self, was_empty: bool) {
        self.appended.fetch_add(1, Ordering::Release);
        self.wake_shipper();
        if was_empty {
            let mut wanted = lock(&self.flush.wanted);
            if !wanted.flush {
                wanted.flush = true;
                self.flush.changed.notify_one();
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No more records will come: the shipper stops once the recorder is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.work.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records added since the recorder opened.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }
}

fn push_locked(
    state: &mut State,
    flags: u8,
    line_bytes: Option<u64>,
    make: impl FnOnce(u64, Timestamp) -> IngestRecord,
) -> bool {
    let (seq, ts) = state.stamp();
    let record = make(seq, spool::timestamp(ts));
    let line_bytes = line_bytes.unwrap_or(record.message.len() as u64);
    state.spool.append(&record, flags, line_bytes)
}

fn system_record(
    level: Level,
    message: String,
    fields: Fields,
    request_id: Option<String>,
) -> impl FnOnce(u64, Timestamp) -> IngestRecord {
    move |seq, now| IngestRecord {
        seq,
        ts: now,
        stream: Stream::System,
        level,
        request_id,
        message,
        fields: FieldsJson::from_map(&fields),
        invalid_utf8: false,
    }
}

/// Opens the runner's spool, `<spool>/<runner>/` ([`runner_id::open_spool`]
/// chooses the runner). Without `--spool`, a default place that is not
/// writable falls back to the temporary directory, with a warning.
fn open_spool(config: &Options, header: &SegmentHeader) -> anyhow::Result<runner_id::Opened> {
    let given = config.runner.as_deref();
    let cap = config.spool_max_bytes;
    if let Some(root) = &config.spool_dir {
        return Ok(runner_id::open_spool(root, given, header, cap)?);
    }
    let root = spool::default_spool_root();
    let error = match runner_id::open_spool(&root, given, header, cap) {
        Ok(opened) => return Ok(opened),
        Err(error) if error.in_use => return Err(error.into()),
        Err(error) => error,
    };
    let fallback = spool::fallback_spool_root();
    let ours =
        fallback.parent().is_none_or(spool::check_root_owner) && spool::check_root_owner(&fallback);
    if fallback != root && ours {
        if let Ok(opened) = runner_id::open_spool(&fallback, given, header, cap) {
            eprintln!(
                "tailwater: {error}\ntailwater: spooling in {} instead",
                opened.spool.dir().display()
            );
            return Ok(opened);
        }
    }
    Err(error.into())
}

/// A JSON object as a record's fields (its home is the model).
pub use tailwater_model::fields_of as fields;
