//! Whatever users name their apps, ingest goes on for everyone, across a
//! restart, and the data directory is the server's user's alone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{batch, call, TOKEN};
use tailwater_server::{start, RunningServer, ServerConfig};

async fn server(dir: &Path) -> RunningServer {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    // Flushed into parts within moments of each batch.
    config.store.memtable_max_age = Duration::from_millis(50);
    start(config).await.unwrap()
}

async fn ingest(
    server: &RunningServer,
    app: &str,
    runner: &str,
    seqs: std::ops::Range<u64>,
) -> u16 {
    let body = serde_json::to_value(batch(app, runner, seqs)).unwrap();
    call(server, "POST", "/v1/ingest", TOKEN, Some(body))
        .await
        .0
}

/// The parts' records of `app`, as their files say.
fn flushed(dir: &Path, app: &str) -> u64 {
    let mut stack = vec![dir.join("store").join("parts")];
    let mut records = 0;
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "twp") {
                if let Ok(part) = tailwater_store::part::reader::Part::open(&path) {
                    if part.footer.partition.app == app {
                        records += part.footer.records;
                    }
                }
            }
        }
    }
    records
}

async fn wait_flushed(dir: &Path, app: &str, records: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while flushed(dir, app) < records {
        assert!(Instant::now() < deadline, "{app} never reached parts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_200_byte_app_name_stalls_nobody_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let long = "a".repeat(200);
    let odd = "é".repeat(32);
    let server_one = server(&data).await;
    assert_eq!(ingest(&server_one, &long, "r1", 0..5).await, 200);
    assert_eq!(ingest(&server_one, &odd, "r2", 0..5).await, 200);
    wait_flushed(&data, &long, 5).await;
    wait_flushed(&data, &odd, 5).await;
    assert_eq!(ingest(&server_one, "other", "r3", 0..5).await, 200);
    wait_flushed(&data, "other", 5).await;
    server_one.shutdown().await.unwrap();

    let server_two = server(&data).await;
    assert_eq!(ingest(&server_two, "other", "r3", 5..10).await, 200);
    assert_eq!(ingest(&server_two, &long, "r1", 5..10).await, 200);
    wait_flushed(&data, "other", 10).await;
    wait_flushed(&data, &long, 10).await;
    let (status, page) = call(&server_two, "GET", "/v1/logs?limit=100", TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"].as_array().unwrap().len(), 25, "{page}");
    server_two.shutdown().await.unwrap();

    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("store")), 0o700);
}

/// An app whose folder cannot be made (a file is in its place) is answered
/// 503 `unwritable`, with no path in the answer and counted, once the
/// store knows; every other app is answered 200 and flushed meanwhile, and
/// nothing the blocked app had sent is lost.
#[tokio::test]
async fn an_app_that_cannot_be_written_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tenant_parts = data.join("store").join("parts").join("default");
    std::fs::create_dir_all(&tenant_parts).unwrap();
    std::fs::write(tenant_parts.join("blocked"), b"in the way").unwrap();
    let server = server(&data).await;
    assert_eq!(ingest(&server, "blocked", "r1", 0..5).await, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, answer) = loop {
        let body = serde_json::to_value(batch("blocked", "r1", 5..10)).unwrap();
        let (status, answer) = call(&server, "POST", "/v1/ingest", TOKEN, Some(body)).await;
        if status != 200 || Instant::now() > deadline {
            break (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unwritable", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(!message.contains(dir.path().to_str().unwrap()), "{message}");
    assert!(!message.contains("/store"), "{message}");

    for round in 0..5 {
        let seqs = round * 5..round * 5 + 5;
        assert_eq!(ingest(&server, "other", "r2", seqs).await, 200);
    }
    wait_flushed(&data, "other", 25).await;
    let metrics = common::metrics_text(&server).await;
    assert!(
        metrics.contains("reason=\"unwritable\""),
        "the refusal is counted"
    );

    std::fs::remove_file(tenant_parts.join("blocked")).unwrap();
    wait_flushed(&data, "blocked", 5).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ingest(&server, "blocked", "r1", 5..10).await != 200 {
        assert!(Instant::now() < deadline, "blocked is taken again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_flushed(&data, "blocked", 10).await;
    server.shutdown().await.unwrap();
}
