//! The write-ahead log: every appended batch, framed and checksummed, before
//! it is acknowledged.
//!
//! The log is a series of numbered segments, one for each memtable. A
//! segment file starts with [`MAGIC`], then frames of
//! `[payload length: u32 LE][crc32: u32 LE][segment number: u64 LE][payload]`,
//! the checksum over the segment number and the payload. Recovery reads
//! frames from the start; at one that is cut short or fails its checksum it
//! resynchronises: it skips to the next offset where a whole frame of the
//! segment checks, and goes on. Damage with valid frames after it is lost
//! acknowledged data (one flipped byte costs its frame, not the rest of the
//! log); damage at the end is a write a crash cut short, unless it is one
//! whole frame of the segment ([`Damage::whole_frame`]), which may be an
//! acknowledged frame with a flipped byte. What to do with each (report,
//! copy aside, rewrite or cut) is [`crate::recovery`]'s.
//!
//! Once a segment's records are in parts, its file is kept as the spare
//! ([`SPARE`]) and the next segment is written over it, from the start
//! (as RocksDB recycles its logs): an fsync then writes only data, while
//! growing a file makes each one update the inode and allocate blocks as
//! well, which took twice the kernel's time per fsync here. What follows
//! the last frame of a reused file is the older segment's: its frames carry
//! the older number, so recovery knows where the segment ends. A segment
//! is cut to its length when it is done, so only the segment being written
//! at a crash can end in older bytes. A closed store removes its spare.
//!
//! What the log keeps once its records are in parts is bounded
//! ([`crate::StoreOptions::wal_spare_max_bytes`]): a segment that becomes
//! the spare is cut, at the end of a frame, to at most that many bytes
//! ([`keep_spare_within`]), so the spare and the older bytes a reused
//! segment holds past its own frames are each at most that. A segment
//! longer than the spare grows its file past it as a new file does. The
//! cut is at a frame's end so that what a reused file holds past its own
//! frames is still whole older frames, as recovery expects; the spare's
//! records are all in parts, so a crash during or after the cut loses
//! nothing (it is not fsynced: a cut the crash undoes only leaves the
//! spare longer). A store that goes a tick of its background thread
//! without an append keeps no more than its frames: the spare is removed
//! and the segment being written cut to its frames
//! (`Inner::trim_idle_log`); the next two segments then grow
//! their files, and reuse resumes after them.
//!
//! Segments of the first format (no magic, frames without the segment
//! number) are still read.
//!
//! The payload is one appended batch of one stream ([`WalWriter::append_batch`]):
//! its labels once, then each record's [`Row`] (id, time, sequence number,
//! level, output, request id, message and fields as JSON), in postcard.
//!
//! Writing and syncing are separate: the store writes frames under its
//! writer lock and syncs outside it, so concurrent appends share one fsync
//! (group commit).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tailwater_model::Source;

use crate::part::StreamLabels;
use crate::row::Row;

/// The first bytes of a segment of this format. (No frame of the first
/// format can start so: read as a length, they are above `MAX_FRAME_LEN`.)
pub(crate) const MAGIC: &[u8; 8] = b"TWLOG002";
/// A frame's header: length, checksum, segment number.
pub(crate) const HEADER_LEN: usize = 16;
/// A frame's header in the first format: length, checksum.
pub(crate) const V1_HEADER_LEN: usize = 8;
/// A length above this cannot be one we wrote: the header itself is garbage.
const MAX_FRAME_LEN: u32 = 1 << 30;
/// The file name, in the log's folder, of a done segment kept for reuse.
pub const SPARE: &str = "spare.log";

/// Appends frames to a segment.
pub struct WalWriter {
    file: Arc<File>,
    path: PathBuf,
    segment: u64,
    /// Bytes of whole, valid frames: where the next frame starts.
    len: u64,
    frame: Vec<u8>,
}

