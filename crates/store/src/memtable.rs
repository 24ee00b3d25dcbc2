//! The memtable: records appended since the last flush, in memory, indexed
//! by id (for live tail) and by time (for history). Everything in it is also
//! in the write-ahead log; a flush turns it into parts.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use tailwater_model::{Cursor, LogRecord};

/// Estimated memory of a record beyond its message and fields.
const RECORD_OVERHEAD_BYTES: usize = 256;

#[derive(Default)]
pub(crate) struct Memtable {
    by_id: BTreeMap<u64, LogRecord>,
    by_time: BTreeSet<Cursor>,
    bytes: usize,
    oldest_insert: Option<std::time::Instant>,
}

impl Memtable {
    pub fn insert(&mut self, record: LogRecord) {
        self.bytes += estimated_bytes(&record);
        self.oldest_insert
            .get_or_insert_with(std::time::Instant::now);
        self.by_time.insert(Cursor::of(&record));
        self.by_id.insert(record.id, record);
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn age(&self) -> std::time::Duration {
        self.oldest_insert
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }

    pub fn min_id(&self) -> Option<u64> {
        self.by_id.keys().next().copied()
    }

    /// All records, leaving the memtable empty.
    pub fn take(&mut self) -> Vec<LogRecord> {
        self.by_time.clear();
        self.bytes = 0;
        self.oldest_insert = None;
        std::mem::take(&mut self.by_id).into_values().collect()
    }

    /// Records with ids above `after`, in id order.
    pub fn after_id(&self, after: u64) -> impl Iterator<Item = &LogRecord> {
        self.by_id
            .range((Bound::Excluded(after), Bound::Unbounded))
            .map(|(_, record)| record)
    }

    /// Records within the bounds, in time order (or reversed).
    pub fn in_time_range(
        &self,
        lower: Bound<Cursor>,
        upper: Bound<Cursor>,
        backward: bool,
    ) -> Box<dyn Iterator<Item = &LogRecord> + '_> {
        let positions = self.by_time.range((lower, upper));
        let lookup = |position: &Cursor| &self.by_id[&position.id];
        if backward {
            Box::new(positions.rev().map(lookup))
        } else {
            Box::new(positions.map(lookup))
        }
    }
}

pub(crate) fn estimated_bytes(record: &LogRecord) -> usize {
    let fields: usize = record
        .fields
        .iter()
        .map(|(key, value)| key.len() + value.to_string().len())
        .sum();
    RECORD_OVERHEAD_BYTES
        + record.message.len()
        + fields
        + record.request_id.as_ref().map_or(0, String::len)
}
