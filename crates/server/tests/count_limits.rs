//! What counts may take from everyone else (issue #21): a count or
//! histogram that would read more stored records than `--count-scan-limit`
//! is refused, naming the setting, counted per tenant; one tenant's storm
//! of counts leaves another tenant's counts and ingest answering, and what
//! of the storm is refused is a 429 with `Retry-After`, counted. Over real
//! HTTP, records flushed into real parts.

mod common;

use std::time::Duration;

use common::{batch, TOKEN};
use serde_json::Value;
use tailwater_client::Client;
use tailwater_model::tenancy::{NewTenant, NewToken, Scope};
use tailwater_server::RunningServer;

/// How long a call may take before the test calls it stalled: far above
/// any count here, on a loaded machine.
const STALLED: Duration = Duration::from_secs(60);

/// The owner token of a new tenant `name`, and an ingest client of its app
/// `api`.
async fn tenant(admin: &Client, url: &str, name: &str) -> (String, Client) {
    admin
        .create_tenant(&NewTenant {
            name: name.into(),
            private_logs: false,
        })
        .await
        .unwrap();
    let token = |scope, app: Option<&str>| NewToken {
        scope,
        tenant: Some(name.into()),
        app: app.map(str::to_owned),
        expires_in: None,
        name: None,
    };
    let owner = admin
        .create_token(&token(Scope::Owner, None))
        .await
        .unwrap();
    let ingest = admin
        .create_token(&token(Scope::Ingest, Some("api")))
        .await
        .unwrap();
    (owner.token, Client::new(url, &ingest.token).unwrap())
}

/// `GET path` with `token`: status, `Retry-After` and the answer.
async fn get(server: &RunningServer, path: &str, token: &str) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", server.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

async fn refused(server: &RunningServer, tenant: &str, reason: &str) -> f64 {
    let samples = common::scrape(server, Some(TOKEN)).await;
    samples
        .get(&format!(
            "tailwater_count_refused_total{{reason=\"{reason}\",tenant=\"{tenant}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_count_past_the_scan_limit_is_refused_naming_the_setting_and_counted() {
    let (_dir, server, admin) = common::server_with(|config| {
        config.store.memtable_max_bytes = 1;
        config.store.background = false;
        config.store.count_scan_limit = 50;
    })
    .await;
    let (owner, ingest) = tenant(&admin, &server.url(), "a").await;
    ingest.ingest(&batch("api", "r1", 0..100)).await.unwrap();

    for path in ["/v1/logs/count", "/v1/histogram"] {
        let (status, _, answer) = get(&server, path, &owner).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert_eq!(
            answer["error"]["code"], "count_too_large",
            "{path}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("--count-scan-limit"), "{message}");
        assert!(message.contains("more than 50 stored records"), "{message}");
        assert_eq!(message, message.to_lowercase(), "{message}");
    }
    assert_eq!(refused(&server, "a", "count_too_large").await, 2.0);

    // Within the limit: the same tenant's narrower count, and another
    // tenant's, answer whole.
    let (status, _, answer) = get(&server, "/v1/logs/count?app=other", &owner).await;
    assert_eq!(
        (status, answer["total"].as_u64()),
        (200, Some(0)),
        "{answer}"
    );
    let (owner_b, ingest_b) = tenant(&admin, &server.url(), "b").await;
    ingest_b.ingest(&batch("api", "r1", 0..40)).await.unwrap();
    let (status, _, answer) = get(&server, "/v1/logs/count", &owner_b).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["total"].as_u64(), answer["complete"].as_bool()),
        (Some(40), Some(true))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_tenants_storm_of_counts_leaves_anothers_counts_and_ingest_answering() {
    let (_dir, server, admin) = common::server_with(|config| {
        config.store.memtable_max_bytes = 64 * 1024;
        config.store.query_threads = 2;
        config.count_concurrency = 1;
    })
    .await;
    let (owner_a, ingest_a) = tenant(&admin, &server.url(), "a").await;
    let (owner_b, ingest_b) = tenant(&admin, &server.url(), "b").await;
    for first in (0..20_000).step_by(1_000) {
        ingest_a
            .ingest(&batch("api", "r1", first..first + 1_000))
            .await
            .unwrap();
    }
    ingest_b.ingest(&batch("api", "r1", 0..10)).await.unwrap();

    let storm: Vec<_> = (0..16)
        .map(|_| {
            let (server_addr, owner_a) = (server.addr, owner_a.clone());
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .get(format!("http://{server_addr}/v1/logs/count?contains=r1"))
                    .bearer_auth(owner_a)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").cloned();
                let answer: Value = response.json().await.unwrap();
                (status, retry_after, answer)
            })
        })
        .collect();

    // While it runs, tenant b counts and ingests.
    let (status, _, answer) =
        tokio::time::timeout(STALLED, get(&server, "/v1/logs/count", &owner_b))
            .await
            .expect("b's count answers");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["total"], 10, "{answer}");
    tokio::time::timeout(STALLED, ingest_b.ingest(&batch("api", "r1", 10..20)))
        .await
        .expect("b's ingest answers")
        .unwrap();

    let mut busy = 0.0;
    for answer in storm {
        let (status, retry_after, answer) = tokio::time::timeout(STALLED, answer)
            .await
            .expect("a's count answers")
            .unwrap();
        match status {
            200 => assert_eq!(answer["total"], 20_000, "{answer}"),
            429 => {
                assert_eq!(answer["error"]["code"], "count_busy", "{answer}");
                assert!(
                    answer["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("--count-concurrency"),
                    "{answer}"
                );
                assert!(retry_after.is_some(), "{answer}");
                busy += 1.0;
            }
            _ => panic!("{status}: {answer}"),
        }
    }
    assert_eq!(refused(&server, "a", "count_busy").await, busy);
    assert_eq!(refused(&server, "b", "count_busy").await, 0.0);
    let (status, _, answer) = get(&server, "/v1/logs/count", &owner_b).await;
    assert_eq!(
        (status, answer["total"].as_u64()),
        (200, Some(20)),
        "{answer}"
    );
    server.shutdown().await.unwrap();
}
