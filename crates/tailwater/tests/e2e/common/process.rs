//! Child processes: the lines they write, and the tools tests run them
//! with (`python3`, `unshare`), failing with what to install.

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

/// The lines a child writes to `stdout` (or stderr), each with when it was
/// read.
pub fn lines_of(
    stdout: impl Read + Send + 'static,
) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { return };
            if lines_tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    lines
}

/// The first of `lines` that contains `needle`, read within `timeout`; else
/// every line read before, to say what came instead.
pub fn line_containing(
    lines: &std::sync::mpsc::Receiver<(Instant, String)>,
    needle: &str,
    timeout: Duration,
) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((_, line)) if line.contains(needle) => return Ok(line),
            Ok((_, line)) => seen.push(line),
            Err(_) => return Err(seen),
        }
    }
}

/// `python3`, for tests whose workers are Python programs; fails the test
/// with what to install when it is missing.
pub fn python() -> &'static str {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "these tests run python3 workers: install it (apt-get install -y python3)"
    );
    "python3"
}

/// `unshare` with `namespaces` (such as `["--pid", "--fork"]`), for tests
/// that put the agent in a namespace of its own, as a container does; fails
/// the test with what to do when it cannot (never skipped: CI runs as root,
/// and scripts/test installs util-linux where it is missing).
pub fn unshare(namespaces: &[&str]) -> Command {
    match Command::new("unshare")
        .args(namespaces)
        .arg("true")
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "cannot make namespaces here (unshare {}): {}; run the tests as root (as CI does)",
            namespaces.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("cannot run unshare ({error}): install util-linux"),
    }
    let mut command = Command::new("unshare");
    command.args(namespaces);
    command
}
