//! From memory to parts (merging small parts into larger ones is
//! [`crate::merge`]'s).
//!
//! A full (or old) memtable is frozen: the log is fsynced and a new segment
//! started, and the table waits, still readable, for its flush. The flush
//! writes one part per tenant, app and day, stream by stream, then swaps the
//! parts in for the table and deletes the log segments it came from. A crash
//! anywhere in between loses nothing: until a segment is deleted, replay
//! restores what is not in a part, and replay skips what is.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::memtable::Table;
use crate::part::reader::Part;
use crate::part::writer::PartWriter;
use crate::part::{Partition, StreamLabels};
use crate::row::Row;
use crate::wal::WalWriter;
use crate::{day_of, wal_path, Durability, Inner, State, StoreError, Writer};

/// How often the background thread looks at the memtable's age, merges and
/// (with interval durability) the clock.
const TICK: Duration = Duration::from_secs(1);

impl Inner {
    /// Freezes the active table: the log is fsynced (so the frozen records
    /// are durable whatever the durability) and a new segment begun.
    pub(crate) fn freeze(&self, writer: &mut Writer, state: &mut State) -> Result<(), StoreError> {
        if state.memtable.active_is_empty() {
            return Ok(());
        }
        let path = writer.wal.path().to_owned();
        if let Err(error) = writer.wal.file().sync_data() {
            self.fail(format!("fsync of {} failed: {error}", path.display()));
            return Err(StoreError::io(&path)(error));
        }
        self.durable.fetch_max(writer.last_id, Ordering::AcqRel);
        self.visible.raise(writer.last_id);
        let segment = writer.segment + 1;
        let new_path = wal_path(&self.dir, segment);
        let spare = crate::open::spare_segment(&self.dir);
        writer.wal = WalWriter::create(&new_path, segment, spare.as_deref())
            .map_err(StoreError::io(&new_path))?;
        writer.segment = segment;
        state.memtable.freeze(writer.last_id + 1, segment);
        Ok(())
    }

    /// Frees the dedup ranges of what is now in parts (see
    /// [`crate::dedup`]): with the writer lock, so no append adds to the
    /// memtable meanwhile.
    pub(crate) fn compact_dedup(&self) {
        let mut writer = self.lock_writer();
        let state = self.read();
        writer.dedup.compact(|key| state.memtable.lowest_seq(key));
    }

    /// Freezes the active table and flushes everything frozen.
    pub(crate) fn flush_all(&self) -> Result<(), StoreError> {
        {
            let mut writer = self.lock_writer();
            let mut state = self.write();
            self.freeze(&mut writer, &mut state)?;
        }
        self.flush_frozen()
    }

