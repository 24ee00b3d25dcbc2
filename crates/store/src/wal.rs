//! The write-ahead log: every appended batch, framed and checksummed, before
//! it is acknowledged.
//!
//! The log is a series of numbered segments, one for each memtable. A
//! segment file starts with [`MAGIC`], then frames of
//! `[payload length: u32 LE][crc32: u32 LE][segment number: u64 LE][payload]`,
//! the checksum over the segment number and the payload. Recovery reads
//! frames from the start and stops at the first one that is cut short or
//! fails its checksum: that and everything after it is a write a crash
//! interrupted (never acknowledged), and is truncated away.
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
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tailwater_model::Source;

use crate::part::StreamLabels;
use crate::row::Row;

/// The first bytes of a segment of this format. (No frame of the first
/// format can start so: read as a length, they are above `MAX_FRAME_LEN`.)
const MAGIC: &[u8; 8] = b"TWLOG002";
/// A frame's header: length, checksum, segment number.
const HEADER_LEN: usize = 16;
/// A frame's header in the first format: length, checksum.
const V1_HEADER_LEN: usize = 8;
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
        let mut file = OpenOptions::new()
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

impl Drop for WalWriter {
    /// A done segment is cut to its frames: what a reused file held past
    /// them is not left for a recovery to read as a torn tail.
    fn drop(&mut self) {
        if self.file.metadata().is_ok_and(|meta| meta.len() > self.len) {
            let _ = self.file.set_len(self.len);
        }
    }
}

fn frame_crc(segment: &[u8; 8], payload: &[u8]) -> u32 {
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

/// What recovery found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Bytes from the start of the file to the end of its last whole,
    /// valid frame.
    pub valid_len: u64,
    /// Frames replayed.
    pub batches: u64,
    /// Bytes after the last valid frame that are a torn or corrupt frame
    /// and what follows it (0 when the segment ended cleanly).
    pub discarded_bytes: u64,
}

/// Replays a log.
pub struct WalReader;

impl WalReader {
    /// Calls `replay` with the payload of each valid frame of segment
    /// `segment` in order, and stops at the first torn or corrupt frame,
    /// the first frame of an older segment (the rest of a reused file), or
    /// the first payload `replay` rejects (returns `false` for). A missing
    /// file is an empty log.
    pub fn recover(
        path: &Path,
        segment: u64,
        mut replay: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<Recovered> {
        let file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Recovered::default())
            }
            Err(error) => return Err(error),
        };
        let file_len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut recovered = Recovered::default();
        let mut magic = [0u8; MAGIC.len()];
        let current = read_full(&mut reader, &mut magic)? && &magic == MAGIC;
        let header_len = if current {
            recovered.valid_len = MAGIC.len() as u64;
            HEADER_LEN
        } else {
            reader.seek(SeekFrom::Start(0))?;
            V1_HEADER_LEN
        };
        let mut header = [0u8; HEADER_LEN];
        let header = &mut header[..header_len];
        let mut payload = Vec::new();
        let ended_cleanly = loop {
            if !read_full(&mut reader, header)? {
                break recovered.valid_len == file_len;
            }
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
            let frame_end = recovered.valid_len + (header_len as u64) + u64::from(len);
            if len > MAX_FRAME_LEN || frame_end > file_len {
                break false;
            }
            payload.resize(len as usize, 0);
            if !read_full(&mut reader, &mut payload)? {
                break false;
            }
            if current {
                let tag: [u8; 8] = header[8..16].try_into().unwrap();
                if frame_crc(&tag, &payload) != crc {
                    break false;
                }
                if u64::from_le_bytes(tag) != segment {
                    // A whole frame of the segment this file held before:
                    // this one ends here.
                    break u64::from_le_bytes(tag) < segment;
                }
            } else if crc32fast::hash(&payload) != crc {
                break false;
            }
            if !replay(&payload) {
                break false;
            }
            recovered.valid_len = frame_end;
            recovered.batches += 1;
        };
        if !ended_cleanly {
            recovered.discarded_bytes = file_len - recovered.valid_len;
        }
        Ok(recovered)
    }
}

