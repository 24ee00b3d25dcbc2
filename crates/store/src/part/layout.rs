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
//! - format 3 (settled blocks): format 2 with the messages split in two
//!   sections ([`split_numbers`]): the templates, each number (a run of
//!   hexadecimal digits holding a decimal one) replaced by [`MARK`], and
//!   the numbers themselves, newline-ended, by column (one for each place
//!   of a mark in each distinct template) or in line order, whichever
//!   compresses smaller. A log's lines differ most in their numbers:
//!   without them zstd finds whole lines again, and the numbers compress
//!   apart, those of one place together when that pays. Its table has four
//!   sections. A reader that needs the messages joins them again
//!   ([`join_lines`]); one that needs only those holding a word without
//!   digits finds them in the templates ([`lines_holding`]) and joins
//!   those alone, and a count of such a word searches the templates
//!   without joining any (`lean.rs`).
//!
//! A time is split into whole milliseconds, stored as deltas from the
//! previous record's (zigzag varints: small for a runner's lines), and what
//! is left below the millisecond, divided by its block's largest common
//! unit (1 µs for the agent's stamps, nothing at all for a millisecond
//! clock) and stored as fixed-width little-endian numbers, a byte plane at
//! a time (all low bytes, then the next ones): the low bytes of a clock are
//! noise zstd cannot shrink, its high ones are mostly the same, and apart
//! they cost about what their entropy is.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use serde::{Deserialize, Serialize};
use tailwater_model::words::is_word_byte;

/// The first byte of a format 2 block.
pub const FORMAT_2: u8 = 2;
/// The first byte of a format 3 block.
pub const FORMAT_3: u8 = 3;
const SECTIONS: usize = 3;
const HEADER_LEN: usize = 2 + SECTIONS * 8;
const SECTIONS_3: usize = 4;
/// In a format 3 block's templates: a run of digits, the next in the
/// digits section.
pub const MARK: u8 = 0x11;
/// In a format 3 block's templates: the next byte is the message's own
/// (a [`MARK`] or an `ESCAPE` it held).
pub const ESCAPE: u8 = 0x12;
/// The first byte of a format 3 block's numbers: they come by column.
pub const BY_COLUMN: u8 = b'c';
/// The first byte of a format 3 block's numbers: they come in line order.
pub const IN_ORDER: u8 = b'o';
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

/// The zstd window of settled blocks, as a power of two: 4 MiB, the most
/// message bytes a settled block holds
/// ([`super::writer::SETTLED_BLOCK_MAX_BYTES`]), so a larger one would
/// find nothing more. With the match finder's tables it bounds what a
/// settling step's compressor holds (see [`SETTLED_ZSTD_TABLE_LOG`]).
pub const SETTLED_ZSTD_WINDOW_LOG: u32 = 22;
/// The size of the match finder's hash and chain tables of settled blocks,
/// as powers of two (entries of 4 bytes): at level 19 zstd would take 2^23
/// chain entries for a 4 MiB block, 32 MiB; 2^22 holds a block's every
/// position and keeps the compressor at about 40 MiB.
pub const SETTLED_ZSTD_TABLE_LOG: u32 = 22;

/// A zstd compressor and its level, kept by a part's writer for all its
/// blocks (a context costs about a megabyte of tables to set up).
pub struct BlockCompressor {
    compressor: zstd::bulk::Compressor<'static>,
    level: i32,
    /// Writes format 3 blocks (messages split from their numbers).
    settled: bool,
}

impl BlockCompressor {
    pub fn new(level: i32) -> std::io::Result<BlockCompressor> {
        Ok(BlockCompressor {
            compressor: zstd::bulk::Compressor::new(level)?,
            level,
            settled: false,
        })
    }

