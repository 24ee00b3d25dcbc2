//! Live tail over real HTTP on loopback: following, resuming after
//! `Last-Event-ID` with no gap and no duplicate, a slow client that stops
//! reading (a missed notice whose cursor fetches exactly the skipped
//! records), and the WebSocket transport (browser-style token, resume).

use std::time::Duration;

use futures_util::StreamExt;
use tailwater_model::wire::{IngestBatch, LogsParams};
use tailwater_model::LogRecord;
use tailwater_server::RunningServer;

mod common;

use common::{metric, TOKEN};

fn batch(runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    common::batch("tail", runner, seqs)
}

async fn next_records(
    stream: &mut (impl futures_util::Stream<Item = Result<LogRecord, tailwater_client::ClientError>>
              + Unpin),
    count: usize,
) -> Vec<String> {
    let mut messages = Vec::new();
    while messages.len() < count {
        let record = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a record arrives")
            .expect("the stream goes on")
            .expect("a valid record");
        messages.push(record.message);
    }
    messages
}

#[tokio::test]
async fn tail_follows_and_resumes_after_the_last_event_without_gap_or_duplicate() {
    let (_dir, server, client) = common::server(tailwater_server::tail::DEFAULT_TAIL_BUFFER).await;
    client.ingest(&batch("r1", 0..3)).await.unwrap();
    // Without a position, a tail starts with the next record stored.
    let mut live = Box::pin(client.tail(&LogsParams::default(), None).await.unwrap());
    client.ingest(&batch("r1", 3..6)).await.unwrap();
    assert_eq!(next_records(&mut live, 3).await, ["r1 3", "r1 4", "r1 5"]);
    drop(live);

    // Resume after the record "r1 3": everything after it, then live.
    let filter = LogsParams {
        runner: Some("r1".into()),
        ..Default::default()
    };
    let page = client.logs(&filter).await.unwrap();
    let r1_3 = page.records.iter().find(|r| r.message == "r1 3").unwrap();
    let mut resumed = Box::pin(client.tail(&filter, Some(&r1_3.id)).await.unwrap());
    assert_eq!(next_records(&mut resumed, 2).await, ["r1 4", "r1 5"]);
    client.ingest(&batch("r2", 0..2)).await.unwrap(); // filtered out
    client.ingest(&batch("r1", 6..7)).await.unwrap();
    assert_eq!(next_records(&mut resumed, 1).await, ["r1 6"]);

    // A history page's `as_of` continues into the tail exactly.
    let page = client.logs(&filter).await.unwrap();
    assert_eq!(page.records.len(), 7);
    let mut after_page = Box::pin(client.tail(&filter, Some(&page.as_of)).await.unwrap());
    client.ingest(&batch("r1", 7..8)).await.unwrap();
    assert_eq!(next_records(&mut after_page, 1).await, ["r1 7"]);

    // Shutdown ends open tails instead of waiting on them.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not hang")
        .unwrap();
}

/// One server-sent event, as a raw client reads it.
#[derive(Debug, Default)]
struct RawEvent {
    event: String,
    id: String,
    data: String,
}

