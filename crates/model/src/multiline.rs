//! Which output lines make one event: a Python traceback (chained ones
//! too), a JVM stack trace, a Go panic with its goroutines and a Rust panic
//! with its backtrace are many lines a person reads as one. The one home of
//! those rules: a line that [`start`]s an event, and the lines an open
//! [`Event`] [`Event::accepts`] after it.
//!
//! The rules look at one line at a time and never back: the agent feeds
//! them lines of one stream as they were captured, and decides everything
//! else (time, streams, requests, size) itself. They are deliberately
//! narrow: a line joins an event only when it has the shape that kind of
//! trace gives its lines, so an ordinary line after a trace stays its own
//! record (Go's `exit status 2`, a Python program's next `print`).
//! Trailing blank lines an event took in (Python's and Go's separators,
//! in case a chained exception or another goroutine followed) are not part
//! of its text: see [`trim_event`].

use crate::record::Level;

/// The kinds of multi-line event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Traceback (most recent call last):`, frames, the exception line;
    /// chained by "During handling of the above exception…" or "The above
    /// exception was the direct cause…".
    Python,
    /// `Exception in thread "main" …` (or an exception's own line), `\tat`
    /// frames, `Caused by:`, `\t... N more`.
    Jvm,
    /// `panic:` or `fatal error:`, `goroutine N [state]:` blocks of frames
    /// separated by blank lines.
    Go,
    /// `thread '…' panicked at …` (`thread '…' (tid) panicked at …` since Rust
    /// 1.91), the message, `stack backtrace:` frames,
    /// `note: run with RUST_BACKTRACE…`.
    Rust,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::Jvm => "jvm",
            Kind::Go => "go",
            Kind::Rust => "rust",
        }
    }
}

/// A Rust panic's message may run over lines; this many at most before
/// its `note:` or `stack backtrace:` (a panic after the first prints no
/// note, and must not swallow what follows it).
const RUST_MESSAGE_LINES: u32 = 32;

/// Where in its trace an open event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Python: frames (indented) until the exception line.
    PyFrames,
    /// Python: an exception group's box, all of it indented.
    PyGroup,
    /// Python: the exception line was read; a blank line may lead to a
    /// chained exception.
    PyException,
    /// Python: the blank line after an exception.
    PyBlank,
    /// Python: "During handling…" / "The above exception…".
    PyChain,
    /// Python: the blank line before the chained traceback.
    PyChainBlank,
    /// JVM: frames, causes, suppressed.
    Jvm,
    /// Go: the trace's lines, blank lines between goroutines.
    Go,
    /// Rust: the panic's message lines so far.
    RustMessage(u32),
    /// Rust: `stack backtrace:` frames.
    RustBacktrace,
    /// Rust: the closing note was read; nothing more belongs.
    Closed,
}

/// An event that has started and may take more lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    kind: Kind,
    state: State,
}

/// The event `line` starts, if it is the first line of one.
pub fn start(line: &str) -> Option<Event> {
    let (kind, state) = if is_python_start(line) {
        let boxed = line.starts_with(' ');
        (
            Kind::Python,
            if boxed {
                State::PyGroup
            } else {
                State::PyFrames
            },
        )
    } else if line.starts_with("Exception in thread \"") || is_jvm_throwable(line) {
        (Kind::Jvm, State::Jvm)
    } else if line.starts_with("panic: ") || line.starts_with("fatal error: ") {
        (Kind::Go, State::Go)
    } else if line.starts_with("thread '") && line.contains(" panicked at ") {
        // `thread 'main' panicked at`, since Rust 1.91 `thread 'main' (42)
        // panicked at`.
        (Kind::Rust, State::RustMessage(0))
    } else {
        return None;
    };
    Some(Event { kind, state })
}

impl Event {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The level of the event's record: an uncaught traceback or a panic
    /// is an error.
    pub fn level(&self) -> Level {
        Level::Error
    }

    /// Whether the event is surely not over: a Python traceback before its
    /// exception line or after a chaining line, a Rust panic before its
    /// closing note (printing a backtrace, symbols are looked up: that can
    /// take a while). Its next line is worth waiting for longer.
    pub fn expects_more(&self) -> bool {
        matches!(
            self.state,
            State::PyFrames
                | State::PyChain
                | State::PyChainBlank
                | State::RustMessage(_)
                | State::RustBacktrace
        )
    }

