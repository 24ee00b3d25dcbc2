//! The agent as a container's entrypoint, with real processes: orphans
//! reaped, signals forwarded, the stop deadline and a stop the user asked
//! for; and the helpers the other agent tests (`requests`, `terminal`,
//! `restarts`) share. Workers are small `sh` and `python3` programs.

use std::io::Read;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// `tailwater run --app APP --runner APP-runner FLAGS… -- WORKER…`, in the
/// background, its output piped.
pub(crate) fn start_agent(
    server: &TestServer,
    app: &str,
    flags: &[&str],
    worker: &[&str],
) -> Child {
    let runner = format!("{app}-runner");
    let mut args = vec!["run", "--app", app, "--runner", &runner];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(worker);
    server
        .command(&args)
        // Hermetic: whether the worker buffers is the agent's doing.
        .env_remove("PYTHONUNBUFFERED")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every record of `app`, oldest first, straight from the API (cheaper to
/// poll than a `tailwater logs` process).
pub(crate) fn records(server: &TestServer, app: &str) -> Vec<Value> {
    let (status, body) = http(
        "GET",
        server.port,
        &format!("/v1/logs?app={app}&direction=forward&limit=10000"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["records"].as_array().unwrap().clone()
}

pub(crate) fn wait_for_record(
    server: &TestServer,
    app: &str,
    what: &str,
    found: impl Fn(&Value) -> bool,
) {
    wait_for(what, Duration::from_secs(20), || {
        records(server, app).iter().any(&found)
    });
}

pub(crate) fn has_message(text: &str) -> impl Fn(&Value) -> bool + '_ {
    move |record| record["message"] == text
}

pub(crate) fn has_event(event: &str) -> impl Fn(&Value) -> bool + '_ {
    move |record| record["stream"] == "system" && record["fields"]["event"] == event
}

pub(crate) fn by_message<'a>(records: &'a [Value], text: &str) -> &'a Value {
    records
        .iter()
        .find(|record| record["message"] == text)
        .unwrap_or_else(|| panic!("no record {text:?} in {:#?}", messages(records)))
}

pub(crate) fn events<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|record| has_event(event)(record))
        .collect()
}

/// Waits for the agent to exit, within a generous bound.
pub(crate) fn wait_exit(agent: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = agent.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the agent to exit (within a generous bound) and returns its
/// status and what it printed.
pub(crate) fn wait_agent(mut agent: Child) -> (ExitStatus, String, String) {
    let status = wait_exit(&mut agent);
    let mut stdout = String::new();
    let mut stderr = String::new();
    agent
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    // Taken already by a test that reads it as it comes.
    if let Some(mut piped) = agent.stderr.take() {
        piped.read_to_string(&mut stderr).unwrap();
    }
    (status, stdout, stderr)
}

pub(crate) fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// `(pid, state)` of every process whose parent is `parent`, from /proc.
pub(crate) fn children_of(parent: u32) -> Vec<(u32, char)> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some((_, after)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent {
            children.push((pid, state));
        }
    }
    children
}

pub(crate) fn zombies_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|(_, state)| *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|ppid| ppid.trim().parse().ok())
}

pub(crate) fn wait_for_file(path: &Path) -> String {
    wait_for(
        &format!("{}", path.display()),
        Duration::from_secs(20),
        || std::fs::read_to_string(path).is_ok_and(|text| text.ends_with('\n')),
    );
    std::fs::read_to_string(path).unwrap()
}

pub(crate) fn seconds_between(earlier: &Value, later: &Value) -> f64 {
    let at = |record: &Value| {
        record["ts"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    (at(later) - at(earlier)).total(jiff::Unit::Second).unwrap()
}

/// A worker that leaves orphans behind: three that exit at once, and one
/// that lives until the test kills it; then it waits for `stop` and exits 5.
const ORPHANING_WORKER: &str = r#"
(sleep 0.2 &); (sleep 0.2 &); (sleep 0.2 &)
(sleep 60 & echo $! > "$DIR/orphan.tmp" && mv "$DIR/orphan.tmp" "$DIR/orphan.pid")
echo spawned
while [ ! -e "$DIR/stop" ]; do sleep 0.05; done
echo stopping
exit 5
"#;

/// Waits until the short-lived orphans of [`ORPHANING_WORKER`] have ended
/// (the long one is then `agent`'s only live `sleep`), then until `agent`
/// has reaped them: no zombie stays.
fn short_orphans_end_and_are_reaped(agent: u32) {
    let live_sleeps = || {
        children_of(agent)
            .into_iter()
            .filter(|(pid, state)| {
                *state != 'Z'
                    && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|comm| comm == "sleep\n")
            })
            .count()
    };
    wait_for(
        "the short-lived orphans to end",
        Duration::from_secs(10),
        || live_sleeps() == 1,
    );
    wait_for(
        "no zombie child of the agent",
        Duration::from_secs(5),
        || zombies_of(agent).is_empty(),
    );
}

/// Checks what [`ORPHANING_WORKER`] leaves with `agent` as its reaper:
/// orphans come to the agent, and no zombie stays.
fn check_orphans_are_reaped(agent: u32, dir: &Path) {
    let orphan: u32 = wait_for_file(&dir.join("orphan.pid"))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        parent_of(orphan),
        Some(agent),
        "an orphan of the worker is the agent's child"
    );
    short_orphans_end_and_are_reaped(agent);
    send_signal(orphan, libc::SIGKILL);
    wait_for(
        "the killed orphan to be reaped",
        Duration::from_secs(5),
        || !Path::new(&format!("/proc/{orphan}")).exists(),
    );
    assert_eq!(zombies_of(agent), Vec::<u32>::new());
    std::fs::write(dir.join("stop"), "").unwrap();
}

