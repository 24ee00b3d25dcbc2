//! Opening a store: parts loaded (damaged ones quarantined, merged-away ones
//! deleted), then the write-ahead log replayed into the memtable, skipping
//! what parts already hold and, past damage, going on with the frames after
//! it ([`crate::recovery`] keeps, reports and cuts the damage).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::cache::BlockCache;
use crate::damage::Damage;
use crate::dedup::Dedup;
use crate::memtable::Memtable;
use crate::part::reader::Part;
use crate::recovery::{FrameSummary, Recovery};
use crate::visibility::Visibility;
use crate::wal::{WalReader, WalWriter};
use crate::{
    part, part_number, wal_path, Counters, Inner, State, StoreError, StoreOptions, Writer,
    LOCK_FILE, PARTS_DIR, QUARANTINE_DIR, WAL_DIR,
};

pub(crate) fn open(dir: &Path, options: StoreOptions) -> Result<Inner, StoreError> {
    crate::create_private_dir_all(&dir.join(WAL_DIR)).map_err(StoreError::io(dir))?;
    restrict_to_owner(dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = crate::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&lock_path)
        .map_err(StoreError::io(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Locked {
            path: dir.to_owned(),
        });
    }

    let mut damage = Damage::default();
    let parts = load_parts_noting(dir, &mut damage)?;
    note_earlier_quarantines(dir, &mut damage);
    let mut dedup = Dedup::default();
    let mut last_id = 0;
    let mut next_part = 1;
    for part in &parts {
        let tenant = &part.footer.partition.tenant;
        for (index, stream) in part.footer.streams.iter().enumerate() {
            let labels = &stream.labels;
            let seen = dedup.stream(tenant, &labels.app, &labels.runner, &labels.boot);
            for (start, end) in &stream.seq_ranges {
                seen.insert_range(*start, *end);
            }
            for block in &part.footer.blocks {
                if block.stream as usize == index {
                    seen.saw_time(block.max_ts);
                }
            }
        }
        last_id = last_id.max(part.footer.max_id);
        next_part = next_part.max(part_number(part.path()).unwrap_or(0) + 1);
    }
    // A new part never takes a quarantined one's number (and place).
    for quarantined in damage.list(dir, |_| false) {
        next_part = next_part.max(part_number(&quarantined.path).unwrap_or(0) + 1);
    }

    let segments = wal_segments(dir)?;
    let mut replayed = Vec::new();
    let mut last_segment = 0;
    let mut recovery = Recovery::new(dir, last_id);
    for (number, path) in &segments {
        let replay = |payload: &[u8]| {
            match crate::wal::decode_batch(payload) {
                Ok(batch) => {
                    let summary = FrameSummary::of(&batch);
                    let mut fresh = Vec::with_capacity(batch.rows.len());
                    let labels = &batch.labels;
                    let seen =
                        dedup.stream(&batch.tenant, &labels.app, &labels.runner, &labels.boot);
                    for row in batch.rows {
                        last_id = last_id.max(row.id);
                        // Already flushed into a part before a crash cut the log's
                        // deletion short.
                        if seen.contains(row.seq) {
                            continue;
                        }
                        seen.insert(row.seq);
                        seen.saw_time(row.ts_ns);
                        fresh.push(row);
                    }
                    replayed.push((batch.tenant, batch.labels, fresh, *number));
                    Some(summary)
                }
                Err(_) => None,
            }
        };
        let recovered = WalReader::recover(path, *number, replay, FrameSummary::peek)
            .map_err(StoreError::io(path))?;
        // Damage is skipped, kept aside and reported; what follows the
        // frames (a torn tail, or the rest of a reused file) is cut, so it
        // is not read again at the next open.
        recovery.segment(*number, path, recovered)?;
        last_segment = *number;
    }
    let recovery = recovery.finish();
    // Above any id the damage may have held: ids never go backwards.
    last_id += recovery.skipped_ids;
    // Appends go to a new segment: the replayed ones are only read.
    let segment = last_segment + 1;
    let visible = Arc::new(Visibility::new(last_id));
    let mut memtable = Memtable::new(
        visible.clone(),
        last_id + 1,
        segment,
        options.memtable_max_bytes,
    );
    let mut memtable_records = 0;
    for (tenant, labels, rows, number) in replayed {
        memtable_records += rows.len();
        memtable.insert_stream(&tenant, &labels, rows, number);
    }
    let wal_path = wal_path(dir, segment);
    // A crash leaves the spare as it was: cut it as a flush would.
    if let Some(spare) = spare_segment(dir) {
        crate::wal::keep_spare_within(&spare, options.wal_spare_max_bytes);
    }
    let spare = spare_segment(dir);
    let wal = WalWriter::create(&wal_path, segment, spare.as_deref())
        .map_err(StoreError::io(&wal_path))?;
    tracing::info!(
        path = %dir.display(),
        parts = parts.len(),
        memtable_records,
        last_id,
        "store opened"
    );
    let cache = BlockCache::new(options.block_cache_bytes);
    let scan_threads = crate::scan_threads::ScanThreads::new(options.query_threads);
    Ok(Inner {
        dir: dir.to_owned(),
        options,
        writer: Mutex::new(Writer {
            wal,
            segment,
            dedup,
            last_id,
        }),
        state: RwLock::new(State { memtable, parts }),
        visible,
        durable: AtomicU64::new(last_id),
        commit: Mutex::new(()),
        room: Condvar::new(),
        flushing: Mutex::new(()),
        wake: (Mutex::new(false), Condvar::new()),
        failed: Mutex::new(None),
        stalled: Mutex::new(None),
        unwritable: Mutex::default(),
        next_part: AtomicU64::new(next_part),
        unmergeable: Mutex::default(),
        damage: Mutex::new(damage),
        counters: Mutex::new(Counters::recovered(&recovery)),
        recovery,
        scan_threads,
        cache,
        _lock: lock,
    })
}

