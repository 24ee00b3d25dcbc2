//! The agent's spool and shipping with real processes: a killed agent's
//! lines shipped by the next one, a server away for a while, the rate limit,
//! the spool's cap, and a spool directory that cannot be used.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// How long the server stays away in `a_server_away_for_a_while`: 30 s, as
/// a redeploy of the server might take, while the worker logs on throughout
/// (the agent's backoff reaches its longest wait, 2 s, after 3 s).
const OUTAGE: Duration = Duration::from_secs(30);

/// `tailwater run` for `app` (runner `<app>-runner`) against a server on
/// `port` (running or not), its spool in `spool`, the worker `sh -c
/// script`, the worker's output echoed to a pipe.
fn agent(port: u16, spool: &Path, app: &str, flags: &[&str], script: &str) -> Child {
    let runner = format!("{app}-runner");
    spawn_piped(Command::new(binary()).args(run_args(
        port,
        spool,
        app,
        Some(&runner),
        flags,
        script,
    )))
}

/// [`agent`] without `--runner`, on a host named `host`: in a UTS namespace
/// of its own with that host name, as in a container of that name (a
/// container restarted keeps its name).
fn agent_on_host(
    host: &str,
    port: u16,
    spool: &Path,
    app: &str,
    flags: &[&str],
    script: &str,
) -> Child {
    spawn_piped(
        unshare(&["--uts"])
            .args([
                "sh",
                "-c",
                "echo \"$0\" > /proc/sys/kernel/hostname && exec \"$@\"",
            ])
            .args([host, binary()])
            .args(run_args(port, spool, app, None, flags, script)),
    )
}

/// The arguments of `tailwater run` for [`agent`] and [`agent_on_host`].
fn run_args(
    port: u16,
    spool: &Path,
    app: &str,
    runner: Option<&str>,
    flags: &[&str],
    script: &str,
) -> Vec<String> {
    let server = format!("http://127.0.0.1:{port}");
    let spool = spool.to_str().expect("a UTF-8 temporary path");
    let mut args = vec!["run", "--server", &server, "--token", TOKEN, "--app", app];
    if let Some(runner) = runner {
        args.extend(["--runner", runner]);
    }
    args.extend(["--spool", spool]);
    args.extend(flags);
    args.extend(["--", "sh", "-c", script]);
    args.into_iter().map(str::to_owned).collect()
}

fn spawn_piped(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the agent's echo of the worker's stdout until a line is `last`.
fn read_echo_until(stdout: &mut BufReader<ChildStdout>, last: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut line = String::new();
    loop {
        assert!(Instant::now() < deadline, "no '{last}' within {timeout:?}");
        line.clear();
        let read = stdout.read_line(&mut line).unwrap();
        assert!(read > 0, "the agent's output ended before '{last}'");
        if line.trim_end() == last {
            return;
        }
    }
}

fn wait_success(child: Child) {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `"line 1"` … `"line n"`.
fn numbered(word: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{word} {i}")).collect()
}

fn stdout_messages(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .filter(|r| r["stream"] == "stdout")
        .map(|r| r["message"].as_str().unwrap())
        .collect()
}

/// Fails on a record stored twice.
fn assert_each_once(records: &[Value]) {
    let mut seen = HashSet::new();
    for record in records {
        let key = (
            record["boot"].as_str().unwrap().to_owned(),
            record["seq"].as_u64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "stored twice: {key:?}");
    }
}

fn events<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["fields"]["event"] == event)
        .collect()
}

/// The sequence numbers of `seqs` (a report's `[{boot, first, last}]`) of
/// `boot`.
fn seqs_of(report: &Value, boot: &str) -> BTreeSet<u64> {
    let mut seqs = BTreeSet::new();
    for range in report["fields"]["seqs"].as_array().unwrap() {
        assert_eq!(range["boot"], boot);
        seqs.extend(range["first"].as_u64().unwrap()..=range["last"].as_u64().unwrap());
    }
    seqs
}

/// SIGKILL of the agent while the worker streams and the server is down;
/// a new agent with the same spool and runner ships what was left: nothing
/// lost that was spooled, nothing stored twice.
#[test]
fn a_killed_agents_spool_is_shipped_by_the_next_one_once() {
    let records = kill_an_agent_then_start_another("spool-kill", &agent);
    assert_eq!(records[0]["runner"], "spool-kill-runner");
}

