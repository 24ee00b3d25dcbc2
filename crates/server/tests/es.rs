//! The Elasticsearch API over real HTTP: `_bulk` (NDJSON, gzip, the token
//! as bearer, basic password or ApiKey), answered item by item as
//! Elasticsearch answers; what is stored, field by field, through the read
//! API; `GET /` for browsers and for clients; the probes; and every
//! refusal in Elasticsearch's error shape, with nothing stored.
//!
//! Fluent Bit's and Vector's `es` outputs are not installable here: their
//! bodies are replayed as their sources write them (Fluent Bit's
//! `es_bulk.c`/`es.c`: a `create` action and `@timestamp`; Vector's
//! `elasticsearch` sink: an `index` action, `message`, `timestamp`,
//! `host`). rsyslog's and the official Python client's are real: see
//! `crates/tailwater/tests/e2e/rsyslog.rs` and `sdk/python/tests`.

mod common;

use std::io::Write;

use base64::Engine;
use common::{call, ingest_token, stored, TOKEN};
use serde_json::{json, Value};
use tailwater_server::RunningServer;

/// `method path` with `Authorization: auth` and `headers`: the status, the
/// headers and the body as text.
async fn send(
    server: &RunningServer,
    method: &str,
    path: &str,
    auth: Option<String>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.url()))
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");

/// `POST path` of an NDJSON body: the status and the answer, which is
/// always Elasticsearch's (its product header says so).
async fn bulk(
    server: &RunningServer,
    path: &str,
    auth: Option<String>,
    body: &str,
) -> (u16, Value) {
    let (status, headers, text) = send(server, "POST", path, auth, &[NDJSON], body.into()).await;
    assert_eq!(headers["x-elastic-product"], "Elasticsearch", "{text}");
    (status, serde_json::from_str(&text).unwrap())
}

fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

