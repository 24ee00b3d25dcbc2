//! Helpers for driving the real `tailwater` binary: a server on a free
//! loopback port with its own data directory, client commands pointed at it,
//! and polling with deadlines.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "tw_e2e_test_token_0123456789";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tailwater")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `tailwater server` child process; killed when dropped.
pub struct TestServer {
    pub port: u16,
    /// Where agents started with [`TestServer::command`] keep their spools:
    /// beside the data, not in the machine's default place, so test runs
    /// (of other checkouts too) never share one.
    pub spool: PathBuf,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut server = TestServer::start_on(free_port(), &data);
        server._dir = Some(dir);
        server
    }

    /// A server on `port` over `data`, once it answers health checks.
    pub fn start_on(port: u16, data: &Path) -> TestServer {
        TestServer::start_on_with(port, data, &[])
    }

    /// A server on `port` over `data` with more `tailwater server` flags.
    pub fn start_on_with(port: u16, data: &Path, flags: &[&str]) -> TestServer {
        let child = Command::new(binary())
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .args(flags)
            .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
            .env("TAILWATER_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let server = TestServer {
            port,
            spool: data.parent().unwrap_or(data).join("spool"),
            child: Some(child),
            _dir: None,
        };
        wait_for(
            "the server to answer /healthz",
            Duration::from_secs(20),
            || http("GET", port, "/healthz", None, None).0 == 200,
        );
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `tailwater ARGS…` pointed at this server with the admin token.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env("TAILWATER_SERVER", self.url())
            .env("TAILWATER_TOKEN", TOKEN)
            .env("TAILWATER_SPOOL", &self.spool);
        command
    }

    /// `tailwater logs --json ARGS…`: the records, oldest first.
    pub fn logs(&self, args: &[&str]) -> Vec<Value> {
        let output = self
            .command(&[&["logs", "--json", "-n", "10000"], args].concat())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tailwater logs failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        json_lines(&output.stdout)
    }

    /// Stops the server the hard way: no flush, no goodbye.
    pub fn kill_9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a json line ({e}): {line}"))
        })
        .collect()
}

pub fn messages(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect()
}

/// Runs `tailwater run` against `server` for `app` with `script` as the
/// worker (`sh -c script`), and returns its output once it has exited.
pub fn run_worker(server: &TestServer, app: &str, script: &str) -> Output {
    server
        .command(&[
            "run",
            "--app",
            app,
            "--runner",
            &format!("{app}-runner"),
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

/// Polls `condition` until it holds, or fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

/// `python3`, for tests whose workers are Python programs; fails the test
/// with what to install when it is missing.
pub fn python() -> &'static str {
    let found = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "these tests run python3 workers: install it (apt-get install -y python3)"
    );
    "python3"
}
