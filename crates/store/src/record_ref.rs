//! A record as a scan visits it ([`crate::Store::scan`]): borrowed from a
//! block's columns or a memtable row, its labels its stream's (shared by
//! every record of the stream, never cloned), its fields the compact JSON
//! text the store keeps. Nothing is allocated to look at one; a
//! [`LogRecord`] is built only when asked ([`RecordRef::to_record`]), and
//! [`RecordRef::write_json`] writes the JSON a record is sent as straight
//! from the borrowed parts.

use tailwater_model::filter::{Labels, RecordParts};
use tailwater_model::time::timestamp_from_ns;
use tailwater_model::{Cursor, Fields, Level, LogRecord, Stream};

use crate::part::StreamLabels;

/// One stored record, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// The store's ingest order ([`LogRecord::position`]).
    pub position: u64,
    pub ts_ns: i64,
    pub tenant: &'a str,
    /// Its stream's labels: app, version, runner, boot, source.
    pub labels: &'a StreamLabels,
    pub seq: u64,
    pub stream: Stream,
    pub level: Level,
    pub request_id: Option<&'a str>,
    pub message: &'a str,
    /// The fields as compact JSON text, in the order they were sent; empty
    /// for none.
    pub fields_json: &'a [u8],
    pub invalid_utf8: bool,
}

impl<'a> RecordRef<'a> {
    /// Where it stands in time order.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            ts_ns: self.ts_ns,
            position: self.position,
        }
    }

    /// What a filter looks at, borrowed.
    pub fn parts(&self) -> RecordParts<'a> {
        RecordParts {
            ts: timestamp_from_ns(self.ts_ns),
            level: self.level,
            source: self.labels.source,
            stream: self.stream,
            request_id: self.request_id,
            labels: Labels {
                app: &self.labels.app,
                version: &self.labels.version,
                runner: &self.labels.runner,
                boot: &self.labels.boot,
            },
            message: self.message,
        }
    }

    /// The fields, parsed; an error when the stored text is not a JSON
    /// object (bytes the store never writes: a damaged block).
    pub fn fields(&self) -> Result<Fields, String> {
        match self.fields_json {
            b"" => Ok(Fields::new()),
            json => serde_json::from_slice(json)
                .map_err(|error| format!("block fields do not decode: {error}")),
        }
    }

    /// The whole record, as [`crate::Store::query`] returns it (its `id`
    /// empty, as inside the store).
    pub fn to_record(&self) -> Result<LogRecord, String> {
        Ok(LogRecord {
            id: String::new(),
            position: self.position,
            ts: timestamp_from_ns(self.ts_ns),
            tenant: self.tenant.to_owned(),
            app: self.labels.app.clone(),
            version: self.labels.version.clone(),
            runner: self.labels.runner.clone(),
            boot: self.labels.boot.clone(),
            seq: self.seq,
            source: self.labels.source,
            stream: self.stream,
            level: self.level,
            request_id: self.request_id.map(str::to_owned),
            message: self.message.to_owned(),
            fields: self.fields()?,
            invalid_utf8: self.invalid_utf8,
        })
    }

    /// Writes the JSON object of the record with `id` (its sealed id), as
    /// `serde_json` writes [`LogRecord`] (the same keys, in the same order,
    /// the same text for each value), without building it. One difference:
    /// the fields object is the text the store keeps, in the order its
    /// sender gave the keys, where a built record's map sorts them; the
    /// same JSON to any reader. An error, and nothing written, when that
    /// text is not a JSON object (bytes the store never writes: a damaged
    /// block that passed its checksum), as [`RecordRef::to_record`] fails.
    pub fn write_json(&self, id: &str, out: &mut Vec<u8>) -> Result<(), String> {
        if !self.fields_json.is_empty() && !is_an_object(self.fields_json) {
            return Err("block fields do not decode: not a json object".into());
        }
        let text = write_json_str;
        let labels = self.labels;
        out.extend_from_slice(b"{\"id\":");
        text(out, id);
        out.extend_from_slice(b",\"ts\":\"");
        write_time(out, self.ts_ns);
        out.extend_from_slice(b"\",\"tenant\":");
        text(out, self.tenant);
        out.extend_from_slice(b",\"app\":");
        text(out, &labels.app);
        out.extend_from_slice(b",\"version\":");
        text(out, &labels.version);
        out.extend_from_slice(b",\"runner\":");
        text(out, &labels.runner);
        out.extend_from_slice(b",\"boot\":");
        text(out, &labels.boot);
        out.extend_from_slice(b",\"seq\":");
        serde_json::to_writer(&mut *out, &self.seq).expect("writes into memory");
        out.extend_from_slice(b",\"source\":");
        serde_json::to_writer(&mut *out, &labels.source).expect("writes into memory");
        out.extend_from_slice(b",\"stream\":");
        serde_json::to_writer(&mut *out, &self.stream).expect("writes into memory");
        out.extend_from_slice(b",\"level\":");
        serde_json::to_writer(&mut *out, &self.level).expect("writes into memory");
        out.extend_from_slice(b",\"request_id\":");
        match self.request_id {
            Some(request_id) => text(out, request_id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"message\":");
        text(out, self.message);
        out.extend_from_slice(b",\"fields\":");
        match self.fields_json {
            b"" => out.extend_from_slice(b"{}"),
            json => out.extend_from_slice(json),
        }
        if self.invalid_utf8 {
            out.extend_from_slice(b",\"invalid_utf8\":true");
        }
        out.push(b'}');
        Ok(())
    }
}

