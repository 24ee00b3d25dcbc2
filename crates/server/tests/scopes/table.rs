//! The runner table: a silent runner lost and back, the table across
//! restarts of the server, and its bound.

use super::*;

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
