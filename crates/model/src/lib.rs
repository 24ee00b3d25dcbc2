//! The tailwater data model: what a log record is, and how it travels.
//!
//! Every other crate speaks these types; this one depends on nothing of ours.
//!
//! - [`record`]: [`LogRecord`] (a stored record, as the API returns it) and its
//!   parts: [`Level`], [`Stream`], [`Source`], and [`FieldsJson`] (an
//!   ingested record's fields, as JSON text).
//! - [`parse`]: turning one line of worker output into a level, message,
//!   request id, timestamp and fields ([`parse_line`]).
//! - [`filter`]: which records a reader wants ([`Filter`], [`Query`]) and the
//!   opaque [`Cursor`] that pages through them.
//! - [`positions`]: a record's place in ingest order, sealed for its
//!   tenant, as ids, cursors and resume points carry it.
//! - [`lifecycle`]: the events `system` records tell of (a worker's start
//!   and exit, requests, what the agent did with lines, the server's
//!   notices), by name and field.
//! - [`matcher`]: how labels and messages are matched: exact values, regexes
//!   ([`Pattern`], size-bounded) and substrings.
//! - [`wire`]: the HTTP bodies shared by server, client and agent.
//! - [`tenancy`]: the HTTP bodies of tenants, apps, their settings and
//!   scoped tokens.
//! - [`text`]: a record as one line of text ([`LogRecord::text_line`]),
//!   plain or in a caller's [`text::TextStyle`].
//! - [`time`]: times and durations as people type and read them (`15m`,
//!   RFC 3339), and nanoseconds since the epoch.
//! - [`words`]: what full-text search matches: whole words and phrases.
//! - [`cluster`]: what travels through the cluster's NATS streams (the
//!   message format, partitions, message ids, intake subjects), pure.
//! - [`nats_auth`]: NATS credentials beyond the URL (an nkey seed, a creds
//!   file), read from private files and checked, for nodes and agents.
//!
//! ```
//! use tailwater_model::{parse_line, Level};
//!
//! let parsed = parse_line(r#"{"level":"warning","msg":"vram 91%","requestId":"req-7"}"#);
//! assert_eq!(parsed.level, Some(Level::Warn));
//! assert_eq!(parsed.message, "vram 91%");
//! assert_eq!(parsed.request_id.as_deref(), Some("req-7"));
//! ```

pub mod cluster;
pub mod filter;
pub mod lifecycle;
pub mod logql;
pub mod matcher;
pub mod multiline;
pub mod nats_auth;
pub mod parse;
pub mod positions;
pub mod record;
pub mod tenancy;
pub mod text;
pub mod time;
pub mod wire;
pub mod words;

pub use filter::{Cursor, Direction, Filter, IdRange, Labels, Query};
pub use matcher::{Matcher, Pattern, Substring, DEFAULT_REGEX_SIZE_LIMIT};
pub use parse::{parse_line, ParsedLine};
pub use positions::{SealKey, TenantSeal};
pub use record::{fields_of, Fields, FieldsJson, Level, LogRecord, Source, Stream};
pub use words::Phrase;
