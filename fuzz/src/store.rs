//! Targets of the store's decoders of its own files, as a crash, a full
//! disk or a flipped byte leaves them: WAL segments and frames, part
//! footers and blocks.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use tailwater_model::words::is_word_byte;
use tailwater_model::{Direction, Filter, LogRecord, Phrase, Query};
use tailwater_store::part::block::DecodedBlock;
use tailwater_store::part::layout::{
    join_lines, join_numbers, lines_holding, split_numbers, BlockCompressor,
};
use tailwater_store::part::reader::Part;
use tailwater_store::part::{StreamLabels, MAGIC as PART_MAGIC};
use tailwater_store::{Store, StoreOptions};

/// The WAL's format, as `crates/store/src/wal.rs` documents it.
pub const WAL_MAGIC: &[u8; 8] = b"TWLOG002";
/// The segment number of the file the WAL targets write.
pub const WAL_SEGMENT: u64 = 1;
/// The WAL file the targets write: segment [`WAL_SEGMENT`].
const WAL_FILE: &str = "wal/000000000001.log";

/// A WAL segment: raw bytes (mode bit 0 clear), or one frame per part with
/// a valid checksum (set), in the first format without magic or segment
/// number when bit 1 is set too. The store opens over it (recovery,
/// `decode_batch`, replay into the memtable) and every record reads back;
/// from raw bytes, reopening the recovered store shows the same records.
pub fn wal(data: &[u8]) {
    wal_records(data);
}

/// [`wal`], returning how many records the store recovered: the replay
/// test checks that the seeds' frames reach the decoder, so a change of
/// the log's format cannot leave this target testing only the checksum.
pub fn wal_records(data: &[u8]) -> usize {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let bytes = match (mode & 1 == 1, mode & 2 == 2) {
        (false, _) => rest.to_vec(),
        (true, false) => wal_frames(&crate::split(rest)),
        (true, true) => wal_v1_frames(&crate::split(rest)),
    };
    let dir = crate::scratch();
    let path = dir.path().join(WAL_FILE);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    // From raw bytes, frames a checksum passed are ones the store wrote,
    // so every read path must agree on them, and recovery is done once:
    // what it kept stays. Framed payloads may hold what the store never
    // writes (a record id 0, ids out of order): they must only not crash.
    let strict = mode & 1 == 0;
    let first = open_and_read(dir.path(), strict);
    if strict {
        let second = open_and_read(dir.path(), strict);
        assert_eq!(
            first, second,
            "a recovered store reopens with the same records"
        );
    }
    first.iter().map(|(_, records)| records.len()).sum()
}

/// Frames of the current format around `payloads`, behind the magic.
pub fn wal_frames(payloads: &[&[u8]]) -> Vec<u8> {
    let mut bytes = WAL_MAGIC.to_vec();
    let segment = WAL_SEGMENT.to_le_bytes();
    for payload in payloads {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&segment);
        crc.update(payload);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc.finalize().to_le_bytes());
        bytes.extend_from_slice(&segment);
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// Frames of the first format: `[len][crc32 of the payload][payload]`.
fn wal_v1_frames(payloads: &[&[u8]]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for payload in payloads {
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// A part file: raw bytes (mode bit 0 clear), or a data region and a
/// footer (postcard) closed by a valid compressed footer and trailer
/// (set). Opened on its own, each block decoded; then as a store's part,
/// read through queries.
pub fn part(data: &[u8]) {
    part_records(data);
}

/// [`part`], returning how many records the store read from the part (see
/// [`wal_records`]).
pub fn part_records(data: &[u8]) -> usize {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let bytes = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let parts = crate::split(rest);
        part_file(parts[0], parts.get(1).copied().unwrap_or_default())
    };
    let dir = crate::scratch();
    let path = dir.path().join("parts/fuzz/000000000001.twp");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, bytes).unwrap();
    if let Ok(part) = Part::open(&path) {
        for index in 0..part.footer.blocks.len() {
            if let Ok(block) = part.open_block(index) {
                for position in 0..block.len() {
                    let _ = block.record(position);
                }
            }
            let _ = part.read_block(index);
        }
    }
    // A footer read back with its checksum passing is one the store wrote:
    // raw bytes are held to agreeing read paths, crafted footers only to
    // not crashing.
    let read = open_and_read(dir.path(), mode & 1 == 0);
    read.iter().map(|(_, records)| records.len()).sum()
}

