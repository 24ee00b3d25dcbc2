//! Every cell of the matrix, asked over real HTTP and asserted.

use serde_json::{json, Value};

use super::matrix::{Endpoint::*, Want::*, KINDS, MATRIX};
use super::*;
use tailwater_model::wire::percent_encode;

/// A read of the Loki API with a LogQL `query`.
fn loki(
    method: &'static str,
    route: &str,
    tenant: &str,
    query: &str,
) -> (&'static str, String, Option<Value>) {
    let path = format!(
        "/loki/api/v1/{route}?tenant={tenant}&query={}",
        percent_encode(query)
    );
    (method, path, None)
}

fn is_loki_read(path: &str) -> bool {
    path.starts_with("/loki/api/v1/") && !path.starts_with("/loki/api/v1/push")
}

/// Lines (or points, values, series) of a Loki answer: its frames for a
/// tail.
fn loki_lines(text: &str) -> usize {
    text.lines()
        .map(|frame| {
            let body: Value = serde_json::from_str(frame).unwrap();
            let result = if body["streams"].is_array() {
                &body["streams"]
            } else if body["data"]["result"].is_array() {
                &body["data"]["result"]
            } else {
                &body["data"]
            };
            result
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["values"].as_array().map_or(1, Vec::len))
                .sum::<usize>()
        })
        .sum()
}

/// A drain destination that never answers (`.invalid` resolves to nothing).
const NOWHERE: &str = "https://drains.invalid/in";

