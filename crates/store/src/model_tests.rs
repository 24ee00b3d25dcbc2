//! The store against a naive model on random data.

use jiff::Timestamp;
use tailwater_model::time::timestamp_ns;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Direction, Filter, Level, Matcher, Query, Stream};

use super::*;

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
                query_threads: rng.random_range(1..4),
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
                            [
                                "alpha",
                                "beta gamma",
                                "delta",
                                "GAMMA\nbeta",
                                "alphagamma",
                                "Gamma_delta gamma"
                            ][rng.random_range(0..6)],
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
                        ["gamma", "beta gamma", "delta 2", "alpha", "GAMMA beta"]
                            [rng.random_range(0..5)],
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
            // A scan visits what the pages return, borrowed.
            let mut scan = Query {
                cursor: None,
                ..query.clone()
            };
            let mut visited = Vec::new();
            loop {
                let page = store
                    .scan("t", &scan, |row| {
                        visited.push(row.position);
                        Ok(())
                    })
                    .unwrap();
                match page.next {
                    Some(next) => scan.cursor = Some(next),
                    None => break,
                }
            }
            assert_eq!(
                visited,
                got.iter().map(|r| r.position).collect::<Vec<_>>(),
                "seed {seed}, {filter:?}: scan"
            );
            // A count is the number of records paging returns, by bucket
            // and level too.
            let buckets = Buckets {
                since_ns: 1_000_000_000_000,
                step_ns: rng.random_range(1..20) * 1_000_000_000,
                count: rng.random_range(1..8),
            };
            let mut histogram = vec![[0u64; LEVELS]; buckets.count];
            for record in &expected {
                let offset = (timestamp_ns(record.ts) - buckets.since_ns) as u64 / buckets.step_ns;
                histogram[(offset as usize).min(buckets.count - 1)]
                    [record.level.code() as usize] += 1;
            }
            let counts = store.count("t", &filter, Some(buckets)).unwrap();
            assert_eq!(
                counts.total(),
                expected.len() as u64,
                "seed {seed}, {filter:?}"
            );
            assert!(counts.skipped.is_empty());
            if !expected.is_empty() {
                assert_eq!(
                    counts.apps["a"].buckets, histogram,
                    "seed {seed}, {filter:?}"
                );
            }
            let counts = store.count("t", &filter, None).unwrap();
            assert_eq!(
                counts.total(),
                expected.len() as u64,
                "seed {seed}, {filter:?}"
            );
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
