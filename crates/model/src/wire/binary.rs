//! `POST /v1/ingest` with `Content-Type: application/x-tailwater-batch`:
//! the same [`IngestBatch`] as the JSON body, in a compact binary form the
//! agent sends to servers that take it (JSON stays for everyone else).
//!
//! The body is a version byte ([`BINARY_BATCH_VERSION`]) then the batch in
//! [postcard](https://docs.rs/postcard) (varints, strings as length and
//! UTF-8 bytes): labels once, then each record's sequence number, time in
//! nanoseconds since the epoch, stream and level codes (as parts and spools
//! keep them: [`Stream::code`], [`Level::code`]), request id, message,
//! fields as their compact JSON text (empty for none) and `invalid_utf8`.
//! A message is copied once, with no escapes to undo and no time text to
//! parse.
//!
//! Decoding takes what the JSON body takes and refuses what it refuses:
//! strings must be UTF-8, times within what a [`Timestamp`] holds, and
//! fields are read by the same reader as JSON's ([`FieldsJson`]'s, with
//! its errors), so a batch decodes to the same [`IngestBatch`] either way
//! and every later check (labels, sequence numbers, line limits,
//! redaction) is the pipeline's, whatever the body was.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{IngestBatch, IngestRecord};
use crate::record::{FieldsJson, Level, Source, Stream};

/// The media type of a binary batch body.
pub const BINARY_BATCH_MEDIA_TYPE: &str = "application/x-tailwater-batch";

/// The first byte of a binary batch: its layout. A server refuses a
/// version it does not know (415), and the agent falls back to JSON.
pub const BINARY_BATCH_VERSION: u8 = 1;

/// Records one binary batch may hold: far more than an agent sends (2,000
/// at most), and as many as the smallest JSON records an 8 MiB body
/// (`--max-batch-bytes`' default) holds, so a binary body, whose records
/// may take 8 bytes each, never makes the server hold more records at
/// once than a JSON body can.
pub const MAX_BINARY_BATCH_RECORDS: usize = 100_000;

/// Why a binary body is not a batch; the message is lowercase and says
/// what is wrong, for the server's 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BinaryBatchError(String);

#[derive(Serialize, Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow)]
    app: &'a str,
    version: &'a str,
    runner: &'a str,
    boot: &'a str,
    source: u8,
    records: Vec<WireRecord<'a>>,
}

/// [`WireBatch`] without its records: what decoding reads first.
#[derive(Deserialize)]
struct WireLabels<'a> {
    #[serde(borrow)]
    app: &'a str,
    version: &'a str,
    runner: &'a str,
    boot: &'a str,
    source: u8,
}

#[derive(Serialize, Deserialize)]
struct WireRecord<'a> {
    seq: u64,
    ts_ns: i128,
    stream: u8,
    level: u8,
    #[serde(borrow)]
    request_id: Option<&'a str>,
    message: &'a str,
    fields: &'a str,
    invalid_utf8: bool,
}

/// `batch` as a binary body.
pub fn encode_binary_batch(batch: &IngestBatch) -> Vec<u8> {
    let wire = WireBatch {
        app: &batch.app,
        version: &batch.version,
        runner: &batch.runner,
        boot: &batch.boot,
        source: batch.source.code(),
        records: batch
            .records
            .iter()
            .map(|record| WireRecord {
                seq: record.seq,
                ts_ns: record.ts.as_nanosecond(),
                stream: record.stream.code(),
                level: record.level.code(),
                request_id: record.request_id.as_deref(),
                message: &record.message,
                fields: record.fields.as_str(),
                invalid_utf8: record.invalid_utf8,
            })
            .collect(),
    };
    let text: usize = batch
        .records
        .iter()
        .map(|r| r.message.len() + r.fields.as_str().len() + 24)
        .sum();
    let mut out = Vec::with_capacity(1 + 64 + text);
    out.push(BINARY_BATCH_VERSION);
    postcard::to_extend(&wire, out).expect("a batch encodes into a vector")
}

