//! Block format 3 (settled blocks: messages as templates and digits apart)
//! answers what format 2 answers: the same random records, settled one way
//! in one store and the other way in another, give the same counts (by
//! bucket and level too, whole and in windows cutting blocks) and the same
//! pages, and the counts are what paging returns. The messages put digits
//! inside words and at their bounds, hexadecimal runs with and without a
//! digit, case, punctuation, non-ASCII letters, and the bytes format 3
//! uses as its mark and escape; some blocks hold a message with a newline.

use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::IngestRecord;
use tailwater_model::{Direction, Filter, Level, LogRecord, Phrase, Query, Stream};

use super::layout::{FORMAT_2, FORMAT_3};
use crate::test_support::batch_of;
use crate::{Buckets, Store, StoreOptions, LEVELS};

/// Pieces of messages, put together with or without a separator.
const PIECES: &[&str] = &[
    "tokens",
    "Tokens",
    "TOKENS",
    "tokens2",
    "2tokens",
    "tokens_9",
    "feed",
    "FEED",
    "deadbeef",
    "DeadBeef42",
    "added",
    "0added",
    "abc",
    "abc1",
    "x1f",
    "0x",
    "f",
    "é",
    "é1",
    "ünïcode",
    "42",
    "7",
    "1.5",
    "\u{11}",
    "\u{12}",
    "\u{12}\u{11}",
    "\u{12}\u{12}",
    "\u{11}tokens",
    "tokens\u{11}",
    "\u{12}\u{12}\u{11}feed",
    "",
];
const SEPARATORS: &[&str] = &["", " ", " ", ",", ".", "=", "-", "/", ": ", "(", "\t", "\n"];
/// Words counted and searched: holding no digit (the templates are
/// searched) and holding one (the messages are joined).
const WORDS: &[&str] = &[
    "tokens",
    "TOKENS",
    "feed",
    "deadbeef",
    "added",
    "abc",
    "f",
    "x",
    "é",
    "ünïcode",
    "42",
    "7",
    "tokens2",
    "abc1",
    "x1f",
    "tokens_9",
    "0x",
    "1",
    "5",
];

/// What a batch's messages are like.
#[derive(Clone, Copy)]
struct Kind {
    /// Some messages hold a newline (the block keeps them by length).
    newlines: bool,
    /// The mark and escape bytes are left out (a block without escapes is
    /// joined another way).
    plain: bool,
    /// Lines of a few templates, as a program's (numbers by column pay).
    templated: bool,
}

fn message(rng: &mut StdRng, kind: Kind) -> String {
    if kind.templated {
        let n = rng.random_range(0..100_000u32);
        return match rng.random_range(0..3) {
            0 => format!("step {n} loss 0.{} Tokens/s {}", n % 97, n * 7),
            1 => format!("gpu{} feed {n:x} added", n % 8),
            _ => format!("deadbeef tokens_9 {n} é{n}"),
        };
    }
    let mut text = String::new();
    for _ in 0..rng.random_range(0..7) {
        let separator = SEPARATORS[rng.random_range(0..SEPARATORS.len())];
        if separator != "\n" || kind.newlines {
            text.push_str(separator);
        }
        let piece = PIECES[rng.random_range(0..PIECES.len())];
        if !(kind.plain && piece.contains(['\u{11}', '\u{12}'])) {
            text.push_str(piece);
        }
    }
    text
}

/// Every record matching `filter`, page after page, in `direction`.
fn paged(store: &Store, filter: &Filter, direction: Direction) -> Vec<LogRecord> {
    let mut query = Query {
        filter: filter.clone(),
        direction,
        limit: 300,
        cursor: None,
    };
    let mut records = Vec::new();
    loop {
        let page = store.query("t", &query).unwrap();
        assert!(page.skipped.is_empty(), "{:?}", page.skipped);
        records.extend(page.records);
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => return records,
        }
    }
}

/// The first byte of every block of every part of `dir`: its format.
fn block_formats(dir: &std::path::Path) -> Vec<u8> {
    let parts = crate::open::load_parts(dir).unwrap();
    let mut formats = Vec::new();
    for part in &parts {
        for index in 0..part.footer.blocks.len() {
            formats.push(part.read_compressed(index).unwrap()[0]);
        }
    }
    formats
}

const START: i64 = 1_700_000_000;

