//! What the listing commands share: aligned tables, relative times, JSON,
//! and handing a `… logs ID` subcommand over to `tailwater logs`.

use std::io::Write;

use clap::{Args, FromArgMatches, Parser};
use jiff::Timestamp;
use tailwater_model::time::{format_duration, format_rough};

use crate::Connection;

/// Prints rows as columns aligned on elastic tab stops; the first row is
/// the header.
pub fn print_table(rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut table = tabwriter::TabWriter::new(std::io::stdout().lock()).padding(2);
    for row in rows {
        // A tab inside a value would start a new column.
        let cells: Vec<String> = row.iter().map(|cell| cell.replace('\t', " ")).collect();
        writeln!(table, "{}", cells.join("\t"))?;
    }
    table.flush()?;
    Ok(())
}

/// Pretty JSON, as every `--json` prints it.
pub fn print_json(value: serde_json::Value) -> anyhow::Result<u8> {
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}

/// `12s ago`, `5m ago`, `3h ago`, `4d ago`; `-` for none.
pub fn ago(time: Option<Timestamp>, now: Timestamp) -> String {
    let Some(time) = time else {
        return "-".to_owned();
    };
    let age = now.duration_since(time);
    if age.as_secs() <= 0 {
        return "just now".to_owned();
    }
    format!("{} ago", format_rough(age))
}

/// `2026-01-01T00:00:00.25Z (5m ago)`, to the millisecond; `-` for none.
pub fn when(time: Option<Timestamp>, now: Timestamp) -> String {
    match time {
        Some(time) => {
            let shown = time.round(jiff::Unit::Millisecond).unwrap_or(time);
            format!("{shown} ({})", ago(Some(time), now))
        }
        None => "-".to_owned(),
    }
}

/// `250ms`, `1.5s`, `2m05s`; `-` for none.
pub fn duration_ms(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| format_duration(std::time::Duration::from_millis(ms)),
    )
}

/// `tailwater logs` as a parser of its own, for the `… logs ID`
/// subcommands that hand over to it.
#[derive(Parser)]
struct Logs {
    #[command(flatten)]
    args: super::logs::LogsArgs,
}

/// `… logs ID [LOGS OPTIONS]`: one runner's or request's logs, with any
/// `tailwater logs` option after the id.
#[derive(Args, Debug)]
pub struct ScopedLogsArgs {
    #[command(flatten)]
    connection: Connection,
    /// The runner or request id.
    id: String,
    /// `tailwater logs` options, after the id.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "LOGS OPTIONS"
    )]
    options: Vec<String>,
}

impl ScopedLogsArgs {
    /// Runs `tailwater logs` (as `name`) with `FLAG ID` (`--request ID`,
    /// `--runner ID`) and the other options given.
    pub async fn run(self, name: &'static str, flag: &str) -> anyhow::Result<u8> {
        run_logs(name, &self.connection, &[(flag, &self.id)], &self.options).await
    }
}

async fn run_logs(
    name: &'static str,
    connection: &Connection,
    scope: &[(&str, &str)],
    options: &[String],
) -> anyhow::Result<u8> {
    let mut argv = vec![name.to_owned()];
    argv.extend(connection.to_args());
    for (flag, value) in scope {
        argv.extend([(*flag).to_owned(), (*value).to_owned()]);
    }
    argv.extend(options.iter().cloned());
    let command = <Logs as clap::CommandFactory>::command().name(name);
    let matches = command
        .try_get_matches_from(argv)
        .unwrap_or_else(|error| error.exit());
    let logs = Logs::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    super::logs::run(logs.args).await
}
