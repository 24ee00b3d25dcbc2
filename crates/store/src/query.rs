//! What a query may match, known before a block is read: its time bounds
//! (with its cursor) and the blocks it may need, chosen from part footers
//! alone (tenant, label matchers against the partition's app and each
//! stream's labels, time, levels, output streams, request index, and the
//! words a phrase, substring or regex requires against each block's word
//! filter, alternations as "all the words of one branch"). Reading them in
//! time order is `scan.rs`'s; counting them `count.rs`'s.

use std::ops::Bound;

use tailwater_model::time::timestamp_ns;
use tailwater_model::{Cursor, Direction, Filter, Labels, LogRecord, Query};

use crate::damage::SkippedBlock;
use crate::part::reader::Part;
use crate::part::{BlockMeta, Footer, StreamLabels};

/// The time bounds of a query, with its cursor applied.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub lower: Bound<Cursor>,
    pub upper: Bound<Cursor>,
}

impl Bounds {
    pub fn of(query: &Query) -> Bounds {
        let filter = &query.filter;
        let mut lower = filter
            .since
            .map(|since| {
                Bound::Included(Cursor {
                    ts_ns: timestamp_ns(since),
                    position: 0,
                })
            })
            .unwrap_or(Bound::Unbounded);
        let mut upper = filter
            .until
            .map(|until| {
                Bound::Excluded(Cursor {
                    ts_ns: timestamp_ns(until),
                    position: 0,
                })
            })
            .unwrap_or(Bound::Unbounded);
        match (query.direction, query.cursor) {
            (Direction::Forward, Some(cursor)) => lower = tighter_lower(lower, cursor),
            (Direction::Backward, Some(cursor)) => upper = tighter_upper(upper, cursor),
            (_, None) => {}
        }
        Bounds { lower, upper }
    }

    /// `BTreeSet::range` panics on an inverted range; it is an empty page.
    pub fn is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Included(start), Bound::Included(end)) => start > end,
            (
                Bound::Included(start) | Bound::Excluded(start),
                Bound::Included(end) | Bound::Excluded(end),
            ) => start >= end,
            _ => false,
        }
    }

    pub fn contains(&self, position: &Cursor) -> bool {
        let above = match &self.lower {
            Bound::Included(start) => position >= start,
            Bound::Excluded(start) => position > start,
            Bound::Unbounded => true,
        };
        let below = match &self.upper {
            Bound::Included(end) => position <= end,
            Bound::Excluded(end) => position < end,
            Bound::Unbounded => true,
        };
        above && below
    }

    /// Whether every record with a time in `min_ts..=max_ts` falls within,
    /// whatever its position.
    pub fn holds(&self, min_ts: i64, max_ts: i64) -> bool {
        let above = match &self.lower {
            Bound::Included(start) => {
                min_ts > start.ts_ns || (min_ts == start.ts_ns && start.position == 0)
            }
            Bound::Excluded(start) => min_ts > start.ts_ns,
            Bound::Unbounded => true,
        };
        let below = match &self.upper {
            Bound::Included(end) | Bound::Excluded(end) => max_ts < end.ts_ns,
            Bound::Unbounded => true,
        };
        above && below
    }

    /// Whether records with times in `min_ts..=max_ts` may fall within.
    pub fn overlaps(&self, min_ts: i64, max_ts: i64) -> bool {
        let above = match &self.lower {
            Bound::Included(start) | Bound::Excluded(start) => max_ts >= start.ts_ns,
            Bound::Unbounded => true,
        };
        let below = match &self.upper {
            Bound::Included(end) | Bound::Excluded(end) => min_ts <= end.ts_ns,
            Bound::Unbounded => true,
        };
        above && below
    }
}

fn tighter_lower(bound: Bound<Cursor>, cursor: Cursor) -> Bound<Cursor> {
    match bound {
        Bound::Included(start) | Bound::Excluded(start) if start > cursor => bound,
        _ => Bound::Excluded(cursor),
    }
}

fn tighter_upper(bound: Bound<Cursor>, cursor: Cursor) -> Bound<Cursor> {
    match bound {
        Bound::Included(end) | Bound::Excluded(end) if end <= cursor => bound,
        _ => Bound::Excluded(cursor),
    }
}

