//! `tailwater demo`: a server on its embedded default and three runners,
//! each worker under its own agent (`tailwater run`), that show tailwater's
//! model on live data: GPU workers that load a model (a progress bar),
//! become ready, and serve requests through their agent's proxy, sent by
//! the demo's own clients; one request failing with a traceback, one worker
//! OOM-killed mid-request and its runner coming back as a new boot, and a
//! worker that crashes while importing. The README's tour reads this data
//! (and `tests/e2e/tour.rs` checks that every command of it prints lines).
//!
//! The files: this one (the command, the banner), `fleet` (the runners and
//! their agents), `load` (the clients), `worker` (the hidden `tailwater
//! demo-worker`), `memory` (the memory cgroup of the OOM kill).

mod fleet;
mod load;
mod memory;
mod worker;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tailwater_model::time::parse_std_duration;
use tokio::sync::watch;

pub use worker::{run as worker, DemoWorkerArgs};

use fleet::{Kind, Launch, RUNNERS};
use memory::MemoryCgroup;

/// How long the banner waits for an agent to say where its proxy listens.
const PROXY_ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's data here (default: a temporary directory, removed on
    /// exit).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Address the demo server listens on; the GPU workers' proxies take
    /// the next ports (7071, 7072 by default) and the workers themselves
    /// the ten after those (7081, 7082).
    #[arg(long, default_value = tailwater_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The pause between two requests to one runner (the tests' is short).
    #[arg(long, hide = true, default_value = "1500ms", value_parser = parse_std_duration)]
    request_interval: Duration,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    super::init_tracing("warn");
    let super::LocalServer {
        server,
        url,
        token,
        data,
        temporary,
    } = super::LocalServer::start(args.data.clone(), args.listen, "tailwater-demo-").await?;

    let exe = std::env::current_exe()?;
    let (stop, stopped) = watch::channel(false);
    let cgroup =
        MemoryCgroup::make(&format!("tailwater-demo-{}", std::process::id())).map(Arc::new);
    let mut agents = Vec::new();
    let mut clients = Vec::new();
    let mut table = Vec::new();
    let mut gpus = 0;
    // The first GPU runner's proxy, for the banner's `curl`.
    let mut first_proxy = None;
    for runner in &RUNNERS {
        let ports = match runner.kind {
            Kind::Gpu(_) => {
                gpus += 1;
                Some(fleet::ports(args.listen, gpus - 1)?)
            }
            Kind::CrashOnImport => None,
        };
        let oom = runner.kind == Kind::Gpu(load::Plan::LargeBatchAt9th);
        let (proxy, proxy_seen) = watch::channel(None);
        let launch = Launch {
            exe: exe.clone(),
            server: url.clone(),
            token: token.clone(),
            spool: data.join("spool"),
            ports,
            cgroup: oom.then(|| cgroup.as_ref().ok().cloned()).flatten(),
            proxy,
        };
        agents.push(tokio::spawn(fleet::keep_running(
            runner,
            launch,
            stopped.clone(),
        )));
        let what = match runner.kind {
            Kind::Gpu(plan) => {
                clients.push(tokio::spawn(load::drive(
                    proxy_seen.clone(),
                    runner.short,
                    plan,
                    args.request_interval,
                )));
                // Where the agent says its proxy listens (it picks the port
                // when asked for port 0).
                let mut seen = proxy_seen;
                let address =
                    tokio::time::timeout(PROXY_ANNOUNCE_TIMEOUT, seen.wait_for(Option::is_some))
                        .await
                        .ok()
                        .and_then(|seen| seen.ok().and_then(|address| *address));
                let at = match address {
                    Some(address) => {
                        first_proxy = first_proxy.or(Some(address));
                        format!("http://{address}")
                    }
                    None => "(its proxy is not listening: see above)".into(),
                };
                let story = match plan {
                    load::Plan::LongPromptEvery7th => format!(
                        "{} and every 7th fail (a traceback, status 500)",
                        load::request_id(runner.short, 7)
                    ),
                    load::Plan::LargeBatchAt9th => match &cgroup {
                        Ok(cgroup) => format!(
                            "OOM-killed at {} (for real, in memory cgroup {}), then back",
                            load::request_id(runner.short, 9),
                            cgroup.dir().display()
                        ),
                        Err(why) => format!(
                            "killed at {} with SIGKILL, then back (not an OOM kill: {why})",
                            load::request_id(runner.short, 9)
                        ),
                    },
                };
                format!("{at}  {story}")
            }
            Kind::CrashOnImport => "crashes while importing".into(),
        };
        table.push(format!("  {:<11} {:<14} {what}", runner.runner, runner.app));
    }

    let proxy = first_proxy.map_or_else(String::new, |proxy| format!("http://{proxy}"));
    let banner = format!(
        "tailwater demo is running: a server and {runners} workers, each under its own agent

  server  {url}
  data    {data}
  token   {token}

{table}

try, in another terminal:
  export TAILWATER_SERVER={url} TAILWATER_TOKEN={token}
  tailwater runners ls                           # ready, serving, OOM-killed, crashed
  tailwater logs --app sdxl-turbo -f             # live, across both runners
  tailwater logs --request req-a100-1-0007       # one request: its traceback and error
  tailwater logs --app whisper-large             # a worker that crashed while importing
  tailwater logs --stream system --json          # lifecycle events
  curl -s {proxy}/generate -d '{{\"prompt\":\"a cat\"}}' -H 'content-type: application/json'

press Ctrl-C to stop
",
        runners = RUNNERS.len(),
        data = data.display(),
        table = table.join("\n"),
    );
    // A closed stdout must not stop the demo before it stops its workers.
    let _ = std::io::stdout().write_all(banner.as_bytes());

    tailwater_server::shutdown_signal().await;
    let _ = std::io::stdout().write_all("stopping the workers…\n".as_bytes());
    for client in &clients {
        client.abort();
    }
    let _ = stop.send(true);
    for agent in agents {
        let _ = agent.await;
    }
    drop(cgroup);
    server.shutdown().await?;
    drop(temporary);
    Ok(0)
}
