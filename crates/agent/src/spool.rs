//! The spool: every record the agent makes, on local disk, until the server
//! acknowledged it.
//!
//! One directory per runner (`<spool>/<runner>/`), owned by one agent at a
//! time (an advisory lock on `lock`):
//!
//! ```text
//! lock                  flock(2)ed by the agent using the directory; holds its pid
//! ledger                what the server acknowledged, and drops not yet reported
//! 000000000007.seg      segments, append-only, numbered in order
//! ```
//!
//! A segment is `TWSPOOL1`, a header frame (the JSON [`SegmentHeader`]: app,
//! version, runner, boot, source) and record frames. A frame is
//! `[len: u32 LE][crc32: u32 LE][body: len bytes]`, the checksum over the
//! body. A record's body is a fixed prefix (`flags: u8`, `seq: u64`, `ts:
//! i64` nanoseconds, `line_bytes: u32`), then `stream: u8`, `level: u8`,
//! `bits: u8` (1: invalid UTF-8, 2: has a request id), and three
//! length-prefixed (`u32`) byte strings: the message, the request id, the
//! fields as a JSON object (empty when there are none); integers are little
//! endian. Copying a line in costs no JSON escaping: the shipper makes JSON.
//! Records keep their boot and sequence number, so one re-shipped after a
//! restart is stored once by the server.
//!
//! Writes go to the page cache through a small buffer (the agent flushes it
//! when the worker pauses, within about a millisecond, and at every 64 KiB):
//! by default ([`Durability::Process`]) the spool survives the agent being
//! killed (`kill -9`) but not the machine losing power. A finished segment
//! is fsynced in the background, the open one, the ledger and the directory
//! at shutdown. [`Durability::Machine`] (`--spool-fsync`) fsyncs every
//! flush, each new segment's directory entry, and the ledger and its
//! directory after each rename.
//!
//! The ledger is `TWLEDGR1` and one frame holding `{acked_segment,
//! acked_offset, dropped}`: every record before that position is
//! acknowledged. It is rewritten (write, rename) after each acknowledged
//! batch; a segment is deleted, whole, once all of it is acknowledged.
//!
//! Opening the spool only lists what a previous agent left, so the worker
//! starts at once; the leftovers are recovered in the background
//! ([`Spool::next_leftover`], [`Leftover::recover`] without the lock,
//! [`Spool::adopt`]): segments are checked frame by frame, a torn or
//! corrupt tail is cut off, and what is not acknowledged is shipped first
//! (nothing is read for shipping until every leftover is adopted), under
//! its original labels, boot and sequence numbers. Until a leftover is
//! adopted the ledger keeps naming it, so a crash meanwhile loses nothing;
//! its bytes count against the cap once it is adopted. A missing or unreadable ledger means nothing counts as
//! acknowledged: the server deduplicates what it already has.
//!
//! Past the size cap, the oldest segments go first (all but the open one and
//! the one being shipped), and every dropped record is counted in a
//! [`Tally`] kept in the ledger until a system record reported it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};

use serde::{Deserialize, Serialize};
use tailwater_model::wire::IngestRecord;
use tailwater_model::{FieldsJson, Level, Source, Stream};

/// What the spool survives: a choice between speed and a machine crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Records reach the page cache about a millisecond after the worker
    /// writes them: they survive the agent being killed, not the machine
    /// losing power (what was written since the last fsync may be lost; a
    /// finished segment is fsynced in the background, the rest at
    /// shutdown).
    #[default]
    Process,
    /// Every write is fsynced before the next (segment data, a new segment's
    /// directory entry, the ledger and its directory): the spool survives a
    /// machine crash, at the cost of an fsync per flush, which capture waits
    /// for (`--spool-fsync`).
    Machine,
}

/// Disk the spool may use unless configured otherwise; past it, the oldest
/// records are dropped and counted.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;
/// The smallest spool cap accepted.
pub const MIN_SPOOL_MAX_BYTES: u64 = 16 * 1024;
/// A segment is finished at this size, or at 1/16 of the cap when smaller,
/// so that dropping the oldest segment frees a small part of the cap.
pub const MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
const SEGMENTS_PER_CAP: u64 = 16;
/// Records are written to the file when this much is buffered (and when the
/// worker pauses).
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
const READ_CHUNK_BYTES: usize = 256 * 1024;
const SEGMENT_MAGIC: &[u8; 8] = b"TWSPOOL1";
const LEDGER_MAGIC: &[u8; 8] = b"TWLEDGR1";
const FRAME_HEAD_BYTES: usize = 8;
const RECORD_PREFIX_BYTES: usize = 21;
/// A longer frame is not one the agent wrote: its length is garbage.
const MAX_FRAME_BYTES: u64 = 1 << 30;
const LEDGER_FILE: &str = "ledger";
const LEDGER_TEMPORARY: &str = "ledger.tmp";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";

/// Record flag: not metered by the shipping rate limit (the agent's own
/// `system` records).
pub const FLAG_UNMETERED: u8 = 1;
/// Record flag: a drop report, its [`Tally`] in its fields (see
/// [`Tally::to_fields`]). When the cap drops it before it was shipped, its
/// tally is counted again, in the next report.
pub const FLAG_DROP_REPORT: u8 = 2;
/// The record is a line as the capture read it ([`Captured`]): it is parsed
/// when it is read for shipping, so the capture path only copies bytes.
pub const FLAG_CAPTURED: u8 = 4;

/// Why records were dropped.
pub const REASON_SPOOL_FULL: &str = "spool_full";
pub const REASON_WRITE_FAILED: &str = "spool_write_failed";
pub const REASON_CORRUPT: &str = "spool_corrupt";
pub const REASON_REJECTED: &str = "rejected_by_server";

/// Who wrote a segment's records: the labels and boot of their batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
    pub source: Source,
}

/// Records counted for a report: how many, their bytes, their time span and
/// their sequence numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub reason: String,
    pub lines: u64,
    /// Bytes of the lines, as the worker wrote them (messages for the
    /// agent's own records).
    pub bytes: u64,
    /// Earliest and latest record time, nanoseconds.
    pub first_ts: i64,
    pub last_ts: i64,
    pub seqs: Vec<SeqRange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    pub boot: String,
    pub first: u64,
    pub last: u64,
}

impl Tally {
    pub fn new(reason: &str) -> Tally {
        Tally {
            reason: reason.to_owned(),
            ..Tally::default()
        }
    }

    /// Adds the counts of `other`, another tally of the same reason.
    pub fn merge(&mut self, other: Tally) {
        if other.lines == 0 {
            return;
        }
        if self.lines == 0 {
            (self.first_ts, self.last_ts) = (other.first_ts, other.last_ts);
        } else {
            self.first_ts = self.first_ts.min(other.first_ts);
            self.last_ts = self.last_ts.max(other.last_ts);
        }
        self.lines += other.lines;
        self.bytes += other.bytes;
        // Ranges by boot (in order of first appearance), then by sequence
        // number, joined where they touch.
        let mut ranges = other.seqs;
        ranges.append(&mut self.seqs);
        let mut boots: Vec<String> = Vec::new();
        for range in &ranges {
            if !boots.contains(&range.boot) {
                boots.push(range.boot.clone());
            }
        }
        ranges.sort_by_key(|r| (boots.iter().position(|b| *b == r.boot), r.first));
        for range in ranges {
            match self.seqs.last_mut() {
                Some(last) if last.boot == range.boot && last.last + 1 >= range.first => {
                    last.last = last.last.max(range.last)
                }
                _ => self.seqs.push(range),
            }
        }
    }

    /// The fields of a drop report: `reason`, `dropped_lines`,
    /// `dropped_bytes`, `first`, `last` (RFC 3339) and `seqs`.
    pub fn to_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let json = serde_json::json!({
            "event": "dropped",
            "reason": self.reason,
            "dropped_lines": self.lines,
            "dropped_bytes": self.bytes,
            "first": timestamp(self.first_ts).to_string(),
            "last": timestamp(self.last_ts).to_string(),
            "seqs": self.seqs,
        });
        match json {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    /// The tally a drop report's fields hold.
    pub fn from_fields(fields: &serde_json::Map<String, serde_json::Value>) -> Option<Tally> {
        let time = |key: &str| {
            fields
                .get(key)?
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()
                .map(timestamp_ns)
        };
        Some(Tally {
            reason: fields.get("reason")?.as_str()?.to_owned(),
            lines: fields.get("dropped_lines")?.as_u64()?,
            bytes: fields.get("dropped_bytes")?.as_u64()?,
            first_ts: time("first")?,
            last_ts: time("last")?,
            seqs: serde_json::from_value(fields.get("seqs")?.clone()).ok()?,
        })
    }

    /// Adds `lines` records of `boot` with sequence numbers `first..=last`.
    pub fn add(&mut self, boot: &str, seqs: (u64, u64), lines: u64, bytes: u64, ts: (i64, i64)) {
        if lines == 0 {
            return;
        }
        if self.lines == 0 {
            (self.first_ts, self.last_ts) = ts;
        } else {
            self.first_ts = self.first_ts.min(ts.0);
            self.last_ts = self.last_ts.max(ts.1);
        }
        self.lines += lines;
        self.bytes += bytes;
        match self.seqs.last_mut() {
            Some(range) if range.boot == boot && range.last + 1 == seqs.0 => range.last = seqs.1,
            _ => self.seqs.push(SeqRange {
                boot: boot.to_owned(),
                first: seqs.0,
                last: seqs.1,
            }),
        }
    }
}

/// A line as the capture read it, not parsed yet.
#[derive(Clone, Copy, Debug)]
pub struct Captured<'a> {
    pub stream: Stream,
    /// The line without its ending; any bytes, valid UTF-8 or not.
    pub bytes: &'a [u8],
    /// The line goes on in the next record (it was longer than the maximum).
    pub continued: bool,
    /// The one request in flight when it was written, if exactly one was.
    pub in_request: Option<&'a str>,
    /// A kept state of a line rewritten with `\r`: how many states it
    /// stands for (itself and those not kept before it), and whether it is
    /// the line's final state.
    pub progress: Option<(u32, bool)>,
}

