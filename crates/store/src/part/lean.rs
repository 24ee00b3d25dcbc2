//! Reading a block for a count: only the columns a count looks at, into
//! buffers kept from block to block, the messages as bytes.
//!
//! [`DecodedBlock`](super::block::DecodedBlock) decodes every column of a
//! block and checks each, for readers that build records. A count of a word
//! needs the messages, and each taken record's time and level: here a
//! format 2 block's numbers and messages are decompressed (its fields are
//! not), into memory reused for the next block, and the messages are left
//! as the bytes they decompressed to, neither copied into a `String` nor
//! checked to be UTF-8. That is safe: they are searched as bytes (a word is
//! ASCII word bytes, matched byte for byte), never handed out as text, and
//! a block's bytes pass their checksum before they are decompressed; the
//! writer only ever writes `String`s. So a block that would fail the check
//! holds bytes no store wrote: the count then counts what it holds, where a
//! page skips it (as for fields that are not JSON, `count.rs`). The same
//! holds for the other columns a count does not look at (levels and
//! streams of records it does not take, request ids, fields), and for a
//! message column of more lines than records when no record's place is
//! asked for.
//!
//! A format 3 block (settled: messages as templates and digits,
//! `layout.rs`) whose messages are one a line is read the same way with its
//! templates in place of the messages, its digits not decompressed, when
//! the word counted holds no digit: such a word stands in the templates as
//! in the messages, and a mark beside it is a word byte beside it
//! (`layout::template_word_before`). For a word holding a digit, or a block
//! where a message holds a newline (its template lines are not its
//! records), the messages are joined again first.
//!
//! Format 1 blocks (one frame of every column) are not read here: the
//! caller decodes them whole.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use tailwater_model::Level;

use super::layout::{self, Numbers, Sections, DIGITS, MESSAGES, NUMBERS, TEMPLATES};
use super::reader::{Part, PartError};

/// The low bits of a record's kind byte: its level (as `block.rs` writes).
const LEVEL_MASK: u8 = 0b111;

/// Buffers and a zstd context, kept by one reader for all its blocks.
pub struct LeanReader {
    decompressor: zstd::bulk::Decompressor<'static>,
    compressed: Vec<u8>,
    numbers: Vec<u8>,
    messages: Vec<u8>,
    /// A format 3 block's templates and digits, when its messages are
    /// joined again.
    templates: Vec<u8>,
    digits: Vec<u8>,
    places: Vec<Range<u32>>,
}

/// What a count reads of a block: each record's message place, level, and
/// (when asked) time and id.
pub struct LeanBlock<'r> {
    kind: Vec<u8>,
    /// The message column: messages one per line (or, in a block where a
    /// message holds a newline, one after another), mutable so a reader
    /// may lowercase it in place.
    pub messages: &'r mut [u8],
    /// Whether `messages` holds a format 3 block's templates, one a line:
    /// each [`layout::MARK`] in it stands for a run of digits (a word's
    /// bytes), found with [`layout::template_word_before`] and
    /// [`layout::template_word_after`].
    pub templates: bool,
    /// Each record's message place in `messages`, in record order; `None`
    /// when the block holds one message a line (no message holds a
    /// newline): its lines are its records.
    pub places: Option<&'r [Range<u32>]>,
    /// Each record's time and id; empty unless asked for.
    pub ts: Vec<i64>,
    pub ids: Vec<u64>,
}

impl LeanBlock<'_> {
    pub fn len(&self) -> usize {
        self.kind.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kind.is_empty()
    }

    /// Level of record `index`; an error for a code no writer writes.
    pub fn level(&self, index: usize) -> Result<Level, String> {
        Level::from_code(self.kind[index] & LEVEL_MASK)
            .ok_or_else(|| "block has an unknown level or stream".to_owned())
    }
}

impl LeanReader {
    pub fn new() -> std::io::Result<LeanReader> {
        Ok(LeanReader {
            decompressor: zstd::bulk::Decompressor::new()?,
            compressed: Vec::new(),
            numbers: Vec::new(),
            messages: Vec::new(),
            templates: Vec::new(),
            digits: Vec::new(),
            places: Vec::new(),
        })
    }

