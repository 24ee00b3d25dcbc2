//! Retention: whole partitions (one tenant's app on one day) deleted when
//! past their app's age, then the oldest while parts take more than the
//! disk limit. Each deletion is logged and returned.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::{Inner, Partition, Retention, StoreError};

/// A partition retention deleted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    pub partition: Partition,
    pub parts: usize,
    pub bytes: u64,
    pub reason: DeleteReason,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteReason {
    /// Older than its app's retention.
    Age,
    /// The oldest, while parts took more than the disk limit.
    DiskSize,
}

pub(crate) fn apply(
    inner: &Inner,
    retention: &Retention,
    now: jiff::Timestamp,
) -> Result<Vec<Deleted>, StoreError> {
    // No flush or merge writes parts meanwhile.
    let _flushing = inner.flushing.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = inner.write();
    let mut partitions: std::collections::BTreeMap<Partition, (usize, u64)> = Default::default();
    for part in &state.parts {
        let entry = partitions.entry(part.footer.partition.clone()).or_default();
        entry.0 += 1;
        entry.1 += part.file_len;
    }
    let mut doomed = Vec::new();
    for (partition, (parts, bytes)) in &partitions {
        let max_age = retention
            .app_max_age
            .get(&(partition.tenant.clone(), partition.app.clone()))
            .copied()
            .unwrap_or(retention.max_age);
        if day_end(&partition.day).is_some_and(|end| expired(end.as_second(), now, max_age)) {
            doomed.push(Deleted {
                partition: partition.clone(),
                parts: *parts,
                bytes: *bytes,
                reason: DeleteReason::Age,
            });
        }
    }
    if let Some(limit) = retention.max_total_bytes {
        let mut total: u64 = partitions.values().map(|(_, bytes)| bytes).sum::<u64>()
            - doomed.iter().map(|d| d.bytes).sum::<u64>();
        // Partitions sort oldest day first.
        for (partition, (parts, bytes)) in &partitions {
            if total <= limit {
                break;
            }
            if doomed.iter().any(|d| d.partition == *partition) {
                continue;
            }
            total -= bytes;
            doomed.push(Deleted {
                partition: partition.clone(),
                parts: *parts,
                bytes: *bytes,
                reason: DeleteReason::DiskSize,
            });
        }
    }
    for deleted in &doomed {
        // The partition's parts, by their own paths: a folder may also
        // hold another partition's parts (stores written before kept names
        // in folders two names could share), which stay.
        let mut paths = Vec::new();
        state.parts.retain(|part| {
            let doomed = part.footer.partition == deleted.partition;
            if doomed {
                paths.push(part.path().to_owned());
            }
            !doomed
        });
        for path in &paths {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(StoreError::io(path)(error)),
            }
        }
        for path in &paths {
            remove_empty_folders(&inner.dir.join(crate::PARTS_DIR), path);
        }
        tracing::info!(
            tenant = %deleted.partition.tenant,
            app = %deleted.partition.app,
            day = %deleted.partition.day,
            parts = deleted.parts,
            bytes = deleted.bytes,
            reason = ?deleted.reason,
            "retention deleted a partition"
        );
    }
    Ok(doomed)
}

/// Removes the folders holding `path` up to `root` (not included) while
/// they are empty: a folder that still holds anything stays.
fn remove_empty_folders(root: &Path, path: &Path) {
    let mut folder = path.parent();
    while let Some(dir) = folder.filter(|dir| dir.starts_with(root) && *dir != root) {
        if fs::remove_dir(dir).is_err() {
            break;
        }
        folder = dir.parent();
    }
}

/// Whether a day that ended at `day_end` (seconds since the epoch) is past
/// a retention of `max_age` at `now`: the one rule of what retention
/// deletes, and so of what ingest refuses as already too old.
pub(crate) fn expired(day_end: i64, now: jiff::Timestamp, max_age: Duration) -> bool {
    now.as_second().saturating_sub(day_end) >= i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
}

/// Whether a record of time `ts_ns` is in a day past a retention of
/// `max_age` at `now` (its day's partition would be deleted).
pub(crate) fn expired_record(ts_ns: i64, now: jiff::Timestamp, max_age: Duration) -> bool {
    const DAY: i64 = 24 * 60 * 60;
    let second = ts_ns.div_euclid(1_000_000_000);
    let day_end = (second.div_euclid(DAY) + 1).saturating_mul(DAY);
    expired(day_end, now, max_age)
}

/// The end (next midnight, UTC) of a `YYYY-MM-DD` day.
pub(crate) fn day_end(day: &str) -> Option<jiff::Timestamp> {
    let date: jiff::civil::Date = day.parse().ok()?;
    date.tomorrow()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| zoned.timestamp())
}