/// An SSE client on a bare TCP socket with a small receive buffer, so that
/// when it stops reading the server's writes stall for real.
struct SlowSseClient {
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl SlowSseClient {
    async fn connect(server: &RunningServer, query: &str) -> SlowSseClient {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(server.addr).await.unwrap();
        // HTTP/1.0: the body is the event stream itself, not chunked.
        let request = format!(
            "GET /v1/logs/tail?{query} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nAccept: text/event-stream\r\n\r\n",
            server.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut lines = tokio::io::BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        while !lines.next_line().await.unwrap().unwrap().is_empty() {}
        SlowSseClient { lines }
    }

    /// The next event that is not a keep-alive comment.
    async fn next(&mut self) -> RawEvent {
        let mut event = RawEvent::default();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
                .await
                .expect("an event arrives")
                .unwrap()
                .expect("the stream goes on");
            if line.is_empty() {
                if !event.event.is_empty() {
                    return event;
                }
                continue;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match name {
                "event" => event.event = value,
                "id" => event.id = value,
                "data" => event.data = value,
                _ => {}
            }
        }
    }
}

fn many(runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    let mut batch = batch(runner, seqs);
    for record in &mut batch.records {
        // Long enough that socket buffers fill after a few thousand.
        record.message = format!("{} {}", record.message, "x".repeat(200));
    }
    batch
}

/// Records `0..20_000` of `r1` (and some of another runner), in batches,
/// then `20_000..20_003`, while the tail client reads nothing.
async fn ingest_while_the_client_reads_nothing(client: &tailwater_client::Client) {
    let ingest_started = std::time::Instant::now();
    for start in (0..20_000).step_by(1000) {
        client
            .ingest(&many("r1", start..start + 1000))
            .await
            .unwrap();
        client
            .ingest(&many("other", start..start + 10))
            .await
            .unwrap();
    }
    client.ingest(&many("r1", 20_000..20_003)).await.unwrap();
    assert!(
        ingest_started.elapsed() < Duration::from_secs(60),
        "ingest waited for the slow client"
    );
}

/// What the client got and fetched is every record of r1, once, in order,
/// after at least one missed notice.
fn assert_every_record_once(seqs: &[u64], notices: usize) {
    assert!(notices >= 1, "the client fell behind past its buffer");
    assert_eq!(
        seqs,
        (0..20_003).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
}

/// Pages through a missed notice's cursor (with the tail's filter,
/// `runner=r1`): exactly `count` records, none past the notice's id (opened
/// with the server's `seal`). Their seqs.
async fn fetch_missed(
    client: &tailwater_client::Client,
    missed: &tailwater_model::wire::MissedNotice,
    through: &str,
    seal: &tailwater_model::TenantSeal,
) -> Vec<u64> {
    let mut fetched = Vec::new();
    let mut params = LogsParams {
        runner: Some("r1".into()),
        cursor: Some(missed.cursor.clone()),
        limit: Some("777".into()),
        ..Default::default()
    };
    loop {
        let page = client.logs(&params).await.unwrap();
        assert!(page.records.len() <= 777);
        fetched.extend(page.records);
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    assert!(missed.count > 500, "past the buffer: {missed:?}");
    assert_eq!(fetched.len() as u64, missed.count);
    let through = seal
        .position(through)
        .expect("the notice's id is the tenant's");
    assert!(fetched
        .iter()
        .all(|record| seal.position(&record.id).unwrap() <= through));
    assert!(fetched.iter().all(|record| record.runner == "r1"));
    fetched.iter().map(|record| record.seq).collect()
}

#[tokio::test]
async fn a_client_that_stops_reading_gets_a_missed_notice_whose_cursor_fetches_exactly_the_skipped_records(
) {
    let (dir, server, client) = common::server(500).await;
    let seal = common::seal(dir.path(), "default");
    let mut slow = SlowSseClient::connect(&server, "runner=r1").await;

    // While the client reads nothing, ingest goes on at full speed.
    ingest_while_the_client_reads_nothing(&client).await;

    // It reads again: what was buffered, then a notice for what it missed
    // (one or more, as the server's socket buffer grew), then live records.
    let mut seqs = Vec::new();
    let mut notices = 0;
    let mut missed_records = 0;
    let mut last_id = 0;
    while seqs.last() != Some(&20_002) {
        let event = slow.next().await;
        let position = seal.position(&event.id).expect("an id of this tenant");
        assert!(
            position > last_id,
            "ids stand for rising positions: {event:?}"
        );
        last_id = position;
        if event.event == "record" {
            let record: LogRecord = serde_json::from_str(&event.data).unwrap();
            assert_eq!(record.id, event.id);
            seqs.push(record.seq);
            continue;
        }
        assert_eq!(event.event, "missed", "{event:?}");
        notices += 1;
        let missed: tailwater_model::wire::MissedNotice =
            serde_json::from_str(&event.data).unwrap();
        // The cursor pages through exactly the skipped records, up to the
        // notice's id (what Last-Event-ID resumes after).
        missed_records += missed.count;
        seqs.extend(fetch_missed(&client, &missed, &event.id, &seal).await);
    }
    assert_every_record_once(&seqs, notices);
    // Skipping is visible in /metrics, and the client is counted while open.
    assert_eq!(
        metric(&server, "tailwater_tail_missed_notices_total").await,
        notices as f64
    );
    assert_eq!(
        metric(&server, "tailwater_tail_missed_records_total").await,
        missed_records as f64
    );
    assert_eq!(metric(&server, "tailwater_tail_clients").await, 1.0);

    // The typed client fills such gaps itself.
    let mut typed = Box::pin(
        client
            .tail(
                &LogsParams {
                    runner: Some("r1".into()),
                    ..Default::default()
                },
                Some(tailwater_model::wire::AFTER_START),
            )
            .await
            .unwrap(),
    );
    let resumed = next_records(&mut typed, 20_003).await;
    let expected: Vec<String> = (0..20_003)
        .map(|seq| format!("r1 {seq} {}", "x".repeat(200)))
        .collect();
    assert_eq!(resumed, expected);
}

#[tokio::test]
async fn a_missed_cursor_refuses_a_backward_read() {
    let (dir, _server, client) = common::server(500).await;
    let cursor = tailwater_model::IdRange {
        after: 1,
        through: 5,
    }
    .encode(&common::seal(dir.path(), "default"));
    let error = client
        .logs(&LogsParams {
            cursor: Some(cursor),
            direction: Some("backward".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(error.to_string().contains("reads forward"), "{error}");
}

mod websocket {
    use super::*;
    use tailwater_model::wire::TailMessage;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use tokio_tungstenite::tungstenite::Message;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Connects as a browser does: the token offered as a subprotocol, never
    /// in the URL.
    async fn connect(server: &RunningServer, query: &str) -> Socket {
        connect_with(server, TOKEN, query).await
    }

    async fn connect_with(server: &RunningServer, token: &str, query: &str) -> Socket {
        let url = format!("ws://{}/v1/logs/tail?{query}", server.addr);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("tailwater.v1, tailwater.bearer.{token}")).unwrap(),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "tailwater.v1",
            "the server selects the protocol and never echoes the token"
        );
        socket
    }

    async fn next_message(socket: &mut Socket) -> TailMessage {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
                .await
                .expect("a message arrives")
                .expect("the socket stays open")
                .unwrap();
            if let Message::Text(text) = frame {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    async fn next_ids(socket: &mut Socket, count: usize) -> Vec<(String, String)> {
        let mut got = Vec::new();
        while got.len() < count {
            match next_message(socket).await {
                TailMessage::Record { id, record } => {
                    assert_eq!(id, record.id);
                    got.push((id, record.message));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn websocket_tail_follows_filters_and_resumes_after_a_reconnect_without_gap_or_duplicate()
    {
        let (dir, server, client) = common::server(10_000).await;
        client.ingest(&batch("r1", 0..2)).await.unwrap();
        let mut socket = connect(&server, "runner=r1").await;
        client.ingest(&batch("r2", 0..3)).await.unwrap(); // filtered out
        client.ingest(&batch("r1", 2..5)).await.unwrap();
        let first = next_ids(&mut socket, 3).await;
        let messages: Vec<&str> = first.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(messages, ["r1 2", "r1 3", "r1 4"]);
        socket.close(None).await.unwrap();

        // Records stored while disconnected come first after a reconnect.
        client.ingest(&batch("r1", 5..8)).await.unwrap();
        let last_id = first.last().unwrap().0.clone();
        let mut socket = connect(&server, &format!("runner=r1&after={last_id}")).await;
        client.ingest(&batch("r1", 8..9)).await.unwrap();
        let second = next_ids(&mut socket, 4).await;
        let messages: Vec<&str> = second.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(messages, ["r1 5", "r1 6", "r1 7", "r1 8"]);
        let seal = common::seal(dir.path(), "default");
        let after = seal.position(&last_id).unwrap();
        assert!(second
            .iter()
            .all(|(id, _)| seal.position(id).unwrap() > after));

        // Shutdown closes it with a reason, instead of hanging.
        tokio::time::timeout(Duration::from_secs(10), server.shutdown())
            .await
            .expect("shutdown does not hang")
            .unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(frame))) => return frame,
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await
        .expect("the socket closes");
        if let Some(frame) = closed {
            assert_eq!(u16::from(frame.code), 1001);
        }
    }

    #[tokio::test]
    async fn a_websocket_tail_without_a_valid_token_is_refused_before_the_upgrade() {
        let (_dir, server, _client) = common::server(10_000).await;
        let refused = |offered: &str, query: &str| {
            let url = format!("ws://{}/v1/logs/tail?{query}", server.addr);
            let mut request = url.into_client_request().unwrap();
            if !offered.is_empty() {
                request.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_str(offered).unwrap(),
                );
            }
            async move {
                match tokio_tungstenite::connect_async(request).await {
                    Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                        let body = response.body().clone().unwrap_or_default();
                        let body: tailwater_model::wire::ErrorBody =
                            serde_json::from_slice(&body).unwrap();
                        (response.status().as_u16(), body.error.code)
                    }
                    other => panic!("expected a refusal, got {other:?}"),
                }
            }
        };
        assert_eq!(refused("", "").await, (401, "unauthorized".to_owned()));
        assert_eq!(
            refused("tailwater.v1, tailwater.bearer.tw_wrong", "").await,
            (401, "unauthorized".to_owned())
        );
        // A token in the URL is no way in: it would end up in access logs.
        assert_eq!(
            refused("tailwater.v1", &format!("token={TOKEN}")).await,
            (401, "unauthorized".to_owned())
        );
        // Bad filters get the same JSON 400 as over SSE.
        assert_eq!(
            refused(
                &format!("tailwater.v1, tailwater.bearer.{TOKEN}"),
                "level=loud"
            )
            .await,
            (400, "bad_request".to_owned())
        );
    }

    #[tokio::test]
    async fn a_revoked_token_closes_its_websocket_tail_with_nothing_more() {
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
        let mut socket = connect_with(&server, &owner.token, "").await;
        client.ingest(&batch("r1", 0..1)).await.unwrap();
        assert_eq!(next_ids(&mut socket, 1).await[0].1, "r1 0");

        client.revoke_token(&owner.info.id).await.unwrap();
        client.ingest(&batch("r1", 1..3)).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the socket closes")
            .expect("a close frame")
            .unwrap();
        let Message::Close(Some(frame)) = frame else {
            panic!("expected a close frame, got {frame:?}");
        };
        assert_eq!(u16::from(frame.code), 1008);
        assert!(frame.reason.contains("revoked"), "{}", frame.reason);
    }

    #[tokio::test]
    async fn a_websocket_client_that_stops_reading_gets_a_missed_message_then_live_records() {
        let (dir, server, client) = common::server(500).await;
        let seal = common::seal(dir.path(), "default");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        let mut request = format!("ws://{}/v1/logs/tail?runner=r1", server.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap(),
        );
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (mut socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .unwrap();

        ingest_while_the_client_reads_nothing(&client).await;
        let mut seqs = Vec::new();
        let mut notices = 0;
        while seqs.last() != Some(&20_002) {
            match next_message(&mut socket).await {
                TailMessage::Record { record, .. } => seqs.push(record.seq),
                TailMessage::Missed { id, notice } => {
                    notices += 1;
                    seqs.extend(fetch_missed(&client, &notice, &id, &seal).await);
                }
            }
        }
        assert_every_record_once(&seqs, notices);
    }
}
