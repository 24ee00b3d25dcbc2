//! What a node keeps the cluster's records in, and where it counts and
//! notes what it found: the materializer ([`super::materialize`]) stores
//! the stream's batches through it, the repairer ([`super::repair`]) a
//! peer's records, so both store a batch alike.

use std::sync::Arc;
use std::time::Duration;

use tailwater_model::wire::{IngestBatch, IngestResponse};

use super::stats::Stats;
use super::window::Gaps;
use super::Cluster;
use crate::access::ownership::Settling;
use crate::access::registry::Registry;
use crate::runners::Runners;

/// This node's side of the cluster's records.
pub struct Local {
    pub cluster: Cluster,
    pub registry: Arc<Registry>,
    pub runners: Arc<Runners>,
    pub settling: Arc<Settling>,
    pub stats: Arc<Stats>,
    pub gaps: Arc<Gaps>,
    /// How far this node has stored the stream.
    pub applied: Arc<super::applied::Applied>,
}

/// How a batch came to this node.
pub enum Arrival {
    /// From the stream, as the accepting node's pipeline took it (records
    /// past the app's `retention` are refused, as there), its records
    /// numbered from `first` (their place in the stream; durable once the
    /// materializer syncs the store).
    Stream { retention: Duration, first: u64 },
    /// From a peer's store, filling a gap: old records, stored past the
    /// out-of-order window, each once.
    Repair,
}

impl Local {
    /// Stores one batch another node accepted. Its app is made in this
    /// node's registry as it was there; if this registry will not take it,
    /// the records are stored all the same (the accepting node decided)
    /// and the reason logged.
    pub fn store(
        &self,
        tenant: &str,
        batch: IngestBatch,
        arrival: Arrival,
    ) -> anyhow::Result<IngestResponse> {
        if let Err(error) = self.registry.ensure_app(tenant, &batch.app) {
            tracing::warn!(tenant, app = %batch.app, ?error, "this node's registry does not take an app another node took; its records are stored all the same");
        }
        let response = match arrival {
            Arrival::Stream { retention, first } => {
                self.runners.append_at(tenant, batch, retention, first)?
            }
            Arrival::Repair => self.runners.append_repaired(tenant, batch)?,
        };
        if response.accepted > 0 {
            self.settling.stamp(self.runners.store().last_id());
        }
        Ok(response)
    }
}
