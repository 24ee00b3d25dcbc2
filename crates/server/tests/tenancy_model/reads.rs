//! Every read path, held to the model: history, export, histogram,
//! `/v1/requests/{id}` and its logs, the list of requests, runners and
//! status; positions handed to another tenant; live tails.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tailwater_model::wire::percent_encode;
use tailwater_server::RunningServer;

use super::*;

/// Record ids, `as_of` and cursors are one tenant's: handed to any other
/// tenant's owner they are refused (400), never read as a position of
/// theirs; to their own tenant's owner they work.
pub(crate) async fn check_positions_stay_home(world: &World, seed: u64) {
    let owners: Vec<&Token> = world.tokens.iter().filter(|t| t.scope == "owner").collect();
    let mut refused = 0;
    for from in &owners {
        let (status, page) = http(
            &world.server,
            "GET",
            "/v1/logs?limit=1&since=2h",
            &from.secret,
            None,
        )
        .await;
        assert_eq!(status, 200, "seed {seed}: {page}");
        let mut handed = vec![format!(
            "/v1/logs/tail?after={}",
            page["as_of"].as_str().unwrap()
        )];
        if let Some(record) = page["records"].as_array().unwrap().first() {
            handed.push(format!(
                "/v1/logs/tail?after={}",
                record["id"].as_str().unwrap()
            ));
        }
        if let Some(cursor) = page["next_cursor"].as_str() {
            handed.push(format!("/v1/logs?cursor={cursor}"));
        }
        let (status, list) = http(
            &world.server,
            "GET",
            "/v1/requests?limit=1",
            &from.secret,
            None,
        )
        .await;
        assert_eq!(status, 200, "seed {seed}: {list}");
        if let Some(cursor) = list["next_cursor"].as_str() {
            handed.push(format!("/v1/requests?cursor={cursor}"));
        }
        for to in &owners {
            for path in &handed {
                if from.tenant == to.tenant {
                    // A tail would stream: its own tenant's history is
                    // checked instead.
                    if !path.contains("/tail?") {
                        let (status, body) =
                            http(&world.server, "GET", path, &to.secret, None).await;
                        assert_eq!(status, 200, "seed {seed}: own cursor: {body}");
                    }
                    continue;
                }
                let (status, body) = http(&world.server, "GET", path, &to.secret, None).await;
                assert_eq!(
                    status, 400,
                    "seed {seed}: tenant {:?}'s {path} read by tenant {:?}: {body}",
                    from.tenant, to.tenant
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "seed {seed}: no two tenants' owners to check");
}

/// Every read path of `token`, against the model.
pub(crate) async fn check_reads(server: &RunningServer, token: &Token, model: &Model, seed: u64) {
    let who = format!(
        "seed {seed}: {} token {:?} (tenant {:?}, app {:?})",
        token.scope, token.id, token.tenant, token.app
    );
    check_request_list(server, token, model, &who).await;
    let requests: Vec<Option<&str>> = match token.scope {
        "caller" => REQUESTS.iter().map(|r| Some(*r)).collect(),
        _ => std::iter::once(None)
            .chain(REQUESTS.iter().map(|r| Some(*r)))
            .collect(),
    };
    for request in requests {
        let want = model.visible(token, request);
        let query = request.map(|r| format!("request={r}&")).unwrap_or_default();
        // An admin reads its own tenant unless it names one: read each.
        let tenants: Vec<Option<&str>> = if token.scope == "admin" {
            TENANTS.iter().map(|t| Some(*t)).collect()
        } else {
            vec![None]
        };
        let mut history = BTreeSet::new();
        let mut history_records = 0;
        let mut export = BTreeSet::new();
        let mut histogram_total = 0;
        let mut count_total = 0;
        let mut loki = BTreeSet::new();
        for tenant in tenants {
            let tenant_q = tenant.map(|t| format!("tenant={t}&")).unwrap_or_default();
            let (status, page) = http(
                server,
                "GET",
                &format!("/v1/logs?{query}{tenant_q}limit=10000&since=2h"),
                &token.secret,
                None,
            )
            .await;
            if token.scope == "ingest" {
                assert_eq!(status, 403, "{who}: an ingest token reads nothing: {page}");
                return;
            }
            assert_eq!(status, 200, "{who}: history {request:?}: {page}");
            let records = page["records"].as_array().unwrap();
            history_records += records.len();
            history.extend(markers(records));

            let (status, text) = http_text(
                server,
                &format!("/v1/export?{query}{tenant_q}since=2h&format=ndjson"),
                &token.secret,
            )
            .await;
            assert_eq!(status, 200, "{who}: export {request:?}: {text}");
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            export.extend(markers(&lines));

            let (status, histogram) = http(
                server,
                "GET",
                &format!("/v1/histogram?{query}{tenant_q}since=2h"),
                &token.secret,
                None,
            )
            .await;
            assert_eq!(status, 200, "{who}: histogram {request:?}: {histogram}");
            histogram_total += histogram["total"].as_u64().unwrap();

            let (status, count) = http(
                server,
                "GET",
                &format!("/v1/logs/count?{query}{tenant_q}since=2h"),
                &token.secret,
                None,
            )
            .await;
            assert_eq!(status, 200, "{who}: count {request:?}: {count}");
            assert_eq!(count["complete"], true, "{who}: count {request:?}: {count}");
            count_total += count["total"].as_u64().unwrap();

            // The Loki query API, as Grafana asks it: every source, the
            // request named in LogQL.
            let logql = match request {
                Some(request) => format!(r#"{{source=~".+"}} | request_id="{request}""#),
                None => r#"{source=~".+"}"#.to_owned(),
            };
            let start = jiff::Timestamp::now().as_nanosecond() - 7_200_000_000_000;
            let (status, body) = http(
                server,
                "GET",
                &format!(
                    "/loki/api/v1/query_range?{tenant_q}limit=10000&direction=forward&start={start}&query={}",
                    percent_encode(&logql)
                ),
                &token.secret,
                None,
            )
            .await;
            assert_eq!(status, 200, "{who}: loki query_range {request:?}: {body}");
            for stream in body["data"]["result"].as_array().unwrap() {
                for pair in stream["values"].as_array().unwrap() {
                    let line = pair[1].as_str().unwrap();
                    loki.insert(line.split(' ').next().unwrap_or("").to_owned());
                }
            }
        }
        let loki_markers: BTreeSet<String> =
            loki.iter().filter(|m| is_marker(m)).cloned().collect();
        assert_eq!(
            loki_markers, want,
            "{who}: loki query_range of request {request:?}"
        );
        let history_markers: BTreeSet<String> =
            history.iter().filter(|m| is_marker(m)).cloned().collect();
        assert_eq!(
            history_markers, want,
            "{who}: history of request {request:?}"
        );
        let export_markers: BTreeSet<String> =
            export.iter().filter(|m| is_marker(m)).cloned().collect();
        assert_eq!(export_markers, want, "{who}: export of request {request:?}");
        // The histogram counts what history returns (the server's own
        // records included, which carry no marker).
        assert_eq!(
            histogram_total as usize, history_records,
            "{who}: histogram of request {request:?} counts what history shows"
        );
        assert_eq!(
            count_total as usize, history_records,
            "{who}: count of request {request:?} is what history shows"
        );

        // A request's own page: found exactly when the token sees any of
        // its records (or, for an owner, any record of it in its tenant).
        if let (Some(request), false) = (request, token.scope == "admin") {
            let (status, body) = http(
                server,
                "GET",
                &format!("/v1/requests/{request}"),
                &token.secret,
                None,
            )
            .await;
            if want.is_empty() {
                assert_eq!(
                    status, 404,
                    "{who}: /v1/requests/{request} must not exist: {body}"
                );
            } else {
                assert_eq!(status, 200, "{who}: /v1/requests/{request}: {body}");
                let (status, page) = http(
                    server,
                    "GET",
                    &format!("/v1/requests/{request}/logs?limit=10000&since=2h"),
                    &token.secret,
                    None,
                )
                .await;
                assert_eq!(status, 200, "{who}: /v1/requests/{request}/logs: {page}");
                let got: BTreeSet<String> = markers(page["records"].as_array().unwrap())
                    .into_iter()
                    .filter(|m| is_marker(m))
                    .collect();
                assert_eq!(got, want, "{who}: /v1/requests/{request}/logs");
            }
        }
    }

    // Runners and status: owners see their tenant's only; callers nothing.
    let (status, runners) = http(server, "GET", "/v1/runners", &token.secret, None).await;
    match token.scope {
        "owner" => {
            assert_eq!(status, 200, "{who}: runners: {runners}");
            for runner in runners["runners"].as_array().unwrap() {
                assert_eq!(
                    runner["tenant"].as_str(),
                    token.tenant.as_deref(),
                    "{who}: a runner of another tenant: {runner}"
                );
                let app = runner["app"].as_str().unwrap();
                assert!(
                    model
                        .records
                        .iter()
                        .any(|r| Some(&r.tenant) == token.tenant.as_ref()
                            && r.app == app
                            && r.runner == runner["runner"].as_str().unwrap()),
                    "{who}: runner {runner} was never written by its tenant"
                );
            }
        }
        "caller" => assert_eq!(status, 403, "{who}: runners: {runners}"),
        _ => {}
    }
    let (status, body) = http(server, "GET", "/v1/status", &token.secret, None).await;
    assert_eq!(status, 200, "{who}: status: {body}");
    let text = body.to_string();
    for tenant in TENANTS {
        if token.scope != "admin" && token.tenant.as_deref() != Some(tenant) {
            assert!(
                !text.contains(&format!("\"{tenant}\"")),
                "{who}: status names another tenant {tenant}: {body}"
            );
        }
    }
    // The cluster's status covers every tenant: admin tokens only (the
    // model's server is embedded, so it says just that).
    let (status, body) = http(server, "GET", "/v1/cluster", &token.secret, None).await;
    if token.scope == "admin" {
        assert_eq!(
            (status, body.clone()),
            (200, json!({"mode": "embedded"})),
            "{who}: cluster"
        );
    } else {
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("forbidden")),
            "{who}: cluster: {body}"
        );
    }
    // A peer's repair reads every tenant's records: no token of the model
    // reaches it (the embedded server has no peers; tests/cluster/repair.rs
    // refuses every token on a cluster node).
    for path in [
        "/internal/v1/cluster/records?partition=0",
        "/internal/v1/cluster/stream-records?from_sequence=1&to_sequence=1",
    ] {
        let (status, body) = http(server, "GET", path, &token.secret, None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("not_found")),
            "{who}: a peer's records ({path}): {body}"
        );
    }
}

/// `GET /v1/requests`, every page of two: exactly the model's requests for
/// `token`, each once; an ingest token lists nothing (403).
async fn check_request_list(server: &RunningServer, token: &Token, model: &Model, who: &str) {
    let tenants: Vec<&str> = match (token.scope, token.tenant.as_deref()) {
        ("admin", _) => TENANTS.to_vec(),
        (_, Some(tenant)) => vec![tenant],
        (_, None) => unreachable!("only admin tokens have no tenant"),
    };
    for tenant in tenants {
        let mut listed = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!(
                "/v1/requests?tenant={}&limit=2{cursor}",
                percent_encode(tenant)
            );
            let (status, page) = http(server, "GET", &path, &token.secret, None).await;
            if token.scope == "ingest" {
                assert_eq!(status, 403, "{who}: an ingest token lists nothing: {page}");
                return;
            }
            assert_eq!(status, 200, "{who}: {path}: {page}");
            for request in page["requests"].as_array().unwrap() {
                assert_eq!(request["tenant"], tenant, "{who}: {request}");
                listed.push((
                    request["app"].as_str().unwrap().to_owned(),
                    request["request_id"].as_str().unwrap().to_owned(),
                ));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        let got: BTreeSet<(String, String)> = listed.iter().cloned().collect();
        assert_eq!(
            got.len(),
            listed.len(),
            "{who}: a request listed twice: {listed:?}"
        );
        assert_eq!(
            got,
            model.listed(token, tenant),
            "{who}: requests of {tenant:?}"
        );
    }
}

/// The markers (`m<N>`, the first word of the message) of records.
pub(crate) fn markers(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|record| {
            let record = record.get("record").unwrap_or(record);
            let message = record["message"].as_str()?;
            Some(message.split(' ').next().unwrap_or("").to_owned())
        })
        .collect()
}

/// An open live tail, SSE or WebSocket.
pub(crate) enum Tail {
    Sse(reqwest::Response),
    WebSocket(
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ),
}

impl Tail {
    /// Opens a tail: once this returns, the server follows the store for
    /// it (the answer's head, or the WebSocket handshake, has come back).
    pub(crate) async fn open(
        addr: std::net::SocketAddr,
        path: &str,
        token: &str,
        websocket: bool,
    ) -> Tail {
        if websocket {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
            let bearer = format!("Bearer {token}").parse().unwrap();
            request.headers_mut().insert("authorization", bearer);
            let (socket, _) = tokio_tungstenite::connect_async(request)
                .await
                .unwrap_or_else(|error| panic!("websocket {path}: {error}"));
            Tail::WebSocket(socket)
        } else {
            let response = reqwest::Client::new()
                .get(format!("http://{addr}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "tail {path}");
            Tail::Sse(response)
        }
    }

    /// The markers it gets until it has been quiet for a while: every
    /// record is written before the tails are read out, so a tail quiet
    /// that long has had all it will get.
    pub(crate) async fn read(self) -> BTreeSet<String> {
        const QUIET: Duration = Duration::from_secs(3);
        let mut got = BTreeSet::new();
        match self {
            Tail::WebSocket(mut socket) => {
                use tokio_tungstenite::tungstenite::Message;
                while let Ok(Some(Ok(message))) = tokio::time::timeout(QUIET, socket.next()).await {
                    if let Message::Text(text) = message {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        got.extend(markers(std::slice::from_ref(&value)));
                    }
                }
            }
            Tail::Sse(response) => {
                let mut stream = response.bytes_stream();
                let mut buffer = String::new();
                while let Ok(Some(Ok(chunk))) = tokio::time::timeout(QUIET, stream.next()).await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                }
                for line in buffer.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(value) = serde_json::from_str::<Value>(data.trim()) {
                            got.extend(markers(std::slice::from_ref(&value)));
                        }
                    }
                }
            }
        }
        got
    }
}

/// Whether a first word is one of this test's markers (`m` and a number),
/// not the start of one of the server's own records.
pub(crate) fn is_marker(word: &str) -> bool {
    word.strip_prefix('m')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) async fn new_token(server: &RunningServer, body: Value) -> Token {
    let (status, created) = http(server, "POST", "/v1/tokens", ADMIN, Some(body.clone())).await;
    assert!(status < 300, "create token {body}: {status} {created}");
    Token {
        secret: created["token"].as_str().unwrap().to_owned(),
        id: created["id"].as_str().unwrap().to_owned(),
        scope: match body["scope"].as_str().unwrap() {
            "owner" => "owner",
            "ingest" => "ingest",
            "caller" => "caller",
            other => panic!("scope {other}"),
        },
        tenant: body["tenant"].as_str().map(str::to_owned),
        app: body["app"].as_str().map(str::to_owned),
    }
}

pub(crate) async fn http(
    server: &RunningServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    super::common::call(server, method, path, token, body).await
}

pub(crate) async fn http_text(server: &RunningServer, path: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", server.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
