//! Writing the spool's buffer to its file, on a thread of its own, about a
//! millisecond after records come; fsyncs owed by `--spool-fsync` done after
//! letting go of the lock capture waits on; the shutdown.

use super::*;
use crate::lock::lock;

/// How soon after a record comes it is written from the spool's buffer to
/// its file (where it survives the agent being killed). Records coming
/// within this time are written together.
const FLUSH_DELAY: Duration = Duration::from_millis(1);

#[derive(Default)]
pub(super) struct FlushSignal {
    pub(super) wanted: Mutex<FlushWanted>,
    pub(super) changed: Condvar,
}

#[derive(Default)]
pub(super) struct FlushWanted {
    pub(super) flush: bool,
    pub(super) stop: bool,
}

/// The running flusher thread ([`Recorder::start_flusher`]).
pub struct Flusher {
    recorder: Arc<Recorder>,
    thread: std::thread::JoinHandle<()>,
}

impl Flusher {
    /// Stops the flusher once it has flushed what it was woken for.
    pub fn stop(self) {
        lock(&self.recorder.flush.wanted).stop = true;
        self.recorder.flush.changed.notify_one();
        let _ = self.thread.join();
    }
}

impl Recorder {
    /// Writes buffered records to the spool's file, then does the fsyncs
    /// `--spool-fsync` owes, without the lock (capture waits on it).
    /// Blocking.
    pub fn flush(&self) {
        let unsynced = {
            let mut state = self.lock();
            state.spool.flush();
            state.spool.take_unsynced()
        };
        self.sync(unsynced);
    }

    /// Does the fsyncs the spool owes (taken under the lock, done after
    /// letting go of it). Blocking.
    pub(super) fn sync(&self, unsynced: spool::Unsynced) {
        if !unsynced.is_empty() {
            if let Err(error) = unsynced.sync(&self.dir) {
                self.lock().spool.sync_failed(error);
            }
        }
    }

    /// Starts the flusher: a thread of its own (writes and fsyncs are
    /// blocking work) that writes records to the spool's file about
    /// [`FLUSH_DELAY`] after they come, until [`Flusher::stop`].
    pub fn start_flusher(self: &Arc<Self>) -> io::Result<Flusher> {
        let recorder = self.clone();
        let thread = std::thread::Builder::new()
            .name("tailwater-spool-flush".into())
            .spawn(move || loop {
                let stop = {
                    let mut wanted = lock(&recorder.flush.wanted);
                    while !wanted.flush && !wanted.stop {
                        wanted = recorder
                            .flush
                            .changed
                            .wait(wanted)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    wanted.flush = false;
                    wanted.stop
                };
                if stop {
                    return;
                }
                std::thread::sleep(FLUSH_DELAY);
                recorder.flush();
            })?;
        Ok(Flusher {
            recorder: self.clone(),
            thread,
        })
    }

    /// The agent stops: the spool is written and fsynced, and removed when
    /// nothing is left in it. Returns what is left for the next agent.
    pub fn shutdown(&self) -> Backlog {
        let mut state = self.lock();
        for problem in state.spool.take_problems() {
            eprintln!("tailwater: {problem}");
        }
        state.spool.shutdown()
    }
}
