//! The demo's runners: which there are, the ports of the GPU ones, and
//! each agent (`tailwater run`) kept running as a platform keeps a
//! container: a GPU runner whose agent ends is started again (a new boot of
//! the same runner), the crashing one is left crashed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::watch;

use super::load::Plan;
use super::memory::MemoryCgroup;

/// One of the demo's runners.
pub struct Runner {
    pub app: &'static str,
    pub version: &'static str,
    pub runner: &'static str,
    /// The runner in request ids: `req-a100-1-0007`.
    pub short: &'static str,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Serves HTTP behind its agent's proxy; its client follows this plan.
    Gpu(Plan),
    /// Dies while importing.
    CrashOnImport,
}

pub const RUNNERS: [Runner; 3] = [
    Runner {
        app: "sdxl-turbo",
        version: "v3",
        runner: "gpu-a100-1",
        short: "a100-1",
        kind: Kind::Gpu(Plan::LongPromptEvery7th),
    },
    Runner {
        app: "sdxl-turbo",
        version: "v3",
        runner: "gpu-a100-2",
        short: "a100-2",
        kind: Kind::Gpu(Plan::LargeBatchAt9th),
    },
    Runner {
        app: "whisper-large",
        version: "v7",
        runner: "gpu-l4-1",
        short: "l4-1",
        kind: Kind::CrashOnImport,
    },
];

/// A GPU runner's two ports: its agent's proxy (what clients call; port 0
/// lets the kernel pick it as the agent binds it) and its worker's own.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    pub proxy: SocketAddr,
    pub worker: u16,
}

/// The ports of the `gpu`-th GPU runner (from 0). Beside a server on a
/// port of its own choosing (`--listen`, 7070 by default) they follow it:
/// the proxies at 7071, 7072, the workers at 7081, 7082, so the banner's
/// `curl` lines stay the same from run to run. Beside a server on any port
/// (`--listen …:0`, as tests start it) each proxy binds port 0 and its
/// agent says which it got, and each worker gets a port outside the
/// kernel's ephemeral range (as `tailwater dev`'s does): no port is found
/// free and then bound by another process.
pub fn ports(listen: SocketAddr, gpu: u16) -> anyhow::Result<Ports> {
    let ip = listen.ip();
    if listen.port() == 0 {
        return Ok(Ports {
            proxy: SocketAddr::new(ip, 0),
            worker: crate::commands::dev::worker_port()?,
        });
    }
    let port = |offset: u16| {
        listen.port().checked_add(offset).ok_or_else(|| {
            anyhow::anyhow!(
                "the demo's workers take the ports after --listen's; choose a port below 65500"
            )
        })
    };
    Ok(Ports {
        proxy: SocketAddr::new(ip, port(1 + gpu)?),
        worker: port(11 + gpu)?,
    })
}

/// How to start one runner's agent.
pub struct Launch {
    pub exe: PathBuf,
    pub server: String,
    pub token: String,
    pub spool: PathBuf,
    pub ports: Option<Ports>,
    /// The memory cgroup the agent starts in, if any.
    pub cgroup: Option<std::sync::Arc<MemoryCgroup>>,
    /// Where the proxy of the agent now running listens, as it says
    /// (`tailwater_agent::proxy::announcement`); `None` between agents.
    pub proxy: watch::Sender<Option<SocketAddr>>,
}

/// Restarts of one runner at most: an agent that cannot start at all (a
/// port in use) must not be started forever.
const MAX_RESTARTS: u32 = 5;
/// The wait before a runner comes back.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs `runner`'s agent until `stop` turns true (then stops it with
/// SIGTERM, as a platform would, and SIGKILL after 10 s), starting it again
/// after it ends when it is a GPU runner.
pub async fn keep_running(
    runner: &'static Runner,
    launch: Launch,
    mut stop: watch::Receiver<bool>,
) {
    let mut restarts = 0;
    loop {
        let mut agent = match command(runner, &launch).spawn() {
            Ok(agent) => agent,
            Err(error) => {
                eprintln!("demo: cannot start the agent of {}: {error}", runner.runner);
                return;
            }
        };
        let stderr = agent
            .stderr
            .take()
            .map(|stderr| tokio::spawn(pass_on(stderr, launch.proxy.clone())));
        tokio::select! {
            _ = agent.wait() => {
                launch.proxy.send_replace(None);
                if let Some(stderr) = stderr {
                    stderr.abort();
                }
            }
            _ = stopping(&mut stop) => {
                if let Some(pid) = agent.id() {
                    // SAFETY: kill(2) on a child we started; no memory effects.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                if tokio::time::timeout(Duration::from_secs(10), agent.wait()).await.is_err() {
                    let _ = agent.kill().await;
                }
                return;
            }
        }
        if runner.kind == Kind::CrashOnImport || restarts == MAX_RESTARTS {
            return;
        }
        restarts += 1;
        tokio::select! {
            _ = tokio::time::sleep(RESTART_DELAY) => {}
            _ = stopping(&mut stop) => return,
        }
    }
}

fn command(runner: &Runner, launch: &Launch) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&launch.exe);
    command.args([
        "run",
        "--quiet",
        "--server",
        &launch.server,
        "--app",
        runner.app,
        "--version",
        runner.version,
        "--runner",
        runner.runner,
    ]);
    // The demo's own spools, beside its data: not the user's.
    command.arg("--spool").arg(&launch.spool);
    if let Some(ports) = launch.ports {
        let worker = format!("127.0.0.1:{}", ports.worker);
        command.args([
            "--proxy".to_owned(),
            format!("{}={worker}", ports.proxy),
            "--health".to_owned(),
            format!("http://{worker}/health"),
        ]);
    }
    command.arg("--").arg(&launch.exe).arg("demo-worker");
    match (runner.kind, launch.ports) {
        (Kind::Gpu(_), Some(ports)) => {
            command.args(["gpu", "--port", &ports.worker.to_string()]);
        }
        _ => {
            command.arg("crash-on-import");
        }
    }
    if let Some(cgroup) = &launch.cgroup {
        cgroup.contain(&mut command);
    }
    command
        .env("TAILWATER_TOKEN", &launch.token)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        // Ctrl-C reaches the demo, which stops the agents in order.
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// Until `stop` turns true (or its sender is gone).
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Passes an agent's stderr on to ours, line by line, but for the line that
/// says where its proxy listens: that address goes to `proxy`.
async fn pass_on(stderr: tokio::process::ChildStderr, proxy: watch::Sender<Option<SocketAddr>>) {
    use std::io::Write;
    use tokio::io::AsyncBufReadExt;
    let mut stderr = tokio::io::BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        if !matches!(stderr.read_until(b'\n', &mut line).await, Ok(1..)) {
            return;
        }
        match tailwater_agent::proxy::announced(&String::from_utf8_lossy(&line)) {
            Some(address) => {
                proxy.send_replace(Some(address));
            }
            None => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
    }
}
