//! Reading in time order: the memtable and the chosen blocks merged through
//! a heap, each matching record visited borrowed ([`RecordRef`]), up to a
//! page's limit.
//!
//! Candidate blocks come from footers alone (`query::candidate_blocks`).
//! They are opened lazily, in order of their first possible record, and a
//! block is let go once read through: a scan reads only the blocks it
//! needs, and memory stays bounded by the blocks that overlap in time. A
//! row is judged on its borrowed columns (`Filter::matches_parts`, fields
//! parsed only for a filter on fields); the heap holds positions, never
//! records. A page ([`page`], what `Store::query` answers) is a scan that
//! builds each record it visits; an export writes each straight from the
//! borrowed row (`Store::scan`).

use std::cmp::Ordering;
use std::collections::binary_heap::PeekMut;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::sync::Arc;

use tailwater_model::{Cursor, Direction, Filter, Query};

use crate::cache::BlockCache;
use crate::damage::SkippedBlock;
use crate::memtable::{Entry, Memtable};
use crate::part::block::DecodedBlock;
use crate::part::layout::FORMAT_3;
use crate::part::reader::Part;
use crate::query::{asks_of_records, candidate_blocks, Bounds, Prune};
use crate::record_ref::RecordRef;
use crate::Page;

/// What a scan says besides the records it visited.
pub(crate) struct Scanned {
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
    /// Blocks that may hold matches but could not be read, skipped.
    pub skipped: Vec<SkippedBlock>,
}

/// One page of `tenant`'s records matching `query`, built.
pub(crate) fn page(
    tenant: &str,
    query: &Query,
    memtable: &Memtable,
    parts: &[Arc<Part>],
    cache: &BlockCache,
    as_of: u64,
) -> Page {
    let mut records = Vec::with_capacity(query.limit.min(1024));
    let scanned = scan(tenant, query, (memtable, parts, cache), &mut |row| {
        records.push(row.to_record()?);
        Ok(())
    });
    Page {
        records,
        next: scanned.next,
        as_of,
        skipped: scanned.skipped,
    }
}

/// A block being read: its rows from `positions`, in the scan's order.
struct BlockRows<'p> {
    block: Arc<DecodedBlock>,
    positions: Range<usize>,
    /// The row at the head, once found.
    current: usize,
    part: &'p Part,
    index: usize,
}

enum Source<'m, 'p> {
    Memtable {
        rows: Box<dyn Iterator<Item = Entry<'m>> + 'm>,
        current: Option<Entry<'m>>,
    },
    Block(BlockRows<'p>),
    Done,
}

impl Source<'_, '_> {
    /// The row at its head.
    fn row(&self) -> RecordRef<'_> {
        match self {
            Source::Memtable {
                current: Some(entry),
                ..
            } => {
                let (row, stream) = (entry.record, entry.stream);
                RecordRef {
                    position: row.id,
                    ts_ns: row.ts_ns,
                    tenant: &stream.tenant,
                    labels: &stream.labels,
                    seq: row.seq,
                    stream: row.stream,
                    level: row.level,
                    request_id: row.request_id.as_deref(),
                    message: &row.message,
                    fields_json: row.fields.as_bytes(),
                    invalid_utf8: row.invalid_utf8,
                }
            }
            Source::Block(rows) => block_row(&rows.block, rows.current),
            _ => unreachable!("only a source with a head is in the heap"),
        }
    }
}

/// Row `index` of `block`, borrowed.
fn block_row(block: &DecodedBlock, index: usize) -> RecordRef<'_> {
    let (tenant, labels) = block.owner();
    RecordRef {
        position: block.id(index),
        ts_ns: block.ts(index),
        tenant,
        labels,
        seq: block.seq(index),
        stream: block.stream(index),
        level: block.level(index),
        request_id: block.request_id(index),
        message: block.message(index),
        fields_json: block.fields_json(index),
        invalid_utf8: block.invalid_utf8(index),
    }
}

struct Pending<'p> {
    part: &'p Part,
    block: usize,
    /// Where its first record may lie in the scan's order.
    edge_ts: i64,
}

struct Head {
    position: Cursor,
    backward: bool,
    source: usize,
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
    /// The heap pops its greatest: the next record in the scan's order.
    fn cmp(&self, other: &Self) -> Ordering {
        let order = self.position.cmp(&other.position);
        if self.backward {
            order
        } else {
            order.reverse()
        }
    }
}

/// The merge of a scan's sources.
struct Merge<'m, 'p, 'f> {
    tenant: &'f str,
    filter: &'f Filter,
    bounds: Bounds,
    backward: bool,
    /// Whether a block's row must be judged one by one: labels were
    /// judged for its whole stream when the block was chosen, and time is
    /// the bounds'.
    per_record: bool,
    sources: Vec<Source<'m, 'p>>,
    skipped: Vec<SkippedBlock>,
}

