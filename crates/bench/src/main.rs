//! `tailwater-bench`: the benchmark suite's command line.
//!
//! Every run generates (or reads) a corpus, ingests it into a fresh store
//! and beside it into a plain file, then measures the figures asked for,
//! each beside a baseline measured in the same run, and prints a table (or
//! JSON). The machine is shared and noisy: compare ratios, not values.
//!
//! - [`corpus`]: the lines, deterministic from a seed, streamed.
//! - [`ingest`], [`size`], [`query`], [`count`], [`memory`]: one figure
//!   group each; [`clickhouse`]: ClickHouse (chdb) as the count rows'
//!   baseline.
//! - [`server`], [`agent`]: the `tailwater` binary measured from outside,
//!   over loopback HTTP ([`http`]).
//! - [`cluster`]: distributed mode (three nodes on a three-server NATS
//!   cluster) against one embedded server.
//! - [`measure`]: timing, peak memory, the table and JSON output.

/// The allocator the `tailwater` binary uses, so the store is measured as
/// it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod agent;
mod clickhouse;
mod cluster;
mod corpus;
mod corpus_web;
mod count;
mod http;
mod ingest;
mod measure;
mod memory;
mod otlp;
mod query;
mod server;
mod size;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};

use crate::corpus::Corpus;
use crate::measure::Report;
use crate::query::Grep;
use tailwater_model::time::TimePrecision;

/// Lines of a `--quick` run: well under a minute on two shared cores.
const QUICK_LINES: u64 = 200_000;
/// Lines of a full run: minutes, a few GiB of scratch disk.
const FULL_LINES: u64 = 10_000_000;
/// Lines POSTed to the server in a full run at most (they are built into
/// request bodies beforehand, in memory).
const FULL_SERVER_LINES: u64 = 1_000_000;
/// Lines the agent's worker prints: `--quick`, full.
const AGENT_LINES: (u64, u64) = (100_000, 1_000_000);
/// Seconds of live tail at 1000 lines/s: `--quick`, full.
const TAIL_SECONDS: (u64, u64) = (3, 10);

