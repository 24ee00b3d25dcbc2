//! Writing a part: sort, cut into blocks, index, write, fsync, rename.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tailwater_model::filter::timestamp_ns;
use tailwater_model::words::words;
use tailwater_model::LogRecord;

use super::block::{self, level_code, stream_code};
use super::bloom::WordBloom;
use super::{BlockMeta, Footer, Partition, StreamLabels, StreamMeta, EXTENSION, MAGIC};

/// Records in one block at most.
pub const BLOCK_MAX_RECORDS: usize = 8192;
/// Message bytes in one block at most (a single longer record is alone).
pub const BLOCK_MAX_BYTES: usize = 1024 * 1024;

/// Writes `records` (all of `partition`) as the part `dir/<name>.twp` and
/// returns its footer. Durable when it returns: the file and its directory entry are
/// fsynced.
pub fn write_part(
    dir: &Path,
    name: &str,
    partition: &Partition,
    records: &[LogRecord],
) -> io::Result<(PathBuf, Footer)> {
    assert!(!records.is_empty(), "a part holds at least one record");
    fs::create_dir_all(dir)?;
    let final_path = dir.join(format!("{name}.{EXTENSION}"));
    let temporary_path = dir.join(format!("{name}.tmp"));

    // Streams in label order; each stream's records in time order.
    let mut by_stream: BTreeMap<StreamLabels, Vec<&LogRecord>> = BTreeMap::new();
    for record in records {
        by_stream.entry(labels_of(record)).or_default().push(record);
    }

    let mut footer = Footer {
        partition: partition.clone(),
        records: records.len() as u64,
        raw_bytes: records.iter().map(|r| r.message.len() as u64).sum(),
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        min_id: u64::MAX,
        max_id: 0,
        streams: Vec::new(),
        blocks: Vec::new(),
        requests: Vec::new(),
    };
    let mut requests: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&temporary_path)?);
    let mut offset = 0u64;
    for (stream_index, (labels, mut stream_records)) in by_stream.into_iter().enumerate() {
        stream_records.sort_by_key(|r| (timestamp_ns(r.ts), r.id));
        footer.streams.push(StreamMeta {
            seq_ranges: seq_ranges(&stream_records),
            labels,
        });
        for chunk in blocks_of(&stream_records) {
            let block_index = footer.blocks.len() as u32;
            let (compressed, raw_len) = block::encode(chunk);
            let meta = block_meta(stream_index as u32, offset, chunk, &compressed, raw_len);
            out.write_all(&compressed)?;
            offset += compressed.len() as u64;
            for record in chunk {
                if let Some(request_id) = &record.request_id {
                    requests
                        .entry(request_id.clone())
                        .or_default()
                        .insert(block_index);
                }
            }
            footer.min_ts = footer.min_ts.min(meta.min_ts);
            footer.max_ts = footer.max_ts.max(meta.max_ts);
            footer.min_id = footer.min_id.min(meta.min_id);
            footer.max_id = footer.max_id.max(meta.max_id);
            footer.blocks.push(meta);
        }
    }
    footer.requests = requests
        .into_iter()
        .map(|(id, blocks)| (id, blocks.into_iter().collect()))
        .collect();

    let encoded =
        zstd::bulk::compress(&postcard::to_stdvec(&footer).expect("footer serializes"), 3)?;
    out.write_all(&encoded)?;
    out.write_all(&(encoded.len() as u32).to_le_bytes())?;
    out.write_all(&crc32fast::hash(&encoded).to_le_bytes())?;
    out.write_all(MAGIC)?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary_path, &final_path)?;
    File::open(dir)?.sync_all()?;
    Ok((final_path, footer))
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

/// Cuts a stream's records into blocks by count and message bytes.
fn blocks_of<'a, 'r>(records: &'a [&'r LogRecord]) -> impl Iterator<Item = &'a [&'r LogRecord]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut len = 0;
        while len < rest.len() && len < BLOCK_MAX_RECORDS {
            bytes += rest[len].message.len();
            if bytes > BLOCK_MAX_BYTES && len > 0 {
                break;
            }
            len += 1;
        }
        let (block, after) = rest.split_at(len);
        rest = after;
        Some(block)
    })
}

fn block_meta(
    stream: u32,
    offset: u64,
    records: &[&LogRecord],
    compressed: &[u8],
    raw_len: usize,
) -> BlockMeta {
    let mut distinct_words: HashMap<String, ()> = HashMap::new();
    let (mut levels, mut outputs) = (0u8, 0u8);
    for record in records {
        levels |= 1 << level_code(record.level);
        outputs |= 1 << stream_code(record.stream);
        for word in words(&record.message) {
            if !distinct_words.contains_key(word) {
                distinct_words.insert(word.to_ascii_lowercase(), ());
            }
        }
    }
    BlockMeta {
        stream,
        offset,
        len: compressed.len() as u32,
        raw_len: raw_len as u32,
        crc32: crc32fast::hash(compressed),
        count: records.len() as u32,
        min_ts: records
            .iter()
            .map(|r| timestamp_ns(r.ts))
            .min()
            .unwrap_or_default(),
        max_ts: records
            .iter()
            .map(|r| timestamp_ns(r.ts))
            .max()
            .unwrap_or_default(),
        min_id: records.iter().map(|r| r.id).min().unwrap_or_default(),
        max_id: records.iter().map(|r| r.id).max().unwrap_or_default(),
        levels,
        outputs,
        words: WordBloom::build(distinct_words.keys().map(String::as_str)),
    }
}

/// Sorted, disjoint, inclusive ranges of the records' sequence numbers.
fn seq_ranges(records: &[&LogRecord]) -> Vec<(u64, u64)> {
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for seq in seqs {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == seq => *end = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    ranges
}