/// The spool could not be opened.
#[derive(Debug)]
pub struct OpenError {
    /// Another agent holds the directory (rather than the directory being
    /// unusable).
    pub in_use: bool,
    pub message: String,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OpenError {}

/// What recovering a previous agent's leftovers found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records not acknowledged, to be shipped first.
    pub records: u64,
    pub line_bytes: u64,
    pub boots: Vec<String>,
    /// Bytes of torn or corrupt segment tails cut off.
    pub truncated_bytes: u64,
    /// Files that were not readable segments, removed.
    pub discarded: Vec<String>,
    /// The ledger was unreadable: everything is shipped again.
    pub ledger_problem: Option<String>,
}

/// Records waiting for the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub records: u64,
    pub line_bytes: u64,
    /// Bytes on disk, about what they weigh on the wire.
    pub frame_bytes: u64,
}

/// Where the shipper reads its next batch: the oldest segment's part not
/// yet acknowledged and already written. The segment stays pinned (not
/// dropped for space) until the batch is acknowledged or released.
pub struct ReadPlan {
    segment: u64,
    file: Arc<File>,
    header: Arc<SegmentHeader>,
    start: u64,
    end: u64,
}

/// Limits of one batch; `lines` and `line_bytes` are the rate limit's
/// allowance (`None`: no limit) for metered records.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    pub max_records: usize,
    pub max_bytes: u64,
    pub lines: Option<u64>,
    pub line_bytes: Option<u64>,
}

/// Why a batch ends where it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// All that was written of the segment.
    End,
    /// The batch is full.
    Full,
    /// The rate limit's allowance is spent.
    Throttled,
    /// The frame at this offset is unreadable.
    Corrupt(u64),
}

/// Records read for one batch, and what to acknowledge once shipped.
pub struct ReadBatch {
    pub header: Arc<SegmentHeader>,
    pub records: Vec<IngestRecord>,
    pub receipt: Receipt,
    pub stop: Stop,
}

/// A batch's place in the spool and its counts.
#[derive(Clone, Debug, Default)]
pub struct Receipt {
    pub segment: u64,
    pub start: u64,
    pub end: u64,
    pub records: u64,
    pub line_bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    /// Records and bytes the rate limit counts.
    pub metered_lines: u64,
    pub metered_bytes: u64,
}

/// Unacknowledged records of a segment (or of the write buffer).
#[derive(Clone, Copy, Debug, Default)]
struct Stats {
    records: u64,
    line_bytes: u64,
    frame_bytes: u64,
    first_seq: u64,
    last_seq: u64,
    /// Time of the first record, when known (it is forgotten when a batch
    /// is acknowledged, and read from disk when needed).
    first_ts: Option<i64>,
    last_ts: i64,
}

impl Stats {
    fn add(&mut self, prefix: &Prefix, frame_bytes: u64) {
        if self.records == 0 {
            self.first_seq = prefix.seq;
            self.first_ts = Some(prefix.ts);
        }
        self.records += 1;
        self.line_bytes += prefix.line_bytes as u64;
        self.frame_bytes += frame_bytes;
        self.last_seq = prefix.seq;
        self.last_ts = prefix.ts;
    }
}

struct Segment {
    id: u64,
    file: Arc<File>,
    header: Arc<SegmentHeader>,
    /// First byte not acknowledged.
    start: u64,
    /// Bytes in the file (the write buffer not included).
    len: u64,
    /// Still appended to (the newest segment of this boot).
    open: bool,
    unacked: Stats,
    /// Holds drop reports, perhaps not yet shipped.
    has_reports: bool,
}

/// The ledger's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Ledger {
    /// Segments numbered below are acknowledged, and this one up to
    /// `acked_offset`.
    acked_segment: u64,
    acked_offset: u64,
    /// Drops not yet reported in a system record.
    #[serde(default)]
    dropped: Vec<Tally>,
}

pub struct Spool {
    dir: PathBuf,
    cap: u64,
    segment_target: u64,
    header: Arc<SegmentHeader>,
    segments: VecDeque<Segment>,
    buffer: Vec<u8>,
    /// The buffered records (already counted in the open segment).
    buffered: Stats,
    next_id: u64,
    /// All segments' bytes, buffer included.
    bytes: u64,
    backlog: Backlog,
    dropped: Vec<Tally>,
    pinned: Option<u64>,
    /// Write errors not yet reported.
    problems: Vec<String>,
    syncer: Option<mpsc::Sender<Arc<File>>>,
    durability: Durability,
    /// A previous agent's segments not recovered yet, oldest first, each
    /// with its acknowledged offset (0: none of it).
    leftovers: VecDeque<(u64, u64)>,
    _lock: File,
}

/// A previous agent's segment, to check without the spool's lock.
pub struct Leftover {
    path: PathBuf,
    id: u64,
    acked: u64,
}

/// A leftover segment, checked: hand it to [`Spool::adopt`].
pub struct Recovered {
    id: u64,
    path: PathBuf,
    result: io::Result<Option<(Segment, u64)>>,
}

impl Leftover {
    /// Checks the segment frame by frame (the slow part, done off the
    /// lock), cutting a torn or corrupt tail off.
    pub fn recover(self) -> Recovered {
        let result = recover_segment(&self.path, self.id, self.acked);
        Recovered {
            id: self.id,
            path: self.path,
            result,
        }
    }
}

