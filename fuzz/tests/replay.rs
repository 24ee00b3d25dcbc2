//! Replays every committed input of every target without libFuzzer: the
//! seeds, and `regressions/` (each input that once crashed a target),
//! so a plain `cargo test` keeps them fixed.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn every_target_replays_its_seeds_and_regressions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failed = Vec::new();
    for (name, target) in tailwater_fuzz::TARGETS {
        let mut inputs = 0;
        for folder in ["seeds", "regressions"] {
            let Ok(entries) = fs::read_dir(root.join(folder).join(name)) else {
                continue;
            };
            let mut paths: Vec<_> = entries.map(|entry| entry.unwrap().path()).collect();
            paths.sort();
            for path in paths {
                let data = fs::read(&path).unwrap();
                if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                    failed.push(path.display().to_string());
                }
                inputs += 1;
            }
        }
        assert!(inputs > 0, "target {name} has seeds");
    }
    assert!(
        failed.is_empty(),
        "inputs that crash their target: {failed:#?}"
    );
}

/// The WAL seeds, framed by the target as the store frames its log, are
/// read back whole: the framing in `src/store.rs` still matches the format
/// (the same records as from the segment the store wrote).
#[test]
fn wal_seeds_reach_the_batch_decoder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/wal");
    let recovered = |name: &str| tailwater_fuzz::wal_records(&fs::read(root.join(name)).unwrap());
    let written = recovered("raw");
    assert!(written > 0, "the raw seed holds records");
    assert_eq!(
        recovered("framed"),
        written,
        "records recovered from seed framed"
    );
    assert_eq!(recovered("v1"), written, "records recovered from seed v1");
}

/// The part and spool seeds, framed by the targets, read back as the files
/// the real writers made: the targets' framing matches the formats.
#[test]
fn part_and_spool_seeds_reach_their_decoders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let read = |path: &str| fs::read(root.join(path)).unwrap();
    let written = tailwater_fuzz::part_records(&read("part/raw"));
    assert!(written > 0, "the raw part seed holds records");
    assert_eq!(tailwater_fuzz::part_records(&read("part/framed")), written);
    assert_eq!(
        tailwater_fuzz::part_records(&read("part/twpart03")),
        60,
        "a part of the older format (block format 1) reads whole"
    );
    let spooled = tailwater_fuzz::spool_records(&read("spool/raw"));
    assert!(spooled > 0, "the raw spool seed holds records");
    assert_eq!(
        tailwater_fuzz::spool_records(&read("spool/framed")),
        spooled
    );
}

/// The OTLP seeds decode, in each encoding and compression: the fuzzer
/// starts from requests the mapping reads, not from refusals.
#[test]
fn otlp_seeds_reach_the_mapping() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/otlp");
    for (seed, records) in [("protobuf", 2), ("json", 1), ("protobuf-zstd-by-target", 2)] {
        let data = fs::read(root.join(seed)).unwrap();
        assert_eq!(tailwater_fuzz::otlp_records(&data), records, "{seed}");
    }
}

/// The Loki seeds decode: the fuzzer starts from pushes the mapping reads.
#[test]
fn loki_seeds_reach_the_mapping() {
    use tailwater_server::protocols::loki::{self, Encoding};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/loki");
    let json = fs::read(root.join("json")).unwrap();
    let streams = loki::decode(&json[1..], Encoding::Json, 1 << 20).unwrap();
    assert_eq!(streams[0].entries.len(), 2);
    let raw = fs::read(root.join("protobuf-snappy-by-target")).unwrap();
    let body = snap::raw::Encoder::new().compress_vec(&raw[1..]).unwrap();
    let streams = loki::decode(&body, Encoding::SnappyProtobuf, 1 << 20).unwrap();
    assert_eq!(streams[0].entries.len(), 2);
    assert_eq!(streams[0].labels[2].1, "a \"quoted\" value");
}
