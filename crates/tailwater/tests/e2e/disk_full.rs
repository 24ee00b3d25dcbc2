//! The agent against a server whose disk is full, for real (a filled
//! tmpfs): it is answered 507 with `Retry-After`, waits as long as asked
//! with its lines in the spool, and ships every line once space is freed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{free_port, messages, wait_for, TestServer};

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs ({}): run the tests as root (as CI does)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the server may still hold files there.
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem has no byte left.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write(&chunk).is_ok_and(|n| n > 0) {}
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
}

#[test]
fn the_agent_waits_as_a_full_disk_asks_and_ships_every_line_after() {
    let disk = Tmpfs::mount("16m");
    let server = TestServer::start_on(free_port(), &disk.dir.path().join("data"));
    let filler = disk.dir.path().join("filler");
    fill(&filler);

    // The agent's spool on another disk, with room.
    let spool = tempfile::tempdir().unwrap();
    let mut agent = server
        .command(&[
            "run",
            "--app",
            "fulldisk",
            "--runner",
            "fulldisk-runner",
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 50); do echo line $i; done",
        ])
        .env("TAILWATER_SPOOL", spool.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(agent.stderr.take().unwrap());
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let told = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) if line.contains("cannot store") => break line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("the agent never said the server cannot store: {seen:#?}"),
        }
    };
    let refused_at = Instant::now();
    assert!(
        told.contains("cannot store logs now (507")
            && told.contains("as it asks")
            && told.contains("the lines stay in the spool"),
        "{told}"
    );

    std::fs::remove_file(&filler).unwrap();
    let mut records = Vec::new();
    wait_for(
        "every line shipped once space is back",
        Duration::from_secs(40),
        || {
            records = server.logs(&["--app", "fulldisk"]);
            messages(&records)
                .iter()
                .filter(|m| m.starts_with("line "))
                .count()
                >= 50
        },
    );
    assert!(
        refused_at.elapsed() >= Duration::from_secs(9),
        "the agent sent again after {:?}, before the 10 s the server asked",
        refused_at.elapsed()
    );
    let shipped: Vec<&str> = messages(&records)
        .into_iter()
        .filter(|m| m.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
    assert_eq!(shipped, expected, "every line once, in order");
    assert!(agent.wait().unwrap().success());
}