impl Spool {
    /// Opens (creating it if needed) the spool directory `dir` for a new
    /// boot described by `header`, recovering what a previous agent left.
    pub fn open(
        dir: &Path,
        header: SegmentHeader,
        cap: u64,
    ) -> Result<(Spool, Recovery), OpenError> {
        let unusable = |what: &str, error: io::Error| unusable(dir, what, error);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unusable("cannot create it", e))?;
        let lock = lock_directory(dir).map_err(|error| match error {
            LockError::Io(e) => unusable("cannot create its lock file", e),
            LockError::Held(pid) => OpenError {
                in_use: true,
                message: format!(
                    "the spool directory {} is in use by another `tailwater run`{}: give each worker its own --runner (or its own --spool)",
                    dir.display(),
                    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
                ),
            },
        })?;
        let mut recovery = Recovery::default();
        let ledger = match read_ledger(dir) {
            Ok(ledger) => ledger.unwrap_or_default(),
            Err(problem) => {
                recovery.ledger_problem = Some(problem);
                Ledger::default()
            }
        };
        let _ = fs::remove_file(dir.join(LEDGER_TEMPORARY));

        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| unusable("cannot list it", e))? {
            let entry = entry.map_err(|e| unusable("cannot list it", e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();

        let mut leftovers = VecDeque::new();
        for &id in &ids {
            if id < ledger.acked_segment {
                let _ = fs::remove_file(segment_path(dir, id));
                continue;
            }
            let acked = if id == ledger.acked_segment {
                ledger.acked_offset
            } else {
                0
            };
            leftovers.push_back((id, acked));
        }

        let next_id = ids
            .last()
            .map_or(0, |last| last + 1)
            .max(ledger.acked_segment + 1);
        let (sync_tx, sync_rx) = mpsc::channel::<Arc<File>>();
        let syncer = std::thread::Builder::new()
            .name("tailwater-spool-sync".into())
            .spawn(move || {
                for file in sync_rx {
                    let _ = file.sync_data();
                }
            })
            .ok()
            .map(|_| sync_tx);
        let cap = cap.max(MIN_SPOOL_MAX_BYTES);
        let mut spool = Spool {
            dir: dir.to_owned(),
            cap,
            segment_target: (cap / SEGMENTS_PER_CAP).clamp(1, MAX_SEGMENT_BYTES),
            header: Arc::new(header),
            segments: VecDeque::new(),
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES * 2),
            buffered: Stats::default(),
            next_id,
            bytes: 0,
            backlog: Backlog::default(),
            dropped: ledger.dropped.clone(),
            pinned: None,
            problems: Vec::new(),
            syncer,
            durability: Durability::Process,
            leftovers,
            _lock: lock,
        };
        spool.write_ledger();
        Ok((spool, recovery))
    }

    /// The oldest leftover segment not recovered yet; check it with
    /// [`Leftover::recover`] without the lock, then [`Spool::adopt`] it.
    pub fn next_leftover(&self) -> Option<Leftover> {
        let &(id, acked) = self.leftovers.front()?;
        Some(Leftover {
            path: segment_path(&self.dir, id),
            id,
            acked,
        })
    }

    /// Takes a recovered leftover in, before this boot's records, counting
    /// what it holds in `recovery`; a smaller cap than the previous agent's
    /// applies at once.
    pub fn adopt(&mut self, recovered: Recovered, recovery: &mut Recovery) {
        debug_assert_eq!(self.leftovers.front().map(|l| l.0), Some(recovered.id));
        self.leftovers.pop_front();
        let path = recovered.path;
        match recovered.result {
            Ok(Some((segment, truncated))) => {
                recovery.truncated_bytes += truncated;
                if segment.unacked.records == 0 {
                    let _ = fs::remove_file(&path);
                } else {
                    recovery.records += segment.unacked.records;
                    recovery.line_bytes += segment.unacked.line_bytes;
                    if !recovery.boots.contains(&segment.header.boot) {
                        recovery.boots.push(segment.header.boot.clone());
                    }
                    self.bytes += segment.len;
                    self.backlog.records += segment.unacked.records;
                    self.backlog.line_bytes += segment.unacked.line_bytes;
                    self.backlog.frame_bytes += segment.unacked.frame_bytes;
                    // This boot's segments are numbered after every leftover.
                    let at = self
                        .segments
                        .iter()
                        .position(|s| s.id > segment.id)
                        .unwrap_or(self.segments.len());
                    self.segments.insert(at, segment);
                }
            }
            Ok(None) => {
                recovery.discarded.push(path.display().to_string());
                let _ = fs::remove_file(&path);
            }
            Err(error) => {
                // Left on disk and out of the ledger's way: a later agent
                // (once the problem is fixed) may ship it.
                self.problem(format!(
                    "cannot read the leftover spool segment {}: {error}; it is kept, not shipped",
                    path.display()
                ));
            }
        }
        self.enforce_cap();
        self.write_ledger();
    }

    /// Every leftover segment is adopted: shipping may begin.
    pub fn leftovers_recovered(&self) -> bool {
        self.leftovers.is_empty()
    }

    /// Makes every later write as durable as `durability` says.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
        if durability == Durability::Machine {
            self.flush();
            let synced: io::Result<()> = self.segments.iter().try_for_each(|s| s.file.sync_data());
            self.problem_if(synced, "cannot fsync a spool segment");
            self.write_ledger();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cap(&self) -> u64 {
        self.cap
    }

    pub fn backlog(&self) -> Backlog {
        self.backlog
    }

    /// Bytes the spool's files take, the write buffer included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Appends a record of this boot. Returns whether the write buffer was
    /// empty before (someone should flush it soon).
    pub fn append(&mut self, record: &IngestRecord, flags: u8, line_bytes: u64) -> bool {
        debug_assert_eq!(flags & FLAG_CAPTURED, 0);
        let prefix = Prefix {
            flags,
            seq: record.seq,
            ts: timestamp_ns(record.ts),
            line_bytes: line_bytes.min(u32::MAX as u64) as u32,
        };
        self.append_frame(prefix, |buffer| encode_record(record, buffer))
    }

    /// Appends a captured line of this boot, stamped with `seq` and `ts`
    /// (nanoseconds); see [`Spool::append`].
    pub fn append_captured(&mut self, seq: u64, ts: i64, line: &Captured<'_>, flags: u8) -> bool {
        let prefix = Prefix {
            flags: flags | FLAG_CAPTURED,
            seq,
            ts,
            line_bytes: line.bytes.len().min(u32::MAX as usize) as u32,
        };
        self.append_frame(prefix, |buffer| encode_captured(line, buffer))
    }

    fn append_frame(&mut self, prefix: Prefix, encode: impl FnOnce(&mut Vec<u8>)) -> bool {
        let was_empty = self.buffer.is_empty();
        let flags = prefix.flags;
        if !self.segments.back().is_some_and(|s| s.open) {
            if let Err(error) = self.start_segment() {
                self.problem(format!(
                    "cannot create a spool segment in {}: {error}",
                    self.dir.display()
                ));
                let mut stats = Stats::default();
                stats.add(&prefix, 0);
                self.tally(REASON_WRITE_FAILED, &self.header.boot.clone(), &stats);
                self.write_ledger();
                return false;
            }
        }
        let at = self.buffer.len();
        self.buffer.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
        prefix.encode(&mut self.buffer);
        encode(&mut self.buffer);
        seal_frame(&mut self.buffer, at);
        let frame_bytes = (self.buffer.len() - at) as u64;

        let segment = self.segments.back_mut().expect("an open segment");
        segment.unacked.add(&prefix, frame_bytes);
        segment.has_reports |= flags & FLAG_DROP_REPORT != 0;
        self.buffered.add(&prefix, frame_bytes);
        self.bytes += frame_bytes;
        self.backlog.records += 1;
        self.backlog.line_bytes += prefix.line_bytes as u64;
        self.backlog.frame_bytes += frame_bytes;

        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush();
        }
        let segment = self.segments.back().expect("an open segment");
        if segment.open && segment.len + self.buffer.len() as u64 >= self.segment_target {
            self.roll();
        }
        self.enforce_cap();
        was_empty
    }

    /// Writes the buffered records to the open segment's file.
    pub fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let durability = self.durability;
        let segment = self
            .segments
            .back_mut()
            .expect("buffered records have an open segment");
        let written = (&*segment.file)
            .write_all(&self.buffer)
            .and_then(|()| match durability {
                Durability::Machine => segment.file.sync_data(),
                Durability::Process => Ok(()),
            });
        match written {
            Ok(()) => {
                segment.len += self.buffer.len() as u64;
                self.buffer.clear();
                self.buffered = Stats::default();
            }
            Err(error) => {
                // Cut a partial write off, count the buffered records as
                // dropped, and start a new segment for the next ones.
                let _ = segment.file.set_len(segment.len);
                let lost = self.buffered;
                segment.unacked.records -= lost.records;
                segment.unacked.line_bytes -= lost.line_bytes;
                segment.unacked.frame_bytes -= lost.frame_bytes;
                if segment.unacked.records > 0 {
                    segment.unacked.last_seq = lost.first_seq.saturating_sub(1);
                }
                segment.open = false;
                let path = segment_path(&self.dir, segment.id);
                self.bytes -= self.buffer.len() as u64;
                self.backlog.records -= lost.records;
                self.backlog.line_bytes -= lost.line_bytes;
                self.backlog.frame_bytes -= lost.frame_bytes;
                for tally in drop_reports_in(&self.buffer) {
                    self.merge_dropped(tally);
                }
                self.buffer.clear();
                self.buffered = Stats::default();
                self.problem(format!("cannot write to {}: {error}", path.display()));
                self.tally(REASON_WRITE_FAILED, &self.header.boot.clone(), &lost);
                self.remove_finished_head();
                self.write_ledger();
            }
        }
    }

    /// Where the next batch is, with its segment pinned; `None` when
    /// nothing is waiting (the write buffer is flushed first).
    pub fn plan_read(&mut self) -> Option<ReadPlan> {
        self.flush();
        if !self.leftovers.is_empty() {
            // The leftovers ship first: nothing is read before they are in.
            return None;
        }
        self.remove_finished_head();
        let head = self.segments.front()?;
        if head.start >= head.len {
            return None;
        }
        self.pinned = Some(head.id);
        Some(ReadPlan {
            segment: head.id,
            file: head.file.clone(),
            header: head.header.clone(),
            start: head.start,
            end: head.len,
        })
    }

    /// A batch was not shipped: its segment may be dropped for space again.
    pub fn release(&mut self) {
        self.pinned = None;
    }

    /// The server has the batch of `receipt`: forget it, delete its segment
    /// once all of it is acknowledged, and record that in the ledger.
    pub fn acknowledge(&mut self, receipt: &Receipt) {
        self.pinned = None;
        let Some(segment) = self.segments.iter_mut().find(|s| s.id == receipt.segment) else {
            return;
        };
        if segment.start != receipt.start {
            // Not this batch's place any more; nothing to forget.
            return;
        }
        segment.start = receipt.end;
        segment.unacked.records -= receipt.records;
        segment.unacked.line_bytes -= receipt.line_bytes;
        segment.unacked.frame_bytes -= receipt.end - receipt.start;
        // Saturating: a leftover segment's checksummed frame may still
        // carry any sequence number (the server refuses the highest).
        segment.unacked.first_seq = receipt.last_seq.saturating_add(1);
        segment.unacked.first_ts = None;
        self.backlog.records -= receipt.records;
        self.backlog.line_bytes -= receipt.line_bytes;
        self.backlog.frame_bytes -= receipt.end - receipt.start;
        self.write_ledger();
        self.remove_finished_head();
    }

    /// The segment of `receipt` cannot be read past `at`: count the rest of
    /// it as dropped and delete it.
    pub fn discard_corrupt(&mut self, segment: u64, at: u64) {
        self.pinned = None;
        let Some(index) = self.segments.iter().position(|s| s.id == segment) else {
            return;
        };
        if self.segments[index].open {
            self.roll();
        }
        self.problem(format!(
            "{} is unreadable from byte {at} on (corrupt); its remaining records are dropped",
            segment_path(&self.dir, segment).display()
        ));
        self.drop_segment(index, REASON_CORRUPT);
        self.write_ledger();
    }

    /// Counts records the server refused for good as dropped, and
    /// acknowledges them so shipping goes on.
    pub fn reject(&mut self, receipt: &Receipt, boot: &str) {
        let stats = Stats {
            records: receipt.records,
            line_bytes: receipt.line_bytes,
            frame_bytes: receipt.end - receipt.start,
            first_seq: receipt.first_seq,
            last_seq: receipt.last_seq,
            first_ts: Some(receipt.first_ts),
            last_ts: receipt.last_ts,
        };
        self.tally(REASON_REJECTED, boot, &stats);
        self.acknowledge(receipt);
    }

    /// Takes the drop tallies not yet reported; call [`Spool::persist`]
    /// once their report is appended.
    pub fn take_dropped(&mut self) -> Vec<Tally> {
        std::mem::take(&mut self.dropped)
    }

    /// Write errors not yet reported.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
    }

    /// Writes the buffer and the ledger.
    pub fn persist(&mut self) {
        self.flush();
        self.write_ledger();
    }

    /// The agent stops: everything is written and fsynced. When nothing is
    /// left to ship, the directory is removed.
    pub fn shutdown(&mut self) -> Backlog {
        self.flush();
        self.syncer = None;
        for segment in &self.segments {
            let _ = segment.file.sync_data();
        }
        self.write_ledger();
        if self.backlog.records == 0 && self.dropped.is_empty() && self.leftovers.is_empty() {
            for segment in self.segments.drain(..) {
                let _ = fs::remove_file(segment_path(&self.dir, segment.id));
            }
            self.bytes = 0;
            let _ = fs::remove_file(self.dir.join(LEDGER_FILE));
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.dir);
        } else {
            // What the next agent needs survives a machine crash from here:
            // the ledger's data, and the directory naming it and the
            // segments.
            if let Ok(ledger) = File::open(self.dir.join(LEDGER_FILE)) {
                let _ = ledger.sync_data();
            }
            let _ = sync_directory(&self.dir);
        }
        self.backlog
    }

    fn start_segment(&mut self) -> io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut head = SEGMENT_MAGIC.to_vec();
        head.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
        serde_json::to_writer(&mut head, &*self.header).expect("a header serializes to JSON");
        seal_frame(&mut head, SEGMENT_MAGIC.len());
        let written = (&file)
            .write_all(&head)
            .and_then(|()| match self.durability {
                Durability::Machine => file.sync_data().and_then(|()| sync_directory(&self.dir)),
                Durability::Process => Ok(()),
            });
        if let Err(error) = written {
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        let len = head.len() as u64;
        self.bytes += len;
        self.segments.push_back(Segment {
            id,
            file: Arc::new(file),
            header: self.header.clone(),
            start: len,
            len,
            open: true,
            unacked: Stats::default(),
            has_reports: false,
        });
        Ok(())
    }

    /// Finishes the open segment: the next record starts a new one.
    fn roll(&mut self) {
        self.flush();
        if let Some(segment) = self.segments.back_mut().filter(|s| s.open) {
            segment.open = false;
            if let Some(syncer) = &self.syncer {
                let _ = syncer.send(segment.file.clone());
            }
        }
    }

    /// Drops the oldest records while the spool is over its cap.
    fn enforce_cap(&mut self) {
        let mut dropped = false;
        while self.bytes > self.cap {
            let Some(victim) = self
                .segments
                .iter()
                .position(|s| !s.open && Some(s.id) != self.pinned)
            else {
                break;
            };
            self.drop_segment(victim, REASON_SPOOL_FULL);
            dropped = true;
        }
        if dropped {
            self.write_ledger();
        }
    }

    fn drop_segment(&mut self, index: usize, reason: &str) {
        let mut segment = self.segments.remove(index).expect("a segment");
        if segment.unacked.records > 0 && segment.unacked.first_ts.is_none() {
            segment.unacked.first_ts = read_prefix(&segment.file, segment.start).map(|p| p.ts);
        }
        let header = segment.header.clone();
        self.tally(reason, &header.boot, &segment.unacked);
        if segment.has_reports {
            // Reports of earlier drops go with it: count what they said again.
            for tally in drop_reports(&segment.file, segment.start, segment.len) {
                self.merge_dropped(tally);
            }
        }
        self.bytes -= segment.len;
        self.backlog.records -= segment.unacked.records;
        self.backlog.line_bytes -= segment.unacked.line_bytes;
        self.backlog.frame_bytes -= segment.unacked.frame_bytes;
        let _ = fs::remove_file(segment_path(&self.dir, segment.id));
    }

    /// Deletes the oldest segments that are finished and acknowledged.
    fn remove_finished_head(&mut self) {
        while let Some(head) = self.segments.front() {
            if head.open || head.unacked.records > 0 || Some(head.id) == self.pinned {
                return;
            }
            let head = self.segments.pop_front().expect("a head");
            self.bytes -= head.len;
            let _ = fs::remove_file(segment_path(&self.dir, head.id));
        }
    }

    fn tally(&mut self, reason: &str, boot: &str, stats: &Stats) {
        if stats.records == 0 {
            return;
        }
        let tally = match self.dropped.iter().position(|t| t.reason == reason) {
            Some(index) => &mut self.dropped[index],
            None => {
                self.dropped.push(Tally::new(reason));
                self.dropped.last_mut().expect("just pushed")
            }
        };
        tally.add(
            boot,
            (stats.first_seq, stats.last_seq),
            stats.records,
            stats.line_bytes,
            (stats.first_ts.unwrap_or(stats.last_ts), stats.last_ts),
        );
    }

    fn merge_dropped(&mut self, tally: Tally) {
        match self.dropped.iter_mut().find(|t| t.reason == tally.reason) {
            Some(pending) => pending.merge(tally),
            None => self.dropped.push(tally),
        }
    }

    fn problem_if(&mut self, result: io::Result<()>, what: &str) {
        if let Err(error) = result {
            self.problem(format!("{what} in {}: {error}", self.dir.display()));
        }
    }

    fn problem(&mut self, message: String) {
        if self.problems.len() < 8 {
            self.problems.push(message);
        }
    }

    fn write_ledger(&mut self) {
        // The oldest record not acknowledged: adopted leftovers come before
        // those still waiting, and those before this boot's segments.
        let head = self.segments.front().map(|head| (head.id, head.start));
        let leftover = self.leftovers.front().copied();
        let (acked_segment, acked_offset) = match (head, leftover) {
            (Some(head), Some(leftover)) => head.min(leftover),
            (Some(oldest), None) | (None, Some(oldest)) => oldest,
            (None, None) => (self.next_id, 0),
        };
        let ledger = Ledger {
            acked_segment,
            acked_offset,
            dropped: self.dropped.clone(),
        };
        if let Err(error) = write_ledger(&self.dir, &ledger, self.durability) {
            self.problem(format!(
                "cannot write the spool ledger in {}: {error}",
                self.dir.display()
            ));
        }
    }
}

