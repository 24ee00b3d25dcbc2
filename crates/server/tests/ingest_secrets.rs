//! Secrets and oversized keys outside a record's message and field values:
//! field keys are limited and redacted, request ids holding a secret are
//! kept out of the request index, and labels holding one are refused.

mod common;

use common::{batch, call, server, TOKEN};
use serde_json::json;
use tailwater_model::wire::LogsParams;
use tailwater_model::FieldsJson;

const SECRET: &str = "sk-abcdefghijklmnopqrstuvwxyz0123456789";

#[tokio::test]
async fn field_keys_request_ids_and_labels_never_store_a_secret() {
    let (_dir, server, client) = server(1000).await;

    // A runner named with a secret: refused, nothing stored, counted.
    let named = batch("app", SECRET, 0..1);
    let (status, answer) = call(&server, "POST", "/v1/ingest", TOKEN, Some(json!(named))).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "secret_in_label");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("--runner") && !message.contains(SECRET),
        "{message}"
    );

    let mut records = batch("app", "r1", 1..4);
    let long_key = "k".repeat(tailwater_server::limits::DEFAULT_MAX_FIELD_KEY_BYTES + 1);
    records.records[0].fields =
        FieldsJson::from_map(json!({ SECRET: "v", "ok": 1 }).as_object().unwrap());
    records.records[1].fields = FieldsJson::from_map(
        json!({ long_key.clone(): "v", "ok": 2 })
            .as_object()
            .unwrap(),
    );
    records.records[2].request_id = Some(format!("req-{SECRET}"));
    client.ingest(&records).await.unwrap();

    let params = LogsParams {
        runner: Some("r1".into()),
        direction: Some("forward".into()),
        ..LogsParams::default()
    };
    let stored = client.logs(&params).await.unwrap().records;
    let text = serde_json::to_string(&stored).unwrap();
    assert!(!text.contains(SECRET), "{text}");
    assert!(!text.contains(&long_key), "{text}");
    let by_seq = |seq: u64| stored.iter().find(|r| r.seq == seq).unwrap();
    assert_eq!(by_seq(1).fields["[REDACTED:sk_api_key]"], "v");
    assert_eq!(by_seq(2).fields["ok"], 2);
    assert_eq!(
        by_seq(2).fields["limited"]["field_keys_too_long"],
        json!(["k".repeat(64)])
    );
    assert_eq!(by_seq(3).request_id, None);
    assert_eq!(
        by_seq(3).fields["request_id_redacted"],
        "req-[REDACTED:sk_api_key]"
    );

    let (_, metrics) = call(&server, "GET", "/metrics", TOKEN, None).await;
    let metrics = metrics.as_str().unwrap();
    for line in [
        r#"tailwater_ingest_refused_batches_total{tenant="default",app="",reason="secret_in_label"} 1"#,
        r#"tailwater_ingest_cut_lines_total{tenant="default",app="app",reason="field_key_too_long"} 1"#,
        r#"tailwater_redactions_total{tenant="default",app="app",pattern="sk_api_key"} 2"#,
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    server.shutdown().await.unwrap();
}
