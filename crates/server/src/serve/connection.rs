//! One connection's life, from its TLS handshake (if any) to its close:
//! the phases that time it (head, idle), each request handed to the router
//! with its body timed, and the connection marked idle again once its
//! answer's body is done.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower_service::Service;

use crate::api::ApiError;

use super::stream::{TimedBody, Tracked};
use super::*;

/// One connection, from its TLS handshake (if any) to its close.
pub(super) async fn run_connection(
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
    let io = Tracked::new(stream, conn, shared, place);
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
