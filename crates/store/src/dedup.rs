//! Which `(tenant, app, runner, boot, seq)` are stored: what makes ingest
//! idempotent. Agents send each boot's sequence in order, so each boot's set
//! is almost always one range; it is kept as sorted, disjoint ranges.
//!
//! The app is part of the key: an ingest token is bound to an app, so one
//! app's token naming another app's runner and boot must find a stream of
//! its own, never mark the other app's sequence numbers as stored nor move
//! its out-of-order window.
//!
//! Sparse sequence numbers (a sender that skips numbers) make one range a
//! record. So that this memory does not grow with everything ever stored,
//! [`Dedup::compact`] (after each flush) drops the ranges of what is
//! already in parts, and keeps of them only a watermark: the numbers at or
//! below it are answered from the parts' footers, which hold each stream's
//! ranges anyway ([`Seen::in_parts`]). That slow path is taken only by
//! numbers below the watermark: a batch retried long after, or a sender
//! whose numbers go back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::part::reader::Part;

/// `(tenant, app, runner, boot)`.
pub(crate) type Key = (String, String, String, String);

/// A stream's key, borrowed.
#[derive(Clone, Copy)]
pub(crate) struct StreamKey<'a> {
    pub tenant: &'a str,
    pub app: &'a str,
    pub runner: &'a str,
    pub boot: &'a str,
}

#[derive(Default)]
pub(crate) struct Dedup {
    seen: HashMap<Key, Seen>,
}

/// What is stored of one `(tenant, app, runner, boot)`.
#[derive(Default)]
pub(crate) struct Seen {
    /// Range start → inclusive end.
    ranges: BTreeMap<u64, u64>,
    /// Time of the newest record (ns), for the out-of-order window.
    pub newest_ts: Option<i64>,
    /// Numbers at or below this are in parts (or were deleted from them),
    /// and no longer in `ranges` when they were there.
    flushed_through: Option<u64>,
}

/// Streams with at most this many ranges are left as they are: a stream
/// sent without gaps is one range.
pub(crate) const COMPACT_MIN_RANGES: usize = 64;

impl Dedup {
    /// What is stored of a stream: looked up once per batch.
    pub fn stream(&mut self, tenant: &str, app: &str, runner: &str, boot: &str) -> &mut Seen {
        self.seen
            .entry((
                tenant.to_owned(),
                app.to_owned(),
                runner.to_owned(),
                boot.to_owned(),
            ))
            .or_default()
    }
}

impl Dedup {
    /// The highest number stored of a stream, if any (in memory, or in
    /// parts below the watermark).
    pub fn highest(&self, tenant: &str, app: &str, runner: &str, boot: &str) -> Option<u64> {
        let key = (
            tenant.to_owned(),
            app.to_owned(),
            runner.to_owned(),
            boot.to_owned(),
        );
        let seen = self.seen.get(&key)?;
        let in_memory = seen.ranges.last_key_value().map(|(_, end)| *end);
        in_memory.max(seen.flushed_through)
    }

    /// Drops the ranges every number of which is in parts: `in_memtable`
    /// gives, for a stream, the lowest number of it still in the memtable
    /// (those must stay answered here). Only streams with more than
    /// [`COMPACT_MIN_RANGES`] ranges are looked at.
    pub fn compact(&mut self, mut in_memtable: impl FnMut(&Key) -> Option<u64>) {
        for (key, seen) in &mut self.seen {
            if seen.ranges.len() <= COMPACT_MIN_RANGES {
                continue;
            }
            let Some((_, &highest)) = seen.ranges.last_key_value() else {
                continue;
            };
            let through = match in_memtable(key) {
                Some(0) => continue,
                Some(lowest) => lowest - 1,
                None => highest,
            };
            seen.compact_through(through);
        }
    }

    /// Ranges held in memory, over every stream: what compaction bounds.
    #[cfg(test)]
    pub fn ranges_held(&self) -> usize {
        self.seen.values().map(|seen| seen.ranges.len()).sum()
    }
}

