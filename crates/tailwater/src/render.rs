//! How a record looks on a terminal or in a pipe (`tailwater logs`,
//! `tailwater dev`): the colours and time formats of the text line, whose
//! layout is the model's ([`tailwater_model::text`]), and `--json` (the
//! API's record shape, one per line).
//!
//! Colours are on only when stdout is a terminal, `NO_COLOR` is unset and
//! `--no-color` is not given (`--color always` forces them, for `less -R`).
//! A worker's own colour codes pass through when colours are on and are
//! removed otherwise; every other control character in a message is shown
//! escaped (`\x07`), so a log line cannot move the cursor, retitle the
//! window or ring the bell. A message of several lines (a traceback, a
//! JSON message holding newlines) prints them as lines, each after the
//! first indented by [`CONTINUATION`], so they read as one record.

use std::collections::VecDeque;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use anstyle::{AnsiColor, Style};
use clap::{Args, ValueEnum};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use tailwater_model::text::{TextPart, TextStyle};
use tailwater_model::time::{format_rough, TimePrecision};
use tailwater_model::{Level, LogRecord, Stream};

/// The output flags every command that prints records shares.
#[derive(Args, Clone, Debug, Default)]
pub struct OutputArgs {
    /// One JSON record per line, in the API's record shape (stable field
    /// names: id ts tenant app version runner boot seq source stream level
    /// request_id message fields).
    #[arg(long)]
    pub json: bool,
    /// When to colour: auto (a terminal, unless NO_COLOR is set), always,
    /// never.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, value_name = "WHEN")]
    pub color: ColorWhen,
    /// Never colour (the same as --color never).
    #[arg(long)]
    pub no_color: bool,
    /// How times are shown: local (this machine's time zone), utc (RFC
    /// 3339), relative (`3m ago`).
    #[arg(long, value_enum, default_value_t = TimeFormat::Local, value_name = "FORMAT")]
    pub time: TimeFormat,
    /// Digits of a second in local and utc times: ms (3), us (6) or ns
    /// (9). The store keeps what the agent stamped (microseconds) or the
    /// worker's own time; --json always has every digit.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Ms, value_name = "UNIT")]
    pub time_precision: PrecisionArg,
    /// Show each record's fields after its message, as logfmt
    /// (`status=500 model="sdxl turbo"`).
    #[arg(long)]
    pub fields: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    #[default]
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TimeFormat {
    #[default]
    Local,
    Utc,
    Relative,
}

/// `--time-precision`: [`TimePrecision`] as a flag's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    #[default]
    Ms,
    Us,
    Ns,
}

impl From<PrecisionArg> for TimePrecision {
    fn from(arg: PrecisionArg) -> TimePrecision {
        match arg {
            PrecisionArg::Ms => TimePrecision::Ms,
            PrecisionArg::Us => TimePrecision::Us,
            PrecisionArg::Ns => TimePrecision::Ns,
        }
    }
}

/// Stdout closed under us (`| head`, a pager that quit): a normal way to
/// stop reading, not a failure.
#[derive(Debug, thiserror::Error)]
#[error("output closed")]
pub struct OutputClosed;

