//! Reads in ingest order, for live tails (and later drains and replicas):
//! a tenant's records after a position, from the memtable alone when it
//! holds them all, else merged with the blocks of parts whose positions
//! reach past it, opened only as the order reaches them.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use tailwater_model::{Filter, LogRecord};

use crate::damage::SkippedBlock;
use crate::memtable::Memtable;
use crate::part::reader::Part;
use crate::query::{candidate_blocks, read_block_or_skip, Prune};

/// Up to `limit` of `tenant`'s records matching `filter` with ids above
/// `after`, in id order, and the blocks skipped as unreadable.
pub(crate) fn after_id(
    tenant: &str,
    filter: &Filter,
    after: u64,
    limit: usize,
    memtable: &Memtable,
    parts: &[Arc<Part>],
) -> (Vec<LogRecord>, Vec<SkippedBlock>) {
    let mut skipped = Vec::new();
    let wanted = |record: &LogRecord| {
        record.position > after && record.tenant == tenant && filter.matches(record)
    };
    let mut records: Vec<LogRecord> = Vec::new();
    let memtable_covers_all = memtable.min_id().is_some_and(|min| min <= after + 1)
        || parts.iter().all(|p| p.footer.max_id <= after);
    if !memtable_covers_all {
        // Blocks in the order of their first id, opened only when a record
        // they may hold could come next: memory holds the blocks whose id
        // ranges overlap the position reached, not everything after `after`.
        let prune = Prune::new(filter);
        let mut pending: Vec<(u64, &Arc<Part>, usize)> = parts
            .iter()
            .filter(|part| part.footer.max_id > after)
            .flat_map(|part| {
                candidate_blocks(part, tenant, &prune).filter_map(move |block| {
                    let meta = &part.footer.blocks[block];
                    (meta.max_id > after).then_some((meta.min_id, part, block))
                })
            })
            .collect();
        // Popped from the back: the lowest first id.
        pending.sort_by_key(|(min_id, _, _)| std::cmp::Reverse(*min_id));
        let mut heap: BinaryHeap<std::cmp::Reverse<IdOrdered>> = BinaryHeap::new();
        while records.len() < limit {
            while let Some((min_id, part, block)) = pending.last().copied() {
                if heap
                    .peek()
                    .is_some_and(|head| head.0.record.position < min_id)
                {
                    break;
                }
                pending.pop();
                heap.extend(
                    read_block_or_skip(part, block, &mut skipped)
                        .into_iter()
                        .filter(|record| wanted(record))
                        .map(|record| std::cmp::Reverse(IdOrdered { record })),
                );
            }
            let Some(std::cmp::Reverse(next)) = heap.pop() else {
                break;
            };
            records.push(next.record);
        }
    }
    let room = limit - records.len();
    records.extend(
        memtable
            .after_id(after)
            .filter(|entry| entry.matches(tenant, filter))
            .take(room)
            .map(|entry| entry.to_record()),
    );
    (records, skipped)
}

/// A record ordered by position alone.
struct IdOrdered {
    record: LogRecord,
}

impl PartialEq for IdOrdered {
    fn eq(&self, other: &Self) -> bool {
        self.record.position == other.record.position
    }
}
impl Eq for IdOrdered {}
impl PartialOrd for IdOrdered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IdOrdered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.record.position.cmp(&other.record.position)
    }
}
