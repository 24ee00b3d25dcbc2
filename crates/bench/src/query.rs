//! Query: latencies over the ingested store, each the median of several
//! runs, beside a plain-text way to answer the same question over the same
//! lines, run in turns with it.
//!
//! - one runner's first page (100, newest first) in a time range, beside
//!   reading that runner's own timestamped file for its last 100 lines in
//!   the range;
//! - one request's records, a rare term and a common term, beside `rg` over
//!   the raw text (or, without `rg`, an in-process `memchr::memmem` scan of
//!   the file);
//! - a message regex (an alternation, as people search for either of two
//!   failures), beside `rg` with the same regex (no baseline without `rg`).
//!
//! The store runs without its block cache here: a run would otherwise find
//! the blocks the run before it stopped inside, so every run but the first
//! would be timed warm. Each run decodes what it reads, as a new query does.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use memchr::memmem;
use tailwater_model::{Direction, Filter, Pattern, Phrase, Query};
use tailwater_store::{Store, StoreOptions};

use crate::corpus::RARE_TERM;
use crate::ingest::{Ingested, TENANT};
use crate::measure::{median, millis, Row, Unit};

/// The page size of every query, and the most matches a baseline looks for.
const PAGE: usize = 100;
/// The regex of the regex figure, unless `--regex` says otherwise: two
/// failures a worker's traceback ends with.
pub const REGEX: &str = "Connection reset by peer|CUDA error: device-side assert";
const MS_TARGET: f64 = 10.0;
const RUNNER_FILE_BASELINE: &str = "that runner's own file (each line after its RFC 3339 time, as a container runtime keeps one), read and scanned for its last 100 lines in the range";

/// How the term-search baselines search plain text.
pub enum Grep {
    /// ripgrep, with its version line.
    Rg(String),
    /// No `rg` on this machine: `memchr::memmem` over the file, in process.
    Memmem,
}

impl Grep {
    pub fn detect() -> Grep {
        match Command::new("rg").arg("--version").output() {
            Ok(output) if output.status.success() => {
                let version = String::from_utf8_lossy(&output.stdout);
                Grep::Rg(version.lines().next().unwrap_or("rg").to_owned())
            }
            _ => Grep::Memmem,
        }
    }

    pub fn describe(&self, ignore_case: bool) -> String {
        match self {
            Grep::Rg(version) => format!(
                "{version} -F{} -c -m {PAGE} over the raw text, one process per search (its start-up included)",
                if ignore_case { " -i" } else { "" }
            ),
            Grep::Memmem => format!(
                "memchr::memmem over the raw text file in 1 MiB reads, case-sensitive, stopping at {PAGE} matches (rg is not installed: apt-get install ripgrep for the rg baseline)"
            ),
        }
    }

    /// What the regex baseline is.
    pub fn describe_regex(&self) -> String {
        match self {
            Grep::Rg(version) => format!(
                "{version} -c -m {PAGE} with the same regex over the raw text, one process per search (its start-up included)"
            ),
            Grep::Memmem => "n/a: rg is not installed".to_owned(),
        }
    }

    /// The `rg` command line of a search for `needle` as written; `None`
    /// without `rg`. `mmap: false` makes rg read instead of mapping the file
    /// (whose pages would count as its memory).
    pub fn rg_command(
        &self,
        file: &Path,
        needle: &str,
        ignore_case: bool,
        mmap: bool,
    ) -> Option<Command> {
        self.rg(file, needle, true, ignore_case, mmap)
    }

    /// The `rg` command line of a search for `pattern`, as written
    /// (`fixed`) or as a regex; `None` without `rg`.
    fn rg(
        &self,
        file: &Path,
        pattern: &str,
        fixed: bool,
        ignore_case: bool,
        mmap: bool,
    ) -> Option<Command> {
        let Grep::Rg(_) = self else { return None };
        let mut command = Command::new("rg");
        command
            .env_remove("RIPGREP_CONFIG_PATH")
            .arg(if mmap { "--mmap" } else { "--no-mmap" })
            .arg(if fixed {
                "--fixed-strings"
            } else {
                "--no-fixed-strings"
            })
            .args(["--count", "--text", "--max-count"])
            .arg(PAGE.to_string())
            .arg(if ignore_case {
                "--ignore-case"
            } else {
                "--case-sensitive"
            })
            .arg("--regexp")
            .arg(pattern)
            .arg(file);
        Some(command)
    }