    /// From now on, blocks for a settled part: the window and tables
    /// bounded ([`SETTLED_ZSTD_WINDOW_LOG`]); format 3 when
    /// `numbers_apart`, else format 2.
    pub fn settled(&mut self, numbers_apart: bool) -> std::io::Result<()> {
        use zstd::zstd_safe::CParameter;
        self.compressor
            .set_parameter(CParameter::WindowLog(SETTLED_ZSTD_WINDOW_LOG))?;
        self.compressor
            .set_parameter(CParameter::HashLog(SETTLED_ZSTD_TABLE_LOG))?;
        self.compressor
            .set_parameter(CParameter::ChainLog(SETTLED_ZSTD_TABLE_LOG))?;
        self.settled = numbers_apart;
        Ok(())
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// A block of these sections (format 2, or 3 once [`Self::settled`]);
    /// returns it and the raw length of its sections together (as a
    /// reader gets them back).
    pub fn block(&mut self, sections: [&[u8]; SECTIONS]) -> (Vec<u8>, u32) {
        let raw = sections.iter().map(|section| section.len() as u32).sum();
        if !self.settled {
            return (self.frames(FORMAT_2, &sections), raw);
        }
        let (templates, digits) = split_numbers(sections[1]);
        // The numbers by column or in line order, whichever is smaller:
        // many lines of few templates gain by column, lines of many
        // templates (each its own column) lose.
        let [by_column, in_order] = digits.map(|digits| {
            let frame = self.compress(&digits);
            (digits, frame)
        });
        let digits = if by_column.1.len() <= in_order.1.len() {
            by_column
        } else {
            in_order
        };
        let mut frames: Vec<(usize, Vec<u8>)> = [sections[0], &templates]
            .iter()
            .map(|section| (section.len(), self.compress(section)))
            .collect();
        frames.push((digits.0.len(), digits.1));
        frames.push((sections[2].len(), self.compress(sections[2])));
        (self.assemble(FORMAT_3, frames), raw)
    }

    fn compress(&mut self, section: &[u8]) -> Vec<u8> {
        self.compressor
            .compress(section)
            .expect("zstd compresses in memory")
    }

    fn frames(&mut self, format: u8, sections: &[&[u8]]) -> Vec<u8> {
        let frames = sections
            .iter()
            .map(|section| (section.len(), self.compress(section)))
            .collect();
        self.assemble(format, frames)
    }

    /// A block of `format` of its sections' (raw length, zstd frame).
    fn assemble(&self, format: u8, frames: Vec<(usize, Vec<u8>)>) -> Vec<u8> {
        let mut block = Vec::with_capacity(
            2 + 8 * frames.len() + frames.iter().map(|(_, frame)| frame.len()).sum::<usize>(),
        );
        block.push(format);
        block.push(self.level.clamp(0, 255) as u8);
        for (raw, frame) in &frames {
            block.extend_from_slice(&(*raw as u32).to_le_bytes());
            block.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        }
        for (_, frame) in &frames {
            block.extend_from_slice(frame);
        }
        block
    }
}

/// Messages as templates and numbers (format 3). Each line's numbers
/// (runs of hexadecimal digits holding a decimal one: counts, times, ids,
/// hashes; a word of the letters a–f alone is text) become [`MARK`]s in
/// its template (a [`MARK`] or [`ESCAPE`] of the text is kept after an
/// [`ESCAPE`]); the numbers, each newline-ended, go in columns, one for each place of a mark in each distinct template (in the
/// order templates first appear), one column after another: the values of
/// one place in one kind of line (a step counter, a duration) are alike,
/// and zstd finds more among them than among a line's mixed numbers.
///
/// Returns the templates and the numbers both ways, by column
/// ([`BY_COLUMN`] first) and in line order ([`IN_ORDER`] first), for the
/// writer to keep the one that compresses smaller.
pub fn split_numbers(messages: &[u8]) -> (Vec<u8>, [Vec<u8>; 2]) {
    let mut templates = Vec::with_capacity(messages.len());
    let mut columns: Vec<Vec<u8>> = Vec::new();
    let mut known: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut in_order = vec![IN_ORDER];
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut at = 0;
    for (index, line) in messages.split(|&byte| byte == b'\n').enumerate() {
        if index > 0 {
            templates.push(b'\n');
            at += 1;
        }
        let start = templates.len();
        runs.clear();
        let mut offset = 0;
        while offset < line.len() {
            let byte = line[offset];
            if byte.is_ascii_hexdigit() {
                let end = line[offset..]
                    .iter()
                    .position(|byte| !byte.is_ascii_hexdigit())
                    .map_or(line.len(), |found| offset + found);
                let run = &line[offset..end];
                if run.iter().any(u8::is_ascii_digit) {
                    templates.push(MARK);
                    runs.push(at + offset..at + end);
                } else {
                    templates.extend_from_slice(run);
                }
                offset = end;
                continue;
            }
            if byte == MARK || byte == ESCAPE {
                templates.push(ESCAPE);
            }
            templates.push(byte);
            offset += 1;
        }
        at += line.len();
        let template = &templates[start..];
        let base = match known.get(template) {
            Some(&base) => base,
            None => {
                let base = columns.len();
                columns.resize_with(base + runs.len(), Vec::new);
                known.insert(template.to_vec(), base);
                base
            }
        };
        for (place, run) in runs.iter().enumerate() {
            columns[base + place].extend_from_slice(&messages[run.clone()]);
            columns[base + place].push(b'\n');
            in_order.extend_from_slice(&messages[run.clone()]);
            in_order.push(b'\n');
        }
    }
    let mut by_column = Vec::with_capacity(in_order.len());
    by_column.push(BY_COLUMN);
    for column in columns {
        by_column.extend_from_slice(&column);
    }
    (templates, [by_column, in_order])
}

/// The messages back from [`split_numbers`]'s templates and digits, at most
/// `max` bytes of them (more is damage).
pub fn join_numbers(templates: &[u8], digits: &[u8], max: usize) -> Result<Vec<u8>, String> {
    join_lines(templates, digits, max, None)
}

/// [`join_numbers`], writing only the lines `wanted` names when given (by
/// index and where each starts in `templates`, in order: what
/// [`lines_holding`] returns): the others are left empty (their newlines
/// kept), their numbers passed over.
///
/// Numbers in line order, the templates holding no escape, only the
/// wanted lines are read ([`join_in_order`]). Else where each number ends
/// is found first, in one pass over the digits; then each line's marks
/// (and, by column, its first column: lines of one template share
/// columns) in one pass over the templates; then the lines are written,
/// each mark's number found by its index, not searched for.
pub fn join_lines(
    templates: &[u8],
    digits: &[u8],
    max: usize,
    wanted: Option<&[(usize, usize)]>,
) -> Result<Vec<u8>, String> {
    let damaged = || "block messages do not join their numbers".to_owned();
    let by_column = match digits.split_first() {
        Some((&BY_COLUMN, _)) => true,
        Some((&IN_ORDER, _)) => false,
        _ => return Err(damaged()),
    };
    let digits = &digits[1..];
    if u32::try_from(digits.len()).is_err() || digits.last().is_some_and(|&last| last != b'\n') {
        return Err(damaged());
    }
    let escaped = memchr::memchr(ESCAPE, templates).is_some();
    if let Some(wanted) = wanted.filter(|_| !by_column && !escaped) {
        return join_in_order(templates, digits, max, wanted);
    }
    // Number `n` is `digits[start(n)..ends[n]]`.
    let ends = newlines(digits);
    let start = |number: usize| {
        if number == 0 {
            0
        } else {
            ends[number - 1] as usize + 1
        }
    };
    let wanted: Option<Vec<bool>> = wanted.map(|wanted| {
        let mut lines = vec![false; wanted.last().map_or(0, |(line, _)| line + 1)];
        for (line, _) in wanted {
            lines[*line] = true;
        }
        lines
    });
    let wanted = wanted.as_deref();
    // Each line's (marks, first column); the next number of each column.
    let mut lines: Vec<(u32, u32)> = Vec::new();
    let mut next: Vec<usize> = vec![0];
    if by_column || wanted.is_some() {
        // Without an escape, every mark byte is a mark: a line's are
        // counted at once; with one, byte by byte.
        let marks_of = |start: usize, line: &[u8]| -> Result<usize, String> {
            if escaped {
                Ok(line_marks(templates, start).ok_or_else(damaged)?.1)
            } else {
                Ok(line.iter().filter(|&&byte| byte == MARK).count())
            }
        };
        // By column: each template's first column and marks.
        let mut known: HashMap<Line, (u32, u32), BuildHasherDefault<Prehashed>> =
            HashMap::default();
        let mut counts: Vec<usize> = Vec::new();
        let mut at = 0;
        while at <= templates.len() {
            let end =
                memchr::memchr(b'\n', &templates[at..]).map_or(templates.len(), |found| at + found);
            let (start, line) = (at, &templates[at..end]);
            at = end + 1;
            let (base, marks) = if by_column {
                let (base, marks) = match known.entry(Line(line)) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        let marks = marks_of(start, line)?;
                        let base = counts.len();
                        counts.resize(base + marks, 0);
                        *entry.insert((base as u32, marks as u32))
                    }
                };
                for count in &mut counts[base as usize..(base + marks) as usize] {
                    *count += 1;
                }
                (base, marks)
            } else {
                let marks = marks_of(start, line)?;
                counts.resize(1, 0);
                counts[0] += marks;
                (0, marks as u32)
            };
            lines.push((marks, base));
        }
        next.clear();
        let mut total = 0;
        for count in counts {
            next.push(total);
            total += count;
        }
        // Every number taken, none wanting.
        if total != ends.len() {
            return Err(damaged());
        }
    }
    let mut messages = Vec::with_capacity(max.min(templates.len() + digits.len()));
    let (mut at, mut line) = (0, 0);
    while at <= templates.len() {
        if line > 0 {
            messages.push(b'\n');
            if messages.len() > max {
                return Err(damaged());
            }
        }
        let (marks, base) = lines.get(line).copied().unwrap_or((0, 0));
        if wanted.is_some_and(|wanted| !wanted.get(line).copied().unwrap_or(false)) {
            // Passed over: its numbers taken, not written.
            if by_column {
                for place in base..base + marks {
                    next[place as usize] += 1;
                }
            } else {
                next[0] += marks as usize;
            }
            at = lines_end(templates, at);
            line += 1;
            continue;
        }
        let mut column = base as usize;
        loop {
            let from = at;
            at = next_special(templates, at);
            messages.extend_from_slice(&templates[from..at]);
            match templates.get(at) {
                None => break,
                Some(&ESCAPE) => {
                    messages.push(*templates.get(at + 1).ok_or_else(damaged)?);
                    at += 2;
                }
                Some(&MARK) => {
                    let place = if by_column { column } else { 0 };
                    let number = next[place];
                    let end = *ends.get(number).ok_or_else(damaged)? as usize;
                    messages.extend_from_slice(&digits[start(number)..end]);
                    next[place] = number + 1;
                    column += 1;
                    at += 1;
                }
                Some(_) => break,
            }
        }
        at += 1;
        line += 1;
    }
    // In line order without a first pass, every number must have been
    // taken (by column, the first pass checked it).
    if messages.len() > max || (lines.is_empty() && next[0] != ends.len()) {
        return Err(damaged());
    }
    Ok(messages)
}

