//! How many counts (`GET /v1/logs/count`, histograms) one tenant may run at
//! once: `--count-concurrency`. A count past it waits up to [`COUNT_WAIT`]
//! for a slot, then is refused with 429 and `Retry-After`, counted in
//! `tailwater_count_refused_total{reason="count_busy"}`.
//!
//! With the store's shared pool of helper threads (no tenant holds more
//! than half of it, and every count scans on its own thread too), this
//! bounds what one tenant's counts can take from the others: at most this
//! many of its threads scan at once, plus its share of the helpers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts one tenant runs at once unless configured otherwise.
pub const DEFAULT_COUNT_CONCURRENCY: usize = 2;

/// How long a count waits for one of its tenant's slots before it is
/// refused: long enough for a short count ahead of it to end.
pub const COUNT_WAIT: Duration = Duration::from_secs(2);

/// What a refused count is told to wait before asking again.
pub const COUNT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Every tenant's slots.
#[derive(Debug)]
pub struct CountSlots {
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl CountSlots {
    pub fn new(per_tenant: usize) -> CountSlots {
        CountSlots {
            per_tenant: per_tenant.max(1),
            tenants: Mutex::default(),
        }
    }

    /// Most counts one tenant runs at once.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    /// A slot of `tenant`'s, held until dropped; `None` when none freed
    /// within `wait`.
    pub async fn take(&self, tenant: &str, wait: Duration) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            // Tenants with no count running are forgotten, so the map
            // holds only tenants counting now.
            tenants.retain(|_, slots| slots.available_permits() < self.per_tenant);
            tenants
                .entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        tokio::time::timeout(wait, semaphore.acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_at_its_cap_waits_and_others_do_not() {
        let slots = CountSlots::new(2);
        let a1 = slots.take("a", COUNT_WAIT).await.unwrap();
        let _a2 = slots.take("a", COUNT_WAIT).await.unwrap();
        assert!(slots.take("a", Duration::from_millis(10)).await.is_none());
        assert!(slots.take("b", Duration::from_millis(10)).await.is_some());
        drop(a1);
        assert!(slots.take("a", Duration::from_millis(10)).await.is_some());
    }
}
