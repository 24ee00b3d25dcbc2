use std::fs::OpenOptions;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Direction, Filter, Level, Matcher, Query, Stream};

use super::*;

fn batch(runner: &str, boot: &str, seqs: std::ops::Range<u64>, ts_second: i64) -> IngestBatch {
    IngestBatch {
        app: "sdxl".into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: boot.into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                // Several records share each second, to exercise tie-breaks.
                ts: Timestamp::from_second(ts_second + (seq / 3) as i64).unwrap(),
                stream: Stream::Stdout,
                level: if seq % 5 == 0 {
                    Level::Error
                } else {
                    Level::Info
                },
                request_id: Some(format!("req-{}", seq % 4)),
                message: format!("line {seq} of {runner}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::default()).unwrap()
}

/// A store that flushes its memtable into parts after every append, so reads
/// go through parts and blocks.
fn open_flushing(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            memtable_max_bytes: 1,
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Both kinds of store: memtable-only and flushed-into-parts.
fn both(test: impl Fn(&dyn Fn(&Path) -> Store)) {
    test(&open);
    test(&open_flushing);
}

/// One page holding every record of `tenant` (the tests store fewer than
/// 1000), newest first.
fn everything(store: &Store, tenant: &str) -> Page {
    store
        .query(
            tenant,
            &Query {
                limit: 1000,
                ..Query::default()
            },
        )
        .unwrap()
}

fn messages(records: &[LogRecord]) -> Vec<String> {
    records.iter().map(|r| r.message.clone()).collect()
}

#[test]
fn retried_batches_are_stored_once_even_after_reopen() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        assert_eq!(
            store
                .append("t", batch("r1", "b1", 0..10, 100))
                .unwrap()
                .accepted,
            10
        );
        let overlap = store.append("t", batch("r1", "b1", 5..15, 100)).unwrap();
        assert_eq!((overlap.accepted, overlap.duplicates), (5, 5));
        // A new boot of the same runner restarts its sequence numbers.
        assert_eq!(
            store
                .append("t", batch("r1", "b2", 0..3, 100))
                .unwrap()
                .accepted,
            3
        );
        drop(store);

        let store = open(dir.path());
        assert_eq!(store.last_id(), 18);
        let again = store.append("t", batch("r1", "b1", 0..15, 100)).unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 15));
    });
}

#[test]
fn pages_forward_and_backward_without_gap_or_duplicate() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", "b", 0..50, 100)).unwrap();
        store.append("t", batch("r2", "b", 0..50, 100)).unwrap();

        for direction in [Direction::Forward, Direction::Backward] {
            let mut query = Query {
                direction,
                limit: 7,
                ..Query::default()
            };
            let mut seen = Vec::new();
            loop {
                let page = store.query("t", &query).unwrap();
                seen.extend(page.records.iter().map(Cursor::of));
                match page.next {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            let mut expected = seen.clone();
            expected.sort();
            if direction == Direction::Backward {
                expected.reverse();
            }
            expected.dedup();
            assert_eq!(seen, expected, "{direction:?}: time order, no duplicate");
            assert_eq!(seen.len(), 100, "{direction:?}: no gap");
        }
    });
}