    /// Reads block `index` of `part` (checksum verified), its messages
    /// when `messages` (else `messages` is empty and `places` `None`), each
    /// record's time and id when `times` (else those are empty: the
    /// numbers are then parsed past, not kept); `None` for a format 1
    /// block. Of a format 3 block whose messages are one a line, the
    /// templates alone are read in their place when `templates` (the
    /// caller searches them for a word holding no digit); else its
    /// messages are joined again.
    pub fn read(
        &mut self,
        part: &Part,
        index: usize,
        messages: bool,
        times: bool,
        templates: bool,
    ) -> Result<Option<LeanBlock<'_>>, PartError> {
        part.read_compressed_into(index, &mut self.compressed)?;
        let corrupt = |reason: String| PartError::Corrupt {
            path: part.path().to_owned(),
            reason: format!("block {index}: {reason}"),
        };
        let raw_len = part.footer.blocks[index].raw_len as usize;
        let Some(sections) = Sections::of(&self.compressed, raw_len).map_err(corrupt)? else {
            return Ok(None);
        };
        let decompressor = &mut self.decompressor;
        sections
            .read(NUMBERS, decompressor, &mut self.numbers)
            .map_err(corrupt)?;
        let decode = |error: postcard::Error| corrupt(format!("block does not decode: {error}"));
        let (kind, lengths, ts, ids) = if times {
            let numbers: Numbers = postcard::from_bytes(&self.numbers).map_err(decode)?;
            let count = numbers.kind.len();
            let ts = numbers.times(count).map_err(corrupt)?;
            if numbers.id.len() != count {
                return Err(corrupt("block columns disagree in length".into()));
            }
            let mut id = 0i64;
            let ids = numbers
                .id
                .iter()
                .map(|delta| {
                    id = id.wrapping_add(*delta);
                    id as u64
                })
                .collect();
            (numbers.kind, numbers.message_len, ts, ids)
        } else {
            let numbers: LeanNumbers = postcard::from_bytes(&self.numbers).map_err(decode)?;
            (
                numbers.kind.to_vec(),
                numbers.message_len,
                Vec::new(),
                Vec::new(),
            )
        };
        let by_line = lengths.is_empty();
        // Lines of templates are records only where a message is a line.
        let as_templates = messages && sections.split && templates && by_line;
        self.messages.clear();
        if messages && (!sections.split || as_templates) {
            sections
                .read(MESSAGES, decompressor, &mut self.messages)
                .map_err(corrupt)?;
        } else if messages {
            sections
                .read(TEMPLATES, decompressor, &mut self.templates)
                .map_err(corrupt)?;
            sections
                .read(DIGITS, decompressor, &mut self.digits)
                .map_err(corrupt)?;
            let left = raw_len.saturating_sub(self.numbers.len() + sections.fields_len());
            self.messages =
                layout::join_numbers(&self.templates, &self.digits, left).map_err(corrupt)?;
        }
        self.places.clear();
        if messages && !by_line {
            places(&self.messages, &lengths, kind.len(), &mut self.places).map_err(corrupt)?;
        }
        Ok(Some(LeanBlock {
            kind,
            messages: &mut self.messages,
            templates: as_templates,
            places: (messages && !by_line).then_some(self.places.as_slice()),
            ts,
            ids,
        }))
    }
}

/// [`Numbers`] as a count reads it when it needs no record's time: the
/// same layout, the columns it does not look at parsed past and dropped,
/// the level and stream bytes borrowed.
#[derive(Deserialize)]
struct LeanNumbers<'a> {
    _ms: Skipped<i64>,
    _sub_unit: u64,
    _sub_width: u8,
    #[serde(borrow)]
    _sub: &'a [u8],
    _id: Skipped<i64>,
    _seq: Skipped<i64>,
    #[serde(borrow)]
    kind: &'a [u8],
    _request_dictionary: Skipped<&'a str>,
    _request: Skipped<u32>,
    message_len: Vec<u32>,
    _invalid_utf8: Skipped<u32>,
}

/// A sequence parsed and dropped (postcard has no other way past it).
struct Skipped<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Skipped<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
            type Value = Skipped<T>;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a sequence")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
                while items.next_element::<T>()?.is_some() {}
                Ok(Skipped(PhantomData))
            }
        }
        deserializer.deserialize_seq(Items(PhantomData))
    }
}

/// Each of `count` messages' place in `messages` into `places`, by their
/// `lengths`.
fn places(
    messages: &[u8],
    lengths: &[u32],
    count: usize,
    places: &mut Vec<Range<u32>>,
) -> Result<(), String> {
    places.clear();
    if lengths.len() != count {
        return Err("block columns disagree in length".into());
    }
    let mut start = 0u32;
    for len in lengths {
        let end = start
            .checked_add(*len)
            .filter(|end| *end as usize <= messages.len())
            .ok_or("block message out of range")?;
        places.push(start..end);
        start = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a count reads of the numbers is what the writer wrote, every
    /// column around it filled: the two layouts agree.
    #[test]
    fn lean_numbers_read_the_layout_the_writer_writes() {
        let mut numbers = Numbers {
            id: vec![5, -3, 1 << 40],
            seq: vec![1, 1, 1],
            kind: vec![2, 3 | 1 << 3, 5],
            request_dictionary: vec!["req-1".into(), "é".into()],
            request: vec![0, 1, 2],
            message_len: vec![3, 0, 7],
            invalid_utf8: vec![1],
            ..Numbers::default()
        };
        numbers.set_times(&[1_000_123_456, 1_000_999_000, 2_000_000_001]);
        let bytes = postcard::to_stdvec(&numbers).unwrap();
        let lean: LeanNumbers = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(
            (lean.kind, lean.message_len),
            (&numbers.kind[..], numbers.message_len)
        );
    }
}
