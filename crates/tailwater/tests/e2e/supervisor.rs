//! The agent as a container's entrypoint, with real processes: orphans
//! reaped, signals forwarded, the stop deadline, requests marked by the
//! proxy and the control socket, progress bars, a pseudo-terminal, OOM
//! kills. Workers are small `sh` and `python3` programs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// `tailwater run --app APP --runner APP-runner FLAGS… -- WORKER…`, in the
/// background, its output piped.
fn start_agent(server: &TestServer, app: &str, flags: &[&str], worker: &[&str]) -> Child {
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
fn records(server: &TestServer, app: &str) -> Vec<Value> {
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

fn wait_for_record(server: &TestServer, app: &str, what: &str, found: impl Fn(&Value) -> bool) {
    wait_for(what, Duration::from_secs(20), || {
        records(server, app).iter().any(&found)
    });
}

fn has_message(text: &str) -> impl Fn(&Value) -> bool + '_ {
    move |record| record["message"] == text
}

fn has_event(event: &str) -> impl Fn(&Value) -> bool + '_ {
    move |record| record["stream"] == "system" && record["fields"]["event"] == event
}

fn by_message<'a>(records: &'a [Value], text: &str) -> &'a Value {
    records
        .iter()
        .find(|record| record["message"] == text)
        .unwrap_or_else(|| panic!("no record {text:?} in {:#?}", messages(records)))
}

fn events<'a>(records: &'a [Value], event: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|record| has_event(event)(record))
        .collect()
}

/// Waits for the agent to exit, within a generous bound.
fn wait_exit(agent: &mut Child) -> ExitStatus {
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
fn wait_agent(mut agent: Child) -> (ExitStatus, String, String) {
    let status = wait_exit(&mut agent);
    let mut stdout = String::new();
    let mut stderr = String::new();
    agent
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, signal) }, 0);
}

/// `(pid, state)` of every process whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<(u32, char)> {
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

fn zombies_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|(_, state)| *state == 'Z')
        .map(|(pid, _)| pid)
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|ppid| ppid.trim().parse().ok())
}

