//! Multi-line events: the lines of a traceback or a panic shipped as one
//! record, grouped as the spool is read back for shipping.
//!
//! Why here, and not as lines are captured: capture stays a copy (no
//! parsing on the path that drains the worker's pipes), and every line is
//! in the spool as it was read before anything waits for the next one, so
//! an agent killed with -9 in the middle of a traceback loses nothing. A
//! group lives only in the reader's memory, and a batch never ends inside
//! one ([`Assemble`]): the spool's acknowledged position is always before
//! a group's first line, so after a restart the same lines are read again
//! and grouped the same way. A group's record takes its first line's
//! sequence number and stamp, so the server keeps it once however often it
//! is shipped.
//!
//! The rules of which lines belong together are the model's
//! ([`tailwater_model::multiline`]); this file adds what only the agent
//! knows: a group takes lines of one stream (stdout and stderr are never
//! mixed; lines of the other stream may come between) and of one request,
//! each stamped within `wait` of the one before it (decided on the stamps
//! in the spool, so a re-read decides the same; an event that surely goes
//! on waits [`UNFINISHED_PATIENCE`] times `wait`, one that is over not at
//! all), and at most `max_bytes` of text. A group that reaches it is cut:
//! its record says `continued` and the rest of the trace goes on in the
//! next record, counted ([`Assembler::cut`]) and told in a `multiline_cut`
//! record. A group still open when the spool's end is reached waits for
//! more, at most that long after its last line.
//!
//! Known limits: a batch cut by the rate limit or by limits halved after a
//! "too large" answer, with a group open since its start, cuts the group
//! there (a re-read after a restart may then group differently; the first
//! line's record is still stored once). A trace that crosses a spool
//! segment's end is two records.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tailwater_model::multiline::{self, Event};
use tailwater_model::wire::IngestRecord;
use tailwater_model::{FieldsJson, Stream};

use super::decode::parse_captured;
use crate::line::Line;
use crate::spool::Assemble;

/// How long a group waits for its next line, unless configured otherwise.
pub const DEFAULT_MULTILINE_WAIT: Duration = Duration::from_millis(200);
/// A group's text at most, unless configured otherwise; a longer trace is
/// cut into records of this size.
pub const DEFAULT_MULTILINE_MAX_BYTES: usize = 64 * 1024;
/// An event that surely goes on (a Python traceback before its exception
/// line, a Rust panic before its closing note: printing a backtrace looks
/// up symbols, which takes a while) waits this many times the wait for its
/// next line.
pub const UNFINISHED_PATIENCE: u32 = 5;
/// A line stamped this far before the last line of its group means the
/// clock went back: the group does not wait on it.
const CLOCK_STEP: SignedDuration = SignedDuration::from_secs(1);

/// How lines are grouped into multi-line events (`--multiline-wait`,
/// `--multiline-max-bytes`); `None` where grouping is off (`--multiline
/// off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    pub wait: Duration,
    pub max_bytes: usize,
}

impl Default for Grouping {
    fn default() -> Grouping {
        Grouping {
            wait: DEFAULT_MULTILINE_WAIT,
            max_bytes: DEFAULT_MULTILINE_MAX_BYTES,
        }
    }
}

/// Makes records of the lines of one read of the spool: each line parsed
/// ([`parse_captured`]), the lines of a multi-line event grouped. A new one
/// for each read: what it holds open is read again next time.
pub struct Assembler {
    grouping: Option<Grouping>,
    /// At most one group per stream, oldest first.
    open: Vec<Group>,
    /// The sequence numbers of the records of events cut at `max_bytes`.
    pub cut: Vec<u64>,
}

struct Group {
    event: Event,
    stream: Stream,
    request: Option<String>,
    seq: u64,
    ts: Timestamp,
    /// The stamp of the group's last line.
    last: Timestamp,
    /// The first line as read, for a group that stays one line.
    first: Vec<u8>,
    text: String,
    lines: u32,
    invalid_utf8: bool,
    /// The group goes on from an event cut at `max_bytes`.
    rest: bool,
}

impl Assembler {
    pub fn new(grouping: Option<Grouping>) -> Assembler {
        Assembler {
            grouping,
            open: Vec::new(),
            cut: Vec::new(),
        }
    }

    /// Finishes the groups whose wait ended before `ts`.
    fn expire(&mut self, ts: Timestamp, out: &mut Vec<IngestRecord>) {
        let Some(grouping) = self.grouping else {
            return;
        };
        let mut at = 0;
        while at < self.open.len() {
            if waited(&self.open[at], ts, grouping.wait) {
                let group = self.open.remove(at);
                out.push(group.record(false));
            } else {
                at += 1;
            }
        }
    }
}

/// Whether `ts` is past `group`'s wait for its next line.
fn waited(group: &Group, ts: Timestamp, wait: Duration) -> bool {
    ts.duration_since(group.last) >= patience(group, wait)
}