/// Writes `value` as a JSON string, escaped as `serde_json` escapes it
/// (`\"`, `\\`, `\b \f \n \r \t`, other control bytes as `\u00xx`),
/// eight bytes at a time where none needs it: most of an export's bytes
/// are messages that need none.
pub(crate) fn write_json_str(out: &mut Vec<u8>, value: &str) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    /// Whether any byte of `x` is below 0x20, a quote or a backslash.
    fn any_to_escape(x: u64) -> bool {
        let zero_in = |y: u64| y.wrapping_sub(ONES) & !y & HIGH;
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        below_space | zero_in(x ^ (ONES * u64::from(b'"'))) | zero_in(x ^ (ONES * u64::from(b'\\')))
            != 0
    }
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut written = 0;
    let mut escape_from = |out: &mut Vec<u8>, range: std::ops::Range<usize>| {
        for at in range {
            let byte = bytes[at];
            let short = match byte {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0..0x20 => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[written..at]);
            written = at + 1;
            out.extend_from_slice(&[b'\\', short]);
            if short == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ]);
            }
        }
    };
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let chunk = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        if any_to_escape(chunk) {
            escape_from(out, at..at + 8);
        }
        at += 8;
    }
    escape_from(out, at..bytes.len());
    out.extend_from_slice(&bytes[written..]);
    out.push(b'"');
}

thread_local! {
    /// The text of the last whole second written (without its `Z`): the
    /// records of an export share their seconds.
    static SECOND: std::cell::RefCell<(i64, String)> =
        const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// Writes a time as jiff's `Timestamp` displays it (and its serde writes
/// it): RFC 3339 in UTC, the fraction of a second with its trailing zeros
/// left out, none when whole.
pub(crate) fn write_time(out: &mut Vec<u8>, ts_ns: i64) {
    let (second, nanos) = (
        ts_ns.div_euclid(1_000_000_000),
        ts_ns.rem_euclid(1_000_000_000),
    );
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            let whole = jiff::Timestamp::from_second(second).unwrap_or(jiff::Timestamp::MIN);
            *text = whole.to_string();
            text.pop();
            *cached = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
    if nanos != 0 {
        let mut digits = [0u8; 10];
        digits[0] = b'.';
        let mut rest = nanos;
        for digit in digits[1..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let mut end = digits.len();
        while digits[end - 1] == b'0' {
            end -= 1;
        }
        out.extend_from_slice(&digits[..end]);
    }
    out.push(b'Z');
}

/// Whether stored fields text is one JSON object (checked, not built).
fn is_an_object(json: &[u8]) -> bool {
    json.first() == Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
}
