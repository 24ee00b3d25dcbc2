//! A raw HTTP call to a server on loopback, and an ingest body to send it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// A minimal HTTP/1.1 request over loopback: `(status, body)`, status 0 when
/// nothing answered.
pub fn http(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new());
    }
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An ingest batch of runner `runner`'s records `seqs`, as the agent sends.
pub fn ingest_batch(app: &str, runner: &str, seqs: std::ops::Range<u64>) -> String {
    let records: Vec<Value> = seqs
        .map(|seq| serde_json::json!({"seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "level": "info", "message": format!("line {seq}")}))
        .collect();
    serde_json::json!({"app": app, "version": "v1", "runner": runner, "boot": "b1", "records": records})
        .to_string()
}
