//! Opening a spool directory and recovering what a previous agent left:
//! leftovers listed at open, checked off the lock, adopted in order.

use super::*;

/// A previous agent's segment, to check without the spool's lock.
pub struct Leftover {
    pub(super) path: PathBuf,
    pub(super) id: u64,
    pub(super) acked: u64,
}

/// A leftover segment, checked: hand it to [`Spool::adopt`].
pub struct Recovered {
    pub(super) id: u64,
    pub(super) path: PathBuf,
    pub(super) result: io::Result<Option<(Segment, u64)>>,
}

impl Leftover {
    /// Checks the segment frame by frame (the slow part, done off the
    /// lock), cutting a torn or corrupt tail off.
    pub fn recover(self) -> Recovered {
        let result = recover_segment(&self.path, self.id, self.acked);
        Recovered {
            id: self.id,
            path: self.path,
            result,
        }
    }
}

impl Spool {
    /// Opens (creating it if needed) the spool directory `dir` for a new
    /// boot described by `header`, recovering what a previous agent left.
    pub fn open(
        dir: &Path,
        header: SegmentHeader,
        cap: u64,
    ) -> Result<(Spool, Recovery), OpenError> {
        let unusable = |what: &str, error: io::Error| unusable(dir, what, error);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| unusable("cannot create it", e))?;
        let lock = lock_directory(dir).map_err(|error| match error {
            LockError::Io(e) => unusable("cannot create its lock file", e),
            LockError::Held(pid) => OpenError {
                in_use: true,
                message: format!(
                    "the spool directory {} is in use by another `tailwater run`{}: give each worker its own --runner (or its own --spool)",
                    dir.display(),
                    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
                ),
            },
        })?;
        let mut recovery = Recovery::default();
        let ledger = match read_ledger(dir) {
            Ok(ledger) => ledger.unwrap_or_default(),
            Err(problem) => {
                recovery.ledger_problem = Some(problem);
                Ledger::default()
            }
        };
        let _ = fs::remove_file(dir.join(LEDGER_TEMPORARY));

        let mut ids = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| unusable("cannot list it", e))? {
            let entry = entry.map_err(|e| unusable("cannot list it", e))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|name| name.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|stem| stem.parse::<u64>().ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();

        let mut leftovers = VecDeque::new();
        for &id in &ids {
            if id < ledger.acked_segment {
                let _ = fs::remove_file(segment_path(dir, id));
                continue;
            }
            let acked = if id == ledger.acked_segment {
                ledger.acked_offset
            } else {
                0
            };
            leftovers.push_back((id, acked));
        }

        let next_id = ids
            .last()
            .map_or(0, |last| last + 1)
            .max(ledger.acked_segment + 1);
        let (sync_tx, sync_rx) = mpsc::channel::<Arc<File>>();
        let syncer = std::thread::Builder::new()
            .name("tailwater-spool-sync".into())
            .spawn(move || {
                for file in sync_rx {
                    let _ = file.sync_data();
                }
            })
            .ok()
            .map(|_| sync_tx);
        let cap = cap.max(MIN_SPOOL_MAX_BYTES);
        let mut spool = Spool {
            dir: dir.to_owned(),
            cap,
            segment_target: (cap / SEGMENTS_PER_CAP).clamp(1, MAX_SEGMENT_BYTES),
            header: Arc::new(header),
            segments: VecDeque::new(),
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES * 2),
            buffered: Stats::default(),
            next_id,
            bytes: 0,
            backlog: Backlog::default(),
            dropped: ledger.dropped.clone(),
            pinned: None,
            problems: Vec::new(),
            syncer,
            durability: Durability::Process,
            leftovers,
            unsynced: Unsynced::default(),
            _lock: lock,
        };
        spool.write_ledger();
        Ok((spool, recovery))
    }

    /// The oldest leftover segment not recovered yet; check it with
    /// [`Leftover::recover`] without the lock, then [`Spool::adopt`] it.
    pub fn next_leftover(&self) -> Option<Leftover> {
        let &(id, acked) = self.leftovers.front()?;
        Some(Leftover {
            path: segment_path(&self.dir, id),
            id,
            acked,
        })
    }

    /// Takes a recovered leftover in, before this boot's records, counting
    /// what it holds in `recovery`; a smaller cap than the previous agent's
    /// applies at once.
    pub fn adopt(&mut self, recovered: Recovered, recovery: &mut Recovery) {
        debug_assert_eq!(self.leftovers.front().map(|l| l.0), Some(recovered.id));
        self.leftovers.pop_front();
        let path = recovered.path;
        match recovered.result {
            Ok(Some((segment, truncated))) => {
                recovery.truncated_bytes += truncated;
                if segment.unacked.records == 0 {
                    let _ = fs::remove_file(&path);
                } else {
                    recovery.records += segment.unacked.records;
                    recovery.line_bytes += segment.unacked.line_bytes;
                    if !recovery.boots.contains(&segment.header.boot) {
                        recovery.boots.push(segment.header.boot.clone());
                    }
                    self.bytes += segment.len;
                    self.backlog.records += segment.unacked.records;
                    self.backlog.line_bytes += segment.unacked.line_bytes;
                    self.backlog.frame_bytes += segment.unacked.frame_bytes;
                    // This boot's segments are numbered after every leftover.
                    let at = self
                        .segments
                        .iter()
                        .position(|s| s.id > segment.id)
                        .unwrap_or(self.segments.len());
                    self.segments.insert(at, segment);
                }
            }
            Ok(None) => {
                recovery.discarded.push(path.display().to_string());
                let _ = fs::remove_file(&path);
            }
            Err(error) => {
                // Left on disk and out of the ledger's way: a later agent
                // (once the problem is fixed) may ship it.
                self.problem(format!(
                    "cannot read the leftover spool segment {}: {error}; it is kept, not shipped",
                    path.display()
                ));
            }
        }
        self.enforce_cap();
        self.write_ledger();
    }

    /// Every leftover segment is adopted: shipping may begin.
    pub fn leftovers_recovered(&self) -> bool {
        self.leftovers.is_empty()
    }
}

