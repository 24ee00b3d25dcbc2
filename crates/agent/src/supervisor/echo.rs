//! Echoing the worker's output to the agent's own stdout and stderr
//! without holding up its capture.
//!
//! A capture task echoes each chunk it read before it reads the next. An
//! echo through tokio's stdout waits for a blocking-pool thread, and while
//! the stdout task waited there with half a line (Python writes
//! `print("about to divide")` as the text, then the newline), the stderr
//! task read and recorded the traceback written after it: the print was
//! recorded last. Here an [`Echo`] hands each chunk to a thread of its own
//! and returns at once, so the task reads on.
//!
//! At most [`ECHO_CHUNKS`] chunks wait for the thread; past that the
//! capture waits (the worker then waits on its pipe), as it did when it
//! wrote them itself: a terminal that is not read holds the worker up, and
//! memory stays bounded. Once writing fails (a closed pipe), echoing
//! stops and capture goes on.

use std::io::Write;
use std::pin::Pin;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// Chunks (each at most a read's, 64 KiB) waiting for the echo thread.
const ECHO_CHUNKS: usize = 16;

/// Where to echo.
#[derive(Clone, Copy, Debug)]
pub(super) enum EchoTo {
    Stdout,
    Stderr,
}

/// A writer that passes what it is given to an echo thread. Dropping it
/// waits until the thread wrote everything (the agent's last words after
/// the worker's, not before).
pub(super) struct Echo {
    chunks: Option<SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    /// Starts the thread writing to `to`; `None` if it cannot start.
    pub(super) fn start(to: EchoTo) -> Option<Echo> {
        let (chunks, waiting) = sync_channel::<Vec<u8>>(ECHO_CHUNKS);
        let thread = std::thread::Builder::new()
            .name("tailwater-echo".into())
            .spawn(move || {
                for chunk in waiting {
                    let written = match to {
                        EchoTo::Stdout => write_all(&mut std::io::stdout().lock(), &chunk),
                        EchoTo::Stderr => write_all(&mut std::io::stderr().lock(), &chunk),
                    };
                    // The receiver goes with the thread: the next send fails
                    // and capture stops echoing.
                    if written.is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Echo {
            chunks: Some(chunks),
            thread: Some(thread),
        })
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_all(out: &mut impl Write, chunk: &[u8]) -> std::io::Result<()> {
    out.write_all(chunk)?;
    out.flush()
}

impl AsyncWrite for Echo {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let gone = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let Some(chunks) = &self.chunks else {
            return Poll::Ready(Err(gone()));
        };
        let sent = match chunks.try_send(buf.to_vec()) {
            Ok(()) => Ok(()),
            // The thread is behind by every chunk it may be: wait for it,
            // here, on the capture's own thread (see the module's doc).
            Err(TrySendError::Full(chunk)) => chunks.send(chunk).map_err(|_| gone()),
            Err(TrySendError::Disconnected(_)) => Err(gone()),
        };
        Poll::Ready(sent.map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // The thread flushes after each chunk.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
