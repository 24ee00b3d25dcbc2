//! Live tail: following the store as records arrive.
//!
//! A follower does not receive records pushed by ingest; it reads them from
//! the store after the last id it delivered, woken by a watch on the newest
//! id. So a slow client never slows ingest or holds records in memory: it
//! only falls behind, and catches up from the store. And resuming after a
//! reconnect is the same read as following.

use tailwater_model::{Filter, LogRecord};
use tokio::sync::mpsc;

use crate::AppState;

/// Records one store read hands a follower at most.
const READ_BATCH: usize = 512;
/// Records buffered for a follower's client before the follower waits.
const CLIENT_BUFFER: usize = 1024;

/// Streams `tenant`'s records matching `filter` with ids above `after`, in
/// id order, until the receiver is dropped or the server stops.
pub fn follow(
    state: &AppState,
    tenant: String,
    filter: Filter,
    mut after: u64,
) -> mpsc::Receiver<LogRecord> {
    let (sender, receiver) = mpsc::channel(CLIENT_BUFFER);
    let store = state.store.clone();
    let mut newest = state.new_records.subscribe();
    let mut stopping = state.stopping.subscribe();
    tokio::spawn(async move {
        loop {
            // Mark the current newest id as seen *before* reading, so an
            // append during the read wakes the wait below.
            let stored_up_to = *newest.borrow_and_update();
            let read = {
                let (store, tenant, filter) = (store.clone(), tenant.clone(), filter.clone());
                tokio::task::spawn_blocking(move || {
                    store.read_after(&tenant, &filter, after, READ_BATCH)
                })
                .await
            };
            let Ok(records) = read else { return };
            let read_everything = records.len() < READ_BATCH;
            for record in records {
                after = record.id;
                if sender.send(record).await.is_err() {
                    return;
                }
            }
            if !read_everything {
                continue;
            }
            // Non-matching records up to here need no second look.
            after = after.max(stored_up_to);
            tokio::select! {
                changed = newest.changed() => if changed.is_err() { return },
                _ = stopping.wait_for(|stopping| *stopping) => return,
                _ = sender.closed() => return,
            }
        }
    });
    receiver
}
