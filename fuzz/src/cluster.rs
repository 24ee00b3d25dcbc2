//! The cluster message target: what a node does to a message of the
//! cluster's stream (another node's batch, or anything a NATS user with
//! publish rights put there) before its store.

use tailwater_server::cluster::members::Heartbeat;
use tailwater_server::cluster::message::{self, FORMAT};
use tailwater_server::cluster::window::Gaps;

/// A message of the stream. The first byte: 0, the rest is the message
/// as it came; else the rest is the envelope's JSON, compressed and framed
/// here first, so the fuzzer reaches the decoder behind zstd. A message
/// that decodes encodes again to one that decodes to the same batch, cut
/// into small messages it is the same records in order, and its partition
/// is one of the partitions.
pub fn cluster_message(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let bytes = if mode == 0 {
        rest
    } else {
        let mut message = vec![FORMAT];
        message.extend(zstd::bulk::compress(rest, 1).expect("zstd compresses in memory"));
        framed = message;
        &framed[..]
    };
    let Ok(envelope) = message::decode(bytes) else {
        return;
    };
    let again = message::decode(&message::encode(&envelope)).expect("an encoded batch decodes");
    assert_eq!(again, envelope, "a batch survives the stream");
    let mut records = Vec::new();
    for part in message::encode_within(&envelope, 256) {
        let part = message::decode(&part).expect("a part decodes");
        assert_eq!(part.tenant, envelope.tenant);
        assert_eq!(part.batch.runner, envelope.batch.runner);
        records.extend(part.batch.records);
    }
    assert_eq!(records, envelope.batch.records, "cut without loss");
    let batch = &envelope.batch;
    let partitions = u32::from(mode).max(1);
    let partition = message::partition_of(&envelope.tenant, &batch.app, &batch.runner, partitions);
    assert!(partition < partitions);
}

/// A heartbeat from the nodes' key-value bucket (any NATS user with write
/// rights can put one there), with the gaps it carries; and the same
/// bytes as the node's own list of gaps on disk (`cluster-gaps.json`).
/// One that decodes encodes again to the same; a list of gaps that opens
/// lists what it holds.
pub fn cluster_heartbeat(data: &[u8]) {
    if let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(data) {
        let again: Heartbeat =
            serde_json::from_slice(&serde_json::to_vec(&heartbeat).expect("a heartbeat encodes"))
                .expect("an encoded heartbeat decodes");
        assert_eq!(again, heartbeat, "a heartbeat survives the bucket");
    }
    let dir = tempfile::tempdir().expect("a scratch directory");
    let path = dir.path().join("cluster-gaps.json");
    std::fs::write(&path, data).expect("the scratch directory takes a file");
    if let Ok(gaps) = Gaps::open(path) {
        let listed = gaps.list();
        let decoded: Vec<tailwater_model::wire::ClusterGap> =
            serde_json::from_slice(data).expect("a list that opened decodes");
        assert_eq!(listed, decoded);
    }
}
