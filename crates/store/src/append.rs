//! The write path: a batch checked, numbered, logged, made readable, and
//! made durable.
//!
//! Under the writer lock, in turn: duplicates are skipped (by `(app,
//! runner, boot, seq)`); a record dated more than `max_clock_skew` ahead of
//! the store's clock, or outside the times it can hold, is given the
//! store's time and keeps its own in the field `original_ts` (so one
//! record from a clock set wrong never moves its stream's window into the
//! future); records older than their retention (when the caller gives one)
//! or the out-of-order window are refused, by reason; the rest given
//! consecutive ids, written to the log (not yet fsynced) and put
//! in the memtable. Then, outside the lock, group commit: the first append
//! to reach the commit lock fsyncs the log up to the newest record written
//! so far, which covers every append queued behind it; they find their ids
//! already durable and return. Only then are the records visible to
//! readers, in id order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tailwater_model::wire::{
    IngestBatch, IngestRecord, IngestResponse, ORIGINAL_TS_FIELD, REFUSED_OLDER_THAN_RETENTION,
    REFUSED_OUT_OF_ORDER, RETIMED_CLOCK_SKEW, RETIMED_OUT_OF_RANGE,
};

use crate::dedup::{self, StreamKey};
use crate::part::StreamLabels;
use crate::row::Row;
use crate::{retention, Durability, Inner, StoreError, MAX_FROZEN_TABLES, MAX_HELD_MEMTABLES};

/// How one append treats its batch: each public `Store::append…` is one
/// set of these.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rules {
    /// Records whose day a retention of this age would delete are refused.
    pub max_age: Option<Duration>,
    /// Records older than the out-of-order window are refused; without it
    /// they are taken all the same (a repair: records another node stored,
    /// [`crate::Store::append_repaired`]).
    pub window: bool,
    /// The batch's records are numbered from this position, record `i` of
    /// the batch as given `first + i`, rather than from the store's next
    /// id ([`crate::Store::append_at`]); a position not above the last id
    /// is moved to the next one, and counted.
    pub first: Option<u64>,
    /// Return once written, before the log is synced: the caller syncs
    /// ([`crate::Store::sync`]) before it tells anyone the batch is stored.
    pub deferred: bool,
}

