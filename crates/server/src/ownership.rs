//! Who a request belongs to: the caller its gateway recorded, for the
//! recorded-caller rule ([`crate::auth`], rule 5), found from the store.
//!
//! **A request is its app's.** A request id is chosen by whoever sends
//! it, so two apps of a tenant may send records with the same one. Each
//! app's records of a request are judged by that app's own `request_start`
//! alone: ownership is keyed by (tenant, app, request id), and a token of
//! one app can neither claim nor unlock another app's request.
//!
//! **The first start decides, in ingest order.** Of an app's
//! `request_start` records of a request, the first stored (lowest id)
//! decides, never the one with the earliest time: the time is the
//! sender's to choose, the id is the server's. Its `fields.caller` names
//! the caller token; none means any caller may read the request; a
//! `caller` that is not a string means no caller may.
//!
//! **Runners of one app are one trust domain.** Records of the request
//! from another runner of the same app are judged by the same first
//! `request_start`, whichever runner sent it. Keying by runner too would
//! protect nothing: an ingest token is per app, and the runner name is the
//! sender's to choose, so whoever holds the app's token can speak as any
//! of its runners (and a request may rightly span runners, a retry on
//! another one).
//!
//! **Records before their start.** A record of a request whose
//! `request_start` is not stored yet has no recorded caller yet, as in
//! history: a gateway writes `request_start` before anything else of the
//! request, so this lasts only as long as a sender puts the start after
//! its own lines. A start stored later applies to every record of the
//! request from then on, the ones stored before it too.
//!
//! [`RequestStarts`] caches this for one read (a page, an export, a
//! histogram, a live tail): once an app's first start is found it never
//! changes, and until then only records stored since the last look are
//! searched, so a tail learns of a start that arrives after it opened at
//! the cost of reading what is new.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tailwater_model::{Filter, LogRecord, Matcher, Stream};
use tailwater_store::Store;

/// The caller a request was recorded with, from its first `request_start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No `request_start` names a caller (or none is stored yet): any
    /// caller of the app may read it.
    Anyone,
    /// Only the caller token with this public id.
    Caller(String),
    /// The start names a caller that is not a token id: no caller reads it.
    Nobody,
}

impl Recorded {
    /// Read from a request's first `request_start`, if it has one.
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

/// The first `request_start` (lowest id) of request `request_id` of
/// `tenant`'s `app` with an id above `after`. Blocking: reads the store
/// (through its request index).
pub fn first_start(
    store: &Store,
    tenant: &str,
    app: &str,
    request_id: &str,
    after: u64,
) -> Option<LogRecord> {
    let filter = Filter {
        app: Some(Matcher::Eq(app.to_owned())),
        request_id: Some(request_id.to_owned()),
        stream: Some(Stream::System),
        fields: [("event".to_owned(), "request_start".to_owned())].into(),
        ..Filter::default()
    };
    store.read_after(tenant, &filter, after, 1).pop()
}

/// What one app's first start of the request is known to be.
#[derive(Clone, Debug)]
enum Known {
    Started(Recorded),
    /// No start among the records stored up to this id.
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
        let entry = match first_start(&self.store, &self.tenant, app, &self.request_id, through) {
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
    use tailwater_model::wire::{IngestBatch, IngestRecord};
    use tailwater_model::FieldsJson;
    use tailwater_store::StoreOptions;

    /// One record of request `r` by `runner` of `app`: a `request_start`
    /// naming `caller` (a JSON value), or a plain line.
    fn send(store: &Store, app: &str, runner: &str, seq: u64, caller: Option<serde_json::Value>) {
        let ts = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(seq as i64);
        let (stream, fields) = match caller {
            Some(caller) => (
                Stream::System,
                serde_json::json!({"event": "request_start", "caller": caller}),
            ),
            None => (Stream::Stdout, serde_json::json!({})),
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

    #[test]
    fn the_first_start_stored_of_each_app_decides_whatever_its_time_or_runner() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let starts = RequestStarts::new(store.clone(), "t", "r");
        // A line before any start: no recorded caller yet.
        send(&store, "pub", "pub-1", 1, None);
        assert_eq!(starts.recorded("pub"), Recorded::Anyone);
        // The start stored next decides, for this read too.
        send(&store, "pub", "pub-1", 2, Some("tok_a".into()));
        assert_eq!(starts.recorded("pub"), Recorded::Caller("tok_a".into()));
        // A later start, dated earlier, from another runner of the app:
        // stored second, it decides nothing.
        send(&store, "pub", "pub-2", 100, Some("tok_b".into()));
        assert_eq!(starts.recorded("pub"), Recorded::Caller("tok_a".into()));
        let fresh = RequestStarts::new(store.clone(), "t", "r");
        assert_eq!(fresh.recorded("pub"), Recorded::Caller("tok_a".into()));
        // Another app's start of the same id is that app's alone.
        send(&store, "other", "other-1", 200, Some(serde_json::json!(7)));
        assert_eq!(fresh.recorded("other"), Recorded::Nobody);
        assert_eq!(fresh.recorded("pub"), Recorded::Caller("tok_a".into()));
        assert!(!Recorded::Nobody.admits("tok_a") && Recorded::Anyone.admits("tok_a"));
    }
}
