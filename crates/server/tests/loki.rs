//! `POST /loki/api/v1/push` over real HTTP: snappy protobuf, gzipped and deflated
//! JSON, the token as the bearer or as basic auth's password; what is
//! stored, field by field, through the read API; refusals with nothing (or
//! only the refused streams) stored.

mod common;

use std::io::Write;

use base64::Engine;
use common::{call, TOKEN};
use serde_json::{json, Value};
use tailwater_server::protocols::loki;
use tailwater_server::RunningServer;

/// `POST /loki/api/v1/push` with `auth` (a whole `Authorization` value):
/// the status and the body as text.
async fn push(
    server: &RunningServer,
    auth: Option<String>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/loki/api/v1/push", server.url()))
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

fn basic(user: &str, token: &str) -> Option<String> {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
    Some(format!("Basic {pair}"))
}

fn now_ns() -> i128 {
    jiff::Timestamp::now().as_nanosecond()
}

async fn stored(server: &RunningServer, app: &str) -> Vec<Value> {
    let path = format!("/v1/logs?app={app}&direction=forward&limit=1000");
    let (status, page) = call(server, "GET", &path, TOKEN, None).await;
    assert_eq!(status, 200, "{page}");
    page["records"].as_array().unwrap().clone()
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

#[tokio::test]
async fn snappy_protobuf_and_gzip_json_pushes_are_stored_field_by_field() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let t = now_ns();
    let body = loki::encode(&[(
        r#"{app="sdxl", runner="pod-1", stream="stderr", env="prod"}"#,
        &[
            (
                t,
                r#"{"level":"error","msg":"cuda oom","request_id":"req-1"}"#,
            ),
            (t + 1, "plain line"),
        ],
    )]);
    let (status, text) = push(&server, bearer(TOKEN), &[PROTOBUF], body).await;
    assert_eq!((status, text.as_str()), (204, ""));
    let sdxl = stored(&server, "sdxl").await;
    let [oom, plain] = &sdxl[..] else {
        panic!("{sdxl:?}")
    };
    let day = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    for record in [oom, plain] {
        assert_eq!(record["runner"], "pod-1");
        assert_eq!(record["boot"], format!("loki-{day}"));
        assert_eq!(record["stream"], "stderr");
        assert_eq!(record["fields"]["env"], "prod");
    }
    assert_eq!(
        (&oom["message"], &oom["level"], &oom["request_id"]),
        (&json!("cuda oom"), &json!("error"), &json!("req-1"))
    );
    assert_eq!(
        (oom["seq"].as_u64(), plain["seq"].as_u64()),
        (Some(0), Some(1))
    );

    // A `Content-Encoding: snappy` (as tracing-loki sends) names the
    // protobuf's own snappy, as Loki reads it.
    let body = loki::encode(&[(r#"{app="sdxl", runner="pod-2"}"#, &[(t + 2, "said snappy")])]);
    let headers = [PROTOBUF, ("content-encoding", "Snappy")];
    let (status, text) = push(&server, bearer(TOKEN), &headers, body).await;
    assert_eq!((status, text.as_str()), (204, ""));
    let sdxl = stored(&server, "sdxl").await;
    assert_eq!(sdxl.last().unwrap()["message"], "said snappy", "{sdxl:?}");

    // JSON, gzipped, the token as basic auth's password (any user name).
    let body = json!({"streams": [{
        "stream": {"service_name": "api", "detected_level": "warn"},
        "values": [[(t + 5).to_string(), "slow request", {"trace_id": "abc"}]]
    }]})
    .to_string();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(body.as_bytes()).unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    let (status, text) = push(
        &server,
        basic("vector", TOKEN),
        &headers,
        gzip.finish().unwrap(),
    )
    .await;
    assert_eq!(status, 204, "{text}");
    let api = stored(&server, "api").await;
    assert_eq!(
        (
            &api[0]["message"],
            &api[0]["level"],
            &api[0]["fields"]["trace_id"]
        ),
        (&json!("slow request"), &json!("warn"), &json!("abc"))
    );
    assert_eq!(
        api[0]["ts"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_nanosecond(),
        t + 5
    );

    // JSON as raw DEFLATE, as Loki's Go clients send `deflate`.
    let body = json!({"streams": [{
        "stream": {"service_name": "api"},
        "values": [[(t + 6).to_string(), "deflated"]]
    }]})
    .to_string();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    raw.write_all(body.as_bytes()).unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("content-encoding", "deflate"),
    ];
    let (status, text) = push(&server, bearer(TOKEN), &headers, raw.finish().unwrap()).await;
    assert_eq!(status, 204, "{text}");
    let api = stored(&server, "api").await;
    assert_eq!(api.last().unwrap()["message"], "deflated", "{api:?}");
}

#[tokio::test]
async fn bad_pushes_are_refused_and_store_nothing() {
    let (_dir, server, _admin) = common::server(10_000).await;
    let body = json!({"scope": "ingest", "tenant": "default", "app": "api"});
    let (status, created) = call(&server, "POST", "/v1/tokens", TOKEN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let api_token = created["token"].as_str().unwrap().to_owned();
    let good = loki::encode(&[(r#"{app="api"}"#, &[(now_ns(), "hello")])]);
    // (what, Authorization, headers, body, status, the message says)
    type Case<'a> = (
        &'a str,
        Option<String>,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        ("no token", None, vec![PROTOBUF], good.clone(), 401, "token"),
        (
            "a bad password",
            basic("x", "tw_nope"),
            vec![PROTOBUF],
            good.clone(),
            401,
            "invalid token",
        ),
        (
            "a malformed basic",
            Some("Basic !!!".into()),
            vec![PROTOBUF],
            good.clone(),
            401,
            "malformed",
        ),
        (
            "not snappy",
            bearer(TOKEN),
            vec![PROTOBUF],
            b"plain".to_vec(),
            400,
            "invalid snappy body",
        ),
        (
            "bad labels",
            bearer(TOKEN),
            vec![PROTOBUF],
            loki::encode(&[("app=api", &[(1, "x")])]),
            400,
            "invalid loki labels",
        ),
        (
            "bad json",
            bearer(TOKEN),
            vec![("content-type", "application/json")],
            b"{\"streams\": 3}".to_vec(),
            400,
            "invalid loki json body",
        ),
        (
            "text",
            bearer(TOKEN),
            vec![("content-type", "text/plain")],
            good.clone(),
            415,
            "application/x-protobuf",
        ),
        (
            "json said to be snappy",
            bearer(TOKEN),
            vec![
                ("content-type", "application/json"),
                ("content-encoding", "snappy"),
            ],
            br#"{"streams": []}"#.to_vec(),
            415,
            "content encoding 'snappy' is not supported",
        ),
        (
            "snappy twice",
            bearer(TOKEN),
            vec![PROTOBUF, ("content-encoding", "snappy, gzip")],
            good.clone(),
            415,
            "not supported",
        ),
        (
            "another app's token",
            bearer(&api_token),
            vec![PROTOBUF],
            loki::encode(&[(r#"{app="web"}"#, &[(now_ns(), "x")])]),
            403,
            "web",
        ),
        (
            "no app",
            bearer(TOKEN),
            vec![PROTOBUF],
            loki::encode(&[(r#"{env="prod"}"#, &[(now_ns(), "x")])]),
            400,
            "app",
        ),
    ];
    for (name, auth, headers, body, want, says) in cases {
        let (status, text) = push(&server, auth, &headers, body).await;
        assert_eq!(status, want, "{name}: {text}");
        let message = serde_json::from_str::<Value>(&text).unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(message.contains(&says.to_lowercase()), "{name}: {message}");
    }
    let (_, page) = call(&server, "GET", "/v1/logs?limit=10", TOKEN, None).await;
    assert_eq!(page["records"], json!([]), "nothing stored");

    // One stream of another app among the token's own: the others are
    // stored, the answer says how many were refused.
    let mixed = loki::encode(&[
        (r#"{app="api"}"#, &[(now_ns(), "mine")]),
        (r#"{app="web"}"#, &[(now_ns(), "theirs"), (now_ns(), "too")]),
    ]);
    let (status, text) = push(&server, bearer(&api_token), &[PROTOBUF], mixed).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("2 of 3 entries were refused"), "{text}");
    assert_eq!(stored(&server, "api").await.len(), 1);
}