/// A part file of `blocks` then `footer` (postcard, compressed here).
pub fn part_file(blocks: &[u8], footer: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(footer, 1).expect("zstd compresses");
    let mut bytes = blocks.to_vec();
    bytes.extend_from_slice(&compressed);
    bytes.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&compressed).to_le_bytes());
    bytes.extend_from_slice(PART_MAGIC);
    bytes
}

/// One block: raw compressed bytes with a decompressed size from the
/// input (mode bit 0 clear), or format 1 columns (postcard) compressed here
/// (bit 0 set), or format 2 sections (numbers, messages, fields) each
/// compressed here (bits 0 and 1 set).
/// Decoded into records.
pub fn block(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let labels = StreamLabels {
        app: "app".into(),
        version: "v1".into(),
        runner: "r1".into(),
        boot: "b1".into(),
        source: Default::default(),
    };
    let (compressed, raw_len) = if mode & 3 == 3 {
        // Block format 2: numbers, messages and fields, each compressed
        // here, behind the format's header.
        let sections = crate::split(rest);
        let section = |index: usize| sections.get(index).copied().unwrap_or_default();
        let mut compressor = BlockCompressor::new(1).expect("zstd level 1");
        let (block, raw_len) = compressor.block([section(0), section(1), section(2)]);
        (block, raw_len as usize)
    } else if mode & 1 == 0 {
        let Some((len, compressed)) = rest.split_first_chunk::<2>() else {
            return;
        };
        (
            compressed.to_vec(),
            usize::from(u16::from_le_bytes(*len)) * 16,
        )
    } else {
        (
            zstd::bulk::compress(rest, 1).expect("zstd compresses"),
            rest.len(),
        )
    };
    if let Ok(block) = DecodedBlock::new(&compressed, raw_len, "tenant", &labels) {
        for index in 0..block.len() {
            let _ = (block.ts(index), block.id(index), block.message(index));
            if let Ok(record) = block.record(index) {
                assert_eq!(record.message, block.message(index));
            }
        }
    }
}

