//! Fault rounds: the server killed with SIGKILL at random moments while
//! several real agents ship to it. Every line each worker printed is stored
//! exactly once in the end: the agents keep what was not acknowledged in
//! their spools and send it again, and the server keeps every acknowledged
//! batch and deduplicates what is sent twice.
//!
//! The moments are drawn from a seed printed at the start;
//! `TAILWATER_FAULT_SEED=N` replays one.

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    let script = format!(
        "import sys, time\n\
         n = 0\n\
         for chunk in range({CHUNKS}):\n\
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
            "120",
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
    let port = free_port();
    // A small memtable, so flushes (and reused log files) happen between
    // the kills too.
    let flags = ["--memtable-max-bytes", "200000"];
    let mut server = TestServer::start_on_with(port, &data, &flags);
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