#[test]
fn orphans_come_to_the_agent_and_are_reaped_and_the_worker_code_is_kept() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = server
        .command(&[
            "run",
            "--app",
            "orphans",
            "--runner",
            "orphans-runner",
            "--",
            "sh",
            "-c",
            ORPHANING_WORKER,
        ])
        .env("DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check_orphans_are_reaped(agent.id(), dir.path());
    let (status, stdout, _) = wait_agent(agent);
    assert_eq!(
        status.code(),
        Some(5),
        "the worker's own code, not an orphan's"
    );
    assert_eq!(stdout, "spawned\nstopping\n");

    let records = records(&server, "orphans");
    assert_eq!(records[0]["fields"]["init"], "subreaper");
    let exit = records.last().unwrap();
    assert_eq!(exit["fields"]["exit_code"], 5);
    assert!(
        exit["fields"]["orphans_reaped"].as_u64().unwrap() >= 4,
        "{exit}"
    );
}

#[test]
fn as_pid_1_of_a_pid_namespace_it_reaps_and_forwards_term() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let worker = format!("trap 'echo worker got TERM; exit 7' TERM\n{ORPHANING_WORKER}");
    let unshare = unshare(&["--pid", "--fork", "--kill-child"])
        .arg(binary())
        .args([
            "run",
            "--app",
            "pid1",
            "--runner",
            "pid1-runner",
            "--",
            "sh",
            "-c",
            &worker,
        ])
        .env("TAILWATER_SERVER", server.url())
        .env("TAILWATER_TOKEN", TOKEN)
        .env("TAILWATER_SPOOL", &server.spool)
        .env("DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut agent = None;
    wait_for("the agent under unshare", Duration::from_secs(10), || {
        agent = children_of(unshare.id()).first().map(|(pid, _)| *pid);
        agent.is_some()
    });
    let agent = agent.unwrap();
    // orphan.pid holds the pid inside the namespace; from out here, the
    // orphan is the agent's child that is a `sleep`.
    wait_for_file(&dir.path().join("orphan.pid"));
    let is_sleep = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm == "sleep\n")
    };
    wait_for(
        "PID 1 to inherit the orphan",
        Duration::from_secs(5),
        || children_of(agent).iter().any(|(pid, _)| is_sleep(*pid)),
    );
    short_orphans_end_and_are_reaped(agent);

    // PID 1 gets no default signal handling from the kernel: the agent must
    // handle TERM itself and pass it on.
    send_signal(agent, libc::SIGTERM);
    let (status, stdout, _) = wait_agent(unshare);
    assert_eq!(status.code(), Some(7), "{stdout}");
    let records = records(&server, "pid1");
    assert_eq!(records[0]["fields"]["init"], "pid1");
    by_message(&records, "worker got TERM");
    assert_eq!(records.last().unwrap()["fields"]["exit_code"], 7);
    let _ = std::fs::write(dir.path().join("stop"), "");
}

#[test]
fn sigterm_is_passed_to_the_worker_and_its_exit_code_kept() {
    let server = TestServer::start();
    let agent = start_agent(
        &server,
        "term",
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo worker got TERM; exit 7' TERM\necho ready\nwhile :; do sleep 0.1; done",
        ],
    );
    wait_for_record(&server, "term", "the worker to start", has_message("ready"));
    send_signal(agent.id(), libc::SIGTERM);
    let (status, stdout, _) = wait_agent(agent);
    assert_eq!(status.code(), Some(7));
    assert_eq!(stdout, "ready\nworker got TERM\n");

    let records = records(&server, "term");
    let [stop] = events(&records, "stop")[..] else {
        panic!("one stop record: {records:#?}")
    };
    assert_eq!(stop["fields"]["signal_name"], "SIGTERM");
    assert_eq!(stop["fields"]["stop_timeout_ms"], 8000, "the default");
    assert!(stop["message"]
        .as_str()
        .unwrap()
        .starts_with("received SIGTERM, passed it on: the worker has 8s to exit"));
    by_message(&records, "worker got TERM");
    assert!(events(&records, "stop_timeout").is_empty());
    assert_eq!(records.last().unwrap()["fields"]["exit_code"], 7);
}

