//! `tailwater runners ls|show|logs`: the runners of a tenant, their states
//! (initializing, ready, running, exited, crashed, oom-killed, lost) and
//! their logs across their whole life. Owner and admin tokens.

use clap::{Args, Subcommand};
use jiff::Timestamp;
use tailwater_model::wire::{Runner, RunnerExit, RunnerState};

use super::output::{ago, print_json, print_table, when, ScopedLogsArgs};
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater runners ls --app sdxl --state crashed\n  tailwater runners show gpu-a100-7\n  tailwater runners logs gpu-a100-7 -f"
)]
pub struct RunnersArgs {
    #[command(subcommand)]
    command: RunnersCommand,
}

#[derive(Subcommand, Debug)]
enum RunnersCommand {
    /// List runners, newest start first.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  tailwater runners ls\n  tailwater runners ls --app sdxl --state lost --json"
    )]
    Ls {
        #[command(flatten)]
        connection: Connection,
        /// Only this app's runners.
        #[arg(long)]
        app: Option<String>,
        /// Only runners in this state: initializing, ready, running, exited,
        /// crashed, oom-killed, lost.
        #[arg(long)]
        state: Option<RunnerState>,
        /// Another tenant's runners (admin tokens).
        #[arg(long)]
        tenant: Option<String>,
        /// The API's JSON: `{"runners": [...]}`.
        #[arg(long)]
        json: bool,
    },
    /// One runner: its state, exit, requests and lifecycle events.
    #[command(
        after_help = "Examples:\n  tailwater runners show gpu-a100-7\n  tailwater runners show worker-1 --app sdxl --json"
    )]
    Show {
        #[command(flatten)]
        connection: Connection,
        /// The runner id.
        id: String,
        /// The runner's app, when the id is in several apps.
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// The API's JSON: the runner and its `events`.
        #[arg(long)]
        json: bool,
    },
    /// A runner's logs, every life of it; any `tailwater logs` option
    /// follows the id (-f, --json, --level warn, --since 15m, …).
    #[command(
        after_help = "Examples:\n  tailwater runners logs gpu-a100-7\n  tailwater runners logs gpu-a100-7 -f --level warn\n  tailwater runners logs worker-1 --app sdxl --stream system --json"
    )]
    Logs(ScopedLogsArgs),
}

pub async fn run(args: RunnersArgs) -> anyhow::Result<u8> {
    match args.command {
        RunnersCommand::Ls {
            connection,
            app,
            state,
            tenant,
            json,
        } => {
            let client = connection.client()?;
            let list = client
                .runners(tenant.as_deref(), app.as_deref(), state)
                .await?;
            if json {
                return print_json(serde_json::to_value(&list)?);
            }
            if list.runners.is_empty() {
                println!("no runners{}", filters_said(app.as_deref(), state));
                return Ok(0);
            }
            let now = Timestamp::now();
            let mut rows = vec![[
                "RUNNER",
                "APP",
                "VERSION",
                "STATE",
                "STARTED",
                "LAST SEEN",
                "REQUESTS",
                "EXIT",
            ]
            .map(str::to_owned)
            .to_vec()];
            rows.extend(list.runners.iter().map(|runner| {
                vec![
                    runner.runner.clone(),
                    runner.app.clone(),
                    or_dash(&runner.version),
                    runner.state.to_string(),
                    ago(Some(runner.started), now),
                    ago(Some(runner.last_seen), now),
                    requests(runner),
                    exit(runner.exit.as_ref()),
                ]
            }));
            print_table(&rows)?;
            Ok(0)
        }
        RunnersCommand::Show {
            connection,
            id,
            app,
            tenant,
            json,
        } => {
            let client = connection.client()?;
            let detail = client
                .runner(tenant.as_deref(), &id, app.as_deref())
                .await?;
            if json {
                return print_json(serde_json::to_value(&detail)?);
            }
            let runner = &detail.runner;
            let now = Timestamp::now();
            let when = |time| when(time, now);
            print_table(&[
                vec!["runner".into(), runner.runner.clone()],
                vec!["app".into(), runner.app.clone()],
                vec!["version".into(), or_dash(&runner.version)],
                vec!["tenant".into(), runner.tenant.clone()],
                vec!["state".into(), runner.state.to_string()],
                vec!["boot".into(), runner.boot.clone()],
                vec!["source".into(), runner.source.as_str().into()],
                vec!["started".into(), when(Some(runner.started))],
                vec!["ready".into(), when(runner.ready_at)],
                vec!["last seen".into(), when(Some(runner.last_seen))],
                vec!["exited".into(), when(runner.exited_at)],
                vec!["exit".into(), exit(runner.exit.as_ref())],
                vec!["requests".into(), requests(runner)],
            ])?;
            if !detail.events.is_empty() {
                println!("\nevents:");
                let mut rows = vec![["TIME", "LEVEL", "EVENT", "MESSAGE"]
                    .map(str::to_owned)
                    .to_vec()];
                rows.extend(detail.events.iter().map(|record| {
                    vec![
                        ago(Some(record.ts), now),
                        record.level.to_string(),
                        record
                            .fields
                            .get("event")
                            .and_then(|event| event.as_str())
                            .unwrap_or("-")
                            .to_owned(),
                        record.message.clone(),
                    ]
                }));
                print_table(&rows)?;
            }
            Ok(0)
        }
        RunnersCommand::Logs(logs) => logs.run("tailwater runners logs", "--runner").await,
    }
}

fn filters_said(app: Option<&str>, state: Option<RunnerState>) -> String {
    let mut said = String::new();
    if let Some(state) = state {
        said.push_str(&format!(" {state}"));
    }
    if let Some(app) = app {
        said.push_str(&format!(" in app {app}"));
    }
    said
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// `12 served, 2 failed, 1 in flight` (the counts that are not 0 after
/// served).
fn requests(runner: &Runner) -> String {
    let requests = &runner.requests;
    let mut text = format!("{} served", requests.served);
    if requests.failed > 0 {
        text.push_str(&format!(", {} failed", requests.failed));
    }
    if requests.in_flight > 0 {
        text.push_str(&format!(", {} in flight", requests.in_flight));
    }
    text
}

/// `code 0`, `signal 11, core dumped`, `signal 9, out of memory`.
fn exit(exit: Option<&RunnerExit>) -> String {
    let Some(exit) = exit else {
        return "-".to_owned();
    };
    let mut said = match (exit.code, exit.signal) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "unknown".to_owned(),
    };
    if exit.core_dumped {
        said.push_str(", core dumped");
    }
    if exit.oom_killed {
        said.push_str(", out of memory");
    }
    said
}
