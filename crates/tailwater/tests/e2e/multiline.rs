//! Multi-line events with real programs: a Python traceback (chained), a
//! JVM stack trace with its cause, a Go panic with its goroutines and a
//! Rust panic with its backtrace, each run under `tailwater run` against a
//! real server. Each program is first run alone, so the test knows the
//! exact text it prints; under the agent, each trace must be one record of
//! that whole text, at error level on its stream, and the ordinary lines
//! around it records of their own.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `name` on the PATH, or the test fails saying what to install
/// (scripts/test installs it on CI).
fn tool(name: &str, package: &str) -> &'static str {
    let found = Command::new(name)
        .arg(if name == "go" { "version" } else { "--version" })
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "this test runs `{name}`: install it (apt-get install -y {package})"
    );
    name.to_owned().leak()
}

/// Runs `command` (in `dir`, with `env`) alone, then under `tailwater run`
/// as `app`; returns what it printed on stderr alone and the records of the
/// worker's output the server has, oldest first.
fn run_both(
    server: &TestServer,
    app: &str,
    dir: &Path,
    env: &[(&str, &str)],
    command: &[&str],
) -> (String, Vec<Value>) {
    let alone = Command::new(command[0])
        .args(&command[1..])
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let under: Output = server
        .command(&[&["run", "--app", app, "--runner", app, "--"], command].concat())
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(
        under.status.code(),
        alone.status.code(),
        "the agent exits as the program did: {}",
        String::from_utf8_lossy(&under.stderr)
    );
    let mut records: Vec<Value> = server
        .logs(&["--app", app])
        .into_iter()
        .filter(|r| r["stream"] != "system")
        .collect();
    // Capture order: stdout and stderr are two pipes, read as they come,
    // so only each stream's own order is the program's.
    records.sort_by_key(|r| r["seq"].as_u64());
    (String::from_utf8(alone.stderr).unwrap(), records)
}

/// The records of `stream`.
fn of(records: &[Value], stream: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["stream"] == stream)
        .cloned()
        .collect()
}

/// `(stream, level, message)` of each record.
fn shapes(records: &[Value]) -> Vec<(&str, &str, &str)> {
    records
        .iter()
        .map(|r| {
            (
                r["stream"].as_str().unwrap(),
                r["level"].as_str().unwrap(),
                r["message"].as_str().unwrap(),
            )
        })
        .collect()
}

/// The stderr records' messages are, line for line, what the program wrote
/// to stderr alone: nothing lost, nothing added, nothing reordered (a Rust
/// thread's id, which differs between runs, left out).
fn assert_whole(records: &[Value], stderr: &str) {
    let shipped: Vec<&str> = shapes(records)
        .into_iter()
        .filter(|(stream, ..)| *stream == "stderr")
        .map(|(.., message)| message)
        .collect();
    assert_eq!(
        without_thread_ids(&shipped.join("\n")),
        without_thread_ids(stderr.trim_end_matches('\n'))
    );
}

/// `thread 'main' (4711) panicked` as `thread 'main' panicked`.
fn without_thread_ids(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once("' (") {
            Some((name, rest)) if line.starts_with("thread '") => match rest.split_once(") ") {
                Some((id, rest)) if id.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("{name}' {rest}")
                }
                _ => line.to_owned(),
            },
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The records with something to say: a blank line a program wrote alone
/// (Rust writes one before each panic) is a record too, but not counted.
fn said(records: &[Value]) -> Vec<(&str, &str, &str)> {
    shapes(records)
        .into_iter()
        .filter(|(.., message)| !message.is_empty())
        .collect()
}

/// The message of the one error record on stderr that starts with `start`
/// (a Rust thread's id left out).
fn event<'a>(records: &'a [Value], start: &str, kind: &str) -> &'a str {
    let found: Vec<&Value> = records
        .iter()
        .filter(|r| without_thread_ids(r["message"].as_str().unwrap()).starts_with(start))
        .collect();
    let [record] = found[..] else {
        panic!("one record starting {start:?}: {:#?}", shapes(records))
    };
    assert_eq!(
        (record["stream"].as_str(), record["level"].as_str()),
        (Some("stderr"), Some("error"))
    );
    assert_eq!(record["fields"]["multiline"], kind);
    record["message"].as_str().unwrap()
}

