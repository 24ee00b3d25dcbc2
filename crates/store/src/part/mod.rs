//! Parts: immutable files of compressed, indexed records of one tenant's app
//! on one day.
//!
//! ```text
//! [block 0][block 1]…[block n-1][footer][footer len: u32 LE][footer crc32: u32 LE]["TWPART04"]
//! ```
//!
//! A block holds records of one stream (one label set) in time order
//! ([`block`]; its bytes in [`layout`], which tells block formats 1 and 2
//! apart by their first byte). `TWPART05` parts may hold blocks of every
//! format (a merge copies older blocks as they are unless it recompresses
//! them; settling writes format 3); `TWPART04` parts, still read, hold
//! formats 1 and 2, `TWPART03` ones format 1 alone. The footer is
//! the same in both. The footer (postcard, zstd-compressed) describes the whole
//! part: its streams with the sequence numbers they hold, and each block's
//! place, time and id range, levels, output streams, checksum and word
//! filter ([`bloom`]), plus a request index (request id → blocks). A part
//! opens with a read of its tail; a query reads the blocks its footer cannot
//! rule out.
//!
//! Parts are written to a temporary name, fsynced, and renamed into place
//! ([`writer`]), so a crash leaves either a whole part or none.

pub mod block;
pub mod bloom;
pub mod layout;
pub mod lean;
pub mod reader;
pub mod writer;

use serde::{Deserialize, Serialize};
use tailwater_model::Source;

use self::bloom::WordBloom;

/// What a part written now ends with.
pub const MAGIC: &[u8; 8] = b"TWPART05";
/// Parts of block formats 1 and 2, written before block format 3: read.
pub const MAGIC_04: &[u8; 8] = b"TWPART04";
/// Parts of block format 1 alone, written before block format 2: read.
pub const MAGIC_03: &[u8; 8] = b"TWPART03";
pub const EXTENSION: &str = "twp";
const TRAILER_LEN: usize = 16;

/// The labels shared by every record of a stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamLabels {
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
    pub source: Source,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub labels: StreamLabels,
    /// The sequence numbers this part holds for the stream, as sorted,
    /// disjoint, inclusive ranges: what makes ingest idempotent across
    /// restarts.
    pub seq_ranges: Vec<(u64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Index into the footer's streams.
    pub stream: u32,
    pub offset: u64,
    pub len: u32,
    pub raw_len: u32,
    pub crc32: u32,
    pub count: u32,
    pub min_ts: i64,
    pub max_ts: i64,
    pub min_id: u64,
    pub max_id: u64,
    /// Bit n set: a record of level n (trace = 0 … fatal = 5).
    pub levels: u8,
    /// Bit n set: a record of output stream n (stdout, stderr, system).
    pub outputs: u8,
    pub words: WordBloom,
}

/// What a part belongs to: one tenant's app on one (UTC) day. Retention
/// deletes whole partitions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition {
    /// `YYYY-MM-DD`, first so partitions sort oldest first.
    pub day: String,
    pub tenant: String,
    pub app: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Footer {
    pub partition: Partition,
    pub records: u64,
    /// Bytes of message text, as captured.
    pub raw_bytes: u64,
    pub min_ts: i64,
    pub max_ts: i64,
    pub min_id: u64,
    pub max_id: u64,
    pub streams: Vec<StreamMeta>,
    pub blocks: Vec<BlockMeta>,
    /// The requests with records here, sorted by key.
    pub requests: Vec<RequestMeta>,
    /// Numbers of the parts this one was merged from: if a crash left them
    /// behind, opening the store deletes them. Empty for a flushed part.
    pub replaces: Vec<u64>,
}

/// One request's records in a part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestMeta {
    /// [`request_key`] of the request id: the id itself is in the blocks'
    /// request dictionaries, so the footer keeps 8 bytes, not the id. Two
    /// ids sharing a key (odds of about one in 2^64 per lookup) would only
    /// make a query read a block more, whose records are then checked
    /// against the id itself.
    pub key: [u8; 8],
    /// The blocks holding its records.
    pub blocks: Vec<u32>,
    /// The stream of its first record here.
    pub stream: u32,
    pub records: u64,
    /// Time of its first record, in ns after the part's `min_ts`.
    pub first_after_min: u64,
    /// From its first record to its last, in ns.
    pub duration: u64,
    /// The status its end record reported (a `status` field on a system
    /// record of the request), if one is here.
    pub status: Option<i64>,
}

/// The footer's key of a request id: its xxh3, big-endian so keys sort as
/// numbers.
pub fn request_key(request_id: &str) -> [u8; 8] {
    xxhash_rust::xxh3::xxh3_64(request_id.as_bytes()).to_be_bytes()
}

impl Footer {
    /// The requests index entry of `request_id`, if it has records here.
    pub fn request(&self, request_id: &str) -> Option<&RequestMeta> {
        let key = request_key(request_id);
        self.requests
            .binary_search_by(|meta| meta.key.cmp(&key))
            .ok()
            .map(|found| &self.requests[found])
    }

    /// The blocks holding records of `request_id`.
    pub fn request_blocks(&self, request_id: &str) -> &[u32] {
        self.request(request_id)
            .map_or(&[], |meta| meta.blocks.as_slice())
    }

    /// Times of a request's first and last record here, in ns.
    pub fn request_times(&self, meta: &RequestMeta) -> (i64, i64) {
        let first = self.min_ts.wrapping_add(meta.first_after_min as i64);
        (first, first.wrapping_add(meta.duration as i64))
    }
}

#[cfg(test)]
mod format3_tests;
#[cfg(test)]
mod tests;
