//! What `/metrics` shows of drains, read at each scrape: per drain its
//! deliveries, failures, pauses, whether it is paused and its lag; per
//! tenant the creations refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use tailwater_model::{Filter, Matcher};

use super::config::DrainConfig;
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
                let oldest = self.oldest_waiting(&config, &stats.lag);
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
                        None => 0.0,
                        Some(oldest) => (now.saturating_sub(oldest)).max(0) as f64 / 1e9,
                    },
                }
            })
            .collect()
    }

    /// The time (ns) of the first of the app's records stored past the
    /// drain's cursor (read, pending or not read yet; its worker running
    /// or paused); `None` when it has delivered everything stored.
    fn oldest_waiting(&self, config: &DrainConfig, lag: &Mutex<Lag>) -> Option<i64> {
        let from = lag.lock().unwrap_or_else(|e| e.into_inner()).checked;
        let store = &self.shared.store;
        let stored_up_to = store.last_id();
        let filter = Filter {
            app: Some(Matcher::Eq(config.app.clone())),
            ..Filter::default()
        };
        let first = store.read_after(&config.tenant, &filter, from, 1);
        let first = first.first();
        // Nothing of the app lies between `from` and the first found (or,
        // none found, `stored_up_to`): the next scrape reads from there.
        // The first itself is read again, so one retention removed goes.
        let checked = match first {
            Some(first) => first.position.saturating_sub(1),
            None => stored_up_to,
        };
        let mut lag = lag.lock().unwrap_or_else(|e| e.into_inner());
        if lag.checked == from {
            lag.checked = checked.max(from);
        }
        first.map(|first| first.ts.as_nanosecond() as i64)
    }
}

/// Where a drain's lag is read from at each scrape: its cursor, and how
/// far past it the store is known to hold none of the app's records (so a
/// caught-up drain's scrape reads only what is new).
#[derive(Clone, Copy, Debug, Default)]
pub struct Lag {
    cursor: u64,
    checked: u64,
}

impl Lag {
    /// A drain that delivered every record up to position `delivered`.
    pub fn at(delivered: u64) -> Lag {
        Lag {
            cursor: delivered,
            checked: delivered,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
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
    /// How old the first of the app's records stored past the drain's
    /// cursor is (0: caught up).
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
            "Age of the first of the app's records stored but not yet delivered by a drain, running or paused (0: caught up)",
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
