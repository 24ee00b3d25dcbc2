//! `GET /v1/runners` and `GET /v1/requests/{id}`: runners and their
//! states, requests and theirs.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::record::{LogRecord, Source};

/// Where a runner's life stands (`GET /v1/runners`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerState {
    /// Started, not ready yet.
    Initializing,
    /// Ready, no request in flight.
    Ready,
    /// Serving at least one request.
    Running,
    /// Exit code 0, or stopped by the stop signal it was asked to stop with.
    Exited,
    /// A non-zero exit code, or killed by a signal nobody asked for.
    Crashed,
    /// Killed by the kernel's OOM killer.
    OomKilled,
    /// Not ended, and silent past the server's heartbeat timeout.
    Lost,
}

impl RunnerState {
    pub const ALL: [RunnerState; 7] = [
        RunnerState::Initializing,
        RunnerState::Ready,
        RunnerState::Running,
        RunnerState::Exited,
        RunnerState::Crashed,
        RunnerState::OomKilled,
        RunnerState::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Initializing => "initializing",
            RunnerState::Ready => "ready",
            RunnerState::Running => "running",
            RunnerState::Exited => "exited",
            RunnerState::Crashed => "crashed",
            RunnerState::OomKilled => "oom-killed",
            RunnerState::Lost => "lost",
        }
    }

    /// Whether the life is over: exited, crashed or OOM-killed.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunnerState::Exited | RunnerState::Crashed | RunnerState::OomKilled
        )
    }
}

impl std::fmt::Display for RunnerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RunnerState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunnerState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| {
                format!("unknown runner state '{text}': use one of initializing, ready, running, exited, crashed, oom-killed, lost")
            })
    }
}

/// How a runner's life ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub oom_killed: bool,
}

/// A runner's requests in its current life.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnerRequests {
    /// Requests that ended with an answer: completed, no 5xx status.
    pub served: u64,
    /// Requests that ended otherwise: an error or a 5xx answer, a client
    /// that went away, or a worker that exited first
    /// ([`crate::lifecycle::request_served`]).
    #[serde(default)]
    pub failed: u64,
    pub in_flight: u64,
}

/// One runner (tenant, app, runner id) and its latest life (`boot`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Runner {
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
    pub source: Source,
    pub state: RunnerState,
    /// When this life started (its first record), as the agent stamped it.
    pub started: Timestamp,
    pub ready_at: Option<Timestamp>,
    /// When the server last heard from it (a batch arrived, heartbeats too).
    pub last_seen: Timestamp,
    pub exited_at: Option<Timestamp>,
    pub exit: Option<RunnerExit>,
    pub requests: RunnerRequests,
}

/// `GET /v1/runners`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerList {
    /// Newest start first.
    pub runners: Vec<Runner>,
}

/// `GET /v1/runners/{runner}`: the runner and its lifecycle records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerDetail {
    #[serde(flatten)]
    pub runner: Runner,
    /// Its newest `system` records (lifecycle, and the server's `lost` and
    /// `returned`), oldest first.
    pub events: Vec<LogRecord>,
}

/// Where a request stands (`GET /v1/requests/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Started, not ended yet.
    InFlight,
    /// Ended with a response (whatever its status).
    Completed,
    /// Failed: the worker did not answer, or the client went away.
    Error,
    /// Still in flight when its worker exited.
    Unfinished,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::InFlight => "in_flight",
            RequestState::Completed => "completed",
            RequestState::Error => "error",
            RequestState::Unfinished => "unfinished",
        }
    }
}

/// `GET /v1/requests/{id}`: where and when a request ran, and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    pub request_id: String,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub state: RequestState,
    pub status: Option<i64>,
    /// Its start (the `request_start` record, else its first record).
    pub started: Timestamp,
    /// Its end, once it ended.
    pub ended: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    /// Records stored for it.
    pub records: u64,
    /// Why it failed, when it did: the worker's error, or what cut it
    /// short (its worker exited first).
    #[serde(default)]
    pub error: Option<String>,
}
