//! What travels through the cluster's streams (distributed mode): one
//! batch with what a node needs to store it as the accepting node would
//! have: its tenant and the app's retention. The one home of the message
//! format, of a batch's partition, of its `Nats-Msg-Id` and of the intake
//! subjects agents publish on; pure (no NATS here), so the server's
//! publisher and materializer, the agent's NATS transport and the fuzz
//! target share it.
//!
//! A message is a format byte ([`FORMAT`]) then a zstd frame of the
//! envelope's JSON: JSON because a record's fields travel as the JSON text
//! they came as ([`crate::FieldsJson`]), zstd because log lines compress
//! several times over, and a stream's bytes are paid three times (R3). A
//! decoder refuses anything that would inflate past [`MAX_DECODED_BYTES`].
//!
//! An agent publishing straight to NATS (see docs/agents-on-nats.md) puts
//! its batches on [`intake_subject`]: tenant, app and runner one token
//! each, so a NATS permission on the subject holds a credential to them.

use std::time::Duration;

use crate::wire::IngestBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first byte of every message: the format's version.
pub const FORMAT: u8 = 1;
/// The most bytes a message may inflate to (a batch is at most
/// `--max-batch-bytes`, 8 MiB by default, before the pipeline's reports).
pub const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;
/// The most records one message holds (a batch with more is cut into
/// several, as for bytes): a node numbers a message's records by its stream
/// sequence and their place in it, in 16 bits, and leaves the upper half
/// of that room to its own notices between two messages.
pub const MESSAGE_RECORDS: usize = 1 << 15;
/// zstd's level for messages: fast, and most of the gain.
const ZSTD_LEVEL: i32 = 1;

/// One accepted batch of one tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub tenant: String,
    /// Records older than this (the app's retention when accepted) are
    /// refused by the store that materializes them.
    pub retention_secs: u64,
    pub batch: IngestBatch,
}

impl Envelope {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }
}

/// Why a message could not be read; it is counted and left behind.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("unknown message format {0} (this node reads format {FORMAT}): upgrade it")]
    Format(u8),
    #[error("message does not decompress within {MAX_DECODED_BYTES} bytes: {0}")]
    Zstd(std::io::Error),
    #[error("message is not a batch: {0}")]
    Json(serde_json::Error),
}

/// `envelope` as one message.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let json = serde_json::to_vec(envelope).expect("a batch serializes to JSON");
    let mut message = vec![FORMAT];
    let compressed = zstd::bulk::compress(&json, ZSTD_LEVEL).expect("zstd compresses in memory");
    message.extend_from_slice(&compressed);
    message
}

/// `envelope` as messages of at most `max_bytes` and [`MESSAGE_RECORDS`]
/// each: cut by count, then halved by records until each fits (a single record that does not fit is sent alone, for
/// the stream to refuse). Deterministic, so a batch sent again is cut the
/// same way and each part keeps its `Nats-Msg-Id`.
pub fn encode_within(envelope: &Envelope, max_bytes: usize) -> Vec<Vec<u8>> {
    let records = envelope.batch.records.len();
    if records > MESSAGE_RECORDS {
        let mut messages = Vec::new();
        for start in (0..records).step_by(MESSAGE_RECORDS) {
            let end = (start + MESSAGE_RECORDS).min(records);
            messages.extend(encode_within(&part_of(envelope, start..end), max_bytes));
        }
        return messages;
    }
    let message = encode(envelope);
    if message.len() <= max_bytes || records <= 1 {
        return vec![message];
    }
    let mut messages = encode_within(&part_of(envelope, 0..records / 2), max_bytes);
    messages.extend(encode_within(
        &part_of(envelope, records / 2..records),
        max_bytes,
    ));
    messages
}

/// The envelope with only `range` of its records.
fn part_of(envelope: &Envelope, range: std::ops::Range<usize>) -> Envelope {
    Envelope {
        tenant: envelope.tenant.clone(),
        retention_secs: envelope.retention_secs,
        batch: IngestBatch {
            records: envelope.batch.records[range].to_vec(),
            ..envelope.batch.clone()
        },
    }
}

/// The envelope in `message`.
pub fn decode(message: &[u8]) -> Result<Envelope, DecodeError> {
    let (&format, compressed) = message.split_first().ok_or(DecodeError::Empty)?;
    if format != FORMAT {
        return Err(DecodeError::Format(format));
    }
    let json = zstd::bulk::decompress(compressed, MAX_DECODED_BYTES).map_err(DecodeError::Zstd)?;
    serde_json::from_slice(&json).map_err(DecodeError::Json)
}

