//! Writing a part: streams cut into blocks, indexed, written, fsynced and
//! renamed into place.
//!
//! [`PartWriter`] takes one stream at a time, its records in time order, and
//! writes each block as soon as it is full, so a flush or a merge holds one
//! block in memory, not the part.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tailwater_model::time::timestamp_ns;
use tailwater_model::LogRecord;

use super::block::{self, BlockRecord};
use super::bloom::{BloomBuilder, WordBloom};
use super::layout::BlockCompressor;
use super::{
    BlockMeta, Footer, Partition, RequestMeta, StreamLabels, StreamMeta, EXTENSION, MAGIC,
};

/// Records in one block at most.
pub const BLOCK_MAX_RECORDS: usize = 8192;
/// Message bytes in one block at most (a single longer record is alone).
pub const BLOCK_MAX_BYTES: usize = 1024 * 1024;
/// Records and message bytes in one block of a settled part at most
/// ([`PartWriter::settled_blocks`]): zstd finds more in a larger block (a
/// runner's lines in 4 MiB, not 1, are about 8 % smaller at level 19), and
/// a settled part is read, not written to. Also the most records any block
/// holds, which a footer is checked against.
pub const SETTLED_BLOCK_MAX_RECORDS: usize = 4 * BLOCK_MAX_RECORDS;
pub const SETTLED_BLOCK_MAX_BYTES: usize = 4 * BLOCK_MAX_BYTES;
/// A merge copies a block as it is (rather than rewriting its records with
/// others into a fuller block) when it holds this many bytes of columns,
/// or enough records ([`crate::StoreOptions::merge_copy_min_records`]).
pub const BLOCK_COPY_MIN_BYTES: usize = BLOCK_MAX_BYTES / 2;

/// A part being written.
pub struct PartWriter {
    dir: PathBuf,
    final_path: PathBuf,
    temporary_path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    footer: Footer,
    /// By [`super::request_key`].
    requests: HashMap<[u8; 8], RequestSpan>,
    /// Set for a merge: its inputs' totals.
    merged: Option<MergeTotals>,
    /// Builds each block's word filter; kept, so its set's room is.
    words: BloomBuilder,
    compressor: BlockCompressor,
    /// Records and message bytes a block holds at most.
    block_max: (usize, usize),
    finished: bool,
}

/// A stream being written: records gather into a block until it is full.
pub struct StreamWriter<'w, R> {
    part: &'w mut PartWriter,
    index: u32,
    seqs: SeqRanges,
    chunk: Vec<R>,
    chunk_bytes: usize,
    /// Records a block holds at most (up to its part's most).
    block_records: usize,
}

impl<R: BlockRecord> StreamWriter<'_, R> {
    /// Adds the next record (in time order, then id).
    pub fn push(&mut self, record: R) -> io::Result<()> {
        let len = record.message().len();
        if !self.chunk.is_empty()
            && (self.chunk.len() == self.block_records
                || self.chunk_bytes + len > self.part.block_max.1)
        {
            self.write_chunk()?;
        }
        self.chunk_bytes += len;
        self.chunk.push(record);
        Ok(())
    }

    /// Adds a block of another part whole, as the next records: `compressed`
    /// as read, `meta` its index entry there, `request_keys` the requests
    /// it holds.
    pub fn copy_block(
        &mut self,
        compressed: &[u8],
        meta: &BlockMeta,
        request_keys: &[[u8; 8]],
    ) -> io::Result<()> {
        self.write_chunk()?;
        self.part
            .copy_block(self.index, compressed, meta, request_keys)
    }

    /// Adds sequence numbers held by copied blocks (from their parts'
    /// stream index).
    pub fn add_seq_ranges(&mut self, ranges: &[(u64, u64)]) {
        for &(start, end) in ranges {
            self.seqs.add_range(start, end);
        }
    }

    pub fn finish(mut self, labels: StreamLabels) -> io::Result<()> {
        self.write_chunk()?;
        let seqs = std::mem::take(&mut self.seqs);
        self.part.footer.streams.push(StreamMeta {
            labels,
            seq_ranges: seqs.finish(),
        });
        Ok(())
    }

    fn write_chunk(&mut self) -> io::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.part
            .write_block(self.index, &self.chunk, &mut self.seqs)?;
        self.chunk.clear();
        self.chunk_bytes = 0;
        Ok(())
    }
}

