//! Serving connections, over plain TCP or TLS: the accept loop and each
//! connection's life. It owns the connection limits ([`ConnectionLimits`]):
//! how long a request head may take to arrive, how long a connection may
//! sit idle between requests, how many connections may be open at once and
//! what happens at that cap, the longest URI and request head, how long a
//! request body may stall and how long an answer may wait for a client
//! that does not read it; and the JSON shape of the answers hyper makes on
//! its own to heads it cannot take (400, 414, 431).
//!
//! At the cap, a new connection takes the place of the open one that has
//! waited longest without a request in progress (idle, or still sending
//! its head): a flood of silent sockets only ever displaces itself, while
//! a request being answered, a live tail (SSE) and a WebSocket are never
//! cut. The cap is kept under the open-file limit, so accepting never runs
//! out of descriptors; if it does anyway, the same eviction frees one.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower_service::Service;

use crate::api::ApiError;
use crate::metrics::Metrics;

/// How long a client may take to send a request head, from its first byte
/// (or, over TLS, from the connection's start to the end of the handshake).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait for its next request (or its first)
/// before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections open at once, at most (fewer if the open-file limit does
/// not allow them).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Longest request head (request line and headers), in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Longest URI (path and query), in bytes.
pub const DEFAULT_MAX_URI_BYTES: usize = 16 * 1024;
/// How long a request body may take to arrive whole once its handler
/// starts reading it.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an answer (a live tail's too) may wait on a client that does
/// not read it before the connection is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// File descriptors kept for the store, the registry and the process when
/// the cap is fitted under the open-file limit.
const FD_RESERVE: u64 = 128;
/// How long requests in flight may take to finish once shutdown starts.
const GRACE: Duration = Duration::from_secs(10);
/// How long the accept loop waits for an evicted connection to let go of
/// its place before it refuses the new one.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The limits on connections (`tailwater server --header-read-timeout`,
/// `--idle-timeout`, `--body-read-timeout`, `--write-timeout`,
/// `--max-connections`, `--max-header-bytes`, `--max-uri-bytes`).
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// A request body not whole this long after its handler started
    /// reading it fails its request (the handler answers, in the API's
    /// error shape, that it could not read the body), and the connection
    /// closes: a trickle cannot hold a request either.
    pub body_read_timeout: Duration,
    /// A write to a client that stays blocked this long (the client reads
    /// nothing) closes the connection: answers, live tails and WebSockets.
    pub write_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
        }
    }
}

// A connection's phase. Only IDLE and HEAD connections may be evicted or
// timed out: nothing is owed to them.
const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;
const UPGRADED: u8 = 3;
const EVICTED: u8 = 4;

/// One open connection, as the accept loop and its own task see it.
struct Conn {
    phase: AtomicU8,
    /// When the phase last became IDLE or HEAD, in ms since the server's
    /// start: the oldest is evicted first, and timeouts run from it.
    since_ms: AtomicU64,
    wake: Notify,
    /// A request was handed to the router and its answer's head is not
    /// written yet: a head written while this is false is hyper's own.
    dispatched: AtomicBool,
}

impl Conn {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Moves from one of `from` to `to`; never out of EVICTED or UPGRADED.
    fn shift(&self, from: &[u8], to: u8, now_ms: u64) -> bool {
        let moved = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |phase| {
                from.contains(&phase).then_some(to)
            })
            .is_ok();
        if moved {
            self.since_ms.store(now_ms, Ordering::Release);
            self.wake.notify_one();
        }
        moved
    }
}

/// What the accept loop and every connection share.
struct Shared {
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    start: Instant,
    next_id: AtomicU64,
    open: Mutex<std::collections::HashMap<u64, Arc<Conn>>>,
    places: Arc<Semaphore>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// Tells the connection that has waited longest without a request in
    /// progress to close; false when every connection is busy.
    fn evict_oldest(&self) -> bool {
        let open = self.open.lock().expect("connection table lock");
        let mut candidates: Vec<&Arc<Conn>> = open
            .values()
            .filter(|conn| matches!(conn.phase(), IDLE | HEAD))
            .collect();
        candidates.sort_by_key(|conn| conn.since_ms.load(Ordering::Acquire));
        for conn in candidates {
            if conn.shift(&[IDLE, HEAD], EVICTED, 0) {
                return true;
            }
        }
        false
    }