/// The same in a container restarted on its spool volume, with no
/// `--runner`: both agents run as the container's host name, so the second
/// finds the first one's spool.
#[test]
fn without_runner_a_restarted_container_ships_what_its_last_agent_left() {
    let host = "c0ffee15b00c";
    let in_container = |port, spool: &Path, app: &str, flags: &[&str], script: &str| {
        agent_on_host(host, port, spool, app, flags, script)
    };
    let records = kill_an_agent_then_start_another("spool-host", &in_container);
    assert_eq!(records[0]["runner"], host);
    let starts = events(&records, "start");
    assert_eq!(starts.len(), 2, "one start per agent");
    for start in starts {
        assert_eq!(start["fields"]["runner"], host);
        assert_eq!(start["fields"]["runner_from"], "host_name");
        assert!(
            start["message"]
                .as_str()
                .unwrap()
                .ends_with(&format!("as runner {host}")),
            "{start}"
        );
    }
}

/// How a test starts an agent: `(port, spool, app, flags, script)`.
type StartAgent<'a> = &'a dyn Fn(u16, &Path, &str, &[&str], &str) -> Child;

/// Kills an agent started with `start` while its worker streams and the
/// server is down, then starts another the same way once the server is up;
/// checks that the first one's records arrive whole and once, under its
/// boot, and that both are one runner. Returns every record of `app`.
fn kill_an_agent_then_start_another(app: &str, start: StartAgent) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    // The agents' address from the start; the server comes later.
    let relay = Relay::without_server();
    let port = relay.port;
    let mut first = start(
        port,
        &spool,
        app,
        &[],
        "i=1; while [ $i -le 500 ]; do echo \"line $i\"; i=$((i+1)); done; \
         j=1; while true; do echo \"tick $j\"; j=$((j+1)); sleep 0.01; done",
    );
    let mut echo = BufReader::new(first.stdout.take().unwrap());
    // Mid-stream: the 500 lines are in, the ticks keep coming.
    read_echo_until(&mut echo, "tick 30", Duration::from_secs(30));
    first.kill().unwrap();
    first.wait().unwrap();
    drop(echo);
    // The worker dies of SIGPIPE at its next tick, with no one reading.

    let server = TestServer::start_on(ANY_PORT, &dir.path().join("data"));
    relay.connect_to(server.port);
    wait_success(start(port, &spool, app, &[], "echo 'second boot'"));

    let records = server.logs(&["--app", app]);
    assert_each_once(&records);
    let runner = records[0]["runner"].as_str().unwrap();
    assert!(
        records.iter().all(|r| r["runner"] == runner),
        "both agents are one runner"
    );
    assert!(!spool.join(runner).exists(), "a drained spool is removed");
    let second_boot = records
        .iter()
        .find(|r| r["message"] == "second boot")
        .unwrap()["boot"]
        .as_str()
        .unwrap();
    let (old, new): (Vec<Value>, Vec<Value>) = records
        .iter()
        .cloned()
        .partition(|r| r["boot"] != second_boot);

    // The killed agent's records: from its start, with no gap, all 500
    // lines, and the ticks it had spooled, from the first on.
    let seqs: Vec<u64> = old.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..old.len() as u64).collect::<Vec<_>>());
    assert_eq!(old[0]["fields"]["event"], "start");
    let lines = stdout_messages(&old);
    assert_eq!(&lines[..500], numbered("line", 500));
    let ticks = &lines[500..];
    // The echo comes before the spool: the last tick or so echoed may not
    // have been written when the agent died.
    assert!(ticks.len() >= 20, "{} ticks", ticks.len());
    assert_eq!(ticks, numbered("tick", ticks.len()));

    // The new agent said what it found, and went on with its own boot.
    let [found] = &events(&new, "spool_recovered")[..] else {
        panic!("one spool_recovered record")
    };
    assert_eq!(found["fields"]["lines"], old.len());
    assert_eq!(found["fields"]["boots"][0], old[0]["boot"]);
    assert_eq!(stdout_messages(&new), ["second boot"]);
    records
}

