//! Who a request belongs to: the caller its gateway recorded, for the
//! recorded-caller rule ([`crate::access::scopes`], rule 5), found from the store.
//!
//! **A request is its app's.** A request id is chosen by whoever sends
//! it, so two apps of a tenant may send records with the same one. Each
//! app's records of a request are judged by that app's own `request_start`
//! alone: ownership is keyed by (tenant, app, request id), and a token of
//! one app can neither claim nor unlock another app's request.
//!
//! **The first start naming a caller decides, in ingest order.** Of an
//! app's `request_start` records of a request, the first stored (lowest
//! id) with a `caller` field decides, never the one with the earliest
//! time: the time is the sender's to choose, the id is the server's. Its
//! `fields.caller` names the caller token; a `caller` that is not a string
//! means no caller may read the request. Starts without a `caller` (the
//! agent's own, written beside a gateway's) decide nothing: until a start
//! naming a caller is stored, any caller of the app may read the request.
//!
//! **Runners of one app are one trust domain.** Records of the request
//! from another runner of the same app are judged by the same first
//! `request_start`, whichever runner sent it. Keying by runner too would
//! protect nothing: an ingest token is per app, and the runner name is the
//! sender's to choose, so whoever holds the app's token can speak as any
//! of its runners (and a request may rightly span runners, a retry on
//! another one).
//!
//! **Ownership settles before a caller sees anything.** A gateway's
//! start and the app's own lines come from two senders, so their order at
//! the server is a race. A request's records are therefore shown to no
//! caller until its ownership in its app is settled, and then by the one
//! settled rule, in a tail as in history, export, histogram and
//! `/v1/requests/{id}`:
//! - once a start naming a caller is stored, that caller alone (or nobody,
//!   see above);
//! - once the app's first record of the request has been stored for
//!   longer than the hold (the grace, `--request-owner-grace`, plus half
//!   of it again, so that an append in flight at the deadline is stored
//!   before anyone judges) with no such start, any caller of the app.
//!
//! A gateway must store its start within the grace of the request's first
//! line. Settled is final: a start naming a caller that ingest stores
//! later than that decides nothing ([`Settling::mark_late_starts`] keeps
//! its caller as `late_caller` and counts it), so what a tail has already
//! sent stays what history shows.
//! Until it settles, a caller's history leaves the records out and its live
//! tail holds them back (and everything after them, so ids stay in order
//! and `Last-Event-ID` never jumps over a held record), sending them once
//! settled visible to it. Owners and admins are never held back.
//!
//! When a record was stored is measured by [`Settling`]: a few stamps
//! (time, newest id) taken as ingest stores and as readers look, so a
//! record's age is known to within a stamp's spacing, and always as later
//! than it really was, never earlier. Records stored before the server
//! started count as stored when it started.
//!
//! [`RequestStarts`] caches this for one read (a page, an export, a
//! histogram, a live tail): once an app's deciding start is found it never
//! changes, and until then only starts stored since the last look are
//! read, so a tail learns of a start that arrives after it opened at the
//! cost of reading what is new.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tailwater_model::lifecycle::{field, Event, EVENT};
use tailwater_model::wire::IngestRecord;
use tailwater_model::{FieldsJson, Filter, LogRecord, Matcher, Stream};
use tailwater_store::Store;

/// The first record (lowest id) of request `request_id` of `tenant`'s
/// `app`, of any stream. Blocking: reads the store's request index.
fn first_record(store: &Store, tenant: &str, app: &str, request_id: &str) -> Option<u64> {
    let filter = Filter {
        app: Some(Matcher::Eq(app.to_owned())),
        request_id: Some(request_id.to_owned()),
        ..Filter::default()
    };
    store
        .read_after(tenant, &filter, 0, 1)
        .first()
        .map(|record| record.position)
}

/// `request_start` records read at a time while looking for the first one
/// naming a caller.
const STARTS_BATCH: usize = 64;

/// How long after a request's first line its gateway's `request_start`
/// naming a caller must be stored, unless the server is configured
/// otherwise (`--request-owner-grace`).
pub const DEFAULT_REQUEST_OWNER_GRACE: Duration = Duration::from_secs(2);
/// Stamps [`Settling`] keeps within one hold at most (about): its
/// precision is the hold divided by this.
const STAMPS_PER_HOLD: u32 = 128;

