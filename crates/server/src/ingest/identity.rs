//! The runner, boot and sequence numbers of records from senders that
//! carry none (OTLP, and the other protocols after it), so that dedup, the
//! out-of-order window and the runner table work for them unchanged:
//!
//! - runner: the sender's own instance label, as its decoder names it
//!   (OTLP `service.instance.id`, …); else `token-<id>`, one runner per
//!   token;
//! - boot: the protocol and the UTC day (`otlp-2026-12-07`), so no boot
//!   outlives a day;
//! - seq: numbered by the server, one after another per runner and boot,
//!   following the highest the store holds: a stream numbered without gaps
//!   is one range in dedup memory and in each part's footer, however many
//!   records it has (hashes of the records would be one range each).
//!
//! The server numbers them, so a batch sent twice is stored twice, except
//! records that carry an id of their own (OTLP's `log.record.uid`): one
//! seen among the tenant's latest `--dedup-uids` is a duplicate. Senders
//! retry only what was refused whole (429, 503), which stored nothing, so
//! a copy needs an answer lost after the store took the batch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use jiff::{tz::TimeZone, Timestamp};
use tailwater_store::Store;

/// Record ids remembered per tenant, by default.
pub const DEFAULT_DEDUP_UIDS: usize = 100_000;
/// Streams whose next number is kept in memory before those of past days'
/// boots are let go (their boots take no more records; a number asked of
/// one again starts from the store's highest).
const MAX_STREAMS: usize = 100_000;

/// `(tenant, app, runner, boot)`.
type Key = (String, String, String, String);

pub struct Identity {
    store: Arc<Store>,
    next: Mutex<HashMap<Key, u64>>,
    uids: Mutex<HashMap<String, RecentUids>>,
    dedup_uids: usize,
}

impl Identity {
    pub fn new(store: Arc<Store>, dedup_uids: usize) -> Identity {
        Identity {
            store,
            next: Mutex::new(HashMap::new()),
            uids: Mutex::new(HashMap::new()),
            dedup_uids,
        }
    }

    /// The boot of what `protocol` sends on the UTC day of `now`.
    pub fn boot(protocol: &str, now: Timestamp) -> String {
        format!("{protocol}-{}", now.to_zoned(TimeZone::UTC).date())
    }

    /// The runner of a sender that names no instance: its token's.
    pub fn token_runner(token_id: &str) -> String {
        format!("token-{token_id}")
    }

    /// The first of `count` sequence numbers, one after another, for the
    /// stream's next records.
    pub fn number(&self, tenant: &str, app: &str, runner: &str, boot: &str, count: usize) -> u64 {
        let key = (
            tenant.to_owned(),
            app.to_owned(),
            runner.to_owned(),
            boot.to_owned(),
        );
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        if !next.contains_key(&key) && next.len() >= MAX_STREAMS {
            // Boots end with their day (`YYYY-MM-DD`): keep today's.
            let day = boot.get(boot.len().saturating_sub(10)..).unwrap_or("");
            next.retain(|(_, _, _, boot), _| boot.ends_with(day));
        }
        let slot = next.entry(key).or_insert_with(|| {
            self.store
                .highest_seq(tenant, app, runner, boot)
                .map_or(0, |highest| highest + 1)
        });
        let first = *slot;
        *slot = first + count as u64;
        first
    }

    /// Which of `uids` (each a record's own id, if it has one) the tenant
    /// sent lately: those records are duplicates.
    pub fn seen(&self, tenant: &str, app: &str, uids: &[Option<String>]) -> Vec<bool> {
        let all = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        let recent = all.get(tenant);
        uids.iter()
            .map(|uid| {
                uid.as_deref()
                    .zip(recent)
                    .is_some_and(|(uid, recent)| recent.contains(app, uid))
            })
            .collect()
    }

    /// Remembers `uids` as stored for the tenant.
    pub fn remember(&self, tenant: &str, app: &str, uids: impl IntoIterator<Item = String>) {
        if self.dedup_uids == 0 {
            return;
        }
        let mut all = self.uids.lock().unwrap_or_else(|e| e.into_inner());
        let recent = all.entry(tenant.to_owned()).or_default();
        for uid in uids {
            recent.insert(app, uid, self.dedup_uids);
        }
    }
}

/// The latest record ids of one tenant, the oldest let go first.
#[derive(Default)]
struct RecentUids {
    /// `app NUL uid`; a std set, whose hash is keyed per process, so no
    /// sender can make its ids collide on purpose.
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentUids {
    fn key(app: &str, uid: &str) -> String {
        format!("{app}\0{uid}")
    }

    fn contains(&self, app: &str, uid: &str) -> bool {
        self.set.contains(&Self::key(app, uid))
    }

    fn insert(&mut self, app: &str, uid: String, capacity: usize) {
        let key = Self::key(app, &uid);
        if !self.set.insert(key.clone()) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tailwater_model::wire::{IngestBatch, IngestRecord};
    use tailwater_model::Stream;

    use super::*;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        Arc::new(Store::open(dir, tailwater_store::StoreOptions::default()).unwrap())
    }

    #[test]
    fn numbers_follow_one_another_and_what_the_store_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let boot = Identity::boot("otlp", "2026-12-07T23:59:59Z".parse().unwrap());
        assert_eq!(boot, "otlp-2026-12-07");
        // The store already holds 0..=4 of this stream (say, before a restart).
        let records = (0..5)
            .map(|seq| IngestRecord {
                seq,
                ts: Timestamp::now(),
                stream: Stream::Stdout,
                level: Default::default(),
                request_id: None,
                message: format!("line {seq}"),
                fields: Default::default(),
                invalid_utf8: false,
            })
            .collect();
        store
            .append(
                "t",
                IngestBatch {
                    app: "api".into(),
                    version: String::new(),
                    runner: "pod-1".into(),
                    boot: boot.clone(),
                    source: Default::default(),
                    records,
                },
            )
            .unwrap();
        let identity = Identity::new(store, 10);
        assert_eq!(identity.number("t", "api", "pod-1", &boot, 3), 5);
        assert_eq!(identity.number("t", "api", "pod-1", &boot, 2), 8);
        assert_eq!(identity.number("t", "api", "pod-1", &boot, 1), 10);
        // Every other stream starts from 0.
        assert_eq!(identity.number("t", "api", "pod-2", &boot, 1), 0);
        assert_eq!(identity.number("u", "api", "pod-1", &boot, 1), 0);
        assert_eq!(identity.number("t", "web", "pod-1", &boot, 1), 0);
    }

    #[test]
    fn uids_are_remembered_per_tenant_and_app_up_to_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::new(store(dir.path()), 3);
        let uids = |ids: &[&str]| -> Vec<Option<String>> {
            ids.iter().map(|id| Some((*id).to_owned())).collect()
        };
        identity.remember("t", "api", ["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            identity.seen("t", "api", &uids(&["a", "b", "c"])),
            [true, true, false]
        );
        assert_eq!(identity.seen("t", "web", &uids(&["a"])), [false]);
        assert_eq!(identity.seen("u", "api", &uids(&["a"])), [false]);
        assert_eq!(identity.seen("t", "api", &[None]), [false]);
        // Past the window, the oldest is let go.
        identity.remember("t", "api", ["c".to_owned(), "d".to_owned()]);
        assert_eq!(
            identity.seen("t", "api", &uids(&["a", "b", "d"])),
            [false, true, true]
        );
    }
}
