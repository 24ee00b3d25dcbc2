//! Reading for shipping: where the next batch is (pinned until
//! acknowledged or released), reading it within limits without the lock,
//! and forgetting what the server has.

use super::*;
use crate::line::Line;

/// Where the shipper reads its next batch: the oldest segment's part not
/// yet acknowledged and already written. The segment stays pinned (not
/// dropped for space) until the batch is acknowledged or released.
pub struct ReadPlan {
    pub(super) segment: u64,
    pub(super) file: Arc<File>,
    pub(super) header: Arc<SegmentHeader>,
    pub(super) start: u64,
    pub(super) end: u64,
}

/// Records read for one batch, and what to acknowledge once shipped.
pub struct ReadBatch {
    pub header: Arc<SegmentHeader>,
    pub records: Vec<IngestRecord>,
    pub receipt: Receipt,
    pub stop: Stop,
}

impl Spool {
    /// Where the next batch is, with its segment pinned; `None` when
    /// nothing is waiting (the write buffer is flushed first).
    pub fn plan_read(&mut self) -> Option<ReadPlan> {
        self.flush();
        if !self.leftovers.is_empty() {
            // The leftovers ship first: nothing is read before they are in.
            return None;
        }
        self.remove_finished_head();
        let head = self.segments.front()?;
        if head.start >= head.len {
            return None;
        }
        self.pinned = Some(head.id);
        Some(ReadPlan {
            segment: head.id,
            file: head.file.clone(),
            header: head.header.clone(),
            start: head.start,
            end: head.len,
        })
    }

    /// A batch was not shipped: its segment may be dropped for space again.
    pub fn release(&mut self) {
        self.pinned = None;
    }

    /// The server has the batch of `receipt`: forget it, delete its segment
    /// once all of it is acknowledged, and record that in the ledger.
    pub fn acknowledge(&mut self, receipt: &Receipt) {
        self.pinned = None;
        let Some(segment) = self.segments.iter_mut().find(|s| s.id == receipt.segment) else {
            return;
        };
        if segment.start != receipt.start {
            // Not this batch's place any more; nothing to forget.
            return;
        }
        segment.start = receipt.end;
        segment.unacked.records -= receipt.records;
        segment.unacked.line_bytes -= receipt.line_bytes;
        segment.unacked.frame_bytes -= receipt.end - receipt.start;
        // Saturating: a leftover segment's checksummed frame may still
        // carry any sequence number (the server refuses the highest).
        segment.unacked.first_seq = receipt.last_seq.saturating_add(1);
        segment.unacked.first_ts = None;
        self.backlog.records -= receipt.records;
        self.backlog.line_bytes -= receipt.line_bytes;
        self.backlog.frame_bytes -= receipt.end - receipt.start;
        self.write_ledger();
        self.remove_finished_head();
    }

    /// The segment of `receipt` cannot be read past `at`: count the rest of
    /// it as dropped and delete it.
    pub fn discard_corrupt(&mut self, segment: u64, at: u64) {
        self.pinned = None;
        let Some(index) = self.segments.iter().position(|s| s.id == segment) else {
            return;
        };
        if self.segments[index].open {
            self.roll();
        }
        self.problem(format!(
            "{} is unreadable from byte {at} on (corrupt); its remaining records are dropped",
            segment_path(&self.dir, segment).display()
        ));
        self.drop_segment(index, REASON_CORRUPT);
        self.write_ledger();
    }

    /// Counts records the server refused for good as dropped, and
    /// acknowledges them so shipping goes on.
    pub fn reject(&mut self, receipt: &Receipt, boot: &str) {
        let stats = Stats {
            records: receipt.records,
            line_bytes: receipt.line_bytes,
            frame_bytes: receipt.end - receipt.start,
            first_seq: receipt.first_seq,
            last_seq: receipt.last_seq,
            first_ts: Some(receipt.first_ts),
            last_ts: receipt.last_ts,
        };
        self.tally(REASON_REJECTED, boot, &stats);
        self.acknowledge(receipt);
    }
}

