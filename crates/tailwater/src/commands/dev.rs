//! `tailwater dev`: local development in one command. An embedded server
//! (temporary data unless `--data`), the worker under the agent (`tailwater
//! run`, as a child process; its reverse proxy with `--port`), and the
//! worker's logs followed live from the server, coloured. What is shown is
//! what was stored: the same path as in production.
//!
//! Stopping, in order: Ctrl-C (or SIGTERM) is passed to the agent as SIGINT,
//! which passes it to the worker and waits for it (`--stop-timeout`); the
//! agent ships what is left and exits; the last lines are printed; the
//! server shuts down; temporary data is removed. The agent runs in its own
//! process group, so the terminal's Ctrl-C reaches it only through us, in
//! that order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use clap::Args;
use tailwater_model::wire::LogsParams;

use crate::render::{OutputArgs, Printer};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  tailwater dev -- python handler.py
  tailwater dev --port 8080 -- python -m uvicorn app:app --port 8000   # with --worker-port 8000
  tailwater dev --port 8080 --worker-port 8000 -- python server.py
  tailwater dev --data ./dev-data --app sdxl -- ./start.sh

With --port, requests to 127.0.0.1:PORT go through the agent to the worker (at
127.0.0.1:WORKER_PORT, told to the worker as PORT), and each gets an X-Request-Id
that its log lines carry. Press Ctrl-C to stop: the worker gets SIGINT and
--stop-timeout (8s) to exit, its last lines are shown, then everything stops.")]
pub struct DevArgs {
    /// Be the worker's reverse proxy on 127.0.0.1:PORT: each request is
    /// recorded and its lines attributed to it. 0: any free port, shown
    /// in the banner.
    #[arg(long)]
    port: Option<u16>,
    /// With --port: where the worker listens, given to it as PORT
    /// [default: a free port outside the kernel's ephemeral range].
    #[arg(long, requires = "port")]
    worker_port: Option<u16>,
    /// Keep the data here (default: a temporary directory, removed on exit).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Address the embedded server listens on.
    #[arg(long, default_value = tailwater_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The app the worker's logs are stored under.
    #[arg(long, default_value = "dev")]
    app: String,
    #[command(flatten)]
    output: OutputArgs,
    /// The worker's command and arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// The runner id of the worker in `tailwater dev`.
const RUNNER: &str = "local";
/// How long the agent may take to stop after we pass on a stop signal: its
/// `--stop-timeout` (8 s) and a drain to a server on this machine.
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for the last stored lines to reach the screen.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent may take to say where its proxy listens.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(args: DevArgs) -> anyhow::Result<u8> {
    super::init_tracing("warn");
    anyhow::ensure!(
        !args.app.trim().is_empty(),
        "--app is empty: name the app, or leave it out for 'dev'"
    );
    // Listened for from the start: a Ctrl-C while starting still stops
    // everything in order.
    let mut stop = StopSignals::new()?;
    let super::LocalServer {
        server,
        url,
        token,
        data,
        temporary,
    } = super::LocalServer::start(args.data.clone(), args.listen, "tailwater-dev-").await?;
    let client = tailwater_client::Client::new(&url, &token)?;
    let params = LogsParams {
        app: Some(args.app.clone()),
        runner: Some(RUNNER.to_owned()),
        ..LogsParams::default()
    };
    // Follow from what is stored now (older runs in --data are not shown
    // again); taken before the agent starts, so no line of it is missed.
    let as_of = client.logs(&params).await?.as_of;
    let printer = Printer::new(&args.output).without_labels();

    let proxy = match args.port {
        Some(port) => Some((port, args.worker_port.map_or_else(worker_port, Ok)?)),
        None => None,
    };
    let exe = std::env::current_exe()?;
    let mut agent = tokio::process::Command::new(&exe);
    agent
        .args(["run", "--quiet", "--server", &url, "--app", &args.app])
        .args(["--runner", RUNNER, "--spool"])
        .arg(data.join("spool"))
        .env("TAILWATER_TOKEN", &token)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: prctl(2) only, between fork and exec. If `tailwater dev` is
    // killed outright (SIGKILL, a crash), the agent still gets a stop
    // signal, so neither it nor the worker outlive us.
    unsafe {
        agent.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    if let Some((port, worker_port)) = proxy {
        agent
            .arg("--proxy")
            .arg(format!("127.0.0.1:{port}=127.0.0.1:{worker_port}"))
            .env("PORT", worker_port.to_string())
            .stderr(Stdio::piped());
    }
    let mut agent = agent.arg("--").args(&args.command).spawn()?;
    // The address the proxy bound (with --port 0, the only way to know it).
    let proxy = match (agent.stderr.take(), proxy) {
        (Some(stderr), Some((_, worker_port))) => proxy_address(stderr)
            .await
            .map(|address| (address, worker_port)),
        _ => None,
    };

    print_banner(&args, &url, &token, &data, temporary.is_some(), proxy);
    let mut follower = tokio::spawn({
        let (client, params, printer) = (client.clone(), params.clone(), printer.clone());
        async move {
            tokio::select! {
                followed = super::logs::follow_from(&client, &params, as_of, &printer) => followed,
                () = crate::render::stdout_closed() => Err(crate::render::OutputClosed.into()),
            }
        }
    });

    let (agent_status, stopped_by_user) = tokio::select! {
        status = agent.wait() => (status?, false),
        name = stop.next() => {
            eprintln!("tailwater dev: {name}: stopping the worker…");
            (stop_agent(&mut agent, &mut stop).await?, true)
        }
        ended = &mut follower => {
            // The output closed (`| head`) or the server refused: nothing
            // more can be shown, so stop.
            if let Ok(Err(error)) = ended {
                if !error.is::<crate::render::OutputClosed>() {
                    eprintln!("tailwater dev: cannot show the logs: {error:#}");
                }
            }
            (stop_agent(&mut agent, &mut stop).await?, true)
        }
    };

    catch_up(&client, &params, &printer).await;
    follower.abort();
    server.shutdown().await?;
    let removed = temporary.is_some();
    drop(temporary);
    let code = agent_status.code().unwrap_or(1);
    eprintln!(
        "tailwater dev: stopped (the worker's exit code: {code}{})",
        if removed {
            "; temporary data removed"
        } else {
            ""
        }
    );
    // The worker's own code when it ended by itself; a stop asked for is a
    // clean exit.
    Ok(if stopped_by_user {
        0
    } else {
        u8::try_from(code).unwrap_or(1)
    })
}

/// Passes SIGINT to the agent (which passes it to the worker) and waits for
/// it to exit. Each further Ctrl-C is passed on too (the agent then stops
/// waiting for the server); an agent still there after
/// [`AGENT_STOP_TIMEOUT`] is killed.
async fn stop_agent(
    agent: &mut tokio::process::Child,
    stop: &mut StopSignals,
) -> anyhow::Result<ExitStatus> {
    let interrupt = |agent: &tokio::process::Child| {
        if let Some(pid) = agent.id() {
            // SAFETY: kill(2) on our own child; no memory effects.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        }
    };
    interrupt(agent);
    let deadline = tokio::time::sleep(AGENT_STOP_TIMEOUT);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            status = agent.wait() => return Ok(status?),
            _ = stop.next() => {
                eprintln!("tailwater dev: stopping now, without waiting for the last lines");
                interrupt(agent);
            }
            () = &mut deadline => {
                eprintln!(
                    "tailwater dev: the agent did not stop within {}s; killing it",
                    AGENT_STOP_TIMEOUT.as_secs()
                );
                agent.kill().await?;
                return Ok(agent.wait().await?);
            }
        }
    }
}

/// Waits (boundedly) until the newest stored line of the worker is on the
/// screen: the agent has shipped everything before it exits.
async fn catch_up(client: &tailwater_client::Client, params: &LogsParams, printer: &Printer) {
    let newest = LogsParams {
        limit: Some("1".into()),
        ..params.clone()
    };
    let Ok(page) = client.logs(&newest).await else {
        return;
    };
    let Some(last) = page.records.first().map(|record| record.id.clone()) else {
        return;
    };
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    while !printer.has_printed(&last) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_banner(
    args: &DevArgs,
    url: &str,
    token: &str,
    data: &std::path::Path,
    temporary: bool,
    proxy: Option<(SocketAddr, u16)>,
) {
    let mut banner = format!(
        "tailwater dev: `{command}` under the agent, app {app}\n\n",
        command = args.command.join(" "),
        app = args.app
    );
    if let Some((address, worker_port)) = proxy {
        banner.push_str(&format!(
            "  requests  http://{address}  (to the worker on 127.0.0.1:{worker_port}, its PORT)\n"
        ));
    }
    banner.push_str(&format!(
        "  server    {url}  (web UI: {url}/)\n  token     {token}\n  data      {data}{note}\n\n\
         in another terminal:\n  export TAILWATER_SERVER={url} TAILWATER_TOKEN={token}\n  \
         tailwater logs --app {app} --level warn\n\npress Ctrl-C to stop\n",
        data = data.display(),
        note = if temporary { "  (removed on exit)" } else { "" },
        app = args.app,
    ));
    // Beside the logs, not in them: `tailwater dev … | grep` sees lines only.
    eprintln!("{banner}");
}

/// Passes the agent's stderr on to ours, line by line, but for the line
/// that says where its proxy listens (`tailwater_agent::proxy::announcement`):
/// that address is returned, for the banner. None when the agent ends (or
/// says nothing of it within [`ANNOUNCE_TIMEOUT`]) first: then what it said
/// instead, such as why it cannot listen, is on our stderr.
async fn proxy_address(stderr: tokio::process::ChildStderr) -> Option<SocketAddr> {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let (sender, receiver) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut sender = Some(sender);
        let mut stderr = tokio::io::BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            line.clear();
            if !matches!(stderr.read_until(b'\n', &mut line).await, Ok(1..)) {
                return;
            }
            let announced = tailwater_agent::proxy::announced(&String::from_utf8_lossy(&line));
            match (announced, sender.take()) {
                (Some(address), Some(sender)) => {
                    let _ = sender.send(address);
                }
                (_, unused) => {
                    sender = unused;
                    let _ = std::io::stderr().write_all(&line);
                }
            }
        }
    });
    tokio::time::timeout(ANNOUNCE_TIMEOUT, receiver)
        .await
        .ok()?
        .ok()
}

