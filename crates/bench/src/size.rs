//! Size: the store's bytes on disk beside the raw text and beside `zstd -3`
//! of the raw text (the `zstd` command-line tool, run as a child process).

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ingest::Ingested;
use crate::measure::{Row, Unit};

/// What to do when `zstd` is missing.
pub const INSTALL_ZSTD: &str =
    "zstd is not installed: install it (apt-get install zstd, or brew install zstd) and run again";

pub fn run(ingested: &Ingested) -> anyhow::Result<Vec<Row>> {
    let stored = ingested.stored_bytes;
    let raw = ingested.raw_bytes as f64;
    let zstd = zstd_bytes(&ingested.raw_path)?;
    if zstd.is_none() {
        eprintln!("warning: {INSTALL_ZSTD}");
    }
    let zstd_note = match zstd {
        Some(zstd) => format!(
            "zstd -3 makes the raw text {:.1}% of its size",
            100.0 * zstd as f64 / raw
        ),
        None => INSTALL_ZSTD.to_owned(),
    };
    let what = "sum of file lengths under the store directory with the store open and at rest (after the final flush and merge, once they stay the same for 3 s): parts, their indexes, log segments, the spare log and the lock file, as a running server keeps them; it keeps labels, times, levels and fields beside the text";
    Ok(vec![
        Row::new(
            "stored bytes vs zstd -3",
            Unit::Bytes,
            Some(stored as f64),
            zstd.map(|zstd| zstd as f64),
        )
        .baseline_is("zstd -3 -c of the raw text (the lines, newline-ended)")
        .target("≤ zstd -3 (ratio ≤ 1)", |_, ratio| {
            ratio.map(|ratio| ratio <= 1.0)
        })
        .note(format!("{what}; {zstd_note}")),
        Row::new(
            "stored bytes vs raw",
            Unit::Bytes,
            Some(stored as f64),
            Some(raw),
        )
        .baseline_is("the raw text (the lines, newline-ended)"),
    ])
}

/// How long the bytes under a store's directory must stay the same for it
/// to count as at rest, and how long that may take at most.
const REST: Duration = Duration::from_secs(3);
const REST_AT_MOST: Duration = Duration::from_secs(60);

/// [`dir_bytes`] of an open store's directory once it is at rest: the
/// same for [`REST`] (its background thread trims an idle log), or after
/// [`REST_AT_MOST`].
pub fn at_rest_bytes(dir: &Path) -> io::Result<u64> {
    let started = Instant::now();
    let mut bytes = dir_bytes(dir)?;
    let mut since = Instant::now();
    while since.elapsed() < REST && started.elapsed() < REST_AT_MOST {
        std::thread::sleep(Duration::from_millis(100));
        let now = dir_bytes(dir)?;
        if now != bytes {
            (bytes, since) = (now, Instant::now());
        }
    }
    Ok(bytes)
}

/// Bytes of every file under `dir` (their lengths, not allocated blocks).
pub fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if kind.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// The size of `zstd -3 -c path`, or `None` when `zstd` is not installed.
fn zstd_bytes(path: &Path) -> anyhow::Result<Option<u64>> {
    let spawned = Command::new("zstd")
        .args(["-3", "-c", "-q", "--"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).context("cannot run zstd"),
    };
    let mut total = 0u64;
    if let Some(mut out) = child.stdout.take() {
        let mut buf = vec![0; 1 << 20];
        loop {
            match out.read(&mut buf).context("cannot read zstd's output")? {
                0 => break,
                n => total += n as u64,
            }
        }
    }
    let status = child.wait().context("cannot wait for zstd")?;
    if !status.success() {
        bail!(
            "zstd -3 failed on {} ({status}): see its message above",
            path.display()
        );
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_bytes_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        assert_eq!(dir_bytes(dir.path()).unwrap(), 15);
    }
}
