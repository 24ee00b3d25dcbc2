//! A block: records of one stream in time order, stored as columns and
//! compressed with zstd.
//!
//! Columns are chosen for what compresses: times as whole milliseconds and
//! what is below them apart ([`layout`]), ids and sequence numbers as
//! deltas, level and output stream in one byte, request ids as a
//! dictionary, messages one per line so zstd sees them as one text (with a
//! length column only in a block where a message holds a newline), and
//! fields as compact JSON, one object per line. Numbers, messages and
//! fields are compressed apart ([`layout`] has the bytes, and the format
//! of older blocks, still read).
//!
//! Reading goes through [`DecodedBlock`]: the columns decompressed once,
//! records built one at a time as a reader takes them, so a scan holds a
//! block's columns (about its raw size), never a block of built records.

use std::ops::Range;

use tailwater_model::filter::{Labels, RecordParts};
use tailwater_model::time::{timestamp_from_ns, timestamp_ns};
use tailwater_model::{Fields, Level, LogRecord, Stream};

use super::bloom::{BloomBuilder, WordBloom};
use super::layout::{self, BlockCompressor, ColumnsV1, Numbers, Raw};
use super::{BlockMeta, StreamLabels};

/// A block's columns once read, whatever its format.
#[derive(Default)]
struct Columns {
    kind: Vec<u8>,
    request_dictionary: Vec<String>,
    /// 0 for none, else 1 + an index into `request_dictionary`.
    request: Vec<u32>,
    /// Empty when no message holds a newline: then `messages` has one per
    /// line.
    message_len: Vec<u32>,
    messages: String,
    /// Each record's fields as compact JSON (which never holds a raw
    /// newline), one per line; an empty line for none.
    fields: Vec<u8>,
    /// Positions of records whose output was not valid UTF-8.
    invalid_utf8: Vec<u32>,
}

const LEVEL_BITS: u8 = 3;

