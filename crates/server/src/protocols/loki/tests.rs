use serde_json::json;

use super::*;

fn now() -> Timestamp {
    "2026-12-07T10:00:00Z".parse().unwrap()
}

#[test]
fn labels_parse_with_escapes_and_refuse_what_is_not_labels() {
    assert_eq!(
        parse_labels(r#"{app="api", env="prod",msg="say \"hi\"\n"}"#).unwrap(),
        [
            ("app".into(), "api".into()),
            ("env".into(), "prod".into()),
            ("msg".into(), "say \"hi\"\n".into())
        ]
    );
    assert_eq!(parse_labels("{}").unwrap(), []);
    for bad in [
        "app=\"x\"",
        "{app}",
        "{app=x}",
        "{app=\"x}",
        "{=\"x\"}",
        "{app=\"x\\",
    ] {
        let error = parse_labels(bad).unwrap_err();
        assert!(error.starts_with("invalid Loki labels"), "{bad}: {error}");
    }
}

#[test]
fn protobuf_streams_map_labels_lines_and_times() {
    let body = encode(&[(
        r#"{app="sdxl", runner="pod-1", stream="stderr", env="prod"}"#,
        &[
            (
                1_796_637_600_123_456_789,
                r#"{"level":"error","msg":"cuda oom","request_id":"req-1","gpu":0}"#,
            ),
            (1_796_637_600_200_000_000, "plain line"),
        ],
    )]);
    let streams = decode(&body, Encoding::SnappyProtobuf, 1 << 20).unwrap();
    let sources = sources(streams, now());
    let [source] = &sources[..] else {
        panic!("{sources:?}")
    };
    assert_eq!(
        (source.app.as_deref(), source.runner.as_deref()),
        (Some("sdxl"), Some("pod-1"))
    );
    let [oom, plain] = &source.records[..] else {
        panic!()
    };
    assert_eq!(oom.ts.as_nanosecond(), 1_796_637_600_123_456_789);
    assert_eq!((oom.level, oom.stream), (Level::Error, Stream::Stderr));
    assert_eq!(
        (oom.message.as_str(), oom.request_id.as_deref()),
        ("cuda oom", Some("req-1"))
    );
    assert_eq!(
        serde_json::Value::Object(oom.fields.to_map()),
        json!({"env": "prod", "gpu": 0})
    );
    assert_eq!(
        (plain.level, plain.message.as_str()),
        (Level::Info, "plain line")
    );
}

#[test]
fn json_pushes_with_metadata_and_label_levels() {
    let body = json!({"streams": [{
        "stream": {"service_name": "api", "detected_level": "warn", "host": "box-1"},
        "values": [["1796637600000000001", "slow request", {"trace_id": "abc"}],
                   ["1796637600000000002", "[ERROR] failed"]]
    }]});
    let streams = decode(body.to_string().as_bytes(), Encoding::Json, 1 << 20).unwrap();
    let sources = sources(streams, now());
    let source = &sources[0];
    assert_eq!(
        (source.app.as_deref(), source.runner.as_deref()),
        (Some("api"), Some("box-1"))
    );
    let [slow, failed] = &source.records[..] else {
        panic!()
    };
    // The label's level when the line names none; the line's when it does.
    assert_eq!((slow.level, failed.level), (Level::Warn, Level::Error));
    assert_eq!(slow.fields.to_map()["trace_id"], "abc");
    assert_eq!(failed.message, "failed");
}

#[test]
fn bad_bodies_get_clear_errors() {
    let error = decode(b"not snappy", Encoding::SnappyProtobuf, 1 << 20).unwrap_err();
    assert!(error.starts_with("invalid snappy body"), "{error}");
    let big = encode(&[("{app=\"a\"}", &[(1, &"x".repeat(10_000)[..])])]);
    let error = decode(&big, Encoding::SnappyProtobuf, 1000).unwrap_err();
    assert!(error.contains("--max-batch-bytes"), "{error}");
    let error = decode(
        br#"{"streams":[{"values":[["soon","x"]]}]}"#,
        Encoding::Json,
        1 << 20,
    )
    .unwrap_err();
    assert!(error.contains("nanoseconds since the epoch"), "{error}");
    let error = decode(b"{}", Encoding::Json, 1 << 20).unwrap_err();
    assert!(error.starts_with("invalid Loki JSON body"), "{error}");
    assert_eq!(Encoding::of_content_type("text/plain"), None);
}

#[test]
fn protobuf_entries_carry_structured_metadata_as_fields() {
    let request = wire::PushRequest {
        streams: vec![wire::StreamAdapter {
            labels: r#"{app="api"}"#.into(),
            entries: vec![wire::EntryAdapter {
                timestamp: Some(wire::Timestamp {
                    seconds: 1_796_637_600,
                    nanos: 7,
                }),
                line: "slow request".into(),
                structured_metadata: vec![
                    wire::LabelPair {
                        name: "trace_id".into(),
                        value: "abc".into(),
                    },
                    wire::LabelPair {
                        name: "user".into(),
                        value: "u-1".into(),
                    },
                ],
            }],
        }],
    };
    let raw = prost::Message::encode_to_vec(&request);
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let streams = decode(&body, Encoding::SnappyProtobuf, 1 << 20).unwrap();
    let sources = sources(streams, now());
    let [record] = &sources[0].records[..] else {
        panic!("{sources:?}")
    };
    assert_eq!(record.ts.as_nanosecond(), 1_796_637_600_000_000_007);
    assert_eq!(record.message, "slow request");
    assert_eq!(
        serde_json::Value::Object(record.fields.to_map()),
        json!({"trace_id": "abc", "user": "u-1"})
    );
}
