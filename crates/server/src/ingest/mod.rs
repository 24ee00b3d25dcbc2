//! The one ingest pipeline: every way records come in (the agent's batch
//! API today; OTLP, Loki push, Elasticsearch bulk and a NATS consumer next)
//! decodes its body at the edge into an [`IngestBatch`] and hands it to
//! [`Pipeline::accept`], which owns everything after: so limits, rates,
//! redaction, refusals, request ownership, the runner table and metrics
//! behave the same whatever the protocol.
//!
//! In order: the batch's labels and the token's app; its shape and
//! sequence numbers ([`crate::limits`]); no secret in a label; the app
//! (created with the tenant's defaults on its first batch: senders need no
//! prior step); its rate limits and the runner's; then each record
//! redacted ([`crate::redact`]) and held to the line limits, the server's
//! own reports added, late `request_start`s marked, and the batch stored
//! through the runner table (the store refuses records past the app's
//! retention or the out-of-order window, and stores records dated past
//! `--max-clock-skew` at its own time: the answer says how many, by
//! reason). What was refused, retimed, cut, redacted and stored is counted
//! in [`crate::metrics`]; a refusal is a [`Refused`] the edge answers in
//! its protocol's own shape.
//!
//! Where an accepted batch goes is the pipeline's [`Sink`]: the local
//! store (the embedded default), or, in distributed mode, the NATS
//! cluster's stream ([`crate::cluster`]), which every node materializes
//! into its own store; the sender is answered once the sink has it.
//!
//! Senders that carry no runner, boot or sequence (clients that are not
//! tailwater's agent) are given them by [`identity`], through
//! [`Pipeline::accept_unnumbered`].
//!
//! The pipeline itself only requires all three to be present.

pub mod identity;
mod reports;
mod unavailable;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tailwater_model::wire::{IngestBatch, IngestRecord, IngestResponse};

pub use unavailable::{is_disk_full, Unavailable, STORE_UNAVAILABLE_RETRY_AFTER};

use crate::access::ownership::Settling;
use crate::access::registry::{validate_app_name, Registry, RegistryError};
use crate::access::scopes::{Denied, Principal};
use crate::cluster::message::batch_id;
use crate::cluster::publish::Publisher;
use crate::limits::{self, CutTally, IngestLimits, RateLimiter, Refusal, Throttled};
use crate::metrics::{AppLabels, Metrics, PatternLabels, ReasonLabels};
use crate::redact::{Redactor, Replaced};
use crate::runners::{Runners, SERVER_BOOT_SUFFIX};
use identity::Identity;
use reports::AgentReports;

/// Who a batch comes from, for the one check that tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    /// A client, an agent, an intake message: anyone outside.
    Outside,
    /// This server's own notice ([`Pipeline::accept_notice`]).
    Server,
}

/// Why a batch was not stored; nothing of it was.
#[derive(Debug)]
pub enum Refused {
    /// Malformed, or past a limit: the sender must change it.
    Invalid { code: &'static str, message: String },
    /// The token may not send this app's records.
    Denied(Denied),
    /// The registry would not take the app (its name, or a limit).
    Registry(RegistryError),
    /// Over a rate limit: the same batch is taken after `retry_after`.
    Throttled(Throttled),
    /// The store cannot take it now: the same batch, later.
    Unavailable(Unavailable),
    /// The server's own fault; the detail is in its log only.
    Internal(String),
}

/// A batch of a sender that numbers nothing ([`Pipeline::accept_unnumbered`]):
/// its records' `seq` is set there, each beside its own id, if it has one.
#[derive(Debug)]
pub struct Unnumbered {
    pub app: String,
    pub version: String,
    /// `None`: the sender names no instance.
    pub runner: Option<String>,
    pub records: Vec<(IngestRecord, Option<String>)>,
}

/// Where accepted batches are kept: the one seam between the pipeline and
/// storage.
pub enum Sink {
    /// This server's store, through the runner table (the default).
    Local,
    /// The cluster's replicated stream; every node stores it from there.
    Cluster(Arc<Publisher>),
}

/// Everything the pipeline acts on, shared by every edge.
pub struct Pipeline {
    registry: Arc<Registry>,
    limits: IngestLimits,
    rates: RateLimiter,
    redactor: Redactor,
    metrics: Arc<Metrics>,
    runners: Arc<Runners>,
    settling: Arc<Settling>,
    /// Records older than their app's retention (else this) are refused.
    retention_max_age: Duration,
    identity: Identity,
    sink: Sink,
    /// Added to the boots [`identity`] gives (in distributed mode, the
    /// node and its start), so nodes numbering the same runner's records
    /// never give two records one sequence number.
    boot_suffix: String,
}

impl Pipeline {
    pub fn new(
        registry: Arc<Registry>,
        limits: IngestLimits,
        redactor: Redactor,
        metrics: Arc<Metrics>,
        runners: Arc<Runners>,
        settling: Arc<Settling>,
        retention_max_age: Duration,
    ) -> Pipeline {
        Pipeline {
            identity: Identity::new(runners.store().clone(), identity::DEFAULT_DEDUP_UIDS),
            registry,
            limits,
            rates: RateLimiter::default(),
            redactor,
            metrics,
            runners,
            settling,
            retention_max_age,
            sink: Sink::Local,
            boot_suffix: String::new(),
        }
    }

