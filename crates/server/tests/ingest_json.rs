//! `POST /v1/ingest/json` over real HTTP: the bodies Fluent Bit's and
//! Vector's `http` outputs send (neither installable here, so replayed as
//! their sources and documentation write them: Fluent Bit's `format json`
//! is an array with `date` as float epoch seconds, `json_lines` the same
//! objects one a line; Vector's `http` sink with `codec json` is NDJSON
//! with `newline_delimited` framing); what is stored, field by field,
//! through the read API; refusals with nothing stored.

mod common;

use std::io::Write;

use common::{call, ingest_token, stored, TOKEN};
use serde_json::{json, Value};
use tailwater_server::RunningServer;

async fn post(
    server: &RunningServer,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/ingest/json", server.url()))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[tokio::test]
async fn fluent_bit_and_vector_bodies_are_stored_field_by_field() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "worker").await;
    // Fluent Bit, `format json` (tail input, kubernetes filter).
    let fluent_bit = json!([
        {"date": 1796637600.25, "log": "model loaded", "stream": "stdout",
         "kubernetes": {"pod_name": "pod-3", "namespace_name": "gpu"}},
        {"date": 1796637601.5, "log": "{\"level\":\"error\",\"msg\":\"cuda oom\",\"request_id\":\"req-1\"}",
         "stream": "stderr", "kubernetes": {"pod_name": "pod-3", "namespace_name": "gpu"}}
    ]);
    let (status, answer) = post(
        &server,
        Some(&token),
        &[JSON],
        fluent_bit.to_string().into(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["accepted"], &answer["refused"]),
        (&json!(2), &json!(0))
    );
    let records = stored(&server, "worker").await;
    let [loaded, oom] = &records[..] else {
        panic!("{records:#?}")
    };
    let day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for record in [loaded, oom] {
        assert_eq!(record["runner"], "pod-3");
        assert_eq!(record["boot"], format!("json-{day}"));
        assert_eq!(
            record["fields"],
            json!({"kubernetes": {"namespace_name": "gpu"}})
        );
    }
    assert_eq!(
        (
            &loaded["ts"],
            &loaded["message"],
            &loaded["stream"],
            &loaded["level"]
        ),
        (
            &json!("2026-12-07T10:00:00.25Z"),
            &json!("model loaded"),
            &json!("stdout"),
            &json!("info")
        )
    );
    // The worker's line in `log` is read as the agent reads it.
    assert_eq!(
        (
            &oom["message"],
            &oom["level"],
            &oom["request_id"],
            &oom["stream"]
        ),
        (
            &json!("cuda oom"),
            &json!("error"),
            &json!("req-1"),
            &json!("stderr")
        )
    );
    assert_eq!(oom["ts"], "2026-12-07T10:00:01.5Z");

    // Vector's http sink: NDJSON, gzipped, a level and a request id.
    let vector = [
        json!({"message": "GET /predict 200", "timestamp": "2026-12-07T10:00:02.000001Z", "host": "gpu-9", "source_type": "file", "file": "/var/log/w.log", "level": "WARN", "requestId": "req-2"}),
        json!({"message": "done", "timestamp": "2026-12-07T10:00:03Z", "host": "gpu-9", "source_type": "file", "file": "/var/log/w.log"}),
    ]
    .iter()
    .map(|line| format!("{line}\n"))
    .collect::<String>();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(vector.as_bytes()).unwrap();
    let headers = [
        ("content-type", "application/x-ndjson"),
        ("content-encoding", "gzip"),
    ];
    let (status, answer) = post(&server, Some(&token), &headers, gzip.finish().unwrap()).await;
    assert_eq!((status, &answer["accepted"]), (200, &json!(2)), "{answer}");
    let records = stored(&server, "worker").await;
    let predict = &records[2];
    assert_eq!(
        (
            &predict["runner"],
            &predict["level"],
            &predict["request_id"],
            &predict["message"]
        ),
        (
            &json!("gpu-9"),
            &json!("warn"),
            &json!("req-2"),
            &json!("GET /predict 200")
        )
    );
    assert_eq!(predict["ts"], "2026-12-07T10:00:02.000001Z");
    assert_eq!(
        predict["fields"],
        json!({"source_type": "file", "file": "/var/log/w.log"})
    );
    assert_eq!(records[3]["level"], "info");
}

#[tokio::test]
async fn bad_bodies_are_refused_and_store_nothing() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "api").await;
    // (what, token, content type, body, status, the message says)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        (&'a str, &'a str),
        &'a str,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("no token", None, JSON, r#"[{"msg":"m"}]"#, 401, "token"),
        (
            "not json",
            Some(&token),
            JSON,
            r#"[{"msg":"m"}"#,
            400,
            "invalid json array",
        ),
        (
            "a string among objects",
            Some(&token),
            JSON,
            "{\"msg\":\"m\"}\n\"x\"\n",
            400,
            "document 2 is a string",
        ),
        (
            "text",
            Some(&token),
            ("content-type", "text/plain"),
            r#"[{"msg":"m"}]"#,
            415,
            "application/x-ndjson",
        ),
        (
            "another app",
            Some(&token),
            JSON,
            r#"[{"msg":"m","app":"web"}]"#,
            403,
            "web",
        ),
        (
            "no app",
            Some(TOKEN),
            JSON,
            r#"[{"msg":"m"}]"#,
            400,
            "names no app",
        ),
    ];
    for (name, token, header, body, want, says) in cases {
        let (status, answer) = post(&server, token, &[header], body.into()).await;
        assert_eq!(status, want, "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(says), "{name}: {message}");
    }
    let (_, page) = call(&server, "GET", "/v1/logs?limit=10", TOKEN, None).await;
    assert_eq!(page["records"], json!([]), "nothing stored");

    // One document of another app among the token's own: refused alone.
    let mixed = r#"[{"msg":"mine"},{"msg":"theirs","app":"web"}]"#;
    let (status, answer) = post(&server, Some(&token), &[JSON], mixed.into()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["accepted"], &answer["refused"]),
        (&json!(1), &json!(1))
    );
    assert!(
        answer["refused_reason"].as_str().unwrap().contains("web"),
        "{answer}"
    );
    assert_eq!(stored(&server, "api").await.len(), 1);
}