impl WalWriter {
    /// Starts segment `segment` at `path`: in `spare` (a done segment's
    /// file, renamed and written over from its start) when there is one,
    /// else in a new file.
    pub fn create(path: &Path, segment: u64, spare: Option<&Path>) -> io::Result<WalWriter> {
        let reused = spare.is_some_and(|spare| fs::rename(spare, path).is_ok());
        let mut file = crate::private_file()
            .create(true)
            .read(true)
            .write(true)
            .truncate(!reused)
            .open(path)?;
        file.write_all_at(MAGIC, 0)?;
        if let Some(parent) = path.parent() {
            // Make the file's directory entry durable: its name is its
            // segment number.
            File::open(parent)?.sync_all()?;
        }
        file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
        Ok(WalWriter {
            file: Arc::new(file),
            path: path.to_owned(),
            segment,
            len: MAGIC.len() as u64,
            frame: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log file, to fsync without holding the writer.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Writes one batch of one stream of `tenant` as a frame (to the page
    /// cache: see [`WalWriter::file`] for making it durable), serialized
    /// straight into the frame. On failure the log is cut back to its last
    /// whole frame, so a later append never lands behind a half-written one.
    pub fn append_batch(
        &mut self,
        tenant: &str,
        labels: &StreamLabels,
        rows: &[Row],
    ) -> io::Result<()> {
        self.frame.clear();
        self.frame.resize(HEADER_LEN, 0);
        let batch = Frame {
            tenant,
            app: &labels.app,
            version: &labels.version,
            runner: &labels.runner,
            boot: &labels.boot,
            source: labels.source,
            records: rows,
        };
        postcard::to_io(&batch, &mut self.frame).expect("writing to a vector cannot fail");
        self.write_frame()
    }

    /// Writes one frame of `payload` (as [`WalWriter::append_batch`]).
    #[cfg(test)]
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        self.frame.clear();
        self.frame.resize(HEADER_LEN, 0);
        self.frame.extend_from_slice(payload);
        self.write_frame()
    }

    /// Fills in the header of the frame in `self.frame` and writes it.
    fn write_frame(&mut self) -> io::Result<()> {
        let (header, payload) = self.frame.split_at_mut(HEADER_LEN);
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME_LEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "batch too large for one log frame",
                )
            })?;
        let segment = self.segment.to_le_bytes();
        header[0..4].copy_from_slice(&len.to_le_bytes());
        header[4..8].copy_from_slice(&frame_crc(&segment, payload).to_le_bytes());
        header[8..16].copy_from_slice(&segment);
        let mut file = &*self.file;
        match file.write_all(&self.frame) {
            Ok(()) => {
                self.len += self.frame.len() as u64;
                Ok(())
            }
            Err(error) => {
                // Best effort: if even this fails, recovery truncates the
                // torn frame on the next open.
                let _ = self.file.set_len(self.len);
                let _ = file.seek(SeekFrom::Start(self.len));
                Err(error)
            }
        }
    }
}

impl WalWriter {
    /// Cuts what the file holds past this segment's frames (the older
    /// frames of a reused file). Safe at any time between appends: what
    /// it removes is another segment's, all in parts.
    pub fn cut_older(&self) -> io::Result<()> {
        if self.file.metadata()?.len() > self.len {
            self.file.set_len(self.len)?;
        }
        Ok(())
    }
}

impl Drop for WalWriter {
    /// A done segment is cut to its frames: what a reused file held past
    /// them is not left for a recovery to read as a torn tail.
    fn drop(&mut self) {
        let _ = self.cut_older();
    }
}

pub(crate) fn frame_crc(segment: &[u8; 8], payload: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(segment);
    crc.update(payload);
    crc.finalize()
}

/// Whether the file at `path` is a segment of this format (so worth
/// keeping as the spare).
pub fn is_current_format(path: &Path) -> bool {
    let mut magic = [0; MAGIC.len()];
    File::open(path).is_ok_and(|file| file.read_exact_at(&mut magic, 0).is_ok() && &magic == MAGIC)
}

/// Cuts the spare at `path` (a done segment, all its records in parts) to
/// at most `max` bytes, at the end of a frame, or removes it when `max`
/// cannot hold its magic (0 keeps no spare). A failure to cut removes it:
/// the spare only saves time, never data.
pub fn keep_spare_within(path: &Path, max: u64) {
    let cut = match max < MAGIC.len() as u64 {
        true => Ok(false),
        false => cut_to_frames_within(path, max).map(|()| true),
    };
    match cut {
        Ok(true) => {}
        Ok(false) => remove_spare(path),
        Err(error) => {
            tracing::warn!(%error, path = %path.display(), "could not cut the spare log segment to its bound; removing it instead");
            remove_spare(path);
        }
    }
}