const PYTHON: &str = r#"
import sys, traceback
print("about to divide", flush=True)
try:
    1 / 0
except ZeroDivisionError:
    traceback.print_exc()
print("still here", file=sys.stderr, flush=True)

def load(config):
    try:
        return config["model"]
    except KeyError as error:
        raise ValueError("no model configured") from error

def start():
    try:
        load({})
    except ValueError:
        {}["fallback"]

start()
"#;

#[test]
fn python_tracebacks_chained_too_are_one_record_each() {
    let python = python();
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("worker.py"), PYTHON).unwrap();
    let (stderr, records) = run_both(&server, "py", dir.path(), &[], &[python, "worker.py"]);
    assert_whole(&records, &stderr);
    assert_eq!(messages(&of(&records, "stdout")), ["about to divide"]);
    let records = of(&records, "stderr");
    let shapes = shapes(&records);
    assert_eq!(shapes.len(), 3, "{shapes:#?}");
    assert_eq!(shapes[1], ("stderr", "info", "still here"));
    let caught = shapes[0];
    assert_eq!((caught.0, caught.1), ("stderr", "error"));
    assert!(caught.2.starts_with("Traceback (most recent call last):\n"));
    assert!(caught.2.ends_with("ZeroDivisionError: division by zero"));
    assert_eq!(records[0]["fields"]["multiline"], "python");
    let chained = records[2]["message"].as_str().unwrap();
    for part in [
        "KeyError: 'model'",
        "The above exception was the direct cause of the following exception:",
        "ValueError: no model configured",
        "During handling of the above exception, another exception occurred:",
        "KeyError: 'fallback'",
    ] {
        assert!(chained.contains(part), "{part:?} in {chained}");
    }
    assert_eq!(records[2]["level"], "error");

    // Off: a record per line, as before.
    let output = server
        .command(&[
            "run",
            "--app",
            "py-off",
            "--multiline",
            "off",
            "--",
            python,
            "worker.py",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let lines = server.logs(&["--app", "py-off", "--stream", "stderr"]);
    assert_eq!(lines.len(), stderr.lines().count());
}

const JAVA: &str = r#"
public class Main {
    static int divide(int a, int b) {
        return a / b;
    }

    static void wrap() {
        try {
            divide(1, 0);
        } catch (ArithmeticException e) {
            throw new IllegalStateException("could not divide", e);
        }
    }

    public static void main(String[] args) {
        System.out.println("starting");
        System.err.println("warming up");
        try {
            wrap();
        } catch (IllegalStateException e) {
            e.printStackTrace();
        }
        System.err.println("still here");
        wrap();
    }
}
"#;

#[test]
fn a_jvm_stack_trace_with_its_cause_is_one_record() {
    let java = tool("java", "default-jdk-headless");
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Main.java"), JAVA).unwrap();
    let (stderr, records) = run_both(&server, "jvm", dir.path(), &[], &[java, "Main.java"]);
    assert_whole(&records, &stderr);
    assert_eq!(messages(&of(&records, "stdout")), ["starting"]);
    let stderr_records = of(&records, "stderr");
    let shapes = shapes(&stderr_records);
    assert_eq!(shapes.len(), 4, "{shapes:#?}");
    assert_eq!(shapes[0], ("stderr", "info", "warming up"));
    assert_eq!(shapes[2], ("stderr", "info", "still here"));
    let printed = event(&records, "java.lang.IllegalStateException", "jvm");
    let uncaught = event(&records, "Exception in thread \"main\"", "jvm");
    for trace in [printed, uncaught] {
        assert!(trace.contains("\tat Main.divide(Main.java:4)"), "{trace}");
        assert!(trace.contains("Caused by: java.lang.ArithmeticException: / by zero"));
    }
    assert!(printed.contains("\t... "), "{printed}");
}

const GO: &str = r#"package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	fmt.Println("starting")
	fmt.Fprintln(os.Stderr, "warming up")
	go func() { time.Sleep(time.Hour) }()
	time.Sleep(20 * time.Millisecond)
	var weights map[string]int
	weights["layer0"] = 1
}
"#;