#[tokio::test]
async fn bulk_documents_are_stored_field_by_field_and_answered_item_by_item() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "api").await;
    let body = ndjson(&[
        // Fluent Bit's es output.
        json!({"create": {"_index": "fluent-bit"}}),
        json!({"@timestamp": "2026-12-07T10:00:00.123Z", "log": "{\"level\":\"error\",\"msg\":\"cuda oom\"}", "stream": "stderr", "kubernetes": {"pod_name": "pod-7", "namespace_name": "gpu"}}),
        // Vector's elasticsearch sink.
        json!({"index": {"_index": "vector-2026.12.07", "_id": "v-1"}}),
        json!({"message": "GET /predict 200", "timestamp": "2026-12-07T10:00:01Z", "host": "gpu-1", "source_type": "file", "request_id": "req-9", "level": "warn"}),
        json!({"delete": {"_index": "logs", "_id": "v-1"}}),
        json!({"update": {"_index": "logs", "_id": "v-1"}}),
        json!({"doc": {"message": "changed"}}),
    ]) + "{\"index\":{\"_index\":\"logs\"}}\n{\"message\": broken}\n";
    let (status, answer) = bulk(&server, "/_bulk", bearer(&token), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"], true);
    assert!(answer["took"].is_u64());
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{answer}");
    let created = &items[0]["create"];
    assert_eq!(
        (
            &created["_index"],
            &created["status"],
            &created["result"],
            &created["_version"]
        ),
        (
            &json!("fluent-bit"),
            &json!(201),
            &json!("created"),
            &json!(1)
        )
    );
    assert_eq!(created["_id"].as_str().unwrap().len(), 20, "{created}");
    assert_eq!(items[1]["index"]["_id"], "v-1");
    assert_eq!(items[1]["index"]["status"], 201);
    for (item, action) in [(&items[2], "delete"), (&items[3], "update")] {
        let error = &item[action];
        assert_eq!(error["status"], 400, "{item}");
        assert_eq!(error["error"]["type"], "illegal_argument_exception");
        assert!(
            error["error"]["reason"]
                .as_str()
                .unwrap()
                .contains("send index or create"),
            "{item}"
        );
    }
    assert_eq!(
        items[4]["index"]["error"]["type"],
        "mapper_parsing_exception"
    );

    let records = stored(&server, "api").await;
    let [fluent, vector] = &records[..] else {
        panic!("{records:#?}")
    };
    let day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    assert_eq!(fluent["boot"], format!("es-{day}"));
    assert_eq!(
        (&fluent["runner"], &fluent["stream"], &fluent["ts"]),
        (
            &json!("pod-7"),
            &json!("stderr"),
            &json!("2026-12-07T10:00:00.123Z")
        )
    );
    // The worker's line inside `log` is read as the agent reads it.
    assert_eq!(
        (&fluent["message"], &fluent["level"]),
        (&json!("cuda oom"), &json!("error"))
    );
    assert_eq!(
        fluent["fields"],
        json!({"kubernetes": {"namespace_name": "gpu"}})
    );
    assert_eq!(
        (
            &vector["runner"],
            &vector["level"],
            &vector["request_id"],
            &vector["message"]
        ),
        (
            &json!("gpu-1"),
            &json!("warn"),
            &json!("req-9"),
            &json!("GET /predict 200")
        )
    );
    assert_eq!(vector["ts"], "2026-12-07T10:00:01Z");
    assert_eq!(vector["fields"], json!({"source_type": "file"}));

    // Each document refused is counted, by reason.
    let metrics = common::metrics_text(&server).await;
    for (reason, count) in [("invalid_document", 1), ("unsupported_action", 2)] {
        let line = format!(
            r#"tailwater_ingest_refused_lines_total{{tenant="default",app="",reason="{reason}"}} {count}"#
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }

    // Sent again with its `_id`: stored once, answered as created.
    let again = ndjson(&[
        json!({"index": {"_index": "vector-2026.12.07", "_id": "v-1"}}),
        json!({"message": "GET /predict 200", "host": "gpu-1"}),
    ]);
    let (status, answer) = bulk(&server, "/vector-2026.12.07/_bulk", bearer(&token), &again).await;
    assert_eq!(
        (status, &answer["errors"]),
        (200, &json!(false)),
        "{answer}"
    );
    assert_eq!(stored(&server, "api").await.len(), 2);
}

#[tokio::test]
async fn a_browser_gets_the_console_and_a_client_the_cluster() {
    let (_dir, server, _admin) = common::server(10_000).await;
    // A browser, and curl's `*/*`: the console.
    for accept in [
        "text/html,application/xhtml+xml,application/json;q=0.9,*/*;q=0.8",
        "*/*",
    ] {
        let html = [("accept", accept)];
        let (status, headers, page) = send(&server, "GET", "/", None, &html, vec![]).await;
        assert_eq!(status, 200);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(page.contains("<html"), "{page}");
        assert!(!headers.contains_key("x-elastic-product"));
    }
    // Elasticsearch's clients ask for JSON.
    for (path, accept) in [
        ("/", Some("application/json")),
        (
            "/",
            Some("application/vnd.elasticsearch+json; compatible-with=8"),
        ),
        ("/es", Some("text/html")),
        ("/es/", None),
    ] {
        let headers: Vec<_> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (status, answer, text) = send(&server, "GET", path, None, &headers, vec![]).await;
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(answer["x-elastic-product"], "Elasticsearch");
        let info: Value = serde_json::from_str(&text).unwrap();
        assert!(
            info["version"]["number"]
                .as_str()
                .unwrap()
                .starts_with("8."),
            "{info}"
        );
        assert_eq!(info["tagline"], "You Know, for Search");
    }
    let json = [("accept", "application/json")];
    let (status, headers, _) = send(&server, "HEAD", "/", None, &json, vec![]).await;
    assert_eq!(
        (status, &headers["x-elastic-product"]),
        (200, &"Elasticsearch".parse().unwrap())
    );

    // The probes shippers send first, at the root and under /es.
    for prefix in ["", "/es"] {
        let (status, headers, text) = send(
            &server,
            "GET",
            &format!("{prefix}/_cat/health"),
            None,
            &[],
            vec![],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-elastic-product"], "Elasticsearch");
        assert!(text.contains(" tailwater green "), "{text}");
        let (status, _, text) = send(
            &server,
            "GET",
            &format!("{prefix}/_cluster/health"),
            None,
            &[],
            vec![],
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["status"],
            "green"
        );
    }
    let (_, _, text) = send(
        &server,
        "GET",
        "/_cat/health?format=json",
        None,
        &[],
        vec![],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()[0]["status"],
        "green"
    );

    // A bulk under /es, and any other path there in Elasticsearch's shape.
    let body = ndjson(&[
        json!({"index": {"_index": "logs"}}),
        json!({"message": "via /es", "app": "api"}),
    ]);
    let (status, answer) = bulk(&server, "/es/_bulk", bearer(TOKEN), &body).await;
    assert_eq!(
        (status, &answer["errors"]),
        (200, &json!(false)),
        "{answer}"
    );
    assert_eq!(stored(&server, "api").await[0]["message"], "via /es");
    let (status, answer) = bulk(&server, "/es/_search", bearer(TOKEN), "").await;
    assert_eq!(status, 404);
    assert_eq!(answer["error"]["type"], "resource_not_found_exception");
    assert!(
        answer["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("_bulk"),
        "{answer}"
    );
}

#[tokio::test]
async fn every_kind_of_token_an_es_client_sends() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = ingest_token(&server, "api").await;
    let encode = |text: String| base64::engine::general_purpose::STANDARD.encode(text);
    let body = ndjson(&[
        json!({"create": {"_index": "logs"}}),
        json!({"message": "m"}),
    ]);
    for auth in [
        format!("Bearer {token}"),
        format!("Basic {}", encode(format!("elastic:{token}"))),
        format!("ApiKey {}", encode(format!("tailwater:{token}"))),
        format!("ApiKey {token}"),
    ] {
        let (status, answer) = bulk(&server, "/_bulk", Some(auth.clone()), &body).await;
        assert_eq!(
            (status, &answer["errors"]),
            (200, &json!(false)),
            "{auth}: {answer}"
        );
    }
    assert_eq!(stored(&server, "api").await.len(), 4);
}

#[tokio::test]
async fn bad_requests_get_elasticsearchs_errors_and_store_nothing() {
    let (_dir, server, _admin) = common::server_with(|config| config.max_batch_bytes = 4096).await;
    let token = ingest_token(&server, "api").await;
    let good = ndjson(&[
        json!({"index": {"_index": "logs"}}),
        json!({"message": "m"}),
    ]);
    // (what, Authorization, content type, body, status, type, the reason says)
    type Case<'a> = (
        &'a str,
        Option<String>,
        &'a str,
        String,
        u16,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "no token",
            None,
            "application/x-ndjson",
            good.clone(),
            401,
            "security_exception",
            "token",
        ),
        (
            "a bad token",
            bearer("tw_nope"),
            "application/x-ndjson",
            good.clone(),
            401,
            "security_exception",
            "invalid token",
        ),
        (
            "text",
            bearer(&token),
            "text/plain",
            good.clone(),
            406,
            "media_type_header_exception",
            "application/x-ndjson",
        ),
        (
            "not an action",
            bearer(&token),
            "application/json",
            "{\"upsert\":{}}\n{}\n".into(),
            400,
            "illegal_argument_exception",
            "line [1]",
        ),
        (
            "no document",
            bearer(&token),
            "application/json",
            good.lines().next().unwrap().into(),
            400,
            "illegal_argument_exception",
            "no document after it",
        ),
        (
            "no index",
            bearer(&token),
            "application/json",
            "{\"index\":{}}\n{}\n".into(),
            400,
            "action_request_validation_exception",
            "index is missing",
        ),
        (
            "too large",
            bearer(&token),
            "application/json",
            good.repeat(200),
            413,
            "illegal_argument_exception",
            "--max-batch-bytes",
        ),
    ];
    for (name, auth, content_type, body, want, kind, says) in cases {
        let headers = [("content-type", content_type)];
        let (status, headers, text) =
            send(&server, "POST", "/_bulk", auth, &headers, body.into()).await;
        assert_eq!(status, want, "{name}: {text}");
        assert_eq!(headers["x-elastic-product"], "Elasticsearch", "{name}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["status"], want, "{name}: {error}");
        assert_eq!(error["error"]["type"], kind, "{name}: {error}");
        assert_eq!(
            error["error"]["root_cause"][0]["type"], kind,
            "{name}: {error}"
        );
        let reason = error["error"]["reason"].as_str().unwrap();
        assert!(reason.contains(says), "{name}: {reason}");
    }
    let (_, page) = call(&server, "GET", "/v1/logs?limit=10", TOKEN, None).await;
    assert_eq!(page["records"], json!([]), "nothing stored");

    // gzip is read; a document of another app is refused alone, its item
    // saying so, the token's own stored.
    let mixed = ndjson(&[
        json!({"index": {"_index": "logs"}}),
        json!({"message": "mine"}),
        json!({"index": {"_index": "logs"}}),
        json!({"message": "theirs", "app": "web"}),
    ]);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(mixed.as_bytes()).unwrap();
    let headers = [NDJSON, ("content-encoding", "gzip")];
    let (status, _, text) = send(
        &server,
        "POST",
        "/_bulk",
        bearer(&token),
        &headers,
        gzip.finish().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["errors"], true);
    assert_eq!(answer["items"][0]["index"]["status"], 201);
    let refused = &answer["items"][1]["index"];
    assert_eq!(
        (&refused["status"], &refused["error"]["type"]),
        (&json!(403), &json!("security_exception")),
        "{answer}"
    );
    assert!(
        refused["error"]["reason"].as_str().unwrap().contains("web"),
        "{refused}"
    );
    let records = stored(&server, "api").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["message"], "mine");
    assert!(stored(&server, "web").await.is_empty());
}