/// Reads one batch of `plan`, within `limits`. Runs without the spool's
/// lock: the part read is written and no longer changes. A captured line
/// becomes a record through `parse` (`seq`, the time it was stamped with,
/// the line as read): the spool keeps lines as read and leaves parsing to
/// the layer that ships them.
pub fn read_batch(
    plan: &ReadPlan,
    limits: &BatchLimits,
    parse: impl Fn(u64, jiff::Timestamp, &Line<'_>) -> IngestRecord,
) -> io::Result<ReadBatch> {
    let mut reader = FrameReader::new(&plan.file, plan.start, plan.end);
    let mut records = Vec::new();
    let mut receipt = Receipt {
        segment: plan.segment,
        start: plan.start,
        end: plan.start,
        ..Receipt::default()
    };
    let stop = loop {
        let at = reader.pos;
        let (body, next) = match reader.next()? {
            Next::End => break Stop::End,
            Next::Bad => break Stop::Corrupt(at),
            Next::Frame { body, next } => (body, next),
        };
        let Some(prefix) = Prefix::decode(body) else {
            break Stop::Corrupt(at);
        };
        if records.len() >= limits.max_records
            || (!records.is_empty() && next - plan.start > limits.max_bytes)
        {
            break Stop::Full;
        }
        let line_bytes = prefix.line_bytes as u64;
        if prefix.flags & FLAG_UNMETERED == 0 {
            let over_lines = limits
                .lines
                .is_some_and(|lines| receipt.metered_lines + 1 > lines);
            let over_bytes = limits.line_bytes.is_some_and(|bytes| {
                bytes == 0
                    || (receipt.metered_lines > 0 && receipt.metered_bytes + line_bytes > bytes)
            });
            if over_lines || over_bytes {
                break Stop::Throttled;
            }
        }
        let body = &body[RECORD_PREFIX_BYTES..];
        let record = if prefix.flags & FLAG_CAPTURED != 0 {
            decode_captured(body).map(|line| parse(prefix.seq, timestamp(prefix.ts), &line))
        } else {
            decode_record(&prefix, body)
        };
        let Some(record) = record else {
            break Stop::Corrupt(at);
        };
        if records.is_empty() {
            receipt.first_seq = prefix.seq;
            receipt.first_ts = prefix.ts;
        }
        receipt.last_seq = prefix.seq;
        receipt.last_ts = prefix.ts;
        receipt.records += 1;
        receipt.line_bytes += line_bytes;
        if prefix.flags & FLAG_UNMETERED == 0 {
            receipt.metered_lines += 1;
            receipt.metered_bytes += line_bytes;
        }
        receipt.end = next;
        records.push(record);
    };
    Ok(ReadBatch {
        header: plan.header.clone(),
        records,
        receipt,
        stop,
    })
}

impl ReadPlan {
    pub fn segment(&self) -> u64 {
        self.segment
    }
}

/// The tallies of the drop reports among the records from `start` to `end`.
pub(super) fn drop_reports(file: &File, start: u64, end: u64) -> Vec<Tally> {
    let mut tallies = Vec::new();
    let mut reader = FrameReader::new(file, start, end);
    while let Ok(Next::Frame { body, .. }) = reader.next() {
        let Some(prefix) = Prefix::decode(body) else {
            break;
        };
        if prefix.flags & FLAG_DROP_REPORT == 0 {
            continue;
        }
        if let Some(tally) = decode_record(&prefix, &body[RECORD_PREFIX_BYTES..])
            .and_then(|record| Tally::from_fields(&record.fields.to_map()))
        {
            tallies.push(tally);
        }
    }
    tallies
}

/// The tallies of the drop reports among the frames in `buffer`.
pub(super) fn drop_reports_in(mut buffer: &[u8]) -> Vec<Tally> {
    let mut tallies = Vec::new();
    while buffer.len() >= FRAME_HEAD_BYTES {
        let len = u32::from_le_bytes(buffer[..4].try_into().expect("4 bytes")) as usize;
        let Some(body) = buffer.get(FRAME_HEAD_BYTES..FRAME_HEAD_BYTES + len) else {
            break;
        };
        buffer = &buffer[FRAME_HEAD_BYTES + len..];
        let Some(prefix) = Prefix::decode(body) else {
            continue;
        };
        if prefix.flags & FLAG_DROP_REPORT != 0 {
            tallies.extend(
                decode_record(&prefix, &body[RECORD_PREFIX_BYTES..])
                    .and_then(|record| Tally::from_fields(&record.fields.to_map())),
            );
        }
    }
    tallies
}

/// The prefix of the record frame at `at`, if it reads back whole.
pub(super) fn read_prefix(file: &File, at: u64) -> Option<Prefix> {
    let end = file.metadata().ok()?.len();
    match FrameReader::new(file, at, end).next().ok()? {
        Next::Frame { body, .. } => Prefix::decode(body),
        _ => None,
    }
}
