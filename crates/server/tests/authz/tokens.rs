//! What the matrix cannot show: what each scope sees in listings, secrets
//! shown once and stored hashed, revocation and expiry at once (live tails
//! too), the registry surviving a restart, tenant defaults for new apps.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn what_each_scope_sees_in_listings() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    ok(&server, "POST", "/v1/tenants", json!({"name": "acme"})).await;
    ok(&server, "POST", "/v1/tenants", json!({"name": "globex"})).await;
    let (owner, owner_id) = new_token(&server, json!({"scope": "owner", "tenant": "acme"})).await;
    new_token(&server, json!({"scope": "owner", "tenant": "globex"})).await;

    let (_, text) = call(&server, "GET", "/v1/tenants", Some(&owner), None).await;
    let tenants: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(tenants.len(), 1, "an owner sees its tenant only: {text}");
    assert_eq!(tenants[0]["name"], "acme");

    let (_, text) = call(&server, "GET", "/v1/tokens", Some(&owner), None).await;
    let tokens: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(tokens.len(), 1, "no admin token, no other tenant's: {text}");
    assert_eq!(tokens[0]["id"], owner_id.as_str());
    assert!(!text.contains("sha256") && !text.contains(&owner));

    // An owner cannot create an admin token, nor see or revoke one.
    let (status, _) = call(
        &server,
        "POST",
        "/v1/tokens",
        Some(&owner),
        Some(json!({"scope": "admin"})),
    )
    .await;
    assert_eq!(status, 403);
    let (_, text) = call(&server, "GET", "/v1/tokens", Some(ADMIN), None).await;
    let admin_id = serde_json::from_str::<Vec<Value>>(&text).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/tokens/{admin_id}"),
        Some(&owner),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A token with a bad combination is a clear 400.
    for (body, says) in [
        (json!({"scope": "ingest", "tenant": "acme"}), "give its app"),
        (
            json!({"scope": "owner", "tenant": "acme", "app": "x"}),
            "leave app out",
        ),
        (
            json!({"scope": "admin", "tenant": "acme"}),
            "belongs to no tenant",
        ),
        (
            json!({"scope": "caller", "expires_in": "soon"}),
            "invalid expires_in",
        ),
        (json!({"scope": "root"}), "unknown variant"),
    ] {
        let (status, text) = call(&server, "POST", "/v1/tokens", Some(ADMIN), Some(body)).await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(says), "{text}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn secrets_are_shown_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    let created = create_token(&server, json!({"scope": "owner", "name": "ci"})).await;
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("tw_") && secret.len() > 40);
    assert!(created["id"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(created["tenant"], "default");

    let (_, listing) = call(&server, "GET", "/v1/tokens", Some(ADMIN), None).await;
    assert!(!listing.contains(secret), "listings never show the secret");
    assert!(!listing.contains("sha256"));
    let on_disk = std::fs::read_to_string(dir.path().join("auth/registry.json")).unwrap();
    assert!(!on_disk.contains(secret) && !on_disk.contains(ADMIN));
    assert!(on_disk.contains("sha256"));
    let mode = std::fs::metadata(dir.path().join("auth/registry.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn revocation_and_expiry_take_effect_at_once_even_on_an_open_tail() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    let (owner, id) = new_token(&server, json!({"scope": "owner"})).await;
    assert_eq!(
        call(&server, "GET", "/v1/apps", Some(&owner), None).await.0,
        200
    );

    // A tail open before the revocation gets nothing after it.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{}/v1/logs/tail", server.addr))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut tail = response.bytes_stream();
    ok(&server, "POST", "/v1/ingest", batch("app", "r1", "before")).await;
    // Past the comment the tail opens with.
    let mut first = String::new();
    while !first.contains("before") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), tail.next()).await;
        first.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap().unwrap()));
    }

    ok(&server, "DELETE", &format!("/v1/tokens/{id}"), json!(null)).await;
    let (status, text) = call(&server, "GET", "/v1/apps", Some(&owner), None).await;
    assert_eq!(status, 401);
    assert!(text.contains("revoked"), "{text}");
    ok(&server, "POST", "/v1/ingest", batch("app", "r2", "after")).await;
    let mut rest = String::new();
    while let Result::Ok(Some(Result::Ok(chunk))) =
        tokio::time::timeout(TAIL_QUIET, tail.next()).await
    {
        rest.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !rest.contains("after"),
        "a revoked token's tail got: {rest}"
    );

    let created = create_token(&server, json!({"scope": "owner", "expires_in": "1s"})).await;
    let short = created["token"].as_str().unwrap();
    assert_eq!(
        call(&server, "GET", "/v1/apps", Some(short), None).await.0,
        200
    );
    until_past(&created["expires"]).await;
    let (status, text) = call(&server, "GET", "/v1/apps", Some(short), None).await;
    assert_eq!(status, 401);
    assert!(text.contains("expired"), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_registry_survives_a_restart_and_new_apps_take_the_tenant_default() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_on(dir.path()).await;
    ok(&server, "POST", "/v1/tenants", json!({"name": "acme"})).await;
    let (ingest, _) = new_token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "old"}),
    )
    .await;
    let (ingest_new, _) = new_token(
        &server,
        json!({"scope": "ingest", "tenant": "acme", "app": "new"}),
    )
    .await;
    // Ingest creates an unknown app with the tenant's defaults.
    let (status, _) = call(
        &server,
        "POST",
        "/v1/ingest",
        Some(&ingest),
        Some(batch("old", "r", "q")),
    )
    .await;
    assert_eq!(status, 200);
    ok(
        &server,
        "PATCH",
        "/v1/tenants/acme",
        json!({"private_logs": true}),
    )
    .await;
    ok(
        &server,
        "PATCH",
        "/v1/apps/old?tenant=acme",
        json!({"retention_days": 7, "max_line_bytes": 65536, "rate_limit_lines_per_sec": 1000}),
    )
    .await;
    server.shutdown().await.unwrap();

    let server = server_on(dir.path()).await;
    let (status, _) = call(
        &server,
        "POST",
        "/v1/ingest",
        Some(&ingest_new),
        Some(batch("new", "r", "q")),
    )
    .await;
    assert_eq!(status, 200, "tokens survive the restart");
    let apps = ok(&server, "GET", "/v1/apps?tenant=acme", json!(null)).await;
    assert_eq!(
        apps,
        json!([
            {"tenant": "acme", "name": "new", "created": apps[0]["created"], "private_logs": true},
            {"tenant": "acme", "name": "old", "created": apps[1]["created"], "private_logs": false,
             "retention_days": 7, "max_line_bytes": 65536, "rate_limit_lines_per_sec": 1000},
        ]),
        "the new app took the new default; the old one kept its own"
    );
    let tenants = ok(&server, "GET", "/v1/tenants", json!(null)).await;
    assert_eq!(tenants[0]["name"], "acme");
    assert_eq!(tenants[0]["private_logs"], true);
    assert_eq!(tenants[1]["name"], "default");
    server.shutdown().await.unwrap();
}
