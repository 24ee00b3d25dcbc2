//! What the tail and export tests share: a server on a free loopback port
//! with its own data directory, and batches of numbered records.

use jiff::Timestamp;
use tailwater_client::Client;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::Stream;
use tailwater_server::{start, RunningServer, ServerConfig};

pub const TOKEN: &str = "tw_server_test";

/// A server whose live tail clients may fall `tail_buffer` records behind,
/// and a client with its admin token.
pub async fn server(tail_buffer: u64) -> (tempfile::TempDir, RunningServer, Client) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    config.tail_buffer = tail_buffer;
    let server = start(config).await.unwrap();
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    (dir, server, client)
}

/// Records `seqs` of `runner` (app `app`), stamped now: message
/// `"{runner} {seq}"`, field `step` = seq, request `req-{seq}` on every
/// tenth.
pub fn batch(app: &str, runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    IngestBatch {
        app: app.into(),
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
                request_id: (seq % 10 == 0).then(|| format!("req-{seq}")),
                message: format!("{runner} {seq}"),
                fields: serde_json::json!({ "step": seq })
                    .as_object()
                    .unwrap()
                    .clone(),
                invalid_utf8: false,
            })
            .collect(),
    }
}
