//! The in-memory index of the first engine: every record in id order, a
//! time-ordered index over them, and the set of `(runner, boot, seq)` already
//! stored.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;

use tailwater_model::filter::timestamp_ns;
use tailwater_model::wire::IngestBatch;
use tailwater_model::{Cursor, Direction, Filter, LogRecord, Query};

use crate::Page;

type RunnerBoot = (String, String, String);

#[derive(Default)]
pub(crate) struct MemoryIndex {
    /// Record `id` n is at position n - 1.
    records: Vec<LogRecord>,
    by_time: BTreeSet<Cursor>,
    seen: HashMap<RunnerBoot, HashSet<u64>>,
}

impl MemoryIndex {
    pub fn last_id(&self) -> u64 {
        self.records.len() as u64
    }

    /// The records of `batch` not stored before, with ids assigned, and
    /// marked as seen.
    pub fn assign_fresh(&mut self, tenant: &str, batch: &IngestBatch) -> Vec<LogRecord> {
        let key = (tenant.to_owned(), batch.runner.clone(), batch.boot.clone());
        let seen = self.seen.entry(key).or_default();
        let mut next_id = self.records.len() as u64 + 1;
        let mut fresh = Vec::new();
        for record in &batch.records {
            if !seen.insert(record.seq) {
                continue;
            }
            fresh.push(LogRecord {
                id: next_id,
                ts: record.ts,
                tenant: tenant.to_owned(),
                app: batch.app.clone(),
                version: batch.version.clone(),
                runner: batch.runner.clone(),
                boot: batch.boot.clone(),
                seq: record.seq,
                source: batch.source,
                stream: record.stream,
                level: record.level,
                request_id: record.request_id.clone(),
                message: record.message.clone(),
                fields: record.fields.clone(),
                invalid_utf8: record.invalid_utf8,
            });
            next_id += 1;
        }
        fresh
    }

    /// Undoes [`assign_fresh`](Self::assign_fresh) for records that could not
    /// be written, so a retry stores them.
    pub fn forget_unwritten(&mut self, records: &[LogRecord]) {
        for record in records {
            let key = (
                record.tenant.clone(),
                record.runner.clone(),
                record.boot.clone(),
            );
            if let Some(seen) = self.seen.get_mut(&key) {
                seen.remove(&record.seq);
            }
        }
    }

    /// Adds records whose ids continue the sequence (fresh ones, or ones
    /// replayed from the log).
    pub fn insert_all(&mut self, records: Vec<LogRecord>) {
        for record in records {
            debug_assert_eq!(record.id, self.last_id() + 1, "ids are dense");
            self.seen
                .entry((
                    record.tenant.clone(),
                    record.runner.clone(),
                    record.boot.clone(),
                ))
                .or_default()
                .insert(record.seq);
            self.by_time.insert(Cursor::of(&record));
            self.records.push(record);
        }
    }

    fn get(&self, id: u64) -> &LogRecord {
        &self.records[(id - 1) as usize]
    }

    pub fn query(&self, tenant: &str, query: &Query) -> Page {
        let filter = &query.filter;
        let mut lower = filter
            .since
            .map(|since| {
                Bound::Included(Cursor {
                    ts_ns: timestamp_ns(since),
                    id: 0,
                })
            })
            .unwrap_or(Bound::Unbounded);
        let mut upper = filter
            .until
            .map(|until| {
                Bound::Excluded(Cursor {
                    ts_ns: timestamp_ns(until),
                    id: 0,
                })
            })
            .unwrap_or(Bound::Unbounded);
        match (query.direction, query.cursor) {
            (Direction::Forward, Some(cursor)) => lower = tighter_lower(lower, cursor),
            (Direction::Backward, Some(cursor)) => upper = tighter_upper(upper, cursor),
            (_, None) => {}
        }
        if bounds_are_empty(&lower, &upper) {
            return Page {
                as_of: self.last_id(),
                ..Page::default()
            };
        }
        let range = self.by_time.range((lower, upper));
        let positions: Box<dyn Iterator<Item = &Cursor>> = match query.direction {
            Direction::Forward => Box::new(range),
            Direction::Backward => Box::new(range.rev()),
        };
        let mut records: Vec<LogRecord> = positions
            .map(|position| self.get(position.id))
            .filter(|record| record.tenant == tenant && filter.matches(record))
            .take(query.limit + 1)
            .cloned()
            .collect();
        let next = if records.len() > query.limit {
            records.truncate(query.limit);
            records.last().map(Cursor::of)
        } else {
            None
        };
        Page {
            records,
            next,
            as_of: self.last_id(),
        }
    }

    pub fn read_after(
        &self,
        tenant: &str,
        filter: &Filter,
        after_id: u64,
        limit: usize,
    ) -> Vec<LogRecord> {
        let start = (after_id as usize).min(self.records.len());
        self.records[start..]
            .iter()
            .filter(|record| record.tenant == tenant && filter.matches(record))
            .take(limit)
            .cloned()
            .collect()
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

/// `BTreeSet::range` panics on an inverted range; an inverted range is simply
/// an empty page.
fn bounds_are_empty(lower: &Bound<Cursor>, upper: &Bound<Cursor>) -> bool {
    match (lower, upper) {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (
            Bound::Included(start) | Bound::Excluded(start),
            Bound::Included(end) | Bound::Excluded(end),
        ) => start >= end,
        _ => false,
    }
}
