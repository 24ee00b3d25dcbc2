//! The recorded-caller rule, judged per record wherever records leave:
//! a tail opened before the request started, lines stored before the
//! gateway's start, a request with no recorded caller.

use super::*;

#[tokio::test]
async fn a_tail_opened_before_the_request_started_gets_only_what_its_caller_may_see() {
    let (_dir, server, _admin) = common::server(tailwater_server::tail::DEFAULT_TAIL_BUFFER).await;
    let (a, _a_id) = token(&server, "caller", None).await;
    let (b, b_id) = token(&server, "caller", None).await;
    let url = format!("http://{}", server.addr);
    let request = LogsParams {
        request: Some("r-1".into()),
        ..LogsParams::default()
    };

    // Both callers tail request r-1 before anything of it exists, over SSE
    // and over a WebSocket.
    let (a_caller, b_caller) = (
        Client::new(&url, &a).unwrap(),
        Client::new(&url, &b).unwrap(),
    );
    let mut a_sse = Box::pin(a_caller.tail(&request, None).await.unwrap());
    let mut b_sse = Box::pin(b_caller.tail(&request, None).await.unwrap());
    let mut a_ws = websocket_records(websocket_tail(&server, &a, "r-1").await);
    let mut b_ws = websocket_records(websocket_tail(&server, &b, "r-1").await);

    // The gateway records r-1 as caller B's, and its lines follow.
    ingest(
        &server,
        TOKEN,
        records(
            "pub",
            "pub-1",
            "r-1",
            0,
            &[start(&b_id), line("b secret 1"), line("b secret 2")],
        ),
    )
    .await;
    // A later record that A may see: app `side` has a request with the same
    // id and no recorded caller.
    ingest(
        &server,
        TOKEN,
        records("side", "side-1", "r-1", 0, &[line("side marker")]),
    )
    .await;

    let everything = ["request started", "b secret 1", "b secret 2", "side marker"];
    let got = [
        ("a sse", until_message(&mut a_sse, "side marker").await),
        ("a websocket", until_message(&mut a_ws, "side marker").await),
        ("b sse", until_message(&mut b_sse, "side marker").await),
        ("b websocket", until_message(&mut b_ws, "side marker").await),
    ];
    let want = [
        ("a sse", vec!["side marker"]),
        ("a websocket", vec!["side marker"]),
        ("b sse", everything.to_vec()),
        ("b websocket", everything.to_vec()),
    ];
    assert_eq!(
        got.map(|(how, got)| (how, got.join(", "))),
        want.map(|(how, want)| (how, want.join(", ")))
    );

    // History agrees, record for record.
    for (token, want) in [(&a, &["side marker"][..]), (&b, &everything[..])] {
        let (status, page) = call(
            &server,
            "GET",
            "/v1/logs?request=r-1&direction=forward",
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(messages(&page), want);
    }
    // B's request page is app pub's; A sees app side's request of that id.
    let (status, info) = call(&server, "GET", "/v1/requests/r-1", &b, None).await;
    assert_eq!((status, info["app"].as_str()), (200, Some("pub")), "{info}");
    let (status, info) = call(&server, "GET", "/v1/requests/r-1", &a, None).await;
    assert_eq!(
        (status, info["app"].as_str()),
        (200, Some("side")),
        "{info}"
    );

    // A tail of B's request opened by path after it started: A's holds
    // only what A may see too.
    let mut a_by_path = websocket_records({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}/v1/requests/r-1/logs/tail", server.addr);
        let mut upgrade = url.into_client_request().unwrap();
        upgrade.headers_mut().insert(
            "sec-websocket-protocol",
            format!("tailwater.v1, tailwater.bearer.{a}")
                .parse()
                .unwrap(),
        );
        tokio_tungstenite::connect_async(upgrade).await.unwrap().0
    });
    ingest(
        &server,
        TOKEN,
        records("pub", "pub-1", "r-1", 0, &[line("b secret 3")]),
    )
    .await;
    ingest(
        &server,
        TOKEN,
        records("side", "side-1", "r-1", 0, &[line("side marker 2")]),
    )
    .await;
    assert_eq!(
        until_message(&mut a_by_path, "side marker 2").await,
        ["side marker 2"]
    );
    assert_eq!(
        until_message(&mut b_sse, "side marker 2").await,
        ["b secret 3", "side marker 2"]
    );
}

