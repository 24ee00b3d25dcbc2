//! The ledger (what the server acknowledged, and drops not yet reported)
//! and the tallies that count dropped records.

use super::*;
use tailwater_model::lifecycle::Event;

/// Records counted for a report: how many, their bytes, their time span and
/// their sequence numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub reason: String,
    pub lines: u64,
    /// Bytes of the lines, as the worker wrote them (messages for the
    /// agent's own records).
    pub bytes: u64,
    /// Earliest and latest record time, nanoseconds.
    pub first_ts: i64,
    pub last_ts: i64,
    pub seqs: Vec<SeqRange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqRange {
    pub boot: String,
    pub first: u64,
    pub last: u64,
}

impl Tally {
    pub fn new(reason: &str) -> Tally {
        Tally {
            reason: reason.to_owned(),
            ..Tally::default()
        }
    }

    /// Adds the counts of `other`, another tally of the same reason.
    pub fn merge(&mut self, other: Tally) {
        if other.lines == 0 {
            return;
        }
        if self.lines == 0 {
            (self.first_ts, self.last_ts) = (other.first_ts, other.last_ts);
        } else {
            self.first_ts = self.first_ts.min(other.first_ts);
            self.last_ts = self.last_ts.max(other.last_ts);
        }
        self.lines += other.lines;
        self.bytes += other.bytes;
        // Ranges by boot (in order of first appearance), then by sequence
        // number, joined where they touch.
        let mut ranges = other.seqs;
        ranges.append(&mut self.seqs);
        let mut boots: Vec<String> = Vec::new();
        for range in &ranges {
            if !boots.contains(&range.boot) {
                boots.push(range.boot.clone());
            }
        }
        ranges.sort_by_key(|r| (boots.iter().position(|b| *b == r.boot), r.first));
        for range in ranges {
            match self.seqs.last_mut() {
                Some(last) if last.boot == range.boot && last.last + 1 >= range.first => {
                    last.last = last.last.max(range.last)
                }
                _ => self.seqs.push(range),
            }
        }
    }

    /// The fields of a drop report: `reason`, `dropped_lines`,
    /// `dropped_bytes`, `first`, `last` (RFC 3339) and `seqs`.
    pub fn to_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let json = serde_json::json!({
            "event": Event::Dropped,
            "reason": self.reason,
            "dropped_lines": self.lines,
            "dropped_bytes": self.bytes,
            "first": timestamp(self.first_ts).to_string(),
            "last": timestamp(self.last_ts).to_string(),
            "seqs": self.seqs,
        });
        match json {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        }
    }

    /// The tally a drop report's fields hold.
    pub fn from_fields(fields: &serde_json::Map<String, serde_json::Value>) -> Option<Tally> {
        let time = |key: &str| {
            fields
                .get(key)?
                .as_str()?
                .parse::<jiff::Timestamp>()
                .ok()
                .map(timestamp_ns)
        };
        Some(Tally {
            reason: fields.get("reason")?.as_str()?.to_owned(),
            lines: fields.get("dropped_lines")?.as_u64()?,
            bytes: fields.get("dropped_bytes")?.as_u64()?,
            first_ts: time("first")?,
            last_ts: time("last")?,
            seqs: serde_json::from_value(fields.get("seqs")?.clone()).ok()?,
        })
    }

    /// Adds `lines` records of `boot` with sequence numbers `first..=last`.
    pub fn add(&mut self, boot: &str, seqs: (u64, u64), lines: u64, bytes: u64, ts: (i64, i64)) {
        if lines == 0 {
            return;
        }
        if self.lines == 0 {
            (self.first_ts, self.last_ts) = ts;
        } else {
            self.first_ts = self.first_ts.min(ts.0);
            self.last_ts = self.last_ts.max(ts.1);
        }
        self.lines += lines;
        self.bytes += bytes;
        match self.seqs.last_mut() {
            Some(range) if range.boot == boot && range.last + 1 == seqs.0 => range.last = seqs.1,
            _ => self.seqs.push(SeqRange {
                boot: boot.to_owned(),
                first: seqs.0,
                last: seqs.1,
            }),
        }
    }
}

