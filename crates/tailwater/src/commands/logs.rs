//! `tailwater logs`: history, then (with `-f`) live tail that resumes after
//! the history with no gap and no duplicate, and after a server restart or a
//! network blip resumes after the last record printed (SSE `Last-Event-ID`),
//! again with no gap and no duplicate.
//!
//! For other commands that print a filter's records: [`FilterArgs`] (the
//! filter flags, flattened into their own args), [`crate::render::OutputArgs`]
//! and [`print_logs`].

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tailwater_client::Client;
use tailwater_model::wire::{LogsParams, FIELD_PREFIX};

use crate::render::{OutputArgs, OutputClosed, Printer};
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater logs --app sdxl -f\n  tailwater logs --request req-42 --json\n  tailwater logs --app sdxl --level warn --since 15m --grep 'out of memory'\n  tailwater logs --runner r-gpu-1 --since 2h --until 1h --time utc\n  tailwater logs --where 'runner_re=gpu-a100-.*' --regex 'step [0-9]+ loss' --field phase=train\n  tailwater logs --app sdxl -n 10000 | less -R\n  tailwater logs --app sdxl --since 1d --grep 'out of memory' --count\n\nFollowing (-f) survives server restarts and network blips: it resumes after the last\nline shown, with nothing lost and nothing repeated."
)]
pub struct LogsArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    filter: FilterArgs,
    /// How many of the latest lines to show first (default 100; with
    /// --since, every line since then unless -n is given).
    #[arg(long, short = 'n')]
    lines: Option<usize>,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    follow: bool,
    /// Show the lines around one record: its id as `--json` or the console
    /// shows it. From the record's own app and runner unless --app,
    /// --runner, --version or --boot say otherwise; other filters apply.
    #[arg(long, value_name = "ID", conflicts_with_all = ["follow", "lines"])]
    around: Option<String>,
    /// With --around: how many lines to show before the record, and how many
    /// after it.
    #[arg(long, short = 'C', value_name = "N", requires = "around", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=10_000))]
    context: u16,
    /// Print how many lines match instead of the lines (all of history
    /// unless --since or --until bound it; with --json, the server's answer).
    #[arg(long, conflicts_with_all = ["follow", "lines", "around"])]
    count: bool,
    #[command(flatten)]
    output: OutputArgs,
}

/// The filter flags of `tailwater logs`, for any command that reads logs
/// (`export`, …): flatten them, then call [`FilterArgs::params`].
#[derive(Args, Clone, Debug, Default)]
pub struct FilterArgs {
    /// Only this app.
    #[arg(long)]
    pub app: Option<String>,
    /// Only this app version.
    #[arg(long)]
    pub version: Option<String>,
    /// Only this runner (worker).
    #[arg(long)]
    pub runner: Option<String>,
    /// Only this boot (one life of a runner).
    #[arg(long)]
    pub boot: Option<String>,
    /// Only this request's logs.
    #[arg(long)]
    pub request: Option<String>,
    /// run, gateway or deploy.
    #[arg(long)]
    pub source: Option<String>,
    /// stdout, stderr or system.
    #[arg(long)]
    pub stream: Option<String>,
    /// This level and more severe: trace, debug, info, warn, error, fatal.
    #[arg(long)]
    pub level: Option<String>,
    /// Only lines with these words, together and in this order (ignoring
    /// case): `out of memory` finds "CUDA out-of-memory", not "memoryless".
    #[arg(long)]
    pub grep: Option<String>,
    /// Only lines holding this text anywhere, inside words too, ignoring
    /// ASCII case unless --case-sensitive: `memor` finds "memoryless".
    #[arg(long)]
    pub contains: Option<String>,
    /// Make --contains respect case.
    #[arg(long, requires = "contains")]
    pub case_sensitive: bool,
    /// Only lines a regex finds, anywhere in the line (Rust regex syntax;
    /// `(?i)` ignores case).
    #[arg(long)]
    pub regex: Option<String>,
    /// Only records whose field KEY has VALUE; repeat for several. Numbers and
    /// booleans as JSON writes them: --field status=500 --field cached=true.
    #[arg(long, value_name = "KEY=VALUE")]
    pub field: Vec<String>,
    /// Any other query parameter of GET /v1/logs (see the README); repeat for
    /// several: --where 'runner_re=gpu-.*' --where app_not=staging.
    #[arg(long = "where", value_name = "NAME=VALUE")]
    pub where_: Vec<String>,
    /// From this time: RFC 3339, or a duration ago such as 15m.
    #[arg(long)]
    pub since: Option<String>,
    /// Up to this time (not included): RFC 3339, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
}

