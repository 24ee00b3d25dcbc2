//! Cutting bytes into lines: long lines split and marked `continued`, a
//! line rewritten with `\r` (a progress bar) kept once per interval and in
//! its final state.

use std::time::{Duration, Instant};

use tailwater_model::Stream;

use crate::line::{Line, Progress};

/// Cuts a byte stream into lines. A line longer than `max_line_bytes` is cut
/// into pieces of that size, each marked as continued but the last.
///
/// A carriage return that does not end the line (`\r` not followed by `\n`)
/// rewrites it, as a terminal would: progress bars (tqdm, pip, curl) draw
/// every update this way. Each complete state of such a line is a candidate;
/// one is kept per `progress_interval` (the first at once), a state that
/// waited is kept when the interval has passed ([`LineSplitter::flush_due`]),
/// and the final state is always kept. Blank states (a bar clearing itself)
/// are not states. With an interval of zero every state is kept.
pub struct LineSplitter {
    /// The stream the lines are of.
    stream: Stream,
    pending: Vec<u8>,
    max_line_bytes: usize,
    progress_interval: Duration,
    /// The last byte seen was `\r`: the next tells a line end (`\r\n`) from
    /// a rewrite.
    carriage_return: bool,
    rewrites: Option<Rewrites>,
    collapsed: Option<Collapsed>,
}

/// A rewritten line that ended, with some of its states not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collapsed {
    pub states: u64,
    pub kept: u64,
}

/// The line being rewritten with `\r`.
#[derive(Default)]
struct Rewrites {
    /// The latest complete state, not kept yet.
    held: Option<Vec<u8>>,
    last_kept: Option<Instant>,
    /// States since the last kept one (the held one included).
    since_kept: u64,
    states: u64,
    kept: u64,
}

impl LineSplitter {
    pub fn new(stream: Stream, max_line_bytes: usize, progress_interval: Duration) -> LineSplitter {
        assert!(max_line_bytes > 0);
        LineSplitter {
            stream,
            pending: Vec::new(),
            max_line_bytes,
            progress_interval,
            carriage_return: false,
            rewrites: None,
            collapsed: None,
        }
    }

