use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// `tailwater dev --port`: the worker (a real HTTP server) runs under the
/// agent as its reverse proxy; its lines, requests included, are shown on
/// the terminal from the embedded server; SIGINT (Ctrl-C) reaches the
/// worker, and then everything stops, temporary data removed, exit 0.
#[test]
fn dev_shows_the_workers_lines_and_ctrl_c_stops_everything() {
    // The server and the agent's proxy bind any free port, and the banner
    // says which.
    let worker = r#"
echo "worker up on $PORT"
trap 'echo "worker got SIGINT"; kill $server; wait $server; exit 0' INT
python3 -m http.server "$PORT" --bind 127.0.0.1 &
server=$!
wait $server
"#;
    let mut command = Command::new(binary());
    command
        .args(["dev", "--listen", &format!("127.0.0.1:{ANY_PORT}")])
        .args(["--port", &ANY_PORT.to_string(), "--", "sh", "-c", worker])
        .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
        .env_remove("NO_COLOR");
    let mut dev = Pty::spawn(command);

    let output = dev.wait_for_output("press Ctrl-C to stop", Duration::from_secs(30));
    let data = PathBuf::from(
        output
            .lines()
            .find_map(|line| line.trim().strip_prefix("data"))
            .expect("the banner names the data directory")
            .trim()
            .trim_end_matches("(removed on exit)")
            .trim(),
    );
    assert!(data.is_dir(), "{data:?}");
    assert!(
        output.contains(TOKEN),
        "the banner shows the token: {output}"
    );
    let server_port = output
        .lines()
        .find_map(announced_in)
        .expect("the banner names the server's address");
    assert_ne!(server_port, ANY_PORT, "{output}");
    let proxy_port = output
        .lines()
        .find_map(|line| {
            let url = line
                .trim()
                .strip_prefix("requests")?
                .split_whitespace()
                .next()?;
            url.strip_prefix("http://")?
                .parse::<std::net::SocketAddr>()
                .ok()
        })
        .map(|address| address.port())
        .expect("the banner names the proxy's address");
    assert_ne!(proxy_port, ANY_PORT, "{output}");
    // The worker's port, told to it as PORT: outside the kernel's
    // ephemeral range, where no bind to port 0 can take it first.
    let worker_port: u16 = output
        .split("(to the worker on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .expect("the banner names the worker's port");
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut bounds = range
        .split_whitespace()
        .map(|bound| bound.parse::<u16>().unwrap());
    let (low, high) = (bounds.next().unwrap(), bounds.next().unwrap());
    assert!(
        !(low..=high).contains(&worker_port),
        "{worker_port} is in the ephemeral range {low}-{high}"
    );

    // A request through the proxy: answered by the worker, recorded with
    // an id that its log line carries.
    let mut answer = (0, String::new());
    wait_for("the worker to answer", Duration::from_secs(30), || {
        answer = http("GET", proxy_port, "/", None, None);
        answer.0 == 200
    });
    let output = dev.wait_for_output("GET / HTTP/1.1\" 200", Duration::from_secs(10));
    let request_line = output
        .lines()
        .find(|line| line.contains("GET / HTTP/1.1\" 200"))
        .unwrap();
    assert!(
        request_line.contains("[\x1b[1m\x1b[36mreq-"),
        "the request id, highlighted: {request_line:?}"
    );
    // Shown once: from the server, not echoed by the agent as well.
    let shown = output
        .lines()
        .filter(|line| {
            line.contains("stdout") && line.contains(&format!("worker up on {worker_port}"))
        })
        .count();
    assert_eq!(shown, 1, "{output}");
    // The logs are in the embedded server, for `tailwater logs` too.
    let stored = Command::new(binary())
        .args([
            "logs",
            "--json",
            "--app",
            "dev",
            "--grep",
            "worker up",
            "--stream",
            "stdout",
        ])
        .env(
            "TAILWATER_SERVER",
            format!("http://127.0.0.1:{server_port}"),
        )
        .env("TAILWATER_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(json_lines(&stored.stdout).len(), 1);

    dev.signal(libc::SIGINT);
    let status = dev.wait(Duration::from_secs(40));
    let output = dev.wait_for_output("tailwater dev: stopped", Duration::from_secs(5));
    assert!(status.success(), "{status:?}: {output}");
    assert!(
        output.contains("worker got SIGINT"),
        "the worker's last lines are shown: {output}"
    );
    assert!(output.contains("exited with code 0"), "{output}");
    assert!(!data.exists(), "temporary data removed");
    assert_eq!(http("GET", server_port, "/healthz", None, None).0, 0);
    assert_eq!(http("GET", proxy_port, "/", None, None).0, 0);
}

/// A worker that ends by itself ends `tailwater dev` with its exit code,
/// after its last lines.
#[test]
fn dev_ends_with_the_workers_own_exit_code() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args([
            "dev",
            "--listen",
            &format!("127.0.0.1:{ANY_PORT}"),
            "--data",
        ])
        .arg(data.path())
        .args([
            "--app",
            "crashy",
            "--",
            "sh",
            "-c",
            "echo 'ImportError: no module named av' >&2; exit 3",
        ])
        .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("stderr ERROR ImportError: no module named av"),
        "{stdout}"
    );
    assert!(stdout.contains("tailwater: exited with code 3"), "{stdout}");
    assert!(!stdout.contains('\x1b'), "no colour in a pipe");
    assert!(
        data.path().join("store").is_dir(),
        "--data is kept after exit"
    );
}

/// `tailwater dev` killed outright (SIGKILL, no chance to clean up): the
/// agent gets a stop signal all the same, and the worker does not outlive it.
#[test]
fn a_killed_dev_leaves_no_worker_behind() {
    let mut command = Command::new(binary());
    command
        .args([
            "dev",
            "--no-color",
            "--listen",
            &format!("127.0.0.1:{ANY_PORT}"),
        ])
        .args([
            "--",
            "sh",
            "-c",
            "echo \"worker pid $$\"; while true; do sleep 0.1; done",
        ])
        .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN);
    let dev = Pty::spawn(command);
    let output = dev.wait_for_output("INFO  worker pid ", Duration::from_secs(30));
    let pid: i32 = output
        .split("INFO  worker pid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse().ok())
        .expect("the worker's pid");
    let alive = |pid: i32| {
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) == 0 };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ");
        exists && !zombie
    };
    assert!(alive(pid));
    dev.signal(libc::SIGKILL);
    wait_for("the worker to stop", Duration::from_secs(30), || {
        !alive(pid)
    });
}