/// The ledger's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Ledger {
    /// Segments numbered below are acknowledged, and this one up to
    /// `acked_offset`.
    pub(super) acked_segment: u64,
    pub(super) acked_offset: u64,
    /// Drops not yet reported in a system record.
    #[serde(default)]
    pub(super) dropped: Vec<Tally>,
}

impl Spool {
    pub(super) fn tally(&mut self, reason: &str, boot: &str, stats: &Stats) {
        if stats.records == 0 {
            return;
        }
        let tally = match self.dropped.iter().position(|t| t.reason == reason) {
            Some(index) => &mut self.dropped[index],
            None => {
                self.dropped.push(Tally::new(reason));
                self.dropped.last_mut().expect("just pushed")
            }
        };
        tally.add(
            boot,
            (stats.first_seq, stats.last_seq),
            stats.records,
            stats.line_bytes,
            (stats.first_ts.unwrap_or(stats.last_ts), stats.last_ts),
        );
    }

    pub(super) fn merge_dropped(&mut self, tally: Tally) {
        match self.dropped.iter_mut().find(|t| t.reason == tally.reason) {
            Some(pending) => pending.merge(tally),
            None => self.dropped.push(tally),
        }
    }

    pub(super) fn write_ledger(&mut self) {
        // The oldest record not acknowledged: adopted leftovers come before
        // those still waiting, and those before this boot's segments.
        let head = self.segments.front().map(|head| (head.id, head.start));
        let leftover = self.leftovers.front().copied();
        let (acked_segment, acked_offset) = match (head, leftover) {
            (Some(head), Some(leftover)) => head.min(leftover),
            (Some(oldest), None) | (None, Some(oldest)) => oldest,
            (None, None) => (self.next_id, 0),
        };
        let ledger = Ledger {
            acked_segment,
            acked_offset,
            dropped: self.dropped.clone(),
        };
        if self.durability == Durability::Machine {
            self.unsynced.ledger = true;
        }
        if let Err(error) = write_ledger(&self.dir, &ledger) {
            self.problem(format!(
                "cannot write the spool ledger in {}: {error}",
                self.dir.display()
            ));
        }
    }
}

/// The ledger, `None` when there is none; an error says why it is unreadable.
pub(super) fn read_ledger(dir: &Path) -> Result<Option<Ledger>, String> {
    let path = dir.join(LEDGER_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let unreadable = || format!("{} is torn or corrupt", path.display());
    let rest = bytes.strip_prefix(LEDGER_MAGIC).ok_or_else(unreadable)?;
    if rest.len() < FRAME_HEAD_BYTES {
        return Err(unreadable());
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let body = rest
        .get(FRAME_HEAD_BYTES..FRAME_HEAD_BYTES + len)
        .ok_or_else(unreadable)?;
    if crc32fast::hash(body) != crc {
        return Err(unreadable());
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|_| unreadable())
}

/// Replaces the ledger: written beside it, then renamed over it.
pub(super) fn write_ledger(dir: &Path, ledger: &Ledger) -> io::Result<()> {
    let mut bytes = LEDGER_MAGIC.to_vec();
    bytes.extend_from_slice(&[0; FRAME_HEAD_BYTES]);
    serde_json::to_writer(&mut bytes, ledger).expect("a ledger serializes to JSON");
    seal_frame(&mut bytes, LEDGER_MAGIC.len());
    let temporary = dir.join(LEDGER_TEMPORARY);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(&bytes)?;
    drop(file);
    fs::rename(&temporary, dir.join(LEDGER_FILE))
}

/// fsyncs a directory: the names created, renamed or removed in it last.
pub(super) fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
