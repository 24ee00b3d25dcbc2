//! `tailwater logs`: history, then (with `-f`) live tail that resumes after
//! the history with no gap and no duplicate, and reconnects after a blip.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tailwater_client::Client;
use tailwater_model::wire::{LogsParams, FIELD_PREFIX};
use tailwater_model::{LogRecord, Stream};

use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater logs --app sdxl -f\n  tailwater logs --request req-42 --json\n  tailwater logs --app sdxl --level warn --since 15m --grep 'out of memory'\n  tailwater logs --where 'runner_re=gpu-a100-.*' --regex 'step [0-9]+ loss' --field phase=train"
)]
pub struct LogsArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    app: Option<String>,
    #[arg(long)]
    version: Option<String>,
    #[arg(long)]
    runner: Option<String>,
    /// Only this request's logs.
    #[arg(long)]
    request: Option<String>,
    /// run, gateway or deploy.
    #[arg(long)]
    source: Option<String>,
    /// stdout, stderr or system.
    #[arg(long)]
    stream: Option<String>,
    /// This level and more severe: trace, debug, info, warn, error, fatal.
    #[arg(long)]
    level: Option<String>,
    /// Only lines with these words, together and in this order (ignoring
    /// case): `out of memory` finds "CUDA out-of-memory", not "memoryless".
    #[arg(long)]
    grep: Option<String>,
    /// Only lines holding this text anywhere, inside words too, ignoring
    /// ASCII case unless --case-sensitive: `memor` finds "memoryless".
    #[arg(long)]
    contains: Option<String>,
    /// Make --contains respect case.
    #[arg(long, requires = "contains")]
    case_sensitive: bool,
    /// Only lines a regex finds, anywhere in the line (Rust regex syntax;
    /// `(?i)` ignores case).
    #[arg(long)]
    regex: Option<String>,
    /// Only records whose field KEY has VALUE; repeat for several. Numbers and
    /// booleans as JSON writes them: --field status=500 --field cached=true.
    #[arg(long, value_name = "KEY=VALUE")]
    field: Vec<String>,
    /// Any other query parameter of GET /v1/logs (see the README); repeat for
    /// several: --where 'runner_re=gpu-.*' --where app_not=staging.
    #[arg(long = "where", value_name = "NAME=VALUE")]
    where_: Vec<String>,
    /// From this time: RFC 3339, or a duration ago such as 15m. Shows every
    /// line since then unless -n is given.
    #[arg(long)]
    since: Option<String>,
    /// Up to this time: RFC 3339, or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// How many of the latest lines to show first (default 100).
    #[arg(long, short = 'n')]
    lines: Option<usize>,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    follow: bool,
    /// One JSON record per line, in the API's record shape.
    #[arg(long)]
    json: bool,
}

const DEFAULT_LINES: usize = 100;
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub async fn run(args: LogsArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let params = params(&args)?;
    let mut out = std::io::stdout().lock();
    let as_of = match (args.since.is_some(), args.lines) {
        (true, None) => print_all_since(&client, &params, &args, &mut out).await?,
        (_, lines) => {
            print_latest(
                &client,
                &params,
                lines.unwrap_or(DEFAULT_LINES),
                &args,
                &mut out,
            )
            .await?
        }
    };
    drop(out);
    if args.follow {
        follow(&client, &params, as_of, &args).await?;
    }
    Ok(0)
}

/// The query parameters the flags describe; a bad `--field` or `--where`,
/// an unknown name or one given twice is an error before anything is sent.
fn params(args: &LogsArgs) -> anyhow::Result<LogsParams> {
    let mut pairs = LogsParams {
        app: args.app.clone(),
        version: args.version.clone(),
        runner: args.runner.clone(),
        request: args.request.clone(),
        source: args.source.clone(),
        stream: args.stream.clone(),
        level: args.level.clone(),
        text: args.grep.clone(),
        contains: args.contains.clone(),
        case: args.case_sensitive.then(|| "sensitive".to_owned()),
        regex: args.regex.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        ..LogsParams::default()
    }
    .to_pairs();
    for field in &args.field {
        let (key, value) = field.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("invalid --field '{field}': use KEY=VALUE, as in --field status=500")
        })?;
        pairs.push((format!("{FIELD_PREFIX}{key}"), value.to_owned()));
    }
    for pair in &args.where_ {
        let (name, value) = pair.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "invalid --where '{pair}': use NAME=VALUE, as in --where 'runner_re=gpu-.*'"
            )
        })?;
        pairs.push((name.to_owned(), value.to_owned()));
    }
    LogsParams::from_pairs(pairs).map_err(|error| anyhow::anyhow!(error))
}

