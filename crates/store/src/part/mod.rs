//! Parts: immutable files of compressed, indexed records of one tenant's app
//! on one day.
//!
//! ```text
//! [block 0][block 1]…[block n-1][footer][footer len: u32 LE][footer crc32: u32 LE]["TWPART01"]
//! ```
//!
//! A block holds records of one stream (one label set) in time order
//! ([`block`]). The footer (postcard, zstd-compressed) describes the whole
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
pub mod reader;
pub mod writer;

use serde::{Deserialize, Serialize};
use tailwater_model::Source;

use self::bloom::WordBloom;

pub const MAGIC: &[u8; 8] = b"TWPART02";
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
    /// The requests with records here, sorted by request id.
    pub requests: Vec<RequestMeta>,
    /// Numbers of the parts this one was merged from: if a crash left them
    /// behind, opening the store deletes them. Empty for a flushed part.
    pub replaces: Vec<u64>,
}

/// One request's records in a part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestMeta {
    pub id: String,
    /// The blocks holding its records.
    pub blocks: Vec<u32>,
    /// The stream of its first record here.
    pub stream: u32,
    pub records: u64,
    pub first_ts: i64,
    pub last_ts: i64,
    /// The status its end record reported (a `status` field on a system
    /// record of the request), if one is here.
    pub status: Option<i64>,
}

impl Footer {
    /// The blocks holding records of `request_id`.
    pub fn request_blocks(&self, request_id: &str) -> &[u32] {
        match self
            .requests
            .binary_search_by(|meta| meta.id.as_str().cmp(request_id))
        {
            Ok(found) => &self.requests[found].blocks,
            Err(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests;
