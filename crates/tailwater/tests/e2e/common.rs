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

/// A port for a program that must be told its port before it binds it,
/// and cannot bind port 0 and say which it got: a test worker that binds
/// `$PORT`, Firefox's Marionette. Programs that can bind port 0 do
/// ([`ANY_PORT`], [`announced_port`]); a server that comes later is
/// reached through a [`Relay`] that holds its port from the start.
///
/// It lies outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never
/// picks a port for a bind to port 0 or an outgoing connection, so nothing
/// on the machine that binds port 0 can take it before the program binds
/// it. Each call takes the next port from a counter for the whole process
/// (started at a place of this process's own, so test binaries running at
/// once go different ways), and skips a port something already holds.
pub fn spare_port() -> u16 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let spare = spare_ports(&range);
    assert!(
        !spare.is_empty(),
        "the kernel's ephemeral port range ({}) leaves no port above 1024 to hand to a worker: \
         narrow it (sysctl net.ipv4.ip_local_port_range=\"32768 60999\")",
        range.trim()
    );
    let start = std::process::id() as usize * 7919;
    for _ in 0..spare.len() {
        let port = spare[(start + NEXT.fetch_add(1, Ordering::Relaxed)) % spare.len()];
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "every port outside the kernel's ephemeral range ({}) is in use",
        range.trim()
    )
}

/// The ports from 1024 up that `range` (`LOW HIGH`, as the kernel writes
/// `ip_local_port_range`) leaves out.
fn spare_ports(range: &str) -> Vec<u16> {
    let mut bounds = range.split_whitespace().map(|bound| bound.parse::<u16>());
    let (Some(Ok(low)), Some(Ok(high))) = (bounds.next(), bounds.next()) else {
        panic!("cannot read the ephemeral port range from {range:?}");
    };
    (1024..=u16::MAX)
        .filter(|port| !(low..=high).contains(port))
        .collect()
}

#[test]
fn spare_ports_lie_outside_the_ephemeral_range() {
    assert_eq!(
        spare_ports("32768\t60999\n").len(),
        (32768 - 1024) + (65535 - 60999)
    );
    assert!(spare_ports("1024 65535").is_empty());
    assert_eq!(
        spare_ports("2000 65534"),
        (1024..2000).chain([65535]).collect::<Vec<_>>()
    );
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let spare = spare_ports(&range);
    let taken: Vec<u16> = (0..20).map(|_| spare_port()).collect();
    for port in &taken {
        assert!(spare.contains(port), "{port} outside {range}");
        TcpListener::bind(("127.0.0.1", *port)).expect("a spare port is free");
    }
    let mut distinct = taken.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), taken.len(), "{taken:?}");
}

/// `--listen 127.0.0.1:ANY_PORT`: the kernel picks a free port as the
/// server binds it, and the server says which ([`announced_port`]). A port
/// found free beforehand may be taken by the time the server binds it.
pub const ANY_PORT: u16 = 0;

/// The port in the first line of `output` that announces an address
/// ([`announced_in`]), within 20 s. The rest of `output` is read and dropped on a
/// thread, so the process never blocks on a full pipe.
pub fn announced_port(output: impl Read + Send + 'static) -> u16 {
    port_announced_by(output, announced_in)
}

/// As [`announced_port`], with `announced` telling which line announces
/// which port (for programs that say it their own way).
pub fn port_announced_by(
    output: impl Read + Send + 'static,
    announced: fn(&str) -> Option<u16>,
) -> u16 {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(output).lines();
        let mut sender = Some(sender);
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(port) = announced(&line) {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(port);
                }
            }
        }
    });
    receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("the process announces the port it listens on within 20 s")
}