/// Resolves once stdout's reader is gone (a pager quit, `| head` ended),
/// found without writing: so `-f` ends when the pager does, not at the next
/// record, which may be hours away.
pub async fn stdout_closed() {
    const EVERY: std::time::Duration = std::time::Duration::from_millis(250);
    loop {
        let mut poll = libc::pollfd {
            fd: libc::STDOUT_FILENO,
            events: 0,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own, without waiting.
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        // A pipe whose reader closed reports POLLERR; a terminal that hung
        // up, POLLHUP.
        if ready > 0 && poll.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Prints records to stdout as the flags ask. Cheap to clone; clones share
/// the id of the last record printed.
#[derive(Clone)]
pub struct Printer {
    json: bool,
    color: bool,
    time: TimeFormat,
    precision: TimePrecision,
    /// Fields after the message (`--fields`).
    fields: bool,
    zone: TimeZone,
    /// Whether to show app and runner (off in `tailwater dev`, which runs
    /// one worker).
    labels: bool,
    /// The ids of the records printed last, newest at the back.
    recent: Arc<Mutex<VecDeque<String>>>,
}

/// Ids [`Printer::has_printed`] remembers.
const RECENT_IDS: usize = 4096;

impl Printer {
    pub fn new(args: &OutputArgs) -> Printer {
        let color = match (args.no_color, args.color) {
            (true, _) | (_, ColorWhen::Never) => false,
            (false, ColorWhen::Always) => true,
            (false, ColorWhen::Auto) => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
            }
        };
        Printer {
            json: args.json,
            color,
            time: args.time,
            precision: args.time_precision.into(),
            fields: args.fields,
            zone: TimeZone::system(),
            labels: true,
            recent: Arc::default(),
        }
    }

    /// Leaves app and runner out of text lines.
    pub fn without_labels(mut self) -> Printer {
        self.labels = false;
        self
    }

    /// Whether any record was printed.
    pub fn printed_any(&self) -> bool {
        !self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Whether the record with this `id` is among the last few thousand
    /// printed.
    pub fn has_printed(&self, id: &str) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.iter().rev().any(|printed| printed == id)
    }

    /// Prints `records` and flushes. [`OutputClosed`] when stdout is gone.
    pub fn print<'a>(
        &self,
        records: impl IntoIterator<Item = &'a LogRecord>,
    ) -> Result<(), OutputClosed> {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let now = Timestamp::now();
        let written = records.into_iter().try_for_each(|record| {
            self.write(&mut out, record, now)?;
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_IDS {
                recent.pop_front();
            }
            recent.push_back(record.id.clone());
            Ok(())
        });
        written.and_then(|()| out.flush()).map_err(|error| {
            if error.kind() != std::io::ErrorKind::BrokenPipe {
                // A full disk or a dead terminal: nothing better to do than
                // stop, as for a closed pipe, but say why.
                eprintln!("tailwater: cannot write the output: {error}");
            }
            OutputClosed
        })
    }

    /// One record: one line, or its message's lines indented under it.
    pub fn write(
        &self,
        out: &mut impl Write,
        record: &LogRecord,
        now: Timestamp,
    ) -> std::io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut *out, record)?;
            return writeln!(out);
        }
        let style = Styled { printer: self, now };
        write!(out, "{}", record.styled_text_line(&style))?;
        if self.fields && !record.fields.is_empty() {
            let fields = tailwater_model::text::logfmt(&record.fields);
            write!(out, " {}", Painted(self.paint(FIELDS), &fields))?;
        }
        writeln!(out)
    }

    fn paint(&self, style: Style) -> Style {
        if self.color {
            style
        } else {
            Style::new()
        }
    }

    fn format_time(&self, ts: Timestamp, now: Timestamp) -> String {
        match self.time {
            TimeFormat::Utc => self.precision.rfc3339(ts),
            TimeFormat::Local => {
                let format = match self.precision {
                    TimePrecision::Ms => "%Y-%m-%d %H:%M:%S%.3f",
                    TimePrecision::Us => "%Y-%m-%d %H:%M:%S%.6f",
                    TimePrecision::Ns => "%Y-%m-%d %H:%M:%S%.9f",
                };
                ts.to_zoned(self.zone.clone()).strftime(format).to_string()
            }
            TimeFormat::Relative => format!("{:>8}", relative(ts, now)),
        }
    }
}

/// The printer's look of each part of the model's text line.
struct Styled<'a> {
    printer: &'a Printer,
    now: Timestamp,
}

impl TextStyle for Styled<'_> {
    fn time(&self, f: &mut fmt::Formatter<'_>, ts: Timestamp) -> fmt::Result {
        let time = self.printer.format_time(ts, self.now);
        write!(f, "{}", Painted(self.printer.paint(TIME), &time))
    }

    fn labels(&self) -> bool {
        self.printer.labels
    }

    fn part(
        &self,
        f: &mut fmt::Formatter<'_>,
        record: &LogRecord,
        part: TextPart,
        text: &str,
    ) -> fmt::Result {
        let style = match part {
            TextPart::App => APP,
            TextPart::Runner => RUNNER,
            TextPart::Stream => stream_style(record.stream),
            TextPart::Level => level_style(record.level),
            TextPart::Request => REQUEST,
            TextPart::Lifecycle => LIFECYCLE,
        };
        write!(f, "{}", Painted(self.printer.paint(style), text))
    }

    fn message(&self, f: &mut fmt::Formatter<'_>, record: &LogRecord) -> fmt::Result {
        // Lifecycle lines (start, ready, requests, exit) are the agent's
        // own: set apart from the worker's output.
        let style = if record.stream == Stream::System {
            self.printer.paint(LIFECYCLE)
        } else {
            Style::new()
        };
        write!(f, "{}", style.render())?;
        write_message(f, &record.message, self.printer.color)?;
        write!(f, "{}", style.render_reset())
    }
}

