//! `--restart` with real processes: backoff up to the limit, no restart
//! of a success under on-failure, and a stop signal during the backoff.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::supervisor::*;

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
