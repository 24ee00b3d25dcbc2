//! Which `(tenant, runner, boot, seq)` are stored: what makes ingest
//! idempotent. Agents send each boot's sequence in order, so each boot's set
//! is almost always one range; it is kept as sorted, disjoint ranges.

use std::collections::{BTreeMap, HashMap};

type Key = (String, String, String);

#[derive(Default)]
pub(crate) struct Dedup {
    /// Per `(tenant, runner, boot)`: range start → inclusive end.
    seen: HashMap<Key, BTreeMap<u64, u64>>,
}

impl Dedup {
    fn key(tenant: &str, runner: &str, boot: &str) -> Key {
        (tenant.to_owned(), runner.to_owned(), boot.to_owned())
    }

    pub fn contains(&self, tenant: &str, runner: &str, boot: &str, seq: u64) -> bool {
        let Some(ranges) = self.seen.get(&Dedup::key(tenant, runner, boot)) else {
            return false;
        };
        ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, end)| *end >= seq)
    }

    pub fn insert(&mut self, tenant: &str, runner: &str, boot: &str, seq: u64) {
        self.insert_range(tenant, runner, boot, seq, seq);
    }

    /// Marks `start..=end` as stored, merging with neighbouring ranges.
    pub fn insert_range(&mut self, tenant: &str, runner: &str, boot: &str, start: u64, end: u64) {
        let ranges = self
            .seen
            .entry(Dedup::key(tenant, runner, boot))
            .or_default();
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

    pub fn remove(&mut self, tenant: &str, runner: &str, boot: &str, seq: u64) {
        let Some(ranges) = self.seen.get_mut(&Dedup::key(tenant, runner, boot)) else {
            return;
        };
        let Some((&start, &end)) = ranges.range(..=seq).next_back() else {
            return;
        };
        if end < seq {
            return;
        }
        ranges.remove(&start);
        if start < seq {
            ranges.insert(start, seq - 1);
        }
        if seq < end {
            ranges.insert(seq + 1, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_split_and_answer() {
        let mut dedup = Dedup::default();
        for seq in [0, 1, 2, 5, 3, 4, 9] {
            dedup.insert("t", "r", "b", seq);
        }
        assert_eq!(
            dedup.seen[&Dedup::key("t", "r", "b")]
                .iter()
                .map(|(s, e)| (*s, *e))
                .collect::<Vec<_>>(),
            [(0, 5), (9, 9)]
        );
        assert!(dedup.contains("t", "r", "b", 4));
        assert!(!dedup.contains("t", "r", "b", 6));
        assert!(!dedup.contains("t", "r", "other-boot", 4));
        dedup.remove("t", "r", "b", 3);
        assert!(!dedup.contains("t", "r", "b", 3));
        assert!(dedup.contains("t", "r", "b", 2) && dedup.contains("t", "r", "b", 4));
        dedup.insert_range("t", "r", "b", 3, 20);
        assert_eq!(dedup.seen[&Dedup::key("t", "r", "b")].len(), 1);
    }
}