/// Two agents at once on one host, sharing a spool directory, neither
/// given `--runner`: the first runs as the host name, the second as the
/// host name and a suffix, says so, and both ship.
#[test]
fn two_agents_without_runner_on_one_host_and_spool_both_run_as_different_runners() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let stop = dir.path().join("stop");
    let server = TestServer::start_on(ANY_PORT, &dir.path().join("data"));
    let app = "spool-twins";
    let host = "twin-host";
    let worker = |name: &str| {
        format!(
            "echo 'hello from {name}'; while [ ! -e {stop} ]; do sleep 0.05; done; echo 'bye from {name}'",
            stop = stop.display()
        )
    };
    let first = agent_on_host(host, server.port, &spool, app, &[], &worker("first"));
    let hello_from = |name: &str| {
        let text = format!("hello from {name}");
        let server = &server;
        move || {
            server
                .logs(&["--app", app])
                .iter()
                .any(|r| r["message"] == text)
        }
    };
    // The first holds the host name's spool before the second starts.
    wait_for(
        "the first worker",
        Duration::from_secs(30),
        hello_from("first"),
    );
    let second = agent_on_host(host, server.port, &spool, app, &[], &worker("second"));
    wait_for(
        "the second worker",
        Duration::from_secs(30),
        hello_from("second"),
    );
    std::fs::write(&stop, "").unwrap();
    let (first, second) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    assert!(first.status.success(), "{first:?}");
    assert!(second.status.success(), "{second:?}");

    let records = server.logs(&["--app", app]);
    assert_each_once(&records);
    let runner_of = |name: &str| {
        let said = |word: &str| format!("{word} from {name}");
        let mine: Vec<&Value> = records
            .iter()
            .filter(|r| r["message"] == said("hello") || r["message"] == said("bye"))
            .collect();
        assert_eq!(mine.len(), 2, "both lines of the {name} worker");
        assert_eq!(mine[0]["runner"], mine[1]["runner"]);
        mine[0]["runner"].as_str().unwrap().to_owned()
    };
    let (first_runner, second_runner) = (runner_of("first"), runner_of("second"));
    assert_eq!(first_runner, host);
    let suffix = second_runner.strip_prefix("twin-host-").unwrap_or_else(|| {
        panic!("the second runs as the host name and a suffix: {second_runner}")
    });
    assert!(
        suffix.len() == 8 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
        "{second_runner}"
    );
    // Said once, on stderr; the first agent had nothing to say.
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        said.matches(&format!("running as runner {second_runner} instead"))
            .count(),
        1,
        "{said}"
    );
    assert!(
        said.contains("is in use by another `tailwater run`"),
        "{said}"
    );
    assert!(
        first.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let start_of = |runner: &str| {
        events(&records, "start")
            .into_iter()
            .find(|r| r["runner"] == runner)
            .unwrap_or_else(|| panic!("no start record of {runner}"))["fields"]["runner_from"]
            .clone()
    };
    assert_eq!(start_of(&first_runner), "host_name");
    assert_eq!(start_of(&second_runner), "host_name_in_use");
    // Both drained: their spools are gone.
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
}

/// The server away for [`OUTAGE`] while the worker logs: every line
/// arrives, once, in order.
#[test]
fn a_server_away_for_a_while_gets_every_line_once_in_order() {
    // At least 36 s of logging at 30 ms a line: longer than the outage.
    const LINES: usize = 1200;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = "spool-outage";
    let server = TestServer::start_on(ANY_PORT, &data);
    let port = server.port;
    let worker = agent(
        port,
        &dir.path().join("spool"),
        app,
        &["--quiet"],
        &format!(
            "i=1; while [ $i -le {LINES} ]; do echo \"line $i\"; i=$((i+1)); sleep 0.03; done"
        ),
    );
    wait_for(
        "lines to arrive before the outage",
        Duration::from_secs(20),
        || stdout_messages(&server.logs(&["--app", app])).len() >= 20,
    );
    let away = jiff::Timestamp::now();
    server.kill_9();
    std::thread::sleep(OUTAGE);
    let server = TestServer::start_on(port, &data);
    let back = jiff::Timestamp::now();
    let output = worker.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot ship logs yet") && stderr.contains("shipping logs to"),
        "the agent said it lost the server and found it again: {stderr}"
    );

    let records = server.logs(&["--app", app]);
    assert_each_once(&records);
    assert_eq!(stdout_messages(&records), numbered("line", LINES));
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..records.len() as u64).collect::<Vec<_>>(),
        "in order, no gap"
    );
    let during = records
        .iter()
        .filter(|r| {
            let ts: jiff::Timestamp = r["ts"].as_str().unwrap().parse().unwrap();
            away < ts && ts < back
        })
        .count();
    assert!(
        during >= 50,
        "only {during} lines written while the server was away"
    );
    assert_eq!(records.last().unwrap()["fields"]["event"], "exit");
}