/// Where each newline of `digits` is: eight bytes at a time, each newline
/// found by the bits of an exact mask (no branch a byte).
fn newlines(digits: &[u8]) -> Vec<u32> {
    let mut ends = Vec::with_capacity(digits.len() / 3);
    let mut chunks = digits.chunks_exact(8);
    let mut base = 0u32;
    for chunk in &mut chunks {
        let mut zeros = newline_mask(chunk.try_into().expect("eight bytes"));
        while zeros != 0 {
            ends.push(base + zeros.trailing_zeros() / 8);
            zeros &= zeros - 1;
        }
        base += 8;
    }
    for (at, &byte) in chunks.remainder().iter().enumerate() {
        if byte == b'\n' {
            ends.push(base + at as u32);
        }
    }
    ends
}

/// [`join_lines`] of the `wanted` lines alone, numbers in line order and
/// the templates holding no escape (every mark byte a mark): the marks of
/// the lines between are counted at once and their numbers passed over
/// eight digit bytes at a time ([`skip_numbers`]), not read line by line.
fn join_in_order(
    templates: &[u8],
    digits: &[u8],
    max: usize,
    wanted: &[(usize, usize)],
) -> Result<Vec<u8>, String> {
    let damaged = || "block messages do not join their numbers".to_owned();
    let mut messages = Vec::new();
    // Lines written (their newlines), template bytes and digits passed.
    let (mut lines, mut at, mut number) = (0usize, 0usize, 0usize);
    for &(line, start) in wanted {
        if line < lines || start < at || start > templates.len() {
            return Err(damaged());
        }
        messages.resize(messages.len() + (line - lines), b'\n');
        let passed = memchr::memchr_iter(MARK, &templates[at..start]).count();
        number = skip_numbers(digits, number, passed).ok_or_else(damaged)?;
        let end = memchr::memchr(b'\n', &templates[start..])
            .map_or(templates.len(), |found| start + found);
        let mut from = start;
        while let Some(found) = memchr::memchr(MARK, &templates[from..end]) {
            messages.extend_from_slice(&templates[from..from + found]);
            // A number is a few bytes: looked for a byte at a time.
            let last = digits[number..]
                .iter()
                .position(|&byte| byte == b'\n')
                .ok_or_else(damaged)?;
            messages.extend_from_slice(&digits[number..number + last]);
            number += last + 1;
            from += found + 1;
        }
        messages.extend_from_slice(&templates[from..end]);
        if messages.len() > max {
            return Err(damaged());
        }
        (lines, at) = (line, end);
    }
    // The newlines of the lines after; every number taken, none left.
    messages.resize(
        messages.len() + memchr::memchr_iter(b'\n', &templates[at..]).count(),
        b'\n',
    );
    let passed = memchr::memchr_iter(MARK, &templates[at..]).count();
    if skip_numbers(digits, number, passed) != Some(digits.len()) || messages.len() > max {
        return Err(damaged());
    }
    Ok(messages)
}

