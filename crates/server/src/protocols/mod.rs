//! The protocols other senders speak, decoded at the edge into ingest
//! batches for [`crate::ingest::Pipeline`]: OpenTelemetry's OTLP logs
//! ([`otlp`]), Loki push ([`loki`]), Elasticsearch `_bulk` ([`es_bulk`])
//! and plain JSON documents ([`documents`], also the mapping of each
//! `_bulk` document). Each decoder is pure (bytes in, batches out), so it is
//! tested and fuzzed without a server; its HTTP route lives in `api`.

pub mod documents;
pub mod es_bulk;
pub mod loki;
pub mod otlp;

use std::io::Read;

use jiff::Timestamp;
use tailwater_model::{FieldsJson, Level, Stream};

/// The records of one source a request holds (an OTLP resource, a Loki
/// stream), labelled, not yet numbered: what an edge hands
/// `ingest::Pipeline::accept_unnumbered`.
#[derive(Debug, Default, PartialEq)]
pub struct Source {
    /// `None`: the source names no app; the token's is used.
    pub app: Option<String>,
    pub version: String,
    /// `None`: the source names no instance; the token's id is used.
    pub runner: Option<String>,
    pub records: Vec<Record>,
}

/// One record, mapped.
#[derive(Debug, PartialEq)]
pub struct Record {
    pub ts: Timestamp,
    pub level: Level,
    pub stream: Stream,
    pub request_id: Option<String>,
    pub message: String,
    pub fields: FieldsJson,
    /// The record's own id, where its protocol carries one (OTLP
    /// `log.record.uid`), as text.
    pub uid: Option<String>,
}

/// The media type of a `Content-Type` value, lowercased, without its
/// parameters: `Application/JSON; charset=utf-8` is `application/json`.
pub fn media_type(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or("");
    essence.trim().to_ascii_lowercase()
}

/// Why a body's `Content-Encoding` could not be undone.
#[derive(Debug, PartialEq, Eq)]
pub enum Undecoded {
    /// An encoding we do not read; the message names it.
    Unsupported(String),
    /// Over the limit once decompressed.
    TooLarge,
    /// Not what its encoding says it is.
    Invalid(String),
}

/// `body` with its `Content-Encoding` (`gzip`, `deflate`, `zstd`,
/// `identity` or none) undone, refused past `limit` bytes decompressed: a small body must not
/// become a large one in memory.
pub fn decompress(body: &[u8], encoding: Option<&str>, limit: usize) -> Result<Vec<u8>, Undecoded> {
    let encoding = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "" | "identity" => {
            return if body.len() > limit {
                Err(Undecoded::TooLarge)
            } else {
                Ok(body.to_vec())
            }
        }
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(body)),
        // HTTP's `deflate` is zlib's format (RFC 1950), but Loki, and Go
        // clients after it, read and send raw DEFLATE (RFC 1951): a body
        // opening with a zlib header is read as zlib, any other as raw.
        "deflate" if is_zlib(body) => Box::new(flate2::read::ZlibDecoder::new(body)),
        "deflate" => Box::new(flate2::read::DeflateDecoder::new(body)),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(body)
                .map_err(|error| Undecoded::Invalid(format!("invalid zstd body: {error}")))?,
        ),
        other => {
            return Err(Undecoded::Unsupported(format!(
                "content encoding '{}' is not supported: send gzip, deflate, zstd or none",
                other.escape_debug()
            )))
        }
    };
    let mut out = Vec::new();
    let read = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| Undecoded::Invalid(format!("invalid {encoding} body: {error}")))?;
    if read > limit {
        return Err(Undecoded::TooLarge);
    }
    Ok(out)
}

/// Whether `body` opens with a zlib header: the deflate method, a window
/// of at most 32 KiB, and the header's check bits (RFC 1950, 2.2).
fn is_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn encodings_are_undone_within_the_limit() {
        let text = b"hello hello hello".repeat(100);
        assert_eq!(decompress(&text, None, 10_000).unwrap(), text);
        assert_eq!(decompress(&text, Some("identity"), 10_000).unwrap(), text);
        assert_eq!(
            decompress(&gzip(&text), Some("gzip"), 10_000).unwrap(),
            text
        );
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decompress(&zstd, Some("ZSTD"), 10_000).unwrap(), text);
        // deflate as HTTP says (zlib) and as Loki's Go clients send it (raw).
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        zlib.write_all(&text).unwrap();
        let zlib = zlib.finish().unwrap();
        assert!(is_zlib(&zlib));
        assert_eq!(decompress(&zlib, Some("deflate"), 10_000).unwrap(), text);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        raw.write_all(&text).unwrap();
        let raw = raw.finish().unwrap();
        assert!(!is_zlib(&raw));
        assert_eq!(decompress(&raw, Some("deflate"), 10_000).unwrap(), text);
        let bomb = {
            let mut raw =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            raw.write_all(&vec![0; 1 << 20]).unwrap();
            raw.finish().unwrap()
        };
        assert_eq!(
            decompress(&bomb, Some("deflate"), 1000),
            Err(Undecoded::TooLarge)
        );
    }

    #[test]
    fn a_bomb_a_lie_and_an_unknown_encoding_are_refused() {
        // A megabyte of zeros is a kilobyte of gzip: refused past the limit
        // without inflating it all.
        let bomb = gzip(&vec![0; 1 << 20]);
        assert!(bomb.len() < 4096);
        assert_eq!(
            decompress(&bomb, Some("gzip"), 1000),
            Err(Undecoded::TooLarge)
        );
        assert_eq!(decompress(&[0; 2000], None, 1000), Err(Undecoded::TooLarge));
        assert!(matches!(
            decompress(b"not gzip", Some("gzip"), 1000),
            Err(Undecoded::Invalid(_))
        ));
        assert!(matches!(
            decompress(b"x", Some("br"), 1000),
            Err(Undecoded::Unsupported(message)) if message.contains("gzip, deflate, zstd or none")
        ));
    }
}
