//! The shipper's side: batches read from the spool (with the parser the
//! shipper hands down), handed back acknowledged, released or rejected, and
//! the wake-up when the shipper waits for records.

use super::*;

/// Unreadable segments skipped in one call of [`Recorder::next_batch`], at
/// most (each is counted in a drop report).
const MAX_DISCARDS_PER_BATCH: usize = 16;

/// A batch read from the spool, ready to send.
pub struct Batch {
    pub body: IngestBatch,
    pub receipt: Receipt,
    /// Why the batch ends where it does.
    pub stop: Stop,
}

impl Recorder {
    /// A batch of no records with this boot's labels: the heartbeat that
    /// says the runner is alive while it has nothing to ship.
    pub fn heartbeat(&self) -> IngestBatch {
        let labels = &self.labels;
        IngestBatch {
            app: labels.app.clone(),
            version: labels.version.clone(),
            runner: labels.runner.clone(),
            boot: labels.boot.clone(),
            source: labels.source,
            records: Vec::new(),
        }
    }

    /// Records waiting for the server.
    pub fn backlog(&self) -> Backlog {
        self.lock().spool.backlog()
    }

    /// The oldest records not yet acknowledged, as one batch within
    /// `limits` (one segment's, so one boot's). `None` when there are none.
    /// A batch may be empty when the rate limit's allowance is spent
    /// (`stop` is then [`Stop::Throttled`]). Hand it back with
    /// [`Recorder::acknowledge`] or [`Recorder::release`].
    /// Captured lines become records through `assemble` (the shipper's
    /// parser and grouping: see [`spool::read_batch`]). Blocking (disk reads, parsing):
    /// run it off the async threads.
    pub fn next_batch(
        &self,
        limits: &BatchLimits,
        assemble: &mut impl Assemble,
    ) -> io::Result<Option<Batch>> {
        for _ in 0..MAX_DISCARDS_PER_BATCH {
            // Looked at before the read is planned: once closed, nothing
            // more is written.
            let closed = self.is_closed();
            let Some(mut plan) = self.lock().spool.plan_read() else {
                return Ok(None);
            };
            if closed {
                plan.no_more_lines();
            }
            // Read without the lock: producers go on meanwhile.
            let read = match read_batch(&plan, limits, assemble) {
                Ok(read) => read,
                Err(error) => {
                    self.lock().spool.release();
                    return Err(error);
                }
            };
            if let (Stop::Corrupt(at), true) = (read.stop, read.records.is_empty()) {
                let mut state = self.lock();
                state.spool.discard_corrupt(plan.segment(), at);
                self.report_locked(&mut state);
                let unsynced = state.spool.take_unsynced();
                drop(state);
                self.sync(unsynced);
                continue;
            }
            let header = &read.header;
            return Ok(Some(Batch {
                body: IngestBatch {
                    app: header.app.clone(),
                    version: header.version.clone(),
                    runner: header.runner.clone(),
                    boot: header.boot.clone(),
                    source: header.source,
                    records: read.records,
                },
                receipt: read.receipt,
                stop: read.stop,
            }));
        }
        Err(io::Error::other(format!(
            "{MAX_DISCARDS_PER_BATCH} spool segments in a row in {} were unreadable",
            self.dir.display()
        )))
    }

    /// The server has `batch`: forget it. Drops counted meanwhile are
    /// reported now that shipping works.
    /// Blocking (the ledger is written, and fsynced under `--spool-fsync`).
    pub fn acknowledge(&self, batch: &Batch) {
        let unsynced = {
            let mut state = self.lock();
            state.spool.acknowledge(&batch.receipt);
            self.report_locked(&mut state);
            state.spool.take_unsynced()
        };
        self.sync(unsynced);
    }

    /// `batch` was not shipped; it will be read again.
    pub fn release(&self) {
        self.lock().spool.release();
    }

    /// The server refused `batch` for good (one record too large for it, or
    /// invalid): count it as dropped and go on.
    /// Blocking, as [`Recorder::acknowledge`].
    pub fn reject(&self, batch: &Batch) {
        let unsynced = {
            let mut state = self.lock();
            state.spool.reject(&batch.receipt, &batch.body.boot);
            self.report_locked(&mut state);
            state.spool.take_unsynced()
        };
        self.sync(unsynced);
    }

    /// Lines and bytes not yet acknowledged.
    pub fn pending(&self) -> (u64, u64) {
        let backlog = self.backlog();
        (backlog.records, backlog.line_bytes)
    }

    pub(super) fn wake_shipper(&self) {
        if self.shipper_waiting.swap(false, Ordering::AcqRel) {
            self.work.notify_one();
        }
    }

    /// Waits until a record is added (or the recorder is closed), if none is
    /// waiting to be shipped now; at most `timeout`.
    pub async fn wait_for_work(&self, timeout: Duration) {
        self.shipper_waiting.store(true, Ordering::Release);
        // Looked at after raising the flag: a record added before it is
        // seen here, one added after it wakes us. While leftovers are being
        // recovered nothing is readable: their end wakes us.
        let readable = {
            let state = self.lock();
            state.spool.backlog().records > 0 && state.spool.leftovers_recovered()
        };
        if readable || self.is_closed() {
            self.shipper_waiting.store(false, Ordering::Release);
            return;
        }
        let _ = tokio::time::timeout(timeout, self.work.notified()).await;
        self.shipper_waiting.store(false, Ordering::Release);
    }
}