    /// Flushes the frozen tables, oldest first, held ones again. A
    /// partition that cannot be written leaves the others flushed: its rows
    /// stay in a held table (and their log segments on disk) and are
    /// retried at the next flush, while appends to it are refused
    /// ([`StoreError::PartitionUnwritable`]). Returns the first such
    /// failure, once every table was tried.
    pub(crate) fn flush_frozen(&self) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        self.flush_frozen_locked()
    }

    /// [`Inner::flush_frozen`] by a caller that holds `flushing` already:
    /// a settling step, between its blocks ([`Inner::flush_due`]).
    pub(crate) fn flush_frozen_locked(&self) -> Result<(), StoreError> {
        let mut first_failure = None;
        let tables = self.read().memtable.frozen_tables();
        for table in tables {
            let started = Instant::now();
            let (parts, failed) = self.write_table(&table);
            let part_count = parts.len();
            // A held table no partition of which could be written again
            // stays as it is: nothing to copy.
            let unchanged = table.held && parts.is_empty();
            let held = (!failed.is_empty() && !unchanged).then(|| {
                table.held_rows(|tenant, labels, row| {
                    failed.contains(&(tenant, labels.app.as_str(), day_number(row.ts_ns)))
                })
            });
            let held_records = if unchanged {
                table.len()
            } else {
                held.as_ref().map_or(0, |held| held.len())
            };
            if !unchanged {
                let mut state = self.write();
                state.parts.extend(parts);
                match held {
                    Some(held) => state.memtable.replace(&table, held),
                    None => state.memtable.forget(&table),
                }
            }
            self.room.notify_all();
            if first_failure.is_none() {
                first_failure = failed.into_iter().next().map(|(tenant, app, day)| {
                    StoreError::PartitionUnwritable {
                        tenant: tenant.to_owned(),
                        app: app.to_owned(),
                        day: day_of(day * NANOS_PER_DAY),
                    }
                });
            }
            self.compact_dedup();
            if held_records == 0 {
                self.delete_segments_through(table.last_segment)?;
            }
            if part_count > 0 {
                self.counters().flushes += 1;
                tracing::info!(
                    records = table.len() - held_records,
                    parts = part_count,
                    held_records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "memtable flushed into parts"
                );
            }
            // Unless a reader still holds it, its rows are dropped here,
            // outside the lock, and its vectors kept for a next table (a
            // held table's are too small to be worth it).
            if table.held {
                continue;
            }
            if let Ok(table) = Arc::try_unwrap(table) {
                let spare = table.into_spare();
                self.write().memtable.recycle(spare);
            }
        }
        *self.stalled.lock().unwrap_or_else(|e| e.into_inner()) =
            first_failure.as_ref().map(ToString::to_string);
        first_failure.map_or(Ok(()), Err)
    }

    /// Writes a table as parts, one per tenant, app and day. Returns the
    /// parts written and the partitions (tenant, app, day number) that
    /// could not be, each failure logged; those are marked unwritable (for
    /// appends to refuse) until a write of theirs succeeds.
    fn write_table<'t>(&self, table: &'t Table) -> (Vec<Arc<Part>>, HashSet<PartitionKey<'t>>) {
        type Key<'t> = PartitionKey<'t>;
        let mut partitions: BTreeMap<Key<'t>, Vec<(&StreamLabels, Vec<&Row>)>> = BTreeMap::new();
        for (stream, records) in table.streams() {
            // Runs of records of one UTC day, found by day number.
            let mut current: Option<(i64, Vec<&Row>)> = None;
            let key = |day| (stream.tenant.as_str(), stream.labels.app.as_str(), day);
            for record in records {
                let day = day_number(record.ts_ns);
                match &mut current {
                    Some((current_day, run)) if *current_day == day => run.push(record),
                    _ => {
                        if let Some((day, run)) = current.take() {
                            partitions
                                .entry(key(day))
                                .or_default()
                                .push((&stream.labels, run));
                        }
                        current = Some((day, vec![record]));
                    }
                }
            }
            if let Some((day, run)) = current {
                partitions
                    .entry(key(day))
                    .or_default()
                    .push((&stream.labels, run));
            }
        }
        let mut written: Vec<Arc<Part>> = Vec::new();
        let mut failed = HashSet::new();
        for ((tenant, app, day), streams) in partitions {
            let partition = Partition {
                day: day_of(day * NANOS_PER_DAY),
                tenant: tenant.to_owned(),
                app: app.to_owned(),
            };
            let result = self.write_part(
                &partition,
                Vec::new(),
                |writer| {
                    for (labels, records) in streams {
                        writer.add_stream(labels.clone(), records)?;
                    }
                    Ok(())
                },
                self.options.zstd_level,
            );
            let mut unwritable = self.unwritable.lock().unwrap_or_else(|e| e.into_inner());
            let app_key = (partition.tenant.clone(), partition.app.clone());
            match result {
                Ok(part) => {
                    written.push(part);
                    if let Some(days) = unwritable.get_mut(&app_key) {
                        days.remove(&day);
                        if days.is_empty() {
                            unwritable.remove(&app_key);
                        }
                    }
                }
                Err(error) => {
                    // Said once, not at every retry.
                    if unwritable.entry(app_key).or_default().insert(day) {
                        tracing::error!(
                            %error,
                            tenant = %partition.tenant,
                            app = %partition.app,
                            day = %partition.day,
                            "a partition could not be written into a part: its records stay in the log and memory and are retried; appends to it are refused meanwhile"
                        );
                    }
                    failed.insert((tenant, app, day));
                }
            }
        }
        (written, failed)
    }

    /// Writes one part of `partition` with what `fill` adds, and opens it.
    pub(crate) fn write_part(
        &self,
        partition: &Partition,
        replaces: Vec<u64>,
        fill: impl FnOnce(&mut PartWriter) -> std::io::Result<()>,
        zstd_level: i32,
    ) -> Result<Arc<Part>, StoreError> {
        let dir = self.partition_dir(partition);
        let number = self.next_part.fetch_add(1, Ordering::AcqRel);
        let name = format!("{number:012}");
        let written =
            PartWriter::create(&dir, &name, partition, zstd_level).and_then(|mut writer| {
                writer.replaces(replaces);
                fill(&mut writer)?;
                writer.finish()
            });
        let (path, _) = written.map_err(StoreError::io(&dir))?;
        let part = Part::open(&path).map_err(|error| StoreError::Io {
            path: path.clone(),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(Arc::new(part))
    }

    /// What the log keeps once the store is idle: the segment being
    /// written cut to its frames and no spare (see [`crate::wal`]). Under
    /// the writer lock, so no append or new segment comes meanwhile.
    pub(crate) fn trim_idle_log(&self) {
        let writer = self.lock_writer();
        if let Err(error) = writer.wal.cut_older() {
            tracing::warn!(%error, path = %writer.wal.path().display(), "could not cut an idle log segment to its frames");
        }
        crate::wal::keep_spare_within(&crate::spare_wal_path(&self.dir), 0);
    }

    /// Removes the log segments up to `last`, whose records are all in
    /// parts now, but those a held table's rows may be in; one is kept as
    /// the spare for a next segment to reuse, cut to the bound.
    fn delete_segments_through(&self, last: u64) -> Result<(), StoreError> {
        let held = self.read().memtable.held_through_segment().unwrap_or(0);
        for (number, path) in crate::open::wal_segments(&self.dir)? {
            if number > last || number <= held {
                continue;
            }
            let spare = crate::spare_wal_path(&self.dir);
            if !spare.exists() && crate::wal::is_current_format(&path) {
                std::fs::rename(&path, &spare).map_err(StoreError::io(&path))?;
                crate::wal::keep_spare_within(&spare, self.options.wal_spare_max_bytes);
            } else {
                std::fs::remove_file(&path).map_err(StoreError::io(&path))?;
            }
        }
        Ok(())
    }
}

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// A partition in a table being flushed: tenant, app and day number.
type PartitionKey<'t> = (&'t str, &'t str, i64);

/// The UTC day of a time, as a number of days since the epoch.
pub(crate) fn day_number(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NANOS_PER_DAY)
}

