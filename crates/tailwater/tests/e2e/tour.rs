//! The README's "A five-minute tour", run against `tailwater demo`: every
//! `tailwater …` command of its `sh` blocks (read from README.md, so the
//! tour and the demo cannot drift apart) prints lines on the demo's data;
//! and what the tour tells of that data holds: runners that become ready
//! and serve requests through their agents, a failed request whose
//! traceback carries its id, a real OOM kill and the runner's new boot, a
//! progress bar.
//!
//! The OOM kill needs a memory cgroup the demo can make: root, as CI has
//! (the test fails rather than skips without it).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::readme::{blocks, tour, tour_commands};

/// Commands of the tour that start something of their own rather than
/// read the demo's data (step 6, "Run your own worker").
const NOT_READS: [&str; 2] = ["server", "run"];

#[test]
fn every_tour_command_prints_lines_on_the_demo() {
    let demo = Demo::start();

    // What the tour's commands read has happened: the failed request, the
    // OOM kill and the new boot after it, the crash.
    wait_for("req-a100-1-0007 to end", Duration::from_secs(60), || {
        demo.logs(&["--request", "req-a100-1-0007", "--stream", "system"])
            .iter()
            .any(|r| r["fields"]["event"] == "request_end")
    });
    wait_for(
        "gpu-a100-2 to be OOM-killed and ready again in a new boot",
        Duration::from_secs(60),
        || {
            let system = demo.logs(&["--runner", "gpu-a100-2", "--stream", "system"]);
            let killed = system.iter().position(|r| r["fields"]["event"] == "exit");
            killed.is_some_and(|at| {
                system[at + 1..]
                    .iter()
                    .any(|r| r["fields"]["event"] == "ready" && r["boot"] != system[at]["boot"])
            })
        },
    );
    wait_for("gpu-l4-1's crash", Duration::from_secs(30), || {
        demo.logs(&["--runner", "gpu-l4-1"])
            .iter()
            .any(|r| r["fields"]["event"] == "exit")
    });

    let commands = tour_commands();
    assert!(
        commands.len() >= 15,
        "the tour's commands were found: {commands:#?}"
    );
    let work = tempfile::tempdir().unwrap();
    let mut ran = 0;
    let mut printed = Vec::new();
    for command in &commands {
        if NOT_READS.contains(&command[1].as_str()) {
            continue;
        }
        let lines = demo.tour_command(command, work.path());
        assert!(
            !lines.is_empty(),
            "`{}` prints at least one line on the demo's data",
            command.join(" ")
        );
        printed.extend(lines);
        ran += 1;
    }
    assert_eq!(
        ran + NOT_READS.len(),
        commands.len(),
        "only step 6's two commands are not run: {commands:#?}"
    );

    the_sample_lines_are_what_the_demo_prints(&printed);
    runners_are_ready_and_count_requests(&demo);
    the_failed_request_has_its_traceback(&demo);
    the_oom_kill_is_recorded(&demo);
    the_progress_bar_is_collapsed(&demo);

    let cgroup = demo.cgroup();
    demo.stop();
    if let Some(cgroup) = cgroup {
        assert!(!Path::new(&cgroup).exists(), "{cgroup} is removed");
    }
}

fn runners_are_ready_and_count_requests(demo: &Demo) {
    let mut runners = Value::Null;
    let runner = |runners: &Value, name: &str| {
        runners["runners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["runner"] == name)
            .unwrap_or_else(|| panic!("{name} in {runners:#}"))
            .clone()
    };
    // A runner's counts are its boot's: gpu-a100-2's new boot counts anew.
    wait_for(
        "both GPU runners ready, serving requests",
        Duration::from_secs(30),
        || {
            runners = demo.json(&["runners", "ls", "--json"]);
            ["gpu-a100-1", "gpu-a100-2"].iter().all(|name| {
                let gpu = runner(&runners, name);
                gpu["ready_at"].is_string() && gpu["requests"]["served"].as_u64() >= Some(1)
            })
        },
    );
    let runner = |name: &str| runner(&runners, name);
    let a100_1 = runner("gpu-a100-1");
    assert!(
        a100_1["requests"]["failed"].as_u64().unwrap() >= 1,
        "req-a100-1-0007 failed: {a100_1:#}"
    );
    let l4 = runner("gpu-l4-1");
    assert_eq!(l4["state"], "crashed");
    assert_eq!(l4["exit"]["code"], 1);

    // Ready because the worker said so, once its model was loaded.
    let ready = demo.logs(&["--runner", "gpu-a100-1", "--stream", "system"]);
    let ready = ready
        .iter()
        .find(|r| r["fields"]["event"] == "ready")
        .expect("a ready record");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("the worker said so"),
        "{ready:#}"
    );
}

