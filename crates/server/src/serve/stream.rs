//! What wraps a connection's bytes: the stream that notes a head's first
//! bytes, holds the connection's place, times writes to a client that reads
//! nothing and replaces hyper's bodyless error answers with the API's JSON;
//! and a request body that must arrive whole in time.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::*;

/// A timer that runs from the first wait (until cleared, for a stall that
/// progress ends).
#[derive(Default)]
struct Stall(Option<Pin<Box<tokio::time::Sleep>>>);

impl Stall {
    fn clear(&mut self) {
        self.0 = None;
    }

    /// Whether the wait has lasted `timeout`; if not, `cx` is woken when it
    /// has.
    fn expired(&mut self, cx: &mut Context<'_>, timeout: Duration) -> bool {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A request's body that fails unless it arrives whole within
/// `--body-read-timeout` of its handler's first read: a client that sends
/// a head and then a trickle (or nothing) of its body cannot hold a
/// request, and its connection, for ever.
pub(super) struct TimedBody {
    inner: Incoming,
    deadline: Stall,
    shared: Arc<Shared>,
}

impl TimedBody {
    pub(super) fn new(inner: Incoming, shared: &Arc<Shared>) -> TimedBody {
        TimedBody {
            inner,
            deadline: Stall::default(),
            shared: shared.clone(),
        }
    }
}

impl hyper::body::Body for TimedBody {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|frame| frame.map_err(Into::into))),
            Poll::Pending => {
                let timeout = this.shared.limits.body_read_timeout;
                if !this.deadline.expired(cx, timeout) {
                    return Poll::Pending;
                }
                this.shared.closed("body_timeout");
                let message = format!(
                    "the request body did not arrive whole within {} s (--body-read-timeout): send it at once",
                    timeout.as_secs_f64()
                );
                Poll::Ready(Some(Err(message.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's own answer to a head it cannot take (it writes no body), as the
/// API's JSON error; `None` for any other status.
fn json_answer(status: u16, limits: &ConnectionLimits) -> Option<Vec<u8>> {
    let (reason, code, message) = match status {
        400 => (
            "Bad Request",
            "bad_request",
            "cannot parse the request head: send a valid HTTP/1.1 request".to_owned(),
        ),
        414 => (
            "URI Too Long",
            "uri_too_long",
            format!(
                "the URI is over the limit of {} bytes (--max-uri-bytes): send fewer or shorter query parameters",
                limits.max_uri_bytes
            ),
        ),
        431 => (
            "Request Header Fields Too Large",
            "headers_too_large",
            format!(
                "the request head is over the limit of {} bytes (--max-header-bytes): send fewer or shorter headers",
                limits.max_header_bytes
            ),
        ),
        _ => return None,
    };
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// The connection's stream: notes the first bytes of a request head, holds
/// the connection's place under the cap for as long as the stream lives
/// (a WebSocket's too, after the upgrade), and replaces hyper's bodyless
/// error answers with [`json_answer`].
pub(super) struct Tracked<S> {
    inner: S,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    _place: OwnedSemaphorePermit,
    /// The replacement answer and how much of it is written; once set,
    /// whatever hyper writes is dropped.
    replacement: Option<(Vec<u8>, usize)>,
    /// Since when writes wait on a client that reads nothing.
    write_stall: Stall,
}

impl<S> Tracked<S> {
    pub(super) fn new(
        inner: S,
        conn: &Arc<Conn>,
        shared: &Arc<Shared>,
        place: OwnedSemaphorePermit,
    ) -> Tracked<S> {
        Tracked {
            inner,
            conn: conn.clone(),
            shared: shared.clone(),
            _place: place,
            replacement: None,
            write_stall: Stall::default(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Tracked<S> {
    /// Whether `bytes` start hyper's own answer: a final answer's head
    /// with no request handed to the router since the last one.
    fn replaces(&mut self, bytes: &[u8]) -> bool {
        if self.replacement.is_some() {
            return true;
        }
        if self.conn.phase() == UPGRADED || !bytes.starts_with(b"HTTP/1.") {
            return false;
        }
        let Some(status) = bytes
            .get(9..12)
            .and_then(|code| std::str::from_utf8(code).ok())
            .and_then(|code| code.parse::<u16>().ok())
        else {
            return false;
        };
        // An interim answer (100 Continue) goes before a handler's own.
        if status < 200 || self.conn.dispatched.swap(false, Ordering::AcqRel) {
            return false;
        }
        match json_answer(status, &self.shared.limits) {
            Some(answer) => {
                self.replacement = Some((answer, 0));
                true
            }
            None => false,
        }
    }

    /// A write that cannot go on (the client reads nothing) fails once it
    /// has waited `--write-timeout`: hyper, or the WebSocket, then closes.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stall.clear();
            return polled;
        }
        let timeout = self.shared.limits.write_timeout;
        if self.write_stall.expired(cx, timeout) {
            self.shared.closed("write_timeout");
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for --write-timeout",
            )));
        }
        Poll::Pending
    }

    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((answer, written)) = &mut self.replacement {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before && self.conn.phase() == IDLE {
            let now = self.shared.now_ms();
            self.conn.shift(&[IDLE], HEAD, now);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replaces(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|buf| !buf.is_empty());
        if first.is_some_and(|first| self.replaces(first)) {
            return Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()));
        }
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