fn wait_for_file(path: &Path) -> String {
    wait_for(
        &format!("{}", path.display()),
        Duration::from_secs(20),
        || std::fs::read_to_string(path).is_ok_and(|text| text.ends_with('\n')),
    );
    std::fs::read_to_string(path).unwrap()
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

/// A tiny HTTP/1.1 GET that also returns the response headers.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut response_headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        response_headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).unwrap();
    (status, response_headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Serves `/a` and `/b` so that they overlap: A logs alone, waits for B;
/// both log with and without ids while both are in flight; A answers; B
/// waits for that, logs alone, answers 201.
const OVERLAPPING_SERVER: &str = r#"
import json, os, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
b_arrived, a_done = threading.Event(), threading.Event()
def say(text):
    # One write per line: print() writes the newline apart, and two
    # threads' lines would interleave.
    os.write(1, (text + "\n").encode())
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
    def do_GET(self):
        rid = self.headers.get("X-Request-Id")
        if self.path == "/healthz":
            return self.reply(200, "healthy")
        if self.path == "/a":
            say("a: alone")
            b_arrived.wait(20)
            say("a: overlap, no id")
            say(json.dumps({"msg": "a: overlap, with id", "request_id": rid}))
            self.reply(200, "a done")
            a_done.set()
        elif self.path == "/b":
            b_arrived.set()
            say("b: overlap, no id")
            say(json.dumps({"msg": "b: overlap, with id", "request_id": rid}))
            a_done.wait(20)
            time.sleep(0.3)
            say("b: alone")
            self.reply(201, "b done")
        else:
            self.reply(404, "no")
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

#[test]
fn the_proxy_attributes_overlapping_requests_without_mixing_them() {
    let python = python();
    let server = TestServer::start();
    let (listen, worker_port) = (free_port(), free_port());
    let proxy = format!("127.0.0.1:{listen}=127.0.0.1:{worker_port}");
    let health = format!("http://127.0.0.1:{worker_port}/healthz");
    let worker_port_text = worker_port.to_string();
    let agent = start_agent(
        &server,
        "proxied",
        &["--proxy", &proxy, "--health", &health],
        &[python, "-c", OVERLAPPING_SERVER, &worker_port_text],
    );
    wait_for_record(
        &server,
        "proxied",
        "the worker to be ready",
        has_event("ready"),
    );
    // The load balancer's view: the worker's health, through the agent.
    let (status, _, body) = get(listen, "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "healthy"));

    let a = std::thread::spawn(move || get(listen, "/a", &[("X-Request-Id", "req-a")]));
    wait_for_record(
        &server,
        "proxied",
        "A to log alone",
        has_message("a: alone"),
    );
    let (b_status, b_headers, b_body) = get(listen, "/b", &[]);
    let (a_status, a_headers, a_body) = a.join().unwrap();
    assert_eq!((a_status, a_body.as_str()), (200, "a done"));
    assert_eq!((b_status, b_body.as_str()), (201, "b done"));
    assert_eq!(
        header(&a_headers, "x-request-id"),
        Some("req-a"),
        "the client's id, kept"
    );
    let b_id = header(&b_headers, "x-request-id")
        .expect("a new id for B")
        .to_owned();
    assert!(b_id.starts_with("req-"), "{b_id}");

    wait_for_record(&server, "proxied", "B's end", |record| {
        has_event("request_end")(record) && record["request_id"] == b_id.as_str()
    });
    let records = records(&server, "proxied");
    let request_of = |text: &str| by_message(&records, text)["request_id"].clone();
    assert_eq!(request_of("a: alone"), "req-a", "A alone in flight");
    assert_eq!(
        request_of("a: overlap, no id"),
        Value::Null,
        "two in flight: runner-scoped"
    );
    assert_eq!(
        request_of("b: overlap, no id"),
        Value::Null,
        "two in flight: runner-scoped"
    );
    assert_eq!(request_of("a: overlap, with id"), "req-a");
    assert_eq!(request_of("b: overlap, with id"), b_id.as_str());
    assert_eq!(
        request_of("b: alone"),
        b_id.as_str(),
        "B alone in flight again"
    );

    let ready = &events(&records, "ready")[0];
    assert_eq!(ready["fields"]["via"], "health");
    let starts = events(&records, "request_start");
    let ends = events(&records, "request_end");
    assert_eq!(starts.len(), 2, "/healthz is not a request: {starts:#?}");
    assert_eq!(ends.len(), 2);
    for (id, path, status) in [("req-a", "/a", 200), (b_id.as_str(), "/b", 201)] {
        let start = starts.iter().find(|r| r["request_id"] == id).unwrap();
        assert_eq!(start["fields"]["method"], "GET");
        assert_eq!(start["fields"]["path"], path);
        assert_eq!(start["fields"]["via"], "proxy");
        let end = ends.iter().find(|r| r["request_id"] == id).unwrap();
        assert_eq!(end["fields"]["status"], status);
        assert_eq!(end["fields"]["outcome"], "completed");
        // B waited 300 ms for A's end.
        let at_least = if path == "/b" { 300 } else { 0 };
        assert!(
            end["fields"]["duration_ms"].as_u64().unwrap() >= at_least,
            "{end}"
        );
        assert!(end["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("request {id} ended: {status} in ")));
    }

    // One request, exactly: its start, its lines, its end.
    let only_a = server.logs(&["--app", "proxied", "--request", "req-a"]);
    assert_eq!(
        messages(&only_a),
        [
            "request req-a started",
            "a: alone",
            "a: overlap, with id",
            messages(&only_a)[3],
        ]
    );
    assert!(messages(&only_a)[3].starts_with("request req-a ended: 200 in"));

    let mut agent = agent;
    send_signal(agent.id(), libc::SIGTERM);
    let status = agent.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "python dies of the TERM"
    );
}

/// Talks to the agent through `TAILWATER_CONTROL`, checking every answer.
const CONTROL_CLIENT: &str = r#"
import json, os, socket
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["TAILWATER_CONTROL"])
f = conn.makefile("rw")
def send(command):
    f.write(json.dumps(command) + "\n")
    f.flush()
    return json.loads(f.readline())
print("booting")
assert send({"ready": True}) == {"ok": True}
print("before any request")
assert send({"request_start": "r1"}) == {"ok": True}
print("inside r1")
answer = send({"request_end": "r1", "status": 200})
assert answer["ok"] and answer["duration_ms"] >= 0, answer
print("after r1")
assert send({"request_start": "r2"}) == {"ok": True}
assert send({"request_start": "r3"}) == {"ok": True}
print("r2 and r3 in flight")
assert send({"log": "for r3 only", "request_id": "r3"}) == {"ok": True}
print(json.dumps({"msg": "structured for r2", "request_id": "r2"}))
assert send({"request_end": "r2", "error": "model exploded"})["ok"]
print("r3 alone")
answer = send({"request_end": "nope"})
assert answer["ok"] is False and "not in flight" in answer["error"], answer
answer = send({"what": 1})
assert answer["ok"] is False and "unknown command" in answer["error"], answer
f.write("not json\n")
f.flush()
assert json.loads(f.readline())["ok"] is False
print("answers ok")
"#;

#[test]
fn the_control_socket_marks_ready_and_requests() {
    let python = python();
    let server = TestServer::start();
    let agent = start_agent(&server, "controlled", &[], &[python, "-c", CONTROL_CLIENT]);
    let (status, stdout, stderr) = wait_agent(agent);
    assert!(status.success(), "{stdout}\n{stderr}");

    let records = records(&server, "controlled");
    let socket = records[0]["fields"]["control_socket"].as_str().unwrap();
    assert!(
        !Path::new(socket).exists(),
        "the socket is removed at the end"
    );
    let ready = &events(&records, "ready")[0];
    assert_eq!(ready["fields"]["via"], "control");
    let request_of = |text: &str| by_message(&records, text)["request_id"].clone();
    assert_eq!(request_of("booting"), Value::Null);
    assert_eq!(request_of("before any request"), Value::Null);
    assert_eq!(request_of("inside r1"), "r1");
    assert_eq!(request_of("after r1"), Value::Null);
    assert_eq!(request_of("r2 and r3 in flight"), Value::Null);
    assert_eq!(request_of("for r3 only"), "r3");
    assert_eq!(request_of("structured for r2"), "r2");
    assert_eq!(request_of("r3 alone"), "r3");
    assert_eq!(request_of("answers ok"), "r3");

    let end_of = |id: &str| {
        *events(&records, "request_end")
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no end of {id}"))
    };
    assert_eq!(end_of("r1")["fields"]["status"], 200);
    assert_eq!(end_of("r1")["fields"]["via"], "control");
    assert_eq!(end_of("r2")["fields"]["outcome"], "error");
    assert_eq!(end_of("r2")["fields"]["error"], "model exploded");
    assert_eq!(
        end_of("r3")["fields"]["outcome"],
        "unfinished",
        "in flight at exit"
    );
    assert_eq!(end_of("r3")["level"], "error");
    // The end of r3 comes before the exit record.
    assert_eq!(records.last().unwrap()["fields"]["event"], "exit");
}

/// Writes a burst of about 1.5 MB for r1 and ends it at once, while up to
/// 1 MiB of the burst still waits in the pipe; then starts r2 and writes one
/// line. (Under Tokio's scheduling the capture usually drains the pipe
/// before the control command runs even without the settle step; the
/// control socket test is the one that catches a missing settle.)
const BURST_THEN_NEXT_REQUEST: &str = r#"
import json, os, socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["TAILWATER_CONTROL"])
f = conn.makefile("rw")
def send(command):
    f.write(json.dumps(command) + "\n")
    f.flush()
    return json.loads(f.readline())
send({"request_start": "r1"})
sys.stdout.write("".join("burst %05d %s\n" % (i, "x" * 280) for i in range(5000)))
sys.stdout.flush()
send({"request_end": "r1", "status": 200})
send({"request_start": "r2"})
print("r2 line")
send({"request_end": "r2", "status": 200})
"#;

#[test]
fn lines_still_in_the_pipe_when_a_request_ends_stay_with_it() {
    let python = python();
    let server = TestServer::start();
    let agent = start_agent(
        &server,
        "burst",
        &["--quiet"],
        &[python, "-c", BURST_THEN_NEXT_REQUEST],
    );
    let (status, _, stderr) = wait_agent(agent);
    assert!(status.success(), "{stderr}");
    let records = records(&server, "burst");
    let burst: Vec<_> = records
        .iter()
        .filter(|r| r["message"].as_str().unwrap().starts_with("burst "))
        .collect();
    assert_eq!(burst.len(), 5000);
    let strays: Vec<_> = burst.iter().filter(|r| r["request_id"] != "r1").collect();
    assert!(
        strays.is_empty(),
        "{} burst lines not attributed to r1, the first: {}",
        strays.len(),
        strays[0]
    );
    assert_eq!(by_message(&records, "r2 line")["request_id"], "r2");
}

#[test]
fn a_progress_bar_drawn_with_carriage_returns_does_not_flood() {
    let python = python();
    let server = TestServer::start();
    // tqdm's way: "\r" and the whole bar, 101 times over about 2 s, to
    // stderr; then a newline.
    let worker = r##"
import sys, time
for i in range(101):
    sys.stderr.write("\r%3d%%|%-10s| %d/100" % (i, "#" * (i // 10), i))
    sys.stderr.flush()
    time.sleep(0.02)
sys.stderr.write("\n")
print("done")
"##;
    let agent = start_agent(
        &server,
        "progress",
        &["--progress-interval", "500ms"],
        &[python, "-c", worker],
    );
    let (status, _, stderr) = wait_agent(agent);
    assert!(status.success());
    assert_eq!(
        stderr.matches('\r').count(),
        101,
        "the echo is the worker's own bytes"
    );

    let records = records(&server, "progress");
    let bar_records: Vec<&Value> = records.iter().filter(|r| r["stream"] == "stderr").collect();
    let bars: Vec<&str> = bar_records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    // Each kept state says how many it stands for: all 101 between them,
    // and only the last is final.
    let updates: Vec<u64> = bar_records
        .iter()
        .map(|r| r["fields"]["progress_updates"].as_u64().unwrap())
        .collect();
    assert_eq!(updates[0], 1, "the first state stands for itself");
    assert_eq!(updates.iter().sum::<u64>(), 101, "{updates:?}");
    let finals: Vec<bool> = bar_records
        .iter()
        .map(|r| r["fields"]["progress_final"] == true)
        .collect();
    assert_eq!(finals.iter().filter(|last| **last).count(), 1);
    assert!(finals.last().unwrap());
    assert!(
        (3..=9).contains(&bars.len()),
        "about one state per 500ms and the final one, not 101: {bars:#?}"
    );
    assert!(
        bars[0].starts_with("  0%|"),
        "the first state at once: {bars:?}"
    );
    assert_eq!(
        *bars.last().unwrap(),
        "100%|##########| 100/100",
        "the final state"
    );
    let [collapsed] = events(&records, "progress_collapsed")[..] else {
        panic!("one progress_collapsed record: {records:#?}")
    };
    assert_eq!(collapsed["fields"]["states"], 101);
    assert_eq!(collapsed["fields"]["kept"], bars.len());
    assert_eq!(collapsed["fields"]["output"], "stderr");
    by_message(&records, "done");
}

fn seconds_between(earlier: &Value, later: &Value) -> f64 {
    let at = |record: &Value| {
        record["ts"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    (at(later) - at(earlier)).total(jiff::Unit::Second).unwrap()
}

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

/// A worker that counts its runs in `dir/runs`, prints `run N` and exits
/// with code 10 + N.
fn counting_worker(dir: &Path) -> String {
    let runs = dir.join("runs");
    format!(
        "n=$(cat {runs} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {runs}; echo \"run $n\"; exit $((10+n))",
        runs = runs.display()
    )
}

#[test]
fn on_failure_the_worker_restarts_with_backoff_up_to_the_limit() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let worker = counting_worker(dir.path());
    let started = Instant::now();
    let agent = start_agent(
        &server,
        "restarts",
        &["--restart", "on-failure", "--restart-max", "2"],
        &["sh", "-c", &worker],
    );
    let (status, stdout, _) = wait_agent(agent);
    // Two waits: 1 s, then 2 s.
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(status.code(), Some(13), "the last worker's code");
    assert_eq!(stdout, "run 1\nrun 2\nrun 3\n");

    wait_for_record(
        &server,
        "restarts",
        "the limit record",
        has_event("restart_limit"),
    );
    let records = records(&server, "restarts");
    let boot = &records[0]["boot"];
    assert!(records.iter().all(|record| &record["boot"] == boot));
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");
    // Each run's line, between its start and its exit, in one sequence.
    let story: Vec<String> = records
        .iter()
        .filter_map(|record| match record["fields"]["event"].as_str() {
            Some(event @ ("start" | "exit" | "restart" | "restart_limit")) => {
                Some(event.to_owned())
            }
            Some(_) => None,
            None => Some(record["message"].as_str().unwrap().to_owned()),
        })
        .collect();
    assert_eq!(
        story,
        [
            "start",
            "run 1",
            "exit",
            "restart",
            "start",
            "run 2",
            "exit",
            "restart",
            "start",
            "run 3",
            "exit",
            "restart_limit"
        ]
    );
    let restarts = events(&records, "restart");
    for (restart, (attempt, previous, delay)) in restarts.iter().zip([(1, 11, 1000), (2, 12, 2000)])
    {
        let fields = &restart["fields"];
        assert_eq!(fields["attempt"], attempt);
        assert_eq!(fields["restart_max"], 2);
        assert_eq!(fields["policy"], "on-failure");
        assert_eq!(fields["previous_exit"]["exit_code"], previous);
        assert_eq!(fields["delay_ms"], delay);
        assert_eq!(
            restart["message"],
            format!(
                "restarting the worker in {}s (restart {attempt} of 2, --restart on-failure): it exited with code {previous}",
                delay / 1000
            )
        );
    }
    // The runner table follows: the latest life is the last worker's.
    wait_for(
        "the runner to end as its last worker",
        Duration::from_secs(20),
        || {
            let (status, body) = http(
                "GET",
                server.port,
                "/v1/runners/restarts-runner",
                Some(TOKEN),
                None,
            );
            let runner: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            status == 200 && runner["state"] == "crashed" && runner["exit"]["code"] == 13
        },
    );
}

#[test]
fn a_worker_that_succeeds_is_not_restarted_on_failure_only() {
    let server = TestServer::start();
    let agent = start_agent(
        &server,
        "no-restart",
        &["--restart", "on-failure"],
        &["sh", "-c", "echo done"],
    );
    let (status, stdout, _) = wait_agent(agent);
    assert_eq!((status.code(), stdout.as_str()), (Some(0), "done\n"));
    wait_for_record(&server, "no-restart", "the exit", has_event("exit"));
    assert!(events(&records(&server, "no-restart"), "restart").is_empty());
}

#[test]
fn a_stop_signal_during_the_backoff_ends_the_agent_at_once() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let worker = counting_worker(dir.path());
    let mut agent = start_agent(
        &server,
        "always",
        &["--restart", "always", "--restart-max", "0"],
        &["sh", "-c", &worker],
    );
    let lines = lines_of(agent.stdout.take().unwrap());
    // The third run ends at once; the wait after it is 4 s.
    for expected in ["run 1", "run 2", "run 3"] {
        let (_, line) = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(line, expected);
    }
    wait_for_record(&server, "always", "the third restart", |record| {
        has_event("restart")(record) && record["fields"]["attempt"] == 3
    });
    let asked = Instant::now();
    send_signal(agent.id(), libc::SIGTERM);
    let status = wait_exit(&mut agent);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "the agent waited out the 4 s backoff: {:?}",
        asked.elapsed()
    );
    assert_eq!(status.code(), Some(13), "the last worker's code");
    assert!(
        lines.recv_timeout(Duration::from_secs(1)).is_err(),
        "no fourth run"
    );

    wait_for_record(
        &server,
        "always",
        "the cancelled restart",
        has_event("restart_cancelled"),
    );
    let records = records(&server, "always");
    let third = events(&records, "restart")[2];
    assert_eq!(third["fields"]["delay_ms"], 4000);
    assert_eq!(third["fields"]["restart_max"], 0);
    assert!(third["message"]
        .as_str()
        .unwrap()
        .contains("(restart 3, --restart always)"));
    // The third worker's exit is the last: the cancelled restart is a note
    // after it, not another exit.
    let exits = events(&records, "exit");
    assert_eq!(exits.len(), 3, "one exit per run");
    assert_eq!(exits[2]["fields"]["exit_code"], 13);
    let last = records.last().unwrap();
    assert_eq!(last["fields"]["event"], "restart_cancelled");
    assert_eq!(last["fields"]["attempt"], 3);
    assert_eq!(last["fields"]["stop_signal"], libc::SIGTERM);
    assert_eq!(last["fields"]["stop_signal_name"], "SIGTERM");
    assert_eq!(last["fields"]["previous_exit"]["exit_code"], 13);
    assert!(last["message"]
        .as_str()
        .unwrap()
        .starts_with("received SIGTERM while waiting to restart the worker: not restarting"));
    // The server shows the runner as its last worker ended, not waiting to
    // start again (and so never lost).
    let (status, body) = http(
        "GET",
        server.port,
        "/v1/runners/always-runner",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let runner: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runner["state"], "crashed", "{runner}");
    assert_eq!(runner["exit"]["code"], 13, "{runner}");
    let time = |value: &Value| value.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert_eq!(
        time(&runner["exited_at"]),
        time(&exits[2]["ts"]),
        "the last worker's exit: {runner}"
    );
}

/// A WebSocket echo server from Python's standard library: the handshake,
/// then each text frame printed (so the line belongs to the request) and
/// echoed back in capitals; a close frame is answered and ends it.
const WEBSOCKET_SERVER: &str = r#"
import base64, hashlib, os, socketserver, struct, sys
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def say(text):
    os.write(1, (text + "\n").encode())
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        headers = {}
        self.rfile.readline()
        while True:
            line = self.rfile.readline().decode().strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        say("handshake for " + headers.get("x-request-id", "no id"))
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                say("socket closed")
                return
            text = data.decode()
            say("got " + text)
            reply = text.upper().encode()
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

#[test]
fn a_websocket_passes_through_the_proxy_as_one_request() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let python = python();
    let server = TestServer::start();
    let (listen, worker_port) = (free_port(), free_port());
    let proxy = format!("127.0.0.1:{listen}=127.0.0.1:{worker_port}");
    let worker_port_text = worker_port.to_string();
    let agent = start_agent(
        &server,
        "sockets",
        &["--proxy", &proxy],
        &[python, "-c", WEBSOCKET_SERVER, &worker_port_text],
    );
    wait_for("the worker to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", worker_port)).is_ok()
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request_id = runtime.block_on(async {
        let mut request = format!("ws://127.0.0.1:{listen}/echo")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("x-request-id", "ws-1".parse().unwrap());
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.status(), 101);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        for word in ["hello", "again"] {
            socket.send(Message::text(word)).await.unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("an answer within 20 s")
                .unwrap()
                .unwrap();
            assert_eq!(answer, Message::text(word.to_uppercase()));
        }
        socket.close(None).await.unwrap();
        // The worker's close frame, then the end.
        while let Some(Ok(_)) = socket.next().await {}
        id
    });
    assert_eq!(request_id, "ws-1");

    wait_for_record(
        &server,
        "sockets",
        "the request's end",
        has_event("request_end"),
    );
    send_signal(agent.id(), libc::SIGTERM);
    let (_, stdout, _) = wait_agent(agent);
    assert!(stdout.contains("got hello\ngot again\n"), "{stdout}");

    let records = records(&server, "sockets");
    let [start] = events(&records, "request_start")[..] else {
        panic!("one request start: {records:#?}")
    };
    let [end] = events(&records, "request_end")[..] else {
        panic!("one request end: {records:#?}")
    };
    assert_eq!(start["request_id"], "ws-1");
    assert_eq!(start["fields"]["path"], "/echo");
    assert_eq!(end["request_id"], "ws-1");
    assert_eq!(end["fields"]["status"], 101);
    assert_eq!(end["fields"]["outcome"], "completed");
    // Everything the worker printed for the connection is the request's,
    // and came between its start and its end.
    for text in [
        "handshake for ws-1",
        "got hello",
        "got again",
        "socket closed",
    ] {
        let line = by_message(&records, text);
        assert_eq!(line["request_id"], "ws-1", "{line}");
        let seq = line["seq"].as_u64().unwrap();
        assert!(start["seq"].as_u64().unwrap() < seq && seq < end["seq"].as_u64().unwrap());
    }
}
