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
//! directory after each rename; the spool owes these ([`Unsynced`]) and the
//! caller does them without its lock.
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
//!
//! The files: [`frame`] (framing and checksums), [`codec`] (record
//! bodies), [`segment`], [`ledger`], [`recovery`] (open and leftovers),
//! [`write`] (append, flush, shutdown), [`read`] (batches for shipping),
//! [`lock`].

use std::collections::VecDeque;

mod codec;
mod frame;
mod ledger;
mod lock;
mod read;
mod recovery;
mod segment;
mod sync;
#[cfg(test)]
mod tests;
mod write;

use codec::*;
use frame::*;
use ledger::*;
pub use ledger::{SeqRange, Tally};
use lock::*;
use read::*;
pub use read::{read_batch, Assemble, ReadBatch, ReadPlan};
pub use recovery::{Leftover, Recovered};
use segment::*;
pub use sync::Unsynced;

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
    /// Every write is fsynced (segment data, a new segment's directory
    /// entry, the ledger and its directory) by whoever flushes, after letting
    /// go of the spool ([`Spool::take_unsynced`]): the spool survives a
    /// machine crash, at the cost of an fsync per flush, which capture never
    /// waits for (`--spool-fsync`).
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
/// The record is a line as the capture read it ([`Line`](crate::line::Line)): it is parsed
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
    /// Lines held in a group wait at most this long for more (the batch
    /// ends before the group).
    Pending(std::time::Duration),
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
    /// fsyncs [`Durability::Machine`] owes, done outside the lock.
    unsynced: Unsynced,
    _lock: File,
}
impl Spool {
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

    /// Takes the drop tallies not yet reported; call [`Spool::persist`]
    /// once their report is appended.
    pub fn take_dropped(&mut self) -> Vec<Tally> {
        std::mem::take(&mut self.dropped)
    }

    /// Write errors not yet reported.
    pub fn take_problems(&mut self) -> Vec<String> {
        std::mem::take(&mut self.problems)
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

/// Nanoseconds ↔ times, as spools keep them (their home is the model).
pub use tailwater_model::time::{timestamp_from_ns as timestamp, timestamp_ns};
