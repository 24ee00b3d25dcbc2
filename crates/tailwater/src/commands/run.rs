//! `tailwater run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tailwater_agent::{
    AgentConfig, Grouping, ProxyConfig, RestartPolicy, SpoolDurability, DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MULTILINE_MAX_BYTES, DEFAULT_RESTART_MAX, DEFAULT_SPOOL_MAX_BYTES, MIN_SPOOL_MAX_BYTES,
};
use tailwater_model::time::parse_std_duration;
use tailwater_model::Source;

use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater run --app sdxl -- python handler.py\n  tailwater run --app sdxl --version v3 --runner gpu-a100-7 -- ./serve --port 8000\n  tailwater run --app sdxl --proxy 0.0.0.0:8080=127.0.0.1:8000 -- python server.py\n\nAs a container's ENTRYPOINT it is a proper init: it reaps every orphaned process (as PID 1, or as\na child subreaper otherwise), passes SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1 and SIGUSR2 on\nto the worker's process group, SIGKILLs it --stop-timeout after a stop signal, and exits with\nthe worker's code (128 + signal when it was killed).\n\nThe worker finds the control socket in TAILWATER_CONTROL: one JSON object per line, such as\n{\"ready\":true}, {\"request_start\":\"ID\"}, {\"request_end\":\"ID\",\"status\":200}; each is answered\nwith one line, {\"ok\":true} or {\"ok\":false,\"error\":\"...\"}."
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
    /// This worker's id. Default: the host name (a container's id), so a
    /// container restarted on the same --spool volume ships what its last
    /// agent left; when another agent on this machine already runs as the
    /// host name, the host name and a suffix (said on stderr). Give each
    /// worker its own when several share a machine and a spool.
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
    /// fsync the spool at every write (about each millisecond the worker
    /// prints): lines survive the machine crashing or losing power, not
    /// only the agent being killed. Capture waits for each fsync, so a
    /// worker printing flat out on a slow disk is slowed down.
    #[arg(long)]
    spool_fsync: bool,
    /// Ship at most this many lines per second; the rest waits in the spool
    /// and is counted in a system record. Default: no limit.
    #[arg(long, value_name = "LINES")]
    rate_lines: Option<u64>,
    /// Ship at most this many bytes of lines per second; the rest waits in
    /// the spool and is counted in a system record. Default: no limit.
    #[arg(long, value_name = "BYTES")]
    rate_bytes: Option<u64>,
    /// After the worker exits, how long to keep trying to ship.
    #[arg(long, default_value = "30s", value_parser = parse_std_duration, value_name = "DURATION")]
    drain_timeout: Duration,
    /// How long one batch waits for the server's answer before the server
    /// is taken for unreachable and, with several --server, the next is
    /// used (a frozen server accepts connections but never answers). Keep
    /// it above the server's --nats-publish-timeout in a cluster.
    #[arg(long, default_value = "30s", value_parser = parse_std_duration, value_name = "DURATION")]
    send_timeout: Duration,
    /// After a stop signal (TERM, INT, QUIT), how long the worker has to
    /// exit before it is SIGKILLed. Keep it below the platform's grace
    /// period (Docker: 10s, Kubernetes: 30s), so the agent can still record
    /// the end and ship it.
    #[arg(long, default_value = "8s", value_parser = parse_std_duration, value_name = "DURATION")]
    stop_timeout: Duration,
    /// Run the worker on a pseudo-terminal instead of pipes. Programs that
    /// buffer output written to a pipe (C stdio, Python without
    /// PYTHONUNBUFFERED, many CLIs) then write line by line, and progress
    /// bars draw as on a terminal. The cost: stdout and stderr become one
    /// stream (all recorded as stdout), programs may add colors and other
    /// terminal codes, and the worker's stdin stays the agent's.
    #[arg(long)]
    tty: bool,
    /// A line rewritten with carriage returns (a progress bar) keeps at most
    /// one state per this interval, and always its final state; the number
    /// of states not kept is reported in a system record. 0s keeps every
    /// state.
    #[arg(long, default_value = "1s", value_parser = parse_std_duration, value_name = "DURATION")]
    progress_interval: Duration,
    /// The worker's health check, an http:// URL: the worker is recorded as
    /// ready when it first answers 2xx (also when it says so through the
    /// control socket, or when the first request arrives). With --proxy,
    /// GET /healthz is answered from it.
    #[arg(long, value_name = "URL")]
    health: Option<String>,
    /// Be a reverse proxy in front of the worker's HTTP port: listen on
    /// LISTEN, forward to TARGET (0.0.0.0:8080=127.0.0.1:8000, or 8080=8000).
    /// Every request gets an X-Request-Id (the client's, or a new one), and
    /// its start and end (status, duration) are recorded; GET /healthz is
    /// answered from the worker's health check and not recorded. Port 0 in
    /// LISTEN: any free port; the address bound is said on stderr
    /// ("tailwater: proxy listening on http://ADDR …").
    #[arg(long, value_name = "LISTEN=TARGET", value_parser = parse_proxy)]
    proxy: Option<ProxyConfig>,
    /// Publish straight to a tailwater cluster's NATS instead of a server
    /// (comma-separated nats://user:password@host:port, or the user in
    /// --nats-nkey or --nats-creds; the user may publish only this app's
    /// intake subjects: docs/agents-on-nats.md).
    /// --server and --token are then not used.
    #[arg(
        long,
        env = "TAILWATER_AGENT_NATS",
        value_delimiter = ',',
        value_name = "URL",
        hide_env_values = true
    )]
    nats: Vec<String>,
    /// With --nats: the NATS user as a creds file (its user JWT and seed,
    /// as `nsc generate creds` writes it) instead of user:password in
    /// the URLs. Only its owner may read it (chmod 600).
    #[arg(
        long,
        env = "TAILWATER_AGENT_NATS_CREDS",
        value_name = "FILE",
        requires = "nats"
    )]
    nats_creds: Option<PathBuf>,
    /// With --nats: the NATS user as an nkey, a file holding only the
    /// user's seed (SU…, as `nk -gen user -pubout` writes it). Only its
    /// owner may read it (chmod 600).
    #[arg(
        long,
        env = "TAILWATER_AGENT_NATS_NKEY",
        value_name = "FILE",
        requires = "nats"
    )]
    nats_nkey: Option<PathBuf>,
    /// With --nats: the tenant whose app this worker belongs to (the
    /// intake subject's first name).
    #[arg(long, default_value = "default", value_name = "NAME")]
    nats_tenant: String,
    /// Where to make the control socket (given to the worker as
    /// TAILWATER_CONTROL); by default in a private temporary directory.
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// With nothing shipped for this long, send the server an empty batch
    /// (a heartbeat), so it can tell a quiet runner from a lost one. 0s
    /// sends none.
    #[arg(long, default_value = "10s", value_parser = parse_std_duration, value_name = "DURATION")]
    heartbeat_interval: Duration,
    /// Start the worker again when it ends: never, on-failure (a code other
    /// than 0, or killed by a signal) or always. Each restart waits 1s,
    /// doubling up to 30s, back to 1s after a worker that ran 60s, and is
    /// recorded (attempt, the previous exit, the delay). A stop signal ends
    /// the agent, also during a wait; it exits with the last worker's code.
    #[arg(long, default_value = "never", value_name = "WHEN", value_parser = parse_restart)]
    restart: RestartPolicy,
    /// Restarts allowed at most with --restart (0: no limit).
    #[arg(long, default_value_t = DEFAULT_RESTART_MAX, value_name = "N")]
    restart_max: u32,
    /// Ship the lines of a traceback or a panic (Python, JVM, Go, Rust) as
    /// one record at error level: on, or off for a record per line.
    #[arg(long, default_value = "on", value_name = "on|off", value_parser = ["on", "off"])]
    multiline: String,
    /// How long a traceback's next line is waited for before its record is
    /// shipped; a line written later starts a record of its own.
    #[arg(long, default_value = "200ms", value_parser = parse_std_duration, value_name = "DURATION")]
    multiline_wait: Duration,
    /// A traceback's record holds at most this many bytes; a longer one is
    /// shipped in pieces marked continued, counted in a system record.
    #[arg(long, default_value_t = DEFAULT_MULTILINE_MAX_BYTES, value_name = "BYTES")]
    multiline_max_bytes: usize,
    /// The worker's command and arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `--multiline-wait` at most: every record shipped after a traceback
