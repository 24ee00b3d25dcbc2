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

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::metrics::Metrics;

mod connection;
mod stream;

use connection::run_connection;

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
        // Each connection's time read once: connections move on while this
        // sorts, and a key that changes under a sort breaks its order (the
        // standard sort panics on it).
        let mut candidates: Vec<(u64, &Arc<Conn>)> = open
            .values()
            .filter(|conn| matches!(conn.phase(), IDLE | HEAD))
            .map(|conn| (conn.since_ms.load(Ordering::Acquire), conn))
            .collect();
        candidates.sort_by_key(|(since, _)| *since);
        for (_, conn) in candidates {
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

/// Resolves once the server stops (its guard dropped: it is not `Send`).
async fn stop_requested(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await;
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

#[cfg(test)]
mod tests;
