//! The write-ahead log: every appended batch, framed and checksummed, before
//! it is acknowledged.
//!
//! A frame is `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`.
//! Recovery reads frames from the start and stops at the first one that is
//! cut short or fails its checksum: that and everything after it is a write
//! a crash interrupted (never acknowledged), and is truncated away.
//!
//! The payload is one appended batch of one stream ([`encode_batch`]):
//! its labels once, then each record's [`Row`] (id, time, sequence number,
//! level, output, request id, message and fields as JSON), in postcard.
//!
//! Writing and syncing are separate: the store writes frames under its
//! writer lock and syncs outside it, so concurrent appends share one fsync
//! (group commit).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tailwater_model::Source;

use crate::part::StreamLabels;
use crate::row::Row;

const HEADER_LEN: usize = 8;
/// A length above this cannot be one we wrote: the header itself is garbage.
const MAX_FRAME_LEN: u32 = 1 << 30;

/// Appends frames to the log.
pub struct WalWriter {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes of whole, valid frames: where the next frame starts.
    len: u64,
    frame: Vec<u8>,
}

impl WalWriter {
    /// Opens the log for appending after its first `valid_len` bytes (as
    /// [`WalReader::recover`] found them), cutting off anything beyond.
    pub fn open(path: &Path, valid_len: u64) -> io::Result<WalWriter> {
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        if let Some(parent) = path.parent() {
            // Make the file's own directory entry durable on first creation.
            File::open(parent)?.sync_all()?;
        }
        let mut file = file;
        file.seek(SeekFrom::Start(valid_len))?;
        Ok(WalWriter {
            file: Arc::new(file),
            path: path.to_owned(),
            len: valid_len,
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

    /// Writes one frame (to the page cache: see [`WalWriter::file`] for
    /// making it durable). On failure the log is cut back to its last whole
    /// frame, so a later append never lands behind a half-written one.
    pub fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len <= MAX_FRAME_LEN)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "batch too large for one log frame",
                )
            })?;
        self.frame.clear();
        self.frame.extend_from_slice(&len.to_le_bytes());
        self.frame
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.frame.extend_from_slice(payload);
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

/// Encodes rows of one stream of `tenant` as a log payload.
pub fn encode_batch(tenant: &str, labels: &StreamLabels, rows: &[Row], out: &mut Vec<u8>) {
    let frame = Frame {
        tenant,
        app: &labels.app,
        version: &labels.version,
        runner: &labels.runner,
        boot: &labels.boot,
        source: labels.source,
        records: rows,
    };
    out.clear();
    postcard::to_io(&frame, &mut *out).expect("writing to a vector cannot fail");
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
    /// Bytes of whole, valid frames from the start of the file.
    pub valid_len: u64,
    /// Frames replayed.
    pub batches: u64,
    /// Bytes after the last valid frame: the torn or corrupt tail.
    pub discarded_bytes: u64,
}

/// Replays a log.
pub struct WalReader;

impl WalReader {
    /// Calls `replay` with the payload of each valid frame in order, and
    /// stops at the first torn or corrupt frame, or the first payload
    /// `replay` rejects (returns `false` for). A missing file is an empty log.
    pub fn recover(path: &Path, mut replay: impl FnMut(&[u8]) -> bool) -> io::Result<Recovered> {
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
        let mut header = [0u8; HEADER_LEN];
        let mut payload = Vec::new();
        loop {
            if !read_full(&mut reader, &mut header)? {
                break;
            }
            let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let crc = u32::from_le_bytes(header[4..8].try_into().unwrap());
            let frame_end = recovered.valid_len + (HEADER_LEN as u64) + u64::from(len);
            if len > MAX_FRAME_LEN || frame_end > file_len {
                break;
            }
            payload.resize(len as usize, 0);
            if !read_full(&mut reader, &mut payload)? || crc32fast::hash(&payload) != crc {
                break;
            }
            if !replay(&payload) {
                break;
            }
            recovered.valid_len = frame_end;
            recovered.batches += 1;
        }
        recovered.discarded_bytes = file_len - recovered.valid_len;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_all(path: &Path) -> (Recovered, Vec<Vec<u8>>) {
        let mut payloads = Vec::new();
        let recovered = WalReader::recover(path, |payload| {
            payloads.push(payload.to_vec());
            true
        })
        .unwrap();
        (recovered, payloads)
    }

    #[test]
    fn frames_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut writer = WalWriter::open(&path, 0).unwrap();
        writer.append(b"one").unwrap();
        writer.append(b"").unwrap();
        writer.append(b"three").unwrap();
        let (recovered, payloads) = replay_all(&path);
        assert_eq!(payloads, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(recovered.batches, 3);
        assert_eq!(recovered.discarded_bytes, 0);
    }

    #[test]
    fn torn_tail_is_discarded_and_appends_continue_after_the_last_whole_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut writer = WalWriter::open(&path, 0).unwrap();
        writer.append(b"kept").unwrap();
        writer.append(b"torn away").unwrap();
        drop(writer);
        let full = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the second frame's payload.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 3)
            .unwrap();

        let (recovered, payloads) = replay_all(&path);
        assert_eq!(payloads, vec![b"kept".to_vec()]);
        assert_eq!(recovered.discarded_bytes, (HEADER_LEN + 9 - 3) as u64);

        let mut writer = WalWriter::open(&path, recovered.valid_len).unwrap();
        writer.append(b"after").unwrap();
        let (_, payloads) = replay_all(&path);
        assert_eq!(payloads, vec![b"kept".to_vec(), b"after".to_vec()]);
    }

    #[test]
    fn corrupt_frame_stops_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut writer = WalWriter::open(&path, 0).unwrap();
        writer.append(b"good").unwrap();
        writer.append(b"flipped").unwrap();
        writer.append(b"after").unwrap();
        drop(writer);
        let mut bytes = std::fs::read(&path).unwrap();
        let second_payload = HEADER_LEN + 4 + HEADER_LEN;
        bytes[second_payload] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let (recovered, payloads) = replay_all(&path);
        assert_eq!(payloads, vec![b"good".to_vec()]);
        assert_eq!(recovered.valid_len, (HEADER_LEN + 4) as u64);
    }

    #[test]
    fn garbage_length_does_not_allocate_or_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        std::fs::write(&path, [0xff; 64]).unwrap();
        let (recovered, payloads) = replay_all(&path);
        assert!(payloads.is_empty());
        assert_eq!(recovered.discarded_bytes, 64);
    }
}