/// A flood over `--rate-lines`: every line arrives, and a system record
/// sums up exactly what was held back.
#[test]
fn a_flood_over_the_rate_limit_is_held_back_counted_and_shipped() {
    const LINES: usize = 1000;
    const RATE: u64 = 250;
    let server = TestServer::start();
    let started = Instant::now();
    wait_success(agent(
        server.port,
        tempfile::tempdir().unwrap().path(),
        "spool-throttle",
        &["--quiet", "--rate-lines", &RATE.to_string()],
        &format!("i=1; while [ $i -le {LINES} ]; do echo \"line $i\"; i=$((i+1)); done"),
    ));
    let took = started.elapsed();
    // A second's burst, then the rate: about three more seconds.
    assert!(
        took >= Duration::from_millis(((LINES as u64 - RATE) * 1000 / RATE) * 9 / 10),
        "shipped in {took:?}: not throttled"
    );

    let records = server.logs(&["--app", "spool-throttle"]);
    assert_each_once(&records);
    assert_eq!(stdout_messages(&records), numbered("line", LINES));
    let reports = events(&records, "throttled");
    assert!(!reports.is_empty(), "a throttled record");
    let boot = records[0]["boot"].as_str().unwrap();
    let mut held_total = 0;
    for report in reports {
        let held = seqs_of(report, boot);
        let lines: Vec<&Value> = records
            .iter()
            .filter(|r| r["stream"] == "stdout" && held.contains(&r["seq"].as_u64().unwrap()))
            .collect();
        let bytes: usize = lines
            .iter()
            .map(|r| r["message"].as_str().unwrap().len())
            .sum();
        assert_eq!(report["fields"]["held_lines"], lines.len(), "{report}");
        assert_eq!(report["fields"]["held_bytes"], bytes, "{report}");
        assert_eq!(report["fields"]["rate_lines"], RATE);
        assert_eq!(report["level"], "warn");
        let message = report["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "throttled: {} lines, {bytes} bytes held back between ",
                lines.len()
            )),
            "{message}"
        );
        held_total += lines.len();
    }
    // All but about the first second's worth waited.
    assert!(
        held_total >= LINES - 2 * RATE as usize,
        "{held_total} lines held back"
    );
}

/// A tiny spool cap while the server is down: the oldest are dropped, a
/// system record counts them exactly, and the rest arrive.
#[test]
fn over_the_spool_cap_the_oldest_are_dropped_and_counted_exactly() {
    const LINES: usize = 2000;
    const CAP: &str = "16384";
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::without_server();
    let port = relay.port;
    let app = "spool-cap";
    let mut child = agent(
        port,
        &dir.path().join("spool"),
        app,
        &["--spool-max-bytes", CAP],
        &format!(
            "i=1; while [ $i -le {LINES} ]; do echo \"line $i of the flood\"; i=$((i+1)); done"
        ),
    );
    let mut echo = BufReader::new(child.stdout.take().unwrap());
    read_echo_until(
        &mut echo,
        &format!("line {LINES} of the flood"),
        Duration::from_secs(30),
    );
    // The agent records the exit while the server is still away: its
    // record is in the spool (whose segments keep messages as written).
    let spool = dir.path().join("spool");
    wait_for("the exit in the spool", Duration::from_secs(30), || {
        spool_holds(&spool, b"exited with code 0")
    });
    let server = TestServer::start_on(ANY_PORT, &dir.path().join("data"));
    relay.connect_to(server.port);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut echo, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());

    let records = server.logs(&["--app", app]);
    assert_each_once(&records);
    let boot = records[0]["boot"].as_str().unwrap();
    let reports = events(&records, "dropped");
    assert!(!reports.is_empty(), "a drop record");
    let mut dropped = BTreeSet::new();
    for report in &reports {
        assert_eq!(report["fields"]["reason"], "spool_full");
        assert_eq!(report["level"], "error");
        let seqs = seqs_of(report, boot);
        assert_eq!(report["fields"]["dropped_lines"], seqs.len(), "{report}");
        assert!(seqs.is_disjoint(&dropped), "counted twice");
        dropped.extend(seqs);
    }
    // Every record the agent made is stored or counted as dropped, never
    // both (a report the cap dropped before it was shipped is counted, and
    // what it said is counted again in a later report).
    let stored: BTreeSet<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        stored.is_disjoint(&dropped),
        "stored and counted as dropped"
    );
    let last = *stored.last().unwrap();
    assert!(
        stored.union(&dropped).copied().eq(0..=last),
        "some record neither stored nor counted"
    );
    assert!(
        dropped.len() > LINES / 2,
        "{} dropped: the cap bit",
        dropped.len()
    );
    // The survivors arrive in order, the newest among them.
    let survivors: Vec<usize> = stdout_messages(&records)
        .iter()
        .map(|m| {
            m.strip_prefix("line ")
                .unwrap()
                .strip_suffix(" of the flood")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(survivors.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(survivors.last(), Some(&LINES));
    assert_eq!(events(&records, "exit").len(), 1);
}

/// A spool directory that cannot be created: a clear error before the
/// worker starts.
#[test]
fn an_unusable_spool_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let output = Command::new(binary())
        .args([
            "run",
            "--token",
            TOKEN,
            "--app",
            "spool-bad",
            "--runner",
            "r1",
            "--spool",
        ])
        .arg(&file)
        .args(["--", "sh", "-c", "echo should not run"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "the worker did not start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot use the spool directory {}",
            file.join("r1").display()
        )) && stderr.contains("pass --spool DIR with a writable directory"),
        "{stderr}"
    );
}

