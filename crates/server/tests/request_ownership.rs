//! Who reads a request, over real HTTP on loopback: the recorded-caller
//! rule judged per record wherever records leave (history, live tail over
//! SSE and WebSocket, export, histogram, `/v1/requests/{id}`), a
//! `request_start` stored after a tail opened included; and a request is
//! its app's, so an ingest token of another app cannot claim it, however
//! it dates its records.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tailwater_client::Client;
use tailwater_model::wire::{LogsParams, TailMessage};
use tailwater_model::LogRecord;
use tailwater_server::RunningServer;

mod common;

use common::{call, TOKEN};

/// A token of `scope` for the admin's tenant (`default`), on `app`: the
/// secret and the public id.
async fn token(server: &RunningServer, scope: &str, app: Option<&str>) -> (String, String) {
    let mut body = json!({"scope": scope, "tenant": "default"});
    if let Some(app) = app {
        body["app"] = json!(app);
    }
    let (status, created) = call(server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records of request `request` sent by `runner` of `app`, dated
/// `ago_secs` in the past: `(stream, message, fields)` each.
fn records(
    app: &str,
    runner: &str,
    request: &str,
    ago_secs: i64,
    records: &[(&str, &str, Value)],
) -> Value {
    let ts = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(ago_secs);
    let records: Vec<Value> = records
        .iter()
        .map(|(stream, message, fields)| {
            // Sequence numbers are per runner and boot: unique across batches.
            let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            json!({"seq": seq, "ts": ts.to_string(), "stream": stream, "level": "info",
                   "request_id": request, "message": message, "fields": fields})
        })
        .collect();
    json!({"app": app, "version": "v1", "runner": runner, "boot": format!("{runner}-boot"),
           "source": "gateway", "records": records})
}

/// A gateway's `request_start` naming caller token `caller`.
fn start(caller: &str) -> (&'static str, &'static str, Value) {
    (
        "system",
        "request started",
        json!({"event": "request_start", "caller": caller}),
    )
}

fn line(message: &str) -> (&'static str, &str, Value) {
    ("stdout", message, json!({}))
}

/// Sends `batch`, every record of which must be stored.
async fn ingest(server: &RunningServer, token: &str, batch: Value) {
    let sent = batch["records"].as_array().unwrap().len();
    let (status, answer) = call(server, "POST", "/v1/ingest", token, Some(batch)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], json!(sent), "{answer}");
}

/// The messages of a JSON page of records.
fn messages(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of records: {page}"))
        .iter()
        .map(|record| record["message"].as_str().unwrap().to_owned())
        .collect()
}

/// `(app, message)` of each record of a JSON page.
fn app_messages(page: &Value) -> Vec<(String, String)> {
    page["records"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of records: {page}"))
        .iter()
        .map(|record| {
            (
                record["app"].as_str().unwrap().to_owned(),
                record["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A live tail of `?request=…` over a WebSocket, as caller `token`.
async fn websocket_tail(
    server: &RunningServer,
    token: &str,
    request: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/v1/logs/tail?request={request}", server.addr);
    let mut upgrade = url.into_client_request().unwrap();
    upgrade.headers_mut().insert(
        "sec-websocket-protocol",
        format!("tailwater.v1, tailwater.bearer.{token}")
            .parse()
            .unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(upgrade).await.unwrap();
    assert_eq!(response.status().as_u16(), 101);
    socket
}

/// Records from a tail until one with message `until` (included).
async fn until_message<S, E>(tail: &mut S, until: &str) -> Vec<String>
where
    S: futures_util::Stream<Item = Result<LogRecord, E>> + Unpin,
    E: std::fmt::Debug,
{
    let mut got = Vec::new();
    while got.last().is_none_or(|last| last != until) {
        let record = tokio::time::timeout(Duration::from_secs(30), tail.next())
            .await
            .unwrap_or_else(|_| panic!("'{until}' arrives; so far {got:?}"))
            .expect("the tail goes on")
            .expect("a valid record");
        got.push(record.message);
    }
    got
}

/// The records of a WebSocket tail, as a stream.
fn websocket_records(
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> impl futures_util::Stream<Item = Result<LogRecord, String>> + Unpin {
    use tokio_tungstenite::tungstenite::Message;
    Box::pin(socket.filter_map(|frame| async move {
        match frame {
            Ok(Message::Text(text)) => match serde_json::from_str(&text) {
                Ok(TailMessage::Record { record, .. }) => Some(Ok(*record)),
                Ok(other) => Some(Err(format!("unexpected {other:?}"))),
                Err(error) => Some(Err(error.to_string())),
            },
            Ok(_) => None,
            Err(error) => Some(Err(error.to_string())),
        }
    }))
}

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
async fn an_ingest_token_of_another_app_cannot_take_over_a_request() {
    let (_dir, server, _admin) = common::server(tailwater_server::tail::DEFAULT_TAIL_BUFFER).await;
    let (real, real_id) = token(&server, "caller", None).await;
    let (thief, thief_id) = token(&server, "caller", None).await;
    let (pub_ingest, _) = token(&server, "ingest", Some("pub")).await;
    let (other_ingest, _) = token(&server, "ingest", Some("other")).await;

    // r-1: app pub's gateway starts it for the real caller; then app
    // other's token sends a start of the same id, dated ten minutes
    // earlier, naming the thief.
    ingest(
        &server,
        &pub_ingest,
        records(
            "pub",
            "pub-1",
            "r-1",
            0,
            &[start(&real_id), line("pub line 1")],
        ),
    )
    .await;
    // Another runner of app pub: the same app's request, the same owner.
    ingest(
        &server,
        &pub_ingest,
        records("pub", "pub-2", "r-1", 0, &[line("pub line 2")]),
    )
    .await;
    ingest(
        &server,
        &other_ingest,
        records(
            "other",
            "other-1",
            "r-1",
            600,
            &[start(&thief_id), line("other line")],
        ),
    )
    .await;
    // r-2: app other's token claims the id first, and app pub's real
    // start comes after it.
    ingest(
        &server,
        &other_ingest,
        records("other", "other-1", "r-2", 600, &[start(&thief_id)]),
    )
    .await;
    ingest(
        &server,
        &pub_ingest,
        records(
            "pub",
            "pub-1",
            "r-2",
            0,
            &[start(&real_id), line("pub r-2")],
        ),
    )
    .await;

    let pub_r1 = [
        ("pub", "request started"),
        ("pub", "pub line 1"),
        ("pub", "pub line 2"),
    ];
    let other_r1 = [("other", "request started"), ("other", "other line")];
    let own = |records: &[(&str, &str)]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|(app, message)| (app.to_string(), message.to_string()))
            .collect()
    };
    for path in [
        "/v1/logs?request=r-1&direction=forward",
        "/v1/requests/r-1/logs?direction=forward",
    ] {
        let (status, page) = call(&server, "GET", path, &real, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(app_messages(&page), own(&pub_r1), "{path}: the real caller");
        let (status, page) = call(&server, "GET", path, &thief, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(app_messages(&page), own(&other_r1), "{path}: the thief");
    }
    let (status, page) = call(
        &server,
        "GET",
        "/v1/logs?request=r-2&direction=forward",
        &real,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        app_messages(&page),
        own(&[("pub", "request started"), ("pub", "pub r-2")])
    );
    let (status, page) = call(
        &server,
        "GET",
        "/v1/logs?request=r-2&direction=forward",
        &thief,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(app_messages(&page), own(&[("other", "request started")]));

    // The request page: each sees its own app's request.
    for (token, app, runner) in [(&real, "pub", "pub-1"), (&thief, "other", "other-1")] {
        let (status, info) = call(&server, "GET", "/v1/requests/r-1", token, None).await;
        assert_eq!(status, 200, "{info}");
        assert_eq!(
            (info["app"].as_str(), info["runner"].as_str()),
            (Some(app), Some(runner))
        );
        assert_eq!(
            info["records"],
            json!(if app == "pub" { 3 } else { 2 }),
            "{info}"
        );
    }

    // Export and histogram hold the same records as history.
    let (status, export) = call(
        &server,
        "GET",
        "/v1/export?request=r-1&format=ndjson",
        &thief,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    let exported: Vec<String> = export
        .as_str()
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_else(|| vec![export.to_string()]);
    assert!(
        exported.iter().all(|line| !line.contains("pub line")),
        "the thief exports nothing of app pub: {exported:?}"
    );
    assert!(
        exported.iter().any(|line| line.contains("other line")),
        "{exported:?}"
    );
    for (token, total) in [(&real, 3), (&thief, 2)] {
        let (status, histogram) =
            call(&server, "GET", "/v1/histogram?request=r-1", token, None).await;
        assert_eq!(status, 200, "{histogram}");
        assert_eq!(histogram["total"], json!(total), "{histogram}");
    }
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
