//! Shipping: the spool's records to the server, in batches, until the
//! recorder is closed and empty.
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
//! With a rate limit ([`throttle`]), what exceeds it waits in the
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
//!
//! With several servers (`--server A,B`), [`Failover`] sends to one at a
//! time and moves to the next, round robin, when the one in use is away
//! (no connection, a reset, a timeout, 502/503/504); the batch that failed
//! stays in the spool and goes, after the usual backoff, to the next one.
//!
//! The files: [`transport`] (where a batch goes and how it was taken: the
//! [`Transport`] trait, HTTP its first implementation), [`failover`]
//! (several receivers, one at a time), [`nats`] (a cluster's intake
//! stream, `--nats`), [`status`] (what shipping is doing
//! now, for the control socket's `status`), [`decode`] (a
//! spooled line made a record to ship), [`group`] (the lines of a
//! traceback made one record), [`throttle`] (the rate limit),
//! `reports` (what shipping tells in the runner's logs). Reading the spool
//! and writing its ledger run on the blocking pool, never on the async
//! threads.

pub mod decode;
pub mod failover;
pub mod group;
pub mod nats;
mod reports;
pub mod status;
#[cfg(test)]
mod tests;
pub mod throttle;
pub mod transport;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::recorder::{Batch, Recorder};
use crate::spool::{BatchLimits, Stop};
pub use failover::Failover;
use group::{Assembler, Grouping};
use reports::{report_held_back, Cut, HeldBack, RateLimited, Refused};
pub use status::{AgentStatus, ShipStatus};
use throttle::{RateLimit, Throttle};
pub use transport::{Http, Outcome, Receiver, Transport};

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
    /// How the lines of a traceback are grouped into one record (`None`:
    /// they are not).
    pub multiline: Option<Grouping>,
}

/// Ships the recorder's records through `transport` until the recorder is
/// closed and empty, keeping `status` up to date.
pub async fn ship(
    transport: impl Transport,
    recorder: Arc<Recorder>,
    options: ShipOptions,
    status: Arc<ShipStatus>,
) {
    Shipper::new(transport, recorder, options, status)
        .run()
        .await
}

/// The shipper's state between batches.
struct Shipper<T> {
    transport: T,
    recorder: Arc<Recorder>,
    /// What shipping is doing, for the control socket's `status`.
    status: Arc<ShipStatus>,
    heartbeat: Option<Duration>,
    throttle: Throttle,
    /// A stretch of holding back for the rate limit, to be reported.
    held: Option<HeldBack>,
    /// A stretch of 429s, to be reported once shipping works.
    limited: Option<RateLimited>,
    refused: Refused,
    multiline: Option<Grouping>,
    cut: Cut,
    /// Events of the batch in hand cut at the size cap.
    batch_cut: u64,
    /// The next wait after a failure.
    retry: Duration,
    /// Sending fails: said once on stderr until it works again.
    failing: bool,
    /// Batch size: smaller after the receiver found one too large.
    max_bytes: u64,
    max_records: usize,
    /// Something (a batch or a heartbeat) was sent then.
    last_sent: Instant,
}

impl<T: Transport> Shipper<T> {
    fn new(
        transport: T,
        recorder: Arc<Recorder>,
        options: ShipOptions,
        status: Arc<ShipStatus>,
    ) -> Shipper<T> {
        Shipper {
            transport,
            recorder,
            status,
            heartbeat: options.heartbeat,
            throttle: Throttle::new(options.rate, Instant::now()),
            held: None,
            limited: None,
            refused: Refused::default(),
            multiline: options.multiline,
            cut: Cut::default(),
            batch_cut: 0,
            retry: FIRST_RETRY,
            failing: false,
            max_bytes: MAX_BATCH_BYTES,
            max_records: MAX_BATCH_RECORDS,
            last_sent: Instant::now(),
        }
    }

    async fn run(mut self) {
        loop {
            if self.recorder.backlog().records == 0 {
                if self.recorder.is_closed() {
                    return;
                }
                self.idle().await;
                continue;
            }
            if !self.failing && self.held.is_none() && self.limited.is_none() {
                gather(&self.recorder, self.max_records, self.max_bytes).await;
            }
            let Some(batch) = self.next_batch().await else {
                continue;
            };
            if let (Stop::Pending(wait), true) = (batch.stop, batch.body.records.is_empty()) {
                // A traceback's lines may still be coming: wait for them,
                // at most its wait.
                self.recorder.release();
                tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                continue;
            }
            if batch.body.records.is_empty() {
                self.hold_back().await;
                continue;
            }
            // Named before the send: a failover moves the destination on.
            let server = self.transport.destination().to_owned();
            let outcome = self.transport.send(&batch.body).await;
            if !matches!(outcome, Outcome::Accepted(_)) {
                self.status.failed(&server, outcome.reason());
            }
            self.take(batch, outcome).await;
        }
    }