    /// The pipeline keeping accepted batches in `sink`; with
    /// [`Sink::Cluster`], numbering unnumbered senders' records under
    /// boots ending in `boot_suffix` (unique to this node's process).
    pub fn keeping_in(mut self, sink: Sink, boot_suffix: String) -> Pipeline {
        self.sink = sink;
        self.boot_suffix = boot_suffix;
        self
    }

    /// The pipeline remembering `dedup_uids` record ids per tenant
    /// (`--dedup-uids`) instead of [`identity::DEFAULT_DEDUP_UIDS`].
    pub fn remembering_uids(mut self, dedup_uids: usize) -> Pipeline {
        self.identity = Identity::new(self.runners.store().clone(), dedup_uids);
        self
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Stores `batch` for `tenant`, sent with `principal`'s token; blocking
    /// (the registry's file, redaction of a large batch, the store's fsync):
    /// call it off the async threads.
    pub fn accept(
        &self,
        principal: &Principal,
        tenant: &str,
        batch: IngestBatch,
    ) -> Result<IngestResponse, Refused> {
        self.admit(principal, tenant, &batch, Sender::Outside)?;
        self.store(tenant, batch)
    }

    /// Stores a notice of this server's own about a runner (its boot ends
    /// in [`SERVER_BOOT_SUFFIX`], which [`Pipeline::accept`] refuses from
    /// senders), through every other check, as a batch of its app would
    /// be: in a cluster, into the stream, so every node holds it.
    pub fn accept_notice(
        &self,
        tenant: &str,
        batch: IngestBatch,
    ) -> Result<IngestResponse, Refused> {
        let principal = Principal {
            token_id: "server-notice".to_owned(),
            scope: tailwater_model::tenancy::Scope::Ingest,
            tenant: Some(tenant.to_owned()),
            app: Some(batch.app.clone()),
        };
        self.admit(&principal, tenant, &batch, Sender::Server)?;
        self.store(tenant, batch)
    }

    /// Stores `batch`, from a sender that numbers nothing, as [`identity`]
    /// says: its runner (the token's when it names none), the protocol's
    /// boot of the day of `now`, and the next sequence numbers; records whose
    /// own id the tenant sent lately are duplicates, left out and counted
    /// as such in the answer.
    pub fn accept_unnumbered(
        &self,
        principal: &Principal,
        tenant: &str,
        protocol: &str,
        batch: Unnumbered,
        now: jiff::Timestamp,
    ) -> Result<IngestResponse, Refused> {
        let Unnumbered {
            app,
            version,
            runner,
            records,
        } = batch;
        let uids: Vec<Option<String>> = records.iter().map(|(_, uid)| uid.clone()).collect();
        let mut seen = self.identity.seen(tenant, &app, &uids);
        // A record sent twice in one batch is stored once too.
        let mut in_batch = std::collections::HashSet::new();
        for (uid, seen) in uids.iter().zip(&mut seen) {
            if let Some(uid) = uid {
                *seen |= !in_batch.insert(uid.as_str());
            }
        }
        let duplicates = seen.iter().filter(|seen| **seen).count();
        let mut fresh: Vec<IngestRecord> = records
            .into_iter()
            .zip(&seen)
            .filter(|(_, seen)| !**seen)
            .map(|((record, _), _)| record)
            .collect();
        let runner = runner.unwrap_or_else(|| Identity::token_runner(&principal.token_id));
        let boot = Identity::boot(protocol, now) + &self.boot_suffix;
        let first = self
            .identity
            .number(tenant, &app, &runner, &boot, fresh.len());
        for (record, seq) in fresh.iter_mut().zip(first..) {
            record.seq = seq;
        }
        let batch = IngestBatch {
            app,
            version,
            runner,
            boot,
            source: Default::default(),
            records: fresh,
        };
        let app = batch.app.clone();
        let mut response = self.accept(principal, tenant, batch)?;
        let stored = uids.into_iter().zip(seen).filter(|(_, seen)| !seen);
        self.identity
            .remember(tenant, &app, stored.filter_map(|(uid, _)| uid));
        response.duplicates += duplicates;
        Ok(response)
    }

    /// Counts a batch an edge refused before it could decode it (too
    /// large, say), under the token's app when it has one.
    pub fn count_unread(&self, tenant: &str, app: &str, reason: &str) {
        self.count_refused(tenant, app, reason, 0);
    }

    /// Counts `lines` an edge decoded and refused before the pipeline (a
    /// source naming no app, say), under no app.
    pub fn count_undelivered(&self, tenant: &str, reason: &str, lines: usize) {
        self.count_refused(tenant, "", reason, lines);
    }

    /// The checks that need no disk: labels, the token's app, the batch's
    /// shape, secrets in labels.
    fn admit(
        &self,
        principal: &Principal,
        tenant: &str,
        batch: &IngestBatch,
        sender: Sender,
    ) -> Result<(), Refused> {
        for (name, value) in [
            ("app", &batch.app),
            ("runner", &batch.runner),
            ("boot", &batch.boot),
        ] {
            if value.trim().is_empty() {
                return Err(Refused::Invalid {
                    code: "bad_request",
                    message: format!(
                        "invalid ingest batch: {name} is empty; every batch names its {name}"
                    ),
                });
            }
        }
        let lines = batch.records.len();
        if let Err(denied) = principal.allow_ingest_app(&batch.app) {
            let own = principal.app.as_deref().unwrap_or_default();
            self.count_refused(tenant, own, limits::OTHER_APP, lines);
            return Err(Refused::Denied(denied));
        }
        if let Err(error) = validate_app_name(&batch.app) {
            // Not a label value to keep: counted under no app.
            self.count_refused(tenant, "", limits::INVALID_LABEL, lines);
            return Err(Refused::Registry(error));
        }
        if let Err(Refusal { reason, message }) = self.limits.check_batch(batch) {
            self.count_refused(tenant, &batch.app, reason, lines);
            return Err(Refused::Invalid {
                code: reason,
                message,
            });
        }
        if sender == Sender::Outside && batch.boot.ends_with(SERVER_BOOT_SUFFIX) {
            // Else a sender could dress its batches as the server's
            // notices, which the runner table takes for no sign of life.
            self.count_refused(tenant, &batch.app, limits::INVALID_LABEL, lines);
            return Err(Refused::Invalid {
                code: limits::INVALID_LABEL,
                message: format!("invalid ingest batch: a boot ending in '{SERVER_BOOT_SUFFIX}' is kept for the server's own notices; give the agent another --boot"),
            });
        }
        // Labels are identity, so never redacted (see redact.rs): refused.
        for (name, value) in [
            ("app", &batch.app),
            ("version", &batch.version),
            ("runner", &batch.runner),
            ("boot", &batch.boot),
        ] {
            if let Some(pattern) = self.redactor.secret_in(value) {
                // Not a label value to keep in metrics: counted under no app.
                self.count_refused(tenant, "", limits::SECRET_IN_LABEL, lines);
                return Err(Refused::Invalid {
                    code: limits::SECRET_IN_LABEL,
                    message: format!("invalid ingest batch: its {name} looks like a secret (redaction pattern {pattern}); labels name runners and apps to everyone who reads the logs and are never redacted: give the agent another --{name}"),
                });
            }
        }
        Ok(())
    }

    /// The app, its rates, redaction and cuts, then the store.
    fn store(&self, tenant: &str, mut batch: IngestBatch) -> Result<IngestResponse, Refused> {
        // As the sender sent it: a retry has the same.
        let batch_id = match self.sink {
            Sink::Local => String::new(),
            Sink::Cluster(_) => batch_id(tenant, &batch),
        };
        if let Err(error) = self.registry.ensure_app(tenant, &batch.app) {
            if let RegistryError::Unavailable(why) = &error {
                tracing::warn!(tenant, app = %batch.app, why, "ingest batch refused: its new app cannot be made in the cluster's registry now");
                let reason = Unavailable::Cluster;
                self.count_refused(tenant, &batch.app, reason.code(), batch.records.len());
                return Err(Refused::Unavailable(reason));
            }
            if let RegistryError::Io(io) = &error {
                if is_disk_full(io.as_ref()) {
                    tracing::warn!(error = %format!("{io:#}"), tenant, app = %batch.app, "ingest batch refused: the disk is full");
                    let reason = Unavailable::DiskFull;
                    self.count_refused(tenant, &batch.app, reason.code(), batch.records.len());
                    return Err(Refused::Unavailable(reason));
                }
            }
            return Err(Refused::Registry(error));
        }
        let settings = self
            .registry
            .app(tenant, &batch.app)
            .map(|app| app.settings);
        let app_rate = self.limits.app_rate(settings.as_ref());
        let runner_rate = self.limits.runner_rate;
        if let Err(throttled) =
            self.rates
                .admit(tenant, &batch, app_rate, runner_rate, Instant::now())
        {
            self.count_refused(tenant, &batch.app, throttled.reason, batch.records.len());
            tracing::debug!(tenant, app = %batch.app, runner = %batch.runner, reason = throttled.reason, "ingest batch throttled");
            return Err(Refused::Throttled(throttled));
        }

        let max_line_bytes = self.limits.max_line_bytes(settings.as_ref());
        let mut seen = Seen::default();
        for record in &mut batch.records {
            self.redactor
                .redact(&mut record.message, &mut record.fields, &mut seen.replaced);
            self.redactor.redact_request_id(record, &mut seen.replaced);
            let cuts = self.limits.cut_record(record, max_line_bytes);
            seen.cut.add(record, cuts);
            seen.agents.read(record);
        }
        if let Some(report) = seen.cut.report(max_line_bytes, &self.limits) {
            batch.records.push(report);
        }
        let rate_report = self.rates.take_report(tenant, &batch);
        if let Some(pending) = &rate_report {
            batch.records.push(pending.record.clone());
        }
        self.mark_late_starts(tenant, &mut batch);

        let app = batch.app.clone();
        let total = batch.records.len();
        let message_bytes: u64 = batch.records.iter().map(|r| r.message.len() as u64).sum();
        let retention = settings
            .as_ref()
            .and_then(|settings| settings.retention_days)
            .map_or(self.retention_max_age, |days| {
                Duration::from_secs(u64::from(days) * 24 * 60 * 60)
            });
        let response = match self.keep(tenant, &app, batch, retention, &batch_id) {
            Ok(response) => response,
            Err(refused) => {
                if let Some(pending) = rate_report {
                    self.rates.restore(pending);
                }
                if let Refused::Unavailable(unavailable) = &refused {
                    self.count_refused(tenant, &app, unavailable.code(), total);
                }
                return Err(refused);
            }
        };
        self.count_stored(tenant, &app, &response, &seen, message_bytes, total);
        Ok(response)
    }

    /// Hands `batch` to the sink; the refusal is logged, not yet counted.
    fn keep(
        &self,
        tenant: &str,
        app: &str,
        batch: IngestBatch,
        retention: Duration,
        batch_id: &str,
    ) -> Result<IngestResponse, Refused> {
        match &self.sink {
            Sink::Local => {
                let response = self
                    .runners
                    .append(tenant, batch, retention)
                    .map_err(|error| match Unavailable::of(&error) {
                        Some(unavailable) => {
                            tracing::warn!(%error, tenant, app = %app, "ingest batch refused: the store cannot take writes now");
                            Refused::Unavailable(unavailable)
                        }
                        None => {
                            tracing::error!(%error, tenant, app = %app, "ingest batch failed");
                            Refused::Internal(error.to_string())
                        }
                    })?;
                if response.accepted > 0 {
                    // When its records were stored: requests without a
                    // recorded caller settle from here.
                    self.settling.stamp(self.runners.store().last_id());
                }
                Ok(response)
            }
            Sink::Cluster(publisher) => publisher
                .publish(tenant, batch, retention, batch_id)
                .map_err(|error| {
                    tracing::warn!(%error, tenant, app = %app, "ingest batch refused: the NATS cluster did not acknowledge it");
                    Refused::Unavailable(Unavailable::Cluster)
                }),
        }
    }

    fn mark_late_starts(&self, tenant: &str, batch: &mut IngestBatch) {
        let late = self
            .settling
            .mark_late_starts(tenant, &batch.app, &mut batch.records);
        if late > 0 {
            tracing::info!(tenant, app = %batch.app, late, "request_start records naming a caller came later than --request-owner-grace after their request's first line; they decide nothing");
            self.metrics
                .late_request_starts
                .get_or_create(&AppLabels {
                    tenant: tenant.to_owned(),
                    app: batch.app.clone(),
                })
                .inc_by(late);
        }
    }

    /// Counts what the store took and refused of a batch, and what the
    /// pipeline changed in it.
    fn count_stored(
        &self,
        tenant: &str,
        app: &str,
        response: &IngestResponse,
        seen: &Seen,
        message_bytes: u64,
        total: usize,
    ) {
        let metrics = &self.metrics;
        let labels = |reason: &str| ReasonLabels {
            tenant: tenant.to_owned(),
            app: app.to_owned(),
            reason: reason.to_owned(),
        };
        // Refused records are not stored, so a batch sent again is refused
        // (and counted) again, as its answer says.
        for (reason, count) in &response.refused_by_reason {
            let refused = metrics.refused_records.get_or_create(&labels(reason));
            refused.inc_by(*count as u64);
        }
        for (reason, count) in &response.retimed_by_reason {
            let retimed = metrics.retimed_records.get_or_create(&labels(reason));
            retimed.inc_by(*count as u64);
        }
        // A batch sent again after a lost answer is all duplicates: its
        // lines, cuts, redactions and the agents' reports in it were
        // counted the first time.
        if response.accepted == 0 {
            return;
        }
        let app_labels = AppLabels {
            tenant: tenant.to_owned(),
            app: app.to_owned(),
        };
        metrics
            .ingested_lines
            .get_or_create(&app_labels)
            .inc_by(response.accepted as u64);
        // Exact unless a batch is partly duplicates (rare: an agent's
        // batches are cut the same way when sent again): then pro rata.
        let stored_bytes = message_bytes * response.accepted as u64 / total.max(1) as u64;
        metrics
            .ingested_bytes
            .get_or_create(&app_labels)
            .inc_by(stored_bytes);
        for (reason, count) in seen.cut.counts() {
            metrics
                .cut_lines
                .get_or_create(&labels(reason))
                .inc_by(*count);
        }
        for (pattern, count) in &seen.replaced {
            let pattern = PatternLabels {
                tenant: tenant.to_owned(),
                app: app.to_owned(),
                pattern: self.redactor.name(*pattern).to_owned(),
            };
            metrics.redactions.get_or_create(&pattern).inc_by(*count);
        }
        if seen.agents.throttled > 0 {
            metrics
                .agent_throttled_lines
                .get_or_create(&app_labels)
                .inc_by(seen.agents.throttled);
        }
        if seen.agents.failovers > 0 {
            metrics
                .agent_failovers
                .get_or_create(&app_labels)
                .inc_by(seen.agents.failovers);
        }
        for (reason, lines) in &seen.agents.dropped {
            let dropped = metrics.agent_dropped_lines.get_or_create(&labels(reason));
            dropped.inc_by(*lines);
        }
    }

    /// Counts a refused batch (and its lines, when it was read).
    fn count_refused(&self, tenant: &str, app: &str, reason: &str, lines: usize) {
        let labels = ReasonLabels {
            tenant: tenant.to_owned(),
            app: app.to_owned(),
            reason: reason.to_owned(),
        };
        self.metrics.refused_batches.get_or_create(&labels).inc();
        if lines > 0 {
            self.metrics
                .refused_lines
                .get_or_create(&labels)
                .inc_by(lines as u64);
        }
    }
}

/// What the pipeline changed in a batch and read of it on the way.
#[derive(Default)]
struct Seen {
    cut: CutTally,
    replaced: Replaced,
    agents: AgentReports,
}
