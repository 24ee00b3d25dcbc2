//! The server figures: the real `tailwater server` binary, started on a
//! scratch data directory, measured from outside over loopback HTTP.
//!
//! - Ingest: prebuilt `IngestBatch` JSON bodies (≤ 1000 lines or ~1 MiB of
//!   text from one runner, as the agent cuts them) POSTed to `/v1/ingest`
//!   over a few kept-alive connections, each runner's batches in order on
//!   one connection. Beside it, the same bodies through the same client to
//!   the sink (`tailwater-bench sink`, an axum handler that reads each body
//!   and discards it): what HTTP over loopback costs by itself.
//! - Memory: the server's peak RSS (`VmHWM`) after that ingest, beside the
//!   sink's; then, the peak reset, while one client pages through every
//!   record with `GET /v1/logs`, beside `rg` reading the same raw text.
//! - Then the agent and live-tail figures ([`crate::agent`]) run against the
//!   same server.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use serde::Deserialize;
use tailwater_model::wire::{
    encode_binary_batch, IngestBatch, IngestRecord, IngestResponse, LogsParams,
    BINARY_BATCH_MEDIA_TYPE, MAX_PAGE_LIMIT,
};

use crate::corpus::Corpus;
use crate::http::{self, Connection, Served};
use crate::measure::{millis, run_measuring_peak_rss, Row, Unit};
use crate::query::Grep;

/// Lines in one batch at most, as the store ingest figure cuts them.
const BATCH_LINES: usize = 1000;
/// Raw text in one batch at most (the agent's `MAX_BATCH_BYTES`).
const BATCH_BYTES: usize = 1024 * 1024;

/// What the server figures need.
pub struct Setup<'a> {
    /// The `tailwater` binary.
    pub tailwater: PathBuf,
    pub work: &'a Path,
    pub connections: usize,
    pub agent_lines: u64,
    pub agent_runs: usize,
    pub tail_seconds: u64,
    pub seed: u64,
    pub grep: &'a Grep,
}

