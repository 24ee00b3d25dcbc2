//! Shipping: the spool's records to the server, in batches, until the
//! outbox is closed and empty.
//!
//! Batches are sized by records and bytes, and by time: a batch goes out
//! when the worker has been quiet for [`QUIET_GAP`] (so a quiet worker's
//! last line reaches live tail at once), or [`MAX_BATCH_DELAY`] after the
//! shipper started gathering it while the worker keeps talking, or when it
//! is full. One batch is in flight at a time; what comes meanwhile gathers
//! into the next.
//!
//! Failures are retried with exponential backoff and jitter, the records
//! staying in the spool; the server skips records it already has (by
//! runner, boot and sequence number), so a batch retried after a lost
//! acknowledgement, or re-shipped after a restart, is stored once. A server
//! that finds a batch too large gets smaller ones; a single record it finds
//! too large is dropped and counted.
//!
//! With a rate limit ([`crate::throttle`]), what exceeds it waits in the
//! spool; each stretch of holding back is summed up in a system record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::json;
use tailwater_client::{Client, ClientError};
use tailwater_model::Level;

use crate::outbox::{fields, Batch, Outbox};
use crate::spool::{BatchLimits, Stop, Tally};
use crate::throttle::{RateLimit, Throttle};

/// Records in one ingest request at most.
pub const MAX_BATCH_RECORDS: usize = 2_000;
/// Approximate bytes in one ingest request at most.
pub const MAX_BATCH_BYTES: u64 = 1024 * 1024;
/// A batch goes out once no new record came for this long...
pub const QUIET_GAP: Duration = Duration::from_millis(2);
/// ...or once it has been gathered for this long, whichever comes first.
pub const MAX_BATCH_DELAY: Duration = Duration::from_millis(20);
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(2);
/// A stretch of holding back that lasts longer is reported in parts.
const THROTTLE_REPORT_EVERY: Duration = Duration::from_secs(60);

pub async fn ship(client: Client, outbox: Arc<Outbox>, rate: RateLimit) {
    let mut throttle = Throttle::new(rate, Instant::now());
    let mut held: Option<HeldBack> = None;
    let mut retry = FIRST_RETRY;
    let mut failing = false;
    let mut max_bytes = MAX_BATCH_BYTES;
    let mut max_records = MAX_BATCH_RECORDS;
    loop {
        if outbox.backlog().records == 0 {
            if outbox.is_closed() {
                return;
            }
            outbox.wait_for_work().await;
            continue;
        }
        if !failing && held.is_none() {
            gather(&outbox, max_records, max_bytes).await;
        }
        let allowance = throttle.allowance(Instant::now());
        let limits = BatchLimits {
            max_records,
            max_bytes,
            lines: allowance.lines,
            line_bytes: allowance.bytes,
        };
        let batch = match outbox.next_batch(&limits) {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                // Counted but not readable yet; look again shortly.
                let _ = tokio::time::timeout(FIRST_RETRY, outbox.wait_for_work()).await;
                continue;
            }
            Err(error) => {
                eprintln!(
                    "tailwater: cannot read the spool at {}: {error}; retrying",
                    outbox.dir().display()
                );
                tokio::time::sleep(jittered(retry)).await;
                retry = (retry * 2).min(LONGEST_RETRY);
                continue;
            }
        };
        if batch.body.records.is_empty() {
            // The rate limit's allowance is spent: wait for more.
            outbox.release();
            let now = Instant::now();
            held.get_or_insert_with(HeldBack::new);
            let backlog = outbox.backlog();
            let delay = throttle.delay(backlog.records, backlog.line_bytes, now);
            tokio::time::sleep(delay.max(Duration::from_millis(1))).await;
            continue;
        }
        match client.ingest(&batch.body).await {
            Ok(_) => {
                let now = Instant::now();
                throttle.spend(
                    batch.receipt.metered_lines,
                    batch.receipt.metered_bytes,
                    now,
                );
                if let Some(held) = held.as_mut() {
                    held.add(&batch);
                }
                let throttled = batch.stop == Stop::Throttled;
                outbox.acknowledge(&batch);
                if throttled {
                    let since = held.get_or_insert_with(HeldBack::new).started;
                    if now.duration_since(since) >= THROTTLE_REPORT_EVERY {
                        report_held_back(&outbox, held.take(), throttle.limit());
                        held = Some(HeldBack::new());
                    }
                } else {
                    report_held_back(&outbox, held.take(), throttle.limit());
                }
                retry = FIRST_RETRY;
                max_records = MAX_BATCH_RECORDS;
                if failing {
                    failing = false;
                    eprintln!("tailwater: shipping logs to {} again", client.server());
                }
            }
            Err(ClientError::Api {
                status: 413,
                message,
                ..
            }) => {
                // Too large for this server: smaller batches from now on,
                // down to one record, which is dropped and counted.
                if batch.body.records.len() > 1 {
                    outbox.release();
                    max_bytes = ((batch.receipt.end - batch.receipt.start) / 2).max(1);
                    max_records = batch.body.records.len() / 2;
                } else {
                    eprintln!(
                        "tailwater: the server refused record {} of boot {} as too large ({message}); it is dropped and counted",
                        batch.receipt.first_seq, batch.body.boot
                    );
                    outbox.reject(&batch);
                }
            }
            Err(error) => {
                outbox.release();
                if !failing {
                    failing = true;
                    let hint = match &error {
                        ClientError::Api {
                            status: 401 | 403, ..
                        } => " (check --token / TAILWATER_TOKEN: an ingest or admin token of this server)",
                        _ => "",
                    };
                    eprintln!(
                        "tailwater: cannot ship logs yet: {error}{hint}; keeping them in the spool at {} and retrying",
                        outbox.dir().display()
                    );
                }
                tokio::time::sleep(jittered(retry)).await;
                retry = (retry * 2).min(LONGEST_RETRY);
            }
        }
    }
}

