//! What a store is told: durability, memory and merge bounds, the
//! out-of-order window and clock skew, and retention. Every limit has a named default.

use std::collections::HashMap;
use std::time::Duration;

/// When an append reaches the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// fsync the log before an append returns: an acknowledged batch
    /// survives kill -9 and power loss. Appends that arrive together share
    /// one fsync (group commit). The default.
    #[default]
    SyncEachBatch,
    /// fsync the log on a timer: an acknowledged batch survives kill -9 of
    /// the server, and a power loss takes at most the last interval.
    Interval(Duration),
    /// Leave flushing to the operating system: survives kill -9 of the
    /// server, not a power loss. For benchmarks and throwaway data.
    Buffered,
}

/// Memtable size that makes it a frozen table to flush into parts, unless
/// configured otherwise (estimated memory, not message bytes).
pub const DEFAULT_MEMTABLE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Age of the memtable's oldest record that makes it flush, unless
/// configured otherwise.
pub const DEFAULT_MEMTABLE_MAX_AGE: Duration = Duration::from_secs(60);
/// How far behind the newest record of its stream (runner and boot) a record
/// may be and still be accepted, unless configured otherwise.
pub const DEFAULT_OUT_OF_ORDER_WINDOW: Duration = Duration::from_secs(60 * 60);
/// How far ahead of the server's clock a record's time may be and still be
/// stored as it is, unless configured otherwise. A record dated further
/// ahead (a runner's clock set wrong) is stored at the server's time, its
/// own kept in the field `original_ts`, and counted: it must not become the
/// newest record of its stream, from which the out-of-order window would
/// refuse every later line of that boot.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// This many parts of like size in a partition are merged into one, and
/// each size tier is this many times the one below: a record is rewritten
/// once per tier, so a wider merge rewrites it fewer times (at 10M
/// benchmark lines, about 2.7 writes a record where 4 a merge took 3.9;
/// Lucene merges 10 at a time, VictoriaLogs up to 15).
pub const DEFAULT_MERGE_MIN_PARTS: usize = 8;
/// A merge copies a block as it is, rather than rewrite its records with
/// other small blocks' into fuller ones, when it holds at least this many
/// records (half the most a block holds) or half a block's bytes, unless
/// configured otherwise.
pub const DEFAULT_MERGE_COPY_MIN_RECORDS: usize = crate::part::writer::BLOCK_MAX_RECORDS / 2;
/// Bytes of decoded blocks kept for next pages unless configured otherwise:
/// a page of 10,000 records over 32 runners stops inside about 32 blocks of
/// about 1.3 MiB each decoded, so the next pages of a few such scans at
/// once find theirs.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Parts below this size are the lowest merge tier.
pub const MERGE_TIER_BASE_BYTES: u64 = 256 * 1024;
/// Parts at least this large are left out of merges.
pub const DEFAULT_MERGED_PART_BYTES: u64 = 512 * 1024 * 1024;