/// A port for the worker, which is told it (`PORT`) before it binds it and
/// cannot bind port 0 and say which it got. It lies outside the kernel's
/// ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), where the
/// kernel never picks a port for a bind to port 0 or an outgoing
/// connection, so nothing on the machine that binds port 0 can take it
/// before the worker binds it (as it could a port found free by binding
/// port 0). Ports are taken in turn from a counter for the whole process,
/// started at a place of this process's own (so two `tailwater dev`s go
/// different ways), skipping any something holds.
pub(crate) fn worker_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let spare = spare_ports(&range);
    let start = std::process::id() as usize * 7919;
    for _ in 0..spare.len() {
        let port = spare[(start + NEXT.fetch_add(1, Ordering::Relaxed)) % spare.len()];
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!(
        "no port outside the kernel's ephemeral range ({}) is free for the worker: name one with --worker-port",
        range.trim()
    )
}

/// The ports from 1024 up that `range` (`LOW HIGH`, as the kernel writes
/// `ip_local_port_range`) leaves out; all of them when it cannot be read.
fn spare_ports(range: &str) -> Vec<u16> {
    let mut bounds = range.split_whitespace().map(str::parse::<u16>);
    let ephemeral = match (bounds.next(), bounds.next()) {
        (Some(Ok(low)), Some(Ok(high))) => Some(low..=high),
        _ => None,
    };
    (1024..=u16::MAX)
        .filter(|port| !ephemeral.as_ref().is_some_and(|range| range.contains(port)))
        .collect()
}

/// Ctrl-C and SIGTERM, as they come.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupted",
            _ = self.terminate.recv() => "terminated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_gets_a_port_outside_the_ephemeral_range() {
        assert_eq!(
            spare_ports("32768\t60999\n").len(),
            (32768 - 1024) + (65535 - 60999)
        );
        assert!(spare_ports("1024 65535").is_empty());
        assert_eq!(
            spare_ports("2000 65534"),
            (1024..2000).chain([65535]).collect::<Vec<_>>()
        );
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
        let (first, second) = (worker_port().unwrap(), worker_port().unwrap());
        assert_ne!(first, second);
        for port in [first, second] {
            assert!(spare_ports(&range).contains(&port), "{port} in {range}");
        }
    }
}
