//! What shipping is doing now, as the control socket's `status` command
//! answers it (`tailwater agent status`): the server in use, the failovers
//! so far, what was shipped, what waits in the spool and the last error.
//!
//! [`ShipStatus`] is written by the shipper (each batch acknowledged, each
//! failure) and by [`Failover`](super::Failover) (each move, the one home
//! of the failover count); [`AgentStatus`] is a snapshot of it, the
//! answer's JSON. A few words under a lock per batch, never per line.

use std::sync::Mutex;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::recorder::Recorder;

/// The agent's shipping, as the `status` command answers it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub app: String,
    pub runner: String,
    pub boot: String,
    /// The server batches go to now.
    pub server: String,
    /// Every server given (`--server A,B`), in failover order.
    pub servers: Vec<String>,
    pub failovers: Failovers,
    pub shipped: Shipped,
    /// Records in the spool not yet acknowledged.
    pub spool: SpoolBacklog,
    /// The last send was not taken (the spool keeps its lines and the
    /// shipper tries again).
    pub failing: bool,
    /// The last send a receiver did not take, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

/// Moves from one server to the next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Failovers {
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<FailoverNote>,
}

/// One move.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailoverNote {
    pub at: Timestamp,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// What receivers acknowledged since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shipped {
    pub batches: u64,
    /// Records (the worker's lines and the agent's own records).
    pub lines: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<Timestamp>,
}

/// What waits in the spool for a receiver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpoolBacklog {
    pub lines: u64,
    /// The lines' text.
    pub bytes: u64,
    /// What they take on disk.
    pub disk_bytes: u64,
}

/// A send not taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub at: Timestamp,
    pub server: String,
    pub error: String,
}

/// Shipping's live state, shared by the shipper, the failover and the
/// control socket.
pub struct ShipStatus {
    state: Mutex<AgentStatus>,
}

impl ShipStatus {
    /// Nothing shipped yet, to the first of `servers` (at least one).
    pub fn new(servers: Vec<String>) -> ShipStatus {
        ShipStatus {
            state: Mutex::new(AgentStatus {
                server: servers.first().cloned().unwrap_or_default(),
                servers,
                ..AgentStatus::default()
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AgentStatus> {
        // A panic elsewhere leaves figures, never a broken invariant.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver acknowledged a batch of `lines` records.
    pub fn shipped(&self, lines: usize) {
        let mut state = self.lock();
        state.shipped.batches += 1;
        state.shipped.lines += lines as u64;
        state.shipped.last_at = Some(Timestamp::now());
        state.failing = false;
    }

    /// `server` did not take a send, for `error`.
    pub fn failed(&self, server: &str, error: &str) {
        let mut state = self.lock();
        state.failing = true;
        state.last_error = Some(LastError {
            at: Timestamp::now(),
            server: server.to_owned(),
            error: error.to_owned(),
        });
    }

    /// Shipping moved from `from` to `to`; returns the failovers so far.
    pub fn failed_over(&self, from: &str, to: &str, reason: &str) -> u64 {
        let mut state = self.lock();
        state.server = to.to_owned();
        state.failovers.count += 1;
        state.failovers.last = Some(FailoverNote {
            at: Timestamp::now(),
            from: from.to_owned(),
            to: to.to_owned(),
            reason: reason.to_owned(),
        });
        state.failovers.count
    }

    /// Shipping goes to `server` (a NATS client connected, not a move).
    pub fn connected_to(&self, server: &str) {
        self.lock().server = server.to_owned();
    }

    /// Failovers so far.
    pub fn failovers(&self) -> u64 {
        self.lock().failovers.count
    }

    /// The state now, with `recorder`'s labels and backlog.
    pub fn snapshot(&self, recorder: &Recorder) -> AgentStatus {
        let backlog = recorder.backlog();
        let mut status = self.lock().clone();
        status.app = recorder.app().to_owned();
        status.runner = recorder.runner().to_owned();
        status.boot = recorder.boot().to_owned();
        status.spool = SpoolBacklog {
            lines: backlog.records,
            bytes: backlog.line_bytes,
            disk_bytes: backlog.frame_bytes,
        };
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_follows_shipping_and_failovers() {
        let status = ShipStatus::new(vec!["http://a".into(), "http://b".into()]);
        status.failed("http://a", "connection refused");
        assert_eq!(status.failed_over("http://a", "http://b", "refused"), 1);
        status.shipped(3);
        let dir = tempfile::tempdir().unwrap();
        let options = crate::recorder::Options::new("api", dir.path(), 1 << 20);
        let recorder = Recorder::open(&options).unwrap();
        let now = status.snapshot(&recorder);
        assert_eq!(now.app, "api");
        assert_eq!(now.server, "http://b");
        assert_eq!(now.failovers.count, 1);
        let last = now.failovers.last.as_ref().unwrap();
        assert_eq!((&*last.from, &*last.to), ("http://a", "http://b"));
        assert_eq!((now.shipped.batches, now.shipped.lines), (1, 3));
        assert!(!now.failing, "a batch was taken since");
        assert_eq!(now.last_error.as_ref().unwrap().error, "connection refused");
        // The answer's JSON reads back.
        let json = serde_json::to_string(&now).unwrap();
        assert_eq!(serde_json::from_str::<AgentStatus>(&json).unwrap(), now);
    }
}