#[test]
fn queries_filter_by_labels_level_text_and_time() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", "b", 0..30, 100)).unwrap();
        store.append("t", batch("r2", "b", 0..30, 100)).unwrap();
        let query = |filter: Filter| {
            store
                .query(
                    "t",
                    &Query {
                        filter,
                        direction: Direction::Forward,
                        limit: 1000,
                        cursor: None,
                    },
                )
                .unwrap()
                .records
        };
        let errors = query(Filter {
            runner: Some("r2".into()),
            min_level: Some(Level::Error),
            ..Filter::default()
        });
        assert_eq!(
            messages(&errors),
            [
                "line 0 of r2",
                "line 5 of r2",
                "line 10 of r2",
                "line 15 of r2",
                "line 20 of r2",
                "line 25 of r2"
            ]
        );

        let request = query(Filter {
            request_id: Some("req-1".into()),
            runner: Some("r1".into()),
            ..Filter::default()
        });
        assert_eq!(request.len(), 8);
        assert!(request
            .iter()
            .all(|r| r.request_id.as_deref() == Some("req-1")));

        let windowed = query(Filter {
            runner: Some("r1".into()),
            since: Some(Timestamp::from_second(101).unwrap()),
            until: Some(Timestamp::from_second(103).unwrap()),
            ..Filter::default()
        });
        assert_eq!(
            messages(&windowed),
            [
                "line 3 of r1",
                "line 4 of r1",
                "line 5 of r1",
                "line 6 of r1",
                "line 7 of r1",
                "line 8 of r1"
            ]
        );

        let text = query(Filter {
            text: Some(tailwater_model::Phrase::new("LINE 29 OF")),
            ..Filter::default()
        });
        assert_eq!(messages(&text), ["line 29 of r1", "line 29 of r2"]);
    });
}

#[test]
fn tenants_never_see_each_other() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("acme", batch("r1", "b", 0..5, 100)).unwrap();
        // The same runner name and boot in another tenant is another runner.
        assert_eq!(
            store
                .append("globex", batch("r1", "b", 0..5, 100))
                .unwrap()
                .accepted,
            5
        );
        let page = everything(&store, "acme");
        assert_eq!(page.records.len(), 5);
        assert!(page.records.iter().all(|r| r.tenant == "acme"));
        assert!(store
            .read_after("nobody", &Filter::default(), 0, 100)
            .is_empty());
    });
}

#[test]
fn read_after_follows_ingest_order() {
    both(|open| {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", "b", 0..5, 200)).unwrap();
        // Arrives later but happened earlier: still after id 5 for a tail.
        store.append("t", batch("r2", "b", 0..5, 100)).unwrap();
        let after = store.read_after("t", &Filter::default(), 5, 3);
        assert_eq!(
            messages(&after),
            ["line 0 of r2", "line 1 of r2", "line 2 of r2"]
        );
        assert_eq!(
            after.iter().map(|r| r.position).collect::<Vec<_>>(),
            [6, 7, 8]
        );
    });
}

#[test]
fn a_torn_log_tail_loses_only_the_unfinished_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", batch("r1", "b", 10..20, 100)).unwrap();
    drop(store);
    let wal = wal_path(dir.path(), 1);
    let len = std::fs::metadata(&wal).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let store = open(dir.path());
    assert_eq!(everything(&store, "t").records.len(), 10);
    // Ids skip past any the torn frame may have held.
    let reopened_at = store.last_id();
    assert!(reopened_at >= 20, "{reopened_at}");
    // The agent retries the batch it never saw acknowledged.
    assert_eq!(
        store
            .append("t", batch("r1", "b", 10..20, 100))
            .unwrap()
            .accepted,
        10
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.last_id(), reopened_at + 10);
    assert_eq!(everything(&store, "t").records.len(), 20);
    assert!(store.recovery_report().damage.is_empty(), "cut once");
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("in use by another tailwater server"),
        "{error}"
    );
}

#[test]
fn flushed_parts_survive_reopen_and_keep_ingest_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_flushing(dir.path());
    store.append("t", batch("r1", "b", 0..100, 100)).unwrap();
    store.append("t", batch("r1", "b", 100..200, 100)).unwrap();
    assert!(
        wal_segments(dir.path())
            .unwrap()
            .iter()
            .all(|(number, path)| {
                crate::wal::WalReader::recover(path, *number, |_| Some(()), |_| None)
                    .unwrap()
                    .batches
                    == 0
            }),
        "flushed logs are deleted"
    );
    let spare = dir.path().join("wal").join(crate::wal::SPARE);
    assert!(spare.exists(), "one is kept for the next segment to reuse");
    drop(store);
    assert!(!spare.exists(), "a closed store keeps no spare");

    let store = open(dir.path());
    assert_eq!(store.last_id(), 200);
    let again = store.append("t", batch("r1", "b", 150..250, 100)).unwrap();
    assert_eq!((again.accepted, again.duplicates), (50, 50));
    let all = everything(&store, "t");
    assert_eq!(all.records.len(), 250);
    let ids: std::collections::HashSet<u64> = all.records.iter().map(|r| r.position).collect();
    assert_eq!(ids.len(), 250, "ids stay unique across flushes and reopen");
}

