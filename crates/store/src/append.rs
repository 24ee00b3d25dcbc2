//! The write path: a batch checked, numbered, logged, made readable, and
//! made durable.
//!
//! Under the writer lock, in turn: duplicates are skipped (by `(runner,
//! boot, seq)`), records older than the out-of-order window refused, the
//! rest given consecutive ids, written to the log (not yet fsynced) and put
//! in the memtable. Then, outside the lock, group commit: the first append
//! to reach the commit lock fsyncs the log up to the newest record written
//! so far, which covers every append queued behind it; they find their ids
//! already durable and return. Only then are the records visible to
//! readers, in id order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tailwater_model::filter::timestamp_ns;
use tailwater_model::wire::{IngestBatch, IngestResponse};

use crate::part::StreamLabels;
use crate::row::Row;
use crate::{Durability, Inner, StoreError, MAX_FROZEN_TABLES, MAX_HELD_MEMTABLES};

impl Inner {
    pub(crate) fn append(
        &self,
        tenant: &str,
        batch: IngestBatch,
    ) -> Result<IngestResponse, StoreError> {
        self.check_failed()?;
        self.check_writable(tenant, &batch)?;
        let mut guard = self.lock_writer();
        loop {
            let (frozen, held) = {
                let state = self.read();
                (state.memtable.frozen_count(), state.memtable.held_bytes())
            };
            let held_over = held > MAX_HELD_MEMTABLES * self.options.memtable_max_bytes;
            if frozen < MAX_FROZEN_TABLES && !held_over {
                break;
            }
            self.check_failed()?;
            if held_over {
                let reason = self
                    .stalled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                return Err(StoreError::Stalled(reason.unwrap_or_else(|| {
                    "records of partitions that cannot be written fill memory".into()
                })));
            }
            self.wake_background();
            guard = self
                .room
                .wait_timeout(guard, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let window_ns =
            i64::try_from(self.options.out_of_order_window.as_nanos()).unwrap_or(i64::MAX);
        let total = batch.records.len();
        let IngestBatch {
            app,
            version,
            runner,
            boot,
            source,
            records,
        } = batch;

        let writer = &mut *guard;
        let seen = writer.dedup.stream(tenant, &runner, &boot);
        let newest_before = seen.newest_ts;
        let mut fresh = Vec::with_capacity(records.len());
        let mut refused = 0;
        let mut oldest_refused = None;
        for record in records {
            if seen.contains(record.seq) {
                continue;
            }
            // Kept to the millisecond, as CloudWatch and Elasticsearch keep
            // them: finer digits of a capture time are noise that costs two
            // bytes a record to store. Order within a runner is kept by id.
            let ts =
                jiff::Timestamp::from_millisecond(record.ts.as_millisecond()).unwrap_or(record.ts);
            let ts_ns = timestamp_ns(ts);
            if seen
                .newest_ts
                .is_some_and(|newest| ts_ns < newest.saturating_sub(window_ns))
            {
                refused += 1;
                oldest_refused =
                    Some(oldest_refused.map_or(ts, |oldest: jiff::Timestamp| oldest.min(ts)));
                continue;
            }
            seen.insert(record.seq);
            seen.saw_time(ts_ns);
            fresh.push(Row::new(
                writer.last_id + 1 + fresh.len() as u64,
                ts_ns,
                record,
            ));
        }
        let response = IngestResponse {
            accepted: fresh.len(),
            duplicates: total - fresh.len() - refused,
            refused,
            refused_reason: oldest_refused.map(|oldest| {
                format!(
                    "{refused} records (the oldest at {oldest}) were more than {} older than the newest record of runner {runner} (boot {boot}) and were refused: send each runner's records in time order, or raise the server's --out-of-order-window",
                    humantime(self.options.out_of_order_window)
                )
            }),
        };
        {
            let mut counters = self.counters();
            counters.appended += response.accepted as u64;
            counters.duplicates += response.duplicates as u64;
            counters.refused_out_of_order += refused as u64;
        }
        let Some(last) = fresh.last() else {
            return Ok(response);
        };
        let last_id = last.id;

        let labels = StreamLabels {
            app,
            version,
            runner,
            boot,
            source,
        };
        if let Err(error) = writer.wal.append_batch(tenant, &labels, &fresh) {
            let seen = writer.dedup.stream(tenant, &labels.runner, &labels.boot);
            for record in &fresh {
                seen.remove(record.seq);
            }
            seen.newest_ts = newest_before;
            return Err(StoreError::io(writer.wal.path())(error));
        }
        writer.last_id = last_id;
        let mut state = self.write();
        state
            .memtable
            .insert_stream(tenant, &labels, fresh, writer.segment);
        let full = state.memtable.active_bytes() >= self.options.memtable_max_bytes;
        if full {
            self.freeze(writer, &mut state)?;
        }
        drop(state);
        if self.options.durability != Durability::SyncEachBatch {
            // Readable now; durable when the OS (or the interval) says.
            self.visible.fetch_max(last_id, Ordering::AcqRel);
        }
        drop(guard);

        if full {
            if self.options.background {
                self.wake_background();
            } else {
                match self.flush_frozen() {
                    // This batch is stored: a partition the flush could not
                    // write is its own appends' error, not this one's.
                    Ok(()) | Err(StoreError::PartitionUnwritable { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        if self.options.durability == Durability::SyncEachBatch {
            self.commit(last_id)?;
        }
        Ok(response)
    }

    /// Refuses a batch with records for a partition a flush could not write:
    /// what it already holds of them waits in memory for the retry, and
    /// must not grow. Other partitions are not slowed: this is one lookup
    /// while no partition fails.
    fn check_writable(&self, tenant: &str, batch: &IngestBatch) -> Result<(), StoreError> {
        let unwritable = self.unwritable.lock().unwrap_or_else(|e| e.into_inner());
        if unwritable.is_empty() {
            return Ok(());
        }
        let Some(days) = unwritable.get(&(tenant.to_owned(), batch.app.clone())) else {
            return Ok(());
        };
        let blocked = batch.records.iter().find_map(|record| {
            let day = crate::flush::day_number(timestamp_ns(record.ts));
            days.contains(&day).then_some(day)
        });
        drop(unwritable);
        match blocked {
            None => Ok(()),
            Some(day) => {
                self.counters().refused_unwritable += 1;
                Err(StoreError::PartitionUnwritable {
                    tenant: tenant.to_owned(),
                    app: batch.app.clone(),
                    day: crate::day_of(day * 86_400 * 1_000_000_000),
                })
            }
        }
    }

    /// Makes ids up to `id` durable and visible: one fsync for every append
    /// written before it.
    fn commit(&self, id: u64) -> Result<(), StoreError> {
        if self.durable.load(Ordering::Acquire) >= id {
            return Ok(());
        }
        let _leader = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        if self.durable.load(Ordering::Acquire) >= id {
            return Ok(());
        }
        let (target, file, path) = {
            let writer = self.lock_writer();
            (
                writer.last_id,
                writer.wal.file(),
                writer.wal.path().to_owned(),
            )
        };
        if let Err(error) = file.sync_data() {
            // After a failed fsync the kernel may have dropped the dirty
            // pages: nothing written since the last good one can be trusted.
            self.fail(format!("fsync of {} failed: {error}", path.display()));
            return Err(StoreError::io(&path)(error));
        }
        self.durable.fetch_max(target, Ordering::AcqRel);
        self.visible.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// fsyncs the log now (the interval durability's timer).
    pub(crate) fn sync_log(&self) {
        let (target, file, path) = {
            let writer = self.lock_writer();
            (
                writer.last_id,
                writer.wal.file(),
                writer.wal.path().to_owned(),
            )
        };
        if self.durable.load(Ordering::Acquire) >= target {
            return;
        }
        match file.sync_data() {
            Ok(()) => {
                self.durable.fetch_max(target, Ordering::AcqRel);
            }
            Err(error) => self.fail(format!("fsync of {} failed: {error}", path.display())),
        }
    }
}

/// `90s`, `15m`, `1h`: a duration as a setting is written.
fn humantime(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