#[test]
fn a_go_panic_with_its_goroutines_is_one_record_and_exit_status_is_not_in_it() {
    let go = tool("go", "golang-go");
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.go"), GO).unwrap();
    let cache = dir.path().join("gocache");
    let path = dir.path().join("gopath");
    let env = [
        ("GOCACHE", cache.to_str().unwrap()),
        ("GOPATH", path.to_str().unwrap()),
        ("GOTRACEBACK", "all"),
        ("GOFLAGS", ""),
        ("GO111MODULE", "off"),
    ];
    let (stderr, records) = run_both(&server, "go", dir.path(), &env, &[go, "run", "main.go"]);
    assert_eq!(messages(&of(&records, "stdout")), ["starting"]);
    let stderr_records = of(&records, "stderr");
    let shapes = shapes(&stderr_records);
    assert_eq!(shapes.len(), 3, "{shapes:#?}");
    assert_eq!(shapes[0], ("stderr", "info", "warming up"));
    assert_eq!(shapes[2], ("stderr", "info", "exit status 2"));
    let panic = event(&records, "panic: assignment to entry in nil map", "go");
    assert!(
        panic.contains("\n\ngoroutine 1 [running]:\nmain.main()"),
        "{panic}"
    );
    assert_eq!(
        panic.matches("\ngoroutine ").count(),
        2,
        "both goroutines: {panic}"
    );
    assert!(panic.contains("created by main.main"), "{panic}");
    // The same text as alone (goroutine states may differ between runs).
    assert_eq!(
        panic.lines().count() + 2,
        stderr.trim_end().lines().count(),
        "{stderr}"
    );
}

const RUST: &str = r#"
fn main() {
    println!("starting");
    eprintln!("warming up");
    let worker = std::thread::Builder::new()
        .name("loader".into())
        .spawn(|| panic!("shard 3 is corrupt\nchecksum mismatch"))
        .unwrap();
    let _ = worker.join();
    eprintln!("still here");
    let weights: Option<&str> = None;
    weights.expect("model weights missing");
}
"#;

