//! Query execution: one ordered page from the memtable and the parts.
//!
//! Candidate blocks are chosen from part footers alone (tenant, label
//! matchers against the partition's app and each stream's labels, time,
//! levels, output streams, request index, and the words a phrase, substring
//! or regex requires against each block's word filter, alternations as
//! "all the words of one branch"). They are opened lazily, in order of
//! their first possible record, and merged with the memtable through a
//! heap; a block's records are built one at a time as the page takes them,
//! and a block is let go once read through. So a page reads only the blocks
//! it needs, and memory stays bounded by the blocks that overlap in time.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Bound;
use std::sync::Arc;

use tailwater_model::time::timestamp_ns;
use tailwater_model::{Cursor, Direction, Filter, Labels, LogRecord, Query};

use crate::cache::BlockCache;
use crate::damage::SkippedBlock;
use crate::memtable::Memtable;
use crate::part::block::DecodedBlock;
use crate::part::reader::Part;
use crate::part::{BlockMeta, Footer, StreamLabels};
use crate::Page;

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

/// Opens a block (through the cache), or notes in `skipped` why it could
/// not and gives nothing.
fn open_block_or_skip(
    cache: &BlockCache,
    part: &Part,
    index: usize,
    skipped: &RefCell<Vec<SkippedBlock>>,
) -> Option<Arc<DecodedBlock>> {
    cache
        .open(part, index)
        .inspect_err(|error| {
            skipped
                .borrow_mut()
                .push(SkippedBlock::of(part, index, error))
        })
        .ok()
}

/// The records of one block within a page's bounds that match its filter,
/// in the page's order, each built only once the cheap checks (time, id,
/// message) pass: an open block costs its columns, not its records.
struct BlockRecords<'f> {
    block: Arc<DecodedBlock>,
    positions: std::ops::Range<usize>,
    backward: bool,
    bounds: Bounds,
    filter: &'f Filter,
    /// Where it is, to say so should a record not build.
    part: &'f Part,
    index: usize,
    skipped: &'f RefCell<Vec<SkippedBlock>>,
}

impl<'f> BlockRecords<'f> {
    fn new(
        (part, index): (&'f Part, usize),
        block: Arc<DecodedBlock>,
        backward: bool,
        bounds: Bounds,
        filter: &'f Filter,
        skipped: &'f RefCell<Vec<SkippedBlock>>,
    ) -> Self {
        BlockRecords {
            positions: 0..block.len(),
            block,
            backward,
            bounds,
            filter,
            part,
            index,
            skipped,
        }
    }
}

impl Iterator for BlockRecords<'_> {
    type Item = LogRecord;

    fn next(&mut self) -> Option<LogRecord> {
        loop {
            let index = if self.backward {
                self.positions.next_back()?
            } else {
                self.positions.next()?
            };
            let position = Cursor {
                ts_ns: self.block.ts(index),
                position: self.block.id(index),
            };
            if !self.bounds.contains(&position)
                || !self.filter.matches_message(self.block.message(index))
            {
                continue;
            }
            match self.block.record(index) {
                Ok(record) if self.filter.matches(&record) => return Some(record),
                Ok(_) => {}
                Err(reason) => {
                    let reason = format!("block {}: {reason}", self.index);
                    self.skipped.borrow_mut().push(SkippedBlock::of(
                        self.part,
                        self.index,
                        format!("part {} is corrupt: {reason}", self.part.path().display()),
                    ));
                    self.positions = 0..0;
                    return None;
                }
            }
        }
    }
}

struct Pending<'p> {
    part: &'p Part,
    block: usize,
    /// Where its first record may lie in the page's order.
    edge_ts: i64,
}

struct Head {
    position: Cursor,
    backward: bool,
    source: usize,
    record: LogRecord,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// The heap pops its greatest: the next record in the page's order.
    fn cmp(&self, other: &Self) -> Ordering {
        let order = self.position.cmp(&other.position);
        if self.backward {
            order
        } else {
            order.reverse()
        }
    }
}