/// Reads one batch of `plan`, within `limits`. Runs without the spool's
/// lock: the part read is written and no longer changes.
pub fn read_batch(plan: &ReadPlan, limits: &BatchLimits) -> io::Result<ReadBatch> {
    let mut reader = FrameReader::new(&plan.file, plan.start, plan.end);
    let mut records = Vec::new();
    let mut receipt = Receipt {
        segment: plan.segment,
        start: plan.start,
        end: plan.start,
        ..Receipt::default()
    };
    let stop = loop {
        let at = reader.pos;
        let (body, next) = match reader.next()? {
            Next::End => break Stop::End,
            Next::Bad => break Stop::Corrupt(at),
            Next::Frame { body, next } => (body, next),
        };
        let Some(prefix) = Prefix::decode(body) else {
            break Stop::Corrupt(at);
        };
        if records.len() >= limits.max_records
            || (!records.is_empty() && next - plan.start > limits.max_bytes)
        {
            break Stop::Full;
        }
        let line_bytes = prefix.line_bytes as u64;
        if prefix.flags & FLAG_UNMETERED == 0 {
            let over_lines = limits
                .lines
                .is_some_and(|lines| receipt.metered_lines + 1 > lines);
            let over_bytes = limits.line_bytes.is_some_and(|bytes| {
                bytes == 0
                    || (receipt.metered_lines > 0 && receipt.metered_bytes + line_bytes > bytes)
            });
            if over_lines || over_bytes {
                break Stop::Throttled;
            }
        }
        let Some(record) = decode_record(&prefix, &body[RECORD_PREFIX_BYTES..]) else {
            break Stop::Corrupt(at);
        };
        if records.is_empty() {
            receipt.first_seq = prefix.seq;
            receipt.first_ts = prefix.ts;
        }
        receipt.last_seq = prefix.seq;
        receipt.last_ts = prefix.ts;
        receipt.records += 1;
        receipt.line_bytes += line_bytes;
        if prefix.flags & FLAG_UNMETERED == 0 {
            receipt.metered_lines += 1;
            receipt.metered_bytes += line_bytes;
        }
        receipt.end = next;
        records.push(record);
    };
    Ok(ReadBatch {
        header: plan.header.clone(),
        records,
        receipt,
        stop,
    })
}