#[tokio::test]
async fn lines_stored_before_the_gateways_start_reach_only_the_caller_it_names() {
    let (_dir, server, _admin) = common::server(tailwater_server::tail::DEFAULT_TAIL_BUFFER).await;
    let (a, _a_id) = token(&server, "caller", None).await;
    let (b, b_id) = token(&server, "caller", None).await;
    let url = format!("http://{}", server.addr);
    let request = LogsParams {
        request: Some("r-9".into()),
        ..LogsParams::default()
    };
    let (a_caller, b_caller) = (
        Client::new(&url, &a).unwrap(),
        Client::new(&url, &b).unwrap(),
    );
    let mut a_sse = Box::pin(a_caller.tail(&request, None).await.unwrap());
    let mut b_sse = Box::pin(b_caller.tail(&request, None).await.unwrap());
    let mut a_ws = websocket_records(websocket_tail(&server, &a, "r-9").await);
    let mut b_ws = websocket_records(websocket_tail(&server, &b, "r-9").await);

    // The app's own lines of r-9 reach the server before its gateway's
    // start, which names caller B: two senders, a race.
    ingest(
        &server,
        TOKEN,
        records(
            "pub",
            "pub-1",
            "r-9",
            0,
            &[line("early 1"), line("early 2")],
        ),
    )
    .await;
    ingest(
        &server,
        TOKEN,
        records("pub", "gateway", "r-9", 0, &[start(&b_id), line("b line")]),
    )
    .await;
    // A record A may see, once its own request (of app side, no recorded
    // caller) settles: after it, A's tail has had all it will get.
    ingest(
        &server,
        TOKEN,
        records("side", "side-1", "r-9", 0, &[line("side marker")]),
    )
    .await;

    let everything = [
        "early 1",
        "early 2",
        "request started",
        "b line",
        "side marker",
    ];
    let got = [
        ("a sse", until_message(&mut a_sse, "side marker").await),
        ("a websocket", until_message(&mut a_ws, "side marker").await),
        ("b sse", until_message(&mut b_sse, "side marker").await),
        ("b websocket", until_message(&mut b_ws, "side marker").await),
    ];
    let want = [
        ("a sse", vec!["side marker"]),
        ("a websocket", vec!["side marker"]),
        ("b sse", everything.to_vec()),
        ("b websocket", everything.to_vec()),
    ];
    assert_eq!(
        got.map(|(how, got)| (how, got.join(", "))),
        want.map(|(how, want)| (how, want.join(", ")))
    );
    // History agrees.
    for (token, want) in [(&a, &["side marker"][..]), (&b, &everything[..])] {
        let (status, page) = call(
            &server,
            "GET",
            "/v1/logs?request=r-9&direction=forward",
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(messages(&page), want);
    }
    // B resuming from before the request with Last-Event-ID gets it all
    // again, in order: nothing held was passed by.
    let mut resumed = Box::pin(
        b_caller
            .tail(&request, Some(tailwater_model::wire::AFTER_START))
            .await
            .unwrap(),
    );
    assert_eq!(until_message(&mut resumed, "side marker").await, everything);
}

#[tokio::test]
async fn a_request_with_no_recorded_caller_reaches_any_caller_once_its_owner_settles() {
    let (_dir, server, _admin) = common::server(tailwater_server::tail::DEFAULT_TAIL_BUFFER).await;
    let (a, _) = token(&server, "caller", None).await;
    let (c, _) = token(&server, "caller", Some("pub")).await;
    let mut a_ws = websocket_records(websocket_tail(&server, &a, "r-5").await);
    let hold = tailwater_server::access::ownership::DEFAULT_REQUEST_OWNER_GRACE * 3 / 2;

    let sent = std::time::Instant::now();
    ingest(
        &server,
        TOKEN,
        records("pub", "pub-1", "r-5", 0, &[line("lone 1"), line("lone 2")]),
    )
    .await;
    // Not settled yet: no caller sees it, nor its request page.
    let (status, page) = call(&server, "GET", "/v1/logs?request=r-5", &a, None).await;
    assert_eq!((status, messages(&page).len()), (200, 0), "{page}");
    // The page's `as_of` stops before what it held back, so a tail that
    // follows from it (as the console does) gets the lines once settled.
    let as_of = page["as_of"].as_str().unwrap().to_owned();
    let mut followed =
        websocket_records(websocket_tail(&server, &a, &format!("r-5&after={as_of}")).await);
    let (status, info) = call(&server, "GET", "/v1/requests/r-5", &c, None).await;
    assert_eq!(status, 404, "{info}");
    assert!(
        sent.elapsed() < hold,
        "the checks above ran within the hold"
    );

    // The tail gets it once settled, never before.
    assert_eq!(
        until_message(&mut a_ws, "lone 2").await,
        ["lone 1", "lone 2"]
    );
    assert!(sent.elapsed() >= hold, "held for {:?}", sent.elapsed());
    assert_eq!(
        until_message(&mut followed, "lone 2").await,
        ["lone 1", "lone 2"],
        "a tail from the unsettled page's as_of"
    );
    // Then every caller of the app, in history and by its request page.
    for token in [&a, &c] {
        let (status, page) = call(
            &server,
            "GET",
            "/v1/logs?request=r-5&direction=forward",
            token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(messages(&page), ["lone 1", "lone 2"]);
        let (status, info) = call(&server, "GET", "/v1/requests/r-5", token, None).await;
        assert_eq!((status, info["records"].as_u64()), (200, Some(2)), "{info}");
    }

    // A gateway's start naming a caller, stored later than the grace:
    // the request stays any caller's, in history as in the tail that has
    // it; the start keeps its caller as `late_caller`, and is counted.
    let (_, late_id) = token(&server, "caller", None).await;
    ingest(
        &server,
        TOKEN,
        records("pub", "gateway", "r-5", 0, &[start(&late_id)]),
    )
    .await;
    assert_eq!(
        until_message(&mut a_ws, "request started").await,
        ["request started"]
    );
    let (status, page) = call(
        &server,
        "GET",
        "/v1/logs?request=r-5&direction=forward",
        &c,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(messages(&page), ["lone 1", "lone 2", "request started"]);
    assert_eq!(
        page["records"][2]["fields"],
        json!({"event": "request_start", "late_caller": late_id}),
        "{page}"
    );
    let (status, metrics) = call(&server, "GET", "/metrics", TOKEN, None).await;
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"tailwater_late_request_starts_total{tenant="default",app="pub"} 1"#),
        "{metrics}"
    );
}