#[derive(Parser)]
#[command(
    name = "tailwater-bench",
    version,
    about = "Benchmarks tailwater's store, server and agent: every figure beside a baseline measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every figure: ingest, size, query, memory and server.
    All(Options),
    /// Ingest throughput: the store against a plain file, fsync per batch.
    Ingest(Options),
    /// Stored bytes against the raw text and zstd -3 of it (ingests first).
    Size(Options),
    /// Query latencies against rg over the raw text (ingests first).
    Query(Options),
    /// Peak memory of a full scan (ingests first).
    Memory(Options),
    /// The tailwater binary over loopback HTTP: server ingest and memory,
    /// agent overhead and memory, live-tail latency; and the store's own
    /// ingest first, which the server's ingest rows stand beside. Build
    /// the binary first: cargo build --release -p tailwater -p
    /// tailwater-bench.
    Server(Options),
    /// Distributed mode: three `tailwater server --nats` nodes on a
    /// three-server NATS cluster against one embedded server: ingest,
    /// acknowledgement latency, failover after a kill -9, a node's catch-up.
    /// Needs nats-server (scripts/bench-setup) and the binary built first:
    /// cargo build --release -p tailwater -p tailwater-bench.
    Cluster(Options),
    /// Print the generated corpus's raw lines to stdout, to look at or to
    /// feed other tools.
    Corpus {
        /// How many lines.
        #[arg(long, default_value_t = 1000)]
        lines: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The web and service corpus instead of the workers'.
        #[arg(long)]
        web: bool,
    },
    /// Internal: run a command and print its peak resident memory.
    #[command(hide = true)]
    PeakRss {
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Internal: open a store and read every record (the memory figure's
    /// child).
    #[command(hide = true)]
    ScanChild {
        #[arg(long)]
        store: PathBuf,
    },
    /// Internal: read every line of a raw text file (the memory baseline
    /// without rg).
    #[command(hide = true)]
    ScanRawChild {
        #[arg(long)]
        file: PathBuf,
    },
    /// Internal: the HTTP sink, the server ingest baseline (reads each
    /// POST body and discards it).
    #[command(hide = true)]
    Sink,
    /// Internal: the live-tail worker: lines carrying their write time.
    #[command(hide = true)]
    EmitTimed {
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        count: u64,
    },
}

#[derive(Args)]
struct Options {
    /// 200,000 lines and 5 runs per query: under a minute.
    #[arg(long)]
    quick: bool,
    /// Print the rows as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Lines to generate [default: 200,000 with --quick, else 10,000,000];
    /// with --corpus, the most lines to take from the file.
    #[arg(long, value_parser = at_least_one)]
    lines: Option<u64>,
    /// Seed of the generated corpus (and of the runner ids).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Use this text file's lines instead of generated ones, round-robin
    /// over the 32 runners.
    #[arg(long, value_name = "FILE")]
    corpus: Option<PathBuf>,
    /// Where to make the scratch directory [default: the system temp dir].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the scratch directory (store, raw text) and print its path.
    #[arg(long)]
    keep: bool,
    /// Timed runs per query figure, of which the median is shown
    /// [default: 5 with --quick, else 9].
    #[arg(long, value_parser = at_least_one)]
    runs: Option<u64>,
    /// The synthetic corpus to generate: `workers` (GPU workers' output)
    /// or `web` (web and service logs: JSON, logfmt, RFC 5424, Apache and
    /// nginx access and error lines).
    #[arg(long, default_value = "workers", value_parser = ["workers", "web"])]
    generate: String,
    /// The common term to search for [default: `tokens` in the workers'
    /// corpus, `GET` in the web one].
    #[arg(long)]
    common_term: Option<String>,
    /// The message regex to search for (the regex crate's syntax, which rg
    /// shares for the baseline).
    #[arg(long, default_value = query::REGEX)]
    regex: String,
    /// The tailwater binary the server figures run [default: the one next
    /// to this benchmark, target/release/tailwater].
    #[arg(long, value_name = "PATH")]
    tailwater: Option<PathBuf>,
    /// Lines POSTed to the server [default: the corpus, at most 1,000,000].
    #[arg(long, value_parser = at_least_one)]
    server_lines: Option<u64>,
    /// Concurrent connections POSTing to the server.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
    connections: u64,
    /// Lines the agent's worker prints [default: 100,000 with --quick, else
    /// 1,000,000].
    #[arg(long, value_parser = at_least_one)]
    agent_lines: Option<u64>,
    /// Runs of the agent and of its baseline, taking turns.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    agent_runs: u64,
    /// The unit of the synthetic corpus's times: us, as the agent stamps
    /// lines; ms or ns to measure what coarser or finer times cost.
    #[arg(long, default_value = "us", value_parser = stamp_unit)]
    stamp_unit: TimePrecision,
    /// The store's zstd level for merges and settling (what rests on disk)
    /// [default: the store's, `DEFAULT_MERGE_ZSTD_LEVEL`].
    #[arg(long)]
    merge_zstd_level: Option<i32>,
    /// Settle into block format 3 (the store's `settle_numbers_apart`;
    /// off by default, as the server's `--settle-numbers-apart`).
    #[arg(long)]
    numbers_apart: bool,
    /// Seconds of live tail at 1000 lines/s [default: 3 with --quick, else
    /// 10].
    #[arg(long, value_parser = at_least_one)]
    tail_seconds: Option<u64>,
}

fn stamp_unit(text: &str) -> Result<TimePrecision, String> {
    text.parse()
}

fn at_least_one(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err("use a whole number, 1 or more".to_owned()),
    }
}

struct Figures {
    ingest: bool,
    size: bool,
    query: bool,
    memory: bool,
    server: bool,
    cluster: bool,
}