thread_local! {
    /// One zstd decompression context a thread, made on first use: setting
    /// one up for every block read was a measurable part of a scan.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// What a block stores of a record: all but its labels (its stream's). A
/// flush writes the memtable's rows, a merge the records it decoded.
pub trait BlockRecord {
    fn ts_ns(&self) -> i64;
    fn id(&self) -> u64;
    fn seq(&self) -> u64;
    fn level(&self) -> Level;
    fn stream(&self) -> Stream;
    fn request_id(&self) -> Option<&str>;
    fn message(&self) -> &str;
    /// Appends the fields as compact JSON (nothing for none).
    fn write_fields(&self, out: &mut Vec<u8>);
    fn invalid_utf8(&self) -> bool;
    /// The status a request's end record reports: a numeric `status` field
    /// on a system record.
    fn status(&self) -> Option<i64>;
}

impl BlockRecord for LogRecord {
    fn ts_ns(&self) -> i64 {
        timestamp_ns(self.ts)
    }
    fn id(&self) -> u64 {
        self.position
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn level(&self) -> Level {
        self.level
    }
    fn stream(&self) -> Stream {
        self.stream
    }
    fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }
    fn message(&self) -> &str {
        &self.message
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        if !self.fields.is_empty() {
            serde_json::to_writer(out, &self.fields).expect("fields serialize to json");
        }
    }
    fn invalid_utf8(&self) -> bool {
        self.invalid_utf8
    }
    fn status(&self) -> Option<i64> {
        if self.stream != Stream::System {
            return None;
        }
        self.fields.get("status")?.as_i64()
    }
}

impl<T: BlockRecord> BlockRecord for &T {
    fn ts_ns(&self) -> i64 {
        (**self).ts_ns()
    }
    fn id(&self) -> u64 {
        (**self).id()
    }
    fn seq(&self) -> u64 {
        (**self).seq()
    }
    fn level(&self) -> Level {
        (**self).level()
    }
    fn stream(&self) -> Stream {
        (**self).stream()
    }
    fn request_id(&self) -> Option<&str> {
        (**self).request_id()
    }
    fn message(&self) -> &str {
        (**self).message()
    }
    fn write_fields(&self, out: &mut Vec<u8>) {
        (**self).write_fields(out)
    }
    fn invalid_utf8(&self) -> bool {
        (**self).invalid_utf8()
    }
    fn status(&self) -> Option<i64> {
        (**self).status()
    }
}

/// Encodes records (of one stream, in time order) into a compressed block,
/// and its index entry as the first block of stream 0.
pub fn encode<R: BlockRecord>(records: &[R], zstd_level: i32) -> (Vec<u8>, BlockMeta) {
    let mut compressor =
        BlockCompressor::new(zstd_level).expect("zstd accepts the configured level");
    encode_with(records, &mut compressor, &mut WordBloom::builder(), 0, 0)
}

/// [`encode`] with a compressor and a word filter builder kept by the
/// caller: a zstd context costs about a megabyte of tables to set up, so a
/// part's writer makes one for all its blocks.
///
/// Returns the block and its index entry, for a block of stream `stream`
/// (an index into the footer's streams) at `offset` in its part. One pass
/// over the records makes the columns, the word filter and the entry: a
/// block's messages are larger than the processor's caches, so each
/// further pass read them from memory again.
pub fn encode_with<R: BlockRecord>(
    records: &[R],
    compressor: &mut BlockCompressor,
    words: &mut BloomBuilder,
    stream: u32,
    offset: u64,
) -> (Vec<u8>, BlockMeta) {
    let mut numbers = Numbers::default();
    let mut messages = String::new();
    let mut fields = Vec::new();
    let mut times = Vec::with_capacity(records.len());
    let mut newline = false;
    let mut request_positions = std::collections::HashMap::new();
    let (mut previous_id, mut previous_seq) = (0i64, 0i64);
    let (mut levels, mut outputs) = (0u8, 0u8);
    let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
    let (mut min_id, mut max_id) = (u64::MAX, 0);
    // Every column's room at once: growing them record by record copied
    // each one several times.
    let message_bytes: usize = records
        .iter()
        .map(|record| record.message().len() + 1)
        .sum();
    messages.reserve(message_bytes);
    fields.reserve(records.len());
    for column in [&mut numbers.id, &mut numbers.seq] {
        column.reserve(records.len());
    }
    numbers.kind.reserve(records.len());
    numbers.request.reserve(records.len());
    numbers.message_len.reserve(records.len());
    for (position, record) in records.iter().enumerate() {
        let ts = record.ts_ns();
        times.push(ts);
        min_ts = min_ts.min(ts);
        max_ts = max_ts.max(ts);
        let id = record.id();
        numbers.id.push((id as i64).wrapping_sub(previous_id));
        previous_id = id as i64;
        min_id = min_id.min(id);
        max_id = max_id.max(id);
        numbers
            .seq
            .push((record.seq() as i64).wrapping_sub(previous_seq));
        previous_seq = record.seq() as i64;
        let (level, stream) = (record.level().code(), record.stream().code());
        numbers.kind.push(level | stream << LEVEL_BITS);
        levels |= 1 << level;
        outputs |= 1 << stream;
        let request = match record.request_id() {
            None => 0,
            Some(request_id) => *request_positions.entry(request_id).or_insert_with(|| {
                numbers.request_dictionary.push(request_id.to_owned());
                numbers.request_dictionary.len() as u32
            }),
        };
        numbers.request.push(request);
        let message = record.message();
        newline |= memchr::memchr(b'\n', message.as_bytes()).is_some();
        messages.push_str(message);
        messages.push('\n');
        numbers.message_len.push(message.len() as u32);
        words.add_text(message);
        record.write_fields(&mut fields);
        fields.push(b'\n');
        if record.invalid_utf8() {
            numbers.invalid_utf8.push(position as u32);
        }
    }
    if newline {
        // Messages with newlines in them are kept whole by their lengths,
        // one after another.
        let mut joined = String::with_capacity(messages.len());
        let mut at = 0;
        for &len in &numbers.message_len {
            joined.push_str(&messages[at..at + len as usize]);
            at += len as usize + 1;
        }
        messages = joined;
    } else {
        numbers.message_len = Vec::new();
    }
    numbers.set_times(&times);
    let encoded = postcard::to_stdvec(&numbers).expect("columns serialize");
    let (compressed, raw_len) =
        compressor.block([&encoded, messages.as_bytes(), fields.as_slice()]);
    let meta = BlockMeta {
        stream,
        offset,
        len: compressed.len() as u32,
        raw_len,
        crc32: crc32fast::hash(&compressed),
        count: records.len() as u32,
        min_ts,
        max_ts,
        min_id,
        max_id,
        levels,
        outputs,
        words: words.take(),
    };
    (compressed, meta)
}

/// A block's columns, decompressed and checked, from which records are built
/// one at a time.
pub struct DecodedBlock {
    columns: Columns,
    tenant: String,
    labels: StreamLabels,
    /// Absolute times and ids, for ordering and bounds without building
    /// records.
    ts: Vec<i64>,
    ids: Vec<u64>,
    seqs: Vec<u64>,
    messages: Vec<Range<u32>>,
    fields: Vec<Range<u32>>,
    /// Only the messages holding a word were joined (see
    /// [`DecodedBlock::holding`]).
    partial: bool,
}

impl DecodedBlock {
    /// About the memory it holds, in bytes: its columns, and the times,
    /// ids and places worked out from them.
    pub fn memory_bytes(&self) -> usize {
        fn held<T>(items: &Vec<T>) -> usize {
            items.capacity() * std::mem::size_of::<T>()
        }
        let columns = &self.columns;
        let dictionary: usize = columns
            .request_dictionary
            .iter()
            .map(|id| id.capacity() + std::mem::size_of::<String>())
            .sum();
        columns.messages.capacity()
            + held(&columns.fields)
            + held(&columns.kind)
            + held(&columns.request)
            + held(&columns.message_len)
            + held(&columns.invalid_utf8)
            + dictionary
            + held(&self.ts)
            + held(&self.ids)
            + held(&self.seqs)
            + held(&self.messages)
            + held(&self.fields)
    }

    /// Decompresses and checks a block (of any format), with the labels
    /// of its stream.
    pub fn new(
        compressed: &[u8],
        raw_len: usize,
        tenant: &str,
        labels: &StreamLabels,
    ) -> Result<DecodedBlock, String> {
        DecodedBlock::holding(compressed, raw_len, tenant, labels, None)
    }

    /// [`DecodedBlock::new`] for a reader that needs only the records whose
    /// message holds `word` (lowercase, no ASCII digit) as a whole word,
    /// ASCII case ignored: of a format 3 block of one message a line, only
    /// those messages are joined with their numbers, the others left empty
    /// ([`DecodedBlock::is_partial`]); any other block is decoded whole.
    pub fn holding(
        compressed: &[u8],
        raw_len: usize,
        tenant: &str,
        labels: &StreamLabels,
        word: Option<&[u8]>,
    ) -> Result<DecodedBlock, String> {
        let raw = DECOMPRESSOR.with_borrow_mut(|decompressor| {
            let decompressor = match decompressor {
                Some(decompressor) => decompressor,
                None => decompressor.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|error| format!("block does not decompress: {error}"))?,
                ),
            };
            layout::decompress(compressed, raw_len, decompressor)
        })?;
        let decode = |error: postcard::Error| format!("block does not decode: {error}");
        let mut partial = false;
        let (columns, ts, ids, seqs) = match raw {
            Raw::V1(encoded) => from_v1(postcard::from_bytes(&encoded).map_err(decode)?)?,
            Raw::V2([numbers, messages, fields]) => {
                let numbers = postcard::from_bytes(&numbers).map_err(decode)?;
                let messages = String::from_utf8(messages)
                    .map_err(|_| "block messages are not utf-8".to_owned())?;
                from_v2(numbers, messages, fields)?
            }
            Raw::V3([encoded, templates, digits, fields]) => {
                let numbers: Numbers = postcard::from_bytes(&encoded).map_err(decode)?;
                // Template lines are records only where a message is a
                // line.
                let wanted = word
                    .filter(|word| !word.is_empty() && numbers.message_len.is_empty())
                    .map(|word| layout::lines_holding(&templates, word));
                partial = wanted.is_some();
                let left = raw_len.saturating_sub(encoded.len() + fields.len());
                let messages = layout::join_lines(&templates, &digits, left, wanted.as_deref())?;
                if encoded.len() + messages.len() + fields.len() > raw_len {
                    return Err("block sections are larger than its index entry says".into());
                }
                let messages = String::from_utf8(messages)
                    .map_err(|_| "block messages are not utf-8".to_owned())?;
                from_v2(numbers, messages, fields)?
            }
        };
        let count = ts.len();
        let by_line = columns.message_len.is_empty();
        if columns.kind.len() != count
            || columns.request.len() != count
            || (!by_line && columns.message_len.len() != count)
        {
            return Err("block columns disagree in length".into());
        }
        for position in 0..count {
            let kind = columns.kind[position];
            if Level::from_code(kind & ((1 << LEVEL_BITS) - 1)).is_none()
                || Stream::from_code(kind >> LEVEL_BITS).is_none()
            {
                return Err("block has an unknown level or stream".into());
            }
            if columns.request[position] as usize > columns.request_dictionary.len() {
                return Err("block request id out of range".into());
            }
        }
        let messages = if by_line {
            lines(columns.messages.as_bytes(), count)?
        } else {
            let mut ranges = Vec::with_capacity(count);
            let mut start = 0u32;
            for len in &columns.message_len {
                let end = start
                    .checked_add(*len)
                    .filter(|end| {
                        columns.messages.is_char_boundary(*end as usize)
                            && *end as usize <= columns.messages.len()
                    })
                    .ok_or("block message out of range")?;
                ranges.push(start..end);
                start = end;
            }
            ranges
        };
        let fields = lines(&columns.fields, count)?;
        if columns.invalid_utf8.iter().any(|p| *p as usize >= count) {
            return Err("block invalid-utf8 mark out of range".into());
        }
        Ok(DecodedBlock {
            partial,
            tenant: tenant.to_owned(),
            labels: labels.clone(),
            ts,
            ids,
            seqs,
            messages,
            fields,
            columns,
        })
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether only the messages holding a word were joined, the others
    /// left empty ([`DecodedBlock::holding`]): such a block serves only the
    /// reader that asked for it, never a cache.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Time of record `index`, in ns.
    pub fn ts(&self, index: usize) -> i64 {
        self.ts[index]
    }

    pub fn id(&self, index: usize) -> u64 {
        self.ids[index]
    }

    pub fn message(&self, index: usize) -> &str {
        let range = &self.messages[index];
        &self.columns.messages[range.start as usize..range.end as usize]
    }

    /// Every message, one after another (between them a newline, or
    /// nothing in a block where a message holds one), and each message's
    /// place in it, in record order: what a scan searches at once.
    pub fn message_column(&self) -> (&str, &[Range<u32>]) {
        (&self.columns.messages, &self.messages)
    }

    /// Level of record `index`.
    pub fn level(&self, index: usize) -> Level {
        Level::from_code(self.columns.kind[index] & ((1 << LEVEL_BITS) - 1))
            .expect("checked when decoded")
    }

    /// What a filter looks at of record `index`, borrowed from the columns:
    /// a count judges records without building them.
    pub fn parts(&self, index: usize) -> RecordParts<'_> {
        let kind = self.columns.kind[index];
        let request_id = match self.columns.request[index] {
            0 => None,
            n => Some(self.columns.request_dictionary[n as usize - 1].as_str()),
        };
        RecordParts {
            ts: timestamp_from_ns(self.ts[index]),
            level: self.level(index),
            source: self.labels.source,
            stream: Stream::from_code(kind >> LEVEL_BITS).expect("checked when decoded"),
            request_id,
            labels: Labels {
                app: &self.labels.app,
                version: &self.labels.version,
                runner: &self.labels.runner,
                boot: &self.labels.boot,
            },
            message: self.message(index),
        }
    }

    /// The fields of record `index`, parsed.
    pub fn fields(&self, index: usize) -> Result<Fields, String> {
        let range = &self.fields[index];
        match &self.columns.fields[range.start as usize..range.end as usize] {
            b"" => Ok(Fields::new()),
            json => serde_json::from_slice(json)
                .map_err(|error| format!("block fields do not decode: {error}")),
        }
    }

    /// Output stream of record `index`.
    pub fn stream(&self, index: usize) -> Stream {
        Stream::from_code(self.columns.kind[index] >> LEVEL_BITS).expect("checked when decoded")
    }

    /// Request id of record `index`, if it has one.
    pub fn request_id(&self, index: usize) -> Option<&str> {
        match self.columns.request[index] {
            0 => None,
            n => Some(self.columns.request_dictionary[n as usize - 1].as_str()),
        }
    }

    /// Sequence number of record `index`.
    pub fn seq(&self, index: usize) -> u64 {
        self.seqs[index]
    }

    /// The fields of record `index` as the block keeps them: compact JSON
    /// text, empty for none; not checked (see [`DecodedBlock::fields`]).
    pub fn fields_json(&self, index: usize) -> &[u8] {
        let range = &self.fields[index];
        &self.columns.fields[range.start as usize..range.end as usize]
    }

    /// Whether record `index`'s output was not valid UTF-8.
    pub fn invalid_utf8(&self, index: usize) -> bool {
        self.columns
            .invalid_utf8
            .binary_search(&(index as u32))
            .is_ok()
    }

    /// The tenant and the labels of the block's stream, shared by its
    /// records.
    pub fn owner(&self) -> (&str, &StreamLabels) {
        (&self.tenant, &self.labels)
    }

    /// Builds record `index`.
    pub fn record(&self, index: usize) -> Result<LogRecord, String> {
        let columns = &self.columns;
        let kind = columns.kind[index];
        let request_id = match columns.request[index] {
            0 => None,
            n => Some(columns.request_dictionary[n as usize - 1].clone()),
        };
        let fields = self.fields(index)?;
        Ok(LogRecord {
            id: String::new(),
            position: self.ids[index],
            ts: timestamp_from_ns(self.ts[index]),
            tenant: self.tenant.clone(),
            app: self.labels.app.clone(),
            version: self.labels.version.clone(),
            runner: self.labels.runner.clone(),
            boot: self.labels.boot.clone(),
            seq: self.seqs[index],
            source: self.labels.source,
            stream: Stream::from_code(kind >> LEVEL_BITS).expect("checked when decoded"),
            level: Level::from_code(kind & ((1 << LEVEL_BITS) - 1)).expect("checked when decoded"),
            request_id,
            message: self.message(index).to_owned(),
            fields,
            invalid_utf8: columns.invalid_utf8.binary_search(&(index as u32)).is_ok(),
        })
    }
}