fn remove_spare(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!(%error, path = %path.display(), "could not remove the spare log segment");
        }
    }
}

/// Cuts the segment at `path` after its last frame that ends within `max`
/// bytes (after the magic, when none does), reading only frame headers.
/// A segment already within `max` is left as it is.
fn cut_to_frames_within(path: &Path, max: u64) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    if len <= max {
        return Ok(());
    }
    let mut end = MAGIC.len() as u64;
    let mut header = [0; HEADER_LEN];
    while file.read_exact_at(&mut header, end).is_ok() {
        let frame_len = u32::from_le_bytes(header[0..4].try_into().unwrap());
        let next = end + (HEADER_LEN as u64) + u64::from(frame_len);
        if frame_len > MAX_FRAME_LEN || next > len.min(max) {
            break;
        }
        end = next;
    }
    file.set_len(end)
}

/// A batch as the log holds it: labels once, then the rows.
#[derive(Serialize)]
struct Frame<'a> {
    tenant: &'a str,
    app: &'a str,
    version: &'a str,
    runner: &'a str,
    boot: &'a str,
    source: Source,
    records: &'a [Row],
}

/// [`Frame`], read back.
#[derive(Deserialize)]
struct ReadFrame {
    tenant: String,
    app: String,
    version: String,
    runner: String,
    boot: String,
    source: Source,
    records: Vec<Row>,
}

/// One stream's batch, read back from the log.
pub struct Batch {
    pub tenant: String,
    pub labels: StreamLabels,
    pub rows: Vec<Row>,
}

/// Decodes a log payload back into its batch.
pub fn decode_batch(payload: &[u8]) -> Result<Batch, String> {
    let frame: ReadFrame = postcard::from_bytes(payload).map_err(|error| error.to_string())?;
    Ok(Batch {
        tenant: frame.tenant,
        labels: StreamLabels {
            app: frame.app,
            version: frame.version,
            runner: frame.runner,
            boot: frame.boot,
            source: frame.source,
        },
        rows: frame.records,
    })
}

/// A stretch of a segment that holds no frame recovery could read: a torn
/// write, or damaged bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage<T> {
    /// Where it starts in the file, and how many bytes it covers.
    pub offset: u64,
    pub len: u64,
    /// What `replay` returned for the valid frame just before it and just
    /// after it in this segment (`None` at the segment's start or end).
    pub before: Option<T>,
    pub after: Option<T>,
    /// What `peek` made of the payload, when the stretch is exactly one
    /// frame of this segment (its header's length and number intact).
    pub peeked: Option<T>,
    /// Whether the stretch is exactly one frame of this segment: its
    /// header's number is this segment's (or, damaged, the checksum with
    /// this segment's number verifies), and its length ends it where the
    /// next frame, an older segment's frame or the file's end begins. At
    /// the end of a segment this tells a complete frame that fails its
    /// checksum (a flipped byte, possibly in an acknowledged frame) from a
    /// write cut short (see [`crate::recovery`]).
    pub whole_frame: bool,
}

impl<T> Damage<T> {
    /// Damage starting at `offset`, after the frame `before`.
    fn at(offset: usize, before: Option<T>) -> Damage<T> {
        Damage {
            offset: offset as u64,
            len: 0,
            before,
            after: None,
            peeked: None,
            whole_frame: false,
        }
    }
}

/// What recovery found in one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered<T> {
    /// Whether the file is of this format (starts with [`MAGIC`], or did
    /// before a damaged byte: see [`WalReader::recover`]).
    pub current: bool,
    /// The byte ranges of the frames replayed, runs of adjacent frames
    /// joined: what a rewrite of the segment keeps.
    pub kept: Vec<Range<u64>>,
    /// Frames replayed.
    pub batches: u64,
    /// What `replay` returned for the first and the last frame replayed.
    pub first: Option<T>,
    pub last: Option<T>,
    /// The unreadable stretches, in file order. Only the last may have no
    /// frame after it (a torn tail, or damage at the segment's end).
    pub damage: Vec<Damage<T>>,
    /// Where this segment's bytes end: what follows is nothing, or the
    /// older segment a reused file held.
    pub end: u64,
    pub file_len: u64,
}

