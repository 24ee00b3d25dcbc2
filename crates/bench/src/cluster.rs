//! The cluster figures (distributed mode, issue #19): three
//! `tailwater server --nats … --node …` nodes on a real three-server NATS
//! JetStream cluster (the system's `nats-server`, routed on loopback
//! ports, as the tests start it; `scripts/bench-setup` installs it), each
//! figure beside one embedded server in the same run. Everything shares
//! this machine's cores: three NATS servers and three nodes on one host
//! measure what the cluster's path costs, not what three machines give.
//!
//! - Ingest: the server figures' prebuilt batches, each runner's to one
//!   node (runner index mod 3), all nodes at once; beside the same batches
//!   to one fresh embedded server. Wall clock lines/s: a node answers only
//!   after JetStream's acknowledgement, and every node stores every batch.
//! - Acknowledgement latency: each batch's time from request to answer in
//!   those two ingests, p50 and p99.
//! - Failover: an agent shipping to A,B,C (`--server`); kill -9 of A; the
//!   time until B or C has acknowledged a batch (their
//!   `tailwater_cluster_published_batches_total` grows).
//! - Catch-up: while A is down, fresh batches go to B; A started again
//!   over its data; the time until it holds every record B holds, beside
//!   the time the embedded server took to ingest as many lines.

#[allow(dead_code)]
#[path = "../../server/tests/cluster/nats.rs"]
mod nats;

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context};

use crate::corpus::Corpus;
use crate::http::{Connection, Served};
use crate::measure::{millis, Row, Unit};
use crate::server::{build_bodies, post_all, random_token, Posted, Setup, NATIVE};

/// The stream's replay window here: within the test servers' 1 GB.
const MAX_BYTES: &str = "536870912";
/// The agent's worker's lines per second in the failover figure.
const AGENT_RATE: u64 = 1000;

/// The node named `name`, over `data`, on `nats`.
fn node(setup: &Setup, nats: &[String], name: &str, token: &str) -> anyhow::Result<Served> {
    let data = setup.work.join(format!("node-{name}"));
    let mut command = Command::new(&setup.tailwater);
    command
        .arg("server")
        .arg("--data")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--nats", &nats.join(","), "--node", name])
        .args(["--nats-max-bytes", MAX_BYTES])
        .env("TAILWATER_BOOTSTRAP_TOKEN", token)
        .env("TAILWATER_LOG", "warn");
    Served::start(
        command,
        &setup.work.join(format!("node-{name}.log")),
        &format!("tailwater node {name}"),
    )
}

fn embedded(setup: &Setup, token: &str) -> anyhow::Result<Served> {
    let mut command = Command::new(&setup.tailwater);
    command
        .arg("server")
        .arg("--data")
        .arg(setup.work.join("embedded-data"))
        .args(["--listen", "127.0.0.1:0"])
        .env("TAILWATER_BOOTSTRAP_TOKEN", token)
        .env("TAILWATER_LOG", "warn");
    Served::start(
        command,
        &setup.work.join("embedded.log"),
        "tailwater server",
    )
}

