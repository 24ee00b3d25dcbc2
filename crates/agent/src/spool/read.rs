//! Reading for shipping: where the next batch is (pinned until
//! acknowledged or released), reading it within limits without the lock,
//! and forgetting what the server has.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::line::Line;

/// How captured lines read back become records: the caller's business
/// (the shipper parses them, and groups the lines of a traceback into one
/// record); the spool parses nothing. A plain function of one line
/// (`seq`, the time it was stamped with, the line) is an `Assemble` that
/// makes a record of each line.
///
/// An assembler may hold lines back in open groups; the spool then keeps
/// the batch's limits off lines that join them, and ends the batch before
/// the first line of a group that must wait (it is read again next time,
/// from there: a batch never ends inside a group, so a group is formed
/// from the same lines however often it is read, after a restart too).
pub trait Assemble {
    /// Takes the line captured as `seq` at `ts`; pushes onto `out` the
    /// records it finishes.
    fn line(&mut self, seq: u64, ts: Timestamp, line: &Line<'_>, out: &mut Vec<IngestRecord>);

    /// A record of the agent's own, stamped `ts`, is read: pushes the
    /// groups that time finished.
    fn tick(&mut self, _ts: Timestamp, _out: &mut Vec<IngestRecord>) {}

    /// Whether `line` would join a group held open.
    fn joins(&self, _ts: Timestamp, _line: &Line<'_>) -> bool {
        false
    }

    /// Whether any group is held open.
    fn is_open(&self) -> bool {
        false
    }

    /// Reading stops: pushes the open groups that are finished. `more`:
    /// lines stamped from then on may still follow in this segment (`None`:
    /// none will, so every group is finished). Returns how long the first
    /// group that must wait for more may still wait, if one must.
    fn finish(
        &mut self,
        _more: Option<Timestamp>,
        _out: &mut Vec<IngestRecord>,
    ) -> Option<Duration> {
        None
    }

    /// Pushes every open group as it is: the batch cannot hold more.
    fn cut(&mut self, _out: &mut Vec<IngestRecord>) {}
}

impl<F: Fn(u64, Timestamp, &Line<'_>) -> IngestRecord> Assemble for F {
    fn line(&mut self, seq: u64, ts: Timestamp, line: &Line<'_>, out: &mut Vec<IngestRecord>) {
        out.push(self(seq, ts, line));
    }
}

/// Where the shipper reads its next batch: the oldest segment's part not
/// yet acknowledged and already written. The segment stays pinned (not
/// dropped for space) until the batch is acknowledged or released.
pub struct ReadPlan {
    pub(super) segment: u64,
    pub(super) file: Arc<File>,
    pub(super) header: Arc<SegmentHeader>,
    pub(super) start: u64,
    pub(super) end: u64,
    /// Lines stamped from this time on may still be written after `end`
    /// (the segment is open); `None`: the segment is finished.
    pub(super) more: Option<Timestamp>,
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
            // Taken under the lock every record is stamped under: a line
            // not written yet is stamped after it.
            more: head.open.then(Timestamp::now),
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
///
/// Lines the assembler holds open are read past the batch's limits (a
/// group is bounded by its assembler) unless the batch already holds twice
/// them; a group that must wait for more lines ends the batch before its
/// first line ([`Stop::Pending`]).
pub fn read_batch(
    plan: &ReadPlan,
    limits: &BatchLimits,
    assemble: &mut impl Assemble,
) -> io::Result<ReadBatch> {
    let mut reader = FrameReader::new(&plan.file, plan.start, plan.end);
    let mut records = Vec::new();
    let mut receipt = Receipt {
        segment: plan.segment,
        start: plan.start,
        end: plan.start,
        ..Receipt::default()
    };
    // Where the batch may end: the last point with no group open.
    let mut settled = (receipt.clone(), 0);
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
        let body = &body[RECORD_PREFIX_BYTES..];
        let captured = if prefix.flags & FLAG_CAPTURED != 0 {
            match decode_captured(body) {
                Some(line) => Some(line),
                None => break Stop::Corrupt(at),
            }
        } else {
            None
        };
        let stamped = timestamp(prefix.ts);
        let joins = captured
            .as_ref()
            .is_some_and(|line| assemble.joins(stamped, line));
        // A line joining an open group is read whatever the limits, up to
        // twice them (the assembler bounds a group; halved limits may not).
        let frames = receipt.records as usize;
        let bound: u8 = if joins { 2 } else { 1 };
        if frames >= limits.max_records.saturating_mul(bound.into())
            || (frames > 0 && next - plan.start > limits.max_bytes.saturating_mul(bound.into()))
        {
            break Stop::Full;
        }
        let line_bytes = prefix.line_bytes as u64;
        if prefix.flags & FLAG_UNMETERED == 0 && !joins {
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
        match captured {
            Some(line) => assemble.line(prefix.seq, stamped, &line, &mut records),
            None => {
                let Some(record) = decode_record(&prefix, body) else {
                    break Stop::Corrupt(at);
                };
                assemble.tick(stamped, &mut records);
                records.push(record);
            }
        }
        if receipt.records == 0 {
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
        if !assemble.is_open() {
            settled = (receipt.clone(), records.len());
        }
    };
    let stop = match stop {
        Stop::End => match assemble.finish(plan.more, &mut records) {
            None => Stop::End,
            Some(wait) => {
                // The open groups wait for more lines: the batch ends
                // before the first of them, to be read again from there.
                (receipt, _) = settled.clone();
                records.truncate(settled.1);
                Stop::Pending(wait)
            }
        },
        Stop::Corrupt(_) => {
            // Nothing more of this segment can be read.
            assemble.finish(None, &mut records);
            stop
        }
        Stop::Full | Stop::Throttled | Stop::Pending(_) => {
            if assemble.is_open() && settled.0.records > 0 {
                (receipt, _) = settled.clone();
                records.truncate(settled.1);
            } else {
                assemble.cut(&mut records);
            }
            stop
        }
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

    /// No more lines will be written (the recorder is closed): every group
    /// read is finished.
    pub fn no_more_lines(&mut self) {
        self.more = None;
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
