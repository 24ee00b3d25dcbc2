//! What the spool found or dropped, told: leftovers recovered, segments cut
//! or removed, drop tallies and write problems made system records (the
//! spool counts; the recorder reports).

use super::*;
use tailwater_model::lifecycle::Event;

impl Recorder {
    /// Checks and takes in what a previous agent left in the spool, one
    /// segment at a time without holding the lock (capture goes on), and
    /// says what it found in a system record. Nothing is shipped before it
    /// is done. Blocking: run it off the async threads.
    pub fn recover_leftovers(&self) {
        let mut recovery = spool::Recovery::default();
        loop {
            let Some(leftover) = self.lock().spool.next_leftover() else {
                break;
            };
            let recovered = leftover.recover();
            let unsynced = {
                let mut state = self.lock();
                state.spool.adopt(recovered, &mut recovery);
                state.spool.take_unsynced()
            };
            self.sync(unsynced);
        }
        self.report_recovery(recovery);
        // The shipper may be waiting for the leftovers.
        self.work.notify_one();
    }

    /// Turns pending drop tallies and spool problems into system records.
    pub(super) fn report_locked(&self, state: &mut State) {
        let dropped = state.spool.take_dropped();
        let problems = state.spool.take_problems();
        if dropped.is_empty() && problems.is_empty() {
            return;
        }
        let cap = state.spool.cap();
        for problem in problems {
            eprintln!("tailwater: {problem}");
            push_locked(
                state,
                FLAG_UNMETERED,
                None,
                system_record(Level::Warn, problem, Fields::new(), None),
            );
        }
        for tally in dropped {
            let (message, fields) = drop_report(&tally, &self.dir, cap);
            push_locked(
                state,
                FLAG_UNMETERED | FLAG_DROP_REPORT,
                None,
                system_record(Level::Error, message, fields, None),
            );
        }
        // The reports are in the spool before the ledger forgets the tallies.
        state.spool.persist();
        self.wake_shipper();
    }

    pub(super) fn report_recovery(&self, recovery: Recovery) {
        let dir = self.dir.display();
        if let Some(problem) = &recovery.ledger_problem {
            self.system_warning(format!(
                "{problem}: shipping everything in the spool again (the server stores each record once)"
            ));
        }
        if recovery.truncated_bytes > 0 {
            self.system(
                Level::Warn,
                format!(
                    "cut off {} bytes of a torn or corrupt record at the end of a spool segment in {dir} (the agent before was killed while writing it, or the disk is damaged)",
                    recovery.truncated_bytes
                ),
                fields(json!({ "event": Event::SpoolTruncated, "truncated_bytes": recovery.truncated_bytes })),
            );
        }
        for file in &recovery.discarded {
            self.system_warning(format!("removed {file}: not a readable spool segment"));
        }
        if recovery.records > 0 {
            self.system(
                Level::Info,
                format!(
                    "found {} lines ({} bytes) a previous agent did not ship, in {dir}: shipping them first",
                    recovery.records, recovery.line_bytes
                ),
                fields(json!({
                    "event": Event::SpoolRecovered,
                    "lines": recovery.records,
                    "bytes": recovery.line_bytes,
                    "boots": recovery.boots,
                })),
            );
        }
        let mut state = self.lock();
        self.report_locked(&mut state);
    }
}

pub(super) fn drop_report(tally: &Tally, dir: &Path, cap: u64) -> (String, Fields) {
    let first = spool::timestamp(tally.first_ts);
    let last = spool::timestamp(tally.last_ts);
    let why = match tally.reason.as_str() {
        spool::REASON_SPOOL_FULL => format!(
            "the spool at {} reached its cap (--spool-max-bytes {cap}) while the server was away or shipping was throttled",
            dir.display()
        ),
        spool::REASON_WRITE_FAILED => format!(
            "they could not be written to the spool at {} (see the warning before)",
            dir.display()
        ),
        spool::REASON_CORRUPT => "the spool file holding them was corrupt".to_owned(),
        spool::REASON_REJECTED => {
            "the server refused them for good (the agent's stderr says why)".to_owned()
        }
        other => other.to_owned(),
    };
    let message = format!(
        "dropped {} lines ({} bytes) written between {first} and {last}: {why}",
        tally.lines, tally.bytes
    );
    (message, tally.to_fields())
}
