//! Fault rounds: the server killed with SIGKILL at random moments while
//! several real agents ship to it. Every line each worker printed is stored
//! exactly once in the end: the agents keep what was not acknowledged in
//! their spools and send it again, and the server keeps every acknowledged
//! batch and deduplicates what is sent twice.
//!
//! Then damage: one byte flipped in the write-ahead log or in a part while
//! the server is down, and a full disk under it. Every line is stored once
//! or is exactly what the server reports lost, and the server keeps
//! answering through a full disk and takes every line once space is back.
//!
//! The moments and offsets are drawn from a seed printed at the start;
//! `TAILWATER_FAULT_SEED=N` replays one.
//!
//! This file has the kill rounds and what all of them share; `damage.rs`
//! the flipped bytes, `full_disk.rs` the full disk.

mod damage;
mod full_disk;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::*;

const AGENTS: usize = 3;
/// Lines each worker prints: chunks with a pause between them, so the
/// kills fall while agents are shipping.
const CHUNKS: usize = 40;
const CHUNK_LINES: usize = 400;

fn seed() -> u64 {
    let seed = std::env::var("TAILWATER_FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fault rounds: seed {seed} (replay with TAILWATER_FAULT_SEED={seed})");
    seed
}

/// A worker printing `CHUNKS` × `CHUNK_LINES` numbered lines over about
/// four seconds, under `tailwater run` with its own runner id.
fn start_agent(server: &TestServer, runner: &str) -> Child {
    start_agent_of(server, runner, CHUNKS)
}

/// A worker printing `chunks` × `CHUNK_LINES` numbered lines, a chunk each
/// tenth of a second.
fn start_agent_of(server: &TestServer, runner: &str, chunks: usize) -> Child {
    let script = format!(
        "import sys, time\n\
         n = 0\n\
         for chunk in range({chunks}):\n\
         \x20   for _ in range({CHUNK_LINES}):\n\
         \x20       print(f'{runner} line {{n}}')\n\
         \x20       n += 1\n\
         \x20   sys.stdout.flush()\n\
         \x20   time.sleep(0.1)\n"
    );
    server
        .command(&[
            "run",
            "--app",
            "faults",
            "--runner",
            runner,
            "--drain-timeout",
            "2m",
            "--",
            python(),
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn kill_9_rounds_under_concurrent_agents_keep_every_line_once() {
    let mut rng = StdRng::seed_from_u64(seed());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A small memtable, so flushes (and reused log files) happen between
    // the kills too.
    let flags = ["--memtable-max-bytes", "200000"];
    let mut server = TestServer::start_on_with(ANY_PORT, &data, &flags);
    let port = server.port;
    let runners: Vec<String> = (0..AGENTS).map(|n| format!("fault-{n}")).collect();
    let mut agents: Vec<Child> = runners
        .iter()
        .map(|runner| start_agent(&server, runner))
        .collect();

    // Three kills at random moments of the workers' four seconds, each
    // followed by a restart on the same port and data.
    let started = Instant::now();
    let mut moments: Vec<u64> = (0..3).map(|_| rng.random_range(200..4000)).collect();
    moments.sort_unstable();
    for moment in moments {
        let at = started + Duration::from_millis(moment);
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        eprintln!("fault rounds: kill -9 at {moment} ms");
        server.kill_9();
        // Down for a moment, as a real restart is.
        std::thread::sleep(Duration::from_millis(rng.random_range(0..500)));
        server = TestServer::start_on_with(port, &data, &flags);
    }

    for agent in &mut agents {
        let status = wait_child(agent, Duration::from_secs(180));
        assert!(status.success(), "an agent failed: {status}");
    }

    let total = CHUNKS * CHUNK_LINES;
    for runner in &runners {
        let output = server
            .command(&[
                "logs",
                "--json",
                "--runner",
                runner,
                "--stream",
                "stdout",
                "--since",
                "1h",
                "-n",
                &(2 * total).to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "logs: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let records = json_lines(&output.stdout);
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        for record in &records {
            let message = record["message"].as_str().unwrap();
            let n: usize = message
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("not a worker line: {message}"));
            *seen.entry(n).or_default() += 1;
        }
        let missing: Vec<usize> = (0..total).filter(|n| !seen.contains_key(n)).collect();
        let twice: Vec<usize> = seen
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(n, _)| *n)
            .collect();
        assert!(
            missing.is_empty() && twice.is_empty(),
            "{runner}: {} lines missing (first {:?}), {} stored more than once (first {:?})",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            twice.len(),
            twice.iter().take(5).collect::<Vec<_>>()
        );
    }
}

/// Waits for a child to exit, killing it and failing past `timeout`.
fn wait_child(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("an agent did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A worker line: its runner and number.
type Line = (String, usize);

/// How many times each worker line (`<runner> line <n>`, stdout of app
/// `faults`) is stored, and the export's closing line when the server says
/// the answer is incomplete.
fn stored_lines(server: &TestServer) -> (BTreeMap<Line, usize>, Option<Value>) {
    let output = server
        .command(&[
            "export", "--format", "ndjson", "--app", "faults", "--since", "1h",
        ])
        .output()
        .unwrap();
    let mut records = json_lines(&output.stdout);
    let incomplete = records
        .last()
        .filter(|last| last.get("incomplete").is_some())
        .cloned();
    if incomplete.is_some() {
        records.pop();
    }
    assert!(
        output.status.success() || incomplete.is_some(),
        "export: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen = BTreeMap::new();
    for record in &records {
        if record["stream"] != "stdout" {
            continue;
        }
        let line = worker_line(record["message"].as_str().unwrap())
            .unwrap_or_else(|| panic!("not a worker line: {record}"));
        *seen.entry(line).or_default() += 1;
    }
    (seen, incomplete)
}

fn worker_line(message: &str) -> Option<Line> {
    let (runner, n) = message.split_once(" line ")?;
    (runner.starts_with("fault-") && !runner.contains(' '))
        .then_some(())
        .and(n.parse().ok())
        .map(|n| (runner.to_owned(), n))
}

/// The lines each of `runners` printed (`per_runner` each) that are not
/// stored; fails if any is stored more than once.
fn missing_lines(
    stored: &BTreeMap<Line, usize>,
    runners: &[String],
    per_runner: usize,
) -> BTreeSet<Line> {
    let twice: Vec<&Line> = stored
        .iter()
        .filter(|(_, count)| **count > 1)
        .map(|(line, _)| line)
        .collect();
    assert!(
        twice.is_empty(),
        "{} lines stored more than once (first {:?})",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    runners
        .iter()
        .flat_map(|runner| (0..per_runner).map(move |n| (runner.clone(), n)))
        .filter(|line| !stored.contains_key(line))
        .collect()
}

/// A counter of the server's `/metrics` (0 when it has no samples yet).
fn metric(server: &TestServer, name: &str) -> u64 {
    let (status, text) = http("GET", server.port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .map(|value| value.trim().parse::<f64>().unwrap() as u64)
        .unwrap_or(0)
}

fn start_agents(server: &TestServer, runners: &[String], chunks: usize) -> Vec<Child> {
    runners
        .iter()
        .map(|runner| start_agent_of(server, runner, chunks))
        .collect()
}

fn wait_agents(agents: &mut [Child]) {
    for agent in agents {
        let status = wait_child(agent, Duration::from_secs(120));
        assert!(status.success(), "an agent failed: {status}");
    }
}