const DEFAULT_LINES: usize = 100;

pub async fn run(args: LogsArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let params = args.filter.params()?;
    if args.count {
        print_count(&client, &params, args.output.json).await?;
        return Ok(0);
    }
    let printer = Printer::new(&args.output);
    let printed = match &args.around {
        Some(id) => print_around(&client, &args.filter, params, id, args.context, &printer).await,
        None => print_logs(&client, &params, args.lines, args.follow, &printer).await,
    };
    match printed {
        Err(error) if error.is::<OutputClosed>() => Ok(0),
        other => other.map(|()| 0),
    }
}

/// Prints how many records `params` selects (the number, or with `json` the
/// server's answer), and warns when the count lacks records it could not
/// read.
async fn print_count(client: &Client, params: &LogsParams, json: bool) -> anyhow::Result<()> {
    let count = client.count(params).await?;
    if json {
        println!("{}", serde_json::to_string(&count)?);
    } else {
        println!("{}", count.total);
    }
    if let Some(incomplete) = &count.incomplete {
        eprintln!("tailwater: warning: the count is {}", incomplete.message);
    }
    Ok(())
}

/// Prints the records `params` selects, oldest first: the latest `lines`
/// (default 100), or with `since` and no `lines` every one since then; then,
/// with `follow`, every new one as it is stored, until the output closes
/// ([`OutputClosed`]) or the server refuses (a revoked token, …).
pub async fn print_logs(
    client: &Client,
    params: &LogsParams,
    lines: Option<usize>,
    follow: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    let mut incomplete = Incomplete::default();
    let as_of = match (params.since.is_some(), lines) {
        (true, None) => print_all_since(client, params, printer, &mut incomplete).await?,
        (_, lines) => {
            let lines = lines.unwrap_or(DEFAULT_LINES);
            print_latest(client, params, lines, printer, &mut incomplete).await?
        }
    };
    incomplete.warn();
    if !follow && !printer.printed_any() && std::io::stdout().is_terminal() {
        // On a terminal, an empty answer is said (a pipe gets nothing, as
        // grep's would), with why when the range itself is empty.
        eprintln!("tailwater: no lines matched{}", why_none(params));
    }
    if follow {
        tokio::select! {
            followed = follow_from(client, params, as_of, printer) => followed?,
            () = crate::render::stdout_closed() => return Err(OutputClosed.into()),
        }
    }
    Ok(())
}

/// `--around ID`: the record and `context` lines before and after it, from
/// its app and runner unless the filter names a label of its own.
async fn print_around(
    client: &Client,
    filter: &FilterArgs,
    mut params: LogsParams,
    id: &str,
    context: u16,
    printer: &Printer,
) -> anyhow::Result<()> {
    let names_labels = [&filter.app, &filter.version, &filter.runner, &filter.boot]
        .iter()
        .any(|label| label.is_some())
        || filter.where_.iter().any(|pair| {
            ["app", "version", "runner", "boot"]
                .iter()
                .any(|label| pair.starts_with(label))
        });
    if !names_labels {
        // The record itself first, to learn where it was printed.
        let alone = LogsParams {
            around: Some(id.to_owned()),
            limit: Some("1".into()),
            ..LogsParams::default()
        };
        let page = client.logs(&alone).await?;
        let record = page
            .records
            .iter()
            .find(|record| record.id == id)
            .ok_or_else(|| anyhow::anyhow!("no record has the id {id}"))?;
        params.app = Some(record.app.clone());
        params.runner = Some(record.runner.clone());
    }
    params.around = Some(id.to_owned());
    params.limit = Some(context.to_string());
    let page = client.logs(&params).await?;
    let mut incomplete = Incomplete::default();
    incomplete.note(&page);
    printer.print(&page.records)?;
    incomplete.warn();
    if !printer.printed_any() && std::io::stdout().is_terminal() {
        eprintln!("tailwater: no lines matched around {id}");
    }
    Ok(())
}

/// Why no record can match `params`, when their time range is empty.
fn why_none(params: &LogsParams) -> &'static str {
    let Ok(filter) = params.to_filter(jiff::Timestamp::now()) else {
        return "";
    };
    match (filter.since, filter.until) {
        (Some(since), Some(until)) if until <= since => {
            " (--until is not after --since: the time range is empty)"
        }
        _ => "",
    }
}

