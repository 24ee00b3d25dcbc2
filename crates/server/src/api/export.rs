//! `GET /v1/export`: every record a `/v1/logs` filter matches, streamed as
//! text or NDJSON, gzip-compressed on request, in bounded memory whatever
//! its size.
//!
//! A blocking task pages through the store (a page of [`EXPORT_PAGE`]
//! records at a time, by cursor), writes each record into a chunk, and hands
//! chunks of about [`CHUNK_BYTES`] to the response body through a channel of
//! [`CHUNKS_IN_FLIGHT`]: when the client reads slowly, the task waits, so
//! memory holds a page and a few chunks, never the export. The export is a
//! snapshot: records stored after it started (ids above its
//! `X-Tailwater-As-Of` header) are left out, so a live tail from there
//! continues it.

use std::io::Write;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use jiff::Timestamp;
use tailwater_model::time::TimePrecision;
use tailwater_model::wire::ExportFormat as Format;
use tailwater_model::{Direction, LogRecord};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::logs::params;
use super::read::Skipped;
use super::ApiError;
use crate::AppState;

/// Records read from the store at a time.
const EXPORT_PAGE: usize = 2_000;
/// About how many bytes the body is sent in at a time.
const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks written ahead of what the client has read.
const CHUNKS_IN_FLIGHT: usize = 4;
/// The response header holding the newest record id the export covers.
pub const AS_OF_HEADER: &str = "x-tailwater-as-of";

/// How the body is compressed, if it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    /// `gzip=true`: the body is a `.gz` file.
    GzipFile,
    /// `Accept-Encoding: gzip`: compressed in transit only.
    GzipTransfer,
}

pub async fn export(
    State(state): State<AppState>,
    principal: super::Principal,
    headers: HeaderMap,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let format: Format = take_once(&mut pairs, "format")?
        .unwrap_or_default()
        .parse()
        .map_err(ApiError::bad_request)?;
    let compression = match take_once(&mut pairs, "gzip")?.as_deref() {
        Some("true") => Compression::GzipFile,
        None | Some("" | "false") if accepts_gzip(&headers) => Compression::GzipTransfer,
        None | Some("" | "false") => Compression::None,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid gzip '{other}': use true or false"
            )))
        }
    };
    let precision = match take_once(&mut pairs, "time_precision")? {
        Some(text) if format == Format::Ndjson => {
            return Err(ApiError::bad_request(format!(
                "time_precision={text} is for text exports: ndjson keeps every digit of a time; leave it out"
            )))
        }
        Some(text) => Some(
            text.parse::<TimePrecision>()
                .map_err(ApiError::bad_request)?,
        ),
        None => None,
    };
    let (params, tenant, view) = params(&state, &principal, Query(pairs)).await?;
    for (name, given) in [
        ("limit", &params.limit),
        ("cursor", &params.cursor),
        ("after", &params.after),
    ] {
        if given.as_deref().is_some_and(|value| !value.is_empty()) {
            return Err(ApiError::bad_request(format!(
                "an export takes no {name}: it streams every matching record; narrow it with since and until"
            )));
        }
    }
    let seal = state.registry.seal(&tenant);
    let mut query = super::read::query(&state, &params, Timestamp::now(), &seal)?;
    query.limit = EXPORT_PAGE;
    if params.direction.as_deref().is_none_or(str::is_empty) {
        query.direction = Direction::Forward;
    }

    let as_of = state.store.last_id();
    let as_of_header = HeaderValue::from_str(&seal.id(as_of)).expect("an id is base64url");
    let (sender, chunks) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let snapshot = Snapshot {
        state: state.clone(),
        tenant,
        query,
        view,
        as_of,
        seal,
    };
    tokio::task::spawn_blocking(move || {
        let mut out = Chunks::new(compression, sender);
        let mut lines = 0u64;
        match snapshot.write(&mut out, (format, precision), &mut lines) {
            Ok(()) => tracing::debug!(tenant = %snapshot.tenant, lines, "export sent"),
            // The client went away: nothing to tell anyone.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(error) => {
                tracing::error!(tenant = %snapshot.tenant, lines, %error, "export failed; the client gets a cut-off body");
                out.fail(error);
            }
        }
    });

    let content_type = match (format, compression) {
        (_, Compression::GzipFile) => "application/gzip",
        (Format::Text, _) => "text/plain; charset=utf-8",
        (Format::Ndjson, _) => "application/x-ndjson",
    };
    let mut response = (
        StatusCode::OK,
        Body::from_stream(ReceiverStream::new(chunks)),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(AS_OF_HEADER, as_of_header);
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    match compression {
        Compression::None => {}
        Compression::GzipTransfer => {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        Compression::GzipFile => {
            let name = match format {
                Format::Text => "tailwater-export.log.gz",
                Format::Ndjson => "tailwater-export.ndjson.gz",
            };
            let disposition = format!("attachment; filename=\"{name}\"");
            headers.insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("a plain file name"),
            );
        }
    }
    Ok(response)
}

