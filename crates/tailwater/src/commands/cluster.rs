//! `tailwater cluster status`: distributed mode as the node asked sees it:
//! the live nodes, and per partition the stream's last sequence and each
//! node's consumer of it (how far it has stored, what is pending). Admin
//! tokens.

use clap::{Args, Subcommand};
use tailwater_model::wire::{ClusterGap, ClusterStatus};

use super::output::{duration_ms, print_json, print_table};
use crate::Connection;

#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  tailwater cluster status\n  tailwater cluster status --json")]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// The live nodes, and each partition's last sequence and every node's
    /// consumer lag (GET /v1/cluster).
    #[command(
        after_help = "Examples:\n  tailwater cluster status\n  tailwater cluster status --profile prod --json"
    )]
    Status {
        #[command(flatten)]
        connection: Connection,
        /// The API's JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<u8> {
    match args.command {
        ClusterCommand::Status { connection, json } => {
            let status = connection.client()?.cluster_status().await?;
            if json {
                return print_json(serde_json::to_value(&status)?);
            }
            for line in render(&status) {
                match line {
                    Line::Text(text) => println!("{text}"),
                    Line::Table(rows) => print_table(&rows)?,
                }
            }
            Ok(0)
        }
    }
}

enum Line {
    Text(String),
    Table(Vec<Vec<String>>),
}

/// What `tailwater cluster status` prints of `status`.
fn render(status: &ClusterStatus) -> Vec<Line> {
    let Some(node) = &status.node else {
        return vec![Line::Text(format!(
            "mode     {} (no --nats): this server is not part of a cluster",
            status.mode
        ))];
    };
    let mut lines = vec![
        Line::Text(format!("mode     {}, answered by node {node}", status.mode)),
        Line::Text(format!("nodes    {} live", status.nodes.len())),
    ];
    let mut nodes = vec![["NODE", "URL", "VERSION", "HEARTBEAT", "REGISTRY"]
        .map(String::from)
        .to_vec()];
    nodes.extend(status.nodes.iter().map(|live| {
        vec![
            live.node.clone(),
            live.url.clone(),
            live.version.clone(),
            format!("{} ago", duration_ms(Some(live.heartbeat_age_ms))),
            format!("rev {}", live.registry_revision),
        ]
    }));
    lines.push(Line::Table(nodes));
    let behind = status
        .partitions
        .iter()
        .flat_map(|partition| &partition.consumers)
        .filter(|consumer| consumer.pending + consumer.ack_pending > 0 || consumer.error.is_some())
        .count();
    lines.push(Line::Text(format!(
        "partitions {} ({behind} consumers behind or unreadable)",
        status.partitions.len()
    )));
    let mut table = vec![[
        "PARTITION",
        "LAST SEQ",
        "CONSUMER",
        "DELIVERED",
        "ACK FLOOR",
        "PENDING",
        "ACK PENDING",
    ]
    .map(String::from)
    .to_vec()];
    for partition in &status.partitions {
        if partition.consumers.is_empty() {
            table.push(vec![
                partition.partition.to_string(),
                partition.last_sequence.to_string(),
                "-".into(),
            ]);
        }
        for consumer in &partition.consumers {
            let mut row = vec![
                partition.partition.to_string(),
                partition.last_sequence.to_string(),
                consumer.consumer.clone(),
            ];
            match &consumer.error {
                Some(error) => row.push(format!("unreadable: {error}")),
                None => row.extend(
                    [
                        consumer.delivered,
                        consumer.ack_floor,
                        consumer.pending,
                        consumer.ack_pending,
                    ]
                    .map(|figure| figure.to_string()),
                ),
            }
            table.push(row);
        }
    }
    lines.push(Line::Table(table));
    let gaps: Vec<(&str, &ClusterGap)> = status
        .partitions
        .iter()
        .flat_map(|partition| &partition.consumers)
        .flat_map(|consumer| {
            consumer
                .gaps
                .iter()
                .map(|gap| (consumer.node.as_str(), gap))
        })
        .collect();
    if !gaps.is_empty() {
        let repaired = gaps
            .iter()
            .filter(|(_, gap)| gap.repaired_ms.is_some())
            .count();
        lines.push(Line::Text(format!(
            "gaps     {} ({repaired} repaired): the stream dropped these sequences (--nats-max-age, --nats-max-bytes) before the node read them; until the node repairs a gap from a live peer, the partition's records among them are missing from its store",
            gaps.len()
        )));
        let mut table = vec![["NODE", "PARTITION", "SEQUENCES", "FOUND", "REPAIRED"]
            .map(String::from)
            .to_vec()];
        let when = |ms: i64| {
            jiff::Timestamp::from_millisecond(ms)
                .map_or_else(|_| ms.to_string(), |at| at.to_string())
        };
        for (node, gap) in gaps {
            let repaired = match (gap.repaired_ms, &gap.repaired_from) {
                (Some(ms), Some(peer)) => format!("{} from {peer}", when(ms)),
                (Some(ms), None) => when(ms),
                (None, _) => "not yet".to_owned(),
            };
            table.push(vec![
                node.to_owned(),
                gap.partition.to_string(),
                format!("{}-{}", gap.from_sequence, gap.to_sequence),
                when(gap.detected_ms),
                repaired,
            ]);
        }
        lines.push(Line::Table(table));
    }
    lines
}

