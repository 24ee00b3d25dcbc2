//! The worker agent behind `tailwater run`: it starts the worker, captures
//! its stdout and stderr from the first byte, and ships every line.
//!
//! Data flows one way:
//!
//! - [`supervisor`] starts the worker in its own process group, forwards
//!   signals to it, stops it within a deadline, and reports how it ended;
//!   [`reaper`] reaps every child (the agent may be PID 1), and [`cgroup`]
//!   notices OOM kills;
//! - [`capture`] reads the worker's pipes (or pseudo-terminal), cuts them
//!   into lines, collapses progress bars, and echoes them;
//! - [`requests`] knows which requests are in flight, marked by the
//!   [`proxy`] (`--proxy`) or through the [`control`] socket, so a line
//!   belongs to its request;
//! - [`outbox`] stamps each line with its time and sequence number, parses
//!   it, and keeps it in the [`spool`] on disk until the server has it (the
//!   spool of the runner [`runner_id`] chooses: `--runner`, else the host
//!   name, so a restarted container ships what the last agent left);
//! - [`shipper`] sends what the spool holds in batches, retrying while the
//!   server is away, within the [`throttle`]'s rate limit.
//!
//! Lifecycle events (start, ready, request start and end, stop, OOM kill,
//! exit with code or signal) are records of the `system` stream, in the same
//! sequence as the lines around them.

pub mod capture;
pub mod cgroup;
pub mod control;
pub mod outbox;
pub mod proxy;
pub mod reaper;
pub mod requests;
pub mod runner_id;
pub mod shipper;
pub mod spool;
pub mod supervisor;
pub mod throttle;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tailwater_client::Client;
use tailwater_model::Source;

use crate::capture::OutputSync;
use crate::control::ControlSocket;
use crate::outbox::Outbox;
pub use crate::proxy::ProxyConfig;
use crate::requests::Requests;
pub use crate::shipper::DEFAULT_HEARTBEAT_INTERVAL;
pub use crate::spool::{
    Durability as SpoolDurability, DEFAULT_SPOOL_MAX_BYTES, MIN_SPOOL_MAX_BYTES,
};
pub use crate::supervisor::{RestartBackoff, RestartPolicy, DEFAULT_RESTART_MAX};
pub use crate::throttle::{RateLimit, DEFAULT_RATE_BYTES, DEFAULT_RATE_LINES};

/// Longest line kept whole, unless configured otherwise; longer ones are
/// split into pieces of this size.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;
/// How long the agent keeps trying to ship after the worker exited.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the worker has to exit after a stop signal before it is
/// SIGKILLed: below Docker's 10 s (and Kubernetes' 30 s) grace period, so
/// the agent still has time to record the end and ship it.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(8);
/// A line rewritten with `\r` (a progress bar) keeps at most one state per
/// this interval, and its final state.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub server: String,
    pub token: String,
    /// PEM certificates to trust for an https server (`--ca-cert`), beside
    /// the public roots.
    pub ca_certificate: Option<Vec<u8>>,
    pub app: String,
    pub version: String,
    /// This worker's runner id (`--runner`); `None`: the host name, see
    /// [`runner_id`].
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
    /// is [`spool::default_spool_root`].
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
}

