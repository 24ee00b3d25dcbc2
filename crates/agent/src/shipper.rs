//! Shipping: the outbox's records to the server, in batches, until the
//! outbox is closed and empty.
//!
//! A batch goes out as soon as there is something to send, so a quiet worker's
//! last line reaches live tail at once; while a request is in flight, new
//! lines gather into the next batch. Failures are retried with exponential
//! backoff and jitter; the server skips records it already has, so a batch
//! retried after a lost acknowledgement is stored once.

use std::sync::Arc;
use std::time::Duration;

use tailwater_client::Client;

use crate::outbox::Outbox;

/// Records in one ingest request at most.
pub const MAX_BATCH_RECORDS: usize = 2_000;
/// Approximate bytes in one ingest request at most.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(2);

pub async fn ship(client: Client, outbox: Arc<Outbox>) {
    let mut retry = FIRST_RETRY;
    let mut failing = false;
    loop {
        let Some(batch) = outbox.batch(MAX_BATCH_RECORDS, MAX_BATCH_BYTES) else {
            if outbox.is_closed() {
                return;
            }
            outbox.wait_for_work().await;
            continue;
        };
        match client.ingest(&batch).await {
            Ok(_) => {
                outbox.acknowledge(batch.records.len());
                retry = FIRST_RETRY;
                if failing {
                    failing = false;
                    eprintln!("tailwater: shipping logs to {} again", client.server());
                }
            }
            Err(error) => {
                if !failing {
                    failing = true;
                    eprintln!(
                        "tailwater: cannot ship logs yet: {error}; keeping them and retrying"
                    );
                }
                tokio::time::sleep(jittered(retry)).await;
                retry = (retry * 2).min(LONGEST_RETRY);
            }
        }
    }
}

/// `delay` ± 25%, so many agents that lost the same server do not return in
/// lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.75..1.25))
}
