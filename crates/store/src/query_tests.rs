//! The query language through `Store::query` and `read_after`: label
//! matchers, substrings, message regexes and field equality, in a memtable
//! and in flushed parts, both directions, paged; and the footer pruning that
//! must skip what cannot match and never what can.

use std::collections::BTreeMap;
use std::path::Path;

use jiff::Timestamp;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{
    Cursor, Direction, FieldsJson, Filter, Level, LogRecord, Matcher, Pattern, Query, Stream,
    Substring,
};

use crate::query::{candidate_blocks, Prune};
use crate::{load_parts, Store, StoreOptions};

/// The messages each runner cycles through, by `seq % 5`.
const MESSAGES: [&str; 5] = [
    "CUDA out of memory. Tried to allocate 2.50 GiB",
    "torch.OutOfMemoryError: timeout of memoryless worker",
    "step 10 loss=0.25",
    "Loaded model sdxl-turbo in 3.2s",
    "GET /health 200 OK",
];
const KINDS: [&str; 5] = ["oom", "error", "train", "load", "http"];

/// (app, version, runner, boot)
const RUNNERS: [(&str, &str, &str, &str); 4] = [
    ("sdxl", "v1", "gpu-a100-1", "b1"),
    ("sdxl", "v2", "gpu-a100-2", "b1"),
    ("sdxl", "v2", "cpu-1", "b2"),
    ("whisper", "v1", "gpu-l4-1", "b1"),
];

fn batch(runner: usize, seqs: std::ops::Range<u64>) -> IngestBatch {
    let (app, version, name, boot) = RUNNERS[runner];
    IngestBatch {
        app: app.into(),
        version: version.into(),
        runner: name.into(),
        boot: boot.into(),
        source: Default::default(),
        records: seqs
            .map(|seq| {
                let kind = (seq % 5) as usize;
                let mut fields = serde_json::json!({
                    "kind": KINDS[kind],
                    "seq": seq,
                    "ok": seq % 2 == 0,
                    "gpu": {"id": runner},
                });
                // Empty in some records and missing in the rest.
                if seq.is_multiple_of(4) {
                    fields["note"] = "".into();
                }
                IngestRecord {
                    seq,
                    // Runners share seconds, so ties are broken by id.
                    ts: Timestamp::from_second(1_000 + seq as i64).unwrap(),
                    stream: if kind == 1 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    },
                    level: if kind <= 1 { Level::Error } else { Level::Info },
                    request_id: Some(format!("req-{}", seq % 3)),
                    message: MESSAGES[kind].into(),
                    fields: FieldsJson::from_map(fields.as_object().unwrap()),
                    invalid_utf8: false,
                }
            })
            .collect(),
    }
}

/// Memtable-only and flushed-into-parts (a part per append).
fn both(test: impl Fn(&Store)) {
    for memtable_max_bytes in [StoreOptions::default().memtable_max_bytes, 1] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            StoreOptions {
                memtable_max_bytes,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        fill(&store);
        test(&store);
    }
}

/// Every runner's 20 records, in two batches each, so a stream spans parts.
fn fill(store: &Store) {
    for half in [0..10, 10..20] {
        for runner in 0..RUNNERS.len() {
            store.append("t", batch(runner, half.clone())).unwrap();
        }
    }
    // Another tenant's twin, which no query of "t" may return.
    store.append("other", batch(0, 0..20)).unwrap();
}