impl Inner {
    /// Stores `batch` under `rules`.
    pub(crate) fn append(
        &self,
        tenant: &str,
        batch: IngestBatch,
        rules: Rules,
    ) -> Result<IngestResponse, StoreError> {
        let Rules {
            max_age,
            window,
            first,
            deferred,
        } = rules;
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
        let clock = Clock::new(self.options.max_clock_skew);
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
        let seen = writer.dedup.stream(tenant, &app, &runner, &boot);
        let newest_before = seen.newest_ts;
        let mut fresh = Vec::with_capacity(records.len());
        let mut tally = Tally::default();
        let key = StreamKey {
            tenant,
            app: &app,
            runner: &runner,
            boot: &boot,
        };
        // Read only when a number below the dedup watermark comes.
        let mut parts = None;
        let mut moved = 0u64;
        for (index, mut record) in records.into_iter().enumerate() {
            if seen.contains(record.seq) {
                continue;
            }
            if seen.may_be_in_parts(record.seq) {
                let parts = parts.get_or_insert_with(|| self.read().parts.clone());
                if dedup::in_parts(parts, key, record.seq) {
                    continue;
                }
            }
            // Before the clock rule: a time too old to hold is past any
            // retention, and refused rather than moved to now.
            if max_age.is_some_and(|max_age| {
                retention::expired_record(clamped_ns(record.ts), clock.now, max_age)
            }) {
                tally.older_than_retention.add(record.ts);
                continue;
            }
            let (ts_ns, retimed) = clock.accept(&mut record);
            // The newest time a window is measured from is never ahead of
            // what the clock rule lets in, even when it came from records
            // stored before that rule (or under a larger skew).
            let newest = seen.newest_ts.map(|newest| newest.min(clock.latest_ns));
            if window && newest.is_some_and(|newest| ts_ns < newest.saturating_sub(window_ns)) {
                tally.out_of_order.add(record.ts);
                continue;
            }
            match retimed {
                Some(RETIMED_CLOCK_SKEW) => tally.clock_skew += 1,
                Some(_) => tally.out_of_range += 1,
                None => {}
            }
            seen.insert(record.seq);
            seen.saw_time(ts_ns);
            let next = fresh.last().map_or(writer.last_id, |row: &Row| row.id) + 1;
            let id = match first.map(|first| first.saturating_add(index as u64)) {
                Some(position) if position >= next => position,
                Some(_) => {
                    moved += 1;
                    next
                }
                None => next,
            };
            fresh.push(Row::new(id, ts_ns, record));
        }
        let response = tally.response(
            fresh.len(),
            total,
            max_age,
            self.options.out_of_order_window,
            &runner,
            &boot,
        );
        tally.moved = moved;
        let Some(last) = fresh.last() else {
            self.count(&response, &tally);
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
            let seen = writer
                .dedup
                .stream(tenant, &labels.app, &labels.runner, &labels.boot);
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
            self.visible.raise(last_id);
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
        if self.options.durability == Durability::SyncEachBatch && !deferred {
            self.commit(last_id)?;
        }
        // Counted once stored (and, when each batch is synced, durable): an
        // append that failed stored nothing to count.
        self.count(&response, &tally);
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
        // The day each record is stored in: a record dated too far ahead
        // goes into today's partition.
        let clock = Clock::new(self.options.max_clock_skew);
        let blocked = batch.records.iter().find_map(|record| {
            let day = crate::flush::day_number(clock.stored_ns(record.ts));
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

    fn count(&self, response: &IngestResponse, tally: &Tally) {
        let mut counters = self.counters();
        counters.appended += response.accepted as u64;
        counters.duplicates += response.duplicates as u64;
        counters.refused_out_of_order += tally.out_of_order.count as u64;
        counters.refused_older_than_retention += tally.older_than_retention.count as u64;
        counters.retimed_clock_skew += tally.clock_skew as u64;
        counters.retimed_out_of_range += tally.out_of_range as u64;
        counters.positions_moved += tally.moved;
    }

    /// Makes every record appended so far durable and visible (what
    /// deferred appends wait for).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let last_id = self.lock_writer().last_id;
        self.commit(last_id)
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
        self.visible.raise(target);
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

/// The store's clock for one append: what a record's time may be.
struct Clock {
    now: jiff::Timestamp,
    /// The latest time stored as it came: now plus the allowed skew.
    latest: jiff::Timestamp,
    latest_ns: i64,
}

impl Clock {
    fn new(max_skew: Duration) -> Clock {
        let now = jiff::Timestamp::now();
        let latest = jiff::SignedDuration::try_from(max_skew)
            .ok()
            .and_then(|skew| now.checked_add(skew).ok())
            .unwrap_or(jiff::Timestamp::MAX);
        Clock {
            now,
            latest,
            latest_ns: clamped_ns(latest),
        }
    }

    /// The time `record` is stored at, in ns, and why it is not its own
    /// when it is not (then its own is kept in [`ORIGINAL_TS_FIELD`] and
    /// its `ts` becomes the store's).
    fn accept(&self, record: &mut IngestRecord) -> (i64, Option<&'static str>) {
        let (ts, retimed) = self.judge(record.ts);
        let Some(reason) = retimed else {
            return (clamped_ns(ts), None);
        };
        let mut fields = record.fields.to_map();
        fields.insert(ORIGINAL_TS_FIELD.into(), record.ts.to_string().into());
        record.fields = tailwater_model::FieldsJson::from_map(&fields);
        record.ts = ts;
        (clamped_ns(ts), Some(reason))
    }

    /// The time, in ns, a record dated `ts` is stored at ([`Clock::accept`]
    /// without changing the record).
    fn stored_ns(&self, ts: jiff::Timestamp) -> i64 {
        clamped_ns(self.judge(ts).0)
    }

    /// The time a record dated `ts` is stored at, and why it is not its
    /// own when it is not.
    fn judge(&self, ts: jiff::Timestamp) -> (jiff::Timestamp, Option<&'static str>) {
        // Kept as given, to the nanosecond: the agent stamps each line of a
        // runner a microsecond apart at least, so time order is capture
        // order, and a block's times cost what their finest digit needs
        // (`part::block`: deltas in the largest unit dividing them all).
        // Stores written when times were cut to the millisecond read as
        // they did: such times are ns times that happen to end in zeros.
        let retimed = if i64::try_from(ts.as_nanosecond()).is_err() {
            Some(RETIMED_OUT_OF_RANGE)
        } else if ts > self.latest {
            Some(RETIMED_CLOCK_SKEW)
        } else {
            None
        };
        match retimed {
            None => (ts, None),
            Some(reason) => (self.now, Some(reason)),
        }
    }
}

fn clamped_ns(ts: jiff::Timestamp) -> i64 {
    tailwater_model::time::timestamp_ns(ts)
}

/// Records of one append refused for one reason: how many, and the oldest
/// time among them.
#[derive(Default)]
struct Refused {
    count: usize,
    oldest: Option<jiff::Timestamp>,
}

impl Refused {
    fn add(&mut self, ts: jiff::Timestamp) {
        self.count += 1;
        self.oldest = Some(self.oldest.map_or(ts, |oldest| oldest.min(ts)));
    }
}

/// What one append refused and retimed.
#[derive(Default)]
struct Tally {
    out_of_order: Refused,
    older_than_retention: Refused,
    clock_skew: usize,
    out_of_range: usize,
    /// Records given the store's next id: their position was not above it.
    moved: u64,
}

impl Tally {
    fn response(
        &self,
        accepted: usize,
        total: usize,
        max_age: Option<Duration>,
        window: Duration,
        runner: &str,
        boot: &str,
    ) -> IngestResponse {
        let refused = self.out_of_order.count + self.older_than_retention.count;
        let mut reasons = Vec::new();
        if let Some(oldest) = self.older_than_retention.oldest {
            reasons.push(format!(
                "{} records (the oldest at {oldest}) were older than the app's retention of {} and were refused: they would be deleted at once; check the runner's clock, or raise the app's retention_days",
                self.older_than_retention.count,
                tailwater_model::time::format_setting(max_age.unwrap_or_default())
            ));
        }
        if let Some(oldest) = self.out_of_order.oldest {
            reasons.push(format!(
                "{} records (the oldest at {oldest}) were more than {} older than the newest record of runner {runner} (boot {boot}) and were refused: send each runner's records in time order, or raise the server's --out-of-order-window",
                self.out_of_order.count,
                tailwater_model::time::format_setting(window)
            ));
        }
        let by_reason = |pairs: [(&str, usize); 2]| {
            pairs
                .into_iter()
                .filter(|(_, count)| *count > 0)
                .map(|(reason, count)| (reason.to_owned(), count))
                .collect()
        };
        IngestResponse {
            accepted,
            duplicates: total - accepted - refused,
            refused,
            refused_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            refused_by_reason: by_reason([
                (REFUSED_OUT_OF_ORDER, self.out_of_order.count),
                (
                    REFUSED_OLDER_THAN_RETENTION,
                    self.older_than_retention.count,
                ),
            ]),
            retimed_by_reason: by_reason([
                (RETIMED_CLOCK_SKEW, self.clock_skew),
                (RETIMED_OUT_OF_RANGE, self.out_of_range),
            ]),
        }
    }
}