#[test]
fn a_rust_panic_with_its_backtrace_is_one_record() {
    let rustc = tool("rustc", "rustc (or rustup)");
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.rs"), RUST).unwrap();
    let built = Command::new(rustc)
        .args(["--edition", "2021", "-o", "panics", "main.rs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let env = [("RUST_BACKTRACE", "1")];
    let (stderr, records) = run_both(&server, "rs", dir.path(), &env, &["./panics"]);
    assert_whole(&records, &stderr);
    assert_eq!(messages(&of(&records, "stdout")), ["starting"]);
    let stderr_records = of(&records, "stderr");
    let shapes = said(&stderr_records);
    assert_eq!(shapes.len(), 4, "{shapes:#?}");
    assert_eq!(shapes[0], ("stderr", "info", "warming up"));
    assert_eq!(shapes[2], ("stderr", "info", "still here"));
    let thread = event(&records, "thread 'loader' panicked at", "rust");
    assert!(thread.contains("\nshard 3 is corrupt\nchecksum mismatch\nstack backtrace:\n"));
    assert!(thread.ends_with("for a verbose backtrace."), "{thread}");
    let main = event(&records, "thread 'main' panicked at", "rust");
    assert!(
        main.contains("model weights missing\nstack backtrace:\n"),
        "{main}"
    );
}

#[test]
fn a_json_message_of_several_lines_is_one_record_printed_as_lines() {
    let server = TestServer::start();
    let output = run_worker(
        &server,
        "json",
        r#"printf '%s\n' '{"level":"error","msg":"cuda oom\nfreeing cache\ttab","request_id":"req-9"}' '{"msg":"bell\u0007"}' after"#,
    );
    assert!(output.status.success());
    let records: Vec<Value> = server
        .logs(&["--app", "json", "--stream", "stdout"])
        .into_iter()
        .collect();
    assert_eq!(
        messages(&records),
        ["cuda oom\nfreeing cache\ttab", "bell\u{7}", "after"]
    );
    assert_eq!(records[0]["level"], "error");
    let text = server
        .command(&["logs", "--app", "json", "--stream", "stdout", "--no-color"])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].ends_with("[req-9] cuda oom"), "{text}");
    assert_eq!(lines[1], "    freeing cache\ttab");
    assert!(
        lines[2].ends_with("bell\\x07"),
        "other controls stay escaped: {text}"
    );
    assert!(lines[3].ends_with("after"));
    // JSON output is unchanged: one line a record.
    let json = server.logs(&["--app", "json", "--stream", "stdout"]);
    assert_eq!(json.len(), 3);
}

/// An agent killed with -9 while a traceback waits for its next line:
/// every line was in the spool, the line before it was shipped, and the
/// next agent on the runner ships the traceback once, as one record.
#[test]
fn an_agent_killed_mid_traceback_loses_nothing_and_the_next_ships_it_once() {
    use std::io::{BufRead, BufReader};

    let server = TestServer::start();
    let traceback = [
        "Traceback (most recent call last):",
        "  File \"/app/handler.py\", line 9, in <module>",
        "    load_weights()",
    ];
    let script = format!(
        "echo before; printf '%s\\n' '{}' '{}' '{}' >&2; echo \"pid $$\"; exec sleep 60",
        traceback[0], traceback[1], traceback[2]
    );
    // A long wait, so the traceback surely waits while the test kills.
    let flags = ["--runner", "mid", "--multiline-wait", "5s"];
    let mut first = server
        .command(
            &[
                &["run", "--app", "mid"],
                &flags[..],
                &["--", "sh", "-c", &script],
            ]
            .concat(),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut echo = BufReader::new(first.stdout.take().unwrap());
    let mut worker = None;
    let mut line = String::new();
    while worker.is_none() {
        line.clear();
        assert!(
            echo.read_line(&mut line).unwrap() > 0,
            "the agent's echo ended"
        );
        worker = line
            .trim()
            .strip_prefix("pid ")
            .map(|pid| pid.parse::<i32>().unwrap());
    }
    wait_for(
        "the line before to be shipped",
        Duration::from_secs(20),
        || messages(&server.logs(&["--app", "mid"])).contains(&"before"),
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // SAFETY: kill(2) of the worker this test started (its own group).
    unsafe { libc::kill(worker.unwrap(), libc::SIGKILL) };
    let shipped = server.logs(&["--app", "mid", "--stream", "stderr"]);
    assert!(shipped.is_empty(), "the traceback waited: {shipped:#?}");

    let second = server
        .command(&[&["run", "--app", "mid"], &flags[..], &["--", "true"]].concat())
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let records = server.logs(&["--app", "mid"]);
    assert_eq!(
        messages(&records)
            .iter()
            .filter(|m| **m == "before")
            .count(),
        1
    );
    let stderr = of(&records, "stderr");
    assert_eq!(messages(&stderr), [traceback.join("\n")]);
    assert_eq!(stderr[0]["level"], "error");
    let before = records.iter().find(|r| r["message"] == "before").unwrap();
    assert_eq!(
        stderr[0]["boot"], before["boot"],
        "shipped as the killed agent's"
    );
}