/// Where in `digits` the number `count` numbers after the one at `from`
/// starts (each newline-ended): newlines counted eight bytes at a time;
/// `None` when fewer are left.
fn skip_numbers(digits: &[u8], mut from: usize, mut count: usize) -> Option<usize> {
    while count > 0 {
        match digits.get(from..from + 8) {
            Some(chunk) => {
                let mask = newline_mask(chunk.try_into().expect("eight bytes"));
                let found = mask.count_ones() as usize;
                if found < count {
                    (from, count) = (from + 8, count - found);
                    continue;
                }
                // The `count`th newline of the eight.
                let mut mask = mask;
                for _ in 1..count {
                    mask &= mask - 1;
                }
                return Some(from + mask.trailing_zeros() as usize / 8 + 1);
            }
            None => {
                let newline = from + digits.get(from..)?.iter().position(|&b| b == b'\n')?;
                (from, count) = (newline + 1, count - 1);
            }
        }
    }
    Some(from)
}

/// The high bit of each of eight bytes that is a newline (exact: no
/// carry from one byte reaches the next).
fn newline_mask(bytes: [u8; 8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let word = u64::from_le_bytes(bytes) ^ (ONES * u64::from(b'\n'));
    !(((word & LOWS) + LOWS) | word | LOWS)
}

/// Where the template line from `at` ends (its newline, or the end).
fn lines_end(templates: &[u8], at: usize) -> usize {
    memchr::memchr(b'\n', &templates[at.min(templates.len())..])
        .map_or(templates.len(), |found| at + found)
        + 1
}

/// Which lines of `templates` (a format 3 block's, each line a message's)
/// hold `word` (not empty, lowercase, ASCII word bytes or non-ASCII ones,
/// no ASCII digit) as a whole word, ASCII case ignored: each such line's
/// index and where it starts, in order. Such a word stands in a line's
/// template as in its message ([`template_word_before`]).
pub fn lines_holding(templates: &[u8], word: &[u8]) -> Vec<(usize, usize)> {
    let mut wanted = Vec::new();
    let lowered = templates.to_ascii_lowercase();
    let finder = memchr::memmem::Finder::new(word);
    let (mut from, mut line, mut counted) = (0usize, 0usize, 0usize);
    while let Some(found) = finder.find(&lowered[from..]) {
        let at = from + found;
        if template_word_before(&lowered, at) || template_word_after(&lowered, at + word.len()) {
            from = at + 1;
            continue;
        }
        let start = memchr::memrchr(b'\n', &lowered[counted..at])
            .map_or(counted, |newline| counted + newline + 1);
        line += memchr::memchr_iter(b'\n', &lowered[counted..at]).count();
        wanted.push((line, start));
        match memchr::memchr(b'\n', &lowered[at..]) {
            Some(newline) => {
                from = at + newline + 1;
                (line, counted) = (line + 1, from);
            }
            None => break,
        }
    }
    wanted
}

/// A template line as the key of [`join_lines`]'s map: hashed at once
/// with xxh3 (not fed to the map's SipHash), compared whole.
#[derive(PartialEq, Eq)]
struct Line<'t>(&'t [u8]);

