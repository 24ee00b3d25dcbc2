//! The server's metrics, and their Prometheus exposition (`GET /metrics`).
//!
//! One home for every number the server counts: what ingest stored, what
//! its limits refused or cut, what redaction replaced, what the agents
//! report they throttled or dropped (their `system` records, read as they
//! arrive), live tail clients, query latency. The store's size and
//! counters, what slow tail clients missed ([`crate::tail::TailStats`]) and
//! the runner table (runners by state, evictions) are read from their own
//! homes at each scrape, so they are never stale and never counted twice.
//!
//! Series are labelled by tenant and app (and reason or pattern), never by
//! runner or request: those are unbounded.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tailwater_store::Store;

use crate::runners::Runners;
use crate::tail::TailStats;

/// The content type of [`Metrics::render`]'s text (OpenMetrics, which
/// Prometheus reads natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    pub tenant: String,
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub tenant: String,
    pub app: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatternLabels {
    pub tenant: String,
    pub app: String,
    pub pattern: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

type Counters<L> = Family<L, Counter>;

/// Every metric the server keeps. Shared through [`crate::AppState`].
pub struct Metrics {
    registry: Registry,
    pub ingested_lines: Counters<AppLabels>,
    pub ingested_bytes: Counters<AppLabels>,
    pub refused_batches: Counters<ReasonLabels>,
    pub refused_lines: Counters<ReasonLabels>,
    pub cut_lines: Counters<ReasonLabels>,
    pub redactions: Counters<PatternLabels>,
    pub agent_throttled_lines: Counters<AppLabels>,
    pub agent_dropped_lines: Counters<ReasonLabels>,
    pub agent_failovers: Counters<AppLabels>,
    pub refused_records: Counters<ReasonLabels>,
    pub retimed_records: Counters<ReasonLabels>,
    pub late_request_starts: Counters<AppLabels>,
    count_refused: Counters<TenantReasonLabels>,
    query_seconds: Family<EndpointLabels, Histogram>,
    /// Connections open now ([`crate::serve`]).
    pub connections_open: Gauge,
    connections_closed: Counters<CloseLabels>,
    requests_list_cut: Counter,
    loki_queries_refused: Counters<CloseLabels>,
    ingest_bodies: Counters<FormatLabels>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FormatLabels {
    pub format: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CloseLabels {
    pub reason: String,
}

impl Metrics {
    /// Metrics of a server over `store`, whose size is read at each scrape.
    pub fn new(store: Arc<Store>) -> Metrics {
        let mut registry = Registry::with_prefix("tailwater");
        let ingested_lines = counters(
            &mut registry,
            "ingested_lines",
            "Records stored by ingest (duplicates of stored records not counted)",
        );
        let ingested_bytes = counters(
            &mut registry,
            "ingested_bytes",
            "Bytes of message text stored by ingest",
        );
        let refused_batches = counters(
            &mut registry,
            "ingest_refused_batches",
            "Ingest batches refused by a limit (429 rate limits, 413 batch_too_large, 400 invalid_label and invalid_seq); nothing of them was stored",
        );
        let refused_lines = counters(
            &mut registry,
            "ingest_refused_lines",
            "Records in ingest batches refused by a limit (a batch sent again after a 429 counts again)",
        );
        let cut_lines = counters(
            &mut registry,
            "ingest_cut_lines",
            "Records stored cut to a limit and marked in their field 'limited' (line_too_long, too_many_fields, invalid_request_id)",
        );
        let redactions = counters(
            &mut registry,
            "redactions",
            "Secrets replaced before storage, by pattern name",
        );
        let agent_throttled_lines = counters(
            &mut registry,
            "agent_throttled_lines",
            "Lines agents report their own rate limit held back (shipped late, not lost)",
        );
        let agent_dropped_lines = counters(
            &mut registry,
            "agent_dropped_lines",
            "Lines agents report they dropped, by reason (spool_full, rejected_by_server, ...)",
        );
        let agent_failovers = counters(
            &mut registry,
            "agent_failovers",
            "Moves agents report from a server that was away to the next of their --server list (their server_failover records)",
        );
        let refused_records = counters(
            &mut registry,
            "ingest_refused_records",
            "Records the store refused inside an accepted batch (200, counted in its 'refused'), by reason (out_of_order, older_than_retention); they are not stored, and the agent reports them in the runner's logs",
        );
        let retimed_records = counters(
            &mut registry,
            "ingest_retimed_records",
            "Records stored at the server's time instead of their own, by reason (clock_skew: ahead by more than --max-clock-skew; time_out_of_range), each keeping its own in the field original_ts",
        );
        let late_request_starts = counters(
            &mut registry,
            "late_request_starts",
            "request_start records naming a caller stored more than --request-owner-grace after their request's first line: kept with the caller as 'late_caller', deciding nothing",
        );
        let count_refused = counters(
            &mut registry,
            "count_refused",
            "Counts and histograms refused, by tenant and reason (count_too_large: they would read more stored records than --count-scan-limit; count_busy: the tenant already ran --count-concurrency of them for longer than a count waits)",
        );
        let query_seconds =
            Family::<EndpointLabels, Histogram>::new_with_constructor(query_histogram as fn() -> _);
        registry.register(
            "query_duration_seconds",
            "Time to answer a query (logs, request_logs, requests, histogram; export until its first byte), until its response starts",
            query_seconds.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(store)));
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "HTTP connections open now (WebSockets included)",
            connections_open.clone(),
        );
        let connections_closed = counters(
            &mut registry,
            "connections_closed",
            "Connections the server closed or refused by a connection limit, by reason (header_timeout, idle_timeout, evicted at --max-connections, refused with every place busy, accept_failed out of file descriptors, tls_handshake_failed)",
        );
        let requests_list_cut = Counter::default();
        registry.register(
            "requests_list_scan_cut",
            "Pages of GET /v1/requests that stopped at the most request starts one page reads (--requests-scan-max) and handed out a cursor with fewer requests than asked",
            requests_list_cut.clone(),
        );
        let loki_queries_refused = counters(
            &mut registry,
            "loki_queries_refused",
            "Loki API queries (/loki/api/v1/...) refused, by reason (bad_query; max_records: past --logql-max-records; max_points; max_entries: a limit past the most lines one query returns)",
        );
        let ingest_bodies = counters(
            &mut registry,
            "ingest_bodies",
            "Bodies POST /v1/ingest decoded, by format (json; binary: application/x-tailwater-batch, what the agent sends servers that take it)",
        );
        Metrics {
            ingest_bodies,
            loki_queries_refused,
            registry,
            ingested_lines,
            ingested_bytes,
            refused_batches,
            refused_lines,
            cut_lines,
            redactions,
            agent_throttled_lines,
            agent_dropped_lines,
            agent_failovers,
            refused_records,
            retimed_records,
            late_request_starts,
            count_refused,
            query_seconds,
            connections_open,
            connections_closed,
            requests_list_cut,
        }
    }

    /// Counts one page of `GET /v1/requests` cut at its scan limit.
    pub fn requests_list_scan_cut(&self) {
        self.requests_list_cut.inc();
    }

    /// Counts one body of `POST /v1/ingest` decoded as `format` (`json`,
    /// `binary`).
    pub fn ingest_body(&self, format: &str) {
        self.ingest_bodies
            .get_or_create(&FormatLabels {
                format: format.to_owned(),
            })
            .inc();
    }

    /// Counts one Loki API query refused, by why.
    pub fn loki_query_refused(&self, reason: &str) {
        self.loki_queries_refused
            .get_or_create(&CloseLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts one connection closed or refused by a connection limit.
    pub fn connection_closed(&self, reason: &str) {
        self.connections_closed
            .get_or_create(&CloseLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The exposition, as `GET /metrics` answers it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Exports what slow live tail clients missed, read at each scrape.
    pub fn watch_tail(&mut self, stats: Arc<TailStats>) {
        self.registry
            .register_collector(Box::new(TailCollector(stats)));
    }

    /// Exports the runner table (runners by state, evictions), read at each
    /// scrape.
    pub fn watch_runners(&mut self, runners: Arc<Runners>) {
        self.registry
            .register_collector(Box::new(RunnersCollector(runners)));
    }

    /// Exports the registry's refusals by its limits, read at each scrape.
    pub fn watch_registry(&mut self, registry: Arc<crate::access::registry::Registry>) {
        self.registry
            .register_collector(Box::new(RegistryCollector(registry)));
    }

    /// Exports what distributed mode did, by partition, read at each scrape.
    pub fn watch_cluster(&mut self, stats: Arc<crate::cluster::stats::Stats>) {
        self.registry
            .register_collector(Box::new(crate::cluster::stats::StatsCollector(stats)));
    }

    /// Exports each drain's deliveries, failures, pauses and lag, read at
    /// each scrape.
    pub fn watch_drains(&mut self, drains: Arc<crate::drains::Drains>) {
        self.registry
            .register_collector(Box::new(crate::drains::figures::Collector(drains)));
    }

    /// Records how long a query on `endpoint` (`logs`, …) took to answer.
    /// Counts one count or histogram of `tenant` refused for `reason`.
    pub fn count_refused(&self, tenant: &str, reason: &str) {
        self.count_refused
            .get_or_create(&TenantReasonLabels {
                tenant: tenant.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn observe_query(&self, endpoint: &str, took: Duration) {
        self.query_seconds
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

/// A new family of counters, registered.
fn counters<L>(registry: &mut Registry, name: &str, help: &str) -> Counters<L>
where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Counters::<L>::default();
    registry.register(name, help, family.clone());
    family
}

/// 1 ms to about 16 s, doubling.
fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// One figure of an app's [`tailwater_store::AppStats`].
type AppFigure = fn(&tailwater_store::AppStats) -> u64;

/// Reads the store's size and counters at each scrape.
struct StoreCollector(Arc<Store>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        let per_app: [(&str, &str, AppFigure); 4] = [
            ("store_records", "Records stored, per tenant and app", |s| s.records),
            (
                "store_raw_bytes",
                "Bytes of message text stored, as captured",
                |s| s.raw_bytes,
            ),
            (
                "store_disk_bytes",
                "Bytes of compressed parts on disk (records not yet flushed count in store_raw_bytes only)",
                |s| s.stored_bytes,
            ),
            ("store_parts", "Immutable parts on disk", |s| s.parts),
        ];
        for (name, help, value) in per_app {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for app in &stats {
                let labels = AppLabels {
                    tenant: app.tenant.clone(),
                    app: app.app.clone(),
                };
                let value = i64::try_from(value(app)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let counters = self.0.counters();
        let cache = self.0.block_cache();
        for (name, help, value) in [
            (
                "store_appended",
                "Records appended since the server started",
                counters.appended,
            ),
            (
                "store_duplicates",
                "Records skipped as already stored (retried batches)",
                counters.duplicates,
            ),
            (
                "store_refused_out_of_order",
                "Records refused for being older than the out-of-order window",
                counters.refused_out_of_order,
            ),
            (
                "store_refused_older_than_retention",
                "Records refused for being older than their app's retention",
                counters.refused_older_than_retention,
            ),
            (
                "store_retimed",
                "Records stored at the server's time: dated past --max-clock-skew, or outside the times the store holds",
                counters.retimed_clock_skew + counters.retimed_out_of_range,
            ),
            (
                "store_positions_moved",
                "Records of a cluster's stream stored at this node's next id, not the stream's (their id was taken: this node's own notices, or repaired records, before them); a live tail moved to or from this node around them may repeat or miss them",
                counters.positions_moved,
            ),
            (
                "store_flushes",
                "Memtable flushes into parts",
                counters.flushes,
            ),
            ("store_merges", "Merges of parts", counters.merges),
            (
                "store_merge_blocks_copied",
                "Blocks merges copied into their part as they were",
                counters.merge_blocks_copied,
            ),
            (
                "store_merge_blocks_written",
                "Blocks merges wrote anew from the records of overlapping or small blocks",
                counters.merge_blocks_written,
            ),
            (
                "store_damaged_block_reads",
                "Reads of stored blocks that could not be read (damaged on disk) and were skipped; the answers said they were incomplete",
                counters.damaged_block_reads,
            ),
            (
                "store_block_cache_hits",
                "Blocks queries found decoded in the block cache",
                cache.hits,
            ),
            (
                "store_block_cache_misses",
                "Blocks queries read and decoded (the block cache did not hold them)",
                cache.misses,
            ),
            (
                "store_block_cache_evictions",
                "Decoded blocks the block cache let go to stay within --block-cache-bytes",
                cache.evictions,
            ),
            (
                "store_wal_lost_regions",
                "Stretches of the write-ahead log found damaged at start with valid records after them: acknowledged records lost (each is an error record of tenant default, app tailwater)",
                counters.wal_lost_regions,
            ),
            (
                "store_wal_lost_bytes",
                "Bytes of those stretches (kept in store/damaged/)",
                counters.wal_lost_bytes,
            ),
            (
                "store_wal_lost_records",
                "Acknowledged records those stretches held, where the ids around them tell",
                counters.wal_lost_records,
            ),
            (
                "store_wal_torn_tail_bytes",
                "Bytes of torn write-ahead log tails cut off at start (most likely writes a crash cut short, never acknowledged)",
                counters.wal_torn_tail_bytes,
            ),
            (
                "store_wal_possibly_lost_regions",
                "Write-ahead log tails found at start to be one whole frame failing its checksum: a damaged byte in a frame that may have been acknowledged (each is an error record of tenant default, app tailwater)",
                counters.wal_possibly_lost_regions,
            ),
            (
                "store_wal_possibly_lost_records",
                "Records those frames held, where their damaged payload still tells",
                counters.wal_possibly_lost_records,
            ),
        ] {
            encode_counter(&mut encoder, name, help, value)?;
        }
        let held = ConstGauge::new(i64::try_from(cache.bytes).unwrap_or(i64::MAX));
        let metric = encoder.encode_descriptor(
            "store_block_cache_bytes",
            "Bytes of decoded blocks the block cache holds",
            None,
            held.metric_type(),
        )?;
        held.encode(metric)?;
        Ok(())
    }
}

/// Encodes one counter without labels.
fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

/// Reads what slow live tail clients missed at each scrape.
#[derive(Debug)]
struct TailCollector(Arc<TailStats>);

impl Collector for TailCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "tail_clients",
            "Live tail connections open now",
            None,
            gauge.metric_type(),
        )?;
        for (tenant, count) in self.0.clients_by_tenant() {
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(family.encode_family(&TenantLabels { tenant })?)?;
        }
        encode_counter(
            &mut encoder,
            "tail_missed_notices",
            "Missed notices sent to live tail clients that fell more than --tail-buffer records behind",
            self.0.missed_notices(),
        )?;
        encode_counter(
            &mut encoder,
            "tail_missed_records",
            "Records those notices skipped (the clients can read them by the notice's cursor)",
            self.0.missed_records(),
        )?;
        encode_counter(
            &mut encoder,
            "tail_holds",
            "Times a caller's live tail held records back until their request's owner settled (--request-owner-grace)",
            self.0.holds(),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunnerStateLabels {
    tenant: String,
    app: String,
    state: String,
}

/// Reads the runner table at each scrape.
struct RunnersCollector(Arc<Runners>);

impl std::fmt::Debug for RunnersCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunnersCollector")
    }
}

impl Collector for RunnersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts: Vec<_> = self
            .0
            .count_states()
            .into_iter()
            .map(|((tenant, app, state), count)| ((tenant, app, state.as_str()), count))
            .collect();
        counts.sort_unstable();
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "runners",
            "Runners in the runner table, by tenant, app and state",
            None,
            gauge.metric_type(),
        )?;
        for ((tenant, app, state), count) in counts {
            let labels = RunnerStateLabels {
                tenant,
                app,
                state: state.to_owned(),
            };
            let count = i64::try_from(count).unwrap_or(i64::MAX);
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        encode_counter(
            &mut encoder,
            "runners_evicted",
            "Runners forgotten because the table was full (--max-runners), the one heard from longest ago first",
            self.0.evicted(),
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantReasonLabels {
    tenant: String,
    reason: String,
}

/// Reads the registry's refusals (token names too long, too many tokens or
/// apps) at each scrape.
struct RegistryCollector(Arc<crate::access::registry::Registry>);

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryCollector")
    }
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "registry_refused",
            "Registry changes refused by a limit, by tenant and reason (name_too_long, too_many_tokens, too_many_apps)",
            None,
            counter.metric_type(),
        )?;
        for (tenant, reason, count) in self.0.refused() {
            let labels = TenantReasonLabels {
                tenant,
                reason: reason.to_owned(),
            };
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        if !self.0.is_replica() {
            return Ok(());
        }
        // Distributed mode: this node's replica of the cluster's registry.
        let stats = self.0.replica_stats();
        let read =
            |value: &std::sync::atomic::AtomicU64| value.load(std::sync::atomic::Ordering::Relaxed);
        for (name, help, value) in [
            (
                "registry_replica_applied",
                "Changes of the cluster's shared registry applied on this node (ones it had already are not counted)",
                read(&stats.applied),
            ),
            (
                "registry_replica_undecodable",
                "Values of the cluster's registry bucket that are no registry change, skipped (each logged with its key)",
                read(&stats.undecodable),
            ),
            (
                "registry_replica_unavailable",
                "Registry writes refused with 503 cluster_unavailable: the shared registry could not take them (nothing changed)",
                read(&stats.unavailable),
            ),
            (
                "registry_replica_conflicts",
                "Registry writes that met another node's change of the same key first, decided again on it",
                read(&stats.conflicts),
            ),
        ] {
            encode_counter(&mut encoder, name, help, value)?;
        }
        for (name, help, value) in [
            (
                "registry_replica_revision",
                "The newest revision of the cluster's registry bucket applied on this node",
                self.0.applied_revision(),
            ),
            (
                "registry_replica_pending",
                "The watch's lag: values of the registry bucket newer than the last one delivered to this node",
                read(&stats.pending),
            ),
        ] {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_clients_are_counted_while_their_guard_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        let mut metrics = Metrics::new(Arc::new(store));
        let stats = Arc::<TailStats>::default();
        metrics.watch_tail(stats.clone());
        let sample = |metrics: &Metrics| {
            let text = metrics.render();
            let lines = text.lines().map(|line| Ok(line.to_owned()));
            let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
            scrape
                .samples
                .iter()
                .find(|s| {
                    s.metric == "tailwater_tail_clients" && s.labels.get("tenant") == Some("acme")
                })
                .map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                    _ => panic!("a gauge"),
                })
        };
        let first = stats.client("acme");
        let second = stats.client("acme");
        assert_eq!(sample(&metrics), Some(2.0));
        drop(first);
        assert_eq!(sample(&metrics), Some(1.0));
        drop(second);
        assert_eq!(sample(&metrics), Some(0.0));
    }
}
