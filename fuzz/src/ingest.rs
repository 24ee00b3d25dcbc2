//! The ingest body targets: what `POST /v1/ingest` does to a body's bytes
//! (JSON, and the binary batch), up to the store.

use std::sync::OnceLock;

use tailwater_model::wire::{decode_binary_batch, encode_binary_batch, IngestBatch};
use tailwater_model::Query;
use tailwater_server::access::registry::validate_app_name;
use tailwater_server::limits::IngestLimits;
use tailwater_server::redact::Redactor;
use tailwater_store::{Store, StoreOptions};

/// Small limits, so the fuzzer's short inputs reach the cuts.
const MAX_LINE_BYTES: usize = 64;

/// The JSON batch decoded (fields kept as text, checked as a map would
/// be), encoded again unchanged, checked, redacted and cut as the server
/// does, then stored and read back: every accepted record is returned.
pub fn ingest_body(data: &[u8]) {
    let Ok(batch) = serde_json::from_slice::<IngestBatch>(data) else {
        return;
    };
    let text = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let again: IngestBatch = serde_json::from_slice(&text).expect("an encoded batch decodes");
    assert_eq!(again, batch, "a batch survives being sent on");
    let binary = decode_binary_batch(&encode_binary_batch(&batch));
    assert_eq!(binary.as_ref(), Ok(&batch), "a batch survives binary");
    checked_and_stored(batch);
}

/// A binary batch (`application/x-tailwater-batch`) decoded as the server
/// does; what decodes is what its JSON decodes to, and survives being
/// encoded again either way, then goes where a JSON body's batch goes.
pub fn ingest_binary(data: &[u8]) {
    let Ok(batch) = decode_binary_batch(data) else {
        return;
    };
    let again = decode_binary_batch(&encode_binary_batch(&batch));
    assert_eq!(again.as_ref(), Ok(&batch), "a batch survives being sent on");
    let text = serde_json::to_vec(&batch).expect("a decoded batch encodes");
    let json: IngestBatch =
        serde_json::from_slice(&text).expect("a binary batch's JSON is a batch");
    assert_eq!(json, batch, "a binary batch reads as its JSON does");
    checked_and_stored(batch);
}

/// Checked, redacted and cut as the server does, then stored and read
/// back: every accepted record is returned.
fn checked_and_stored(batch: IngestBatch) {
    let limits = IngestLimits {
        max_line_bytes: MAX_LINE_BYTES,
        max_fields: 4,
        max_label_bytes: 64,
        ..IngestLimits::default()
    };
    let named = [&batch.app, &batch.runner, &batch.boot]
        .iter()
        .all(|name| !name.trim().is_empty());
    let valid =
        named && validate_app_name(&batch.app).is_ok() && limits.check_batch(&batch).is_ok();
    static REDACTOR: OnceLock<Redactor> = OnceLock::new();
    let redactor = REDACTOR.get_or_init(|| Redactor::new(true, &[]).expect("default patterns"));
    let mut batch = batch;
    let mut replaced = Vec::new();
    for record in &mut batch.records {
        redactor.redact(&mut record.message, &mut record.fields, &mut replaced);
        limits.cut_record(record, MAX_LINE_BYTES);
        assert!(
            record.message.len() <= MAX_LINE_BYTES,
            "a cut line is within the limit"
        );
        let fields = record.fields.to_map();
        assert_eq!(
            tailwater_model::FieldsJson::from_map(&fields).to_map(),
            fields
        );
    }
    if !valid {
        return;
    }
    let dir = crate::scratch();
    let store = Store::open(dir.path(), StoreOptions::default()).expect("a fresh store opens");
    let response = store
        .append("fuzz", batch)
        .expect("a checked batch is stored");
    let query = Query {
        limit: 100_000,
        ..Query::default()
    };
    let page = store.query("fuzz", &query).expect("a store answers");
    assert_eq!(
        page.records.len(),
        response.accepted,
        "every accepted record reads back"
    );
}