impl Merge<'_, '_, '_> {
    /// Moves `source` to its next matching row, its position; a source
    /// read through is let go at once, so a scan that reads through many
    /// blocks holds one at a time.
    fn advance(&mut self, source: usize) -> Option<Cursor> {
        let position = match &mut self.sources[source] {
            Source::Memtable { rows, current } => {
                let (tenant, filter) = (self.tenant, self.filter);
                *current = rows.find(|entry| entry.matches(tenant, filter));
                current.map(|entry| Cursor {
                    ts_ns: entry.record.ts_ns,
                    position: entry.record.id,
                })
            }
            Source::Block(rows) => {
                let filter = self.per_record.then_some(self.filter);
                match next_in_block(rows, self.backward, self.bounds, filter) {
                    Ok(position) => position,
                    Err(reason) => {
                        self.skip(source, &reason);
                        None
                    }
                }
            }
            Source::Done => None,
        };
        if position.is_none() {
            self.sources[source] = Source::Done;
        }
        position
    }

    fn head(&self, position: Cursor, source: usize) -> Head {
        Head {
            position,
            backward: self.backward,
            source,
        }
    }

    /// Notes that `source`'s block cannot be read past here and lets it go.
    fn skip(&mut self, source: usize, reason: &str) {
        if let Source::Block(rows) = &self.sources[source] {
            self.skipped.push(SkippedBlock::of(
                rows.part,
                rows.index,
                format!(
                    "part {} is corrupt: block {}: {reason}",
                    rows.part.path().display(),
                    rows.index
                ),
            ));
        }
        self.sources[source] = Source::Done;
    }
}

/// The next row of `rows` within `bounds` that `filter` takes (every row,
/// without one), made its head; an error when a row's fields, asked for,
/// do not decode.
fn next_in_block(
    rows: &mut BlockRows<'_>,
    backward: bool,
    bounds: Bounds,
    filter: Option<&Filter>,
) -> Result<Option<Cursor>, String> {
    let block = &rows.block;
    loop {
        let index = if backward {
            rows.positions.next_back()
        } else {
            rows.positions.next()
        };
        let Some(index) = index else { return Ok(None) };
        let position = Cursor {
            ts_ns: block.ts(index),
            position: block.id(index),
        };
        if !bounds.contains(&position) {
            continue;
        }
        let Some(filter) = filter else {
            rows.current = index;
            return Ok(Some(position));
        };
        if !filter.matches_message(block.message(index)) {
            continue;
        }
        let mut fields_error = None;
        let matched = filter.matches_parts(block.parts(index), || {
            block.fields(index).unwrap_or_else(|error| {
                fields_error = Some(error);
                Default::default()
            })
        });
        if let Some(error) = fields_error {
            return Err(error);
        }
        if matched {
            rows.current = index;
            return Ok(Some(position));
        }
    }
}

/// Visits `tenant`'s records matching `query`, in its order, from its
/// cursor, up to its limit: `visit` gets each borrowed. An error from
/// `visit` says the record cannot be read (its fields do not decode): its
/// block is skipped from there and said so, as a damaged block is.
pub(crate) fn scan(
    tenant: &str,
    query: &Query,
    (memtable, parts, cache): (&Memtable, &[Arc<Part>], &BlockCache),
    visit: &mut dyn FnMut(RecordRef<'_>) -> Result<(), String>,
) -> Scanned {
    let bounds = Bounds::of(query);
    if bounds.is_empty() {
        return Scanned {
            next: None,
            skipped: Vec::new(),
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

    // A word every match holds whole, without digits: of a format 3
    // block, only the messages holding it are joined with their numbers
    // (`DecodedBlock::holding`), no other record can match.
    let mut words = filter.required_words();
    words.sort_by_key(|word| std::cmp::Reverse(word.len()));
    let word = words
        .into_iter()
        .next()
        .filter(|word| !word.bytes().any(|byte| byte.is_ascii_digit()));

    let mut merge = Merge {
        tenant,
        filter,
        bounds,
        backward,
        per_record: asks_of_records(filter),
        sources: vec![Source::Memtable {
            rows: memtable.in_time_range(bounds.lower, bounds.upper, backward),
            current: None,
        }],
        skipped: Vec::new(),
    };
    let mut heap = BinaryHeap::new();
    if let Some(position) = merge.advance(0) {
        heap.push(merge.head(position, 0));
    }

    let (mut visited, mut last, mut more) = (0usize, None, false);
    let mut opened = Vec::new();
    loop {
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
            let holding = word
                .as_deref()
                .filter(|_| next.part.block_format(next.block).ok() == Some(FORMAT_3));
            let decoded = match holding {
                // Partial: not from the cache, nor kept in it.
                Some(word) => next
                    .part
                    .open_block_holding(next.block, Some(word.as_bytes()))
                    .map(Arc::new),
                None => cache.open(next.part, next.block),
            };
            let block = match decoded {
                Ok(block) => block,
                Err(error) => {
                    merge
                        .skipped
                        .push(SkippedBlock::of(next.part, next.block, error));
                    continue;
                }
            };
            // Weak: a block read through is still let go at once.
            opened.push((next.part, next.block, Arc::downgrade(&block)));
            merge.sources.push(Source::Block(BlockRows {
                positions: 0..block.len(),
                block,
                current: 0,
                part: next.part,
                index: next.block,
            }));
            let source = merge.sources.len() - 1;
            if let Some(position) = merge.advance(source) {
                heap.push(merge.head(position, source));
            }
        }
        // The head is moved on in place: one sift, not a pop and a push.
        let Some(mut head) = heap.peek_mut() else {
            break;
        };
        if visited == query.limit {
            more = true;
            break;
        }
        let source = head.source;
        match visit(merge.sources[source].row()) {
            Ok(()) => {
                visited += 1;
                last = Some(head.position);
                match merge.advance(source) {
                    Some(position) => head.position = position,
                    None => drop(PeekMut::pop(head)),
                }
            }
            Err(reason) => {
                merge.skip(source, &reason);
                PeekMut::pop(head);
            }
        }
    }
    let next = last.filter(|_| more);
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
            if let Some(block) = block
                .upgrade()
                .filter(|block| continues && !block.is_partial())
            {
                cache.keep(part, index, block);
            }
        }
    }
    drop(merge.sources);
    Scanned {
        next,
        skipped: merge.skipped,
    }
}