/// A stop the user asked for is no failure: the worker's end is recorded
/// at `info` and says so, whether the stop signal killed it or it exited
/// with the shell's code for it; a worker that fails on its own is still
/// an `error`.
#[test]
fn a_stop_the_user_asked_for_is_recorded_as_info() {
    let server = TestServer::start();
    for (runner, script) in [
        ("killed", "echo ready\nexec sleep 30"),
        (
            "coded",
            "trap 'exit 143' TERM\necho ready\nwhile :; do sleep 0.1; done",
        ),
    ] {
        let agent = start_agent(&server, runner, &[], &["sh", "-c", script]);
        wait_for_record(&server, runner, "the worker to start", has_message("ready"));
        send_signal(agent.id(), libc::SIGTERM);
        wait_agent(agent);
        let records = records(&server, runner);
        let [exit] = events(&records, "exit")[..] else {
            panic!("one exit record: {records:#?}")
        };
        assert_eq!(exit["level"], "info", "{runner}: {exit:#}");
        assert!(
            exit["message"]
                .as_str()
                .unwrap()
                .ends_with("stopped as asked"),
            "{runner}: {exit:#}"
        );
    }
    let agent = start_agent(&server, "failed", &[], &["sh", "-c", "exit 143"]);
    wait_agent(agent);
    let records = records(&server, "failed");
    let [exit] = events(&records, "exit")[..] else {
        panic!("one exit record: {records:#?}")
    };
    assert_eq!(exit["level"], "error", "not asked to stop: {exit:#}");
}

/// A worker and the child it started (one process group), each saying
/// which signals reach it; SIGINT stops the worker, which stops its child.
const SIGNAL_LOGGING_WORKER: &str = r#"
trap 'echo worker got HUP' HUP
trap 'echo worker got USR1' USR1
trap 'echo worker got USR2' USR2
trap 'echo worker got INT; kill $child; exit 5' INT
sh -c 'for s in HUP USR1 USR2; do trap "echo child got $s" $s; done; trap "exit 0" TERM; echo child ready; while :; do sleep 0.1; done' &
child=$!
echo worker ready
while :; do sleep 0.1; done
"#;

#[test]
fn hup_usr1_usr2_reach_the_whole_group_and_int_stops_the_worker() {
    let server = TestServer::start();
    let mut agent = start_agent(
        &server,
        "signals",
        &[],
        &["sh", "-c", SIGNAL_LOGGING_WORKER],
    );
    let lines = lines_of(agent.stdout.take().unwrap());
    // Lines of the worker and its child interleave as they come.
    let expect = |wanted: &[&str]| {
        let mut missing: Vec<&str> = wanted.to_vec();
        while !missing.is_empty() {
            let (_, line) = lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("never saw {missing:?}"));
            missing.retain(|wanted| *wanted != line);
        }
    };
    expect(&["worker ready", "child ready"]);
    send_signal(agent.id(), libc::SIGHUP);
    expect(&["worker got HUP", "child got HUP"]);
    send_signal(agent.id(), libc::SIGUSR1);
    expect(&["worker got USR1", "child got USR1"]);
    send_signal(agent.id(), libc::SIGUSR2);
    expect(&["worker got USR2", "child got USR2"]);
    assert!(
        agent.try_wait().unwrap().is_none(),
        "HUP, USR1 and USR2 do not end the agent"
    );
    send_signal(agent.id(), libc::SIGINT);
    expect(&["worker got INT"]);
    assert_eq!(wait_exit(&mut agent).code(), Some(5));

    wait_for_record(&server, "signals", "the exit", has_event("exit"));
    let records = records(&server, "signals");
    // Only the stop signal is a stop.
    let [stop] = events(&records, "stop")[..] else {
        panic!("one stop record: {records:#?}")
    };
    assert_eq!(stop["fields"]["signal_name"], "SIGINT");
    let exit = events(&records, "exit")[0];
    assert_eq!(exit["fields"]["exit_code"], 5);
}

#[test]
fn a_worker_that_ignores_sigterm_is_killed_at_the_stop_timeout() {
    let server = TestServer::start();
    let agent = start_agent(
        &server,
        "stubborn",
        &["--stop-timeout", "1s"],
        &[
            "sh",
            "-c",
            "trap '' TERM\necho ready\nwhile :; do sleep 0.1; done",
        ],
    );
    wait_for_record(
        &server,
        "stubborn",
        "the worker to start",
        has_message("ready"),
    );
    let asked = Instant::now();
    send_signal(agent.id(), libc::SIGTERM);
    let (status, _, _) = wait_agent(agent);
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(128 + 9));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "killed after {took:?}"
    );

    let records = records(&server, "stubborn");
    assert_eq!(events(&records, "stop").len(), 1);
    let [timeout] = events(&records, "stop_timeout")[..] else {
        panic!("one stop_timeout record: {records:#?}")
    };
    assert_eq!(timeout["level"], "warn");
    assert!(timeout["message"]
        .as_str()
        .unwrap()
        .contains("sent SIGKILL"));
    let exit = records.last().unwrap();
    assert_eq!(exit["fields"]["signal_name"], "SIGKILL");
    assert_eq!(exit["fields"]["oom_killed"], false);
}
