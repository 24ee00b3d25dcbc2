//! What a reader asks for: a [`Filter`] over records, and a [`Query`] that
//! pages through the matching records with an opaque [`Cursor`].

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::Timestamp;

use crate::matcher::{Matcher, Pattern, Substring};
use crate::positions::{TenantSeal, SEALED_LEN};
use crate::record::{Fields, Level, LogRecord, Source, Stream};
use crate::time::timestamp_ns;
use crate::words::Phrase;

/// Conditions a record must meet, all of them; every `None` (and an empty
/// `fields`) matches all. What each kind of condition matches is described
/// in [`crate::matcher`] and [`crate::words`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub app: Option<Matcher>,
    pub version: Option<Matcher>,
    pub runner: Option<Matcher>,
    /// One start of a runner's agent.
    pub boot: Option<Matcher>,
    /// Exactly this request id.
    pub request_id: Option<String>,
    pub source: Option<Source>,
    pub stream: Option<Stream>,
    /// This level and the more severe ones.
    pub min_level: Option<Level>,
    /// Words standing together in the message, ignoring ASCII case (see
    /// [`crate::words`]).
    pub text: Option<Phrase>,
    /// Text anywhere in the message, inside words too.
    pub contains: Option<Substring>,
    /// A regex found anywhere in the message ([`Pattern::search`]).
    pub regex: Option<Pattern>,
    /// Field key → the value it must have ([`field_matches`]).
    pub fields: BTreeMap<String, String>,
    /// Inclusive.
    pub since: Option<Timestamp>,
    /// Exclusive.
    pub until: Option<Timestamp>,
}

/// What a filter reads of a record, wherever its parts are kept.
#[derive(Clone, Copy, Debug)]
pub struct RecordParts<'a> {
    pub ts: Timestamp,
    pub level: Level,
    pub source: Source,
    pub stream: Stream,
    pub request_id: Option<&'a str>,
    pub labels: Labels<'a>,
    pub message: &'a str,
}

/// The string labels of a record or a stored stream, for
/// [`Filter::matches_labels`].
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    pub app: &'a str,
    pub version: &'a str,
    pub runner: &'a str,
    pub boot: &'a str,
}

impl Filter {
    pub fn matches(&self, record: &LogRecord) -> bool {
        let parts = RecordParts {
            ts: record.ts,
            level: record.level,
            source: record.source,
            stream: record.stream,
            request_id: record.request_id.as_deref(),
            labels: Labels {
                app: &record.app,
                version: &record.version,
                runner: &record.runner,
                boot: &record.boot,
            },
            message: &record.message,
        };
        self.matches_parts_with(parts, |filter| filter.matches_fields(&record.fields))
    }

    /// [`Filter::matches`] for a record kept in parts (a store keeps labels
    /// once a stream, and fields as text): `fields` is called only when
    /// the filter has field conditions.
    pub fn matches_parts(&self, parts: RecordParts<'_>, fields: impl FnOnce() -> Fields) -> bool {
        self.matches_parts_with(parts, |filter| {
            filter.fields.is_empty() || filter.matches_fields(&fields())
        })
    }

    fn matches_parts_with(
        &self,
        record: RecordParts<'_>,
        fields_match: impl FnOnce(&Filter) -> bool,
    ) -> bool {
        // Cheap conditions first; the message and fields last.
        self.since.is_none_or(|since| record.ts >= since)
            && self.until.is_none_or(|until| record.ts < until)
            && self.min_level.is_none_or(|level| record.level >= level)
            && self.source.is_none_or(|source| source == record.source)
            && self.stream.is_none_or(|stream| stream == record.stream)
            && self
                .request_id
                .as_deref()
                .is_none_or(|wanted| record.request_id == Some(wanted))
            && self.matches_labels(record.labels)
            && fields_match(self)
            && self.matches_message(record.message)
    }