/// Where the `tailwater` binary is: `--tailwater`, else next to this
/// benchmark's own executable (both are built into `target/release`).
pub fn find_tailwater(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        ensure!(
            path.is_file(),
            "--tailwater {} is not a file: pass the tailwater binary",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find this benchmark's own executable")?;
    let beside = exe.with_file_name("tailwater");
    ensure!(
        beside.is_file(),
        "the server figures run the tailwater binary, and there is none at {}: build both with `cargo build --release -p tailwater -p tailwater-bench` (or pass --tailwater PATH)",
        beside.display()
    );
    Ok(beside)
}

/// The prebuilt request bodies, and the same lines as raw text.
pub(crate) struct Bodies {
    /// `(runner index, JSON body)`, in the order they were cut.
    pub(crate) bodies: Vec<(usize, Vec<u8>)>,
    /// The same batches as binary bodies (`application/x-tailwater-batch`,
    /// as the agent sends them).
    binary: Vec<(usize, Vec<u8>)>,
    /// The same batches as OTLP/HTTP protobuf bodies ([`crate::otlp`]).
    otlp: Vec<(usize, Vec<u8>)>,
    /// The same batches' raw lines as Loki pushes (snappy protobuf).
    loki: Vec<(usize, Vec<u8>)>,
    pub(crate) lines: u64,
    pub(crate) raw_path: PathBuf,
}

pub(crate) fn build_bodies(corpus: Corpus, work: &Path) -> anyhow::Result<Bodies> {
    let raw_path = work.join("http-raw.log");
    let mut raw = BufWriter::new(
        File::create(&raw_path).with_context(|| format!("cannot create {}", raw_path.display()))?,
    );
    let runners = corpus.runners().to_vec();
    let mut pending: Vec<Pending> = runners.iter().map(|_| Pending::default()).collect();
    let mut bodies = Vec::new();
    let mut binary = Vec::new();
    let mut otlp = Vec::new();
    let mut loki = Vec::new();
    let mut lines = 0;
    let mut cut = |runner: usize, pending: Pending| -> anyhow::Result<()> {
        let labels = &runners[runner];
        let records = pending.records;
        otlp.push((runner, crate::otlp::body(labels, &records)));
        loki.push((runner, crate::otlp::loki_body(labels, &pending.raw)));
        let batch = IngestBatch {
            app: labels.app.clone(),
            version: labels.version.clone(),
            runner: labels.runner.clone(),
            boot: labels.boot.clone(),
            source: Default::default(),
            records,
        };
        bodies.push((runner, serde_json::to_vec(&batch)?));
        binary.push((runner, encode_binary_batch(&batch)));
        Ok(())
    };
    for line in corpus {
        let line = line.context("cannot read the corpus")?;
        raw.write_all(&line.bytes)?;
        raw.write_all(b"\n")?;
        let batch = &mut pending[line.runner];
        batch.records.push(crate::ingest::record(&line, batch.seq));
        batch.raw.push((
            line.ts.as_nanosecond(),
            String::from_utf8_lossy(&line.bytes).into_owned(),
        ));
        batch.seq += 1;
        batch.bytes += line.bytes.len();
        lines += 1;
        if batch.records.len() == BATCH_LINES || batch.bytes >= BATCH_BYTES {
            let seq = batch.seq;
            let full = std::mem::take(batch);
            batch.seq = seq;
            cut(line.runner, full)?;
        }
    }
    for (runner, batch) in pending.into_iter().enumerate() {
        if !batch.records.is_empty() {
            cut(runner, batch)?;
        }
    }
    raw.flush()?;
    Ok(Bodies {
        bodies,
        binary,
        otlp,
        loki,
        lines,
        raw_path,
    })
}

/// One runner's batch being cut: its records as the agent sends them,
/// the raw lines (time, text) as a Loki client sends them.
#[derive(Default)]
struct Pending {
    records: Vec<IngestRecord>,
    raw: Vec<(i128, String)>,
    bytes: usize,
    seq: u64,
}

/// One ingest of every body into a serving child.
pub(crate) struct Posted {
    pub(crate) wall: Duration,
    /// The child's CPU time during it.
    cpu: Duration,
    /// The child's peak RSS after it (its start included).
    peak_rss: u64,
    pub(crate) accepted: u64,
    /// Each request's time from sending to the whole answer.
    pub(crate) latencies: Vec<Duration>,
}

/// Where and as what bodies are POSTed.
#[derive(Clone, Copy)]
pub(crate) struct Endpoint {
    path: &'static str,
    content_type: &'static str,
}

pub(crate) const NATIVE: Endpoint = Endpoint {
    path: "/v1/ingest",
    content_type: "application/json",
};
const BINARY: Endpoint = Endpoint {
    path: "/v1/ingest",
    content_type: BINARY_BATCH_MEDIA_TYPE,
};
const OTLP: Endpoint = Endpoint {
    path: "/v1/logs",
    content_type: "application/x-protobuf",
};
const LOKI: Endpoint = Endpoint {
    path: "/loki/api/v1/push",
    content_type: "application/x-protobuf",
};

/// POSTs every body to `served`, each runner's batches in order on one of
/// `connections` connections, all connections at once.
pub(crate) fn post_all(
    served: &Served,
    token: &str,
    (endpoint, bodies): (Endpoint, &[(usize, Vec<u8>)]),
    connections: usize,
) -> anyhow::Result<Posted> {
    let mut per_connection: Vec<Vec<&[u8]>> = vec![Vec::new(); connections];
    for (runner, body) in bodies {
        per_connection[runner % connections].push(body);
    }
    let mut opened = Vec::new();
    for _ in 0..connections {
        opened.push(Connection::open(served.addr, token)?);
    }
    let barrier = Barrier::new(connections + 1);
    let pid = served.pid();
    let (results, cpu, wall) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let handles: Vec<_> = opened
            .into_iter()
            .zip(&per_connection)
            .map(|(mut connection, bodies)| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<(u64, Vec<Duration>)> {
                    barrier.wait();
                    let mut accepted = 0;
                    let mut latencies = Vec::with_capacity(bodies.len());
                    for body in bodies {
                        let sent = Instant::now();
                        let response = connection.request_typed(
                            "POST",
                            endpoint.path,
                            (endpoint.content_type, body),
                        )?;
                        latencies.push(sent.elapsed());
                        if !(200..300).contains(&response.status) {
                            bail!(
                                "POST {} answered {}: {}",
                                endpoint.path,
                                response.status,
                                String::from_utf8_lossy(&response.body)
                            );
                        }
                        // The sink answers no counts; the server does.
                        if let Ok(answer) = serde_json::from_slice::<IngestResponse>(&response.body)
                        {
                            accepted += answer.accepted as u64;
                        }
                    }
                    Ok((accepted, latencies))
                })
            })
            .collect();
        let cpu = http::process_cpu(pid)?;
        let start = Instant::now();
        barrier.wait();
        let results: Vec<anyhow::Result<(u64, Vec<Duration>)>> = handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
            })
            .collect();
        let wall = start.elapsed();
        Ok((results, http::process_cpu(pid)?.saturating_sub(cpu), wall))
    })?;
    let mut accepted = 0;
    let mut latencies = Vec::new();
    for result in results {
        let (taken, times) = result?;
        accepted += taken;
        latencies.extend(times);
    }
    Ok(Posted {
        wall,
        cpu,
        peak_rss: http::process_peak_rss(pid)?,
        accepted,
        latencies,
    })
}

