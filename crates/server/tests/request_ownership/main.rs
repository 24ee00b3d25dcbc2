//! Who reads a request, over real HTTP on loopback: the recorded-caller
//! rule judged per record wherever records leave (history, live tail over
//! SSE and WebSocket, export, histogram, `/v1/requests/{id}`), a
//! `request_start` stored after a tail opened included; and a request is
//! its app's, so an ingest token of another app cannot claim it, however
//! it dates its records.
//!
//! The files: `callers.rs` (the recorded-caller rule), `apps.rs` (a
//! request is its app's); the helpers they share are here.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tailwater_client::Client;
use tailwater_model::wire::{LogsParams, TailMessage};
use tailwater_model::LogRecord;
use tailwater_server::RunningServer;

mod apps;
mod callers;
#[path = "../common/mod.rs"]
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