/// When records were stored, to within a stamp's spacing: the clock that
/// settles a request with no recorded caller. Bounded: about
/// [`STAMPS_PER_HOLD`] stamps, whatever the ingest rate.
pub struct Settling {
    store: Arc<Store>,
    grace: Duration,
    /// `(when, id)`: every record up to `id` was stored by `when`. Oldest
    /// first; the first is the newest one older than the hold.
    stamps: Mutex<VecDeque<(Instant, u64)>>,
}

impl Settling {
    /// The clock of `store`, whose records so far count as stored now.
    pub fn new(store: Arc<Store>, grace: Duration) -> Settling {
        let stamps = VecDeque::from([(Instant::now(), store.last_id())]);
        Settling {
            store,
            grace,
            stamps: Mutex::new(stamps),
        }
    }

    /// How long a request with no recorded caller waits before any caller
    /// of its app sees it: the grace and half of it again.
    pub fn hold(&self) -> Duration {
        self.grace.saturating_add(self.grace / 2)
    }

    /// Notes that every record up to `last_id` is stored by now.
    pub fn stamp(&self, last_id: u64) {
        let now = Instant::now();
        let spacing = (self.hold() / STAMPS_PER_HOLD).max(Duration::from_millis(1));
        let mut stamps = self
            .stamps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if stamps.back().is_some_and(|(_, id)| *id >= last_id) {
            // Already stamped, earlier: the earlier time is the true one.
            return;
        }
        let len = stamps.len();
        // Every other stamp at least `spacing` apart: the newest moves
        // forward (later, so never wrong) instead of piling up.
        if len >= 2
            && stamps[len - 2]
                .0
                .checked_add(spacing)
                .is_none_or(|then| then > now)
        {
            stamps[len - 1] = (now, last_id);
        } else {
            stamps.push_back((now, last_id));
        }
        let hold = self.hold();
        while stamps.len() >= 2
            && stamps[1]
                .0
                .checked_add(hold)
                .is_some_and(|then| then <= now)
        {
            stamps.pop_front();
        }
    }

    /// The newest id stored at least the hold ago, and no newer than
    /// `newest`: a request whose app's first record is at or below it, and
    /// which has no start naming a caller up to `newest`, is any caller's.
    pub fn settled_through(&self, newest: u64) -> u64 {
        self.stored_before(self.hold(), newest)
    }

    /// The newest id stored at least `age` ago (`age` at most the hold),
    /// and no newer than `newest`.
    fn stored_before(&self, age: Duration, newest: u64) -> u64 {
        self.stamp(self.store.last_id());
        let now = Instant::now();
        let stamps = self
            .stamps
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        stamps
            .iter()
            .rev()
            .find(|(when, _)| when.checked_add(age).is_some_and(|then| then <= now))
            .map_or(0, |(_, id)| *id)
            .min(newest)
    }

    /// Makes every `request_start` naming a caller in `records` (of
    /// `tenant`'s `app`) that comes later than the grace after its
    /// request's first stored record decide nothing: its `caller` is kept
    /// as `late_caller`. Readers settle such a request to anyone only after
    /// the hold, half a grace later, so a start stored in time is read
    /// before anyone settles without it (unless storing it takes longer
    /// than that half). Returns how many were late. Blocking: reads the
    /// store's request index, for such starts only.
    pub fn mark_late_starts(&self, tenant: &str, app: &str, records: &mut [IngestRecord]) -> u64 {
        let mut late = 0;
        for record in records {
            let Some(request_id) = &record.request_id else {
                continue;
            };
            if record.stream != Stream::System {
                continue;
            }
            let mut fields = record.fields.to_map();
            let is_start = Event::of(&fields) == Some(Event::RequestStart);
            if !is_start || !fields.contains_key(field::CALLER) {
                continue;
            }
            let newest = self.store.last_id();
            let first = first_record(&self.store, tenant, app, request_id);
            if first.is_none_or(|first| first > self.stored_before(self.grace, newest)) {
                continue;
            }
            if let Some(caller) = fields.remove(field::CALLER) {
                fields.insert("late_caller".to_owned(), caller);
            }
            record.fields = FieldsJson::from_map(&fields);
            late += 1;
        }
        late
    }
}

/// What a caller gets of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Show,
    /// Not this caller's, and never will be.
    Hide,
    /// Its request's ownership is not settled yet: ask again later.
    Hold,
}

/// The caller a request was recorded with, from its deciding
/// `request_start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No `request_start` naming a caller was stored within the hold of
    /// the request's first record: any caller of the app may read it.
    Anyone,
    /// Neither yet: no caller may read it until it settles.
    Unsettled,
    /// Only the caller token with this public id.
    Caller(String),
    /// The start names a caller that is not a token id: no caller reads it.
    Nobody,
}

