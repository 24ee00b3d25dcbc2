//! `tailwater requests show|logs ID`: one request's state, status, timing
//! and runner, and its logs. Owner and admin tokens, and caller tokens for
//! the requests they may see.

use clap::{Args, Subcommand};
use jiff::Timestamp;

use super::output::{duration_ms, print_json, print_table, when, ScopedLogsArgs};
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

pub async fn run(args: RequestsArgs) -> anyhow::Result<u8> {
    match args.command {
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