const TIME: Style = Style::new().dimmed();
const FIELDS: Style = Style::new().dimmed();
const APP: Style = AnsiColor::Blue.on_default();
const RUNNER: Style = Style::new().dimmed();
const REQUEST: Style = AnsiColor::Cyan.on_default().bold();
const LIFECYCLE: Style = AnsiColor::Magenta.on_default().bold();

fn level_style(level: Level) -> Style {
    match level {
        Level::Trace => Style::new().dimmed(),
        Level::Debug => AnsiColor::Blue.on_default(),
        Level::Info => AnsiColor::Green.on_default(),
        Level::Warn => AnsiColor::Yellow.on_default().bold(),
        Level::Error => AnsiColor::Red.on_default().bold(),
        Level::Fatal => AnsiColor::White.on(AnsiColor::Red).bold(),
    }
}

fn stream_style(stream: Stream) -> Style {
    match stream {
        Stream::Stdout => Style::new().dimmed(),
        Stream::Stderr => AnsiColor::Yellow.on_default(),
        Stream::System => AnsiColor::Magenta.on_default(),
    }
}

/// Text in a style; no escape codes at all for the plain style.
struct Painted<'a>(Style, &'a str);

impl std::fmt::Display for Painted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Painted(style, text) = self;
        write!(f, "{}{text}{}", style.render(), style.render_reset())
    }
}

/// What starts each line of a message after its first: they stand out of
/// the column of times, so a record of several lines reads as one.
pub const CONTINUATION: &str = "    ";

/// A message, with its colour codes (SGR: `ESC [ … m`) kept when `color`
/// and dropped otherwise, its line breaks (`\n`, `\r\n`) as lines indented
/// by [`CONTINUATION`], and every other control character escaped.
fn write_message(out: &mut impl fmt::Write, message: &str, color: bool) -> fmt::Result {
    let mut coloured = false;
    let mut rest = message;
    while let Some(at) = rest.find(|c: char| c.is_control() && c != '\t') {
        out.write_str(&rest[..at])?;
        let control = rest[at..].chars().next().expect("found above");
        rest = &rest[at + control.len_utf8()..];
        if control == '\r' && rest.starts_with('\n') {
            continue;
        }
        if control == '\n' {
            out.write_str("\n")?;
            out.write_str(CONTINUATION)?;
            continue;
        }
        if control == '\x1b' {
            if let Some(length) = sgr_length(rest) {
                if color {
                    out.write_str("\x1b")?;
                    out.write_str(&rest[..length])?;
                    coloured = true;
                }
                rest = &rest[length..];
                continue;
            }
        }
        write!(out, "\\x{:02x}", control as u32)?;
    }
    out.write_str(rest)?;
    if coloured {
        // The worker's colour must not run into the next line.
        out.write_str("\x1b[0m")?;
    }
    Ok(())
}

/// The length of `[0;31m` at the start of `text` (what follows an ESC of a
/// colour code), if it is one.
fn sgr_length(text: &str) -> Option<usize> {
    let body = text.strip_prefix('[')?;
    let params = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (body.as_bytes().get(params) == Some(&b'm')).then_some(params + 2)
}