/// The partition of a runner's records, of `partitions`: the first eight
/// bytes of SHA-256 over tenant, app and runner (each ended by a 0 byte),
/// modulo the count. Stable across versions and machines: changing it
/// moves runners between partitions.
pub fn partition_of(tenant: &str, app: &str, runner: &str, partitions: u32) -> u32 {
    let mut hash = Sha256::new();
    for part in [tenant, app, runner] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let head = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (head % u64::from(partitions.max(1))) as u32
}

/// The `Nats-Msg-Id` of a batch as its sender sent it (before the
/// pipeline's reports are added): its tenant, labels, first and last
/// sequence numbers and count, hashed. A batch sent again (its answer
/// lost) has the same id, and JetStream stores it once within the
/// stream's duplicate window; past it, the materializing store's own
/// deduplication by `(tenant, app, runner, boot, seq)` does.
pub fn batch_id(tenant: &str, batch: &IngestBatch) -> String {
    let mut hash = Sha256::new();
    for part in [tenant, &batch.app, &batch.runner, &batch.boot] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let first = batch.records.first().map_or(0, |r| r.seq);
    let last = batch.records.last().map_or(0, |r| r.seq);
    for number in [first, last, batch.records.len() as u64] {
        hash.update(number.to_be_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

/// The id of the `index`th of a batch's messages ([`encode_within`]).
pub fn message_id(batch_id: &str, index: usize) -> String {
    format!("{batch_id}-{index}")
}

/// The subjects agents publish their batches on:
/// `tailwater.intake.<tenant>.<app>.<runner>`.
pub const INTAKE_PREFIX: &str = "tailwater.intake";

/// The intake subject of a runner: tenant, app and runner each one token
/// ([`subject_token`]).
pub fn intake_subject(tenant: &str, app: &str, runner: &str) -> String {
    format!(
        "{INTAKE_PREFIX}.{}.{}.{}",
        subject_token(tenant),
        subject_token(app),
        subject_token(runner)
    )
}

/// The tenant, app and runner an intake subject names; `None` for any
/// other subject (or a token that is not an encoding [`subject_token`]
/// makes).
pub fn parse_intake_subject(subject: &str) -> Option<(String, String, String)> {
    let rest = subject.strip_prefix(INTAKE_PREFIX)?.strip_prefix('.')?;
    let mut tokens = rest.split('.');
    let (tenant, app, runner) = (tokens.next()?, tokens.next()?, tokens.next()?);
    if tokens.next().is_some() {
        return None;
    }
    Some((token_name(tenant)?, token_name(app)?, token_name(runner)?))
}

/// A name as one NATS subject token: bytes outside `[A-Za-z0-9_-]` as
/// `%XX` (upper-case hex), so no name adds a token (`.`), a wildcard (`*`,
/// `>`) or a space, and two names never share a token. Empty as `%`.
pub fn subject_token(name: &str) -> String {
    if name.is_empty() {
        return "%".to_owned();
    }
    let mut token = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            token.push(byte as char);
        } else {
            token.push_str(&format!("%{byte:02X}"));
        }
    }
    token
}

/// The name a token made by [`subject_token`] stands for.
fn token_name(token: &str) -> Option<String> {
    if token == "%" {
        return Some(String::new());
    }
    if token.is_empty() {
        return None; // the empty name is `%`: one name, one token
    }
    let bytes = token.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(at + 1..at + 3)?).ok()?;
                // Two upper-case hex digits only (`from_str_radix` would
                // also take a sign): one name, one token.
                if !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
                {
                    return None;
                }
                let byte = u8::from_str_radix(hex, 16).ok()?;
                if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
                    return None; // never encoded: one name, one token
                }
                name.push(byte);
                at += 3;
            }
            byte if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' => {
                name.push(byte);
                at += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IngestRecord;
    use crate::{Level, Stream};

    fn envelope(lines: usize) -> Envelope {
        Envelope {
            tenant: "default".into(),
            retention_secs: 86_400,
            batch: IngestBatch {
                app: "api".into(),
                version: "v1".into(),
                runner: "r1".into(),
                boot: "b1".into(),
                source: Default::default(),
                records: (0..lines as u64)
                    .map(|seq| IngestRecord {
                        seq,
                        ts: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
                        stream: Stream::Stdout,
                        level: Level::Info,
                        request_id: None,
                        message: format!("line {seq} {}", "x".repeat(seq as usize % 97)),
                        fields: Default::default(),
                        invalid_utf8: false,
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn a_message_decodes_to_what_was_encoded() {
        let envelope = envelope(50);
        assert_eq!(decode(&encode(&envelope)).unwrap(), envelope);
    }

    #[test]
    fn a_batch_too_large_for_one_message_is_cut_into_messages_that_fit() {
        let envelope = envelope(2_000);
        let messages = encode_within(&envelope, 2_000);
        assert!(messages.len() > 1);
        let mut records = Vec::new();
        for message in &messages {
            assert!(message.len() <= 2_000, "{}", message.len());
            records.extend(decode(message).unwrap().batch.records);
        }
        assert_eq!(records, envelope.batch.records);
        assert_eq!(encode_within(&envelope, 2_000), messages, "deterministic");
    }

    #[test]
    fn a_batch_of_more_records_than_a_message_numbers_is_cut_by_count() {
        let mut envelope = envelope(0);
        envelope.batch.records = (0..MESSAGE_RECORDS as u64 * 2 + 5)
            .map(|seq| IngestRecord {
                seq,
                ts: jiff::Timestamp::from_second(1_700_000_000).unwrap(),
                stream: Stream::Stdout,
                level: Level::Info,
                request_id: None,
                message: String::new(),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect();
        let messages = encode_within(&envelope, usize::MAX);
        let counts: Vec<usize> = messages
            .iter()
            .map(|message| decode(message).unwrap().batch.records.len())
            .collect();
        assert_eq!(counts, [MESSAGE_RECORDS, MESSAGE_RECORDS, 5]);
    }

    #[test]
    fn foreign_formats_and_bombs_are_refused() {
        assert!(matches!(decode(b""), Err(DecodeError::Empty)));
        assert!(matches!(decode(b"\x02abc"), Err(DecodeError::Format(2))));
        let bomb = zstd::bulk::compress(&vec![b' '; MAX_DECODED_BYTES + 1], 1).unwrap();
        let mut message = vec![FORMAT];
        message.extend(bomb);
        assert!(matches!(decode(&message), Err(DecodeError::Zstd(_))));
    }

    #[test]
    fn partitions_and_ids_are_stable() {
        // Changing either moves runners or breaks deduplication of retries
        // across a rolling upgrade: these numbers are part of the format
        // (worked out apart, with Python's hashlib).
        assert_eq!(partition_of("default", "api", "r1", 16), 8);
        let envelope = envelope(3);
        assert_eq!(
            batch_id("default", &envelope.batch),
            "2a22ca152510bd03c7ed38559220f8b8"
        );
        assert_ne!(
            batch_id("default", &envelope.batch),
            batch_id("other", &envelope.batch)
        );
    }

    #[test]
    fn intake_subjects_hold_each_name_in_one_token() {
        assert_eq!(
            intake_subject("acme", "api", "gpu-7"),
            "tailwater.intake.acme.api.gpu-7"
        );
        let odd = intake_subject("a.b", "*", "gpu 7>%é");
        assert_eq!(odd, "tailwater.intake.a%2Eb.%2A.gpu%207%3E%25%C3%A9");
        assert_eq!(odd.split('.').count(), 5, "{odd}");
        assert_eq!(
            parse_intake_subject(&odd),
            Some(("a.b".into(), "*".into(), "gpu 7>%é".into()))
        );
        assert_eq!(
            parse_intake_subject(&intake_subject("", "api", "r")),
            Some(("".into(), "api".into(), "r".into()))
        );
        for other in [
            "tailwater.batches.3",
            "tailwater.intake.acme.api",
            "tailwater.intake.acme.api.r.extra",
            "tailwater.intakeX.acme.api.r",
            "tailwater.intake.ac%2eme.api.r",
            "tailwater.intake.%61cme.api.r",
            "tailwater.intake.acme.api.%FF",
            "tailwater.intake.acme.api.r*",
            // An empty token is no name (the empty name is `%`), and a
            // sign is no hex digit: found by fuzzing, both stood for a
            // name whose own subject is another.
            "tailwater.intake.ae..igpapu-7",
            "tailwater.intake.acme.api.%+1",
        ] {
            assert_eq!(parse_intake_subject(other), None, "{other}");
        }
    }
}