/// Bytes the write-ahead log keeps of a segment whose records are all in
/// parts, unless configured otherwise (see [`crate::wal`]): the spare is cut
/// to this, at a frame's end, so the log holds at most twice this beside
/// the frames not yet in parts. The first this many bytes of each segment
/// are written over the spare without growing the file (an fsync then
/// writes only data); 8 MiB is about 60 batches of 1000 lines. An idle
/// store keeps no spare at all.
pub const DEFAULT_WAL_SPARE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Threads a count scans blocks on unless configured otherwise: every core
/// the process may use, as a count is short and the cores are idle
/// between queries; ingest is on threads of its own.
pub fn default_query_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Stored records one count (or histogram) may read unless configured
/// otherwise: about 2 GiB of log text, some seconds on one core (the
/// bench counts 1,000,000 lines in 0.2 to 0.9 s on one thread,
/// BENCHMARKS.md, issue 21); past it a count is refused, naming the
/// setting, rather than hold threads and disk for minutes.
pub const DEFAULT_COUNT_SCAN_LIMIT: u64 = 20_000_000;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub durability: Durability,
    pub memtable_max_bytes: usize,
    pub memtable_max_age: Duration,
    pub out_of_order_window: Duration,
    /// See [`DEFAULT_MAX_CLOCK_SKEW`].
    pub max_clock_skew: Duration,
    /// zstd level of blocks a flush writes.
    pub zstd_level: i32,
    /// zstd level of settled parts (see [`DEFAULT_MERGE_ZSTD_LEVEL`]); at
    /// or below `zstd_level`, nothing is settled.
    pub merge_zstd_level: i32,
    /// See [`DEFAULT_SETTLE_NUMBERS_APART`].
    pub settle_numbers_apart: bool,
    pub merge_min_parts: usize,
    pub merged_part_bytes: u64,
    /// See [`DEFAULT_MERGE_COPY_MIN_RECORDS`].
    pub merge_copy_min_records: usize,
    /// Bytes of decoded blocks kept for the next page (see
    /// [`DEFAULT_BLOCK_CACHE_BYTES`]); 0 keeps none.
    pub block_cache_bytes: usize,
    /// Threads one count ([`crate::Store::count`]) may scan blocks on (see
    /// [`default_query_threads`]); 1 scans on the caller's thread alone.
    pub query_threads: usize,
    /// Stored records (in parts, matching or not) one count may read (see
    /// [`DEFAULT_COUNT_SCAN_LIMIT`]): a count that would read more is
    /// refused with [`crate::StoreError::CountTooLarge`] before it reads.
    pub count_scan_limit: u64,
    /// See [`DEFAULT_WAL_SPARE_MAX_BYTES`]; 0 keeps no spare.
    pub wal_spare_max_bytes: u64,
    /// Flush and merge on a background thread (the default). When `false`,
    /// the append that fills the memtable flushes it before it returns, and
    /// nothing merges unless [`crate::Store::merge`] is called: for tests
    /// that need to know where records are.
    pub background: bool,
}

/// zstd level of blocks unless configured otherwise: fast to write (ingest
/// waits behind flushes when they fall behind), and within a few percent of
/// level 6's ratio on log text.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// zstd level settling writes at unless configured otherwise: a store
/// that is idle writes its flushed parts again at it, once, in full
/// blocks, so what rests on disk is compressed harder than ingest could
/// afford (BENCHMARKS.md, issue 21, has the measurements behind it). Tier
/// merges, which run while ingest does, copy blocks as they are.
pub const DEFAULT_MERGE_ZSTD_LEVEL: i32 = 16;

/// Whether settling writes block format 3 (messages' numbers apart from
/// their text): 0.77× `zstd -3` at rest against format 2's 0.82–0.84×. A
/// count of a word reads it faster than format 2 (the templates are
/// searched, nothing joined), but a page of a common word still costs
/// 1.7–2.7× format 2's CPU and a page of every record 2.3–2.6× (the
/// messages are joined with their numbers); BENCHMARKS.md, issue 21,
/// format 3 read. Off until pages read it as fast; every format is read
/// either way.
pub const DEFAULT_SETTLE_NUMBERS_APART: bool = false;

/// Bytes of flushed parts one settling step rewrites at most (one part at
/// least): settling runs on the thread that flushes, so a step must end
/// before appends fill the two tables they may leave waiting (at level 16
/// a step of 8 MiB of parts, about 50 MB of text, takes some 10 s of a
/// core here, 20 µs a line).
pub const SETTLE_STEP_BYTES: u64 = 8 * 1024 * 1024;

/// Records a settling step writes between two looks at whether a flush is
/// due (frozen tables, or an old active one), which it then makes before
/// going on: a flush waits behind at most this and the block being
/// compressed, not the step (a look takes the state's read lock).
pub const SETTLE_FLUSH_CHECK_RECORDS: usize = 1024;

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            durability: Durability::default(),
            memtable_max_bytes: DEFAULT_MEMTABLE_MAX_BYTES,
            memtable_max_age: DEFAULT_MEMTABLE_MAX_AGE,
            out_of_order_window: DEFAULT_OUT_OF_ORDER_WINDOW,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            merge_zstd_level: DEFAULT_MERGE_ZSTD_LEVEL,
            settle_numbers_apart: DEFAULT_SETTLE_NUMBERS_APART,
            merge_min_parts: DEFAULT_MERGE_MIN_PARTS,
            merged_part_bytes: DEFAULT_MERGED_PART_BYTES,
            merge_copy_min_records: DEFAULT_MERGE_COPY_MIN_RECORDS,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            query_threads: default_query_threads(),
            count_scan_limit: DEFAULT_COUNT_SCAN_LIMIT,
            wal_spare_max_bytes: DEFAULT_WAL_SPARE_MAX_BYTES,
            background: true,
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
    pub app_max_age: HashMap<(String, String), Duration>,
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
