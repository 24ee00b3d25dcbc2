use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use tailwater_model::Stream;

fn record(seq: u64, message: &str) -> IngestRecord {
    IngestRecord {
        seq,
        ts: jiff::Timestamp::now(),
        stream: Stream::Stdout,
        level: Level::Info,
        request_id: None,
        message: message.to_owned(),
        fields: FieldsJson::new(),
        invalid_utf8: false,
    }
}

fn fields(value: Value) -> FieldsJson {
    FieldsJson::from_map(value.as_object().unwrap())
}

fn batch(lines: usize) -> IngestBatch {
    IngestBatch {
        app: "app".into(),
        version: String::new(),
        runner: "r1".into(),
        boot: "b1".into(),
        source: Default::default(),
        records: (0..lines as u64)
            .map(|seq| record(seq, "0123456789"))
            .collect(),
    }
}

#[test]
fn long_lines_are_cut_on_a_character_boundary_and_marked() {
    let limits = IngestLimits::default();
    let mut long = record(7, &"é".repeat(10));
    long.fields = fields(json!({ "detail": "x".repeat(30) }));
    let cuts = limits.cut_record(&mut long, 9);
    assert_eq!(long.message, "é".repeat(4));
    let fields = long.fields.to_map();
    assert_eq!(fields["detail"], "x".repeat(9));
    assert_eq!(fields[MARK_FIELD]["message_bytes"], 20);
    assert_eq!(fields[MARK_FIELD]["fields_cut"], json!(["detail"]));
    assert_eq!(cuts.reasons().collect::<Vec<_>>(), vec![LINE_TOO_LONG]);
}

#[test]
fn fields_past_the_limit_and_bad_request_ids_are_marked() {
    let limits = IngestLimits {
        max_fields: 2,
        ..IngestLimits::default()
    };
    let mut many = record(1, "ok");
    many.fields = fields(json!({ "a": 1, "b": 1, "c": 1, "d": 1 }));
    many.request_id = Some("req\n1".into());
    let cuts = limits.cut_record(&mut many, 100);
    let fields = many.fields.to_map();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["a", "b", MARK_FIELD]);
    assert_eq!(fields[MARK_FIELD]["fields_dropped"], 2);
    assert_eq!(fields[MARK_FIELD]["request_id"], "req\n1");
    assert_eq!(many.request_id, None);
    assert!(cuts.too_many_fields && cuts.invalid_request_id && !cuts.line_too_long);
}

