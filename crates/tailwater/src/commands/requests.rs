//! `tailwater requests ls`: a tenant's requests, newest first, and
//! `requests show|logs ID`: one request's state, status, timing and
//! runner, and its logs. Owner and admin tokens, and caller tokens for the
//! requests they may see (`ls`: those recorded with them).

use std::io::IsTerminal;

use clap::{Args, Subcommand};
use jiff::Timestamp;
use tailwater_model::wire::{RequestFilter, RequestInfo, RequestsParams, MAX_REQUESTS_LIMIT};

use super::output::{ago, duration_ms, print_json, print_table, when, ScopedLogsArgs};
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater requests show req-5f2a9c01d3e4b7a8\n  tailwater requests logs req-5f2a9c01d3e4b7a8 -f"
)]
pub struct RequestsArgs {
    #[command(subcommand)]
    command: RequestsCommand,
}

#[derive(Subcommand, Debug)]
enum RequestsCommand {
    /// List requests, newest start first: state, status, duration, error.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  tailwater requests ls\n  tailwater requests ls --app sdxl --state error --since 1h\n  tailwater requests ls --runner gpu-a100-7 --limit 500 --json"
    )]
    Ls(LsArgs),
    /// A request's state (in_flight, completed, error, unfinished), status,
    /// timing and runner.
    #[command(
        after_help = "Examples:\n  tailwater requests show req-5f2a9c01d3e4b7a8\n  tailwater requests show req-5f2a9c01d3e4b7a8 --json"
    )]
    Show {
        #[command(flatten)]
        connection: Connection,
        /// The request id (the gateway returns it in X-Request-Id).
        id: String,
        /// Another tenant's request (admin tokens).
        #[arg(long)]
        tenant: Option<String>,
        /// The API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// A request's logs; any `tailwater logs` option follows the id (-f,
    /// --json, --level warn, …).
    #[command(
        after_help = "Examples:\n  tailwater requests logs req-5f2a9c01d3e4b7a8\n  tailwater requests logs req-5f2a9c01d3e4b7a8 -f\n  tailwater requests logs req-5f2a9c01d3e4b7a8 --json --stream stderr"
    )]
    Logs(ScopedLogsArgs),
}

/// `tailwater requests ls`.
#[derive(Args, Debug)]
struct LsArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this app's requests.
    #[arg(long)]
    app: Option<String>,
    /// Only requests started on this runner.
    #[arg(long)]
    runner: Option<String>,
    /// Only requests that stand so: ok (answered, no 5xx), error (an error
    /// or a 5xx, a client gone, a worker that exited first), in_flight.
    #[arg(long)]
    state: Option<RequestFilter>,
    /// Started from this time: RFC 3339, or a duration ago such as 15m.
    #[arg(long)]
    since: Option<String>,
    /// Started before this time: RFC 3339, or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// At most this many requests, the newest (read page by page).
    #[arg(long, short = 'n', default_value_t = DEFAULT_LS)]
    limit: usize,
    /// Another tenant's requests (admin tokens).
    #[arg(long)]
    tenant: Option<String>,
    /// The API's JSON: `{"requests": [...], "next_cursor": ...}`, every
    /// page read in one.
    #[arg(long)]
    json: bool,
}

/// Requests `requests ls` shows unless `--limit` says otherwise.
const DEFAULT_LS: usize = 50;
/// An error's text in a table cell, at most.
const ERROR_CELL_CHARS: usize = 80;

