//! ClickHouse as a baseline: `clickhouse.py` (beside this crate's
//! Cargo.toml) run by the venv's Python, chdb in process, one thread per
//! query. It loads the records the store ingested into a MergeTree table
//! (`ORDER BY (app, runner, ts)`, LowCardinality labels, Delta+ZSTD times,
//! ZSTD(3) messages, a `tokenbf_v1` index on messages and a bloom filter on
//! request ids), merged to rest, then answers one SQL query a line. The
//! bench times each answer from here: the pipe's round trip (tens of
//! microseconds) is in it, the load is not.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{anyhow, bail, Context};
use serde_json::Value;

/// The venv `scripts/bench-setup` makes, unless `TAILWATER_BENCH_VENV`
/// names another.
const DEFAULT_VENV: &str = "target/bench-venv";

/// A loaded ClickHouse, waiting for queries.
pub struct ClickHouse {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    /// Seconds the load and the final merge took.
    pub load_seconds: f64,
    /// Its table's bytes on disk, indexes included.
    pub stored_bytes: u64,
}

/// Where the venv's Python is, if the bench's setup made one.
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("TAILWATER_BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(DEFAULT_VENV)
        });
    let python = venv.join("bin/python");
    python.exists().then_some(python)
}

impl ClickHouse {
    /// Starts it and loads `records` (the bench's records file) into a
    /// table under `dir`. An error says how to install it when the venv is
    /// not there.
    pub fn load(records: &Path, dir: &Path) -> anyhow::Result<ClickHouse> {
        let python = python().ok_or_else(|| {
            anyhow!("no chdb venv: run scripts/bench-setup (or set TAILWATER_BENCH_VENV)")
        })?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clickhouse.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(records)
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", python.display()))?;
        let input = child.stdin.take().expect("piped");
        let output = BufReader::new(child.stdout.take().expect("piped"));
        let mut clickhouse = ClickHouse {
            child,
            input,
            output,
            load_seconds: 0.0,
            stored_bytes: 0,
        };
        let ready = clickhouse
            .answer()
            .context("chdb did not load the records")?;
        clickhouse.load_seconds = ready["load_seconds"].as_f64().unwrap_or_default();
        clickhouse.stored_bytes = ready["stored_bytes"].as_u64().unwrap_or_default();
        Ok(clickhouse)
    }

    /// Runs `sql` (one line, no SETTINGS: `max_threads = 1` is added):
    /// the first cell of its answer, or the rows it read when it answers
    /// nothing (`FORMAT Null`).
    pub fn count(&mut self, sql: &str) -> anyhow::Result<usize> {
        writeln!(self.input, "{sql}").context("chdb has stopped")?;
        self.input.flush()?;
        let answer = self.answer()?;
        match answer["count"].as_u64() {
            Some(count) => Ok(count as usize),
            None => bail!("chdb failed on {sql}: {}", answer["error"]),
        }
    }

    /// The next line of JSON it prints (chdb may print other lines).
    fn answer(&mut self) -> anyhow::Result<Value> {
        loop {
            let mut line = String::new();
            if self.output.read_line(&mut line)? == 0 {
                bail!("chdb ended without answering");
            }
            if line.starts_with('{') {
                return serde_json::from_str(&line)
                    .with_context(|| format!("chdb answered {line:?}"));
            }
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
