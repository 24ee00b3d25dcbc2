//! The fsyncs [`Durability::Machine`] owes, taken out of the spool
//! ([`Spool::take_unsynced`]) and done by whoever flushes after letting go
//! of the lock the capture waits on: an fsync never holds up the worker's
//! pipe. Until they are done (about a millisecond), a machine crash may cost
//! what they cover: the last records, or the ledger (then everything not
//! acknowledged is shipped again, and the server stores each record once).

use super::*;

#[derive(Default)]
pub struct Unsynced {
    /// Segments written to since their last fsync.
    files: Vec<Arc<File>>,
    /// The ledger was replaced: its data and its name in the directory.
    pub(super) ledger: bool,
    /// A segment was created: its name in the directory.
    pub(super) directory: bool,
}

impl Unsynced {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && !self.ledger && !self.directory
    }

    pub(super) fn owe(&mut self, file: &Arc<File>) {
        if !self.files.iter().any(|owed| Arc::ptr_eq(owed, file)) {
            self.files.push(file.clone());
        }
    }

    /// Does the fsyncs, segments first, then the ledger, then the directory.
    /// Blocking: call it without the spool's lock, off the async threads.
    pub fn sync(self, dir: &Path) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        if self.ledger {
            File::open(dir.join(LEDGER_FILE))?.sync_data()?;
        }
        if self.ledger || self.directory {
            sync_directory(dir)?;
        }
        Ok(())
    }
}

impl Spool {
    /// The fsyncs owed so far (none under [`Durability::Process`]): do them
    /// with [`Unsynced::sync`] after letting go of the spool.
    pub fn take_unsynced(&mut self) -> Unsynced {
        std::mem::take(&mut self.unsynced)
    }

    /// An owed fsync failed: reported like a write error.
    pub fn sync_failed(&mut self, error: io::Error) {
        self.problem(format!(
            "cannot fsync the spool in {}: {error}",
            self.dir.display()
        ));
    }
}
