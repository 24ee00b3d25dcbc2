//! Agents publishing straight to NATS (docs/agents-on-nats.md), against
//! nats-servers configured with the documented users and permissions: an
//! agent's batch on its intake subject goes through a node's pipeline
//! (redacted) and is stored by every node; its credential cannot publish
//! another app's subject (nats-server refuses), and an envelope that names
//! another app than its subject is refused by the relay, counted and told
//! in the runner's own logs; nothing of either is stored. Each tenant has
//! its own intake: one whose messages wait (rate limited) and whose intake
//! is full (its publishes refused) holds no other tenant's back.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use tailwater_client::Client;
use tailwater_model::cluster::{batch_id, encode, intake_subject, message_id, Envelope};
use tailwater_model::tenancy::{AppPatch, NewTenant, NewToken, Scope};
use tailwater_model::wire::{IngestBatch, LogsParams};
use tailwater_server::cluster::intake::{stream_name, LEGACY_STREAM};
use tailwater_server::cluster::ClusterConfig;

use super::common::{batch, scrape, server_in, TOKEN};
use super::nats::{NatsCluster, AGENT_ACCOUNTS};
use super::{node_at, wait_stored_once, Node, PARTITIONS};

/// Publishes `batch` of tenant `default` on `subject` as the agent does,
/// waiting for JetStream's acknowledgement (an error when none comes).
async fn publish(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    batch: IngestBatch,
) -> Result<(), String> {
    publish_as(jetstream, "default", subject, batch).await
}

/// [`publish`], for `tenant`.
async fn publish_as(
    jetstream: &async_nats::jetstream::Context,
    tenant: &str,
    subject: String,
    batch: IngestBatch,
) -> Result<(), String> {
    let envelope = Envelope {
        tenant: tenant.into(),
        retention_secs: 0,
        batch,
    };
    let id = message_id(&batch_id(tenant, &envelope.batch), 0);
    let publish = PublishMessage::build()
        .payload(encode(&envelope).into())
        .message_id(id);
    let ack = jetstream
        .send_publish(subject, publish)
        .await
        .map_err(|error| error.to_string())?;
    ack.await.map(|_| ()).map_err(|error| error.to_string())
}

/// [`publish_as`], again while no stream answers on the subject yet (a
/// stream just made: its subjects reach every NATS server shortly after
/// its leader is elected), as the agent sends again; the same message id,
/// so stored once.
async fn publish_taken(
    jetstream: &async_nats::jetstream::Context,
    tenant: &str,
    subject: String,
    batch: IngestBatch,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match publish_as(jetstream, tenant, subject.clone(), batch.clone()).await {
            Err(error) if error.contains("no stream found") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            published => return published,
        }
    }
}