/// Lets a batch gather: returns once the worker is quiet, the batch is
/// full, [`MAX_BATCH_DELAY`] passed, or the outbox closed.
async fn gather(outbox: &Outbox, max_records: usize, max_bytes: u64) {
    let deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
    loop {
        let backlog = outbox.backlog();
        if outbox.is_closed()
            || backlog.records >= max_records as u64
            || backlog.frame_bytes >= max_bytes
        {
            return;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return;
        }
        let wait = QUIET_GAP.min(deadline - now);
        if tokio::time::timeout(wait, outbox.wait_for_work())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A stretch of time while the rate limit held lines back: those shipped
/// since it began.
struct HeldBack {
    started: Instant,
    since: Timestamp,
    lines: Tally,
}

impl HeldBack {
    fn new() -> HeldBack {
        HeldBack {
            started: Instant::now(),
            since: Timestamp::now(),
            lines: Tally::new("throttled"),
        }
    }

    fn add(&mut self, batch: &Batch) {
        let receipt = &batch.receipt;
        self.lines.add(
            &batch.body.boot,
            (receipt.first_seq, receipt.last_seq),
            receipt.metered_lines,
            receipt.metered_bytes,
            (receipt.first_ts, receipt.last_ts),
        );
    }
}

fn report_held_back(outbox: &Outbox, held: Option<HeldBack>, limit: RateLimit) {
    let Some(held) = held.filter(|held| held.lines.lines > 0) else {
        return;
    };
    let until = Timestamp::now();
    let HeldBack { since, lines, .. } = held;
    outbox.system(
        Level::Warn,
        format!(
            "throttled: {} lines, {} bytes held back between {since} and {until} ({}); shipped late, none dropped",
            lines.lines,
            lines.bytes,
            limit.describe()
        ),
        fields(json!({
            "event": "throttled",
            "held_lines": lines.lines,
            "held_bytes": lines.bytes,
            "since": since.to_string(),
            "until": until.to_string(),
            "seqs": lines.seqs,
            "rate_lines": limit.lines_per_second,
            "rate_bytes": limit.bytes_per_second,
        })),
    );
}

/// `delay` ± 25%, so many agents that lost the same server do not return in
/// lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.75..1.25))
}
