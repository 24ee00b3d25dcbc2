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

/// A value of the cluster's shared registry (the bucket
/// `TAILWATER_REGISTRY`), as any NATS user with rights to the bucket could
/// put it: the key, [`crate::SPLIT`], the value. One that decodes is under
/// its own key and encodes again to one that decodes the same; applied to
/// a replica it is taken (the registry's state stays one it can load), and
/// applied again writes nothing (a change is the new value of one thing).
pub fn registry_entry(data: &[u8]) {
    use tailwater_server::access::registry::replica::{Entry, ReplicatedChange};
    use tailwater_server::access::registry::Registry;

    let parts = crate::split(data);
    let [key, value] = parts.as_slice() else {
        return;
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let Ok(change) = ReplicatedChange::decode(key, value) else {
        return;
    };
    assert_eq!(change.key(), key, "a value is kept under its own key");
    let encoded = change.encode();
    let again = ReplicatedChange::decode(key, &encoded).expect("an encoded change decodes");
    assert_eq!(again.encode(), encoded, "a change survives the bucket");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let registry = Registry::open_replica(dir.path()).expect("a new registry opens");
    let entry = Entry {
        key: key.to_owned(),
        revision: 7,
        value: Some(value.to_vec()),
        pending: 0,
    };
    registry
        .apply_replicated(std::slice::from_ref(&entry))
        .expect("a change that decodes applies");
    assert_eq!(registry.applied_revision(), 7);
    let written = registry.bytes_written();
    registry
        .apply_replicated(&[Entry {
            revision: 8,
            ..entry
        }])
        .expect("applies again");
    assert_eq!(
        registry.bytes_written(),
        written,
        "the same value twice writes nothing"
    );
    drop(registry);
    Registry::open_replica(dir.path()).expect("what a replica applied loads again");
}

/// An intake subject (docs/agents-on-nats.md: the subject is an agent's
/// identity): as text, parsed into its tenant, app and runner, which make
/// that very subject again (one subject per identity, so a permission on
/// it holds); and its lines as three names, whose subject has five tokens
/// and parses back to them.
pub fn intake_subject(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some((tenant, app, runner)) = message::parse_intake_subject(&text) {
        assert_eq!(
            message::intake_subject(&tenant, &app, &runner),
            text,
            "one subject per identity"
        );
    }
    let mut names = text.splitn(3, '\n');
    let (tenant, app, runner) = (
        names.next().unwrap_or_default(),
        names.next().unwrap_or_default(),
        names.next().unwrap_or_default(),
    );
    let subject = message::intake_subject(tenant, app, runner);
    assert_eq!(subject.split('.').count(), 5, "{subject}");
    assert!(!subject.contains(['*', '>', ' ']), "{subject}");
    assert_eq!(
        message::parse_intake_subject(&subject),
        Some((tenant.to_owned(), app.to_owned(), runner.to_owned()))
    );
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

/// A page of a partition's records as a peer serves it to a node repairing
/// a gap (`cluster::repair`): a peer is another node, but its answer is
/// bytes off the network all the same. One that decodes encodes again to
/// the same page; stored through the repair path each record is stored
/// once (a second repair from the same page stores nothing).
pub fn cluster_repair_page(data: &[u8]) {
    use tailwater_server::cluster::repair::decode_page;
    use tailwater_store::{Store, StoreOptions};

    let Ok(page) = decode_page(data) else {
        return;
    };
    let encoded = serde_json::to_vec(&page).expect("a page encodes");
    let again = decode_page(&encoded).expect("an encoded page decodes");
    assert_eq!(again, page, "a page survives the wire");
    let dir = tempfile::tempdir().expect("a scratch directory");
    let options = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).expect("a new store opens");
    let mut stored = Vec::new();
    for repaired in &page.batches {
        match store.append_repaired(&repaired.tenant, repaired.batch.clone()) {
            Ok(response) => stored.push(Some(response.accepted)),
            // A name the store does not take: refused whole, as ingest would.
            Err(_) => stored.push(None),
        }
    }
    for (repaired, first) in page.batches.iter().zip(stored) {
        if first.is_none() {
            continue;
        }
        let response = store
            .append_repaired(&repaired.tenant, repaired.batch.clone())
            .expect("a batch stored once is taken again");
        assert_eq!(
            response.accepted, 0,
            "a record repaired twice is stored once"
        );
    }
}

/// A page of a stretch of the stream as a peer serves it to a node filling
/// that stretch in order (`cluster::stretch`). One that decodes encodes
/// again to the same page; one the repairing node's check takes (for the
/// stretch in the input's first bytes) has runs of rising ids inside the
/// stretch, and stored at those ids into a store each record is stored
/// once, at its id (a second copy stores nothing).
pub fn cluster_stream_page(data: &[u8]) {
    use tailwater_model::Filter;
    use tailwater_server::cluster::materialize::position;
    use tailwater_server::cluster::stretch::{check_page, decode_page};
    use tailwater_store::{Store, StoreOptions};

    let Some((head, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Ok(page) = decode_page(body) else {
        return;
    };
    let encoded = serde_json::to_vec(&page).expect("a page encodes");
    let again = decode_page(&encoded).expect("an encoded page decodes");
    assert_eq!(again, page, "a page survives the wire");
    let from = u64::from(head[0]).max(1);
    let to = from + u64::from(head[1]);
    let Ok(end) = check_page(&page, from, to, 0) else {
        return;
    };
    assert!(end < position(to + 1), "ends inside the stretch");
    let dir = tempfile::tempdir().expect("a scratch directory");
    let options = StoreOptions {
        background: false,
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options).expect("a new store opens");
    let keep = std::time::Duration::MAX;
    let mut stored = 0usize;
    for run in &page.runs {
        // A name the store does not take: refused whole, as ingest would.
        if let Ok(response) = store.append_at(&run.tenant, run.batch.clone(), run.first, keep) {
            stored += response.accepted;
        }
    }
    store.sync().expect("a scratch store syncs");
    for run in &page.runs {
        if let Ok(response) = store.append_at(&run.tenant, run.batch.clone(), run.first, keep) {
            assert_eq!(response.accepted, 0, "a record copied twice is stored once");
        }
    }
    let mut tenants: Vec<&str> = page.runs.iter().map(|run| run.tenant.as_str()).collect();
    tenants.sort();
    tenants.dedup();
    let mut found = 0usize;
    for tenant in tenants {
        for record in store.read_after(tenant, &Filter::default(), 0, usize::MAX) {
            assert!(record.position <= end, "stored past the page's ids");
            found += 1;
        }
    }
    assert_eq!(found, stored, "each record stored once, readable");
}