/// Waits until the nodes made `tenant`'s intake stream (they follow the
/// registry), asking JetStream as a node.
async fn wait_intake_stream(nats: &NatsCluster, tenant: &str) {
    let client = async_nats::ConnectOptions::new()
        .user_and_password("node".into(), "nodepw".into())
        .connect(nats.urls()[0].as_str())
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Made, and its leader elected (until then it answers no publish).
        if let Ok(mut stream) = jetstream.get_stream(stream_name(tenant)).await {
            let info = stream.info().await.unwrap();
            if info.cluster.as_ref().is_some_and(|c| c.leader.is_some()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no intake stream for tenant {tenant}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many records of `app`'s `runner` the node holds.
async fn records_of(node: &Node, app: &str, runner: &str) -> usize {
    let params = LogsParams {
        app: Some(app.to_owned()),
        runner: Some(runner.to_owned()),
        limit: Some("1000".to_owned()),
        ..Default::default()
    };
    node.client.logs(&params).await.unwrap().records.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_batch_on_its_intake_subject_is_stored_and_no_other_app_can_be_written() {
    let nats = NatsCluster::start_with(3, AGENT_ACCOUNTS);
    let nodes = nats.urls_as("node", "nodepw");
    let a = node_at(tempfile::tempdir().unwrap(), "a", nodes.clone()).await;
    let b = node_at(tempfile::tempdir().unwrap(), "b", nodes).await;
    // Both apps exist, so only the permissions keep web's lines out: made by a
    // batch over HTTP.
    for app in ["api", "web"] {
        a.client.ingest(&batch(app, "http", 0..1)).await.unwrap();
    }

    wait_intake_stream(&nats, "default").await;
    let agent = async_nats::ConnectOptions::new()
        .user_and_password("agent-default-api".into(), "agentpw".into())
        .custom_inbox_prefix("_INBOX_default.api")
        .connect(nats.urls()[0].as_str())
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(3))
        .build(agent);

    // Its own subject: acknowledged, relayed through the pipeline
    // (redacted), stored by every node once.
    let mut lines = batch("api", "gpu-7", 0..50);
    lines.records[3].message = "gpu-7 3 key AKIAIOSFODNN7EXAMPLE".into();
    let subject = intake_subject("default", "api", "gpu-7");
    publish_taken(&jetstream, "default", subject, lines)
        .await
        .unwrap();
    let seqs: Vec<u64> = (0..50).collect();
    wait_stored_once(&a, "api", "gpu-7", &seqs).await;
    wait_stored_once(&b, "api", "gpu-7", &seqs).await;
    let page = b
        .client
        .logs(&LogsParams {
            app: Some("api".into()),
            runner: Some("gpu-7".into()),
            limit: Some("100".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        page.records.iter().all(|r| !r.message.contains("AKIA")),
        "stored unredacted"
    );

    // Another app's subject: nats-server refuses the publish, nothing
    // acknowledges it.
    let refused = publish(
        &jetstream,
        intake_subject("default", "web", "gpu-7"),
        batch("web", "gpu-7", 0..5),
    )
    .await;
    assert!(refused.is_err(), "published to another app's subject");
    let refused = publish(
        &jetstream,
        "tailwater.batches.0".into(),
        batch("web", "gpu-7", 0..5),
    )
    .await;
    assert!(refused.is_err(), "published onto a partition");

    // Its own subject, the envelope claiming another app: acknowledged by
    // JetStream, refused by the relay, counted.
    publish(
        &jetstream,
        intake_subject("default", "api", "gpu-7"),
        batch("web", "gpu-7", 0..5),
    )
    .await
    .unwrap();
    let key = "tailwater_cluster_intake_refused_total{reason=\"identity\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut refusals = 0.0;
        for node in [&a, &b] {
            let samples = scrape(&node.server, Some(TOKEN)).await;
            refusals += samples.get(key).copied().unwrap_or(0.0);
        }
        if refusals >= 1.0 {
            assert_eq!(refusals, 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the relay never refused the lie");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in [&a, &b] {
        assert_eq!(
            records_of(node, "web", "gpu-7").await,
            0,
            "stored: {}",
            node.server.url()
        );
    }
    // The runner's owner sees it in the runner's own logs, on every node.
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = node
                .client
                .logs(&LogsParams {
                    app: Some("api".into()),
                    runner: Some("gpu-7".into()),
                    stream: Some("system".into()),
                    limit: Some("100".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let told = page.records.iter().find(|record| {
                record.fields.get("event").and_then(|e| e.as_str()) == Some("server_refused")
            });
            if let Some(told) = told {
                assert_eq!(told.fields["reason"], "identity", "{told:?}");
                assert!(told.message.contains("none of it is stored"), "{told:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the refusal is not in the runner's logs on {}",
                node.server.url()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A node whose intake consumers may hold 4 messages unacknowledged and
/// whose tenants' intake streams hold at most 1 MiB.
async fn tight_node(name: &str, nats: &NatsCluster) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let urls = nats.urls_as("node", "nodepw");
    let (server, client) = server_in(dir.path(), TOKEN, |config| {
        let mut cluster = ClusterConfig::new(urls, name.to_owned());
        cluster.partitions = PARTITIONS;
        cluster.max_bytes = 256 * 1024 * 1024;
        cluster.node_ttl = Duration::from_secs(2);
        cluster.max_ack_pending = 4;
        cluster.intake_tenant_bytes = 1024 * 1024;
        config.cluster = Some(cluster);
    })
    .await;
    Node {
        _dir: dir,
        server,
        client,
    }
}

/// `lines` records of `runner` from `first` on, each 1000 random (so
/// incompressible) hex characters.
fn heavy_batch(app: &str, runner: &str, first: u64, lines: u64) -> IngestBatch {
    let mut heavy = batch(app, runner, first..first + lines);
    for record in &mut heavy.records {
        let noise: Vec<u8> = (0..500).map(|_| rand::random::<u8>()).collect();
        record.message = format!("{} {}", record.message, hex::encode(noise));
    }
    heavy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_intake_waits_or_is_full_holds_no_other_tenant_back() {
    let nats = NatsCluster::start_with(3, AGENT_ACCOUNTS);
    let a = tight_node("a", &nats).await;
    let b = tight_node("b", &nats).await;
    // Tenant default's app slow may take 1 line a second: its agents'
    // batches of 100 lines wait (nak'ed for ~100 s each) in its intake.
    a.client.ingest(&batch("slow", "http", 0..1)).await.unwrap();
    let patch = AppPatch {
        rate_limit_lines_per_sec: Some(Some(1)),
        ..Default::default()
    };
    a.client.update_app(None, "slow", &patch).await.unwrap();
    let new = NewTenant {
        name: "other".into(),
        private_logs: false,
    };
    a.client.create_tenant(&new).await.unwrap();
    let reader = a
        .client
        .create_token(&NewToken {
            scope: Scope::Owner,
            tenant: Some("other".into()),
            app: None,
            expires_in: None,
            name: None,
        })
        .await
        .unwrap();
    let other = Client::new(&b.server.url(), &reader.token).unwrap();
    wait_intake_stream(&nats, "default").await;
    wait_intake_stream(&nats, "other").await;
    // Both nodes know of the rate limit before slow's lines come.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b
        .client
        .apps(None)
        .await
        .unwrap()
        .iter()
        .all(|app| app.name != "slow" || app.settings.rate_limit_lines_per_sec != Some(1))
    {
        assert!(Instant::now() < deadline, "b never learned slow's limit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // As a node (any publisher would do: the permissions are the other
    // test's); slow's runner publishes until its tenant's intake is full.
    let client = async_nats::ConnectOptions::new()
        .user_and_password("node".into(), "nodepw".into())
        .connect(nats.urls()[0].as_str())
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client);
    let mut refusal = None;
    for message in 0..40 {
        let lines = heavy_batch("slow", "s1", message * 100, 100);
        let subject = intake_subject("default", "slow", "s1");
        if let Err(error) = publish_taken(&jetstream, "default", subject, lines).await {
            refusal = Some((message, error));
            break;
        }
    }
    let (taken, error) = refusal.expect("40 messages of 100 KB fit in a 1 MiB intake");
    assert!(taken >= 8, "refused after {taken} messages: {error}");
    assert!(error.contains("maximum bytes"), "{error}");

    // Another tenant's agent meanwhile: taken, relayed and stored at once,
    // not after slow's messages' delays (~100 s).
    let subject = intake_subject("other", "fast", "f1");
    publish_taken(&jetstream, "other", subject, batch("fast", "f1", 0..20))
        .await
        .expect("another tenant's intake takes its batch");
    let params = LogsParams {
        app: Some("fast".into()),
        runner: Some("f1".into()),
        limit: Some("100".into()),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while other.logs(&params).await.unwrap().records.len() < 20 {
        assert!(
            Instant::now() < deadline,
            "another tenant's batch waited behind slow's"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still full: slow's lines wait, none lost, its publishes refused.
    let again = publish_as(
        &jetstream,
        "default",
        intake_subject("default", "slow", "s1"),
        heavy_batch("slow", "s1", 10_000, 100),
    )
    .await;
    assert!(again.is_err(), "a full intake took more");
    let waited = "tailwater_cluster_intake_waited_total{}";
    let mut waits = 0.0;
    let mut seen = Vec::new();
    for node in [&a, &b] {
        let samples = scrape(&node.server, Some(TOKEN)).await;
        waits += samples.get(waited).copied().unwrap_or(0.0);
        seen.extend(
            samples
                .into_iter()
                .filter(|(key, _)| key.contains("intake")),
        );
    }
    assert!(waits >= 1.0, "slow's messages never waited: {seen:?}");
    // The operator sees the tenant's intake full.
    let full = "tailwater_cluster_intake_bytes{tenant=\"default\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let samples = scrape(&a.server, Some(TOKEN)).await;
        let bytes = samples.get(full).copied().unwrap_or(0.0);
        let bound = "tailwater_cluster_intake_max_bytes{tenant=\"default\"}";
        if bytes > 900.0 * 1024.0 {
            assert_eq!(samples.get(bound).copied(), Some(1024.0 * 1024.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "default's intake shows {bytes} bytes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_intake_stream_of_before_is_relayed_then_deleted_for_the_tenants_own() {
    let nats = NatsCluster::start_with(3, AGENT_ACCOUNTS);
    let client = async_nats::ConnectOptions::new()
        .user_and_password("node".into(), "nodepw".into())
        .connect(nats.urls()[0].as_str())
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client);
    // As nodes made it before each tenant had its own, holding a batch
    // an agent published then.
    let legacy = async_nats::jetstream::stream::Config {
        name: LEGACY_STREAM.to_owned(),
        subjects: vec!["tailwater.intake.*.*.*".to_owned()],
        num_replicas: 3,
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let made = jetstream.get_or_create_stream(legacy.clone()).await;
        let published = match made {
            Ok(_) => {
                let subject = intake_subject("default", "api", "old-1");
                publish(&jetstream, subject, batch("api", "old-1", 0..10)).await
            }
            Err(error) => Err(error.to_string()),
        };
        match published {
            Ok(()) => break,
            Err(error) => assert!(Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let a = node_at(
        tempfile::tempdir().unwrap(),
        "a",
        nats.urls_as("node", "nodepw"),
    )
    .await;
    let seqs: Vec<u64> = (0..10).collect();
    wait_stored_once(&a, "api", "old-1", &seqs).await;
    // Gone once empty, and the tenant's own stream made in its place.
    wait_intake_stream(&nats, "default").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while jetstream.get_stream(LEGACY_STREAM).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the legacy stream is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let subject = intake_subject("default", "api", "new-1");
    publish_taken(&jetstream, "default", subject, batch("api", "new-1", 0..10))
        .await
        .unwrap();
    wait_stored_once(&a, "api", "new-1", &seqs).await;
}
