//! Segments: the files records are appended to, numbered in order, each
//! with what of it is not acknowledged; rolled, dropped past the cap, and
//! deleted once acknowledged.

use super::*;

/// Unacknowledged records of a segment (or of the write buffer).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    pub(super) records: u64,
    pub(super) line_bytes: u64,
    pub(super) frame_bytes: u64,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// Time of the first record, when known (it is forgotten when a batch
    /// is acknowledged, and read from disk when needed).
    pub(super) first_ts: Option<i64>,
    pub(super) last_ts: i64,
}

impl Stats {
    pub(super) fn add(&mut self, prefix: &Prefix, frame_bytes: u64) {
        if self.records == 0 {
            self.first_seq = prefix.seq;
            self.first_ts = Some(prefix.ts);
        }
        self.records += 1;
        self.line_bytes += prefix.line_bytes as u64;
        self.frame_bytes += frame_bytes;
        self.last_seq = prefix.seq;
        self.last_ts = prefix.ts;
    }
}

pub(super) struct Segment {
    pub(super) id: u64,
    pub(super) file: Arc<File>,
    pub(super) header: Arc<SegmentHeader>,
    /// First byte not acknowledged.
    pub(super) start: u64,
    /// Bytes in the file (the write buffer not included).
    pub(super) len: u64,
    /// Still appended to (the newest segment of this boot).
    pub(super) open: bool,
    pub(super) unacked: Stats,
    /// Holds drop reports, perhaps not yet shipped.
    pub(super) has_reports: bool,
}

impl Spool {
    pub(super) fn start_segment(&mut self) -> io::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        let path = segment_path(&self.dir, id);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut head = SEGMENT_MAGIC.to_vec();
        head.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
        serde_json::to_writer(&mut head, &*self.header).expect("a header serializes to JSON");
        seal_frame(&mut head, SEGMENT_MAGIC.len());
        if let Err(error) = (&file).write_all(&head) {
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        let file = Arc::new(file);
        if self.durability == Durability::Machine {
            self.unsynced.owe(&file);
            self.unsynced.directory = true;
        }
        let len = head.len() as u64;
        self.bytes += len;
        self.segments.push_back(Segment {
            id,
            file,
            header: self.header.clone(),
            start: len,
            len,
            open: true,
            unacked: Stats::default(),
            has_reports: false,
        });
        Ok(())
    }

    /// Finishes the open segment: the next record starts a new one.
    pub(super) fn roll(&mut self) {
        self.flush();
        if let Some(segment) = self.segments.back_mut().filter(|s| s.open) {
            segment.open = false;
            if let Some(syncer) = &self.syncer {
                let _ = syncer.send(segment.file.clone());
            }
        }
    }

    /// Drops the oldest records while the spool is over its cap.
    pub(super) fn enforce_cap(&mut self) {
        let mut dropped = false;
        while self.bytes > self.cap {
            let Some(victim) = self
                .segments
                .iter()
                .position(|s| !s.open && Some(s.id) != self.pinned)
            else {
                break;
            };
            self.drop_segment(victim, REASON_SPOOL_FULL);
            dropped = true;
        }
        if dropped {
            self.write_ledger();
        }
    }

    pub(super) fn drop_segment(&mut self, index: usize, reason: &str) {
        let mut segment = self.segments.remove(index).expect("a segment");
        if segment.unacked.records > 0 && segment.unacked.first_ts.is_none() {
            segment.unacked.first_ts = read_prefix(&segment.file, segment.start).map(|p| p.ts);
        }
        let header = segment.header.clone();
        self.tally(reason, &header.boot, &segment.unacked);
        if segment.has_reports {
            // Reports of earlier drops go with it: count what they said again.
            for tally in drop_reports(&segment.file, segment.start, segment.len) {
                self.merge_dropped(tally);
            }
        }
        self.bytes -= segment.len;
        self.backlog.records -= segment.unacked.records;
        self.backlog.line_bytes -= segment.unacked.line_bytes;
        self.backlog.frame_bytes -= segment.unacked.frame_bytes;
        let _ = fs::remove_file(segment_path(&self.dir, segment.id));
    }

    /// Deletes the oldest segments that are finished and acknowledged.
    pub(super) fn remove_finished_head(&mut self) {
        while let Some(head) = self.segments.front() {
            if head.open || head.unacked.records > 0 || Some(head.id) == self.pinned {
                return;
            }
            let head = self.segments.pop_front().expect("a head");
            self.bytes -= head.len;
            let _ = fs::remove_file(segment_path(&self.dir, head.id));
        }
    }
}
