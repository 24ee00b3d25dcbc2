//! Drains of the real binary, made with `tailwater drain create`: the
//! sending server is killed with SIGKILL mid-stream (a delivery in flight)
//! and started again on its data. Every record reaches the receiver of the
//! test, signed; a record that comes twice comes under a batch id already
//! seen; a second tailwater server fed through its OTLP endpoint holds
//! each record once; and README's Python check verifies a real delivery.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tailwater_server::drains::verify;

use super::common::{http, python, spare_port, wait_for, TestServer, TOKEN};

/// One delivery: its headers (lowercase names) and body.
#[derive(Clone, Debug)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A receiving HTTP/1.1 server on loopback, on its own threads, that
/// keeps every delivery and answers 200 after `delay` (so a delivery is
/// in flight when the sender is killed).
fn receiver(delay: Duration) -> (u16, Arc<Mutex<Vec<Delivery>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let kept = Arc::new(Mutex::new(Vec::new()));
    let deliveries = kept.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let kept = kept.clone();
            std::thread::spawn(move || serve(stream, &kept, delay));
        }
    });
    (port, deliveries)
}

fn serve(stream: TcpStream, kept: &Mutex<Vec<Delivery>>, delay: Duration) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = BTreeMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().push(Delivery { headers, body });
        std::thread::sleep(delay);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn drain_create(server: &TestServer, args: &[&str]) -> Value {
    let output = server
        .command(&[&["drain", "create", "--app", "sdxl", "--json"], args].concat())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tailwater drain create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn ingest(port: u16, seqs: std::ops::Range<u64>) {
    let records: Vec<Value> = seqs
        .map(|seq| serde_json::json!({"seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "message": format!("m{seq}")}))
        .collect();
    let body = serde_json::json!({"app": "sdxl", "runner": "r1", "boot": "b1", "records": records});
    let (status, answer) = http(
        "POST",
        port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&body.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn a_drain_survives_kill_9_of_its_server_losing_nothing() {
    const RECORDS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let (receiver_port, deliveries) = receiver(Duration::from_millis(200));
    let flags = [
        "--drain-allow-private",
        "--drain-batch-records",
        "20",
        "--drain-batch-wait",
        "20ms",
    ];
    let data = dir.path().join("data");
    let port = spare_port();
    let server = TestServer::start_on_with(port, &data, &flags);
    let receiving = TestServer::start_on_with(spare_port(), &dir.path().join("receiving"), &[]);
    for (target, app) in [(&server, "sdxl"), (&receiving, "sdxl")] {
        let (status, body) = http(
            "POST",
            target.port,
            "/v1/apps",
            Some(TOKEN),
            Some(&format!("{{\"name\": \"{app}\"}}")),
        );
        assert_eq!(status, 201, "{body}");
    }
    let ndjson = drain_create(&server, &[&format!("http://127.0.0.1:{receiver_port}/in")]);
    let secret = ndjson["secret"].as_str().unwrap().to_owned();
    let otlp = drain_create(
        &server,
        &[
            &format!("{}/v1/logs", receiving.url()),
            "--format",
            "otlp",
            "--receiver-token",
            TOKEN,
        ],
    );
    assert_eq!(otlp["format"], "otlp");

    // Half, then SIGKILL while deliveries are in flight.
    for start in (0..RECORDS / 2).step_by(10) {
        ingest(port, start..start + 10);
    }
    wait_for("some deliveries", Duration::from_secs(30), || {
        deliveries.lock().unwrap().len() >= 3
    });
    server.kill_9();
    let server = TestServer::start_on_with(port, &data, &flags);
    for start in (RECORDS / 2..RECORDS).step_by(10) {
        ingest(port, start..start + 10);
    }

    // Every record, each duplicate under a batch id already seen.
    let received = |deliveries: &[Delivery]| -> BTreeSet<String> {
        deliveries
            .iter()
            .flat_map(|d| {
                std::str::from_utf8(&d.body)
                    .unwrap()
                    .lines()
                    .map(|line| {
                        serde_json::from_str::<Value>(line).unwrap()["message"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let all: BTreeSet<String> = (0..RECORDS).map(|seq| format!("m{seq}")).collect();
    wait_for(
        "every record at the receiver",
        Duration::from_secs(60),
        || received(&deliveries.lock().unwrap()) == all,
    );
    let deliveries = deliveries.lock().unwrap().clone();
    let now = jiff::Timestamp::now().as_second();
    let mut batch_of: BTreeMap<String, String> = BTreeMap::new();
    let mut bodies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for delivery in &deliveries {
        let batch = delivery.headers["tailwater-batch-id"].clone();
        verify(
            &secret,
            &delivery.headers["tailwater-signature"],
            &delivery.body,
            now,
            300,
        )
        .expect("every delivery is signed with the drain's secret");
        // A batch sent again holds the same records.
        if let Some(body) = bodies.insert(batch.clone(), delivery.body.clone()) {
            assert_eq!(
                body, delivery.body,
                "batch {batch} sent again with other records"
            );
        }
        for line in std::str::from_utf8(&delivery.body).unwrap().lines() {
            let record: Value = serde_json::from_str(line).unwrap();
            let id = record["id"].as_str().unwrap().to_owned();
            if let Some(first) = batch_of.insert(id.clone(), batch.clone()) {
                assert_eq!(first, batch, "record {id} came again under a new batch id");
            }
        }
    }

    // The kill came while the receiver held a delivery unanswered (each
    // takes it 200 ms, and the backlog was ten batches long): that batch
    // was sent again after the restart, under its id.
    assert!(
        deliveries.len() > bodies.len(),
        "no batch was sent again: the kill missed every delivery in flight"
    );
    // README's few lines of Python verify a real delivery, and refuse it
    // under another secret.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let snippet = readme
        .split_once("**Verifying a delivery**")
        .and_then(|(_, rest)| rest.split_once("```python\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("README shows how to verify a delivery in Python")
        .0;
    let delivery = &deliveries[deliveries.len() - 1];
    let body_file = dir.path().join("body");
    std::fs::write(&body_file, &delivery.body).unwrap();
    let script = format!(
        "{snippet}\nimport os, sys\nbody = open(sys.argv[1], 'rb').read()\nprint(verify(os.environ['SECRET'], os.environ['SIGNATURE'], body), verify('whsec_other', os.environ['SIGNATURE'], body))\n"
    );
    let output = std::process::Command::new(python())
        .args(["-c", &script])
        .arg(&body_file)
        .env("SECRET", &secret)
        .env("SIGNATURE", &delivery.headers["tailwater-signature"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "True False",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The second tailwater: each record once (OTLP's log.record.uid).
    wait_for(
        "every record in the receiving tailwater",
        Duration::from_secs(60),
        || receiving.logs(&["--app", "sdxl"]).len() as u64 >= RECORDS,
    );
    let stored = receiving.logs(&["--app", "sdxl"]);
    let messages: Vec<&str> = stored
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    let distinct: BTreeSet<&str> = messages.iter().copied().collect();
    assert_eq!(messages.len(), distinct.len(), "each record once");
    assert_eq!(distinct.len() as u64, RECORDS);

    // The CLI shows both drains active.
    let output = server
        .command(&["drain", "list", "--app", "sdxl"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(table.matches("active").count(), 2, "{table}");
}
