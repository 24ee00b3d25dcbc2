//! Merges: small parts into one, large blocks copied and small ones
//! rewritten, a crash before the inputs are deleted, a damaged block.

use std::time::Duration;

use tailwater_model::{Fields, FieldsJson, Filter, Query, Stream};

use super::test_support::{all, batch_of, record, run, start};
use super::*;

#[test]
fn small_parts_merge_into_one_without_losing_or_repeating_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 4,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for flush in 0..6u64 {
        for runner in ["r1", "r2"] {
            store
                .append("t", run(runner, flush * 50, 50, start()))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let before = all(&store, "t");
    assert_eq!(before.len(), 600);
    assert_eq!(store.stats()[0].parts, 6);
    store.merge().unwrap();
    assert_eq!(store.stats()[0].parts, 1, "six small parts became one");
    assert_eq!(store.counters().merges, 1);
    assert_eq!(
        all(&store, "t"),
        before,
        "the same records, in the same order"
    );
    let runner_two = store
        .query(
            "t",
            &Query {
                filter: Filter {
                    runner: Some("r2".into()),
                    ..Filter::default()
                },
                limit: 1000,
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(runner_two.records.len(), 300);
    drop(store);

    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t"), before);
    let again = store.append("t", run("r1", 0, 300, start())).unwrap();
    assert_eq!(again.duplicates, 300, "merged parts keep ingest idempotent");
}

#[test]
fn a_merge_copies_large_blocks_and_rewrites_small_ones_together() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 3,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let large = crate::DEFAULT_MERGE_COPY_MIN_RECORDS as u64;
    for flush in 0..3u64 {
        // r1: a large block a flush, in time order; request "span" runs
        // from the end of the first flush into the second, where it ends.
        let mut big = run("r1", flush * large, large, start());
        if flush < 2 {
            let records = &mut big.records;
            let at = if flush == 0 { records.len() - 3 } else { 0 };
            for record in &mut records[at..at + 3] {
                record.request_id = Some("span".into());
            }
            if flush == 1 {
                records[2].stream = Stream::System;
                records[2].fields =
                    FieldsJson::from_map(&Fields::from_iter([("status".to_owned(), 200.into())]));
            }
        }
        store.append("t", big).unwrap();
        // r2: small blocks, to be rewritten together into one.
        store
            .append("t", run("r2", flush * 10, 10, start()))
            .unwrap();
        // r3: three flushes whose records interleave in time (every third
        // millisecond each): rewritten in time order.
        let interleaved = (0..20u64)
            .map(|n| {
                let seq = n * 3 + flush;
                record(
                    seq,
                    start() + Duration::from_millis(seq),
                    format!("r3 {seq}"),
                )
            })
            .collect();
        store
            .append("t", batch_of("sdxl", "r3", interleaved))
            .unwrap();
        // r4: two flushes of large blocks whose times interleave: copied
        // as they are, and still read back in time order.
        if flush < 2 {
            let interleaved = (0..large)
                .map(|n| {
                    let seq = n * 2 + flush;
                    record(
                        seq,
                        start() + Duration::from_millis(seq),
                        format!("r4 {seq}"),
                    )
                })
                .collect();
            store
                .append("t", batch_of("sdxl", "r4", interleaved))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let before = all(&store, "t");
    let request = store.request("t", "span").unwrap();
    assert_eq!((request.records, request.status), (6, Some(200)));
    let stats = store.stats();
    store.merge().unwrap();
    let counters = store.counters();
    assert_eq!(counters.merges, 1);
    assert_eq!(
        (counters.merge_blocks_copied, counters.merge_blocks_written),
        (5, 2),
        "r1's three blocks and r4's two copied; r2's and r3's records rewritten, a block each"
    );
    assert_eq!(
        all(&store, "t"),
        before,
        "the same records, in the same order"
    );
    assert_eq!(store.request("t", "span"), Some(request.clone()));
    let after = store.stats();
    assert_eq!(
        (after[0].records, after[0].raw_bytes, after[0].parts),
        (stats[0].records, stats[0].raw_bytes, 1)
    );
    let span_only = store
        .query(
            "t",
            &Query {
                filter: Filter {
                    request_id: Some("span".into()),
                    ..Filter::default()
                },
                limit: 100,
                direction: tailwater_model::Direction::Forward,
                ..Query::default()
            },
        )
        .unwrap();
    assert_eq!(
        span_only.records.len(),
        6,
        "the request index finds both blocks"
    );
    let newest_of_r4 = store
        .query(
            "t",
            &Query {
                filter: Filter {
                    runner: Some("r4".into()),
                    ..Filter::default()
                },
                limit: 4,
                direction: tailwater_model::Direction::Backward,
                ..Query::default()
            },
        )
        .unwrap();
    let seqs: Vec<u64> = newest_of_r4.records.iter().map(|r| r.seq).collect();
    let last = 2 * large - 1;
    assert_eq!(
        seqs,
        [last, last - 1, last - 2, last - 3],
        "overlapping blocks, newest first"
    );
    drop(store);

    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t"), before);
    assert_eq!(store.request("t", "span"), Some(request));
    let again = store.append("t", run("r1", 0, 3 * large, start())).unwrap();
    assert_eq!(
        again.duplicates as u64,
        3 * large,
        "copied blocks keep ingest idempotent"
    );
    let r3 = run("r3", 0, 60, start());
    assert_eq!(store.append("t", r3).unwrap().duplicates, 60);
}

#[test]
fn a_crash_after_a_merge_before_its_inputs_are_deleted_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 2,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    store.append("t", run("r1", 0, 40, start())).unwrap();
    store.flush().unwrap();
    store.append("t", run("r1", 40, 40, start())).unwrap();
    store.flush().unwrap();
    let inputs: Vec<(PathBuf, Vec<u8>)> = load_parts(dir.path())
        .unwrap()
        .iter()
        .map(|part| (part.path().to_owned(), std::fs::read(part.path()).unwrap()))
        .collect();
    store.merge().unwrap();
    drop(store);
    // As if the crash came between the merged part's rename and the
    // deletion of its inputs.
    for (path, bytes) in &inputs {
        std::fs::write(path, bytes).unwrap();
    }
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t").len(), 80);
    assert!(
        inputs.iter().all(|(path, _)| !path.exists()),
        "the inputs are deleted"
    );
}

#[test]
fn a_merge_that_meets_a_damaged_block_leaves_that_part_out_from_then_on() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        merge_min_parts: 2,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let mut next_seq = 0;
    let mut flush_a_part = |store: &Store| {
        store.append("t", run("r1", next_seq, 40, start())).unwrap();
        store.flush().unwrap();
        next_seq += 40;
    };
    flush_a_part(&store);
    flush_a_part(&store);
    // Damage the first part's only block, as a bad disk sector would.
    let damaged = load_parts(dir.path()).unwrap()[0].path().to_owned();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap();
    file.write_all_at(b"\xff\xff\xff\xff", 8).unwrap();

    store.merge().unwrap();
    let counters = store.counters();
    assert_eq!((counters.merges, counters.unmergeable_parts), (0, 1));
    assert_eq!(store.stats()[0].parts, 2, "both parts left as they were");
    assert_eq!(all(&store, "t").len(), 40, "the readable part is served");
    // Asked again, the damaged part is not tried again.
    store.merge().unwrap();
    assert_eq!(store.counters().unmergeable_parts, 1);

    // New parts merge among themselves, without it.
    flush_a_part(&store);
    flush_a_part(&store);
    store.merge().unwrap();
    let counters = store.counters();
    assert_eq!((counters.merges, counters.unmergeable_parts), (1, 1));
    assert_eq!(store.stats()[0].parts, 2, "the damaged part and one merged");
    assert!(damaged.exists(), "the damaged part is kept as it is");
    assert_eq!(all(&store, "t").len(), 120);
}

#[test]
fn settling_writes_each_flushed_part_again_harder_once_keeping_every_record() {
    settles_keeping_every_record(false);
}

#[test]
fn settling_with_numbers_apart_keeps_every_record() {
    settles_keeping_every_record(true);
}

fn settles_keeping_every_record(numbers_apart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        settle_numbers_apart: numbers_apart,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for flush in 0..2u64 {
        for runner in ["r1", "r2"] {
            let records = (0..3000)
                .map(|n| {
                    let seq = flush * 3000 + n;
                    let ts = start() + Duration::from_micros(seq * 64_123 + seq % 7);
                    record(
                        seq,
                        ts,
                        format!(
                            "step {seq} loss 0.{} tokens/s {}",
                            seq * 37 % 1000,
                            seq % 91
                        ),
                    )
                })
                .collect();
            store
                .append("t", batch_of("sdxl", runner, records))
                .unwrap();
        }
        store.flush().unwrap();
    }
    let before = all(&store, "t");
    let bytes_before = store.stats()[0].stored_bytes;
    assert_eq!(store.settle().unwrap(), 1, "one partition");
    assert_eq!(store.settle().unwrap(), 0, "a settled part is settled once");
    let counters = store.counters();
    assert_eq!(counters.parts_settled, 2, "both flushed parts");
    assert_eq!(
        (counters.merge_blocks_written, counters.merge_blocks_copied),
        (2, 0),
        "each runner's records written again into one full block: {counters:?}"
    );
    assert!(counters.merge_cpu_ns > 0);
    let after = store.stats();
    assert_eq!(after[0].parts, 1);
    assert!(
        after[0].stored_bytes < bytes_before,
        "{} !< {bytes_before}",
        after[0].stored_bytes
    );
    assert_eq!(all(&store, "t"), before);
    drop(store);
    let store = Store::open(dir.path(), options).unwrap();
    assert_eq!(all(&store, "t"), before);
    assert_eq!(store.settle().unwrap(), 0, "still settled after a restart");
    let again = store.append(
        "t",
        batch_of("sdxl", "r1", vec![record(5, start(), "x".into())]),
    );
    assert_eq!(again.unwrap().duplicates, 1);
}

#[test]
fn a_flush_due_while_settling_is_made_between_its_blocks_not_after_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    for flush in 0..2u64 {
        for runner in ["r1", "r2"] {
            store
                .append("t", run(runner, flush * 3000, 3000, start()))
                .unwrap();
        }
        store.flush().unwrap();
    }
    // Records frozen and waiting for their flush, as an append that fills
    // the memtable leaves them, when a settling step begins.
    store.append("t", run("r3", 0, 50, start())).unwrap();
    {
        let mut writer = store.inner.lock_writer();
        let mut state = store.inner.write();
        store.inner.freeze(&mut writer, &mut state).unwrap();
    }
    assert_eq!(store.inner.read().memtable.frozen_count(), 1);
    let flushes = store.counters().flushes;
    assert!(store.inner.settle_one().unwrap());
    let counters = store.counters();
    assert_eq!(
        (counters.settle_flushes, counters.flushes),
        (1, flushes + 1),
        "the step flushed the frozen table between its blocks: {counters:?}"
    );
    assert_eq!(store.inner.read().memtable.frozen_count(), 0);
    assert_eq!(
        counters.parts_settled, 2,
        "the step settled the parts it took, not the one flushed meanwhile"
    );
    assert_eq!(all(&store, "t").len(), 12_050);
    assert_eq!(store.settle().unwrap(), 1, "that one is settled next");
    assert_eq!(all(&store, "t").len(), 12_050);
}

#[test]
fn settling_writes_blocks_of_the_older_format_anew_in_the_newer() {
    let dir = tempfile::tempdir().unwrap();
    let day = dir.path().join("parts/acme/sdxl/2025-11-20");
    std::fs::create_dir_all(&day).unwrap();
    // Written by the code before block format 2 (see part::tests).
    std::fs::write(
        day.join("000000000001.twp"),
        include_bytes!("part/fixtures/twpart03.twp"),
    )
    .unwrap();
    let options = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).unwrap();
    let before = all(&store, "acme");
    assert_eq!(before.len(), 60);
    assert_eq!(store.settle().unwrap(), 1);
    assert_eq!(all(&store, "acme"), before);
    let parts = store.inner.read().parts.clone();
    assert_eq!(parts.len(), 1);
    let part = &parts[0];
    assert_eq!(part.footer.replaces, [1]);
    for index in 0..part.footer.blocks.len() {
        let block = part.read_compressed(index).unwrap();
        assert_eq!(
            crate::part::layout::level_of(&block),
            Some(crate::DEFAULT_MERGE_ZSTD_LEVEL)
        );
    }
}
