//! The outbox: every record the agent makes, stamped and in order, kept in
//! the [`spool`](crate::spool) on disk until the server acknowledged it.
//!
//! Producers (the supervisor and capture) call [`Outbox::record_line`],
//! [`Outbox::system`], [`Outbox::request_event`] and
//! [`Outbox::system_warning`]; the time and the per-boot sequence number
//! are taken under one lock, so records are in sequence order and their
//! times too. A captured line goes into the spool as it was read and is
//! parsed when it is read back for shipping (by the parser the shipper
//! hands [`Outbox::next_batch`]): the
//! worker's pipe is drained at the cost of a copy a line. The shipper takes batches with
//! [`Outbox::next_batch`] and hands them back with
//! [`Outbox::acknowledge`] (or [`Outbox::release`] when sending failed).
//!
//! Nothing is dropped silently: what the spool's cap dropped, what could not
//! be written, and what the server refused for good are counted, kept in the
//! spool's ledger, and reported in a system record as soon as shipping works
//! (after a restart too).

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
use crate::runner_id;
use crate::spool::{
    self, read_batch, Backlog, BatchLimits, Receipt, Recovery, SegmentHeader, Spool, Stop, Tally,
    FLAG_DROP_REPORT, FLAG_UNMETERED,
};

/// How soon after a record comes it is written from the spool's buffer to
/// its file (where it survives the agent being killed). Records coming
/// within this time are written together.
const FLUSH_DELAY: Duration = Duration::from_millis(1);
/// Unreadable segments skipped in one call of [`Outbox::next_batch`], at
/// most (each is counted in a drop report).
const MAX_DISCARDS_PER_BATCH: usize = 16;

/// What the outbox is opened with: the labels of this boot's records and
/// where and how they are spooled (`AgentConfig::outbox` makes it).
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
    /// An app's outbox in `spool_dir`, capped at `spool_max_bytes`, with the
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

pub struct Outbox {
    boot: String,
    /// This boot's labels, as its batches carry them.
    labels: SegmentHeader,
    runner_origin: runner_id::Origin,
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the shipper when it waits for records ([`Outbox::wait_for_work`]).
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
    spool: Spool,
}

#[derive(Default)]
struct FlushSignal {
    wanted: Mutex<FlushWanted>,
    changed: Condvar,
}

#[derive(Default)]
struct FlushWanted {
    flush: bool,
    stop: bool,
}

