//! The registry over HTTP: what an owner may keep in it is limited and
//! counted, and one owner's changes never slow another tenant's requests.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, metrics_text, TOKEN};
use serde_json::{json, Value};
use tailwater_server::{start, RunningServer, ServerConfig};

async fn server_in(dir: &std::path::Path) -> RunningServer {
    let mut config = ServerConfig::new(dir.to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    start(config).await.unwrap()
}

/// A new tenant and an owner token for it.
async fn tenant_with_owner(server: &RunningServer, tenant: &str) -> String {
    let (status, _) = call(
        server,
        "POST",
        "/v1/tenants",
        TOKEN,
        Some(json!({"name": tenant})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, created) = call(
        server,
        "POST",
        "/v1/tokens",
        TOKEN,
        Some(json!({"scope": "owner", "tenant": tenant})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn long_token_names_are_refused_with_a_json_400_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_in(dir.path()).await;
    let owner = tenant_with_owner(&server, "acme").await;
    let long = "n".repeat(tailwater_server::access::registry::DEFAULT_MAX_TOKEN_NAME_BYTES + 1);
    let (status, answer) = call(
        &server,
        "POST",
        "/v1/tokens",
        &owner,
        Some(json!({"scope": "ingest", "app": "sdxl", "name": long})),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "name_too_long");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-token-name-bytes"), "{message}");
    assert!(metrics_text(&server)
        .await
        .contains(r#"tailwater_registry_refused_total{tenant="acme",reason="name_too_long"} 1"#));

    // A name at the limit is fine.
    let (status, _) = call(
        &server,
        "POST",
        "/v1/tokens",
        &owner,
        Some(json!({"scope": "ingest", "app": "sdxl", "name": "n".repeat(200)})),
    )
    .await;
    assert_eq!(status, 201);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_caller_token_for_a_private_app_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_in(dir.path()).await;
    let owner = tenant_with_owner(&server, "acme").await;
    let (status, _) = call(
        &server,
        "POST",
        "/v1/apps",
        &owner,
        Some(json!({"name": "vault", "private_logs": true})),
    )
    .await;
    assert_eq!(status, 201);
    let caller = json!({"scope": "caller", "app": "vault"});
    let (status, answer) = call(&server, "POST", "/v1/tokens", &owner, Some(caller.clone())).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "conflict");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("private") && message.contains("PATCH /v1/apps/vault"),
        "{message}"
    );

    // Once the app is public, the same request succeeds.
    let (status, _) = call(
        &server,
        "PATCH",
        "/v1/apps/vault",
        &owner,
        Some(json!({"private_logs": false})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&server, "POST", "/v1/tokens", &owner, Some(caller)).await;
    assert_eq!(status, 201);
    server.shutdown().await.unwrap();
}

/// The time of one authenticated `GET /v1/status`.
async fn status_latency(client: &reqwest::Client, url: &str, token: &str) -> Duration {
    let started = Instant::now();
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    started.elapsed()
}

fn median(mut took: Vec<Duration>) -> Duration {
    took.sort_unstable();
    took[took.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_requests_stay_fast_while_an_owner_changes_a_large_registry() {
    // A large registry, in the file format of earlier releases: 40,000
    // admin tokens with 200-byte names (about 16 MB).
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("auth")).unwrap();
    let tokens: Vec<Value> = (0..40_000)
        .map(|index| {
            json!({
                "id": format!("tok_{index:016x}"),
                "sha256": format!("{index:064x}"),
                "scope": "admin",
                "name": format!("{index:0>200}"),
                "created": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    let registry = json!({
        "tenants": {"default": {"created": "2026-01-01T00:00:00Z", "private_logs": false, "apps": {}}},
        "tokens": tokens,
    });
    std::fs::write(
        dir.path().join("auth/registry.json"),
        serde_json::to_vec_pretty(&registry).unwrap(),
    )
    .unwrap();
    let server = server_in(dir.path()).await;
    let busy_owner = tenant_with_owner(&server, "busy").await;
    let other_owner = tenant_with_owner(&server, "other").await;

    let client = reqwest::Client::new();
    let status_url = format!("http://{}/v1/status", server.addr);
    let mut took = Vec::new();
    for _ in 0..80 {
        took.push(status_latency(&client, &status_url, &other_owner).await);
    }
    let baseline = median(took.split_off(20)); // the first 20 warm up

    // The busy owner creates and revokes tokens as fast as it is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, changes, client) = (stop.clone(), changes.clone(), client.clone());
        let url = format!("http://{}", server.addr);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let created: Value = client
                    .post(format!("{url}/v1/tokens"))
                    .bearer_auth(&busy_owner)
                    .json(&json!({"scope": "ingest", "app": "a", "name": "x".repeat(200)}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let Some(id) = created["id"].as_str() else {
                    panic!("token not created: {created}");
                };
                let id = id.to_owned();
                let revoked = client
                    .delete(format!("{url}/v1/tokens/{id}"))
                    .bearer_auth(&busy_owner)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(revoked.status(), 200);
                changes.fetch_add(2, Ordering::Relaxed);
            }
        })
    };
    // Measure only once changes are under way.
    while changes.load(Ordering::Relaxed) < 4 {
        assert!(!churn.is_finished(), "the changes stopped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // As many requests as it takes for a few changes to overlap them.
    let before = changes.load(Ordering::Relaxed);
    let mut took = Vec::new();
    while took.len() < 60 || changes.load(Ordering::Relaxed) - before < 6 {
        took.push(status_latency(&client, &status_url, &other_owner).await);
    }
    let during = changes.load(Ordering::Relaxed) - before;
    let loaded = median(took);
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();

    assert!(
        during >= 4,
        "only {during} changes overlapped the measurement"
    );
    // Generous: the machine is shared, so only a registry that makes
    // readers wait for a writer's disk I/O fails it (each change rewrote
    // the 16 MB file under the lock readers take).
    assert!(
        loaded < baseline * 5 + Duration::from_millis(20),
        "median latency {loaded:?} while {during} changes were made, {baseline:?} without"
    );
    eprintln!("median latency {loaded:?} while {during} changes were made, {baseline:?} without");
    server.shutdown().await.unwrap();
}
