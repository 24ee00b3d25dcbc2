//! The real server under a flood of silent and slow-header sockets, with
//! few file descriptors: health checks and authenticated reads keep being
//! answered, and the flood is closed after its timeouts. And the warning
//! for plain HTTP off loopback.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{http, line_containing, lines_of, wait_for, TestServer, ANY_PORT, TOKEN};

/// Lets this test process open the thousands of sockets it floods with.
fn raise_own_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 4096,
        "this test opens thousands of sockets: raise the hard open-file limit (ulimit -Hn) to 4096 or more"
    );
}

/// A socket that sends nothing (even `i`) or half a request head (odd).
fn flood_socket(port: u16, i: usize) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    if i % 2 == 1 {
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    }
    Some(stream)
}

/// Whether the server has closed `stream` (end of file or reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An answer to a half head before the close: read on.
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn a_flood_of_silent_sockets_at_a_small_fd_limit_leaves_health_and_reads_answered() {
    raise_own_open_file_limit();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_open_files(
        ANY_PORT,
        &dir.path().join("data"),
        &["--header-read-timeout", "2s", "--idle-timeout", "3s"],
        256,
    );
    let port = server.port;
    let batch = crate::common::ingest_batch("flooded", "r1", 0..3);
    let (status, body) = http("POST", port, "/v1/ingest", Some(TOKEN), Some(&batch));
    assert_eq!(status, 200, "{body}");

    // A thousand sockets at once, four times what the server may open…
    let flood: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    for i in 0..1000 {
        let stream = flood_socket(port, i).expect("connects");
        flood.lock().unwrap().push(stream);
    }
    // …and more all along, while health and reads are asked.
    let flooding = Arc::new(AtomicBool::new(true));
    let flooder = {
        let (flood, flooding) = (flood.clone(), flooding.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while flooding.load(Ordering::Relaxed) {
                if let Some(stream) = flood_socket(port, i) {
                    flood.lock().unwrap().push(stream);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let bound = Duration::from_secs(2);
    for round in 0..20 {
        let started = Instant::now();
        let (status, body) = http("GET", port, "/healthz", None, None);
        assert_eq!(
            status, 200,
            "round {round}: /healthz under the flood: {body}"
        );
        assert!(
            started.elapsed() < bound,
            "round {round}: /healthz took {:?}",
            started.elapsed()
        );
        let started = Instant::now();
        let (status, body) = http("GET", port, "/v1/logs?app=flooded", Some(TOKEN), None);
        assert_eq!(
            status, 200,
            "round {round}: /v1/logs under the flood: {body}"
        );
        assert!(body.contains("flooded"), "round {round}: {body}");
        assert!(
            started.elapsed() < bound,
            "round {round}: /v1/logs took {:?}",
            started.elapsed()
        );
    }
    flooding.store(false, Ordering::Relaxed);
    flooder.join().unwrap();

    // Every flood socket is closed: evicted, or past its timeout.
    let mut flood = std::mem::take(&mut *flood.lock().unwrap());
    let sockets = flood.len();
    wait_for(
        "the server to close every flood socket",
        Duration::from_secs(30),
        || {
            flood.retain_mut(|stream| !closed_by_server(stream));
            flood.is_empty()
        },
    );
    let (status, metrics) = http("GET", port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200);
    let count = |reason: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "tailwater_connections_closed_total{{reason=\"{reason}\"}} "
                ))
            })
            .map_or(0, |value| value.trim().parse().unwrap())
    };
    assert!(count("evicted") > 0, "evictions are counted: {metrics}");
    assert!(
        count("idle_timeout") + count("header_timeout") > 0,
        "timeouts are counted: {metrics}"
    );
    assert!(
        count("evicted") + count("idle_timeout") + count("header_timeout") + count("refused")
            >= sockets as u64,
        "every closed flood socket ({sockets}) is counted: {metrics}"
    );
    drop(server);
}

#[test]
fn plain_http_off_loopback_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(crate::common::binary())
        .args([
            "server",
            "--listen",
            &format!("0.0.0.0:{ANY_PORT}"),
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let warning = line_containing(&stderr, "plain HTTP", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("no warning about plain HTTP in: {seen:#?}"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        warning.contains("--tls-cert") && warning.contains("127.0.0.1"),
        "the warning says what to do: {warning}"
    );
}