/// The running flusher thread ([`Outbox::start_flusher`]).
pub struct Flusher {
    outbox: Arc<Outbox>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    /// Stops the flusher once it has flushed what it was woken for.
    pub fn stop(self) {
        lock(&self.outbox.flush.wanted).stop = true;
        self.outbox.flush.changed.notify_one();
        let _ = self.thread.join();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A batch read from the spool, ready to send.
pub struct Batch {
    pub body: IngestBatch,
    pub receipt: Receipt,
    /// Why the batch ends where it does.
    pub stop: Stop,
}

impl Outbox {
    /// Opens the runner's spool (`--spool`, or the default place) for a new
    /// boot, without reading what a previous agent left there: that is
    /// [`Outbox::recover_leftovers`]' job, in the background, and it ships
    /// first.
    pub fn open(config: &Options) -> anyhow::Result<Outbox> {
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
        let outbox = Outbox {
            boot,
            labels: header,
            runner_origin: origin,
            dir: spool.dir().to_owned(),
            state: Mutex::new(State { next_seq: 0, spool }),
            work: Notify::new(),
            shipper_waiting: AtomicBool::new(false),
            appended: AtomicU64::new(0),
            flush: FlushSignal::default(),
            closed: AtomicBool::new(false),
        };
        outbox.report_recovery(recovery);
        Ok(outbox)
    }

    pub fn boot(&self) -> &str {
        &self.boot
    }

    /// The runner this agent runs as.
    pub fn runner(&self) -> &str {
        &self.labels.runner
    }

    /// Where the runner id came from.
    pub fn runner_origin(&self) -> runner_id::Origin {
        self.runner_origin
    }

    /// Checks and takes in what a previous agent left in the spool, one
    /// segment at a time without holding the lock (capture goes on), and
    /// says what it found in a system record. Nothing is shipped before it
    /// is done. Blocking: run it off the async threads.
    pub fn recover_leftovers(&self) {
        let mut recovery = spool::Recovery::default();
        loop {
            let Some(leftover) = self.lock().spool.next_leftover() else {
                break;
            };
            let recovered = leftover.recover();
            self.lock().spool.adopt(recovered, &mut recovery);
        }
        self.report_recovery(recovery);
        // The shipper may be waiting for the leftovers.
        self.work.notify_one();
    }

    /// A batch of no records with this boot's labels: the heartbeat that
    /// says the runner is alive while it has nothing to ship.
    pub fn heartbeat(&self) -> IngestBatch {
        let labels = &self.labels;
        IngestBatch {
            app: labels.app.clone(),
            version: labels.version.clone(),
            runner: labels.runner.clone(),
            boot: labels.boot.clone(),
            source: labels.source,
            records: Vec::new(),
        }
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
            let seq = state.next_seq;
            state.next_seq += 1;
            let ts = spool::timestamp_ns(Timestamp::now());
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

    /// Records waiting for the server.
    pub fn backlog(&self) -> Backlog {
        self.lock().spool.backlog()
    }

    /// The oldest records not yet acknowledged, as one batch within
    /// `limits` (one segment's, so one boot's). `None` when there are none.
    /// A batch may be empty when the rate limit's allowance is spent
    /// (`stop` is then [`Stop::Throttled`]). Hand it back with
    /// [`Outbox::acknowledge`] or [`Outbox::release`].
    /// A captured line becomes a record through `parse` (the shipper's
    /// parser: see [`spool::read_batch`]). Blocking (disk reads, parsing):
    /// run it off the async threads.
    pub fn next_batch(
        &self,
        limits: &BatchLimits,
        parse: impl Fn(u64, Timestamp, &Line<'_>) -> IngestRecord,
    ) -> io::Result<Option<Batch>> {
        for _ in 0..MAX_DISCARDS_PER_BATCH {
            let Some(plan) = self.lock().spool.plan_read() else {
                return Ok(None);
            };
            // Read without the lock: producers go on meanwhile.
            let read = match read_batch(&plan, limits, &parse) {
                Ok(read) => read,
                Err(error) => {
                    self.lock().spool.release();
                    return Err(error);
                }
            };
            if let (Stop::Corrupt(at), true) = (read.stop, read.records.is_empty()) {
                let mut state = self.lock();
                state.spool.discard_corrupt(plan.segment(), at);
                self.report_locked(&mut state);
                continue;
            }
            let header = &read.header;
            return Ok(Some(Batch {
                body: IngestBatch {
                    app: header.app.clone(),
                    version: header.version.clone(),
                    runner: header.runner.clone(),
                    boot: header.boot.clone(),
                    source: header.source,
                    records: read.records,
                },
                receipt: read.receipt,
                stop: read.stop,
            }));
        }
        Err(io::Error::other(format!(
            "{MAX_DISCARDS_PER_BATCH} spool segments in a row in {} were unreadable",
            self.dir.display()
        )))
    }

    /// The server has `batch`: forget it. Drops counted meanwhile are
    /// reported now that shipping works.
    pub fn acknowledge(&self, batch: &Batch) {
        let mut state = self.lock();
        state.spool.acknowledge(&batch.receipt);
        self.report_locked(&mut state);
    }

    /// `batch` was not shipped; it will be read again.
    pub fn release(&self) {
        self.lock().spool.release();
    }

    /// The server refused `batch` for good (one record too large for it, or
    /// invalid): count it as dropped and go on.
    pub fn reject(&self, batch: &Batch) {
        let mut state = self.lock();
        state.spool.reject(&batch.receipt, &batch.body.boot);
        self.report_locked(&mut state);
    }

    /// Turns pending drop tallies and spool problems into system records.
    fn report_locked(&self, state: &mut State) {
        let dropped = state.spool.take_dropped();
        let problems = state.spool.take_problems();
        if dropped.is_empty() && problems.is_empty() {
            return;
        }
        let cap = state.spool.cap();
        for problem in problems {
            eprintln!("tailwater: {problem}");
            push_locked(
                state,
                FLAG_UNMETERED,
                None,
                system_record(Level::Warn, problem, Fields::new(), None),
            );
        }
        for tally in dropped {
            let (message, fields) = drop_report(&tally, &self.dir, cap);
            push_locked(
                state,
                FLAG_UNMETERED | FLAG_DROP_REPORT,
                None,
                system_record(Level::Error, message, fields, None),
            );
        }
        // The reports are in the spool before the ledger forgets the tallies.
        state.spool.persist();
        self.wake_shipper();
    }

    fn report_recovery(&self, recovery: Recovery) {
        let dir = self.dir.display();
        if let Some(problem) = &recovery.ledger_problem {
            self.system_warning(format!(
                "{problem}: shipping everything in the spool again (the server stores each record once)"
            ));
        }
        if recovery.truncated_bytes > 0 {
            self.system(
                Level::Warn,
                format!(
                    "cut off {} bytes of a torn or corrupt record at the end of a spool segment in {dir} (the agent before was killed while writing it, or the disk is damaged)",
                    recovery.truncated_bytes
                ),
                fields(json!({ "event": "spool_truncated", "truncated_bytes": recovery.truncated_bytes })),
            );
        }
        for file in &recovery.discarded {
            self.system_warning(format!("removed {file}: not a readable spool segment"));
        }
        if recovery.records > 0 {
            self.system(
                Level::Info,
                format!(
                    "found {} lines ({} bytes) a previous agent did not ship, in {dir}: shipping them first",
                    recovery.records, recovery.line_bytes
                ),
                fields(json!({
                    "event": "spool_recovered",
                    "lines": recovery.records,
                    "bytes": recovery.line_bytes,
                    "boots": recovery.boots,
                })),
            );
        }
        let mut state = self.lock();
        self.report_locked(&mut state);
    }

    /// Lines and bytes not yet acknowledged.
    pub fn pending(&self) -> (u64, u64) {
        let backlog = self.backlog();
        (backlog.records, backlog.line_bytes)
    }

    /// No more records will come: the shipper stops once the outbox is empty.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.work.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Records added since the outbox opened.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Acquire)
    }

    fn wake_shipper(&self) {
        if self.shipper_waiting.swap(false, Ordering::AcqRel) {
            self.work.notify_one();
        }
    }

    /// Waits until a record is added (or the outbox is closed), if none is
    /// waiting to be shipped now; at most `timeout`.
    pub async fn wait_for_work(&self, timeout: Duration) {
        self.shipper_waiting.store(true, Ordering::Release);
        // Looked at after raising the flag: a record added before it is
        // seen here, one added after it wakes us. While leftovers are being
        // recovered nothing is readable: their end wakes us.
        let readable = {
            let state = self.lock();
            state.spool.backlog().records > 0 && state.spool.leftovers_recovered()
        };
        if readable || self.is_closed() {
            self.shipper_waiting.store(false, Ordering::Release);
            return;
        }
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
        self.shipper_waiting.store(false, Ordering::Release);
    }

    /// Writes buffered records to the spool's file, then does the fsyncs
    /// `--spool-fsync` owes, without the lock (capture waits on it).
    /// Blocking.
    pub fn flush(&self) {
        let unsynced = {
            let mut state = self.lock();
            state.spool.flush();
            state.spool.take_unsynced()
        };
        if !unsynced.is_empty() {
            if let Err(error) = unsynced.sync(&self.dir) {
                self.lock().spool.sync_failed(error);
            }
        }
    }

    /// Starts the flusher: a thread of its own (writes and fsyncs are
    /// blocking work) that writes records to the spool's file about
    /// [`FLUSH_DELAY`] after they come, until [`Flusher::stop`].
    pub fn start_flusher(self: &Arc<Self>) -> io::Result<Flusher> {
        let outbox = self.clone();
        let thread = std::thread::Builder::new()
            .name("tailwater-spool-flush".into())
            .spawn(move || loop {
                let stop = {
                    let mut wanted = lock(&outbox.flush.wanted);
                    while !wanted.flush && !wanted.stop {
                        wanted = outbox
                            .flush
                            .changed
                            .wait(wanted)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    wanted.flush = false;
                    wanted.stop
                };
                if stop {
                    return;
                }
                std::thread::sleep(FLUSH_DELAY);
                outbox.flush();
            })?;
        Ok(Flusher {
            outbox: self.clone(),
            thread,
        })
    }

    /// The agent stops: the spool is written and fsynced, and removed when
    /// nothing is left in it. Returns what is left for the next agent.
    pub fn shutdown(&self) -> Backlog {
        let mut state = self.lock();
        for problem in state.spool.take_problems() {
            eprintln!("tailwater: {problem}");
        }
        state.spool.shutdown()
    }
}

fn push_locked(
    state: &mut State,
    flags: u8,
    line_bytes: Option<u64>,
    make: impl FnOnce(u64, Timestamp) -> IngestRecord,
) -> bool {
    let record = make(state.next_seq, Timestamp::now());
    state.next_seq += 1;
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

fn drop_report(tally: &Tally, dir: &Path, cap: u64) -> (String, Fields) {
    let first = spool::timestamp(tally.first_ts);
    let last = spool::timestamp(tally.last_ts);
    let why = match tally.reason.as_str() {
        spool::REASON_SPOOL_FULL => format!(
            "the spool at {} reached its cap (--spool-max-bytes {cap}) while the server was away or shipping was throttled",
            dir.display()
        ),
        spool::REASON_WRITE_FAILED => format!(
            "they could not be written to the spool at {} (see the warning before)",
            dir.display()
        ),
        spool::REASON_CORRUPT => "the spool file holding them was corrupt".to_owned(),
        spool::REASON_REJECTED => {
            "the server refused them for good (the agent's stderr says why)".to_owned()
        }
        other => other.to_owned(),
    };
    let message = format!(
        "dropped {} lines ({} bytes) written between {first} and {last}: {why}",
        tally.lines, tally.bytes
    );
    (message, tally.to_fields())
}

/// A JSON object literal as [`Fields`].
pub fn fields(value: serde_json::Value) -> Fields {
    match value {
        serde_json::Value::Object(map) => map,
        _ => Fields::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::line::unparsed;
    use crate::spool::runner_dir_name;

    fn config(dir: &Path, cap: u64) -> Options {
        Options::new("app", dir, cap)
    }

    fn line(text: &str) -> Line<'_> {
        Line::new(Stream::Stdout, text.as_bytes())
    }

    fn limits(max_records: usize) -> BatchLimits {
        BatchLimits {
            max_records,
            max_bytes: 1 << 20,
            lines: None,
            line_bytes: None,
        }
    }

    #[test]
    fn batches_respect_limits_and_acknowledged_records_leave() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&config(dir.path(), 1 << 20)).unwrap();
        for n in 0..10 {
            outbox.record_line(line(&format!("line {n}")));
        }
        let first = outbox.next_batch(&limits(4), unparsed).unwrap().unwrap();
        assert_eq!((first.body.records.len(), first.stop), (4, Stop::Full));
        outbox.release();
        // A byte limit below one record still ships that one record.
        let mut one = limits(100);
        one.max_bytes = 1;
        assert_eq!(
            outbox
                .next_batch(&one, unparsed)
                .unwrap()
                .unwrap()
                .body
                .records
                .len(),
            1
        );
        outbox.release();
        outbox.acknowledge(&first);
        let rest = outbox.next_batch(&limits(100), unparsed).unwrap().unwrap();
        assert_eq!(rest.body.records.first().unwrap().seq, 4);
        outbox.acknowledge(&rest);
        assert!(outbox.next_batch(&limits(100), unparsed).unwrap().is_none());
        assert_eq!(outbox.pending(), (0, 0));
        assert_eq!(outbox.shutdown().records, 0);
        assert!(!dir.path().join(runner_dir_name(&rest.body.runner)).exists());
    }

    #[test]
    fn overflow_drops_oldest_and_reports_exact_counts_when_shipping_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&config(dir.path(), spool::MIN_SPOOL_MAX_BYTES)).unwrap();
        for n in 0..1000 {
            outbox.record_line(line(&format!("line {n:04}")));
        }
        let mut shipped = Vec::new();
        let mut reports = Vec::new();
        while let Some(batch) = outbox.next_batch(&limits(100), unparsed).unwrap() {
            for record in &batch.body.records {
                if record.stream == Stream::System {
                    reports.push(record.clone());
                } else {
                    shipped.push(record.seq);
                }
            }
            outbox.acknowledge(&batch);
        }
        let [report] = &reports[..] else {
            panic!("one drop record: {reports:?}")
        };
        let report_fields = report.fields.to_map();
        let dropped = report_fields["dropped_lines"].as_u64().unwrap();
        assert_eq!(report.seq, 1000);
        assert_eq!(report.level, Level::Error);
        assert_eq!(report_fields["reason"], "spool_full");
        assert_eq!(dropped + shipped.len() as u64, 1000);
        assert_eq!(report_fields["dropped_bytes"], dropped * 9);
        assert_eq!(shipped, (dropped..1000).collect::<Vec<_>>());
        assert_eq!(
            report_fields["seqs"],
            json!([{ "boot": outbox.boot(), "first": 0, "last": dropped - 1 }])
        );
        assert!(
            report
                .message
                .starts_with(&format!("dropped {dropped} lines ({} bytes)", dropped * 9)),
            "{}",
            report.message
        );
    }

    #[test]
    fn a_drop_report_dropped_in_turn_is_counted_again() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&config(dir.path(), spool::MIN_SPOOL_MAX_BYTES)).unwrap();
        for n in 0..500 {
            outbox.record_line(line(&format!("line {n:04}")));
        }
        // Shipping works for one batch: the drops so far are reported (seq
        // 500), then a flood pushes the report out before it is shipped.
        let batch = outbox.next_batch(&limits(10), unparsed).unwrap().unwrap();
        outbox.acknowledge(&batch);
        let mut shipped: BTreeSet<u64> = batch.body.records.iter().map(|r| r.seq).collect();
        for n in 500..1500 {
            outbox.record_line(line(&format!("line {n:04}")));
        }
        let mut reports = Vec::new();
        while let Some(batch) = outbox.next_batch(&limits(100), unparsed).unwrap() {
            for record in &batch.body.records {
                if record.fields.to_map().get("event") == Some(&json!("dropped")) {
                    reports.push(record.clone());
                } else {
                    shipped.insert(record.seq);
                }
            }
            outbox.acknowledge(&batch);
        }
        let [report] = &reports[..] else {
            panic!("one report reached the server: {reports:?}")
        };
        assert_eq!(report.seq, 1501);
        let tally = Tally::from_fields(&report.fields.to_map()).unwrap();
        let mut dropped = BTreeSet::new();
        for range in &tally.seqs {
            assert_eq!(range.boot, outbox.boot());
            dropped.extend(range.first..=range.last);
        }
        assert!(dropped.contains(&500), "the first report was dropped");
        assert!(dropped.is_disjoint(&shipped));
        assert_eq!(
            dropped.union(&shipped).copied().collect::<Vec<_>>(),
            (0..=1500).collect::<Vec<_>>()
        );
        assert_eq!(tally.lines, dropped.len() as u64);
        // Every dropped line's 9 bytes, and the first report's message.
        let first_report_bytes = tally.bytes - (dropped.len() as u64 - 1) * 9;
        assert!(
            (100..400).contains(&first_report_bytes),
            "{first_report_bytes}"
        );
    }

    #[test]
    fn a_restart_reports_what_it_found_and_ships_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), 1 << 20);
        let first_boot = {
            let outbox = Outbox::open(&config).unwrap();
            for n in 0..3 {
                outbox.record_line(line(&format!("line {n}")));
            }
            outbox.flush();
            outbox.boot().to_owned()
            // Killed: no shutdown.
        };
        config.app = "renamed".into();
        let outbox = Outbox::open(&config).unwrap();
        outbox.recover_leftovers();
        let old = outbox.next_batch(&limits(100), unparsed).unwrap().unwrap();
        assert_eq!(
            (old.body.boot.as_str(), old.body.app.as_str()),
            (first_boot.as_str(), "app")
        );
        assert_eq!(old.body.records.len(), 3);
        outbox.acknowledge(&old);
        let new = outbox.next_batch(&limits(100), unparsed).unwrap().unwrap();
        assert_eq!(
            (new.body.boot.as_str(), new.body.app.as_str()),
            (outbox.boot(), "renamed")
        );
        let [found] = &new.body.records[..] else {
            panic!("one record")
        };
        let found_fields = found.fields.to_map();
        assert_eq!(found_fields["event"], "spool_recovered");
        assert_eq!(found_fields["lines"], 3);
        assert_eq!(found.seq, 0);
    }
}