/// Block format 3's messages (settled blocks), as its reader joins them:
/// any templates and digits (the input's two parts) join within their
/// bound or are refused, any text (the whole input) split from its
/// numbers joins back as it was, and the lines found holding a word on
/// the templates are the text's, joined alone as they were.
pub fn block_numbers(data: &[u8]) {
    if let [templates, digits] = crate::split(data)[..] {
        let max = templates.len() + digits.len();
        if let Ok(joined) = join_numbers(templates, digits, max) {
            assert!(joined.len() <= max);
        }
    }
    let (templates, both) = split_numbers(data);
    // The lines holding a word without digits (the input's first run of
    // ASCII letters), found on the templates, are those of the text; joined
    // alone, they are the text's lines, the others left empty.
    let word: Vec<u8> = data
        .split(|byte| !byte.is_ascii_alphabetic())
        .find(|run| !run.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let wanted = (!word.is_empty()).then(|| lines_holding(&templates, &word));
    if let Some(wanted) = &wanted {
        let lines: Vec<&[u8]> = data.split(|&byte| byte == b'\n').collect();
        let holding: Vec<usize> = (0..lines.len())
            .filter(|&line| holds_word(lines[line], &word))
            .collect();
        let found: Vec<usize> = wanted.iter().map(|(line, _)| *line).collect();
        assert_eq!(found, holding);
    }
    for digits in both {
        assert_eq!(
            join_numbers(&templates, &digits, data.len()).as_deref(),
            Ok(data)
        );
        if let Some(wanted) = &wanted {
            let expected: Vec<&[u8]> = data
                .split(|&byte| byte == b'\n')
                .enumerate()
                .map(|(line, text)| {
                    if wanted.iter().any(|(held, _)| *held == line) {
                        text
                    } else {
                        &[]
                    }
                })
                .collect();
            assert_eq!(
                join_lines(&templates, &digits, data.len(), Some(wanted)),
                Ok(expected.join(&b'\n'))
            );
        }
    }
}

/// Whether `line` holds `word` (lowercase) whole, ASCII case ignored.
fn holds_word(line: &[u8], word: &[u8]) -> bool {
    let line = line.to_ascii_lowercase();
    (0..line.len().saturating_sub(word.len() - 1)).any(|at| {
        line[at..].starts_with(word)
            && (at == 0 || !is_word_byte(line[at - 1]))
            && line
                .get(at + word.len())
                .is_none_or(|&byte| !is_word_byte(byte))
    })
}

/// Opens a store over `dir` and reads every tenant's records, forward in
/// pages, backward, in id order, by word and by request; the records as
/// read forward, by tenant. Nothing when the store does not open. When
/// `strict`, the read paths must agree.
fn open_and_read(dir: &Path, strict: bool) -> Vec<(String, Vec<LogRecord>)> {
    // No scan limit: a damaged part's footer may claim any number of
    // records, and a count refused for it (as a server would refuse it)
    // could not be held to what paging reads.
    let options = StoreOptions {
        count_scan_limit: u64::MAX,
        ..StoreOptions::default()
    };
    let Ok(store) = Store::open(dir, options) else {
        return Vec::new();
    };
    let tenants: BTreeSet<String> = store.stats().into_iter().map(|app| app.tenant).collect();
    let mut all = Vec::new();
    for tenant in tenants {
        let forward = pages(&store, &tenant, Filter::default(), Direction::Forward);
        let backward = pages(&store, &tenant, Filter::default(), Direction::Backward);
        let after = store.read_after(&tenant, &Filter::default(), 0, 100_000);
        let counted = store
            .count(&tenant, &Filter::default(), None)
            .expect("a store counts");
        // A block whose bytes pass their checksum but whose records do not
        // all build (never written so by the store) is skipped by a page
        // and counted by what it holds; else a count is what paging reads.
        let intact = store.damaged_parts(&tenant).is_empty();
        let exported = export(&store, &tenant);
        // An export writes from borrowed rows what paging builds (a block
        // that passes its checksum but whose fields do not all parse as a
        // map, never written so by the store, may be written by one and
        // skipped by the other).
        if strict && intact {
            assert_eq!(
                exported.len(),
                forward.len(),
                "an export reads what paging reads"
            );
            for (line, record) in exported.iter().zip(&forward) {
                let mut record = serde_json::to_value(record).expect("a record is json");
                record["id"] = serde_json::Value::from("id");
                assert_eq!(line, &record, "an export writes the record paging builds");
            }
        }
        if strict {
            assert!(
                counted.total() as usize == forward.len()
                    || (!intact && counted.total() as usize > forward.len()),
                "a count is what paging reads"
            );
            assert_eq!(
                forward.len(),
                backward.len(),
                "both directions read the same records"
            );
            assert_eq!(
                after.len(),
                forward.len(),
                "id order reads the same records"
            );
        }
        for record in forward.iter().take(4) {
            if let Some(word) = tailwater_model::words::words(&record.message).next() {
                let filter = Filter {
                    text: Some(Phrase::new(word)),
                    ..Filter::default()
                };
                let counted = store.count(&tenant, &filter, None).expect("a store counts");
                let found = pages(&store, &tenant, filter, Direction::Forward);
                assert!(
                    !strict || found.iter().any(|r| r.id == record.id),
                    "a record is found by its words"
                );
                assert!(
                    !strict
                        || counted.total() as usize == found.len()
                        || (!intact && counted.total() as usize > found.len()),
                    "a word's count is what paging finds"
                );
            }
            if let Some(request) = &record.request_id {
                let _ = store.request(&tenant, request);
            }
        }
        all.push((tenant, forward));
    }
    all
}

/// Every record of `tenant`, forward, as an export writes them
/// (`Store::scan`, `RecordRef::write_json`), read back as JSON.
fn export(store: &Store, tenant: &str) -> Vec<serde_json::Value> {
    let mut query = Query {
        filter: Filter::default(),
        direction: Direction::Forward,
        limit: 7,
        cursor: None,
    };
    let mut lines = Vec::new();
    for _ in 0..10_000 {
        let mut text = Vec::new();
        let page = store
            .scan(tenant, &query, |row| {
                row.write_json("id", &mut text)?;
                text.push(b'\n');
                Ok(())
            })
            .expect("a store scans");
        for line in text
            .split(|byte| *byte == b'\n')
            .filter(|line| !line.is_empty())
        {
            lines.push(serde_json::from_slice(line).expect("an export writes json lines"));
        }
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    lines
}

/// Every record matching `filter`, a small page at a time.
fn pages(store: &Store, tenant: &str, filter: Filter, direction: Direction) -> Vec<LogRecord> {
    let mut query = Query {
        filter,
        direction,
        limit: 7,
        cursor: None,
    };
    let mut records = Vec::new();
    for _ in 0..10_000 {
        let page = store.query(tenant, &query).expect("a store answers");
        records.extend(page.records);
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    records
}
