//! A real NATS cluster for tests: three `nats-server` processes (Debian's
//! 2.9, installed by `scripts/test`) routed to each other on loopback
//! ports, each with JetStream on its own directory, started from
//! configurations generated into a temporary directory, ready once every
//! server's `/healthz` (which in a cluster waits for JetStream's meta
//! leader) answers 200. Killed (SIGKILL) when dropped. Messages are held
//! to 256 KB, so a large batch travels as several.
//!
//! Blocking (std only), so the server's tests and the binary's end-to-end
//! tests (`crates/tailwater/tests/e2e/cluster.rs`) share it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long servers get to become ready.
const READY_WITHIN: Duration = Duration::from_secs(60);

struct Server {
    name: String,
    client_port: u16,
    monitor_port: u16,
    config: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

pub struct NatsCluster {
    /// The servers' configurations, logs and JetStream directories.
    _dir: tempfile::TempDir,
    servers: Vec<Server>,
}

/// Users of one account: the nodes get the whole account; the agent of
/// tenant `default`, app `api` may publish only its intake subjects and
/// hear only its own inbox (the snippet of docs/agents-on-nats.md, with
/// test passwords). For [`NatsCluster::start_with`].
pub const AGENT_ACCOUNTS: &str = r#"
accounts {
  TAILWATER {
    jetstream: enabled
    users: [
      { user: node, password: nodepw }
      {
        user: "agent-default-api", password: agentpw
        permissions: {
          publish: { allow: ["tailwater.intake.default.api.*"] }
          subscribe: { allow: ["_INBOX_default.api.>"] }
        }
      }
    ]
  }
}
"#;

/// [`AGENT_ACCOUNTS`] with nkey users (their public keys, `U…`) instead
/// of passwords: `node` gets the whole account; `agent`, of tenant
/// `default`, app `api`, may publish only its intake subjects and hear
/// only its own inbox (docs/agents-on-nats.md's nkey snippet).
pub fn nkey_accounts(node: &str, agent: &str) -> String {
    format!(
        r#"
accounts {{
  TAILWATER {{
    jetstream: enabled
    users: [
      {{ nkey: {node} }}
      {{
        nkey: {agent}
        permissions: {{
          publish: {{ allow: ["tailwater.intake.default.api.*"] }}
          subscribe: {{ allow: ["_INBOX_default.api.>"] }}
        }}
      }}
    ]
  }}
}}
"#
    )
}

/// A free loopback port (held until the caller drops the listener).
pub fn free_port() -> (u16, TcpListener) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    (listener.local_addr().unwrap().port(), listener)
}

