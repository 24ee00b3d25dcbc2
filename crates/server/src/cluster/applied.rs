//! How far this node has stored the cluster's stream, kept in
//! `<data>/cluster-applied` (two numbers): the last sequence stored, and
//! the first from which every message's records are stored at the ids the
//! stream gives them ([`super::materialize::position`]). The first says
//! where reading goes on after a restart; the second what this node may
//! serve a peer filling a stretch of the stream in order
//! ([`super::stretch`]): records a repair gave this node's own ids are no
//! copy of the stream's.
//!
//! Written after each sync of the store, without an fsync of its own: it
//! is never ahead of the store, and a stale one only means messages come
//! again (and are recognised as stored) or a stretch is not served.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file in the data directory.
pub const FILE: &str = "cluster-applied";

/// This node's reading of the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The last sequence stored (0: none yet).
    pub applied: u64,
    /// Every message from this sequence through `applied` is stored at the
    /// stream's ids.
    pub exact_from: u64,
}

/// [`Progress`], in memory and on disk.
pub struct Applied {
    path: PathBuf,
    progress: Mutex<Option<Progress>>,
}

impl Applied {
    /// What an earlier life of this node kept in `dir` (nothing when the
    /// file is not there or does not read).
    pub fn open(dir: &Path) -> Applied {
        let path = dir.join(FILE);
        let progress = std::fs::read_to_string(&path).ok().and_then(|text| {
            let parsed = parse(&text);
            if parsed.is_none() {
                tracing::warn!(path = %path.display(), "cannot read how far this node stored the cluster's stream; it reads the stream again from where its consumers were (what is stored already is recognised)");
            }
            parsed
        });
        Applied {
            path,
            progress: Mutex::new(progress),
        }
    }

    pub fn get(&self) -> Option<Progress> {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reading starts at `start` with nothing known before it: from there
    /// on, messages are stored at the stream's ids.
    pub fn begin(&self, start: u64) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        if progress.is_none() {
            *progress = Some(Progress {
                applied: start.saturating_sub(1),
                exact_from: start,
            });
        }
    }

    /// Reading starts again at `start`, whatever was noted before (the
    /// store it described is gone).
    pub fn restart(&self, start: u64) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.begin(start);
        self.update(|_| {});
    }

    /// Messages through `sequence` are stored and synced.
    pub fn stored_through(&self, sequence: u64) {
        self.update(|progress| progress.applied = progress.applied.max(sequence));
    }

    /// Sequences through `to` are not all stored at the stream's ids (a
    /// gap left to the repair that gives records this node's own ids).
    pub fn inexact_through(&self, to: u64) {
        self.update(|progress| progress.exact_from = progress.exact_from.max(to + 1));
    }

    /// Whether every record of sequences `from..=to` is stored here at
    /// the stream's ids.
    pub fn holds(&self, from: u64, to: u64) -> bool {
        self.get()
            .is_some_and(|progress| progress.exact_from <= from && progress.applied >= to)
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        let mut progress = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let progress = progress.get_or_insert(Progress {
            applied: 0,
            exact_from: 1,
        });
        change(progress);
        let text = format!("{} {}\n", progress.applied, progress.exact_from);
        let temporary = self.path.with_extension("tmp");
        let written =
            std::fs::write(&temporary, text).and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "cannot note how far this node stored the cluster's stream; after a restart it reads more of the stream again");
        }
    }
}

fn parse(text: &str) -> Option<Progress> {
    let mut numbers = text.split_whitespace().map(str::parse::<u64>);
    let applied = numbers.next()?.ok()?;
    let exact_from = numbers.next()?.ok()?;
    numbers.next().is_none().then_some(Progress {
        applied,
        exact_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_survives_a_reopen_and_says_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let applied = Applied::open(dir.path());
        assert_eq!(applied.get(), None);
        assert!(!applied.holds(1, 1));
        applied.begin(5);
        applied.stored_through(9);
        assert!(applied.holds(5, 9));
        assert!(!applied.holds(4, 9), "before it began");
        assert!(!applied.holds(5, 10), "not stored yet");
        applied.inexact_through(6);
        assert!(!applied.holds(5, 9));
        assert!(applied.holds(7, 9));
        let again = Applied::open(dir.path());
        assert_eq!(
            again.get(),
            Some(Progress {
                applied: 9,
                exact_from: 7
            })
        );
        again.begin(100);
        assert_eq!(again.get().unwrap().applied, 9, "begin keeps what is known");
        again.restart(1);
        assert_eq!(
            Applied::open(dir.path()).get(),
            Some(Progress {
                applied: 0,
                exact_from: 1
            }),
            "kept on disk"
        );
        std::fs::write(dir.path().join(FILE), "9\n").unwrap();
        assert_eq!(
            Applied::open(dir.path()).get(),
            None,
            "one number: unreadable"
        );
        std::fs::write(dir.path().join(FILE), "x y").unwrap();
        assert_eq!(Applied::open(dir.path()).get(), None);
    }
}