fn main() -> ExitCode {
    // As `tailwater server` does (see its `run`): no transparent huge pages
    // for mimalloc's arenas, so the store is measured as the server runs it.
    // SAFETY: prctl with integer arguments; it changes no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let only = |ingest, size, query, memory, server| Figures {
        ingest,
        size,
        query,
        memory,
        server,
        cluster: false,
    };
    let (figures, options) = match command {
        Command::All(options) => (only(true, true, true, true, true), options),
        Command::Ingest(options) => (only(true, false, false, false, false), options),
        Command::Size(options) => (only(false, true, false, false, false), options),
        Command::Query(options) => (only(false, false, true, false, false), options),
        Command::Memory(options) => (only(false, false, false, true, false), options),
        Command::Server(options) => (only(true, false, false, false, true), options),
        Command::Cluster(options) => (
            Figures {
                cluster: true,
                ..only(false, false, false, false, false)
            },
            options,
        ),
        Command::Corpus { lines, seed, web } => return print_corpus(seed, lines, web),
        Command::PeakRss { command } => {
            return measure::peak_rss_wrapper(&command[0], &command[1..])
        }
        Command::ScanChild { store } => return memory::scan_child(&store),
        Command::ScanRawChild { file } => return memory::scan_raw_child(&file),
        Command::Sink => return http::sink(),
        Command::EmitTimed { rate, count } => return agent::emit_timed(rate, count),
    };
    let default_lines = if options.quick {
        QUICK_LINES
    } else {
        FULL_LINES
    };
    let run_kind = match (options.lines, options.quick) {
        (Some(_), _) => "custom",
        (None, true) => "quick",
        (None, false) => "full",
    };
    // The corpus, its first `at_most` lines when given.
    let make_corpus = |at_most: Option<u64>| -> anyhow::Result<Corpus> {
        match &options.corpus {
            Some(path) => {
                let limit = options.lines.or(options.quick.then_some(QUICK_LINES));
                let limit = match (limit, at_most) {
                    (Some(limit), Some(most)) => Some(limit.min(most)),
                    (limit, most) => limit.or(most),
                };
                Corpus::from_file(path, options.seed, limit).map_err(|error| {
                    anyhow!(
                        "cannot read the corpus file {}: {error}; pass a readable text file",
                        path.display()
                    )
                })
            }
            None if options.generate == "web" => Ok(Corpus::web(
                options.seed,
                at_most.map_or(options.lines.unwrap_or(default_lines), |most| {
                    options.lines.unwrap_or(default_lines).min(most)
                }),
            )),
            None => {
                let lines = options.lines.unwrap_or(default_lines);
                let unit_ns = 10i64.pow(9 - options.stamp_unit.digits() as u32);
                Ok(Corpus::synthetic_stamped(
                    options.seed,
                    at_most.map_or(lines, |most| lines.min(most)),
                    unit_ns,
                ))
            }
        }
    };
    let corpus = make_corpus(None)?;
    let describe = match &options.corpus {
        Some(path) => format!("{run_kind} run, lines of {}", path.display()),
        None if options.generate == "web" => format!(
            "{run_kind} run, synthetic web and service logs (seed {}, times in us)",
            options.seed,
        ),
        None => format!(
            "{run_kind} run, synthetic (seed {}, times in {})",
            options.seed,
            options.stamp_unit.as_str()
        ),
    };
    let describe = format!(
        "{describe}, {} runners, {} cores",
        corpus.runners().len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let parent = options.dir.clone().unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("tailwater-bench-")
        .tempdir_in(&parent)
        .map_err(|error| {
            anyhow!(
                "cannot make a scratch directory in {}: {error}; pass a writable --dir",
                parent.display()
            )
        })?;
    let grep = Grep::detect();
    let common_term = options.common_term.clone().unwrap_or_else(|| {
        match (&options.corpus, options.generate.as_str()) {
            (None, "web") => corpus_web::COMMON_TERM,
            _ => corpus::COMMON_TERM,
        }
        .to_owned()
    });
    let mut rows = Vec::new();
    let (mut lines, mut raw_bytes) = (0, 0);
    if figures.ingest || figures.size || figures.query || figures.memory {
        eprintln!(
            "ingesting {} lines in {}",
            corpus.len(),
            work.path().display()
        );
        let ingested = ingest::run(
            corpus,
            work.path(),
            options.merge_zstd_level,
            options.numbers_apart,
        )?;
        (lines, raw_bytes) = (ingested.lines, ingested.raw_bytes);
        if figures.ingest {
            rows.extend(ingested.rows.iter().cloned());
        }
        if figures.size {
            eprintln!("measuring sizes");
            rows.extend(size::run(&ingested)?);
        }
        if figures.query {
            eprintln!("timing queries");
            let runs = options.runs.unwrap_or(if options.quick { 5 } else { 9 }) as usize;
            rows.extend(query::run(
                &ingested,
                &grep,
                runs,
                &common_term,
                &options.regex,
            )?);
            eprintln!("loading the records into ClickHouse (chdb) for the count rows");
            let mut clickhouse = clickhouse::ClickHouse::load(
                &ingested.records_path,
                &work.path().join("clickhouse"),
            );
            match &clickhouse {
                Ok(loaded) => eprintln!(
                    "  loaded in {:.1} s, {} bytes stored",
                    loaded.load_seconds, loaded.stored_bytes
                ),
                Err(error) => eprintln!("warning: no ClickHouse baseline: {error:#}"),
            }
            eprintln!("timing counts");
            rows.extend(count::run(
                &ingested,
                &grep,
                runs,
                &common_term,
                &mut clickhouse,
            )?);
        }
        if figures.memory {
            eprintln!("measuring peak memory of a full scan");
            rows.extend(memory::run(&ingested, &grep)?);
        }
    }
    if figures.server {
        eprintln!("measuring the tailwater binary over loopback HTTP");
        let pick = |(quick, full)| if options.quick { quick } else { full };
        let server_rows = server::find_tailwater(options.tailwater.clone()).and_then(|tailwater| {
            let setup = server::Setup {
                tailwater,
                work: work.path(),
                connections: options.connections as usize,
                agent_lines: options.agent_lines.unwrap_or(pick(AGENT_LINES)),
                agent_runs: options.agent_runs as usize,
                tail_seconds: options.tail_seconds.unwrap_or(pick(TAIL_SECONDS)),
                seed: options.seed,
                grep: &grep,
            };
            let at_most = options.server_lines.unwrap_or(FULL_SERVER_LINES);
            server::run(&setup, make_corpus(Some(at_most))?)
        });
        match server_rows {
            Ok(server) => {
                if lines == 0 {
                    (lines, raw_bytes) = (server.lines, server.raw_bytes);
                }
                rows.extend(server.rows);
                let beside = server::beside_store(&rows, ingest::STORE_ROW);
                rows.extend(beside);
            }
            // `all` still reports the store's figures, and says why these
            // are missing; `server` alone fails.
            Err(error) if figures.ingest => {
                eprintln!("warning: no server figures: {error:#}");
                rows.push(
                    measure::Row::new(
                        "server, agent and live tail",
                        measure::Unit::Milliseconds,
                        None,
                        None,
                    )
                    .baseline_is("—")
                    .note(format!("not measured: {error:#}")),
                );
            }
            Err(error) => return Err(error),
        }
    }
    if figures.cluster {
        eprintln!("measuring distributed mode: three nodes on a three-server NATS cluster");
        let tailwater = server::find_tailwater(options.tailwater.clone())?;
        let setup = server::Setup {
            tailwater,
            work: work.path(),
            connections: options.connections as usize,
            agent_lines: 0,
            agent_runs: 0,
            tail_seconds: 0,
            seed: options.seed,
            grep: &grep,
        };
        let at_most = options.server_lines.unwrap_or(FULL_SERVER_LINES);
        let batches = make_corpus(Some(at_most))?;
        // Fresh lines (other runners) for a node to catch up on: a tenth.
        let catch_up = Corpus::synthetic(options.seed + 1, (batches.len() / 10).max(1));
        let cluster_rows;
        (cluster_rows, lines, raw_bytes) = cluster::run(&setup, batches, catch_up)?;
        rows.extend(cluster_rows);
    }
    let report = Report {
        corpus: describe,
        lines,
        raw_bytes,
        rows,
    };
    if options.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    if options.keep {
        eprintln!("kept {}", work.keep().display());
    }
    Ok(())
}

fn print_corpus(seed: u64, lines: u64, web: bool) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let corpus = if web {
        Corpus::web(seed, lines)
    } else {
        Corpus::synthetic(seed, lines)
    };
    for line in corpus {
        let line = line?;
        out.write_all(&line.bytes)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
