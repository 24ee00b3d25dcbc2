//! The connection limits over real sockets on loopback: heads and bodies
//! past a limit get the API's JSON error; silent and slow-header
//! connections are closed after their timeouts (and counted), while a live
//! tail (SSE and WebSocket) that outlives the idle timeout goes on.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tailwater_client::Client;
use tailwater_server::{start, RunningServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod common;

use common::TOKEN;

async fn server_with(idle: Duration, header: Duration) -> (tempfile::TempDir, RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    config.connections.idle_timeout = idle;
    config.connections.header_read_timeout = header;
    let server = start(config).await.unwrap();
    (dir, server)
}

/// Sends `request` as is and reads the answer until the server closes:
/// its status and its body as JSON.
async fn raw(server: &RunningServer, request: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // The server may answer (and close) before it has read all of a body
    // past its limit: a failed write is no failure here.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if let Some(body) = complete_body(&answer) {
                return body;
            }
        }
        complete_body(&answer).unwrap_or_default()
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no answer within 10 s to {:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        )
    });
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_slice(&read)
        .unwrap_or_else(|_| panic!("the answer's body is not JSON: {text:?}"));
    (status, body)
}

/// The body of a complete answer with a content-length, once all of it is
/// in `answer`.
fn complete_body(answer: &[u8]) -> Option<Vec<u8>> {
    let end = answer.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))?
        .trim()
        .parse()
        .ok()?;
    (answer.len() >= end + length).then(|| answer[end..end + length].to_vec())
}

fn assert_json_error(what: &str, (status, body): (u16, Value), want: u16, says: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let code = body["error"]["code"].as_str().unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "{what}: no error code in {body}");
    assert!(
        message.starts_with(|c: char| c.is_lowercase()),
        "{what}: the message starts lowercase: {message}"
    );
    assert!(
        message.contains(says),
        "{what}: the message says {says:?}: {message}"
    );
}

#[tokio::test]
async fn heads_and_bodies_past_a_limit_get_the_json_error() {
    let (_dir, server) = server_with(Duration::from_secs(60), Duration::from_secs(10)).await;

    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_json_error(
        "headers too large",
        raw(&server, long_header.as_bytes()).await,
        431,
        "--max-header-bytes",
    );

    let long_uri = format!(
        "GET /v1/logs?q={} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_json_error(
        "URI too long",
        raw(&server, long_uri.as_bytes()).await,
        414,
        "--max-uri-bytes",
    );

    assert_json_error(
        "malformed head",
        raw(&server, b"GET /he llo HTTP/1.1\r\n\r\n").await,
        400,
        "send a valid",
    );

    let big = 3_000_000;
    let mut big_body = format!(
        "POST /v1/tenants HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {big}\r\n\r\n"
    )
    .into_bytes();
    big_body.resize(big_body.len() + big, b' ');
    assert_json_error(
        "body too large",
        raw(&server, &big_body).await,
        413,
        "send a smaller body",
    );

    assert_json_error(
        "method not allowed",
        raw(&server, b"DELETE /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await,
        405,
        "use a method",
    );
    server.shutdown().await.unwrap();
}

/// Whether the server closed `stream` (end of file or reset).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            // hyper may answer a half-sent head before closing.
            Ok(_) => continue,
        }
    }
}