/// waits for it.
const MAX_MULTILINE_WAIT: Duration = Duration::from_secs(10);

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    super::init_tracing("warn");
    let connection = args.connection.resolve()?;
    let token = match (connection.token.clone(), args.nats.is_empty()) {
        (Some(token), _) => token,
        // Publishing to NATS, the NATS user is the credential.
        (None, false) => String::new(),
        (None, true) => anyhow::bail!(
            "no token: pass --token or set TAILWATER_TOKEN (an ingest or admin token)"
        ),
    };
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
        args.multiline_max_bytes > 0,
        "--multiline-max-bytes must be at least 1 (use --multiline off to ship every line alone)"
    );
    anyhow::ensure!(
        args.multiline_wait <= MAX_MULTILINE_WAIT,
        "--multiline-wait must be at most 10s: a traceback's lines come within milliseconds, and each record waits this long for the next"
    );
    anyhow::ensure!(
        !args.app.trim().is_empty(),
        "--app is empty: name the app this worker belongs to"
    );
    anyhow::ensure!(
        args.runner.as_deref().is_none_or(|r| !r.trim().is_empty()),
        "--runner is empty: give this worker an id, or leave it out for the host name"
    );
    let servers = args.connection.servers(&connection)?;
    let mut config = AgentConfig::new(servers, &token, &args.app, args.command);
    config.ca_certificate = args.connection.ca_certificate()?;
    if !args.nats.is_empty() {
        config.nats = Some(tailwater_agent::NatsTarget {
            urls: args.nats,
            tenant: args.nats_tenant,
            creds: args.nats_creds,
            nkey: args.nats_nkey,
        });
    }
    config.version = args.version;
    config.runner = args.runner;
    config.source = args.source.parse::<Source>().map_err(anyhow::Error::msg)?;
    config.unbuffered = !args.no_unbuffered;
    config.echo = !args.quiet;
    config.max_line_bytes = args.max_line_bytes;
    config.spool_dir = args.spool;
    config.spool_max_bytes = args.spool_max_bytes;
    if args.spool_fsync {
        config.spool_durability = SpoolDurability::Machine;
    }
    config.rate_lines = args.rate_lines;
    config.rate_bytes = args.rate_bytes;
    config.drain_timeout = args.drain_timeout;
    anyhow::ensure!(
        !args.send_timeout.is_zero(),
        "invalid --send-timeout 0: give the server time to answer (30s is the default)"
    );
    config.send_timeout = args.send_timeout;
    config.stop_timeout = args.stop_timeout;
    config.tty = args.tty;
    config.progress_interval = args.progress_interval;
    config.health = args.health;
    config.proxy = args.proxy;
    config.control_socket = args.control_socket;
    config.heartbeat_interval = Some(args.heartbeat_interval).filter(|every| !every.is_zero());
    config.restart = args.restart;
    config.restart_max = args.restart_max;
    config.multiline = (args.multiline == "on").then_some(Grouping {
        wait: args.multiline_wait,
        max_bytes: args.multiline_max_bytes,
    });
    let code = tailwater_agent::run(config).await?;
    // Exit codes are 0..=255; a worker's code is already in that range, and
    // 128 + signal is too.
    Ok(u8::try_from(code).unwrap_or(1))
}

fn parse_restart(text: &str) -> Result<RestartPolicy, String> {
    text.parse()
}

fn parse_proxy(text: &str) -> Result<ProxyConfig, String> {
    text.parse()
}