#[tokio::test]
async fn authorization_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;

    // Two tenants, each with a public app and a private one, each app with
    // one request's record.
    for tenant in ["acme", "globex"] {
        ok(&server, "POST", "/v1/tenants", json!({"name": tenant})).await;
        for (app, private) in [("pub", false), ("priv", true)] {
            let path = format!("/v1/apps?tenant={tenant}");
            ok(
                &server,
                "POST",
                &path,
                json!({"name": app, "private_logs": private}),
            )
            .await;
            let path = format!("/v1/ingest?tenant={tenant}");
            ok(
                &server,
                "POST",
                &path,
                batch(app, &format!("seed-{app}"), &format!("r-{app}")),
            )
            .await;
        }
    }
    let (owner, _) = new_token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    let (ingest, _) = new_token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "pub"}),
    )
    .await;
    let (caller, caller_id) =
        new_token(&server, json!({"scope": "caller", "tenant": "acme"})).await;
    // Requests the gateway recorded as made by this caller, and by another.
    for tenant in ["acme", "globex"] {
        for app in ["pub", "priv"] {
            let path = format!("/v1/ingest?tenant={tenant}");
            for (request, who) in [("mine", caller_id.as_str()), ("theirs", "tok_someone_else")] {
                let runner = format!("gw-{request}-{app}");
                let start = gateway_start(app, &runner, &format!("{request}-{app}"), who);
                ok(&server, "POST", &path, start).await;
            }
        }
    }
    let (revoked, revoked_id) =
        new_token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    ok(
        &server,
        "DELETE",
        &format!("/v1/tokens/{revoked_id}"),
        json!(null),
    )
    .await;
    let created = create_token(
        &server,
        json!({"scope": "owner", "tenant": "acme", "expires_in": "1s"}),
    )
    .await;
    let expired = created["token"].as_str().unwrap().to_owned();
    until_past(&created["expires"]).await;
    let tokens: [Option<&str>; 8] = [
        Some(ADMIN),
        Some(&owner),
        Some(&ingest),
        Some(&caller),
        None,
        Some("tw_not_a_token"),
        Some(&expired),
        Some(&revoked),
    ];

    let mut cells = 0;
    let mut unique = 0;
    for (row, &(endpoint, which_tenant, app, wants)) in MATRIX.iter().enumerate() {
        let tenant = if which_tenant == "other" {
            "globex"
        } else {
            "acme"
        };
        for (column, (token, want)) in tokens.iter().zip(wants).enumerate() {
            unique += 1;
            let fresh = format!("n{row}x{column}");
            let (method, path, body) = match endpoint {
                Ingest => (
                    "POST",
                    format!("/v1/ingest?tenant={tenant}"),
                    Some(batch(app, &fresh, "r-new")),
                ),
                IngestBinary => (
                    POST_BINARY,
                    format!("/v1/ingest?tenant={tenant}"),
                    Some(batch(app, &fresh, "r-new")),
                ),
                Otlp => (
                    "POST",
                    format!("/v1/logs?tenant={tenant}"),
                    Some(json!({"resourceLogs": [{
                        "resource": {"attributes": [
                            {"key": "service.name", "value": {"stringValue": app}},
                            {"key": "service.instance.id", "value": {"stringValue": fresh}}
                        ]},
                        "scopeLogs": [{"logRecords": [{"body": {"stringValue": "from otlp"}}]}]
                    }]})),
                ),
                Loki => (
                    "POST",
                    format!("/loki/api/v1/push?tenant={tenant}"),
                    Some(json!({"streams": [{
                        "stream": {"app": app, "runner": fresh},
                        "values": [[jiff::Timestamp::now().as_nanosecond().to_string(), "from loki"]]
                    }]})),
                ),
                // A string body is sent as it is (NDJSON).
                EsBulk => (
                    "POST",
                    format!("/_bulk?tenant={tenant}"),
                    Some(Value::String(format!(
                        "{}\n{}\n",
                        json!({"index": {"_index": "logs"}}),
                        json!({"message": "from es", "app": app, "runner": fresh})
                    ))),
                ),
                JsonDocs => (
                    "POST",
                    format!("/v1/ingest/json?tenant={tenant}"),
                    Some(json!([{"message": "from json", "app": app, "runner": fresh}])),
                ),
                Logs => (
                    "GET",
                    format!("/v1/logs?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                LogsAnyApp => (
                    "GET",
                    format!("/v1/logs?tenant={tenant}&request=r-{app}"),
                    None,
                ),
                LogsNoRequest => ("GET", format!("/v1/logs?tenant={tenant}&app={app}"), None),
                Tail => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&request=r-{app}&app={app}&after=0"),
                    None,
                ),
                TailAnyApp => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&request=r-{app}&after=0"),
                    None,
                ),
                TailNoRequest => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&app={app}&after=0"),
                    None,
                ),
                CreateTenant => ("POST", "/v1/tenants".into(), Some(json!({"name": fresh}))),
                ListTenants => ("GET", "/v1/tenants".into(), None),
                UpdateTenant => (
                    "PATCH",
                    format!("/v1/tenants/{tenant}"),
                    Some(json!({"private_logs": false})),
                ),
                // Ingest: a caller token for a private app is refused
                // whoever asks (tests/registry.rs tests that).
                CreateToken => (
                    "POST",
                    "/v1/tokens".into(),
                    Some(json!({"scope": "ingest", "tenant": tenant, "app": app})),
                ),
                ListTokens => ("GET", format!("/v1/tokens?tenant={tenant}"), None),
                RevokeToken => {
                    let (_, victim) = new_token(
                        &server,
                        json!({"scope": "ingest", "tenant": tenant, "app": app}),
                    )
                    .await;
                    ("DELETE", format!("/v1/tokens/{victim}"), None)
                }
                CreateApp => (
                    "POST",
                    format!("/v1/apps?tenant={tenant}"),
                    Some(json!({"name": fresh, "private_logs": app == "priv"})),
                ),
                ListApps => ("GET", format!("/v1/apps?tenant={tenant}"), None),
                Runners => (
                    "GET",
                    format!("/v1/runners?tenant={tenant}&app={app}"),
                    None,
                ),
                RunnerShow => (
                    "GET",
                    format!("/v1/runners/seed-{app}?tenant={tenant}"),
                    None,
                ),
                Request => ("GET", format!("/v1/requests/r-{app}?tenant={tenant}"), None),
                RequestLogs => (
                    "GET",
                    format!("/v1/requests/r-{app}/logs?tenant={tenant}"),
                    None,
                ),
                RequestTail => (
                    "GET",
                    format!("/v1/requests/r-{app}/logs/tail?tenant={tenant}&after=0"),
                    None,
                ),
                RequestMine => (
                    "GET",
                    format!("/v1/requests/mine-{app}?tenant={tenant}"),
                    None,
                ),
                RequestTheirs => (
                    "GET",
                    format!("/v1/requests/theirs-{app}?tenant={tenant}"),
                    None,
                ),
                RequestTheirsLogs => (
                    "GET",
                    format!("/v1/requests/theirs-{app}/logs?tenant={tenant}"),
                    None,
                ),
                RequestList => (
                    "GET",
                    format!("/v1/requests?tenant={tenant}&app={app}"),
                    None,
                ),
                RequestListAnyApp => ("GET", format!("/v1/requests?tenant={tenant}"), None),
                RequestListTheirs => (
                    "GET",
                    format!("/v1/requests?tenant={tenant}&runner=gw-theirs-{app}"),
                    None,
                ),
                LogsTheirs => (
                    "GET",
                    format!("/v1/logs?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                TailTheirs => (
                    "GET",
                    format!("/v1/logs/tail?tenant={tenant}&request=theirs-{app}&after=0"),
                    None,
                ),
                WsTail => (
                    "WS",
                    format!("/v1/logs/tail?tenant={tenant}&request=r-{app}&app={app}&after=0"),
                    None,
                ),
                WsTailNoRequest => (
                    "WS",
                    format!("/v1/logs/tail?tenant={tenant}&app={app}&after=0"),
                    None,
                ),
                WsTailTheirs => (
                    "WS",
                    format!("/v1/logs/tail?tenant={tenant}&request=theirs-{app}&after=0"),
                    None,
                ),
                Export => (
                    "GET",
                    format!("/v1/export?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                ExportNoRequest => ("GET", format!("/v1/export?tenant={tenant}&app={app}"), None),
                ExportTheirs => (
                    "GET",
                    format!("/v1/export?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                Histogram => (
                    "GET",
                    format!("/v1/histogram?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                HistogramNoRequest => (
                    "GET",
                    format!("/v1/histogram?tenant={tenant}&app={app}"),
                    None,
                ),
                HistogramTheirs => (
                    "GET",
                    format!("/v1/histogram?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                Status => ("GET", format!("/v1/status?tenant={tenant}"), None),
                Count => (
                    "GET",
                    format!("/v1/logs/count?tenant={tenant}&request=r-{app}&app={app}"),
                    None,
                ),
                CountNoRequest => (
                    "GET",
                    format!("/v1/logs/count?tenant={tenant}&app={app}"),
                    None,
                ),
                CountTheirs => (
                    "GET",
                    format!("/v1/logs/count?tenant={tenant}&request=theirs-{app}"),
                    None,
                ),
                Metrics => ("GET", "/metrics".into(), None),
                Cluster => ("GET", "/v1/cluster".into(), None),
                ClusterRecords => (
                    "GET",
                    "/internal/v1/cluster/records?partition=0".into(),
                    None,
                ),
                ClusterStreamRecords => (
                    "GET",
                    "/internal/v1/cluster/stream-records?from_sequence=1&to_sequence=1".into(),
                    None,
                ),
                UpdateApp => (
                    "PATCH",
                    format!("/v1/apps/{app}?tenant={tenant}"),
                    Some(json!({"private_logs": app == "priv"})),
                ),
                CreateDrain => (
                    "POST",
                    format!("/v1/apps/{app}/drains?tenant={tenant}"),
                    Some(json!({"url": NOWHERE, "name": fresh})),
                ),
                ListDrains => (
                    "GET",
                    format!("/v1/apps/{app}/drains?tenant={tenant}"),
                    None,
                ),
                PauseDrain | ResumeDrain | DeleteDrain => {
                    let path = format!("/v1/apps/{app}/drains?tenant={tenant}");
                    let victim = ok(&server, "POST", &path, json!({"url": NOWHERE})).await;
                    let id = victim["id"].as_str().unwrap();
                    let (method, action) = match endpoint {
                        PauseDrain => ("POST", "/pause"),
                        ResumeDrain => ("POST", "/resume"),
                        _ => ("DELETE", ""),
                    };
                    let path = format!("/v1/apps/{app}/drains/{id}{action}?tenant={tenant}");
                    (method, path, None)
                }
                LokiQuery => loki(
                    "GET",
                    "query_range",
                    tenant,
                    &format!(r#"{{app="{app}"}} | request_id="r-{app}""#),
                ),
                LokiQueryNoRequest => {
                    loki("GET", "query_range", tenant, &format!(r#"{{app="{app}"}}"#))
                }
                LokiQueryTheirs => loki(
                    "GET",
                    "query_range",
                    tenant,
                    &format!(r#"{{app=~".+"}} | request_id="theirs-{app}""#),
                ),
                LokiMetric => loki(
                    "GET",
                    "query_range",
                    tenant,
                    &format!(
                        r#"sum(count_over_time({{app="{app}"}} | request_id="r-{app}" [1h]))"#
                    ),
                ),
                LokiTail => loki(
                    "WS",
                    "tail",
                    tenant,
                    &format!(r#"{{app="{app}"}} | request_id="r-{app}""#),
                ),
                LokiTailTheirs => loki(
                    "WS",
                    "tail",
                    tenant,
                    &format!(r#"{{app=~".+"}} | request_id="theirs-{app}""#),
                ),
                LokiLabelValues => loki(
                    "GET",
                    "label/app/values",
                    tenant,
                    &format!(r#"{{app="{app}"}}"#),
                ),
                LokiSeries => (
                    "GET",
                    format!(
                        "/loki/api/v1/series?tenant={tenant}&match%5B%5D={}",
                        percent_encode(&format!(r#"{{app="{app}"}}"#))
                    ),
                    None,
                ),
            };
            let (status, text) = call(&server, method, &path, *token, body).await;
            let what = format!(
                "{endpoint:?} {which_tenant} {app} as {}: {method} {path} answered {status} {text}",
                KINDS[column]
            );
            let code = serde_json::from_str::<Value>(&text).ok().and_then(|body| {
                if endpoint == Otlp {
                    // OTLP's google.rpc.Status: the gRPC code of each refusal.
                    let grpc = match body["code"].as_i64()? {
                        16 => "unauthorized",
                        7 => "forbidden",
                        5 => "not_found",
                        _ => return None,
                    };
                    return Some(grpc.to_owned());
                }
                if endpoint == EsBulk {
                    // Elasticsearch's error shape, tailwater's code beside.
                    return body["error"]["tailwater_code"].as_str().map(str::to_owned);
                }
                if is_loki_read(&path) {
                    // Loki's error shape, the API's code as its errorType.
                    return body["errorType"].as_str().map(str::to_owned);
                }
                body["error"]["code"].as_str().map(str::to_owned)
            });
            // A bulk's document refused is its item's error, in a 200.
            let item = serde_json::from_str::<Value>(&text)
                .ok()
                .filter(|_| endpoint == EsBulk && status == 200)
                .and_then(|body| body["items"][0]["index"]["status"].as_u64());
            let (status, code) = match item {
                Some(403) => (403, Some("forbidden".to_owned())),
                Some(404) => (404, Some("not_found".to_owned())),
                Some(other) => (other as u16, code),
                None => (status, code),
            };
            // A successful WebSocket upgrade stands for a 200 below.
            let status = if method == "WS" && status == 101 {
                200
            } else {
                status
            };
            let records = if is_loki_read(&path) && matches!(status, 200 | 101) {
                loki_lines(&text)
            } else if method == "WS" {
                text.matches(r#""type":"record""#).count()
            } else if is_tail(&path) {
                text.matches("event: record").count()
            } else if path.starts_with("/v1/export") && status == 200 {
                text.lines().filter(|line| !line.is_empty()).count()
            } else if (path.starts_with("/v1/histogram") || path.starts_with("/v1/logs/count"))
                && status == 200
            {
                let total = serde_json::from_str::<Value>(&text).unwrap()["total"].as_u64();
                total.unwrap() as usize
            } else if path.starts_with("/v1/requests?") && status == 200 {
                serde_json::from_str::<Value>(&text).unwrap()["requests"]
                    .as_array()
                    .unwrap()
                    .len()
            } else if is_page(&path) && method == "GET" && status == 200 {
                serde_json::from_str::<Value>(&text).unwrap()["records"]
                    .as_array()
                    .unwrap()
                    .len()
            } else {
                usize::MAX
            };
            match want {
                Ok => {
                    assert!(matches!(status, 200 | 201 | 204), "{what}");
                    if records != usize::MAX {
                        assert!(records > 0, "{what}");
                    }
                }
                Empty => assert_eq!((status, records), (200, 0), "{what}"),
                Unauth => assert_eq!(
                    (status, code.as_deref()),
                    (401, Some("unauthorized")),
                    "{what}"
                ),
                Forbidden => assert_eq!(
                    (status, code.as_deref()),
                    (403, Some("forbidden")),
                    "{what}"
                ),
                Private => {
                    assert_eq!(
                        (status, code.as_deref()),
                        (403, Some("private_logs")),
                        "{what}"
                    )
                }
                NotFound => assert_eq!(
                    (status, code.as_deref()),
                    (404, Some("not_found")),
                    "{what}"
                ),
            }
            cells += 1;
        }
    }
    assert_eq!(cells, MATRIX.len() * KINDS.len());
    assert_eq!(unique, cells);

    // Exactly which requests each lists: a caller its own of public apps,
    // an owner every request of its tenant that has a start.
    let mut listed = Vec::new();
    for token in [&caller, &owner] {
        let (status, text) = call(&server, "GET", "/v1/requests", Some(token), None).await;
        assert_eq!(status, 200, "{text}");
        let mut ids: Vec<String> = serde_json::from_str::<Value>(&text).unwrap()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|request| request["request_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        listed.push(ids);
    }
    assert_eq!(listed[0], ["mine-pub"]);
    assert_eq!(
        listed[1],
        ["mine-priv", "mine-pub", "theirs-priv", "theirs-pub"]
    );
    server.shutdown().await.unwrap();
}
