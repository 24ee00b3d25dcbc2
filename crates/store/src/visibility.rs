//! How far readers may read: the newest position whose record is visible,
//! raised in position order once records are readable (and, with
//! [`crate::Durability::SyncEachBatch`], durable), so a reader following it
//! never skips one; and the one wake-up that rises with it
//! ([`crate::Store::subscribe`]), which live tails (and later drains and
//! cluster replicas) wait on, whoever wrote the records.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

pub(crate) struct Visibility {
    newest: AtomicU64,
    wake: watch::Sender<u64>,
}

impl Visibility {
    pub fn new(newest: u64) -> Visibility {
        Visibility {
            newest: AtomicU64::new(newest),
            wake: watch::Sender::new(newest),
        }
    }

    /// The newest visible position.
    pub fn load(&self) -> u64 {
        self.newest.load(Ordering::Acquire)
    }

    /// Makes positions up to `to` visible and wakes subscribers; never
    /// lowers it.
    pub fn raise(&self, to: u64) {
        if self.newest.fetch_max(to, Ordering::AcqRel) < to {
            // Two raisers may send out of turn: the watch keeps the larger.
            self.wake.send_if_modified(|newest| {
                let raised = *newest < to;
                *newest = (*newest).max(to);
                raised
            });
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_see_it_rise_and_never_fall() {
        let visibility = Visibility::new(3);
        let mut woken = visibility.subscribe();
        assert_eq!(*woken.borrow_and_update(), 3);
        visibility.raise(2);
        assert!(!woken.has_changed().unwrap(), "lowering is no news");
        visibility.raise(9);
        assert!(woken.has_changed().unwrap());
        assert_eq!(*woken.borrow_and_update(), 9);
        assert_eq!(visibility.load(), 9);
    }
}