    /// Nothing to ship: wait for records, or say the runner is alive when
    /// the heartbeat is due.
    async fn idle(&mut self) {
        let Some(every) = self.heartbeat else {
            self.recorder.wait_for_work(IDLE_WAIT).await;
            return;
        };
        let due = self.last_sent + every;
        let now = Instant::now();
        if now < due {
            self.recorder.wait_for_work(due - now).await;
            return;
        }
        // Tried once per interval, whatever the answer: a heartbeat is news
        // of now, never worth a retry later.
        self.last_sent = now;
        let server = self.transport.destination();
        let outcome = self.transport.send(&self.recorder.heartbeat()).await;
        if !matches!(outcome, Outcome::Accepted(_)) {
            self.status.failed(server, outcome.reason());
        }
        match outcome {
            Outcome::Accepted(_) if self.failing => {
                self.failing = false;
                eprintln!("tailwater: shipping logs to {server} again");
            }
            Outcome::Accepted(_) => {}
            failed if !self.failing => {
                self.failing = true;
                eprintln!(
                    "tailwater: cannot send a heartbeat to {server}: {}; trying again in {}",
                    failed.reason(),
                    crate::format_duration(every)
                );
            }
            _ => {}
        }
    }

    /// The next batch within the batch size and the rate limit's
    /// allowance, read from the spool on the blocking pool; `None` (after
    /// a wait) when there is none to send yet.
    async fn next_batch(&mut self) -> Option<Batch> {
        let allowance = self.throttle.allowance(Instant::now());
        let limits = BatchLimits {
            max_records: self.max_records,
            max_bytes: self.max_bytes,
            lines: allowance.lines,
            line_bytes: allowance.bytes,
        };
        let mut assembler = Assembler::new(self.multiline);
        let (read, assembler) = self
            .blocking(move |recorder| (recorder.next_batch(&limits, &mut assembler), assembler))
            .await;
        match read {
            Ok(Some(batch)) => {
                let receipt = &batch.receipt;
                self.batch_cut = assembler
                    .cut
                    .iter()
                    .filter(|&&seq| (receipt.first_seq..=receipt.last_seq).contains(&seq))
                    .count() as u64;
                Some(batch)
            }
            Ok(None) => {
                // Counted but not readable yet; look again shortly.
                self.recorder.wait_for_work(FIRST_RETRY).await;
                None
            }
            Err(error) => {
                eprintln!(
                    "tailwater: cannot read the spool at {}: {error}; retrying",
                    self.recorder.dir().display()
                );
                tokio::time::sleep(jittered(self.retry)).await;
                self.back_off();
                None
            }
        }
    }

    /// The rate limit's allowance is spent: wait for more.
    async fn hold_back(&mut self) {
        self.recorder.release();
        let now = Instant::now();
        self.held.get_or_insert_with(HeldBack::new);
        let backlog = self.recorder.backlog();
        let delay = self
            .throttle
            .delay(backlog.records, backlog.line_bytes, now);
        tokio::time::sleep(delay.max(Duration::from_millis(1))).await;
    }

    /// Acts on how the receiver took `batch`.
    async fn take(&mut self, batch: Batch, outcome: Outcome) {
        match outcome {
            Outcome::Accepted(answer) => self.accepted(batch, answer).await,
            Outcome::RetryAfter {
                retry_after,
                reason,
            } => {
                // The receiver asks this runner to slow down: wait as long
                // as it says (never less), the lines staying in the spool.
                self.recorder.release();
                let wait = self.asked_wait(retry_after);
                let limited = self.limited.get_or_insert_with(RateLimited::new);
                if limited.answers == 0 {
                    eprintln!(
                        "tailwater: {} is rate limiting this runner ({reason}); waiting {} as it asks, the lines stay in the spool at {}",
                        self.transport.destination(),
                        crate::format_duration(wait),
                        self.recorder.dir().display()
                    );
                }
                limited.answers += 1;
                limited.waited += wait;
                tokio::time::sleep(wait).await;
            }
            Outcome::Unavailable {
                retry_after,
                answered: true,
                reason,
                ..
            } => {
                // The receiver cannot store for now (a full disk, a stalled
                // store): as after a 429, wait as long as it says, the
                // lines staying in the spool.
                self.recorder.release();
                let wait = self.asked_wait(retry_after);
                if !self.failing {
                    self.failing = true;
                    eprintln!(
                        "tailwater: {} cannot store logs now ({reason}); waiting {} as it asks, the lines stay in the spool at {}",
                        self.transport.destination(),
                        crate::format_duration(wait),
                        self.recorder.dir().display()
                    );
                }
                tokio::time::sleep(wait).await;
            }
            Outcome::TooLarge { reason } => self.too_large(batch, reason).await,
            Outcome::Rejected { reason }
            | Outcome::Unavailable {
                answered: false,
                reason,
                ..
            } => {
                self.recorder.release();
                if !self.failing {
                    self.failing = true;
                    eprintln!(
                        "tailwater: cannot ship logs yet: {reason}; keeping them in the spool at {} and retrying",
                        self.recorder.dir().display()
                    );
                }
                tokio::time::sleep(jittered(self.retry)).await;
                self.back_off();
            }
        }
    }