/// The batch of a binary body, or what is wrong with it.
pub fn decode_binary_batch(body: &[u8]) -> Result<IngestBatch, BinaryBatchError> {
    let error = |what: String| BinaryBatchError(what);
    let (&version, rest) = body
        .split_first()
        .ok_or_else(|| error("the body is empty".into()))?;
    if version != BINARY_BATCH_VERSION {
        return Err(error(format!(
            "unknown binary batch version {version} (this server reads {BINARY_BATCH_VERSION})"
        )));
    }
    let malformed =
        |e: postcard::Error| error(format!("the body is not a batch ({})", postcard_words(&e)));
    // The labels, then the records one by one: their count is checked
    // before anything is allocated for them.
    let (wire, rest): (WireLabels, _) = postcard::take_from_bytes(rest).map_err(malformed)?;
    let (count, mut rest): (u64, _) = postcard::take_from_bytes(rest).map_err(malformed)?;
    if count > MAX_BINARY_BATCH_RECORDS as u64 {
        return Err(error(format!(
            "it holds {count} records, more than the {MAX_BINARY_BATCH_RECORDS} a binary batch may hold: send smaller batches"
        )));
    }
    let source = Source::from_code(wire.source)
        .ok_or_else(|| error(format!("unknown source code {}", wire.source)))?;
    let mut records = Vec::with_capacity((count as usize).min(rest.len()));
    for at in 0..count {
        let (record, after): (WireRecord, _) = postcard::take_from_bytes(rest).map_err(|e| {
            error(format!(
                "record {at}: not a record ({})",
                postcard_words(&e)
            ))
        })?;
        rest = after;
        let at_record = |what: String| error(format!("record {at}: {what}"));
        let ts = Timestamp::from_nanosecond(record.ts_ns).map_err(|_| {
            at_record(format!(
                "time {} ns is outside the times a timestamp holds (years -9999 to 9999)",
                record.ts_ns
            ))
        })?;
        let stream = Stream::from_code(record.stream)
            .ok_or_else(|| at_record(format!("unknown stream code {}", record.stream)))?;
        let level = Level::from_code(record.level)
            .ok_or_else(|| at_record(format!("unknown level code {}", record.level)))?;
        let fields = if record.fields.is_empty() {
            FieldsJson::new()
        } else {
            serde_json::from_str::<FieldsJson>(record.fields)
                .map_err(|e| at_record(format!("fields: {e}")))?
        };
        records.push(IngestRecord {
            seq: record.seq,
            ts,
            stream,
            level,
            request_id: record.request_id.map(str::to_owned),
            message: record.message.to_owned(),
            fields,
            invalid_utf8: record.invalid_utf8,
        });
    }
    if !rest.is_empty() {
        return Err(error(format!("{} bytes follow the batch", rest.len())));
    }
    Ok(IngestBatch {
        app: wire.app.to_owned(),
        version: wire.version.to_owned(),
        runner: wire.runner.to_owned(),
        boot: wire.boot.to_owned(),
        source,
        records,
    })
}