impl Seen {
    /// Whether `seq` is known stored from memory alone; a number at or
    /// below the watermark that is not may still be in parts.
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, end)| *end >= seq)
    }

    pub fn insert(&mut self, seq: u64) {
        // The common case: the number after the last range.
        if let Some(mut last) = self.ranges.last_entry() {
            if *last.get() + 1 == seq {
                *last.get_mut() = seq;
                return;
            }
        }
        self.insert_range(seq, seq);
    }

    /// Marks `start..=end` as stored, merging with neighbouring ranges.
    pub fn insert_range(&mut self, start: u64, end: u64) {
        let ranges = &mut self.ranges;
        let (mut start, mut end) = (start, end);
        if let Some((&before_start, &before_end)) = ranges.range(..=start).next_back() {
            if before_end.saturating_add(1) >= start {
                start = before_start;
                end = end.max(before_end);
                ranges.remove(&before_start);
            }
        }
        while let Some((&after_start, &after_end)) = ranges.range(start..).next() {
            if after_start > end.saturating_add(1) {
                break;
            }
            end = end.max(after_end);
            ranges.remove(&after_start);
        }
        ranges.insert(start, end);
    }

    pub fn remove(&mut self, seq: u64) {
        let Some((&start, &end)) = self.ranges.range(..=seq).next_back() else {
            return;
        };
        if end < seq {
            return;
        }
        self.ranges.remove(&start);
        if start < seq {
            self.ranges.insert(start, seq - 1);
        }
        if seq < end {
            self.ranges.insert(seq + 1, end);
        }
    }

    /// Whether a number not in memory must be looked for in parts.
    pub fn may_be_in_parts(&self, seq: u64) -> bool {
        self.flushed_through.is_some_and(|through| seq <= through)
    }

    fn compact_through(&mut self, through: u64) {
        let mut above = self.ranges.split_off(&through.saturating_add(1));
        if let Some((_, &end)) = self.ranges.last_key_value() {
            if end > through {
                // A range across the watermark keeps its part above it.
                above.insert(through + 1, end);
            }
        }
        self.ranges = above;
        self.flushed_through = Some(self.flushed_through.map_or(through, |t| t.max(through)));
    }

    pub fn saw_time(&mut self, ts_ns: i64) {
        self.newest_ts = Some(self.newest_ts.map_or(ts_ns, |newest| newest.max(ts_ns)));
    }
}

/// Whether one of `parts` holds `seq` of the stream `key` names.
pub(crate) fn in_parts(parts: &[Arc<Part>], key: StreamKey<'_>, seq: u64) -> bool {
    parts
        .iter()
        .filter(|part| {
            let partition = &part.footer.partition;
            partition.tenant == key.tenant && partition.app == key.app
        })
        .flat_map(|part| &part.footer.streams)
        .filter(|stream| stream.labels.runner == key.runner && stream.labels.boot == key.boot)
        .any(|stream| {
            let ranges = &stream.seq_ranges;
            let after = ranges.partition_point(|(start, _)| *start <= seq);
            after > 0 && ranges[after - 1].1 >= seq
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_split_and_answer() {
        let mut dedup = Dedup::default();
        let seen = dedup.stream("t", "a", "r", "b");
        for seq in [0, 1, 2, 5, 3, 4, 9, 6] {
            seen.insert(seq);
        }
        assert_eq!(
            seen.ranges
                .iter()
                .map(|(s, e)| (*s, *e))
                .collect::<Vec<_>>(),
            [(0, 6), (9, 9)]
        );
        assert!(seen.contains(4));
        assert!(!seen.contains(7));
        seen.remove(3);
        assert!(!seen.contains(3));
        assert!(seen.contains(2) && seen.contains(4));
        seen.insert_range(3, 20);
        assert_eq!(seen.ranges.len(), 1);
        assert!(!dedup.stream("t", "a", "r", "other-boot").contains(4));
        assert!(!dedup.stream("t", "other-app", "r", "b").contains(4));
    }

    #[test]
    fn compaction_keeps_what_is_above_the_watermark() {
        let mut seen = Seen::default();
        seen.insert_range(0, 5);
        seen.insert_range(10, 20);
        seen.compact_through(15);
        assert_eq!(seen.ranges.iter().collect::<Vec<_>>(), [(&16, &20)]);
        assert!(seen.contains(16) && !seen.contains(15));
        assert!(seen.may_be_in_parts(15) && seen.may_be_in_parts(3));
        assert!(!seen.may_be_in_parts(16));
    }
}