fn the_failed_request_has_its_traceback(demo: &Demo) {
    let id = "req-a100-1-0007";
    let records = demo.logs(&["--request", id]);
    assert!(
        records.iter().all(|r| r["request_id"] == id),
        "only its own records"
    );
    let stderr: Vec<&str> = records
        .iter()
        .filter(|r| r["stream"] == "stderr")
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    // One record per line, or the traceback as one record: either way its
    // first and last lines are the request's.
    assert!(
        stderr
            .iter()
            .any(|m| m.contains("Traceback (most recent call last):")),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().any(|m| m
            .lines()
            .last()
            .is_some_and(|last| last.starts_with("ValueError: prompt has")
                && last.ends_with("more than the 77 the text encoder takes"))),
        "the traceback's last line: {stderr:#?}"
    );
    let error = records
        .iter()
        .find(|r| r["fields"]["status"] == 500 && r["stream"] == "stdout")
        .expect("the worker's JSON line with status 500");
    assert_eq!(error["level"], "error");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .starts_with("Failed: ValueError"));
    let end = records
        .iter()
        .find(|r| r["fields"]["event"] == "request_end")
        .expect("the agent's request_end");
    assert_eq!(end["fields"]["status"], 500);

    let info = demo.json(&["requests", "show", id, "--json"]);
    assert_eq!(info["status"], 500, "{info:#}");
    assert_eq!(info["runner"], "gpu-a100-1");
}

fn the_oom_kill_is_recorded(demo: &Demo) {
    let system = demo.logs(&["--runner", "gpu-a100-2", "--stream", "system"]);
    let oom = system
        .iter()
        .find(|r| r["fields"]["event"] == "oom_kill")
        .unwrap_or_else(|| {
            panic!(
                "an oom_kill record (the demo needs root to make a memory cgroup): {:#?}",
                messages(&system)
            )
        });
    assert_eq!(oom["level"], "error");
    let exit = system
        .iter()
        .find(|r| r["fields"]["event"] == "exit")
        .unwrap();
    assert_eq!(exit["fields"]["oom_killed"], true, "{exit:#}");
    assert_eq!(exit["fields"]["signal_name"], "SIGKILL");
    let boots: std::collections::BTreeSet<&str> = system
        .iter()
        .filter(|r| r["fields"]["event"] == "start")
        .map(|r| r["boot"].as_str().unwrap())
        .collect();
    assert!(boots.len() >= 2, "a new boot after the kill: {boots:?}");

    // The request it was serving: CUDA's traceback is its, and it failed.
    let id = "req-a100-2-0009";
    let records = demo.logs(&["--request", id]);
    assert!(
        records.iter().any(|r| r["message"]
            .as_str()
            .unwrap()
            .contains("torch.OutOfMemoryError: CUDA out of memory")),
        "{:#?}",
        messages(&records)
    );
    let info = demo.json(&["requests", "show", id, "--json"]);
    assert_ne!(info["state"], "completed", "{info:#}");
    assert_ne!(info["state"], "in_flight", "{info:#}");
}

fn the_progress_bar_is_collapsed(demo: &Demo) {
    let records = demo.logs(&["--runner", "gpu-a100-1", "--stream", "stderr"]);
    let last = records
        .iter()
        .find(|r| r["fields"]["progress_final"] == true)
        .expect("the loading bar's final state");
    assert!(
        last["message"].as_str().unwrap().contains("7/7"),
        "{last:#}"
    );
    assert!(last["fields"]["progress_updates"].as_u64().unwrap() >= 2);
}

