//! Memory: the peak resident memory of a full scan (every record, page by
//! page), measured in a child process so that none of the benchmark's own
//! memory counts, beside reading every line of the raw text (`rg`, or a
//! plain read loop when `rg` is missing).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context};
use tailwater_model::wire::MAX_PAGE_LIMIT;
use tailwater_model::{Direction, Query};
use tailwater_store::{Store, StoreOptions};

use crate::ingest::{Ingested, TENANT};
use crate::measure::{run_measuring_peak_rss, Row, Unit};
use crate::query::Grep;

const TARGET_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

pub fn run(ingested: &Ingested, grep: &Grep) -> anyhow::Result<Vec<Row>> {
    let exe = std::env::current_exe().context("cannot find this benchmark's own executable")?;
    let mut scan = Command::new(&exe);
    scan.arg("scan-child")
        .arg("--store")
        .arg(&ingested.store_dir);
    let store = run_measuring_peak_rss(&scan).context("cannot run the scan child")?;
    ensure!(
        store.success,
        "the store scan child failed: see its error above"
    );

    let (baseline, baseline_is) = raw_scan_command(grep, &exe, &ingested.raw_path);
    let raw = run_measuring_peak_rss(&baseline).context("cannot run the raw-text scan")?;
    let found = |stdout: &[u8]| String::from_utf8_lossy(stdout).trim().to_owned();
    Ok(vec![Row::new(
        "peak memory, full scan",
        Unit::Bytes,
        Some(store.peak_rss_bytes as f64),
        Some(raw.peak_rss_bytes as f64),
    )
    .baseline_is(format!("peak RSS of {baseline_is}"))
    .target("< 256 MiB", |value, _| Some(value < TARGET_BYTES))
    .note(format!(
        "peak RSS (wait4's ru_maxrss, started by a small wrapper) of a process that opens the store (default settings: its block cache keeps the blocks each page stops inside for the next) and reads every record, oldest first, in pages of {MAX_PAGE_LIMIT}; store read {} records, baseline {} lines",
        found(&store.stdout),
        found(&raw.stdout)
    ))])
}

/// The baseline scan of a raw text file: `rg` reading every line, or
/// without `rg` this binary's plain read loop; and what it is.
pub fn raw_scan_command(grep: &Grep, exe: &Path, raw_path: &Path) -> (Command, String) {
    match grep {
        Grep::Rg(version) => {
            let mut rg = Command::new("rg");
            rg.env_remove("RIPGREP_CONFIG_PATH")
                .args(["--no-mmap", "--count", "--text", "-e", "", "--"])
                .arg(raw_path);
            let what = format!("{version} --no-mmap -c '' over the raw text (every line read; --no-mmap so the file's pages are not counted)");
            (rg, what)
        }
        Grep::Memmem => {
            let mut child = Command::new(exe);
            child.arg("scan-raw-child").arg("--file").arg(raw_path);
            let what = "counting the raw text's lines in 1 MiB reads (rg is not installed: apt-get install ripgrep for the rg baseline)".to_owned();
            (child, what)
        }
    }
}

/// The child side: open the store, read every record, print how many.
pub fn scan_child(store_dir: &Path) -> anyhow::Result<()> {
    let store = Store::open(store_dir, StoreOptions::default())
        .with_context(|| format!("cannot open the store in {}", store_dir.display()))?;
    let mut query = Query {
        direction: Direction::Forward,
        limit: MAX_PAGE_LIMIT,
        ..Query::default()
    };
    let mut records = 0;
    loop {
        let page = store.query(TENANT, &query)?;
        records += page.records.len();
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    println!("{records}");
    Ok(())
}

/// The child side of the baseline without `rg`: count the lines.
pub fn scan_raw_child(path: &Path) -> anyhow::Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0; 1 << 20];
    let mut lines = 0;
    loop {
        let read = file.read(&mut buf)?;
        if read == 0 {
            break;
        }
        lines += memchr::memchr_iter(b'\n', &buf[..read]).count();
    }
    println!("{lines}");
    Ok(())
}
