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
//! spool; each stretch of holding back is summed up in a system record. A
//! server that answers 429 is obeyed the same way: the shipper waits as
//! long as its `Retry-After` says (plus jitter), the lines stay in the
//! spool, and a `server_rate_limited` record counts the answers and the
//! wait once shipping works again.
//!
//! Lines the server answers it refused (in a 200: too old for its
//! out-of-order window or their app's retention) are not sent again, and
//! never silently: each answer that refused some is told in a
//! `server_refused` record in the runner's logs, with the reasons and a
//! running count, and on the agent's stderr the first time.
//!
//! With nothing to ship for the heartbeat interval, an empty batch (the
//! runner's labels, no records) tells the server the runner is alive, so it
//! can tell a quiet runner from a lost one.

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
/// A server's `Retry-After` is followed up to this long; a longer one is
/// taken as this (a mistaken hour must not silence a runner).
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Sending nothing, the shipper still looks this often (the heartbeat may
/// be off).
const IDLE_WAIT: Duration = Duration::from_secs(3600);
/// How often an agent that shipped nothing says it is alive, unless
/// configured otherwise.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// A stretch of holding back that lasts longer is reported in parts.
const THROTTLE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// How shipping behaves beyond its batches.
#[derive(Clone, Copy, Debug)]
pub struct ShipOptions {
    pub rate: RateLimit,
    /// With nothing shipped for this long, an empty batch tells the server
    /// the runner is alive (`None`: never).
    pub heartbeat: Option<Duration>,
}

pub async fn ship(client: Client, outbox: Arc<Outbox>, options: ShipOptions) {
    let mut throttle = Throttle::new(options.rate, Instant::now());
    let mut held: Option<HeldBack> = None;
    let mut limited: Option<RateLimited> = None;
    let mut refused = Refused::default();
    let mut retry = FIRST_RETRY;
    let mut failing = false;
    let mut max_bytes = MAX_BATCH_BYTES;
    let mut max_records = MAX_BATCH_RECORDS;
    let mut last_sent = Instant::now();
    loop {
        if outbox.backlog().records == 0 {
            if outbox.is_closed() {
                return;
            }
            let Some(every) = options.heartbeat else {
                outbox.wait_for_work(IDLE_WAIT).await;
                continue;
            };
            let due = last_sent + every;
            let now = Instant::now();
            if now < due {
                outbox.wait_for_work(due - now).await;
                continue;
            }
            // Tried once per interval, whatever the answer: a heartbeat is
            // news of now, never worth a retry later.
            last_sent = now;
            match client.ingest(&outbox.heartbeat()).await {
                Ok(_) if failing => {
                    failing = false;
                    eprintln!("tailwater: shipping logs to {} again", client.server());
                }
                Ok(_) => {}
                Err(error) if !failing => {
                    failing = true;
                    eprintln!(
                        "tailwater: cannot send a heartbeat to {}: {error}; trying again in {}",
                        client.server(),
                        crate::format_duration(every)
                    );
                }
                Err(_) => {}
            }
            continue;
        }
        if !failing && held.is_none() && limited.is_none() {
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
                outbox.wait_for_work(FIRST_RETRY).await;
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
            Ok(answer) => {
                if answer.refused > 0 {
                    refused.report(&outbox, &batch, &answer, client.server());
                }
                let now = Instant::now();
                last_sent = now;
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
                if let Some(limited) = limited.take() {
                    limited.report(&outbox);
                }
                retry = FIRST_RETRY;
                max_records = MAX_BATCH_RECORDS;
                if failing {
                    failing = false;
                    eprintln!("tailwater: shipping logs to {} again", client.server());
                }
            }
            Err(ClientError::RateLimited {
                retry_after,
                message,
                ..
            }) => {
                // The server asks this runner to slow down: wait as long as
                // it says (never less), the lines staying in the spool.
                outbox.release();
                let wait = asked_wait(retry_after, retry);
                retry = (retry * 2).min(LONGEST_RETRY);
                let limited = limited.get_or_insert_with(RateLimited::new);
                if limited.answers == 0 {
                    eprintln!(
                        "tailwater: {} is rate limiting this runner ({message}); waiting {} as it asks, the lines stay in the spool at {}",
                        client.server(),
                        crate::format_duration(wait),
                        outbox.dir().display()
                    );
                }
                limited.answers += 1;
                limited.waited += wait;
                tokio::time::sleep(wait).await;
            }
            Err(ClientError::Unavailable {
                status,
                retry_after,
                message,
                ..
            }) => {
                // The server cannot store for now (507: its disk is full;
                // 503: its store is stalled): as after a 429, wait as long
                // as it says, the lines staying in the spool.
                outbox.release();
                let wait = asked_wait(retry_after, retry);
                retry = (retry * 2).min(LONGEST_RETRY);
                if !failing {
                    failing = true;
                    eprintln!(
                        "tailwater: {} cannot store logs now ({status}: {message}); waiting {} as it asks, the lines stay in the spool at {}",
                        client.server(),
                        crate::format_duration(wait),
                        outbox.dir().display()
                    );
                }
                tokio::time::sleep(wait).await;
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

/// Lets a batch gather: returns once the worker is quiet (no record came
/// for [`QUIET_GAP`]), the batch is full, [`MAX_BATCH_DELAY`] passed, or
/// the outbox closed. It looks rather than being woken per record: a
/// worker printing flat out costs the agent a few timer wake-ups per
/// batch, not one per line.
async fn gather(outbox: &Outbox, max_records: usize, max_bytes: u64) {
    let deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
    let mut seen = outbox.appended();
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
        tokio::time::sleep(QUIET_GAP.min(deadline - now)).await;
        let appended = outbox.appended();
        if appended == seen {
            return;
        }
        seen = appended;
    }
}

/// A stretch of time while the server answered 429 (rate limited): how
/// often, and how long the shipper waited as it asked.
struct RateLimited {
    since: Timestamp,
    answers: u64,
    waited: Duration,
}

impl RateLimited {
    fn new() -> RateLimited {
        RateLimited {
            since: Timestamp::now(),
            answers: 0,
            waited: Duration::ZERO,
        }
    }

    /// Shipping works again: one record says how it was held up.
    fn report(self, outbox: &Outbox) {
        let until = Timestamp::now();
        outbox.system(
            Level::Warn,
            format!(
                "the server rate limited this runner between {} and {until}: {} answers 429, waited {} in all as it asked (Retry-After); the lines waited in the spool and were shipped late, none dropped",
                self.since,
                self.answers,
                crate::format_duration(self.waited),
            ),
            fields(json!({
                "event": "server_rate_limited",
                "answers": self.answers,
                "waited_ms": self.waited.as_millis() as u64,
                "since": self.since.to_string(),
                "until": until.to_string(),
            })),
        );
    }
}

/// Lines the server took in a batch it answered 200 but did not store
/// (`refused` in its answer: older than its out-of-order window or than
/// their app's retention). Sending them again would not help, so each such
/// answer is told at once: a `server_refused` system record in the
/// runner's own logs, and a line on the agent's stderr the first time.
#[derive(Default)]
struct Refused {
    /// Lines refused since the agent started: the counter the records
    /// carry.
    lines: u64,
}

impl Refused {
    fn report(
        &mut self,
        outbox: &Outbox,
        batch: &Batch,
        answer: &tailwater_model::wire::IngestResponse,
        server: &str,
    ) {
        let first = self.lines == 0;
        self.lines += answer.refused as u64;
        let why = answer
            .refused_reason
            .clone()
            .unwrap_or_else(|| "the server gave no reason".to_owned());
        let reasons: serde_json::Map<String, serde_json::Value> = answer
            .refused_by_reason
            .iter()
            .map(|(reason, lines)| (reason.clone(), (*lines).into()))
            .collect();
        let receipt = &batch.receipt;
        if first {
            eprintln!(
                "tailwater: {server} refused {} lines of this runner ({why}); each refusal is told in a server_refused record in the runner's logs",
                answer.refused
            );
        }
        outbox.system(
            Level::Warn,
            format!(
                "the server refused {} of the lines {}..={} of boot {} and did not store them: {why}",
                answer.refused, receipt.first_seq, receipt.last_seq, batch.body.boot
            ),
            fields(json!({
                "event": "server_refused",
                "refused_lines": answer.refused,
                "reasons": reasons,
                "first_seq": receipt.first_seq,
                "last_seq": receipt.last_seq,
                "refused_total": self.lines,
            })),
        );
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

/// How long to wait after the server asked this agent to hold off (429, or
/// 507/503 while it cannot store): as long as its `Retry-After` says, never
/// less, jittered up so the agents it turned away do not return in lockstep and
/// capped so a wild value cannot park the agent; without one, the backoff.
fn asked_wait(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    match retry_after {
        Some(asked) => asked
            .mul_f64(rand::random_range(1.0..1.25))
            .min(LONGEST_RETRY_AFTER),
        None => jittered(backoff),
    }
}

/// `delay` ± 25%, so many agents that lost the same server do not return in
/// lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.75..1.25))
}
