//! `Store::scan` against `Store::query`: the same records, in the same
//! order, with the same cursors, from the memtable, flushed and merged
//! parts, after retention deleted a partition; and `RecordRef::write_json`
//! against serde's JSON of the built record.

use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{Direction, FieldsJson, Filter, Level, LogRecord, Phrase, Query, Source};

use crate::test_support::{batch_of, record};
use crate::{Retention, Store, StoreOptions};

/// Every page of `query` through `Store::query`, and through `Store::scan`
/// with each record built and written as JSON; the cursors of both.
fn both_ways(store: &Store, tenant: &str, query: &Query) -> (Vec<LogRecord>, Vec<LogRecord>) {
    let (mut paged, mut scanned) = (Vec::new(), Vec::new());
    let mut by_query = query.clone();
    let mut by_scan = query.clone();
    loop {
        let page = store.query(tenant, &by_query).unwrap();
        let mut rows = Vec::new();
        let scan = store
            .scan(tenant, &by_scan, |row| {
                let mut json = Vec::new();
                row.write_json("some-id", &mut json)?;
                rows.push((row.to_record()?, json));
                Ok(())
            })
            .unwrap();
        assert_eq!(scan.next, page.next, "the same cursor");
        assert_eq!(scan.skipped, page.skipped);
        for (record, json) in rows {
            let mut with_id = record.clone();
            with_id.id = "some-id".into();
            let written: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(written, serde_json::to_value(&with_id).unwrap());
            assert!(!json.contains(&b'\n'));
            scanned.push(record);
        }
        paged.extend(page.records);
        match page.next {
            Some(next) => {
                by_query.cursor = Some(next);
                by_scan.cursor = Some(next);
            }
            None => return (paged, scanned),
        }
    }
}

