//! Runner and request scopes end to end: real workers under the real agent,
//! the real server, and the `runners`, `requests` and `apps` commands.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `tailwater ARGS…` against `server`: its stdout, after checking it
/// succeeded.
fn cli(server: &TestServer, args: &[&str]) -> String {
    let output = server.command(args).output().unwrap();
    assert!(
        output.status.success(),
        "tailwater {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn cli_json(server: &TestServer, args: &[&str]) -> Value {
    let text = cli(server, args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not json ({e}): {text}"))
}

fn runner(server: &TestServer, id: &str) -> Value {
    cli_json(server, &["runners", "show", id, "--json"])
}

fn wait_for_runner(
    server: &TestServer,
    id: &str,
    what: &str,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    wait_for(what, Duration::from_secs(30), || {
        let (status, body) = http(
            "GET",
            server.port,
            &format!("/v1/runners/{id}"),
            Some(TOKEN),
            None,
        );
        last = serde_json::from_str(&body).unwrap_or(Value::Null);
        status == 200 && holds(&last)
    });
    last
}

#[test]
fn runner_states_of_real_workers_and_the_cli_tables() {
    let server = TestServer::start();
    assert_eq!(
        run_worker(&server, "fine", "echo hello; exit 0")
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        run_worker(&server, "broken", "echo 'cannot import torch' >&2; exit 3")
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        run_worker(&server, "segv", "kill -SEGV $$").status.code(),
        Some(128 + 11)
    );

    let listed = cli_json(&server, &["runners", "ls", "--json"]);
    let runners = listed["runners"].as_array().unwrap();
    assert_eq!(runners.len(), 3, "{listed}");
    // Newest start first.
    let ids: Vec<&str> = runners
        .iter()
        .map(|r| r["runner"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["segv-runner", "broken-runner", "fine-runner"]);

    let fine = runner(&server, "fine-runner");
    assert_eq!(fine["state"], "exited");
    assert_eq!(
        fine["exit"],
        serde_json::json!({"code": 0, "signal": null, "core_dumped": false, "oom_killed": false})
    );
    assert!(fine["exited_at"].is_string() && fine["started"].is_string());
    let events: Vec<&str> = fine["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["fields"]["event"].as_str())
        .collect();
    assert_eq!(events.first(), Some(&"start"));
    assert_eq!(events.last(), Some(&"exit"));
    let broken = runner(&server, "broken-runner");
    assert_eq!(
        (broken["state"].as_str(), &broken["exit"]["code"]),
        (Some("crashed"), &Value::from(3))
    );
    let segv = runner(&server, "segv-runner");
    assert_eq!(
        (segv["state"].as_str(), &segv["exit"]["signal"]),
        (Some("crashed"), &Value::from(11))
    );

    let crashed = cli_json(&server, &["runners", "ls", "--state", "crashed", "--json"]);
    assert_eq!(crashed["runners"].as_array().unwrap().len(), 2);
    let only_fine = cli_json(&server, &["runners", "ls", "--app", "fine", "--json"]);
    assert_eq!(only_fine["runners"][0]["runner"], "fine-runner");

    // Human output: aligned columns, relative times.
    let table = cli(&server, &["runners", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("RUNNER"), "{table}");
    let state_column = lines[0].find("STATE").unwrap();
    for line in &lines[1..] {
        let state = &line[state_column..];
        assert!(
            state.starts_with("exited") || state.starts_with("crashed"),
            "aligned: {table}"
        );
        assert!(
            line.contains(" ago") || line.contains("just now"),
            "relative times: {table}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|line| line.contains("broken-runner") && line.contains("code 3")),
        "{table}"
    );
    let shown = cli(&server, &["runners", "show", "broken-runner"]);
    assert!(
        shown.contains("crashed") && shown.contains("code 3"),
        "{shown}"
    );
    assert!(
        shown.contains("events:") && shown.contains("exited with code 3"),
        "{shown}"
    );

    // Its logs, through `tailwater logs`.
    let logs = json_lines(cli(&server, &["runners", "logs", "broken-runner", "--json"]).as_bytes());
    assert!(messages(&logs).contains(&"cannot import torch"), "{logs:?}");
    assert!(logs
        .iter()
        .all(|record| record["runner"] == "broken-runner"));

    let apps = cli(&server, &["apps", "ls"]);
    for app in ["fine", "broken", "segv"] {
        assert!(apps.lines().any(|line| line.starts_with(app)), "{apps}");
    }

    // Errors say what to do.
    let output = server
        .command(&["runners", "show", "nobody"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("tailwater runners ls"));
    let output = server
        .command(&["runners", "ls", "--state", "asleep"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("use one of initializing"));
    for help in [
        ["runners", "ls"],
        ["runners", "logs"],
        ["requests", "show"],
        ["requests", "logs"],
    ] {
        let text = cli(&server, &[help[0], help[1], "--help"]);
        assert!(text.contains("Examples:"), "{help:?}: {text}");
    }
}

#[test]
fn a_runner_whose_agent_is_killed_goes_lost_and_the_table_survives_a_server_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flags = ["--heartbeat-timeout", "3s"];
    let server = TestServer::start_on_with(ANY_PORT, &data, &flags);
    let port = server.port;
    assert_eq!(run_worker(&server, "done", "exit 0").status.code(), Some(0));

    let mut agent = server
        .command(&[
            "run",
            "--app",
            "gone",
            "--runner",
            "gone-runner",
            "--",
            "sh",
            "-c",
            "echo up; exec sleep 600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = wait_for_runner(&server, "gone-runner", "the runner's start", |runner| {
        runner["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty())
    });
    let worker_pid = started["events"][0]["fields"]["pid"].as_i64().unwrap();
    agent.kill().unwrap();
    agent.wait().unwrap();
    // SAFETY: kill(2) of the worker this test started, orphaned above.
    unsafe { libc::kill(worker_pid as libc::pid_t, libc::SIGKILL) };

    let lost = wait_for_runner(&server, "gone-runner", "the runner to be lost", |runner| {
        runner["state"] == "lost"
    });
    let notice = lost["events"].as_array().unwrap().last().unwrap();
    assert_eq!(notice["fields"]["event"], "lost", "{lost}");
    assert!(
        notice["message"].as_str().unwrap().contains("is lost"),
        "{notice}"
    );
    let logs = json_lines(
        cli(
            &server,
            &[
                "runners",
                "logs",
                "gone-runner",
                "--json",
                "--stream",
                "system",
            ],
        )
        .as_bytes(),
    );
    assert!(
        logs.iter()
            .any(|record| record["fields"]["event"] == "lost"),
        "in its logs: {logs:?}"
    );

    // Once the table is on disk, kill -9 the server: the table comes back.
    let table = data.join("runners/runners.json");
    wait_for("the table to be saved", Duration::from_secs(30), || {
        std::fs::read_to_string(&table).is_ok_and(|text| text.contains("\"lost\""))
    });
    let before = cli_json(&server, &["runners", "ls", "--json"]);
    server.kill_9();
    let server = TestServer::start_on_with(port, &data, &flags);
    let after = cli_json(&server, &["runners", "ls", "--json"]);
    assert_eq!(after, before);
    assert_eq!(runner(&server, "done-runner")["state"], "exited");
}

/// Serves three requests through the control socket: one completed, one
/// left in flight until the file named by argv[1] exists, one still in
/// flight when the worker exits.
const REQUESTS_WORKER: &str = r#"
import json, os, socket, sys, time
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["TAILWATER_CONTROL"])
f = conn.makefile("rw")
def send(command):
    f.write(json.dumps(command) + "\n")
    f.flush()
    assert json.loads(f.readline())["ok"]
send({"ready": True})
send({"request_start": "req-done"})
print("working on req-done")
send({"request_end": "req-done", "status": 201})
send({"request_start": "req-open"})
print("req-open has begun")
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
print("req-open later line")
send({"request_end": "req-open", "status": 200})
send({"request_start": "req-cut"})
print("req-cut never ends")
"#;

#[test]
fn requests_marked_through_the_agent_show_their_state_and_logs() {
    let python = python();
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let go_text = go.to_str().unwrap();
    let agent = server
        .command(&[
            "run",
            "--app",
            "ctl",
            "--runner",
            "ctl-runner",
            "--",
            python,
            "-c",
            REQUESTS_WORKER,
            go_text,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for_runner(&server, "ctl-runner", "a request in flight", |runner| {
        runner["state"] == "running"
            && runner["requests"] == serde_json::json!({"served": 1, "failed": 0, "in_flight": 1})
    });
    let done = cli_json(&server, &["requests", "show", "req-done", "--json"]);
    assert_eq!(done["state"], "completed");
    assert_eq!(done["status"], 201);
    assert_eq!(done["error"], serde_json::Value::Null, "no error: {done}");
    assert_eq!(
        (done["app"].as_str(), done["runner"].as_str()),
        (Some("ctl"), Some("ctl-runner"))
    );
    assert!(
        done["duration_ms"].is_u64() && done["ended"].is_string(),
        "{done}"
    );
    let open = cli_json(&server, &["requests", "show", "req-open", "--json"]);
    assert_eq!(
        (open["state"].as_str(), &open["ended"]),
        (Some("in_flight"), &Value::Null)
    );
    let shown = cli(&server, &["requests", "show", "req-done"]);
    assert!(
        shown.contains("completed") && shown.contains("201") && shown.contains("ctl-runner"),
        "{shown}"
    );

    // Follow the open request's logs, then let it go on.
    let mut follower: Child = server
        .command(&["requests", "logs", "req-open", "-f", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let printed = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (out, printed) = (follower.stdout.take().unwrap(), printed.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let mut printed = printed.lock().unwrap();
                printed.push_str(&line);
                printed.push('\n');
            }
        })
    };
    let has = |text: &str| printed.lock().unwrap().contains(text);
    wait_for(
        "the follower to print the history",
        Duration::from_secs(30),
        || has("req-open has begun"),
    );
    std::fs::write(&go, "").unwrap();
    let mut agent = agent;
    wait_for("the worker to exit", Duration::from_secs(60), || {
        agent.try_wait().unwrap().is_some()
    });
    wait_for(
        "the follower to print the later line",
        Duration::from_secs(30),
        || has("req-open later line"),
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
    reader.join().unwrap();
    let followed = json_lines(printed.lock().unwrap().as_bytes());
    let followed = messages(&followed);
    assert!(followed.contains(&"req-open has begun"), "{followed:?}");
    assert!(
        followed.contains(&"req-open later line"),
        "followed live: {followed:?}"
    );
    assert!(
        followed.iter().all(|message| !message.contains("req-done")),
        "{followed:?}"
    );

    let page = json_lines(cli(&server, &["requests", "logs", "req-done", "--json"]).as_bytes());
    assert!(messages(&page).contains(&"working on req-done"));
    let cut = cli_json(&server, &["requests", "show", "req-cut", "--json"]);
    assert_eq!(cut["state"], "unfinished", "{cut}");
    // What cut it short is said, in the API and by `requests show`.
    assert!(
        cut["error"]
            .as_str()
            .is_some_and(|error| error.contains("still in flight when the worker exited")),
        "{cut}"
    );
    let shown = server
        .command(&["requests", "show", "req-cut"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown
            .lines()
            .any(|line| line.starts_with("error") && line.contains("still in flight")),
        "{shown}"
    );
    let runner = runner(&server, "ctl-runner");
    assert_eq!(runner["state"], "exited");
    assert_eq!(
        runner["requests"],
        // req-cut, left unfinished by the worker's exit, failed.
        serde_json::json!({"served": 2, "failed": 1, "in_flight": 0})
    );

    let output = server
        .command(&["requests", "show", "req-nope"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no request 'req-nope'"));
}
