//! The worker agent behind `tailwater run`: it starts the worker, captures
//! its stdout and stderr from the first byte, and ships every line.
//!
//! Data flows one way, and each layer imports only those below it:
//!
//! - [`supervisor`] starts the worker in its own process group, forwards
//!   signals to it, stops it within a deadline, and reports how it ended;
//!   [`reaper`] reaps every child (the agent may be PID 1), and [`cgroup`]
//!   notices OOM kills;
//! - [`proxy`] (`--proxy`) and the [`control`] socket mark requests in
//!   [`requests`], which knows which are in flight and is the sink capture
//!   writes to, so a line belongs to its request;
//! - [`capture`] reads the worker's pipes (or pseudo-terminal), cuts them
//!   into [`line::Line`]s, collapses progress bars, and echoes them, writing
//!   to a [`capture::LineSink`] it does not know;
//! - [`ship`] sends what the spool holds in batches through a
//!   [`ship::Transport`] (HTTP to the server), retrying while the server is
//!   away, within its rate limit, parsing each line as it reads it back;
//! - [`recorder`] stamps each record with its time and
//!   sequence number and keeps it in the [`spool`] on disk until the server
//!   has it (the spool of the runner [`runner_id`] chooses: `--runner`, else
//!   the host name, so a restarted container ships what the last agent
//!   left); it turns what the spool says it dropped into records;
//! - [`spool`] frames, checksums and keeps records in segment files with a
//!   ledger of what was acknowledged; it parses nothing and reports nothing.
//!
//! [`config`] is what the agent was told, read by the layers above the
//! recorder.
//!
//! Lifecycle events (start, ready, request start and end, stop, OOM kill,
//! exit with code or signal) are records of the `system` stream, in the same
//! sequence as the lines around them.

pub mod capture;
pub mod cgroup;
pub mod config;
pub mod control;
pub mod line;
mod lock;
pub mod proxy;
pub mod reaper;
pub mod recorder;
pub mod requests;
pub mod runner_id;
pub mod ship;
pub mod spool;
pub mod supervisor;

use std::sync::Arc;

use tailwater_client::Client;

use crate::capture::OutputSync;
pub use crate::config::{
    AgentConfig, NatsTarget, RestartBackoff, RestartPolicy, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_LINE_BYTES, DEFAULT_PROGRESS_INTERVAL, DEFAULT_RESTART_MAX, DEFAULT_STOP_TIMEOUT,
};
use crate::control::ControlSocket;
pub use crate::proxy::ProxyConfig;
use crate::recorder::Recorder;
use crate::requests::Requests;
pub use crate::ship::group::{Grouping, DEFAULT_MULTILINE_MAX_BYTES, DEFAULT_MULTILINE_WAIT};
pub use crate::ship::throttle::{RateLimit, DEFAULT_RATE_BYTES, DEFAULT_RATE_LINES};
use crate::ship::Transport;
pub use crate::ship::DEFAULT_HEARTBEAT_INTERVAL;
pub use crate::spool::{
    Durability as SpoolDurability, DEFAULT_SPOOL_MAX_BYTES, MIN_SPOOL_MAX_BYTES,
};

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
    let receivers = receivers(&config).await?;
    let entrances = Entrances::open(&config).await?;

    let recorder = {
        // Opening the spool touches the disk: not on the async threads.
        let options = config.recorder();
        Arc::new(tokio::task::spawn_blocking(move || Recorder::open(&options)).await??)
    };
    let flusher = recorder.start_flusher()?;
    // What a previous agent left is read while the worker starts, not
    // before: it ships first, once read.
    let recovering = {
        let recorder = recorder.clone();
        tokio::task::spawn_blocking(move || recorder.recover_leftovers())
    };
    let destinations = receivers.iter().map(|r| r.destination().to_owned());
    let status = Arc::new(ship::ShipStatus::new(destinations.collect()));
    for receiver in &receivers {
        if let ship::Receiver::Nats(nats) = receiver {
            nats.report_to(status.clone());
        }
    }
    let transport = Arc::new(ship::Failover::new(
        receivers,
        recorder.clone(),
        status.clone(),
    ));
    let mut shipper = tokio::spawn(ship::ship(
        transport.clone(),
        recorder.clone(),
        ship::ShipOptions {
            rate: config.rate_limit(),
            heartbeat: config.heartbeat_interval,
            multiline: config.multiline,
        },
        status.clone(),
    ));
    let sync = Arc::new(OutputSync::default());
    let requests = Arc::new(Requests::new(recorder.clone(), sync.clone()));
    let (control, markers) = entrances.serve(&config, &recorder, &requests, &status);

    let exit_code = supervisor::supervise(
        &config,
        supervisor::Shared {
            recorder: &recorder,
            requests: &requests,
            sync: &sync,
            control_socket: control.as_ref().map(ControlSocket::path),
        },
    )
    .await;
    for task in markers {
        task.abort();
    }
    drop(control);

    // Leftovers are read whole (a bounded disk read) before the end is
    // planned, so what is left for the next agent is counted right.
    let _ = recovering.await;
    recorder.close();
    let why = drain(&config, &mut shipper).await;
    shipper.abort();
    let left = tokio::task::spawn_blocking({
        let recorder = recorder.clone();
        move || {
            flusher.stop();
            recorder.shutdown()
        }
    })
    .await?;
    if let (Some(why), true) = (why, left.records > 0) {
        say_what_is_left(&recorder, left, transport.destination(), &why);
    }
    Ok(exit_code)
}