/// One page of `tenant`'s records matching `query`.
pub(crate) fn page(
    tenant: &str,
    query: &Query,
    memtable: &Memtable,
    parts: &[Arc<Part>],
    cache: &BlockCache,
    as_of: u64,
) -> Page {
    let skipped = RefCell::new(Vec::new());
    let bounds = Bounds::of(query);
    if bounds.is_empty() {
        return Page {
            as_of,
            ..Page::default()
        };
    }
    let backward = query.direction == Direction::Backward;
    let filter = &query.filter;
    let prune = Prune::new(filter);
    let prune = &prune;

    let mut pending: Vec<Pending> = parts
        .iter()
        .filter(|part| {
            part.footer.partition.tenant == tenant
                && bounds.overlaps(part.footer.min_ts, part.footer.max_ts)
        })
        .flat_map(|part| {
            candidate_blocks(part, tenant, prune).filter_map(move |block| {
                let meta = &part.footer.blocks[block];
                bounds
                    .overlaps(meta.min_ts, meta.max_ts)
                    .then_some(Pending {
                        part,
                        block,
                        edge_ts: if backward { meta.max_ts } else { meta.min_ts },
                    })
            })
        })
        .collect();
    // Opened from the back of the vector: the block whose records come first.
    if backward {
        pending.sort_by_key(|p| p.edge_ts);
    } else {
        pending.sort_by_key(|p| std::cmp::Reverse(p.edge_ts));
    }

    let mut sources: Vec<Box<dyn Iterator<Item = LogRecord> + '_>> = Vec::new();
    let mut heap = BinaryHeap::new();
    let push_next = |heap: &mut BinaryHeap<Head>,
                     sources: &mut Vec<Box<dyn Iterator<Item = LogRecord> + '_>>,
                     source: usize| {
        match sources[source].next() {
            Some(record) => heap.push(Head {
                position: Cursor::of(&record),
                backward,
                source,
                record,
            }),
            // Done: let its block go now, not at the end of the page, so a
            // page that reads through many blocks holds one at a time.
            None => sources[source] = Box::new(std::iter::empty()),
        }
    };
    sources.push(Box::new(
        memtable
            .in_time_range(bounds.lower, bounds.upper, backward)
            .filter(|entry| entry.matches(tenant, filter))
            .map(|entry| entry.to_record()),
    ));
    push_next(&mut heap, &mut sources, 0);

    let mut records = Vec::with_capacity(query.limit.min(1024) + 1);
    let mut opened = Vec::new();
    while records.len() <= query.limit {
        // Open every block whose first record could come before the head.
        while let Some(next) = pending.last() {
            let could_come_first = match heap.peek() {
                None => true,
                Some(head) if backward => next.edge_ts >= head.position.ts_ns,
                Some(head) => next.edge_ts <= head.position.ts_ns,
            };
            if !could_come_first {
                break;
            }
            let next = pending.pop().expect("peeked");
            let Some(block) = open_block_or_skip(cache, next.part, next.block, &skipped) else {
                continue;
            };
            // Weak: a block read through is still let go at once.
            opened.push((next.part, next.block, Arc::downgrade(&block)));
            sources.push(Box::new(BlockRecords::new(
                (next.part, next.block),
                block,
                backward,
                bounds,
                filter,
                &skipped,
            )));
            let source = sources.len() - 1;
            push_next(&mut heap, &mut sources, source);
        }
        let Some(head) = heap.pop() else { break };
        push_next(&mut heap, &mut sources, head.source);
        records.push(head.record);
    }
    let next = if records.len() > query.limit {
        records.truncate(query.limit);
        records.last().map(Cursor::of)
    } else {
        None
    };
    if let Some(cursor) = next {
        // The next page starts where this one stopped: it needs again the
        // blocks with records past the cursor (still open, so still held).
        for (part, index, block) in opened {
            let meta = &part.footer.blocks[index];
            let continues = if backward {
                meta.min_ts <= cursor.ts_ns
            } else {
                meta.max_ts >= cursor.ts_ns
            };
            if let Some(block) = block.upgrade().filter(|_| continues) {
                cache.keep(part, index, block);
            }
        }
    }
    drop(sources);
    Page {
        records,
        next,
        as_of,
        skipped: skipped.into_inner(),
    }
}
