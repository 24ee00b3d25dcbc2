//! A record as one line of text: the one home of that layout (time,
//! labels, stream, level, request, the `tailwater:` mark of lifecycle
//! lines, message). Plain, as exports and tests write it
//! ([`LogRecord::text_line`]); styled, as the CLI prints it, by a
//! [`TextStyle`] that decides how each part looks but not where it goes
//! ([`LogRecord::styled_text_line`]).

use std::fmt;

use jiff::Timestamp;

use crate::record::{LogRecord, Stream};

/// What a piece of a text line is, for a [`TextStyle`] to style it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextPart {
    App,
    Runner,
    /// The stream, padded to 6.
    Stream,
    /// The level in capitals, padded to 5.
    Level,
    /// The request id, inside `[` `]`.
    Request,
    /// `tailwater:`, before the message of a `system` record.
    Lifecycle,
}

/// How the parts of a text line look; where they go is the layout's.
pub trait TextStyle {
    /// Writes the time.
    fn time(&self, f: &mut fmt::Formatter<'_>, ts: Timestamp) -> fmt::Result;

    /// Whether the line shows app and runner.
    fn labels(&self) -> bool {
        true
    }

    /// Writes `text`, the piece `part` of `record`'s line.
    fn part(
        &self,
        f: &mut fmt::Formatter<'_>,
        record: &LogRecord,
        part: TextPart,
        text: &str,
    ) -> fmt::Result {
        let _ = (record, part);
        f.write_str(text)
    }

    /// Writes the message, last on the line. It may break the line only to
    /// go on with the same record (the CLI indents a message's further
    /// lines); nothing in it may start what reads as another record.
    fn message(&self, f: &mut fmt::Formatter<'_>, record: &LogRecord) -> fmt::Result;
}

/// The plain line: the time in full unless the formatter is given a
/// precision (`{:.3}`); line breaks inside the message written `\n` and
/// `\r`, so a record is always one line.
pub struct Plain;

impl TextStyle for Plain {
    fn time(&self, f: &mut fmt::Formatter<'_>, ts: Timestamp) -> fmt::Result {
        match f.precision() {
            Some(digits) => write!(f, "{ts:.digits$}"),
            None => write!(f, "{ts}"),
        }
    }

    fn message(&self, f: &mut fmt::Formatter<'_>, record: &LogRecord) -> fmt::Result {
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

impl LogRecord {
    /// The record as one line of plain text:
    /// `2026-11-21T10:00:00.123456789Z sdxl r-1a2b stderr ERROR [req-7] message`
    /// (see [`Plain`]).
    pub fn text_line(&self) -> TextLine<'_> {
        self.styled_text_line(&Plain)
    }

    /// The record's text line, each part as `style` has it.
    pub fn styled_text_line<'a>(&'a self, style: &'a dyn TextStyle) -> TextLine<'a> {
        TextLine {
            record: self,
            style,
        }
    }
}

/// [`LogRecord::text_line`], [`LogRecord::styled_text_line`].
pub struct TextLine<'a> {
    record: &'a LogRecord,
    style: &'a dyn TextStyle,
}

impl fmt::Display for TextLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TextLine { record, style } = *self;
        style.time(f, record.ts)?;
        f.write_str(" ")?;
        if style.labels() {
            style.part(f, record, TextPart::App, &record.app)?;
            f.write_str(" ")?;
            style.part(f, record, TextPart::Runner, &record.runner)?;
            f.write_str(" ")?;
        }
        let stream = format!("{:<6}", record.stream.as_str());
        style.part(f, record, TextPart::Stream, &stream)?;
        f.write_str(" ")?;
        let level = format!("{:<5}", record.level.as_str().to_ascii_uppercase());
        style.part(f, record, TextPart::Level, &level)?;
        f.write_str(" ")?;
        if let Some(request) = &record.request_id {
            f.write_str("[")?;
            style.part(f, record, TextPart::Request, request)?;
            f.write_str("] ")?;
        }
        if record.stream == Stream::System {
            style.part(f, record, TextPart::Lifecycle, "tailwater:")?;
            f.write_str(" ")?;
        }
        style.message(f, record)
    }
}

/// Fields as logfmt, in key order: `status=500 model="sdxl turbo"
/// gpu="{\"id\":0}"`. A value is bare when it is a number, a boolean,
/// `null` or a string of no space, quote, `=` or control character; else
/// quoted, with `"` and `\` escaped; objects and arrays as their JSON.
/// Line breaks and other control characters are escaped, so the fields
/// stay on their record's line.
pub fn logfmt(fields: &crate::Fields) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        if !out.is_empty() {
            out.push(' ');
        }
        push_logfmt(&mut out, key);
        out.push('=');
        match value {
            serde_json::Value::String(text) => push_logfmt(&mut out, text),
            other => push_logfmt(&mut out, &other.to_string()),
        }
    }
    out
}

fn push_logfmt(out: &mut String, text: &str) {
    let bare = !text.is_empty()
        && !text
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if bare {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Fields, Level, Source};

    #[test]
    fn fields_as_logfmt_stay_on_one_line_and_read_back_unambiguously() {
        let fields: Fields = serde_json::from_value(serde_json::json!({
            "status": 500,
            "ok": false,
            "none": null,
            "model": "sdxl turbo",
            "plain": "a100",
            "quote": "say \"hi\"",
            "lines": "one\ntwo",
            "empty": "",
            "gpu": {"id": 0},
        }))
        .unwrap();
        assert_eq!(
            logfmt(&fields),
            r#"empty="" gpu="{\"id\":0}" lines="one\ntwo" model="sdxl turbo" none=null ok=false plain=a100 quote="say \"hi\"" status=500"#
        );
        assert_eq!(logfmt(&Fields::new()), "");
    }

    fn record() -> LogRecord {
        LogRecord {
            id: String::new(),
            position: 1,
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
        }
    }

    #[test]
    fn a_record_is_one_line_of_text() {
        let record = record();
        assert_eq!(
            record.text_line().to_string(),
            "2026-11-21T10:00:00.123456789Z sdxl r-1 stderr ERROR [req-7] two\\nlines\\r"
        );
        assert!(format!("{:.3}", record.text_line()).starts_with("2026-11-21T10:00:00.123Z sdxl"));
    }

    /// Marks every part, and leaves the labels out.
    struct Marked;

    impl TextStyle for Marked {
        fn time(&self, f: &mut fmt::Formatter<'_>, _: Timestamp) -> fmt::Result {
            f.write_str("<time>")
        }
        fn labels(&self) -> bool {
            false
        }
        fn part(
            &self,
            f: &mut fmt::Formatter<'_>,
            _: &LogRecord,
            part: TextPart,
            text: &str,
        ) -> fmt::Result {
            write!(f, "<{part:?}:{text}>")
        }
        fn message(&self, f: &mut fmt::Formatter<'_>, record: &LogRecord) -> fmt::Result {
            write!(f, "<{}>", record.message.len())
        }
    }

    #[test]
    fn a_style_decides_how_parts_look_and_the_layout_where_they_go() {
        let mut record = record();
        assert_eq!(
            record.styled_text_line(&Marked).to_string(),
            "<time> <Stream:stderr> <Level:ERROR> [<Request:req-7>] <10>"
        );
        record.stream = Stream::System;
        record.request_id = None;
        assert_eq!(
            record.styled_text_line(&Marked).to_string(),
            "<time> <Stream:system> <Level:ERROR> <Lifecycle:tailwater:> <10>"
        );
    }
}
