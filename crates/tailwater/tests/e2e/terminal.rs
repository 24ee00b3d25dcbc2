//! The worker's surroundings with real processes: a pseudo-terminal
//! (`--tty`, resizes passed on) and OOM kills in a memory cgroup.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;
use crate::supervisor::*;

#[test]
fn under_tty_the_worker_sees_a_terminal_and_writes_line_by_line() {
    let python = python();
    let server = TestServer::start();
    let worker = r#"
import sys, time
print("isatty", sys.stdout.isatty(), sys.stderr.isatty())
print("to stderr", file=sys.stderr)
time.sleep(1)
print("a second later")
"#;
    // Without PYTHONUNBUFFERED, Python buffers a pipe until exit but writes
    // to a terminal line by line.
    let agent = start_agent(
        &server,
        "tty",
        &["--tty", "--no-unbuffered"],
        &[python, "-c", worker],
    );
    let (status, stdout, _) = wait_agent(agent);
    assert!(status.success());
    assert!(stdout.contains("isatty True True\n"), "{stdout:?}");
    let tty = records(&server, "tty");
    assert_eq!(tty[0]["fields"]["tty"], true);
    let lines: Vec<_> = tty.iter().filter(|r| r["stream"] != "system").collect();
    assert_eq!(
        lines
            .iter()
            .map(|r| (
                r["stream"].as_str().unwrap(),
                r["message"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [
            ("stdout", "isatty True True"),
            ("stdout", "to stderr"),
            ("stdout", "a second later")
        ],
        "one stream, in order, no \\r"
    );
    assert!(seconds_between(lines[0], lines[2]) >= 0.8, "line by line");

    // The same worker on pipes: the first line waits in Python's buffer
    // until the end.
    let agent = start_agent(
        &server,
        "piped",
        &["--no-unbuffered"],
        &[python, "-c", worker],
    );
    assert!(wait_agent(agent).0.success());
    let piped = records(&server, "piped");
    let first = by_message(&piped, "isatty False False");
    let last = by_message(&piped, "a second later");
    assert!(seconds_between(first, last) < 0.5, "buffered until exit");
}

/// Under `--tty`, resizing the agent's terminal resizes the worker's: the
/// agent's stdout is a terminal this test owns; after it is resized and the
/// agent gets SIGWINCH (as from a terminal emulator), the worker gets
/// SIGWINCH and sees the new size.
#[test]
fn under_tty_a_resize_of_the_agents_terminal_reaches_the_worker() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let python = python();
    let server = TestServer::start();
    let set_size = |fd: libc::c_int, cols: u16, rows: u16| {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) }, 0);
    };
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the rest may be null.
    let opened = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both were just opened and are owned by nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    set_size(std::os::fd::AsRawFd::as_raw_fd(&master), 120, 40);
    let worker = r#"
import os, signal, time
resized = []
signal.signal(signal.SIGWINCH, lambda *_: resized.append(1))
print("size %d %d" % tuple(os.get_terminal_size(1)), flush=True)
deadline = time.time() + 20
while not resized and time.time() < deadline:
    time.sleep(0.02)
print("resized" if resized else "no SIGWINCH", "size %d %d" % tuple(os.get_terminal_size(1)), flush=True)
"#;
    let agent = server
        .command(&[
            "run",
            "--app",
            "winch",
            "--runner",
            "winch-runner",
            "--tty",
            "--quiet",
            "--",
            python,
            "-c",
            worker,
        ])
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_record(
        &server,
        "winch",
        "the first size",
        has_message("size 120 40"),
    );
    set_size(std::os::fd::AsRawFd::as_raw_fd(&master), 100, 30);
    send_signal(agent.id(), libc::SIGWINCH);
    let output = agent.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let records = records(&server, "winch");
    by_message(&records, "resized size 100 30");
}

/// A memory cgroup this test may make and limit: cgroup v2 (the memory
/// controller enabled for children of the root) or v1.
fn writable_memory_cgroup(name: &str, limit_bytes: u64) -> Option<std::path::PathBuf> {
    let v2 = Path::new("/sys/fs/cgroup");
    let v2_memory = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
        .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
    let (dir, files): (_, &[&str]) = if v2_memory {
        (v2.join(name), &["memory.max", "memory.swap.max"])
    } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        (
            Path::new("/sys/fs/cgroup/memory").join(name),
            &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
        )
    } else {
        return None;
    };
    std::fs::create_dir(&dir).ok()?;
    let limit = limit_bytes.to_string();
    for (at, file) in files.iter().enumerate() {
        // The first file (the memory limit) must take; swap limits may not
        // exist.
        if std::fs::write(dir.join(file), &limit).is_err() && at == 0 {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
    }
    Some(dir)
}

#[test]
fn an_oom_kill_is_reported_with_the_exit() {
    let python = python();
    let name = format!("tailwater-e2e-oom-{}", std::process::id());
    // Never skipped: CI runs as root, where a child memory cgroup can be
    // made (cgroup v1 here, v2 elsewhere).
    let cgroup = writable_memory_cgroup(&name, 128 * 1024 * 1024).unwrap_or_else(|| {
        panic!("cannot make a memory cgroup with a limit under /sys/fs/cgroup: run the tests as root (as CI does), on a machine with a cgroup v2 memory controller or cgroup v1's memory hierarchy")
    });
    let server = TestServer::start();
    // The agent moves itself into the cgroup before it starts; the worker
    // then grows past the limit, 16 MiB at a time.
    let worker = "
import time
print('allocating', flush=True)
hog = []
while True:
    hog.append(bytearray(16 * 1024 * 1024))
    time.sleep(0.01)
";
    let status = Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$CGROUP/cgroup.procs\" && exec \"$@\"")
        .arg("sh")
        .arg(binary())
        .args([
            "run",
            "--app",
            "oom",
            "--runner",
            "oom-runner",
            "--quiet",
            "--",
            python,
            "-c",
            worker,
        ])
        .env("CGROUP", &cgroup)
        .env("TAILWATER_SERVER", server.url())
        .env("TAILWATER_TOKEN", TOKEN)
        .status()
        .unwrap();
    let _ = std::fs::remove_dir(&cgroup);
    assert_eq!(status.code(), Some(128 + 9), "the worker was SIGKILLed");

    let records = records(&server, "oom");
    let oom = events(&records, "oom_kill");
    assert!(
        !oom.is_empty(),
        "an oom_kill record: {:#?}",
        messages(&records)
    );
    assert_eq!(oom[0]["level"], "error");
    assert!(oom[0]["fields"]["oom_kills"].as_u64().unwrap() >= 1);
    assert_eq!(oom[0]["fields"]["memory_limit_bytes"], 128 * 1024 * 1024);
    let exit = records.last().unwrap();
    assert_eq!(exit["fields"]["oom_killed"], true);
    assert!(exit["message"]
        .as_str()
        .unwrap()
        .ends_with("out of memory (the kernel's OOM killer)"));
}