fn varied(seq: u64, ts: Timestamp) -> IngestRecord {
    let mut record = record(seq, ts, format!("line {seq} \"quoted\" \u{e9}\ttab"));
    record.level = Level::ALL[seq as usize % 6];
    record.request_id = seq.is_multiple_of(3).then(|| format!("req-{}", seq % 4));
    record.invalid_utf8 = seq.is_multiple_of(7);
    if seq.is_multiple_of(2) {
        // Keys not in sorted order: kept as sent, the same JSON.
        record.fields =
            serde_json::from_str(&format!(r#"{{"z":{seq},"a":{{"s":"x\ny"}},"m":[1,2.5]}}"#))
                .unwrap();
    }
    if seq.is_multiple_of(11) {
        record.message.push_str("\nsecond line");
    }
    record
}

#[test]
fn a_scan_visits_what_pages_return_from_memtable_parts_and_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            background: false,
            merge_min_parts: 2,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let now = Timestamp::now();
    let old = now - Duration::from_secs(3 * 24 * 3600);
    let recent = now - Duration::from_secs(3600);
    let batch = |app: &str, runner: &str, first: u64, start: Timestamp| -> IngestBatch {
        let mut batch = batch_of(
            app,
            runner,
            (first..first + 60)
                .map(|seq| varied(seq, start + Duration::from_millis(seq * 7)))
                .collect(),
        );
        batch.source = Source::Run;
        batch
    };
    // An old partition, merged parts, and records left in the memtable.
    store.append("t", batch("old", "r1", 0, old)).unwrap();
    store.append("t", batch("app", "r1", 0, recent)).unwrap();
    store.flush().unwrap();
    store.append("t", batch("app", "r2", 0, recent)).unwrap();
    store.flush().unwrap();
    store.merge().unwrap();
    store.append("t", batch("app", "r1", 60, recent)).unwrap();
    store
        .append("other", batch("app", "r1", 0, recent))
        .unwrap();
    let retention = Retention {
        max_age: Duration::from_secs(24 * 3600),
        ..Retention::default()
    };
    let filters = [
        Filter::default(),
        Filter {
            text: Some(Phrase::new("quoted")),
            min_level: Some(Level::Warn),
            ..Filter::default()
        },
        Filter {
            request_id: Some("req-0".into()),
            ..Filter::default()
        },
        Filter {
            fields: [("z".to_owned(), "4".to_owned())].into(),
            ..Filter::default()
        },
    ];
    for round in 0..2 {
        if round == 1 {
            assert_eq!(store.apply_retention(&retention, now).unwrap().len(), 1);
        }
        for filter in &filters {
            for (direction, limit) in [
                (Direction::Forward, 7),
                (Direction::Backward, 25),
                (Direction::Forward, 1000),
            ] {
                let query = Query {
                    filter: filter.clone(),
                    direction,
                    limit,
                    cursor: None,
                };
                let (paged, scanned) = both_ways(&store, "t", &query);
                assert_eq!(scanned, paged, "round {round}, {filter:?}, {direction:?}");
                assert!(paged.iter().all(|record| record.tenant == "t"));
                if filter == &Filter::default() {
                    let expected = if round == 0 { 240 } else { 180 };
                    assert_eq!(paged.len(), expected, "round {round}");
                }
            }
        }
    }
}

/// The JSON written from a borrowed row is serde's text of the built
/// record, byte for byte, when its fields are empty or already in key
/// order (the map serde writes sorts them).
#[test]
fn a_written_row_is_serdes_json_of_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::open_flushing(dir.path());
    let ts: Timestamp = "2026-11-20T10:00:00.123456789Z".parse().unwrap();
    let mut records = vec![
        varied(1, ts),
        varied(7, ts + Duration::from_secs(1)),
        varied(11, ts + Duration::from_millis(1500)),
    ];
    records[0].fields = FieldsJson::from_map(
        serde_json::json!({"a": 1, "b": {"c": "\u{1}"}})
            .as_object()
            .unwrap(),
    );
    store.append("t", batch_of("app", "r", records)).unwrap();
    let mut lines = Vec::new();
    let mut built = Vec::new();
    store
        .scan(
            "t",
            &Query {
                direction: Direction::Forward,
                limit: 1000,
                ..Query::default()
            },
            |row| {
                let mut line = Vec::new();
                row.write_json("tw-id", &mut line)?;
                lines.push(String::from_utf8(line).unwrap());
                built.push(row.to_record()?);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(lines.len(), 3);
    for (line, mut record) in lines.iter().zip(built) {
        record.id = "tw-id".into();
        assert_eq!(line, &serde_json::to_string(&record).unwrap());
    }
    assert!(
        lines[1].ends_with(r#","invalid_utf8":true}"#),
        "{}",
        lines[1]
    );
}

/// A visitor's error skips the rest of that block and says so; the scan
/// goes on with the others.
#[test]
fn a_visitors_error_skips_its_block_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::test_support::open_flushing(dir.path());
    let start: Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();
    for runner in ["r1", "r2"] {
        let records = (0..10)
            .map(|seq| {
                record(
                    seq,
                    start + Duration::from_secs(seq),
                    format!("{runner} {seq}"),
                )
            })
            .collect();
        store.append("t", batch_of("app", runner, records)).unwrap();
    }
    let mut seen = Vec::new();
    let scanned = store
        .scan(
            "t",
            &Query {
                direction: Direction::Forward,
                limit: 1000,
                ..Query::default()
            },
            |row| {
                if row.message == "r1 4" {
                    return Err("cannot".into());
                }
                seen.push(row.message.to_owned());
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(seen.iter().filter(|m| m.starts_with("r1")).count(), 4);
    assert_eq!(seen.iter().filter(|m| m.starts_with("r2")).count(), 10);
    assert_eq!(scanned.skipped.len(), 1);
    assert!(
        scanned.skipped[0].reason.contains("cannot"),
        "{:?}",
        scanned.skipped
    );
}

/// Strings are escaped as serde_json escapes them, whatever bytes they
/// hold and wherever in an eight-byte chunk those fall.
#[test]
fn strings_are_written_as_serde_writes_them() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let mut cases: Vec<String> = (0u8..0x80)
        .map(|byte| char::from(byte).to_string())
        .collect();
    cases.extend(["", "plain ascii text over eight", "é\u{7f}\u{2028}🦀\"\\"].map(String::from));
    for _ in 0..2000 {
        let len = rng.random_range(0..40);
        cases.push(
            (0..len)
                .map(|_| match rng.random_range(0..6) {
                    0 => char::from(rng.random_range(0u8..0x20)),
                    1 => ['"', '\\', 'é', '\u{fffd}'][rng.random_range(0..4)],
                    _ => char::from(rng.random_range(0x20u8..0x7f)),
                })
                .collect(),
        );
    }
    for case in cases {
        let mut written = Vec::new();
        crate::record_ref::write_json_str(&mut written, &case);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&case).unwrap(),
            "{case:?}"
        );
    }
}

/// Times are written as jiff displays them, whole seconds, every digit of
/// a fraction and the edges of what the store holds.
#[test]
fn times_are_written_as_jiff_displays_them() {
    use tailwater_model::time::timestamp_from_ns;
    let base = 1_795_000_000_000_000_000i64;
    let mut times = vec![0, -1, 1, i64::MIN, i64::MAX, -1_000_000_000, base];
    for shift in 0..9 {
        times.push(base + 10i64.pow(shift));
        times.push(base + 123_456_789 / 10i64.pow(shift));
        times.push(base - 10i64.pow(shift));
    }
    for ts in times {
        let mut written = Vec::new();
        crate::record_ref::write_time(&mut written, ts);
        assert_eq!(
            String::from_utf8(written).unwrap(),
            timestamp_from_ns(ts).to_string(),
            "{ts}"
        );
    }
}