fn second(rng: &mut StdRng) -> Timestamp {
    Timestamp::from_nanosecond(i128::from(
        (START + rng.random_range(0..120)) * 1_000_000_000 + rng.random_range(0..1_000_000_000),
    ))
    .unwrap()
}

#[test]
fn format_3_counts_and_searches_as_format_2_does() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let query_threads = rng.random_range(1..3);
        let stores = [false, true].map(|numbers_apart| {
            Store::open(
                dirs[usize::from(numbers_apart)].path(),
                StoreOptions {
                    memtable_max_bytes: 1 << 30,
                    merge_zstd_level: 9,
                    settle_numbers_apart: numbers_apart,
                    query_threads,
                    background: false,
                    ..StoreOptions::default()
                },
            )
            .unwrap()
        });
        let mut seqs = [0u64; 3];
        let batches = rng.random_range(6..12);
        for batch in 0..batches {
            let runner = rng.random_range(0..3);
            let kind = Kind {
                // In a third of the stores: a block where a message holds
                // one is read another way (whole) than one a line.
                newlines: seed % 3 == 0 && rng.random_bool(0.3),
                plain: seed % 2 == 0,
                templated: rng.random_bool(0.3),
            };
            let records: Vec<IngestRecord> = (0..rng.random_range(50..400))
                .map(|_| {
                    seqs[runner] += 1;
                    IngestRecord {
                        seq: seqs[runner],
                        ts: second(&mut rng),
                        stream: Stream::Stdout,
                        level: Level::ALL[rng.random_range(0..6)],
                        request_id: None,
                        message: message(&mut rng, kind),
                        fields: Default::default(),
                        invalid_utf8: false,
                    }
                })
                .collect();
            let flush = rng.random_bool(0.6);
            // The first batches are settled, the next flushed alone, the
            // last (sometimes) left in the memtable.
            let settle = batch == batches / 2;
            for store in &stores {
                let batch = batch_of("a", ["r1", "r2", "r3"][runner], records.clone());
                store.append("t", batch).unwrap();
                if flush || settle {
                    store.flush().unwrap();
                }
                if settle {
                    assert!(store.settle().unwrap() > 0);
                }
            }
        }
        let formats = [0, 1].map(|store| block_formats(dirs[store].path()));
        assert!(!formats[0].contains(&FORMAT_3), "seed {seed}");
        assert!(
            formats[1].contains(&FORMAT_3),
            "seed {seed}: {:?}",
            formats[1]
        );
        assert!(formats[1].contains(&FORMAT_2), "seed {seed}: flushed parts");

        for _ in 0..24 {
            let mut text = WORDS[rng.random_range(0..WORDS.len())].to_owned();
            if rng.random_bool(0.2) {
                text.push(' ');
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            }
            let filter = Filter {
                text: Some(Phrase::new(&text)),
                since: rng.random_bool(0.3).then(|| second(&mut rng)),
                until: rng.random_bool(0.3).then(|| second(&mut rng)),
                ..Filter::default()
            };
            let direction = if rng.random_bool(0.5) {
                Direction::Forward
            } else {
                Direction::Backward
            };
            let pages = stores
                .each_ref()
                .map(|store| paged(store, &filter, direction));
            assert_eq!(pages[0], pages[1], "seed {seed}, {filter:?}: the pages");
            let expected = &pages[0];
            let buckets = Buckets {
                since_ns: START * 1_000_000_000,
                step_ns: rng.random_range(1..30) * 1_000_000_000,
                count: rng.random_range(1..10),
            };
            let mut histogram = vec![[0u64; LEVELS]; buckets.count];
            for record in expected {
                let offset = (timestamp_ns(record.ts) - buckets.since_ns) as u64 / buckets.step_ns;
                histogram[(offset as usize).min(buckets.count - 1)]
                    [record.level.code() as usize] += 1;
            }
            for (format, store) in stores.iter().enumerate() {
                let context = format!("seed {seed}, format {}, {filter:?}", format + 2);
                let counts = store.count("t", &filter, None).unwrap();
                assert!(counts.skipped.is_empty(), "{:?}", counts.skipped);
                assert_eq!(counts.total(), expected.len() as u64, "{context}");
                let counts = store.count("t", &filter, Some(buckets)).unwrap();
                assert_eq!(
                    counts.total(),
                    expected.len() as u64,
                    "{context}, by bucket"
                );
                if !expected.is_empty() {
                    assert_eq!(counts.apps["a"].buckets, histogram, "{context}");
                }
            }
        }
    }
}