impl std::hash::Hash for Line<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(xxhash_rust::xxh3::xxh3_64(self.0));
    }
}

/// The hasher of [`Line`]s: their hash is their xxh3, taken as it is.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; any other input is folded in.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Bytes a template's scan stops at: a mark, an escape, a line's end.
const SPECIAL: [bool; 256] = {
    let mut special = [false; 256];
    special[MARK as usize] = true;
    special[ESCAPE as usize] = true;
    special[b'\n' as usize] = true;
    special
};

/// The first mark, escape or newline in `bytes` from `at`, or its length:
/// eight bytes at a time while none is special, then one at a time.
fn next_special(bytes: &[u8], mut at: usize) -> usize {
    while let Some(word) = bytes.get(at..at + 8) {
        if has_special(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
            break;
        }
        at += 8;
    }
    while at < bytes.len() && !SPECIAL[bytes[at] as usize] {
        at += 1;
    }
    at
}

/// The template line from `at` (to its newline or the end) and its
/// [`MARK`]s; `None` when it ends in an [`ESCAPE`].
fn line_marks(templates: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let (mut at, mut marks) = (start, 0);
    loop {
        at = next_special(templates, at);
        match templates.get(at) {
            None | Some(b'\n') => return Some((&templates[start..at], marks)),
            Some(&ESCAPE) => {
                if matches!(templates.get(at + 1), None | Some(b'\n')) {
                    return None;
                }
                at += 2;
            }
            Some(_) => {
                marks += 1;
                at += 1;
            }
        }
    }
}

