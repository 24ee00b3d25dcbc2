//! Live tail over real HTTP on loopback: following, resuming after
//! `Last-Event-ID` with no gap and no duplicate, and tenants kept apart.

use std::time::Duration;

use futures_util::StreamExt;
use jiff::Timestamp;
use tailwater_client::Client;
use tailwater_model::wire::{IngestBatch, IngestRecord, LogsParams};
use tailwater_model::{LogRecord, Stream};
use tailwater_server::{start, ServerConfig};

const TOKEN: &str = "tw_tail_test";

fn batch(runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    IngestBatch {
        app: "tail".into(),
        version: String::new(),
        runner: runner.into(),
        boot: "b".into(),
        source: Default::default(),
        records: seqs
            .map(|seq| IngestRecord {
                seq,
                ts: Timestamp::now(),
                stream: Stream::Stdout,
                level: Default::default(),
                request_id: None,
                message: format!("{runner} {seq}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

async fn next_records(
    stream: &mut (impl futures_util::Stream<Item = Result<LogRecord, tailwater_client::ClientError>>
              + Unpin),
    count: usize,
) -> Vec<String> {
    let mut messages = Vec::new();
    while messages.len() < count {
        let record = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("a record arrives")
            .expect("the stream goes on")
            .expect("a valid record");
        messages.push(record.message);
    }
    messages
}

#[tokio::test]
async fn tail_follows_and_resumes_after_the_last_event_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    let server = start(config).await.unwrap();
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();

    client.ingest(&batch("r1", 0..3)).await.unwrap();
    // Without a position, a tail starts with the next record stored.
    let mut live = Box::pin(client.tail(&LogsParams::default(), None).await.unwrap());
    client.ingest(&batch("r1", 3..6)).await.unwrap();
    assert_eq!(next_records(&mut live, 3).await, ["r1 3", "r1 4", "r1 5"]);
    drop(live);

    // Resume after record id 4 ("r1 3"): everything after it, then live.
    let filter = LogsParams {
        runner: Some("r1".into()),
        ..Default::default()
    };
    let mut resumed = Box::pin(client.tail(&filter, Some(4)).await.unwrap());
    assert_eq!(next_records(&mut resumed, 2).await, ["r1 4", "r1 5"]);
    client.ingest(&batch("r2", 0..2)).await.unwrap(); // filtered out
    client.ingest(&batch("r1", 6..7)).await.unwrap();
    assert_eq!(next_records(&mut resumed, 1).await, ["r1 6"]);

    // A history page's `as_of` continues into the tail exactly.
    let page = client.logs(&filter).await.unwrap();
    assert_eq!(page.records.len(), 7);
    let mut after_page = Box::pin(client.tail(&filter, Some(page.as_of)).await.unwrap());
    client.ingest(&batch("r1", 7..8)).await.unwrap();
    assert_eq!(next_records(&mut after_page, 1).await, ["r1 7"]);

    // Shutdown ends open tails instead of waiting on them.
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown does not hang")
        .unwrap();
}
