use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use jiff::Timestamp;
use tailwater_model::{Level, LogRecord, Source, Stream};

use super::reader::{Part, PartError};
use super::writer::{write_part, BLOCK_MAX_RECORDS};
use super::Partition;

fn partition() -> Partition {
    Partition {
        day: "2025-11-20".into(),
        tenant: "acme".into(),
        app: "sdxl".into(),
    }
}

fn record(id: u64, runner: &str, seq: u64, message: &str) -> LogRecord {
    LogRecord {
        id: String::new(),
        position: id,
        ts: Timestamp::from_nanosecond(1_763_600_000_000_000_000 + i128::from(id) * 1_000).unwrap(),
        tenant: "acme".into(),
        app: "sdxl".into(),
        version: "v1".into(),
        runner: runner.into(),
        boot: "b1".into(),
        seq,
        source: Source::Run,
        stream: if id.is_multiple_of(3) {
            Stream::Stderr
        } else {
            Stream::Stdout
        },
        level: if id.is_multiple_of(10) {
            Level::Error
        } else {
            Level::Info
        },
        request_id: (id.is_multiple_of(4)).then(|| format!("req-{}", id % 8)),
        message: message.into(),
        fields: if id.is_multiple_of(5) {
            serde_json::json!({"gpu": id % 2})
                .as_object()
                .unwrap()
                .clone()
        } else {
            Default::default()
        },
        invalid_utf8: id == 7,
    }
}

fn sample() -> Vec<LogRecord> {
    (1..=20_000u64)
        .map(|id| {
            let runner = if id.is_multiple_of(2) {
                "r-even"
            } else {
                "r-odd"
            };
            record(id, runner, id / 2, &format!("step {id} loss {}", id % 97))
        })
        .collect()
}

fn read_everything(part: &Part) -> Vec<LogRecord> {
    let mut records: Vec<LogRecord> = (0..part.footer.blocks.len())
        .flat_map(|block| part.read_block(block).unwrap())
        .collect();
    records.sort_by_key(|r| r.position);
    records
}

#[test]
fn a_part_gives_back_exactly_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let records = sample();
    let (path, footer) = write_part(dir.path(), "p1", &partition(), &records).unwrap();
    assert!(
        !dir.path().join("p1.tmp").exists(),
        "the temporary file was renamed"
    );
    let part = Part::open(&path).unwrap();
    assert_eq!(part.footer, footer);
    assert_eq!(read_everything(&part), records);
    assert_eq!(
        (footer.min_id, footer.max_id, footer.records),
        (1, 20_000, 20_000)
    );
    assert_eq!(footer.streams.len(), 2);
    // 10,000 records a stream: the fewest blocks (2, of at most
    // BLOCK_MAX_RECORDS), evenly filled, none left small.
    const { assert!(10_000 > BLOCK_MAX_RECORDS && 10_000 <= 2 * BLOCK_MAX_RECORDS) };
    let counts: Vec<u32> = footer.blocks.iter().map(|block| block.count).collect();
    assert_eq!(counts, [5_000; 4]);
    // Each block holds one stream, in time order.
    for block in 0..footer.blocks.len() {
        let records = part.read_block(block).unwrap();
        assert!(records
            .windows(2)
            .all(|w| w[0].ts <= w[1].ts && w[0].runner == w[1].runner));
    }
}

#[test]
fn the_footer_indexes_requests_words_levels_and_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_part(dir.path(), "p1", &partition(), &sample()).unwrap();
    let part = Part::open(&path).unwrap();
    let footer = &part.footer;

    let blocks = footer.request_blocks("req-4");
    assert!(!blocks.is_empty());
    for (block, meta) in footer.blocks.iter().enumerate() {
        let holds = part
            .read_block(block)
            .unwrap()
            .iter()
            .any(|r| r.request_id.as_deref() == Some("req-4"));
        assert_eq!(holds, blocks.contains(&(block as u32)), "block {block}");
        assert!(meta.words.may_contain("loss"));
        assert_eq!(
            meta.levels & (1 << Level::Error as u8) != 0,
            part.read_block(block)
                .unwrap()
                .iter()
                .any(|r| r.level == Level::Error)
        );
    }
    assert!(footer.request_blocks("req-404").is_empty());
    let false_positives: usize = (0..100)
        .map(|n| {
            let word = format!("missingword{n}");
            footer
                .blocks
                .iter()
                .filter(|b| b.words.may_contain(&word))
                .count()
        })
        .sum();
    let checks = 100 * footer.blocks.len();
    assert!(
        false_positives * 10 < checks,
        "{false_positives} false positives in {checks}: the filters rule out most absent words"
    );
    let even = footer
        .streams
        .iter()
        .find(|s| s.labels.runner == "r-even")
        .unwrap();
    assert_eq!(even.seq_ranges, [(1, 10_000)]);
}

#[test]
fn damage_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let (path, footer) = write_part(dir.path(), "p1", &partition(), &sample()).unwrap();

    // A flipped byte inside a block: that block fails, the part still opens.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let target = footer.blocks[1].offset + 10;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, target).unwrap();
    file.write_all_at(&[byte[0] ^ 0xff], target).unwrap();
    let part = Part::open(&path).unwrap();
    assert!(part.read_block(0).is_ok());
    assert!(
        matches!(part.read_block(1), Err(PartError::Corrupt { reason, .. }) if reason.contains("checksum"))
    );

    // A cut-off part does not open.
    let len = file.metadata().unwrap().len();
    file.set_len(len - 5).unwrap();
    assert!(matches!(Part::open(&path), Err(PartError::Corrupt { .. })));
}