    /// The receiver has `batch`: forget it, spend the allowance, and say
    /// what waited or was refused meanwhile.
    async fn accepted(&mut self, batch: Batch, answer: tailwater_model::wire::IngestResponse) {
        if answer.refused > 0 {
            let server = self.transport.destination();
            self.refused.report(&self.recorder, &batch, &answer, server);
        }
        let now = Instant::now();
        self.last_sent = now;
        let receipt = &batch.receipt;
        self.throttle
            .spend(receipt.metered_lines, receipt.metered_bytes, now);
        if let Some(held) = self.held.as_mut() {
            held.add(&batch);
        }
        let throttled = batch.stop == Stop::Throttled;
        let records = batch.body.records.len();
        self.blocking(move |recorder| recorder.acknowledge(&batch))
            .await;
        self.status.shipped(records);
        if throttled {
            let since = self.held.get_or_insert_with(HeldBack::new).started;
            if now.duration_since(since) >= THROTTLE_REPORT_EVERY {
                report_held_back(&self.recorder, self.held.take(), self.throttle.limit());
                self.held = Some(HeldBack::new());
            }
        } else {
            report_held_back(&self.recorder, self.held.take(), self.throttle.limit());
        }
        if let Some(limited) = self.limited.take() {
            limited.report(&self.recorder);
        }
        if let (cut @ 1.., Some(grouping)) = (std::mem::take(&mut self.batch_cut), self.multiline) {
            self.cut.report(&self.recorder, cut, grouping.max_bytes);
        }
        self.retry = FIRST_RETRY;
        self.max_records = MAX_BATCH_RECORDS;
        if self.failing {
            self.failing = false;
            eprintln!(
                "tailwater: shipping logs to {} again",
                self.transport.destination()
            );
        }
    }

    /// Too large for the receiver: smaller batches from now on, down to one
    /// record, which is dropped and counted.
    async fn too_large(&mut self, batch: Batch, reason: String) {
        if batch.body.records.len() > 1 {
            self.recorder.release();
            self.max_bytes = ((batch.receipt.end - batch.receipt.start) / 2).max(1);
            self.max_records = batch.body.records.len() / 2;
        } else {
            eprintln!(
                "tailwater: the server refused record {} of boot {} as too large ({reason}); it is dropped and counted",
                batch.receipt.first_seq, batch.body.boot
            );
            self.blocking(move |recorder| recorder.reject(&batch)).await;
        }
    }

    /// How long to wait as the receiver asked; the backoff grows meanwhile.
    fn asked_wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let wait = asked_wait(retry_after, self.retry);
        self.back_off();
        wait
    }

    fn back_off(&mut self) {
        self.retry = (self.retry * 2).min(LONGEST_RETRY);
    }

    /// Runs spool work (disk reads, parsing, ledger writes) on the blocking
    /// pool: none of it on the async threads.
    async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Recorder) -> R + Send + 'static,
    ) -> R {
        let recorder = self.recorder.clone();
        match tokio::task::spawn_blocking(move || work(&recorder)).await {
            Ok(result) => result,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// Lets a batch gather: returns once the worker is quiet (no record came
/// for [`QUIET_GAP`]), the batch is full, [`MAX_BATCH_DELAY`] passed, or
/// the recorder closed. It looks rather than being woken per record: a
/// worker printing flat out costs the agent a few timer wake-ups per
/// batch, not one per line.
async fn gather(recorder: &Recorder, max_records: usize, max_bytes: u64) {
    let deadline = tokio::time::Instant::now() + MAX_BATCH_DELAY;
    let mut seen = recorder.appended();
    loop {
        let backlog = recorder.backlog();
        if recorder.is_closed()
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
        let appended = recorder.appended();
        if appended == seen {
            return;
        }
        seen = appended;
    }
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
