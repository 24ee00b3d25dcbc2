//! Distributed mode under the failures an operator meets, with the real
//! binary on a real three-server NATS cluster (`cluster.rs`' harness): a
//! tailwater node frozen (SIGSTOP) past its heartbeat's TTL while an agent
//! ships to it, then resumed; and a node away while the stream dropped
//! messages it never read (past the replay window), which must never be
//! hidden, and is filled from a peer's store. Through each, a live tail
//! (`tailwater logs -f` given the nodes, the doomed one first) moves to
//! another node and prints every acknowledged line once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::cluster::nats::NatsCluster;
use super::cluster::{cluster_status, expected, lines, node, node_names, node_with, ship};
use super::cluster::{wait_following, wait_printed_once};
use super::common::{http, messages, wait_for, Follower, TestServer, TOKEN};

/// The `line N…` messages of app `worker` a node holds, checking each is
/// there once.
fn worker_lines(node: &TestServer) -> BTreeSet<String> {
    let records = node.logs(&["--app", "worker"]);
    let lines: Vec<&str> = messages(&records)
        .into_iter()
        .filter(|message| message.starts_with("line "))
        .collect();
    let once: BTreeSet<String> = lines.iter().map(|line| (*line).to_owned()).collect();
    assert_eq!(once.len(), lines.len(), "a line stored twice");
    once
}

/// Sends `signal` to `node`'s process.
fn signal(node: &TestServer, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(node.pid()).unwrap();
    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// `tailwater run` shipping numbered lines to `servers` (in that order)
/// until `stop` exists; lines printed once `marker` exists end in
/// ` after`.
fn agent(runner: &TestServer, servers: &str, marker: &Path, stop: &Path) -> Child {
    let script = format!(
        "i=0; while [ ! -e {stop} ]; do if [ -e {marker} ]; then echo \"line $i after\"; else echo \"line $i\"; fi; i=$((i+1)); sleep 0.005; done",
        stop = stop.display(),
        marker = marker.display()
    );
    runner
        .command(&[
            "run",
            "--server",
            servers,
            // A frozen node takes the connection and never answers.
            "--send-timeout",
            "3s",
            "--app",
            "worker",
            "--runner",
            "worker-1",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_node_frozen_past_its_ttl_drops_out_its_agent_fails_over_and_it_catches_up_on_resume() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let a = node(dir.path(), "a", &nats);
    let b = node(dir.path(), "b", &nats);
    let c = node(dir.path(), "c", &nats);
    wait_for("b to see three nodes", Duration::from_secs(30), || {
        node_names(&cluster_status(&b)) == ["a", "b", "c"]
    });
    let (frozen, stop) = (dir.path().join("frozen"), dir.path().join("stop"));
    let servers = format!("{},{},{}", a.url(), b.url(), c.url());
    // A live tail on a (to be frozen) first; a server silent past the
    // server's keep-alive (15 s) is taken as gone.
    let mut follower = Follower::start(&b, &servers, "worker", &["--idle-timeout", "20s"]);
    wait_following(&mut follower, &a);
    let worker = agent(&b, &servers, &frozen, &stop);
    wait_for("lines through a on c", Duration::from_secs(30), || {
        worker_lines(&c).len() >= 50
    });

    signal(&a, libc::SIGSTOP);
    std::fs::File::create(&frozen).unwrap();
    // Its heartbeat lapses (--nats-node-ttl 2s); the others say so.
    wait_for("cluster status to drop a", Duration::from_secs(30), || {
        node_names(&cluster_status(&b)) == ["b", "c"]
    });
    // The agent gives a up (--send-timeout) and ships to b.
    wait_for(
        "lines printed after the freeze on b and c",
        Duration::from_secs(60),
        || {
            // Queries keep being answered, promptly, by the nodes not frozen.
            [&b, &c].iter().all(|node| {
                let asked = Instant::now();
                let after = worker_lines(node)
                    .iter()
                    .filter(|line| line.ends_with(" after"))
                    .count();
                let took = asked.elapsed();
                assert!(took < Duration::from_secs(10), "a query took {took:?}");
                after >= 50
            })
        },
    );

    // The live tail hears nothing from a, and follows b.
    let following_b = format!("following {} now", b.url());
    wait_for("the follower to move to b", Duration::from_secs(60), || {
        assert!(
            follower.running(),
            "the follower ended: {}",
            follower.stderr()
        );
        follower.stderr().contains(&following_b)
    });
    signal(&a, libc::SIGCONT);
    wait_for(
        "cluster status to show a again",
        Duration::from_secs(30),
        || node_names(&cluster_status(&b)) == ["a", "b", "c"],
    );
    std::fs::File::create(&stop).unwrap();
    let output = worker.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the agent failed: {stderr}");
    assert!(
        stderr.contains("no answer within 3s (--send-timeout)") && stderr.contains("shipping to"),
        "the agent did not say it failed over: {stderr}"
    );
    // The agent exits once everything printed is acknowledged.
    let printed: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("line "))
        .map(str::to_owned)
        .collect();
    assert!(
        printed
            .iter()
            .filter(|line| line.ends_with(" after"))
            .count()
            >= 50,
        "{printed:?}"
    );
    for (name, node) in [("a", &a), ("b", &b), ("c", &c)] {
        wait_for(
            &format!("node {name} to hold every acknowledged line once"),
            Duration::from_secs(60),
            || worker_lines(node) == printed,
        );
    }
    wait_printed_once(&mut follower, &printed);
    let said = follower.stderr();
    assert!(
        said.contains(&format!(
            "live tail from {0} interrupted: {0} sent nothing for 20s (--idle-timeout)",
            a.url()
        )),
        "the follower did not say why it moved: {said}"
    );
}

/// The gaps `status` lists for `node`'s consumers.
fn gaps_of<'a>(status: &'a serde_json::Value, node: &str) -> Vec<&'a serde_json::Value> {
    status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|partition| partition["consumers"].as_array().into_iter().flatten())
        .filter(|consumer| consumer["node"] == node)
        .flat_map(|consumer| consumer["gaps"].as_array().into_iter().flatten())
        .collect()
}

