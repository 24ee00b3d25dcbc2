//! From memory to parts, and small parts to larger ones.
//!
//! A full (or old) memtable is frozen: the log is fsynced and a new segment
//! started, and the table waits, still readable, for its flush. The flush
//! writes one part per tenant, app and day, stream by stream, then swaps the
//! parts in for the table and deletes the log segments it came from. A crash
//! anywhere in between loses nothing: until a segment is deleted, replay
//! restores what is not in a part, and replay skips what is.
//!
//! Merges take a partition's small parts and write one part with their
//! records, each stream merged in time order a block at a time, so memory
//! stays bounded whatever the partition's size. The merged part names the
//! parts it replaces; if a crash leaves them behind, opening the store
//! deletes them.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tailwater_model::LogRecord;

use crate::memtable::Table;
use crate::part::block::DecodedBlock;
use crate::part::reader::Part;
use crate::part::writer::{PartWriter, BLOCK_COPY_MIN_BYTES};
use crate::part::{BlockMeta, Partition, StreamLabels};
use crate::row::Row;
use crate::wal::WalWriter;
use crate::{day_of, part_number, wal_path, Durability, Inner, State, StoreError, Writer};

/// How often the background thread looks at the memtable's age, merges and
/// (with interval durability) the clock.
const TICK: Duration = Duration::from_secs(1);

impl Inner {
    /// Freezes the active table: the log is fsynced (so the frozen records
    /// are durable whatever the durability) and a new segment begun.
    pub(crate) fn freeze(&self, writer: &mut Writer, state: &mut State) -> Result<(), StoreError> {
        if state.memtable.active_is_empty() {
            return Ok(());
        }
        let path = writer.wal.path().to_owned();
        if let Err(error) = writer.wal.file().sync_data() {
            self.fail(format!("fsync of {} failed: {error}", path.display()));
            return Err(StoreError::io(&path)(error));
        }
        self.durable.fetch_max(writer.last_id, Ordering::AcqRel);
        self.visible.raise(writer.last_id);
        let segment = writer.segment + 1;
        let new_path = wal_path(&self.dir, segment);
        let spare = crate::open::spare_segment(&self.dir);
        writer.wal = WalWriter::create(&new_path, segment, spare.as_deref())
            .map_err(StoreError::io(&new_path))?;
        writer.segment = segment;
        state.memtable.freeze(writer.last_id + 1, segment);
        Ok(())
    }

    /// Frees the dedup ranges of what is now in parts (see
    /// [`crate::dedup`]): with the writer lock, so no append adds to the
    /// memtable meanwhile.
    pub(crate) fn compact_dedup(&self) {
        let mut writer = self.lock_writer();
        let state = self.read();
        writer.dedup.compact(|key| state.memtable.lowest_seq(key));
    }

    /// Freezes the active table and flushes everything frozen.
    pub(crate) fn flush_all(&self) -> Result<(), StoreError> {
        {
            let mut writer = self.lock_writer();
            let mut state = self.write();
            self.freeze(&mut writer, &mut state)?;
        }
        self.flush_frozen()
    }

