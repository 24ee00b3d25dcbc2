//! The record: one line of output (or one lifecycle event) with its labels.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Extra structured fields of a record: a JSON object.
pub type Fields = serde_json::Map<String, serde_json::Value>;

/// Severity, ordered from least to most severe so `level >= Level::Warn` reads
/// as "warnings and worse".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// Reads the level names loggers of many languages write, in any case:
    /// `WARNING`, `err`, `CRITICAL`, `notice`, `panic`, …
    pub fn from_name(name: &str) -> Option<Level> {
        let level = match name.to_ascii_lowercase().as_str() {
            "trace" | "trc" => Level::Trace,
            "debug" | "dbg" => Level::Debug,
            "info" | "inf" | "information" | "informational" | "notice" => Level::Info,
            "warn" | "wrn" | "warning" => Level::Warn,
            "error" | "err" | "eror" => Level::Error,
            "fatal" | "crit" | "critical" | "panic" | "emerg" | "emergency" | "alert" => {
                Level::Fatal
            }
            _ => return None,
        };
        Some(level)
    }

    /// Numeric levels as pino and bunyan write them (10 trace … 60 fatal).
    pub fn from_number(number: i64) -> Option<Level> {
        let level = match number {
            ..=14 => Level::Trace,
            15..=24 => Level::Debug,
            25..=34 => Level::Info,
            35..=44 => Level::Warn,
            45..=54 => Level::Error,
            _ => Level::Fatal,
        };
        (number > 0).then_some(level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::from_name(s).ok_or_else(|| {
            format!("unknown level '{s}': use one of trace, debug, info, warn, error, fatal")
        })
    }
}

/// Which output a record came from. `System` records are written by tailwater
/// itself: lifecycle events, drop and throttle accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
}

impl FromStr for Stream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Stream::Stdout),
            "stderr" => Ok(Stream::Stderr),
            "system" => Ok(Stream::System),
            _ => Err(format!(
                "unknown stream '{s}': use one of stdout, stderr, system"
            )),
        }
    }
}

/// Which part of the platform produced a record: the worker itself (`run`),
/// the request gateway in front of it, or the deployment machinery.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Run,
    Gateway,
    Deploy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Run => "run",
            Source::Gateway => "gateway",
            Source::Deploy => "deploy",
        }
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "run" => Ok(Source::Run),
            "gateway" => Ok(Source::Gateway),
            "deploy" => Ok(Source::Deploy),
            _ => Err(format!(
                "unknown source '{s}': use one of run, gateway, deploy"
            )),
        }
    }
}

/// A stored record, as every read API returns it.
///
/// `(tenant, runner, boot, seq)` identifies the line the agent captured, so a
/// batch delivered twice is stored once. `id` is the server's own ingest
/// order: live tail resumes after an `id`, history pages by `(ts, id)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub id: u64,
    pub ts: Timestamp,
    pub tenant: String,
    pub app: String,
    pub version: String,
    pub runner: String,
    pub boot: String,
    pub seq: u64,
    pub source: Source,
    pub stream: Stream,
    pub level: Level,
    pub request_id: Option<String>,
    pub message: String,
    #[serde(default)]
    pub fields: Fields,
    /// The captured bytes were not valid UTF-8; invalid sequences in
    /// `message` were replaced with U+FFFD.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub invalid_utf8: bool,
}

impl LogRecord {
    /// The record as one line of plain text, the one home of that layout:
    /// `2026-11-21T10:00:00.123456789Z sdxl r-1a2b stderr ERROR [req-7] message`.
    /// The time is in full unless the formatter is given a precision
    /// (`{:.3}`); line breaks inside the message are written `\n` and `\r`,
    /// so a record is always one line.
    pub fn text_line(&self) -> TextLine<'_> {
        TextLine(self)
    }
}

/// [`LogRecord::text_line`].
pub struct TextLine<'a>(&'a LogRecord);

impl fmt::Display for TextLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = self.0;
        match f.precision() {
            Some(digits) => write!(f, "{:.digits$}", record.ts)?,
            None => write!(f, "{}", record.ts)?,
        }
        let level = record.level.as_str().to_ascii_uppercase();
        write!(
            f,
            " {} {} {:<6} {:<5} ",
            record.app,
            record.runner,
            record.stream.as_str(),
            level
        )?;
        if let Some(request) = &record.request_id {
            write!(f, "[{request}] ")?;
        }
        if record.stream == Stream::System {
            f.write_str("tailwater: ")?;
        }
        let mut rest = record.message.as_str();
        while let Some(at) = rest.find(['\n', '\r']) {
            f.write_str(&rest[..at])?;
            f.write_str(if rest.as_bytes()[at] == b'\n' {
                "\\n"
            } else {
                "\\r"
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_line_of_text() {
        let record = LogRecord {
            id: 1,
            ts: "2026-11-21T10:00:00.123456789Z".parse().unwrap(),
            tenant: "t".into(),
            app: "sdxl".into(),
            version: String::new(),
            runner: "r-1".into(),
            boot: "b".into(),
            seq: 0,
            source: Source::Run,
            stream: Stream::Stderr,
            level: Level::Error,
            request_id: Some("req-7".into()),
            message: "two\nlines\r".into(),
            fields: Fields::new(),
            invalid_utf8: false,
        };
        assert_eq!(
            record.text_line().to_string(),
            "2026-11-21T10:00:00.123456789Z sdxl r-1 stderr ERROR [req-7] two\\nlines\\r"
        );
        assert!(format!("{:.3}", record.text_line()).starts_with("2026-11-21T10:00:00.123Z sdxl"));
    }

    #[test]
    fn levels_order_from_least_to_most_severe() {
        assert!(Level::Trace < Level::Debug);
        assert!(Level::Warn < Level::Error);
        assert!(Level::Error < Level::Fatal);
    }

    #[test]
    fn level_names_of_common_loggers_are_understood() {
        assert_eq!(Level::from_name("WARNING"), Some(Level::Warn));
        assert_eq!(Level::from_name("Critical"), Some(Level::Fatal));
        assert_eq!(Level::from_name("err"), Some(Level::Error));
        assert_eq!(Level::from_name("verbose"), None);
        assert_eq!(Level::from_number(30), Some(Level::Info));
        assert_eq!(Level::from_number(50), Some(Level::Error));
    }

    #[test]
    fn unknown_level_error_says_what_to_use() {
        let error = "loud".parse::<Level>().unwrap_err();
        assert!(error.contains("use one of trace"), "{error}");
    }
}