impl NatsCluster {
    /// `size` servers, routed, with JetStream; ready.
    pub fn start(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, "")
    }

    /// [`NatsCluster::start`], each server's configuration ending with
    /// `extra` (accounts and users, say).
    pub fn start_with(size: usize, extra: &str) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut held = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..size {
            let (client, a) = free_port();
            let (monitor, b) = free_port();
            let (route, c) = free_port();
            held.extend([a, b, c]);
            ports.push((client, monitor, route));
        }
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        let mut servers = Vec::new();
        for (index, (client_port, monitor_port, route_port)) in ports.into_iter().enumerate() {
            let name = format!("n{index}");
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\n\
                     listen: 127.0.0.1:{client_port}\n\
                     http: 127.0.0.1:{monitor_port}\n\
                     max_payload: 256KB\n\
                     jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n\
                     cluster {{\n  name: tailwater-test\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n}}\n{extra}\n",
                    routes.join(", ")
                ),
            )
            .unwrap();
            servers.push(Server {
                log: dir.path().join(format!("{name}.log")),
                name,
                client_port,
                monitor_port,
                config,
                process: None,
            });
        }
        drop(held);
        NatsCluster::run(dir, servers)
    }

    /// Servers from configurations written elsewhere (docs/cluster.md's,
    /// in the end-to-end tests): each `(name, text, client port, monitor
    /// port)`, with `{dir}` in the text standing for a directory of the
    /// server's own; ready.
    #[allow(dead_code)]
    pub fn with_configs(configs: Vec<(String, String, u16, u16)>) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let servers = configs
            .into_iter()
            .map(|(name, text, client_port, monitor_port)| {
                let own = dir.path().join(&name);
                std::fs::create_dir_all(&own).unwrap();
                let config = dir.path().join(format!("{name}.conf"));
                std::fs::write(&config, text.replace("{dir}", own.to_str().unwrap())).unwrap();
                Server {
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    client_port,
                    monitor_port,
                    config,
                    process: None,
                }
            })
            .collect();
        NatsCluster::run(dir, servers)
    }

    fn run(dir: tempfile::TempDir, servers: Vec<Server>) -> NatsCluster {
        let size = servers.len();
        let mut cluster = NatsCluster { _dir: dir, servers };
        for index in 0..size {
            cluster.spawn(index);
        }
        for index in 0..size {
            cluster.wait_ready(index);
        }
        cluster
    }

    /// The client URL of each server.
    /// `nats://USER:PASSWORD@…` for each server.
    pub fn urls_as(&self, user: &str, password: &str) -> Vec<String> {
        self.urls()
            .iter()
            .map(|url| url.replacen("nats://", &format!("nats://{user}:{password}@"), 1))
            .collect()
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| format!("nats://127.0.0.1:{}", server.client_port))
            .collect()
    }

    /// kill -9 of server `index`, waited for.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.servers[index].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts server `index` again (its JetStream directory kept) and
    /// waits until it is ready.
    pub fn restart(&mut self, index: usize) {
        self.spawn(index);
        self.wait_ready(index);
    }

    /// Starts every stopped server again at once (one alone is not ready
    /// until a quorum is back) and waits until all are ready.
    pub fn restart_stopped(&mut self) {
        let stopped: Vec<usize> = (0..self.servers.len())
            .filter(|&index| self.servers[index].process.is_none())
            .collect();
        for &index in &stopped {
            self.spawn(index);
        }
        for index in stopped {
            self.wait_ready(index);
        }
    }

    /// The index of the server leading `stream` now, as a running
    /// server's monitoring endpoint (`/jsz`) tells.
    pub fn stream_leader(&self, stream: &str) -> usize {
        let server = self
            .servers
            .iter()
            .find(|server| server.process.is_some())
            .expect("a running server");
        let (_, body) = get(server.monitor_port, "/jsz?accounts=true&streams=true");
        let jsz: serde_json::Value = serde_json::from_str(&body).unwrap();
        let leader = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|detail| detail["name"] == stream)
            .and_then(|detail| detail["cluster"]["leader"].as_str())
            .unwrap_or_else(|| panic!("no leader of {stream} in {jsz}"))
            .to_owned();
        self.servers
            .iter()
            .position(|server| server.name == leader)
            .unwrap_or_else(|| panic!("unknown leader {leader}"))
    }

    fn spawn(&mut self, index: usize) {
        let server = &mut self.servers[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .unwrap();
        let process = Command::new("nats-server")
            .arg("-c")
            .arg(&server.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server runs (scripts/test installs it: apt-get install nats-server)");
        server.process = Some(process);
    }

    fn wait_ready(&self, index: usize) {
        let server = &self.servers[index];
        let deadline = Instant::now() + READY_WITHIN;
        while get(server.monitor_port, "/healthz").0 != 200 {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&server.log).unwrap_or_default();
                panic!(
                    "nats-server {} not ready within {READY_WITHIN:?}; its log:\n{log}",
                    server.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `GET path` of a monitoring port: the status (0 when nothing answered)
/// and the body (HTTP/1.0, so never chunked).
fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return (0, String::new());
    }
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for index in 0..self.servers.len() {
            self.kill(index);
        }
    }
}
