//! One captured line: what capture read from the worker, as the recorder
//! stamps it, the spool keeps it and the shipper parses it. The one shape a
//! line has from the pipe to the wire's record.

use tailwater_model::Stream;

/// One line, without its line ending; borrowed from what was read where it
/// can be, so a line costs no copy before the spool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub stream: Stream,
    /// Any bytes, valid UTF-8 or not.
    pub bytes: &'a [u8],
    /// The line goes on in the next piece (it was longer than the maximum).
    pub continued: bool,
    /// The one request in flight when it was written, if exactly one was
    /// (capture does not know; the sink it writes to fills it in).
    pub in_request: Option<&'a str>,
    /// A kept state of a line rewritten with `\r`.
    pub progress: Option<Progress>,
}

/// How a kept state of a rewritten line stands for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The states this record stands for: itself and those skipped since the
    /// previous kept state (the spool keeps at most `u32::MAX`).
    pub updates: u64,
    /// This is the line's final state.
    pub last: bool,
}

impl<'a> Line<'a> {
    /// A whole line of `stream`, nothing more known about it.
    pub fn new(stream: Stream, bytes: &'a [u8]) -> Line<'a> {
        Line {
            stream,
            bytes,
            continued: false,
            in_request: None,
            progress: None,
        }
    }
}

/// A captured line as a record without parsing it (its bytes the message,
/// the request in flight its request id): for the tests of the layers that
/// keep lines but do not parse them.
#[cfg(test)]
pub fn unparsed(
    seq: u64,
    ts: jiff::Timestamp,
    line: &Line<'_>,
) -> tailwater_model::wire::IngestRecord {
    tailwater_model::wire::IngestRecord {
        seq,
        ts,
        stream: line.stream,
        level: tailwater_model::Level::Info,
        request_id: line.in_request.map(str::to_owned),
        message: String::from_utf8_lossy(line.bytes).into_owned(),
        fields: tailwater_model::FieldsJson::new(),
        invalid_utf8: false,
    }
}
