//! The registry on disk: a snapshot file and a journal of the changes made
//! since, so a change costs one short record (appended and fsynced) however
//! large the registry grows, and readers never wait on a write.
//!
//! - `registry.json` (mode 600): the whole state, with `journal_seq`, the
//!   last change it holds (0, or absent, in files of earlier releases,
//!   which load as they are).
//! - `registry.journal` (mode 600): one JSON line per change, each with its
//!   sequence number, in order. Every change is the new value of one
//!   tenant, app or token, so applying it twice gives the same state.
//! - `registry.journal.sealed`: the journal being compacted.
//!
//! Compaction, once the journal outgrows [`COMPACT_FACTOR`] times the
//! snapshot (and [`COMPACT_MIN_BYTES`]): under the writer's lock the
//! journal is renamed to the sealed name and a new one started (a rename,
//! no copy); then, on a thread of its own, the state as of that moment is
//! written as the new snapshot (temporary file, fsync, rename, fsync the
//! directory) and the sealed journal removed. Its cost, the snapshot's
//! size, is spread over at least as many bytes of changes, so each change
//! costs the same whatever the registry's size.
//!
//! Loading reads the snapshot, then the sealed journal and the journal,
//! applying the changes numbered after the snapshot's `journal_seq`. A last
//! line cut short (a crash while appending: never acknowledged) is left
//! out; a damaged line before the last is an error that says what to do.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{Change, Loaded};

pub(super) const SNAPSHOT_FILE: &str = "registry.json";
const JOURNAL_FILE: &str = "registry.journal";
const SEALED_FILE: &str = "registry.journal.sealed";
/// The journal is compacted once it is this many times the snapshot's
/// size: a snapshot's write is paid for by at least as many bytes of
/// changes.
pub const COMPACT_FACTOR: u64 = 2;
/// … and at least this large, so a small registry is not rewritten on
/// every few changes.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024;

/// One journal line.
#[derive(Serialize, Deserialize)]
struct Entry {
    seq: u64,
    change: Change,
}

/// The writer's side: the open journal and what compaction needs. Held
/// behind the registry's writer lock, so changes are journaled in order.
pub(super) struct Journal {
    dir: PathBuf,
    file: File,
    /// The sequence number of the last change journaled.
    seq: u64,
    /// Bytes in the journal now.
    bytes: u64,
    shared: Arc<Shared>,
}

/// What the compaction thread reports back.
#[derive(Default)]
pub(super) struct Shared {
    compacting: AtomicBool,
    snapshot_bytes: AtomicU64,
    /// Every byte written for changes: journal lines and snapshots.
    written: AtomicU64,
}

/// What was on disk, and whether it should be written out as a new
/// snapshot (a journal to fold in, or an interrupted compaction).
pub(super) struct OnDisk {
    pub loaded: Loaded,
    pub replayed: bool,
}

/// Reads the snapshot (`None` when there is none yet) and applies the
/// journals to it.
pub(super) fn load(
    dir: &Path,
    fresh: impl FnOnce() -> anyhow::Result<super::State>,
) -> anyhow::Result<OnDisk> {
    let path = dir.join(SNAPSHOT_FILE);
    let state = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not a valid registry file: restore it from a backup, or move it away to start over with a new admin token", path.display())
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => fresh()?,
        Err(error) => return Err(error).context(format!("cannot read {}", path.display())),
    };
    let mut loaded = Loaded::new(state)?;
    let mut replayed = dir.join(SEALED_FILE).exists();
    for name in [SEALED_FILE, JOURNAL_FILE] {
        for entry in read_entries(&dir.join(name))? {
            if entry.seq <= loaded.state.journal_seq {
                continue; // already in the snapshot
            }
            loaded.apply(entry.change).with_context(|| {
                format!(
                    "{} change {} does not fit the registry: restore the auth directory from a backup",
                    dir.join(name).display(),
                    entry.seq
                )
            })?;
            loaded.state.journal_seq = entry.seq;
            replayed = true;
        }
    }
    Ok(OnDisk { loaded, replayed })
}

fn read_entries(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).context(format!("cannot read {}", path.display())),
    };
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut entries = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        let last = lines[index + 1..].iter().all(|rest| rest.is_empty());
        match serde_json::from_slice::<Entry>(line) {
            Ok(entry) => entries.push(entry),
            // Cut short by a crash mid-append: its change was never
            // acknowledged, so leaving it out loses nothing.
            Err(error) if last => {
                tracing::warn!(path = %path.display(), %error, "left out the registry journal's last line, cut short by a crash while it was written (never acknowledged)");
            }
            Err(error) => anyhow::bail!(
                "{} line {} is damaged ({error}): restore the auth directory from a backup",
                path.display(),
                index + 1
            ),
        }
    }
    Ok(entries)
}

