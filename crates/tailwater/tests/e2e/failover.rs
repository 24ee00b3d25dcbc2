//! The agent ships to several servers (`--server A,B`), failing over: a
//! kill -9 of the one in use loses no line, and what comes after goes to
//! the next; `tailwater agent status` shows the server in use and the
//! failover, and the new server counts it in its metrics.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{http, messages, wait_for, TestServer, ANY_PORT, TOKEN};

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

/// `tailwater agent status --json` of the agent whose control socket is
/// `socket`.
fn agent_status(server: &TestServer, socket: &std::path::Path) -> serde_json::Value {
    let output = server
        .command(&["agent", "status", "--json", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "agent status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn the_agents_status_shows_the_server_in_use_and_a_failover_after_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_on(ANY_PORT, &dir.path().join("a"));
    let b = TestServer::start_on(ANY_PORT, &dir.path().join("b"));
    let (socket, stop) = (dir.path().join("control.sock"), dir.path().join("stop"));
    let script = format!(
        "i=0; while [ ! -e {stop} ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done",
        stop = stop.display(),
    );
    let servers = format!("{},{}", a.url(), b.url());
    let agent = b
        .command(&[
            "run",
            "--server",
            &servers,
            "--app",
            "statusapp",
            "--runner",
            "status-1",
        ])
        .arg("--control-socket")
        .arg(&socket)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Before: shipping to A, no failover.
    let mut before = serde_json::Value::Null;
    wait_for(
        "the agent's status shows lines shipped to A",
        Duration::from_secs(30),
        || {
            before = if socket.exists() {
                agent_status(&b, &socket)
            } else {
                return false;
            };
            before["shipped"]["lines"].as_u64().unwrap_or(0) >= 20
        },
    );
    assert_eq!(before["server"], a.url().as_str(), "{before}");
    assert_eq!(
        before["servers"],
        serde_json::json!([a.url(), b.url()]),
        "{before}"
    );
    assert_eq!(before["failovers"]["count"], 0, "{before}");
    assert_eq!(before["app"], "statusapp", "{before}");
    assert_eq!(before["runner"], "status-1", "{before}");
    assert!(before["spool"]["lines"].is_u64(), "{before}");
    let text = b
        .command(&["agent", "status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("server      {} (in use", a.url())),
        "{text}"
    );
    assert!(text.contains("failovers   0"), "{text}");

    // A dies: the status moves to B, with the failover and the error.
    let a_url = a.url();
    a.kill_9();
    let mut after = serde_json::Value::Null;
    wait_for(
        "the agent's status shows B in use, shipping",
        Duration::from_secs(30),
        || {
            after = agent_status(&b, &socket);
            after["server"] == b.url().as_str()
                && after["shipped"]["lines"].as_u64()
                    > before["shipped"]["lines"].as_u64().map(|n| n + 20)
        },
    );
    assert_eq!(after["failovers"]["count"], 1, "{after}");
    let last = &after["failovers"]["last"];
    assert_eq!(last["from"], a_url.as_str(), "{after}");
    assert_eq!(last["to"], b.url().as_str(), "{after}");
    assert!(
        last["at"].is_string() && last["reason"].is_string(),
        "{after}"
    );
    assert_eq!(after["last_error"]["server"], a_url.as_str(), "{after}");
    assert_eq!(after["failing"], false, "{after}");
    let text = b
        .command(&["agent", "status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("failovers   1, the last ")
            && text.contains(&format!("{a_url} -> {}", b.url())),
        "{text}"
    );

    // B counts the failover its agent told.
    let failovers = || {
        let (status, metrics) = http("GET", b.port, "/metrics", Some(TOKEN), None);
        assert_eq!(status, 200, "{metrics}");
        metrics
            .lines()
            .find(|line| {
                line.starts_with("tailwater_agent_failovers_total")
                    && line.contains("app=\"statusapp\"")
            })
            .and_then(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
    };
    wait_for("B counts the failover", Duration::from_secs(10), || {
        failovers() == Some(1.0)
    });

    std::fs::File::create(&stop).unwrap();
    let output = agent.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // With no agent at the socket, the command says so.
    let gone = b
        .command(&["agent", "status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!gone.status.success());
    let said = String::from_utf8_lossy(&gone.stderr);
    assert!(
        said.contains("cannot reach an agent at") && said.contains("--control-socket"),
        "{said}"
    );
}