/// `tailwater_cluster_window_gaps_total`, summed over partitions, on `node`.
fn window_gaps(node: &TestServer) -> u64 {
    let (status, metrics) = http("GET", node.port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200, "{metrics}");
    metrics
        .lines()
        .filter(|line| line.starts_with("tailwater_cluster_window_gaps_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_node_back_after_the_stream_dropped_what_it_had_not_read_shows_the_gap_and_repairs_it_from_a_peer(
) {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    // A replay window of 64 KiB: a hundred or so batches.
    let window = "65536";
    let a = node_with(dir.path(), "a", &nats, window);
    let b = node_with(dir.path(), "b", &nats, window);
    wait_for("a to see both nodes", Duration::from_secs(30), || {
        node_names(&cluster_status(&a)) == ["a", "b"]
    });
    // A live tail on b (to be stopped, then to come back with a gap) first.
    let (a_url, b_url) = (a.url(), b.url());
    let mut follower = Follower::start(&a, &format!("{b_url},{a_url}"), "api", &[]);
    wait_following(&mut follower, &b);
    ship(&a, 0..100);
    wait_for("b to hold the first lines", Duration::from_secs(60), || {
        lines(&b) == expected(0..100)
    });
    drop(b);
    // While b is away the stream rolls past everything it had not read;
    // a keeps up (it is waited for), so it misses nothing.
    let mut next = 100;
    for _ in 0..25 {
        for _ in 0..10 {
            ship(&a, next..next + 20);
            next += 20;
        }
        wait_for("a to keep up", Duration::from_secs(60), || {
            lines(&a) == expected(0..next)
        });
    }

    let b = node_with(dir.path(), "b", &nats, window);
    wait_for(
        "b's gap in the status of both nodes",
        Duration::from_secs(60),
        || {
            !gaps_of(&cluster_status(&b), "b").is_empty()
                && !gaps_of(&cluster_status(&a), "b").is_empty()
        },
    );
    let status = cluster_status(&a);
    assert!(
        gaps_of(&status, "a").is_empty(),
        "a missed nothing: {status}"
    );
    let gap = gaps_of(&status, "b")[0].clone();
    let (from, to) = (
        gap["from_sequence"].as_u64().unwrap(),
        gap["to_sequence"].as_u64().unwrap(),
    );
    assert!(from >= 1 && to >= from, "{gap}");
    assert!(window_gaps(&b) >= 1);
    assert_eq!(window_gaps(&a), 0);
    // b fills the gap from a's store, on its own: every acknowledged line
    // once, on both nodes, counted by identity.
    let everything = expected(0..next);
    for (name, node) in [("a", &a), ("b", &b)] {
        wait_for(
            &format!("{name} to hold every acknowledged line once"),
            Duration::from_secs(90),
            || identities(node) == next as usize && lines(node) == everything,
        );
    }
    wait_for(
        "b's gap shown repaired from a, by both nodes",
        Duration::from_secs(30),
        || {
            [&a, &b].iter().all(|node| {
                let status = cluster_status(node);
                let gaps = gaps_of(&status, "b");
                !gaps.is_empty()
                    && gaps.iter().all(|gap| {
                        gap["repaired_ms"].as_i64().is_some() && gap["repaired_from"] == "a"
                    })
            })
        },
    );
    // Filled in order from a, with the stream's ids: each record has the
    // same id on both nodes, so a tail or a cursor still moves between them.
    assert_eq!(ids(&b), ids(&a), "record ids, node by node");
    assert!(counter(&b, "tailwater_cluster_window_gaps_repaired_total") >= 1);
    assert!(counter(&b, "tailwater_cluster_repaired_records_total") >= 1);
    assert_eq!(
        counter(&a, "tailwater_cluster_window_gaps_repaired_total"),
        0
    );
    let table = b.command(&["cluster", "status"]).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("before the node read them")
            && table.contains(&format!("{from}-{to}"))
            && table.contains("repaired)")
            && table.contains(" from a"),
        "{table}"
    );
    wait_for("b to read what is left", Duration::from_secs(60), || {
        nothing_pending_for(&cluster_status(&b), "b")
    });

    // A restart does not forget it, nor repairs it again.
    drop(b);
    let b = node_with(dir.path(), "b", &nats, window);
    wait_for(
        "b's gap shown repaired after a restart",
        Duration::from_secs(30),
        || {
            gaps_of(&cluster_status(&b), "b")
                .first()
                .is_some_and(|shown| {
                    shown["from_sequence"] == gap["from_sequence"]
                        && shown["to_sequence"] == gap["to_sequence"]
                        && shown["repaired_from"] == "a"
                })
        },
    );
    assert_eq!(identities(&b), next as usize);
    assert_eq!(lines(&b), everything);
    assert_eq!(
        counter(&b, "tailwater_cluster_window_gaps_repaired_total"),
        0
    );
    // The live tail moved to a when b went, and printed each line once.
    wait_printed_once(&mut follower, &everything);
    let said = follower.stderr();
    assert!(
        said.contains(&format!("{b_url} ")) && said.contains(&format!("following {a_url} now")),
        "the follower did not say it moved: {said}"
    );
}

/// Each record of app `api` on `node`, by its identity, with its id.
fn ids(node: &TestServer) -> std::collections::BTreeMap<(String, u64), String> {
    node.logs(&["--app", "api"])
        .iter()
        .map(|record| {
            let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
            (
                (text("runner"), record["seq"].as_u64().unwrap()),
                text("id"),
            )
        })
        .collect()
}

/// The records of app `api` `node` holds, checking no identity (tenant,
/// app, runner, boot, seq) is there twice.
fn identities(node: &TestServer) -> usize {
    let records = node.logs(&["--app", "api"]);
    let identities: BTreeSet<(String, String, String, String, u64)> = records
        .iter()
        .map(|record| {
            let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
            (
                text("tenant"),
                text("app"),
                text("runner"),
                text("boot"),
                record["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(identities.len(), records.len(), "a record stored twice");
    identities.len()
}

/// The counter `name`, summed over partitions, on `node`.
fn counter(node: &TestServer, name: &str) -> u64 {
    let (status, metrics) = http("GET", node.port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200, "{metrics}");
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Every partition's consumer of `node` has nothing pending.
fn nothing_pending_for(status: &serde_json::Value, node: &str) -> bool {
    status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|partition| partition["consumers"].as_array().into_iter().flatten())
        .filter(|consumer| consumer["node"] == node)
        .all(|consumer| consumer["pending"] == 0 && consumer["ack_pending"] == 0)
}
