//! The authorization matrix over real HTTP: every endpoint × every kind of
//! token × own or other tenant × public or private app, each cell written
//! out below and asserted. Then what the matrix cannot show: secrets shown
//! once and stored hashed, revocation and expiry at once (live tails too),
//! the registry surviving a restart, tenant defaults for new apps.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tailwater_server::{start, RunningServer, ServerConfig};

const ADMIN: &str = "tw_authz_admin";

/// One HTTP call: status and body (a tail is read until it is quiet for
/// `TAIL_QUIET`, and its body is the events).
async fn call(
    server: &RunningServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    if method == "WS" {
        return websocket(server, path, token).await;
    }
    let http = reqwest::Client::new();
    let mut request = http.request(
        method.parse().unwrap(),
        format!("http://{}{path}", server.addr),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if is_tail(path) && status == 200 {
        let mut events = String::new();
        let mut stream = response.bytes_stream();
        while let Result::Ok(Some(Result::Ok(chunk))) =
            tokio::time::timeout(TAIL_QUIET, stream.next()).await
        {
            events.push_str(&String::from_utf8_lossy(&chunk));
        }
        return (status, events);
    }
    (status, response.text().await.unwrap())
}

const TAIL_QUIET: Duration = Duration::from_millis(300);

/// A WebSocket tail with the token in `Authorization`: 101 and its text
/// frames until quiet for `TAIL_QUIET`, or the refusal's status and body.
async fn websocket(server: &RunningServer, path: &str, token: Option<&str>) -> (u16, String) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, Message};
    let mut request = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        let bearer = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", bearer);
    }
    let mut socket = match tokio_tungstenite::connect_async(request).await {
        Result::Ok((socket, _)) => socket,
        Err(Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            return (
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            );
        }
        Err(error) => panic!("websocket {path}: {error}"),
    };
    let mut frames = String::new();
    while let Result::Ok(Some(Result::Ok(message))) =
        tokio::time::timeout(TAIL_QUIET, socket.next()).await
    {
        if let Message::Text(text) = message {
            frames.push_str(&text);
            frames.push('\n');
        }
    }
    (101, frames)
}

/// `/v1/logs/tail` and `/v1/requests/{id}/logs/tail`.
fn is_tail(path: &str) -> bool {
    path.split('?').next().unwrap().ends_with("/logs/tail")
}

/// `/v1/logs` and `/v1/requests/{id}/logs`: a page of records.
fn is_page(path: &str) -> bool {
    path.split('?').next().unwrap().ends_with("/logs")
}

/// A gateway's record of a request's start, made by caller token `caller`.
fn gateway_start(app: &str, runner: &str, request: &str, caller: &str) -> Value {
    json!({"app": app, "version": "v1", "runner": runner, "boot": "b", "source": "gateway", "records": [
        {"seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "system", "level": "info",
         "request_id": request, "message": format!("request {request} started"),
         "fields": {"event": "request_start", "caller": caller}}
    ]})
}