#[test]
fn a_corrupt_part_is_quarantined_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_flushing(dir.path());
    store.append("t", batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", batch("r2", "b", 0..10, 100)).unwrap();
    drop(store);
    let parts = load_parts(dir.path()).unwrap();
    assert_eq!(parts.len(), 2);
    let damaged = parts[0].path().to_owned();
    drop(parts);
    let len = std::fs::metadata(&damaged).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let store = open(dir.path());
    let page = everything(&store, "t");
    assert_eq!(messages(&page.records).len(), 10);
    assert!(page.records.iter().all(|r| r.runner == "r2"));
    // Kept below the same folders, so it is still known as the tenant's.
    let below = damaged.strip_prefix(dir.path().join(PARTS_DIR)).unwrap();
    let quarantined = Path::new(QUARANTINE_DIR).join(below);
    assert!(dir.path().join(&quarantined).exists());
    let listed = store.damaged_parts("t");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0].path, listed[0].quarantined, &listed[0].partition),
        (&quarantined, true, &None)
    );
    assert!(listed[0].reason.contains("trailer"), "{}", listed[0].reason);
    assert!(store.damaged_parts("other").is_empty());
    drop(store);
    // Still listed after a restart, and its number is never given again.
    let store = open_flushing(dir.path());
    assert_eq!(store.damaged_parts("t")[0].path, quarantined);
    store.append("t", batch("r3", "b", 0..10, 100)).unwrap();
    assert!(dir.path().join(&quarantined).exists());
}

#[test]
fn a_damaged_block_is_skipped_and_the_reader_told_counted_and_listed() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open_flushing(dir.path());
    store.append("t", batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", batch("r2", "b", 0..10, 100)).unwrap();
    let parts = load_parts(dir.path()).unwrap();
    let damaged = parts
        .iter()
        .find(|part| part.footer.streams[0].labels.runner == "r1")
        .unwrap();
    let (path, block) = (damaged.path().to_owned(), &damaged.footer.blocks[0]);
    // One flipped byte inside the block's compressed bytes.
    let at = block.offset + u64::from(block.len) / 2;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    drop(parts);
    assert_eq!(store.stats()[0].records, 20, "not known yet");

    let page = everything(&store, "t");
    assert_eq!(page.records.len(), 10);
    assert!(page.records.iter().all(|r| r.runner == "r2"));
    assert_eq!(page.skipped.len(), 1, "the page says what it lacks");
    let skipped = &page.skipped[0];
    assert_eq!(
        (&skipped.part, skipped.block, skipped.records),
        (&path, 0, 10)
    );
    assert!(skipped.reason.contains("checksum"), "{}", skipped.reason);
    assert_eq!(store.counters().damaged_block_reads, 1);

    let (records, skipped) = store.read_after_reporting("t", &Filter::default(), 0, 100);
    assert_eq!((records.len(), skipped.len()), (10, 1));
    assert_eq!(store.counters().damaged_block_reads, 2, "each read counts");

    let listed = store.damaged_parts("t");
    assert_eq!(listed.len(), 1);
    let relative = path.strip_prefix(dir.path()).unwrap();
    assert_eq!(
        (
            listed[0].path.as_path(),
            listed[0].quarantined,
            &listed[0].blocks,
            listed[0].records
        ),
        (relative, false, &vec![0], Some(10))
    );
    assert!(store.damaged_parts("other").is_empty());
    assert_eq!(
        store.stats()[0].records,
        10,
        "what cannot be read is not counted"
    );

    // Another tenant's reads neither skip nor see it.
    let other = store.query("other", &Query::default()).unwrap();
    assert!(other.skipped.is_empty());
}