    /// Matching lines (rg) or matches (memmem) of `needle`, at most [`PAGE`].
    pub fn search(&self, file: &Path, needle: &str, ignore_case: bool) -> anyhow::Result<usize> {
        // rg's own choice: a single file is mapped.
        match self.rg_command(file, needle, ignore_case, true) {
            Some(command) => rg_count(command),
            None => memmem_count(file, needle.as_bytes(), PAGE)
                .with_context(|| format!("cannot scan {}", file.display())),
        }
    }

    /// Lines matching the regex `pattern`, at most [`PAGE`]; `None` without
    /// `rg`.
    pub fn search_regex(&self, file: &Path, pattern: &str) -> Option<anyhow::Result<usize>> {
        self.rg(file, pattern, false, false, true).map(rg_count)
    }
}

/// Runs an `rg --count` command: its count, 0 when nothing matched.
pub(crate) fn rg_count(mut command: Command) -> anyhow::Result<usize> {
    let output = command.output().context("cannot run rg")?;
    match output.status.code() {
        Some(0) => String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .context("rg printed something other than a count: check that rg on PATH is ripgrep"),
        Some(1) => Ok(0),
        _ => bail!(
            "rg failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Occurrences of `needle` in the file, up to `max`, reading 1 MiB at a time.
pub fn memmem_count(path: &Path, needle: &[u8], max: usize) -> io::Result<usize> {
    let finder = memmem::Finder::new(needle);
    let keep = needle.len().saturating_sub(1);
    let mut file = File::open(path)?;
    let mut buf = vec![0; (1 << 20) + keep];
    let (mut kept, mut count) = (0, 0);
    while count < max {
        let read = file.read(&mut buf[kept..])?;
        if read == 0 {
            break;
        }
        let filled = kept + read;
        // A match lies wholly in this buffer; the kept tail is too short to
        // hold one on its own, so none is counted twice.
        count += finder.find_iter(&buf[..filled]).take(max - count).count();
        kept = keep.min(filled);
        buf.copy_within(filled - kept..filled, 0);
    }
    Ok(count)
}

/// The last `limit` lines of a runner's file whose time prefix is in
/// `[since, until)`: what `docker logs --since --until | tail` does.
fn runner_file_page(path: &Path, since: &str, until: &str, limit: usize) -> io::Result<usize> {
    let text = fs::read(path)?;
    let (since, until) = (since.as_bytes(), until.as_bytes());
    let mut page: VecDeque<&[u8]> = VecDeque::with_capacity(limit);
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &text) {
        let line = &text[start..end];
        start = end + 1;
        let Some(time) = line.get(..since.len()) else {
            continue;
        };
        if time >= since && time < until {
            if page.len() == limit {
                page.pop_front();
            }
            page.push_back(line);
        }
    }
    Ok(page.len())
}

pub fn run(
    ingested: &Ingested,
    grep: &Grep,
    runs: usize,
    common_term: &str,
    regex: &str,
) -> anyhow::Result<Vec<Row>> {
    let opened = Instant::now();
    let options = StoreOptions {
        block_cache_bytes: 0,
        ..StoreOptions::default()
    };
    let store = Store::open(&ingested.store_dir, options).with_context(|| {
        format!(
            "cannot reopen the store in {}",
            ingested.store_dir.display()
        )
    })?;
    eprintln!(
        "  reopened the store in {:.2} s",
        opened.elapsed().as_secs_f64()
    );
    let store = &store;
    let probe = &ingested.probe;
    let raw = &ingested.raw_path;
    let page = |filter: Filter| {
        let query = Query {
            filter,
            direction: Direction::Backward,
            limit: PAGE,
            cursor: None,
        };
        move || -> anyhow::Result<usize> { Ok(store.query(TENANT, &query)?.records.len()) }
    };
    let mut rows = Vec::new();

    let (since, until) = (format!("{:.9}", probe.since), format!("{:.9}", probe.until));
    let runner = page(Filter {
        runner: Some(probe.runner.clone().into()),
        since: Some(probe.since),
        until: Some(probe.until),
        ..Filter::default()
    });
    let file = || Ok(runner_file_page(&probe.runner_file, &since, &until, PAGE)?);
    rows.push(
        compare(runs, runner, file)?
            .row("runner, first page in a time range", RUNNER_FILE_BASELINE)
            .target("< 10 ms", |value, _| Some(value < MS_TARGET)),
    );

    let request = match &probe.request {
        Some(id) => {
            let store = page(Filter {
                request_id: Some(id.clone()),
                ..Filter::default()
            });
            let mut row = compare(runs, store, || grep.search(raw, id, false))?
                .row("one request", &grep.describe(false));
            row.note.push_str(" (store: records with that request_id; baseline: lines with the id anywhere, plain-text mentions too)");
            row
        }
        None => Row::new("one request", Unit::Milliseconds, None, None)
            .note("n/a: the first runner logged no request id after the corpus's midpoint"),
    };
    rows.push(request.target("< 10 ms", |value, _| Some(value < MS_TARGET)));

    let faster_than = match grep {
        Grep::Rg(_) => "faster than rg (ratio < 1)",
        Grep::Memmem => "faster than rg (here: memmem, ratio < 1)",
    };
    for (figure, term, target) in [
        ("rare term", RARE_TERM, Some(faster_than)),
        ("common term", common_term, None),
    ] {
        let store = page(Filter {
            text: Some(Phrase::new(term)),
            ..Filter::default()
        });
        let row = compare(runs, store, || grep.search(raw, term, true))?
            .row(&format!("{figure} '{term}'"), &grep.describe(true));
        rows.push(match target {
            Some(target) => row.target(target, |_, ratio| ratio.map(|ratio| ratio < 1.0)),
            None => row,
        });
    }

    let pattern = Pattern::search(regex)
        .map_err(|error| anyhow::anyhow!("invalid --regex '{regex}': {error}"))?;
    let store_regex = page(Filter {
        regex: Some(pattern),
        ..Filter::default()
    });
    let figure = format!("regex '{regex}'");
    rows.push(match grep.search_regex(raw, regex) {
        Some(_) => compare(runs, store_regex, || {
            grep.search_regex(raw, regex).expect("rg was found")
        })?
        .row(&figure, &grep.describe_regex()),
        None => Row::new(&figure, Unit::Milliseconds, None, None)
            .baseline_is("—")
            .note("n/a: rg is not installed (apt-get install ripgrep), and this figure's baseline is rg's regex search"),
    });
    Ok(rows)
}

/// Both ways of answering, timed in turns after one untimed warm-up each.
pub(crate) fn compare(
    runs: usize,
    mut store: impl FnMut() -> anyhow::Result<usize>,
    mut baseline: impl FnMut() -> anyhow::Result<usize>,
) -> anyhow::Result<Compared> {
    let found = (store()?, baseline()?);
    let (mut store_times, mut baseline_times) = (Vec::new(), Vec::new());
    let timed = |work: &mut dyn FnMut() -> anyhow::Result<usize>| {
        let start = Instant::now();
        work().map(|_| start.elapsed())
    };
    for run in 0..runs {
        if run.is_multiple_of(2) {
            store_times.push(timed(&mut store)?);
            baseline_times.push(timed(&mut baseline)?);
        } else {
            baseline_times.push(timed(&mut baseline)?);
            store_times.push(timed(&mut store)?);
        }
    }
    Ok(Compared {
        store: median(store_times),
        baseline: median(baseline_times),
        found,
        runs,
    })
}

pub(crate) struct Compared {
    store: Duration,
    baseline: Duration,
    found: (usize, usize),
    runs: usize,
}

impl Compared {
    pub(crate) fn row(&self, figure: &str, baseline_is: &str) -> Row {
        Row::new(
            figure,
            Unit::Milliseconds,
            Some(millis(self.store)),
            Some(millis(self.baseline)),
        )
        .baseline_is(baseline_is)
        .note(format!(
            "median of {} runs, the store without its block cache; store found {}, baseline {}",
            self.runs, self.found.0, self.found.1
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn memmem_counts_across_reads_and_stops_at_max() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let mut text = vec![b'x'; (1 << 20) - 3];
        text.extend_from_slice(b"needle and another needle\n");
        file.write_all(&text).unwrap();
        assert_eq!(memmem_count(file.path(), b"needle", 100).unwrap(), 2);
        assert_eq!(memmem_count(file.path(), b"needle", 1).unwrap(), 1);
        assert_eq!(memmem_count(file.path(), b"absent", 100).unwrap(), 0);
    }

    #[test]
    fn runner_file_page_keeps_the_last_lines_in_range() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for second in 0..9 {
            writeln!(file, "2026-11-20T00:00:0{second}.000000000Z line {second}").unwrap();
        }
        let (since, until) = (
            "2026-11-20T00:00:02.000000000Z",
            "2026-11-20T00:00:07.000000000Z",
        );
        assert_eq!(runner_file_page(file.path(), since, until, 100).unwrap(), 5);
        assert_eq!(runner_file_page(file.path(), since, until, 3).unwrap(), 3);
    }
}
