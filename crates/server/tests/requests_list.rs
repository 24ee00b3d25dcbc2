//! `GET /v1/requests` over real HTTP on loopback: every request once,
//! newest start first, across pages (part of them in parts written before
//! a restart, part in the memtable), with new requests arriving between
//! pages; each filter against a model of what was sent; a request with
//! several starts listed once; what each request says (state, status,
//! error, duration, lines); and bad input refused with a clear message.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use tailwater_server::RunningServer;

mod common;

use common::{call, server_in, TOKEN};

/// How one modelled request ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    Ok,
    Failed,
    ServerError,
    Open,
}

/// One modelled request: `i` dates it (`i` seconds after the base time).
#[derive(Clone, Debug)]
struct Sent {
    id: String,
    app: &'static str,
    runner: &'static str,
    at: Timestamp,
    end: End,
    lines: u64,
}

fn sent(i: u64, base: Timestamp) -> Sent {
    let end = match i % 6 {
        0 => End::Failed,
        1 => End::ServerError,
        2 => End::Open,
        _ => End::Ok,
    };
    Sent {
        id: format!("req-{i:03}"),
        app: if i.is_multiple_of(4) { "b" } else { "a" },
        runner: if i.is_multiple_of(3) { "r2" } else { "r1" },
        at: base + SignedDuration::from_secs(i as i64),
        end,
        lines: i % 3,
    }
}

/// The batch of one request: its start, its lines and its end, from its
/// runner of its app, as the agent writes them.
fn batch(request: &Sent, seq: &mut u64) -> Value {
    let mut records = Vec::new();
    let mut push = |stream: &str, level: &str, message: String, fields: Value, ms: i64| {
        *seq += 1;
        let ts = request.at + SignedDuration::from_millis(ms);
        records.push(
            json!({"seq": *seq, "ts": ts.to_string(), "stream": stream, "level": level,
            "request_id": request.id, "message": message, "fields": fields}),
        );
    };
    push(
        "system",
        "info",
        format!("request {} started", request.id),
        json!({"event": "request_start", "via": "control", "in_flight": 1}),
        0,
    );
    for line in 0..request.lines {
        push("stdout", "info", format!("working {line}"), json!({}), 10);
    }
    let end = match request.end {
        End::Ok => Some(
            json!({"event": "request_end", "outcome": "completed", "status": 200, "duration_ms": 250}),
        ),
        End::ServerError => Some(
            json!({"event": "request_end", "outcome": "completed", "status": 503, "duration_ms": 250}),
        ),
        End::Failed => Some(
            json!({"event": "request_end", "outcome": "error", "error": "model exploded", "duration_ms": 250}),
        ),
        End::Open => None,
    };
    if let Some(end) = end {
        push(
            "system",
            "warn",
            format!("request {} ended", request.id),
            end,
            250,
        );
    }
    json!({"app": request.app, "version": "v1", "runner": request.runner, "boot": "boot-1",
           "source": "run", "records": records})
}

