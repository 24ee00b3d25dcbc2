//! Shipping under pressure with real processes: a server away for a while,
//! the rate limit, the spool's cap, a server asking to retry after a while,
//! and heartbeats of a quiet runner. The helpers that start agents are in
//! `spool.rs`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::spool::*;

/// How long the server stays away in `a_server_away_for_a_while`: 30 s, as
/// a redeploy of the server might take, while the worker logs on throughout
/// (the agent's backoff reaches its longest wait, 2 s, after 3 s).
const OUTAGE: Duration = Duration::from_secs(30);

/// The server away for [`OUTAGE`] while the worker logs: every line
/// arrives, once, in order.
#[test]
fn a_server_away_for_a_while_gets_every_line_once_in_order() {
    // At least 36 s of logging at 30 ms a line: longer than the outage.
    const LINES: usize = 1200;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = "spool-outage";
    let server = TestServer::start_on(ANY_PORT, &data);
    let port = server.port;
    let worker = agent(
        port,
        &dir.path().join("spool"),
        app,
        &["--quiet"],
        &format!(
            "i=1; while [ $i -le {LINES} ]; do echo \"line $i\"; i=$((i+1)); sleep 0.03; done"
        ),
    );
    wait_for(
        "lines to arrive before the outage",
        Duration::from_secs(20),
        || stdout_messages(&server.logs(&["--app", app])).len() >= 20,
    );
    let away = jiff::Timestamp::now();
    server.kill_9();
    std::thread::sleep(OUTAGE);
    let server = TestServer::start_on(port, &data);
    let back = jiff::Timestamp::now();
    let output = worker.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot ship logs yet") && stderr.contains("shipping logs to"),
        "the agent said it lost the server and found it again: {stderr}"
    );

    let records = server.logs(&["--app", app]);
    assert_each_once(&records);
    assert_eq!(stdout_messages(&records), numbered("line", LINES));
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..records.len() as u64).collect::<Vec<_>>(),
        "in order, no gap"
    );
    let during = records
        .iter()
        .filter(|r| {
            let ts: jiff::Timestamp = r["ts"].as_str().unwrap().parse().unwrap();
            away < ts && ts < back
        })
        .count();
    assert!(
        during >= 50,
        "only {during} lines written while the server was away"
    );
    assert_eq!(records.last().unwrap()["fields"]["event"], "exit");
}

/// A flood over `--rate-lines`: every line arrives, and a system record
/// sums up exactly what was held back.
#[test]
fn a_flood_over_the_rate_limit_is_held_back_counted_and_shipped() {
    const LINES: usize = 1000;
    const RATE: u64 = 250;
    let server = TestServer::start();
    let started = Instant::now();
    wait_success(agent(
        server.port,
        tempfile::tempdir().unwrap().path(),
        "spool-throttle",
        &["--quiet", "--rate-lines", &RATE.to_string()],
        &format!("i=1; while [ $i -le {LINES} ]; do echo \"line $i\"; i=$((i+1)); done"),
    ));
    let took = started.elapsed();
    // A second's burst, then the rate: about three more seconds.
    assert!(
        took >= Duration::from_millis(((LINES as u64 - RATE) * 1000 / RATE) * 9 / 10),
        "shipped in {took:?}: not throttled"
    );

    let records = server.logs(&["--app", "spool-throttle"]);
    assert_each_once(&records);
    assert_eq!(stdout_messages(&records), numbered("line", LINES));
    let reports = events(&records, "throttled");
    assert!(!reports.is_empty(), "a throttled record");
    let boot = records[0]["boot"].as_str().unwrap();
    let mut held_total = 0;
    for report in reports {
        let held = seqs_of(report, boot);
        let lines: Vec<&Value> = records
            .iter()
            .filter(|r| r["stream"] == "stdout" && held.contains(&r["seq"].as_u64().unwrap()))
            .collect();
        let bytes: usize = lines
            .iter()
            .map(|r| r["message"].as_str().unwrap().len())
            .sum();
        assert_eq!(report["fields"]["held_lines"], lines.len(), "{report}");
        assert_eq!(report["fields"]["held_bytes"], bytes, "{report}");
        assert_eq!(report["fields"]["rate_lines"], RATE);
        assert_eq!(report["level"], "warn");
        let message = report["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "throttled: {} lines, {bytes} bytes held back between ",
                lines.len()
            )),
            "{message}"
        );
        held_total += lines.len();
    }
    // All but about the first second's worth waited.
    assert!(
        held_total >= LINES - 2 * RATE as usize,
        "{held_total} lines held back"
    );
}