async fn ok(server: &RunningServer, method: &str, path: &str, body: Value) -> Value {
    let (status, text) = call(server, method, path, Some(ADMIN), Some(body)).await;
    assert!(status < 300, "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// `POST /v1/tokens`: the created token, as the server answers it.
async fn create_token(server: &RunningServer, body: Value) -> Value {
    ok(server, "POST", "/v1/tokens", body).await
}

async fn new_token(server: &RunningServer, body: Value) -> (String, String) {
    let created = create_token(server, body).await;
    (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

/// Returns once the server's time is past `expires` (a token's expiry, as
/// the server gave it): the server has no clock a test can move, and reads
/// the same system clock as this.
async fn until_past(expires: &Value) {
    let expires: jiff::Timestamp = expires.as_str().expect("an expiry").parse().unwrap();
    let left = expires.duration_since(jiff::Timestamp::now());
    if let Result::Ok(left) = Duration::try_from(left) {
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
    assert!(jiff::Timestamp::now() > expires);
}

fn batch(app: &str, runner: &str, request: &str) -> Value {
    json!({"app": app, "version": "v1", "runner": runner, "boot": "b", "records": [
        {"seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "level": "info",
         "request_id": request, "message": format!("{app} {request}")}
    ]})
}

async fn server_on(dir: &std::path::Path) -> RunningServer {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    // Callers read requests with no recorded caller here at once: a
    // request's start comes in its first batch, so no grace is needed.
    config.request_owner_grace = std::time::Duration::ZERO;
    start(config).await.unwrap()
}

/// The expected answer of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// 200 (201 for creations) with at least one record (for log reads).
    Ok,
    /// 200 with no record at all (a caller, records of private apps).
    Empty,
    /// 401: not authenticated.
    Unauth,
    /// 403 `forbidden`: the scope does not allow it.
    Forbidden,
    /// 403 `private_logs`: a caller named a private app.
    Private,
    /// 404: another tenant (or one that does not exist).
    NotFound,
}
use Want::*;

/// Columns, in order.
const KINDS: [&str; 8] = [
    "admin", "owner", "ingest", "caller", "none", "bad", "expired", "revoked",
];

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Ingest,
    /// `GET /v1/logs?request=R&app=A`.
    Logs,
    /// `GET /v1/logs?request=R` (no app named).
    LogsAnyApp,
    /// `GET /v1/logs?app=A` (no request).
    LogsNoRequest,
    Tail,
    TailAnyApp,
    TailNoRequest,
    CreateTenant,
    ListTenants,
    UpdateTenant,
    CreateToken,
    ListTokens,
    RevokeToken,
    CreateApp,
    ListApps,
    UpdateApp,
    /// `GET /v1/runners?app=A`.
    Runners,
    /// `GET /v1/runners/seed-A`.
    RunnerShow,
    /// `GET /v1/requests/r-A`.
    Request,
    /// `GET /v1/requests/r-A/logs`.
    RequestLogs,
    /// `GET /v1/requests/r-A/logs/tail?after=0`.
    RequestTail,
    /// `GET /v1/requests/mine-A`: the gateway recorded the caller token
    /// of the matrix as its caller.
    RequestMine,
    /// `GET /v1/requests/theirs-A`: recorded as another caller's.
    RequestTheirs,
    /// `GET /v1/requests/theirs-A/logs`.
    RequestTheirsLogs,
    /// `GET /v1/logs?request=theirs-A`.
    LogsTheirs,
    /// `GET /v1/logs/tail?request=theirs-A&after=0`.
    TailTheirs,
    /// `GET /v1/logs/tail?request=R&app=A&after=0` as a WebSocket.
    WsTail,
    /// `GET /v1/logs/tail?app=A&after=0` as a WebSocket (no request).
    WsTailNoRequest,
    /// `GET /v1/logs/tail?request=theirs-A&after=0` as a WebSocket.
    WsTailTheirs,
    /// `GET /v1/export?request=R&app=A`.
    Export,
    /// `GET /v1/export?app=A` (no request).
    ExportNoRequest,
    /// `GET /v1/export?request=theirs-A`.
    ExportTheirs,
    /// `GET /v1/histogram?request=R&app=A`.
    Histogram,
    /// `GET /v1/histogram?app=A` (no request).
    HistogramNoRequest,
    /// `GET /v1/histogram?request=theirs-A`.
    HistogramTheirs,
    /// `GET /v1/status`.
    Status,
    /// `GET /metrics` (the server runs without `--public-metrics`).
    Metrics,
}
use Endpoint::*;

/// `(endpoint, tenant: own or other, app: pub or priv or "-")` and the answer
/// for each column of [`KINDS`]. The ingest token is for app `pub` of the
/// own tenant; the caller token is for the own tenant (any app).
#[rustfmt::skip]
const MATRIX: &[(Endpoint, &str, &str, [Want; 8])] = &[
    //                                   admin      owner      ingest     caller     none    bad     expired revoked
    (Ingest,        "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Ingest,        "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Ingest,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Ingest,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateTenant,  "-",     "-",    [Ok,       Forbidden, Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListTenants,   "-",     "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateTenant,  "own",   "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateTenant,  "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ListTokens,    "own",   "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListTokens,    "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Revoking is by token id: ingest and caller tokens manage no token, so
    // any id is 403 for them (whichever tenant, even an unknown id).
    (RevokeToken,   "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RevokeToken,   "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RevokeToken,   "other", "pub",  [Ok,       NotFound,  Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RevokeToken,   "other", "priv", [Ok,       NotFound,  Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ListApps,      "own",   "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListApps,      "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // A caller names no app here: a private app's request is as missing.
    (Request,       "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Request,       "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Request,       "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Request,       "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Another caller's request: 404 where a missing request is 404, no
    // record where a missing request has none.
    (RequestTheirs, "own",   "pub",  [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirs, "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirs, "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirs, "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "own", "pub", [Ok,      Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "own", "priv",[Ok,      Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "other","pub",[Ok,      NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "other","priv",[Ok,     NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // The WebSocket form of the tail answers as SSE does, refusing before
    // the upgrade.
    (WsTail,        "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (WsTail,        "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (WsTail,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTail,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"own",  "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"own",  "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Export and the histogram read records as /v1/logs does.
    (Export,        "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Export,        "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Export,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Export,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"own",  "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"own",  "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"own","pub", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"own","priv",[Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"other","pub",[Ok,      NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"other","priv",[Ok,     NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"own",  "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"own",  "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Every token may ask who it is, of its own tenant only.
    (Status,        "own",   "-",    [Ok,       Ok,        Ok,        Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Status,        "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Metrics name every tenant: admin only (see limits.rs for --public-metrics).
    (Metrics,       "-",     "-",    [Ok,       Forbidden, Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
];

#[tokio::test]
async fn authorization_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;

    // Two tenants, each with a public app and a private one, each app with
    // one request's record.
    for tenant in ["acme", "globex"] {
        ok(&server, "POST", "/v1/tenants", json!({"name": tenant})).await;
        for (app, private) in [("pub", false), ("priv", true)] {
            let path = format!("/v1/apps?tenant={tenant}");
            ok(
                &server,
                "POST",
                &path,
                json!({"name": app, "private_logs": private}),
            )
            .await;
            let path = format!("/v1/ingest?tenant={tenant}");
            ok(
                &server,
                "POST",
                &path,
                batch(app, &format!("seed-{app}"), &format!("r-{app}")),
            )
            .await;
        }
    }
    let (owner, _) = new_token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    let (ingest, _) = new_token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "pub"}),
    )
    .await;
    let (caller, caller_id) =
        new_token(&server, json!({"scope": "caller", "tenant": "acme"})).await;
    // Requests the gateway recorded as made by this caller, and by another.
    for tenant in ["acme", "globex"] {
        for app in ["pub", "priv"] {
            let path = format!("/v1/ingest?tenant={tenant}");
            for (request, who) in [("mine", caller_id.as_str()), ("theirs", "tok_someone_else")] {
                let runner = format!("gw-{request}-{app}");
                let start = gateway_start(app, &runner, &format!("{request}-{app}"), who);
                ok(&server, "POST", &path, start).await;
            }
        }
    }
    let (revoked, revoked_id) =
        new_token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    ok(
        &server,
        "DELETE",
        &format!("/v1/tokens/{revoked_id}"),
        json!(null),
    )
    .await;
    let created = create_token(
        &server,
        json!({"scope": "owner", "tenant": "acme", "expires_in": "1s"}),
    )
    .await;
    let expired = created["token"].as_str().unwrap().to_owned();
    until_past(&created["expires"]).await;
    let tokens: [Option<&str>; 8] = [
        Some(ADMIN),
        Some(&owner),
        Some(&ingest),
        Some(&caller),
        None,
        Some("tw_not_a_token"),
        Some(&expired),
        Some(&revoked),
    ];

    let mut cells = 0;
    let mut unique = 0;
    for (row, &(endpoint, which_tenant, app, wants)) in MATRIX.iter().enumerate() {
        let tenant = if which_tenant == "other" {
            "globex"
        } else {
            "acme"
        };
        for (column, (token, want)) in tokens.iter().zip(wants).enumerate() {
            unique += 1;
            let fresh = format!("n{row}x{column}");
            let (method, path, body) = match endpoint {
                Ingest => (
                    "POST",
                    format!("/v1/ingest?tenant={tenant}"),
                    Some(batch(app, &fresh, "r-new")),
                ),
                Logs => (
                    "GET",
                    format!("/v1/logs?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                LogsAnyApp => (
                    "GET",
                    format!("/v1/logs?tenant={tenant}&request=r-{app}"),
                    None,
                ),
                LogsNoRequest => ("GET", format!("/v1/logs?tenant={tenant}&app={app}"), None),
                Tail => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&request=r-{app}&app={app}&after=0"),
                    None,
                ),
                TailAnyApp => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&request=r-{app}&after=0"),
                    None,
                ),
                TailNoRequest => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&app={app}&after=0"),
                    None,
                ),
                CreateTenant => ("POST", "/v1/tenants".into(), Some(json!({"name": fresh}))),
                ListTenants => ("GET", "/v1/tenants".into(), None),
                UpdateTenant => (
                    "PATCH",
                    format!("/v1/tenants/{tenant}"),
                    Some(json!({"private_logs": false})),
                ),
                // Ingest: a caller token for a private app is refused
                // whoever asks (tests/registry.rs tests that).
                CreateToken => (
                    "POST",
                    "/v1/tokens".into(),
                    Some(json!({"scope": "ingest", "tenant": tenant, "app": app})),
                ),
                ListTokens => ("GET", format!("/v1/tokens?tenant={tenant}"), None),
                RevokeToken => {
                    let (_, victim) = new_token(
                        &server,
                        json!({"scope": "ingest", "tenant": tenant, "app": app}),
                    )
                    .await;
                    ("DELETE", format!("/v1/tokens/{victim}"), None)
                }
                CreateApp => (
                    "POST",
                    format!("/v1/apps?tenant={tenant}"),
                    Some(json!({"name": fresh, "private_logs": app == "priv"})),
                ),
                ListApps => ("GET", format!("/v1/apps?tenant={tenant}"), None),
                Runners => (
                    "GET",
                    format!("/v1/runners?tenant={tenant}&app={app}"),
                    None,
                ),
                RunnerShow => (
                    "GET",
                    format!("/v1/runners/seed-{app}?tenant={tenant}"),
                    None,
                ),
                Request => ("GET", format!("/v1/requests/r-{app}?tenant={tenant}"), None),
                RequestLogs => (
                    "GET",
                    format!("/v1/requests/r-{app}/logs?tenant={tenant}"),
                    None,
                ),
                RequestTail => (
                    "GET",
                    format!("/v1/requests/r-{app}/logs/tail?tenant={tenant}&after=0"),
                    None,
                ),
                RequestMine => (
                    "GET",
                    format!("/v1/requests/mine-{app}?tenant={tenant}"),
                    None,
                ),
                RequestTheirs => (
                    "GET",
                    format!("/v1/requests/theirs-{app}?tenant={tenant}"),
                    None,
                ),
                RequestTheirsLogs => (
                    "GET",
                    format!("/v1/requests/theirs-{app}/logs?tenant={tenant}"),
                    None,
                ),
                LogsTheirs => (
                    "GET",
                    format!("/v1/logs?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                TailTheirs => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&request=theirs-{app}&after=0"),
                    None,
                ),
                WsTail => (
                    "WS",
                    format!("/v1/logs/tail?tenant={tenant}&request=r-{app}&app={app}&after=0"),
                    None,
                ),
                WsTailNoRequest => (
                    "WS",
                    format!("/v1/logs/tail?tenant={tenant}&app={app}&after=0"),
                    None,
                ),
                WsTailTheirs => (
                    "WS",
                    format!("/v1/logs/tail?tenant={tenant}&request=theirs-{app}&after=0"),
                    None,
                ),
                Export => (
                    "GET",
                    format!("/v1/export?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                ExportNoRequest => ("GET", format!("/v1/export?tenant={tenant}&app={app}"), None),
                ExportTheirs => (
                    "GET",
                    format!("/v1/export?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                Histogram => (
                    "GET",
                    format!("/v1/histogram?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                HistogramNoRequest => (
                    "GET",
                    format!("/v1/histogram?tenant={tenant}&app={app}"),
                    None,
                ),
                HistogramTheirs => (
                    "GET",
                    format!("/v1/histogram?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                Status => ("GET", format!("/v1/status?tenant={tenant}"), None),
                Metrics => ("GET", "/metrics".into(), None),
                UpdateApp => (
                    "PATCH",
                    format!("/v1/apps/{app}?tenant={tenant}"),
                    Some(json!({"private_logs": app == "priv"})),
                ),
            };
            let (status, text) = call(&server, method, &path, *token, body).await;
            let what = format!(
                "{endpoint:?} {which_tenant} {app} as {}: {method} {path} answered {status} {text}",
                KINDS[column]
            );
            let code = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
            // A successful WebSocket upgrade stands for a 200 below.
            let status = if method == "WS" && status == 101 {
                200
            } else {
                status
            };
            let records = if method == "WS" {
                text.matches(r#""type":"record""#).count()
            } else if is_tail(&path) {
                text.matches("event: record").count()
            } else if path.starts_with("/v1/export") && status == 200 {
                text.lines().filter(|line| !line.is_empty()).count()
            } else if path.starts_with("/v1/histogram") && status == 200 {
                let total = serde_json::from_str::<Value>(&text).unwrap()["total"].as_u64();
                total.unwrap() as usize
            } else if is_page(&path) && status == 200 {
                serde_json::from_str::<Value>(&text).unwrap()["records"]
                    .as_array()
                    .unwrap()
                    .len()
            } else {
                usize::MAX
            };
            match want {
                Ok => {
                    assert!(status == 200 || status == 201, "{what}");
                    if records != usize::MAX {
                        assert!(records > 0, "{what}");
                    }
                }
                Empty => assert_eq!((status, records), (200, 0), "{what}"),
                Unauth => assert_eq!(
                    (status, code.as_deref()),
                    (401, Some("unauthorized")),
                    "{what}"
                ),
                Forbidden => assert_eq!(
                    (status, code.as_deref()),
                    (403, Some("forbidden")),
                    "{what}"
                ),
                Private => {
                    assert_eq!(
                        (status, code.as_deref()),
                        (403, Some("private_logs")),
                        "{what}"
                    )
                }
                NotFound => assert_eq!(
                    (status, code.as_deref()),
                    (404, Some("not_found")),
                    "{what}"
                ),
            }
            cells += 1;
        }
    }
    assert_eq!(cells, MATRIX.len() * KINDS.len());
    assert_eq!(unique, cells);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn what_each_scope_sees_in_listings() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    ok(&server, "POST", "/v1/tenants", json!({"name": "acme"})).await;
    ok(&server, "POST", "/v1/tenants", json!({"name": "globex"})).await;
    let (owner, owner_id) = new_token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    new_token(&server, json!({"scope": "owner", "tenant": "globex"})).await;

    let (_, text) = call(&server, "GET", "/v1/tenants", Some(&owner), None).await;
    let tenants: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(tenants.len(), 1, "an owner sees its tenant only: {text}");
    assert_eq!(tenants[0]["name"], "acme");

    let (_, text) = call(&server, "GET", "/v1/tokens", Some(&owner), None).await;
    let tokens: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(tokens.len(), 1, "no admin token, no other tenant's: {text}");
    assert_eq!(tokens[0]["id"], owner_id.as_str());
    assert!(!text.contains("sha256") && !text.contains(&owner));

    // An owner cannot create an admin token, nor see or revoke one.
    let (status, _) = call(
        &server,
        "POST",
        "/v1/tokens",
        Some(&owner),
        Some(json!({"scope": "admin"})),
    )
    .await;
    assert_eq!(status, 403);
    let (_, text) = call(&server, "GET", "/v1/tokens", Some(ADMIN), None).await;
    let admin_id = serde_json::from_str::<Vec<Value>>(&text).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/tokens/{admin_id}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A token with a bad combination is a clear 400.
    for (body, says) in [
        (json!({"scope": "ingest", "tenant": "acme"}), "give its app"),
        (
            json!({"scope": "owner", "tenant": "acme", "app": "x"}),
            "leave app out",
        ),
        (
            json!({"scope": "admin", "tenant": "acme"}),
            "belongs to no tenant",
        ),
        (
            json!({"scope": "caller", "expires_in": "soon"}),
            "invalid expires_in",
        ),
        (json!({"scope": "root"}), "unknown variant"),
    ] {
        let (status, text) = call(&server, "POST", "/v1/tokens", Some(ADMIN), Some(body)).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(says), "{text}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn secrets_are_shown_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    let created = create_token(&server, json!({"scope": "owner", "name": "ci"})).await;
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("tw_") && secret.len() > 40);
    assert!(created["id"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(created["tenant"], "default");

    let (_, listing) = call(&server, "GET", "/v1/tokens", Some(ADMIN), None).await;
    assert!(!listing.contains(secret), "listings never show the secret");
    assert!(!listing.contains("sha256"));
    let on_disk = std::fs::read_to_string(dir.path().join("auth/registry.json")).unwrap();
    assert!(!on_disk.contains(secret) && !on_disk.contains(ADMIN));
    assert!(on_disk.contains("sha256"));
    let mode = std::fs::metadata(dir.path().join("auth/registry.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn revocation_and_expiry_take_effect_at_once_even_on_an_open_tail() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    let (owner, id) = new_token(&server, json!({"scope": "owner"})).await;
    assert_eq!(
        call(&server, "GET", "/v1/apps", Some(&owner), None).await.0,
        200
    );

    // A tail open before the revocation gets nothing after it.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{}/v1/logs/tail", server.addr))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut tail = response.bytes_stream();
    ok(&server, "POST", "/v1/ingest", batch("app", "r1", "before")).await;
    // Past the comment the tail opens with.
    let mut first = String::new();
    while !first.contains("before") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), tail.next()).await;
        first.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap().unwrap()));
    }

    ok(&server, "DELETE", &format!("/v1/tokens/{id}"), json!(null)).await;
    let (status, text) = call(&server, "GET", "/v1/apps", Some(&owner), None).await;
    assert_eq!(status, 401);
    assert!(text.contains("revoked"), "{text}");
    ok(&server, "POST", "/v1/ingest", batch("app", "r2", "after")).await;
    let mut rest = String::new();
    while let Result::Ok(Some(Result::Ok(chunk))) =
        tokio::time::timeout(TAIL_QUIET, tail.next()).await
    {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !rest.contains("after"),
        "a revoked token's tail got: {rest}"
    );

    let created = create_token(&server, json!({"scope": "owner", "expires_in": "1s"})).await;
    let short = created["token"].as_str().unwrap();
    assert_eq!(
        call(&server, "GET", "/v1/apps", Some(short), None).await.0,
        200
    );
    until_past(&created["expires"]).await;
    let (status, text) = call(&server, "GET", "/v1/apps", Some(short), None).await;
    assert_eq!(status, 401);
    assert!(text.contains("expired"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_registry_survives_a_restart_and_new_apps_take_the_tenant_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    ok(&server, "POST", "/v1/tenants", json!({"name": "acme"})).await;
    let (ingest, _) = new_token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "old"}),
    )
    .await;
    let (ingest_new, _) = new_token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "new"}),
    )
    .await;
    // Ingest creates an unknown app with the tenant's defaults.
    let (status, _) = call(
        &server,
        "POST",
        "/v1/ingest",
        Some(&ingest),
        Some(batch("old", "r", "q")),
    )
    .await;
    assert_eq!(status, 200);
    ok(
        &server,
        "PATCH",
        "/v1/tenants/acme",
        json!({"private_logs": true}),
    )
    .await;
    ok(
        &server,
        "PATCH",
        "/v1/apps/old?tenant=acme",
        json!({"retention_days": 7, "max_line_bytes": 65536, "rate_limit_lines_per_sec": 1000}),
    )
    .await;
    server.shutdown().await.unwrap();

    let server = server_on(dir.path()).await;
    let (status, _) = call(
        &server,
        "POST",
        "/v1/ingest",
        Some(&ingest_new),
        Some(batch("new", "r", "q")),
    )
    .await;
    assert_eq!(status, 200, "tokens survive the restart");
    let apps = ok(&server, "GET", "/v1/apps?tenant=acme", json!(null)).await;
    assert_eq!(
        apps,
        json!([
            {"tenant": "acme", "name": "new", "created": apps[0]["created"], "private_logs": true},
            {"tenant": "acme", "name": "old", "created": apps[1]["created"], "private_logs": false,
             "retention_days": 7, "max_line_bytes": 65536, "rate_limit_lines_per_sec": 1000},
        ]),
        "the new app took the new default; the old one kept its own"
    );
    let tenants = ok(&server, "GET", "/v1/tenants", json!(null)).await;
    assert_eq!(tenants[0]["name"], "acme");
    assert_eq!(tenants[0]["private_logs"], true);
    assert_eq!(tenants[1]["name"], "default");
    server.shutdown().await.unwrap();
}
