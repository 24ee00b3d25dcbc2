//! Decoded blocks kept for the next page: the block cache.
//!
//! A page is stateless: the next page starts again from its cursor, so
//! paging through a range opened the same blocks page after page (a page
//! of 10,000 records over 32 runners used about 300 records of each of 32
//! blocks of 8,192, and decompressed them all). So a page that stops inside
//! blocks keeps them ([`BlockCache::keep`]), and the next page finds them
//! ([`BlockCache::open`]): a paged scan decodes each block about once. Only
//! such blocks are kept, not every block read, so a scan does not fill the
//! cache with blocks it is done with, and the cache holds about one page's
//! open blocks per scan under way. Least recently used go first when the
//! byte budget ([`crate::StoreOptions::block_cache_bytes`]) is reached.
//!
//! A block is known by its part's id (unique in the process, never reused,
//! so a merged-away part's blocks are never served for another) and its
//! index; parts are immutable, so a kept block never goes stale. Hits,
//! misses and evictions are counted.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::part::block::DecodedBlock;
use crate::part::reader::{Part, PartError};

/// A byte budget of decoded blocks.
pub(crate) struct BlockCache {
    capacity_bytes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    blocks: LruCache<(u64, usize), Arc<DecodedBlock>>,
    bytes: usize,
    stats: CacheStats,
}

/// What the cache did since the store opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks found decoded.
    pub hits: u64,
    /// Blocks decoded (and kept, when they fit).
    pub misses: u64,
    /// Blocks let go to make room.
    pub evictions: u64,
    /// Bytes of the blocks held now.
    pub bytes: u64,
}

impl BlockCache {
    /// A cache of up to `capacity_bytes` of decoded blocks; 0 keeps none.
    pub fn new(capacity_bytes: usize) -> BlockCache {
        BlockCache {
            capacity_bytes,
            inner: Mutex::new(Inner {
                blocks: LruCache::unbounded(),
                bytes: 0,
                stats: CacheStats::default(),
            }),
        }
    }

    /// Block `index` of `part`, decoded: from the cache, or read and
    /// decoded (outside the cache's lock).
    pub fn open(&self, part: &Part, index: usize) -> Result<Arc<DecodedBlock>, PartError> {
        if let Some(block) = self.lock().hit(&(part.id(), index)) {
            return Ok(block);
        }
        let block = Arc::new(part.open_block(index)?);
        self.lock().stats.misses += 1;
        Ok(block)
    }

    /// Keeps block `index` of `part` for a next page, making room within the
    /// budget by letting the least recently used go.
    pub fn keep(&self, part: &Part, index: usize, block: Arc<DecodedBlock>) {
        let bytes = block.memory_bytes();
        if bytes > self.capacity_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.blocks.put((part.id(), index), block).is_none() {
            inner.bytes += bytes;
        }
        while inner.bytes > self.capacity_bytes {
            let (_, evicted) = inner
                .blocks
                .pop_lru()
                .expect("bytes held means blocks held");
            inner.bytes -= evicted.memory_bytes();
            inner.stats.evictions += 1;
        }
    }

    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            bytes: inner.bytes as u64,
            ..inner.stats
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn hit(&mut self, key: &(u64, usize)) -> Option<Arc<DecodedBlock>> {
        let block = self.blocks.get(key)?.clone();
        self.stats.hits += 1;
        Some(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part::writer::write_part;
    use crate::part::Partition;
    use tailwater_model::{Level, LogRecord, Source, Stream};

    /// A part of `blocks` blocks (one runner each), every block alike.
    fn part(dir: &std::path::Path, name: &str, blocks: u64) -> Part {
        let records: Vec<LogRecord> = (0..blocks * 100)
            .map(|n| LogRecord {
                id: String::new(),
                position: n + 1,
                ts: jiff::Timestamp::from_second(1_763_600_000 + n as i64).unwrap(),
                tenant: "acme".into(),
                app: "sdxl".into(),
                version: "v1".into(),
                runner: format!("r{}", n / 100),
                boot: "b".into(),
                seq: n % 100,
                source: Source::Run,
                stream: Stream::Stdout,
                level: Level::Info,
                request_id: None,
                message: format!("line {n:06} of a block"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect();
        let partition = Partition {
            day: "2025-11-20".into(),
            tenant: "acme".into(),
            app: "sdxl".into(),
        };
        let (path, _) = write_part(dir, name, &partition, &records).unwrap();
        Part::open(&path).unwrap()
    }

    /// Opens block `index` of `part` through `cache`, and keeps it.
    fn open_and_keep(cache: &BlockCache, part: &Part, index: usize) -> Arc<DecodedBlock> {
        let block = cache.open(part, index).unwrap();
        cache.keep(part, index, block.clone());
        block
    }

    #[test]
    fn keeps_blocks_within_its_budget_least_recently_used_out_first() {
        let dir = tempfile::tempdir().unwrap();
        let part = part(dir.path(), "p1", 4);
        let block_bytes = part.open_block(0).unwrap().memory_bytes();
        let cache = BlockCache::new(2 * block_bytes + block_bytes / 2);

        // Opened but not kept: decoded again.
        let unkept = cache.open(&part, 3).unwrap();
        assert!(!Arc::ptr_eq(&unkept, &cache.open(&part, 3).unwrap()));

        let first = open_and_keep(&cache, &part, 0);
        assert!(Arc::ptr_eq(&first, &cache.open(&part, 0).unwrap()));
        open_and_keep(&cache, &part, 1);
        cache.open(&part, 0).unwrap(); // 0 is now the most recently used
        open_and_keep(&cache, &part, 2); // so 1 makes room
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (2, 5, 1));
        let held = first.memory_bytes() + part.open_block(2).unwrap().memory_bytes();
        assert_eq!(stats.bytes, held as u64);
        assert!(Arc::ptr_eq(&first, &cache.open(&part, 0).unwrap()));
        cache.open(&part, 1).unwrap();
        assert_eq!(cache.stats().misses, 6, "block 1 was let go");
    }

    #[test]
    fn a_block_is_known_by_its_part_not_by_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (part(dir.path(), "p1", 1), part(dir.path(), "p2", 1));
        let cache = BlockCache::new(1 << 30);
        let from_one = open_and_keep(&cache, &one, 0);
        let from_two = open_and_keep(&cache, &two, 0);
        assert!(!Arc::ptr_eq(&from_one, &from_two));
        // The same file opened again is another part: nothing stale is
        // served for it.
        let again = Part::open(one.path()).unwrap();
        assert!(!Arc::ptr_eq(&from_one, &cache.open(&again, 0).unwrap()));
        assert_eq!(cache.stats().misses, 3);
    }

    #[test]
    fn a_budget_of_zero_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let part = part(dir.path(), "p1", 1);
        let cache = BlockCache::new(0);
        let first = open_and_keep(&cache, &part, 0);
        assert!(!Arc::ptr_eq(&first, &cache.open(&part, 0).unwrap()));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.bytes), (0, 2, 0));
    }
}