impl ReadPlan {
    pub fn segment(&self) -> u64 {
        self.segment
    }
}

/// The directory name of a runner's spool: its id, with every byte but
/// ASCII letters, digits, `-`, `_` and `.` (and a leading `.`) written as
/// `%XX`.
pub fn runner_dir_name(runner: &str) -> String {
    let mut name = String::with_capacity(runner.len());
    for (index, byte) in runner.bytes().enumerate() {
        let plain = byte.is_ascii_alphanumeric()
            || byte == b'-'
            || byte == b'_'
            || (byte == b'.' && index > 0);
        if plain {
            name.push(byte as char);
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name
}

/// Where spools live unless `--spool` says otherwise:
/// `$XDG_STATE_HOME/tailwater/spool`, else `/var/lib/tailwater/spool` for
/// root, else `~/.local/state/tailwater/spool`, else a directory in the
/// system's temporary directory.
pub fn default_spool_root() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return state.join("tailwater").join("spool");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/tailwater/spool");
    }
    if let Some(home) = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return home.join(".local/state/tailwater/spool");
    }
    fallback_spool_root()
}

/// The spool root used when the default one is not writable: in the
/// system's temporary directory, per user.
pub fn fallback_spool_root() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir()
        .join(format!("tailwater-{uid}"))
        .join("spool")
}

/// Whether `root` may hold spools: a directory of ours, or one we can make.
pub fn check_root_owner(root: &Path) -> bool {
    match fs::metadata(root) {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Ok(metadata) => metadata.is_dir() && metadata.uid() == unsafe { libc::geteuid() },
        Err(_) => true,
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}{SEGMENT_SUFFIX}"))
}

