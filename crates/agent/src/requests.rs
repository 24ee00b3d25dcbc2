//! Requests in flight, and which request a line belongs to.
//!
//! The rule: a line written while exactly one request is in flight belongs
//! to it; while several are in flight, only lines that carry an id (a JSON
//! line's `request_id`, or a line sent through the control socket with one)
//! are attributed, and the rest stay runner-scoped. Never mixed.
//!
//! "Written while" is taken strictly: before the set of requests in flight
//! changes, [`OutputSync::settle`] waits until everything the worker wrote
//! before the change has been recorded (under the old set). So the lines a
//! request printed just before its response are still its own, even when the
//! agent reads them after the response went out and another request is
//! alone in flight by then.
//!
//! The same holds when a request fails: a worker that prints a traceback
//! and then ends the request with an error has the traceback recorded
//! before the end (the settle above), and a worker that dies in the middle
//! of a request has its output drained before the request is ended
//! unfinished (`supervisor::worker`), so its last words are the request's
//! too (tested end to end in `tests/e2e/requests_list.rs`).
//!
//! Requests are marked by the proxy (`--proxy`) or by the worker through the
//! control socket; both report here, and this module writes the lifecycle
//! records: `ready` (once per start of the worker), `request_start`,
//! `request_end`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tailwater_model::lifecycle::{Event, EVENT};

use serde_json::json;
use tailwater_model::{Fields, Level, Stream};

use crate::capture::{Collapsed, LineSink, OutputSync};
use crate::line::Line;
use crate::lock::lock;
use crate::recorder::{fields, Recorder};

/// How long a request mark waits for the capture to catch up before it
/// goes ahead anyway (a capture held up by a blocked echo must not hold
/// requests up).
pub const SETTLE_TIMEOUT: Duration = Duration::from_millis(500);

/// Who marked a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Proxy,
    Control,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Proxy => "proxy",
            Via::Control => "control",
        }
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (with a status, when one is known).
    Completed,
    /// It failed: the worker did not answer, the response broke off, or the
    /// worker said so.
    Error(String),
    /// The client went away before the response was complete.
    ClientClosed,
    /// Still in flight when the worker exited.
    Unfinished,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Error(_) => "error",
            Outcome::ClientClosed => "client_closed",
            Outcome::Unfinished => "unfinished",
        }
    }
}

/// One request in flight, as [`Requests::start`] returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// The requests in flight: the pure part, without records.
#[derive(Default, Debug)]
pub struct InFlight {
    next: u64,
    /// By ticket, so oldest first. The same id may be in flight twice (a
    /// client retrying with its id): lines are still attributed to it while
    /// every request in flight has that id.
    entries: BTreeMap<u64, Entry>,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub id: Arc<str>,
    pub via: Via,
    pub started: Instant,
}

impl InFlight {
    pub fn start(&mut self, id: &str, via: Via, started: Instant) -> Ticket {
        let ticket = self.next;
        self.next += 1;
        self.entries.insert(
            ticket,
            Entry {
                id: id.into(),
                via,
                started,
            },
        );
        Ticket(ticket)
    }

    pub fn end(&mut self, ticket: Ticket) -> Option<Entry> {
        self.entries.remove(&ticket.0)
    }

    /// Ends the oldest request in flight with this id.
    pub fn end_id(&mut self, id: &str) -> Option<Entry> {
        let ticket = *self.entries.iter().find(|(_, entry)| &*entry.id == id)?.0;
        self.entries.remove(&ticket)
    }

    /// The request a line without an id of its own belongs to: the one in
    /// flight, when exactly one is.
    pub fn sole(&self) -> Option<Arc<str>> {
        let mut entries = self.entries.values();
        let first = entries.next()?;
        entries
            .all(|entry| entry.id == first.id)
            .then(|| first.id.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn drain(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries).into_values().collect()
    }
}

/// Why the worker counts as ready.
#[derive(Clone, Debug)]
pub enum Ready {
    /// It said so through the control socket.
    Control,
    /// Its health check (`--health`) answered with a success.
    Health { url: String, status: u16 },
    /// The first request arrived.
    FirstRequest,
}

/// The requests in flight and their records.
pub struct Requests {
    recorder: Arc<Recorder>,
    sync: Arc<OutputSync>,
    state: Mutex<InFlight>,
    ready: AtomicBool,
    worker_started: Mutex<Instant>,
}

impl Requests {
    pub fn new(recorder: Arc<Recorder>, sync: Arc<OutputSync>) -> Requests {
        Requests {
            recorder,
            sync,
            state: Mutex::new(InFlight::default()),
            ready: AtomicBool::new(false),
            worker_started: Mutex::new(Instant::now()),
        }
    }

