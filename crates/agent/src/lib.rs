//! The worker agent behind `tailwater run`: it starts the worker, captures
//! its stdout and stderr from the first byte, and ships every line.
//!
//! Data flows one way through four parts:
//!
//! - [`supervisor`] starts the worker in its own process group, forwards
//!   signals to it, and reports how it ended;
//! - [`capture`] reads the worker's pipes, echoes them, and cuts them into
//!   lines;
//! - [`outbox`] stamps each line with its time and sequence number, parses
//!   it, and keeps it in the [`spool`] on disk until the server has it;
//! - [`shipper`] sends what the spool holds in batches, retrying while the
//!   server is away, within the [`throttle`]'s rate limit.
//!
//! Lifecycle events (start, exit with code or signal) are records of the
//! `system` stream, in the same sequence as the lines around them.

pub mod capture;
pub mod outbox;
pub mod shipper;
pub mod spool;
pub mod supervisor;
pub mod throttle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tailwater_client::Client;
use tailwater_model::Source;

use crate::outbox::Outbox;
pub use crate::spool::{DEFAULT_SPOOL_MAX_BYTES, MIN_SPOOL_MAX_BYTES};
pub use crate::throttle::{RateLimit, DEFAULT_RATE_BYTES, DEFAULT_RATE_LINES};

/// Longest line kept whole, unless configured otherwise; longer ones are
/// split into pieces of this size.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;
/// How long the agent keeps trying to ship after the worker exited.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub server: String,
    pub token: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub source: Source,
    /// The worker's program and arguments.
    pub command: Vec<String>,
    /// Set `PYTHONUNBUFFERED=1` for the worker, so Python prints as it goes.
    pub unbuffered: bool,
    /// Copy the worker's output to the agent's own stdout and stderr.
    pub echo: bool,
    pub max_line_bytes: usize,
    /// Where runners' spools live (each in `<spool_dir>/<runner>/`); `None`
    /// is [`spool::default_spool_root`].
    pub spool_dir: Option<PathBuf>,
    /// Disk the spool may use; past it the oldest records are dropped and
    /// counted.
    pub spool_max_bytes: u64,
    /// Lines per second shipped at most (`None`: no limit).
    pub rate_lines: Option<u64>,
    /// Bytes of lines per second shipped at most (`None`: no limit).
    pub rate_bytes: Option<u64>,
    pub drain_timeout: Duration,
}

impl AgentConfig {
    pub fn new(server: &str, token: &str, app: &str, command: Vec<String>) -> AgentConfig {
        AgentConfig {
            server: server.to_owned(),
            token: token.to_owned(),
            app: app.to_owned(),
            version: String::new(),
            runner: new_runner_id(),
            source: Source::Run,
            command,
            unbuffered: true,
            echo: true,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            rate_lines: DEFAULT_RATE_LINES,
            rate_bytes: DEFAULT_RATE_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
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

/// A runner id for a worker that was given none: `r-` and 8 hex digits.
pub fn new_runner_id() -> String {
    format!("r-{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// Runs the worker to its end and ships its output. Returns the exit code
/// the agent should exit with: the worker's, or 128 + the signal that killed
/// it.
pub async fn run(config: AgentConfig) -> anyhow::Result<i32> {
    let client = Client::new(&config.server, &config.token)?;
    let outbox = Arc::new(Outbox::open(&config)?);
    let flusher = tokio::spawn(outbox.clone().flush_continuously());
    let mut shipper = tokio::spawn(shipper::ship(
        client.clone(),
        outbox.clone(),
        config.rate_limit(),
    ));

    let exit_code = supervisor::supervise(&config, &outbox).await;

    outbox.close();
    let drained = tokio::time::timeout(config.drain_timeout, &mut shipper)
        .await
        .is_ok();
    shipper.abort();
    flusher.abort();
    let left = outbox.shutdown();
    if !drained && left.records > 0 {
        eprintln!(
            "tailwater: {} lines ({} bytes) could not be shipped to {} within {}s (--drain-timeout); they are kept in the spool at {} and shipped when `tailwater run` starts again with --runner {} (and the same --spool)",
            left.records,
            left.line_bytes,
            client.server(),
            config.drain_timeout.as_secs(),
            outbox.dir().display(),
            config.runner,
        );
    }
    Ok(exit_code)
}
