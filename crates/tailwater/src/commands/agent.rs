//! `tailwater agent status`: a running agent (`tailwater run`) asked over
//! its control socket what shipping is doing: the server in use, the
//! failovers so far, what was shipped, what waits in the spool and the
//! last error. Inside the worker the socket is `TAILWATER_CONTROL`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use jiff::Timestamp;
use tailwater_agent::ship::AgentStatus;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::output::{ago, print_json};
use super::status::bytes;

/// How long the agent has to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater agent status --socket /run/tailwater.sock\n  tailwater agent status --json   (inside the worker: TAILWATER_CONTROL)"
)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: AgentCommand,
}

#[derive(Subcommand, Debug)]
enum AgentCommand {
    /// What a running agent's shipping is doing: the server in use,
    /// failovers, lines shipped, the spool's backlog, the last error.
    #[command(
        after_help = "Examples:\n  tailwater run --control-socket /run/tailwater.sock --server http://a:7070,http://b:7070 -- python worker.py\n  tailwater agent status --socket /run/tailwater.sock\n  tailwater agent status --socket /run/tailwater.sock --json"
    )]
    Status {
        /// The agent's control socket (`tailwater run --control-socket`);
        /// inside the worker, TAILWATER_CONTROL names it.
        #[arg(long, env = "TAILWATER_CONTROL", value_name = "PATH")]
        socket: PathBuf,
        /// The agent's answer, as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: AgentArgs) -> anyhow::Result<u8> {
    match args.command {
        AgentCommand::Status { socket, json } => {
            let status = ask(&socket).await?;
            if json {
                return print_json(serde_json::to_value(&status)?);
            }
            for line in render(&status, Timestamp::now()) {
                println!("{line}");
            }
            Ok(0)
        }
    }
}

/// The agent's answer to `{"agent_status":true}` on `socket`.
async fn ask(socket: &Path) -> anyhow::Result<AgentStatus> {
    let asking = async {
        let mut stream = UnixStream::connect(socket).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach an agent at {}: {error}; start it with `tailwater run --control-socket {}` (inside the worker, TAILWATER_CONTROL names its socket)",
                socket.display(),
                socket.display()
            )
        })?;
        stream.write_all(b"{\"agent_status\":true}\n").await?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await?;
        anyhow::Ok(line)
    };
    let line = tokio::time::timeout(ANSWER_TIMEOUT, asking)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the agent at {} did not answer within {ANSWER_TIMEOUT:?}",
                socket.display()
            )
        })??;
    let answer: serde_json::Value = serde_json::from_str(&line).map_err(|_| {
        anyhow::anyhow!(
            "{} answered {line:?}, not a control socket's JSON: is it a tailwater agent's socket?",
            socket.display()
        )
    })?;
    if answer["ok"] != true {
        let error = answer["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!(
            "the agent at {} refused: {error} (an agent older than this tailwater has no status: upgrade it)",
            socket.display()
        );
    }
    Ok(serde_json::from_value(answer["status"].clone())?)
}

/// What `tailwater agent status` prints of `status`, at `now`.
fn render(status: &AgentStatus, now: Timestamp) -> Vec<String> {
    let mut lines = vec![format!(
        "runner      {} of app {} (boot {})",
        status.runner, status.app, status.boot
    )];
    let mut server = format!("server      {} (in use", status.server);
    if status.servers.len() > 1 {
        server += &format!("; of {}", status.servers.join(", "));
    }
    lines.push(server + ")");
    lines.push(match &status.failovers.last {
        Some(last) => format!(
            "failovers   {}, the last {}: {} -> {} ({})",
            status.failovers.count,
            ago(Some(last.at), now),
            last.from,
            last.to,
            last.reason
        ),
        None => format!("failovers   {}", status.failovers.count),
    });
    lines.push(format!(
        "shipped     {} lines in {} batches, the last {}",
        status.shipped.lines,
        status.shipped.batches,
        ago(status.shipped.last_at, now)
    ));
    lines.push(format!(
        "spool       {} lines ({} of text, {} on disk) waiting{}",
        status.spool.lines,
        bytes(status.spool.bytes),
        bytes(status.spool.disk_bytes),
        if status.failing {
            "; shipping fails now, the lines stay in the spool and are sent again"
        } else {
            ""
        }
    ));
    if let Some(error) = &status.last_error {
        lines.push(format!(
            "last error  {}, {}: {}",
            ago(Some(error.at), now),
            error.server,
            error.error
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailwater_agent::ship::status::{FailoverNote, Failovers};

    #[test]
    fn the_status_reads_as_lines() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let status = AgentStatus {
            app: "api".into(),
            runner: "r1".into(),
            boot: "b1".into(),
            server: "http://b".into(),
            servers: vec!["http://a".into(), "http://b".into()],
            failovers: Failovers {
                count: 1,
                last: Some(FailoverNote {
                    at: "2026-01-01T00:00:30Z".parse().unwrap(),
                    from: "http://a".into(),
                    to: "http://b".into(),
                    reason: "connection refused".into(),
                }),
            },
            ..AgentStatus::default()
        };
        let lines = render(&status, now);
        assert_eq!(
            lines[1],
            "server      http://b (in use; of http://a, http://b)"
        );
        assert_eq!(
            lines[2],
            "failovers   1, the last 30s ago: http://a -> http://b (connection refused)"
        );
    }
}