#[test]
fn a_crash_between_part_and_log_deletion_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", "b", 0..40, 100)).unwrap();
    // Keep a copy of the log as it was before the flush deleted it.
    let log = std::fs::read(wal_path(dir.path(), 1)).unwrap();
    store.flush().unwrap();
    drop(store);
    std::fs::write(wal_path(dir.path(), 1), log).unwrap();

    let store = open(dir.path());
    let page = everything(&store, "t");
    assert_eq!(page.records.len(), 40);
    assert_eq!(store.last_id(), 40);
}

/// Random batches, flushes, merges and queries, compared with a naive
/// model: filter everything, sort, page. Merges copy blocks of a random
/// size up and rewrite the smaller ones, so parts hold blocks of a stream
/// whose times overlap, copied and rewritten.
#[test]
fn queries_agree_with_a_naive_model_on_random_data() {
    use rand::{Rng, SeedableRng};
    use tailwater_model::Source;
    let (mut copied, mut written) = (0, 0);
    for seed in 0..12u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                merge_min_parts: 2,
                merge_copy_min_records: rng.random_range(1..60),
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mut model: Vec<LogRecord> = Vec::new();
        let runners = ["r1", "r2", "r3"];
        let mut next_seq = [0u64; 3];
        for _ in 0..rng.random_range(3..15) {
            let runner = rng.random_range(0..3);
            let count = rng.random_range(1..80);
            let records = (0..count)
                .map(|_| {
                    let seq = next_seq[runner];
                    next_seq[runner] += 1;
                    IngestRecord {
                        seq,
                        ts: Timestamp::from_second(1_000 + rng.random_range(0..50)).unwrap(),
                        stream: [Stream::Stdout, Stream::Stderr, Stream::System]
                            [rng.random_range(0..3)],
                        level: Level::ALL[rng.random_range(0..6)],
                        request_id: rng
                            .random_bool(0.3)
                            .then(|| format!("req-{}", rng.random_range(0..5))),
                        message: format!(
                            "{} {}",
                            ["alpha", "beta gamma", "delta"][rng.random_range(0..3)],
                            rng.random_range(0..4)
                        ),
                        fields: tailwater_model::FieldsJson::from_map(
                            serde_json::json!({"n": rng.random_range(0..3)})
                                .as_object()
                                .unwrap(),
                        ),
                        invalid_utf8: false,
                    }
                })
                .collect();
            let tenant = if rng.random_bool(0.8) { "t" } else { "other" };
            let batch = IngestBatch {
                app: "a".into(),
                version: "v".into(),
                runner: runners[runner].into(),
                boot: "b".into(),
                source: Source::Run,
                records,
            };
            let before = store.last_id();
            store.append(tenant, batch.clone()).unwrap();
            model.extend(store.read_after(tenant, &Filter::default(), before, usize::MAX));
            if rng.random_bool(0.4) {
                store.flush().unwrap();
            }
            if rng.random_bool(0.3) {
                store.merge().unwrap();
            }
        }
        for _ in 0..30 {
            /// Any of the four label matchers, over values and patterns
            /// that sometimes match.
            fn matcher(rng: &mut rand::rngs::StdRng, values: &[&str]) -> Matcher {
                let value = values[rng.random_range(0..values.len())].to_owned();
                let patterns = ["r1|r2", "r.*", "r", ".*3", "[abv]", "a|v|b"];
                let pattern =
                    tailwater_model::Pattern::whole(patterns[rng.random_range(0..patterns.len())])
                        .unwrap();
                match rng.random_range(0..4) {
                    0 => Matcher::Eq(value),
                    1 => Matcher::Ne(value),
                    2 => Matcher::Re(pattern),
                    _ => Matcher::NotRe(pattern),
                }
            }
            let filter = Filter {
                runner: rng.random_bool(0.4).then(|| matcher(&mut rng, &runners)),
                app: rng.random_bool(0.1).then(|| matcher(&mut rng, &["a", "x"])),
                version: rng.random_bool(0.1).then(|| matcher(&mut rng, &["v", "x"])),
                boot: rng.random_bool(0.1).then(|| matcher(&mut rng, &["b", "x"])),
                contains: rng.random_bool(0.2).then(|| {
                    let texts = ["TA 3", "ta g", "lpha", " gamma ", "eta gamma 1"];
                    tailwater_model::Substring::new(
                        texts[rng.random_range(0..texts.len())],
                        rng.random_bool(0.5),
                    )
                    .unwrap()
                }),
                regex: rng.random_bool(0.2).then(|| {
                    let patterns = [
                        "^(alpha|delta) [0-2]$",
                        " gamma [0-3]$",
                        "a [13]",
                        "(?i)DELTA",
                    ];
                    tailwater_model::Pattern::search(patterns[rng.random_range(0..patterns.len())])
                        .unwrap()
                }),
                fields: if rng.random_bool(0.2) {
                    [("n".to_owned(), rng.random_range(0..3).to_string())].into()
                } else {
                    Default::default()
                },
                request_id: rng
                    .random_bool(0.2)
                    .then(|| format!("req-{}", rng.random_range(0..5))),
                stream: rng.random_bool(0.2).then_some(Stream::Stderr),
                min_level: rng
                    .random_bool(0.3)
                    .then(|| Level::ALL[rng.random_range(0..6)]),
                text: rng.random_bool(0.3).then(|| {
                    tailwater_model::Phrase::new(
                        ["gamma", "beta gamma", "delta 2", "alpha"][rng.random_range(0..4)],
                    )
                }),
                since: rng
                    .random_bool(0.3)
                    .then(|| Timestamp::from_second(1_000 + rng.random_range(0..50)).unwrap()),
                until: rng
                    .random_bool(0.3)
                    .then(|| Timestamp::from_second(1_000 + rng.random_range(0..50)).unwrap()),
                ..Filter::default()
            };
            let direction = if rng.random_bool(0.5) {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let mut expected: Vec<&LogRecord> = model
                .iter()
                .filter(|r| r.tenant == "t" && filter.matches(r))
                .collect();
            expected.sort_by_key(|r| Cursor::of(r));
            if direction == Direction::Backward {
                expected.reverse();
            }
            let mut query = Query {
                filter: filter.clone(),
                direction,
                limit: rng.random_range(1..40),
                cursor: None,
            };
            let mut got = Vec::new();
            loop {
                let page = store.query("t", &query).unwrap();
                got.extend(page.records);
                match page.next {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            let expected: Vec<u64> = expected.iter().map(|r| r.position).collect();
            let got: Vec<u64> = got.iter().map(|r| r.position).collect();
            assert_eq!(got, expected, "seed {seed}, {filter:?}, {direction:?}");
            let after = rng.random_range(0..=store.last_id());
            let tail: Vec<u64> = store
                .read_after("t", &filter, after, 25)
                .iter()
                .map(|r| r.position)
                .collect();
            let mut expected_tail: Vec<u64> = model
                .iter()
                .filter(|r| r.tenant == "t" && r.position > after && filter.matches(r))
                .map(|r| r.position)
                .collect();
            expected_tail.sort();
            expected_tail.truncate(25);
            assert_eq!(tail, expected_tail, "seed {seed}: read_after {after}");
        }
        // The request index, from memtable, flushed and merged footers.
        for n in 0..5 {
            let id = format!("req-{n}");
            let of_request: Vec<&LogRecord> = model
                .iter()
                .filter(|r| r.tenant == "t" && r.request_id.as_deref() == Some(id.as_str()))
                .collect();
            let summary = store.request("t", &id);
            let expected = (!of_request.is_empty()).then(|| {
                let times = of_request
                    .iter()
                    .map(|r| tailwater_model::time::timestamp_ns(r.ts));
                (
                    of_request.len() as u64,
                    times.clone().min().unwrap(),
                    times.max().unwrap(),
                )
            });
            assert_eq!(
                summary.map(|s| (s.records, s.first_ts, s.last_ts)),
                expected,
                "seed {seed}: request {id}"
            );
        }
        let counters = store.counters();
        copied += counters.merge_blocks_copied;
        written += counters.merge_blocks_written;
    }
    assert!(
        copied > 0 && written > 0,
        "merges both copied ({copied}) and rewrote ({written}) blocks"
    );
}

fn at_day(app: &str, runner: &str, days_ago: i64, now: Timestamp) -> IngestBatch {
    let mut batch = batch(runner, "b", 0..20, now.as_second() - days_ago * 86_400);
    batch.app = app.into();
    batch
}

#[test]
fn retention_deletes_whole_partitions_by_app_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // In the past: records dated ahead of the clock are stored at its time.
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    store.append("t", at_day("short", "r1", 40, now)).unwrap();
    store.append("t", at_day("short", "r2", 1, now)).unwrap();
    store.append("t", at_day("long", "r3", 40, now)).unwrap();
    store.flush().unwrap();

    let mut retention = Retention {
        max_age: Duration::from_secs(30 * 86_400),
        ..Retention::default()
    };
    retention.app_max_age.insert(
        ("t".into(), "long".into()),
        Duration::from_secs(365 * 86_400),
    );
    let deleted = store.apply_retention(&retention, now).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(
        (deleted[0].partition.app.as_str(), deleted[0].reason),
        ("short", DeleteReason::Age)
    );
    assert!(!store.inner.partition_dir(&deleted[0].partition).exists());

    let left = everything(&store, "t").records;
    let runners: std::collections::BTreeSet<&str> =
        left.iter().map(|r| r.runner.as_str()).collect();
    assert_eq!(runners, ["r2", "r3"].into());
    // Nothing else is due.
    assert!(store.apply_retention(&retention, now).unwrap().is_empty());
}

#[test]
fn retention_by_disk_size_deletes_the_oldest_days_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // In the past: records dated ahead of the clock are stored at its time.
    let now = Timestamp::from_second(1_750_000_000).unwrap();
    for days_ago in [5, 3, 4, 1, 2] {
        store
            .append("t", at_day("a", &format!("r{days_ago}"), days_ago, now))
            .unwrap();
        store.flush().unwrap();
    }
    let one_part = load_parts(dir.path()).unwrap()[0].file_len;
    let retention = Retention {
        max_total_bytes: Some(one_part * 2 + one_part / 2),
        ..Retention::default()
    };
    let deleted = store.apply_retention(&retention, now).unwrap();
    let days: Vec<i64> = deleted
        .iter()
        .map(|d| {
            assert_eq!(d.reason, DeleteReason::DiskSize);
            let day: jiff::civil::Date = d.partition.day.parse().unwrap();
            let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
            (today - day).get_days() as i64
        })
        .collect();
    assert_eq!(days, [5, 4, 3]);
    let left = everything(&store, "t").records;
    assert_eq!(left.len(), 40);
}

/// Paging through parts page by page opens each block once: the next page
/// finds the blocks the last one decoded in the block cache, and reads the
/// same records as a store without one.
#[test]
fn paging_through_parts_decodes_each_block_once() {
    let page_through = |cache_bytes: usize| {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                memtable_max_bytes: 1,
                background: false,
                block_cache_bytes: cache_bytes,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for runner in ["r1", "r2", "r3"] {
            store.append("t", batch(runner, "b", 0..300, 100)).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .query(
                    "t",
                    &Query {
                        limit: 7,
                        direction: Direction::Forward,
                        cursor,
                        ..Query::default()
                    },
                )
                .unwrap();
            seen.extend(page.records.iter().map(|r| (r.runner.clone(), r.seq)));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        (seen, store.block_cache())
    };
    let (cached, stats) = page_through(DEFAULT_BLOCK_CACHE_BYTES);
    let (uncached, without) = page_through(0);
    assert_eq!(cached.len(), 900);
    assert_eq!(cached, uncached);
    assert_eq!(stats.misses, 3, "one block per runner, each decoded once");
    assert!(stats.hits > 100, "{stats:?}");
    assert!(without.misses > 100 && without.hits == 0, "{without:?}");
}
