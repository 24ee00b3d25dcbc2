//! Frames: `[len: u32 LE][crc32: u32 LE][body]`, sealed when written and
//! checked when read.

use super::*;

/// Fills in a frame's length and checksum; its body runs from
/// `at + FRAME_HEAD_BYTES` to the end of `buffer`.
pub(super) fn seal_frame(buffer: &mut [u8], at: usize) {
    let body = &buffer[at + FRAME_HEAD_BYTES..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    buffer[at..at + 4].copy_from_slice(&len.to_le_bytes());
    buffer[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

pub(super) enum Next<'a> {
    End,
    /// Cut off, over-long, or failing its checksum.
    Bad,
    Frame {
        body: &'a [u8],
        next: u64,
    },
}

/// Reads frames from `pos` to `end` through a buffer.
pub(super) struct FrameReader<'f> {
    pub(super) file: &'f File,
    pub(super) pos: u64,
    pub(super) end: u64,
    pub(super) buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    pub(super) buffer_at: u64,
}

impl<'f> FrameReader<'f> {
    pub(super) fn new(file: &'f File, pos: u64, end: u64) -> FrameReader<'f> {
        FrameReader {
            file,
            pos,
            end,
            buffer: Vec::new(),
            buffer_at: pos,
        }
    }

    pub(super) fn next(&mut self) -> io::Result<Next<'_>> {
        if self.pos >= self.end {
            return Ok(Next::End);
        }
        if self.end - self.pos < FRAME_HEAD_BYTES as u64 {
            return Ok(Next::Bad);
        }
        self.fill(self.pos, FRAME_HEAD_BYTES)?;
        let head_at = (self.pos - self.buffer_at) as usize;
        let head = &self.buffer[head_at..head_at + FRAME_HEAD_BYTES];
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let total = FRAME_HEAD_BYTES as u64 + len;
        if len > MAX_FRAME_BYTES || total > self.end - self.pos {
            return Ok(Next::Bad);
        }
        self.fill(self.pos, total as usize)?;
        let body_at = (self.pos - self.buffer_at) as usize + FRAME_HEAD_BYTES;
        let body = &self.buffer[body_at..body_at + len as usize];
        if crc32fast::hash(body) != crc {
            return Ok(Next::Bad);
        }
        self.pos += total;
        Ok(Next::Frame {
            body,
            next: self.pos,
        })
    }

    /// Makes the buffer hold `len` bytes from file offset `at`.
    pub(super) fn fill(&mut self, at: u64, len: usize) -> io::Result<()> {
        let buffered_end = self.buffer_at + self.buffer.len() as u64;
        if at >= self.buffer_at && at + len as u64 <= buffered_end {
            return Ok(());
        }
        let want = len.max(READ_CHUNK_BYTES).min((self.end - at) as usize);
        self.buffer.resize(want, 0);
        self.file.read_exact_at(&mut self.buffer, at)?;
        self.buffer_at = at;
        Ok(())
    }
}
