//! What distributed mode did, by partition: read at each scrape of
//! `GET /metrics` (`tailwater_cluster_*`). `tailwater cluster status`
//! shows JetStream's own figures instead ([`super::status`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One partition's counters on this node.
#[derive(Debug, Default)]
pub struct PartitionStats {
    /// Batches this node published (answered only after JetStream's ack).
    pub published_batches: AtomicU64,
    /// Of them, batches JetStream already had (a sender's retry).
    pub published_duplicates: AtomicU64,
    /// Batches this node could not publish (the sender was answered 503).
    pub publish_failures: AtomicU64,
    /// Messages this node stored and acknowledged (a batch larger than
    /// the servers' `max_payload` travels as several).
    pub materialized_batches: AtomicU64,
    /// Records of them this node's store took.
    pub materialized_records: AtomicU64,
    /// Records of them the store refused (out of order, past retention).
    pub materialized_refused: AtomicU64,
    /// Messages this node could not store for now: left unacknowledged
    /// and delivered again after a while.
    pub materialize_failures: AtomicU64,
    /// Messages that are not batches (another version's, or damaged):
    /// terminated, never stored. Each is in the log with its sequence.
    pub undecodable: AtomicU64,
    /// Stretches of the stream dropped (past the replay window) before this
    /// node read them (`cluster::window`).
    pub window_gaps: AtomicU64,
    /// The stream sequences in them (of all partitions: an upper bound on
    /// this partition's messages missing here).
    pub window_gap_sequences: AtomicU64,
    /// Gaps filled from a live peer's store (`cluster::repair`).
    pub window_gaps_repaired: AtomicU64,
    /// Records those repairs stored here (the peer's records this node
    /// already held are not counted).
    pub repaired_records: AtomicU64,
    /// Repairs of this partition that failed (no peer could serve the
    /// whole partition, or one failed midway); tried again later.
    pub repair_failures: AtomicU64,
    /// The stream sequence of the last message this node stored.
    pub last_sequence: AtomicU64,
}

impl PartitionStats {
    pub fn published(&self, duplicate: bool) {
        self.published_batches.fetch_add(1, Relaxed);
        if duplicate {
            self.published_duplicates.fetch_add(1, Relaxed);
        }
    }

    pub fn publish_failed(&self) {
        self.publish_failures.fetch_add(1, Relaxed);
    }
}

/// What this node relayed of the intake stream (agents' batches).
#[derive(Debug, Default)]
pub struct IntakeStats {
    /// Messages this node put through the pipeline and acknowledged.
    pub relayed: AtomicU64,
    /// Messages the pipeline could not take now (a rate limit, the
    /// cluster unavailable): left to come again after a delay.
    pub waited: AtomicU64,
    /// Refusals that could not be told in their runner's logs.
    pub untold: AtomicU64,
    /// Messages terminated, by reason (`identity`, `subject`,
    /// `undecodable`, the pipeline's `invalid`, `denied`, `app`).
    refused: Mutex<Vec<(&'static str, u64)>>,
    /// Each tenant's intake stream as last measured: bytes waiting, and
    /// its bound (`--nats-intake-tenant-bytes`).
    tenants: Mutex<BTreeMap<String, (u64, i64)>>,
}

impl IntakeStats {
    /// What `tenant`'s intake stream holds now, of `bound` bytes.
    pub fn measured(&self, tenant: &str, bytes: u64, bound: i64) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        tenants.insert(tenant.to_owned(), (bytes, bound));
    }

    /// `tenant` is no longer relayed here.
    pub fn forget(&self, tenant: &str) {
        let mut tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        tenants.remove(tenant);
    }

    /// Each tenant's intake bytes and bound, as last measured.
    pub fn tenants(&self) -> Vec<(String, u64, i64)> {
        let tenants = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        tenants
            .iter()
            .map(|(tenant, (bytes, bound))| (tenant.clone(), *bytes, *bound))
            .collect()
    }

    pub fn refused(&self, reason: &'static str) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match refused.iter_mut().find(|(seen, _)| *seen == reason) {
            Some((_, count)) => *count += 1,
            None => refused.push((reason, 1)),
        }
    }

    /// Refusals so far, by reason.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Every partition's counters on this node.
#[derive(Debug)]
pub struct Stats {
    partitions: Vec<PartitionStats>,
    pub intake: IntakeStats,
    /// Nodes with a live heartbeat, this one included, as last listed.
    pub live_nodes: AtomicU64,
}

impl Stats {
    pub fn new(partitions: u32) -> Stats {
        Stats {
            partitions: (0..partitions).map(|_| PartitionStats::default()).collect(),
            intake: IntakeStats::default(),
            live_nodes: AtomicU64::new(0),
        }
    }

