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
//!   it, and holds it until the server has it;
//! - [`shipper`] sends what the outbox holds in batches, retrying while the
//!   server is away.
//!
//! Lifecycle events (start, exit with code or signal) are records of the
//! `system` stream, in the same sequence as the lines around them.

pub mod capture;
pub mod outbox;
pub mod shipper;
pub mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tailwater_client::Client;
use tailwater_model::Source;

use crate::outbox::Outbox;

/// Longest line kept whole, unless configured otherwise; longer ones are
/// split into pieces of this size.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;
/// Memory the agent may hold for a server that is away, unless configured
/// otherwise. Past it, the oldest lines are dropped and counted.
pub const DEFAULT_BUFFER_BYTES: usize = 64 * 1024 * 1024;
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
    pub buffer_bytes: usize,
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
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
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
    let outbox = Arc::new(Outbox::new(&config));
    let shipper = tokio::spawn(shipper::ship(client.clone(), outbox.clone()));

    let exit_code = supervisor::supervise(&config, &outbox).await;

    outbox.close();
    match tokio::time::timeout(config.drain_timeout, shipper).await {
        Ok(_) => {}
        Err(_) => {
            let (lines, bytes) = outbox.pending();
            eprintln!(
                "tailwater: {lines} lines ({bytes} bytes) could not be shipped to {} within {}s (--drain-timeout) and are lost",
                client.server(),
                config.drain_timeout.as_secs()
            );
        }
    }
    Ok(exit_code)
}
