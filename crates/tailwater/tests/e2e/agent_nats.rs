//! `tailwater run --nats`: the agent publishes straight to a tailwater
//! cluster's NATS (docs/agents-on-nats.md), on nats-servers configured
//! with the documented users and permissions. A worker's lines reach the
//! stores of both nodes, through a node's pipeline (redacted); the same
//! credential run as another app is refused by nats-server, the agent
//! says why, and nothing of that app is stored. A kill -9 of the NATS
//! server an agent publishes through is a failover in `tailwater agent
//! status`, and loses no line. The same with nkey users (`--nats-nkey` on
//! the node and the agent): the agent's lines are stored, another app's
//! are refused; a seed others may read, or one the servers do not know,
//! is refused with what to do. With creds files (`--nats-creds`) against
//! servers in operator mode: the same permissions hold.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::cluster::nats::{nkey_accounts, NatsCluster, AGENT_ACCOUNTS};
use super::common::{http, ingest_batch, messages, wait_for, TestServer, ANY_PORT, TOKEN};

#[path = "../../../server/tests/cluster/operator.rs"]
mod operator;
use operator::OperatorMode;

fn node(dir: &Path, name: &str, urls: &str) -> TestServer {
    let flags = [
        "--nats",
        urls,
        "--node",
        name,
        "--nats-partitions",
        "4",
        "--nats-max-bytes",
        "268435456",
    ];
    TestServer::start_on_with(ANY_PORT, &dir.join(name), &flags)
}

/// The messages of `app`'s runner `runner` stored on `node`.
fn stored(node: &TestServer, app: &str, runner: &str) -> Vec<String> {
    messages(&node.logs(&["--app", app, "--runner", runner]))
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_agent_publishing_to_nats_reaches_every_node_and_cannot_write_another_app() {
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsCluster::start_with(3, AGENT_ACCOUNTS);
    let nodes = nats.urls_as("node", "nodepw").join(",");
    let a = node(dir.path(), "a", &nodes);
    let b = node(dir.path(), "b", &nodes);
    // Both apps exist, so only the permissions keep web's lines out.
    for app in ["api", "web"] {
        let (status, answer) = http(
            "POST",
            a.port,
            "/v1/ingest",
            Some(TOKEN),
            Some(&ingest_batch(app, "http", 0..1)),
        );
        assert_eq!(status, 200, "{answer}");
    }

    let agent_urls = nats.urls_as("agent-default-api", "agentpw").join(",");
    let script = "for i in $(seq 0 49); do echo \"line $i\"; done; echo 'key AKIAIOSFODNN7EXAMPLE'";
    let output = a
        .command(&[
            "run",
            "--nats",
            &agent_urls,
            "--app",
            "api",
            "--runner",
            "gpu-7",
        ])
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed: {stderr}");
    for node in [&a, &b] {
        wait_for(
            "the agent's lines on every node",
            Duration::from_secs(60),
            || {
                stored(node, "api", "gpu-7")
                    .iter()
                    .filter(|m| m.starts_with("line ") || m.starts_with("key "))
                    .count()
                    == 51
            },
        );
        let lines = stored(node, "api", "gpu-7");
        assert!(
            lines.iter().all(|m| !m.contains("AKIA")),
            "unredacted: {lines:?}"
        );
        assert!(lines.iter().any(|m| m.contains("[REDACTED")), "{lines:?}");
    }

    // The api credential run as app web: nats-server refuses every
    // publish; the agent says why and keeps the lines in its spool.
    let output = a
        .command(&[
            "run",
            "--nats",
            &agent_urls,
            "--app",
            "web",
            "--runner",
            "gpu-8",
        ])
        .args([
            "--drain-timeout",
            "20s",
            "--",
            "sh",
            "-c",
            "echo 'a web line'",
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("permissions violation")
            && stderr.contains("may not publish to tailwater.intake.default.web.gpu-8"),
        "{stderr}"
    );
    assert!(stderr.contains("could not be shipped"), "{stderr}");
    for node in [&a, &b] {
        assert!(stored(node, "web", "gpu-8").is_empty(), "web was written");
    }

    // A kill -9 of the NATS server the agent publishes through: the
    // client moves to another, `agent status` shows the move, and every
    // line printed reaches the nodes.
    let (socket, stop) = (dir.path().join("control.sock"), dir.path().join("stop"));
    let script = format!(
        "i=0; while [ ! -e {stop} ]; do echo \"moved $i\"; i=$((i+1)); sleep 0.01; done",
        stop = stop.display()
    );
    let agent = a
        .command(&[
            "run",
            "--nats",
            &agent_urls,
            "--app",
            "api",
            "--runner",
            "gpu-9",
        ])
        .arg("--control-socket")
        .arg(&socket)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = || -> serde_json::Value {
        let output = a
            .command(&["agent", "status", "--json", "--socket"])
            .arg(&socket)
            .output()
            .unwrap();
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    };
    let mut before = serde_json::Value::Null;
    wait_for("the agent publishing", Duration::from_secs(30), || {
        before = status();
        before["shipped"]["lines"].as_u64().unwrap_or(0) >= 20
    });
    let in_use = before["server"].as_str().unwrap().to_owned();
    assert!(in_use.starts_with("nats://127.0.0.1:"), "{before}");
    assert_eq!(before["failovers"]["count"], 0, "{before}");
    let killed = nats
        .urls()
        .iter()
        .position(|url| *url == in_use)
        .unwrap_or_else(|| panic!("{in_use} is none of {:?}", nats.urls()));
    nats.kill(killed);
    let mut after = serde_json::Value::Null;
    wait_for(
        "the failover in the agent's status",
        Duration::from_secs(60),
        || {
            after = status();
            after["failovers"]["count"] == 1
                && after["shipped"]["lines"].as_u64()
                    > before["shipped"]["lines"].as_u64().map(|n| n + 20)
        },
    );
    assert_ne!(after["server"], in_use.as_str(), "{after}");
    assert_eq!(
        after["failovers"]["last"]["from"],
        in_use.as_str(),
        "{after}"
    );
    std::fs::File::create(&stop).unwrap();
    let output = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("the connection to {in_use} was lost")),
        "{stderr}"
    );
    let printed = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("moved "))
        .count();
    for node in [&a, &b] {
        wait_for("every line on every node", Duration::from_secs(60), || {
            stored(node, "api", "gpu-9")
                .iter()
                .filter(|m| m.starts_with("moved "))
                .count()
                == printed
        });
    }
}

