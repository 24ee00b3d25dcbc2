//! How a block's columns lie in its bytes, by block format:
//!
//! - format 1 (parts up to `TWPART03`; read, no longer written): one zstd
//!   frame of postcard [`ColumnsV1`], times as deltas in the block's unit.
//!   It starts with zstd's magic (`28 b5 2f fd`).
//! - format 2: the byte `2`, the zstd level it was compressed at, then a
//!   table of three sections (raw and compressed length of each, u32 LE)
//!   and the sections, each its own zstd frame: the numbers ([`Numbers`]:
//!   times, ids, sequence numbers, levels and streams, requests, as
//!   postcard), the messages, and the fields. Each column kind is
//!   compressed with statistics of its own.
//!
//! A time is split into whole milliseconds, stored as deltas from the
//! previous record's (zigzag varints: small for a runner's lines), and what
//! is left below the millisecond, divided by its block's largest common
//! unit (1 µs for the agent's stamps, nothing at all for a millisecond
//! clock) and stored as fixed-width little-endian numbers, a byte plane at
//! a time (all low bytes, then the next ones): the low bytes of a clock are
//! noise zstd cannot shrink, its high ones are mostly the same, and apart
//! they cost about what their entropy is.

use serde::{Deserialize, Serialize};

/// The first byte of a format 2 block.
pub const FORMAT_2: u8 = 2;
const SECTIONS: usize = 3;
const HEADER_LEN: usize = 2 + SECTIONS * 8;
const NS_PER_MS: i64 = 1_000_000;

/// The columns of a format 1 block, as postcard laid them out.
#[derive(Default, Serialize, Deserialize)]
pub struct ColumnsV1 {
    pub first_ts: i64,
    pub ts_unit: u64,
    pub ts: Vec<u64>,
    pub id: Vec<i64>,
    pub seq: Vec<i64>,
    #[serde(with = "serde_bytes")]
    pub kind: Vec<u8>,
    pub request_dictionary: Vec<String>,
    pub request: Vec<u32>,
    pub message_len: Vec<u32>,
    pub messages: String,
    #[serde(with = "serde_bytes")]
    pub fields: Vec<u8>,
    pub invalid_utf8: Vec<u32>,
}

/// The numbers section of a format 2 block.
#[derive(Default, Serialize, Deserialize)]
pub struct Numbers {
    /// Each record's time in whole milliseconds (floored) after the
    /// previous record's; the first's from 0.
    pub ms: Vec<i64>,
    /// The unit of `sub`, in ns (0: every time is whole milliseconds).
    pub sub_unit: u64,
    /// Bytes of each `sub` value (0 to 3).
    pub sub_width: u8,
    /// Each time's ns past its millisecond, in `sub_unit`s, `sub_width`
    /// bytes each, by byte plane.
    #[serde(with = "serde_bytes")]
    pub sub: Vec<u8>,
    /// Deltas from the previous id (the first from 0).
    pub id: Vec<i64>,
    pub seq: Vec<i64>,
    #[serde(with = "serde_bytes")]
    pub kind: Vec<u8>,
    pub request_dictionary: Vec<String>,
    pub request: Vec<u32>,
    /// Empty when no message holds a newline.
    pub message_len: Vec<u32>,
    pub invalid_utf8: Vec<u32>,
}

impl Numbers {
    /// Fills `ms`, `sub_unit`, `sub_width` and `sub` from absolute times.
    pub fn set_times(&mut self, times: &[i64]) {
        let mut unit = 0u64;
        let mut previous = 0i64;
        self.ms.clear();
        self.ms.reserve(times.len());
        for &ts in times {
            let ms = ts.div_euclid(NS_PER_MS);
            self.ms.push(ms.wrapping_sub(previous));
            previous = ms;
            unit = gcd(unit, ts.rem_euclid(NS_PER_MS) as u64);
        }
        self.sub_unit = unit;
        self.sub.clear();
        if unit == 0 {
            self.sub_width = 0;
            return;
        }
        let largest = times
            .iter()
            .map(|ts| ts.rem_euclid(NS_PER_MS) as u64 / unit)
            .max()
            .unwrap_or(0);
        self.sub_width = (64 - largest.leading_zeros()).div_ceil(8).max(1) as u8;
        self.sub.reserve(times.len() * self.sub_width as usize);
        for plane in 0..self.sub_width {
            self.sub.extend(
                times
                    .iter()
                    .map(|ts| ((ts.rem_euclid(NS_PER_MS) as u64 / unit) >> (8 * plane)) as u8),
            );
        }
    }