/// What a query rules out from footers alone, prepared once per query.
pub(crate) struct Prune<'f> {
    filter: &'f Filter,
    /// Lowercased words every match holds ([`Filter::required_words`]).
    words: Vec<String>,
    /// Lists of words of which every match holds all of one
    /// ([`Filter::word_alternatives`]).
    alternatives: &'f [Vec<String>],
}

impl<'f> Prune<'f> {
    pub fn new(filter: &'f Filter) -> Prune<'f> {
        Prune {
            filter,
            words: filter.required_words(),
            alternatives: filter.word_alternatives(),
        }
    }

    /// Whether `footer`'s part may hold a match, by its partition's app.
    pub fn part_may_match(&self, footer: &Footer) -> bool {
        self.filter
            .app
            .as_ref()
            .is_none_or(|app| app.matches(&footer.partition.app))
    }

    /// Whether records of a stream with `labels` may match.
    fn stream_may_match(&self, labels: &StreamLabels) -> bool {
        self.filter
            .source
            .is_none_or(|source| source == labels.source)
            && self.filter.matches_labels(Labels {
                app: &labels.app,
                version: &labels.version,
                runner: &labels.runner,
                boot: &labels.boot,
            })
    }

    /// Whether a block of a stream that may match may hold a match: levels,
    /// output streams and words.
    fn block_may_match(&self, block: &BlockMeta) -> bool {
        let filter = self.filter;
        filter
            .min_level
            .is_none_or(|level| block.levels >> level.code() != 0)
            && filter
                .stream
                .is_none_or(|stream| block.outputs & (1 << stream.code()) != 0)
            && self.words.iter().all(|word| block.words.may_contain(word))
            && (self.alternatives.is_empty()
                || self.alternatives.iter().any(|alternative| {
                    alternative.iter().all(|word| block.words.may_contain(word))
                }))
    }
}

/// Whether `filter` asks anything of single records beyond their labels and
/// time.
pub(crate) fn asks_of_records(filter: &Filter) -> bool {
    filter.request_id.is_some()
        || filter.source.is_some()
        || filter.stream.is_some()
        || filter.min_level.is_some()
        || filter.text.is_some()
        || filter.contains.is_some()
        || filter.regex.is_some()
        || !filter.fields.is_empty()
}

/// The blocks of `part` that may hold matches of `tenant`'s query, as
/// indexes, judged from the footer alone: labels once per stream, then each
/// block's levels, outputs and word filter; the request index when the
/// query names a request.
pub(crate) fn candidate_blocks<'p>(
    part: &'p Part,
    tenant: &str,
    prune: &'p Prune<'p>,
) -> Box<dyn Iterator<Item = usize> + 'p> {
    let footer = &part.footer;
    if footer.partition.tenant != tenant || !prune.part_may_match(footer) {
        return Box::new(std::iter::empty());
    }
    let streams: Vec<bool> = footer
        .streams
        .iter()
        .map(|stream| prune.stream_may_match(&stream.labels))
        .collect();
    if !streams.contains(&true) {
        return Box::new(std::iter::empty());
    }
    let matching = move |index: &usize| {
        let block = &footer.blocks[*index];
        streams[block.stream as usize] && prune.block_may_match(block)
    };
    match &prune.filter.request_id {
        Some(request_id) => Box::new(
            footer
                .request_blocks(request_id)
                .iter()
                .map(|index| *index as usize)
                .filter(matching),
        ),
        None => Box::new((0..footer.blocks.len()).filter(matching)),
    }
}

/// Reads a block, or notes in `skipped` why it could not and yields
/// nothing: one damaged block never fails a whole query, and the caller is
/// told what it lacks.
pub(crate) fn read_block_or_skip(
    part: &Part,
    index: usize,
    skipped: &mut Vec<SkippedBlock>,
) -> Vec<LogRecord> {
    part.read_block(index).unwrap_or_else(|error| {
        skipped.push(SkippedBlock::of(part, index, error));
        Vec::new()
    })
}