/// `12s ago`, `3m ago`, `2h ago`, `4d ago`; `now` within a second.
fn relative(ts: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second() - ts.as_second();
    let rough = format_rough(jiff::SignedDuration::from_secs(seconds));
    match seconds {
        0 => "now".to_owned(),
        ..0 => format!("in {rough}"),
        _ => format!("{rough} ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str, color: bool) -> String {
        let mut out = String::new();
        write_message(&mut out, text, color).unwrap();
        out
    }

    #[test]
    fn an_uncoloured_line_is_the_models_text_line() {
        let printer = Printer {
            json: false,
            color: false,
            time: TimeFormat::Utc,
            precision: TimePrecision::Ms,
            zone: TimeZone::UTC,
            fields: false,
            labels: true,
            recent: Arc::default(),
        };
        let mut record: LogRecord = serde_json::from_value(serde_json::json!({
            "id": "AAAAAAAAAAAAAAAAAAAAAA", "ts": "2026-11-21T10:00:00.123456789Z", "tenant": "t", "app": "sdxl",
            "version": "", "runner": "r-1", "boot": "b", "seq": 0, "source": "run",
            "stream": "stderr", "level": "error", "request_id": "req-7",
            "message": "cuda oom", "fields": {}
        }))
        .unwrap();
        for stream in [Stream::Stderr, Stream::System] {
            record.stream = stream;
            let mut out = Vec::new();
            printer.write(&mut out, &record, Timestamp::now()).unwrap();
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{:.3}\n", record.text_line())
            );
        }
    }

    #[test]
    fn colour_codes_pass_with_colour_and_go_without() {
        assert_eq!(message("\x1b[31mred\x1b[0m", false), "red");
        assert_eq!(
            message("\x1b[1;31mred", true),
            "\x1b[1;31mred\x1b[0m",
            "reset at the end of the line"
        );
    }

    #[test]
    fn other_control_characters_are_shown_escaped() {
        assert_eq!(
            message("bell\x07 title\x1b]0;pwned\x07 tab\tkept", true),
            "bell\\x07 title\\x1b]0;pwned\\x07 tab\tkept"
        );
        assert_eq!(message("cursor\x1b[2Jclear", false), "cursor\\x1b[2Jclear");
    }

    #[test]
    fn a_message_of_several_lines_prints_them_indented() {
        let traceback =
            "Traceback (most recent call last):\n  File \"w.py\", line 1\r\nZeroDivisionError: x";
        assert_eq!(
            message(traceback, false),
            "Traceback (most recent call last):\n      File \"w.py\", line 1\n    ZeroDivisionError: x"
        );
        assert_eq!(
            message("a\rb\x0bc\n\x07", false),
            "a\\x0db\\x0bc\n    \\x07",
            "other control characters stay escaped"
        );
    }

    #[test]
    fn relative_times_round_down_to_one_unit() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let ago = |seconds: i64| relative(now - jiff::SignedDuration::from_secs(seconds), now);
        assert_eq!(ago(0), "now");
        assert_eq!(ago(12), "12s ago");
        assert_eq!(ago(179), "2m ago");
        assert_eq!(ago(7300), "2h ago");
        assert_eq!(ago(4 * 86400 + 5), "4d ago");
        assert_eq!(ago(-3), "in 3s");
    }

    #[test]
    fn times_show_milliseconds_unless_more_digits_are_asked_for() {
        let ts: Timestamp = "2026-11-21T10:00:00.123456789Z".parse().unwrap();
        let shown = |time, precision| {
            let printer = Printer {
                json: false,
                color: false,
                time,
                precision,
                zone: TimeZone::UTC,
                fields: false,
                labels: true,
                recent: Arc::default(),
            };
            printer.format_time(ts, ts)
        };
        let cases = [
            (
                TimePrecision::Ms,
                "2026-11-21T10:00:00.123Z",
                "2026-11-21 10:00:00.123",
            ),
            (
                TimePrecision::Us,
                "2026-11-21T10:00:00.123456Z",
                "2026-11-21 10:00:00.123456",
            ),
            (
                TimePrecision::Ns,
                "2026-11-21T10:00:00.123456789Z",
                "2026-11-21 10:00:00.123456789",
            ),
        ];
        for (precision, utc, local) in cases {
            assert_eq!(shown(TimeFormat::Utc, precision), utc);
            assert_eq!(shown(TimeFormat::Local, precision), local);
            assert_eq!(shown(TimeFormat::Relative, precision).trim(), "now");
        }
    }
}