/// postcard's error in a few lowercase words.
fn postcard_words(error: &postcard::Error) -> String {
    use postcard::Error;
    match error {
        Error::DeserializeUnexpectedEnd => "it ends too soon".into(),
        Error::DeserializeBadUtf8 => "a string is not utf-8".into(),
        Error::DeserializeBadVarint => "a number is malformed".into(),
        Error::DeserializeBadBool => "a flag is neither 0 nor 1".into(),
        Error::DeserializeBadOption => "an optional value is malformed".into(),
        other => other.to_string().to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields_of;

    fn batch() -> IngestBatch {
        let fields = fields_of(serde_json::json!({"step": 3, "loss": 0.25, "tags": ["a"]}));
        IngestBatch {
            app: "sdxl".into(),
            version: "v1".into(),
            runner: "r-1".into(),
            boot: "b-1".into(),
            source: Source::Gateway,
            records: vec![
                IngestRecord {
                    seq: 0,
                    ts: "2026-12-07T17:00:00.123456789Z".parse().unwrap(),
                    stream: Stream::Stderr,
                    level: Level::Warn,
                    request_id: Some("req-1".into()),
                    message: "vram \"91%\"\nnext ✓".into(),
                    fields: FieldsJson::from_map(&fields),
                    invalid_utf8: true,
                },
                IngestRecord::system(
                    1,
                    "1970-01-01T00:00:00Z".parse().unwrap(),
                    Level::Info,
                    "start".into(),
                    Default::default(),
                ),
            ],
        }
    }

    #[test]
    fn a_batch_decodes_to_what_was_encoded_and_to_what_its_json_decodes_to() {
        let batch = batch();
        let body = encode_binary_batch(&batch);
        assert_eq!(body[0], BINARY_BATCH_VERSION);
        assert_eq!(decode_binary_batch(&body).unwrap(), batch);
        let json: IngestBatch =
            serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
        assert_eq!(decode_binary_batch(&body).unwrap(), json);
    }

    #[test]
    fn bad_bodies_are_refused_with_what_is_wrong() {
        let body = encode_binary_batch(&batch());
        let refused = |body: &[u8]| decode_binary_batch(body).unwrap_err().to_string();
        assert_eq!(refused(b""), "the body is empty");
        assert!(refused(&[9]).starts_with("unknown binary batch version 9"));
        assert!(refused(&body[..body.len() - 3]).contains("it ends too soon"));
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(refused(&longer), "1 bytes follow the batch");
        for error in [refused(b"\x01"), refused(&longer)] {
            assert_eq!(error, error.to_lowercase());
        }
    }

    #[test]
    fn a_count_past_the_limit_is_refused_before_anything_is_read() {
        let mut empty = batch();
        empty.records.clear();
        let mut body = encode_binary_batch(&empty);
        assert_eq!(body.pop(), Some(0), "the count is last");
        let count = MAX_BINARY_BATCH_RECORDS as u64 + 1;
        body.extend(postcard::to_allocvec(&count).unwrap());
        let refused = decode_binary_batch(&body).unwrap_err().to_string();
        assert_eq!(
            refused,
            format!("it holds {count} records, more than the {MAX_BINARY_BATCH_RECORDS} a binary batch may hold: send smaller batches")
        );
        // At the limit, the count is taken, and the records must be there.
        body.truncate(body.len() - 3);
        body.extend(postcard::to_allocvec(&(count - 1)).unwrap());
        let refused = decode_binary_batch(&body).unwrap_err().to_string();
        assert_eq!(refused, "record 0: not a record (it ends too soon)");
    }

    #[test]
    fn fields_are_held_to_what_json_takes() {
        let mut batch = batch();
        batch.records[0].fields = FieldsJson::new();
        let body = encode_binary_batch(&batch);
        // The same batch with its fields' text swapped for something that
        // is no object, byte for byte where `{}`-free text would be.
        let wire = |fields: &str| {
            let mut out = vec![BINARY_BATCH_VERSION];
            let rest = postcard::from_bytes::<WireBatch>(&body[1..]).unwrap();
            let mut rest = rest;
            rest.records[0].fields = fields;
            out.extend(postcard::to_allocvec(&rest).unwrap());
            out
        };
        let refused = decode_binary_batch(&wire("[1]")).unwrap_err().to_string();
        assert!(refused.starts_with("record 0: fields: invalid type: sequence, expected a map"));
        let refused = decode_binary_batch(&wire("{\"a\":\"\\ud800\"}"))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("hex escape"), "{refused}");
        let spaced = decode_binary_batch(&wire("{ \"a\" : 1 }")).unwrap();
        assert_eq!(spaced.records[0].fields.as_str(), "{\"a\":1}");
        let empty = decode_binary_batch(&wire("{}")).unwrap();
        assert!(empty.records[0].fields.is_empty());
    }
}