fn get_json(served: &Served, token: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let response = Connection::open(served.addr, token)?.request("GET", path, b"")?;
    ensure!(
        response.status == 200,
        "GET {path} answered {}: {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    Ok(serde_json::from_slice(&response.body)?)
}

/// Records in `served`'s store.
fn records(served: &Served, token: &str) -> anyhow::Result<u64> {
    Ok(get_json(served, token, "/v1/status")?["store"]["records"]
        .as_u64()
        .unwrap_or(0))
}

/// Batches `served` published (summed over partitions).
fn published(served: &Served, token: &str) -> anyhow::Result<u64> {
    let response = Connection::open(served.addr, token)?.request("GET", "/metrics", b"")?;
    Ok(String::from_utf8_lossy(&response.body)
        .lines()
        .filter(|line| line.starts_with("tailwater_cluster_published_batches_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

/// Whether `node`'s consumer of every partition has stored everything, as
/// `served` (any node) tells.
fn caught_up(served: &Served, token: &str, node: &str) -> anyhow::Result<bool> {
    let status = get_json(served, token, "/v1/cluster")?;
    let partitions = status["partitions"].as_array().cloned().unwrap_or_default();
    Ok(!partitions.is_empty()
        && partitions.iter().all(|partition| {
            partition["consumers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|consumer| {
                    consumer["node"] == node
                        && consumer["pending"] == 0
                        && consumer["ack_pending"] == 0
                        && consumer.get("error").is_none()
                })
        }))
}

/// Polls `condition` every 5 ms until it holds (or `within` passes).
fn until(
    what: &str,
    within: Duration,
    mut condition: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + within;
    loop {
        if condition()? {
            return Ok(Instant::now());
        }
        ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn percentile(latencies: &[Duration], per_cent: usize) -> Option<f64> {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let index = (sorted.len() * per_cent).div_ceil(100).checked_sub(1)?;
    sorted.get(index).map(|&latency| millis(latency))
}

/// The three nodes' ingest of `bodies`, each runner's to one node.
fn post_to_nodes(
    nodes: &[Served],
    token: &str,
    bodies: &[(usize, Vec<u8>)],
    connections: usize,
) -> anyhow::Result<Posted> {
    let shares: Vec<Vec<(usize, Vec<u8>)>> = (0..nodes.len())
        .map(|index| {
            bodies
                .iter()
                .filter(|(runner, _)| runner % nodes.len() == index)
                .cloned()
                .collect()
        })
        .collect();
    let start = Instant::now();
    let posted = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .zip(&shares)
            .map(|(node, share)| {
                scope.spawn(move || post_all(node, token, (NATIVE, share), connections))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
            })
            .collect::<anyhow::Result<Vec<Posted>>>()
    })?;
    let wall = start.elapsed();
    let mut all = posted.into_iter();
    let mut total = all.next().context("no node")?;
    for more in all {
        total.accepted += more.accepted;
        total.latencies.extend(more.latencies);
    }
    total.wall = wall;
    Ok(total)
}

/// Every cluster figure, and the lines and raw bytes of the batches.
pub fn run(
    setup: &Setup,
    corpus: Corpus,
    catch_up: Corpus,
) -> anyhow::Result<(Vec<Row>, u64, u64)> {
    let found = Command::new("nats-server").arg("--version").output();
    ensure!(
        found.is_ok_and(|output| output.status.success()),
        "the cluster figures run nats-server, and there is none on PATH: install it (apt-get install nats-server, 2.9 or later; scripts/bench-setup does)"
    );
    eprintln!("  building the HTTP batches");
    let bodies = build_bodies(corpus, setup.work)?;
    let lines = bodies.lines;
    let raw_bytes = std::fs::metadata(&bodies.raw_path)?.len();
    let token = random_token();
    let per_node = setup.connections.div_ceil(3);

    eprintln!("  POSTing them to one embedded server");
    let server = embedded(setup, &token)?;
    let alone = post_all(&server, &token, (NATIVE, &bodies.bodies), setup.connections)?;
    server.stop()?;
    ensure!(
        alone.accepted == lines,
        "the embedded server accepted {} of {lines} lines",
        alone.accepted
    );

    eprintln!("  starting three NATS servers and three tailwater nodes");
    let nats = nats::NatsCluster::start(3);
    let urls = nats.urls();
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node(setup, &urls, name, &token)?);
    }
    eprintln!("  POSTing them to the three nodes");
    let clustered = post_to_nodes(&nodes, &token, &bodies.bodies, per_node)?;
    ensure!(
        clustered.accepted == lines,
        "the nodes accepted {} of {lines} lines",
        clustered.accepted
    );
    let rate = |posted: &Posted| lines as f64 / posted.wall.as_secs_f64();
    let how = format!(
        "{} prebuilt batches (as the server figures cut them), each runner's to one node, {per_node} connections per node; the baseline: the same batches to one fresh embedded server over {} connections; 3 nats-server 2.9 (R3 stream, file storage) and 3 nodes on this machine's cores, every node storing every batch",
        bodies.bodies.len(),
        setup.connections
    );
    let mut rows = vec![Row::new(
        "cluster ingest, 3 nodes, wall",
        Unit::LinesPerSecond,
        Some(rate(&clustered)),
        Some(rate(&alone)),
    )
    .baseline_is("one embedded server, same batches, same run")
    .note(format!(
        "wall clock from the first request to the last answer; {how}"
    ))];
    for per_cent in [50, 99] {
        rows.push(
            Row::new(
                &format!("cluster ack latency per batch, p{per_cent}"),
                Unit::Milliseconds,
                percentile(&clustered.latencies, per_cent),
                percentile(&alone.latencies, per_cent),
            )
            .baseline_is("one embedded server, same batches, same run")
            .note(format!(
                "request to answer of each POST /v1/ingest in the ingest above (a node answers after JetStream's acknowledgement from a quorum of 3); {} batches",
                clustered.latencies.len()
            )),
        );
    }
    eprintln!("  waiting for every node to store everything");
    let waiting = Instant::now();
    for name in ["a", "b", "c"] {
        until(
            &format!("node {name} to catch up"),
            Duration::from_secs(600),
            || caught_up(&nodes[0], &token, name),
        )?;
    }
    let stored = clustered.wall + waiting.elapsed();
    rows.push(
        Row::new(
            "cluster stored on every node, wall",
            Unit::LinesPerSecond,
            Some(lines as f64 / stored.as_secs_f64()),
            Some(rate(&alone)),
        )
        .baseline_is("one embedded server, same batches, same run (stored when answered)")
        .note(
            "wall clock from the first request to every node's consumer having stored the whole stream (each node reads it in order, one consumer, storing a run of messages then syncing once), polled every 5 ms through GET /v1/cluster",
        ),
    );

    eprintln!("  kill -9 of a node while an agent ships to it");
    let [a, b, c]: [Served; 3] = nodes
        .try_into()
        .map_err(|_| anyhow!("three nodes were started"))?;
    rows.push(failover(setup, a, [&b, &c], &token)?);

    eprintln!("  restarting it after more batches went in without it");
    let dir = setup.work.join("catch-up");
    std::fs::create_dir_all(&dir)?;
    let load = build_bodies(catch_up, &dir)?;
    post_all(&b, &token, (NATIVE, &load.bodies), setup.connections)?;
    until(
        "node b to store the batches",
        Duration::from_secs(600),
        || caught_up(&b, &token, "b"),
    )?;
    let held = records(&b, &token)?;
    let started = Instant::now();
    let a = node(setup, &urls, "a", &token)?;
    let done = until("node a to catch up", Duration::from_secs(600), || {
        Ok(records(&a, &token)? >= held)
    })?;
    ensure!(
        caught_up(&a, &token, "a")?,
        "node a holds as many records as b but says it has more to read"
    );
    let catch_up = done - started;
    let fresh = alone.wall.as_secs_f64() * load.lines as f64 / lines as f64;
    rows.push(
        Row::new(
            "cluster node restart to caught up",
            Unit::Milliseconds,
            Some(millis(catch_up)),
            Some(fresh * 1000.0),
        )
        .baseline_is("the time the embedded server took for as many lines, from its ingest above")
        .note(format!(
            "node a killed (kill -9), then {} fresh lines (besides the agent's) sent to node b; a started again over its data: from the start of its process to its store holding every record b holds ({held}); startup and the consumers' resumption included",
            load.lines
        )),
    );
    drop(a);
    b.stop()?;
    c.stop()?;
    drop(nats);
    Ok((rows, lines, raw_bytes))
}

/// The agent ships to a, b, c; a is killed (kill -9); how long until b or
/// c has acknowledged a batch of it.
fn failover(setup: &Setup, a: Served, [b, c]: [&Served; 2], token: &str) -> anyhow::Result<Row> {
    let servers: Vec<String> = [&a, b, c]
        .iter()
        .map(|node| format!("http://{}", node.addr))
        .collect();
    let exe = std::env::current_exe()?;
    let count = AGENT_RATE * 30;
    let mut agent = Command::new(&setup.tailwater)
        .arg("run")
        .args(["--server", &servers.join(",")])
        .args([
            "--token",
            token,
            "--app",
            "bench-failover",
            "--runner",
            "failover-1",
        ])
        .arg("--spool")
        .arg(setup.work.join("failover-spool"))
        .arg("--quiet")
        .arg("--")
        .arg(&exe)
        .args([
            "emit-timed",
            "--rate",
            &AGENT_RATE.to_string(),
            "--count",
            &count.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(
            setup.work.join("failover-agent.log"),
        )?)
        .spawn()
        .context("cannot start the agent")?;
    let measured = (|| -> anyhow::Result<Duration> {
        let before_a = published(&a, token)?;
        until(
            "the agent to ship to node a",
            Duration::from_secs(60),
            || Ok(published(&a, token)? >= before_a + 5),
        )?;
        let before = published(b, token)? + published(c, token)?;
        let killed = Instant::now();
        // Served's drop is SIGKILL.
        drop(a);
        let served = until(
            "another node to take the agent's batches",
            Duration::from_secs(60),
            || Ok(published(b, token)? + published(c, token)? > before),
        )?;
        Ok(served - killed)
    })();
    // A stop signal: the agent records its worker's end and ships it, so
    // no node later marks the runner lost on its own.
    // SAFETY: kill only sends a signal to our own child, not yet reaped.
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    let _ = agent.wait();
    let failover = measured?;
    Ok(Row::new(
        "cluster failover, kill -9 to next ack",
        Unit::Milliseconds,
        Some(millis(failover)),
        None,
    )
    .baseline_is("—")
    .note(format!(
        "an agent (`tailwater run --server a,b,c`, a worker printing {AGENT_RATE} lines/s) shipping to node a; kill -9 of a; until node b or c has acknowledged a batch (its tailwater_cluster_published_batches_total grows, polled every 5 ms): the agent's retry after the refused connection plus JetStream's acknowledgement"
    )))
}
