//! The write path: records framed into the write buffer, flushed to the
//! open segment, and everything written and fsynced at shutdown.

use super::*;
use crate::line::Line;

impl Spool {
    /// Appends a record of this boot. Returns whether someone should flush
    /// soon: the write buffer was empty before, or fsyncs are owed
    /// ([`Spool::take_unsynced`]).
    pub fn append(&mut self, record: &IngestRecord, flags: u8, line_bytes: u64) -> bool {
        debug_assert_eq!(flags & FLAG_CAPTURED, 0);
        let prefix = Prefix {
            flags,
            seq: record.seq,
            ts: timestamp_ns(record.ts),
            line_bytes: line_bytes.min(u32::MAX as u64) as u32,
        };
        self.append_frame(prefix, |buffer| encode_record(record, buffer))
    }

    /// Appends a captured line of this boot, stamped with `seq` and `ts`
    /// (nanoseconds); see [`Spool::append`].
    pub fn append_captured(&mut self, seq: u64, ts: i64, line: &Line<'_>, flags: u8) -> bool {
        let prefix = Prefix {
            flags: flags | FLAG_CAPTURED,
            seq,
            ts,
            line_bytes: line.bytes.len().min(u32::MAX as usize) as u32,
        };
        self.append_frame(prefix, |buffer| encode_captured(line, buffer))
    }

    pub(super) fn append_frame(
        &mut self,
        prefix: Prefix,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let was_empty = self.buffer.is_empty();
        let flags = prefix.flags;
        if !self.segments.back().is_some_and(|s| s.open) {
            if let Err(error) = self.start_segment() {
                self.problem(format!(
                    "cannot create a spool segment in {}: {error}",
                    self.dir.display()
                ));
                let mut stats = Stats::default();
                stats.add(&prefix, 0);
                self.tally(REASON_WRITE_FAILED, &self.header.boot.clone(), &stats);
                self.write_ledger();
                return false;
            }
        }
        let at = self.buffer.len();
        self.buffer.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
        prefix.encode(&mut self.buffer);
        encode(&mut self.buffer);
        seal_frame(&mut self.buffer, at);
        let frame_bytes = (self.buffer.len() - at) as u64;

        let segment = self.segments.back_mut().expect("an open segment");
        segment.unacked.add(&prefix, frame_bytes);
        segment.has_reports |= flags & FLAG_DROP_REPORT != 0;
        self.buffered.add(&prefix, frame_bytes);
        self.bytes += frame_bytes;
        self.backlog.records += 1;
        self.backlog.line_bytes += prefix.line_bytes as u64;
        self.backlog.frame_bytes += frame_bytes;

        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.flush();
        }
        let segment = self.segments.back().expect("an open segment");
        if segment.open && segment.len + self.buffer.len() as u64 >= self.segment_target {
            self.roll();
        }
        self.enforce_cap();
        // Owed fsyncs want a flusher too.
        was_empty || !self.unsynced.is_empty()
    }

    /// Writes the buffered records to the open segment's file.
    pub fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let durability = self.durability;
        let segment = self
            .segments
            .back_mut()
            .expect("buffered records have an open segment");
        match (&*segment.file).write_all(&self.buffer) {
            Ok(()) => {
                if durability == Durability::Machine {
                    self.unsynced.owe(&segment.file);
                }
                segment.len += self.buffer.len() as u64;
                self.buffer.clear();
                self.buffered = Stats::default();
            }
            Err(error) => {
                // Cut a partial write off, count the buffered records as
                // dropped, and start a new segment for the next ones.
                let _ = segment.file.set_len(segment.len);
                let lost = self.buffered;
                segment.unacked.records -= lost.records;
                segment.unacked.line_bytes -= lost.line_bytes;
                segment.unacked.frame_bytes -= lost.frame_bytes;
                if segment.unacked.records > 0 {
                    segment.unacked.last_seq = lost.first_seq.saturating_sub(1);
                }
                segment.open = false;
                let path = segment_path(&self.dir, segment.id);
                self.bytes -= self.buffer.len() as u64;
                self.backlog.records -= lost.records;
                self.backlog.line_bytes -= lost.line_bytes;
                self.backlog.frame_bytes -= lost.frame_bytes;
                for tally in drop_reports_in(&self.buffer) {
                    self.merge_dropped(tally);
                }
                self.buffer.clear();
                self.buffered = Stats::default();
                self.problem(format!("cannot write to {}: {error}", path.display()));
                self.tally(REASON_WRITE_FAILED, &self.header.boot.clone(), &lost);
                self.remove_finished_head();
                self.write_ledger();
            }
        }
    }

    /// Writes the buffer and the ledger.
    pub fn persist(&mut self) {
        self.flush();
        self.write_ledger();
    }

    /// The agent stops: everything is written and fsynced. When nothing is
    /// left to ship, the directory is removed.
    pub fn shutdown(&mut self) -> Backlog {
        self.flush();
        self.syncer = None;
        for segment in &self.segments {
            let _ = segment.file.sync_data();
        }
        self.write_ledger();
        if self.backlog.records == 0 && self.dropped.is_empty() && self.leftovers.is_empty() {
            for segment in self.segments.drain(..) {
                let _ = fs::remove_file(segment_path(&self.dir, segment.id));
            }
            self.bytes = 0;
            let _ = fs::remove_file(self.dir.join(LEDGER_FILE));
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.dir);
        } else {
            // What the next agent needs survives a machine crash from here:
            // the ledger's data, and the directory naming it and the
            // segments.
            if let Ok(ledger) = File::open(self.dir.join(LEDGER_FILE)) {
                let _ = ledger.sync_data();
            }
            let _ = sync_directory(&self.dir);
        }
        self.backlog
    }
}
