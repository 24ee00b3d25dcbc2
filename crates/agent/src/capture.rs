//! Reading a worker's pipe: echo every byte as it comes, cut into lines.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tailwater_model::Stream;

use crate::outbox::Outbox;

const READ_CHUNK: usize = 64 * 1024;

/// Cuts a byte stream into lines. A line longer than `max_line_bytes` is cut
/// into pieces of that size, each marked as continued but the last.
pub struct LineSplitter {
    pending: Vec<u8>,
    max_line_bytes: usize,
}

/// One line, without its line ending.
#[derive(Debug, PartialEq, Eq)]
pub struct Line {
    pub bytes: Vec<u8>,
    /// The line goes on in the next piece (it was longer than the maximum).
    pub continued: bool,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> LineSplitter {
        assert!(max_line_bytes > 0);
        LineSplitter {
            pending: Vec::new(),
            max_line_bytes,
        }
    }

    /// Feeds bytes; calls `emit` for every line they complete.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(Line)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(newline) => {
                    self.append_bounded(&bytes[..newline], &mut emit);
                    let mut line = std::mem::take(&mut self.pending);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    emit(Line {
                        bytes: line,
                        continued: false,
                    });
                    bytes = &bytes[newline + 1..];
                }
                None => {
                    self.append_bounded(bytes, &mut emit);
                    bytes = &[];
                }
            }
        }
    }

    /// The last line, if the stream ended without a newline.
    pub fn finish(self) -> Option<Line> {
        (!self.pending.is_empty()).then_some(Line {
            bytes: self.pending,
            continued: false,
        })
    }

    fn append_bounded(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Line)) {
        while self.pending.len() + bytes.len() > self.max_line_bytes {
            let room = self.max_line_bytes - self.pending.len();
            self.pending.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            emit(Line {
                bytes: std::mem::take(&mut self.pending),
                continued: true,
            });
        }
        self.pending.extend_from_slice(bytes);
    }
}

/// Reads `pipe` to its end: echoes to `echo` (if any) and records each line.
pub async fn capture(
    mut pipe: impl AsyncRead + Unpin,
    stream: Stream,
    mut echo: Option<impl AsyncWrite + Unpin>,
    outbox: &Outbox,
    max_line_bytes: usize,
) {
    let mut splitter = LineSplitter::new(max_line_bytes);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let read = match pipe.read(&mut chunk).await {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                outbox.system_warning(format!(
                    "stopped reading the worker's {}: {error}",
                    stream.as_str()
                ));
                break;
            }
        };
        if let Some(out) = echo.as_mut() {
            // The agent's own output going away must not stop the capture.
            if out.write_all(&chunk[..read]).await.is_err() || out.flush().await.is_err() {
                echo = None;
            }
        }
        splitter.push(&chunk[..read], |line| {
            outbox.record_line(stream, line, None)
        });
    }
    if let Some(line) = splitter.finish() {
        outbox.record_line(stream, line, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut splitter = LineSplitter::new(max);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |line| lines.push(line));
        }
        lines.extend(splitter.finish());
        lines
            .into_iter()
            .map(|line| (String::from_utf8(line.bytes).unwrap(), line.continued))
            .collect()
    }

    #[test]
    fn lines_across_chunks_and_a_last_line_without_newline() {
        assert_eq!(
            split(100, &[b"hel", b"lo\nwor", b"ld\r\n\nlast"]),
            [
                ("hello".into(), false),
                ("world".into(), false),
                ("".into(), false),
                ("last".into(), false)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_marked_continued() {
        assert_eq!(
            split(4, &[b"abcdefghij\nxy", b"z\n"]),
            [
                ("abcd".into(), true),
                ("efgh".into(), true),
                ("ij".into(), false),
                ("xyz".into(), false)
            ]
        );
        // Exactly the maximum is one whole line.
        assert_eq!(split(4, &[b"abcd\n"]), [("abcd".into(), false)]);
    }
}