    fn closed(&self, reason: &str) {
        self.metrics.connection_closed(reason);
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stopped`
/// resolves, then lets requests in flight finish (up to [`GRACE`]).
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<io::Result<()>> {
    let cap = fit_to_fd_limit(limits.max_connections);
    let shared = Arc::new(Shared {
        places: Arc::new(Semaphore::new(cap)),
        limits,
        metrics,
        start: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::default(),
    });
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(accept_loop(listener, tls, app, shared, stopped))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    shared: Arc<Shared>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            Some(_) = tasks.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of descriptors despite the cap (the store holds some
                // too): free one the way the cap does, or wait for one.
                tracing::warn!(%error, "cannot accept a connection: out of file descriptors");
                shared.closed("accept_failed");
                if !shared.evict_oldest() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            // The peer gave up before it was accepted, and the like.
            Err(_) => continue,
        };
        let Some(place) = take_place(&shared).await else {
            shared.closed("refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            phase: AtomicU8::new(if tls.is_some() { HEAD } else { IDLE }),
            since_ms: AtomicU64::new(shared.now_ms()),
            wake: Notify::new(),
            dispatched: AtomicBool::new(false),
        });
        shared
            .open
            .lock()
            .expect("connection table lock")
            .insert(id, conn.clone());
        shared.metrics.connections_open.inc();
        let (shared, app, tls, stopping) =
            (shared.clone(), app.clone(), tls.clone(), stopping.clone());
        tasks.spawn(async move {
            run_connection(stream, place, &conn, tls, app, &shared, stopping).await;
            shared
                .open
                .lock()
                .expect("connection table lock")
                .remove(&id);
            shared.metrics.connections_open.dec();
        });
    }
    drop(listener);
    stop.send_replace(true);
    let drained =
        tokio::time::timeout(GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("requests still in flight after the shutdown grace period were cut");
    }
    Ok(())
}

/// A place under the cap: free, or made by evicting the oldest connection
/// with no request in progress; `None` when every place is busy.
async fn take_place(shared: &Shared) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Ok(place) = shared.places.clone().try_acquire_owned() {
            return Some(place);
        }
        if !shared.evict_oldest() {
            return None;
        }
        shared.closed("evicted");
        let freed = tokio::time::timeout(EVICTION_WAIT, shared.places.clone().acquire_owned());
        if let Ok(Ok(place)) = freed.await {
            return Some(place);
        }
    }
}

/// One connection, from its TLS handshake (if any) to its close.
async fn run_connection(
    stream: TcpStream,
    place: OwnedSemaphorePermit,
    conn: &Arc<Conn>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    shared: &Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) {
    match tls {
        None => serve_http(stream, place, conn, app, shared, stopping).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(stream);
            tokio::pin!(handshake);
            let deadline = Instant::now() + shared.limits.header_read_timeout;
            let stream = loop {
                tokio::select! {
                    done = &mut handshake => match done {
                        Ok(stream) => break stream,
                        Err(error) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return shared.closed("tls_handshake_failed");
                        }
                    },
                    _ = tokio::time::sleep_until(deadline) => {
                        return shared.closed("header_timeout");
                    }
                    _ = conn.wake.notified() => {
                        if conn.phase() == EVICTED {
                            return;
                        }
                    }
                    _ = stop_requested(&mut stopping) => return,
                }
            };
            conn.shift(&[HEAD], IDLE, shared.now_ms());
            serve_http(stream, place, conn, app, shared, stopping).await
        }
    }
}

/// Serves HTTP/1.1 on `stream`, closing it when its phase has lasted past
/// its timeout, when it is evicted, or (once idle) when the server stops.
async fn serve_http<S>(
    stream: S,
    place: OwnedSemaphorePermit,
    conn: &Arc<Conn>,
    app: axum::Router,
    shared: &Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Tracked {
        inner: stream,
        conn: conn.clone(),
        shared: shared.clone(),
        _place: place,
        replacement: None,
        write_stall: Stall::default(),
    };
    let service = {
        let (conn, shared) = (conn.clone(), shared.clone());
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let (conn, shared, mut app) = (conn.clone(), shared.clone(), app.clone());
            async move {
                conn.dispatched.store(true, Ordering::Release);
                conn.shift(&[IDLE, HEAD], BUSY, 0);
                let response = match uri_too_long(&request, shared.limits.max_uri_bytes) {
                    Some(error) => error.into_response(),
                    None => match app
                        .call(request.map(|body| TimedBody::new(body, &shared)))
                        .await
                    {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                };
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    conn.shift(&[BUSY], UPGRADED, 0);
                }
                // The request is in progress until its answer's body is
                // done (a live tail's, only when the tail ends).
                let done = RequestDone { conn, shared };
                Ok::<_, Infallible>(response.map(move |inner| DoneBody { inner, _done: done }))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The timeouts are ours (below): hyper's one header timer would also
    // run while a connection waits idle for its next request.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(shared.limits.max_header_bytes.max(8192) + 1024)
        .max_header_size(shared.limits.max_header_bytes);
    let served = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(served);
    loop {
        let (phase, since) = (conn.phase(), conn.since_ms.load(Ordering::Acquire));
        let (timeout, reason) = match phase {
            IDLE => (Some(shared.limits.idle_timeout), "idle_timeout"),
            HEAD => (Some(shared.limits.header_read_timeout), "header_timeout"),
            EVICTED => return,
            _ => (None, ""),
        };
        let deadline = timeout.map(|timeout| shared.at(since) + timeout);
        let far = Instant::now() + Duration::from_secs(86_400);
        tokio::select! {
            result = &mut served => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = conn.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                let unchanged = conn.since_ms.load(Ordering::Acquire) == since;
                if unchanged && conn.shift(&[phase], EVICTED, 0) {
                    return shared.closed(reason);
                }
            }
            _ = stop_requested(&mut stopping) => {
                if conn.shift(&[IDLE, HEAD], EVICTED, 0) {
                    return;
                }
                // Finish the request in progress, then close.
                served.as_mut().graceful_shutdown();
                if let Err(error) = served.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
        }
    }
}

/// Resolves once the server stops (its guard dropped: it is not `Send`).
async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
}

/// An answer's body, holding its request's [`RequestDone`] until hyper
/// drops it; its size is the inner body's, so a known length is still sent
/// as `content-length`.
struct DoneBody {
    inner: axum::body::Body,
    _done: RequestDone,
}

impl hyper::body::Body for DoneBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

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
struct TimedBody {
    inner: Incoming,
    deadline: Stall,
    shared: Arc<Shared>,
}

impl TimedBody {
    fn new(inner: Incoming, shared: &Arc<Shared>) -> TimedBody {
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

/// Marks its connection idle again once dropped (with the answer's body).
struct RequestDone {
    conn: Arc<Conn>,
    shared: Arc<Shared>,
}

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.conn.shift(&[BUSY], IDLE, self.shared.now_ms());
    }
}

fn uri_too_long(request: &Request<Incoming>, max: usize) -> Option<ApiError> {
    let len = request
        .uri()
        .path_and_query()
        .map_or(0, |path| path.as_str().len());
    (len > max).then(|| {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the URI is {len} bytes, over the limit of {max} (--max-uri-bytes): send fewer or shorter query parameters"
            ),
        )
    })
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
struct Tracked<S> {
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

/// The cap fitted under the open-file limit (raised first to its hard
/// limit, as far as allowed), keeping [`FD_RESERVE`] for everything else.
fn fit_to_fd_limit(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return wanted.max(1);
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        limit.rlim_cur
    };
    let allowed = soft.saturating_sub(FD_RESERVE).max(soft / 2).max(1);
    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX);
    if wanted > allowed {
        tracing::warn!(
            max_connections = wanted,
            open_file_limit = soft,
            serving_at_most = allowed,
            "--max-connections is more than the open-file limit allows: raise `ulimit -n` to serve more at once"
        );
    }
    wanted.min(allowed).max(1)
}