    /// The absolute times, checked against `count` records.
    pub fn times(&self, count: usize) -> Result<Vec<i64>, String> {
        let width = self.sub_width as usize;
        if self.ms.len() != count || width > 3 || self.sub.len() != count * width {
            return Err("block columns disagree in length".into());
        }
        let mut times = Vec::with_capacity(count);
        let mut ms = 0i64;
        for (position, delta) in self.ms.iter().enumerate() {
            ms = ms.wrapping_add(*delta);
            let mut sub = 0u64;
            for plane in 0..width {
                sub |= u64::from(self.sub[plane * count + position]) << (8 * plane);
            }
            times.push(
                ms.wrapping_mul(NS_PER_MS)
                    .wrapping_add(sub.wrapping_mul(self.sub_unit) as i64),
            );
        }
        Ok(times)
    }
}

pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A zstd compressor and its level, kept by a part's writer for all its
/// blocks (a context costs about a megabyte of tables to set up).
pub struct BlockCompressor {
    compressor: zstd::bulk::Compressor<'static>,
    level: i32,
}

impl BlockCompressor {
    pub fn new(level: i32) -> std::io::Result<BlockCompressor> {
        Ok(BlockCompressor {
            compressor: zstd::bulk::Compressor::new(level)?,
            level,
        })
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// A format 2 block of these sections; returns it and the raw length
    /// of its sections together.
    pub fn block(&mut self, sections: [&[u8]; SECTIONS]) -> (Vec<u8>, u32) {
        let frames: Vec<Vec<u8>> = sections
            .iter()
            .map(|section| {
                self.compressor
                    .compress(section)
                    .expect("zstd compresses in memory")
            })
            .collect();
        let mut block = Vec::with_capacity(HEADER_LEN + frames.iter().map(Vec::len).sum::<usize>());
        block.push(FORMAT_2);
        block.push(self.level.clamp(0, 255) as u8);
        for (section, frame) in sections.iter().zip(&frames) {
            block.extend_from_slice(&(section.len() as u32).to_le_bytes());
            block.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        }
        for frame in &frames {
            block.extend_from_slice(frame);
        }
        let raw = sections.iter().map(|section| section.len() as u32).sum();
        (block, raw)
    }
}

/// What a block's bytes hold, decompressed.
pub enum Raw {
    V1(Vec<u8>),
    V2([Vec<u8>; SECTIONS]),
}

/// The zstd level a format 2 block was compressed at; `None` for format 1.
pub fn level_of(block: &[u8]) -> Option<i32> {
    (block.len() >= HEADER_LEN && block[0] == FORMAT_2).then(|| i32::from(block[1]))
}

/// Decompresses a block; `raw_len` is its index entry's, the most memory
/// its sections may take together (a section table claiming more is
/// damage).
pub fn decompress(
    block: &[u8],
    raw_len: usize,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<Raw, String> {
    let fail = |error: std::io::Error| format!("block does not decompress: {error}");
    if block.first() != Some(&FORMAT_2) {
        return decompressor
            .decompress(block, raw_len)
            .map(Raw::V1)
            .map_err(fail);
    }
    let table = table(block)?;
    if table.iter().map(|(raw, _)| *raw).sum::<usize>() > raw_len {
        return Err("block sections are larger than its index entry says".into());
    }
    let mut at = HEADER_LEN;
    let mut sections: [Vec<u8>; SECTIONS] = Default::default();
    for (section, (raw, compressed)) in sections.iter_mut().zip(table) {
        *section = decompressor
            .decompress(&block[at..at + compressed], raw)
            .map_err(fail)?;
        if section.len() != raw {
            return Err("block section shorter than its table says".into());
        }
        at += compressed;
    }
    Ok(Raw::V2(sections))
}

/// The sections of a block a reader asks for, by their place in a format 2
/// block.
pub const NUMBERS: usize = 0;
pub const MESSAGES: usize = 1;

/// Decompresses only the sections of a format 2 block that `wanted` names,
/// each into its buffer in `into` (cleared first, its memory reused; the
/// others left empty), so a reader that needs neither the fields nor the
/// memory of a fresh buffer a block pays for neither. `Ok(false)`, nothing
/// read, for a format 1 block (one frame: the caller decodes it whole).
/// `raw_len` is as for [`decompress`].
pub fn decompress_into(
    block: &[u8],
    raw_len: usize,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    wanted: [bool; SECTIONS],
    into: [&mut Vec<u8>; SECTIONS],
) -> Result<bool, String> {
    if block.first() != Some(&FORMAT_2) {
        return Ok(false);
    }
    let table = table(block)?;
    if table.iter().map(|(raw, _)| *raw).sum::<usize>() > raw_len {
        return Err("block sections are larger than its index entry says".into());
    }
    let mut at = HEADER_LEN;
    for ((wanted, buffer), (raw, compressed)) in wanted.into_iter().zip(into).zip(table) {
        buffer.clear();
        if wanted {
            // zstd writes from the buffer's start up to its capacity: a
            // frame holding more than its table says is caught below.
            buffer.reserve(raw);
            decompressor
                .decompress_to_buffer(&block[at..at + compressed], &mut *buffer)
                .map_err(|error| format!("block does not decompress: {error}"))?;
            if buffer.len() != raw {
                return Err("block section is not the length its table says".into());
            }
        }
        at += compressed;
    }
    Ok(true)
}

/// A format 2 block's section table: (raw, compressed) lengths, checked
/// to cover its bytes exactly.
fn table(block: &[u8]) -> Result<[(usize, usize); SECTIONS], String> {
    if block.len() < HEADER_LEN {
        return Err("block shorter than its header".into());
    }
    let mut table = [(0usize, 0usize); SECTIONS];
    let word = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().unwrap()) as usize;
    for (index, entry) in table.iter_mut().enumerate() {
        *entry = (word(2 + index * 8), word(2 + index * 8 + 4));
    }
    if HEADER_LEN
        + table
            .iter()
            .map(|(_, compressed)| *compressed)
            .sum::<usize>()
        != block.len()
    {
        return Err("block sections disagree with its length".into());
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_split_at_the_millisecond_come_back_exactly() {
        for times in [
            vec![],
            vec![0],
            // A millisecond clock: nothing below it is stored.
            vec![1_763_600_000_000_000_000, 1_763_600_000_001_000_000],
            // Microseconds, and one step back (a delta below zero).
            vec![
                1_763_600_000_000_123_000,
                1_763_600_000_064_999_000,
                1_763_600_000_064_998_000,
            ],
            // Nanoseconds, and the ends of what an i64 holds.
            vec![i64::MIN, -1, 0, 7, 999_999, i64::MAX],
        ] {
            let mut numbers = Numbers::default();
            numbers.set_times(&times);
            assert_eq!(numbers.times(times.len()).unwrap(), times);
        }
        let mut numbers = Numbers::default();
        numbers.set_times(&[5_000_000, 6_000_000]);
        assert_eq!((numbers.sub_width, numbers.sub.len()), (0, 0));
        numbers.set_times(&[5_000_000, 6_999_000, 7_001_000]);
        assert_eq!((numbers.sub_unit, numbers.sub_width), (1_000, 2));
    }
}