/// Pages through every record, oldest first; how many, and how long.
fn scan_all(served: &Served, token: &str) -> anyhow::Result<(u64, Duration)> {
    #[derive(Deserialize)]
    struct Page {
        records: Vec<serde::de::IgnoredAny>,
        next_cursor: Option<String>,
    }
    let mut connection = Connection::open(served.addr, token)?;
    let mut records = 0;
    let mut cursor: Option<String> = None;
    let start = Instant::now();
    loop {
        let params = LogsParams {
            limit: Some(MAX_PAGE_LIMIT.to_string()),
            direction: Some("forward".to_owned()),
            cursor: cursor.clone(),
            ..LogsParams::default()
        };
        let path = format!("/v1/logs?{}", params.to_query_string());
        let response = connection.request("GET", &path, b"")?;
        ensure!(
            response.status == 200,
            "GET /v1/logs answered {}: {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        let page: Page = serde_json::from_slice(&response.body)
            .context("GET /v1/logs answered something other than a page")?;
        records += page.records.len() as u64;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok((records, start.elapsed())),
        }
    }
}

pub(crate) fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("bench-{hex}")
}

/// The server figures' rows, and the lines and raw bytes POSTed.
pub struct Measured {
    pub rows: Vec<Row>,
    pub lines: u64,
    pub raw_bytes: u64,
}

/// Every server, agent and live-tail figure.
pub fn run(setup: &Setup, corpus: Corpus) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe().context("cannot find this benchmark's own executable")?;
    eprintln!("  building the HTTP batches");
    let bodies = build_bodies(corpus, setup.work)?;
    let lines = bodies.lines;
    let token = random_token();

    eprintln!("  POSTing them to the sink");
    let mut sink_command = Command::new(&exe);
    sink_command.arg("sink");
    let sink = Served::start(sink_command, &setup.work.join("sink.log"), "the sink")?;
    let sunk = post_all(&sink, &token, (NATIVE, &bodies.bodies), setup.connections)?;
    sink.stop()?;

    eprintln!("  POSTing them to tailwater server");
    let data = setup.work.join("server-data");
    let mut server_command = Command::new(&setup.tailwater);
    server_command
        .arg("server")
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("TAILWATER_BOOTSTRAP_TOKEN", &token)
        .env("TAILWATER_LOG", "warn");
    let server = Served::start(
        server_command,
        &setup.work.join("server.log"),
        "tailwater server",
    )?;
    let posted = post_all(&server, &token, (NATIVE, &bodies.bodies), setup.connections)?;
    ensure!(
        posted.accepted == lines,
        "the server accepted {} of {lines} fresh lines: a benchmark or server bug (its log: {})",
        posted.accepted,
        server.log.display()
    );

    eprintln!("  paging through every record");
    http::reset_peak_rss(server.pid())?;
    // Right after the reset the peak is the memory the server holds now.
    let before_scan = http::process_peak_rss(server.pid())?;
    let (scanned, scan_time) = scan_all(&server, &token)?;
    let scan_peak = http::process_peak_rss(server.pid())?;
    let (raw_scan, raw_scan_is) =
        crate::memory::raw_scan_command(setup.grep, &exe, &bodies.raw_path);
    let raw = run_measuring_peak_rss(&raw_scan).context("cannot run the raw-text scan")?;
    ensure!(raw.success, "the raw-text scan failed: see its error above");

    let mut rows = ingest_rows(
        lines,
        &posted,
        &sunk,
        setup.connections,
        bodies.bodies.len(),
    );
    rows.push(
        Row::new(
            "server peak memory, full scan over HTTP",
            Unit::Bytes,
            Some(scan_peak as f64),
            Some(raw.peak_rss_bytes as f64),
        )
        .baseline_is(format!("peak RSS of {raw_scan_is}"))
        .target("< 320 MiB", |value, _| Some(value < SERVER_MEMORY_TARGET))
        .note(format!(
            "the server's VmHWM, reset (clear_refs) after the ingest above, while one client reads every record with GET /v1/logs?limit={MAX_PAGE_LIMIT}&direction=forward and its cursors ({scanned} records in {:.0} ms); the server's own memory before the scan counts: {:.1} MiB when it began",
            millis(scan_time),
            before_scan as f64 / (1024.0 * 1024.0),
        )),
    );

    let agent = crate::agent::run(setup, &exe, server.addr, server.pid(), &token);
    let stopped = server.stop();
    rows.extend(agent?);
    stopped?;

    eprintln!("  POSTing the same batches in binary to a fresh tailwater server");
    rows.push(protocol_row(
        setup,
        &token,
        (BINARY, &bodies.binary),
        lines,
        &posted,
    )?);
    eprintln!("  POSTing the same batches as OTLP to a fresh tailwater server");
    rows.push(protocol_row(
        setup,
        &token,
        (OTLP, &bodies.otlp),
        lines,
        &posted,
    )?);
    eprintln!("  POSTing the same lines as Loki pushes to a fresh tailwater server");
    rows.push(protocol_row(
        setup,
        &token,
        (LOKI, &bodies.loki),
        lines,
        &posted,
    )?);
    Ok(Measured {
        rows,
        lines,
        raw_bytes: std::fs::metadata(&bodies.raw_path)?.len(),
    })
}