#[cfg(test)]
mod tests {
    use tailwater_model::wire::{ClusterConsumer, ClusterNode, ClusterPartition};

    use super::*;

    fn text(lines: &[Line]) -> String {
        let mut out = String::new();
        for line in lines {
            match line {
                Line::Text(text) => out.push_str(&format!("{text}\n")),
                Line::Table(rows) => {
                    for row in rows {
                        out.push_str(&format!("{}\n", row.join(" | ")));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn an_embedded_server_is_said_to_be_one() {
        let status = ClusterStatus {
            mode: "embedded".into(),
            node: None,
            nodes: vec![],
            partitions: vec![],
        };
        assert_eq!(
            text(&render(&status)),
            "mode     embedded (no --nats): this server is not part of a cluster\n"
        );
    }

    #[test]
    fn nodes_and_each_consumer_of_each_partition_are_shown() {
        let consumer = |node: &str, pending, error: Option<&str>| ClusterConsumer {
            node: node.into(),
            consumer: format!("{node}-p0"),
            delivered: 7,
            ack_floor: 7,
            pending,
            ack_pending: 0,
            error: error.map(String::from),
            gaps: Vec::new(),
        };
        let status = ClusterStatus {
            mode: "cluster".into(),
            node: Some("a".into()),
            nodes: vec![ClusterNode {
                node: "a".into(),
                url: "http://127.0.0.1:7070".into(),
                version: "0.1.0".into(),
                started_ms: 0,
                heartbeat_age_ms: 1500,
                registry_revision: 3,
            }],
            partitions: vec![ClusterPartition {
                partition: 0,
                last_sequence: 9,
                consumers: vec![
                    consumer("a", 2, None),
                    consumer("b", 0, Some("consumer not found")),
                ],
            }],
        };
        assert_eq!(
            text(&render(&status)),
            "mode     cluster, answered by node a\n\
             nodes    1 live\n\
             NODE | URL | VERSION | HEARTBEAT | REGISTRY\n\
             a | http://127.0.0.1:7070 | 0.1.0 | 1.5s ago | rev 3\n\
             partitions 1 (2 consumers behind or unreadable)\n\
             PARTITION | LAST SEQ | CONSUMER | DELIVERED | ACK FLOOR | PENDING | ACK PENDING\n\
             0 | 9 | a-p0 | 7 | 7 | 2 | 0\n\
             0 | 9 | b-p0 | unreadable: consumer not found\n"
        );
    }

    #[test]
    fn what_a_node_missed_past_the_replay_window_is_listed() {
        let status = ClusterStatus {
            mode: "cluster".into(),
            node: Some("a".into()),
            nodes: Vec::new(),
            partitions: vec![ClusterPartition {
                partition: 3,
                last_sequence: 90,
                consumers: vec![ClusterConsumer {
                    node: "b".into(),
                    consumer: "b-p3".into(),
                    delivered: 90,
                    ack_floor: 90,
                    pending: 0,
                    ack_pending: 0,
                    error: None,
                    gaps: vec![
                        ClusterGap {
                            partition: 3,
                            from_sequence: 12,
                            to_sequence: 40,
                            detected_ms: 0,
                            repaired_ms: None,
                            repaired_from: None,
                        },
                        ClusterGap {
                            partition: 3,
                            from_sequence: 50,
                            to_sequence: 60,
                            detected_ms: 0,
                            repaired_ms: Some(1_000),
                            repaired_from: Some("a".into()),
                        },
                    ],
                }],
            }],
        };
        let shown = text(&render(&status));
        assert!(
            shown.contains("gaps     2 (1 repaired): the stream dropped these sequences"),
            "{shown}"
        );
        assert!(
            shown.contains("b | 3 | 12-40 | 1970-01-01T00:00:00Z | not yet\n"),
            "{shown}"
        );
        assert!(
            shown.contains("b | 3 | 50-60 | 1970-01-01T00:00:00Z | 1970-01-01T00:00:01Z from a\n"),
            "{shown}"
        );
    }
}
