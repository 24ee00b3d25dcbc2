//! The agent figures, through the `tailwater run` command line only (its
//! insides are free to change), against a running `tailwater server`.
//!
//! - Overhead: a worker printing the corpus as fast as it can
//!   (`tailwater-bench corpus`), its wall time under `tailwater run` (until
//!   the agent recorded its exit: every line read and spooled; the exit
//!   record's time is read back from the server) beside the same worker
//!   piped into `cat > /dev/null` (the pipe built here, without a shell).
//!   A second row runs until the agent exits (every line shipped and
//!   acknowledged). Runs alternate; the median of each side is shown.
//! - Memory: the agent process's peak RSS (`VmHWM`, polled every 5 ms while
//!   it runs; the worker is a separate process and not counted), beside
//!   `cat`'s in the baseline.
//! - Live tail: a worker writing one line a millisecond
//!   (`tailwater-bench emit-timed`), each carrying its wall-clock write time
//!   (`SystemTime`, the same clock in every process on the machine), read
//!   back by an SSE client on `GET /v1/logs/tail`; beside the same lines
//!   read straight from the worker's pipe.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, ensure, Context};
use serde::Deserialize;
use tailwater_model::wire::LogsParams;

use crate::http::{self, Connection};
use crate::measure::{median, millis, Row, Unit};
use crate::server::Setup;

const OVERHEAD_TARGET: f64 = 1.10;
const AGENT_RSS_TARGET: f64 = 32.0 * 1024.0 * 1024.0;
const TAIL_P99_TARGET_MS: f64 = 100.0;
/// Lines a second the live-tail worker writes.
const TAIL_RATE: u64 = 1000;
/// What each live-tail line starts with.
const PROBE: &str = "tail-probe ";

pub fn run(
    setup: &Setup,
    exe: &Path,
    addr: SocketAddr,
    server_pid: u32,
    token: &str,
) -> anyhow::Result<Vec<Row>> {
    // On a fleet the server runs on other machines; here it shares the 2
    // cores with the worker and the agent. While the agent's overhead on
    // its worker is measured, the server runs at the lowest CPU priority,
    // standing in for a server elsewhere: what it ingests still waits for
    // it, but it no longer takes the worker's core.
    set_niceness(server_pid, SERVER_NICENESS_DURING_OVERHEAD)?;
    let overhead = overhead(setup, exe, addr, token);
    set_niceness(server_pid, 0)?;
    let mut rows = overhead?;
    rows.extend(tail_latency(setup, exe, addr, token)?);
    Ok(rows)
}

/// The server's niceness while the agent's overhead is measured.
const SERVER_NICENESS_DURING_OVERHEAD: i32 = 19;

/// Sets the niceness of every thread of process `pid` (Linux keeps it per
/// thread; new threads take their creator's).
fn set_niceness(pid: u32, niceness: i32) -> anyhow::Result<()> {
    let tasks = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))? {
        let Some(tid) = task?
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::id_t>().ok())
        else {
            continue;
        };
        // SAFETY: setpriority only reads its arguments.
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, niceness) };
        ensure!(
            result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH),
            "cannot set the server's niceness to {niceness}: {} (raising it back needs root or CAP_SYS_NICE)",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The `tailwater run` command line for `worker`.
fn agent_command(
    setup: &Setup,
    addr: SocketAddr,
    token: &str,
    runner: &str,
    worker: &[&str],
) -> Command {
    let mut command = Command::new(&setup.tailwater);
    command
        .arg("run")
        .arg("--server")
        .arg(format!("http://{addr}"))
        .args(["--token", token, "--app", "bench-agent", "--runner", runner])
        .arg("--quiet")
        .arg("--")
        .args(worker);
    command
}

