//! What the line limits cut from a batch's records, counted by reason, and
//! the `system` record that tells the runner's owner.

use serde_json::json;
use tailwater_model::lifecycle::Event;
use tailwater_model::wire::IngestRecord;

use super::*;

/// Which limits one record was cut to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    pub line_too_long: bool,
    pub too_many_fields: bool,
    pub invalid_request_id: bool,
    pub field_key_too_long: bool,
}

impl Cuts {
    pub fn reasons(self) -> impl Iterator<Item = &'static str> {
        [
            (self.line_too_long, LINE_TOO_LONG),
            (self.too_many_fields, TOO_MANY_FIELDS),
            (self.invalid_request_id, INVALID_REQUEST_ID),
            (self.field_key_too_long, FIELD_KEY_TOO_LONG),
        ]
        .into_iter()
        .filter_map(|(hit, reason)| hit.then_some(reason))
    }
}

/// What a batch's records were cut to, for its `system` record.
#[derive(Debug, Default)]
pub struct CutTally {
    /// Reason → records.
    counts: Vec<(&'static str, u64)>,
    first: Option<(u64, jiff::Timestamp)>,
}

impl CutTally {
    pub fn add(&mut self, record: &IngestRecord, cuts: Cuts) {
        let mut any = false;
        for reason in cuts.reasons() {
            any = true;
            match self.counts.iter_mut().find(|(seen, _)| *seen == reason) {
                Some((_, count)) => *count += 1,
                None => self.counts.push((reason, 1)),
            }
        }
        if any && self.first.is_none() {
            self.first = Some((record.seq, record.ts));
        }
    }

    pub fn counts(&self) -> &[(&'static str, u64)] {
        &self.counts
    }

    /// The `system` record telling the runner's owner, if anything was cut.
    pub fn report(&self, max_line_bytes: usize, limits: &IngestLimits) -> Option<IngestRecord> {
        let (first_seq, ts) = self.first?;
        let described: Vec<String> = self
            .counts
            .iter()
            .map(|(reason, count)| match *reason {
                LINE_TOO_LONG => format!("{count} cut to {max_line_bytes} bytes (max_line_bytes)"),
                TOO_MANY_FIELDS => format!(
                    "{count} with fields past {} left out (--max-fields)",
                    limits.max_fields
                ),
                FIELD_KEY_TOO_LONG => format!(
                    "{count} with fields whose key is over {} bytes left out (--max-field-key-bytes)",
                    limits.max_field_key_bytes
                ),
                _ => format!(
                    "{count} with a request id over {} bytes or with control characters, kept in the field {MARK_FIELD}.request_id",
                    limits.max_label_bytes
                ),
            })
            .collect();
        let mut counts = serde_json::Map::new();
        for (reason, count) in &self.counts {
            counts.insert((*reason).into(), (*count).into());
        }
        Some(server_record(
            server_seq(first_seq, ReportKind::Cut),
            ts,
            format!(
                "the server cut lines of this batch to its limits: {}; each is marked in its field '{MARK_FIELD}'",
                described.join(", ")
            ),
            json!({ "event": Event::IngestCut, "lines": counts, "max_line_bytes": max_line_bytes }),
        ))
    }
}