/// The port of the address `line` announces: `tailwater server listening
/// on http://HOST:PORT …`, or the `server  http://HOST:PORT` line of the
/// banners of `tailwater dev` and `tailwater demo`.
pub fn announced_in(line: &str) -> Option<u16> {
    let line = line.trim_start();
    let rest = match line.split_once("listening on ") {
        Some((_, rest)) => rest,
        None => line.strip_prefix("server ")?,
    };
    let url = rest.split_whitespace().next()?;
    let authority = url.split("://").nth(1)?;
    authority
        .split('/')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

#[test]
fn announced_addresses_are_read() {
    assert_eq!(
        announced_in("tailwater server listening on http://127.0.0.1:43017 (data in /d)"),
        Some(43017)
    );
    assert_eq!(
        announced_in("sink listening on https://[::1]:8443"),
        Some(8443)
    );
    assert_eq!(
        announced_in("  server    http://127.0.0.1:9 (web UI: …)"),
        Some(9)
    );
    assert_eq!(announced_in("  token     tw_abc"), None);
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
        let mut server = TestServer::start_on(ANY_PORT, &data);
        server._dir = Some(dir);
        server
    }

    /// A server on `port` (or on any free one: [`ANY_PORT`]) over `data`,
    /// once it answers health checks.
    pub fn start_on(port: u16, data: &Path) -> TestServer {
        TestServer::start_on_with(port, data, &[])
    }

    /// A server on `port` over `data` with more `tailwater server` flags.
    pub fn start_on_with(port: u16, data: &Path, flags: &[&str]) -> TestServer {
        TestServer::start_command(port, data, flags, Command::new(binary()))
    }

    /// A server on `port` over `data` that may open at most `open_files`
    /// files (sockets included), as under `ulimit -n`.
    pub fn start_with_open_files(
        port: u16,
        data: &Path,
        flags: &[&str],
        open_files: u64,
    ) -> TestServer {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(binary());
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: open_files,
                    rlim_max: open_files,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        TestServer::start_command(port, data, flags, command)
    }

    fn start_command(port: u16, data: &Path, flags: &[&str], mut command: Command) -> TestServer {
        let mut child = command
            .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .args(flags)
            .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
            .env("TAILWATER_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = announced_port(child.stdout.take().expect("piped"));
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

    /// The live tail connections open now, as `/metrics` counts them
    /// (`tailwater_tail_clients`, summed over tenants).
    pub fn tail_clients(&self) -> u64 {
        let (status, metrics) = http("GET", self.port, "/metrics", Some(TOKEN), None);
        assert_eq!(status, 200, "{metrics}");
        metrics
            .lines()
            .filter(|line| line.starts_with("tailwater_tail_clients"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
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
            .env("TAILWATER_SPOOL", &self.spool)
            // Never the user's own profiles.
            .env("TAILWATER_CONFIG", self.spool.with_file_name("config.toml"));
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

/// The lines a child writes to `stdout` (or stderr), each with when it was
/// read.
pub fn lines_of(
    stdout: impl Read + Send + 'static,
) -> std::sync::mpsc::Receiver<(Instant, String)> {
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { return };
            if lines_tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    lines
}

/// The first of `lines` that contains `needle`, read within `timeout`; else
/// every line read before, to say what came instead.
pub fn line_containing(
    lines: &std::sync::mpsc::Receiver<(Instant, String)>,
    needle: &str,
    timeout: Duration,
) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((_, line)) if line.contains(needle) => return Ok(line),
            Ok((_, line)) => seen.push(line),
            Err(_) => return Err(seen),
        }
    }
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

/// `unshare` with `namespaces` (such as `["--pid", "--fork"]`), for tests
/// that put the agent in a namespace of its own, as a container does; fails
/// the test with what to do when it cannot (never skipped: CI runs as root,
/// and scripts/test installs util-linux where it is missing).
pub fn unshare(namespaces: &[&str]) -> Command {
    match Command::new("unshare")
        .args(namespaces)
        .arg("true")
        .output()
    {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "cannot make namespaces here (unshare {}): {}; run the tests as root (as CI does)",
            namespaces.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(error) => panic!("cannot run unshare ({error}): install util-linux"),
    }
    let mut command = Command::new("unshare");
    command.args(namespaces);
    command
}

/// A child process on a pseudo-terminal (stdin, stdout and stderr), as under
/// a real terminal: what it writes is collected as it comes.
pub struct Pty {
    pub child: Child,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// The terminal's keyboard side: what is written here, the child reads.
    keyboard: std::fs::File,
}

impl Pty {
    pub fn spawn(mut command: Command) -> Pty {
        use std::os::fd::{FromRawFd, OwnedFd};
        let (mut controller, mut terminal) = (0, 0);
        // SAFETY: openpty(3) writes two new descriptors, owned below.
        let opened = unsafe {
            libc::openpty(
                &mut controller,
                &mut terminal,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here only.
        let (controller, terminal) = unsafe {
            (
                OwnedFd::from_raw_fd(controller),
                OwnedFd::from_raw_fd(terminal),
            )
        };
        command
            .stdin(terminal.try_clone().unwrap())
            .stdout(terminal.try_clone().unwrap())
            .stderr(terminal);
        let child = command.spawn().unwrap();
        // Our copies of the terminal side close with `command`, so reading
        // ends (EIO) once the child and its children let go of it.
        drop(command);
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let collected = output.clone();
        let mut reader = std::fs::File::from(controller);
        let keyboard = reader.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                collected.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Pty {
            child,
            output,
            keyboard,
        }
    }

    /// Types `text` on the terminal.
    pub fn type_text(&mut self, text: &str) {
        self.keyboard.write_all(text.as_bytes()).unwrap();
    }

    /// Everything written so far, lossily as text.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output holds `text`; the output so far.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let output = self.output();
            if output.contains(text) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {text:?} in:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits for the child to exit, or fails the test after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not exit within {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ingest batch of runner `runner`'s records `seqs`, as the agent sends.
pub fn ingest_batch(app: &str, runner: &str, seqs: std::ops::Range<u64>) -> String {
    let records: Vec<Value> = seqs
        .map(|seq| serde_json::json!({"seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "level": "info", "message": format!("line {seq}")}))
        .collect();
    serde_json::json!({"app": app, "version": "v1", "runner": runner, "boot": "b1", "records": records})
        .to_string()
}

/// A TCP relay on loopback in front of a server, to make network blips:
/// while it is down, open connections are cut and new ones closed at once.
/// Also the address of a server that does not exist yet
/// ([`Relay::without_server`]): the relay holds the port from the start, so
/// nothing else can take it before the server comes.
pub struct Relay {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    down: bool,
    /// The server's port; none yet for [`Relay::without_server`].
    target: Option<u16>,
    open: Vec<TcpStream>,
    /// Connections closed at once because the relay was down.
    refused: u64,
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let relay = Relay::without_server();
        relay.connect_to(target);
        relay
    }

    /// A relay with no server behind it yet: every connection is closed at
    /// once until [`Relay::connect_to`].
    pub fn without_server() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(RelayState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let mut state = shared.lock().unwrap();
                let target = match state.target {
                    Some(target) if !state.down => target,
                    _ => {
                        state.refused += 1;
                        continue; // dropped: closed at once
                    }
                };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                state.open.extend([client, server]);
            }
        });
        Relay { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Relays every connection from now on to the server on `port`.
    pub fn connect_to(&self, port: u16) {
        self.state.lock().unwrap().target = Some(port);
    }

    /// How many connections were closed at once while the relay was down.
    pub fn refused(&self) -> u64 {
        self.state.lock().unwrap().refused
    }

    /// Cuts every open connection and refuses new ones (`true`), or lets
    /// them through again (`false`).
    pub fn set_down(&self, down: bool) {
        let mut state = self.state.lock().unwrap();
        state.down = down;
        if down {
            for stream in state.open.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped: a
/// disk that really fills.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs ({}): run the tests as root (as CI does)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bytes still free on it.
    pub fn free_bytes(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: statvfs(3) fills the struct it is given.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: the server may still hold files there.
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem has no byte left.
pub fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while file.write(&chunk).is_ok_and(|n| n > 0) {}
    // The last partial page too.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
}
