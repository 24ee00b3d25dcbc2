//! The protocol targets: what the edges of other senders (OTLP/HTTP logs)
//! do to a request's bytes before the ingest pipeline.

use tailwater_server::protocols::otlp::{self, Encoding};
use tailwater_server::protocols::{decompress, documents, Undecoded};

/// The most a body may hold once decompressed (the server's is
/// `--max-batch-bytes`): small, so bombs are found quickly.
const LIMIT: usize = 1 << 20;

/// An OTLP logs request. The first byte: bit 0 JSON (else protobuf); bits
/// 1–2 the `Content-Encoding` claimed (none, gzip, zstd), or 3: the rest
/// compressed with zstd here first, so the fuzzer reaches the decoder
/// through a real compressed body. Decoding refuses or maps every record:
/// none is lost, and every record's fields are a JSON object that reads
/// back.
pub fn otlp(data: &[u8]) {
    otlp_records(data);
}

/// [`otlp`], saying how many records the request held (0 when refused).
pub fn otlp_records(data: &[u8]) -> usize {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let encoding = if mode & 1 == 1 {
        Encoding::Json
    } else {
        Encoding::Protobuf
    };
    let compressed;
    let (body, claimed) = match (mode >> 1) & 3 {
        0 => (rest, None),
        1 => (rest, Some("gzip")),
        2 => (rest, Some("zstd")),
        _ => {
            compressed = zstd::encode_all(rest, 1).expect("zstd encodes in memory");
            (&compressed[..], Some("zstd"))
        }
    };
    let body = match decompress(body, claimed, LIMIT) {
        Ok(body) => body,
        Err(Undecoded::TooLarge) => return 0,
        Err(Undecoded::Invalid(message) | Undecoded::Unsupported(message)) => {
            assert!(!message.is_empty());
            return 0;
        }
    };
    assert!(body.len() <= LIMIT, "decompression keeps to its limit");
    let Ok(request) = otlp::decode(&body, encoding) else {
        return 0;
    };
    let sent: usize = request
        .resource_logs
        .iter()
        .flat_map(|resource| &resource.scope_logs)
        .map(|scope| scope.log_records.len())
        .sum();
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let resources = otlp::resources(request, now);
    let mapped: usize = resources.iter().map(|r| r.records.len()).sum();
    assert_eq!(mapped, sent, "every record is mapped");
    for resource in &resources {
        for record in &resource.records {
            let text = record.fields.as_str();
            if !text.is_empty() {
                let again: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(text).expect("fields are a JSON object");
                assert_eq!(tailwater_model::FieldsJson::from_map(&again).as_str(), text);
            }
            let _ = record.fields.to_map();
            // A time past what the store keeps (after 2262) is the client's
            // to send: the store dates it at arrival, counted as retimed.
        }
    }
    mapped
}

/// A Loki push. The first byte: bit 0 JSON (else snappy protobuf); bit 1:
/// the rest is a protobuf `PushRequest` to snappy-compress here first, so
/// the fuzzer reaches the protobuf and label decoders through real snappy.
/// Every entry of every stream is mapped (none lost), each record's fields
/// a JSON object that reads back.
pub fn loki(data: &[u8]) {
    use tailwater_server::protocols::loki::{self, Encoding};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let encoding = if mode & 1 == 1 {
        Encoding::Json
    } else {
        Encoding::SnappyProtobuf
    };
    let compressed;
    let body = if mode & 2 == 2 && encoding == Encoding::SnappyProtobuf {
        compressed = snap::raw::Encoder::new()
            .compress_vec(rest)
            .expect("snappy compresses in memory");
        &compressed[..]
    } else {
        rest
    };
    let Ok(streams) = loki::decode(body, encoding, LIMIT) else {
        return;
    };
    let sent: usize = streams.iter().map(|stream| stream.entries.len()).sum();
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let sources = loki::sources(streams, now);
    let mapped: usize = sources.iter().map(|source| source.records.len()).sum();
    assert_eq!(mapped, sent, "every entry is mapped");
    for record in sources.iter().flat_map(|source| &source.records) {
        let text = record.fields.as_str();
        if !text.is_empty() {
            let _: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).expect("fields are a JSON object");
        }
    }
}

/// An Elasticsearch `_bulk` body. The first byte: bit 0, the request's
/// path names an index (`/logs/_bulk`). Decoding refuses the whole or
/// answers every action (none more than its lines); every document read
/// is mapped, each once, its fields a JSON object that reads back.
pub fn es_bulk(data: &[u8]) {
    use tailwater_server::protocols::es_bulk;
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path_index = (mode & 1 == 1).then_some("logs");
    let items = match es_bulk::decode(body, path_index) {
        Ok(items) => items,
        Err(malformed) => {
            assert!(malformed.kind.ends_with("_exception"));
            assert!(!malformed.reason.is_empty());
            return;
        }
    };
    let lines = body.split(|byte| *byte == b'\n').count();
    assert!(items.len() <= lines, "an action a line at most");
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let mapped: Vec<_> = items
        .into_iter()
        .enumerate()
        .filter_map(|(position, item)| {
            assert!(!item.index.is_empty());
            let document = item.document.ok()?;
            Some((position, documents::document(document, now, item.id)))
        })
        .collect();
    check_sources(mapped);
}

/// A `/v1/ingest/json` body (a JSON array of documents, or NDJSON): every
/// document of one read is mapped, each once, in its source.
pub fn json_docs(data: &[u8]) {
    let Ok(objects) = documents::decode(data) else {
        return;
    };
    let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let mapped = objects
        .into_iter()
        .map(|object| documents::document(object, now, None))
        .enumerate()
        .collect();
    check_sources(mapped);
}

/// Documents gathered into sources: each position once, records beside
/// their positions, fields JSON objects that read back.
fn check_sources(mapped: Vec<(usize, documents::Document)>) {
    let mut sent: Vec<usize> = mapped.iter().map(|(position, _)| *position).collect();
    let mut seen = Vec::new();
    for (source, positions) in documents::sources(mapped) {
        assert_eq!(source.records.len(), positions.len());
        seen.extend(positions);
        for record in &source.records {
            let text = record.fields.as_str();
            if !text.is_empty() {
                let again: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(text).expect("fields are a JSON object");
                assert_eq!(tailwater_model::FieldsJson::from_map(&again).as_str(), text);
            }
        }
    }
    sent.sort_unstable();
    seen.sort_unstable();
    assert_eq!(sent, seen, "every document is in one source, once");
}
