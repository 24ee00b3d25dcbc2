//! Runner and request scopes over real HTTP: runner states from the
//! lifecycle records an agent writes and from its heartbeats, lost runners
//! and their notices, the table across restarts, and requests with their
//! status, timing and recorded caller.
//!
//! The files: `states.rs` (states from the lifecycle records, across
//! restarts of a worker), `table.rs` (lost runners, the table across
//! restarts of the server, its bound), `requests.rs` (a request's status,
//! timing and caller); the helpers they share are here.

use std::time::Duration;

use serde_json::{json, Value};
use tailwater_server::runners::RunnerSettings;
use tailwater_server::{start, RunningServer, ServerConfig};

#[path = "../common/mod.rs"]
mod common;
mod requests;
mod states;
mod table;

use common::call;

const ADMIN: &str = "tw_scopes_admin";

async fn server_on(dir: &std::path::Path, heartbeat_timeout: Duration) -> RunningServer {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    // Callers read requests with no recorded caller here at once: a
    // request's start comes in its first batch, so no grace is needed.
    config.request_owner_grace = std::time::Duration::ZERO;
    config.runners = RunnerSettings {
        heartbeat_timeout,
        ..RunnerSettings::default()
    };
    // The fixed dates of these tests stay within retention (ingest refuses
    // records already past it).
    config.retention.max_age = Duration::from_secs(20 * 365 * 86400);
    start(config).await.unwrap()
}

async fn get(server: &RunningServer, path: &str) -> Value {
    let (status, body) = call(server, "GET", path, ADMIN, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// A batch from runner `runner`'s boot `boot`: `(seq, event fields)` as the
/// agent's `system` records, or a heartbeat when `events` is empty.
fn batch(app: &str, runner: &str, boot: &str, events: &[(u64, Value)]) -> Value {
    let records: Vec<Value> = events
        .iter()
        .map(|(seq, fields)| {
            json!({"seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "system",
                   "level": "info", "message": format!("{}", fields["event"]), "fields": fields,
                   "request_id": fields.get("request")})
        })
        .collect();
    json!({"app": app, "version": "v7", "runner": runner, "boot": boot, "records": records})
}

/// A whole short life: started, then exited with `code`.
fn lived(code: i64) -> [(u64, Value); 2] {
    [
        (0, json!({"event": "start"})),
        (1, json!({"event": "exit", "exit_code": code})),
    ]
}

async fn ingest(server: &RunningServer, body: Value) {
    let (status, answer) = call(server, "POST", "/v1/ingest", ADMIN, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

fn state(runner: &Value) -> &str {
    runner["state"].as_str().unwrap()
}

/// Starts runner `id` (ready) and then says nothing more: the server takes
/// it for lost once its heartbeat timeout has passed since now, which
/// tells a test when a runner heard from earlier has been judged too.
async fn silent_since_now(server: &RunningServer, id: &str) {
    let events = [
        (0, json!({"event": "start"})),
        (1, json!({"event": "ready"})),
    ];
    ingest(server, batch("sd", id, "b1", &events)).await;
}

/// Waits (up to a generous deadline) until runner `id` is in `wanted`.
async fn wait_for_state(server: &RunningServer, id: &str, wanted: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runner = get(server, &format!("/v1/runners/{id}")).await;
        if state(&runner) == wanted {
            return runner;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runner {id} never became {wanted}: {runner}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