/// A merge's inputs' totals.
#[derive(Default)]
struct MergeTotals {
    raw_bytes: u64,
    requests: HashMap<[u8; 8], RequestSpan>,
}

impl PartWriter {
    /// Starts the part `dir/<name>.twp` (written as `<name>.tmp` until
    /// [`PartWriter::finish`]).
    pub fn create(
        dir: &Path,
        name: &str,
        partition: &Partition,
        zstd_level: i32,
    ) -> io::Result<PartWriter> {
        crate::create_private_dir_all(dir)?;
        let temporary_path = dir.join(format!("{name}.tmp"));
        Ok(PartWriter {
            dir: dir.to_owned(),
            final_path: dir.join(format!("{name}.{EXTENSION}")),
            out: BufWriter::with_capacity(
                1 << 20,
                crate::private_file()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&temporary_path)?,
            ),
            temporary_path,
            offset: 0,
            footer: Footer {
                partition: partition.clone(),
                records: 0,
                raw_bytes: 0,
                min_ts: i64::MAX,
                max_ts: i64::MIN,
                min_id: u64::MAX,
                max_id: 0,
                streams: Vec::new(),
                blocks: Vec::new(),
                requests: Vec::new(),
                replaces: Vec::new(),
            },
            requests: HashMap::new(),
            merged: None,
            words: WordBloom::builder(),
            compressor: BlockCompressor::new(zstd_level)?,
            block_max: (BLOCK_MAX_RECORDS, BLOCK_MAX_BYTES),
            finished: false,
        })
    }

    /// Writes blocks of up to [`SETTLED_BLOCK_MAX_RECORDS`] and
    /// [`SETTLED_BLOCK_MAX_BYTES`]: for a part settled at rest.
    /// Its blocks are compressed with a bounded window, in format 3 when
    /// `numbers_apart` ([`super::layout::BlockCompressor::settled`]).
    pub fn settled_blocks(&mut self, numbers_apart: bool) -> io::Result<()> {
        self.block_max = (SETTLED_BLOCK_MAX_RECORDS, SETTLED_BLOCK_MAX_BYTES);
        self.compressor.settled(numbers_apart)
    }

    /// Marks the parts this one replaces (a merge's inputs).
    pub fn replaces(&mut self, parts: Vec<u64>) {
        self.footer.replaces = parts;
    }

    /// Writes one stream: `records` all have `labels` and come in time order
    /// (then id). A stream may be added once.
    ///
    /// When the number of records is known, they are spread evenly over the
    /// fewest blocks that hold them (9,000 records make two blocks of 4,500,
    /// not 8,192 and 808), so none is left small: a merge copies large
    /// blocks and rewrites small ones together, and a block rewritten from
    /// the small ends of many flushes would span them all, which a scan then
    /// holds open beside each of them.
    pub fn add_stream<R: BlockRecord>(
        &mut self,
        labels: StreamLabels,
        records: impl IntoIterator<Item = R>,
    ) -> io::Result<()> {
        let records = records.into_iter();
        let mut stream = self.stream();
        if let (count, Some(upper)) = records.size_hint() {
            if count == upper && count > 0 {
                stream.block_records = count.div_ceil(count.div_ceil(BLOCK_MAX_RECORDS));
            }
        }
        for record in records {
            stream.push(record)?;
        }
        stream.finish(labels)
    }

    /// Starts the next stream, to be given its records (and, in a merge,
    /// whole blocks) in time order, then finished with its labels.
    pub fn stream<R: BlockRecord>(&mut self) -> StreamWriter<'_, R> {
        StreamWriter {
            index: self.footer.streams.len() as u32,
            seqs: SeqRanges::default(),
            chunk: Vec::new(),
            chunk_bytes: 0,
            block_records: self.block_max.0,
            part: self,
        }
    }

    /// Makes this part a merge of parts with these footers: their totals
    /// (message bytes, and each request's record count, first and last
    /// time and status) become the part's, since blocks copied whole are
    /// not read record by record.
    pub fn merged_from<'a>(&mut self, footers: impl IntoIterator<Item = &'a Footer>) {
        let mut totals = MergeTotals::default();
        for footer in footers {
            totals.raw_bytes += footer.raw_bytes;
            for meta in &footer.requests {
                let (first_ts, last_ts) = footer.request_times(meta);
                let span = totals.requests.entry(meta.key).or_insert(RequestSpan {
                    blocks: Vec::new(),
                    stream: meta.stream,
                    records: 0,
                    first_ts,
                    last_ts,
                    status: None,
                });
                span.records += meta.records;
                span.first_ts = span.first_ts.min(first_ts);
                if meta.status.is_some() && (span.status.is_none() || last_ts >= span.last_ts) {
                    span.status = meta.status;
                }
                span.last_ts = span.last_ts.max(last_ts);
            }
        }
        self.merged = Some(totals);
    }

    fn write_block<R: BlockRecord>(
        &mut self,
        stream: u32,
        records: &[R],
        seqs: &mut SeqRanges,
    ) -> io::Result<()> {
        let block_index = self.footer.blocks.len() as u32;
        let (compressed, meta) = block::encode_with(
            records,
            &mut self.compressor,
            &mut self.words,
            stream,
            self.offset,
        );
        self.out.write_all(&compressed)?;
        self.offset += u64::from(meta.len);
        for record in records {
            seqs.add(record.seq());
            self.footer.raw_bytes += record.message().len() as u64;
            if let Some(request_id) = record.request_id() {
                let ts = record.ts_ns();
                let entry = self
                    .requests
                    .entry(super::request_key(request_id))
                    .or_insert_with(|| RequestSpan {
                        blocks: Vec::new(),
                        stream,
                        records: 0,
                        first_ts: ts,
                        last_ts: ts,
                        status: None,
                    });
                if entry.blocks.last() != Some(&block_index) {
                    entry.blocks.push(block_index);
                }
                entry.records += 1;
                entry.first_ts = entry.first_ts.min(ts);
                entry.last_ts = entry.last_ts.max(ts);
                if let Some(status) = record.status() {
                    entry.status = Some(status);
                }
            }
        }
        self.add_block_meta(meta);
        Ok(())
    }

    /// Writes a block of another part as it is: its compressed bytes and
    /// its index entry (with this part's offset and stream), and adds it
    /// to the requests with these keys.
    fn copy_block(
        &mut self,
        stream: u32,
        compressed: &[u8],
        meta: &BlockMeta,
        request_keys: &[[u8; 8]],
    ) -> io::Result<()> {
        let block_index = self.footer.blocks.len() as u32;
        self.out.write_all(compressed)?;
        let meta = BlockMeta {
            stream,
            offset: self.offset,
            ..meta.clone()
        };
        self.offset += compressed.len() as u64;
        for key in request_keys {
            let entry = self.requests.entry(*key).or_insert_with(|| RequestSpan {
                blocks: Vec::new(),
                stream,
                records: 0,
                first_ts: meta.min_ts,
                last_ts: meta.max_ts,
                status: None,
            });
            entry.blocks.push(block_index);
        }
        self.add_block_meta(meta);
        Ok(())
    }

    fn add_block_meta(&mut self, meta: BlockMeta) {
        self.footer.records += u64::from(meta.count);
        self.footer.min_ts = self.footer.min_ts.min(meta.min_ts);
        self.footer.max_ts = self.footer.max_ts.max(meta.max_ts);
        self.footer.min_id = self.footer.min_id.min(meta.min_id);
        self.footer.max_id = self.footer.max_id.max(meta.max_id);
        self.footer.blocks.push(meta);
    }

    /// Writes the footer, fsyncs, and renames the part into place. Durable
    /// when it returns: the file and its directory entry are fsynced.
    pub fn finish(mut self) -> io::Result<(PathBuf, Footer)> {
        assert!(self.footer.records > 0, "a part holds at least one record");
        let min_ts = self.footer.min_ts;
        let merged = self.merged.take();
        if let Some(merged) = &merged {
            self.footer.raw_bytes = merged.raw_bytes;
        }
        let mut requests: Vec<RequestMeta> = self
            .requests
            .drain()
            .map(|(key, mut span)| {
                span.blocks.sort_unstable();
                span.blocks.dedup();
                if let Some(total) = merged.as_ref().and_then(|m| m.requests.get(&key)) {
                    span.records = total.records;
                    span.first_ts = total.first_ts;
                    span.last_ts = total.last_ts;
                    span.status = total.status;
                }
                RequestMeta {
                    key,
                    blocks: span.blocks,
                    stream: span.stream,
                    records: span.records,
                    first_after_min: span.first_ts.wrapping_sub(min_ts) as u64,
                    duration: span.last_ts.wrapping_sub(span.first_ts) as u64,
                    status: span.status,
                }
            })
            .collect();
        requests.sort_by_key(|meta| meta.key);
        self.footer.requests = requests;
        let encoded = zstd::bulk::compress(
            &postcard::to_stdvec(&self.footer).expect("footer serializes"),
            3,
        )?;
        self.out.write_all(&encoded)?;
        self.out.write_all(&(encoded.len() as u32).to_le_bytes())?;
        self.out
            .write_all(&crc32fast::hash(&encoded).to_le_bytes())?;
        self.out.write_all(MAGIC)?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        fs::rename(&self.temporary_path, &self.final_path)?;
        self.finished = true;
        File::open(&self.dir)?.sync_all()?;
        Ok((self.final_path.clone(), self.footer.clone()))
    }
}