async fn closed_counts(server: &RunningServer) -> String {
    common::metrics_text(server)
        .await
        .lines()
        .filter(|line| line.starts_with("tailwater_connections_closed_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn silent_and_slow_connections_are_closed_but_live_tails_go_on() {
    let (idle, header) = (Duration::from_secs(1), Duration::from_millis(700));
    let (_dir, server) = server_with(idle, header).await;
    let client = Client::new(&server.url(), TOKEN).unwrap();
    client
        .ingest(&common::batch("conns", "r1", 0..1))
        .await
        .unwrap();

    // A live tail over SSE, read raw so no reconnect could hide a cut.
    let mut sse = TcpStream::connect(server.addr).await.unwrap();
    sse.write_all(
        format!(
            "GET /v1/logs/tail?app=conns HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // And one over WebSocket.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/v1/logs/tail?app=conns", server.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let bound = Duration::from_secs(10);
    tokio::time::timeout(bound, closed(&mut silent))
        .await
        .expect("a silent connection is closed after the idle timeout");
    tokio::time::timeout(bound, closed(&mut slow))
        .await
        .expect("a slow head is closed after the header-read timeout");
    assert!(
        started.elapsed() >= header,
        "closed only once a timeout passed"
    );
    let counts = closed_counts(&server).await;
    assert!(
        counts.contains("reason=\"idle_timeout\"}")
            && counts.contains("reason=\"header_timeout\"}"),
        "both closes are counted: {counts}"
    );

    // Both tails outlived the idle timeout: a new record still reaches them.
    let mut batch = common::batch("conns", "r1", 1..2);
    batch.records[0].message = "after the idle timeout".into();
    client.ingest(&batch).await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("after the idle timeout") {
            let n = sse.read(&mut buf).await.unwrap();
            assert!(n > 0, "the SSE tail was cut");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the SSE tail gets the new record");
    tokio::time::timeout(bound, async {
        loop {
            let message = ws
                .next()
                .await
                .expect("the WebSocket tail goes on")
                .unwrap();
            if message.to_string().contains("after the idle timeout") {
                break;
            }
        }
    })
    .await
    .expect("the WebSocket tail gets the new record");

    // Shutdown ends the tails and closes an idle connection at once.
    let mut idle_at_stop = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown is prompt with tails and idle connections open")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), closed(&mut idle_at_stop))
        .await
        .expect("the idle connection is closed by the shutdown");
    drop((sse, ws));
}

/// Waits until `/metrics` counts a close for `reason`.
async fn wait_for_close(server: &RunningServer, reason: &str) -> String {
    let wanted = format!("reason=\"{reason}\"}}");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let counts = closed_counts(server).await;
            if counts.contains(&wanted) {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no close for {reason} is counted"))
}

#[tokio::test]
async fn a_trickled_body_fails_its_request_and_a_client_that_reads_nothing_is_let_go() {
    let (_dir, server, client) = common::server_with(|config| {
        config.connections.body_read_timeout = Duration::from_secs(1);
        config.connections.write_timeout = Duration::from_secs(1);
        config.tail_buffer = 1_000_000;
    })
    .await;

    // A body sent a byte at a time, each well within any idle wait: the
    // whole of it is due within --body-read-timeout.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle
        .write_all(
            format!(
                "POST /v1/ingest HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let _ = trickle.write_all(b" ").await;
            tokio::select! {
                read = trickle.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return answer,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
    .await
    .expect("a trickled body is cut off");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("--body-read-timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_secs(1));
    wait_for_close(&server, "body_timeout").await;

    // A live tail from the first record, over a socket whose client never
    // reads: once the kernel's buffers are full the server's writes wait,
    // and after --write-timeout the connection is closed and the tail
    // client is no longer counted.
    for first in (0..20_000).step_by(5_000) {
        let mut batch = common::batch("writes", "r1", first..first + 5_000);
        for record in &mut batch.records {
            record.message = format!("{} {}", record.message, "x".repeat(300));
        }
        client.ingest(&batch).await.unwrap();
    }
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut deaf = socket.connect(server.addr).await.unwrap();
    deaf.write_all(
        format!(
            "GET /v1/logs/tail?app=writes&after=0 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let counts = wait_for_close(&server, "write_timeout").await;
    assert!(!counts.contains("reason=\"idle_timeout\"}"), "{counts}");
    tokio::time::timeout(Duration::from_secs(10), async {
        while common::metric(&server, "tailwater_tail_clients").await != 0.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the tail ended with its connection");
    assert!(
        tokio::time::timeout(Duration::from_secs(10), closed(&mut deaf))
            .await
            .is_ok(),
        "the connection is closed"
    );
    // Other clients were served all along.
    assert_eq!(
        client
            .logs(&Default::default())
            .await
            .unwrap()
            .records
            .len(),
        100
    );
    server.shutdown().await.unwrap();
}