    /// Flushes the frozen tables, oldest first, held ones again. A
    /// partition that cannot be written leaves the others flushed: its rows
    /// stay in a held table (and their log segments on disk) and are
    /// retried at the next flush, while appends to it are refused
    /// ([`StoreError::PartitionUnwritable`]). Returns the first such
    /// failure, once every table was tried.
    pub(crate) fn flush_frozen(&self) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let mut first_failure = None;
        let tables = self.read().memtable.frozen_tables();
        for table in tables {
            let started = Instant::now();
            let (parts, failed) = self.write_table(&table);
            let part_count = parts.len();
            // A held table no partition of which could be written again
            // stays as it is: nothing to copy.
            let unchanged = table.held && parts.is_empty();
            let held = (!failed.is_empty() && !unchanged).then(|| {
                table.held_rows(|tenant, labels, row| {
                    failed.contains(&(tenant, labels.app.as_str(), day_number(row.ts_ns)))
                })
            });
            let held_records = if unchanged {
                table.len()
            } else {
                held.as_ref().map_or(0, |held| held.len())
            };
            if !unchanged {
                let mut state = self.write();
                state.parts.extend(parts);
                match held {
                    Some(held) => state.memtable.replace(&table, held),
                    None => state.memtable.forget(&table),
                }
            }
            self.room.notify_all();
            if first_failure.is_none() {
                first_failure = failed.into_iter().next().map(|(tenant, app, day)| {
                    StoreError::PartitionUnwritable {
                        tenant: tenant.to_owned(),
                        app: app.to_owned(),
                        day: day_of(day * NANOS_PER_DAY),
                    }
                });
            }
            self.compact_dedup();
            if held_records == 0 {
                self.delete_segments_through(table.last_segment)?;
            }
            if part_count > 0 {
                self.counters().flushes += 1;
                tracing::info!(
                    records = table.len() - held_records,
                    parts = part_count,
                    held_records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "memtable flushed into parts"
                );
            }
            // Unless a reader still holds it, its rows are dropped here,
            // outside the lock, and its vectors kept for a next table (a
            // held table's are too small to be worth it).
            if table.held {
                continue;
            }
            if let Ok(table) = Arc::try_unwrap(table) {
                let spare = table.into_spare();
                self.write().memtable.recycle(spare);
            }
        }
        *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) =
            first_failure.as_ref().map(ToString::to_string);
        first_failure.map_or(Ok(()), Err)
    }

    /// Writes a table as parts, one per tenant, app and day. Returns the
    /// parts written and the partitions (tenant, app, day number) that
    /// could not be, each failure logged; those are marked unwritable (for
    /// appends to refuse) until a write of theirs succeeds.
    fn write_table<'t>(&self, table: &'t Table) -> (Vec<Arc<Part>>, HashSet<PartitionKey<'t>>) {
        type Key<'t> = PartitionKey<'t>;
        let mut partitions: BTreeMap<Key<'t>, Vec<(&StreamLabels, Vec<&Row>)>> = BTreeMap::new();
        for (stream, records) in table.streams() {
            // Runs of records of one UTC day, found by day number.
            let mut current: Option<(i64, Vec<&Row>)> = None;
            let key = |day| (stream.tenant.as_str(), stream.labels.app.as_str(), day);
            for record in records {
                let day = day_number(record.ts_ns);
                match &mut current {
                    Some((current_day, run)) if *current_day == day => run.push(record),
                    _ => {
                        if let Some((day, run)) = current.take() {
                            partitions
                                .entry(key(day))
                                .or_default()
                                .push((&stream.labels, run));
                        }
                        current = Some((day, vec![record]));
                    }
                }
            }
            if let Some((day, run)) = current {
                partitions
                    .entry(key(day))
                    .or_default()
                    .push((&stream.labels, run));
            }
        }
        let mut written: Vec<Arc<Part>> = Vec::new();
        let mut failed = HashSet::new();
        for ((tenant, app, day), streams) in partitions {
            let partition = Partition {
                day: day_of(day * NANOS_PER_DAY),
                tenant: tenant.to_owned(),
                app: app.to_owned(),
            };
            let result = self.write_part(
                &partition,
                Vec::new(),
                |writer| {
                    for (labels, records) in streams {
                        writer.add_stream(labels.clone(), records)?;
                    }
                    Ok(())
                },
                self.options.zstd_level,
            );
            let mut unwritable = self.unwritable.lock().unwrap_or_else(|e| e.into_inner());
            let app_key = (partition.tenant.clone(), partition.app.clone());
            match result {
                Ok(part) => {
                    written.push(part);
                    if let Some(days) = unwritable.get_mut(&app_key) {
                        days.remove(&day);
                        if days.is_empty() {
                            unwritable.remove(&app_key);
                        }
                    }
                }
                Err(error) => {
                    // Said once, not at every retry.
                    if unwritable.entry(app_key).or_default().insert(day) {
                        tracing::error!(
                            %error,
                            tenant = %partition.tenant,
                            app = %partition.app,
                            day = %partition.day,
                            "a partition could not be written into a part: its records stay in the log and memory and are retried; appends to it are refused meanwhile"
                        );
                    }
                    failed.insert((tenant, app, day));
                }
            }
        }
        (written, failed)
    }

    /// Writes one part of `partition` with what `fill` adds, and opens it.
    fn write_part(
        &self,
        partition: &Partition,
        replaces: Vec<u64>,
        fill: impl FnOnce(&mut PartWriter) -> std::io::Result<()>,
        zstd_level: i32,
    ) -> Result<Arc<Part>, StoreError> {
        let dir = self.partition_dir(partition);
        let number = self.next_part.fetch_add(1, Ordering::AcqRel);
        let name = format!("{number:012}");
        let written =
            PartWriter::create(&dir, &name, partition, zstd_level).and_then(|mut writer| {
                writer.replaces(replaces);
                fill(&mut writer)?;
                writer.finish()
            });
        let (path, _) = written.map_err(StoreError::io(&dir))?;
        let part = Part::open(&path).map_err(|error| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(Arc::new(part))
    }

    /// Removes the log segments up to `last`, whose records are all in
    /// parts now, but those a held table's rows may be in; one is kept as
    /// the spare for a next segment to reuse.
    fn delete_segments_through(&self, last: u64) -> Result<(), StoreError> {
        let held = self.read().memtable.held_through_segment().unwrap_or(0);
        for (number, path) in crate::open::wal_segments(&self.dir)? {
            if number > last || number <= held {
                continue;
            }
            let spare = crate::spare_wal_path(&self.dir);
            if !spare.exists() && crate::wal::is_current_format(&path) {
                std::fs::rename(&path, &spare).map_err(StoreError::io(&path))?;
            } else {
                std::fs::remove_file(&path).map_err(StoreError::io(&path))?;
            }
        }
        Ok(())
    }

    /// Merges parts of like size: in each partition, parts smaller than
    /// [`crate::StoreOptions::merged_part_bytes`] fall in tiers by size
    /// (each tier [`crate::StoreOptions::merge_min_parts`] times the one
    /// below, from [`crate::MERGE_TIER_BASE_BYTES`]), and a tier with that
    /// many parts is merged into one of the next. A record is rewritten once
    /// per tier, not once per merge. Returns how many merges ran.
    pub(crate) fn merge_all(&self) -> Result<usize, StoreError> {
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let mut tiers: BTreeMap<(Partition, u32), Vec<Arc<Part>>> = BTreeMap::new();
        let unmergeable = self
            .unmergeable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for part in &self.read().parts {
            if part.file_len < self.options.merged_part_bytes && !unmergeable.contains(part.path())
            {
                let tier = (part.file_len / crate::MERGE_TIER_BASE_BYTES)
                    .max(1)
                    .ilog(self.options.merge_min_parts.max(2) as u64);
                tiers
                    .entry((part.footer.partition.clone(), tier))
                    .or_default()
                    .push(part.clone());
            }
        }
        let mut merges = 0;
        for ((partition, _), parts) in tiers {
            if parts.len() >= self.options.merge_min_parts.max(2) {
                self.merge(&partition, &parts)?;
                merges += 1;
            }
        }
        Ok(merges)
    }

    fn merge(&self, partition: &Partition, parts: &[Arc<Part>]) -> Result<(), StoreError> {
        let started = Instant::now();
        // Each stream's blocks in all the parts, and the requests each
        // block holds (for the blocks copied whole).
        let mut streams: BTreeMap<&StreamLabels, Vec<SourceBlock>> = BTreeMap::new();
        let mut seq_ranges: BTreeMap<&StreamLabels, Vec<(u64, u64)>> = BTreeMap::new();
        let mut block_requests: Vec<HashMap<u32, Vec<[u8; 8]>>> = Vec::new();
        for (source, part) in parts.iter().enumerate() {
            let footer = &part.footer;
            for (index, block) in footer.blocks.iter().enumerate() {
                let labels = &footer.streams[block.stream as usize].labels;
                streams.entry(labels).or_default().push(SourceBlock {
                    source,
                    part,
                    index,
                    meta: block,
                });
            }
            for stream in &footer.streams {
                seq_ranges
                    .entry(&stream.labels)
                    .or_default()
                    .extend(&stream.seq_ranges);
            }
            let mut requests: HashMap<u32, Vec<[u8; 8]>> = HashMap::new();
            for meta in &footer.requests {
                for block in &meta.blocks {
                    requests.entry(*block).or_default().push(meta.key);
                }
            }
            block_requests.push(requests);
        }
        // Never empty: an empty list marks a flushed part.
        let replaces: Vec<u64> = parts
            .iter()
            .map(|part| part_number(part.path()).unwrap_or(0))
            .collect();
        let mut failure = None;
        let mut damaged = |part: &Path, reason: String| {
            failure = Some((part.to_owned(), reason.clone()));
            std::io::Error::other(reason)
        };
        let mut copied = 0u64;
        let merged = self.write_part(
            partition,
            replaces,
            |writer| {
                writer.merged_from(parts.iter().map(|part| &part.footer));
                for (labels, blocks) in streams {
                    let mut stream = writer.stream::<LogRecord>();
                    // Large blocks are copied whole, whatever their times
                    // (a part's blocks may overlap: readers order records
                    // across blocks); the small ones are rewritten together.
                    let (mut large, small): (Vec<SourceBlock>, Vec<SourceBlock>) =
                        blocks.into_iter().partition(|block| {
                            is_large(block.meta, self.options.merge_copy_min_records)
                        });
                    large.sort_by_key(|block| (block.meta.min_ts, block.meta.min_id));
                    for block in large {
                        let keys = block_requests[block.source]
                            .get(&(block.index as u32))
                            .map_or(&[][..], Vec::as_slice);
                        match block.part.read_compressed(block.index) {
                            Ok(compressed) => stream.copy_block(&compressed, block.meta, keys)?,
                            Err(error) => {
                                return Err(damaged(block.part.path(), error.to_string()));
                            }
                        }
                        copied += 1;
                    }
                    let mut merge = StreamMerge::new(small);
                    let written = merge.by_ref().try_for_each(|record| stream.push(record));
                    if let Some((part, reason)) = merge.failure {
                        return Err(damaged(&part, reason));
                    }
                    written?;
                    if let Some(ranges) = seq_ranges.get(labels) {
                        stream.add_seq_ranges(ranges);
                    }
                    stream.finish(labels.clone())?;
                }
                Ok(())
            },
            self.options.zstd_level,
        );
        let merged = match (merged, failure) {
            (Ok(part), None) => part,
            (_, Some((damaged, reason))) => {
                // A damaged block: leave the parts as they are, so queries
                // still serve what is readable, and leave the damaged part
                // out of merges from now on (the others merge without it),
                // rather than fail on it again every tick.
                tracing::error!(
                    %reason,
                    part = %damaged.display(),
                    "a merge could not read a block; the part is left as it is and out of merges"
                );
                if let Some(part) = parts.iter().find(|part| part.path() == damaged) {
                    self.damage().unmergeable(part, reason);
                }
                let mut unmergeable = self.unmergeable.lock().unwrap_or_else(|e| e.into_inner());
                if unmergeable.insert(damaged) {
                    self.counters().unmergeable_parts += 1;
                }
                return Ok(());
            }
            (Err(error), None) => return Err(error),
        };
        let (records, bytes_before) = (
            merged.footer.records,
            parts.iter().map(|part| part.file_len).sum::<u64>(),
        );
        let bytes_after = merged.file_len;
        let written = merged.footer.blocks.len() as u64 - copied;
        {
            let mut state = self.write();
            state
                .parts
                .retain(|part| !parts.iter().any(|old| Arc::ptr_eq(old, part)));
            state.parts.push(merged);
        }
        for part in parts {
            let _ = std::fs::remove_file(part.path());
        }
        {
            let mut counters = self.counters();
            counters.merges += 1;
            counters.merge_blocks_copied += copied;
            counters.merge_blocks_written += written;
        }
        tracing::info!(
            tenant = %partition.tenant,
            app = %partition.app,
            day = %partition.day,
            parts = parts.len(),
            records,
            blocks_copied = copied,
            blocks_written = written,
            bytes_before,
            bytes_after,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "parts merged"
        );
        Ok(())
    }
}

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// A partition in a table being flushed: tenant, app and day number.
type PartitionKey<'t> = (&'t str, &'t str, i64);

