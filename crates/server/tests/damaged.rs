//! A damaged block of a part on disk, over real HTTP on loopback: one byte
//! flipped inside a flushed block. Reads skip it and say so (logs and
//! histogram in their body, export in its last line, NDJSON and text),
//! `/metrics` counts the damaged reads, and `/v1/status` lists the part.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{batch, call, TOKEN};
use serde_json::Value;
use tailwater_client::Client;
use tailwater_model::wire::{ExportFormat, Incomplete, LogsParams};
use tailwater_server::{start, RunningServer, ServerConfig};
use tailwater_store::part::reader::Part;
use tailwater_store::StoreOptions;

/// Every part file of the server whose data directory is `dir`.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.join("store/parts")];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == tailwater_store::part::EXTENSION)
            {
                found.push(path);
            }
        }
    }
    found
}

/// A server that flushes every batch into parts, with two apps' records
/// flushed; then one byte flipped in the middle of `sdxl`'s one block.
async fn server_with_a_damaged_block(dir: &Path) -> (RunningServer, Client, PathBuf) {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    config.store = StoreOptions {
        memtable_max_bytes: 1,
        ..StoreOptions::default()
    };
    let server = start(config).await.unwrap();
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    client.ingest(&batch("sdxl", "r1", 0..30)).await.unwrap();
    client.ingest(&batch("other", "r2", 0..20)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let parts = loop {
        let parts = part_files(dir);
        if parts.len() == 2 {
            break parts;
        }
        assert!(Instant::now() < deadline, "never flushed: {parts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let damaged = parts
        .into_iter()
        .find(|path| Part::open(path).unwrap().footer.partition.app == "sdxl")
        .unwrap();
    let block = Part::open(&damaged).unwrap().footer.blocks[0].clone();
    let at = block.offset + u64::from(block.len) / 2;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&damaged)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
    file.sync_all().unwrap();
    (server, client, damaged)
}

async fn damaged_block_reads(server: &RunningServer) -> f64 {
    common::metric(server, "tailwater_store_damaged_block_reads_total").await
}

async fn export(server: &RunningServer, format: &str) -> String {
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/export?format={format}", server.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test]
async fn reads_that_skip_a_damaged_block_say_so_count_it_and_status_lists_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client, damaged) = server_with_a_damaged_block(dir.path()).await;
    assert_eq!(damaged_block_reads(&server).await, 0.0);
    let expected = Incomplete::damaged_blocks(1, 30);

    // History: the readable records, and why the others are missing.
    let page = client.logs(&LogsParams::default()).await.unwrap();
    assert_eq!(page.records.len(), 20);
    assert!(page.records.iter().all(|record| record.app == "other"));
    assert_eq!(page.incomplete.as_ref(), Some(&expected));
    // A read that does not reach the block is complete.
    let other = LogsParams {
        app: Some("other".into()),
        ..LogsParams::default()
    };
    let page = client.logs(&other).await.unwrap();
    assert_eq!((page.records.len(), page.incomplete), (20, None));

    // The histogram: not complete, and why.
    let (status, histogram) = call(&server, "GET", "/v1/histogram", TOKEN, None).await;
    assert_eq!(status, 200, "{histogram}");
    assert_eq!(histogram["total"], 20);
    assert_eq!(histogram["complete"], false);
    assert!(histogram.get("counted_since").is_none(), "{histogram}");
    assert_eq!(histogram["incomplete"]["reason"], "damaged_blocks");
    assert_eq!(histogram["incomplete"]["damaged_blocks"], 1);
    assert_eq!(histogram["incomplete"]["records"], 30);

    // A count: what it could read, and why the rest is missing.
    let count = client.count(&LogsParams::default()).await.unwrap();
    assert_eq!((count.total, count.complete), (20, false));
    assert_eq!(count.incomplete.as_ref(), Some(&expected));
    let count = client.count(&other).await.unwrap();
    assert_eq!(
        (count.total, count.complete, count.incomplete),
        (20, true, None)
    );

    // Export, both formats: every readable record, then a last line that
    // says what is missing.
    let ndjson = export(&server, "ndjson").await;
    let lines: Vec<&str> = ndjson.lines().collect();
    assert_eq!(lines.len(), 21, "{ndjson}");
    let last: Value = serde_json::from_str(lines[20]).unwrap();
    assert_eq!(last["incomplete"]["damaged_blocks"], 1, "{last}");
    assert_eq!(
        ExportFormat::Ndjson.parse_incomplete_line(lines[20].as_bytes()),
        Some(expected.clone())
    );
    assert!(lines[..20].iter().all(|line| ExportFormat::Ndjson
        .parse_incomplete_line(line.as_bytes())
        .is_none()));
    let text = export(&server, "text").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 21, "{text}");
    assert!(
        lines[20].starts_with("# tailwater: incomplete: 1 damaged block"),
        "{}",
        lines[20]
    );
    assert_eq!(
        ExportFormat::Text.parse_incomplete_line(lines[20].as_bytes()),
        Some(expected)
    );

    // Each read that met the block is counted (history, histogram, count,
    // two exports).
    assert_eq!(damaged_block_reads(&server).await, 5.0);

    // Status lists the part, and counts only what can be read.
    let status = client.status().await.unwrap();
    let store = status.store.unwrap();
    assert_eq!(store.records, 20);
    assert_eq!(store.damaged_parts.len(), 1, "{:?}", store.damaged_parts);
    let part = &store.damaged_parts[0];
    let relative = damaged.strip_prefix(dir.path().join("store")).unwrap();
    assert_eq!(part.path, relative.display().to_string());
    assert_eq!(
        (
            part.app.as_deref(),
            part.quarantined,
            &part.blocks,
            part.records
        ),
        (Some("sdxl"), false, &vec![0], Some(30))
    );
    assert!(part.reason.contains("checksum"), "{}", part.reason);
    server.shutdown().await.unwrap();
}
