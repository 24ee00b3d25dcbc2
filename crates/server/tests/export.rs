//! `GET /v1/export` over real HTTP on loopback: NDJSON in the API's record
//! shape, text lines, gzip both ways, filters and the snapshot it reads,
//! the same authorization as `/v1/logs`, and clear errors.
//! (A million lines in bounded server memory: the e2e export test.)

use std::io::Read;

use tailwater_client::Client;
use tailwater_model::tenancy::{NewToken, Scope};
use tailwater_model::wire::{ErrorBody, IngestBatch, LogsParams};
use tailwater_model::LogRecord;
use tailwater_server::RunningServer;

mod common;

use common::TOKEN;

fn batch(runner: &str, seqs: std::ops::Range<u64>) -> IngestBatch {
    common::batch("sdxl", runner, seqs)
}

async fn server() -> (tempfile::TempDir, RunningServer, Client) {
    // Callers export requests with no recorded caller here at once.
    common::server_with(|config| config.request_owner_grace = std::time::Duration::ZERO).await
}

/// `GET /v1/export?query` with `token` and extra headers: status, headers,
/// body bytes as sent.
async fn export(
    server: &RunningServer,
    token: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .get(format!("http://{}/v1/export?{query}", server.addr))
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

/// Every record `/v1/logs` has for `params`, oldest first.
async fn all_records(client: &Client, params: LogsParams) -> Vec<LogRecord> {
    let mut params = LogsParams {
        direction: Some("forward".into()),
        limit: Some("10000".into()),
        ..params
    };
    let mut records = Vec::new();
    loop {
        let page = client.logs(&params).await.unwrap();
        records.extend(page.records);
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => return records,
        }
    }
}

#[tokio::test]
async fn ndjson_export_is_every_matching_record_in_the_api_shape_oldest_first() {
    let (_dir, server, client) = server().await;
    for start in (0..6_000).step_by(1_000) {
        client
            .ingest(&batch("r1", start..start + 1_000))
            .await
            .unwrap();
        client
            .ingest(&batch("r2", start..start + 10))
            .await
            .unwrap();
    }
    let (status, headers, body) = export(&server, TOKEN, "format=ndjson&runner=r1", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let as_of = headers["x-tailwater-as-of"].to_str().unwrap();
    assert_eq!(
        as_of,
        client.logs(&LogsParams::default()).await.unwrap().as_of
    );
    let exported: Vec<LogRecord> = body
        .split(|byte| *byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    let expected = all_records(
        &client,
        LogsParams {
            runner: Some("r1".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(exported.len(), 6_000);
    assert_eq!(exported, expected);
    assert!(body.ends_with(b"\n"));

    // direction=backward reverses it; since/until and every filter apply.
    let (_, _, body) = export(
        &server,
        TOKEN,
        "format=ndjson&runner=r1&direction=backward&field.step=5990",
        &[],
    )
    .await;
    let newest: LogRecord = serde_json::from_slice(body.trim_ascii_end()).unwrap();
    assert_eq!(newest.message, "r1 5990");
}

#[tokio::test]
async fn text_export_is_one_line_per_record_and_gzip_round_trips_both_ways() {
    let (_dir, server, client) = server().await;
    let mut with_break = batch("r1", 0..500);
    with_break.records[3].message = "Traceback\nline two".into();
    client.ingest(&with_break).await.unwrap();

    let (status, headers, text) = export(&server, TOKEN, "", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    let text = String::from_utf8(text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 500);
    assert!(
        lines[0].ends_with(" sdxl r1 stdout INFO  [req-0] r1 0"),
        "{}",
        lines[0]
    );
    assert!(lines[3].ends_with("Traceback\\nline two"), "{}", lines[3]);
    let records = all_records(&client, LogsParams::default()).await;
    assert!(lines[1].starts_with(&records[1].ts.to_string()));

    // gzip=true: a .gz file to keep.
    let (status, headers, gzipped) = export(&server, TOKEN, "gzip=true", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/gzip");
    assert!(headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("tailwater-export.log.gz"));
    assert!(headers.get("content-encoding").is_none());
    assert_eq!(gunzip(&gzipped), text.as_bytes());

    // Accept-Encoding: gzip compresses in transit only.
    let (_, headers, gzipped) = export(
        &server,
        TOKEN,
        "format=ndjson",
        &[("accept-encoding", "br;q=1, gzip;q=0.5")],
    )
    .await;
    assert_eq!(headers["content-encoding"], "gzip");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(
        gunzip(&gzipped).iter().filter(|b| **b == b'\n').count(),
        500
    );
    let (_, headers, _) = export(&server, TOKEN, "", &[("accept-encoding", "gzip;q=0")]).await;
    assert!(headers.get("content-encoding").is_none());
}

#[tokio::test]
async fn an_export_is_authorized_as_logs_are_and_bad_input_gets_a_clear_error() {
    let (_dir, server, client) = server().await;
    client.ingest(&batch("r1", 0..20)).await.unwrap();
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

    let error = |body: &[u8]| -> (String, String) {
        let body: ErrorBody = serde_json::from_slice(body).unwrap();
        (body.error.code, body.error.message)
    };
    let (status, _, body) = export(&server, "tw_nope", "", &[]).await;
    assert_eq!((status, error(&body).0.as_str()), (401, "unauthorized"));
    // A caller reads one request at a time, here as in /v1/logs.
    let (status, _, body) = export(&server, &caller, "", &[]).await;
    assert_eq!((status, error(&body).0.as_str()), (403, "forbidden"));
    let (status, _, body) = export(&server, &caller, "request=req-10&format=ndjson", &[]).await;
    assert_eq!(status, 200);
    let record: LogRecord = serde_json::from_slice(body.trim_ascii_end()).unwrap();
    assert_eq!(record.request_id.as_deref(), Some("req-10"));
    // Another tenant is as absent as one that does not exist.
    let (status, _, _) = export(&server, &caller, "request=req-10&tenant=admin", &[]).await;
    assert_eq!(status, 404);

    for (query, wanted) in [
        ("format=xml", "unknown format 'xml': use text or ndjson"),
        ("gzip=yes", "invalid gzip 'yes': use true or false"),
        ("limit=5", "an export takes no limit"),
        ("cursor=abc", "an export takes no cursor"),
        ("format=text&format=ndjson", "'format' is given twice"),
        ("level=loud", "unknown level"),
        ("bogus=1", "unknown parameter 'bogus'"),
    ] {
        let (status, _, body) = export(&server, TOKEN, query, &[]).await;
        let (code, message) = error(&body);
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{query}");
        assert!(message.contains(wanted), "{query}: {message}");
    }
}