/// The UTC day of a time, as a number of days since the epoch.
pub(crate) fn day_number(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NANOS_PER_DAY)
}

/// A block of a stream in one of a merge's parts.
struct SourceBlock<'a> {
    /// The part's place among the merge's.
    source: usize,
    part: &'a Arc<Part>,
    index: usize,
    meta: &'a BlockMeta,
}

/// Whether a merge copies a block as it is rather than rewrite its records
/// with others: when it holds at least `min_records` records or
/// [`BLOCK_COPY_MIN_BYTES`] bytes. A flush writes each stream's records
/// since the last flush, so its blocks are usually large enough, and a
/// record is then compressed once, however many merges its part goes
/// through.
fn is_large(meta: &BlockMeta, min_records: usize) -> bool {
    meta.count as usize >= min_records || meta.raw_len as usize >= BLOCK_COPY_MIN_BYTES
}

/// One stream's records from blocks of several parts, in time order (then
/// id), built a record at a time. A block is opened only when its first
/// record could come next, so memory holds the blocks whose times overlap
/// the position reached, not all of them.
struct StreamMerge<'a> {
    /// Blocks not yet opened, the one with the earliest start last.
    pending: Vec<SourceBlock<'a>>,
    open: Vec<Option<OpenBlock<'a>>>,
    /// The next record of each open block, by (time, id).
    heap: BinaryHeap<std::cmp::Reverse<((i64, u64), usize)>>,
    /// The part a block could not be read from, and why.
    failure: Option<(PathBuf, String)>,
}

