//! The response body that ends its request: when sent whole, failed, or
//! dropped (the client went away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::BoxError;
use crate::requests::{Outcome, Requests, Ticket, Which};

/// A response body that ends its request when it has been sent whole, has
/// failed, or was dropped (the client went away).
pub(super) struct Tracked {
    pub(super) inner: Incoming,
    pub(super) end: Option<End>,
}

pub(super) struct End {
    pub(super) requests: Arc<Requests>,
    pub(super) ticket: Ticket,
    pub(super) status: u16,
}

impl End {
    pub(super) fn finish(self, outcome: Outcome) {
        let finished = Instant::now();
        // Ending waits for the capture to settle; not in a body's poll.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                self.requests
                    .end(
                        Which::Ticket(self.ticket),
                        finished,
                        Some(self.status),
                        outcome,
                    )
                    .await;
            });
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(end) = this.end.take() {
                    end.finish(Outcome::Completed);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(end) = this.end.take() {
                    end.finish(Outcome::Error(format!(
                        "the worker's response broke off: {error}"
                    )));
                }
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // An empty body (a HEAD, a 204) may be dropped unpolled: it was
            // sent whole.
            let outcome = if self.inner.is_end_stream() {
                Outcome::Completed
            } else {
                Outcome::ClientClosed
            };
            end.finish(outcome);
        }
    }
}
