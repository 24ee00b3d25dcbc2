//! `GET /v1/status` over real HTTP: the version and the token's identity for
//! every valid token; the store's size only to owners and admins, and only
//! of their own tenant.

use serde_json::{json, Value};
use tailwater_server::{start, RunningServer, ServerConfig};

mod common;
use common::call;

const ADMIN: &str = "tw_status_admin";

async fn token(server: &RunningServer, body: Value) -> String {
    let (status, created) = call(server, "POST", "/v1/tokens", ADMIN, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

async fn ingest(server: &RunningServer, token: &str, app: &str, lines: u64) {
    let records: Vec<Value> = (0..lines)
        .map(|seq| json!({"seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "level": "info", "message": "hello"}))
        .collect();
    let batch = json!({"app": app, "runner": "r", "boot": "b", "records": records});
    let (status, answer) = call(server, "POST", "/v1/ingest", token, Some(batch)).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn status_shows_each_token_its_identity_and_owners_their_tenants_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    let server = start(config).await.unwrap();

    let (status, _) = call(
        &server,
        "POST",
        "/v1/tenants",
        ADMIN,
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_eq!(status, 201);
    let owner = token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    let ingester = token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "sdxl"}),
    )
    .await;
    let caller = token(&server, json!({"scope": "caller", "tenant": "acme"})).await;
    ingest(&server, &ingester, "sdxl", 3).await;
    ingest(&server, ADMIN, "other-tenants-app", 5).await;

    let (status, body) = call(&server, "GET", "/v1/status", &owner, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        (body["tenant"].as_str(), body["scope"].as_str()),
        (Some("acme"), Some("owner"))
    );
    assert!(body["token_id"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(body["store"]["records"], 3, "acme's records only: {body}");
    assert_eq!(body["store"]["raw_bytes"], 15);
    assert_eq!(
        body["store"]["apps"],
        json!([{"app": "sdxl", "records": 3, "raw_bytes": 15, "stored_bytes": 0}])
    );

    for (token, scope) in [(&ingester, "ingest"), (&caller, "caller")] {
        let (status, body) = call(&server, "GET", "/v1/status", token, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], scope);
        assert_eq!(
            body["store"],
            Value::Null,
            "{scope} tokens see no store sizes"
        );
    }

    // Another tenant: 404 for an owner, as if it did not exist; an admin may.
    let (status, body) = call(&server, "GET", "/v1/status?tenant=default", &owner, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(&server, "GET", "/v1/status?tenant=acme", ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["store"]["records"], 3);

    let (status, body) = call(&server, "GET", "/v1/status?verbose=1", ADMIN, None).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown parameter 'verbose'"),
        "{body}"
    );
    let (status, body) = call(&server, "GET", "/v1/status", "tw_wrong", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}