    /// Whether records with these labels can match: the label matchers
    /// alone. A store judges whole streams of records by it.
    pub fn matches_labels(&self, labels: Labels<'_>) -> bool {
        fn meets(matcher: &Option<Matcher>, value: &str) -> bool {
            matcher
                .as_ref()
                .is_none_or(|matcher| matcher.matches(value))
        }
        meets(&self.app, labels.app)
            && meets(&self.version, labels.version)
            && meets(&self.runner, labels.runner)
            && meets(&self.boot, labels.boot)
    }

    /// Whether `message` meets the text conditions: phrase, substring and
    /// regex.
    pub fn matches_message(&self, message: &str) -> bool {
        self.text
            .as_ref()
            .is_none_or(|phrase| phrase.is_in(message))
            && self
                .contains
                .as_ref()
                .is_none_or(|substring| substring.is_in(message))
            && self
                .regex
                .as_ref()
                .is_none_or(|pattern| pattern.is_match(message))
    }

    /// Whether `fields` has every wanted field value.
    pub fn matches_fields(&self, fields: &Fields) -> bool {
        self.fields
            .iter()
            .all(|(key, wanted)| field_matches(fields, key, wanted))
    }

    /// Lowercased words every matching message holds whole, sorted and
    /// deduplicated: a store skips blocks whose word filter lacks one. Taken
    /// from the phrase (all its words), the substring (its inner words) and
    /// the regex (literal inner words it surely requires).
    pub fn required_words(&self) -> Vec<String> {
        let mut words: Vec<String> = Vec::new();
        if let Some(phrase) = &self.text {
            words.extend(phrase.words.iter().cloned());
        }
        if let Some(substring) = &self.contains {
            words.extend(substring.required_words().iter().cloned());
        }
        if let Some(pattern) = &self.regex {
            words.extend(pattern.required_words().iter().cloned());
        }
        words.sort();
        words.dedup();
        words
    }

    /// Beyond [`Filter::required_words`]: lists of lowercased words of which
    /// every matching message holds all of at least one (a regex's
    /// alternation, [`Pattern::word_alternatives`]); empty when there is
    /// nothing more to require.
    pub fn word_alternatives(&self) -> &[Vec<String>] {
        self.regex
            .as_ref()
            .map_or(&[], |pattern| pattern.word_alternatives())
    }
}

/// Whether the field `key` of `fields` has the value `wanted`. `key` names a
/// top-level field; when there is no field of that exact name, dots in it
/// walk into nested objects (`gpu.id` finds `{"gpu": {"id": 0}}`). A string
/// value is compared as the string; any other value as its compact JSON
/// text: `200`, `true`, `null`, `0.5`, `["a","b"]`. A missing field never
/// matches.
pub fn field_matches(fields: &Fields, key: &str, wanted: &str) -> bool {
    let value = fields.get(key).or_else(|| {
        let mut parts = key.split('.');
        let mut value = fields.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    });
    match value {
        None => false,
        Some(serde_json::Value::String(text)) => text == wanted,
        Some(other) => {
            // Not `*other == wanted`: that compares only strings.
            let text = other.to_string();
            text == wanted
        }
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

/// A position in the time order of records: `(ts, position)`, where the
/// record's ingest [`position`](LogRecord::position) breaks ties between
/// records of the same nanosecond. Clients get it sealed
/// ([`Cursor::encode`]), as opaque text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub ts_ns: i64,
    pub position: u64,
}

/// Version bytes of the sealed text forms, so a cursor is never taken for a
/// range (and the unsealed forms of older servers are refused).
const CURSOR_VERSION: u8 = 3;
const ID_RANGE_VERSION: u8 = 4;

impl Cursor {
    /// The position of a record.
    pub fn of(record: &LogRecord) -> Cursor {
        Cursor {
            ts_ns: timestamp_ns(record.ts),
            position: record.position,
        }
    }

    /// The cursor as `seal`'s tenant is given it.
    pub fn encode(&self, seal: &TenantSeal) -> String {
        let mut bytes = Vec::with_capacity(1 + 8 + SEALED_LEN);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.ts_ns.to_be_bytes());
        bytes.extend_from_slice(&seal.seal(self.position));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A cursor `seal`'s tenant was given; anything else is an error.
    pub fn decode(text: &str, seal: &TenantSeal) -> Result<Cursor, String> {
        let invalid =
            || "invalid cursor: pass the next_cursor value of a previous page unchanged".to_owned();
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let [CURSOR_VERSION, rest @ ..] = bytes.as_slice() else {
            return Err(invalid());
        };
        if rest.len() != 8 + SEALED_LEN {
            return Err(invalid());
        }
        let (ts, sealed) = rest.split_at(8);
        Ok(Cursor {
            ts_ns: i64::from_be_bytes(ts.try_into().unwrap()),
            position: seal.open(sealed.try_into().unwrap()).ok_or_else(invalid)?,
        })
    }
}

/// A stretch of ingest order: the records with positions in
/// `(after, through]`. A live tail that had to skip records hands one out
/// (encoded, as the `cursor` of `GET /v1/logs`) so the client can fetch
/// exactly what it missed; pages of it go in ingest order. Sealed like a
/// [`Cursor`], and told apart from one by its version byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdRange {
    pub after: u64,
    pub through: u64,
}

