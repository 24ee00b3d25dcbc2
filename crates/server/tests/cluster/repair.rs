//! The endpoint a node repairs a gap from (`cluster::repair`): only a
//! node's credential opens it, never a tenant's or an admin's token; it
//! serves every tenant's records of a partition, in pages, each once, with
//! its identity.

use std::collections::BTreeMap;

use tailwater_model::tenancy::{NewApp, NewTenant, NewToken, Scope};
use tailwater_model::wire::{LogsParams, RepairPage, StreamPage};
use tailwater_server::cluster::repair::{node_key_of, NODE_LABEL, ROUTE};
use tailwater_server::cluster::stretch;

use super::common::{batch, seal};
use super::nats::NatsCluster;
use super::{node_in, runner_in_each_partition, wait_stored_once, PARTITIONS, VISIBLE_WITHIN};

type Identity = (String, String, String, String, u64);

async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_nodes_credential_reads_a_partitions_records_every_tenants_each_once() {
    let nats = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let a = node_in(dir, "a", &nats).await;

    // Two tenants' records, in every partition.
    a.client
        .create_tenant(&NewTenant {
            name: "acme".into(),
            private_logs: false,
        })
        .await
        .unwrap();
    let token = |scope, app: Option<&str>| NewToken {
        scope,
        tenant: Some("acme".to_owned()),
        app: app.map(str::to_owned),
        expires_in: None,
        name: None,
    };
    let owner = a
        .client
        .create_token(&token(Scope::Owner, None))
        .await
        .unwrap();
    let acme = tailwater_client::Client::new(&a.server.url(), &owner.token).unwrap();
    acme.create_app(
        None,
        &NewApp {
            name: "api".into(),
            ..NewApp::default()
        },
    )
    .await
    .unwrap();
    let ingest = acme
        .create_token(&token(Scope::Ingest, Some("api")))
        .await
        .unwrap();
    let caller = acme
        .create_token(&token(Scope::Caller, Some("api")))
        .await
        .unwrap();
    let acme_ingest = tailwater_client::Client::new(&a.server.url(), &ingest.token).unwrap();
    let mut shipped: Vec<Identity> = Vec::new();
    for runner in runner_in_each_partition() {
        let sent = batch("api", &runner, 0..7);
        assert_eq!(a.client.ingest(&sent).await.unwrap().accepted, 7);
        assert_eq!(acme_ingest.ingest(&sent).await.unwrap().accepted, 7);
        for tenant in ["acme", "default"] {
            shipped.extend(sent.records.iter().map(|record| {
                (
                    tenant.to_owned(),
                    sent.app.clone(),
                    sent.runner.clone(),
                    sent.boot.clone(),
                    record.seq,
                )
            }));
        }
        wait_stored_once(&a, "api", &runner, &(0..7).collect::<Vec<_>>()).await;
    }
    let deadline = std::time::Instant::now() + VISIBLE_WITHIN;
    let params = LogsParams {
        app: Some("api".to_owned()),
        limit: Some("10000".to_owned()),
        ..Default::default()
    };
    while acme.logs(&params).await.unwrap().records.len() < 7 * PARTITIONS as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "acme's records never stored"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let url = |query: &str| format!("{}{ROUTE}?{query}", a.server.url());
    let key = node_key_of(&seal(&data, NODE_LABEL));
    // No token, tenants' tokens, the admin's, a wrong key: all refused, and
    // never told anything of the records.
    let wrong = "0".repeat(key.len());
    for (who, offered) in [
        ("no token", None),
        ("the admin token", Some(super::common::TOKEN)),
        ("an owner token", Some(owner.token.as_str())),
        ("an ingest token", Some(ingest.token.as_str())),
        ("a caller token", Some(caller.token.as_str())),
        ("a wrong node key", Some(wrong.as_str())),
        ("a node key cut short", Some(&key[..key.len() - 1])),
    ] {
        let (status, body) = get(&url("partition=0"), offered).await;
        assert_eq!(status, 401, "{who}: {body}");
        assert!(body.contains("\"unauthorized\""), "{who}: {body}");
        assert!(!body.contains("api"), "{who}: {body}");
    }
    let (status, body) = get(&url(&format!("partition={PARTITIONS}")), Some(&key)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("partitions 0 to 3"), "{body}");
    let (status, body) = get(&url("partition=0&after_ts_ns=1"), Some(&key)).await;
    assert_eq!(status, 400, "{body}");

    // The node's credential reads each partition whole, page by page:
    // every record of both tenants once, in its own partition.
    let mut served: BTreeMap<Identity, usize> = BTreeMap::new();
    for partition in 0..PARTITIONS {
        let mut query = format!("partition={partition}");
        let mut pages = 0;
        loop {
            let (status, body) = get(&url(&query), Some(&key)).await;
            assert_eq!(status, 200, "{body}");
            let page: RepairPage = serde_json::from_str(&body).unwrap();
            assert_eq!(page.skipped_blocks, 0);
            assert_eq!(page.node, "a");
            for repaired in &page.batches {
                let batch = &repaired.batch;
                let of = tailwater_server::cluster::message::partition_of;
                assert_eq!(
                    of(&repaired.tenant, &batch.app, &batch.runner, PARTITIONS),
                    partition
                );
                for record in &batch.records {
                    assert_eq!(record.message, format!("{} {}", batch.runner, record.seq));
                    let identity = (
                        repaired.tenant.clone(),
                        batch.app.clone(),
                        batch.runner.clone(),
                        batch.boot.clone(),
                        record.seq,
                    );
                    *served.entry(identity).or_default() += 1;
                }
            }
            pages += 1;
            assert!(pages < 100, "the pages never end");
            let Some(next) = page.next else { break };
            query = format!("partition={partition}&tenant={}", next.tenant);
            if let (Some(ts_ns), Some(position)) = (next.after_ts_ns, next.after_position) {
                query.push_str(&format!("&after_ts_ns={ts_ns}&after_position={position}"));
            }
        }
    }
    let twice: Vec<_> = served.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "served twice: {twice:?}");
    shipped.sort();
    assert_eq!(served.into_keys().collect::<Vec<_>>(), shipped);

    // A stretch of the stream, with its ids: the same credential only.
    let stretch_url = |query: &str| format!("{}{}?{query}", a.server.url(), stretch::ROUTE);
    for (who, offered) in [
        ("no token", None),
        ("the admin token", Some(super::common::TOKEN)),
        ("an owner token", Some(owner.token.as_str())),
        ("a caller token", Some(caller.token.as_str())),
        ("a wrong node key", Some(wrong.as_str())),
    ] {
        let (status, body) = get(&stretch_url("from_sequence=1&to_sequence=1"), offered).await;
        assert_eq!(status, 401, "{who}: {body}");
        assert!(!body.contains("api"), "{who}: {body}");
    }
    for bad in [
        "from_sequence=0&to_sequence=1",
        "from_sequence=3&to_sequence=2",
        "to_sequence=2",
        "from_sequence=1&to_sequence=2&after=x",
        "from_sequence=1&to_sequence=2&partition=0",
    ] {
        let (status, body) = get(&stretch_url(bad), Some(&key)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let applied: Vec<u64> = std::fs::read_to_string(data.join("cluster-applied"))
        .unwrap()
        .split_whitespace()
        .map(|number| number.parse().unwrap())
        .collect();
    let (last, exact_from) = (applied[0], applied[1]);
    assert_eq!(exact_from, 1, "a node that read the stream from its start");
    // Not stored yet: the node says so, and the peer asks another.
    let (status, body) = get(
        &stretch_url(&format!("from_sequence=1&to_sequence={}", last + 1)),
        Some(&key),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("\"not_held\""), "{body}");
    // Every record of the stream once, every tenant's, with ids rising.
    let mut by_stretch: Vec<Identity> = Vec::new();
    let mut after = 0u64;
    loop {
        let query = format!("from_sequence=1&to_sequence={last}&after={after}");
        let (status, body) = get(&stretch_url(&query), Some(&key)).await;
        assert_eq!(status, 200, "{body}");
        let page: StreamPage = serde_json::from_str(&body).unwrap();
        assert_eq!(page.node, "a");
        let end = stretch::check_page(&page, 1, last, after).unwrap();
        for run in &page.runs {
            for record in &run.batch.records {
                by_stretch.push((
                    run.tenant.clone(),
                    run.batch.app.clone(),
                    run.batch.runner.clone(),
                    run.batch.boot.clone(),
                    record.seq,
                ));
            }
        }
        match page.next_after {
            Some(next) => after = next.max(end),
            None => break,
        }
    }
    by_stretch.sort();
    assert_eq!(by_stretch, shipped);
}