impl Recorded {
    /// Read from a request's deciding `request_start`, if it has one
    /// (`None`: the request is settled to anyone).
    pub fn of_start(start: Option<&LogRecord>) -> Recorded {
        match start.and_then(|start| start.fields.get(field::CALLER)) {
            None => Recorded::Anyone,
            Some(serde_json::Value::String(caller)) => Recorded::Caller(caller.clone()),
            Some(_) => Recorded::Nobody,
        }
    }

    /// Whether the caller token with public id `token_id` may read it.
    pub fn admits(&self, token_id: &str) -> bool {
        match self {
            Recorded::Anyone => true,
            Recorded::Caller(caller) => caller == token_id,
            Recorded::Nobody | Recorded::Unsettled => false,
        }
    }

    /// What the caller token with public id `token_id` gets of a record.
    pub fn verdict(&self, token_id: &str) -> Verdict {
        match self {
            Recorded::Unsettled => Verdict::Hold,
            settled if settled.admits(token_id) => Verdict::Show,
            _ => Verdict::Hide,
        }
    }
}

fn starts_filter(app: &str, request_id: &str) -> Filter {
    Filter {
        app: Some(Matcher::Eq(app.to_owned())),
        request_id: Some(request_id.to_owned()),
        stream: Some(Stream::System),
        fields: [(EVENT.to_owned(), Event::RequestStart.as_str().to_owned())].into(),
        ..Filter::default()
    }
}

/// The first `request_start` (lowest id) of request `request_id` of
/// `tenant`'s `app`, whatever it says. Blocking: reads the store (through
/// its request index).
pub fn first_start(store: &Store, tenant: &str, app: &str, request_id: &str) -> Option<LogRecord> {
    store
        .read_after(tenant, &starts_filter(app, request_id), 0, 1)
        .pop()
}

/// The deciding `request_start` of request `request_id` of `tenant`'s
/// `app`: the first (lowest id) above `after` with a `caller` field.
/// Blocking: reads the store (through its request index), a batch of
/// starts at a time.
pub fn deciding_start(
    store: &Store,
    tenant: &str,
    app: &str,
    request_id: &str,
    mut after: u64,
) -> Option<LogRecord> {
    let filter = starts_filter(app, request_id);
    loop {
        let starts = store.read_after(tenant, &filter, after, STARTS_BATCH);
        if let Some(start) = starts
            .iter()
            .find(|start| start.fields.get(field::CALLER).is_some())
        {
            return Some(start.clone());
        }
        if starts.len() < STARTS_BATCH {
            return None;
        }
        after = starts.last()?.position;
    }
}

/// What one app's deciding start of the request is known to be.
#[derive(Clone, Debug)]
enum Known {
    /// Settled: final.
    Settled(Recorded),
    /// No start naming a caller among the records stored up to `through`;
    /// `first` is the app's first record of the request, once there is one.
    NotYet { through: u64, first: Option<u64> },
}

/// The recorded caller of one request of a tenant, per app, as found so
/// far by one read. Bounded: one entry per app of the tenant.
pub struct RequestStarts {
    settling: Arc<Settling>,
    tenant: String,
    request_id: String,
    known: Mutex<HashMap<String, Known>>,
}

