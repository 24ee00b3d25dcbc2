//! A flipped byte in the write-ahead log of a real server: batches ingested
//! over HTTP, the server stopped without a flush, one byte of an
//! acknowledged batch flipped, the server started again. Everything after
//! the damage is served, the loss is a metric and error records (the
//! operator's and the runner's), and a live tail resuming with
//! `Last-Event-ID` gets every new record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tailwater_client::Client;
use tailwater_model::wire::LogsParams;
use tailwater_model::LogRecord;
use tailwater_server::{start, RunningServer, ServerConfig};

mod common;

use common::{metric, TOKEN};

async fn server_on(dir: &Path) -> (RunningServer, Client) {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    // Records stay in the log until the server stops.
    config.store.memtable_max_age = Duration::from_secs(3600);
    // The previous server's store is released once its last task ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let server = loop {
        match start(config.clone()).await {
            Ok(server) => break server,
            Err(error)
                if error.to_string().contains("in use")
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(error) => panic!("{error:#}"),
        }
    };
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    (server, client)
}

/// The log segment holding frames, and the byte range of each frame.
fn frames(dir: &Path) -> (PathBuf, Vec<std::ops::Range<usize>>) {
    let wal = dir.join("store").join("wal");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&wal).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let mut frames = Vec::new();
        let mut pos = 8;
        while pos + 16 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            frames.push(pos..pos + 16 + len);
            pos += 16 + len;
        }
        if !frames.is_empty() {
            found.push((path, frames));
        }
    }
    assert_eq!(found.len(), 1, "one segment holds the batches");
    found.pop().unwrap()
}

