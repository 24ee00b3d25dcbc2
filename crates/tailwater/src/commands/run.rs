//! `tailwater run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tailwater_agent::{
    AgentConfig, DEFAULT_MAX_LINE_BYTES, DEFAULT_SPOOL_MAX_BYTES, MIN_SPOOL_MAX_BYTES,
};
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
    /// Where to keep lines until the server has them: DIR/<runner>/ (put DIR
    /// on a volume to keep them across container restarts). Default:
    /// $XDG_STATE_HOME/tailwater/spool, else /var/lib/tailwater/spool for
    /// root, else ~/.local/state/tailwater/spool.
    #[arg(long, env = "TAILWATER_SPOOL", value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Disk the spool may use, in bytes; past it the oldest lines are
    /// dropped and counted in a system record.
    #[arg(long, default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    spool_max_bytes: u64,
    /// Ship at most this many lines per second; the rest waits in the spool
    /// and is counted in a system record. Default: no limit.
    #[arg(long, value_name = "LINES")]
    rate_lines: Option<u64>,
    /// Ship at most this many bytes of lines per second; the rest waits in
    /// the spool and is counted in a system record. Default: no limit.
    #[arg(long, value_name = "BYTES")]
    rate_bytes: Option<u64>,
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
    anyhow::ensure!(
        args.spool_max_bytes >= MIN_SPOOL_MAX_BYTES,
        "--spool-max-bytes must be at least {MIN_SPOOL_MAX_BYTES}"
    );
    anyhow::ensure!(
        args.rate_lines != Some(0) && args.rate_bytes != Some(0),
        "--rate-lines and --rate-bytes must be at least 1 (leave them out for no limit)"
    );
    anyhow::ensure!(
        !args.app.trim().is_empty(),
        "--app is empty: name the app this worker belongs to"
    );
    anyhow::ensure!(
        args.runner.as_deref().is_none_or(|r| !r.trim().is_empty()),
        "--runner is empty: give this worker an id, or leave it out for a random one"
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
    config.spool_dir = args.spool;
    config.spool_max_bytes = args.spool_max_bytes;
    config.rate_lines = args.rate_lines;
    config.rate_bytes = args.rate_bytes;
    config.drain_timeout = Duration::from_secs(args.drain_timeout);
    let code = tailwater_agent::run(config).await?;
    // Exit codes are 0..=255; a worker's code is already in that range, and
    // 128 + signal is too.
    Ok(u8::try_from(code).unwrap_or(1))
}