impl Journal {
    /// Makes `loaded` the snapshot if it is not yet (first start, a journal
    /// folded in, a change made at start), then starts an empty journal.
    pub(super) fn start(
        dir: &Path,
        loaded: &Loaded,
        write_snapshot: bool,
    ) -> anyhow::Result<Journal> {
        let shared = Arc::new(Shared::default());
        let snapshot = dir.join(SNAPSHOT_FILE);
        if write_snapshot {
            let bytes = write_snapshot_file(&snapshot, loaded)?;
            shared.snapshot_bytes.store(bytes, Ordering::Relaxed);
            for name in [SEALED_FILE, JOURNAL_FILE] {
                match fs::remove_file(dir.join(name)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        return Err(error)
                            .context(format!("cannot remove {}", dir.join(name).display()))
                    }
                }
            }
            sync_dir(dir)?;
        } else {
            let bytes = fs::metadata(&snapshot).map(|meta| meta.len()).unwrap_or(0);
            shared.snapshot_bytes.store(bytes, Ordering::Relaxed);
        }
        let file = open_journal(dir)?;
        let bytes = file.metadata()?.len();
        Ok(Journal {
            dir: dir.to_owned(),
            file,
            seq: loaded.state.journal_seq,
            bytes,
            shared,
        })
    }

    /// The number the next change gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Appends `change` as number [`Journal::next_seq`] and fsyncs: once
    /// this returns, the change survives a crash.
    pub(super) fn append(&mut self, change: &Change) -> anyhow::Result<()> {
        self.append_all(std::slice::from_ref(change))
    }

    /// Appends `changes` in order, numbered from [`Journal::next_seq`], with
    /// one fsync for all (a replica applying many changes of its cluster at
    /// once pays for one).
    pub(super) fn append_all(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        let mut lines = Vec::new();
        for (n, change) in changes.iter().enumerate() {
            let seq = self.seq + 1 + n as u64;
            serde_json::to_writer(&mut lines, &EntryRef { seq, change })?;
            lines.push(b'\n');
        }
        let written = self
            .file
            .write_all(&lines)
            .and_then(|()| self.file.sync_data());
        if let Err(error) = written {
            // Leave no part of a refused change for the next append to
            // follow: it would read as damage in the middle of the file.
            let _ = self.file.set_len(self.bytes);
            return Err(error).context(format!(
                "cannot append to {}",
                self.dir.join(JOURNAL_FILE).display()
            ));
        }
        self.seq += changes.len() as u64;
        self.bytes += lines.len() as u64;
        self.shared
            .written
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a compaction in the background if the journal outgrew the
    /// snapshot and none is under way. `current` is the state with every
    /// journaled change.
    pub(super) fn maybe_compact(&mut self, current: Arc<Loaded>) {
        let threshold = (self.shared.snapshot_bytes.load(Ordering::Relaxed) * COMPACT_FACTOR)
            .max(COMPACT_MIN_BYTES);
        if self.bytes < threshold || self.shared.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let sealed = self.dir.join(SEALED_FILE);
        // A sealed journal left by a failed compaction stays: the new
        // snapshot covers it too, and it is removed once that is written.
        if !sealed.exists() {
            let rotated = fs::rename(self.dir.join(JOURNAL_FILE), &sealed)
                .and_then(|()| sync_dir(&self.dir).map_err(std::io::Error::other))
                .and_then(|()| open_journal(&self.dir).map_err(std::io::Error::other));
            match rotated {
                Ok(file) => {
                    self.file = file;
                    self.bytes = 0;
                }
                Err(error) => {
                    tracing::error!(%error, "cannot start a registry compaction; the journal keeps growing until one succeeds");
                    self.shared.compacting.store(false, Ordering::Release);
                    return;
                }
            }
        }
        let dir = self.dir.clone();
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("registry-compaction".into())
            .spawn(move || {
                let compacted = write_snapshot_file(&dir.join(SNAPSHOT_FILE), &current)
                    .and_then(|bytes| {
                        fs::remove_file(dir.join(SEALED_FILE))?;
                        sync_dir(&dir)?;
                        Ok(bytes)
                    });
                match compacted {
                    Ok(bytes) => {
                        shared.snapshot_bytes.store(bytes, Ordering::Relaxed);
                        shared.written.fetch_add(bytes, Ordering::Relaxed);
                    }
                    Err(error) => tracing::error!(error = %format!("{error:#}"), "registry compaction failed; the next change tries again"),
                }
                shared.compacting.store(false, Ordering::Release);
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the registry compaction thread");
            self.shared.compacting.store(false, Ordering::Release);
        }
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

impl Shared {
    pub(super) fn compacting(&self) -> bool {
        self.compacting.load(Ordering::Acquire)
    }

    pub(super) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

#[derive(Serialize)]
struct EntryRef<'a> {
    seq: u64,
    change: &'a Change,
}

fn open_journal(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(JOURNAL_FILE);
    let existed = path.exists();
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if !existed {
        sync_dir(dir)?;
    }
    Ok(file)
}

fn write_snapshot_file(path: &Path, loaded: &Loaded) -> anyhow::Result<u64> {
    let bytes = serde_json::to_vec_pretty(&loaded.state)?;
    write_atomically(path, &bytes)?;
    Ok(bytes.len() as u64)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("cannot fsync {}", dir.display()))
}

/// Write to a temporary file (mode 600), fsync, rename over, fsync the
/// directory: readers see the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