impl Drop for PartWriter {
    /// An unfinished part leaves nothing behind.
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.temporary_path);
        }
    }
}

/// Writes `records` (all of `partition`, any order) as one part: grouped by
/// stream, each in time order. For tests and small writes; the store's flush
/// and merge feed [`PartWriter`] stream by stream.
pub fn write_part(
    dir: &Path,
    name: &str,
    partition: &Partition,
    records: &[LogRecord],
) -> io::Result<(PathBuf, Footer)> {
    let mut by_stream: BTreeMap<StreamLabels, Vec<&LogRecord>> = BTreeMap::new();
    for record in records {
        by_stream.entry(labels_of(record)).or_default().push(record);
    }
    let mut writer = PartWriter::create(dir, name, partition, crate::DEFAULT_ZSTD_LEVEL)?;
    for (labels, mut stream) in by_stream {
        stream.sort_by_key(|r| (timestamp_ns(r.ts), r.position));
        writer.add_stream(labels, stream)?;
    }
    writer.finish()
}

pub fn labels_of(record: &LogRecord) -> StreamLabels {
    StreamLabels {
        app: record.app.clone(),
        version: record.version.clone(),
        runner: record.runner.clone(),
        boot: record.boot.clone(),
        source: record.source,
    }
}

/// One request's records in the part being written.
struct RequestSpan {
    blocks: Vec<u32>,
    stream: u32,
    records: u64,
    first_ts: i64,
    last_ts: i64,
    status: Option<i64>,
}

/// Sorted, disjoint, inclusive ranges of sequence numbers, built from
/// numbers that mostly come in order.
#[derive(Default)]
struct SeqRanges {
    ranges: Vec<(u64, u64)>,
    unsorted: bool,
}

impl SeqRanges {
    fn add(&mut self, seq: u64) {
        match self.ranges.last_mut() {
            Some((_, end)) if *end + 1 == seq => *end = seq,
            Some((start, end)) if (*start..=*end).contains(&seq) => {}
            Some((_, end)) if *end > seq => {
                self.unsorted = true;
                self.ranges.push((seq, seq));
            }
            _ => self.ranges.push((seq, seq)),
        }
    }

    /// Adds the numbers `start..=end`, in any order.
    fn add_range(&mut self, start: u64, end: u64) {
        self.unsorted = true;
        self.ranges.push((start, end));
    }

    fn finish(mut self) -> Vec<(u64, u64)> {
        if !self.unsorted {
            return self.ranges;
        }
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for (start, end) in self.ranges {
            match merged.last_mut() {
                Some((_, last_end)) if *last_end + 1 >= start => *last_end = (*last_end).max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}
