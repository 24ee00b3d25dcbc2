//! `GET /v1/logs?around=ID`: the records next to one record, over real HTTP.
//! The page holds the record between up to `limit` matching records before
//! it and as many after, oldest first; the other filters apply; it is a
//! history read only, takes only ids its tenant was given, and shows a
//! caller nothing of requests that are not its own.

mod common;

use common::{batch, call, TOKEN};
use serde_json::{json, Value};
use tailwater_model::wire::LogsParams;
use tailwater_server::RunningServer;

/// The messages of a JSON page of records.
fn messages(page: &Value) -> Vec<&str> {
    page["records"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of records: {page}"))
        .iter()
        .map(|record| record["message"].as_str().unwrap())
        .collect()
}

/// The id of the record whose message is `message`, as the admin reads it.
async fn id_of(server: &RunningServer, message: &str) -> String {
    let (status, page) = call(
        server,
        "GET",
        "/v1/logs?limit=1000&direction=forward",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let records = page["records"].as_array().unwrap();
    let record = records
        .iter()
        .find(|record| record["message"] == message)
        .unwrap_or_else(|| panic!("{message} is stored: {page}"));
    record["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn around_shows_the_records_before_and_after_one_oldest_first_under_the_filters() {
    let (_dir, server, admin) = common::server(10_000).await;
    // Two runners, interleaved in batches of five.
    for start in (0..30).step_by(5) {
        for runner in ["r1", "r2"] {
            admin
                .ingest(&batch("sdxl", runner, start..start + 5))
                .await
                .unwrap();
        }
    }
    let id = id_of(&server, "r1 15").await;
    let around = |query: String| {
        let server = &server;
        async move {
            let (status, page) =
                call(server, "GET", &format!("/v1/logs?{query}"), TOKEN, None).await;
            assert_eq!(status, 200, "{query}: {page}");
            assert!(page.get("next_cursor").is_none_or(Value::is_null), "{page}");
            page
        }
    };

    // Its runner's three records before it, itself, three after.
    let page = around(format!("around={id}&runner=r1&limit=3")).await;
    assert_eq!(
        messages(&page),
        ["r1 12", "r1 13", "r1 14", "r1 15", "r1 16", "r1 17", "r1 18"]
    );
    // The record keeps its id on the page.
    assert_eq!(page["records"][3]["id"], json!(id));

    // Without a label filter: every runner's records next to it, in time
    // order, the record in the middle.
    let page = around(format!("around={id}&limit=4")).await;
    let shown = messages(&page);
    assert_eq!(shown.len(), 9, "{shown:?}");
    assert_eq!(shown[4], "r1 15", "{shown:?}");

    // A filter the record does not match: the neighbours that match, and
    // not the record.
    let page = around(format!("around={id}&contains=r2&limit=2")).await;
    let shown = messages(&page);
    assert_eq!(shown.len(), 4, "{shown:?}");
    assert!(
        shown.iter().all(|message| message.starts_with("r2 ")),
        "{shown:?}"
    );

    // The first record has nothing before it; the page is simply shorter.
    let first = id_of(&server, "r1 0").await;
    let page = around(format!("around={first}&runner=r1&limit=2")).await;
    assert_eq!(messages(&page), ["r1 0", "r1 1", "r1 2"]);
}

#[tokio::test]
async fn around_takes_only_this_tenants_ids_and_only_on_history() {
    let (dir, server, admin) = common::server(10_000).await;
    admin.ingest(&batch("sdxl", "r1", 0..5)).await.unwrap();
    let id = id_of(&server, "r1 2").await;
    let other_tenant = common::seal(dir.path(), "globex").id(3);
    let unknown = common::seal(dir.path(), "default").id(1_000_000);

    let bad = [
        ("/v1/logs?around=garbage".to_owned(), "invalid around"),
        ("/v1/logs?around=0".to_owned(), "invalid around"),
        (format!("/v1/logs?around={other_tenant}"), "invalid around"),
        (format!("/v1/logs?around={id}&cursor=x"), "leave cursor out"),
        (
            format!("/v1/logs?around={id}&direction=forward"),
            "leave direction out",
        ),
        (format!("/v1/logs?around={id}&limit=0"), "invalid limit"),
        (
            format!("/v1/logs/tail?around={id}"),
            "around reads history only",
        ),
        (
            format!("/v1/export?around={id}"),
            "around reads history only",
        ),
        (
            format!("/v1/histogram?around={id}"),
            "around reads history only",
        ),
    ];
    for (path, says) in bad {
        let (status, answer) = call(&server, "GET", &path, TOKEN, None).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
        assert!(message.starts_with(char::is_lowercase), "{path}: {message}");
    }
    // A well-formed id of no record this tenant has.
    let (status, answer) = call(
        &server,
        "GET",
        &format!("/v1/logs?around={unknown}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    // The client sends it as a parameter like any other.
    let page = admin
        .logs(&LogsParams {
            around: Some(id),
            limit: Some("1".into()),
            ..LogsParams::default()
        })
        .await
        .unwrap();
    let shown: Vec<&str> = page.records.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(shown, ["r1 1", "r1 2", "r1 3"]);
}

#[tokio::test]
async fn a_caller_sees_around_its_own_request_only() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let token = |scope: &'static str, app: Option<&'static str>| {
        let server = &server;
        async move {
            let mut body = json!({"scope": scope, "tenant": "default"});
            if let Some(app) = app {
                body["app"] = json!(app);
            }
            let (status, created) = call(server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
            assert_eq!(status, 201, "{created}");
            (
                created["token"].as_str().unwrap().to_owned(),
                created["id"].as_str().unwrap().to_owned(),
            )
        }
    };
    let (a, a_id) = token("caller", None).await;
    let (_b, b_id) = token("caller", None).await;
    let (gateway, _) = token("ingest", Some("pub")).await;
    // Requests of callers A and B, interleaved on one runner.
    let now = jiff::Timestamp::now().to_string();
    let mut records = Vec::new();
    for (request, caller) in [("req-a", &a_id), ("req-b", &b_id)] {
        records.push(
            json!({"seq": records.len(), "ts": now, "stream": "system", "level": "info",
            "request_id": request, "message": "request started",
            "fields": {"event": "request_start", "caller": caller}}),
        );
    }
    for n in 0..6 {
        let request = if n % 2 == 0 { "req-a" } else { "req-b" };
        records.push(
            json!({"seq": records.len(), "ts": now, "stream": "stdout", "level": "info",
            "request_id": request, "message": format!("{request} line {n}")}),
        );
    }
    let body = json!({"app": "pub", "version": "v1", "runner": "gw-1", "boot": "b",
                      "source": "gateway", "records": records});
    let (status, answer) = call(&server, "POST", "/v1/ingest", &gateway, Some(body)).await;
    assert_eq!(status, 200, "{answer}");

    let own = id_of(&server, "req-a line 2").await;
    let theirs = id_of(&server, "req-b line 3").await;
    // Around its own line: its request's records only, never B's.
    let (status, page) = call(
        &server,
        "GET",
        &format!("/v1/logs?around={own}&request=req-a&limit=10"),
        &a,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let shown = messages(&page);
    assert!(
        shown.iter().all(|message| !message.starts_with("req-b")),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"req-a line 2") && shown.contains(&"req-a line 4"),
        "{shown:?}"
    );
    // Around B's line: as if there were no such record, whichever request
    // it names.
    for request in ["req-a", "req-b"] {
        let path = format!("/v1/logs?around={theirs}&request={request}");
        let (status, answer) = call(&server, "GET", &path, &a, None).await;
        assert_eq!(status, 404, "{path}: {answer}");
        assert!(!answer.to_string().contains("req-b line"), "{answer}");
    }
}
