//! What one count may spend: past `count_scan_limit` stored records it is
//! refused before reading, naming the setting; within it, it counts all;
//! and concurrent counts share one pool of helper threads.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::Filter;

use crate::test_support::run;
use crate::{Store, StoreError, StoreOptions};

fn store_with(dir: &std::path::Path, count_scan_limit: u64, query_threads: usize) -> Store {
    Store::open(
        dir,
        StoreOptions {
            memtable_max_bytes: 1,
            background: false,
            count_scan_limit,
            query_threads,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn fill(store: &Store) {
    let start = Timestamp::from_second(1_700_000_000).unwrap();
    for batch in 0..10 {
        store.append("t", run("r1", batch * 10, 10, start)).unwrap();
    }
    store.flush().unwrap();
}

#[test]
fn a_count_past_the_scan_limit_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 50, 4);
    fill(&store);
    let error = store.count("t", &Filter::default(), None).unwrap_err();
    let StoreError::CountTooLarge { records, limit } = &error else {
        panic!("not refused for its size: {error}");
    };
    assert_eq!((*records, *limit), (100, 50));
    let message = error.to_string();
    assert!(message.contains("--count-scan-limit"), "{message}");
    assert_eq!(message, message.to_lowercase(), "{message}");
    // A narrower count (one runner's first batches, by time) is within it.
    let narrow = Filter {
        until: Some(Timestamp::from_second(1_700_000_000).unwrap() + Duration::from_millis(30)),
        ..Filter::default()
    };
    assert_eq!(store.count("t", &narrow, None).unwrap().total(), 30);
    // Another tenant, with nothing stored, is not refused for it.
    assert_eq!(
        store.count("u", &Filter::default(), None).unwrap().total(),
        0
    );
}

#[test]
fn a_count_within_the_limit_counts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 100, 4);
    fill(&store);
    assert_eq!(
        store.count("t", &Filter::default(), None).unwrap().total(),
        100
    );
}

#[test]
fn concurrent_counts_share_the_pool_and_all_finish_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store_with(dir.path(), 1_000, 3));
    fill(&store);
    let counters: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                let tenant = if i % 2 == 0 { "t" } else { "u" };
                (0..20)
                    .map(|_| {
                        store
                            .count(tenant, &Filter::default(), None)
                            .unwrap()
                            .total()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (i, counter) in counters.into_iter().enumerate() {
        let totals = counter.join().unwrap();
        let expected = if i % 2 == 0 { 100 } else { 0 };
        assert!(totals.iter().all(|total| *total == expected), "{totals:?}");
    }
}

/// Rewrites the footer of the part at `path` with `change`, its checksum
/// made to pass: a footer that lies, which no flipped byte could make.
fn rewrite_footer(path: &std::path::Path, change: impl FnOnce(&mut crate::part::Footer)) {
    let mut footer = crate::part::reader::Part::open(path).unwrap().footer;
    let bytes = std::fs::read(path).unwrap();
    let footer_len = u32::from_le_bytes(bytes[bytes.len() - 16..][..4].try_into().unwrap());
    let data_end = bytes.len() - 16 - footer_len as usize;
    change(&mut footer);
    let encoded = zstd::bulk::compress(&postcard::to_stdvec(&footer).unwrap(), 3).unwrap();
    let mut out = bytes[..data_end].to_vec();
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&encoded).to_le_bytes());
    out.splice(data_end..data_end, encoded);
    out.extend_from_slice(crate::part::MAGIC);
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_footer_claiming_records_its_blocks_cannot_hold_is_damage_not_a_refused_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), 1_000, 1);
    fill(&store);
    drop(store);
    let mut parts: Vec<_> = walkdir(&dir.path().join("parts"));
    parts.sort();
    assert_eq!(parts.len(), 10);
    // One part's footer says its block holds a million records: a count
    // summing footers would refuse every count of this tenant for it.
    rewrite_footer(&parts[0], |footer| {
        footer.blocks[0].count = 1_000_000;
        footer.records += 1_000_000 - 10;
    });
    let store = store_with(dir.path(), 1_000, 1);
    // The part is damage (quarantined, reported), and the count of what
    // is left is answered, not refused.
    assert_eq!(
        store.count("t", &Filter::default(), None).unwrap().total(),
        90
    );
    let damaged = store.damaged_parts("t");
    assert_eq!(damaged.len(), 1, "{damaged:?}");
    assert!(
        damaged[0].reason.contains("claims records it cannot hold"),
        "{damaged:?}"
    );
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walkdir(&path));
        } else if path.extension().is_some_and(|ext| ext == "twp") {
            found.push(path);
        }
    }
    found
}