/// Fills `buf`, or returns `false` at a clean or partial end of file.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_all(path: &Path, segment: u64) -> (Recovered, Vec<Vec<u8>>) {
        let mut payloads = Vec::new();
        let recovered = WalReader::recover(path, segment, |payload| {
            payloads.push(payload.to_vec());
            true
        })
        .unwrap();
        (recovered, payloads)
    }

    fn write_segment(path: &Path, segment: u64, payloads: &[&[u8]]) {
        let mut writer = WalWriter::create(path, segment, None).unwrap();
        for payload in payloads {
            writer.append(payload).unwrap();
        }
    }

    #[test]
    fn frames_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        write_segment(&path, 1, &[b"one", b"", b"three"]);
        let (recovered, payloads) = replay_all(&path, 1);
        assert_eq!(payloads, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(recovered.batches, 3);
        assert_eq!(recovered.discarded_bytes, 0);
        assert_eq!(recovered.valid_len, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn torn_tail_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        write_segment(&path, 1, &[b"kept", b"torn away"]);
        let full = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the second frame's payload.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 3)
            .unwrap();

        let (recovered, payloads) = replay_all(&path, 1);
        assert_eq!(payloads, vec![b"kept".to_vec()]);
        assert_eq!(recovered.discarded_bytes, (HEADER_LEN + 9 - 3) as u64);
        assert_eq!(recovered.valid_len, (MAGIC.len() + HEADER_LEN + 4) as u64);
    }

    #[test]
    fn corrupt_frame_stops_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        write_segment(&path, 1, &[b"good", b"flipped", b"after"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let second_payload = MAGIC.len() + HEADER_LEN + 4 + HEADER_LEN;
        bytes[second_payload] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let (recovered, payloads) = replay_all(&path, 1);
        assert_eq!(payloads, vec![b"good".to_vec()]);
        assert_eq!(recovered.valid_len, (MAGIC.len() + HEADER_LEN + 4) as u64);
        assert!(recovered.discarded_bytes > 0);
    }

    #[test]
    fn a_reused_file_ends_where_its_new_segment_ends() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(SPARE);
        write_segment(&spare, 1, &[b"old one", b"old two", b"old three"]);
        let old_len = std::fs::metadata(&spare).unwrap().len();

        // Segment 2 written over it, cut off by a crash (no drop): the
        // older segment's frames follow its own. One of the same length
        // ends on an old frame's boundary: a clean end.
        let path = dir.path().join("2.log");
        let mut writer = WalWriter::create(&path, 2, Some(&spare)).unwrap();
        assert!(!spare.exists());
        writer.append(b"new one").unwrap();
        std::mem::forget(writer);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), old_len);
        let (recovered, payloads) = replay_all(&path, 2);
        assert_eq!(payloads, vec![b"new one".to_vec()]);
        assert_eq!(recovered.discarded_bytes, 0);
        assert_eq!(recovered.valid_len, (MAGIC.len() + HEADER_LEN + 7) as u64);

        // Ending inside an old frame: what follows cannot be told from a
        // torn write, and is discarded as one.
        std::fs::rename(&path, &spare).unwrap();
        let path = dir.path().join("3.log");
        let mut writer = WalWriter::create(&path, 3, Some(&spare)).unwrap();
        writer.append(b"new").unwrap();
        std::mem::forget(writer);
        let (recovered, payloads) = replay_all(&path, 3);
        assert_eq!(payloads, vec![b"new".to_vec()]);
        assert_eq!(recovered.discarded_bytes, old_len - recovered.valid_len);

        // A segment done (its writer dropped) is cut to its frames.
        std::fs::rename(&path, &spare).unwrap();
        let path = dir.path().join("4.log");
        write_segment(&path, 4, &[b"new"]);
        let (recovered, payloads) = replay_all(&path, 4);
        assert_eq!(payloads, vec![b"new".to_vec()]);
        assert_eq!(recovered.discarded_bytes, 0);
        assert_eq!(recovered.valid_len, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn segments_of_the_first_format_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        let mut bytes = Vec::new();
        for payload in [&b"first"[..], b"", b"second"] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        assert!(!is_current_format(&path));
        let (recovered, payloads) = replay_all(&path, 1);
        assert_eq!(
            payloads,
            vec![b"first".to_vec(), vec![], b"second".to_vec()]
        );
        assert_eq!(recovered.discarded_bytes, 6);
    }

    #[test]
    fn garbage_length_does_not_allocate_or_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        std::fs::write(&path, [0xff; 64]).unwrap();
        let (recovered, payloads) = replay_all(&path, 1);
        assert!(payloads.is_empty());
        assert_eq!(recovered.discarded_bytes, 64);
    }
}
