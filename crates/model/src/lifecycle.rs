//! The lifecycle vocabulary: what a `system` record's `event` field says
//! happened, shared by the agent that writes it, the server that reads it
//! (the runner table, request ownership and summaries, ingest metrics), the
//! API schema and the console.
//!
//! Each event's other fields are named by the constants below; a field
//! that an event leaves out means "not known".

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::record::Fields;

/// The field of a `system` record that names its event.
pub const EVENT: &str = "event";

/// Field keys events carry, each with the events that carry it.
pub mod field {
    /// `request_start`: the caller the gateway says the request is for.
    pub const CALLER: &str = "caller";
    /// `request_start`, `request_end`: requests in flight on the runner after it.
    pub const IN_FLIGHT: &str = "in_flight";
    /// `exit`, `spawn_failed`: the worker's exit code.
    pub const EXIT_CODE: &str = "exit_code";
    /// `exit`, `stop`: the signal that ended (or was sent to) the worker.
    pub const SIGNAL: &str = "signal";
    /// `exit`: whether the kernel's OOM killer ended it.
    pub const OOM_KILLED: &str = "oom_killed";
    /// `throttled`: lines the agent's rate limit held back.
    pub const HELD_LINES: &str = "held_lines";
    /// `dropped`: lines the agent could not keep.
    pub const DROPPED_LINES: &str = "dropped_lines";
    /// `dropped`, `server_refused`, `oom_watch_unavailable`: why, as a short
    /// snake_case word.
    pub const REASON: &str = "reason";
    /// `request_end`: how it ended: `completed`, `error`, `client_closed`
    /// (the client went away) or `unfinished` (the worker exited first).
    pub const OUTCOME: &str = "outcome";
    /// `request_end`: the HTTP status answered, when there was one.
    pub const STATUS: &str = "status";
}

/// Whether a `request_end`'s fields say the request was served: completed,
/// with no 5xx status. An error, a client that went away and a request its
/// worker left unfinished are failures.
pub fn request_served(fields: &crate::Fields) -> bool {
    let completed = fields.get(field::OUTCOME).and_then(|o| o.as_str()) == Some("completed");
    let status = fields.get(field::STATUS).and_then(|s| s.as_u64());
    completed && status.is_none_or(|status| status < 500)
}

macro_rules! events {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// What a `system` record says happened.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Event {
            $($(#[$doc])* $variant,)*
        }

        impl Event {
            /// Every event, in the order above.
            pub const ALL: &'static [Event] = &[$(Event::$variant,)*];

            /// The name in the `event` field.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Event::$variant => $name,)*
                }
            }

            /// The event named `name`, if tailwater knows it.
            pub fn parse(name: &str) -> Option<Event> {
                match name {
                    $($name => Some(Event::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

events! {
    // The worker, from the agent's supervisor.
    /// The worker process started (a new run, after a `restart` too).
    Start = "start",
    /// The worker could not be started.
    SpawnFailed = "spawn_failed",
    /// A stop signal was forwarded to the worker.
    Stop = "stop",
    /// The worker outlived `--stop-timeout` and was killed.
    StopTimeout = "stop_timeout",
    /// The worker exited (code or signal).
    Exit = "exit",
    /// The worker will run again after a backoff.
    Restart = "restart",
    /// A stop signal came during the backoff: no restart.
    RestartCancelled = "restart_cancelled",
    /// `--restart-max` restarts were made: no more.
    RestartLimit = "restart_limit",
    /// The cgroup's OOM killer killed a process of the worker.
    OomKill = "oom_kill",
    /// OOM kills cannot be watched here (no cgroup v2 `memory.events`).
    OomWatchUnavailable = "oom_watch_unavailable",
    // Requests, from the worker (control socket) or the agent's proxy.
    /// The worker is ready to serve.
    Ready = "ready",
    /// A request started.
    RequestStart = "request_start",
    /// A request ended.
    RequestEnd = "request_end",
    // What the agent did with the lines.
    /// Lines held back by the agent's own rate limit.
    Throttled = "throttled",
    /// Lines the agent could not keep (its spool full, say).
    Dropped = "dropped",
    /// Repeated progress-bar redraws collapsed into one line.
    ProgressCollapsed = "progress_collapsed",
    /// Multi-line events (tracebacks) longer than the agent's
    /// `--multiline-max-bytes`, shipped cut into several records.
    MultilineCut = "multiline_cut",
    /// The agent found its spool cut short and kept what was whole.
    SpoolTruncated = "spool_truncated",
    /// The agent recovered a spool left by an earlier run.
    SpoolRecovered = "spool_recovered",
    /// The server asked the agent to slow down (429).
    ServerRateLimited = "server_rate_limited",
    /// The server refused records of a batch it took.
    ServerRefused = "server_refused",
    /// The agent moved to the next of its servers (`--server A,B`): the
    /// one in use was away.
    ServerFailover = "server_failover",
    // The server's own notices about a runner.
    /// The server's rate limit refused batches of this runner.
    RateLimited = "rate_limited",
    /// The server cut lines over its line limits.
    IngestCut = "ingest_cut",
    /// The runner stopped sending heartbeats.
    Lost = "lost",
    /// A lost runner was heard from again.
    Returned = "returned",
    /// The server's write-ahead log lost acknowledged records.
    WalLoss = "wal_loss",
    /// The server's write-ahead log may have lost acknowledged records.
    WalPossibleLoss = "wal_possible_loss",
    /// A drain of the app paused after failed deliveries in a row.
    DrainPaused = "drain_paused",
}

impl Event {
    /// The event a record's fields name, if it is one tailwater knows.
    pub fn of(fields: &Fields) -> Option<Event> {
        fields.get(EVENT)?.as_str().and_then(Event::parse)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_by_name_and_through_serde() {
        let mut names = std::collections::HashSet::new();
        for &event in Event::ALL {
            assert!(names.insert(event.as_str()), "{event} twice");
            assert_eq!(Event::parse(event.as_str()), Some(event));
            let json = serde_json::to_value(event).unwrap();
            assert_eq!(json, event.as_str());
            let fields: Fields =
                serde_json::from_value(serde_json::json!({ EVENT: event })).unwrap();
            assert_eq!(Event::of(&fields), Some(event));
        }
        assert_eq!(Event::parse("no_such_event"), None);
        let fields: Fields = serde_json::from_value(serde_json::json!({ EVENT: 7 })).unwrap();
        assert_eq!(Event::of(&fields), None);
    }
}
