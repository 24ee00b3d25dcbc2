//! Reading the worker's output: pipes (or a pseudo-terminal), cut into
//! lines, recorded, echoed.
//!
//! - [`pipe`] and [`pty`] make what the worker writes into; pipes are raised
//!   to [`PIPE_BUFFER_BYTES`] so a burst does not block the worker while the
//!   agent is busy.
//! - [`LineSplitter`] cuts bytes into lines: long lines are split and marked
//!   `continued`; a line rewritten with carriage returns (a progress bar)
//!   keeps one state per interval and always its final state.
//! - [`OutputSync`] lets a request mark wait until everything the worker
//!   wrote before the mark has been recorded, so lines are attributed by when
//!   they were written, not by when the agent happened to read them.
//!
//! The files: this one (the capture loop and the [`LineSink`] it writes
//! to), `split` (cutting lines), `output` (pipes, the terminal, reading and
//! the sync of request marks).

mod output;
mod split;

use std::io;
use std::time::{Duration, Instant};

use tailwater_model::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::line::Line;
use crate::lock::lock;
pub use output::{
    copy_terminal_size, pipe, pipe_size, pty, OutputSync, Outputs, Reader, PIPE_BUFFER_BYTES,
};
pub use split::{Collapsed, LineSplitter};

const READ_CHUNK: usize = 64 * 1024;

/// How lines are cut.
#[derive(Clone, Copy, Debug)]
pub struct Cutting {
    pub max_line_bytes: usize,
    pub progress_interval: Duration,
}

/// Where capture's lines go. Capture does not know what becomes of them
/// (as ripgrep's searcher writes to a `Sink` it does not know): the agent's
/// sink attributes them to a request, stamps and spools them.
pub trait LineSink: Sync {
    /// One line, or kept progress state, as read (`in_request` unset).
    fn line(&self, line: Line<'_>);
    /// A progress line of `stream` ended with some of its states not kept
    /// (at most one per `interval`): nothing is dropped silently.
    fn progress_collapsed(&self, stream: Stream, collapsed: Collapsed, interval: Duration);
    /// Reading `stream` failed: its capture stops here.
    fn read_failed(&self, stream: Stream, error: &io::Error);
}

/// Reads `reader` to its end: hands each line to `sink`, then echoes to
/// `echo` (if any).
pub async fn capture(
    reader: Reader,
    stream: Stream,
    mut echo: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    sink: &impl LineSink,
    cutting: Cutting,
) {
    let mut splitter = LineSplitter::new(stream, cutting.max_line_bytes, cutting.progress_interval);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut consumed = 0u64;
    let mut record = |line: Line<'_>| sink.line(line);
    loop {
        let read = if splitter.holds_progress() {
            match tokio::time::timeout(cutting.progress_interval, reader.read(&mut chunk)).await {
                Ok(read) => read,
                Err(_) => {
                    splitter.flush_due(Instant::now(), &mut record);
                    continue;
                }
            }
        } else {
            reader.read(&mut chunk).await
        };
        let read = match read {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                sink.read_failed(stream, &error);
                break;
            }
        };
        splitter.push(&chunk[..read], Instant::now(), &mut record);
        if let Some(collapsed) = splitter.take_collapsed() {
            sink.progress_collapsed(stream, collapsed, cutting.progress_interval);
        }
        consumed += read as u64;
        reader.recorded(consumed);
        if let Some(out) = echo.as_mut() {
            // The agent's own output going away must not stop the capture.
            if out.write_all(&chunk[..read]).await.is_err() || out.flush().await.is_err() {
                echo = None;
            }
        }
    }
    splitter.finish(&mut record);
    if let Some(collapsed) = splitter.take_collapsed() {
        sink.progress_collapsed(stream, collapsed, cutting.progress_interval);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// `(stream, text, continued, progress updates)`.
    type KeptLine = (Stream, String, bool, Option<u64>);

    /// A sink that keeps what capture hands it.
    #[derive(Default)]
    struct Kept {
        lines: Mutex<Vec<KeptLine>>,
        collapsed: Mutex<Vec<(Stream, Collapsed)>>,
    }

    impl LineSink for Kept {
        fn line(&self, line: Line<'_>) {
            assert_eq!(line.in_request, None, "capture knows no requests");
            lock(&self.lines).push((
                line.stream,
                String::from_utf8(line.bytes.to_vec()).unwrap(),
                line.continued,
                line.progress.map(|p| p.updates),
            ));
        }

        fn progress_collapsed(&self, stream: Stream, collapsed: Collapsed, _: Duration) {
            lock(&self.collapsed).push((stream, collapsed));
        }

        fn read_failed(&self, stream: Stream, error: &io::Error) {
            panic!("reading {stream:?} failed: {error}");
        }
    }

    #[tokio::test]
    async fn capture_hands_each_line_of_its_stream_to_the_sink() {
        let sync = OutputSync::default();
        let (reader, writer) = pipe().unwrap();
        let reader = Reader::new(reader, false, &sync).unwrap();
        let mut writer = std::fs::File::from(writer);
        writer
            .write_all(b"one\r\n12345678\n1/3\r2/3\r3/3\n")
            .unwrap();
        drop(writer);
        let sink = Kept::default();
        let cutting = Cutting {
            max_line_bytes: 5,
            progress_interval: Duration::from_secs(60),
        };
        capture(reader, Stream::Stderr, None, &sink, cutting).await;
        let lines = sink.lines.into_inner().unwrap();
        let expected = [
            (Stream::Stderr, "one".to_owned(), false, None),
            (Stream::Stderr, "12345".to_owned(), true, None),
            (Stream::Stderr, "678".to_owned(), false, None),
            (Stream::Stderr, "1/3".to_owned(), false, Some(1)),
            (Stream::Stderr, "3/3".to_owned(), false, Some(2)),
        ];
        assert_eq!(lines, expected);
        assert_eq!(
            sink.collapsed.into_inner().unwrap(),
            [(Stream::Stderr, Collapsed { states: 3, kept: 2 })]
        );
    }
}