    /// Whether nothing more can belong to the event (a Rust panic's closing
    /// note was read): no need to wait for a next line.
    pub fn is_over(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether `line`, the next line of the event's stream, belongs to it;
    /// if it does, the event moves on past it.
    pub fn accepts(&mut self, line: &str) -> bool {
        let next = match self.state {
            State::PyFrames => python_frames(line),
            State::PyGroup => {
                (line.starts_with([' ', '\t']) && !line.trim().is_empty()).then_some(State::PyGroup)
            }
            State::PyException => line.trim().is_empty().then_some(State::PyBlank),
            State::PyBlank => is_python_chain(line).then_some(State::PyChain),
            State::PyChain => line.trim().is_empty().then_some(State::PyChainBlank),
            State::PyChainBlank => is_python_start(line).then_some(State::PyFrames),
            State::Jvm => is_jvm_continuation(line).then_some(State::Jvm),
            State::Go => is_go_continuation(line).then_some(State::Go),
            State::RustMessage(lines) => rust_message(line, lines),
            State::RustBacktrace => rust_backtrace(line),
            State::Closed => None,
        };
        match next {
            Some(state) => {
                self.state = state;
                true
            }
            None => false,
        }
    }
}

/// An event's text without the blank lines it took in at its end.
pub fn trim_event(text: &str) -> &str {
    let mut end = text.len();
    while let Some(at) = text[..end].rfind('\n') {
        if !text[at + 1..end].trim().is_empty() {
            break;
        }
        end = at;
    }
    &text[..end]
}

fn is_python_start(line: &str) -> bool {
    let line = line.trim_start_matches([' ', '+', '|']);
    line.starts_with("Traceback (most recent call last):")
        || line.starts_with("Exception Group Traceback (most recent call last):")
}

fn is_python_chain(line: &str) -> bool {
    line.starts_with("During handling of the above exception, another exception occurred:")
        || line.starts_with("The above exception was the direct cause of the following exception:")
}

/// Frames are indented (exception groups draw `|` and `+` indented too);
/// the first line that is not is the exception (`ValueError: …`).
fn python_frames(line: &str) -> Option<State> {
    if line.starts_with([' ', '\t']) {
        return (!line.trim().is_empty()).then_some(State::PyFrames);
    }
    (!line.is_empty()).then_some(State::PyException)
}

/// `java.lang.IllegalStateException: boom` or `com.x.MyError`: a dotted
/// class name whose last part names a throwable, then `:` or nothing.
fn is_jvm_throwable(line: &str) -> bool {
    let name = line.split(':').next().unwrap_or("");
    let Some((package, class)) = name.rsplit_once('.') else {
        return false;
    };
    !package.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'$')
        && (class.ends_with("Exception") || class.ends_with("Error") || class == "Throwable")
}

fn is_jvm_continuation(line: &str) -> bool {
    if line.starts_with("Caused by: ") {
        return true;
    }
    let inner = line.trim_start();
    if inner.len() == line.len() {
        return false;
    }
    inner.starts_with("at ")
        || inner.starts_with("... ")
        || inner.starts_with("Caused by: ")
        || inner.starts_with("Suppressed: ")
}

/// A Go trace's lines: blank lines between goroutines, `goroutine N
/// [state]:`, `[signal …]`, `runtime stack:`, a function (`main.main()`,
/// `panic({0x4b…})`), its file (tab-indented), `created by …`. Nothing else:
/// `exit status 2` (from `go run`) is not the program's.
fn is_go_continuation(line: &str) -> bool {
    if line.is_empty() || line.starts_with('\t') {
        return true;
    }
    if line.starts_with("goroutine ") && line.ends_with(':') {
        return true;
    }
    if line.starts_with('[') && (line.ends_with(']') || line.ends_with("]:")) {
        return true;
    }
    if ["runtime stack:", "created by ", "panic: ", "fatal error: "]
        .iter()
        .any(|prefix| line.starts_with(prefix))
        || line == "...additional frames elided..."
    {
        return true;
    }
    // A function: a name without spaces, then its arguments.
    match line.split_once('(') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.contains(char::is_whitespace)
                && (line.ends_with(')') || line.ends_with("...)"))
        }
        None => false,
    }
}

fn rust_message(line: &str, lines: u32) -> Option<State> {
    if line.starts_with("stack backtrace:") {
        Some(State::RustBacktrace)
    } else if line.starts_with("note: ") {
        Some(State::Closed)
    } else if lines < RUST_MESSAGE_LINES {
        Some(State::RustMessage(lines + 1))
    } else {
        None
    }
}

fn rust_backtrace(line: &str) -> Option<State> {
    if line.starts_with("note: ") {
        Some(State::Closed)
    } else if line.starts_with([' ', '\t']) && !line.trim().is_empty() {
        Some(State::RustBacktrace)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
