//! Fuzz targets for every decoder of bytes that come from outside the
//! process: what a client sends (the ingest body, query parameters,
//! filters and regexes, cursors, other protocols' requests), what other
//! nodes publish or send (the cluster's stream and shared registry, a
//! peer's pages of records for a repair), what a worker prints (the line
//! parser, the grouping of a traceback's lines),
//! filters and regexes, cursors, other protocols' requests, a drain's
//! settings and the signature receivers check), what a worker
//! prints (the line parser, the grouping of a traceback's lines),
//! and what is read back from disk after a crash or a flipped byte (WAL
//! frames, part footers and blocks, the agent's spool segments).
//!
//! Each target is a plain function of the input bytes, so the same code
//! runs under libFuzzer (`fuzz_targets/`, through `cargo fuzz`) and in
//! `cargo test --no-default-features`, which replays `seeds/` and
//! `regressions/` (every input that once crashed) without libFuzzer.
//! Beyond "no panic", targets assert what users rely on: round trips of
//! what is encoded, the words a filter requires being in what it matches,
//! and a store reopened after recovery holding what it held.
//!
//! Inputs with several parts (a regex and a message; a WAL's frames) are
//! split at [`SPLIT`]; a first mode byte chooses between raw bytes and
//! bytes framed with valid checksums, so the fuzzer reaches the decoders
//! behind a checksum as well as the checks themselves.

mod cluster;
mod drains;
mod ingest;
mod logql;
pub mod model;
mod multiline;
mod protocols;
mod spool;
mod store;

pub use cluster::{
    cluster_heartbeat, cluster_message, cluster_repair_page, cluster_stream_page, intake_subject,
    registry_entry,
};
pub use drains::drain;
pub use ingest::{ingest_binary, ingest_body};
pub use logql::logql;
pub use model::{cursor, filter_match, logs_params, parse_line, requests_params};
pub use multiline::multiline;
pub use protocols::{es_bulk, json_docs, loki, otlp, otlp_records};
pub use spool::{spool, spool_records};
pub use store::{block, block_numbers, part, part_records, wal, wal_records};

/// A target: a function of one input.
pub type Target = fn(&[u8]);

/// The targets, by name: what the replay test reads.
pub const TARGETS: [(&str, Target); 25] = [
    ("ingest_body", ingest_body),
    ("parse_line", parse_line),
    ("logs_params", logs_params),
    ("requests_params", requests_params),
    ("filter_match", filter_match),
    ("cursor", cursor),
    ("wal", wal),
    ("part", part),
    ("block", block),
    ("spool", spool),
    ("multiline", multiline),
    ("otlp", otlp),
    ("loki", loki),
    ("cluster_message", cluster_message),
    ("cluster_heartbeat", cluster_heartbeat),
    ("drain", drain),
    ("es_bulk", es_bulk),
    ("json_docs", json_docs),
    ("logql", logql),
    ("registry_entry", registry_entry),
    ("intake_subject", intake_subject),
    ("ingest_binary", ingest_binary),
    ("cluster_repair_page", cluster_repair_page),
    ("cluster_stream_page", cluster_stream_page),
    ("block_numbers", block_numbers),
];

/// Separates the parts of one input.
pub const SPLIT: &[u8] = b"\xff\x00\xfe";

/// The parts of `data` between [`SPLIT`]s.
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SPLIT.len()).position(|w| w == SPLIT) {
        parts.push(&rest[..at]);
        rest = &rest[at + SPLIT.len()..];
    }
    parts.push(rest);
    parts
}

/// `parts` joined by [`SPLIT`], behind a `mode` byte: a seed.
pub fn join(mode: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut data = vec![mode];
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            data.extend_from_slice(SPLIT);
        }
        data.extend_from_slice(part);
    }
    data
}

/// A fresh directory for one input, in memory when the machine has
/// `/dev/shm`: the stores and spools fsync, and a disk would make each
/// run milliseconds slower.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tailwater-fuzz")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("a temporary directory")
}
