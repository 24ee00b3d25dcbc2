use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn sigkill_right_after_a_print_keeps_the_line_and_records_signal_9() {
    let server = TestServer::start();
    let output = run_worker(
        &server,
        "killed",
        "echo 'last words before the kill'; kill -9 $$",
    );
    assert_eq!(
        output.status.code(),
        Some(128 + 9),
        "the agent exits 128 + signal"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "last words before the kill\n",
        "echoed"
    );

    let records = server.logs(&["--app", "killed"]);
    let stdout: Vec<_> = records
        .iter()
        .filter(|r| r["stream"] == "stdout")
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, ["last words before the kill"]);
    let exit = records.last().unwrap();
    assert_eq!(exit["stream"], "system");
    assert_eq!(exit["fields"]["event"], "exit");
    assert_eq!(exit["fields"]["signal"], 9);
    assert_eq!(exit["fields"]["signal_name"], "SIGKILL");
    assert!(exit["message"]
        .as_str()
        .unwrap()
        .starts_with("killed by signal 9 (SIGKILL)"));
}

#[test]
fn exit_code_streams_and_first_bytes_are_kept() {
    let server = TestServer::start();
    let output = run_worker(
        &server,
        "exits",
        "echo \"unbuffered=$PYTHONUNBUFFERED\"; echo 'to stderr' >&2; printf 'no newline at the end'; exit 3",
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "to stderr\n");

    let records = server.logs(&["--app", "exits"]);
    let start = &records[0];
    assert_eq!(start["fields"]["event"], "start");
    assert_eq!(
        start["fields"]["command"],
        serde_json::json!(["sh", "-c", start["fields"]["command"][2]])
    );
    assert!(start["fields"]["pid"].as_u64().unwrap() > 0);
    let lines: Vec<_> = records[1..records.len() - 1]
        .iter()
        .map(|r| {
            (
                r["stream"].as_str().unwrap(),
                r["message"].as_str().unwrap(),
            )
        })
        .collect();
    let stdout: Vec<_> = lines
        .iter()
        .filter(|(s, _)| *s == "stdout")
        .map(|(_, m)| *m)
        .collect();
    assert_eq!(stdout, ["unbuffered=1", "no newline at the end"]);
    assert!(lines.contains(&("stderr", "to stderr")));
    let exit = records.last().unwrap();
    assert_eq!(exit["fields"]["exit_code"], 3);
    assert_eq!(exit["level"], "error");
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..records.len() as u64).collect::<Vec<_>>(),
        "one sequence, no gaps"
    );
}

#[test]
fn a_command_that_cannot_start_is_reported() {
    let server = TestServer::start();
    let output = server
        .command(&["run", "--app", "missing", "--", "/no/such/worker"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed to start /no/such/worker"));
    let records = server.logs(&["--app", "missing"]);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["fields"]["event"], "spawn_failed");
}

#[test]
fn a_server_started_after_the_worker_still_receives_every_line_once() {
    // The agent's address from the start; the server comes later.
    let relay = Relay::without_server();
    let port = relay.port;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Command::new(binary())
        .args([
            "run",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "--token",
            TOKEN,
            "--app",
            "early",
            // Its own spool, not the machine's default place (shared by
            // every agent of this host that is given no --spool).
            "--spool",
        ])
        .arg(dir.path().join("spool"))
        .args([
            "--",
            "sh",
            "-c",
            "i=1; while [ $i -le 300 ]; do echo \"line $i\"; i=$((i+1)); done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The worker has written its last line (the agent echoes it) before
    // the server exists.
    let echoed = lines_of(agent.stdout.take().unwrap());
    line_containing(&echoed, "line 300", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the worker's last line was not echoed: {seen:?}"));
    let server = TestServer::start_on(ANY_PORT, &dir.path().join("data"));
    relay.connect_to(server.port);
    let output = agent.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");

    let records = server.logs(&["--app", "early"]);
    let lines: Vec<_> = records
        .iter()
        .filter(|r| r["stream"] == "stdout")
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        lines,
        (1..=300).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    let seqs: HashSet<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), records.len(), "no record stored twice");
    // Besides the lines, only lifecycle records: start first, exit last
    // (and, where no memory cgroup is readable, a note saying so).
    let events: Vec<&str> = records
        .iter()
        .filter(|r| r["stream"] == "system")
        .map(|r| r["fields"]["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(events.first(), Some(&"start"));
    assert_eq!(events.last(), Some(&"exit"));
    assert_eq!(records.len() - events.len(), 300);
}

#[test]
fn lines_the_server_refuses_are_reported_in_the_runners_logs_and_on_stderr() {
    let server = TestServer::start();
    // A JSON line's own time is its record's: one from 2020 is past the
    // server's retention (90 days), and refused inside a 200.
    let output = run_worker(
        &server,
        "refused",
        r#"echo '{"ts":"2020-01-01T00:00:00Z","msg":"from long ago"}'; echo 'a line of now'"#,
    );
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused 1 lines of this runner") && stderr.contains("retention"),
        "{stderr}"
    );

    let records = server.logs(&["--app", "refused"]);
    let messages = messages(&records);
    assert!(messages.contains(&"a line of now"), "{messages:?}");
    assert!(!messages.contains(&"from long ago"), "{messages:?}");
    let reports: Vec<_> = records
        .iter()
        .filter(|r| r["fields"]["event"] == "server_refused")
        .collect();
    assert_eq!(reports.len(), 1, "{records:#?}");
    let report = reports[0];
    assert_eq!(report["stream"], "system");
    assert_eq!(report["fields"]["refused_lines"], 1);
    assert_eq!(report["fields"]["refused_total"], 1);
    assert_eq!(
        report["fields"]["reasons"],
        serde_json::json!({"older_than_retention": 1})
    );
    assert!(report["message"]
        .as_str()
        .unwrap()
        .contains("older than the app's retention"));
}