impl IdRange {
    pub fn encode(&self, seal: &TenantSeal) -> String {
        let mut bytes = Vec::with_capacity(1 + 2 * SEALED_LEN);
        bytes.push(ID_RANGE_VERSION);
        bytes.extend_from_slice(&seal.seal(self.after));
        bytes.extend_from_slice(&seal.seal(self.through));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `None` for anything that is not a range `seal`'s tenant was given (a
    /// time-order [`Cursor`] included), so a caller can try this first.
    pub fn decode(text: &str, seal: &TenantSeal) -> Option<IdRange> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let [ID_RANGE_VERSION, sealed @ ..] = bytes.as_slice() else {
            return None;
        };
        if sealed.len() != 2 * SEALED_LEN {
            return None;
        }
        let (after, through) = sealed.split_at(SEALED_LEN);
        let after = seal.open(after.try_into().unwrap())?;
        let through = seal.open(through.try_into().unwrap())?;
        (after < through).then_some(IdRange { after, through })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::SealKey;

    fn record(message: &str, level: Level) -> LogRecord {
        LogRecord {
            id: String::new(),
            position: 1,
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
            fields: serde_json::json!({
                "status": 200,
                "ok": true,
                "model": "sdxl-turbo",
                "gpu": {"id": 0},
                "gpu.name": "A100",
                "ratio": 0.5,
                "nothing": null,
            })
            .as_object()
            .unwrap()
            .clone(),
            invalid_utf8: false,
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let key = SealKey::new([1; SealKey::LEN]);
        let acme = key.tenant("acme");
        let cursor = Cursor {
            ts_ns: -5,
            position: 99,
        };
        assert_eq!(
            Cursor::decode(&cursor.encode(&acme), &acme).unwrap(),
            cursor
        );
        assert!(Cursor::decode("nope", &acme)
            .unwrap_err()
            .contains("next_cursor"));
        // Another tenant's cursor is as invalid as garbage.
        let other = key.tenant("globex");
        assert!(Cursor::decode(&cursor.encode(&other), &acme).is_err());
    }

    #[test]
    fn cursors_keep_every_nanosecond_and_old_millisecond_ones_still_open() {
        let key = SealKey::new([1; SealKey::LEN]);
        let acme = key.tenant("acme");
        // A record stamped to the nanosecond: its cursor holds that time,
        // not the millisecond it falls in.
        let mut at = record("x", Level::Info);
        at.ts = "2026-11-20T10:00:00.123456789Z".parse().unwrap();
        at.position = 41;
        let cursor = Cursor::of(&at);
        assert_eq!(cursor.ts_ns % 1_000_000_000, 123_456_789);
        let back = Cursor::decode(&cursor.encode(&acme), &acme).unwrap();
        assert_eq!(back, cursor);
        assert_eq!(crate::time::timestamp_from_ns(back.ts_ns), at.ts);
        // A cursor made when times were cut to the millisecond is the same
        // encoding (version 3, ns since the epoch), so it still opens, and
        // sorts before every record later in that millisecond.
        let old = Cursor {
            ts_ns: cursor.ts_ns / 1_000_000 * 1_000_000,
            position: 40,
        };
        let text = old.encode(&acme);
        assert_eq!(Cursor::decode(&text, &acme).unwrap(), old);
        assert!(old < cursor);
        for ts_ns in [i64::MIN, -1, 0, i64::MAX] {
            let edge = Cursor { ts_ns, position: 1 };
            assert_eq!(Cursor::decode(&edge.encode(&acme), &acme).unwrap(), edge);
        }
    }

    #[test]
    fn id_ranges_round_trip_and_are_told_apart_from_cursors() {
        let key = SealKey::new([1; SealKey::LEN]);
        let acme = key.tenant("acme");
        let range = IdRange {
            after: 7,
            through: 1 << 40,
        };
        assert_eq!(IdRange::decode(&range.encode(&acme), &acme), Some(range));
        assert_eq!(
            IdRange::decode(&range.encode(&key.tenant("b")), &acme),
            None
        );
        let cursor = Cursor {
            ts_ns: 7,
            position: 9,
        }
        .encode(&acme);
        assert_eq!(IdRange::decode(&cursor, &acme), None);
        assert!(Cursor::decode(&range.encode(&acme), &acme).is_err());
        assert_eq!(IdRange::decode("nope", &acme), None);
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
            boot: Some(Matcher::Re(Pattern::whole("b|c").unwrap())),
            contains: Some(Substring::new("a Out", false).unwrap()),
            regex: Some(Pattern::search("Out Of M[aeiou]mory$").unwrap()),
            fields: [("status".to_owned(), "200".to_owned())].into(),
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
            Filter {
                runner: Some(Matcher::Ne("r1".into())),
                ..filter.clone()
            },
            Filter {
                version: Some(Matcher::NotRe(Pattern::whole("v.*").unwrap())),
                ..filter.clone()
            },
            Filter {
                boot: Some(Matcher::Re(Pattern::whole("bb").unwrap())),
                ..filter.clone()
            },
            Filter {
                contains: Some(Substring::new("a Out", true).unwrap()),
                ..filter.clone()
            },
            Filter {
                regex: Some(Pattern::search("^Out").unwrap()),
                ..filter.clone()
            },
            Filter {
                fields: [("status".to_owned(), "404".to_owned())].into(),
                ..filter.clone()
            },
        ];
        for miss in misses {
            assert!(!miss.matches(&record), "{miss:?}");
        }
    }

    #[test]
    fn fields_compare_strings_as_strings_and_the_rest_as_json() {
        let fields = record("", Level::Info).fields;
        for (key, wanted) in [
            ("status", "200"),
            ("ok", "true"),
            ("model", "sdxl-turbo"),
            ("gpu.id", "0"),
            ("gpu", r#"{"id":0}"#),
            ("gpu.name", "A100"),
            ("ratio", "0.5"),
            ("nothing", "null"),
        ] {
            assert!(field_matches(&fields, key, wanted), "{key}={wanted}");
        }
        for (key, wanted) in [
            ("status", "200.0"),
            ("model", "\"sdxl-turbo\""),
            ("ok", "True"),
            ("missing", ""),
            ("missing", "null"),
            ("gpu.id.x", "0"),
        ] {
            assert!(!field_matches(&fields, key, wanted), "{key}={wanted}");
        }
        let filter = Filter {
            fields: [
                ("status".to_owned(), "200".to_owned()),
                ("ok".to_owned(), "true".to_owned()),
            ]
            .into(),
            ..Filter::default()
        };
        assert!(filter.matches(&record("", Level::Info)));
    }

    #[test]
    fn required_words_come_from_every_text_condition() {
        let filter = Filter {
            text: Some(Phrase::new("CUDA error")),
            contains: Some(Substring::new("timeout of memory", true).unwrap()),
            regex: Some(Pattern::search("(?i)device [0-9]+ is busy").unwrap()),
            ..Filter::default()
        };
        assert_eq!(filter.required_words(), ["cuda", "error", "of"]);
        assert!(Filter::default().required_words().is_empty());
    }
}
