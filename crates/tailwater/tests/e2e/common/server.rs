//! `TestServer`, a real `tailwater server` child, and a worker run
//! against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{announced_port, binary, http, json_lines, wait_for, ANY_PORT, TOKEN};

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
