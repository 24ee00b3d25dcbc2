//! Which `(tenant, app, runner, boot, seq)` are stored: what makes ingest
//! idempotent. Agents send each boot's sequence in order, so each boot's set
//! is almost always one range; it is kept as sorted, disjoint ranges.
//!
//! The app is part of the key: an ingest token is bound to an app, so one
//! app's token naming another app's runner and boot must find a stream of
//! its own, never mark the other app's sequence numbers as stored nor move
//! its out-of-order window.

use std::collections::{BTreeMap, HashMap};

/// `(tenant, app, runner, boot)`.
type Key = (String, String, String, String);

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
}

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

impl Seen {
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

    pub fn saw_time(&mut self, ts_ns: i64) {
        self.newest_ts = Some(self.newest_ts.map_or(ts_ns, |newest| newest.max(ts_ns)));
    }
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
}