/// How long after its last line `group` waits for the next: not at all
/// once its event is over, longer while it surely goes on. Decided by the
/// lines read, so a re-read decides the same.
fn patience(group: &Group, wait: Duration) -> SignedDuration {
    let wait = if group.event.is_over() {
        Duration::ZERO
    } else if group.event.expects_more() {
        wait.saturating_mul(UNFINISHED_PATIENCE)
    } else {
        wait
    };
    SignedDuration::try_from(wait).unwrap_or(SignedDuration::MAX)
}

/// A line that can be in a group: whole, not a progress bar's state.
fn groupable(line: &Line<'_>) -> bool {
    !line.continued && line.progress.is_none()
}

impl Group {
    fn new(event: Event, seq: u64, ts: Timestamp, line: &Line<'_>, text: &str) -> Group {
        Group {
            event,
            stream: line.stream,
            request: line.in_request.map(str::to_owned),
            seq,
            ts,
            last: ts,
            first: line.bytes.to_vec(),
            text: text.to_owned(),
            lines: 1,
            invalid_utf8: std::str::from_utf8(line.bytes).is_err(),
            rest: false,
        }
    }

    /// Whether `line` may join the group as far as the agent knows (its
    /// stream, request and time); the model's rules decide the rest.
    fn may_take(&self, ts: Timestamp, line: &Line<'_>, wait: Duration) -> bool {
        self.stream == line.stream
            && self.request.as_deref() == line.in_request
            && groupable(line)
            && !waited(self, ts, wait)
    }

    /// The group's record: one line is parsed as any line is; more are the
    /// event's text, at the event's level.
    fn record(self, cut: bool) -> IngestRecord {
        if self.lines == 1 && !cut && !self.rest {
            let line = Line {
                in_request: self.request.as_deref(),
                ..Line::new(self.stream, &self.first)
            };
            return parse_captured(self.seq, self.ts, &line);
        }
        let mut fields = tailwater_model::Fields::new();
        fields.insert("multiline".into(), self.event.kind().as_str().into());
        if cut {
            fields.insert("continued".into(), true.into());
        }
        IngestRecord {
            seq: self.seq,
            ts: self.ts,
            stream: self.stream,
            level: self.event.level(),
            request_id: self.request,
            message: multiline::trim_event(&self.text).to_owned(),
            fields: FieldsJson::from_map(&fields),
            invalid_utf8: self.invalid_utf8,
        }
    }
}

impl Assemble for Assembler {
    fn line(&mut self, seq: u64, ts: Timestamp, line: &Line<'_>, out: &mut Vec<IngestRecord>) {
        let Some(grouping) = self.grouping else {
            out.push(parse_captured(seq, ts, line));
            return;
        };
        self.expire(ts, out);
        let text = String::from_utf8_lossy(line.bytes);
        if let Some(at) = self.open.iter().position(|g| g.stream == line.stream) {
            let group = &mut self.open[at];
            if group.may_take(ts, line, grouping.wait) && group.event.accepts(&text) {
                if group.text.len() + 1 + text.len() <= grouping.max_bytes {
                    group.text.push('\n');
                    group.text.push_str(&text);
                    group.lines += 1;
                    group.last = ts;
                    group.invalid_utf8 |= std::str::from_utf8(line.bytes).is_err();
                    return;
                }
                // Cut: the event goes on in a group of its own.
                let mut rest = Group::new(group.event, seq, ts, line, &text);
                rest.rest = true;
                let full = std::mem::replace(group, rest);
                self.cut.push(full.seq);
                out.push(full.record(true));
                return;
            }
            let group = self.open.remove(at);
            out.push(group.record(false));
        }
        if groupable(line) {
            if let Some(event) = multiline::start(&text) {
                self.open.push(Group::new(event, seq, ts, line, &text));
                return;
            }
        }
        out.push(parse_captured(seq, ts, line));
    }

    fn tick(&mut self, ts: Timestamp, out: &mut Vec<IngestRecord>) {
        self.expire(ts, out);
    }

    fn joins(&self, ts: Timestamp, line: &Line<'_>) -> bool {
        let Some(grouping) = self.grouping else {
            return false;
        };
        self.open.iter().any(|group| {
            let mut event = group.event;
            group.may_take(ts, line, grouping.wait)
                && event.accepts(&String::from_utf8_lossy(line.bytes))
        })
    }

    fn is_open(&self) -> bool {
        !self.open.is_empty()
    }

    fn finish(&mut self, more: Option<Timestamp>, out: &mut Vec<IngestRecord>) -> Option<Duration> {
        let (Some(now), Some(grouping)) = (more, self.grouping) else {
            self.cut(out);
            return None;
        };
        let mut first_due = None;
        for group in std::mem::take(&mut self.open) {
            let since = now.duration_since(group.last);
            let left = patience(&group, grouping.wait).saturating_sub(since);
            if left <= SignedDuration::ZERO || since < -CLOCK_STEP {
                out.push(group.record(false));
                continue;
            }
            let left = left.unsigned_abs();
            first_due = Some(first_due.map_or(left, |due: Duration| due.min(left)));
            self.open.push(group);
        }
        first_due
    }

    fn cut(&mut self, out: &mut Vec<IngestRecord>) {
        for group in self.open.drain(..) {
            out.push(group.record(false));
        }
    }
}

#[cfg(test)]
mod tests;