struct OpenBlock<'a> {
    part: &'a Part,
    block: DecodedBlock,
    /// Its next record.
    position: usize,
}

impl<'a> StreamMerge<'a> {
    fn new(mut blocks: Vec<SourceBlock<'a>>) -> StreamMerge<'a> {
        blocks.sort_by_key(|block| std::cmp::Reverse((block.meta.min_ts, block.meta.min_id)));
        StreamMerge {
            pending: blocks,
            open: Vec::new(),
            heap: BinaryHeap::new(),
            failure: None,
        }
    }

    /// Opens every pending block whose records could come before the
    /// heap's head: no record of a block comes before (its min time, its
    /// min id).
    fn open_due(&mut self) {
        while let Some(next) = self.pending.last() {
            let start = (next.meta.min_ts, next.meta.min_id);
            if self
                .heap
                .peek()
                .is_some_and(|std::cmp::Reverse((head, _))| start > *head)
            {
                return;
            }
            let next = self.pending.pop().expect("peeked");
            match next.part.open_block(next.index) {
                Ok(block) => {
                    let slot = match self.open.iter().position(Option::is_none) {
                        Some(free) => free,
                        None => {
                            self.open.push(None);
                            self.open.len() - 1
                        }
                    };
                    self.open[slot] = Some(OpenBlock {
                        part: next.part,
                        block,
                        position: 0,
                    });
                    self.queue(slot);
                }
                Err(error) => {
                    self.failure = Some((next.part.path().to_owned(), error.to_string()));
                    return;
                }
            }
        }
    }

    /// Queues the next record of an open block, or closes it.
    fn queue(&mut self, slot: usize) {
        let Some(open) = &self.open[slot] else { return };
        if open.position < open.block.len() {
            let key = (open.block.ts(open.position), open.block.id(open.position));
            self.heap.push(std::cmp::Reverse((key, slot)));
        } else {
            self.open[slot] = None;
        }
    }
}

impl Iterator for StreamMerge<'_> {
    type Item = LogRecord;

