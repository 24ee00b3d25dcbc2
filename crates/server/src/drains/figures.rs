//! What `/metrics` shows of drains, read at each scrape: per drain its
//! deliveries, failures, pauses, whether it is paused and its lag; per
//! tenant the creations refused.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Drains;

impl Drains {
    /// Each drain's figures for `/metrics`: labels and counts.
    pub fn figures(&self) -> Vec<DrainFigures> {
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        self.drains()
            .values()
            .map(|drain| {
                let config = drain.config();
                let stats = &drain.stats;
                let oldest = stats.oldest_pending_ns.load(Ordering::Relaxed);
                DrainFigures {
                    tenant: config.tenant,
                    app: config.app,
                    drain: config.id,
                    delivered_records: stats.delivered_records.load(Ordering::Relaxed),
                    delivered_batches: stats.delivered_batches.load(Ordering::Relaxed),
                    failed_attempts: stats.failed_attempts.load(Ordering::Relaxed),
                    pauses: stats.pauses.load(Ordering::Relaxed),
                    paused: config.paused.is_some(),
                    lag_seconds: match oldest {
                        0 => 0.0,
                        oldest => (now.saturating_sub(oldest)).max(0) as f64 / 1e9,
                    },
                }
            })
            .collect()
    }
}

/// One drain's figures at a scrape.
#[derive(Clone, Debug)]
pub struct DrainFigures {
    pub tenant: String,
    pub app: String,
    pub drain: String,
    pub delivered_records: u64,
    pub delivered_batches: u64,
    pub failed_attempts: u64,
    pub pauses: u64,
    pub paused: bool,
    /// How old the oldest record read but not yet delivered is.
    pub lag_seconds: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantReasonLabels {
    tenant: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DrainLabels {
    tenant: String,
    app: String,
    drain: String,
}

/// Reads each drain's figures at each scrape (`Metrics::watch_drains`).
pub struct Collector(pub Arc<Drains>);

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("drains::figures::Collector")
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        type Figure = fn(&DrainFigures) -> u64;
        let figures = self.0.figures();
        let labels = |f: &DrainFigures| DrainLabels {
            tenant: f.tenant.clone(),
            app: f.app.clone(),
            drain: f.drain.clone(),
        };
        let counters: [(&str, &str, Figure); 4] = [
            ("drain_delivered_records", "Records drains delivered (a receiver answered 2xx), since the server started", |f| f.delivered_records),
            ("drain_delivered_batches", "Batches drains delivered, since the server started", |f| f.delivered_batches),
            ("drain_failed_attempts", "Drain deliveries that failed (no connection, a timeout, an answer but 2xx); each is retried", |f| f.failed_attempts),
            ("drain_pauses", "Times drains paused after --drain-max-failures failed deliveries in a row (each also a drain_paused record in the app's logs)", |f| f.pauses),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for figure in &figures {
                ConstCounter::new(value(figure)).encode(family.encode_family(&labels(figure))?)?;
            }
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "drain_paused",
            "Whether a drain is paused now (1), by its owner or by its failures",
            None,
            gauge.metric_type(),
        )?;
        for figure in &figures {
            ConstGauge::new(i64::from(figure.paused))
                .encode(family.encode_family(&labels(figure))?)?;
        }
        let gauge = ConstGauge::new(0f64);
        let mut family = encoder.encode_descriptor(
            "drain_lag_seconds",
            "Age of the oldest record a drain has read but not yet delivered (0: caught up)",
            None,
            gauge.metric_type(),
        )?;
        for figure in &figures {
            ConstGauge::new(figure.lag_seconds).encode(family.encode_family(&labels(figure))?)?;
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "drain_refused",
            "Drain creations refused, by tenant and reason (too_many_drains: past --max-drains-per-app or --max-drains-per-tenant; invalid: a URL, a destination that is not public, a name or token)",
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
        Ok(())
    }
}