/// A tiny spool cap while the server is down: the oldest are dropped, a
/// system record counts them exactly, and the rest arrive.
#[test]
fn over_the_spool_cap_the_oldest_are_dropped_and_counted_exactly() {
    const LINES: usize = 2000;
    const CAP: &str = "16384";
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::without_server();
    let port = relay.port;
    let app = "spool-cap";
    let mut child = agent(
        port,
        &dir.path().join("spool"),
        app,
        &["--spool-max-bytes", CAP],
        &format!(
            "i=1; while [ $i -le {LINES} ]; do echo \"line $i of the flood\"; i=$((i+1)); done"
        ),
    );
    let mut echo = BufReader::new(child.stdout.take().unwrap());
    read_echo_until(
        &mut echo,
        &format!("line {LINES} of the flood"),
        Duration::from_secs(30),
    );
    // The agent records the exit while the server is still away: its
    // record is in the spool (whose segments keep messages as written).
    let spool = dir.path().join("spool");
    wait_for("the exit in the spool", Duration::from_secs(30), || {
        spool_holds(&spool, b"exited with code 0")
    });
    let server = TestServer::start_on(ANY_PORT, &dir.path().join("data"));
    relay.connect_to(server.port);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut echo, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());

    let records = server.logs(&["--app", app]);
    assert_each_once(&records);
    let boot = records[0]["boot"].as_str().unwrap();
    let reports = events(&records, "dropped");
    assert!(!reports.is_empty(), "a drop record");
    let mut dropped = BTreeSet::new();
    for report in &reports {
        assert_eq!(report["fields"]["reason"], "spool_full");
        assert_eq!(report["level"], "error");
        let seqs = seqs_of(report, boot);
        assert_eq!(report["fields"]["dropped_lines"], seqs.len(), "{report}");
        assert!(seqs.is_disjoint(&dropped), "counted twice");
        dropped.extend(seqs);
    }
    // Every record the agent made is stored or counted as dropped, never
    // both (a report the cap dropped before it was shipped is counted, and
    // what it said is counted again in a later report).
    let stored: BTreeSet<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        stored.is_disjoint(&dropped),
        "stored and counted as dropped"
    );
    let last = *stored.last().unwrap();
    assert!(
        stored.union(&dropped).copied().eq(0..=last),
        "some record neither stored nor counted"
    );
    assert!(
        dropped.len() > LINES / 2,
        "{} dropped: the cap bit",
        dropped.len()
    );
    // The survivors arrive in order, the newest among them.
    let survivors: Vec<usize> = stdout_messages(&records)
        .iter()
        .map(|m| {
            m.strip_prefix("line ")
                .unwrap()
                .strip_suffix(" of the flood")
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(survivors.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(survivors.last(), Some(&LINES));
    assert_eq!(events(&records, "exit").len(), 1);
}

/// An ingest endpoint on loopback that keeps every batch it is sent (with
/// when it came, as JSON whichever form it came in: the agent sends binary
/// batches) and answers as `answer` says for the n-th POST (from 0):
/// `Some((status, retry_after_seconds))`, or `None` for 200.
struct IngestStub {
    port: u16,
    batches: std::sync::Arc<std::sync::Mutex<Vec<(Instant, Value)>>>,
}

impl IngestStub {
    fn start(answer: fn(usize) -> Option<(u16, u64)>) -> IngestStub {
        use std::io::{Read, Write};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let batches: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
        let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let kept = batches.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (kept, posts) = (kept.clone(), posts.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    loop {
                        let mut length = 0;
                        let mut binary = false;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            line.clear();
                            reader.read_line(&mut line).unwrap();
                            if line == "\r\n" {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                if name.eq_ignore_ascii_case("content-length") {
                                    length = value.trim().parse().unwrap();
                                }
                                if name.eq_ignore_ascii_case("content-type") {
                                    binary = value.trim() == "application/x-tailwater-batch";
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        reader.read_exact(&mut body).unwrap();
                        let n = posts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let batch: Value = if binary {
                            let batch = tailwater_model::wire::decode_binary_batch(&body).unwrap();
                            serde_json::to_value(batch).unwrap()
                        } else {
                            serde_json::from_slice(&body).unwrap()
                        };
                        let response = match answer(n) {
                            Some((status, retry_after)) => {
                                let body = r#"{"error":{"code":"rate_limited","message":"app over its rate limit"}}"#;
                                format!("HTTP/1.1 {status} Too Many Requests\r\nRetry-After: {retry_after}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                            }
                            None => {
                                let records = batch["records"].as_array().unwrap().len();
                                kept.lock().unwrap().push((Instant::now(), batch));
                                let body = format!(r#"{{"accepted":{records},"duplicates":0}}"#);
                                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                            }
                        };
                        if writer.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        IngestStub { port, batches }
    }

    fn batches(&self) -> Vec<(Instant, Value)> {
        self.batches.lock().unwrap().clone()
    }
}

/// The server answers 429 with `Retry-After: 1` twice: the agent waits at
/// least that long each time, keeps the lines, ships every one once and in
/// order afterwards, and says how it was held up.
#[test]
fn a_server_asking_to_retry_after_is_obeyed_and_nothing_is_lost() {
    let stub = IngestStub::start(|n| (n < 2).then_some((429, 1)));
    let spool = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let agent = agent(
        stub.port,
        spool.path(),
        "limited",
        &[],
        "for i in $(seq 1 50); do echo line $i; done",
    );
    let output = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("is rate limiting this runner (app over its rate limit)"),
        "{stderr}"
    );
    let batches = stub.batches();
    // Two 429s of one second each came before the first batch was taken.
    let first = batches.first().expect("a batch").0;
    assert!(
        first.duration_since(started) >= Duration::from_secs(2),
        "shipped {:?} after the start, before two Retry-After waits",
        first.duration_since(started)
    );
    let records: Vec<Value> = batches
        .iter()
        .flat_map(|(_, batch)| batch["records"].as_array().unwrap().clone())
        .collect();
    // One boot: each sequence number once, in order, from the first.
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..records.len() as u64).collect::<Vec<_>>());
    assert_eq!(stdout_messages(&records), numbered("line", 50));
    let [limited] = &events(&records, "server_rate_limited")[..] else {
        panic!("one server_rate_limited record: {:#?}", messages(&records))
    };
    assert_eq!(limited["fields"]["answers"], 2);
    assert!(limited["fields"]["waited_ms"].as_u64().unwrap() >= 2000);
    assert_eq!(limited["level"], "warn");
}

/// With nothing to ship, the agent sends an empty batch with its labels
/// every --heartbeat-interval, and the real server takes it.
#[test]
fn a_quiet_runner_sends_heartbeats_the_server_accepts() {
    let stub = IngestStub::start(|_| None);
    let spool = tempfile::tempdir().unwrap();
    let quiet = "echo before; sleep 1.5; echo after";
    let agent_on_stub = agent(
        stub.port,
        spool.path(),
        "beating",
        &["--heartbeat-interval", "200ms"],
        quiet,
    );
    wait_success(agent_on_stub);
    let batches = stub.batches();
    let boot = batches[0].1["boot"].as_str().unwrap().to_owned();
    let sent_at = |text: &str| {
        batches
            .iter()
            .find(|(_, batch)| {
                stdout_messages(batch["records"].as_array().unwrap()).contains(&text)
            })
            .unwrap_or_else(|| panic!("a batch with '{text}'"))
            .0
    };
    let (before, after) = (sent_at("before"), sent_at("after"));
    let beats: Vec<&Value> = batches
        .iter()
        .filter(|(at, batch)| {
            *at > before && *at < after && batch["records"].as_array().unwrap().is_empty()
        })
        .map(|(_, batch)| batch)
        .collect();
    // At least 1.5 s quiet at one beat per 200 ms: about 7, fewer on a
    // loaded machine, never more than the quiet time allows.
    let quiet_for = after.duration_since(before);
    let most = (quiet_for.as_millis() / 200) as usize + 1;
    assert!(
        (3..=most).contains(&beats.len()),
        "{} heartbeats in {quiet_for:?} of quiet",
        beats.len()
    );
    for beat in beats {
        assert_eq!(
            (&beat["app"], &beat["runner"], &beat["boot"]),
            (
                &Value::from("beating"),
                &Value::from("beating-runner"),
                &Value::from(boot.as_str())
            )
        );
    }

    // The real server takes empty batches: no complaint, every line there.
    let server = TestServer::start();
    let output = agent(
        server.port,
        &server.spool,
        "beating-real",
        &["--heartbeat-interval", "100ms"],
        "echo before; sleep 0.5; echo after",
    )
    .wait_with_output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("heartbeat"), "{stderr}");
    let records = server.logs(&["--app", "beating-real"]);
    assert_eq!(stdout_messages(&records), ["before", "after"]);
}

/// Whether a file under `dir` holds `needle`.
fn spool_holds(dir: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        if path.is_dir() {
            return spool_holds(&path, needle);
        }
        std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

/// The sequence numbers of `seqs` (a report's `[{boot, first, last}]`) of
/// `boot`.
fn seqs_of(report: &Value, boot: &str) -> BTreeSet<u64> {
    let mut seqs = BTreeSet::new();
    for range in report["fields"]["seqs"].as_array().unwrap() {
        assert_eq!(range["boot"], boot);
        seqs.extend(range["first"].as_u64().unwrap()..=range["last"].as_u64().unwrap());
    }
    seqs
}
