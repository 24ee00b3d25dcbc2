//! What `GET /v1/cluster` (and `tailwater cluster status`) shows: the live
//! nodes from the heartbeat bucket and, per partition, the stream's last
//! sequence and each live node's consumer of the stream beside it (a node
//! has read the partition through once its consumer's ack floor reaches
//! that sequence), as JetStream says (stream and consumer info requests a
//! 2.9 server answers).

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::future::join_all;
use std::collections::HashMap;

use tailwater_model::wire::{
    ClusterConsumer, ClusterGap, ClusterNode, ClusterPartition, ClusterStatus,
};

use super::{members, Cluster, ClusterConfig, STREAM};

/// The cluster as this node sees it now. Fails only when the stream or the
/// bucket cannot be read (no quorum); a consumer JetStream cannot describe
/// is shown with its error.
pub async fn status(cluster: &Cluster) -> anyhow::Result<ClusterStatus> {
    let bucket = members::open(cluster).await?;
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let live = members::live_in(&bucket).await?;
    let gaps: HashMap<String, Vec<ClusterGap>> = live
        .iter()
        .map(|(heartbeat, _)| (heartbeat.node.clone(), heartbeat.gaps.clone()))
        .collect();
    let mut nodes: Vec<ClusterNode> = live
        .into_iter()
        .map(|(heartbeat, stored_ms)| ClusterNode {
            node: heartbeat.node,
            url: heartbeat.url,
            version: heartbeat.version,
            started_ms: heartbeat.started_ms,
            heartbeat_age_ms: u64::try_from(now_ms.saturating_sub(stored_ms)).unwrap_or(0),
            registry_revision: heartbeat.registry_revision,
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let stream = cluster
        .jetstream
        .get_stream_no_info(STREAM)
        .await
        .map_err(|error| anyhow::anyhow!("cannot open the stream {STREAM}: {error}"))?;
    let names: Vec<&str> = nodes.iter().map(|node| node.node.as_str()).collect();
    let partitions = join_all((0..cluster.config.partitions).map(|partition| {
        let stream = &stream;
        let names = &names;
        let gaps = &gaps;
        async move {
            let last_sequence = match stream
                .get_last_raw_message_by_subject(&ClusterConfig::subject(partition))
                .await
            {
                Ok(message) => message.sequence,
                Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
                Err(error) => {
                    return Err(anyhow::anyhow!(
                        "cannot read the last message of partition {partition}: {error}"
                    ))
                }
            };
            let consumers = join_all(names.iter().map(|node| async move {
                // A node reads every partition through its one consumer of
                // the stream: what it has read of the partition is all of
                // it up to the consumer's position.
                let consumer = super::materialize::consumer_name(node);
                let mut shown = ClusterConsumer {
                    node: (*node).to_owned(),
                    consumer: consumer.clone(),
                    delivered: 0,
                    ack_floor: 0,
                    pending: 0,
                    ack_pending: 0,
                    error: None,
                    gaps: gaps
                        .get(*node)
                        .into_iter()
                        .flatten()
                        .filter(|gap| gap.partition == partition)
                        .cloned()
                        .collect(),
                };
                match stream.consumer_info(&consumer).await {
                    Ok(info) => {
                        shown.delivered = info.delivered.stream_sequence;
                        shown.ack_floor = info.ack_floor.stream_sequence;
                        shown.pending = info.num_pending;
                        shown.ack_pending = info.num_ack_pending as u64;
                    }
                    Err(error) => shown.error = Some(error.to_string()),
                }
                shown
            }))
            .await;
            Ok(ClusterPartition {
                partition,
                last_sequence,
                consumers,
            })
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ClusterStatus {
        mode: "cluster".to_owned(),
        node: Some(cluster.config.node.clone()),
        nodes,
        partitions,
    })
}