#[test]
fn fields_within_the_limits_keep_their_text_as_it_came() {
    let limits = IngestLimits {
        max_fields: 3,
        ..IngestLimits::default()
    };
    let as_sent = r#"{"z":"abc","a":[1,2],"m":{"k":"v"}}"#;
    let mut kept = record(1, "ok");
    kept.fields = serde_json::from_str(as_sent).unwrap();
    // Short: kept without a look. Longer than the line limit, but no
    // string in it is: parsed, nothing cut, the text kept.
    for max_line_bytes in [100, 4] {
        let cuts = limits.cut_record(&mut kept, max_line_bytes);
        assert_eq!(cuts, Cuts::default());
        assert_eq!(kept.fields.as_str(), as_sent);
    }
    // Three keys are not more than three, however they are counted.
    let mut wide = record(2, "ok");
    wide.fields =
        serde_json::from_str(&format!(r#"{{"a":"{}","b":1,"c":2}}"#, "x".repeat(40))).unwrap();
    let before = wide.fields.clone();
    assert_eq!(limits.cut_record(&mut wide, 100), Cuts::default());
    assert_eq!(wide.fields, before);
    // A cut request id marks fields that needed no parse.
    let mut marked = record(3, "ok");
    marked.fields = serde_json::from_str(as_sent).unwrap();
    marked.request_id = Some("x".repeat(300));
    let cuts = limits.cut_record(&mut marked, 100);
    assert!(cuts.invalid_request_id);
    let fields = marked.fields.to_map();
    assert_eq!(fields["z"], "abc");
    assert_eq!(fields[MARK_FIELD]["request_id"], "x".repeat(200));
}

#[test]
fn a_pace_lets_a_large_batch_in_then_holds_the_next_back() {
    let limiter = RateLimiter::default();
    let rate = Rate {
        lines_per_sec: Some(100),
        bytes_per_sec: None,
    };
    let now = Instant::now();
    limiter
        .admit("t", &batch(500), rate, Rate::default(), now)
        .unwrap();
    let refused = limiter
        .admit("t", &batch(1), rate, Rate::default(), now)
        .unwrap_err();
    assert_eq!(refused.reason, "rate_limit_app_lines");
    assert_eq!(refused.retry_after, Duration::from_secs(4));
    // Paid off: in again.
    limiter
        .admit(
            "t",
            &batch(1),
            rate,
            Rate::default(),
            now + Duration::from_secs(4),
        )
        .unwrap();
    let report = limiter.take_report("t", &batch(3)).unwrap();
    let fields = report.record.fields.to_map();
    assert_eq!(fields["refused_batches"], 1);
    assert_eq!(fields["refused_lines"], 1);
    assert_eq!(report.record.seq, server_seq(0, ReportKind::RateLimited));
    assert!(limiter.take_report("t", &batch(3)).is_none());
}

#[test]
fn runner_rates_apply_to_each_runner_alone() {
    let limiter = RateLimiter::default();
    let rate = Rate {
        lines_per_sec: None,
        bytes_per_sec: Some(10),
    };
    let now = Instant::now();
    let mut other = batch(1);
    other.runner = "r2".into();
    limiter
        .admit("t", &batch(5), Rate::default(), rate, now)
        .unwrap();
    let refused = limiter
        .admit("t", &batch(1), Rate::default(), rate, now)
        .unwrap_err();
    assert_eq!(refused.reason, "rate_limit_runner_bytes");
    limiter
        .admit("t", &other, Rate::default(), rate, now)
        .unwrap();
}

#[test]
fn a_rate_limit_report_names_each_limit_that_refused_and_what_it_refused() {
    let limiter = RateLimiter::default();
    let app_rate = Rate {
        lines_per_sec: Some(100),
        bytes_per_sec: None,
    };
    let runner_rate = Rate {
        lines_per_sec: None,
        bytes_per_sec: Some(10),
    };
    let now = Instant::now();
    // 500 lines put the app 5 s ahead (4 s to wait) and the runner 500 s.
    limiter
        .admit("t", &batch(500), app_rate, Rate::default(), now)
        .unwrap();
    for _ in 0..2 {
        let refused = limiter
            .admit("t", &batch(1), app_rate, Rate::default(), now)
            .unwrap_err();
        assert_eq!(refused.reason, "rate_limit_app_lines");
    }
    let later = now + Duration::from_secs(5);
    limiter
        .admit("t", &batch(2), Rate::default(), runner_rate, later)
        .unwrap();
    let refused = limiter
        .admit("t", &batch(1), Rate::default(), runner_rate, later)
        .unwrap_err();
    assert_eq!(refused.reason, "rate_limit_runner_bytes");

    let report = limiter.take_report("t", &batch(1)).unwrap();
    let fields = report.record.fields.to_map();
    assert_eq!(fields["refused_batches"], 3);
    assert_eq!(fields["reason"], "rate_limit_app_lines");
    assert_eq!(
        fields["reasons"],
        json!({"rate_limit_app_lines": 2, "rate_limit_runner_bytes": 1})
    );
    let message = &report.record.message;
    assert!(
        message.contains("2 batches (2 lines) by its limit of 100 lines/s for the app")
            && message.contains("1 batches (1 lines) by its limit of 10 bytes/s for each runner"),
        "{message}"
    );
}

#[test]
fn labels_and_reserved_sequence_numbers_are_refused() {
    let limits = IngestLimits::default();
    let mut bad = batch(1);
    bad.version = "v\u{7}".into();
    assert_eq!(limits.check_batch(&bad).unwrap_err().reason, INVALID_LABEL);
    let mut bad = batch(1);
    bad.runner = "r".repeat(201);
    assert_eq!(limits.check_batch(&bad).unwrap_err().reason, INVALID_LABEL);
    let mut bad = batch(1);
    bad.records[0].seq = SERVER_SEQ_BASE;
    let refusal = limits.check_batch(&bad).unwrap_err();
    assert_eq!(refusal.reason, INVALID_SEQ);
    assert!(refusal.message.contains("server's own records"));
    limits.check_batch(&batch(3)).unwrap();
}

#[test]
fn fields_with_keys_over_the_limit_are_left_out_and_marked() {
    let limits = IngestLimits::default();
    let long = "k".repeat(DEFAULT_MAX_FIELD_KEY_BYTES + 1);
    let mut record = record(1, "line");
    record.fields = fields(json!({ long.clone(): 1, "ok": 2 }));
    let cuts = limits.cut_record(&mut record, DEFAULT_MAX_LINE_BYTES);
    assert!(cuts.field_key_too_long);
    assert_eq!(cuts.reasons().collect::<Vec<_>>(), vec![FIELD_KEY_TOO_LONG]);
    let kept = record.fields.to_map();
    assert!(!kept.contains_key(&long));
    assert_eq!(kept["ok"], 2);
    assert_eq!(
        kept[MARK_FIELD]["field_keys_too_long"],
        json!(["k".repeat(64)])
    );

    // Keys at the limit, and long values, leave the fields as they came.
    let at = "k".repeat(DEFAULT_MAX_FIELD_KEY_BYTES);
    let mut record = super::tests::record(2, "line");
    record.fields = fields(json!({ at: "v".repeat(500) }));
    let text = record.fields.as_str().to_owned();
    assert_eq!(
        limits.cut_record(&mut record, DEFAULT_MAX_LINE_BYTES),
        Cuts::default()
    );
    assert_eq!(record.fields.as_str(), text);
}
