//! What opening the store does about damage in its write-ahead log, once
//! [`crate::wal`] has read past it.
//!
//! Each unreadable stretch is one of three kinds. Damage with a valid frame
//! after it, in its segment or a later one, held acknowledged records (a
//! frame is acknowledged only once on disk, and a later frame means the
//! writer went on): it is **lost data**, logged as an error, counted
//! ([`crate::Counters::wal_lost_regions`] and the rest) and returned in the
//! [`RecoveryReport`] for the server to write as a `system` record.
//!
//! Damage with nothing after it is ambiguous: a write a crash cut short
//! (never acknowledged) or a flipped byte in the last frame (acknowledged,
//! fsynced) both end the log in a frame that fails its checksum. The rule
//! that tells them apart is the frame's header. A write is one `write` of
//! the whole frame, header first; cut short, the file ends inside it, or,
//! in a reused file (the spare), the older segment's bytes follow what was
//! written, and the header's length then ends the frame inside those older
//! bytes, where no older frame starts. So damage at the end that is exactly
//! one whole frame ([`Damage::whole_frame`]: its number is this segment's,
//! or its checksum proves it, and its length ends it at the file's end or where an older segment's
//! frame starts) is reported as **possibly lost**: an error, its own
//! counters ([`crate::Counters::wal_possibly_lost_regions`] and the rest),
//! the ids its payload still reads (checked against the frame before it),
//! and a `system` record saying its records MAY have been acknowledged.
//! Anything else at the end is a **torn tail**: logged as a warning and
//! counted, not reported as loss.
//!
//! Why this rule: a flipped byte anywhere but the header's length (4 of a
//! frame's bytes: the header then no longer says where the frame ends, and
//! the stretch is taken for a torn tail; a damaged number is proved by the
//! checksum) is told, and an ordinary crash rarely trips it. A kill -9
//! cuts a write only between the pages it copies, so a torn frame needs a
//! frame over a page and a kill within that copy; it is then reported
//! possibly lost only in a reused file whose older frame ended exactly
//! where the torn frame's header says it ends (same-sized batches,
//! aligned). Measured: 69 kill -9s under load (the e2e `api::kill_9`
//! tests, reused files among them, and the `faults` kill -9 rounds) gave
//! two torn tails and no possible loss. A frame trailer (the header again
//! at the frame's end) would rule out even the aligned case, at the cost of
//! a new frame format; a false alarm says "may", so this rule was kept.
//!
//! Nothing is destroyed: before a segment is rewritten without its damage
//! (when valid frames follow it) the segment as it was is kept under
//! `damaged/<segment>.<unix ms>.log`; before a torn tail is cut off, its
//! bytes are kept under `damaged/<segment>.<unix ms>.from-<offset>.log`
//! (files 0600, the folder 0700; the operator removes them).
//!
//! Ids never go backwards: ids in a log are consecutive (or, given from
//! outside by `Store::append_at`, rising with room between batches; a
//! count is then bounded by the bytes), so lost records'
//! ids lie between the frames around them, and a tail's lie above
//! everything read. A record takes at least one byte of a frame, so the
//! next id is set above the highest id read plus the bytes of every
//! stretch with no known id above it: a live tail resuming after an id it
//! got before the crash misses nothing stored after it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::part::StreamLabels;
use crate::wal::{self, Damage, Recovered};
use crate::StoreError;

/// The folder, in the store's, where damaged log bytes are kept.
pub const DAMAGED_DIR: &str = "damaged";

/// What replay tells recovery about one frame: its ids and its stream.
#[derive(Clone, Debug)]
pub(crate) struct FrameSummary {
    /// First and last id of its records.
    pub ids: Option<(u64, u64)>,
    pub tenant: String,
    pub labels: StreamLabels,
}

/// What opening the store found damaged in its write-ahead log
/// ([`crate::Store::recovery_report`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Each damaged stretch, in log order.
    pub damage: Vec<WalDamage>,
    /// Ids skipped so that none a damaged stretch may have held is issued
    /// again.
    pub skipped_ids: u64,
}

impl RecoveryReport {
    /// The stretches that held acknowledged records.
    pub fn lost(&self) -> impl Iterator<Item = &WalDamage> {
        self.damage
            .iter()
            .filter(|damage| damage.kind == DamageKind::Lost)
    }

