//! A request's status, timing and runner, shown only to its caller.

use super::*;

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
