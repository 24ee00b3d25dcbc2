//! The cluster message target: what a node does to a message of the
//! cluster's stream (another node's batch, or anything a NATS user with
//! publish rights put there) before its store.

use tailwater_server::cluster::message::{self, FORMAT};

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
