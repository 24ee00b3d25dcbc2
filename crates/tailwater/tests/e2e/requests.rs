//! Requests marked by the agent with real processes: the proxy in front of
//! a worker's HTTP port (overlapping requests, WebSockets), the control
//! socket, lines still in the pipe when a request ends, and progress bars.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::*;
use crate::supervisor::*;

/// A tiny HTTP/1.1 GET that also returns the response headers.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut response_headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        response_headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut body = String::new();
    reader.read_to_string(&mut body).unwrap();
    (status, response_headers, body)
}

/// The port the agent's proxy bound (its `--proxy` asked for port 0), as
/// the agent says on stderr; the rest of its stderr is read and dropped.
fn proxy_port(agent: &mut std::process::Child) -> u16 {
    let stderr = agent.stderr.take().expect("the agent's stderr is piped");
    port_announced_by(stderr, |line| {
        tailwater_agent::proxy::announced(line).map(|address| address.port())
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Serves `/a` and `/b` so that they overlap: A logs alone, waits for B;
/// both log with and without ids while both are in flight; A answers; B
/// waits for that, logs alone, answers 201.
const OVERLAPPING_SERVER: &str = r#"
import json, os, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
b_arrived, a_done = threading.Event(), threading.Event()
def say(text):
    # One write per line: print() writes the newline apart, and two
    # threads' lines would interleave.
    os.write(1, (text + "\n").encode())
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
    def do_GET(self):
        rid = self.headers.get("X-Request-Id")
        if self.path == "/healthz":
            return self.reply(200, "healthy")
        if self.path == "/a":
            say("a: alone")
            b_arrived.wait(20)
            say("a: overlap, no id")
            say(json.dumps({"msg": "a: overlap, with id", "request_id": rid}))
            self.reply(200, "a done")
            a_done.set()
        elif self.path == "/b":
            b_arrived.set()
            say("b: overlap, no id")
            say(json.dumps({"msg": "b: overlap, with id", "request_id": rid}))
            a_done.wait(20)
            time.sleep(0.3)
            say("b: alone")
            self.reply(201, "b done")
        else:
            self.reply(404, "no")
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

#[test]
fn the_proxy_attributes_overlapping_requests_without_mixing_them() {
    let python = python();
    let server = TestServer::start();
    let worker_port = spare_port();
    let proxy = format!("127.0.0.1:{ANY_PORT}=127.0.0.1:{worker_port}");
    let health = format!("http://127.0.0.1:{worker_port}/healthz");
    let worker_port_text = worker_port.to_string();
    let mut agent = start_agent(
        &server,
        "proxied",
        &["--proxy", &proxy, "--health", &health],
        &[python, "-c", OVERLAPPING_SERVER, &worker_port_text],
    );
    let listen = proxy_port(&mut agent);
    wait_for_record(
        &server,
        "proxied",
        "the worker to be ready",
        has_event("ready"),
    );
    // The load balancer's view: the worker's health, through the agent.
    let (status, _, body) = get(listen, "/healthz", &[]);
    assert_eq!((status, body.as_str()), (200, "healthy"));

    let a = std::thread::spawn(move || get(listen, "/a", &[("X-Request-Id", "req-a")]));
    wait_for_record(
        &server,
        "proxied",
        "A to log alone",
        has_message("a: alone"),
    );
    let (b_status, b_headers, b_body) = get(listen, "/b", &[]);
    let (a_status, a_headers, a_body) = a.join().unwrap();
    assert_eq!((a_status, a_body.as_str()), (200, "a done"));
    assert_eq!((b_status, b_body.as_str()), (201, "b done"));
    assert_eq!(
        header(&a_headers, "x-request-id"),
        Some("req-a"),
        "the client's id, kept"
    );
    let b_id = header(&b_headers, "x-request-id")
        .expect("a new id for B")
        .to_owned();
    assert!(b_id.starts_with("req-"), "{b_id}");

    wait_for_record(&server, "proxied", "B's end", |record| {
        has_event("request_end")(record) && record["request_id"] == b_id.as_str()
    });
    let records = records(&server, "proxied");
    let request_of = |text: &str| by_message(&records, text)["request_id"].clone();
    assert_eq!(request_of("a: alone"), "req-a", "A alone in flight");
    assert_eq!(
        request_of("a: overlap, no id"),
        Value::Null,
        "two in flight: runner-scoped"
    );
    assert_eq!(
        request_of("b: overlap, no id"),
        Value::Null,
        "two in flight: runner-scoped"
    );
    assert_eq!(request_of("a: overlap, with id"), "req-a");
    assert_eq!(request_of("b: overlap, with id"), b_id.as_str());
    assert_eq!(
        request_of("b: alone"),
        b_id.as_str(),
        "B alone in flight again"
    );

    let ready = &events(&records, "ready")[0];
    assert_eq!(ready["fields"]["via"], "health");
    let starts = events(&records, "request_start");
    let ends = events(&records, "request_end");
    assert_eq!(starts.len(), 2, "/healthz is not a request: {starts:#?}");
    assert_eq!(ends.len(), 2);
    for (id, path, status) in [("req-a", "/a", 200), (b_id.as_str(), "/b", 201)] {
        let start = starts.iter().find(|r| r["request_id"] == id).unwrap();
        assert_eq!(start["fields"]["method"], "GET");
        assert_eq!(start["fields"]["path"], path);
        assert_eq!(start["fields"]["via"], "proxy");
        let end = ends.iter().find(|r| r["request_id"] == id).unwrap();
        assert_eq!(end["fields"]["status"], status);
        assert_eq!(end["fields"]["outcome"], "completed");
        // B waited 300 ms for A's end.
        let at_least = if path == "/b" { 300 } else { 0 };
        assert!(
            end["fields"]["duration_ms"].as_u64().unwrap() >= at_least,
            "{end}"
        );
        assert!(end["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("request {id} ended: {status} in ")));
    }

    // One request, exactly: its start, its lines, its end.
    let only_a = server.logs(&["--app", "proxied", "--request", "req-a"]);
    assert_eq!(
        messages(&only_a),
        [
            "request req-a started",
            "a: alone",
            "a: overlap, with id",
            messages(&only_a)[3],
        ]
    );
    assert!(messages(&only_a)[3].starts_with("request req-a ended: 200 in"));

    let mut agent = agent;
    send_signal(agent.id(), libc::SIGTERM);
    let status = agent.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "python dies of the TERM"
    );
}

/// Talks to the agent through `TAILWATER_CONTROL`, checking every answer.
const CONTROL_CLIENT: &str = r#"
import json, os, socket
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["TAILWATER_CONTROL"])
f = conn.makefile("rw")
def send(command):
    f.write(json.dumps(command) + "\n")
    f.flush()
    return json.loads(f.readline())
print("booting")
assert send({"ready": True}) == {"ok": True}
print("before any request")
assert send({"request_start": "r1"}) == {"ok": True}
print("inside r1")
answer = send({"request_end": "r1", "status": 200})
assert answer["ok"] and answer["duration_ms"] >= 0, answer
print("after r1")
assert send({"request_start": "r2"}) == {"ok": True}
assert send({"request_start": "r3"}) == {"ok": True}
print("r2 and r3 in flight")
assert send({"log": "for r3 only", "request_id": "r3"}) == {"ok": True}
print(json.dumps({"msg": "structured for r2", "request_id": "r2"}))
assert send({"request_end": "r2", "error": "model exploded"})["ok"]
print("r3 alone")
answer = send({"request_end": "nope"})
assert answer["ok"] is False and "not in flight" in answer["error"], answer
answer = send({"what": 1})
assert answer["ok"] is False and "unknown command" in answer["error"], answer
f.write("not json\n")
f.flush()
assert json.loads(f.readline())["ok"] is False
print("answers ok")
"#;

#[test]
fn the_control_socket_marks_ready_and_requests() {
    let python = python();
    let server = TestServer::start();
    let agent = start_agent(&server, "controlled", &[], &[python, "-c", CONTROL_CLIENT]);
    let (status, stdout, stderr) = wait_agent(agent);
    assert!(status.success(), "{stdout}\n{stderr}");

    let records = records(&server, "controlled");
    let socket = records[0]["fields"]["control_socket"].as_str().unwrap();
    assert!(
        !Path::new(socket).exists(),
        "the socket is removed at the end"
    );
    let ready = &events(&records, "ready")[0];
    assert_eq!(ready["fields"]["via"], "control");
    let request_of = |text: &str| by_message(&records, text)["request_id"].clone();
    assert_eq!(request_of("booting"), Value::Null);
    assert_eq!(request_of("before any request"), Value::Null);
    assert_eq!(request_of("inside r1"), "r1");
    assert_eq!(request_of("after r1"), Value::Null);
    assert_eq!(request_of("r2 and r3 in flight"), Value::Null);
    assert_eq!(request_of("for r3 only"), "r3");
    assert_eq!(request_of("structured for r2"), "r2");
    assert_eq!(request_of("r3 alone"), "r3");
    assert_eq!(request_of("answers ok"), "r3");

    let end_of = |id: &str| {
        *events(&records, "request_end")
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no end of {id}"))
    };
    assert_eq!(end_of("r1")["fields"]["status"], 200);
    assert_eq!(end_of("r1")["fields"]["via"], "control");
    assert_eq!(end_of("r2")["fields"]["outcome"], "error");
    assert_eq!(end_of("r2")["fields"]["error"], "model exploded");
    assert_eq!(
        end_of("r3")["fields"]["outcome"],
        "unfinished",
        "in flight at exit"
    );
    assert_eq!(end_of("r3")["level"], "error");
    // The end of r3 comes before the exit record.
    assert_eq!(records.last().unwrap()["fields"]["event"], "exit");
}

/// Writes a burst of about 1.5 MB for r1 and ends it at once, while up to
/// 1 MiB of the burst still waits in the pipe; then starts r2 and writes one
/// line. (Under Tokio's scheduling the capture usually drains the pipe
/// before the control command runs even without the settle step; the
/// control socket test is the one that catches a missing settle.)
const BURST_THEN_NEXT_REQUEST: &str = r#"
import json, os, socket, sys
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["TAILWATER_CONTROL"])
f = conn.makefile("rw")
def send(command):
    f.write(json.dumps(command) + "\n")
    f.flush()
    return json.loads(f.readline())
send({"request_start": "r1"})
sys.stdout.write("".join("burst %05d %s\n" % (i, "x" * 280) for i in range(5000)))
sys.stdout.flush()
send({"request_end": "r1", "status": 200})
send({"request_start": "r2"})
print("r2 line")
send({"request_end": "r2", "status": 200})
"#;

#[test]
fn lines_still_in_the_pipe_when_a_request_ends_stay_with_it() {
    let python = python();
    let server = TestServer::start();
    let agent = start_agent(
        &server,
        "burst",
        &["--quiet"],
        &[python, "-c", BURST_THEN_NEXT_REQUEST],
    );
    let (status, _, stderr) = wait_agent(agent);
    assert!(status.success(), "{stderr}");
    let records = records(&server, "burst");
    let burst: Vec<_> = records
        .iter()
        .filter(|r| r["message"].as_str().unwrap().starts_with("burst "))
        .collect();
    assert_eq!(burst.len(), 5000);
    let strays: Vec<_> = burst.iter().filter(|r| r["request_id"] != "r1").collect();
    assert!(
        strays.is_empty(),
        "{} burst lines not attributed to r1, the first: {}",
        strays.len(),
        strays[0]
    );
    assert_eq!(by_message(&records, "r2 line")["request_id"], "r2");
}

#[test]
fn a_progress_bar_drawn_with_carriage_returns_does_not_flood() {
    let python = python();
    let server = TestServer::start();
    // tqdm's way: "\r" and the whole bar, 101 times over about 2 s, to
    // stderr; then a newline.
    let worker = r##"
import sys, time
for i in range(101):
    sys.stderr.write("\r%3d%%|%-10s| %d/100" % (i, "#" * (i // 10), i))
    sys.stderr.flush()
    time.sleep(0.02)
sys.stderr.write("\n")
print("done")
"##;
    let agent = start_agent(
        &server,
        "progress",
        &["--progress-interval", "500ms"],
        &[python, "-c", worker],
    );
    let (status, _, stderr) = wait_agent(agent);
    assert!(status.success());
    assert_eq!(
        stderr.matches('\r').count(),
        101,
        "the echo is the worker's own bytes"
    );

    let records = records(&server, "progress");
    let bar_records: Vec<&Value> = records.iter().filter(|r| r["stream"] == "stderr").collect();
    let bars: Vec<&str> = bar_records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    // Each kept state says how many it stands for: all 101 between them,
    // and only the last is final.
    let updates: Vec<u64> = bar_records
        .iter()
        .map(|r| r["fields"]["progress_updates"].as_u64().unwrap())
        .collect();
    assert_eq!(updates[0], 1, "the first state stands for itself");
    assert_eq!(updates.iter().sum::<u64>(), 101, "{updates:?}");
    let finals: Vec<bool> = bar_records
        .iter()
        .map(|r| r["fields"]["progress_final"] == true)
        .collect();
    assert_eq!(finals.iter().filter(|last| **last).count(), 1);
    assert!(finals.last().unwrap());
    assert!(
        (3..=9).contains(&bars.len()),
        "about one state per 500ms and the final one, not 101: {bars:#?}"
    );
    assert!(
        bars[0].starts_with("  0%|"),
        "the first state at once: {bars:?}"
    );
    assert_eq!(
        *bars.last().unwrap(),
        "100%|##########| 100/100",
        "the final state"
    );
    let [collapsed] = events(&records, "progress_collapsed")[..] else {
        panic!("one progress_collapsed record: {records:#?}")
    };
    assert_eq!(collapsed["fields"]["states"], 101);
    assert_eq!(collapsed["fields"]["kept"], bars.len());
    assert_eq!(collapsed["fields"]["output"], "stderr");
    by_message(&records, "done");
}

/// A WebSocket echo server from Python's standard library: the handshake,
/// then each text frame printed (so the line belongs to the request) and
/// echoed back in capitals; a close frame is answered and ends it.
const WEBSOCKET_SERVER: &str = r#"
import base64, hashlib, os, socketserver, struct, sys
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def say(text):
    os.write(1, (text + "\n").encode())
class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        headers = {}
        self.rfile.readline()
        while True:
            line = self.rfile.readline().decode().strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            return
        say("handshake for " + headers.get("x-request-id", "no id"))
        accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                say("socket closed")
                return
            text = data.decode()
            say("got " + text)
            reply = text.upper().encode()
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

#[test]
fn a_websocket_passes_through_the_proxy_as_one_request() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let python = python();
    let server = TestServer::start();
    let worker_port = spare_port();
    let proxy = format!("127.0.0.1:{ANY_PORT}=127.0.0.1:{worker_port}");
    let worker_port_text = worker_port.to_string();
    let mut agent = start_agent(
        &server,
        "sockets",
        &["--proxy", &proxy],
        &[python, "-c", WEBSOCKET_SERVER, &worker_port_text],
    );
    let listen = proxy_port(&mut agent);
    wait_for("the worker to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", worker_port)).is_ok()
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let request_id = runtime.block_on(async {
        let mut request = format!("ws://127.0.0.1:{listen}/echo")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("x-request-id", "ws-1".parse().unwrap());
        let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(response.status(), 101);
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        for word in ["hello", "again"] {
            socket.send(Message::text(word)).await.unwrap();
            let answer = tokio::time::timeout(Duration::from_secs(20), socket.next())
                .await
                .expect("an answer within 20 s")
                .unwrap()
                .unwrap();
            assert_eq!(answer, Message::text(word.to_uppercase()));
        }
        socket.close(None).await.unwrap();
        // The worker's close frame, then the end.
        while let Some(Ok(_)) = socket.next().await {}
        id
    });
    assert_eq!(request_id, "ws-1");

    wait_for_record(
        &server,
        "sockets",
        "the request's end",
        has_event("request_end"),
    );
    send_signal(agent.id(), libc::SIGTERM);
    let (_, stdout, _) = wait_agent(agent);
    assert!(stdout.contains("got hello\ngot again\n"), "{stdout}");

    let records = records(&server, "sockets");
    let [start] = events(&records, "request_start")[..] else {
        panic!("one request start: {records:#?}")
    };
    let [end] = events(&records, "request_end")[..] else {
        panic!("one request end: {records:#?}")
    };
    assert_eq!(start["request_id"], "ws-1");
    assert_eq!(start["fields"]["path"], "/echo");
    assert_eq!(end["request_id"], "ws-1");
    assert_eq!(end["fields"]["status"], 101);
    assert_eq!(end["fields"]["outcome"], "completed");
    // Everything the worker printed for the connection is the request's,
    // and came between its start and its end.
    for text in [
        "handshake for ws-1",
        "got hello",
        "got again",
        "socket closed",
    ] {
        let line = by_message(&records, text);
        assert_eq!(line["request_id"], "ws-1", "{line}");
        let seq = line["seq"].as_u64().unwrap();
        assert!(start["seq"].as_u64().unwrap() < seq && seq < end["seq"].as_u64().unwrap());
    }
}
