//! The agent's spool with real processes: a killed agent's lines shipped by
//! the next one (also in a restarted container), two agents of one host on
//! one spool, a spool directory that cannot be used, and a large leftover
//! spool. Shipping under pressure (a server away, the rate limit, the
//! spool's cap, a server asking to retry, heartbeats) is in `shipping.rs`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// `tailwater run` for `app` (runner `<app>-runner`) against a server on
/// `port` (running or not), its spool in `spool`, the worker `sh -c
/// script`, the worker's output echoed to a pipe.
pub(crate) fn agent(port: u16, spool: &Path, app: &str, flags: &[&str], script: &str) -> Child {
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
pub(crate) fn read_echo_until(stdout: &mut BufReader<ChildStdout>, last: &str, timeout: Duration) {
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

pub(crate) fn wait_success(child: Child) {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `"line 1"` … `"line n"`.
pub(crate) fn numbered(word: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{word} {i}")).collect()
}

pub(crate) fn stdout_messages(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .filter(|r| r["stream"] == "stdout")
        .map(|r| r["message"].as_str().unwrap())
        .collect()
}

/// Fails on a record stored twice.
pub(crate) fn assert_each_once(records: &[Value]) {
    let mut seen = HashSet::new();
    for record in records {
        let key = (
            record["boot"].as_str().unwrap().to_owned(),
            record["seq"].as_u64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "stored twice: {key:?}");
    }
}

pub(crate) fn events<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["fields"]["event"] == event)
        .collect()
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
