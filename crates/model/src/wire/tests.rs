use std::collections::BTreeMap;

use jiff::Timestamp;

use super::*;
use crate::filter::{Cursor, Direction};
use crate::matcher::{Matcher, Pattern, Substring};
use crate::positions::SealKey;
use crate::record::{Level, LogRecord, Source, Stream};

fn key() -> SealKey {
    SealKey::new([3; SealKey::LEN])
}

/// What agents send today reads and writes back byte for byte, fields
/// included; fields sent with whitespace are kept compact.
#[test]
fn an_ingest_batch_round_trips_as_it_was_sent() {
    let sent = r#"{"app":"sdxl","version":"v1","runner":"r-1","boot":"b","source":"run","records":[{"seq":0,"ts":"2026-11-20T10:00:00Z","stream":"stdout","level":"info","request_id":null,"message":"hi","fields":{}},{"seq":1,"ts":"2026-11-20T10:00:01Z","stream":"system","level":"warn","request_id":"req-7","message":"x","fields":{"event":"exit","gpu":{"id":3,"util":0.97}},"invalid_utf8":true}]}"#;
    let batch: IngestBatch = serde_json::from_str(sent).unwrap();
    assert_eq!(serde_json::to_string(&batch).unwrap(), sent);
    assert_eq!(batch.records[1].fields.to_map()["gpu"]["id"], 3);

    let spaced = sent.replace(r#"{"id":3,"util":0.97}"#, "{ \"id\": 3,\n \"util\": 0.97 }");
    let batch: IngestBatch = serde_json::from_str(&spaced).unwrap();
    assert_eq!(serde_json::to_string(&batch).unwrap(), sent);

    let without_fields = r#"{"app":"a","runner":"r","boot":"b","records":[{"seq":0,"ts":"2026-11-20T10:00:00Z","stream":"stdout","message":"m"}]}"#;
    let batch: IngestBatch = serde_json::from_str(without_fields).unwrap();
    assert!(batch.records[0].fields.is_empty());
}

#[test]
fn params_become_a_query_with_defaults() {
    let now: Timestamp = "2026-11-20T12:00:00Z".parse().unwrap();
    let params = LogsParams {
        app: Some("sdxl".into()),
        level: Some("warning".into()),
        since: Some("1h".into()),
        runner: Some(String::new()),
        ..LogsParams::default()
    };
    let query = params.to_query(now, &key().tenant("t")).unwrap();
    assert_eq!(query.limit, DEFAULT_PAGE_LIMIT);
    assert_eq!(query.direction, Direction::Backward);
    assert_eq!(query.filter.app, Some(Matcher::Eq("sdxl".into())));
    assert_eq!(query.filter.runner, None);
    assert_eq!(query.filter.min_level, Some(Level::Warn));
    assert_eq!(
        query.filter.since,
        Some("2026-11-20T11:00:00Z".parse().unwrap())
    );
}

#[test]
fn bad_params_get_clear_errors() {
    let now = Timestamp::UNIX_EPOCH;
    let bad = |params: LogsParams| params.to_query(now, &key().tenant("t")).unwrap_err();
    assert!(bad(LogsParams {
        limit: Some("0".into()),
        ..Default::default()
    })
    .contains("from 1 to 10000"));
    assert!(bad(LogsParams {
        level: Some("loud".into()),
        ..Default::default()
    })
    .contains("unknown level"));
    assert!(bad(LogsParams {
        stream: Some("stdin".into()),
        ..Default::default()
    })
    .contains("unknown stream"));
    assert!(bad(LogsParams {
        cursor: Some("x".into()),
        ..Default::default()
    })
    .contains("invalid cursor"));
    assert!(LogsParams {
        after: Some("x".into()),
        ..Default::default()
    }
    .after_position(&key().tenant("t"))
    .unwrap_err()
    .contains("invalid after"));
}

#[test]
fn around_takes_a_sealed_id_and_no_other_paging() {
    let seal = key().tenant("t");
    let around = |pairs: &[(&str, &str)]| {
        LogsParams::from_pairs(pairs.iter().copied())
            .unwrap()
            .around_position(&seal)
    };
    let id = seal.id(42);
    assert_eq!(around(&[("around", &id)]), Ok(Some(42)));
    assert_eq!(around(&[("around", "")]), Ok(None));
    assert_eq!(around(&[]), Ok(None));
    for bad in ["0", "42", "x", &key().tenant("other").id(42)] {
        let error = around(&[("around", bad)]).unwrap_err();
        assert!(error.starts_with("invalid around"), "{error}");
    }
    for (name, value) in [("cursor", "c"), ("direction", "forward"), ("after", "0")] {
        let error = around(&[("around", &id), (name, value)]).unwrap_err();
        assert!(error.contains(&format!("leave {name} out")), "{error}");
    }
}

#[test]
fn label_forms_regexes_text_and_fields_become_a_filter() {
    let params = LogsParams::from_pairs([
        ("app_not", "whisper"),
        ("runner_re", "gpu-.*"),
        ("version_not_re", "v0.*"),
        ("boot", "b1"),
        ("contains", "Out Of"),
        ("case", "sensitive"),
        ("regex", "step [0-9]+"),
        ("field.status", "200"),
        ("field.gpu.id", "0"),
    ])
    .unwrap();
    let filter = params.to_filter(Timestamp::UNIX_EPOCH).unwrap();
    assert_eq!(filter.app, Some(Matcher::Ne("whisper".into())));
    assert_eq!(
        filter.runner,
        Some(Matcher::Re(Pattern::whole("gpu-.*").unwrap()))
    );
    assert_eq!(
        filter.version,
        Some(Matcher::NotRe(Pattern::whole("v0.*").unwrap()))
    );
    assert_eq!(filter.boot, Some(Matcher::Eq("b1".into())));
    assert_eq!(
        filter.contains,
        Some(Substring::new("Out Of", true).unwrap())
    );
    assert_eq!(filter.regex, Some(Pattern::search("step [0-9]+").unwrap()));
    assert_eq!(
        filter.fields,
        BTreeMap::from([
            ("gpu.id".to_owned(), "0".to_owned()),
            ("status".to_owned(), "200".to_owned())
        ])
    );
    // contains ignores ASCII case unless told otherwise.
    let default_case = LogsParams {
        contains: Some("oom".into()),
        ..LogsParams::default()
    };
    assert!(!default_case
        .to_filter(Timestamp::UNIX_EPOCH)
        .unwrap()
        .contains
        .unwrap()
        .case_sensitive());
}

#[test]
fn params_and_filters_round_trip_both_ways() {
    let key = key();
    let seal = key.tenant("t");
    let params = LogsParams {
        app: Some("sdxl".into()),
        version_not: Some("v1".into()),
        runner_re: Some("gpu-(a|b)".into()),
        boot_not_re: Some("old.*".into()),
        request: Some("req-1".into()),
        source: Some("gateway".into()),
        stream: Some("stderr".into()),
        level: Some("warn".into()),
        text: Some("out of memory".into()),
        contains: Some("CUDA".into()),
        case: Some("sensitive".into()),
        regex: Some("(?i)oom".into()),
        since: Some("2026-11-20T10:00:00Z".into()),
        until: Some("2026-11-20T11:00:00.5Z".into()),
        limit: Some("25".into()),
        direction: Some("forward".into()),
        cursor: Some(
            Cursor {
                ts_ns: 7,
                position: 9,
            }
            .encode(&seal),
        ),
        fields: BTreeMap::from([
            ("status".to_owned(), "200".to_owned()),
            ("empty".to_owned(), String::new()),
        ]),
        ..LogsParams::default()
    };
    let now = Timestamp::UNIX_EPOCH;
    let query = params.to_query(now, &seal).unwrap();
    assert_eq!(LogsParams::from_query(&query, &seal), params);
    assert_eq!(
        LogsParams::from_query(&query, &seal)
            .to_query(now, &seal)
            .unwrap(),
        query
    );
    // As pairs, and through serde as a query string's flat map.
    assert_eq!(LogsParams::from_pairs(params.to_pairs()).unwrap(), params);
    let encoded = serde_urlencoded::to_string(&params).unwrap();
    assert!(encoded.contains("runner_re=gpu-%28a%7Cb%29"), "{encoded}");
    assert!(encoded.contains("field.status=200"), "{encoded}");
    assert_eq!(
        serde_urlencoded::from_str::<LogsParams>(&encoded).unwrap(),
        params
    );
    assert_eq!(
        serde_urlencoded::to_string(LogsParams::default()).unwrap(),
        ""
    );
    // As the query string a client sends.
    let sent = params.to_query_string();
    assert!(sent.contains("runner_re=gpu-%28a%7Cb%29"), "{sent}");
    assert_eq!(
        serde_urlencoded::from_str::<LogsParams>(&sent).unwrap(),
        params
    );
    assert_eq!(LogsParams::default().to_query_string(), "");
}

#[test]
fn a_system_record_is_on_the_system_stream_with_its_fields() {
    let ts = Timestamp::UNIX_EPOCH;
    let fields = crate::fields_of(serde_json::json!({"event": "lost"}));
    let record = IngestRecord::system(7, ts, Level::Warn, "gone".into(), fields.clone());
    assert_eq!(
        (record.seq, record.ts, record.stream),
        (7, ts, Stream::System)
    );
    assert_eq!(
        (record.level, record.message.as_str()),
        (Level::Warn, "gone")
    );
    assert_eq!(record.request_id, None);
    assert_eq!(record.fields.to_map(), fields);
}

#[test]
fn an_error_body_has_the_api_shape() {
    assert_eq!(
        serde_json::to_value(ErrorBody::new("bad_gateway", "the worker is not listening")).unwrap(),
        serde_json::json!({"error": {"code": "bad_gateway", "message": "the worker is not listening"}})
    );
}

#[test]
fn percent_encoding_keeps_only_unreserved_bytes() {
    assert_eq!(percent_encode("abc-_.~XYZ09"), "abc-_.~XYZ09");
    assert_eq!(percent_encode("a+b/c=="), "a%2Bb%2Fc%3D%3D");
    assert_eq!(percent_encode("a b&c?d#é"), "a%20b%26c%3Fd%23%C3%A9");
    assert_eq!(percent_encode(""), "");
}

#[test]
fn bad_query_language_gets_clear_errors() {
    let now = Timestamp::UNIX_EPOCH;
    let error = |pairs: &[(&str, &str)]| {
        let pairs = pairs.iter().map(|&(name, value)| (name, value));
        match LogsParams::from_pairs(pairs) {
            Err(error) => error,
            Ok(params) => params.to_filter(now).unwrap_err(),
        }
    };
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Pairs, &[&str]); 9] = [
        (
            &[("runner_re", "gpu-(")],
            &["invalid runner_re 'gpu-(': unclosed group; fix the regex"],
        ),
        (&[("regex", "a{2,1}")], &["invalid regex 'a{2,1}': "]),
        (
            &[("regex", r"\w{1000}")],
            &["invalid regex '\\w{1000}': too large once compiled (past the 1 MiB limit)"],
        ),
        (
            &[("runner_regex", "x")],
            &["unknown parameter 'runner_regex'", "runner_re"],
        ),
        (&[("app", "a"), ("app", "b")], &["'app' is given twice"]),
        (
            &[("field.x", "1"), ("field.x", "2")],
            &["'field.x' is given twice"],
        ),
        (&[("field.", "1")], &["names no field", "field.KEY=VALUE"]),
        (
            &[("runner", "a"), ("runner_re", "b")],
            &["runner and runner_re are both given"],
        ),
        (&[("case", "sensitive")], &["case applies to contains"]),
    ];
    for (pairs, wanted) in cases {
        let error = error(pairs);
        for part in wanted {
            assert!(error.contains(part), "{pairs:?}: {error}");
        }
        assert!(!error.contains('\n'), "{error}");
    }
    assert!(error(&[("contains", "x"), ("case", "upper")]).contains("unknown case 'upper'"));
    // Through serde too, as the server reads it.
    let error = serde_urlencoded::from_str::<LogsParams>("app=a&aap=b").unwrap_err();
    assert!(
        error.to_string().contains("unknown parameter 'aap'"),
        "{error}"
    );
}