/// Whether any of eight bytes is a mark, an escape or a newline (a byte
/// equal to one XORs to zero; the test for a zero byte is exact).
fn has_special(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |value: u64| value.wrapping_sub(ONES) & !value & HIGHS != 0;
    zero(word ^ (ONES * MARK as u64))
        || zero(word ^ (ONES * ESCAPE as u64))
        || zero(word ^ (ONES * b'\n' as u64))
}

/// What a block's bytes hold, decompressed.
pub enum Raw {
    V1(Vec<u8>),
    V2([Vec<u8>; SECTIONS]),
    /// Numbers, templates, digits and fields: the messages not yet
    /// joined ([`join_lines`]), so that a reader may join only those it
    /// needs.
    V3([Vec<u8>; SECTIONS_3]),
}

/// The zstd level a format 2 or 3 block was compressed at; `None` for
/// format 1.
pub fn level_of(block: &[u8]) -> Option<i32> {
    (block.len() >= HEADER_LEN && (block[0] == FORMAT_2 || block[0] == FORMAT_3))
        .then(|| i32::from(block[1]))
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
    match block.first() {
        Some(&FORMAT_2) => {
            let [numbers, messages, fields] = sections::<SECTIONS>(block, raw_len, decompressor)?;
            Ok(Raw::V2([numbers, messages, fields]))
        }
        Some(&FORMAT_3) => {
            // Templates and digits take at most twice the messages'
            // bytes (an escape a byte; a newline a run of digits).
            sections::<SECTIONS_3>(block, raw_len.saturating_mul(2), decompressor).map(Raw::V3)
        }
        _ => decompressor
            .decompress(block, raw_len)
            .map(Raw::V1)
            .map_err(fail),
    }
}

/// The `N` sections of a format 2 or 3 block, decompressed; `raw_len` the
/// most memory they may take together.
fn sections<const N: usize>(
    block: &[u8],
    raw_len: usize,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<[Vec<u8>; N], String> {
    let fail = |error: std::io::Error| format!("block does not decompress: {error}");
    let table = table::<N>(block)?;
    if table.iter().map(|(raw, _)| *raw).sum::<usize>() > raw_len {
        return Err("block sections are larger than its index entry says".into());
    }
    let mut at = 2 + N * 8;
    let mut sections: [Vec<u8>; N] = std::array::from_fn(|_| Vec::new());
    for (section, (raw, compressed)) in sections.iter_mut().zip(table) {
        *section = decompressor
            .decompress(&block[at..at + compressed], raw)
            .map_err(fail)?;
        if section.len() != raw {
            return Err("block section shorter than its table says".into());
        }
        at += compressed;
    }
    Ok(sections)
}

/// The sections of a block a reader asks for, by their place in a format 2
/// block.
pub const NUMBERS: usize = 0;
pub const MESSAGES: usize = 1;
/// The sections of a format 3 block in place of the messages.
pub const TEMPLATES: usize = 1;
pub const DIGITS: usize = 2;

/// A format 2 or 3 block's sections, each decompressed only when asked,
/// into a buffer of the caller's (cleared first, its memory reused): a
/// reader that needs neither the fields nor a fresh buffer a block pays for
/// neither, and a reader of format 3 may search the templates without the
/// digits.
pub struct Sections<'b> {
    block: &'b [u8],
    /// Format 3: templates and digits where format 2 has the messages.
    pub split: bool,
    /// Each section's (raw length, start, compressed length).
    table: [(usize, usize, usize); SECTIONS_3],
}

