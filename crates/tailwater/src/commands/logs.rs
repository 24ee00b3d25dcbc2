//! `tailwater logs`: history, then (with `-f`) live tail that resumes after
//! the history with no gap and no duplicate, and after a server restart or a
//! network blip resumes after the last record printed (SSE `Last-Event-ID`),
//! again with no gap and no duplicate.
//!
//! With several servers (the nodes of a cluster, where a record has the
//! same id on every node), history comes from the first that answers, and
//! `-f` moves on to the next ([`Servers`], round robin) when the one it
//! follows stops answering, resuming after the last record printed.
//!
//! For other commands that print a filter's records: [`FilterArgs`] (the
//! filter flags, flattened into their own args), [`crate::render::OutputArgs`]
//! and [`print_logs`].

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use tailwater_client::Client;
use tailwater_model::time::parse_std_duration;
use tailwater_model::wire::{LogsParams, FIELD_PREFIX};

use crate::render::{OutputArgs, OutputClosed, Printer};
use crate::Connection;

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  tailwater logs --app sdxl -f\n  tailwater logs --request req-42 --json\n  tailwater logs --app sdxl --level warn --since 15m --grep 'out of memory'\n  tailwater logs --runner r-gpu-1 --since 2h --until 1h --time utc\n  tailwater logs --where 'runner_re=gpu-a100-.*' --regex 'step [0-9]+ loss' --field phase=train\n  tailwater logs --app sdxl -n 10000 | less -R\n  tailwater logs --app sdxl --since 1d --grep 'out of memory' --count\n  tailwater logs --app sdxl -f --server http://node-a:7070,http://node-b:7070\n\nFollowing (-f) survives server restarts and network blips: it resumes after the last\nline shown, with nothing lost and nothing repeated. With several --server (the nodes of\na cluster), it reads from the first that answers and, when that one stops answering,\nfollows the next from the last line shown."
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
    /// With several --server: how long a server may send nothing before it
    /// is taken as gone (it sends a keep-alive every 15 s while a tail is
    /// quiet, so keep it above that); -f then follows the next, and reading
    /// history asks the next.
    #[arg(long, default_value = "45s", value_parser = parse_std_duration, value_name = "DURATION")]
    idle_timeout: Duration,
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
    anyhow::ensure!(
        !args.idle_timeout.is_zero(),
        "invalid --idle-timeout 0: give servers time to answer (45s is the default)"
    );
    let mut servers = Servers::new(args.connection.clients()?, args.idle_timeout)?;
    let params = args.filter.params()?;
    if args.count {
        let client = servers.first_answering().await?;
        print_count(client, &params, args.output.json).await?;
        return Ok(0);
    }
    let printer = Printer::new(&args.output);
    let printed = match &args.around {
        Some(id) => {
            let client = servers.first_answering().await?;
            print_around(client, &args.filter, params, id, args.context, &printer).await
        }
        None => print_logs(&mut servers, &params, args.lines, args.follow, &printer).await,
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
/// ([`OutputClosed`]) or the server refuses (a revoked token, …). History
/// comes from the first of `servers` that answers; following moves on from
/// there.
pub async fn print_logs(
    servers: &mut Servers,
    params: &LogsParams,
    lines: Option<usize>,
    follow: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    let client = servers.first_answering().await?;
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
            followed = follow_across(servers, params, as_of, printer) => followed?,
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
    after: String,
    printer: &Printer,
) -> anyhow::Result<()> {
    let mut servers = Servers::one(client.clone());
    follow_across(&mut servers, params, after, printer).await
}

/// [`follow_from`] the current of `servers`; when it stops answering (its
/// connection drops or breaks, or, with several, it sends nothing for their
/// idle timeout), the next, round robin, each resuming after the last
/// record printed. A record has the same id on every node of a cluster, so
/// the next node sends exactly the records after it.
async fn follow_across(
    servers: &mut Servers,
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
        let client = servers.follower();
        match client.tail(&params, Some(&after)).await {
            Ok(stream) => {
                if servers.several() && (retry.failed() || servers.moved()) {
                    eprintln!("tailwater: following {} now", client.server());
                } else if retry.failed() {
                    eprintln!("tailwater: following again");
                }
                retry.reset();
                servers.settle();
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(record) => {
                            printer.print([&record])?;
                            after = record.id.clone();
                        }
                        Err(error) if servers.several() => {
                            let why = servers.why(&error);
                            let next = servers.move_on();
                            eprintln!(
                                "tailwater: live tail from {} interrupted: {why}; trying {next}",
                                client.server()
                            );
                            retry.fail();
                            break;
                        }
                        Err(error) => {
                            eprintln!("tailwater: live tail interrupted: {error}; reconnecting");
                            retry.fail();
                            break;
                        }
                    }
                }
                if !retry.failed() && servers.several() {
                    // The server ended the stream (it is shutting down).
                    let next = servers.move_on();
                    eprintln!(
                        "tailwater: {} ended the live tail; trying {next}",
                        client.server()
                    );
                }
            }
            Err(error) if error.is_transient() => {
                if servers.several() {
                    let why = servers.why(&error);
                    let next = servers.move_on();
                    if !retry.failed() {
                        eprintln!("tailwater: {why}; trying {next}");
                    }
                } else if !retry.failed() {
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

/// The servers `logs` reads from, in their order, and the one in use: the
/// first that answers, then, while following, the next each time the one
/// followed stops answering (round robin, so a server back after an outage
/// is come to again).
pub struct Servers {
    /// Each server's client, as given.
    clients: Vec<Client>,
    /// Each server's client for following: with several servers, one that
    /// takes a server silent for the idle timeout as gone.
    followers: Vec<Client>,
    current: usize,
    /// Moved since the last live tail was opened.
    moved: bool,
    idle_timeout: Duration,
}

impl Servers {
    /// `clients`, at least one, the first used first.
    pub fn new(clients: Vec<Client>, idle_timeout: Duration) -> anyhow::Result<Servers> {
        anyhow::ensure!(!clients.is_empty(), "no server to read from: give --server");
        let followers = if clients.len() > 1 {
            clients
                .iter()
                .map(|client| client.clone().with_read_timeout(idle_timeout))
                .collect::<Result<_, _>>()?
        } else {
            // One server behaves as it always did: waited for.
            clients.clone()
        };
        Ok(Servers {
            clients,
            followers,
            current: 0,
            moved: false,
            idle_timeout,
        })
    }

    /// One server, waited for however long it takes.
    pub fn one(client: Client) -> Servers {
        Servers {
            clients: vec![client.clone()],
            followers: vec![client],
            current: 0,
            moved: false,
            idle_timeout: Duration::MAX,
        }
    }

    fn several(&self) -> bool {
        self.clients.len() > 1
    }

    /// The client following the server in use.
    fn follower(&self) -> Client {
        self.followers[self.current].clone()
    }

    /// Moves to the next server, round robin; returns its URL.
    fn move_on(&mut self) -> String {
        self.current = (self.current + 1) % self.clients.len();
        self.moved = true;
        self.clients[self.current].server().to_owned()
    }

    /// What `error` says, naming --idle-timeout when it is what was hit.
    fn why(&self, error: &tailwater_client::ClientError) -> String {
        match error {
            tailwater_client::ClientError::Unreachable { server, reason }
                if reason == "timed out" && self.several() =>
            {
                format!(
                    "{server} sent nothing for {:?} (--idle-timeout)",
                    self.idle_timeout
                )
            }
            error => error.to_string(),
        }
    }

    /// Whether it moved since [`Servers::settle`].
    fn moved(&self) -> bool {
        self.moved
    }

    fn settle(&mut self) {
        self.moved = false;
    }

    /// The first server, from the one in use on, that answers (`GET
    /// /healthz` within the idle timeout), made the one in use; with one
    /// server, that one, unasked. An error names each server and why it did
    /// not answer.
    pub async fn first_answering(&mut self) -> anyhow::Result<&Client> {
        if !self.several() {
            return Ok(&self.clients[0]);
        }
        let mut reasons = Vec::new();
        for asked in 1..=self.clients.len() {
            let client = &self.clients[self.current];
            let reason = match tokio::time::timeout(self.idle_timeout, client.health()).await {
                Ok(Ok(())) => return Ok(&self.clients[self.current]),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!(
                    "no answer from {} within {:?} (--idle-timeout)",
                    client.server(),
                    self.idle_timeout
                ),
            };
            let next = self.move_on();
            if asked < self.clients.len() {
                eprintln!("tailwater: {reason}; trying {next}");
            }
            reasons.push(reason);
        }
        anyhow::bail!(
            "no server answered: {}; check that one of them runs, or give others with --server",
            reasons.join("; ")
        )
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    const IDLE: Duration = Duration::from_millis(500);

    fn client(url: &str) -> Client {
        Client::new(url, "tw_test").unwrap()
    }

    /// A port nothing listens on.
    fn closed() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    /// A server that takes connections and never answers (frozen): the
    /// kernel accepts for it.
    fn frozen() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    /// A server answering each request with `answer(its head)` then
    /// holding the connection open, silent; the heads are sent on `heads`.
    fn serving(answer: fn(&str) -> String) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (heads, received) = mpsc::channel();
        std::thread::spawn(move || {
            let mut open: Vec<TcpStream> = Vec::new();
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line.to_lowercase());
                }
                stream.write_all(answer(&head).as_bytes()).unwrap();
                let _ = heads.send(head);
                open.push(stream);
            }
        });
        (url, received)
    }

    fn healthy(_head: &str) -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_owned()
    }

    fn record(id: u64) -> String {
        let record = serde_json::json!({
            "id": id.to_string(), "ts": "2026-01-01T00:00:00Z", "tenant": "default",
            "app": "api", "version": "v1", "runner": "r1", "boot": "b1", "seq": id,
            "source": "run", "stream": "stdout", "level": "info", "request_id": null,
            "message": format!("line {id}"),
        });
        format!("event: record\nid: {id}\ndata: {record}\n\n")
    }

    /// A live tail of the records after `Last-Event-ID` (none: after 0) up
    /// to 4, then silence.
    fn tail_to_4(head: &str) -> String {
        let after: u64 = head
            .lines()
            .find_map(|line| line.strip_prefix("last-event-id: "))
            .map_or(0, |id| id.trim().parse().unwrap());
        let records: String = (after + 1..=4).map(record).collect();
        format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n{records}")
    }

    /// Records 1 and 2, then silence: a node frozen mid-tail.
    fn tail_to_2(_head: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n{}{}",
            record(1),
            record(2)
        )
    }

    #[test]
    fn servers_are_moved_through_in_order_round_robin() {
        let urls = ["http://a:1", "http://b:2", "http://c:3"];
        let mut servers = Servers::new(urls.map(client).to_vec(), IDLE).unwrap();
        let moves: Vec<String> = (0..4).map(|_| servers.move_on()).collect();
        assert_eq!(
            moves,
            ["http://b:2", "http://c:3", "http://a:1", "http://b:2"]
        );
        assert!(Servers::new(Vec::new(), IDLE).is_err());
    }

    #[tokio::test]
    async fn reading_uses_the_first_server_that_answers() {
        let (_frozen, silent) = frozen();
        let (answering, _) = serving(healthy);
        let urls = [silent.as_str(), closed().as_str(), answering.as_str()].map(client);
        let mut servers = Servers::new(urls.to_vec(), IDLE).unwrap();
        let started = Instant::now();
        let chosen = servers.first_answering().await.unwrap();
        assert_eq!(chosen.server(), answering);
        assert!(started.elapsed() < IDLE * 4, "{:?}", started.elapsed());
        // The one chosen stays in use.
        assert_eq!(servers.first_answering().await.unwrap().server(), answering);

        let (_frozen, silent) = frozen();
        let urls = [silent.clone(), closed()];
        let mut servers = Servers::new(urls.iter().map(|u| client(u)).collect(), IDLE).unwrap();
        let Err(error) = servers.first_answering().await else {
            panic!("no server answers");
        };
        let error = error.to_string();
        assert!(error.starts_with("no server answered: "), "{error}");
        assert!(
            error.contains(&format!("no answer from {silent} within")),
            "{error}"
        );
        assert!(error.contains("connection refused"), "{error}");
    }

    #[tokio::test]
    async fn one_server_is_used_unasked() {
        let mut servers = Servers::new(vec![client(&closed())], IDLE).unwrap();
        assert!(servers.first_answering().await.is_ok());
    }

    #[tokio::test]
    async fn following_moves_on_in_order_past_a_dead_server_after_the_last_record_printed() {
        let (stalls, _) = serving(tail_to_2);
        let (next, heads) = serving(tail_to_4);
        let urls = [stalls, closed(), next];
        let clients = urls.iter().map(|url| client(url)).collect();
        let mut servers = Servers::new(clients, IDLE).unwrap();
        let printer = Printer::new(&OutputArgs {
            json: true,
            ..OutputArgs::default()
        });
        let shown = printer.clone();
        let following = tokio::spawn(async move {
            follow_across(&mut servers, &LogsParams::default(), "0".into(), &shown).await
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !printer.has_printed("4") {
            assert!(Instant::now() < deadline, "record 4 never printed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        following.abort();
        // The next server was asked for what came after the last record
        // shown: nothing repeated, nothing skipped.
        let asked = heads.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(asked.contains("last-event-id: 2\r\n"), "{asked}");
        for id in 1..=4 {
            assert!(printer.has_printed(&id.to_string()), "{id}");
        }
    }
}
