//! Record bodies: the fixed prefix, the agent's own records and captured
//! lines, encoded and decoded (the layout is in the module's doc).

use super::*;
use crate::line::{Line, Progress};

pub(super) struct Prefix {
    pub(super) flags: u8,
    pub(super) seq: u64,
    pub(super) ts: i64,
    pub(super) line_bytes: u32,
}

impl Prefix {
    pub(super) fn encode(&self, buffer: &mut Vec<u8>) {
        buffer.push(self.flags);
        buffer.extend_from_slice(&self.seq.to_le_bytes());
        buffer.extend_from_slice(&self.ts.to_le_bytes());
        buffer.extend_from_slice(&self.line_bytes.to_le_bytes());
    }

    pub(super) fn decode(body: &[u8]) -> Option<Prefix> {
        let prefix = body.get(..RECORD_PREFIX_BYTES)?;
        Some(Prefix {
            flags: prefix[0],
            seq: u64::from_le_bytes(prefix[1..9].try_into().ok()?),
            ts: i64::from_le_bytes(prefix[9..17].try_into().ok()?),
            line_bytes: u32::from_le_bytes(prefix[17..21].try_into().ok()?),
        })
    }
}

pub(super) const BIT_INVALID_UTF8: u8 = 1;
pub(super) const BIT_REQUEST_ID: u8 = 2;

/// Appends a record's body after its prefix (see the module's doc).
pub(super) fn encode_record(record: &IngestRecord, buffer: &mut Vec<u8>) {
    let stream = record.stream.code();
    let level = Level::ALL
        .iter()
        .position(|level| *level == record.level)
        .expect("every level is in Level::ALL") as u8;
    let mut bits = 0;
    if record.invalid_utf8 {
        bits |= BIT_INVALID_UTF8;
    }
    if record.request_id.is_some() {
        bits |= BIT_REQUEST_ID;
    }
    buffer.extend_from_slice(&[stream, level, bits]);
    put_bytes(buffer, record.message.as_bytes());
    put_bytes(
        buffer,
        record.request_id.as_deref().unwrap_or("").as_bytes(),
    );
    let at = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    buffer.extend_from_slice(record.fields.as_str().as_bytes());
    let len = (buffer.len() - at - 4) as u32;
    buffer[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

pub(super) const BIT_CONTINUED: u8 = 1;
pub(super) const BIT_IN_REQUEST: u8 = 2;
pub(super) const BIT_PROGRESS: u8 = 4;
pub(super) const BIT_PROGRESS_FINAL: u8 = 8;

/// Appends a captured line's body after its prefix: `stream: u8`, `bits:
/// u8`, the progress count (`u32`, when a progress state), the request in
/// flight (length-prefixed, when there was one), then the line's bytes to
/// the end of the frame.
pub(super) fn encode_captured(line: &Line<'_>, buffer: &mut Vec<u8>) {
    let mut bits = 0;
    if line.continued {
        bits |= BIT_CONTINUED;
    }
    if line.in_request.is_some() {
        bits |= BIT_IN_REQUEST;
    }
    match line.progress {
        Some(Progress { last: true, .. }) => bits |= BIT_PROGRESS | BIT_PROGRESS_FINAL,
        Some(Progress { last: false, .. }) => bits |= BIT_PROGRESS,
        None => {}
    }
    buffer.extend_from_slice(&[line.stream.code(), bits]);
    if let Some(progress) = line.progress {
        let updates = progress.updates.min(u32::MAX as u64) as u32;
        buffer.extend_from_slice(&updates.to_le_bytes());
    }
    if let Some(request) = line.in_request {
        put_bytes(buffer, request.as_bytes());
    }
    buffer.extend_from_slice(line.bytes);
}

pub(super) fn decode_captured(mut body: &[u8]) -> Option<Line<'_>> {
    let (&[stream, bits], rest) = body.split_first_chunk::<2>()?;
    body = rest;
    let progress = if bits & BIT_PROGRESS != 0 {
        let (updates, rest) = body.split_first_chunk::<4>()?;
        body = rest;
        Some(Progress {
            updates: u32::from_le_bytes(*updates) as u64,
            last: bits & BIT_PROGRESS_FINAL != 0,
        })
    } else {
        None
    };
    let in_request = if bits & BIT_IN_REQUEST != 0 {
        let (len, rest) = body.split_first_chunk::<4>()?;
        let (request, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        body = rest;
        Some(std::str::from_utf8(request).ok()?)
    } else {
        None
    };
    Some(Line {
        stream: Stream::from_code(stream)?,
        bytes: body,
        continued: bits & BIT_CONTINUED != 0,
        in_request,
        progress,
    })
}

pub(super) fn put_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buffer.extend_from_slice(bytes);
}

/// The agent's own record of `prefix` and the rest of its body; `None` if
/// it does not decode, or is a captured line ([`decode_captured`]: parsing
/// it is the shipper's business, not the spool's).
pub(super) fn decode_record(prefix: &Prefix, mut body: &[u8]) -> Option<IngestRecord> {
    if prefix.flags & FLAG_CAPTURED != 0 {
        return None;
    }
    fn take<'a>(body: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
        let (taken, rest) = body.split_at_checked(len)?;
        *body = rest;
        Some(taken)
    }
    fn string(body: &mut &[u8]) -> Option<String> {
        let len = u32::from_le_bytes(take(body, 4)?.try_into().ok()?) as usize;
        String::from_utf8(take(body, len)?.to_vec()).ok()
    }
    let &[stream, level, bits] = take(&mut body, 3)? else {
        return None;
    };
    let stream = Stream::from_code(stream)?;
    let level = *Level::ALL.get(level as usize)?;
    let message = string(&mut body)?;
    let request_id = string(&mut body)?;
    let fields_len = u32::from_le_bytes(take(&mut body, 4)?.try_into().ok()?) as usize;
    let fields = match take(&mut body, fields_len)? {
        [] => FieldsJson::new(),
        json => serde_json::from_slice(json).ok()?,
    };
    Some(IngestRecord {
        seq: prefix.seq,
        ts: timestamp(prefix.ts),
        stream,
        level,
        request_id: (bits & BIT_REQUEST_ID != 0).then_some(request_id),
        message,
        fields,
        invalid_utf8: bits & BIT_INVALID_UTF8 != 0,
    })
}