/// The same batches through another protocol's endpoint (OTLP, Loki) of a
/// fresh server: per core, beside native ingest of the same run.
fn protocol_row(
    setup: &Setup,
    token: &str,
    (endpoint, bodies): (Endpoint, &[(usize, Vec<u8>)]),
    lines: u64,
    native: &Posted,
) -> anyhow::Result<Row> {
    let name = match endpoint.path {
        _ if endpoint.content_type == BINARY.content_type => "binary",
        path if path == OTLP.path => "otlp",
        _ => "loki",
    };
    let data = setup.work.join(format!("server-{name}-data"));
    let mut command = Command::new(&setup.tailwater);
    command
        .arg("server")
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .env("TAILWATER_BOOTSTRAP_TOKEN", token)
        .env("TAILWATER_LOG", "warn");
    let server = Served::start(
        command,
        &setup.work.join(format!("server-{name}.log")),
        "tailwater server",
    )?;
    let posted = post_all(&server, token, (endpoint, bodies), setup.connections)?;
    // Neither answers counts: the store's says what was kept.
    let mut connection = Connection::open(server.addr, token)?;
    let status = connection.request("GET", "/v1/status", b"")?;
    let stored = serde_json::from_slice::<serde_json::Value>(&status.body)?["store"]["records"]
        .as_u64()
        .unwrap_or(0);
    server.stop()?;
    ensure!(
        stored == lines,
        "the server stored {stored} of {lines} lines sent to {}: a benchmark or server bug",
        endpoint.path
    );
    let rate =
        |time: Duration| (time.as_secs_f64() > 0.0).then(|| lines as f64 / time.as_secs_f64());
    let (figure, how) = match name {
        "binary" => (
            BINARY_ROW,
            "the same batches as binary bodies (application/x-tailwater-batch, as the agent sends them) POSTed to POST /v1/ingest",
        ),
        "otlp" => (
            "server ingest over HTTP, OTLP protobuf",
            "the same batches as ExportLogsServiceRequest protobuf (the runner's labels as service.* resource attributes, fields as attributes, uncompressed) POSTed to POST /v1/logs",
        ),
        _ => (
            "server ingest over HTTP, Loki protobuf",
            "the same batches' raw lines as Loki PushRequests (snappy protobuf, the runner's labels as the stream's; the server parses each line, as the agent does before it ships) POSTed to POST /loki/api/v1/push",
        ),
    };
    let row = Row::new(figure, Unit::LinesPerCpuSecond, rate(posted.cpu), rate(native.cpu))
        .baseline_is("native ingest per core (the first row: JSON), same batches, same run")
        .note(format!(
            "{how}, {} bodies, to a fresh server over {} connections; per core = lines ÷ the server's CPU time, as above",
            bodies.len(),
            setup.connections
        ));
    Ok(if name == "binary" {
        row.target("≥ 750,000 lines/s/core", |value, _| {
            Some(value >= 750_000.0)
        })
    } else {
        row.target("≥ 0.5× native", |_, ratio| {
            ratio.map(|ratio| ratio >= 0.5)
        })
    })
}