/// Takes group and other access away from a store folder an older version
/// created with the umask's mode: its own mode is what guards everything
/// in it.
fn restrict_to_owner(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir)
        .map_err(StoreError::io(dir))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))
            .map_err(StoreError::io(dir))?;
    }
    Ok(())
}

/// The log segments, oldest first.
pub(crate) fn wal_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let wal_dir = dir.join(WAL_DIR);
    let mut segments = Vec::new();
    for entry in fs::read_dir(&wal_dir).map_err(StoreError::io(&wal_dir))? {
        let path = entry.map_err(StoreError::io(&wal_dir))?.path();
        let number = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok());
        if let (Some(number), Some("log")) = (number, path.extension().and_then(|e| e.to_str())) {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The spare segment file, if there is one to reuse.
pub(crate) fn spare_segment(dir: &Path) -> Option<PathBuf> {
    let path = crate::spare_wal_path(dir);
    path.exists().then_some(path)
}

/// Every part under `parts/`. A part that does not open is moved to
/// `quarantine/` and reported; a part a merged one replaces is deleted; the
/// others load.
#[cfg(test)]
pub(crate) fn load_parts(dir: &Path) -> Result<Vec<Arc<Part>>, StoreError> {
    load_parts_noting(dir, &mut Damage::default())
}

/// [`load_parts`], noting each part quarantined in `damage`. A quarantined
/// part keeps its folders below `quarantine/` (`quarantine/<tenant>/<app>/
/// <day>/<n>.twp`), so it is still known as its tenant's when its footer
/// cannot be read, after a restart too.
fn load_parts_noting(dir: &Path, damage: &mut Damage) -> Result<Vec<Arc<Part>>, StoreError> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.join(PARTS_DIR)];
    while let Some(folder) = stack.pop() {
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(StoreError::io(&folder)(error)),
        };
        for entry in entries {
            let path = entry.map_err(StoreError::io(&folder))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some(part::EXTENSION) {
                paths.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                // A part whose write a crash interrupted: its records are
                // still in the log, or in the parts it was merging.
                let _ = fs::remove_file(&path);
            }
        }
    }
    paths.sort_by_key(|path| part_number(path));
    let mut parts = Vec::new();
    for path in paths {
        match Part::open(&path) {
            Ok(part) => parts.push(Arc::new(part)),
            Err(error) => {
                let below = path
                    .strip_prefix(dir.join(PARTS_DIR))
                    .unwrap_or(Path::new(path.file_name().expect("a part file has a name")));
                let moved_to = dir.join(QUARANTINE_DIR).join(below);
                let moved =
                    crate::create_private_dir_all(moved_to.parent().expect("a part has a folder"))
                        .and_then(|()| fs::rename(&path, &moved_to));
                tracing::error!(%error, quarantined = %moved_to.display(), moved = moved.is_ok(), "a part could not be opened: moved aside, the other parts are served");
                let at = if moved.is_ok() { moved_to } else { path };
                damage.quarantined(at, error.to_string());
            }
        }
    }
    let replaced: HashSet<u64> = parts
        .iter()
        .flat_map(|part| part.footer.replaces.iter().copied())
        .collect();
    parts.retain(|part| {
        let gone = part_number(part.path()).is_some_and(|number| replaced.contains(&number));
        if gone {
            tracing::info!(path = %part.path().display(), "deleting a part a merge replaced before a restart");
            let _ = fs::remove_file(part.path());
        }
        !gone
    });
    Ok(parts)
}

/// Notes the parts earlier starts quarantined, so they are still listed.
fn note_earlier_quarantines(dir: &Path, damage: &mut Damage) {
    let known: HashSet<PathBuf> = damage
        .list(dir, |_| false)
        .into_iter()
        .map(|part| dir.join(part.path))
        .collect();
    let mut stack = vec![dir.join(QUARANTINE_DIR)];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()) == Some(part::EXTENSION)
                && !known.contains(&path)
            {
                damage.quarantined(
                    path,
                    "quarantined by an earlier start, which logged why".to_owned(),
                );
            }
        }
    }
}