#[tokio::test]
async fn over_a_rate_limit_the_bulk_is_429_with_retry_after() {
    let (_dir, server, _admin) = common::server_with(|config| {
        config.limits.app_rate.lines_per_sec = Some(2);
    })
    .await;
    let lines: Vec<Value> = (0..5)
        .flat_map(|n| {
            [
                json!({"index": {"_index": "logs"}}),
                json!({"message": n, "app": "api"}),
            ]
        })
        .collect();
    let many = ndjson(&lines);
    // A second's worth goes at once; the next request finds the rate spent.
    let (status, answer) = bulk(&server, "/_bulk", bearer(TOKEN), &many).await;
    assert_eq!(
        (status, &answer["errors"]),
        (200, &json!(false)),
        "{answer}"
    );
    let stored_first = stored(&server, "api").await.len();
    let (status, headers, text) = send(
        &server,
        "POST",
        "/_bulk",
        bearer(TOKEN),
        &[NDJSON],
        many.into(),
    )
    .await;
    assert_eq!(status, 429, "{text}");
    let seconds: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(seconds >= 1);
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "es_rejected_execution_exception");
    assert_eq!(error["status"], 429);
    assert_eq!(
        stored(&server, "api").await.len(),
        stored_first,
        "nothing more stored"
    );
    let refused = common::metric(&server, "tailwater_ingest_refused_lines_total").await;
    assert_eq!(refused, 5.0);
}