impl<'b> Sections<'b> {
    /// The sections of `block`, `None` for format 1 (one frame: the caller
    /// decodes it whole); `raw_len` is as for [`decompress`].
    pub fn of(block: &'b [u8], raw_len: usize) -> Result<Option<Sections<'b>>, String> {
        let (split, lengths): (bool, Vec<(usize, usize)>) = match block.first() {
            Some(&FORMAT_2) => (false, table::<SECTIONS>(block)?.to_vec()),
            Some(&FORMAT_3) => (true, table::<SECTIONS_3>(block)?.to_vec()),
            _ => return Ok(None),
        };
        // Templates and digits take at most twice the messages' bytes (see
        // `decompress`).
        let most = if split {
            raw_len.saturating_mul(2)
        } else {
            raw_len
        };
        if lengths.iter().map(|(raw, _)| *raw).sum::<usize>() > most {
            return Err("block sections are larger than its index entry says".into());
        }
        let mut table = [(0, 0, 0); SECTIONS_3];
        let mut at = 2 + lengths.len() * 8;
        for (entry, (raw, compressed)) in table.iter_mut().zip(lengths) {
            *entry = (raw, at, compressed);
            at += compressed;
        }
        Ok(Some(Sections {
            block,
            split,
            table,
        }))
    }

    /// The raw length of the fields section (the last).
    pub fn fields_len(&self) -> usize {
        self.table[if self.split { SECTIONS_3 } else { SECTIONS } - 1].0
    }

    /// Decompresses section `index` into `buffer`.
    pub fn read(
        &self,
        index: usize,
        decompressor: &mut zstd::bulk::Decompressor<'static>,
        buffer: &mut Vec<u8>,
    ) -> Result<(), String> {
        let (raw, at, compressed) = self.table[index];
        buffer.clear();
        // zstd writes from the buffer's start up to its capacity: a frame
        // holding more than its table says is caught below.
        buffer.reserve(raw);
        decompressor
            .decompress_to_buffer(&self.block[at..at + compressed], &mut *buffer)
            .map_err(|error| format!("block does not decompress: {error}"))?;
        if buffer.len() != raw {
            return Err("block section is not the length its table says".into());
        }
        Ok(())
    }
}

/// Whether, in a format 3 block's templates, the byte before `at` stands
/// for a word byte: a [`MARK`] does (it stands for a run of digits), unless
/// it is the message's own byte after an [`ESCAPE`] (an odd run of them:
/// an escape's byte is escaped in turn); any other byte as itself. With
/// [`template_word_after`], what a search of a word holding no digit
/// checks at a hit in the templates, so that it finds what it would in the
/// joined messages: such a word stands in the templates as in the
/// messages (the runs of hexadecimal digits taken out hold a digit, and
/// cannot start or end inside it).
pub fn template_word_before(templates: &[u8], at: usize) -> bool {
    let Some(&byte) = at.checked_sub(1).and_then(|before| templates.get(before)) else {
        return false;
    };
    if byte != MARK {
        return is_word_byte(byte);
    }
    let escapes = templates[..at - 1]
        .iter()
        .rev()
        .take_while(|&&byte| byte == ESCAPE)
        .count();
    escapes % 2 == 0
}

/// Whether, in a format 3 block's templates, the byte at `at`, just after a
/// word, stands for a word byte: a [`MARK`] there is one (the byte before
/// it, a word's, is no [`ESCAPE`]); an [`ESCAPE`] is not, nor the byte it
/// escapes.
pub fn template_word_after(templates: &[u8], at: usize) -> bool {
    templates
        .get(at)
        .is_some_and(|&byte| byte == MARK || is_word_byte(byte))
}

/// A format 2 or 3 block's section table: (raw, compressed) lengths,
/// checked to cover its bytes exactly.
fn table<const N: usize>(block: &[u8]) -> Result<[(usize, usize); N], String> {
    let header_len = 2 + N * 8;
    if block.len() < header_len {
        return Err("block shorter than its header".into());
    }
    let mut table = [(0usize, 0usize); N];
    let word = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().unwrap()) as usize;
    for (index, entry) in table.iter_mut().enumerate() {
        *entry = (word(2 + index * 8), word(2 + index * 8 + 4));
    }
    if header_len
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
    fn messages_split_from_their_numbers_join_back_exactly() {
        for text in [
            "",
            "step 12 loss 0.345 tokens/s 9000\nstep 13 loss 0.3 tokens/s 9001\n",
            "7",
            "no numbers at all\n",
            "marks \u{11} and escapes \u{12}\u{11}1\u{12} kept 42\n",
            "ends in digits 0099",
        ] {
            let (templates, both) = split_numbers(text.as_bytes());
            for digits in both {
                assert_eq!(
                    join_numbers(&templates, &digits, text.len()).unwrap(),
                    text.as_bytes()
                );
                if !text.is_empty() {
                    assert!(join_numbers(&templates, &digits, text.len() - 1).is_err());
                }
            }
        }
        let (templates, _) = split_numbers(b"step 12 loss 0.345\n");
        assert_eq!(templates, b"step \x11 loss \x11.\x11\n");
        // The numbers of one place in one kind of line together.
        let (templates, [by_column, in_order]) = split_numbers(b"a 1 b 2\nc 3\na 4 b 5\n");
        assert_eq!(templates, b"a \x11 b \x11\nc \x11\na \x11 b \x11\n");
        assert_eq!(by_column, b"c1\n4\n2\n5\n3\n");
        assert_eq!(in_order, b"o1\n2\n3\n4\n5\n");
        // Hexadecimal runs holding a digit are numbers too (ids, hashes);
        // words of hexadecimal letters alone are not.
        let (templates, [_, in_order]) = split_numbers(b"req=525a4bc3-c608 feed added\n");
        assert_eq!(templates, b"req=\x11-\x11 feed added\n");
        assert_eq!(in_order, b"o525a4bc3\nc608\n");
        // The scan eight bytes at a time stops where a byte at a time would.
        for word in [
            *b"abcdefgh",
            *b"abc\x11efgh",
            *b"\x12bcdefgh",
            *b"abcdefg\n",
        ] {
            let special = word.iter().any(|byte| SPECIAL[*byte as usize]);
            assert_eq!(has_special(u64::from_le_bytes(word)), special, "{word:?}");
        }
        // Damage: a mark with no digits left, digits left over, an escape
        // at the end, no order, an unknown order.
        assert!(join_numbers(b"a\x11", b"o", 10).is_err());
        assert!(join_numbers(b"a", b"o1\n", 10).is_err());
        assert!(join_numbers(b"a\x12", b"o", 10).is_err());
        assert!(join_numbers(b"a", b"", 10).is_err());
        assert!(join_numbers(b"a\x11", b"x1\n", 10).is_err());
        assert_eq!(join_numbers(b"a\x11", b"c1\n", 10).unwrap(), b"a1");
        // Some lines alone: the others empty, their numbers passed over,
        // in line order and by column.
        for (text, escaped) in [
            (&b"a 1 b 2\nc 3\na 4 b 5\nc 6"[..], false),
            (b"a 1 b 2\nc 3\na 4 b 5\x11\nc 6", true),
        ] {
            let (templates, both) = split_numbers(text);
            assert_eq!(
                lines_holding(&templates, b"c"),
                [(1, 8), (3, 20 + 2 * escaped as usize)]
            );
            for digits in both {
                let lines = [(1, 8), (2, 12)];
                let mut expected = b"\nc 3\na 4 b 5".to_vec();
                if escaped {
                    expected.push(MARK);
                }
                expected.push(b'\n');
                assert_eq!(
                    join_lines(&templates, &digits, text.len(), Some(&lines)).unwrap(),
                    expected
                );
                assert_eq!(
                    join_lines(&templates, &digits, text.len(), Some(&[])).unwrap(),
                    b"\n\n\n"
                );
                // A number missing is damage, joined or passed over.
                let short = &digits[..digits.len() - 2];
                assert!(join_lines(&templates, short, text.len(), Some(&lines)).is_err());
                assert!(join_lines(&templates, short, text.len(), Some(&[])).is_err());
            }
        }
    }

    #[test]
    fn settled_blocks_read_back_as_their_sections() {
        let mut compressor = BlockCompressor::new(19).unwrap();
        compressor.settled(true).unwrap();
        let sections: [&[u8]; SECTIONS] = [b"numbers", b"run 1 of 20\nrun 2 of 20\n", b"{}\n{}\n"];
        let (block, raw) = compressor.block(sections);
        assert_eq!(block[0], FORMAT_3);
        assert_eq!(level_of(&block), Some(19));
        let mut decompressor = zstd::bulk::Decompressor::new().unwrap();
        let Raw::V3([numbers, templates, digits, fields]) =
            decompress(&block, raw as usize, &mut decompressor).unwrap()
        else {
            panic!("format 3 reads as its four sections");
        };
        let messages = join_numbers(&templates, &digits, raw as usize).unwrap();
        assert_eq!([numbers, messages, fields], sections.map(<[u8]>::to_vec));
        // The lines holding a word alone.
        let wanted = lines_holding(&templates, b"run");
        assert_eq!(wanted, [(0, 0), (1, 11)]);
        assert!(lines_holding(&templates, b"of20").is_empty());
    }

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
