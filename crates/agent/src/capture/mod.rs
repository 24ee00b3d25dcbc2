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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tailwater_model::Stream;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::line::Line;
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