#[tokio::test]
async fn one_runner_over_its_rate_gets_429_items_while_the_others_are_stored() {
    let (_dir, server, _admin) = common::server_with(|config| {
        config.limits.runner_rate.lines_per_sec = Some(2);
    })
    .await;
    let mut lines = vec![
        json!({"index": {"_index": "logs"}}),
        json!({"message": "calm", "app": "api", "host": "calm-1"}),
    ];
    for n in 0..5 {
        lines.push(json!({"index": {"_index": "logs"}}));
        lines.push(json!({"message": n, "app": "api", "host": "noisy-1"}));
    }
    // A second's worth goes at once (the noisy runner's rate is spent);
    // the next bulk finds it so.
    let (status, answer) = bulk(&server, "/_bulk", bearer(TOKEN), &ndjson(&lines[2..])).await;
    assert_eq!(
        (status, &answer["errors"]),
        (200, &json!(false)),
        "{answer}"
    );
    let (status, answer) = bulk(&server, "/_bulk", bearer(TOKEN), &ndjson(&lines)).await;
    assert_eq!((status, &answer["errors"]), (200, &json!(true)), "{answer}");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items[0]["index"]["status"], 201);
    for item in &items[1..] {
        let item = &item["index"];
        assert_eq!(item["status"], 429, "{item}");
        assert_eq!(item["error"]["type"], "es_rejected_execution_exception");
    }
    let records = stored(&server, "api").await;
    let calm: Vec<_> = records.iter().filter(|r| r["runner"] == "calm-1").collect();
    assert_eq!(calm.len(), 1);
    assert_eq!(records.len(), 6, "the first bulk's 5 and the calm one");
}