/// `text` (a seed, a creds file) in `dir/name` with `mode`.
fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn an_agent_with_an_nkey_reaches_the_node_and_cannot_write_another_app() {
    let dir = tempfile::tempdir().unwrap();
    let (node_key, agent_key) = (nkeys::KeyPair::new_user(), nkeys::KeyPair::new_user());
    let nats = NatsCluster::start_with(
        3,
        &nkey_accounts(&node_key.public_key(), &agent_key.public_key()),
    );
    let urls = nats.urls().join(",");
    let node_seed = secret_file(dir.path(), "node.nk", &node_key.seed().unwrap(), 0o600);
    let agent_seed = secret_file(dir.path(), "agent.nk", &agent_key.seed().unwrap(), 0o600);
    let a = TestServer::start_on_with(
        ANY_PORT,
        &dir.path().join("a"),
        &[
            "--nats",
            &urls,
            "--nats-nkey",
            node_seed.to_str().unwrap(),
            "--node",
            "a",
            "--nats-partitions",
            "4",
            "--nats-max-bytes",
            "268435456",
        ],
    );
    for app in ["api", "web"] {
        let (status, answer) = http(
            "POST",
            a.port,
            "/v1/ingest",
            Some(TOKEN),
            Some(&ingest_batch(app, "http", 0..1)),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let agent = |seed: &Path, app: &str, runner: &str, script: &str| {
        a.command(&["run", "--nats", &urls, "--nats-nkey"])
            .arg(seed)
            .args(["--app", app, "--runner", runner, "--drain-timeout", "15s"])
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };

    let output = agent(
        &agent_seed,
        "api",
        "gpu-7",
        "for i in $(seq 0 19); do echo \"line $i\"; done",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed: {stderr}");
    wait_for(
        "the agent's lines on the node",
        Duration::from_secs(60),
        || {
            stored(&a, "api", "gpu-7")
                .iter()
                .filter(|m| m.starts_with("line "))
                .count()
                == 20
        },
    );

    // The api user as app web: nats-server refuses every publish.
    let output = agent(&agent_seed, "web", "gpu-8", "echo 'a web line'");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("may not publish to tailwater.intake.default.web.gpu-8"),
        "{stderr}"
    );
    assert!(stored(&a, "web", "gpu-8").is_empty(), "web was written");

    // A seed others may read: refused at start, before the worker runs.
    let exposed = secret_file(dir.path(), "exposed.nk", &agent_key.seed().unwrap(), 0o644);
    let output = agent(&exposed, "api", "gpu-9", "echo ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("run `chmod 600 {}`", exposed.display())),
        "{stderr}"
    );
    assert!(!stderr.contains(&agent_key.seed().unwrap()), "{stderr}");

    // A user the servers do not know: the agent says its credentials are
    // refused; nothing is stored.
    let stranger = secret_file(
        dir.path(),
        "stranger.nk",
        &nkeys::KeyPair::new_user().seed().unwrap(),
        0o600,
    );
    let output = agent(&stranger, "api", "gpu-10", "echo 'a stranger line'");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the NATS servers refused the agent's credentials")
            && stderr.contains("authorization violation"),
        "{stderr}"
    );
    assert!(
        stored(&a, "api", "gpu-10").is_empty(),
        "a stranger was stored"
    );
}

#[test]
fn an_agent_with_a_creds_file_reaches_the_node_in_operator_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mode = OperatorMode::new();
    let nats = NatsCluster::start_with(3, &mode.config());
    let urls = nats.urls().join(",");
    let node_creds = OperatorMode::creds(&mode.account, &[], &[]);
    let node_creds = secret_file(dir.path(), "node.creds", &node_creds, 0o600);
    // The permissions docs/agents-on-nats.md gives the agent's user.
    let agent_creds = OperatorMode::creds(
        &mode.account,
        &["tailwater.intake.default.api.*"],
        &["_INBOX_default.api.>"],
    );
    let agent_creds = secret_file(dir.path(), "agent.creds", &agent_creds, 0o600);
    let a = TestServer::start_on_with(
        ANY_PORT,
        &dir.path().join("a"),
        &[
            "--nats",
            &urls,
            "--nats-creds",
            node_creds.to_str().unwrap(),
            "--node",
            "a",
            "--nats-partitions",
            "4",
            "--nats-max-bytes",
            "268435456",
        ],
    );
    for app in ["api", "web"] {
        let (status, answer) = http(
            "POST",
            a.port,
            "/v1/ingest",
            Some(TOKEN),
            Some(&ingest_batch(app, "http", 0..1)),
        );
        assert_eq!(status, 200, "{answer}");
    }
    let agent = |app: &str, runner: &str, script: &str| {
        a.command(&["run", "--nats", &urls, "--nats-creds"])
            .arg(&agent_creds)
            .args(["--app", app, "--runner", runner, "--drain-timeout", "15s"])
            .args(["--", "sh", "-c", script])
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };

    let output = agent(
        "api",
        "gpu-7",
        "for i in $(seq 0 19); do echo \"line $i\"; done",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed: {stderr}");
    wait_for(
        "the agent's lines on the node",
        Duration::from_secs(60),
        || {
            stored(&a, "api", "gpu-7")
                .iter()
                .filter(|m| m.starts_with("line "))
                .count()
                == 20
        },
    );

    let output = agent("web", "gpu-8", "echo 'a web line'");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("may not publish to tailwater.intake.default.web.gpu-8"),
        "{stderr}"
    );
    assert!(stored(&a, "web", "gpu-8").is_empty(), "web was written");
}
