use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

fn batch(seqs: std::ops::Range<u64>) -> String {
    let records: Vec<Value> = seqs
        .map(|seq| json!({"seq": seq, "ts": "2026-11-20T10:00:00Z", "stream": "stdout", "level": "info", "message": format!("line {seq}")}))
        .collect();
    json!({"app": "api", "version": "v1", "runner": "r1", "boot": "b1", "records": records})
        .to_string()
}

#[test]
fn every_api_call_needs_a_valid_token_and_errors_are_json() {
    let server = TestServer::start();
    assert_eq!(http("GET", server.port, "/healthz", None, None).0, 200);
    for (method, path) in [
        ("GET", "/v1/logs"),
        ("GET", "/v1/logs/tail"),
        ("POST", "/v1/ingest"),
    ] {
        for token in [None, Some("tw_not_a_token")] {
            let (status, body) = http(method, server.port, path, token, Some("{}"));
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            let error: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(error["error"]["code"], "unauthorized");
            assert!(error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("token"));
        }
    }
    let (status, body) = http("GET", server.port, "/v1/logs?limit=0", Some(TOKEN), None);
    assert_eq!(status, 400);
    assert!(
        body.contains("use a whole number from 1 to 10000"),
        "{body}"
    );
    let (status, body) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some("{\"app\": 1}"),
    );
    assert_eq!(status, 400);
    assert!(body.contains("invalid ingest batch"), "{body}");
}

#[test]
fn ingest_is_idempotent_by_runner_boot_and_seq() {
    let server = TestServer::start();
    let (status, body) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch(0..10)),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"accepted": 10, "duplicates": 0, "refused": 0})
    );
    let (_, body) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch(5..15)),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"accepted": 5, "duplicates": 5, "refused": 0})
    );
    let records = server.logs(&["--app", "api"]);
    assert_eq!(records.len(), 15);
}

#[test]
fn acknowledged_records_survive_kill_9_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on(ANY_PORT, &data);
    let port = server.port;
    for start in (0..500).step_by(50) {
        let (status, _) = http(
            "POST",
            port,
            "/v1/ingest",
            Some(TOKEN),
            Some(&batch(start..start + 50)),
        );
        assert_eq!(status, 200);
    }
    server.kill_9();

    let server = TestServer::start_on(port, &data);
    let records = server.logs(&["--app", "api"]);
    assert_eq!(records.len(), 500);
    let (_, body) = http(
        "POST",
        port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch(0..500)),
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"accepted": 0, "duplicates": 500, "refused": 0})
    );
}

#[test]
fn the_first_start_prints_a_new_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    // A first start that cannot listen makes no token it would never show.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let failed = std::process::Command::new(binary())
        .args(["server", "--listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--data")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("cannot listen on"),
        "{failed:?}"
    );
    assert!(!dir.path().join("auth").exists(), "nothing made");
    drop(taken);

    let mut server = unbootstrapped_server(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(server.stdout.take().unwrap());
    let announced = line_containing(&stdout, "listening on", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("no address announced in: {seen:#?}"));
    let port = announced_in(&announced).expect("an address");
    wait_for("the server", Duration::from_secs(20), || {
        http("GET", port, "/healthz", None, None).0 == 200
    });
    let printed = line_containing(&stdout, "tw_", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("no token printed in: {seen:#?}"));
    server.kill().unwrap();
    server.wait().unwrap();
    let token = printed
        .split_whitespace()
        .find(|word| word.starts_with("tw_"))
        .expect("a token is printed");
    assert!(
        !std::fs::read_to_string(dir.path().join("auth/registry.json"))
            .unwrap()
            .contains(token)
    );

    // An operator who lost it starts the server once with a new secret as
    // the bootstrap token (README: "Lost the admin token?").
    let regained = "tw_regained_by_the_operator";
    let mut server = unbootstrapped_server(dir.path())
        .env("TAILWATER_BOOTSTRAP_TOKEN", regained)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let port = announced_port(server.stdout.take().unwrap());
    wait_for("the server", Duration::from_secs(20), || {
        http("GET", port, "/healthz", None, None).0 == 200
    });
    for admin in [regained, token] {
        let (status, body) = http("GET", port, "/v1/tokens", Some(admin), None);
        assert_eq!(status, 200, "{admin}: {body}");
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

/// `tailwater server` on any port over `data`, with no bootstrap token of
/// the tests' own.
fn unbootstrapped_server(data: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(binary());
    command
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{ANY_PORT}"),
            "--data",
        ])
        .arg(data);
    command
}

/// kill -9 of the server while clients are ingesting: every batch it
/// acknowledged is there after a restart, exactly once.
#[test]
fn kill_9_during_ingest_keeps_every_acknowledged_record_once() {
    kill_9_during_ingest(&[]);
}

/// The same with a memtable so small that it is flushed every few batches:
/// the log's segments are written over reused files, and the kill cuts one
/// of them short.
#[test]
fn kill_9_during_ingest_into_reused_log_files_keeps_every_acknowledged_record_once() {
    kill_9_during_ingest(&["--memtable-max-bytes", "20000"]);
}

fn kill_9_during_ingest(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on_with(ANY_PORT, &data, flags);
    let port = server.port;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let written = progress.clone();
    let writer = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for start in (0u64..).step_by(20) {
            let (status, _) = http(
                "POST",
                port,
                "/v1/ingest",
                Some(TOKEN),
                Some(&batch(start..start + 20)),
            );
            if status != 200 {
                break; // the server is gone
            }
            acknowledged.push(start);
            written.store(acknowledged.len(), std::sync::atomic::Ordering::Relaxed);
        }
        acknowledged
    });
    // Killed mid-stream, once enough is acknowledged that a small memtable
    // has been flushed several times over.
    wait_for("50 acknowledged batches", Duration::from_secs(30), || {
        progress.load(std::sync::atomic::Ordering::Relaxed) >= 50
    });
    server.kill_9();
    let acknowledged = writer.join().unwrap();
    assert!(
        acknowledged.len() > 5,
        "the writer got going before the kill"
    );

    let server = TestServer::start_on_with(port, &data, flags);
    let output = server
        .command(&[
            "logs",
            "--json",
            "--app",
            "api",
            "--since",
            "2000-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    let records = json_lines(&output.stdout);
    let mut seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    let unique = {
        let mut unique = seqs.clone();
        unique.dedup();
        unique
    };
    assert_eq!(unique.len(), seqs.len(), "no record twice");
    for start in acknowledged {
        for seq in start..start + 20 {
            assert!(
                seqs.binary_search(&seq).is_ok(),
                "acknowledged seq {seq} is missing"
            );
        }
    }
}