/// Checks a segment left by a previous agent: its header, then every frame.
/// A torn or corrupt tail is cut off. Returns the segment (closed, its
/// records from `acked` on counted) and the bytes cut off; `None` when the
/// file is not a readable segment at all.
pub(super) fn recover_segment(
    path: &Path,
    id: u64,
    acked: u64,
) -> io::Result<Option<(Segment, u64)>> {
    let file = OpenOptions::new().read(true).append(true).open(path)?;
    let len = file.metadata()?.len();
    let mut magic = [0u8; 8];
    if len < magic.len() as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut magic, 0)?;
    if &magic != SEGMENT_MAGIC {
        return Ok(None);
    }
    let mut reader = FrameReader::new(&file, SEGMENT_MAGIC.len() as u64, len);
    let header = match reader.next()? {
        Next::Frame { body, .. } => match serde_json::from_slice::<SegmentHeader>(body) {
            Ok(header) => header,
            Err(_) => return Ok(None),
        },
        _ => return Ok(None),
    };
    let mut unacked = Stats::default();
    let mut has_reports = false;
    let mut start = None;
    let valid_end = loop {
        let at = reader.pos;
        match reader.next()? {
            Next::End => break at,
            Next::Bad => break at,
            Next::Frame { body, next } => {
                let Some(prefix) = Prefix::decode(body) else {
                    break at;
                };
                if at >= acked {
                    start.get_or_insert(at);
                    unacked.add(&prefix, next - at);
                    has_reports |= prefix.flags & FLAG_DROP_REPORT != 0;
                }
            }
        }
    };
    let truncated = len - valid_end;
    if truncated > 0 {
        file.set_len(valid_end)?;
    }
    Ok(Some((
        Segment {
            id,
            file: Arc::new(file),
            header: Arc::new(header),
            start: start.unwrap_or(valid_end),
            len: valid_end,
            open: false,
            unacked,
            has_reports,
        },
        truncated,
    )))
}

pub(super) fn unusable(dir: &Path, what: &str, error: io::Error) -> OpenError {
    OpenError {
        in_use: false,
        message: format!(
            "cannot use the spool directory {}: {what}: {error}; make it writable, or pass --spool DIR with a writable directory (on a volume, to keep unshipped lines across container restarts)",
            dir.display()
        ),
    }
}
