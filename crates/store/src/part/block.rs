//! A block: records of one stream in time order, stored as columns and
//! compressed with zstd.
//!
//! Columns are chosen for what compresses: times, ids and sequence numbers as
//! deltas (small varints), levels and streams as one byte each, request ids
//! as a dictionary, messages one per line so zstd sees them as one text
//! (with a length column only in a block where a message holds a newline).

use serde::{Deserialize, Serialize};
use tailwater_model::filter::timestamp_ns;
use tailwater_model::{Fields, Level, LogRecord, Stream};

use super::StreamLabels;

#[derive(Default, Serialize, Deserialize)]
struct Columns {
    /// First absolute, then deltas (ns).
    ts: Vec<i64>,
    /// Deltas from the previous id (the first from 0).
    id: Vec<i64>,
    seq: Vec<i64>,
    level: Vec<u8>,
    stream: Vec<u8>,
    request_dictionary: Vec<String>,
    /// 0 for none, else 1 + an index into `request_dictionary`.
    request: Vec<u32>,
    /// Empty when no message holds a newline: then `messages` has one per
    /// line.
    message_len: Vec<u32>,
    messages: String,
    /// JSON text of each record's fields; empty for none.
    fields: Vec<String>,
    /// Positions of records whose output was not valid UTF-8.
    invalid_utf8: Vec<u32>,
}

/// Encodes records (of one stream, in time order) into a compressed block;
/// returns it and its uncompressed length.
pub fn encode(records: &[&LogRecord], zstd_level: i32) -> (Vec<u8>, usize) {
    let mut columns = Columns::default();
    let by_line = !records.iter().any(|record| record.message.contains('\n'));
    let mut request_positions = std::collections::HashMap::new();
    let (mut previous_ts, mut previous_id, mut previous_seq) = (0i64, 0i64, 0i64);
    for (position, record) in records.iter().enumerate() {
        let ts = timestamp_ns(record.ts);
        columns.ts.push(ts.wrapping_sub(previous_ts));
        previous_ts = ts;
        columns
            .id
            .push((record.id as i64).wrapping_sub(previous_id));
        previous_id = record.id as i64;
        columns
            .seq
            .push((record.seq as i64).wrapping_sub(previous_seq));
        previous_seq = record.seq as i64;
        columns.level.push(level_code(record.level));
        columns.stream.push(stream_code(record.stream));
        let request = match &record.request_id {
            None => 0,
            Some(request_id) => {
                *request_positions
                    .entry(request_id.as_str())
                    .or_insert_with(|| {
                        columns.request_dictionary.push(request_id.clone());
                        columns.request_dictionary.len() as u32
                    })
            }
        };
        columns.request.push(request);
        columns.messages.push_str(&record.message);
        if by_line {
            columns.messages.push('\n');
        } else {
            columns.message_len.push(record.message.len() as u32);
        }
        columns.fields.push(if record.fields.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&record.fields).expect("fields serialize to json")
        });
        if record.invalid_utf8 {
            columns.invalid_utf8.push(position as u32);
        }
    }
    let encoded = postcard::to_stdvec(&columns).expect("columns serialize");
    let compressed = zstd::bulk::compress(&encoded, zstd_level).expect("zstd compresses in memory");
    (compressed, encoded.len())
}

/// Decodes a block back into records, with the labels of its stream.
pub fn decode(
    compressed: &[u8],
    raw_len: usize,
    tenant: &str,
    labels: &StreamLabels,
) -> Result<Vec<LogRecord>, String> {
    let encoded = zstd::bulk::decompress(compressed, raw_len)
        .map_err(|error| format!("block does not decompress: {error}"))?;
    let columns: Columns = postcard::from_bytes(&encoded)
        .map_err(|error| format!("block does not decode: {error}"))?;
    let count = columns.ts.len();
    let lengths_agree = [
        columns.id.len(),
        columns.seq.len(),
        columns.level.len(),
        columns.stream.len(),
        columns.request.len(),
        columns.fields.len(),
    ]
    .iter()
    .all(|len| *len == count);
    if !lengths_agree {
        return Err("block columns disagree in length".into());
    }
    let by_line = columns.message_len.is_empty();
    if !by_line && columns.message_len.len() != count {
        return Err("block columns disagree in length".into());
    }
    let mut records = Vec::with_capacity(count);
    let (mut ts, mut id, mut seq, mut message_start) = (0i64, 0i64, 0i64, 0usize);
    for position in 0..count {
        ts = ts.wrapping_add(columns.ts[position]);
        id = id.wrapping_add(columns.id[position]);
        seq = seq.wrapping_add(columns.seq[position]);
        let rest = columns
            .messages
            .get(message_start..)
            .ok_or("block message out of range")?;
        let (len, skip) = if by_line {
            let len = rest.find('\n').ok_or("block message out of range")?;
            (len, len + 1)
        } else {
            let len = columns.message_len[position] as usize;
            (len, len)
        };
        let message = rest
            .get(..len)
            .ok_or("block message out of range")?
            .to_owned();
        message_start += skip;
        let request_id = match columns.request[position] {
            0 => None,
            n => Some(
                columns
                    .request_dictionary
                    .get(n as usize - 1)
                    .ok_or("block request id out of range")?
                    .clone(),
            ),
        };
        let fields: Fields = match columns.fields[position].as_str() {
            "" => Fields::new(),
            json => serde_json::from_str(json)
                .map_err(|error| format!("block fields do not decode: {error}"))?,
        };
        records.push(LogRecord {
            id: id as u64,
            ts: jiff::Timestamp::from_nanosecond(ts as i128).map_err(|error| error.to_string())?,
            tenant: tenant.to_owned(),
            app: labels.app.clone(),
            version: labels.version.clone(),
            runner: labels.runner.clone(),
            boot: labels.boot.clone(),
            seq: seq as u64,
            source: labels.source,
            stream: stream_from_code(columns.stream[position])
                .ok_or("block has an unknown stream")?,
            level: level_from_code(columns.level[position]).ok_or("block has an unknown level")?,
            request_id,
            message,
            fields,
            invalid_utf8: false,
        });
    }
    for position in columns.invalid_utf8 {
        records
            .get_mut(position as usize)
            .ok_or("block invalid-utf8 mark out of range")?
            .invalid_utf8 = true;
    }
    Ok(records)
}

pub fn level_code(level: Level) -> u8 {
    level as u8
}

fn level_from_code(code: u8) -> Option<Level> {
    Level::ALL.get(code as usize).copied()
}

pub fn stream_code(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::System => 2,
    }
}

fn stream_from_code(code: u8) -> Option<Stream> {
    [Stream::Stdout, Stream::Stderr, Stream::System]
        .get(code as usize)
        .copied()
}
