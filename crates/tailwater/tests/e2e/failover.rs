//! The agent ships to several servers (`--server A,B`), failing over: a
//! kill -9 of the one in use loses no line, and what comes after goes to
//! the next.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{messages, wait_for, TestServer, ANY_PORT};

/// `line N` messages of the `failover` app stored on `server`.
fn stored(server: &TestServer) -> BTreeSet<String> {
    messages(&server.logs(&["--app", "failover"]))
        .into_iter()
        .filter(|message| message.starts_with("line "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_kill_9_of_the_server_in_use_fails_over_to_the_next_losing_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let a = TestServer::start_on(ANY_PORT, &data_a);
    let b = TestServer::start_on(ANY_PORT, &data_b);
    let (killed, stop) = (dir.path().join("killed"), dir.path().join("stop"));
    // Numbered lines; those printed once `killed` exists are marked
    // `after` (the file is made only once server A is dead).
    let script = format!(
        "i=0; while [ ! -e {stop} ]; do if [ -e {killed} ]; then echo \"line $i after\"; else echo \"line $i\"; fi; i=$((i+1)); sleep 0.005; done",
        stop = stop.display(),
        killed = killed.display()
    );
    let servers = format!("{},{}", a.url(), b.url());
    let agent = b
        .command(&[
            "run",
            "--server",
            &servers,
            "--app",
            "failover",
            "--runner",
            "failover-1",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    wait_for("lines on server A", Duration::from_secs(30), || {
        stored(&a).len() >= 50
    });
    let a_url = a.url();
    a.kill_9();
    std::fs::File::create(&killed).unwrap();
    wait_for(
        "lines printed after the kill on server B",
        Duration::from_secs(30),
        || stored(&b).iter().filter(|m| m.ends_with(" after")).count() >= 50,
    );
    std::fs::File::create(&stop).unwrap();
    let output = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed: {stderr}");

    let printed: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("line "))
        .map(str::to_owned)
        .collect();
    let after: BTreeSet<&String> = printed.iter().filter(|l| l.ends_with(" after")).collect();
    assert!(after.len() >= 50, "{} lines after the kill", after.len());

    // What A acknowledged before it died is on its disk: read it again.
    let a = TestServer::start_on(ANY_PORT, &data_a);
    let on_a = stored(&a);
    let on_b = stored(&b);
    let missing: Vec<&String> = printed
        .iter()
        .filter(|line| !on_a.contains(*line) && !on_b.contains(*line))
        .collect();
    assert!(
        missing.is_empty(),
        "lines stored on neither server: {missing:?}"
    );
    let not_on_b: Vec<&&String> = after.iter().filter(|line| !on_b.contains(**line)).collect();
    assert!(
        not_on_b.is_empty(),
        "lines after the kill not on B: {not_on_b:?}"
    );
    assert!(
        on_a.iter().all(|line| !line.ends_with(" after")),
        "A had lines printed after it died"
    );

    // The failover is told: on stderr, and in the runner's own logs on B.
    assert!(
        stderr.contains(&format!("{a_url} is unavailable"))
            && stderr.contains(&format!("shipping to {} from now on (failover 1)", b.url())),
        "{stderr}"
    );
    let records = b.logs(&["--app", "failover"]);
    let failover = records
        .iter()
        .find(|r| r["fields"]["event"] == "server_failover")
        .unwrap_or_else(|| panic!("no server_failover record on B: {records:?}"));
    assert_eq!(failover["fields"]["to"], b.url().as_str(), "{failover}");
    assert_eq!(failover["fields"]["failovers"], 1, "{failover}");
}
