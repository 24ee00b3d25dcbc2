//! Small parts to larger ones. Merges take a partition's small parts, by
//! tiers of size, and write one part with their records, each stream merged
//! in time order a block at a time (large blocks of one source copied
//! whole), so memory stays bounded whatever the partition's size. The
//! merged part names the parts it replaces; if a crash leaves them behind,
//! opening the store deletes them.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tailwater_model::LogRecord;

use crate::part::block::DecodedBlock;
use crate::part::reader::Part;
use crate::part::writer::BLOCK_COPY_MIN_BYTES;
use crate::part::{BlockMeta, Partition, StreamLabels};
use crate::{part_number, Inner, StoreError};

impl Inner {
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
                self.merge(&partition, &parts, false)?;
                merges += 1;
            }
        }
        Ok(merges)
    }

    /// Settles flushed parts of one partition (that of the oldest, up to
    /// [`crate::SETTLE_STEP_BYTES`] of them): writes them again as one
    /// part at
    /// [`crate::StoreOptions::merge_zstd_level`], every stream's records
    /// in full blocks (a flush's are as large as its memtable let them be),
    /// as a merge that lists them as replaced, so a part is settled once.
    /// Returns whether there was one to settle; never when merges compress
    /// no harder than flushes.
    pub(crate) fn settle_one(&self) -> Result<bool, StoreError> {
        if self.options.merge_zstd_level <= self.options.zstd_level {
            return Ok(false);
        }
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let unmergeable = self
            .unmergeable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let flushed: Vec<Arc<Part>> = self
            .read()
            .parts
            .iter()
            .filter(|part| {
                part.footer.replaces.is_empty()
                    && part.file_len < self.options.merged_part_bytes
                    && !unmergeable.contains(part.path())
            })
            .cloned()
            .collect();
        let Some(oldest) = flushed
            .iter()
            .min_by_key(|part| part_number(part.path()).unwrap_or(0))
        else {
            return Ok(false);
        };
        let partition = oldest.footer.partition.clone();
        let mut in_partition: Vec<&Arc<Part>> = flushed
            .iter()
            .filter(|part| part.footer.partition == partition)
            .collect();
        in_partition.sort_by_key(|part| part_number(part.path()).unwrap_or(0));
        // Oldest first, up to a step's bytes (one part at least): the
        // thread that settles is the one that flushes.
        let mut parts: Vec<Arc<Part>> = Vec::new();
        let mut bytes = 0u64;
        for part in in_partition {
            if !parts.is_empty() && bytes + part.file_len > crate::SETTLE_STEP_BYTES {
                break;
            }
            bytes += part.file_len;
            parts.push(part.clone());
        }
        self.merge(&partition, &parts, true)?;
        // A merge that met a damaged block left its parts as they were.
        let state = self.read();
        let settled = parts
            .iter()
            .filter(|part| !state.parts.iter().any(|live| Arc::ptr_eq(live, part)))
            .count();
        drop(state);
        self.counters().parts_settled += settled as u64;
        Ok(true)
    }

    /// Flushes what is due, for a settling step between its blocks (it
    /// holds `flushing` and runs on the thread that flushes): the frozen
    /// tables, and the active one once past its age, so a flush waits
    /// behind at most a block of settling, not the whole step. Counted in
    /// `Counters::settle_flushes`; a failure is logged and left to the
    /// background thread's next tick, which retries it.
    fn flush_due(&self) {
        let (frozen, old) = {
            let state = self.read();
            (
                state.memtable.frozen_count() > 0,
                !state.memtable.active_is_empty()
                    && state.memtable.active_age() >= self.options.memtable_max_age,
            )
        };
        if !frozen && !old {
            return;
        }
        let flushed = if old {
            let mut writer = self.lock_writer();
            let mut state = self.write();
            self.freeze(&mut writer, &mut state)
        } else {
            Ok(())
        }
        .and_then(|()| self.flush_frozen_locked());
        self.counters().settle_flushes += 1;
        if let Err(error) = flushed {
            tracing::error!(%error, "a flush during settling failed; retrying");
        }
    }

    /// Merges `parts` into one; `rewrite`: every block's records written
    /// anew into full blocks, none copied.
    fn merge(
        &self,
        partition: &Partition,
        parts: &[Arc<Part>],
        rewrite: bool,
    ) -> Result<(), StoreError> {
        let cpu = crate::thread_cpu_ns();
        let merged = self.merge_timed(partition, parts, rewrite);
        let spent = crate::thread_cpu_ns().saturating_sub(cpu);
        self.counters().merge_cpu_ns += spent;
        merged
    }

    fn merge_timed(
        &self,
        partition: &Partition,
        parts: &[Arc<Part>],
        rewrite: bool,
    ) -> Result<(), StoreError> {
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
        // A settling step looks for a due flush every so many records it
        // writes (all streams together); the longest it went without is
        // the most a flush waited behind it.
        let mut pushed = 0usize;
        let mut last_look = Instant::now();
        let mut longest_gap = std::time::Duration::ZERO;
        // Settling writes every record again at the merge level; a tier
        // merge copies large blocks as they are and writes the small ones'
        // records at a flush's level, so it stays as cheap as a flush (it
        // runs while ingest does, on the thread that flushes).
        let level = if rewrite {
            self.options.merge_zstd_level
        } else {
            self.options.zstd_level
        };
        let merged = self.write_part(
            partition,
            replaces,
            |writer| {
                writer.merged_from(parts.iter().map(|part| &part.footer));
                if rewrite {
                    writer.settled_blocks(self.options.settle_numbers_apart)?;
                }
                for (labels, blocks) in streams {
                    let mut stream = writer.stream::<LogRecord>();
                    // Large blocks are copied whole, whatever their times
                    // (a part's blocks may overlap: readers order records
                    // across blocks); the small ones are rewritten together.
                    let (mut large, small): (Vec<SourceBlock>, Vec<SourceBlock>) =
                        blocks.into_iter().partition(|block| {
                            !rewrite && is_large(block.meta, self.options.merge_copy_min_records)
                        });
                    large.sort_by_key(|block| (block.meta.min_ts, block.meta.min_id));
                    for block in large {
                        let keys = block_requests[block.source]
                            .get(&(block.index as u32))
                            .map_or(&[][..], Vec::as_slice);
                        let compressed = match block.part.read_compressed(block.index) {
                            Ok(compressed) => compressed,
                            Err(error) => {
                                return Err(damaged(block.part.path(), error.to_string()));
                            }
                        };
                        stream.copy_block(&compressed, block.meta, keys)?;
                        copied += 1;
                    }
                    let mut merge = StreamMerge::new(small);
                    let written = merge.by_ref().try_for_each(|record| {
                        pushed += 1;
                        if rewrite && pushed.is_multiple_of(crate::SETTLE_FLUSH_CHECK_RECORDS) {
                            longest_gap = longest_gap.max(last_look.elapsed());
                            self.flush_due();
                            last_look = Instant::now();
                        }
                        stream.push(record)
                    });
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
            level,
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
            if rewrite {
                let longest_gap = longest_gap.max(last_look.elapsed()).as_nanos() as u64;
                counters.settle_longest_flush_wait_ns =
                    counters.settle_longest_flush_wait_ns.max(longest_gap);
            }
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
