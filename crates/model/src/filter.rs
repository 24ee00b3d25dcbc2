//! What a reader asks for: a [`Filter`] over records, and a [`Query`] that
//! pages through the matching records with an opaque [`Cursor`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::Timestamp;

use crate::record::{Level, LogRecord, Source, Stream};
use crate::words::Phrase;

/// Conditions a record must meet; every `None` matches all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub app: Option<String>,
    pub version: Option<String>,
    pub runner: Option<String>,
    pub request_id: Option<String>,
    pub source: Option<Source>,
    pub stream: Option<Stream>,
    /// This level and the more severe ones.
    pub min_level: Option<Level>,
    /// Words standing together in the message, ignoring ASCII case (see
    /// [`crate::words`]).
    pub text: Option<Phrase>,
    /// Inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
}

impl Filter {
    pub fn matches(&self, record: &LogRecord) -> bool {
        fn same(wanted: &Option<String>, actual: &str) -> bool {
            wanted.as_deref().is_none_or(|wanted| wanted == actual)
        }
        same(&self.app, &record.app)
            && same(&self.version, &record.version)
            && same(&self.runner, &record.runner)
            && self
                .request_id
                .as_deref()
                .is_none_or(|wanted| record.request_id.as_deref() == Some(wanted))
            && self.source.is_none_or(|source| source == record.source)
            && self.stream.is_none_or(|stream| stream == record.stream)
            && self.min_level.is_none_or(|level| record.level >= level)
            && self.since.is_none_or(|since| record.ts >= since)
            && self.until.is_none_or(|until| record.ts < until)
            && self
                .text
                .as_ref()
                .is_none_or(|phrase| phrase.is_in(&record.message))
    }
}

/// Order of a page: `Forward` is oldest first, `Backward` newest first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Direction {
    Forward,
    #[default]
    Backward,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forward" => Ok(Direction::Forward),
            "backward" => Ok(Direction::Backward),
            _ => Err(format!(
                "unknown direction '{s}': use forward (oldest first) or backward (newest first)"
            )),
        }
    }
}

/// One page of a filtered, ordered read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub filter: Filter,
    pub direction: Direction,
    pub limit: usize,
    /// Continue after this position (exclusive), in `direction`.
    pub cursor: Option<Cursor>,
}

/// A position in the time order of records: `(ts, id)`, where `id` breaks ties
/// between records of the same nanosecond. Opaque to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub ts_ns: i64,
    pub id: u64,
}

const CURSOR_VERSION: u8 = 1;

impl Cursor {
    /// The position of a record.
    pub fn of(record: &LogRecord) -> Cursor {
        Cursor {
            ts_ns: timestamp_ns(record.ts),
            id: record.id,
        }
    }

    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(17);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.ts_ns.to_be_bytes());
        bytes.extend_from_slice(&self.id.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Cursor, String> {
        let invalid =
            || "invalid cursor: pass the next_cursor value of a previous page unchanged".to_owned();
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        if bytes.len() != 17 || bytes[0] != CURSOR_VERSION {
            return Err(invalid());
        }
        Ok(Cursor {
            ts_ns: i64::from_be_bytes(bytes[1..9].try_into().unwrap()),
            id: u64::from_be_bytes(bytes[9..17].try_into().unwrap()),
        })
    }
}

/// Nanoseconds since the Unix epoch, saturated to `i64` (years 1677–2262).
pub fn timestamp_ns(ts: Timestamp) -> i64 {
    ts.as_nanosecond().clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(message: &str, level: Level) -> LogRecord {
        LogRecord {
            id: 1,
            ts: "2026-11-20T10:00:00Z".parse().unwrap(),
            tenant: "t".into(),
            app: "sdxl".into(),
            version: "v2".into(),
            runner: "r1".into(),
            boot: "b".into(),
            seq: 0,
            source: Source::Run,
            stream: Stream::Stdout,
            level,
            request_id: Some("req-1".into()),
            message: message.into(),
            fields: Default::default(),
            invalid_utf8: false,
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let cursor = Cursor { ts_ns: -5, id: 99 };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        assert!(Cursor::decode("nope").unwrap_err().contains("next_cursor"));
    }

    #[test]
    fn filter_matches_every_condition() {
        let record = record("CUDA Out Of Memory", Level::Error);
        assert!(Filter::default().matches(&record));
        let filter = Filter {
            app: Some("sdxl".into()),
            version: Some("v2".into()),
            runner: Some("r1".into()),
            request_id: Some("req-1".into()),
            source: Some(Source::Run),
            stream: Some(Stream::Stdout),
            min_level: Some(Level::Warn),
            text: Some(Phrase::new("out of memory")),
            since: Some("2026-11-20T10:00:00Z".parse().unwrap()),
            until: Some("2026-11-20T10:00:01Z".parse().unwrap()),
        };
        assert!(filter.matches(&record));

        let misses = [
            Filter {
                app: Some("other".into()),
                ..filter.clone()
            },
            Filter {
                request_id: Some("req-2".into()),
                ..filter.clone()
            },
            Filter {
                min_level: Some(Level::Fatal),
                ..filter.clone()
            },
            Filter {
                text: Some(Phrase::new("disk")),
                ..filter.clone()
            },
            Filter {
                until: Some("2026-11-20T10:00:00Z".parse().unwrap()),
                ..filter.clone()
            },
            Filter {
                stream: Some(Stream::Stderr),
                ..filter.clone()
            },
        ];
        for miss in misses {
            assert!(!miss.matches(&record), "{miss:?}");
        }
    }
}