impl RequestStarts {
    pub fn new(settling: Arc<Settling>, tenant: &str, request_id: &str) -> RequestStarts {
        RequestStarts {
            settling,
            tenant: tenant.to_owned(),
            request_id: request_id.to_owned(),
            known: Mutex::default(),
        }
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The recorded caller of `app`'s request, as of now. Blocking: may
    /// read what the store holds since the last look.
    pub fn recorded(&self, app: &str) -> Recorded {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let (through, first) = match known.get(app) {
            Some(Known::Settled(recorded)) => return recorded.clone(),
            Some(Known::NotYet { through, first }) => (*through, *first),
            None => (0, None),
        };
        let store = &self.settling.store;
        // Taken before reading, so a start stored meanwhile is read now or
        // at the next look, never skipped.
        let newest = store.last_id();
        let found = if newest > through || through == 0 {
            deciding_start(store, &self.tenant, app, &self.request_id, through)
        } else {
            None
        };
        let first = first.or_else(|| first_record(store, &self.tenant, app, &self.request_id));
        let entry = match found {
            Some(start) => Known::Settled(Recorded::of_start(Some(&start))),
            // Every start up to `newest` is read, none names a caller.
            None if first.is_some_and(|first| first <= self.settling.settled_through(newest)) => {
                Known::Settled(Recorded::Anyone)
            }
            None => Known::NotYet {
                through: newest,
                first,
            },
        };
        let recorded = match &entry {
            Known::Settled(recorded) => recorded.clone(),
            Known::NotYet { .. } => Recorded::Unsettled,
        };
        known.insert(app.to_owned(), entry);
        recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailwater_model::wire::IngestBatch;
    use tailwater_store::StoreOptions;

    /// One record of request `r` by `runner` of `app`, dated `seq` seconds
    /// ago: a system record with `fields` (a `request_start`), or a line.
    fn send(store: &Store, app: &str, runner: &str, seq: u64, fields: Option<serde_json::Value>) {
        let ts = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seq as i64);
        let (stream, fields) = match fields {
            Some(fields) => (Stream::System, fields),
            None => (Stream::Stdout, json!({})),
        };
        let batch = IngestBatch {
            app: app.into(),
            version: "v1".into(),
            runner: runner.into(),
            boot: "b".into(),
            source: Default::default(),
            records: vec![IngestRecord {
                seq,
                ts,
                stream,
                level: Default::default(),
                request_id: Some("r".into()),
                message: format!("{app} {seq}"),
                fields: FieldsJson::from_map(fields.as_object().unwrap()),
                invalid_utf8: false,
            }],
        };
        assert_eq!(store.append("t", batch).unwrap().accepted, 1);
    }

    fn start(caller: serde_json::Value) -> Option<serde_json::Value> {
        Some(json!({"event": "request_start", "caller": caller}))
    }

    #[test]
    fn the_first_start_naming_a_caller_of_each_app_decides_whatever_its_time_or_runner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let settling = Arc::new(Settling::new(store.clone(), Duration::from_secs(3600)));
        let starts = RequestStarts::new(settling.clone(), "t", "r");
        // A line, and a start naming no caller (an agent's): not settled
        // yet.
        send(&store, "pub", "pub-1", 1, None);
        send(
            &store,
            "pub",
            "pub-1",
            2,
            Some(json!({"event": "request_start"})),
        );
        assert_eq!(starts.recorded("pub"), Recorded::Unsettled);
        // The start naming a caller stored next decides, for this read too.
        send(&store, "pub", "gateway", 3, start(json!("tok_a")));
        assert_eq!(starts.recorded("pub"), Recorded::Caller("tok_a".into()));
        // A later start, dated earlier, from another runner of the app:
        // stored second, it decides nothing.
        send(&store, "pub", "pub-2", 100, start(json!("tok_b")));
        assert_eq!(starts.recorded("pub"), Recorded::Caller("tok_a".into()));
        let fresh = RequestStarts::new(settling, "t", "r");
        assert_eq!(fresh.recorded("pub"), Recorded::Caller("tok_a".into()));
        // Another app's start of the same id is that app's alone.
        send(&store, "other", "other-1", 200, start(json!(7)));
        assert_eq!(fresh.recorded("other"), Recorded::Nobody);
        assert_eq!(fresh.recorded("pub"), Recorded::Caller("tok_a".into()));
        assert!(!Recorded::Nobody.admits("tok_a") && Recorded::Anyone.admits("tok_a"));
    }

    #[test]
    fn a_request_without_a_recorded_caller_is_anyones_once_held_for_the_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let settling = Arc::new(Settling::new(store.clone(), Duration::from_millis(200)));
        let starts = RequestStarts::new(settling.clone(), "t", "r");
        send(&store, "pub", "pub-1", 1, None);
        let stored = Instant::now();
        settling.stamp(store.last_id());
        assert_eq!(starts.recorded("pub"), Recorded::Unsettled);
        let deadline = stored + Duration::from_secs(10);
        while starts.recorded("pub") == Recorded::Unsettled {
            assert!(Instant::now() < deadline, "the request settles");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(stored.elapsed() >= settling.hold(), "never before the hold");
        assert_eq!(starts.recorded("pub"), Recorded::Anyone);
        // Stamps stay few however many appends there were.
        for seq in 2..400 {
            send(&store, "pub", "pub-1", seq, None);
            settling.stamp(store.last_id());
        }
        let stamps = settling.stamps.lock().unwrap().len();
        assert!(stamps <= 2 * STAMPS_PER_HOLD as usize + 2, "{stamps}");
    }
}