#[test]
fn times_keep_every_nanosecond_whatever_unit_the_block_finds() {
    let labels = super::writer::labels_of(&record(1, "r1", 0, "x"));
    let base = 1_763_600_000_000_000_000i128;
    for offsets in [
        // A millisecond clock: stored in milliseconds.
        vec![0, 1_000_000, 1_000_000, 5_000_000, 260_000_000],
        // Nanoseconds, and one step back in time (wraps, still exact).
        vec![0, 7, 1_000_000_003, 999_999_999, 2_000_000_000],
        vec![0],
    ] {
        let records: Vec<LogRecord> = offsets
            .iter()
            .enumerate()
            .map(|(n, offset)| LogRecord {
                ts: Timestamp::from_nanosecond(base + offset).unwrap(),
                ..record(n as u64 + 1, "r1", n as u64, &format!("line {n}"))
            })
            .collect();
        let borrowed: Vec<&LogRecord> = records.iter().collect();
        let (compressed, meta) = super::block::encode(&borrowed, 3);
        let decoded =
            super::block::decode(&compressed, meta.raw_len as usize, "acme", &labels).unwrap();
        assert_eq!(decoded, records);
    }
}

#[test]
fn messages_with_and_without_newlines_come_back_whole() {
    let labels = super::writer::labels_of(&record(1, "r1", 0, "x"));
    for messages in [
        // One per line.
        vec!["first", "", "third line", "ünïcode ✓"],
        // Some hold newlines: kept by their lengths.
        vec![
            "Traceback:\n  File \"x.py\"",
            "",
            "\n",
            "plain",
            "ends with\n",
        ],
    ] {
        let records: Vec<LogRecord> = messages
            .iter()
            .enumerate()
            .map(|(n, message)| record(n as u64 + 1, "r1", n as u64, message))
            .collect();
        let (compressed, meta) = super::block::encode(&records, 3);
        let decoded =
            super::block::decode(&compressed, meta.raw_len as usize, "acme", &labels).unwrap();
        assert_eq!(decoded, records);
        assert!(meta.words.may_contain("third") || messages.len() == 5);
        assert!(meta.words.may_contain("traceback") || messages.len() == 4);
        assert_eq!((meta.min_id, meta.max_id), (1, messages.len() as u64));
        assert_eq!(meta.crc32, crc32fast::hash(&compressed));
    }
}

#[test]
fn a_part_of_another_format_version_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_part(dir.path(), "p1", &partition(), &sample()).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    let len = file.metadata().unwrap().len();
    file.write_all_at(b"02", len - 2).unwrap();
    match Part::open(&path) {
        Err(PartError::Corrupt { reason, .. }) => assert_eq!(
            reason,
            "written in part format TWPART02 by another tailwater version; this one reads TWPART03, TWPART04 and TWPART05"
        ),
        other => panic!("{:?}", other.map(|part| part.footer.records)),
    }
}

/// The records of `fixtures/twpart03.twp`, a part written by the format
/// before block format 2 (`TWPART03`, one zstd frame of postcard columns
/// a block): two streams, microsecond times, requests, fields, a message
/// with newlines, one not valid UTF-8.
fn fixture_records() -> Vec<LogRecord> {
    (1..=60u64)
        .map(|id| {
            let runner = if id % 3 == 0 { "r-b" } else { "r-a" };
            let message = match id {
                5 => "Traceback (most recent call last):\n  File \"h.py\", line 3".to_owned(),
                _ => format!("step {id} loss 0.{} tokens {}", id * 37 % 1000, id * 11),
            };
            LogRecord {
                ts: Timestamp::from_nanosecond(
                    1_763_600_000_000_000_000 + i128::from(id * id) * 1_237_000,
                )
                .unwrap(),
                ..record(id, runner, id, &message)
            }
        })
        .collect()
}

#[test]
fn a_part_written_before_block_format_2_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000000000001.twp");
    std::fs::write(&path, include_bytes!("fixtures/twpart03.twp")).unwrap();
    let part = Part::open(&path).unwrap();
    assert_eq!(part.footer.records, 60);
    let mut expected = fixture_records();
    expected.sort_by_key(|r| r.position);
    assert_eq!(read_everything(&part), expected);
}

/// `fixtures/twpart04.twp`: a part written before block format 3
/// (`TWPART04`, its blocks format 2, settled at level 16) by
/// `tailwater-bench size --lines 60 --keep` at `7822afe` (the part of app
/// `llama-3-8b-vllm`); `fixtures/twpart04.jsonl`: its records as the
/// benchmark wrote them.
#[test]
fn a_part_written_before_block_format_3_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("000000000006.twp");
    std::fs::write(&path, include_bytes!("fixtures/twpart04.twp")).unwrap();
    let part = Part::open(&path).unwrap();
    let key = |runner: &str, ts: i64, request: &str, message: &str| {
        (
            runner.to_owned(),
            ts,
            request.to_owned(),
            message.to_owned(),
        )
    };
    let mut read: Vec<_> = read_everything(&part)
        .iter()
        .map(|record| {
            assert_eq!(record.app, "llama-3-8b-vllm");
            key(
                &record.runner,
                tailwater_model::time::timestamp_ns(record.ts),
                record.request_id.as_deref().unwrap_or(""),
                &record.message,
            )
        })
        .collect();
    let mut written: Vec<_> = include_str!("fixtures/twpart04.jsonl")
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |name: &str| line[name].as_str().unwrap().to_owned();
            key(
                &text("runner"),
                line["ts"].as_i64().unwrap(),
                &text("request_id"),
                &text("message"),
            )
        })
        .collect();
    read.sort();
    written.sort();
    assert_eq!(written.len(), 21);
    assert_eq!(read, written);
}
