//! A full disk, for real: the data directory on a size-capped tmpfs filled
//! to the last byte. Ingest answers 507 with `Retry-After` in the JSON error
//! shape (the client reads it as "try again then"), nothing is lost, and
//! once space is freed the same batch is stored exactly once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tailwater_client::{Client, ClientError};
use tailwater_model::wire::LogsParams;
use tailwater_server::{start, ServerConfig};

mod common;

use common::TOKEN;

/// A tmpfs of `size` mounted on a new directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs ({}): run the tests as root (as CI does)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: if the test failed, the server may still hold files there.
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes `path` until the filesystem has no byte left.
fn fill(path: &Path) -> PathBuf {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(error) => panic!("filling {}: {error}", path.display()),
        }
    }
    // The last partial page too.
    while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
    path.to_owned()
}

#[tokio::test]
async fn a_full_disk_answers_507_with_retry_after_and_loses_nothing() {
    let disk = Tmpfs::mount("16m");
    let mut config = ServerConfig::new(disk.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    let server = start(config).await.unwrap();
    let client = Client::new(&server.url(), TOKEN).unwrap();
    client
        .ingest(&common::batch("full", "r1", 0..10))
        .await
        .unwrap();

    let filler = fill(&disk.path().join("filler"));
    let batch = common::batch("full", "r1", 10..2010);
    match client.ingest(&batch).await {
        Err(ClientError::Unavailable {
            status,
            retry_after,
            code,
            message,
        }) => {
            assert_eq!(status, 507, "{message}");
            assert_eq!(code, "disk_full");
            assert_eq!(retry_after, Some(Duration::from_secs(10)));
            assert!(
                message.starts_with("the server's disk is full: send"),
                "{message}"
            );
        }
        other => panic!("expected a 507 asking to retry, got {other:?}"),
    }
    // The answer itself, as any client sees it.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/ingest", server.url()))
        .bearer_auth(TOKEN)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 507);
    assert_eq!(response.headers()["retry-after"], "10");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "disk_full", "{body}");
    let (_, metrics) = common::call(&server, "GET", "/metrics", TOKEN, None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("tailwater_ingest_refused_batches_total{tenant=\"default\",app=\"full\",reason=\"disk_full\"}"),
        "the refusal is counted"
    );

    // Space again: the same batch is stored, once.
    std::fs::remove_file(filler).unwrap();
    let stored = client.ingest(&batch).await.unwrap();
    assert_eq!(stored.accepted + stored.duplicates, 2000, "{stored:?}");
    let params = LogsParams {
        app: Some("full".into()),
        limit: Some("5000".into()),
        ..LogsParams::default()
    };
    let page = client.logs(&params).await.unwrap();
    let mut seqs: Vec<String> = page.records.iter().map(|r| r.message.clone()).collect();
    let total = seqs.len();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), total, "no record twice");
    assert_eq!(total, 2010, "every record once");
    server.shutdown().await.unwrap();
}