    /// The worker started now (again, after a restart): readiness is timed
    /// from here, and is to be seen again.
    pub fn worker_started(&self) {
        *lock(&self.worker_started) = Instant::now();
        self.ready.store(false, Ordering::Release);
    }

    /// The request a line that names none belongs to (see the module doc).
    pub fn sole_in_flight(&self) -> Option<Arc<str>> {
        lock(&self.state).sole()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Records that the worker is ready, the first time only. Returns
    /// whether this was the first time.
    pub fn ready(&self, why: Ready) -> bool {
        if self.ready.swap(true, Ordering::AcqRel) {
            return false;
        }
        let elapsed = lock(&self.worker_started).elapsed();
        let (via, reason, mut extra) = match &why {
            Ready::Control => (
                "control",
                "the worker said so through the control socket".to_owned(),
                Fields::new(),
            ),
            Ready::Health { url, status } => (
                "health",
                format!("{url} answered {status}"),
                fields(json!({ "health_url": url, "status": status })),
            ),
            Ready::FirstRequest => (
                "request",
                "the first request arrived".to_owned(),
                Fields::new(),
            ),
        };
        extra.insert(EVENT.into(), Event::Ready.as_str().into());
        extra.insert("via".into(), via.into());
        extra.insert("startup_ms".into(), (elapsed.as_millis() as u64).into());
        self.recorder.system(
            Level::Info,
            format!("ready after {} ({reason})", crate::format_duration(elapsed)),
            extra,
        );
        true
    }

    /// Marks a request as started at `received` (when it arrived), once the
    /// lines written before it are recorded. `detail` goes into the start
    /// record's fields (method, path).
    pub async fn start(&self, id: &str, via: Via, received: Instant, detail: Fields) -> Ticket {
        self.sync.settle(SETTLE_TIMEOUT).await;
        self.ready(Ready::FirstRequest);
        let mut state = lock(&self.state);
        let ticket = state.start(id, via, received);
        let mut extra = detail;
        extra.insert(EVENT.into(), Event::RequestStart.as_str().into());
        extra.insert("via".into(), via.as_str().into());
        extra.insert("in_flight".into(), state.len().into());
        // Under the lock: a line attributed to this request comes after its
        // start record.
        self.recorder
            .request_event(id, Level::Info, format!("request {id} started"), extra);
        ticket
    }

    /// Marks a request as ended at `finished`, once the lines written before
    /// it are recorded. Returns how long it took, or `None` if it was not in
    /// flight (already ended, or ended at the worker's exit).
    pub async fn end(
        &self,
        which: Which<'_>,
        finished: Instant,
        status: Option<u16>,
        outcome: Outcome,
    ) -> Option<Duration> {
        self.sync.settle(SETTLE_TIMEOUT).await;
        let mut state = lock(&self.state);
        let entry = match which {
            Which::Ticket(ticket) => state.end(ticket),
            Which::Id(id) => state.end_id(id),
        }?;
        let duration = finished.saturating_duration_since(entry.started);
        self.record_end(&entry, duration, status, &outcome, state.len());
        Some(duration)
    }

    /// The worker exited: every request still in flight ends unfinished.
    pub fn end_unfinished(&self) {
        let mut state = lock(&self.state);
        for entry in state.drain() {
            let duration = entry.started.elapsed();
            self.record_end(&entry, duration, None, &Outcome::Unfinished, 0);
        }
    }

    fn record_end(
        &self,
        entry: &Entry,
        duration: Duration,
        status: Option<u16>,
        outcome: &Outcome,
        in_flight: usize,
    ) {
        let id = &*entry.id;
        let took = crate::format_duration(duration);
        let (level, message) = match (outcome, status) {
            (Outcome::Completed, Some(status)) => (
                if status >= 500 { Level::Warn } else { Level::Info },
                format!("request {id} ended: {status} in {took}"),
            ),
            (Outcome::Completed, None) => (Level::Info, format!("request {id} ended in {took}")),
            (Outcome::Error(error), _) => (
                Level::Warn,
                format!("request {id} failed after {took}: {error}"),
            ),
            (Outcome::ClientClosed, _) => (
                Level::Warn,
                format!("request {id}: the client went away after {took}, before the response was complete"),
            ),
            (Outcome::Unfinished, _) => (
                Level::Error,
                format!("request {id} was still in flight when the worker exited, after {took}"),
            ),
        };
        let mut extra = fields(json!({
            "event": Event::RequestEnd,
            "via": entry.via.as_str(),
            "outcome": outcome.as_str(),
            "duration_ms": duration.as_millis() as u64,
            "in_flight": in_flight,
        }));
        if let Some(status) = status {
            extra.insert("status".into(), status.into());
        }
        if let Outcome::Error(error) = outcome {
            extra.insert("error".into(), error.as_str().into());
        }
        self.recorder.request_event(id, level, message, extra);
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

/// Which request [`Requests::end`] ends.
#[derive(Clone, Copy, Debug)]
pub enum Which<'a> {
    Ticket(Ticket),
    /// The oldest in flight with this id.
    Id(&'a str),
}

/// The agent's sink for captured lines: each is attributed to the one
/// request in flight (if exactly one is) and recorded.
impl LineSink for Requests {
    fn line(&self, line: Line<'_>) {
        let in_request = self.sole_in_flight();
        self.recorder.record_line(Line {
            in_request: in_request.as_deref(),
            ..line
        });
    }

    fn progress_collapsed(&self, stream: Stream, collapsed: Collapsed, interval: Duration) {
        self.recorder.system(
            Level::Debug,
            format!(
                "a progress line on {} was drawn {} times; kept {} (its final state and at most one per {}, --progress-interval)",
                stream.as_str(),
                collapsed.states,
                collapsed.kept,
                crate::format_duration(interval),
            ),
            fields(json!({
                "event": Event::ProgressCollapsed,
                "output": stream.as_str(),
                "states": collapsed.states,
                "kept": collapsed.kept,
                "interval_ms": interval.as_millis() as u64,
            })),
        );
    }

    fn read_failed(&self, stream: Stream, error: &std::io::Error) {
        self.recorder.system_warning(format!(
            "stopped reading the worker's {}: {error}",
            stream.as_str()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_belongs_to_the_one_request_in_flight_and_to_none_of_several() {
        let now = Instant::now();
        let mut in_flight = InFlight::default();
        assert_eq!(in_flight.sole(), None, "none in flight");
        let a = in_flight.start("a", Via::Proxy, now);
        assert_eq!(in_flight.sole().as_deref(), Some("a"));
        let b = in_flight.start("b", Via::Control, now);
        assert_eq!(in_flight.sole(), None, "two in flight: runner-scoped");
        assert_eq!(&*in_flight.end(a).unwrap().id, "a");
        assert_eq!(in_flight.sole().as_deref(), Some("b"), "b alone again");
        assert!(in_flight.end(a).is_none(), "ended once");
        assert_eq!(&*in_flight.end(b).unwrap().id, "b");
        assert!(in_flight.is_empty());
    }

    #[test]
    fn the_same_id_twice_still_attributes_and_ends_oldest_first() {
        let now = Instant::now();
        let mut in_flight = InFlight::default();
        in_flight.start("r", Via::Control, now);
        in_flight.start("r", Via::Control, now + Duration::from_secs(1));
        assert_eq!(in_flight.sole().as_deref(), Some("r"));
        let oldest = in_flight.end_id("r").unwrap();
        assert_eq!(oldest.started, now);
        assert_eq!(in_flight.len(), 1);
        assert!(in_flight.end_id("other").is_none());
        assert_eq!(in_flight.drain().len(), 1);
        assert!(in_flight.is_empty());
    }
}