impl<T> Recovered<T> {
    fn empty() -> Recovered<T> {
        Recovered {
            current: true,
            kept: Vec::new(),
            batches: 0,
            first: None,
            last: None,
            damage: Vec::new(),
            end: 0,
            file_len: 0,
        }
    }

    /// Bytes of damage (what recovery had to skip).
    #[cfg(test)]
    pub fn discarded_bytes(&self) -> u64 {
        self.damage.iter().map(|damage| damage.len).sum()
    }

    /// Whether valid frames follow some damage: the segment cannot just be
    /// cut, it must be rewritten without the damage.
    pub fn has_gaps(&self) -> bool {
        self.damage.iter().any(|damage| damage.after.is_some())
    }

    /// Where the segment's last valid frame ends: what a cut keeps.
    pub fn valid_len(&self) -> u64 {
        self.kept
            .last()
            .map_or(if self.current { MAGIC.len() as u64 } else { 0 }, |kept| {
                kept.end
            })
    }
}

/// What [`frame_at`] found at an offset.
enum At {
    /// A whole frame of the segment, checksum right: its payload.
    Frame { payload: Range<usize>, end: usize },
    /// A whole frame of an older segment: a reused file's older bytes.
    Older,
    /// Nothing that is a frame.
    Nothing,
}

/// Reads the frame at `pos` of `bytes`, if one is there.
fn frame_at(bytes: &[u8], pos: usize, current: bool, segment: u64) -> At {
    let header_len = if current { HEADER_LEN } else { V1_HEADER_LEN };
    let Some(header) = bytes.get(pos..pos + header_len) else {
        return At::Nothing;
    };
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let start = pos + header_len;
    let end = start + len as usize;
    if len > MAX_FRAME_LEN || end > bytes.len() {
        return At::Nothing;
    }
    let payload = &bytes[start..end];
    if !current {
        return if crc32fast::hash(payload) == crc {
            At::Frame {
                payload: start..end,
                end,
            }
        } else {
            At::Nothing
        };
    }
    let tag: [u8; 8] = header[8..16].try_into().unwrap();
    // Only frames that could be ours or an older segment's are worth a
    // checksum: this keeps a scan through damage cheap.
    if u64::from_le_bytes(tag) > segment || frame_crc(&tag, payload) != crc {
        return At::Nothing;
    }
    if u64::from_le_bytes(tag) < segment {
        At::Older
    } else {
        At::Frame {
            payload: start..end,
            end,
        }
    }
}

/// Writes the segment file at `path` anew with only the frames
/// `recovered` kept (after the magic, if of this format), through a
/// temporary file renamed over it: a crash leaves the old file or the new,
/// and the old one's inode, if linked elsewhere first, keeps its bytes.
pub fn rewrite<T>(path: &Path, recovered: &Recovered<T>) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut old = File::open(path)?;
    let tmp = path.with_extension("log.tmp");
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    if recovered.current {
        out.write_all(MAGIC)?;
    }
    for run in &recovered.kept {
        old.seek(SeekFrom::Start(run.start))?;
        let copied = io::copy(&mut io::Read::take(&mut old, run.end - run.start), &mut out)?;
        if copied != run.end - run.start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the log segment shrank while it was rewritten",
            ));
        }
    }
    out.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The payload of `damage` when it is exactly one frame of `segment`: its
/// header's length ends it, and its number is the segment's; or its
/// checksum proves the whole of it was written, and only its length is
/// damaged (a flipped byte there would otherwise pass for a torn write).
fn one_frame<'a, T>(
    bytes: &'a [u8],
    damage: &Damage<T>,
    current: bool,
    segment: u64,
) -> Option<&'a [u8]> {
    let header_len = if current { HEADER_LEN } else { V1_HEADER_LEN };
    let start = usize::try_from(damage.offset).ok()?;
    let header = bytes.get(start..start + header_len)?;
    let end = start.checked_add(usize::try_from(damage.len).ok()?)?;
    let payload = bytes.get(start + header_len..end)?;
    let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
    let checks = || match current {
        true => frame_crc(&segment.to_le_bytes(), payload) == crc,
        false => crc32fast::hash(payload) == crc,
    };
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap()) as u64;
    if header_len as u64 + len != damage.len {
        return checks().then_some(payload);
    }
    // A damaged number is still ours when the checksum proves it: the
    // frame was written whole, by this segment.
    let ours = !current || header[8..16] == segment.to_le_bytes() || checks();
    ours.then_some(payload)
}