async fn send(server: &RunningServer, requests: &[Sent], seq: &mut u64) {
    for request in requests {
        let (status, answer) = call(
            server,
            "POST",
            "/v1/ingest",
            TOKEN,
            Some(batch(request, seq)),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
}

/// Every page of `GET /v1/requests?{query}` with `limit`, as `token`: the
/// requests' ids in order, and the pages' sizes.
async fn all_pages(server: &RunningServer, token: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/requests?limit={limit}&{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = call(server, "GET", &path, token, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        let requests = page["requests"].as_array().unwrap();
        assert!(requests.len() <= limit, "{page}");
        listed.extend(requests.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return listed,
        }
    }
    panic!("paging never ended");
}

fn ids(listed: &[Value]) -> Vec<String> {
    listed
        .iter()
        .map(|request| request["request_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ids of `sent` that `keep`s, newest start first.
fn expected(sent: &[Sent], keep: impl Fn(&Sent) -> bool) -> Vec<String> {
    let mut kept: Vec<&Sent> = sent.iter().filter(|request| keep(request)).collect();
    kept.sort_by_key(|request| std::cmp::Reverse(request.at));
    kept.iter().map(|request| request.id.clone()).collect()
}

#[tokio::test]
async fn pages_list_every_request_once_newest_first_and_each_filter_holds() {
    let dir = tempfile::tempdir().unwrap();
    // Whole milliseconds: what every store keeps.
    let base = Timestamp::from_millisecond(Timestamp::now().as_millisecond() - 3_600_000).unwrap();
    let requests: Vec<Sent> = (0..60).map(|i| sent(i, base)).collect();
    let mut seq = 0;

    // The first half goes into parts (a restart writes the memtable out),
    // the second stays in the memtable.
    let (server, _) = server_in(dir.path(), TOKEN, |_| {}).await;
    send(&server, &requests[..30], &mut seq).await;
    server.shutdown().await.unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |_| {}).await;
    send(&server, &requests[30..], &mut seq).await;
    // A second, caller-less start of req-004 (an agent retrying its mark):
    // still one request.
    let mut again = batch(&requests[4], &mut seq);
    again["records"] = json!([again["records"][0].clone()]);
    again["records"][0]["seq"] = json!(10_000);
    let (status, _) = call(&server, "POST", "/v1/ingest", TOKEN, Some(again)).await;
    assert_eq!(status, 200);

    let everything = expected(&requests, |_| true);
    for limit in [1, 7, 60, 500] {
        let listed = all_pages(&server, TOKEN, "", limit).await;
        assert_eq!(ids(&listed), everything, "limit {limit}");
    }

    // Each request as it stands.
    let listed = all_pages(&server, TOKEN, "app=a&runner=r1", 50).await;
    for request in &listed {
        let id = request["request_id"].as_str().unwrap();
        let model = requests.iter().find(|sent| sent.id == id).unwrap();
        assert_eq!(request["app"], "a");
        assert_eq!(request["runner"], "r1");
        assert_eq!(
            request["records"],
            json!(model.lines + 1 + u64::from(model.end != End::Open)),
            "{request}"
        );
        assert_eq!(
            request["started"]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap(),
            model.at
        );
        let (state, status, error) = match model.end {
            End::Ok => ("completed", json!(200), Value::Null),
            End::ServerError => ("completed", json!(503), json!("the worker answered 503")),
            End::Failed => ("error", Value::Null, json!("model exploded")),
            End::Open => ("in_flight", Value::Null, Value::Null),
        };
        assert_eq!(
            (&request["state"], &request["status"], &request["error"]),
            (&json!(state), &status, &error),
            "{request}"
        );
        if model.end != End::Open {
            assert_eq!(request["duration_ms"], 250, "{request}");
        }
    }

    // Filters, alone and together, against the model.
    type Keeps = Box<dyn Fn(&Sent) -> bool>;
    let checks: Vec<(&str, Keeps)> = vec![
        ("app=b", Box::new(|r| r.app == "b")),
        ("runner=r2", Box::new(|r| r.runner == "r2")),
        (
            "app=a&runner=r1",
            Box::new(|r| r.app == "a" && r.runner == "r1"),
        ),
        ("state=ok", Box::new(|r| r.end == End::Ok)),
        (
            "state=error",
            Box::new(|r| matches!(r.end, End::Failed | End::ServerError)),
        ),
        ("state=in_flight", Box::new(|r| r.end == End::Open)),
        (
            "state=error&app=b",
            Box::new(|r| r.app == "b" && matches!(r.end, End::Failed | End::ServerError)),
        ),
        ("app=nothing", Box::new(|_| false)),
    ];
    for (query, keep) in &checks {
        let listed = all_pages(&server, TOKEN, query, 4).await;
        assert_eq!(ids(&listed), expected(&requests, keep), "{query}");
    }
    let since = base + SignedDuration::from_secs(10);
    let until = base + SignedDuration::from_secs(20);
    let window = format!("since={since}&until={until}");
    let listed = all_pages(&server, TOKEN, &window, 3).await;
    assert_eq!(
        ids(&listed),
        expected(&requests, |r| r.at >= since && r.at < until),
        "since is in, until is out"
    );
    let backwards = format!("since={until}&until={since}");
    assert!(all_pages(&server, TOKEN, &backwards, 3).await.is_empty());

    // Requests that start while a client pages are newer than its cursor:
    // the pages it has yet to read neither repeat nor skip one.
    let (_, first) = call(&server, "GET", "/v1/requests?limit=10", TOKEN, None).await;
    let mut seen = ids(first["requests"].as_array().unwrap());
    let later: Vec<Sent> = (60..70).map(|i| sent(i, base)).collect();
    send(&server, &later, &mut seq).await;
    let mut cursor = first["next_cursor"].as_str().map(str::to_owned);
    while let Some(at) = cursor {
        let (status, page) = call(
            &server,
            "GET",
            &format!("/v1/requests?limit=10&cursor={at}"),
            TOKEN,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(page["requests"].as_array().unwrap()));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, everything, "the read begun before they came");
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |_| {}).await;
    let (status, created) = call(
        &server,
        "POST",
        "/v1/tenants",
        TOKEN,
        Some(json!({"name": "other"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let mut seq = 0;
    let base = Timestamp::now() - SignedDuration::from_secs(60);
    send(&server, &[sent(3, base), sent(4, base)], &mut seq).await;
    let (_, page) = call(&server, "GET", "/v1/requests?limit=1", TOKEN, None).await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();

    let cases = [
        ("level=error", "unknown parameter 'level'"),
        ("app=a&app=b", "given twice"),
        ("state=done", "use ok, error or in_flight"),
        ("limit=0", "from 1 to 500"),
        ("limit=501", "from 1 to 500"),
        ("limit=many", "from 1 to 500"),
        ("since=yesterday", "invalid time"),
        ("cursor=nope", "invalid cursor"),
        // Another tenant's cursor opens nothing here.
        (
            &format!("tenant=other&cursor={cursor}") as &str,
            "invalid cursor",
        ),
    ];
    for (query, says) in cases {
        let (status, answer) = call(
            &server,
            "GET",
            &format!("/v1/requests?{query}"),
            TOKEN,
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{query}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
        assert!(
            message.starts_with(char::is_lowercase),
            "{query}: {message}"
        );
    }
    // The same cursor, in its own tenant, continues.
    let (status, page) = call(
        &server,
        "GET",
        &format!("/v1/requests?cursor={cursor}"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(page["requests"].as_array().unwrap()), ["req-003"]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_page_reads_a_bounded_number_of_starts_and_says_where_to_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |config| config.requests_scan_max = 5).await;
    let base = Timestamp::from_millisecond(Timestamp::now().as_millisecond() - 600_000).unwrap();
    let requests: Vec<Sent> = (0..24).map(|i| sent(i, base)).collect();
    let mut seq = 0;
    send(&server, &requests, &mut seq).await;

    // Four of the 24 are in flight (i % 6 == 2): at most 5 starts a page,
    // so some pages are short, or empty, and still go on.
    let (status, first) = call(
        &server,
        "GET",
        "/v1/requests?state=in_flight&limit=4",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["requests"].as_array().unwrap().len() < 4, "{first}");
    assert!(first["next_cursor"].is_string(), "{first}");
    let listed = all_pages(&server, TOKEN, "state=in_flight", 4).await;
    assert_eq!(ids(&listed), expected(&requests, |r| r.end == End::Open));
    assert!(common::metric(&server, "tailwater_requests_list_scan_cut_total").await >= 4.0);
    server.shutdown().await.unwrap();
}
