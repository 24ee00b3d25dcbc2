//! `tailwater run`.

use std::time::Duration;

use clap::Args;
use tailwater_agent::{AgentConfig, DEFAULT_BUFFER_BYTES, DEFAULT_MAX_LINE_BYTES};
use tailwater_model::Source;

use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater run --app sdxl -- python handler.py\n  tailwater run --app sdxl --version v3 --runner $HOSTNAME -- ./serve --port 8000"
)]
pub struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    /// The app (endpoint) this worker belongs to.
    #[arg(long, env = "TAILWATER_APP")]
    app: String,
    /// The app version the worker runs.
    #[arg(long, env = "TAILWATER_VERSION", default_value = "")]
    version: String,
    /// This worker's id; a random one when not given.
    #[arg(long, env = "TAILWATER_RUNNER")]
    runner: Option<String>,
    /// Which part of the platform this is.
    #[arg(long, default_value = "run", value_parser = ["run", "gateway", "deploy"])]
    source: String,
    /// Do not set PYTHONUNBUFFERED=1 for the worker.
    #[arg(long)]
    no_unbuffered: bool,
    /// Do not copy the worker's output to this terminal.
    #[arg(long, short)]
    quiet: bool,
    /// Longest line kept whole, in bytes; longer lines are split.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
    /// Memory for lines the server has not taken yet, in bytes; past it the
    /// oldest are dropped and counted.
    #[arg(long, default_value_t = DEFAULT_BUFFER_BYTES)]
    buffer_bytes: usize,
    /// After the worker exits, how long to keep trying to ship, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// The worker's command and arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    super::init_tracing("warn");
    let token = args.connection.token.clone().ok_or_else(|| {
        anyhow::anyhow!("no token: pass --token or set TAILWATER_TOKEN (an ingest or admin token)")
    })?;
    anyhow::ensure!(
        args.max_line_bytes > 0,
        "--max-line-bytes must be at least 1"
    );
    let mut config = AgentConfig::new(&args.connection.server, &token, &args.app, args.command);
    config.version = args.version;
    if let Some(runner) = args.runner {
        config.runner = runner;
    }
    config.source = args.source.parse::<Source>().map_err(anyhow::Error::msg)?;
    config.unbuffered = !args.no_unbuffered;
    config.echo = !args.quiet;
    config.max_line_bytes = args.max_line_bytes;
    config.buffer_bytes = args.buffer_bytes;
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    let code = tailwater_agent::run(config).await?;
    // Exit codes are 0..=255; a worker's code is already in that range, and
    // 128 + signal is too.
    Ok(u8::try_from(code).unwrap_or(1))
}
