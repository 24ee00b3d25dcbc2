//! The web UI's side of the server over real HTTP on loopback: the page and
//! its assets, embedded and locked down by a Content-Security-Policy, and
//! `GET /v1/histogram`, the counts its volume chart draws (and
//! `GET /v1/logs/count`, the total they add up to).

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tailwater_client::Client;
use tailwater_model::tenancy::{NewToken, Scope};
use tailwater_model::wire::{Histogram, IngestBatch, IngestRecord};
use tailwater_model::{Level, Stream};
use tailwater_server::{start, RunningServer, ServerConfig};

const TOKEN: &str = "tw_web_ui_test";

async fn server() -> (tempfile::TempDir, RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    // Callers read requests with no recorded caller here at once: a
    // request's start comes in its first batch, so no grace is needed.
    config.request_owner_grace = std::time::Duration::ZERO;
    let server = start(config).await.unwrap();
    (dir, server)
}

fn url(server: &RunningServer, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

async fn get(server: &RunningServer, path: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(url(server, path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary_with_a_strict_policy() {
    let (_dir, server) = server().await;
    let http = reqwest::Client::new();
    for path in ["/", "/runners", "/runners/gpu-1", "/requests/req-42"] {
        // No token: the page itself is public; the API calls it makes are not.
        let response = http.get(url(&server, path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/html; charset=utf-8");
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let html = response.text().await.unwrap();
        assert!(html.contains(r#"<script type="module" src="/ui/app.js"></script>"#));
        assert_eq!(html.matches("<script").count(), 1, "no inline script");
    }

    // Every module the UI imports is served, and nothing points elsewhere.
    let mut pending = vec!["app.js".to_owned(), "style.css".to_owned()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let response = http
            .get(url(&server, &format!("/ui/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/ui/{name} is not served");
        let body = response.text().await.unwrap();
        let outside = body
            .replace("http://www.w3.org/2000/svg", "")
            .contains("://");
        assert!(!outside, "{name} names another origin");
        for import in body.split("from \"./").skip(1) {
            pending.push(import.split('"').next().unwrap().to_owned());
        }
    }
    assert!(seen.len() >= 10, "{seen:?}");

    // Assets revalidate by entity tag.
    let response = http.get(url(&server, "/ui/app.js")).send().await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let etag = response.headers()["etag"].clone();
    let again = http
        .get(url(&server, "/ui/app.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let missing = http.get(url(&server, "/ui/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("open /"));
}

/// Records of one runner at `base + offset` seconds, with these levels.
fn batch(base: Timestamp, records: &[(i64, Level, Option<&str>)]) -> IngestBatch {
    IngestBatch {
        app: "sdxl".into(),
        version: "v1".into(),
        runner: "r1".into(),
        boot: "b1".into(),
        source: Default::default(),
        records: records
            .iter()
            .enumerate()
            .map(|(seq, (offset, level, request))| IngestRecord {
                seq: seq as u64,
                ts: base + SignedDuration::from_secs(*offset),
                stream: Stream::Stdout,
                level: *level,
                request_id: request.map(str::to_owned),
                message: format!("line {seq}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect(),
    }
}

/// Whole seconds, so times compare exactly whatever precision is kept.
fn ten_minutes_ago() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second() - 600).unwrap()
}

fn seeded(base: Timestamp) -> IngestBatch {
    use Level::*;
    batch(
        base,
        &[
            (30, Info, Some("req-1")),
            (31, Info, None),
            (32, Info, None),
            (90, Warn, Some("req-1")),
            (91, Warn, None),
            (92, Error, Some("req-1")),
            (150, Fatal, None),
        ],
    )
}

#[tokio::test]
async fn the_histogram_counts_matching_records_per_bucket_and_level() {
    let (_dir, server) = server().await;
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    let base = ten_minutes_ago();
    client.ingest(&seeded(base)).await.unwrap();
    let until = base + SignedDuration::from_secs(180);
    let window = format!("since={base}&until={until}");

    let (status, body) = get(&server, &format!("/v1/histogram?{window}&buckets=3"), TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let histogram: Histogram = serde_json::from_value(body).unwrap();
    assert_eq!(histogram.step_ns, 60_000_000_000);
    assert_eq!(histogram.total, 7);
    assert!(histogram.complete && histogram.counted_since.is_none());
    let counts: Vec<_> = histogram.buckets.iter().map(|b| b.counts).collect();
    assert_eq!((counts[0].info, counts[0].total()), (3, 3));
    assert_eq!(
        (counts[1].warn, counts[1].error, counts[1].total()),
        (2, 1, 3)
    );
    assert_eq!((counts[2].fatal, counts[2].total()), (1, 1));
    assert_eq!(
        histogram.buckets[1].start,
        base + SignedDuration::from_secs(60)
    );

    // The filters of /v1/logs narrow it.
    let (_, body) = get(
        &server,
        &format!("/v1/histogram?{window}&buckets=3&level=warn"),
        TOKEN,
    )
    .await;
    let histogram: Histogram = serde_json::from_value(body).unwrap();
    assert_eq!(histogram.total, 4);
    assert_eq!(histogram.buckets[0].counts.total(), 0);

    // A caller sees its request's records only, and nothing without one.
    let caller = client
        .create_token(&NewToken {
            scope: Scope::Caller,
            tenant: None,
            app: None,
            expires_in: None,
            name: None,
        })
        .await
        .unwrap()
        .token;
    let (status, body) = get(&server, &format!("/v1/histogram?{window}"), &caller).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(
        &server,
        &format!("/v1/histogram?{window}&request=req-1"),
        &caller,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
}

#[tokio::test]
async fn a_count_is_what_history_returns_and_what_the_histogram_totals() {
    let (_dir, server) = server().await;
    let client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    let base = ten_minutes_ago();
    client.ingest(&seeded(base)).await.unwrap();
    let until = base + SignedDuration::from_secs(180);
    let window = format!("since={base}&until={until}");
    for filters in [
        "",
        "&level=warn",
        "&request=req-1",
        "&text=line%202",
        "&level=fatal",
    ] {
        let (status, count) =
            get(&server, &format!("/v1/logs/count?{window}{filters}"), TOKEN).await;
        assert_eq!(status, 200, "{count}");
        assert_eq!(count["complete"], true, "{count}");
        let (_, page) = get(&server, &format!("/v1/logs?{window}{filters}"), TOKEN).await;
        let records = page["records"].as_array().unwrap().len() as u64;
        assert_eq!(count["total"], records, "{filters}: {count}");
        let (_, histogram) = get(&server, &format!("/v1/histogram?{window}{filters}"), TOKEN).await;
        assert_eq!(histogram["total"], records, "{filters}: {histogram}");
    }
    // Without a window, all of history.
    let (_, count) = get(&server, "/v1/logs/count", TOKEN).await;
    assert_eq!(count["total"], 7, "{count}");

    // A count answers at once: paging is refused, and says what it takes.
    let (status, body) = get(&server, "/v1/logs/count?limit=5", TOKEN).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("'limit'") && message.contains("since and until"),
        "{message}"
    );
    let (status, body) = get(&server, "/v1/logs/count?level=loud", TOKEN).await;
    assert_eq!(status, 400, "{body}");

    // A caller counts its request's records only, and nothing without one.
    let caller = client
        .create_token(&NewToken {
            scope: Scope::Caller,
            tenant: None,
            app: None,
            expires_in: None,
            name: None,
        })
        .await
        .unwrap()
        .token;
    let (status, body) = get(&server, &format!("/v1/logs/count?{window}"), &caller).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(
        &server,
        &format!("/v1/logs/count?{window}&request=req-1"),
        &caller,
    )
    .await;
    assert_eq!((status, body["total"].as_u64()), (200, Some(3)), "{body}");
}

#[tokio::test]
async fn bad_histogram_requests_get_a_json_400_that_says_what_to_do() {
    let (_dir, server) = server().await;
    for (query, says) in [
        ("buckets=0", "use a whole number from 1 to 1000"),
        ("buckets=ten", "use a whole number from 1 to 1000"),
        ("buckets=2&buckets=3", "given twice"),
        ("limit=10", "unknown parameter 'limit'"),
        ("cursor=abc", "unknown parameter 'cursor'"),
        ("since=1h&until=2h", "is not before until"),
        ("level=loud", "unknown level 'loud'"),
        ("regex=(", "invalid regex"),
    ] {
        let (status, body) = get(&server, &format!("/v1/histogram?{query}"), TOKEN).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{query}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{query}: {message}");
    }
    let (status, _) = get(&server, "/v1/histogram", "tw_wrong").await;
    assert_eq!(status, 401);
}
