//! The threads counts scan blocks on besides their caller's: one bounded
//! pool per store, shared by every count of every tenant.
//!
//! A count always scans on the thread that asked (so it always makes
//! progress, whatever others hold) and may borrow up to
//! `query_threads - 1` helpers more, without waiting: only those free at
//! the moment. So N concurrent counts run on at most
//! N + `query_threads` - 1 threads, not N × `query_threads`; and no tenant
//! holds more than half the helpers (rounded up) at once, so another
//! tenant's count finds some free unless several tenants are counting.

use std::collections::HashMap;
use std::sync::Mutex;

/// The pool: how many helpers there are and who holds them.
#[derive(Debug)]
pub(crate) struct ScanThreads {
    /// Most helpers one tenant holds at once.
    per_tenant: usize,
    state: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    free: usize,
    by_tenant: HashMap<String, usize>,
}

/// Helpers lent to one count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease<'a> {
    pool: &'a ScanThreads,
    tenant: String,
    /// Helper threads the count may start.
    pub helpers: usize,
}

impl ScanThreads {
    /// The pool of a store whose counts may each use `query_threads`.
    pub fn new(query_threads: usize) -> ScanThreads {
        let helpers = query_threads.saturating_sub(1);
        ScanThreads {
            per_tenant: helpers.div_ceil(2),
            state: Mutex::new(Held {
                free: helpers,
                by_tenant: HashMap::new(),
            }),
        }
    }

    /// Lends `tenant` up to `wanted` helpers, those free now (maybe none).
    pub fn lend(&self, tenant: &str, wanted: usize) -> Lease<'_> {
        let mut held = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.by_tenant.get(tenant).copied().unwrap_or(0);
        let helpers = wanted
            .min(held.free)
            .min(self.per_tenant.saturating_sub(mine));
        if helpers > 0 {
            held.free -= helpers;
            *held.by_tenant.entry(tenant.to_owned()).or_default() += helpers;
        }
        Lease {
            pool: self,
            tenant: tenant.to_owned(),
            helpers,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.helpers == 0 {
            return;
        }
        let mut held = self.pool.state.lock().unwrap_or_else(|e| e.into_inner());
        held.free += self.helpers;
        if let Some(mine) = held.by_tenant.get_mut(&self.tenant) {
            *mine -= self.helpers.min(*mine);
            if *mine == 0 {
                held.by_tenant.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_are_shared_bounded_and_no_tenant_holds_them_all() {
        let pool = ScanThreads::new(5); // 4 helpers, 2 a tenant
        let a1 = pool.lend("a", 4);
        assert_eq!(a1.helpers, 2);
        let a2 = pool.lend("a", 4);
        assert_eq!(a2.helpers, 0, "a tenant holds at most half");
        let b = pool.lend("b", 4);
        assert_eq!(b.helpers, 2, "the other half is left for others");
        let c = pool.lend("c", 4);
        assert_eq!(c.helpers, 0, "no more than the pool");
        drop(a1);
        assert_eq!(pool.lend("c", 4).helpers, 2, "given back on drop");
        drop((a2, b, c));
        assert_eq!(pool.lend("a", 9).helpers, 2);
    }

    #[test]
    fn one_thread_lends_nothing() {
        let pool = ScanThreads::new(1);
        assert_eq!(pool.lend("a", 8).helpers, 0);
        assert_eq!(ScanThreads::new(0).lend("a", 8).helpers, 0);
        assert_eq!(ScanThreads::new(2).lend("a", 8).helpers, 1);
    }
}