impl LsArgs {
    async fn run(self) -> anyhow::Result<u8> {
        if self.limit == 0 {
            anyhow::bail!("--limit 0 shows nothing: give 1 or more");
        }
        let client = self.connection.client()?;
        let mut params = RequestsParams {
            app: self.app.clone(),
            runner: self.runner.clone(),
            state: self.state.map(|state| state.as_str().to_owned()),
            since: self.since.clone(),
            until: self.until.clone(),
            ..RequestsParams::default()
        };
        let mut requests: Vec<RequestInfo> = Vec::new();
        let mut incomplete = None;
        let more = loop {
            let want = (self.limit - requests.len()).min(MAX_REQUESTS_LIMIT);
            params.limit = Some(want.to_string());
            let page = client.requests(self.tenant.as_deref(), &params).await?;
            requests.extend(page.requests);
            incomplete = incomplete.or(page.incomplete);
            match page.next_cursor {
                Some(cursor) if requests.len() < self.limit => params.cursor = Some(cursor),
                next => break next,
            }
        };
        if self.json {
            return print_json(serde_json::json!({
                "requests": requests,
                "next_cursor": more,
                "incomplete": incomplete,
            }));
        }
        if let Some(incomplete) = &incomplete {
            eprintln!("tailwater: {}", incomplete.message);
        }
        if requests.is_empty() {
            println!("no requests{}", self.filters_said());
            return Ok(0);
        }
        let now = Timestamp::now();
        let mut rows = vec![[
            "REQUEST", "APP", "RUNNER", "STATE", "STATUS", "STARTED", "DURATION", "LINES", "ERROR",
        ]
        .map(str::to_owned)
        .to_vec()];
        rows.extend(requests.iter().map(|request| {
            vec![
                request.request_id.clone(),
                request.app.clone(),
                request.runner.clone(),
                request.state.as_str().to_owned(),
                request
                    .status
                    .map_or("-".into(), |status| status.to_string()),
                ago(Some(request.started), now),
                duration_ms(request.duration_ms),
                request.records.to_string(),
                request.error.as_deref().map_or("-".into(), error_cell),
            ]
        }));
        print_table(&rows)?;
        if more.is_some() && std::io::stderr().is_terminal() {
            eprintln!(
                "tailwater: the newest {} shown; more with --limit, or --until the oldest shown",
                requests.len()
            );
        }
        Ok(0)
    }

    /// ` matching --app sdxl --state error`, for the empty list's line.
    fn filters_said(&self) -> String {
        let mut said = String::new();
        let flags = [
            ("--app", self.app.clone()),
            ("--runner", self.runner.clone()),
            ("--state", self.state.map(|state| state.to_string())),
            ("--since", self.since.clone()),
            ("--until", self.until.clone()),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                said.push_str(&format!(" {flag} {value}"));
            }
        }
        if said.is_empty() {
            said
        } else {
            format!(" matching{said}")
        }
    }
}

/// An error as one table cell: its first line, control characters shown,
/// cut to [`ERROR_CELL_CHARS`] (`requests show ID` has all of it).
fn error_cell(error: &str) -> String {
    let first = error.lines().next().unwrap_or_default();
    let shown: String = first.chars().flat_map(char::escape_default).collect();
    let more = first.len() < error.trim_end().len();
    match shown.char_indices().nth(ERROR_CELL_CHARS) {
        Some((cut, _)) => format!("{}…", &shown[..cut]),
        None if more => format!("{shown} …"),
        None => shown,
    }
}

pub async fn run(args: RequestsArgs) -> anyhow::Result<u8> {
    match args.command {
        RequestsCommand::Ls(ls) => ls.run().await,
        RequestsCommand::Show {
            connection,
            id,
            tenant,
            json,
        } => {
            let client = connection.client()?;
            let info = client.request_info(tenant.as_deref(), &id).await?;
            if json {
                return print_json(serde_json::to_value(&info)?);
            }
            let now = Timestamp::now();
            let when = |time| when(time, now);
            print_table(&[
                vec!["request".into(), info.request_id.clone()],
                vec!["state".into(), info.state.as_str().into()],
                vec![
                    "status".into(),
                    info.status.map_or("-".into(), |status| status.to_string()),
                ],
                vec!["started".into(), when(Some(info.started))],
                vec!["ended".into(), when(info.ended)],
                vec!["duration".into(), duration_ms(info.duration_ms)],
                vec![
                    "error".into(),
                    // One cell of a table: its control characters shown.
                    info.error.as_deref().map_or("-".into(), |error| {
                        error.chars().flat_map(char::escape_default).collect()
                    }),
                ],
                vec!["app".into(), info.app.clone()],
                vec![
                    "version".into(),
                    if info.version.is_empty() {
                        "-".into()
                    } else {
                        info.version.clone()
                    },
                ],
                vec!["runner".into(), info.runner.clone()],
                vec!["tenant".into(), info.tenant.clone()],
                vec!["records".into(), info.records.to_string()],
            ])?;
            Ok(0)
        }
        RequestsCommand::Logs(logs) => logs.run("tailwater requests logs", "--request").await,
    }
}