    /// The stretches that held acknowledged records, and those that may
    /// have: what the server tells about.
    pub fn lost_or_possibly(&self) -> impl Iterator<Item = &WalDamage> {
        self.damage
            .iter()
            .filter(|damage| damage.kind != DamageKind::TornTail)
    }

    fn total(&self, kind: DamageKind, figure: impl Fn(&WalDamage) -> u64) -> u64 {
        self.damage
            .iter()
            .filter(|damage| damage.kind == kind)
            .map(figure)
            .sum()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DamageKind {
    /// Valid frames follow it: acknowledged records were lost.
    Lost,
    /// Nothing follows it: most likely a write a crash cut short.
    TornTail,
    /// Nothing follows it, but it is one whole frame that fails its
    /// checksum: a flipped byte in a frame that may have been acknowledged.
    PossiblyLost,
}

impl DamageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DamageKind::Lost => "lost",
            DamageKind::TornTail => "torn_tail",
            DamageKind::PossiblyLost => "possibly_lost",
        }
    }
}

/// One damaged stretch of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalDamage {
    pub kind: DamageKind,
    pub segment: u64,
    /// Where it starts in its segment file, and its length.
    pub offset: u64,
    pub bytes: u64,
    /// The records it held have ids above this one (the last id read
    /// before it) …
    pub after_id: Option<u64>,
    /// … and below this one (the first id read after it).
    pub before_id: Option<u64>,
    /// How many records it held, when both bounds are known (ids in a log
    /// are consecutive, so the count is exact), or, for a possibly lost
    /// frame, when its payload still tells them and their first id follows
    /// the frame before it.
    pub records: Option<u64>,
    /// Whose records were lost, when it can be known: the stretch is one
    /// frame whose labels still read, and an intact frame beside it names
    /// the same tenant, app, runner and boot.
    pub owner: Option<(String, StreamLabels)>,
    /// Where its bytes were kept: the whole segment as it was
    /// (`<segment>.<ms>.log`), or the stretch alone (`….from-<offset>.log`).
    pub copy: Option<PathBuf>,
}

impl FrameSummary {
    pub fn of(batch: &wal::Batch) -> FrameSummary {
        FrameSummary {
            ids: batch
                .rows
                .first()
                .zip(batch.rows.last())
                .map(|(a, b)| (a.id, b.id)),
            tenant: batch.tenant.clone(),
            labels: batch.labels.clone(),
        }
    }

    /// The stream a damaged frame names, if the start of its payload (the
    /// labels, before the records) still reads.
    pub fn peek(payload: &[u8]) -> Option<FrameSummary> {
        let (labels, rest) = postcard::take_from_bytes::<FrameLabels>(payload).ok()?;
        // Then the records: their count, and the first one's id. Unchecked
        // bytes: `Recovery::resolve` uses them only when the id follows the
        // frame before, and no count is more than the bytes could hold.
        let ids = postcard::take_from_bytes::<u64>(rest)
            .ok()
            .filter(|(count, rows)| *count > 0 && *count <= rows.len() as u64)
            .and_then(|(count, rows)| {
                let (first, _) = postcard::take_from_bytes::<u64>(rows).ok()?;
                Some((first, first.checked_add(count - 1)?))
            });
        Some(FrameSummary {
            ids,
            tenant: labels.tenant,
            labels: StreamLabels {
                app: labels.app,
                version: labels.version,
                runner: labels.runner,
                boot: labels.boot,
                source: labels.source,
            },
        })
    }
}

/// The start of a frame's payload, as [`crate::wal`] writes it: its labels.
#[derive(serde::Deserialize)]
struct FrameLabels {
    tenant: String,
    app: String,
    version: String,
    runner: String,
    boot: String,
    source: tailwater_model::Source,
}

/// Recovery across the log's segments, oldest first: frames on one side of
/// a stretch may be in another segment.
pub(crate) struct Recovery<'a> {
    dir: &'a Path,
    /// The highest id in parts: a bound for damage before the first frame.
    parts_max_id: u64,
    last_frame: Option<FrameSummary>,
    /// Stretches with no frame after them yet.
    pending: Vec<(Damage<FrameSummary>, u64, Option<PathBuf>)>,
    report: RecoveryReport,
}

