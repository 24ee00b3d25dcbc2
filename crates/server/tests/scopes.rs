//! Runner and request scopes over real HTTP: runner states from the
//! lifecycle records an agent writes and from its heartbeats, lost runners
//! and their notices, the table across restarts, and requests with their
//! status, timing and recorded caller.

use std::time::Duration;

use serde_json::{json, Value};
use tailwater_server::runners::RunnerSettings;
use tailwater_server::{start, RunningServer, ServerConfig};

mod common;
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

#[tokio::test]
async fn runner_states_follow_the_lifecycle_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path(), Duration::from_secs(60)).await;

    let start = |seq| (seq, json!({"event": "start", "pid": 7}));
    ingest(&server, batch("sd", "ok", "b1", &[start(0)])).await;
    let runner = get(&server, "/v1/runners/ok").await;
    assert_eq!(state(&runner), "initializing");
    assert_eq!(runner["ready_at"], Value::Null);

    ingest(
        &server,
        batch(
            "sd",
            "ok",
            "b1",
            &[(1, json!({"event": "ready", "via": "control"}))],
        ),
    )
    .await;
    assert_eq!(state(&get(&server, "/v1/runners/ok").await), "ready");

    let request_start = (
        2,
        json!({"event": "request_start", "request": "q1", "in_flight": 1}),
    );
    ingest(
        &server,
        batch("sd", "ok", "b1", std::slice::from_ref(&request_start)),
    )
    .await;
    let runner = get(&server, "/v1/runners/ok").await;
    assert_eq!(state(&runner), "running");
    assert_eq!(
        runner["requests"],
        json!({"served": 0, "failed": 0, "in_flight": 1})
    );

    let request_end = (
        3,
        json!({"event": "request_end", "request": "q1", "in_flight": 0, "status": 200, "outcome": "completed"}),
    );
    let ended = batch("sd", "ok", "b1", std::slice::from_ref(&request_end));
    ingest(&server, ended.clone()).await;
    // A retried batch changes nothing.
    ingest(&server, ended).await;
    let runner = get(&server, "/v1/runners/ok").await;
    assert_eq!(state(&runner), "ready");
    assert_eq!(
        runner["requests"],
        json!({"served": 1, "failed": 0, "in_flight": 0})
    );

    // Failures are counted apart: an error, a 5xx answer, a client that
    // went away, a request its worker left unfinished.
    let failures: Vec<(u64, Value)> = [
        json!({"outcome": "error", "error": "boom"}),
        json!({"outcome": "completed", "status": 503}),
        json!({"outcome": "client_closed"}),
        json!({"outcome": "unfinished"}),
    ]
    .into_iter()
    .zip(10..)
    .flat_map(|(how, seq)| {
        let request = format!("f{seq}");
        let mut end = json!({"event": "request_end", "request": request, "in_flight": 0});
        end.as_object_mut()
            .unwrap()
            .extend(how.as_object().unwrap().clone());
        [
            (
                seq * 2,
                json!({"event": "request_start", "request": request, "in_flight": 1}),
            ),
            (seq * 2 + 1, end),
        ]
    })
    .collect();
    ingest(&server, batch("sd-failing", "failing", "b1", &failures)).await;
    let failing = get(&server, "/v1/runners/failing").await;
    assert_eq!(
        failing["requests"],
        json!({"served": 0, "failed": 4, "in_flight": 0})
    );

    ingest(
        &server,
        batch(
            "sd",
            "ok",
            "b1",
            &[(4, json!({"event": "exit", "exit_code": 0}))],
        ),
    )
    .await;
    let runner = get(&server, "/v1/runners/ok").await;
    assert_eq!(state(&runner), "exited");
    assert_eq!(
        runner["exit"],
        json!({"code": 0, "signal": null, "core_dumped": false, "oom_killed": false})
    );
    assert!(runner["exited_at"].is_string());
    let events: Vec<&str> = runner["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["fields"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["start", "ready", "request_start", "request_end", "exit"]
    );

    // A crash, a requested stop, an unrequested signal, an OOM kill.
    ingest(&server, batch("sd", "crash", "b1", &lived(3))).await;
    ingest(&server, batch("sd", "stopped", "b1", &[
        start(0),
        (1, json!({"event": "stop", "signal": 15})),
        (2, json!({"event": "exit", "signal": 15, "core_dumped": false, "oom_killed": false})),
    ])).await;
    ingest(&server, batch("sd", "segv", "b1", &[start(0), (1, json!({"event": "exit", "signal": 11, "core_dumped": true, "oom_killed": false}))])).await;
    ingest(
        &server,
        batch(
            "sd",
            "oom",
            "b1",
            &[
                start(0),
                (1, json!({"event": "oom_kill", "oom_kills": 1})),
                (
                    2,
                    json!({"event": "exit", "signal": 9, "core_dumped": false, "oom_killed": true}),
                ),
            ],
        ),
    )
    .await;
    for (id, wanted) in [
        ("crash", "crashed"),
        ("stopped", "exited"),
        ("segv", "crashed"),
        ("oom", "oom-killed"),
    ] {
        assert_eq!(
            state(&get(&server, &format!("/v1/runners/{id}")).await),
            wanted,
            "{id}"
        );
    }
    assert_eq!(
        get(&server, "/v1/runners/segv").await["exit"]["core_dumped"],
        true
    );

    // A new boot is a new life of the same runner.
    ingest(&server, batch("sd", "crash", "b2", &[start(0)])).await;
    let runner = get(&server, "/v1/runners/crash").await;
    assert_eq!(
        (state(&runner), runner["boot"].as_str()),
        ("initializing", Some("b2"))
    );
    assert_eq!(runner["exit"], Value::Null);

    // Listings: newest start first, by app and state.
    let listed = get(&server, "/v1/runners?app=sd").await;
    let ids: Vec<&str> = listed["runners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runner"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["crash", "oom", "segv", "stopped", "ok"]);
    let crashed = get(&server, "/v1/runners?state=crashed").await;
    assert_eq!(crashed["runners"].as_array().unwrap().len(), 1);
    assert_eq!(crashed["runners"][0]["runner"], "segv");
    assert_eq!(crashed["runners"][0]["version"], "v7");
    assert_eq!(
        get(&server, "/v1/runners?app=other").await,
        json!({"runners": []})
    );

    // Clear errors.
    let (status, body) = call(&server, "GET", "/v1/runners?state=sleepy", ADMIN, None).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("use one of initializing"),
        "{body}"
    );
    let (status, body) = call(&server, "GET", "/v1/runners?color=red", ADMIN, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _) = call(&server, "GET", "/v1/runners/nobody", ADMIN, None).await;
    assert_eq!(status, 404);
    ingest(&server, batch("flux", "ok", "b1", &[start(0)])).await;
    let (status, body) = call(&server, "GET", "/v1/runners/ok", ADMIN, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("add app="),
        "{body}"
    );
    let runner = get(&server, "/v1/runners/ok?app=flux").await;
    assert_eq!(runner["app"], "flux");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_keeps_the_last_runs_end_until_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    // Short, so a runner waiting to restart would go lost within the test
    // if it were taken for a live one.
    let heartbeat_timeout = Duration::from_millis(500);
    let server = server_on(dir.path(), heartbeat_timeout).await;
    let restart = |seq, attempt| {
        (
            seq,
            json!({"event": "restart", "attempt": attempt, "delay_ms": 1000,
                   "previous_exit": {"exit_code": 3}}),
        )
    };
    let [start, exit] = lived(3);
    ingest(
        &server,
        batch("sd", "again", "b1", &[start, exit, restart(2, 1)]),
    )
    .await;
    let crashed = |runner: &Value| {
        assert_eq!(state(runner), "crashed", "{runner}");
        assert_eq!(
            runner["exit"],
            json!({"code": 3, "signal": null, "core_dumped": false, "oom_killed": false}),
        );
        assert!(runner["exited_at"].is_string(), "{runner}");
    };
    crashed(&get(&server, "/v1/runners/again").await);
    // The agent stopped during the backoff: no start follows, only its
    // note, and the runner stays as its last run ended, never lost.
    ingest(
        &server,
        batch(
            "sd",
            "again",
            "b1",
            &[(3, json!({"event": "restart_cancelled", "stop_signal": 15}))],
        ),
    )
    .await;
    // A live runner heard from last, after it: once the server has taken
    // that one for lost, it has judged this one past its timeout too.
    silent_since_now(&server, "witness").await;
    wait_for_state(&server, "witness", "lost").await;
    let runner = get(&server, "/v1/runners/again").await;
    crashed(&runner);
    let events: Vec<&str> = runner["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["fields"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["start", "exit", "restart", "restart_cancelled"]);
    // The same after a restart of the server: from its file, and from the
    // store alone.
    server.shutdown().await.unwrap();
    let server = server_on(dir.path(), heartbeat_timeout).await;
    crashed(&get(&server, "/v1/runners/again").await);
    server.shutdown().await.unwrap();
    std::fs::remove_file(dir.path().join("runners/runners.json")).unwrap();
    let server = server_on(dir.path(), heartbeat_timeout).await;
    crashed(&get(&server, "/v1/runners/again").await);
    server.shutdown().await.unwrap();

    // A restart that goes ahead: its start begins the new run (a long
    // heartbeat timeout, so the new run is not lost while it is checked).
    let server = server_on(dir.path(), Duration::from_secs(60)).await;
    // Its first run was OOM-killed.
    let killed = json!({"event": "exit", "signal": 9, "core_dumped": false, "oom_killed": true});
    let first_run = [
        (0, json!({"event": "start", "pid": 7})),
        (1, json!({"event": "oom_kill", "oom_kills": 1})),
        (2, killed),
        restart(3, 1),
    ];
    ingest(&server, batch("sd", "next", "b1", &first_run)).await;
    assert_eq!(state(&get(&server, "/v1/runners/next").await), "oom-killed");
    let second_start = (4, json!({"event": "start", "pid": 8}));
    ingest(&server, batch("sd", "next", "b1", &[second_start])).await;
    let runner = get(&server, "/v1/runners/next").await;
    assert_eq!(state(&runner), "initializing", "{runner}");
    assert_eq!(runner["exit"], Value::Null);
    assert_eq!(runner["exited_at"], Value::Null);
    assert_eq!(runner["boot"], "b1", "the same life");
    // The first run's OOM kill is not the second's: a SIGKILL now (no OOM
    // kill seen in this run) is a crash.
    let plain_kill =
        json!({"event": "exit", "signal": 9, "core_dumped": false, "oom_killed": false});
    ingest(&server, batch("sd", "next", "b1", &[(5, plain_kill)])).await;
    assert_eq!(state(&get(&server, "/v1/runners/next").await), "crashed");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_runner_is_lost_with_a_notice_and_returns_with_another() {
    let dir = tempfile::tempdir().unwrap();
    // Generous enough that a loaded machine never misses a heartbeat by it.
    let server = server_on(dir.path(), Duration::from_secs(2)).await;
    ingest(
        &server,
        batch(
            "sd",
            "w",
            "b1",
            &[
                (0, json!({"event": "start"})),
                (1, json!({"event": "ready"})),
            ],
        ),
    )
    .await;

    // Heartbeats (empty batches) keep it ready past the timeout.
    let beating_until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < beating_until {
        ingest(&server, batch("sd", "w", "b1", &[])).await;
        assert_eq!(state(&get(&server, "/v1/runners/w").await), "ready");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let runner = wait_for_state(&server, "w", "lost").await;
    let notice = runner["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(notice["fields"]["event"], "lost", "{runner}");
    assert_eq!(notice["stream"], "system");
    assert_eq!(notice["level"], "warn");
    assert!(
        notice["message"]
            .as_str()
            .unwrap()
            .contains("--heartbeat-timeout"),
        "{notice}"
    );
    // The notice is in the runner's logs too.
    let logs = get(&server, "/v1/logs?runner=w&field.event=lost").await;
    assert_eq!(logs["records"].as_array().unwrap().len(), 1, "{logs}");

    // Heard from again: back to where it was, and a notice says so.
    ingest(&server, batch("sd", "w", "b1", &[])).await;
    let runner = get(&server, "/v1/runners/w").await;
    assert_eq!(state(&runner), "ready");
    let last = runner["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["fields"]["event"], "returned", "{runner}");

    // A runner that ended is never lost.
    ingest(&server, batch("sd", "done", "b1", &lived(0))).await;
    silent_since_now(&server, "witness").await;
    wait_for_state(&server, "witness", "lost").await;
    let done = get(&server, "/v1/runners/done").await;
    assert_eq!(state(&done), "exited");
    let events = done["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .all(|record| record["fields"]["event"] != "lost"),
        "{done}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_runner_table_survives_restarts_from_its_file_or_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path(), Duration::from_secs(60)).await;
    ingest(&server, batch("sd", "a", "b1", &[
        (0, json!({"event": "start"})),
        (1, json!({"event": "ready"})),
        (2, json!({"event": "request_start", "request": "q", "in_flight": 1})),
        (3, json!({"event": "request_end", "request": "q", "in_flight": 0, "outcome": "completed", "status": 200})),
    ])).await;
    ingest(&server, batch("sd", "b", "b1", &lived(2))).await;
    let before = get(&server, "/v1/runners").await;
    server.shutdown().await.unwrap();
    assert!(dir.path().join("runners/runners.json").exists());

    // From the file written at shutdown.
    let server = server_on(dir.path(), Duration::from_secs(60)).await;
    assert_eq!(get(&server, "/v1/runners").await, before);
    // What arrives after the file was written is replayed from the store
    // (as after a kill -9): simulate it by putting back the older file.
    let saved = std::fs::read(dir.path().join("runners/runners.json")).unwrap();
    ingest(
        &server,
        batch(
            "sd",
            "a",
            "b1",
            &[(4, json!({"event": "exit", "exit_code": 0}))],
        ),
    )
    .await;
    let after = get(&server, "/v1/runners").await;
    server.shutdown().await.unwrap();
    std::fs::write(dir.path().join("runners/runners.json"), &saved).unwrap();
    let server = server_on(dir.path(), Duration::from_secs(60)).await;
    let replayed = get(&server, "/v1/runners").await;
    assert_eq!(without_last_seen(&replayed), without_last_seen(&after));
    assert_eq!(state(&get(&server, "/v1/runners/a").await), "exited");
    server.shutdown().await.unwrap();

    // With no file at all, the whole table is rebuilt from the store.
    std::fs::remove_file(dir.path().join("runners/runners.json")).unwrap();
    let server = server_on(dir.path(), Duration::from_secs(60)).await;
    let rebuilt = get(&server, "/v1/runners").await;
    assert_eq!(without_last_seen(&rebuilt), without_last_seen(&after));
    assert_eq!(get(&server, "/v1/runners/a").await["requests"]["served"], 1);
    server.shutdown().await.unwrap();
}

/// A listing without `last_seen`, which a replay takes from record times
/// (heartbeats are not stored).
fn without_last_seen(listing: &Value) -> Value {
    let mut listing = listing.clone();
    for runner in listing["runners"].as_array_mut().unwrap() {
        runner.as_object_mut().unwrap().remove("last_seen");
    }
    listing
}

#[tokio::test]
async fn a_request_shows_its_status_timing_runner_and_only_to_its_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path(), Duration::from_secs(60)).await;
    let token = |scope: &str| {
        let server = &server;
        let scope = scope.to_owned();
        async move {
            let (_, created) = call(
                server,
                "POST",
                "/v1/tokens",
                ADMIN,
                Some(json!({"scope": scope})),
            )
            .await;
            (
                created["token"].as_str().unwrap().to_owned(),
                created["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (alice, alice_id) = token("caller").await;
    let (bob, _) = token("caller").await;

    // The gateway records Alice as the caller of q-alice; the worker logs.
    ingest(&server, json!({"app": "sd", "version": "v7", "runner": "gw", "boot": "g1", "source": "gateway", "records": [
        {"seq": 0, "ts": "2026-01-01T00:00:00Z", "stream": "system", "request_id": "q-alice",
         "message": "request q-alice started", "fields": {"event": "request_start", "caller": alice_id}},
        {"seq": 1, "ts": "2026-01-01T00:00:00.250Z", "stream": "system", "request_id": "q-alice",
         "message": "request q-alice ended: 201 in 250ms",
         "fields": {"event": "request_end", "status": 201, "duration_ms": 250, "outcome": "completed"}},
    ]})).await;
    ingest(&server, json!({"app": "sd", "version": "v7", "runner": "w1", "boot": "b1", "records": [
        {"seq": 0, "ts": "2026-01-01T00:00:00.100Z", "stream": "stdout", "request_id": "q-alice", "message": "denoising"},
        {"seq": 1, "ts": "2026-01-01T00:00:01Z", "stream": "system", "request_id": "q-open",
         "message": "request q-open started", "fields": {"event": "request_start", "in_flight": 1}},
    ]})).await;

    let info = get(&server, "/v1/requests/q-alice").await;
    assert_eq!(
        info,
        json!({
            "request_id": "q-alice", "tenant": "default", "app": "sd", "version": "v7", "runner": "gw",
            "state": "completed", "status": 201, "started": "2026-01-01T00:00:00Z",
            "ended": "2026-01-01T00:00:00.25Z", "duration_ms": 250, "records": 3, "error": null,
        })
    );
    let open = get(&server, "/v1/requests/q-open").await;
    assert_eq!(
        (open["state"].as_str(), &open["ended"]),
        (Some("in_flight"), &Value::Null)
    );
    let (status, body) = call(&server, "GET", "/v1/requests/q-nope", ADMIN, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Its logs, oldest first, paged as /v1/logs pages.
    let page = get(
        &server,
        "/v1/requests/q-alice/logs?direction=forward&limit=2",
    )
    .await;
    let messages: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["request q-alice started", "denoising"]);
    assert!(page["next_cursor"].is_string());
    let (status, _) = call(
        &server,
        "GET",
        "/v1/requests/q-alice/logs?request=x",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 400);

    // Alice reads her request; Bob gets what a missing request gets.
    let (status, _) = call(&server, "GET", "/v1/requests/q-alice", &alice, None).await;
    assert_eq!(status, 200);
    let (status, body) = call(&server, "GET", "/v1/logs?request=q-alice", &alice, None).await;
    assert_eq!(
        (status, body["records"].as_array().unwrap().len()),
        (200, 3)
    );
    for path in [
        "/v1/requests/q-alice",
        "/v1/requests/q-alice/logs",
        "/v1/requests/q-alice/logs/tail",
    ] {
        let (status, body) = call(&server, "GET", path, &bob, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        let (missing_status, missing) = call(
            &server,
            "GET",
            &path.replace("q-alice", "q-nope"),
            &bob,
            None,
        )
        .await;
        assert_eq!(
            (
                status,
                body["error"]["message"]
                    .as_str()
                    .map(|m| m.replace("q-alice", "q-nope"))
            ),
            (
                missing_status,
                missing["error"]["message"].as_str().map(str::to_owned)
            ),
            "the same answer as for a request that does not exist"
        );
    }
    let (status, body) = call(&server, "GET", "/v1/logs?request=q-alice", &bob, None).await;
    assert_eq!(
        (status, body["records"].as_array().unwrap().len()),
        (200, 0)
    );
    // A request with no recorded caller is any caller's (of a public app).
    let (status, _) = call(&server, "GET", "/v1/requests/q-open", &bob, None).await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn past_max_runners_the_runner_heard_from_longest_ago_is_forgotten_ended_ones_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    config.runners.max_runners = 2;
    let server = start(config).await.unwrap();
    let start_event = [(0, json!({"event": "start"}))];
    ingest(&server, batch("sd", "old-but-alive", "b1", &start_event)).await;
    ingest(&server, batch("sd", "ended", "b1", &lived(0))).await;
    ingest(&server, batch("sd", "new", "b1", &start_event)).await;
    let listed = get(&server, "/v1/runners").await;
    let mut ids: Vec<&str> = listed["runners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runner"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["new", "old-but-alive"], "the ended runner went first");
    // Its logs stay.
    let logs = get(&server, "/v1/logs?runner=ended").await;
    assert_eq!(logs["records"].as_array().unwrap().len(), 2);
    server.shutdown().await.unwrap();
}
