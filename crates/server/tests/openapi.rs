//! `GET /v1/openapi.json` over real HTTP: served without a token, and the
//! same paths as the router, both ways: every route of `api/mod.rs` (but
//! the web console's pages) is documented, and every documented path and
//! method answers with something other than the fallback's `not_found`;
//! and plain reads answer the kind of JSON documented.

use std::collections::BTreeSet;

use serde_json::Value;
use tailwater_server::{start, ServerConfig};

const ADMIN: &str = "tw_openapi_admin";

/// The paths of `.route("PATH", …)` in the router's source, leaving out
/// those served by the web console (`ui::`).
fn router_paths() -> BTreeSet<String> {
    let source = include_str!("../src/api/mod.rs");
    source
        .split(".route(")
        .skip(1)
        .filter(|route| !route.split(".route(").next().unwrap().contains("ui::"))
        .map(|route| {
            let path = route
                .trim_start()
                .strip_prefix('"')
                .expect("a literal path");
            path[..path.find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_document_lists_every_route_and_every_documented_path_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    let server = start(config).await.unwrap();
    let http = reqwest::Client::new();

    // No token needed.
    let response = http
        .get(format!("{}/v1/openapi.json", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let paths = doc["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let routes = router_paths();
    assert!(routes.contains("/v1/logs/tail") && routes.contains("/v1/ingest"));
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not routed: {unrouted:?}"
    );

    // Every documented method of every path reaches a handler: whatever it
    // answers (401, 400, 404 for a missing thing), it is not the fallback.
    let mut calls = 0;
    for (path, operations) in paths {
        let concrete = path
            .replace("{name}", "nothing-here")
            .replace("{id}", "nothing-here")
            .replace("{runner}", "nothing-here");
        for method in operations.as_object().unwrap().keys() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let request = http
                .request(method.clone(), format!("{}{concrete}", server.url()))
                .timeout(std::time::Duration::from_secs(30));
            // Without a token a tail is refused before it streams.
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            let code = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|body| body["error"]["code"].as_str().map(str::to_owned));
            assert_ne!(status, 405, "{method} {path} is not routed: {body}");
            assert!(
                !body.contains("no such endpoint"),
                "{method} {path} fell through to not_found: {status} {code:?}"
            );
            calls += 1;
        }
    }
    assert!(calls >= routes.len());

    // The JSON answers of plain reads have the documented kind (an array
    // for the listings, an object otherwise).
    for (path, operations) in paths {
        let Some(schema) = operations
            .pointer("/get/responses/200/content/application~1json/schema")
            .filter(|_| !path.contains('{') && !path.ends_with("/tail"))
        else {
            continue;
        };
        let body: Value = http
            .get(format!("{}{path}", server.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let documented_array = schema["type"] == "array";
        assert_eq!(body.is_array(), documented_array, "GET {path}: {body}");
        assert!(body.is_array() || body.is_object(), "GET {path}: {body}");
    }
    server.shutdown().await.unwrap();
}
