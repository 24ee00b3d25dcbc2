//! Several receivers, one at a time: [`Failover`] sends to the one in use
//! and, when it is away ([`Outcome::Unavailable`] with `elsewhere`: no
//! connection, a reset, a timeout, a 502, 503 or 504), makes the next one
//! current, round robin. The failed batch is not sent on here: the shipper
//! keeps it in the spool and sends it again after its backoff, so the next
//! receiver gets it then, and one that is also away costs a backoff, never
//! a busy loop. Refusals (4xx, 429, 507) mean the same on every node and
//! are passed on as they are.
//!
//! Each move is counted (in [`ShipStatus`], which the control socket's
//! `status` answers from, with the server in use); the first after a batch was taken is told on the
//! agent's stderr and in a `server_failover` system record in the runner's
//! own logs (shipped to the new receiver), which names both and carries the
//! running count. While every receiver is away the moves go on, counted but
//! not told again (the shipper says once that shipping fails), so an outage
//! neither floods stderr nor fills the spool with records about itself.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;
use tailwater_model::lifecycle::Event;
use tailwater_model::wire::IngestBatch;
use tailwater_model::Level;

use super::status::ShipStatus;
use super::transport::{Outcome, Transport};
use crate::recorder::{fields, Recorder};

/// Sends through the transport in use, moving to the next when it is away.
pub struct Failover<T> {
    transports: Vec<T>,
    current: AtomicUsize,
    /// The server in use and the failovers so far, as `status` shows them.
    status: Arc<ShipStatus>,
    /// A move was told and no batch was taken since: the next is not told.
    told: AtomicBool,
    recorder: Arc<Recorder>,
}

impl<T: Transport> Failover<T> {
    /// The first of `transports` is used first; at least one is needed.
    /// Moves are counted in `status`.
    pub fn new(
        transports: Vec<T>,
        recorder: Arc<Recorder>,
        status: Arc<ShipStatus>,
    ) -> Failover<T> {
        assert!(!transports.is_empty(), "failover needs a transport");
        Failover {
            transports,
            current: AtomicUsize::new(0),
            status,
            told: AtomicBool::new(false),
            recorder,
        }
    }

    /// Moves from the transport at `from` to the next, unless another send
    /// moved already; counts it, and tells it unless one was told since the
    /// last batch taken.
    fn fail_over(&self, from: usize, reason: &str) {
        let to = (from + 1) % self.transports.len();
        if self
            .current
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let (away, next) = (
            self.transports[from].destination(),
            self.transports[to].destination(),
        );
        let failovers = self.status.failed_over(away, next, reason);
        if self.told.swap(true, Ordering::AcqRel) {
            return;
        }
        eprintln!(
            "tailwater: {away} is unavailable ({reason}); shipping to {next} from now on (failover {failovers}), the lines not yet acknowledged stay in the spool and go there"
        );
        self.recorder.system(
            Level::Warn,
            format!("the agent failed over from {away} to {next}: {reason}"),
            fields(json!({
                "event": Event::ServerFailover,
                "from": away,
                "to": next,
                "reason": reason,
                "failovers": failovers,
            })),
        );
    }
}

impl<T: Transport> Transport for Failover<T> {
    fn destination(&self) -> &str {
        self.transports[self.current.load(Ordering::Acquire)].destination()
    }

    async fn send(&self, batch: &IngestBatch) -> Outcome {
        let index = self.current.load(Ordering::Acquire);
        let outcome = self.transports[index].send(batch).await;
        if let Outcome::Accepted(_) = outcome {
            self.told.store(false, Ordering::Release);
        }
        if let Outcome::Unavailable {
            elsewhere: true,
            reason,
            ..
        } = &outcome
        {
            if self.transports.len() > 1 {
                self.fail_over(index, reason);
            }
        }
        outcome
    }
}