/// The latest `lines` records, oldest first. Returns the `as_of` to follow
/// from.
async fn print_latest(
    client: &Client,
    params: &LogsParams,
    lines: usize,
    args: &LogsArgs,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut records = Vec::new();
    let mut params = LogsParams {
        direction: Some("backward".into()),
        ..params.clone()
    };
    let mut as_of = None;
    while records.len() < lines {
        let want = (lines - records.len()).min(tailwater_model::wire::MAX_PAGE_LIMIT);
        params.limit = Some(want.to_string());
        let page = client.logs(&params).await?;
        as_of.get_or_insert(page.as_of);
        records.extend(page.records);
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    if lines == 0 {
        // Nothing to show, but follow must still start from now.
        params.limit = Some("1".into());
        as_of = Some(client.logs(&params).await?.as_of);
    }
    for record in records.iter().rev() {
        print_record(record, args.json, out)?;
    }
    out.flush()?;
    Ok(as_of.unwrap_or_default())
}

/// Every record from `--since` on, oldest first, page by page.
async fn print_all_since(
    client: &Client,
    params: &LogsParams,
    args: &LogsArgs,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let mut params = LogsParams {
        direction: Some("forward".into()),
        limit: Some(tailwater_model::wire::MAX_PAGE_LIMIT.to_string()),
        ..params.clone()
    };
    let mut as_of = None;
    loop {
        let page = client.logs(&params).await?;
        as_of.get_or_insert(page.as_of);
        for record in &page.records {
            print_record(record, args.json, out)?;
        }
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    out.flush()?;
    Ok(as_of.unwrap_or_default())
}

/// Prints records stored after `after`, reconnecting (from the last record
/// printed) when the connection drops.
async fn follow(
    client: &Client,
    params: &LogsParams,
    mut after: u64,
    args: &LogsArgs,
) -> anyhow::Result<()> {
    // A time window closes over history; following goes on past `until`.
    let params = LogsParams {
        since: None,
        until: None,
        ..params.clone()
    };
    let mut warned = false;
    loop {
        match client.tail(&params, Some(after)).await {
            Ok(stream) => {
                if warned {
                    eprintln!("tailwater: following again");
                    warned = false;
                }
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(record) => {
                            after = record.id;
                            let mut out = std::io::stdout().lock();
                            print_record(&record, args.json, &mut out)?;
                            out.flush()?;
                        }
                        Err(error) => {
                            eprintln!("tailwater: live tail interrupted: {error}; reconnecting");
                            warned = true;
                            break;
                        }
                    }
                }
            }
            Err(error) if error.is_transient() => {
                if !warned {
                    eprintln!("tailwater: {error}; retrying");
                    warned = true;
                }
            }
            Err(error) => return Err(error.into()),
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

fn print_record(record: &LogRecord, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    let written = if json {
        serde_json::to_writer(&mut *out, record).map_err(std::io::Error::from)
    } else {
        write!(out, "{}", TextLine(record))
    };
    match written.and_then(|()| writeln!(out)) {
        // A closed pipe (`| head`) is a normal way to stop reading.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other,
    }
}

/// `2026-11-21T10:00:00.123Z sdxl r-1a2b stderr ERROR [req-7] message`
struct TextLine<'a>(&'a LogRecord);

impl std::fmt::Display for TextLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let record = self.0;
        let level = record.level.as_str().to_ascii_uppercase();
        write!(
            f,
            "{:.3} {} {} {:<6} {:<5} ",
            record.ts,
            record.app,
            record.runner,
            record.stream.as_str(),
            level
        )?;
        if let Some(request) = &record.request_id {
            write!(f, "[{request}] ")?;
        }
        if record.stream == Stream::System {
            write!(f, "tailwater: ")?;
        }
        f.write_str(&record.message)
    }
}