/// An answer that lacks records says so, and one from a server without
/// the field still reads (complete); a complete one carries nothing new.
#[test]
fn incompleteness_is_optional_on_the_wire_both_ways() {
    let old: LogsPage =
        serde_json::from_str(r#"{"records":[],"next_cursor":null,"as_of":"x"}"#).unwrap();
    assert_eq!(old.incomplete, None);
    assert!(!serde_json::to_string(&old).unwrap().contains("incomplete"));
    let page = LogsPage {
        incomplete: Some(Incomplete::damaged_blocks(2, 900)),
        ..LogsPage::default()
    };
    let json = serde_json::to_value(&page).unwrap();
    assert_eq!(json["incomplete"]["reason"], "damaged_blocks");
    assert_eq!(json["incomplete"]["damaged_blocks"], 2);
    assert_eq!(json["incomplete"]["records"], 900);
    assert_eq!(serde_json::from_value::<LogsPage>(json).unwrap(), page);
    let status: StoreStatus =
        serde_json::from_str(r#"{"records":1,"raw_bytes":2,"stored_bytes":3,"apps":[]}"#).unwrap();
    assert!(status.damaged_parts.is_empty());
}

#[test]
fn an_export_trailer_is_told_apart_from_records_in_both_formats() {
    let incomplete = Incomplete::damaged_blocks(1, 40);
    for format in [ExportFormat::Text, ExportFormat::Ndjson] {
        let line = format.incomplete_line(&incomplete);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let parsed = format.parse_incomplete_line(line.trim_end().as_bytes());
        assert_eq!(parsed.as_ref(), Some(&incomplete), "{line}");
    }
    let text = ExportFormat::Text.incomplete_line(&incomplete);
    assert!(
        text.starts_with("# tailwater: incomplete: 1 damaged block of stored logs"),
        "{text}"
    );
    let record = LogRecord {
        id: String::new(),
        position: 1,
        ts: Timestamp::UNIX_EPOCH,
        tenant: "t".into(),
        app: "a".into(),
        version: String::new(),
        runner: "r".into(),
        boot: "b".into(),
        seq: 0,
        source: Source::Run,
        stream: Stream::Stdout,
        level: Level::Info,
        request_id: None,
        message: r#"{"incomplete":{"reason":"x","message":"m","damaged_blocks":1,"records":1}}"#
            .into(),
        fields: Default::default(),
        invalid_utf8: false,
    };
    let ndjson = serde_json::to_string(&record).unwrap();
    assert_eq!(
        ExportFormat::Ndjson.parse_incomplete_line(ndjson.as_bytes()),
        None
    );
    let line = record.text_line().to_string();
    assert_eq!(
        ExportFormat::Text.parse_incomplete_line(line.as_bytes()),
        None
    );
}