/// An ingest endpoint on loopback that keeps every batch it is sent (with
/// when it came) and answers as `answer` says for the n-th POST (from 0):
/// `Some((status, retry_after_seconds))`, or `None` for 200.
struct IngestStub {
    port: u16,
    batches: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Value)>>>,
}

impl IngestStub {
    fn start(answer: fn(usize) -> Option<(u16, u64)>) -> IngestStub {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let batches: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let kept = batches.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (kept, posts) = (kept.clone(), posts.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut length = 0;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            reader.read_line(&mut line).unwrap();
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap();
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let n = posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let batch: Value = serde_json::from_slice(&body).unwrap();
                        let response = match answer(n) {
                            Some((status, retry_after)) => {
                                let body = r#"{"error":{"code":"rate_limited","message":"app over its rate limit"}}"#;
                                format!("HTTP/1.1 {status} Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                            }
                            None => {
                                let records = batch["records"].as_array().unwrap().len();
                                kept.lock().unwrap().push((Instant::now(), batch));
                                let body = format!(r#"{{"accepted":{records},"duplicates":0}}"#);
                                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                            }
                        };
                        if writer.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        IngestStub { port, batches }
    }

    fn batches(&self) -> Vec<(Instant, Value)> {
        self.batches.lock().unwrap().clone()
    }
}

/// The server answers 429 with `Retry-After: 1` twice: the agent waits at
/// least that long each time, keeps the lines, ships every one once and in
/// order afterwards, and says how it was held up.
#[test]
fn a_server_asking_to_retry_after_is_obeyed_and_nothing_is_lost() {
    let stub = IngestStub::start(|n| (n < 2).then_some((429, 1)));
    let spool = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let agent = agent(
        stub.port,
        spool.path(),
        "limited",
        &[],
        "for i in $(seq 1 50); do echo line $i; done",
    );
    let output = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is rate limiting this runner (app over its rate limit)"),
        "{stderr}"
    );
    let batches = stub.batches();
    // Two 429s of one second each came before the first batch was taken.
    let first = batches.first().expect("a batch").0;
    assert!(
        first.duration_since(started) >= Duration::from_secs(2),
        "shipped {:?} after the start, before two Retry-After waits",
        first.duration_since(started)
    );
    let records: Vec<Value> = batches
        .iter()
        .flat_map(|(_, batch)| batch["records"].as_array().unwrap().clone())
        .collect();
    // One boot: each sequence number once, in order, from the first.
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..records.len() as u64).collect::<Vec<_>>());
    assert_eq!(stdout_messages(&records), numbered("line", 50));
    let [limited] = &events(&records, "server_rate_limited")[..] else {
        panic!("one server_rate_limited record: {:#?}", messages(&records))
    };
    assert_eq!(limited["fields"]["answers"], 2);
    assert!(limited["fields"]["waited_ms"].as_u64().unwrap() >= 2000);
    assert_eq!(limited["level"], "warn");
}

/// With nothing to ship, the agent sends an empty batch with its labels
/// every --heartbeat-interval, and the real server takes it.
#[test]
fn a_quiet_runner_sends_heartbeats_the_server_accepts() {
    let stub = IngestStub::start(|_| None);
    let spool = tempfile::tempdir().unwrap();
    let quiet = "echo before; sleep 1.5; echo after";
    let agent_on_stub = agent(
        stub.port,
        spool.path(),
        "beating",
        &["--heartbeat-interval", "200ms"],
        quiet,
    );
    wait_success(agent_on_stub);
    let batches = stub.batches();
    let boot = batches[0].1["boot"].as_str().unwrap().to_owned();
    let sent_at = |text: &str| {
        batches
            .iter()
            .find(|(_, batch)| {
                stdout_messages(batch["records"].as_array().unwrap()).contains(&text)
            })
            .unwrap_or_else(|| panic!("a batch with '{text}'"))
            .0
    };
    let (before, after) = (sent_at("before"), sent_at("after"));
    let beats: Vec<&Value> = batches
        .iter()
        .filter(|(at, batch)| {
            *at > before && *at < after && batch["records"].as_array().unwrap().is_empty()
        })
        .map(|(_, batch)| batch)
        .collect();
    // At least 1.5 s quiet at one beat per 200 ms: about 7, fewer on a
    // loaded machine, never more than the quiet time allows.
    let quiet_for = after.duration_since(before);
    let most = (quiet_for.as_millis() / 200) as usize + 1;
    assert!(
        (3..=most).contains(&beats.len()),
        "{} heartbeats in {quiet_for:?} of quiet",
        beats.len()
    );
    for beat in beats {
        assert_eq!(
            (&beat["app"], &beat["runner"], &beat["boot"]),
            (
                &Value::from("beating"),
                &Value::from("beating-runner"),
                &Value::from(boot.as_str())
            )
        );
    }

    // The real server takes empty batches: no complaint, every line there.
    let server = TestServer::start();
    let output = agent(
        server.port,
        &server.spool,
        "beating-real",
        &["--heartbeat-interval", "100ms"],
        "echo before; sleep 0.5; echo after",
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("heartbeat"), "{stderr}");
    let records = server.logs(&["--app", "beating-real"]);
    assert_eq!(stdout_messages(&records), ["before", "after"]);
}

/// A large spool left by an agent that could not ship does not hold the
/// next worker back: the worker starts and prints while the leftovers are
/// still being read, and they ship first, in the background, under their
/// own boot and sequence numbers.
#[test]
fn a_large_leftover_spool_does_not_delay_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let relay = Relay::without_server();
    let port = relay.port;
    let app = "spool-large";
    const LINES: u64 = 100_000;
    // About 20 MB of spool, with no server to ship to.
    let first = agent(
        port,
        &spool,
        app,
        &["--drain-timeout", "0", "--quiet"],
        &format!(
            "python3 -c 'import sys\nfor i in range(1, {}): sys.stdout.write(\"line %d %s\\n\" % (i, \"x\" * 180))'",
            LINES + 1
        ),
    );
    let output = first.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let runner_dir = spool.join(format!("{app}-runner"));
    assert!(runner_dir.exists(), "the first agent left its spool");

