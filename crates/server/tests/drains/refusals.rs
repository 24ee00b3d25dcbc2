//! What a drain refuses, says and counts: URLs, destinations, names,
//! tokens, caps; a name that resolves to loopback, refused as it connects.

use std::time::Duration;

use serde_json::{json, Value};

use super::common::{call, scrape, server_in, TOKEN};
use super::{fast, ingest, ok, tenants, Receiver};

#[tokio::test]
async fn refusals_say_what_to_do_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |_| {}).await;
    tenants(&server).await;
    for (body, status, says) in [
        (
            json!({"url": "http://127.0.0.1:9/in"}),
            400,
            "--drain-allow-private",
        ),
        (
            json!({"url": "http://169.254.169.254/latest"}),
            400,
            "not a public one",
        ),
        (
            json!({"url": "ftp://example.com/"}),
            400,
            "http:// or https://",
        ),
        (
            json!({"url": "https://example.com/", "format": "xml"}),
            400,
            "unknown variant",
        ),
        (
            json!({"url": "https://example.com/", "colour": 1}),
            400,
            "unknown field",
        ),
        (
            json!({"url": "https://user:pw@example.com/"}),
            400,
            "user or password",
        ),
        (
            json!({"url": "https://example.com/", "token": "a b"}),
            400,
            "printable",
        ),
    ] {
        let (got, answer) = call(
            &server,
            "POST",
            "/v1/apps/sdxl/drains?tenant=acme",
            TOKEN,
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (got, _) = call(
        &server,
        "POST",
        "/v1/apps/nope/drains?tenant=acme",
        TOKEN,
        Some(json!({"url": "https://example.com/"})),
    )
    .await;
    assert_eq!(got, 404);
    let (got, _) = call(
        &server,
        "POST",
        "/v1/apps/sdxl/drains/drn_nope/pause?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(got, 404);
    let (_, list) = call(
        &server,
        "GET",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        None,
    )
    .await;
    assert_eq!(list, json!([]));
    assert!(std::fs::read_dir(dir.path().join("drains"))
        .unwrap()
        .next()
        .is_none());
    // At most --max-drains-per-app (5).
    for n in 0..5 {
        ok(
            &server,
            "POST",
            "/v1/apps/sdxl/drains?tenant=acme",
            json!({"url": format!("https://example.com/{n}")}),
        )
        .await;
    }
    let (got, answer) = call(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        TOKEN,
        Some(json!({"url": "https://example.com/6"})),
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (400, Some("too_many_drains"))
    );
    // Each refusal that reached the drains is counted: five URLs, names or
    // tokens (the two bodies that did not parse are the API's), one limit.
    let samples = scrape(&server, Some(TOKEN)).await;
    let refused = |reason: &str| {
        samples[&format!("tailwater_drain_refused_total{{reason=\"{reason}\",tenant=\"acme\"}}")]
    };
    assert_eq!((refused("invalid"), refused("too_many_drains")), (5.0, 1.0));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_drain_to_localhost_by_name_is_refused_as_it_connects() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |config| {
        fast(config);
        config.drains.allow_private = false;
    })
    .await;
    tenants(&server).await;
    let (receiver, addr) = Receiver::start().await;
    let url = format!("http://localhost:{}/in", addr.port());
    let created = ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": url}),
    )
    .await;
    ingest(&server, "acme", "sdxl", "r1", 0..3).await;
    let mut last = Value::Null;
    for _ in 0..1500 {
        let (_, list) = call(
            &server,
            "GET",
            "/v1/apps/sdxl/drains?tenant=acme",
            TOKEN,
            None,
        )
        .await;
        if list[0]["state"] == "paused" {
            last = list[0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last["id"], created["id"]);
    let error = last["last_error"].as_str().unwrap();
    assert!(error.contains("not public"), "{error}");
    assert!(
        receiver.deliveries().is_empty(),
        "nothing reached the loopback receiver"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tenant_has_at_most_its_drains() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, |config| {
        config.drains.max_per_app = 2;
        config.drains.max_per_tenant = 3;
    })
    .await;
    tenants(&server).await;
    let url = json!({"url": "https://drains.invalid/in"});
    for app in ["sdxl", "sdxl", "other"] {
        let path = format!("/v1/apps/{app}/drains?tenant=acme");
        ok(&server, "POST", &path, url.clone()).await;
    }
    let (status, answer) = call(
        &server,
        "POST",
        "/v1/apps/other/drains?tenant=acme",
        TOKEN,
        Some(url.clone()),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("too_many_drains"))
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("--max-drains-per-tenant"), "{message}");
    // Another tenant is not held to this one's count.
    ok(&server, "POST", "/v1/apps/other/drains?tenant=globex", url).await;
    server.shutdown().await.unwrap();
}