/// The binary ingest row's name, which [`beside_store`] looks for.
const BINARY_ROW: &str = "server ingest over HTTP, binary";
/// The JSON ingest row's name.
const JSON_ROW: &str = "server ingest over HTTP";

/// The server's ingest per core over HTTP, JSON and binary, each beside
/// the store's own ingest per core of the same run (`store_row`, the
/// in-process row): what HTTP, decoding and the pipeline cost over the
/// store. Nothing when either was not measured.
pub fn beside_store(rows: &[Row], store_row: &str) -> Vec<Row> {
    let value = |name: &str| rows.iter().find(|row| row.figure == name)?.value;
    let Some(store) = value(store_row) else {
        return Vec::new();
    };
    [(JSON_ROW, "JSON"), (BINARY_ROW, "binary")]
        .into_iter()
        .filter_map(|(name, format)| {
            let server = value(name)?;
            Some(
                Row::new(
                    &format!("server ingest over HTTP, {format}, beside the store's"),
                    Unit::LinesPerCpuSecond,
                    Some(server),
                    Some(store),
                )
                .baseline_is(format!("the store's own ingest per core ('{store_row}'), same run"))
                .note(format!(
                    "the '{name}' row's figure over the store's in-process figure: the share of the store's speed the server keeps through HTTP, decoding and the pipeline (the store's row counts its final flush and merge, the server's does not: see that row)"
                )),
            )
        })
        .collect()
}

/// The server's memory targets, ingesting and scanning: the store's own
/// full-scan bound (256 MiB) plus one memtable (64 MiB by default), which
/// a server holds beside whatever it is doing. BENCHMARKS.md says why.
const SERVER_MEMORY_TARGET: f64 = 320.0 * 1024.0 * 1024.0;

fn ingest_rows(
    lines: u64,
    posted: &Posted,
    sunk: &Posted,
    connections: usize,
    batches: usize,
) -> Vec<Row> {
    let rate =
        |time: Duration| (time.as_secs_f64() > 0.0).then(|| lines as f64 / time.as_secs_f64());
    let how = format!(
        "{batches} prebuilt batches (≤ {BATCH_LINES} lines or ~1 MiB of text from one runner, JSON) POSTed to /v1/ingest over {connections} kept-alive loopback connections (each runner's batches in order on one), durability sync (the default)"
    );
    let sink_is = "the same bodies, same client, to the sink: an axum handler in its own process that reads each body and discards it";
    vec![
        Row::new(
            JSON_ROW,
            Unit::LinesPerCpuSecond,
            rate(posted.cpu),
            rate(sunk.cpu),
        )
        .baseline_is(sink_is)
        .target("≥ 500,000 lines/s/core", |value, _| Some(value >= 500_000.0))
        .note(format!(
            "per core = lines ÷ the serving process's CPU time (user + system: its CPU-time clock, clock_getcpuclockid) from the first request to the last answer; {how}; the memtable's later flush into compressed parts is not in that window (the in-process ingest row counts its final flush and merge), so the two per-core figures are not alike"
        )),
        Row::new(
            "server ingest over HTTP, wall",
            Unit::LinesPerSecond,
            rate(posted.wall),
            rate(sunk.wall),
        )
        .baseline_is(sink_is)
        .note("wall clock from the first request to the last answer; the client shares the 2 cores"),
        Row::new(
            "server peak memory, ingest",
            Unit::Bytes,
            Some(posted.peak_rss as f64),
            Some(sunk.peak_rss as f64),
        )
        .baseline_is("the sink's peak RSS (VmHWM) after the same bodies")
        .target("< 320 MiB", |value, _| Some(value < SERVER_MEMORY_TARGET))
        .note("VmHWM of the server process after the ingest above, its start included"),
    ]
}