/// What one export reads: the records of `tenant` matching `query` that
/// `view` may see, stored up to `as_of`.
struct Snapshot {
    state: AppState,
    tenant: String,
    query: tailwater_model::Query,
    view: Option<crate::access::scopes::CallerView>,
    as_of: u64,
    seal: tailwater_model::TenantSeal,
}

impl Snapshot {
    /// Writes every record, page by page, counting the lines; then, if
    /// blocks could not be read, a last line saying what is missing
    /// ([`Format::incomplete_line`]).
    fn write(&self, out: &mut Chunks, look: Look, lines: &mut u64) -> std::io::Result<()> {
        let (format, _) = look;
        let mut query = self.query.clone();
        let mut skipped = Skipped::default();
        let mut page_text = Vec::with_capacity(CHUNK_BYTES * 2);
        loop {
            let next = match &self.view {
                None => self.scan_page(&query, look, &mut page_text, lines)?,
                Some(view) => self.built_page(&query, view, look, &mut page_text, lines)?,
            };
            skipped.add(&next.1, self.view.as_ref(), &self.state.registry);
            // Written and sent outside the store's lock: a slow client
            // holds this task, never the store.
            for piece in page_text.chunks(CHUNK_BYTES) {
                out.write_all(piece)?;
                out.send_if_full()?;
            }
            page_text.clear();
            match next.0 {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
        if let Some(incomplete) = skipped.incomplete() {
            tracing::warn!(tenant = %self.tenant, damaged_blocks = incomplete.damaged_blocks, "an export skipped unreadable blocks and says so in its last line");
            out.write_all(format.incomplete_line(&incomplete).as_bytes())?;
        }
        out.finish()
    }

    /// One page of an owner's export, written into `text` from the store's
    /// borrowed rows (`Store::scan`): NDJSON straight from the row, text
    /// from the record built.
    fn scan_page(
        &self,
        query: &tailwater_model::Query,
        look: Look,
        text: &mut Vec<u8>,
        lines: &mut u64,
    ) -> std::io::Result<Page> {
        let page = self
            .state
            .store
            .scan(&self.tenant, query, |row| {
                if row.position > self.as_of {
                    return Ok(());
                }
                match look {
                    (Format::Ndjson, _) => {
                        row.write_json(&self.seal.id(row.position), text)?;
                        text.push(b'\n');
                    }
                    _ => write_record(text, &row.to_record()?, look)
                        .map_err(|error| error.to_string())?,
                }
                *lines += 1;
                Ok(())
            })
            .map_err(std::io::Error::other)?;
        Ok((page.next, page.skipped))
    }

    /// One page of a caller's export, each record built and judged by the
    /// caller's view, which may read the store (so not under its lock).
    fn built_page(
        &self,
        query: &tailwater_model::Query,
        view: &crate::access::scopes::CallerView,
        look: Look,
        text: &mut Vec<u8>,
        lines: &mut u64,
    ) -> std::io::Result<Page> {
        let page = self
            .state
            .store
            .query(&self.tenant, query)
            .map_err(std::io::Error::other)?;
        for mut record in page.records {
            if record.position <= self.as_of && view.sees(&record, &self.state.registry) {
                self.seal.fill_id(&mut record);
                write_record(text, &record, look)?;
                *lines += 1;
            }
        }
        Ok((page.next, page.skipped))
    }
}

/// What a page of an export says besides its records: where the next
/// starts, and the blocks it skipped.
type Page = (
    Option<tailwater_model::Cursor>,
    Vec<tailwater_store::SkippedBlock>,
);

/// Takes a parameter that only export knows out of the pairs.
fn take_once(pairs: &mut Vec<(String, String)>, name: &str) -> Result<Option<String>, ApiError> {
    let mut found: Vec<String> = Vec::new();
    pairs.retain(|(key, value)| {
        let matches = key == name;
        if matches {
            found.push(value.clone());
        }
        !matches
    });
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(ApiError::bad_request(format!(
            "parameter '{name}' is given twice: give it once"
        ))),
    }
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, without `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|part| {
                part.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// How records are written: the format, and for text the digits of a
/// second shown (every digit the time has without one).
type Look = (Format, Option<TimePrecision>);

fn write_record(out: &mut impl Write, record: &LogRecord, look: Look) -> std::io::Result<()> {
    match look {
        (Format::Ndjson, _) => {
            serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)?
        }
        (Format::Text, None) => write!(out, "{}", record.text_line())?,
        (Format::Text, Some(precision)) => {
            write!(out, "{:.*}", precision.digits(), record.text_line())?
        }
    }
    out.write_all(b"\n")
}

/// The body being written: plain or through gzip, into a buffer sent on
/// once it holds about [`CHUNK_BYTES`].
struct Chunks {
    buffer: Buffer,
    sender: mpsc::Sender<std::io::Result<Bytes>>,
}

enum Buffer {
    Plain(Vec<u8>),
    Gzip(GzEncoder<Vec<u8>>),
}

impl Chunks {
    fn new(compression: Compression, sender: mpsc::Sender<std::io::Result<Bytes>>) -> Chunks {
        let buffer = Vec::with_capacity(CHUNK_BYTES * 2);
        let buffer = match compression {
            Compression::None => Buffer::Plain(buffer),
            Compression::GzipFile | Compression::GzipTransfer => {
                Buffer::Gzip(GzEncoder::new(buffer, flate2::Compression::fast()))
            }
        };
        Chunks { buffer, sender }
    }

    fn written(&mut self) -> &mut Vec<u8> {
        match &mut self.buffer {
            Buffer::Plain(buffer) => buffer,
            Buffer::Gzip(encoder) => encoder.get_mut(),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = std::mem::replace(self.written(), Vec::with_capacity(CHUNK_BYTES * 2));
        self.sender
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }

    fn send_if_full(&mut self) -> std::io::Result<()> {
        if self.written().len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// Ends the body: the gzip trailer, and whatever is left.
    fn finish(&mut self) -> std::io::Result<()> {
        if let Buffer::Gzip(encoder) = &mut self.buffer {
            encoder.try_finish()?;
        }
        if !self.written().is_empty() {
            self.send()?;
        }
        Ok(())
    }

    /// Cuts the body off with an error, so the client sees a broken
    /// transfer rather than a complete-looking export.
    fn fail(self, error: std::io::Error) {
        let _ = self.sender.blocking_send(Err(error));
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match &mut self.buffer {
            Buffer::Plain(buffer) => buffer.write(bytes),
            Buffer::Gzip(encoder) => encoder.write(bytes),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_accepted_unless_refused_with_q_0() {
        let accepts = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("*"));
        assert!(!accepts("identity"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("gzip; q=0.0, br"));
        assert!(!accepts("gzipx"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