/// Each log line of the tour's sample output (a block without a language
/// whose line starts with a date) is one the tour's commands printed: its
/// date, time, app, runner and stream, its request, and its message, in a
/// line of one record, the numbers (times, pids, counts, durations) aside
/// and `…` standing for anything. The level and where the message starts
/// are left free, so a traceback printed as one record (its lines grouped
/// by the agent) still holds each line of the sample.
fn the_sample_lines_are_what_the_demo_prints(printed: &[String]) {
    let samples: Vec<String> = blocks(&tour(), "```")
        .into_iter()
        .filter(|line| line.starts_with("20"))
        .collect();
    assert!(samples.len() >= 10, "the tour's sample lines: {samples:#?}");
    let number = regex::Regex::new("[0-9]+").unwrap();
    let pattern = |text: &str| {
        number
            .replace_all(&regex::escape(text).replace('…', ".*"), "[0-9]+")
            .into_owned()
    };
    for sample in samples {
        // date time app runner stream LEVEL [request] message
        let words: Vec<&str> = sample.split_whitespace().collect();
        let head = pattern(&words[..5].join(" "));
        let after_level = sample
            .split_once(&format!(" {} ", words[5]))
            .map_or("", |(_, rest)| rest)
            .trim_start();
        let (request, message) = match after_level.strip_prefix('[') {
            Some(tagged) => {
                let (id, message) = tagged.split_once("] ").unwrap();
                (format!(r"\[{}\] .*", pattern(id)), message.trim_start())
            }
            None => (".*".to_owned(), after_level),
        };
        let line =
            regex::Regex::new(&format!(r"^{head} +[A-Z]+ +{request}{}", pattern(message))).unwrap();
        assert!(
            printed.iter().any(|printed| line.is_match(printed)),
            "the tour's sample line is not printed by its commands:\n{sample}\n(pattern {line})"
        );
    }
}

/// `tailwater demo` on any port, its requests sent fast.
struct Demo {
    /// `None` once stopped.
    child: Option<std::process::Child>,
    url: String,
    banner: Arc<Mutex<Vec<String>>>,
    /// A home of its own, so no profile of the machine's applies.
    home: tempfile::TempDir,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(binary())
            .args(["demo", "--listen", &format!("127.0.0.1:{ANY_PORT}")])
            .args(["--request-interval", "100ms"])
            .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let banner = Arc::new(Mutex::new(Vec::new()));
        let (port_sender, port) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines = banner.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = announced_in(&line) {
                    let _ = port_sender.send(port);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(20))
            .expect("the demo announces its server");
        Demo {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            banner,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("TAILWATER_SERVER", &self.url)
            .env("TAILWATER_TOKEN", TOKEN)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path());
        command
    }

    /// `tailwater logs --json` records (oldest first), or none while the
    /// server does not answer.
    fn logs(&self, args: &[&str]) -> Vec<Value> {
        let output = self
            .command(&[&["logs", "--json", "-n", "10000"], args].concat())
            .output()
            .unwrap();
        if !output.status.success() {
            return Vec::new();
        }
        json_lines(&output.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let output = self.command(args).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Runs one command of the tour in `dir`; the lines it printed (or,
    /// for an export to a file, the lines of the file). A command that
    /// follows (`-f`) is read until its first line.
    fn tour_command(&self, command: &[String], dir: &Path) -> Vec<String> {
        let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
        let mut run = self.command(&args);
        run.current_dir(dir);
        if args.contains(&"-f") {
            let mut child = run.stdout(Stdio::piped()).spawn().unwrap();
            let stdout = child.stdout.take().unwrap();
            let (sender, first) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = sender.send(line);
            });
            let line = first
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            return lines(&line);
        }
        let output = run.output().unwrap();
        assert!(output.status.success(), "`{command:?}`: {output:?}");
        let file = args
            .iter()
            .position(|arg| *arg == "-o")
            .map(|at| dir.join(args[at + 1]));
        match file {
            Some(file) => {
                let bytes = std::fs::read(&file).unwrap();
                let text = if file.extension().is_some_and(|e| e == "gz") {
                    let mut text = String::new();
                    flate2::read::GzDecoder::new(&bytes[..])
                        .read_to_string(&mut text)
                        .unwrap();
                    text
                } else {
                    String::from_utf8(bytes).unwrap()
                };
                lines(&text)
            }
            None => lines(&String::from_utf8_lossy(&output.stdout)),
        }
    }

    /// The memory cgroup the banner names, if the demo made one.
    fn cgroup(&self) -> Option<String> {
        let banner = self.banner.lock().unwrap();
        let line = banner.iter().find(|line| line.contains("memory cgroup "))?;
        let path = line.split("memory cgroup ").nth(1)?;
        Some(path.split(')').next()?.to_owned())
    }

    /// SIGTERM, as Ctrl-C: the demo stops its agents and exits cleanly.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.success(), "demo exit status: {status:?}");
    }
}

impl Drop for Demo {
    /// A failed test stops its demo too, agents and all.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child process.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}