    /// Feeds bytes read at `now`; calls `emit` for every line (or kept
    /// progress state) they complete.
    pub fn push(&mut self, mut bytes: &[u8], now: Instant, emit: &mut impl FnMut(Line<'_>)) {
        while !bytes.is_empty() {
            if std::mem::take(&mut self.carriage_return) {
                if bytes[0] == b'\n' {
                    self.end_line(&[], emit);
                    bytes = &bytes[1..];
                    continue;
                }
                self.rewrite(now, emit);
            }
            match memchr::memchr2(b'\n', b'\r', bytes) {
                Some(end) => {
                    if bytes[end] == b'\n' {
                        self.end_line(&bytes[..end], emit);
                    } else {
                        self.append_bounded(&bytes[..end], emit);
                        self.carriage_return = true;
                    }
                    bytes = &bytes[end + 1..];
                }
                None => {
                    self.append_bounded(bytes, emit);
                    bytes = &[];
                }
            }
        }
    }

    /// A progress state is waiting for its interval to pass.
    pub fn holds_progress(&self) -> bool {
        self.rewrites
            .as_ref()
            .is_some_and(|rewrites| rewrites.held.is_some() || self.carriage_return)
    }

    /// Keeps the waiting progress state if its interval has passed, so a bar
    /// that stalls still shows where it stalled.
    pub fn flush_due(&mut self, now: Instant, emit: &mut impl FnMut(Line<'_>)) {
        if self.rewrites.is_none() {
            return;
        }
        // A state ended by "\r" with nothing after it yet is complete: on a
        // line being rewritten, a "\n" after it would end the line with no
        // new state.
        if std::mem::take(&mut self.carriage_return) {
            self.rewrite(now, emit);
        }
        let interval = self.progress_interval;
        let Some(rewrites) = self.rewrites.as_mut() else {
            return;
        };
        if rewrites.held.is_some() && rewrites.due(now, interval) {
            let state = rewrites.held.take().expect("a held state");
            emit(line(self.stream, &state, Some(rewrites.keep(now, false))));
        }
    }

    /// The rewritten line that ended last, if some of its states were not
    /// kept; once.
    pub fn take_collapsed(&mut self) -> Option<Collapsed> {
        self.collapsed.take()
    }

    /// The stream ended: the last line, if it had no newline.
    pub fn finish(&mut self, emit: &mut impl FnMut(Line<'_>)) {
        self.carriage_return = false;
        if self.rewrites.is_some() || !self.pending.is_empty() {
            self.end_line(&[], emit);
        }
    }

    /// A `\r` that does not end the line: what came before it is one state.
    fn rewrite(&mut self, now: Instant, emit: &mut impl FnMut(Line<'_>)) {
        let state = std::mem::take(&mut self.pending);
        let interval = self.progress_interval;
        let rewrites = self.rewrites.get_or_insert_with(Rewrites::default);
        if is_blank(&state) {
            return;
        }
        rewrites.states += 1;
        rewrites.since_kept += 1;
        if rewrites.due(now, interval) {
            rewrites.held = None;
            emit(line(self.stream, &state, Some(rewrites.keep(now, false))));
        } else {
            rewrites.held = Some(state);
        }
    }

    /// The line ends with `tail` (what came of it in this read).
    fn end_line(&mut self, tail: &[u8], emit: &mut impl FnMut(Line<'_>)) {
        if self.rewrites.is_none() && self.pending.is_empty() && tail.len() <= self.max_line_bytes {
            // The common case: a whole line within one read, passed on as
            // it lies in the read buffer.
            emit(line(self.stream, tail, None));
            return;
        }
        self.append_bounded(tail, emit);
        let Some(mut rewrites) = self.rewrites.take() else {
            emit(line(self.stream, &self.pending, None));
            self.pending.clear();
            return;
        };
        let last = std::mem::take(&mut self.pending);
        let (final_state, blank) = if is_blank(&last) {
            (rewrites.held.take(), last)
        } else {
            rewrites.states += 1;
            rewrites.since_kept += 1;
            (Some(last), Vec::new())
        };
        match final_state {
            // A line drawn once is just a line.
            Some(state) if rewrites.states == 1 => emit(line(self.stream, &state, None)),
            Some(state) => {
                let progress = rewrites.keep(Instant::now(), true);
                emit(line(self.stream, &state, Some(progress)));
            }
            // The final state was kept already, or there was none: a blank
            // line stays a blank line.
            None if rewrites.states == 0 => emit(line(self.stream, &blank, None)),
            None => {}
        }
        if rewrites.states > rewrites.kept {
            self.collapsed = Some(Collapsed {
                states: rewrites.states,
                kept: rewrites.kept,
            });
        }
    }

    fn append_bounded(&mut self, mut bytes: &[u8], emit: &mut impl FnMut(Line<'_>)) {
        while self.pending.len() + bytes.len() > self.max_line_bytes {
            let room = self.max_line_bytes - self.pending.len();
            self.pending.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            emit(Line {
                continued: true,
                ..Line::new(self.stream, &self.pending)
            });
            self.pending.clear();
        }
        self.pending.extend_from_slice(bytes);
    }
}

impl Rewrites {
    fn due(&self, now: Instant, interval: Duration) -> bool {
        self.last_kept
            .is_none_or(|kept| now.saturating_duration_since(kept) >= interval)
    }

    fn keep(&mut self, now: Instant, last: bool) -> Progress {
        let progress = Progress {
            updates: self.since_kept,
            last,
        };
        self.kept += 1;
        self.since_kept = 0;
        self.last_kept = Some(now);
        progress
    }
}

fn line(stream: Stream, bytes: &[u8], progress: Option<Progress>) -> Line<'_> {
    Line {
        progress,
        ..Line::new(stream, bytes)
    }
}

/// Whitespace and terminal control sequences only: a bar clearing itself.
fn is_blank(bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b' ' | b'\t' | 0x0b | 0x0c => at += 1,
            0x1b if bytes.get(at + 1) == Some(&b'[') => {
                // CSI: parameters, then one final byte in 0x40..=0x7e.
                at += 2;
                while at < bytes.len() && !(0x40..=0x7e).contains(&bytes[at]) {
                    at += 1;
                }
                at += 1;
            }
            0x1b => at += 2,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// `(text, continued, progress)`.
    type Emitted = (String, bool, Option<Progress>);

    /// Feeds `(milliseconds since start, bytes)` and returns what was
    /// emitted: `(text, continued, progress)`.
    fn split_timed(
        max: usize,
        interval: Duration,
        chunks: &[(u64, &[u8])],
    ) -> (Vec<Emitted>, Vec<Collapsed>) {
        let start = Instant::now();
        let mut splitter = LineSplitter::new(Stream::Stdout, max, interval);
        let mut lines = Vec::new();
        let mut collapsed = Vec::new();
        let mut emit = |line: Line<'_>| {
            lines.push((
                String::from_utf8(line.bytes.to_vec()).unwrap(),
                line.continued,
                line.progress,
            ))
        };
        for (at, chunk) in chunks {
            splitter.push(chunk, start + Duration::from_millis(*at), &mut emit);
            collapsed.extend(splitter.take_collapsed());
        }
        splitter.finish(&mut emit);
        collapsed.extend(splitter.take_collapsed());
        (lines, collapsed)
    }

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let chunks: Vec<_> = chunks.iter().map(|chunk| (0, *chunk)).collect();
        split_timed(max, SECOND, &chunks)
            .0
            .into_iter()
            .map(|(text, continued, _)| (text, continued))
            .collect()
    }

    #[test]
    fn lines_across_chunks_and_a_last_line_without_newline() {
        assert_eq!(
            split(100, &[b"hel", b"lo\nwor", b"ld\r\n\nlast"]),
            [
                ("hello".into(), false),
                ("world".into(), false),
                ("".into(), false),
                ("last".into(), false)
            ]
        );
        // CRLF split across reads is still one line ending.
        assert_eq!(
            split(100, &[b"a\r", b"\nb\r\n"]),
            [("a".into(), false), ("b".into(), false)]
        );
    }

    #[test]
    fn long_lines_are_cut_and_marked_continued() {
        assert_eq!(
            split(4, &[b"abcdefghij\nxy", b"z\n"]),
            [
                ("abcd".into(), true),
                ("efgh".into(), true),
                ("ij".into(), false),
                ("xyz".into(), false)
            ]
        );
        // Exactly the maximum is one whole line.
        assert_eq!(split(4, &[b"abcd\n"]), [("abcd".into(), false)]);
    }

    fn tqdm_frame(percent: u64) -> Vec<u8> {
        format!(
            "\r{percent:3}%|{}| {percent}/100",
            "#".repeat(percent as usize / 10)
        )
        .into_bytes()
    }

    #[test]
    fn a_progress_bar_keeps_one_state_per_interval_and_its_final_state() {
        // tqdm's shape: "\r" before every state, "\n" after the last; 101
        // states over 2.5 s, an interval of 1 s.
        let mut chunks: Vec<(u64, Vec<u8>)> = (0..=100)
            .map(|percent| (percent * 25, tqdm_frame(percent)))
            .collect();
        chunks.push((2500, b"\n".to_vec()));
        chunks.push((2500, b"next line\n".to_vec()));
        let chunks: Vec<(u64, &[u8])> = chunks.iter().map(|(at, c)| (*at, &c[..])).collect();
        let (lines, collapsed) = split_timed(1024, SECOND, &chunks);

        let kept: Vec<_> = lines
            .iter()
            .map(|(text, _, progress)| (text.split('|').next().unwrap().trim(), *progress))
            .collect();
        // A state is complete when the next begins: "0%" at 25 ms is kept at
        // once, then the first state complete 1 s after it, and so on.
        assert_eq!(
            kept,
            [
                (
                    "0%",
                    Some(Progress {
                        updates: 1,
                        last: false
                    })
                ),
                (
                    "40%",
                    Some(Progress {
                        updates: 40,
                        last: false
                    })
                ),
                (
                    "80%",
                    Some(Progress {
                        updates: 40,
                        last: false
                    })
                ),
                (
                    "100%",
                    Some(Progress {
                        updates: 20,
                        last: true
                    })
                ),
                ("next line", None),
            ]
        );
        assert_eq!(
            lines[3].0, "100%|##########| 100/100",
            "the final state, whole"
        );
        assert_eq!(
            collapsed,
            [Collapsed {
                states: 101,
                kept: 4
            }]
        );
    }

    #[test]
    fn trailing_carriage_returns_and_a_bar_that_clears_itself() {
        // pip/curl's shape: the state, then "\r"; at the end a blank state
        // clears the bar, and the line ends. The final state is the last one
        // drawn, already kept or not.
        let (lines, collapsed) = split_timed(
            1024,
            SECOND,
            &[
                (0, b"10%\r"),
                (10, b"20%\r"),
                (20, b"30%\r"),
                (30, b"        \r\n"),
            ],
        );
        let texts: Vec<_> = lines
            .iter()
            .map(|(text, _, p)| (text.as_str(), *p))
            .collect();
        assert_eq!(
            texts,
            [
                (
                    "10%",
                    Some(Progress {
                        updates: 1,
                        last: false
                    })
                ),
                (
                    "30%",
                    Some(Progress {
                        updates: 2,
                        last: true
                    })
                ),
            ]
        );
        assert_eq!(collapsed, [Collapsed { states: 3, kept: 2 }]);

        // A state kept on its interval and then cleared is not kept twice.
        let (lines, collapsed) = split_timed(
            1024,
            SECOND,
            &[(0, b"\rA"), (2000, b"\rB"), (4000, b"\r   \r\n")],
        );
        let texts: Vec<_> = lines.iter().map(|(text, _, _)| text.as_str()).collect();
        assert_eq!(texts, ["A", "B"]);
        assert!(collapsed.is_empty(), "nothing skipped: {collapsed:?}");
    }

    #[test]
    fn a_waiting_state_is_kept_when_its_interval_passes() {
        let start = Instant::now();
        let mut splitter = LineSplitter::new(Stream::Stdout, 1024, SECOND);
        let mut lines = Vec::new();
        let mut emit = |line: Line<'_>| {
            lines.push((
                String::from_utf8(line.bytes.to_vec()).unwrap(),
                line.progress.map(|p| p.updates),
            ))
        };
        splitter.push(b"\r1/3\r2/3\r3/3\r", start, &mut emit);
        assert!(splitter.holds_progress());
        splitter.flush_due(start + Duration::from_millis(500), &mut emit);
        splitter.flush_due(start + Duration::from_millis(1000), &mut emit);
        assert!(!splitter.holds_progress());
        splitter.finish(&mut emit);
        assert_eq!(lines, [("1/3".into(), Some(1)), ("3/3".into(), Some(2))]);
        assert_eq!(
            splitter.take_collapsed(),
            Some(Collapsed { states: 3, kept: 2 })
        );
    }

    #[test]
    fn a_zero_interval_keeps_every_state_and_plain_carriage_returns_stay_lines() {
        let (lines, collapsed) = split_timed(1024, Duration::ZERO, &[(0, b"a\rb\rc\n")]);
        let texts: Vec<_> = lines.iter().map(|(text, _, _)| text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        assert!(collapsed.is_empty());

        // A line drawn once (a stray leading "\r") is a plain line, and "\r"
        // alone is a blank line, as before.
        let (lines, _) = split_timed(1024, SECOND, &[(0, b"\rhello\n\r\nend")]);
        let lines: Vec<_> = lines
            .iter()
            .map(|(text, _, p)| (text.as_str(), *p))
            .collect();
        assert_eq!(lines, [("hello", None), ("", None), ("end", None)]);
    }

    #[test]
    fn blank_means_whitespace_and_terminal_control_sequences() {
        assert!(is_blank(b""));
        assert!(is_blank(b"   \t"));
        assert!(is_blank(b"\x1b[2K\x1b[A  "));
        assert!(!is_blank(b"\x1b[32m50%\x1b[0m"));
    }
}