/// Where this agent ships: a cluster's NATS (`--nats`), else each server
/// (`--server A,B`), failed over in that order.
async fn receivers(config: &AgentConfig) -> anyhow::Result<Vec<ship::Receiver>> {
    if let Some(nats) = &config.nats {
        let nats = ship::nats::Nats::connect(nats, &config.app).await?;
        return Ok(vec![ship::Receiver::Nats(Box::new(nats))]);
    }
    anyhow::ensure!(
        !config.servers.is_empty(),
        "no server to ship to: pass --server URL (several, comma-separated or repeated, to fail over)"
    );
    let mut receivers = Vec::with_capacity(config.servers.len());
    for server in &config.servers {
        let mut client = Client::new(server, &config.token)?;
        if let Some(pem) = &config.ca_certificate {
            client = client.with_ca_certificate(pem)?;
        }
        receivers.push(ship::Receiver::Http(ship::Http::new(
            client,
            config.send_timeout,
        )));
    }
    Ok(receivers)
}

/// Where requests are marked from, bound before the worker starts: a
/// configuration the agent cannot serve fails here.
struct Entrances {
    health: Option<hyper::Uri>,
    proxy: Option<tokio::net::TcpListener>,
    control: Option<ControlSocket>,
    /// Why there is no control socket, when none was asked for by path.
    no_control: Option<std::io::Error>,
}

impl Entrances {
    async fn open(config: &AgentConfig) -> anyhow::Result<Entrances> {
        let health = config
            .health
            .as_deref()
            .map(proxy::parse_health_url)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let proxy = match &config.proxy {
            Some(proxy) => {
                let listener = proxy::bind(proxy).await.map_err(|error| {
                    anyhow::anyhow!("cannot listen on {} for --proxy: {error}", proxy.listen)
                })?;
                eprintln!("{}", proxy::announcement(listener.local_addr()?, proxy));
                Some(listener)
            }
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
        Ok(Entrances {
            health,
            proxy,
            control,
            no_control,
        })
    }

    /// Serves the control socket, the proxy and the health poller; returns
    /// the control socket (kept until the worker ends) and their tasks.
    fn serve(
        self,
        config: &AgentConfig,
        recorder: &Recorder,
        requests: &Arc<Requests>,
        status: &Arc<ship::ShipStatus>,
    ) -> (Option<ControlSocket>, Vec<tokio::task::JoinHandle<()>>) {
        if let Some(error) = self.no_control {
            recorder.system_warning(format!(
                "no control socket: cannot make one in {}: {error}; the worker cannot mark readiness or requests through it",
                std::env::temp_dir().display()
            ));
        }
        let mut tasks = Vec::new();
        let mut control = self.control;
        if let Some(control) = control.as_mut() {
            tasks.push(control.serve(requests.clone(), status.clone()));
        }
        if let (Some(listener), Some(proxy)) = (self.proxy, &config.proxy) {
            tasks.push(proxy::serve(
                listener,
                proxy,
                self.health.clone(),
                requests.clone(),
            ));
        }
        if let Some(url) = self.health {
            tasks.push(tokio::spawn(proxy::wait_until_healthy(
                url,
                requests.clone(),
            )));
        }
        (control, tasks)
    }
}

/// Lets the shipper finish, within `--drain-timeout`. The worker is gone; a
/// stop signal now (a second Ctrl-C, the platform's TERM) means "do not
/// wait for the server any longer". Returns why it did not finish, if not.
async fn drain(config: &AgentConfig, shipper: &mut tokio::task::JoinHandle<()>) -> Option<String> {
    tokio::select! {
        shipped = tokio::time::timeout(config.drain_timeout, shipper) => match shipped {
            Ok(_) => None,
            Err(_) => Some(format!("within {}s (--drain-timeout)", config.drain_timeout.as_secs())),
        },
        number = stop_signal() => Some(format!(
            "before {} stopped the agent",
            supervisor::signal_name(number)
        )),
    }
}

/// Says on stderr what stays in the spool for the next agent, and how to
/// make that agent the same runner.
fn say_what_is_left(recorder: &Recorder, left: spool::Backlog, server: &str, why: &str) {
    let runner = recorder.runner();
    let again = match recorder.runner_origin() {
        runner_id::Origin::HostName => format!("on this host (or with --runner {runner})"),
        runner_id::Origin::Given | runner_id::Origin::HostNameInUse => {
            format!("with --runner {runner}")
        }
    };
    eprintln!(
        "tailwater: {} lines ({} bytes) could not be shipped to {server} {why}; they are kept in the spool at {} and shipped when `tailwater run` starts again {again} and the same --spool",
        left.records,
        left.line_bytes,
        recorder.dir().display(),
    );
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
