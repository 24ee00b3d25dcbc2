//! Agents publishing straight to NATS (docs/agents-on-nats.md), against
//! nats-servers configured with the documented users and permissions: an
//! agent's batch on its intake subject goes through a node's pipeline
//! (redacted) and is stored by every node; its credential cannot publish
//! another app's subject (nats-server refuses), and an envelope that names
//! another app than its subject is refused by the relay and counted;
//! nothing of either is stored.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use tailwater_model::cluster::{batch_id, encode, intake_subject, message_id, Envelope};
use tailwater_model::wire::{IngestBatch, LogsParams};

use super::common::{batch, scrape, TOKEN};
use super::nats::{NatsCluster, AGENT_ACCOUNTS};
use super::{node_at, wait_stored_once, Node};

/// Publishes `batch` of tenant `default` on `subject` as the agent does,
/// waiting for JetStream's acknowledgement (an error when none comes).
async fn publish(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    batch: IngestBatch,
) -> Result<(), String> {
    let envelope = Envelope {
        tenant: "default".into(),
        retention_secs: 0,
        batch,
    };
    let id = message_id(&batch_id("default", &envelope.batch), 0);
    let publish = PublishMessage::build()
        .payload(encode(&envelope).into())
        .message_id(id);
    let ack = jetstream
        .send_publish(subject, publish)
        .await
        .map_err(|error| error.to_string())?;
    ack.await.map(|_| ()).map_err(|error| error.to_string())
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
    publish(&jetstream, intake_subject("default", "api", "gpu-7"), lines)
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
}
