//! A count of a word is the number of records paging returns, by bucket
//! and level too, whatever the word's case and neighbours: random messages
//! and words, counted in the memtable, in flushed parts (level 3) and in
//! settled ones, whole and in time windows that cut blocks.

use jiff::Timestamp;
use rand::{Rng, SeedableRng};
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::IngestRecord;
use tailwater_model::{Direction, Filter, Level, LogRecord, Phrase, Query, Stream};

use crate::test_support::batch_of;
use crate::{Buckets, Store, StoreOptions, LEVELS};

/// Pieces of messages: the word counted, in other cases, inside longer
/// words, beside punctuation and non-ASCII letters.
const PIECES: &[&str] = &[
    "tokens",
    "Tokens",
    "TOKENS",
    "token",
    "tokens_used",
    "mytokens",
    "tokens2",
    "tokens.",
    "(tokens)",
    "é-tokens",
    "tokensé",
    "ſtokens",
    "gpu",
    "GPU=0",
    "loss",
    "step",
    "ünïcode",
    "42",
    "",
];
const SEPARATORS: &[&str] = &[" ", "  ", ",", "=", "\t", ": ", "\n"];
const WORDS: &[&str] = &[
    "tokens",
    "TOKENS",
    "Token",
    "tokens2",
    "gpu",
    "LOSS",
    "step",
    "ünïcode",
    "42",
    "used",
];

fn message(rng: &mut rand::rngs::StdRng, newlines: bool) -> String {
    let mut text = String::new();
    for _ in 0..rng.random_range(0..6) {
        let separator = SEPARATORS[rng.random_range(0..SEPARATORS.len())];
        if separator != "\n" || newlines {
            text.push_str(separator);
        }
        text.push_str(PIECES[rng.random_range(0..PIECES.len())]);
    }
    text
}

/// Every record matching `filter`, page after page.
fn paged(store: &Store, filter: &Filter) -> Vec<LogRecord> {
    let mut query = Query {
        filter: filter.clone(),
        direction: Direction::Forward,
        limit: 500,
        cursor: None,
    };
    let mut records = Vec::new();
    loop {
        let page = store.query("t", &query).unwrap();
        records.extend(page.records);
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return records,
        }
    }
}

#[test]
fn counts_of_random_words_are_what_paging_returns() {
    let start = 1_700_000_000i64;
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                memtable_max_bytes: rng.random_range(4_000..60_000),
                merge_min_parts: 2,
                merge_zstd_level: 9,
                // Settled blocks of both formats (3 is read whole).
                settle_numbers_apart: seed % 2 == 1,
                query_threads: rng.random_range(1..3),
                background: false,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let mut seqs = [0u64; 3];
        for _ in 0..rng.random_range(6..14) {
            let runner = rng.random_range(0..3);
            // Some batches put a newline in a message: their blocks keep
            // messages by length, not by line.
            let newlines = rng.random_bool(0.3);
            let records = (0..rng.random_range(50..400))
                .map(|_| {
                    seqs[runner] += 1;
                    IngestRecord {
                        seq: seqs[runner],
                        ts: Timestamp::from_nanosecond(i128::from(
                            (start + rng.random_range(0..120)) * 1_000_000_000
                                + rng.random_range(0..1_000_000_000),
                        ))
                        .unwrap(),
                        stream: Stream::Stdout,
                        level: Level::ALL[rng.random_range(0..6)],
                        request_id: None,
                        message: message(&mut rng, newlines),
                        fields: Default::default(),
                        invalid_utf8: false,
                    }
                })
                .collect();
            store
                .append("t", batch_of("a", ["r1", "r2", "r3"][runner], records))
                .unwrap();
            if rng.random_bool(0.3) {
                store.flush().unwrap();
            }
            if rng.random_bool(0.2) {
                store.merge().unwrap();
            }
        }
        for _ in 0..12 {
            let word = WORDS[rng.random_range(0..WORDS.len())];
            let second = |rng: &mut rand::rngs::StdRng| {
                Timestamp::from_nanosecond(i128::from(
                    (start + rng.random_range(0..120)) * 1_000_000_000
                        + rng.random_range(0..1_000_000_000),
                ))
                .unwrap()
            };
            let filter = Filter {
                text: Some(Phrase::new(word)),
                since: rng.random_bool(0.3).then(|| second(&mut rng)),
                until: rng.random_bool(0.3).then(|| second(&mut rng)),
                ..Filter::default()
            };
            let expected = paged(&store, &filter);
            let buckets = Buckets {
                since_ns: start * 1_000_000_000,
                step_ns: rng.random_range(1..30) * 1_000_000_000,
                count: rng.random_range(1..10),
            };
            let mut histogram = vec![[0u64; LEVELS]; buckets.count];
            for record in &expected {
                let offset = (timestamp_ns(record.ts) - buckets.since_ns) as u64 / buckets.step_ns;
                histogram[(offset as usize).min(buckets.count - 1)]
                    [record.level.code() as usize] += 1;
            }
            let counts = store.count("t", &filter, None).unwrap();
            assert!(counts.skipped.is_empty(), "{:?}", counts.skipped);
            assert_eq!(
                counts.total(),
                expected.len() as u64,
                "seed {seed}, {filter:?}"
            );
            let counts = store.count("t", &filter, Some(buckets)).unwrap();
            assert_eq!(
                counts.total(),
                expected.len() as u64,
                "seed {seed}, {filter:?}, by bucket"
            );
            if !expected.is_empty() {
                assert_eq!(
                    counts.apps["a"].buckets, histogram,
                    "seed {seed}, {filter:?}"
                );
            }
        }
    }
}

/// A count reads a block's numbers and messages alone, not its fields: a
/// block whose bytes fail their checksum is still skipped and said so, the
/// rest counted.
#[test]
fn a_count_of_a_word_skips_a_damaged_block_and_says_so() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::open_flushing(dir.path());
    store
        .append("t", crate::test_support::batch("r1", "b", 0..10, 100))
        .unwrap();
    store
        .append("t", crate::test_support::batch("r2", "b", 0..10, 100))
        .unwrap();
    let parts = crate::open::load_parts(dir.path()).unwrap();
    let damaged = parts
        .iter()
        .find(|part| part.footer.streams[0].labels.runner == "r1")
        .unwrap();
    let block = &damaged.footer.blocks[0];
    let at = block.offset + u64::from(block.len) / 2;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(damaged.path())
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    let word = Filter {
        text: Some(Phrase::new("LINE")),
        ..Filter::default()
    };
    let buckets = Buckets {
        since_ns: 0,
        step_ns: 1,
        count: 1,
    };
    for buckets in [None, Some(buckets)] {
        let counts = store.count("t", &word, buckets).unwrap();
        assert_eq!(counts.total(), 10, "r2's lines alone");
        assert_eq!(counts.skipped.len(), 1);
        let skipped = &counts.skipped[0];
        assert_eq!((skipped.block, skipped.records), (0, 10));
        assert!(skipped.reason.contains("checksum"), "{}", skipped.reason);
    }
}