pub fn timestamp_ns(ts: jiff::Timestamp) -> i64 {
    ts.as_nanosecond().clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Fills in a frame's length and checksum; its body runs from
/// `at + FRAME_HEAD_BYTES` to the end of `buffer`.
fn seal_frame(buffer: &mut [u8], at: usize) {
    let body = &buffer[at + FRAME_HEAD_BYTES..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    buffer[at..at + 4].copy_from_slice(&len.to_le_bytes());
    buffer[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

struct Prefix {
    flags: u8,
    seq: u64,
    ts: i64,
    line_bytes: u32,
}

impl Prefix {
    fn encode(&self, buffer: &mut Vec<u8>) {
        buffer.push(self.flags);
        buffer.extend_from_slice(&self.seq.to_le_bytes());
        buffer.extend_from_slice(&self.ts.to_le_bytes());
        buffer.extend_from_slice(&self.line_bytes.to_le_bytes());
    }

    fn decode(body: &[u8]) -> Option<Prefix> {
        let prefix = body.get(..RECORD_PREFIX_BYTES)?;
        Some(Prefix {
            flags: prefix[0],
            seq: u64::from_le_bytes(prefix[1..9].try_into().ok()?),
            ts: i64::from_le_bytes(prefix[9..17].try_into().ok()?),
            line_bytes: u32::from_le_bytes(prefix[17..21].try_into().ok()?),
        })
    }
}

const BIT_INVALID_UTF8: u8 = 1;
const BIT_REQUEST_ID: u8 = 2;

/// Appends a record's body after its prefix (see the module's doc).
fn encode_record(record: &IngestRecord, buffer: &mut Vec<u8>) {
    let stream = stream_code(record.stream);
    let level = Level::ALL
        .iter()
        .position(|level| *level == record.level)
        .expect("every level is in Level::ALL") as u8;
    let mut bits = 0;
    if record.invalid_utf8 {
        bits |= BIT_INVALID_UTF8;
    }
    if record.request_id.is_some() {
        bits |= BIT_REQUEST_ID;
    }
    buffer.extend_from_slice(&[stream, level, bits]);
    put_bytes(buffer, record.message.as_bytes());
    put_bytes(
        buffer,
        record.request_id.as_deref().unwrap_or("").as_bytes(),
    );
    let at = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(record.fields.as_str().as_bytes());
    let len = (buffer.len() - at - 4) as u32;
    buffer[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

const BIT_CONTINUED: u8 = 1;
const BIT_IN_REQUEST: u8 = 2;
const BIT_PROGRESS: u8 = 4;
const BIT_PROGRESS_FINAL: u8 = 8;

/// Appends a captured line's body after its prefix: `stream: u8`, `bits:
/// u8`, the progress count (`u32`, when a progress state), the request in
/// flight (length-prefixed, when there was one), then the line's bytes to
/// the end of the frame.
fn encode_captured(line: &Captured<'_>, buffer: &mut Vec<u8>) {
    let mut bits = 0;
    if line.continued {
        bits |= BIT_CONTINUED;
    }
    if line.in_request.is_some() {
        bits |= BIT_IN_REQUEST;
    }
    match line.progress {
        Some((_, true)) => bits |= BIT_PROGRESS | BIT_PROGRESS_FINAL,
        Some((_, false)) => bits |= BIT_PROGRESS,
        None => {}
    }
    buffer.extend_from_slice(&[stream_code(line.stream), bits]);
    if let Some((updates, _)) = line.progress {
        buffer.extend_from_slice(&updates.to_le_bytes());
    }
    if let Some(request) = line.in_request {
        put_bytes(buffer, request.as_bytes());
    }
    buffer.extend_from_slice(line.bytes);
}

fn decode_captured(mut body: &[u8]) -> Option<Captured<'_>> {
    let (&[stream, bits], rest) = body.split_first_chunk::<2>()?;
    body = rest;
    let progress = if bits & BIT_PROGRESS != 0 {
        let (updates, rest) = body.split_first_chunk::<4>()?;
        body = rest;
        Some((u32::from_le_bytes(*updates), bits & BIT_PROGRESS_FINAL != 0))
    } else {
        None
    };
    let in_request = if bits & BIT_IN_REQUEST != 0 {
        let (len, rest) = body.split_first_chunk::<4>()?;
        let (request, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        body = rest;
        Some(std::str::from_utf8(request).ok()?)
    } else {
        None
    };
    Some(Captured {
        stream: stream_from_code(stream)?,
        bytes: body,
        continued: bits & BIT_CONTINUED != 0,
        in_request,
        progress,
    })
}

fn stream_code(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::System => 2,
    }
}

fn stream_from_code(code: u8) -> Option<Stream> {
    match code {
        0 => Some(Stream::Stdout),
        1 => Some(Stream::Stderr),
        2 => Some(Stream::System),
        _ => None,
    }
}

fn put_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buffer.extend_from_slice(bytes);
}

/// The record of `prefix` and the rest of its body; `None` if it does not
/// decode.
fn decode_record(prefix: &Prefix, mut body: &[u8]) -> Option<IngestRecord> {
    if prefix.flags & FLAG_CAPTURED != 0 {
        let line = decode_captured(body)?;
        return Some(crate::outbox::parse_captured(
            prefix.seq,
            timestamp(prefix.ts),
            &line,
        ));
    }
    fn take<'a>(body: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = body.split_at_checked(len)?;
        *body = rest;
        Some(taken)
    }
    fn string(body: &mut &[u8]) -> Option<String> {
        let len = u32::from_le_bytes(take(body, 4)?.try_into().ok()?) as usize;
        String::from_utf8(take(body, len)?.to_vec()).ok()
    }
    let &[stream, level, bits] = take(&mut body, 3)? else {
        return None;
    };
    let stream = stream_from_code(stream)?;
    let level = *Level::ALL.get(level as usize)?;
    let message = string(&mut body)?;
    let request_id = string(&mut body)?;
    let fields_len = u32::from_le_bytes(take(&mut body, 4)?.try_into().ok()?) as usize;
    let fields = match take(&mut body, fields_len)? {
        [] => FieldsJson::new(),
        json => serde_json::from_slice(json).ok()?,
    };
    Some(IngestRecord {
        seq: prefix.seq,
        ts: timestamp(prefix.ts),
        stream,
        level,
        request_id: (bits & BIT_REQUEST_ID != 0).then_some(request_id),
        message,
        fields,
        invalid_utf8: bits & BIT_INVALID_UTF8 != 0,
    })
}

/// The tallies of the drop reports among the records from `start` to `end`.
fn drop_reports(file: &File, start: u64, end: u64) -> Vec<Tally> {
    let mut tallies = Vec::new();
    let mut reader = FrameReader::new(file, start, end);
    while let Ok(Next::Frame { body, .. }) = reader.next() {
        let Some(prefix) = Prefix::decode(body) else {
            break;
        };
        if prefix.flags & FLAG_DROP_REPORT == 0 {
            continue;
        }
        if let Some(tally) = decode_record(&prefix, &body[RECORD_PREFIX_BYTES..])
            .and_then(|record| Tally::from_fields(&record.fields.to_map()))
        {
            tallies.push(tally);
        }
    }
    tallies
}

/// The tallies of the drop reports among the frames in `buffer`.
fn drop_reports_in(mut buffer: &[u8]) -> Vec<Tally> {
    let mut tallies = Vec::new();
    while buffer.len() >= FRAME_HEAD_BYTES {
        let len = u32::from_le_bytes(buffer[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = buffer.get(FRAME_HEAD_BYTES..FRAME_HEAD_BYTES + len) else {
            break;
        };
        buffer = &buffer[FRAME_HEAD_BYTES + len..];
        let Some(prefix) = Prefix::decode(body) else {
            continue;
        };
        if prefix.flags & FLAG_DROP_REPORT != 0 {
            tallies.extend(
                decode_record(&prefix, &body[RECORD_PREFIX_BYTES..])
                    .and_then(|record| Tally::from_fields(&record.fields.to_map())),
            );
        }
    }
    tallies
}

/// Nanoseconds as a timestamp (clamped to the representable range).
pub fn timestamp(ns: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_nanosecond(ns as i128).unwrap_or(if ns < 0 {
        jiff::Timestamp::MIN
    } else {
        jiff::Timestamp::MAX
    })
}

/// The prefix of the record frame at `at`, if it reads back whole.
fn read_prefix(file: &File, at: u64) -> Option<Prefix> {
    let end = file.metadata().ok()?.len();
    match FrameReader::new(file, at, end).next().ok()? {
        Next::Frame { body, .. } => Prefix::decode(body),
        _ => None,
    }
}

enum Next<'a> {
    End,
    /// Cut off, over-long, or failing its checksum.
    Bad,
    Frame {
        body: &'a [u8],
        next: u64,
    },
}

/// Reads frames from `pos` to `end` through a buffer.
struct FrameReader<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    buffer_at: u64,
}

impl<'f> FrameReader<'f> {
    fn new(file: &'f File, pos: u64, end: u64) -> FrameReader<'f> {
        FrameReader {
            file,
            pos,
            end,
            buffer: Vec::new(),
            buffer_at: pos,
        }
    }

    fn next(&mut self) -> io::Result<Next<'_>> {
        if self.pos >= self.end {
            return Ok(Next::End);
        }
        if self.end - self.pos < FRAME_HEAD_BYTES as u64 {
            return Ok(Next::Bad);
        }
        self.fill(self.pos, FRAME_HEAD_BYTES)?;
        let head_at = (self.pos - self.buffer_at) as usize;
        let head = &self.buffer[head_at..head_at + FRAME_HEAD_BYTES];
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let total = FRAME_HEAD_BYTES as u64 + len;
        if len > MAX_FRAME_BYTES || total > self.end - self.pos {
            return Ok(Next::Bad);
        }
        self.fill(self.pos, total as usize)?;
        let body_at = (self.pos - self.buffer_at) as usize + FRAME_HEAD_BYTES;
        let body = &self.buffer[body_at..body_at + len as usize];
        if crc32fast::hash(body) != crc {
            return Ok(Next::Bad);
        }
        self.pos += total;
        Ok(Next::Frame {
            body,
            next: self.pos,
        })
    }

    /// Makes the buffer hold `len` bytes from file offset `at`.
    fn fill(&mut self, at: u64, len: usize) -> io::Result<()> {
        let buffered_end = self.buffer_at + self.buffer.len() as u64;
        if at >= self.buffer_at && at + len as u64 <= buffered_end {
            return Ok(());
        }
        let want = len.max(READ_CHUNK_BYTES).min((self.end - at) as usize);
        self.buffer.resize(want, 0);
        self.file.read_exact_at(&mut self.buffer, at)?;
        self.buffer_at = at;
        Ok(())
    }
}

/// Checks a segment left by a previous agent: its header, then every frame.
/// A torn or corrupt tail is cut off. Returns the segment (closed, its
/// records from `acked` on counted) and the bytes cut off; `None` when the
/// file is not a readable segment at all.
fn recover_segment(path: &Path, id: u64, acked: u64) -> io::Result<Option<(Segment, u64)>> {
    let file = OpenOptions::new().read(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; 8];
    if len < magic.len() as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut magic, 0)?;
    if &magic != SEGMENT_MAGIC {
        return Ok(None);
    }
    let mut reader = FrameReader::new(&file, SEGMENT_MAGIC.len() as u64, len);
    let header = match reader.next()? {
        Next::Frame { body, .. } => match serde_json::from_slice::<SegmentHeader>(body) {
            Ok(header) => header,
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    let mut unacked = Stats::default();
    let mut has_reports = false;
    let mut start = None;
    let valid_end = loop {
        let at = reader.pos;
        match reader.next()? {
            Next::End => break at,
            Next::Bad => break at,
            Next::Frame { body, next } => {
                let Some(prefix) = Prefix::decode(body) else {
                    break at;
                };
                if at >= acked {
                    start.get_or_insert(at);
                    unacked.add(&prefix, next - at);
                    has_reports |= prefix.flags & FLAG_DROP_REPORT != 0;
                }
            }
        }
    };
    let truncated = len - valid_end;
    if truncated > 0 {
        file.set_len(valid_end)?;
    }
    Ok(Some((
        Segment {
            id,
            file: Arc::new(file),
            header: Arc::new(header),
            start: start.unwrap_or(valid_end),
            len: valid_end,
            open: false,
            unacked,
            has_reports,
        },
        truncated,
    )))
}

fn unusable(dir: &Path, what: &str, error: io::Error) -> OpenError {
    OpenError {
        in_use: false,
        message: format!(
            "cannot use the spool directory {}: {what}: {error}; make it writable, or pass --spool DIR with a writable directory (on a volume, to keep unshipped lines across container restarts)",
            dir.display()
        ),
    }
}

enum LockError {
    Io(io::Error),
    Held(Option<u32>),
}

fn lock_directory(dir: &Path) -> Result<File, LockError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(LockError::Io)?;
    // SAFETY: flock(2) on a descriptor we own; no memory is involved.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if locked != 0 {
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let pid = fs::read_to_string(&path)
                .ok()
                .and_then(|text| text.trim().parse().ok());
            return Err(LockError::Held(pid));
        }
        return Err(LockError::Io(error));
    }
    file.set_len(0).map_err(LockError::Io)?;
    write!(file, "{}", std::process::id()).map_err(LockError::Io)?;
    Ok(file)
}

/// The ledger, `None` when there is none; an error says why it is unreadable.
fn read_ledger(dir: &Path) -> Result<Option<Ledger>, String> {
    let path = dir.join(LEDGER_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let unreadable = || format!("{} is torn or corrupt", path.display());
    let rest = bytes.strip_prefix(LEDGER_MAGIC).ok_or_else(unreadable)?;
    if rest.len() < FRAME_HEAD_BYTES {
        return Err(unreadable());
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let body = rest
        .get(FRAME_HEAD_BYTES..FRAME_HEAD_BYTES + len)
        .ok_or_else(unreadable)?;
    if crc32fast::hash(body) != crc {
        return Err(unreadable());
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|_| unreadable())
}

/// Replaces the ledger: written beside it, then renamed over it.
fn write_ledger(dir: &Path, ledger: &Ledger, durability: Durability) -> io::Result<()> {
    let mut bytes = LEDGER_MAGIC.to_vec();
    bytes.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
    serde_json::to_writer(&mut bytes, ledger).expect("a ledger serializes to JSON");
    seal_frame(&mut bytes, LEDGER_MAGIC.len());
    let temporary = dir.join(LEDGER_TEMPORARY);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&bytes)?;
    if durability == Durability::Machine {
        file.sync_data()?;
    }
    drop(file);
    fs::rename(&temporary, dir.join(LEDGER_FILE))?;
    if durability == Durability::Machine {
        sync_directory(dir)?;
    }
    Ok(())
}

/// fsyncs a directory: the names created, renamed or removed in it last.
fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use tailwater_model::{Fields, FieldsJson, Level, Stream};

    /// Opens the spool and adopts every leftover, as the agent does in the
    /// background.
    fn open_recovered(dir: &Path, header: SegmentHeader, cap: u64) -> (Spool, Recovery) {
        let (mut spool, mut recovery) = Spool::open(dir, header, cap).unwrap();
        while let Some(leftover) = spool.next_leftover() {
            spool.adopt(leftover.recover(), &mut recovery);
        }
        (spool, recovery)
    }

    #[test]
    fn leftovers_ship_first_and_stay_in_the_ledger_until_adopted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
            append_lines(&mut spool, 0..3);
            spool.flush();
        }
        {
            // Opened, new records written, killed before the leftover was
            // read: nothing is readable meanwhile, and nothing is lost.
            let (mut spool, recovery) = Spool::open(dir.path(), header("b2"), 1 << 20).unwrap();
            assert_eq!(recovery.records, 0, "not read at open");
            append_lines(&mut spool, 0..2);
            assert!(spool.plan_read().is_none(), "the leftover ships first");
            assert!(!spool.leftovers_recovered());
        }
        {
            // Killed again with one leftover adopted, one not: the ledger
            // still names both.
            let (mut spool, mut found) = Spool::open(dir.path(), header("b3"), 1 << 20).unwrap();
            let first = spool.next_leftover().unwrap();
            spool.adopt(first.recover(), &mut found);
            assert_eq!(found.records, 3);
            assert!(!spool.leftovers_recovered());
        }
        let (mut spool, recovery) = Spool::open(dir.path(), header("b4"), 1 << 20).unwrap();
        append_lines(&mut spool, 0..1);
        let mut found = Recovery::default();
        while let Some(leftover) = spool.next_leftover() {
            spool.adopt(leftover.recover(), &mut found);
        }
        assert!(recovery.ledger_problem.is_none());
        assert_eq!(
            (found.records, found.boots.clone()),
            (5, vec!["b1".to_owned(), "b2".to_owned()])
        );
        let shipped = drain(&mut spool);
        let boots: Vec<&str> = shipped.iter().map(|(boot, _, _)| boot.as_str()).collect();
        assert_eq!(boots, ["b1", "b1", "b1", "b2", "b2", "b4"]);
    }

    fn header(boot: &str) -> SegmentHeader {
        SegmentHeader {
            app: "app".into(),
            version: "v1".into(),
            runner: "r-1".into(),
            boot: boot.into(),
            source: Source::Run,
        }
    }

    fn record(seq: u64, message: &str) -> IngestRecord {
        IngestRecord {
            seq,
            ts: Timestamp::from_second(1_700_000_000 + seq as i64).unwrap(),
            stream: Stream::Stdout,
            level: Level::Info,
            request_id: None,
            message: message.into(),
            fields: FieldsJson::new(),
            invalid_utf8: false,
        }
    }

    fn append_lines(spool: &mut Spool, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            let line = format!("line {seq:04}");
            spool.append(&record(seq, &line), 0, line.len() as u64);
        }
    }

    const ALL: BatchLimits = BatchLimits {
        max_records: usize::MAX,
        max_bytes: u64::MAX,
        lines: None,
        line_bytes: None,
    };

    /// Reads and acknowledges everything, as the shipper would: the records
    /// in order with their boots.
    fn drain(spool: &mut Spool) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        while let Some(plan) = spool.plan_read() {
            let batch = read_batch(&plan, &ALL).unwrap();
            assert_ne!(batch.stop, Stop::Throttled);
            for record in &batch.records {
                out.push((
                    batch.header.boot.clone(),
                    record.seq,
                    record.message.clone(),
                ));
            }
            spool.acknowledge(&batch.receipt);
        }
        out
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }

    /// A leftover segment's checksummed frame may carry any sequence
    /// number: acknowledging the highest one must not overflow (found by
    /// the `spool` fuzz target).
    #[test]
    fn a_record_of_the_highest_sequence_number_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        spool.append(&record(u64::MAX, "last"), 0, 4);
        spool.flush();
        let read = drain(&mut spool);
        assert_eq!(read, [("b1".to_owned(), u64::MAX, "last".to_owned())]);
        assert_eq!(spool.backlog().records, 0);
    }

    #[test]
    fn captured_lines_come_back_parsed_with_what_capture_knew() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        let stamped = Timestamp::from_second(1_700_000_000).unwrap();
        let captured = [
            Captured {
                stream: Stream::Stderr,
                bytes: br#"{"level":"error","msg":"boom","request_id":"own"}"#,
                continued: false,
                in_request: Some("in-flight"),
                progress: None,
            },
            Captured {
                stream: Stream::Stdout,
                bytes: b"50%|#####     | 5/10 \xff",
                continued: true,
                in_request: Some("in-flight"),
                progress: Some((7, true)),
            },
        ];
        for (seq, line) in captured.iter().enumerate() {
            spool.append_captured(seq as u64, timestamp_ns(stamped), line, 0);
        }
        let plan = spool.plan_read().unwrap();
        let batch = read_batch(&plan, &ALL).unwrap();
        let [json, bar] = &batch.records[..] else {
            panic!("two records: {:?}", batch.records)
        };
        assert_eq!(
            (
                json.level,
                json.message.as_str(),
                json.request_id.as_deref()
            ),
            (Level::Error, "boom", Some("own")),
            "a line's own request id wins over the one in flight"
        );
        assert_eq!(
            (json.stream, json.ts, json.seq),
            (Stream::Stderr, stamped, 0)
        );
        assert_eq!(bar.request_id.as_deref(), Some("in-flight"));
        assert!(bar.invalid_utf8);
        assert_eq!(bar.message, "50%|#####     | 5/10 \u{fffd}");
        let bar_fields = bar.fields.to_map();
        assert_eq!(bar_fields["continued"], true);
        assert_eq!(bar_fields["progress_updates"], 7);
        assert_eq!(bar_fields["progress_final"], true);
        // Metered by the bytes as written, invalid ones included.
        assert_eq!(
            batch.receipt.line_bytes,
            (captured[0].bytes.len() + captured[1].bytes.len()) as u64
        );
    }

    #[test]
    fn with_machine_durability_records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
            spool.set_durability(Durability::Machine);
            append_lines(&mut spool, 0..10);
            spool.flush();
            assert!(spool.take_problems().is_empty());
            // Killed: no shutdown.
        }
        let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
        assert_eq!(recovery.records, 10);
        assert_eq!(drain(&mut spool).len(), 10);
    }

    #[test]
    fn records_round_trip_and_acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, recovery) = open_recovered(dir.path(), header("b1"), 64 * 1024);
        assert_eq!(recovery.records, 0);
        append_lines(&mut spool, 0..300);
        assert_eq!(spool.backlog().records, 300);
        assert!(segment_files(dir.path()).len() > 1, "rolled into segments");
        let shipped = drain(&mut spool);
        assert_eq!(shipped.len(), 300);
        assert!(shipped
            .iter()
            .enumerate()
            .all(|(n, (boot, seq, message))| boot == "b1"
                && *seq == n as u64
                && *message == format!("line {n:04}")));
        assert_eq!(spool.backlog(), Backlog::default());
        // Only the open segment is left.
        assert_eq!(segment_files(dir.path()).len(), 1);
        spool.shutdown();
        assert!(!dir.path().exists() || fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn every_part_of_a_record_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        let mut fields = Fields::new();
        fields.insert("gpu".into(), serde_json::json!({ "id": 3, "util": 0.97 }));
        let written = vec![
            IngestRecord {
                request_id: Some("req-7".into()),
                level: Level::Fatal,
                stream: Stream::Stderr,
                invalid_utf8: true,
                fields: FieldsJson::from_map(&fields),
                message: "bad \u{fffd} \"quoted\"\n".into(),
                ..record(0, "")
            },
            IngestRecord {
                stream: Stream::System,
                level: Level::Trace,
                ts: Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap(),
                ..record(1, "")
            },
        ];
        for record in &written {
            spool.append(record, 0, 1);
        }
        let plan = spool.plan_read().unwrap();
        let batch = read_batch(&plan, &ALL).unwrap();
        assert_eq!(batch.stop, Stop::End);
        assert_eq!(batch.records, written);
        // The fields are written as spools always held them: the map's JSON,
        // last in the body.
        let mut body = Vec::new();
        encode_record(&written[0], &mut body);
        assert!(body.ends_with(&serde_json::to_vec(&fields).unwrap()));
    }

    #[test]
    fn a_restart_ships_what_was_not_acknowledged_with_its_boot_and_seq() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
            append_lines(&mut spool, 0..10);
            let plan = spool.plan_read().unwrap();
            let limits = BatchLimits {
                max_records: 4,
                ..ALL
            };
            let batch = read_batch(&plan, &limits).unwrap();
            assert_eq!((batch.records.len(), batch.stop), (4, Stop::Full));
            spool.acknowledge(&batch.receipt);
            // Flushed, but the agent dies without a shutdown.
            spool.flush();
        }
        let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
        assert_eq!(recovery.records, 6);
        assert_eq!(recovery.boots, ["b1"]);
        assert_eq!(recovery.line_bytes, 6 * 9);
        append_lines(&mut spool, 0..2);
        let shipped = drain(&mut spool);
        let expected: Vec<_> = (4..10)
            .map(|seq| ("b1".to_owned(), seq, format!("line {seq:04}")))
            .chain((0..2).map(|seq| ("b2".to_owned(), seq, format!("line {seq:04}"))))
            .collect();
        assert_eq!(shipped, expected);
    }

    #[test]
    fn a_half_written_last_record_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
            append_lines(&mut spool, 0..5);
            spool.flush();
        }
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("one segment")
        };
        let len = fs::metadata(segment).unwrap().len();
        // Cut the last record in the middle of its JSON.
        let file = OpenOptions::new().write(true).open(segment).unwrap();
        file.set_len(len - 10).unwrap();
        drop(file);

        let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
        assert_eq!(recovery.records, 4);
        let record_bytes = (len - 10) - fs::metadata(segment).unwrap().len();
        assert_eq!(recovery.truncated_bytes, record_bytes);
        let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(shipped, [0, 1, 2, 3]);
    }

    #[test]
    fn a_record_failing_its_checksum_ends_the_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
            append_lines(&mut spool, 0..5);
            spool.flush();
        }
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("one segment")
        };
        // Flip a byte of the fourth record's message.
        let mut bytes = fs::read(segment).unwrap();
        let at = bytes.windows(9).position(|w| w == b"line 0003").unwrap();
        bytes[at + 8] = b'X';
        fs::write(segment, &bytes).unwrap();

        let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
        assert_eq!(recovery.records, 3);
        assert!(recovery.truncated_bytes > 0);
        let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(shipped, [0, 1, 2]);
    }

    #[test]
    fn a_segment_without_a_whole_header_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("000000000003.seg"), b"TWSPOOL1\x20\x00").unwrap();
        let (mut spool, recovery) = open_recovered(dir.path(), header("b1"), 1 << 20);
        assert_eq!(recovery.discarded.len(), 1);
        append_lines(&mut spool, 0..1);
        spool.flush();
        // Numbering goes on after the discarded file.
        assert_eq!(
            segment_files(dir.path()),
            [dir.path().join("000000000004.seg")]
        );
    }

    #[test]
    fn the_ledger_survives_a_restart_and_a_torn_ledger_ships_everything_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
            append_lines(&mut spool, 0..8);
            let plan = spool.plan_read().unwrap();
            let batch = read_batch(
                &plan,
                &BatchLimits {
                    max_records: 5,
                    ..ALL
                },
            )
            .unwrap();
            spool.acknowledge(&batch.receipt);
            spool.flush();
        }
        let ledger = read_ledger(dir.path()).unwrap().unwrap();
        let [segment] = &segment_files(dir.path())[..] else {
            panic!("one segment")
        };
        assert_eq!(segment, &segment_path(dir.path(), ledger.acked_segment));
        assert!(ledger.acked_offset > 0);
        {
            let (spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
            assert_eq!(recovery.records, 3);
            assert!(recovery.ledger_problem.is_none());
            drop(spool);
        }
        // A torn ledger: nothing counts as acknowledged (the server
        // deduplicates what it has), and the problem is reported.
        let path = dir.path().join(LEDGER_FILE);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (mut spool, recovery) = open_recovered(dir.path(), header("b3"), 1 << 20);
        assert!(recovery.ledger_problem.is_some());
        assert_eq!(recovery.records, 8);
        let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(shipped, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn over_the_cap_the_oldest_segments_are_dropped_and_counted_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cap = MIN_SPOOL_MAX_BYTES;
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), cap);
        append_lines(&mut spool, 0..1000);
        assert!(spool.bytes() <= cap, "{} > {cap}", spool.bytes());
        let [tally] = &spool.take_dropped()[..] else {
            panic!("one tally")
        };
        spool.persist();
        let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(tally.reason, REASON_SPOOL_FULL);
        assert_eq!(tally.lines + shipped.len() as u64, 1000);
        assert_eq!(tally.bytes, tally.lines * 9);
        assert_eq!(
            tally.seqs,
            [SeqRange {
                boot: "b1".into(),
                first: 0,
                last: tally.lines - 1
            }]
        );
        assert_eq!(shipped, (tally.lines..1000).collect::<Vec<_>>());
        assert_eq!(
            (tally.first_ts, tally.last_ts),
            (
                1_700_000_000 * 1_000_000_000,
                (1_700_000_000 + tally.lines as i64 - 1) * 1_000_000_000
            )
        );
    }

    #[test]
    fn the_segment_being_shipped_is_not_dropped_and_tallies_persist() {
        let dir = tempfile::tempdir().unwrap();
        let cap = MIN_SPOOL_MAX_BYTES;
        let first_batch = {
            let (mut spool, _) = open_recovered(dir.path(), header("b1"), cap);
            append_lines(&mut spool, 0..10);
            let plan = spool.plan_read().unwrap();
            append_lines(&mut spool, 10..1000);
            let batch = read_batch(&plan, &ALL).unwrap();
            assert_eq!(batch.records.first().unwrap().seq, 0);
            spool.acknowledge(&batch.receipt);
            spool.flush();
            // The agent dies before reporting the drops.
            batch.records.len() as u64
        };
        let (mut spool, _) = open_recovered(dir.path(), header("b2"), cap);
        let [tally] = &spool.take_dropped()[..] else {
            panic!("the tally was kept in the ledger")
        };
        let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
        let [range] = &tally.seqs[..] else {
            panic!("one range")
        };
        // The pinned first segment stayed (its first batch shipped before
        // the restart, its rest after); the range after it was dropped; the
        // newest records are left.
        assert!(range.first > first_batch);
        assert_eq!(tally.lines, range.last - range.first + 1);
        assert_eq!(
            shipped,
            (first_batch..range.first)
                .chain(range.last + 1..1000)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_rate_allowance_stops_a_batch_but_not_unmetered_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        let mut system = record(0, "agent says");
        system.stream = Stream::System;
        spool.append(&system, FLAG_UNMETERED, 10);
        append_lines(&mut spool, 1..10);
        let plan = spool.plan_read().unwrap();
        let none = BatchLimits {
            lines: Some(0),
            ..ALL
        };
        let batch = read_batch(&plan, &none).unwrap();
        assert_eq!((batch.records.len(), batch.stop), (1, Stop::Throttled));
        assert_eq!(batch.receipt.metered_lines, 0);
        let bytes = BatchLimits {
            line_bytes: Some(20),
            ..ALL
        };
        let batch = read_batch(&plan, &bytes).unwrap();
        // The system record, then two lines of 9 bytes.
        assert_eq!((batch.records.len(), batch.stop), (3, Stop::Throttled));
        assert_eq!(
            (batch.receipt.metered_lines, batch.receipt.metered_bytes),
            (2, 18)
        );
        // A line bigger than the allowance goes when it is the first.
        let tiny = BatchLimits {
            line_bytes: Some(1),
            ..ALL
        };
        assert_eq!(read_batch(&plan, &tiny).unwrap().records.len(), 2);
    }

    #[test]
    fn records_that_cannot_be_written_are_counted_as_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..3);
        spool.flush();
        append_lines(&mut spool, 3..5);
        // The disk is full for the next write.
        let full = Arc::new(OpenOptions::new().write(true).open("/dev/full").unwrap());
        let file = std::mem::replace(&mut spool.segments.back_mut().unwrap().file, full);
        spool.flush();
        spool.segments.back_mut().unwrap().file = file;

        let [problem] = &spool.take_problems()[..] else {
            panic!("one problem")
        };
        assert!(problem.starts_with("cannot write to "), "{problem}");
        let [tally] = &spool.take_dropped()[..] else {
            panic!("one tally")
        };
        assert_eq!(
            (tally.reason.as_str(), tally.lines, tally.bytes),
            (REASON_WRITE_FAILED, 2, 18)
        );
        assert_eq!(
            tally.seqs,
            [SeqRange {
                boot: "b1".into(),
                first: 3,
                last: 4
            }]
        );
        assert_eq!(spool.backlog().records, 3);
        // The next records go to a new segment.
        append_lines(&mut spool, 5..6);
        let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
        assert_eq!(shipped, [0, 1, 2, 5]);
    }

    #[test]
    fn a_second_agent_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        let Err(error) = Spool::open(dir.path(), header("b2"), 1 << 20) else {
            panic!("opened twice")
        };
        assert!(error.in_use);
        assert!(
            error.message.contains("in use by another `tailwater run`")
                && error
                    .message
                    .contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
    }

    #[test]
    fn runner_ids_become_safe_directory_names() {
        assert_eq!(runner_dir_name("r-gpu-a100_1.x"), "r-gpu-a100_1.x");
        assert_eq!(runner_dir_name("../etc"), "%2E.%2Fetc");
        assert_eq!(runner_dir_name("a b/é"), "a%20b%2F%C3%A9");
    }
}
