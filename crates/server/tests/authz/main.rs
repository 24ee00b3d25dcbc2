//! The authorization matrix over real HTTP: every endpoint × every kind of
//! token × own or other tenant × public or private app, each cell written
//! out below and asserted. Then what the matrix cannot show: secrets shown
//! once and stored hashed, revocation and expiry at once (live tails too),
//! the registry surviving a restart, tenant defaults for new apps.
//!
//! The files: `matrix.rs` (the cells), `run.rs` (the matrix asserted),
//! `tokens.rs` (the rest); the helpers they share are here.

mod matrix;
mod run;
mod tokens;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tailwater_model::wire::{encode_binary_batch, IngestBatch, BINARY_BATCH_MEDIA_TYPE};
use tailwater_server::{start, RunningServer, ServerConfig};

pub(crate) const ADMIN: &str = "tw_authz_admin";

/// One HTTP call: status and body (a tail is read until it is quiet for
/// `TAIL_QUIET`, and its body is the events).
/// The method of [`call`] that POSTs its body, an ingest batch, in binary.
pub(crate) const POST_BINARY: &str = "POST binary";

pub(crate) async fn call(
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
    let binary = method == POST_BINARY;
    let method = if binary { "POST" } else { method };
    let mut request = http.request(
        method.parse().unwrap(),
        format!("http://{}{path}", server.addr),
    );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match body {
        // A string is a body of its own (an Elasticsearch bulk's NDJSON).
        Some(Value::String(text)) => {
            request = request
                .header("content-type", "application/x-ndjson")
                .body(text);
        }
        // A batch sent in binary, as the agent sends it.
        Some(body) if binary => {
            let batch: IngestBatch = serde_json::from_value(body).unwrap();
            request = request
                .header("content-type", BINARY_BATCH_MEDIA_TYPE)
                .body(encode_binary_batch(&batch));
        }
        Some(body) => request = request.json(&body),
        None => {}
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

pub(crate) const TAIL_QUIET: Duration = Duration::from_millis(300);

/// A WebSocket tail with the token in `Authorization`: 101 and its text
/// frames until quiet for `TAIL_QUIET`, or the refusal's status and body.
pub(crate) async fn websocket(
    server: &RunningServer,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
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
pub(crate) fn is_tail(path: &str) -> bool {
    path.split('?').next().unwrap().ends_with("/logs/tail")
}

/// `/v1/logs` and `/v1/requests/{id}/logs`: a page of records.
pub(crate) fn is_page(path: &str) -> bool {
    path.split('?').next().unwrap().ends_with("/logs")
}

/// A gateway's record of a request's start, made by caller token `caller`.
pub(crate) fn gateway_start(app: &str, runner: &str, request: &str, caller: &str) -> Value {
    json!({"app": app, "version": "v1", "runner": runner, "boot": "b", "source": "gateway", "records": [
        {"seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "system", "level": "info",
         "request_id": request, "message": format!("request {request} started"),
         "fields": {"event": "request_start", "caller": caller}}
    ]})
}

pub(crate) async fn ok(server: &RunningServer, method: &str, path: &str, body: Value) -> Value {
    let (status, text) = call(server, method, path, Some(ADMIN), Some(body)).await;
    assert!(status < 300, "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// `POST /v1/tokens`: the created token, as the server answers it.
pub(crate) async fn create_token(server: &RunningServer, body: Value) -> Value {
    ok(server, "POST", "/v1/tokens", body).await
}

pub(crate) async fn new_token(server: &RunningServer, body: Value) -> (String, String) {
    let created = create_token(server, body).await;
    (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

/// Returns once the server's time is past `expires` (a token's expiry, as
/// the server gave it): the server has no clock a test can move, and reads
/// the same system clock as this.
pub(crate) async fn until_past(expires: &Value) {
    let expires: jiff::Timestamp = expires.as_str().expect("an expiry").parse().unwrap();
    let left = expires.duration_since(jiff::Timestamp::now());
    if let Result::Ok(left) = Duration::try_from(left) {
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
    assert!(jiff::Timestamp::now() > expires);
}

pub(crate) fn batch(app: &str, runner: &str, request: &str) -> Value {
    json!({"app": app, "version": "v1", "runner": runner, "boot": "b", "records": [
        {"seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "level": "info",
         "request_id": request, "message": format!("{app} {request}")}
    ]})
}

pub(crate) async fn server_on(dir: &std::path::Path) -> RunningServer {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    // Callers read requests with no recorded caller here at once: a
    // request's start comes in its first batch, so no grace is needed.
    config.request_owner_grace = std::time::Duration::ZERO;
    // The matrix makes a drain for each cell that acts on one.
    config.drains.max_per_app = 1000;
    config.drains.max_per_tenant = 1000;
    start(config).await.unwrap()
}
