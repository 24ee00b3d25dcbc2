//! Who a request belongs to: the caller its gateway recorded, for the
//! recorded-caller rule ([`crate::auth`], rule 5), found from the store.
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
//! **Records before their start.** A record of a request whose start
//! naming a caller is not stored yet has no recorded caller yet, in a tail
//! as in history: a gateway writes `request_start` before it forwards the
//! request, so this lasts only as long as the app's own senders store
//! lines of it first. A start stored later applies to every record of the
//! request from then on, the ones stored before it too.
//!
//! [`RequestStarts`] caches this for one read (a page, an export, a
//! histogram, a live tail): once an app's deciding start is found it never
//! changes, and until then only starts stored since the last look are
//! read, so a tail learns of a start that arrives after it opened at the
//! cost of reading what is new.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tailwater_model::{Filter, LogRecord, Matcher, Stream};
use tailwater_store::Store;

/// `request_start` records read at a time while looking for the first one
/// naming a caller.
const STARTS_BATCH: usize = 64;

/// The caller a request was recorded with, from its deciding
/// `request_start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No `request_start` naming a caller is stored: any caller of the app
    /// may read it.
    Anyone,
    /// Only the caller token with this public id.
    Caller(String),
    /// The start names a caller that is not a token id: no caller reads it.
    Nobody,
}

impl Recorded {
    /// Read from a request's deciding `request_start`, if it has one.
    pub fn of_start(start: Option<&LogRecord>) -> Recorded {
        match start.and_then(|start| start.fields.get("caller")) {
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
            Recorded::Nobody => false,
        }
    }
}

fn starts_filter(app: &str, request_id: &str) -> Filter {
    Filter {
        app: Some(Matcher::Eq(app.to_owned())),
        request_id: Some(request_id.to_owned()),
        stream: Some(Stream::System),
        fields: [("event".to_owned(), "request_start".to_owned())].into(),
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
            .find(|start| start.fields.get("caller").is_some())
        {
            return Some(start.clone());
        }
        if starts.len() < STARTS_BATCH {
            return None;
        }
        after = starts.last()?.id;
    }
}

/// What one app's deciding start of the request is known to be.
#[derive(Clone, Debug)]
enum Known {
    Started(Recorded),
    /// No start naming a caller among the records stored up to this id.
    NotYet {
        through: u64,
    },
}

/// The recorded caller of one request of a tenant, per app, as found so
/// far by one read. Bounded: one entry per app of the tenant.
pub struct RequestStarts {
    store: Arc<Store>,
    tenant: String,
    request_id: String,
    known: Mutex<HashMap<String, Known>>,
}

impl RequestStarts {
    pub fn new(store: Arc<Store>, tenant: &str, request_id: &str) -> RequestStarts {
        RequestStarts {
            store,
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
        let through = match known.get(app) {
            Some(Known::Started(recorded)) => return recorded.clone(),
            Some(Known::NotYet { through }) => *through,
            None => 0,
        };
        // Taken before reading, so a start stored meanwhile is read now or
        // at the next look, never skipped.
        let newest = self.store.last_id();
        if newest <= through && known.contains_key(app) {
            return Recorded::Anyone;
        }
        let found = deciding_start(&self.store, &self.tenant, app, &self.request_id, through);
        let entry = match found {
            Some(start) => Known::Started(Recorded::of_start(Some(&start))),
            None => Known::NotYet { through: newest },
        };
        let recorded = match &entry {
            Known::Started(recorded) => recorded.clone(),
            Known::NotYet { .. } => Recorded::Anyone,
        };
        known.insert(app.to_owned(), entry);
        recorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tailwater_model::wire::{IngestBatch, IngestRecord};
    use tailwater_model::FieldsJson;
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
        let starts = RequestStarts::new(store.clone(), "t", "r");
        // A line, and a start naming no caller (an agent's): no recorded
        // caller yet.
        send(&store, "pub", "pub-1", 1, None);
        send(
            &store,
            "pub",
            "pub-1",
            2,
            Some(json!({"event": "request_start"})),
        );
        assert_eq!(starts.recorded("pub"), Recorded::Anyone);
        // The start naming a caller stored next decides, for this read too.
        send(&store, "pub", "gateway", 3, start(json!("tok_a")));
        assert_eq!(starts.recorded("pub"), Recorded::Caller("tok_a".into()));
        // A later start, dated earlier, from another runner of the app:
        // stored second, it decides nothing.
        send(&store, "pub", "pub-2", 100, start(json!("tok_b")));
        assert_eq!(starts.recorded("pub"), Recorded::Caller("tok_a".into()));
        let fresh = RequestStarts::new(store.clone(), "t", "r");
        assert_eq!(fresh.recorded("pub"), Recorded::Caller("tok_a".into()));
        // Another app's start of the same id is that app's alone.
        send(&store, "other", "other-1", 200, start(json!(7)));
        assert_eq!(fresh.recorded("other"), Recorded::Nobody);
        assert_eq!(fresh.recorded("pub"), Recorded::Caller("tok_a".into()));
        assert!(!Recorded::Nobody.admits("tok_a") && Recorded::Anyone.admits("tok_a"));
    }
}