/// The highest `VmHWM` seen of each of `pids`, polled every 5 ms until
/// `stop` is set.
fn poll_peaks(pids: &[u32], stop: &AtomicBool) -> Vec<u64> {
    let mut peaks = vec![0; pids.len()];
    loop {
        let last = stop.load(Ordering::Acquire);
        for (pid, peak) in pids.iter().zip(&mut peaks) {
            if let Ok(now) = http::process_peak_rss(*pid) {
                *peak = (*peak).max(now);
            }
        }
        if last {
            return peaks;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for every child while polling their peak memory; whether all
/// exited with 0, and each one's peak.
fn wait_polling(children: &mut [Child]) -> anyhow::Result<(bool, Vec<u64>)> {
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let poller = scope.spawn(|| poll_peaks(&pids, &stop));
        // A child's /proc entry stays until it is reaped, but its memory
        // figures go at its exit: poll until then, reap after.
        let mut success = true;
        let mut exited = vec![false; children.len()];
        while exited.iter().any(|done| !done) {
            for (child, done) in children.iter_mut().zip(&mut exited) {
                if !*done {
                    if let Some(status) = child.try_wait()? {
                        success &= status.success();
                        *done = true;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Release);
        let peaks = poller
            .join()
            .map_err(|_| anyhow!("the memory poller panicked"))?;
        Ok((success, peaks))
    })
}

/// When the agent recorded the worker's exit (every line it wrote read and
/// spooled): the `exit` record of `runner`, read back from the server.
fn exit_recorded(addr: SocketAddr, token: &str, runner: &str) -> anyhow::Result<i128> {
    let mut connection = Connection::open(addr, token)?;
    let params = LogsParams {
        runner: Some(runner.to_owned()),
        stream: Some("system".to_owned()),
        direction: Some("backward".to_owned()),
        limit: Some("20".to_owned()),
        ..LogsParams::default()
    };
    let path = format!("/v1/logs?{}", params.to_query_string());
    let response = connection.request("GET", &path, b"")?;
    ensure!(
        response.status == 200,
        "GET {path} answered {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    let page: tailwater_model::wire::LogsPage = serde_json::from_slice(&response.body)?;
    let exit = page
        .records
        .iter()
        .find(|record| record.fields.get("event").and_then(|e| e.as_str()) == Some("exit"))
        .ok_or_else(|| anyhow!("no exit record of runner {runner} on the server"))?;
    Ok(exit.ts.as_nanosecond())
}

struct Overhead {
    /// Start of `tailwater run` to the worker's exit recorded.
    worker_wall: Vec<Duration>,
    /// Start of `tailwater run` to its own exit, every line shipped.
    agent_wall: Vec<Duration>,
    agent_peak: u64,
    pipe_wall: Vec<Duration>,
    cat_peak: u64,
    worker_peak: u64,
}

fn overhead(setup: &Setup, exe: &Path, addr: SocketAddr, token: &str) -> anyhow::Result<Vec<Row>> {
    let exe_text = exe
        .to_str()
        .ok_or_else(|| anyhow!("this benchmark's path is not UTF-8"))?;
    let (lines, seed) = (setup.agent_lines.to_string(), setup.seed.to_string());
    let worker = [exe_text, "corpus", "--lines", &lines, "--seed", &seed];
    let mut measured = Overhead {
        worker_wall: Vec::new(),
        agent_wall: Vec::new(),
        agent_peak: 0,
        pipe_wall: Vec::new(),
        cat_peak: 0,
        worker_peak: 0,
    };
    for run in 0..setup.agent_runs {
        eprintln!(
            "  agent overhead, run {} of {}: {lines} lines",
            run + 1,
            setup.agent_runs
        );
        // Alternate which goes first, so both see the same noise.
        let order = if run % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for agent in order {
            if agent {
                let runner = format!("agent-overhead-{run}");
                let log = setup.work.join(format!("{runner}.log"));
                let mut command = agent_command(setup, addr, token, &runner, &worker);
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(File::create(&log)?);
                let started_ns = now_ns();
                let start = Instant::now();
                let child = command.spawn().context("cannot start tailwater run")?;
                let (success, peaks) = wait_polling(&mut [child])?;
                measured.agent_wall.push(start.elapsed());
                ensure!(success, "tailwater run failed; its log: {}", log.display());
                let exited_ns = exit_recorded(addr, token, &runner)?;
                measured
                    .worker_wall
                    .push(Duration::from_nanos((exited_ns - started_ns).max(0) as u64));
                measured.agent_peak = measured.agent_peak.max(peaks[0]);
            } else {
                let start = Instant::now();
                let mut producer = Command::new(exe)
                    .args(&worker[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .context("cannot start the worker")?;
                let pipe = producer.stdout.take().expect("stdout is piped");
                let cat = Command::new("cat")
                    .stdin(pipe)
                    .stdout(Stdio::null())
                    .spawn()
                    .context("cannot start cat")?;
                let (success, peaks) = wait_polling(&mut [producer, cat])?;
                measured.pipe_wall.push(start.elapsed());
                ensure!(success, "the worker | cat baseline failed");
                measured.worker_peak = measured.worker_peak.max(peaks[0]);
                measured.cat_peak = measured.cat_peak.max(peaks[1]);
            }
        }
    }
    let runs = setup.agent_runs;
    let worker_wall = millis(median(measured.worker_wall));
    let agent_wall = millis(median(measured.agent_wall));
    let pipe_wall = millis(median(measured.pipe_wall));
    let baseline = format!(
        "the same worker piped into cat > /dev/null (worker | cat, the pipe made here without a shell) until cat exits; median of {runs} runs, taking turns with the agent"
    );
    Ok(vec![
        Row::new(
            "agent overhead, wall",
            Unit::Milliseconds,
            Some(worker_wall),
            Some(pipe_wall),
        )
        .baseline_is(baseline.clone())
        .target("≤ 1.10× (ratio)", |_, ratio| ratio.map(|r| r <= OVERHEAD_TARGET))
        .note(format!(
            "a worker printing {lines} corpus lines as fast as it can (tailwater-bench corpus) under tailwater run --quiet: from starting the agent until it recorded the worker's exit (every line read and in the spool; the time of the exit record, read back from the server); median of {runs} runs; the server ingesting meanwhile shares the 2 cores, at niceness 19 (standing in for a server on other machines)"
        )),
        Row::new(
            "agent, until all shipped",
            Unit::Milliseconds,
            Some(agent_wall),
            Some(pipe_wall),
        )
        .baseline_is(baseline)
        .note(format!(
            "the same runs until the agent exits: every line parsed, shipped and acknowledged by the server, which ingests them on the same 2 cores at niceness 19; median of {runs} runs"
        )),
        Row::new(
            "agent peak memory",
            Unit::Bytes,
            Some(measured.agent_peak as f64),
            Some(measured.cat_peak as f64),
        )
        .baseline_is(format!(
            "cat's peak RSS in the baseline (the worker's own: {:.1} MiB)",
            measured.worker_peak as f64 / 1024.0 / 1024.0
        ))
        .target("≤ 32 MiB", |value, _| Some(value <= AGENT_RSS_TARGET))
        .note(format!(
            "the tailwater run process's VmHWM (polled every 5 ms until it exits; the worker is a separate process, not counted), the highest of {runs} runs"
        )),
    ])
}

/// Nanoseconds since the Unix epoch, by the wall clock every process on
/// the machine shares.
fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as i128)
}

/// The latency of one probe line read at `now`, if it is one.
fn probe_latency(line: &str, now: i128) -> Option<i128> {
    let rest = line.trim_end().strip_prefix(PROBE)?;
    let written: i128 = rest.split_whitespace().nth(1)?.parse().ok()?;
    Some((now - written).max(0))
}

/// `p` (0–100) of sorted latencies in milliseconds, nearest rank.
fn percentile(sorted: &[i128], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let at = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[at] as f64 / 1e6)
}

fn tail_latency(
    setup: &Setup,
    exe: &Path,
    addr: SocketAddr,
    token: &str,
) -> anyhow::Result<Vec<Row>> {
    let count = TAIL_RATE * setup.tail_seconds;
    let exe_text = exe
        .to_str()
        .ok_or_else(|| anyhow!("this benchmark's path is not UTF-8"))?;
    let (rate, count_text) = (TAIL_RATE.to_string(), count.to_string());
    let worker = [
        exe_text,
        "emit-timed",
        "--rate",
        &rate,
        "--count",
        &count_text,
    ];

    eprintln!("  live tail latency: {count} lines at {TAIL_RATE}/s, through a pipe");
    let mut producer = Command::new(exe)
        .args(&worker[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the live-tail worker")?;
    let mut piped = Vec::with_capacity(count as usize);
    let mut reader = BufReader::new(producer.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        if let Some(latency) = probe_latency(&line, now_ns()) {
            piped.push(latency);
        }
        line.clear();
    }
    ensure!(producer.wait()?.success(), "the live-tail worker failed");

    eprintln!("  live tail latency: the same through tailwater run, server and SSE");
    let runner = "bench-tail";
    let connection = Connection::open(addr, token)?;
    let socket = connection.socket()?;
    let mut events = connection.events(&format!("/v1/logs/tail?runner={runner}"))?;
    let (done_tx, done_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || -> anyhow::Result<Vec<i128>> {
        #[derive(Deserialize)]
        struct Record {
            message: String,
        }
        let mut latencies = Vec::with_capacity(count as usize);
        let mut line = String::new();
        while (latencies.len() as u64) < count {
            line.clear();
            // The socket is shut down when the wait is over: an error or the
            // end then, with what was received.
            if !matches!(events.read_line(&mut line), Ok(n) if n > 0) {
                break;
            }
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let now = now_ns();
            if let Ok(record) = serde_json::from_str::<Record>(data.trim()) {
                if let Some(latency) = probe_latency(&record.message, now) {
                    latencies.push(latency);
                }
            }
        }
        let _ = done_tx.send(());
        Ok(latencies)
    });
    let log = setup.work.join("agent-tail.log");
    let mut agent = agent_command(setup, addr, token, runner, &worker);
    let status = agent
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log)?)
        .status()
        .context("cannot start tailwater run")?;
    // Lines still on their way get 5 s more.
    let _ = done_rx.recv_timeout(Duration::from_secs(5));
    http::shut(&socket);
    let mut tailed = reader
        .join()
        .map_err(|_| anyhow!("the live-tail reader panicked"))??;
    ensure!(
        status.success(),
        "tailwater run failed; its log: {}",
        log.display()
    );

    piped.sort_unstable();
    tailed.sort_unstable();
    let how = format!(
        "a worker writes {count} lines at {TAIL_RATE}/s, one write each, each carrying its write time (SystemTime, ns); latency = receipt time - write time"
    );
    let pipe_is = |p: &str| {
        format!("the {p} of the same lines read straight from the worker's pipe by this process ({} of {count} read)", piped.len())
    };
    let tail_how = format!(
        "{how}; worker under tailwater run --quiet, read by an SSE client on GET /v1/logs/tail?runner={runner}, received {} of {count}",
        tailed.len()
    );
    Ok(vec![
        Row::new(
            "live tail latency p50",
            Unit::Milliseconds,
            percentile(&tailed, 50.0),
            percentile(&piped, 50.0),
        )
        .baseline_is(pipe_is("p50"))
        .note(tail_how.clone()),
        Row::new(
            "live tail latency p99",
            Unit::Milliseconds,
            percentile(&tailed, 99.0),
            percentile(&piped, 99.0),
        )
        .baseline_is(pipe_is("p99"))
        .target("< 100 ms", |value, _| Some(value < TAIL_P99_TARGET_MS))
        .note(if tailed.len() as u64 == count {
            tail_how
        } else {
            format!("{tail_how}; lines not received are not counted")
        }),
    ])
}

/// The live-tail worker (`tailwater-bench emit-timed`): `count` lines at
/// `rate` a second, each `tail-probe <n> <write time in ns>`, one write each.
pub fn emit_timed(rate: u64, count: u64) -> anyhow::Result<()> {
    let start = Instant::now();
    let every = Duration::from_secs(1) / rate.max(1) as u32;
    let mut out = std::io::stdout().lock();
    for n in 0..count {
        let due = start + every * n as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        // Stdout is line-buffered: one write per line.
        writeln!(out, "{PROBE}{n} {}", now_ns())?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_and_percentiles() {
        assert_eq!(probe_latency("tail-probe 3 1000\n", 4000), Some(3000));
        assert_eq!(probe_latency("other 3 1000", 4000), None);
        let sorted: Vec<i128> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(50.0));
        assert_eq!(percentile(&sorted, 99.0), Some(99.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
