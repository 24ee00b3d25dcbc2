//! What the shipper tells in the runner's own logs: a stretch of 429s
//! (`server_rate_limited`), lines the server refused (`server_refused`),
//! a stretch of holding back for the rate limit (`throttled`), and
//! multi-line events cut at their size cap (`multiline_cut`).

use std::time::{Duration, Instant};
use tailwater_model::lifecycle::Event;

use jiff::Timestamp;
use serde_json::json;
use tailwater_model::wire::IngestResponse;
use tailwater_model::Level;

use super::throttle::RateLimit;
use crate::recorder::{fields, Batch, Recorder};
use crate::spool::Tally;

/// A stretch of time while the server answered 429 (rate limited): how
/// often, and how long the shipper waited as it asked.
pub(super) struct RateLimited {
    pub(super) since: Timestamp,
    pub(super) answers: u64,
    pub(super) waited: Duration,
}

impl RateLimited {
    pub(super) fn new() -> RateLimited {
        RateLimited {
            since: Timestamp::now(),
            answers: 0,
            waited: Duration::ZERO,
        }
    }

    /// Shipping works again: one record says how it was held up.
    pub(super) fn report(self, recorder: &Recorder) {
        let until = Timestamp::now();
        recorder.system(
            Level::Warn,
            format!(
                "the server rate limited this runner between {} and {until}: {} answers 429, waited {} in all as it asked (Retry-After); the lines waited in the spool and were shipped late, none dropped",
                self.since,
                self.answers,
                crate::format_duration(self.waited),
            ),
            fields(json!({
                "event": Event::ServerRateLimited,
                "answers": self.answers,
                "waited_ms": self.waited.as_millis() as u64,
                "since": self.since.to_string(),
                "until": until.to_string(),
            })),
        );
    }
}

/// Lines the server took in a batch it answered 200 but did not store
/// (`refused` in its answer: older than its out-of-order window or than
/// their app's retention). Sending them again would not help, so each such
/// answer is told at once: a `server_refused` system record in the
/// runner's own logs, and a line on the agent's stderr the first time.
#[derive(Default)]
pub(super) struct Refused {
    /// Lines refused since the agent started: the counter the records
    /// carry.
    pub(super) lines: u64,
}

impl Refused {
    pub(super) fn report(
        &mut self,
        recorder: &Recorder,
        batch: &Batch,
        answer: &IngestResponse,
        server: &str,
    ) {
        let first = self.lines == 0;
        self.lines += answer.refused as u64;
        let why = answer
            .refused_reason
            .clone()
            .unwrap_or_else(|| "the server gave no reason".to_owned());
        let reasons: serde_json::Map<String, serde_json::Value> = answer
            .refused_by_reason
            .iter()
            .map(|(reason, lines)| (reason.clone(), (*lines).into()))
            .collect();
        let receipt = &batch.receipt;
        if first {
            eprintln!(
                "tailwater: {server} refused {} lines of this runner ({why}); each refusal is told in a server_refused record in the runner's logs",
                answer.refused
            );
        }
        recorder.system(
            Level::Warn,
            format!(
                "the server refused {} of the lines {}..={} of boot {} and did not store them: {why}",
                answer.refused, receipt.first_seq, receipt.last_seq, batch.body.boot
            ),
            fields(json!({
                "event": Event::ServerRefused,
                "refused_lines": answer.refused,
                "reasons": reasons,
                "first_seq": receipt.first_seq,
                "last_seq": receipt.last_seq,
                "refused_total": self.lines,
            })),
        );
    }
}

/// A stretch of time while the rate limit held lines back: those shipped
/// since it began.
pub(super) struct HeldBack {
    pub(super) started: Instant,
    pub(super) since: Timestamp,
    pub(super) lines: Tally,
}

impl HeldBack {
    pub(super) fn new() -> HeldBack {
        HeldBack {
            started: Instant::now(),
            since: Timestamp::now(),
            lines: Tally::new("throttled"),
        }
    }

    pub(super) fn add(&mut self, batch: &Batch) {
        let receipt = &batch.receipt;
        self.lines.add(
            &batch.body.boot,
            (receipt.first_seq, receipt.last_seq),
            receipt.metered_lines,
            receipt.metered_bytes,
            (receipt.first_ts, receipt.last_ts),
        );
    }
}

pub(super) fn report_held_back(recorder: &Recorder, held: Option<HeldBack>, limit: RateLimit) {
    let Some(held) = held.filter(|held| held.lines.lines > 0) else {
        return;
    };
    let until = Timestamp::now();
    let HeldBack { since, lines, .. } = held;
    recorder.system(
        Level::Warn,
        format!(
            "throttled: {} lines, {} bytes held back between {since} and {until} ({}); shipped late, none dropped",
            lines.lines,
            lines.bytes,
            limit.describe()
        ),
        fields(json!({
            "event": Event::Throttled,
            "held_lines": lines.lines,
            "held_bytes": lines.bytes,
            "since": since.to_string(),
            "until": until.to_string(),
            "seqs": lines.seqs,
            "rate_lines": limit.lines_per_second,
            "rate_bytes": limit.bytes_per_second,
        })),
    );
}

/// Multi-line events cut at `--multiline-max-bytes`: each batch that
/// shipped some says so in a `multiline_cut` record (this batch's, and a
/// running count), and the agent's stderr the first time. The cut records
/// themselves say `continued`.
#[derive(Default)]
pub(super) struct Cut {
    pub(super) events: u64,
}

impl Cut {
    pub(super) fn report(&mut self, recorder: &Recorder, cut: u64, max_bytes: usize) {
        if self.events == 0 {
            eprintln!(
                "tailwater: a multi-line event (a traceback) was longer than --multiline-max-bytes ({max_bytes}) and is shipped in pieces marked continued; raise the setting to keep such events whole"
            );
        }
        self.events += cut;
        recorder.system(
            Level::Warn,
            format!(
                "{cut} multi-line events were longer than --multiline-max-bytes ({max_bytes} bytes) and were shipped in pieces (marked continued), {} since the agent started; raise the setting to keep them whole",
                self.events
            ),
            fields(json!({
                "event": Event::MultilineCut,
                "events": cut,
                "total": self.events,
                "max_bytes": max_bytes,
            })),
        );
    }
}
