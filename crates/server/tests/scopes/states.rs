//! Runner states from the lifecycle records an agent writes, and across
//! restarts of its worker.

use super::*;

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