    let server = TestServer::start_on(ANY_PORT, &dir.path().join("data"));
    relay.connect_to(server.port);
    wait_success(agent(port, &spool, app, &[], "echo first"));
    assert!(!runner_dir.exists(), "everything left was shipped");

    let records = server.logs(&["--app", app, "--since", "1h", "--stream", "system"]);
    let found = records
        .iter()
        .find(|r| r["fields"]["event"] == "spool_recovered")
        .expect("a spool_recovered record");
    assert!(
        found["fields"]["lines"].as_u64().unwrap() > LINES,
        "{found}"
    );
    let new_boot = found["boot"].as_str().unwrap();
    let [first_line] = &server.logs(&["--app", app, "--stream", "stdout", "--grep", "first"])[..]
    else {
        panic!("the second worker's line, once")
    };
    assert_eq!(first_line["boot"], new_boot);
    // The worker's line came while the leftovers were still being read.
    assert!(
        first_line["seq"].as_u64() < found["seq"].as_u64(),
        "the worker waited for the leftovers: {first_line} {found}"
    );
    let last_old = server.logs(&["--app", app, "--grep", &format!("line {LINES} ")]);
    let [last_old] = &last_old[..] else {
        panic!("the last leftover line, once: {last_old:?}")
    };
    assert_ne!(last_old["boot"], new_boot);
    assert_eq!(
        last_old["seq"], LINES,
        "after the first agent's start record"
    );
}

/// Whether a file under `dir` holds `needle`.
fn spool_holds(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return spool_holds(&path, needle);
        }
        std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}