    fn next(&mut self) -> Option<LogRecord> {
        self.open_due();
        if self.failure.is_some() {
            return None;
        }
        let std::cmp::Reverse((_, slot)) = self.heap.pop()?;
        let open = self.open[slot].as_mut()?;
        let record = match open.block.record(open.position) {
            Ok(record) => record,
            Err(reason) => {
                self.failure = Some((
                    open.part.path().to_owned(),
                    format!("part {} is corrupt: {reason}", open.part.path().display()),
                ));
                return None;
            }
        };
        open.position += 1;
        self.queue(slot);
        Some(record)
    }
}

/// The background thread: flushes frozen tables, flushes the memtable when
/// it is old enough, fsyncs on the interval, and merges, until the store is
/// dropped.
pub(crate) fn background(inner: &Inner) {
    let interval = match inner.options.durability {
        Durability::Interval(every) => Some(every.max(Duration::from_millis(1))),
        _ => None,
    };
    let mut last_sync = Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        {
            let (stop, wake) = &inner.wake;
            let stopped = stop.lock().unwrap_or_else(|e| e.into_inner());
            if *stopped {
                break;
            }
            let timeout = interval.map_or(TICK, |every| every.min(TICK));
            let (stopped, _) = wake
                .wait_timeout(stopped, timeout)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                break;
            }
        }
        if let Some(every) = interval {
            if last_sync.elapsed() >= every {
                inner.sync_log();
                last_sync = Instant::now();
            }
        }
        let old = {
            let state = inner.read();
            !state.memtable.active_is_empty()
                && state.memtable.active_age() >= inner.options.memtable_max_age
        };
        let flushed = if old {
            inner.flush_all()
        } else {
            inner.flush_frozen()
        };
        // A partition that cannot be written does not hold up the merges
        // of the others.
        let merged = inner.merge_all().map(|_| ());
        let result = flushed.and(merged);
        match result {
            Ok(()) => last_error = None,
            Err(error) => {
                let error = error.to_string();
                // Retried every tick; said once until it changes.
                if last_error.as_ref() != Some(&error) {
                    tracing::error!(%error, "background flush or merge failed; retrying");
                }
                last_error = Some(error);
            }
        }
    }
}