impl<'a> Recovery<'a> {
    pub fn new(dir: &'a Path, parts_max_id: u64) -> Recovery<'a> {
        Recovery {
            dir,
            parts_max_id,
            last_frame: None,
            pending: Vec::new(),
            report: RecoveryReport::default(),
        }
    }

    /// Keeps segment `segment`'s damaged bytes, rewrites or cuts its file so
    /// the next open reads it cleanly, and takes in its damage.
    pub fn segment(
        &mut self,
        segment: u64,
        path: &Path,
        recovered: Recovered<FrameSummary>,
    ) -> Result<(), StoreError> {
        let copy = settle(self.dir, segment, path, &recovered).map_err(StoreError::io(path))?;
        if let Some(first) = &recovered.first {
            for (damage, segment, copy) in std::mem::take(&mut self.pending) {
                self.resolve(damage, segment, copy, Some(first));
            }
        }
        for mut damage in recovered.damage {
            if damage.before.is_none() {
                damage.before = self.last_frame.clone();
            }
            match damage.after.take() {
                Some(after) => self.resolve(damage, segment, copy.clone(), Some(&after)),
                None => self.pending.push((damage, segment, copy.clone())),
            }
        }
        if recovered.last.is_some() {
            self.last_frame = recovered.last;
        }
        Ok(())
    }

    /// The report, once every segment is read; logs each stretch.
    pub fn finish(mut self) -> RecoveryReport {
        for (damage, segment, copy) in std::mem::take(&mut self.pending) {
            self.resolve(damage, segment, copy, None);
        }
        self.report.skipped_ids = self
            .report
            .damage
            .iter()
            .filter(|damage| damage.before_id.is_none())
            .map(|damage| damage.bytes)
            .sum();
        self.report
    }

    fn resolve(
        &mut self,
        damage: Damage<FrameSummary>,
        segment: u64,
        copy: Option<PathBuf>,
        after: Option<&FrameSummary>,
    ) {
        let after_id = damage
            .before
            .as_ref()
            .and_then(|frame| frame.ids)
            .map(|(_, last)| last)
            .or((self.parts_max_id > 0).then_some(self.parts_max_id));
        let before_id = after.and_then(|frame| frame.ids).map(|(first, _)| first);
        let kind = match after {
            Some(_) => DamageKind::Lost,
            None if damage.whole_frame => DamageKind::PossiblyLost,
            None => DamageKind::TornTail,
        };
        // What a possibly lost frame's payload tells of its ids, if they
        // follow the frame before it (ids in a log are consecutive).
        let peeked_ids = damage
            .peeked
            .as_ref()
            .and_then(|peeked| peeked.ids)
            .filter(|(first, _)| after_id.is_none_or(|above| *first == above + 1))
            .filter(|_| kind == DamageKind::PossiblyLost);
        // Not taken as `before_id`: its count is unchecked, and ids are
        // skipped as for a stretch with no id above it.
        // Ids given from outside ([`crate::Store::append_at`]) leave room
        // between frames; a record takes at least a byte, so the bytes
        // bound the count.
        let records = match (after_id, before_id) {
            (Some(above), Some(below)) if below > above => {
                Some((below - above - 1).min(damage.len))
            }
            _ => peeked_ids.map(|(first, last)| last - first + 1),
        };
        // Whose records were lost, only when the damaged frame's own labels
        // still read and an intact frame beside it names the same stream:
        // neighbours alone may be another stream's, and a damaged label
        // alone may name anyone.
        let owner = damage
            .peeked
            .as_ref()
            .filter(|peeked| {
                damage
                    .before
                    .iter()
                    .chain(after)
                    .any(|beside| same_stream(peeked, beside))
            })
            .map(|peeked| (peeked.tenant.clone(), peeked.labels.clone()));
        let found = WalDamage {
            kind,
            segment,
            offset: damage.offset,
            bytes: damage.len,
            after_id,
            before_id,
            records,
            owner,
            copy,
        };
        log(&found);
        self.report.damage.push(found);
    }
}

fn same_stream(a: &FrameSummary, b: &FrameSummary) -> bool {
    a.tenant == b.tenant
        && a.labels.app == b.labels.app
        && a.labels.runner == b.labels.runner
        && a.labels.boot == b.labels.boot
}

fn log(damage: &WalDamage) {
    let copy = damage.copy.as_ref().map(|copy| copy.display().to_string());
    let owner = damage
        .owner
        .as_ref()
        .map(|(tenant, labels)| format!("{tenant}/{}/{}", labels.app, labels.runner));
    match damage.kind {
        DamageKind::Lost => tracing::error!(
            segment = damage.segment,
            offset = damage.offset,
            bytes = damage.bytes,
            records = damage.records,
            after_id = damage.after_id,
            before_id = damage.before_id,
            owner,
            copy,
            "the write-ahead log was damaged: acknowledged records in it are lost; the valid frames after the damage were kept, and the damaged bytes are kept in the copy"
        ),
        DamageKind::TornTail => tracing::warn!(
            segment = damage.segment,
            offset = damage.offset,
            bytes = damage.bytes,
            after_id = damage.after_id,
            copy,
            "the write-ahead log ended in a torn or damaged frame, most likely a write a crash cut short (never acknowledged): cut it off, its bytes kept in the copy"
        ),
        DamageKind::PossiblyLost => tracing::error!(
            segment = damage.segment,
            offset = damage.offset,
            bytes = damage.bytes,
            records = damage.records,
            after_id = damage.after_id,
            owner,
            copy,
            "the write-ahead log ended in a whole frame that fails its checksum: a damaged byte, not a write a crash cut short; its records MAY have been acknowledged and are lost; cut it off, its bytes kept in the copy"
        ),
    }
}

impl crate::Counters {
    /// Counters of a store whose open found `report`.
    pub(crate) fn recovered(report: &RecoveryReport) -> crate::Counters {
        crate::Counters {
            wal_lost_regions: report.lost().count() as u64,
            wal_lost_bytes: report.total(DamageKind::Lost, |damage| damage.bytes),
            wal_lost_records: report.total(DamageKind::Lost, |damage| {
                damage.records.unwrap_or_default()
            }),
            wal_torn_tail_bytes: report.total(DamageKind::TornTail, |damage| damage.bytes),
            wal_possibly_lost_regions: report.total(DamageKind::PossiblyLost, |_| 1),
            wal_possibly_lost_records: report.total(DamageKind::PossiblyLost, |damage| {
                damage.records.unwrap_or_default()
            }),
            ..crate::Counters::default()
        }
    }
}

/// Keeps a segment's damaged bytes, then leaves its file as the next open
/// should read it: rewritten without the damage when frames follow it, cut
/// after its last frame otherwise. Returns where the bytes were kept.
fn settle<T>(
    dir: &Path,
    segment: u64,
    path: &Path,
    recovered: &Recovered<T>,
) -> io::Result<Option<PathBuf>> {
    let stamp = jiff::Timestamp::now().as_millisecond();
    if recovered.has_gaps() {
        let copy = damaged_dir(dir)?.join(format!("{segment:012}.{stamp}.log"));
        // A link, not a copy: the rewrite puts a new file in its place, so
        // the old one's bytes stay as they were, at no cost.
        if fs::hard_link(path, &copy).is_err() {
            fs::copy(path, &copy)?;
            File::open(&copy)?.sync_all()?;
        }
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o600))?;
        File::open(copy.parent().expect("in the damaged folder"))?.sync_all()?;
        wal::rewrite(path, recovered)?;
        return Ok(Some(copy));
    }
    let valid_len = recovered.valid_len();
    let copy = match recovered.damage.last() {
        Some(tail) => {
            let copy =
                damaged_dir(dir)?.join(format!("{segment:012}.{stamp}.from-{}.log", tail.offset));
            let mut from = File::open(path)?;
            from.seek(SeekFrom::Start(tail.offset))?;
            let mut to = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&copy)?;
            io::copy(&mut (&mut from).take(tail.len), &mut to)?;
            to.flush()?;
            to.sync_all()?;
            File::open(copy.parent().expect("in the damaged folder"))?.sync_all()?;
            Some(copy)
        }
        None => None,
    };
    // Also what follows the frames of a reused file: not read again.
    if recovered.file_len > valid_len {
        let file = OpenOptions::new().write(true).open(path)?;
        file.set_len(valid_len)?;
        file.sync_all()?;
    }
    Ok(copy)
}

/// `damaged/`, created (0700) if need be.
fn damaged_dir(dir: &Path) -> io::Result<PathBuf> {
    let damaged = dir.join(DAMAGED_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&damaged) {
        Ok(()) => {
            File::open(dir)?.sync_all()?;
            Ok(damaged)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(damaged),
        Err(error) => Err(error),
    }
}
