//! What `tailwater run` is told: the agent's configuration, its defaults,
//! and the restart policy. Read by every layer; imports none of them but
//! the types its fields are made of.

use std::path::PathBuf;
use std::time::Duration;

use tailwater_model::Source;

use crate::proxy::ProxyConfig;
use crate::recorder;
use crate::ship::group::Grouping;
use crate::ship::throttle::{RateLimit, DEFAULT_RATE_BYTES, DEFAULT_RATE_LINES};
use crate::ship::DEFAULT_HEARTBEAT_INTERVAL;
use crate::spool::{Durability as SpoolDurability, DEFAULT_SPOOL_MAX_BYTES};

/// Longest line kept whole, unless configured otherwise; longer ones are
/// split into pieces of this size.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;
/// How long the agent keeps trying to ship after the worker exited.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one batch waits for the server's answer before the agent takes
/// the server for unreachable and (with several) fails over. Above a
/// cluster node's publish timeout (10s), so a server waiting out a NATS
/// election is not abandoned.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the worker has to exit after a stop signal before it is
/// SIGKILLed: below Docker's 10 s (and Kubernetes' 30 s) grace period, so
/// the agent still has time to record the end and ship it.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(8);
/// A line rewritten with `\r` (a progress bar) keeps at most one state per
/// this interval, and its final state.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// A cluster's NATS servers (`nats://[user:password@]host:port`) and the
/// tenant whose intake subjects the agent publishes on.
#[derive(Clone, Debug)]
pub struct NatsTarget {
    pub urls: Vec<String>,
    pub tenant: String,
    /// The NATS user as a creds file (`--nats-creds`) or an nkey seed's
    /// file (`--nats-nkey`) instead of one in the URLs; read at start
    /// (`tailwater_model::nats_auth`).
    pub creds: Option<PathBuf>,
    pub nkey: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The servers' URLs (`--server A,B`): shipped to one at a time, the
    /// next when it is away (see [`crate::ship::failover`]). At least one.
    pub servers: Vec<String>,
    pub token: String,
    /// Publish to a tailwater cluster's NATS instead (`--nats`), as this
    /// tenant's app (docs/agents-on-nats.md); the servers and token are
    /// then not used.
    pub nats: Option<NatsTarget>,
    /// PEM certificates to trust for an https server (`--ca-cert`), beside
    /// the public roots.
    pub ca_certificate: Option<Vec<u8>>,
    pub app: String,
    pub version: String,
    /// This worker's runner id (`--runner`); `None`: the host name, see
    /// [`crate::runner_id`].
    pub runner: Option<String>,
    pub source: Source,
    /// The worker's program and arguments.
    pub command: Vec<String>,
    /// Set `PYTHONUNBUFFERED=1` for the worker, so Python prints as it goes.
    pub unbuffered: bool,
    /// Copy the worker's output to the agent's own stdout and stderr.
    pub echo: bool,
    pub max_line_bytes: usize,
    /// Where runners' spools live (each in `<spool_dir>/<runner>/`); `None`
    /// is [`crate::spool::default_spool_root`].
    pub spool_dir: Option<PathBuf>,
    /// Disk the spool may use; past it the oldest records are dropped and
    /// counted.
    pub spool_max_bytes: u64,
    /// What the spool survives: the agent killed (default), or the machine
    /// crashing too (an fsync per flush).
    pub spool_durability: SpoolDurability,
    /// Lines per second shipped at most (`None`: no limit).
    pub rate_lines: Option<u64>,
    /// Bytes of lines per second shipped at most (`None`: no limit).
    pub rate_bytes: Option<u64>,
    pub drain_timeout: Duration,
    /// How long one batch waits for the server's answer (`--send-timeout`).
    pub send_timeout: Duration,
    /// Run the worker on a pseudo-terminal: line-buffered output, stdout and
    /// stderr merged.
    pub tty: bool,
    /// After a stop signal, how long the worker has before SIGKILL.
    pub stop_timeout: Duration,
    /// One state per interval of a line rewritten with `\r`.
    pub progress_interval: Duration,
    /// The worker's health check URL (`http://`): ready when it answers 2xx.
    pub health: Option<String>,
    /// Be a reverse proxy in front of the worker's HTTP port.
    pub proxy: Option<ProxyConfig>,
    /// Where the control socket goes; a private temporary directory if not
    /// given.
    pub control_socket: Option<PathBuf>,
    /// With nothing shipped for this long, an empty batch says the runner is
    /// alive (`None`: no heartbeats).
    pub heartbeat_interval: Option<Duration>,
    /// When a worker that ended is started again.
    pub restart: RestartPolicy,
    /// Restarts allowed at most; 0 is no limit.
    pub restart_max: u32,
    /// The wait before each restart.
    pub restart_backoff: RestartBackoff,
    /// How the lines of a traceback or a panic are grouped into one record
    /// (`--multiline-wait`, `--multiline-max-bytes`); `None`: every line is
    /// its own record (`--multiline off`).
    pub multiline: Option<Grouping>,
}

impl AgentConfig {
    pub fn new(servers: Vec<String>, token: &str, app: &str, command: Vec<String>) -> AgentConfig {
        AgentConfig {
            servers,
            token: token.to_owned(),
            nats: None,
            ca_certificate: None,
            app: app.to_owned(),
            version: String::new(),
            runner: None,
            source: Source::Run,
            command,
            unbuffered: true,
            echo: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            spool_durability: SpoolDurability::default(),
            rate_lines: DEFAULT_RATE_LINES,
            rate_bytes: DEFAULT_RATE_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            tty: false,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            progress_interval: DEFAULT_PROGRESS_INTERVAL,
            health: None,
            proxy: None,
            control_socket: None,
            heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
            restart: RestartPolicy::default(),
            restart_max: DEFAULT_RESTART_MAX,
            restart_backoff: RestartBackoff::default(),
            multiline: Some(Grouping::default()),
        }
    }

    /// What the recorder is opened with.
    pub fn recorder(&self) -> recorder::Options {
        recorder::Options {
            app: self.app.clone(),
            version: self.version.clone(),
            source: self.source,
            runner: self.runner.clone(),
            spool_dir: self.spool_dir.clone(),
            spool_max_bytes: self.spool_max_bytes,
            spool_durability: self.spool_durability,
        }
    }

    /// The shipping rate limit.
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit {
            lines_per_second: self.rate_lines,
            bytes_per_second: self.rate_bytes,
        }
    }
}

/// Restarts allowed unless configured otherwise (`--restart-max`; 0 is no
/// limit).
pub const DEFAULT_RESTART_MAX: u32 = 5;

/// When a worker that ended is started again (`--restart`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// The agent ends with the worker.
    #[default]
    Never,
    /// Again when it exited with a code other than 0 or was killed.
    OnFailure,
    /// Again however it ended.
    Always,
}

impl RestartPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Always => "always",
        }
    }
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<RestartPolicy, String> {
        match text {
            "never" => Ok(RestartPolicy::Never),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "always" => Ok(RestartPolicy::Always),
            _ => Err(format!(
                "invalid --restart '{text}': write never, on-failure or always"
            )),
        }
    }
}

/// The wait before each restart: `first`, doubling up to `max`; back to
/// `first` once a worker ran `reset_after` (it was healthy for a while, so
/// its next failure is a new story, not the same crash loop).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartBackoff {
    pub first: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for RestartBackoff {
    fn default() -> RestartBackoff {
        RestartBackoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}