type Decoded = (Columns, Vec<i64>, Vec<u64>, Vec<u64>);

/// A format 1 block's columns, with absolute times, ids and sequence
/// numbers.
fn from_v1(v1: ColumnsV1) -> Result<Decoded, String> {
    let count = v1.ts.len();
    if v1.id.len() != count || v1.seq.len() != count {
        return Err("block columns disagree in length".into());
    }
    let mut ts = Vec::with_capacity(count);
    let mut time = v1.first_ts;
    for delta in &v1.ts {
        time = time.wrapping_add(delta.wrapping_mul(v1.ts_unit) as i64);
        ts.push(time);
    }
    let columns = Columns {
        kind: v1.kind,
        request_dictionary: v1.request_dictionary,
        request: v1.request,
        message_len: v1.message_len,
        messages: v1.messages,
        fields: v1.fields,
        invalid_utf8: v1.invalid_utf8,
    };
    Ok((columns, ts, running_sum(&v1.id), running_sum(&v1.seq)))
}

/// A format 2 block's columns, with absolute times, ids and sequence
/// numbers.
fn from_v2(numbers: Numbers, messages: String, fields: Vec<u8>) -> Result<Decoded, String> {
    let count = numbers.kind.len();
    let ts = numbers.times(count)?;
    if numbers.id.len() != count || numbers.seq.len() != count {
        return Err("block columns disagree in length".into());
    }
    let (ids, seqs) = (running_sum(&numbers.id), running_sum(&numbers.seq));
    let columns = Columns {
        kind: numbers.kind,
        request_dictionary: numbers.request_dictionary,
        request: numbers.request,
        message_len: numbers.message_len,
        messages,
        fields,
        invalid_utf8: numbers.invalid_utf8,
    };
    Ok((columns, ts, ids, seqs))
}