    /// The counters of `partition` (below the count: as `partition_of` gives).
    pub fn partition(&self, partition: u32) -> &PartitionStats {
        &self.partitions[partition as usize % self.partitions.len()]
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Figure = fn(&PartitionStats) -> &AtomicU64;

/// Reads [`Stats`] at each scrape.
#[derive(Debug)]
pub struct StatsCollector(pub std::sync::Arc<Stats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters: [(&str, &str, Figure); 13] = [
            ("cluster_published_batches", "Batches this node published to the cluster's stream, by partition (each acknowledged by JetStream before the sender was answered)", |s| &s.published_batches),
            ("cluster_published_duplicates", "Of them, batches JetStream already held (a sender's retry, stored once)", |s| &s.published_duplicates),
            ("cluster_publish_failures", "Batches this node could not publish (the sender was answered 503 cluster_unavailable and sends again)", |s| &s.publish_failures),
            ("cluster_materialized_batches", "Messages (batches, or parts of one larger than the servers' max_payload) this node stored from the cluster's stream and acknowledged", |s| &s.materialized_batches),
            ("cluster_materialized_records", "Records this node's store took from the cluster's stream (duplicates not counted)", |s| &s.materialized_records),
            ("cluster_materialized_refused", "Records in the cluster's stream this node's store refused (out_of_order, older_than_retention)", |s| &s.materialized_refused),
            ("cluster_materialize_failures", "Batches this node could not store for now; delivered again after a while", |s| &s.materialize_failures),
            ("cluster_window_gaps", "Stretches of the cluster's stream dropped (past --nats-max-age or --nats-max-bytes) before this node read them: this partition's records among them are missing here (GET /v1/cluster lists them)", |s| &s.window_gaps),
            ("cluster_window_gap_sequences", "Stream sequences (of all partitions) in those stretches: at most this many of this partition's messages are missing here", |s| &s.window_gap_sequences),
            ("cluster_window_gaps_repaired", "Gaps this node filled from a live peer's store: every record of the partition the peer held is stored here once (GET /v1/cluster shows them repaired)", |s| &s.window_gaps_repaired),
            ("cluster_repaired_records", "Records repairs of gaps stored here (what this node already held not counted)", |s| &s.repaired_records),
            ("cluster_repair_failures", "Repairs of a gap that did not complete (no live peer held the whole partition, or one failed midway); tried again later, the gap shown unrepaired until one completes", |s| &s.repair_failures),
            ("cluster_undecodable", "Messages in the cluster's stream that are not batches this node reads; never stored (the log names their sequence)", |s| &s.undecodable),
        ];
        for (name, help, figure) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for (partition, stats) in self.0.partitions.iter().enumerate() {
                let labels = PartitionLabels {
                    partition: partition.to_string(),
                };
                ConstCounter::new(figure(stats).load(Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "cluster_last_sequence",
            "The stream sequence of the last batch this node stored, by partition",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for (partition, stats) in self.0.partitions.iter().enumerate() {
            let labels = PartitionLabels {
                partition: partition.to_string(),
            };
            let last = i64::try_from(stats.last_sequence.load(Relaxed)).unwrap_or(i64::MAX);
            ConstGauge::new(last).encode(family.encode_family(&labels)?)?;
        }
        let relayed = ConstCounter::new(self.0.intake.relayed.load(Relaxed));
        let family = encoder.encode_descriptor(
            "cluster_intake_relayed",
            "Messages agents published to the intake stream that this node put through the ingest pipeline and acknowledged",
            None,
            relayed.metric_type(),
        )?;
        relayed.encode(family)?;
        for (name, help, figure) in [
            ("cluster_intake_waited", "Intake messages the pipeline could not take now (a rate limit, the cluster unavailable): they wait in their tenant's intake stream and come again", &self.0.intake.waited),
            ("cluster_intake_untold", "Intake refusals this node could not write in their runner's logs (logged here instead)", &self.0.intake.untold),
        ] {
            let counter = ConstCounter::new(figure.load(Relaxed));
            let family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "cluster_intake_refused",
            "Intake messages this node did not relay, by reason: identity (the envelope names another tenant, app or runner than its subject), subject, undecodable, and the pipeline's invalid (a label or limit), denied, app (the app cannot be made); terminated, never stored, and told in the runner's logs (server_refused)",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (reason, count) in self.0.intake.refusals() {
            let labels = ReasonLabels {
                reason: reason.to_owned(),
            };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let tenants = self.0.intake.tenants();
        for (name, help, bound) in [
            ("cluster_intake_bytes", "Bytes each tenant's agents published to NATS that wait in its intake stream, not yet relayed (measured every few seconds)", false),
            ("cluster_intake_max_bytes", "The most each tenant's intake stream holds (--nats-intake-tenant-bytes): there, its agents' publishes are refused and their lines wait in their spools", true),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            for (tenant, bytes, max_bytes) in &tenants {
                let labels = TenantLabels {
                    tenant: tenant.clone(),
                };
                let value = if bound {
                    *max_bytes
                } else {
                    i64::try_from(*bytes).unwrap_or(i64::MAX)
                };
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let nodes = i64::try_from(self.0.live_nodes.load(Relaxed)).unwrap_or(i64::MAX);
        let gauge = ConstGauge::new(nodes);
        let family = encoder.encode_descriptor(
            "cluster_nodes",
            "Nodes whose heartbeat is younger than --nats-node-ttl, this one included",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(family)?;
        Ok(())
    }
}