/// Replays a log.
pub struct WalReader;

impl WalReader {
    /// Calls `replay` with the payload of each valid frame of segment
    /// `segment`, in order, and says what it could not read.
    ///
    /// A frame that is cut short, fails its checksum, or whose payload
    /// `replay` rejects (returns `None` for) starts damage; recovery then
    /// looks for the next offset where a whole frame of this segment
    /// checks, and goes on from there (resynchronises), so one damaged
    /// byte costs its frame, not the rest of the segment. The segment ends
    /// at the end of the file or at the first whole frame of an older
    /// segment (the rest of a reused file). Damage that is exactly one
    /// frame is handed to `peek`, which may read what is left of it (whose
    /// it was). A file that does not start
    /// with [`MAGIC`] but holds a frame of this segment right after where
    /// it would be is read as this format with a damaged magic. A missing
    /// file is an empty log.
    pub fn recover<T: Clone>(
        path: &Path,
        segment: u64,
        mut replay: impl FnMut(&[u8]) -> Option<T>,
        mut peek: impl FnMut(&[u8]) -> Option<T>,
    ) -> io::Result<Recovered<T>> {
        // Whole: resynchronising scans back and forth over it, and the
        // memtable it is replayed into holds as much.
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Recovered::empty()),
            Err(error) => return Err(error),
        };
        let magic = bytes.starts_with(MAGIC);
        let current = magic
            || (!matches!(frame_at(&bytes, 0, false, segment), At::Frame { .. })
                && matches!(
                    frame_at(&bytes, MAGIC.len(), true, segment),
                    At::Frame { .. }
                ));
        let mut recovered = Recovered {
            current,
            end: bytes.len() as u64,
            file_len: bytes.len() as u64,
            ..Recovered::empty()
        };
        let mut pos = if current { MAGIC.len() } else { 0 };
        let mut damage: Option<Damage<T>> = (current && !magic).then(|| Damage::at(0, None));
        while pos < bytes.len() {
            match frame_at(&bytes, pos, current, segment) {
                At::Frame { payload, end } => match replay(&bytes[payload]) {
                    Some(summary) => {
                        if let Some(mut ended) = damage.take() {
                            ended.len = pos as u64 - ended.offset;
                            ended.after = Some(summary.clone());
                            let frame = one_frame(&bytes, &ended, current, segment);
                            ended.whole_frame = frame.is_some();
                            ended.peeked = frame.and_then(&mut peek);
                            recovered.damage.push(ended);
                        }
                        match recovered.kept.last_mut() {
                            Some(run) if run.end == pos as u64 => run.end = end as u64,
                            _ => recovered.kept.push(pos as u64..end as u64),
                        }
                        recovered.batches += 1;
                        if recovered.first.is_none() {
                            recovered.first = Some(summary.clone());
                        }
                        recovered.last = Some(summary);
                        pos = end;
                    }
                    None => {
                        // Checksummed but unreadable: skip the whole frame.
                        damage.get_or_insert_with(|| Damage::at(pos, recovered.last.clone()));
                        pos = end;
                    }
                },
                At::Older => {
                    recovered.end = pos as u64;
                    break;
                }
                At::Nothing => {
                    damage.get_or_insert_with(|| Damage::at(pos, recovered.last.clone()));
                    pos += 1;
                }
            }
        }
        if let Some(mut tail) = damage {
            tail.len = recovered.end - tail.offset;
            // A later segment may show it was no torn write.
            let frame = one_frame(&bytes, &tail, current, segment);
            tail.whole_frame = frame.is_some();
            tail.peeked = frame.and_then(&mut peek);
            recovered.damage.push(tail);
        }
        Ok(recovered)
    }
}

/// A writer over `path` opened read-only, so every write fails as a full
/// or failing disk makes it fail: for tests of what a failed append leaves.
#[cfg(test)]
pub fn failing_writer(path: &Path) -> WalWriter {
    WalWriter {
        file: Arc::new(File::open(path).expect("the segment opens for reading")),
        path: path.to_owned(),
        segment: u64::MAX,
        len: 0,
        frame: Vec::new(),
    }
}