/// Every match of `filter`, paged three at a time, in `direction`.
fn all_pages(store: &Store, filter: &Filter, direction: Direction) -> Vec<LogRecord> {
    let mut query = Query {
        filter: filter.clone(),
        direction,
        limit: 3,
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

fn seq_of(record: &LogRecord) -> u64 {
    record.fields["seq"].as_u64().unwrap()
}

/// Which of [`MESSAGES`] a record holds.
fn kind(record: &LogRecord) -> u64 {
    seq_of(record) % 5
}

fn parity(record: &LogRecord) -> u64 {
    seq_of(record) % 2
}

/// Checks that `filter` returns exactly the records `expected` picks (a
/// predicate written apart from the filter), forward and backward, paged,
/// and through `read_after` (live tail). A check whose `expected` picks
/// nothing fails: a filter that returns nothing passes it whatever it does.
fn check(store: &Store, filter: Filter, expected: impl Fn(&LogRecord) -> bool) {
    let everything = all_pages(store, &Filter::default(), Direction::Forward);
    assert_eq!(everything.len(), 80);
    let wanted: Vec<u64> = everything
        .iter()
        .filter(|r| expected(r))
        .map(|r| r.position)
        .collect();
    assert!(
        !wanted.is_empty(),
        "{filter:?}: expects no record, so it checks nothing; make it pick some"
    );
    for direction in [Direction::Forward, Direction::Backward] {
        let got = all_pages(store, &filter, direction);
        let mut ids: Vec<u64> = got.iter().map(|r| r.position).collect();
        let positions: Vec<Cursor> = got.iter().map(Cursor::of).collect();
        let mut sorted = positions.clone();
        sorted.sort();
        if direction == Direction::Backward {
            sorted.reverse();
            ids.reverse();
        }
        assert_eq!(positions, sorted, "{filter:?} {direction:?}: in order");
        assert_eq!(ids, wanted, "{filter:?} {direction:?}");
    }
    let mut tail: Vec<u64> = store
        .read_after("t", &filter, 0, usize::MAX)
        .iter()
        .map(|r| r.position)
        .collect();
    tail.sort();
    let mut wanted = wanted;
    wanted.sort();
    assert_eq!(tail, wanted, "{filter:?}: read_after");
}

fn re(source: &str) -> Pattern {
    Pattern::whole(source).unwrap()
}

#[test]
fn label_matchers_equal_not_equal_regex_and_not_regex() {
    both(|store| {
        check(
            store,
            Filter {
                app: Some(Matcher::Eq("whisper".into())),
                ..Filter::default()
            },
            |r| r.runner == "gpu-l4-1",
        );
        check(
            store,
            Filter {
                app: Some(Matcher::Ne("sdxl".into())),
                ..Filter::default()
            },
            |r| r.app == "whisper",
        );
        check(
            store,
            Filter {
                version: Some(Matcher::NotRe(re("v1"))),
                ..Filter::default()
            },
            |r| r.runner == "gpu-a100-2" || r.runner == "cpu-1",
        );
        check(
            store,
            Filter {
                runner: Some(Matcher::Re(re("gpu-.*"))),
                ..Filter::default()
            },
            |r| r.runner != "cpu-1",
        );
        // Anchored: a regex matches whole values only (`cpu` is not
        // `cpu-1`).
        check(
            store,
            Filter {
                runner: Some(Matcher::Re(re("cpu|gpu-l4-1"))),
                ..Filter::default()
            },
            |r| r.runner == "gpu-l4-1",
        );
        check(
            store,
            Filter {
                runner: Some(Matcher::NotRe(re("gpu-a100-.*"))),
                ..Filter::default()
            },
            |r| r.runner == "cpu-1" || r.runner == "gpu-l4-1",
        );
        check(
            store,
            Filter {
                boot: Some(Matcher::Eq("b2".into())),
                ..Filter::default()
            },
            |r| r.runner == "cpu-1",
        );
        check(
            store,
            Filter {
                app: Some("sdxl".into()),
                runner: Some(Matcher::Ne("cpu-1".into())),
                version: Some(Matcher::Re(re("v[0-9]+"))),
                ..Filter::default()
            },
            |r| r.runner.starts_with("gpu-a100"),
        );
    });
}

#[test]
fn substrings_with_and_without_case() {
    both(|store| {
        // Inside words: `timeout of memoryless` holds `out of mem`.
        check(
            store,
            Filter {
                contains: Some(Substring::new("OUT OF MEM", false).unwrap()),
                ..Filter::default()
            },
            |r| kind(r) <= 1,
        );
        check(
            store,
            Filter {
                contains: Some(Substring::new("OutOfMemory", true).unwrap()),
                ..Filter::default()
            },
            |r| kind(r) == 1,
        );
        // Case kept: `memory` (kind 0, and kind 1's `memoryless`) is not
        // `Memory`.
        check(
            store,
            Filter {
                contains: Some(Substring::new("Memory", true).unwrap()),
                ..Filter::default()
            },
            |r| kind(r) == 1,
        );
        check(
            store,
            Filter {
                contains: Some(Substring::new("loss=0.2", false).unwrap()),
                runner: Some(Matcher::Re(re("gpu-a100-[12]"))),
                ..Filter::default()
            },
            |r| kind(r) == 2 && r.runner.starts_with("gpu-a100"),
        );
        // The word phrase, by contrast, wants whole words.
        check(
            store,
            Filter {
                text: Some(tailwater_model::Phrase::new("out of memory")),
                ..Filter::default()
            },
            |r| kind(r) == 0,
        );
    });
}

#[test]
fn message_regexes() {
    both(|store| {
        check(
            store,
            Filter {
                regex: Some(Pattern::search("step [0-9]+ loss").unwrap()),
                ..Filter::default()
            },
            |r| kind(r) == 2,
        );
        check(
            store,
            Filter {
                regex: Some(Pattern::search("(?i)^loaded MODEL").unwrap()),
                ..Filter::default()
            },
            |r| kind(r) == 3,
        );
        // Requires the words 2 and 50, which the word filters hold.
        check(
            store,
            Filter {
                regex: Some(Pattern::search(r"allocate 2\.50 GiB$").unwrap()),
                ..Filter::default()
            },
            |r| kind(r) == 0,
        );
        check(
            store,
            Filter {
                regex: Some(Pattern::search(r"\b200\b|memoryless").unwrap()),
                min_level: Some(Level::Error),
                ..Filter::default()
            },
            |r| kind(r) == 1,
        );
    });
}

#[test]
fn field_equality_and_request_ids() {
    both(|store| {
        let fields = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        check(
            store,
            Filter {
                fields: fields(&[("kind", "oom")]),
                ..Filter::default()
            },
            |r| kind(r) == 0,
        );
        check(
            store,
            Filter {
                fields: fields(&[("seq", "7"), ("ok", "false")]),
                ..Filter::default()
            },
            |r| seq_of(r) == 7,
        );
        check(
            store,
            Filter {
                fields: fields(&[("gpu.id", "2"), ("ok", "true")]),
                ..Filter::default()
            },
            |r| r.runner == "cpu-1" && parity(r) == 0,
        );
        // A missing field never matches, not even the empty value.
        check(
            store,
            Filter {
                fields: fields(&[("note", "")]),
                ..Filter::default()
            },
            |r| seq_of(r).is_multiple_of(4),
        );
        check(
            store,
            Filter {
                request_id: Some("req-1".into()),
                runner: Some(Matcher::Re(re(".*-1"))),
                contains: Some(Substring::new("health", false).unwrap()),
                ..Filter::default()
            },
            |r| {
                seq_of(r) % 3 == 1
                    && kind(r) == 4
                    && ["gpu-a100-1", "cpu-1", "gpu-l4-1"].contains(&r.runner.as_str())
            },
        );
    });
}

/// The candidate blocks of every part in `dir` for `filter`, as the runners
/// of their streams.
fn candidate_runners(dir: &Path, filter: &Filter) -> Vec<String> {
    let prune = Prune::new(filter);
    let mut runners = Vec::new();
    for part in load_parts(dir).unwrap() {
        for block in candidate_blocks(&part, "t", &prune) {
            let stream = part.footer.blocks[block].stream as usize;
            runners.push(part.footer.streams[stream].labels.runner.clone());
        }
    }
    runners.sort();
    runners.dedup();
    runners
}

#[test]
fn footers_skip_blocks_that_cannot_match_and_keep_those_that_can() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    fill(&store);
    // A runner that never says anything the text conditions look for.
    let mut quiet = batch(3, 0..20);
    quiet.runner = "quiet".into();
    for record in &mut quiet.records {
        record.message = "nothing here".into();
    }
    store.append("t", quiet.clone()).unwrap();
    store.flush().unwrap();
    let runners = |filter: Filter| candidate_runners(dir.path(), &filter);
    let all = ["cpu-1", "gpu-a100-1", "gpu-a100-2", "gpu-l4-1", "quiet"];

    assert_eq!(runners(Filter::default()), all);
    assert_eq!(
        runners(Filter {
            runner: Some(Matcher::Re(re("gpu-a100-.*"))),
            ..Filter::default()
        }),
        ["gpu-a100-1", "gpu-a100-2"]
    );
    assert_eq!(
        runners(Filter {
            app: Some(Matcher::Ne("sdxl".into())),
            ..Filter::default()
        }),
        ["gpu-l4-1", "quiet"]
    );
    assert_eq!(
        runners(Filter {
            boot: Some(Matcher::NotRe(re("b1"))),
            ..Filter::default()
        }),
        ["cpu-1"]
    );
    // Text conditions skip the quiet runner by the words they require...
    for filter in [
        Filter {
            contains: Some(Substring::new("timeout out of memoryless", false).unwrap()),
            ..Filter::default()
        },
        Filter {
            // "allocate" stands whole between spaces; "to" and the short
            // numbers are too short to be indexed (see part/bloom.rs).
            regex: Some(Pattern::search(r"Tried to allocate 2\.50 GiB").unwrap()),
            ..Filter::default()
        },
        Filter {
            // Either branch's words: "out" (not "of", too short to be
            // indexed), or "model".
            regex: Some(Pattern::search("CUDA out of memory|Loaded model sdxl").unwrap()),
            ..Filter::default()
        },
    ] {
        assert_eq!(runners(filter), all[..4]);
    }
    // ...and keep every block when they require no whole word.
    for filter in [
        Filter {
            contains: Some(Substring::new("thing", true).unwrap()),
            ..Filter::default()
        },
        Filter {
            regex: Some(Pattern::search("(?i)NOTHING|cuda").unwrap()),
            ..Filter::default()
        },
        Filter {
            regex: Some(Pattern::search("no+thing here").unwrap()),
            ..Filter::default()
        },
        Filter {
            // One branch's word ("here") is in the quiet runner's blocks.
            regex: Some(Pattern::search("out of memory|nothing here now").unwrap()),
            ..Filter::default()
        },
    ] {
        assert_eq!(runners(filter.clone()), all, "{filter:?}");
    }
}