/// Deltas (wrapping) back to the numbers they were taken from.
fn running_sum(deltas: &[i64]) -> Vec<u64> {
    let mut total = 0i64;
    deltas
        .iter()
        .map(|delta| {
            total = total.wrapping_add(*delta);
            total as u64
        })
        .collect()
}

/// The ranges of the first `count` newline-ended lines of `text`.
fn lines(text: &[u8], count: usize) -> Result<Vec<Range<u32>>, String> {
    let mut ranges = Vec::with_capacity(count);
    let mut start = 0usize;
    for end in memchr::memchr_iter(b'\n', text).take(count) {
        ranges.push(start as u32..end as u32);
        start = end + 1;
    }
    if ranges.len() != count {
        return Err("block columns disagree in length".into());
    }
    Ok(ranges)
}

/// Decodes a whole block into records, with the labels of its stream.
pub fn decode(
    compressed: &[u8],
    raw_len: usize,
    tenant: &str,
    labels: &StreamLabels,
) -> Result<Vec<LogRecord>, String> {
    let block = DecodedBlock::new(compressed, raw_len, tenant, labels)?;
    (0..block.len()).map(|index| block.record(index)).collect()
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    /// Byte columns are written as bytes, which postcard lays out as it
    /// lays out a sequence of `u8`s: parts written before they were are
    /// read the same.
    #[test]
    fn byte_columns_keep_the_layout_of_a_sequence_of_bytes() {
        #[derive(Serialize)]
        struct AsSequence(Vec<u8>);
        #[derive(Serialize)]
        struct AsBytes(#[serde(with = "serde_bytes")] Vec<u8>);
        for column in [vec![], b"{\"gpu\":7}\n\n".to_vec(), vec![0x8a; 300]] {
            assert_eq!(
                postcard::to_stdvec(&AsBytes(column.clone())).unwrap(),
                postcard::to_stdvec(&AsSequence(column)).unwrap()
            );
        }
    }
}
