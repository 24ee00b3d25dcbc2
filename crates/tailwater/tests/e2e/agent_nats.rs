//! `tailwater run --nats`: the agent publishes straight to a tailwater
//! cluster's NATS (docs/agents-on-nats.md), on nats-servers configured
//! with the documented users and permissions. A worker's lines reach the
//! stores of both nodes, through a node's pipeline (redacted); the same
//! credential run as another app is refused by nats-server, the agent
//! says why, and nothing of that app is stored.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::cluster::nats::NatsCluster;
use super::common::{http, ingest_batch, messages, wait_for, TestServer, ANY_PORT, TOKEN};

/// The nodes get the whole account; the agent of tenant `default`, app
/// `api`, only its intake subjects and its own inbox (the snippet of
/// docs/agents-on-nats.md, with test passwords).
const ACCOUNTS: &str = r#"
accounts {
  TAILWATER {
    jetstream: enabled
    users: [
      { user: node, password: nodepw }
      {
        user: "agent-default-api", password: agentpw
        permissions: {
          publish: { allow: ["tailwater.intake.default.api.*"] }
          subscribe: { allow: ["_INBOX_default.api.>"] }
        }
      }
    ]
  }
}
"#;

/// `nats://USER:PASSWORD@…` of every server, comma-separated.
fn urls_as(nats: &NatsCluster, user: &str, password: &str) -> String {
    nats.urls()
        .iter()
        .map(|url| url.replacen("nats://", &format!("nats://{user}:{password}@"), 1))
        .collect::<Vec<_>>()
        .join(",")
}

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
    let nats = NatsCluster::start_with(3, ACCOUNTS);
    let nodes = urls_as(&nats, "node", "nodepw");
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

    let agent_urls = urls_as(&nats, "agent-default-api", "agentpw");
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
}