fn app(name: &str) -> LogsParams {
    LogsParams {
        app: Some(name.into()),
        limit: Some("1000".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_log_loses_one_batch_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_on(dir.path()).await;
    for first in (0..50).step_by(10) {
        let response = client
            .ingest(&common::batch("wal", "r1", first..first + 10))
            .await
            .unwrap();
        assert_eq!(response.accepted, 10);
    }
    let before = client.logs(&app("wal")).await.unwrap();
    assert_eq!(before.records.len(), 50);
    let seal = common::seal(dir.path(), "default");
    let position = |record: &tailwater_model::LogRecord| seal.position(&record.id).unwrap();
    let newest = before.records.iter().max_by_key(|r| position(r)).unwrap();
    let (last_seen, last_seen_id) = (position(newest), newest.id.clone());
    server.shutdown().await.unwrap();

    // One byte in the middle of the third batch's frame.
    let (segment, frames) = frames(dir.path());
    assert_eq!(frames.len(), 5);
    let mut bytes = std::fs::read(&segment).unwrap();
    let third = frames[2].clone();
    bytes[(third.start + third.end) / 2] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();

    let (server, client) = server_on(dir.path()).await;
    let stored = |records: &[LogRecord]| {
        let mut messages: Vec<String> = records
            .iter()
            .filter(|r| r.stream == tailwater_model::Stream::Stdout)
            .map(|r| r.message.clone())
            .collect();
        messages.sort();
        messages
    };
    let after = client.logs(&app("wal")).await.unwrap();
    let mut expected: Vec<String> = (0..20).chain(30..50).map(|s| format!("r1 {s}")).collect();
    expected.sort();
    assert_eq!(
        stored(&after.records),
        expected,
        "every batch after the damage is kept"
    );

    // The operator's view says what was lost, and where the bytes are.
    let operator = client
        .logs(&app(tailwater_server::recovery::NOTICE_APP))
        .await
        .unwrap();
    assert_eq!(operator.records.len(), 1, "{:?}", operator.records);
    let notice = &operator.records[0];
    assert_eq!(notice.level, tailwater_model::Level::Error);
    assert_eq!(notice.stream, tailwater_model::Stream::System);
    assert!(
        notice
            .message
            .contains("10 acknowledged records (ids 21 to 30)"),
        "{}",
        notice.message
    );
    let fields = serde_json::to_value(&notice.fields).unwrap();
    assert_eq!(fields["event"], "wal_loss");
    assert_eq!(fields["records"], 10);
    assert_eq!(fields["bytes"], third.len() as u64);
    assert_eq!(fields["runner"], "r1");
    let copy = fields["copy"].as_str().unwrap();
    assert!(Path::new(copy).starts_with(dir.path().join("store").join("damaged")));
    assert_eq!(
        std::fs::read(copy).unwrap(),
        bytes,
        "the damaged segment, as it was"
    );

    // The runner's own logs say it too.
    let in_runner: Vec<&LogRecord> = after
        .records
        .iter()
        .filter(|r| r.stream == tailwater_model::Stream::System)
        .collect();
    assert_eq!(in_runner.len(), 1);
    assert_eq!(in_runner[0].runner, "r1");
    assert_eq!(in_runner[0].level, tailwater_model::Level::Error);
    assert!(
        !in_runner[0].message.contains(copy),
        "no server path in a tenant's logs"
    );
    // Nor the store's positions, which tell of other tenants: the ids
    // around the loss are sealed, as every id the tenant sees.
    assert!(
        !in_runner[0].message.contains("ids 21"),
        "{}",
        in_runner[0].message
    );
    let theirs = serde_json::to_value(&in_runner[0].fields).unwrap();
    assert!(theirs.get("copy").is_none(), "{theirs}");
    let sealed = |key: &str| seal.position(theirs[key].as_str().unwrap());
    assert_eq!(
        (sealed("after_id"), sealed("before_id")),
        (Some(20), Some(31))
    );

    assert_eq!(
        metric(&server, "tailwater_store_wal_lost_regions_total").await,
        1.0
    );
    assert_eq!(
        metric(&server, "tailwater_store_wal_lost_records_total").await,
        10.0
    );
    assert_eq!(
        metric(&server, "tailwater_store_wal_lost_bytes_total").await,
        third.len() as f64
    );

    // A tail that got everything up to `last_seen` before the restart
    // resumes there and gets every new record: no id was issued again.
    let stdout = LogsParams {
        app: Some("wal".into()),
        stream: Some("stdout".into()),
        ..Default::default()
    };
    let mut tail = Box::pin(client.tail(&stdout, Some(&last_seen_id)).await.unwrap());
    client
        .ingest(&common::batch("wal", "r1", 50..55))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let record = tokio::time::timeout(Duration::from_secs(5), tail.next())
            .await
            .expect("every new record reaches the resumed tail")
            .unwrap()
            .unwrap();
        assert!(position(&record) > last_seen);
        got.push(record.message);
    }
    assert_eq!(got, ["r1 50", "r1 51", "r1 52", "r1 53", "r1 54"]);
    drop(tail);
    server.shutdown().await.unwrap();

    // Reported once: the log was rewritten without the damage.
    let (server, client) = server_on(dir.path()).await;
    let operator = client
        .logs(&app(tailwater_server::recovery::NOTICE_APP))
        .await
        .unwrap();
    assert_eq!(operator.records.len(), 1);
    assert_eq!(
        metric(&server, "tailwater_store_wal_lost_regions_total").await,
        0.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_torn_last_batch_is_a_torn_tail_not_lost_data() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_on(dir.path()).await;
    for first in (0..30).step_by(10) {
        client
            .ingest(&common::batch("wal", "r1", first..first + 10))
            .await
            .unwrap();
    }
    server.shutdown().await.unwrap();

    // A crash in the middle of writing the last batch.
    let (segment, frames) = frames(dir.path());
    let last = frames.last().unwrap().clone();
    let bytes = std::fs::read(&segment).unwrap();
    std::fs::write(&segment, &bytes[..last.end - 5]).unwrap();

    let (server, client) = server_on(dir.path()).await;
    assert_eq!(client.logs(&app("wal")).await.unwrap().records.len(), 20);
    assert_eq!(
        metric(&server, "tailwater_store_wal_lost_regions_total").await,
        0.0
    );
    assert_eq!(
        metric(&server, "tailwater_store_wal_torn_tail_bytes_total").await,
        (last.len() - 5) as f64
    );
    let operator = client
        .logs(&app(tailwater_server::recovery::NOTICE_APP))
        .await
        .unwrap();
    assert!(
        operator.records.is_empty(),
        "a torn tail is no loss to report: {:?}",
        operator.records
    );
    server.shutdown().await.unwrap();
}
