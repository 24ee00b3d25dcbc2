//! Opening a store: parts loaded (damaged ones quarantined, merged-away ones
//! deleted), then the write-ahead log replayed into the memtable, skipping
//! what parts already hold and cutting off a torn tail.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, RwLock};

use crate::cache::BlockCache;
use crate::dedup::Dedup;
use crate::memtable::Memtable;
use crate::part::reader::Part;
use crate::wal::{WalReader, WalWriter};
use crate::{
    part, part_number, wal_path, Counters, Inner, State, StoreError, StoreOptions, Writer,
    LOCK_FILE, PARTS_DIR, QUARANTINE_DIR, WAL_DIR,
};

pub(crate) fn open(dir: &Path, options: StoreOptions) -> Result<Inner, StoreError> {
    fs::create_dir_all(dir.join(WAL_DIR)).map_err(StoreError::io(dir))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = File::create(&lock_path).map_err(StoreError::io(&lock_path))?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Locked {
            path: dir.to_owned(),
        });
    }

    let parts = load_parts(dir)?;
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

    let segments = wal_segments(dir)?;
    let mut replayed = Vec::new();
    let mut last_segment = 0;
    for (number, path) in &segments {
        let recovered = WalReader::recover(path, *number, |payload| {
            match crate::wal::decode_batch(payload) {
                Ok(batch) => {
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
                    true
                }
                Err(_) => false,
            }
        })
        .map_err(StoreError::io(path))?;
        if recovered.discarded_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                discarded_bytes = recovered.discarded_bytes,
                kept_batches = recovered.batches,
                "write-ahead log had a torn or corrupt tail (a write cut short by a crash, never acknowledged): truncated it"
            );
        }
        // Cut what follows the frames (a torn tail, or the rest of a reused
        // file), so it is not read again at the next open.
        let file_len = fs::metadata(path).map_err(StoreError::io(path))?.len();
        if file_len > recovered.valid_len {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(StoreError::io(path))?;
            file.set_len(recovered.valid_len)
                .and_then(|()| file.sync_all())
                .map_err(StoreError::io(path))?;
        }
        last_segment = *number;
    }
    // Appends go to a new segment: the replayed ones are only read.
    let segment = last_segment + 1;
    let visible = Arc::new(AtomicU64::new(last_id));
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
        next_part: AtomicU64::new(next_part),
        unmergeable: Mutex::default(),
        counters: Mutex::new(Counters::default()),
        cache,
        _lock: lock,
    })
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
pub(crate) fn load_parts(dir: &Path) -> Result<Vec<Arc<Part>>, StoreError> {
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
                let quarantine = dir.join(QUARANTINE_DIR);
                let moved_to = quarantine.join(path.file_name().expect("a part file has a name"));
                let moved =
                    fs::create_dir_all(&quarantine).and_then(|()| fs::rename(&path, &moved_to));
                tracing::error!(%error, quarantined = %moved_to.display(), moved = moved.is_ok(), "a part could not be opened: moved aside, the other parts are served");
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