/// The background thread: flushes frozen tables, flushes the memtable when
/// it is old enough, fsyncs on the interval, merges, and trims the log of
/// a store a tick went by without an append to (and, each further idle
/// tick, settles a flushed part), until the store is dropped.
pub(crate) fn background(inner: &Inner) {
    let interval = match inner.options.durability {
        Durability::Interval(every) => Some(every.max(Duration::from_millis(1))),
        _ => None,
    };
    let mut last_sync = Instant::now();
    let mut last_error: Option<String> = None;
    // The last id appended at the previous tick, and whether the log was
    // trimmed since it changed.
    let mut last_seen = (inner.lock_writer().last_id, false);
    loop {
        {
            let (stop, wake) = &inner.wake;
            let stopped = stop.lock().unwrap_or_else(|e| e.into_inner());
            if *stopped {
                break;
            }
            let timeout = interval.map_or(TICK, |every| every.min(TICK));
            let (stopped, _) = wake
                .wait_timeout(stopped, timeout)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                break;
            }
        }
        if let Some(every) = interval {
            if last_sync.elapsed() >= every {
                inner.sync_log();
                last_sync = Instant::now();
            }
        }
        let old = {
            let state = inner.read();
            !state.memtable.active_is_empty()
                && state.memtable.active_age() >= inner.options.memtable_max_age
        };
        let flushed = if old {
            inner.flush_all()
        } else {
            inner.flush_frozen()
        };
        // A partition that cannot be written does not hold up the merges
        // of the others.
        let merged = inner.merge_all().map(|_| ());
        let result = flushed.and(merged);
        let last_id = inner.lock_writer().last_id;
        match last_seen {
            (seen, false) if seen == last_id => {
                inner.trim_idle_log();
                last_seen.1 = true;
            }
            // Idle: settle a flushed part a tick (compress it harder)
            // while no append comes.
            (seen, true) if seen == last_id && result.is_ok() => {
                if let Err(error) = inner.settle_one() {
                    tracing::error!(%error, "settling a part failed; retrying");
                }
            }
            (seen, _) if seen != last_id => last_seen = (last_id, false),
            _ => {}
        }
        match result {
            Ok(()) => last_error = None,
            Err(error) => {
                let error = error.to_string();
                // Retried every tick; said once until it changes.
                if last_error.as_ref() != Some(&error) {
                    tracing::error!(%error, "background flush or merge failed; retrying");
                }
                last_error = Some(error);
            }
        }
    }
}
