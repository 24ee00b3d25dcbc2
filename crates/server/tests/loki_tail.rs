//! `GET /loki/api/v1/tail` (a WebSocket) over real HTTP, where it differs
//! from a plain live tail: a revoked token ends it with nothing more, and
//! a client that stops reading is told how many lines it missed (Loki's
//! `dropped_entries`), then gets the live lines again, while ingest never
//! waits for it.

mod common;

use std::time::Duration;

use common::TOKEN;
use futures_util::StreamExt;
use serde_json::Value;
use tailwater_model::wire::percent_encode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn request(
    server: &tailwater_server::RunningServer,
    token: &str,
    query: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut request = format!(
        "ws://{}/loki/api/v1/tail?query={}&limit=10",
        server.addr,
        percent_encode(query)
    )
    .into_client_request()
    .unwrap();
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    request
}

/// The next text frame, as JSON, within 20 s (pings skipped, not waited
/// on again); `Err` with what came instead when the socket closed first.
async fn next_frame(socket: &mut Socket) -> Result<Value, Option<Message>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a frame within 20 s");
        match message {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(Some(other)),
            _ => return Err(None),
        }
    }
}

fn lines(frame: &Value) -> Vec<String> {
    frame["streams"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|stream| stream["values"].as_array().unwrap().clone())
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_revoked_token_ends_its_loki_tail_with_nothing_more() {
    let (_dir, server, client) = common::server(10_000).await;
    let owner = client
        .create_token(&tailwater_model::tenancy::NewToken {
            scope: tailwater_model::tenancy::Scope::Owner,
            tenant: None,
            app: None,
            expires_in: None,
            name: None,
        })
        .await
        .unwrap();
    let (mut socket, _) =
        tokio_tungstenite::connect_async(request(&server, &owner.token, r#"{app="sdxl"}"#))
            .await
            .unwrap();
    client
        .ingest(&common::batch("sdxl", "r1", 0..1))
        .await
        .unwrap();
    assert_eq!(lines(&next_frame(&mut socket).await.unwrap()), ["r1 0"]);

    client.revoke_token(&owner.info.id).await.unwrap();
    client
        .ingest(&common::batch("sdxl", "r1", 1..3))
        .await
        .unwrap();
    match next_frame(&mut socket).await {
        Err(Some(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert!(frame.reason.contains("revoked"), "{}", frame.reason);
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_told_what_it_missed_and_ingest_never_waits() {
    let (_dir, server, client) = common::server(500).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (mut socket, _) =
        tokio_tungstenite::client_async(request(&server, TOKEN, r#"{app="sdxl"}"#), stream)
            .await
            .unwrap();

    let started = std::time::Instant::now();
    for start in (0..20_000).step_by(1000) {
        let mut batch = common::batch("sdxl", "r1", start..start + 1000);
        for record in &mut batch.records {
            // Long enough that socket buffers fill after a few thousand.
            record.message = format!("{} {}", record.message, "x".repeat(200));
        }
        client.ingest(&batch).await.unwrap();
    }
    client
        .ingest(&common::batch("sdxl", "r1", 20_000..20_001))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "ingest waited for the slow client"
    );

    // Every line is sent, or counted in a dropped entry: the last ones may
    // be among those missed.
    let (mut received, mut missed) = (0u64, 0u64);
    while received + missed < 20_001 {
        let frame = next_frame(&mut socket)
            .await
            .expect("frames until every line is accounted for");
        for dropped in frame["dropped_entries"].as_array().into_iter().flatten() {
            missed += dropped["labels"]["tailwater_missed_lines"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
        received += lines(&frame).len() as u64;
    }
    assert!(missed > 0, "the client fell behind past its buffer");
    assert_eq!(
        received + missed,
        20_001,
        "every line sent or counted as missed"
    );
    // Reading again, it gets the live lines.
    client
        .ingest(&common::batch("sdxl", "r1", 20_001..20_002))
        .await
        .unwrap();
    let frame = next_frame(&mut socket).await.unwrap();
    assert_eq!(lines(&frame), ["r1 20001"], "{frame}");
}