impl AgentConfig {
    pub fn new(server: &str, token: &str, app: &str, command: Vec<String>) -> AgentConfig {
        AgentConfig {
            server: server.to_owned(),
            token: token.to_owned(),
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

/// Keeps the agent's own memory small: no transparent huge pages for this
/// process. The allocator (mimalloc, chosen for the server) asks for huge
/// pages, so each thread's first allocation would fault in 2 MiB; the agent
/// lives beside a GPU worker for its whole life and needs a few MiB. Call it
/// first thing in `main`, before the threads start. The worker gets the
/// machine's own policy back (see [`supervisor`]).
pub fn stay_small() {
    // SAFETY: prctl with integer arguments; a refusal (an old kernel)
    // leaves the default.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

/// Runs the worker to its end and ships its output. Returns the exit code
/// the agent should exit with: the worker's, or 128 + the signal that killed
/// it. Fails before the worker starts on a configuration it cannot serve (a
/// proxy address in use, a control socket path it cannot bind).
pub async fn run(config: AgentConfig) -> anyhow::Result<i32> {
    let mut client = Client::new(&config.server, &config.token)?;
    if let Some(pem) = &config.ca_certificate {
        client = client.with_ca_certificate(pem)?;
    }
    let health = config
        .health
        .as_deref()
        .map(proxy::parse_health_url)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let proxy_listener = match &config.proxy {
        Some(proxy) => Some(proxy::bind(proxy).await.map_err(|error| {
            anyhow::anyhow!("cannot listen on {} for --proxy: {error}", proxy.listen)
        })?),
        None => None,
    };
    let (control, no_control) = match ControlSocket::bind(config.control_socket.as_deref()) {
        Ok(control) => (Some(control), None),
        Err(error) => match &config.control_socket {
            Some(path) => {
                anyhow::bail!("cannot make the control socket {}: {error}", path.display())
            }
            // Without a path asked for, a read-only /tmp costs only the
            // socket, and a system record says so.
            None => (None, Some(error)),
        },
    };

    let outbox = Arc::new(Outbox::open(&config)?);
    let flusher = tokio::spawn(outbox.clone().flush_continuously());
    // What a previous agent left is read while the worker starts, not
    // before: it ships first, once read.
    let recovering = {
        let outbox = outbox.clone();
        tokio::task::spawn_blocking(move || outbox.recover_leftovers())
    };
    let mut shipper = tokio::spawn(shipper::ship(
        client.clone(),
        outbox.clone(),
        shipper::ShipOptions {
            rate: config.rate_limit(),
            heartbeat: config.heartbeat_interval,
        },
    ));
    if let Some(error) = no_control {
        outbox.system_warning(format!(
            "no control socket: cannot make one in {}: {error}; the worker cannot mark readiness or requests through it",
            std::env::temp_dir().display()
        ));
    }
    let sync = Arc::new(OutputSync::default());
    let requests = Arc::new(Requests::new(outbox.clone(), sync.clone()));

    let mut tasks = Vec::new();
    let mut control = control;
    if let Some(control) = control.as_mut() {
        tasks.push(control.serve(requests.clone()));
    }
    if let (Some(listener), Some(proxy)) = (proxy_listener, &config.proxy) {
        tasks.push(proxy::serve(
            listener,
            proxy,
            health.clone(),
            requests.clone(),
        ));
    }
    if let Some(url) = health {
        tasks.push(tokio::spawn(proxy::wait_until_healthy(
            url,
            requests.clone(),
        )));
    }

    let exit_code = supervisor::supervise(
        &config,
        supervisor::Shared {
            outbox: &outbox,
            requests: &requests,
            sync: &sync,
            control_socket: control.as_ref().map(ControlSocket::path),
        },
    )
    .await;
    for task in tasks {
        task.abort();
    }
    drop(control);

    // Leftovers are read whole (a bounded disk read) before the end is
    // planned, so what is left for the next agent is counted right.
    let _ = recovering.await;
    outbox.close();
    // The worker is gone; a stop signal now (a second Ctrl-C, the
    // platform's TERM) means "do not wait for the server any longer".
    let why = tokio::select! {
        shipped = tokio::time::timeout(config.drain_timeout, &mut shipper) => match shipped {
            Ok(_) => None,
            Err(_) => Some(format!("within {}s (--drain-timeout)", config.drain_timeout.as_secs())),
        },
        number = stop_signal() => Some(format!(
            "before {} stopped the agent",
            supervisor::signal_name(number)
        )),
    };
    shipper.abort();
    flusher.abort();
    let left = outbox.shutdown();
    if let (Some(why), true) = (why, left.records > 0) {
        let runner = outbox.runner();
        let again = match outbox.runner_origin() {
            runner_id::Origin::HostName => format!("on this host (or with --runner {runner})"),
            runner_id::Origin::Given | runner_id::Origin::HostNameInUse => {
                format!("with --runner {runner}")
            }
        };
        eprintln!(
            "tailwater: {} lines ({} bytes) could not be shipped to {} {why}; they are kept in the spool at {} and shipped when `tailwater run` starts again {again} and the same --spool",
            left.records,
            left.line_bytes,
            client.server(),
            outbox.dir().display(),
        );
    }
    Ok(exit_code)
}

/// The next SIGTERM, SIGINT or SIGQUIT; never, if they cannot be listened
/// for.
async fn stop_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |number| signal(SignalKind::from_raw(number));
    let (Ok(mut term), Ok(mut interrupt), Ok(mut quit)) = (
        listen(libc::SIGTERM),
        listen(libc::SIGINT),
        listen(libc::SIGQUIT),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => libc::SIGTERM,
        _ = interrupt.recv() => libc::SIGINT,
        _ = quit.recv() => libc::SIGQUIT,
    }
}

/// A duration for people: `153ms`, `2.4s`, `3m05s` (its home is the model).
pub use tailwater_model::time::format_duration;

/// The guard of `mutex`, even when a thread panicked holding it: the
/// agent's shared state stays usable (a panicked capture task must not
/// stop the worker's other output from being recorded).
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let mutex = Mutex::new(7);
        let _ = std::panic::catch_unwind(|| {
            let _guard = mutex.lock().unwrap();
            panic!("poisons the lock");
        });
        assert!(mutex.is_poisoned());
        assert_eq!(*super::lock(&mutex), 7);
    }
}