impl FilterArgs {
    /// The query parameters the flags describe; a bad `--field` or
    /// `--where`, an unknown name or one given twice is an error before
    /// anything is sent.
    pub fn params(&self) -> anyhow::Result<LogsParams> {
        let mut pairs = LogsParams {
            app: self.app.clone(),
            version: self.version.clone(),
            runner: self.runner.clone(),
            boot: self.boot.clone(),
            request: self.request.clone(),
            source: self.source.clone(),
            stream: self.stream.clone(),
            level: self.level.clone(),
            text: self.grep.clone(),
            contains: self.contains.clone(),
            case: self.case_sensitive.then(|| "sensitive".to_owned()),
            regex: self.regex.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            ..LogsParams::default()
        }
        .to_pairs();
        for field in &self.field {
            let (key, value) = field.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --field '{field}': use KEY=VALUE, as in --field status=500"
                )
            })?;
            pairs.push((format!("{FIELD_PREFIX}{key}"), value.to_owned()));
        }
        for pair in &self.where_ {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --where '{pair}': use NAME=VALUE, as in --where 'runner_re=gpu-.*'"
                )
            })?;
            pairs.push((name.to_owned(), value.to_owned()));
        }
        LogsParams::from_pairs(pairs).map_err(|error| anyhow::anyhow!(error))
    }
}

/// The latest `lines` records, oldest first. Returns the `as_of` to follow
/// from.
async fn print_latest(
    client: &Client,
    params: &LogsParams,
    lines: usize,
    printer: &Printer,
    incomplete: &mut Incomplete,
) -> anyhow::Result<String> {
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
        as_of.get_or_insert_with(|| page.as_of.clone());
        incomplete.note(&page);
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
    printer.print(records.iter().rev())?;
    Ok(as_of.unwrap_or_default())
}

/// Every record from `--since` on, oldest first, page by page.
async fn print_all_since(
    client: &Client,
    params: &LogsParams,
    printer: &Printer,
    incomplete: &mut Incomplete,
) -> anyhow::Result<String> {
    let mut params = LogsParams {
        direction: Some("forward".into()),
        limit: Some(tailwater_model::wire::MAX_PAGE_LIMIT.to_string()),
        ..params.clone()
    };
    let mut as_of = None;
    loop {
        let page = client.logs(&params).await?;
        as_of.get_or_insert_with(|| page.as_of.clone());
        incomplete.note(&page);
        printer.print(&page.records)?;
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    Ok(as_of.unwrap_or_default())
}

/// Prints records stored after the record with id `after`, as they come. When the
/// connection drops (a server restart, a network blip), it connects again
/// and resumes after the last record printed: the server sends exactly the
/// records after that id, so nothing is lost or repeated.
pub async fn follow_from(
    client: &Client,
    params: &LogsParams,
    mut after: String,
    printer: &Printer,
) -> anyhow::Result<()> {
    // A time window closes over history; following goes on past `until`.
    let params = LogsParams {
        since: None,
        until: None,
        ..params.clone()
    };
    let mut retry = Backoff::default();
    loop {
        match client.tail(&params, Some(&after)).await {
            Ok(stream) => {
                if retry.failed() {
                    eprintln!("tailwater: following again");
                }
                retry.reset();
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(record) => {
                            printer.print([&record])?;
                            after = record.id.clone();
                        }
                        Err(error) => {
                            eprintln!("tailwater: live tail interrupted: {error}; reconnecting");
                            retry.fail();
                            break;
                        }
                    }
                }
            }
            Err(error) if error.is_transient() => {
                if !retry.failed() {
                    eprintln!("tailwater: {error}; retrying");
                }
                retry.fail();
            }
            Err(error) => return Err(error.into()),
        }
        // A stream the server ended (it is shutting down) is retried too.
        tokio::time::sleep(retry.delay()).await;
    }
}

/// Reconnection delays: 250 ms, doubling to 4 s while it keeps failing.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(4);

    fn fail(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    fn failed(&self) -> bool {
        self.failures > 0
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn delay(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(8);
        (Self::FIRST * 2u32.pow(doublings)).min(Self::MAX)
    }
}

/// Pages that said they lack records (damaged blocks on the server): told
/// once on stderr, after the records, never mixed into stdout.
#[derive(Default)]
struct Incomplete {
    first: Option<tailwater_model::wire::Incomplete>,
    pages: usize,
}

impl Incomplete {
    fn note(&mut self, page: &tailwater_model::wire::LogsPage) {
        if let Some(incomplete) = &page.incomplete {
            self.first.get_or_insert_with(|| incomplete.clone());
            self.pages += 1;
        }
    }

    fn warn(&self) {
        if let Some(first) = &self.first {
            let more = match self.pages {
                1 => String::new(),
                pages => format!(" (said by {pages} pages; the first's count)"),
            };
            eprintln!(
                "tailwater: warning: the lines shown are {}{more}",
                first.message
            );
        }
    }
}
