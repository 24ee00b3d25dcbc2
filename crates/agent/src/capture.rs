//! Reading the worker's output: pipes (or a pseudo-terminal), cut into
//! lines, recorded, echoed.
//!
//! - [`pipe`] and [`pty`] make what the worker writes into; pipes are raised
//!   to [`PIPE_BUFFER_BYTES`] so a burst does not block the worker while the
//!   agent is busy.
//! - [`LineSplitter`] cuts bytes into lines: long lines are split and marked
//!   `continued`; a line rewritten with carriage returns (a progress bar)
//!   keeps one state per interval and always its final state.
//! - [`OutputSync`] lets a request mark wait until everything the worker
//!   wrote before the mark has been recorded, so lines are attributed by when
//!   they were written, not by when the agent happened to read them.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tailwater_model::{Level, Stream};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::lock;
use crate::outbox::{fields, Outbox};
use crate::requests::Requests;

const READ_CHUNK: usize = 64 * 1024;
/// The pipe buffer asked for, so a worker that writes a burst is not blocked
/// while the agent is busy (Linux's default is 64 KiB). Where the kernel
/// refuses (a limit below it), the default stays, quietly.
pub const PIPE_BUFFER_BYTES: usize = 1024 * 1024;
/// The terminal size a worker sees under `--tty` when the agent itself has
/// no terminal to copy it from.
const DEFAULT_TTY_SIZE: (u16, u16) = (80, 24);

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
    pending: Vec<u8>,
    max_line_bytes: usize,
    progress_interval: Duration,
    /// The last byte seen was `\r`: the next tells a line end (`\r\n`) from
    /// a rewrite.
    carriage_return: bool,
    rewrites: Option<Rewrites>,
    collapsed: Option<Collapsed>,
}

/// One line, without its line ending; borrowed from what was read where it
/// can be, so a line costs no copy before the spool.
#[derive(Debug, PartialEq, Eq)]
pub struct Line<'a> {
    pub bytes: &'a [u8],
    /// The line goes on in the next piece (it was longer than the maximum).
    pub continued: bool,
}

/// How a kept state of a rewritten line stands for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The states this record stands for: itself and those skipped since the
    /// previous kept state.
    pub updates: u64,
    /// This is the line's final state.
    pub last: bool,
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
    pub fn new(max_line_bytes: usize, progress_interval: Duration) -> LineSplitter {
        assert!(max_line_bytes > 0);
        LineSplitter {
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
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        now: Instant,
        emit: &mut impl FnMut(Line<'_>, Option<Progress>),
    ) {
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
    pub fn flush_due(&mut self, now: Instant, emit: &mut impl FnMut(Line<'_>, Option<Progress>)) {
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
            emit(line(&state), Some(rewrites.keep(now, false)));
        }
    }

    /// The rewritten line that ended last, if some of its states were not
    /// kept; once.
    pub fn take_collapsed(&mut self) -> Option<Collapsed> {
        self.collapsed.take()
    }

    /// The stream ended: the last line, if it had no newline.
    pub fn finish(&mut self, emit: &mut impl FnMut(Line<'_>, Option<Progress>)) {
        self.carriage_return = false;
        if self.rewrites.is_some() || !self.pending.is_empty() {
            self.end_line(&[], emit);
        }
    }

    /// A `\r` that does not end the line: what came before it is one state.
    fn rewrite(&mut self, now: Instant, emit: &mut impl FnMut(Line<'_>, Option<Progress>)) {
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
            emit(line(&state), Some(rewrites.keep(now, false)));
        } else {
            rewrites.held = Some(state);
        }
    }

    /// The line ends with `tail` (what came of it in this read).
    fn end_line(&mut self, tail: &[u8], emit: &mut impl FnMut(Line<'_>, Option<Progress>)) {
        if self.rewrites.is_none() && self.pending.is_empty() && tail.len() <= self.max_line_bytes {
            // The common case: a whole line within one read, passed on as
            // it lies in the read buffer.
            emit(line(tail), None);
            return;
        }
        self.append_bounded(tail, emit);
        let Some(mut rewrites) = self.rewrites.take() else {
            emit(line(&self.pending), None);
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
            Some(state) if rewrites.states == 1 => emit(line(&state), None),
            Some(state) => {
                let progress = rewrites.keep(Instant::now(), true);
                emit(line(&state), Some(progress));
            }
            // The final state was kept already, or there was none: a blank
            // line stays a blank line.
            None if rewrites.states == 0 => emit(line(&blank), None),
            None => {}
        }
        if rewrites.states > rewrites.kept {
            self.collapsed = Some(Collapsed {
                states: rewrites.states,
                kept: rewrites.kept,
            });
        }
    }

    fn append_bounded(
        &mut self,
        mut bytes: &[u8],
        emit: &mut impl FnMut(Line<'_>, Option<Progress>),
    ) {
        while self.pending.len() + bytes.len() > self.max_line_bytes {
            let room = self.max_line_bytes - self.pending.len();
            self.pending.extend_from_slice(&bytes[..room]);
            bytes = &bytes[room..];
            emit(
                Line {
                    bytes: &self.pending,
                    continued: true,
                },
                None,
            );
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

fn line(bytes: &[u8]) -> Line<'_> {
    Line {
        bytes,
        continued: false,
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

/// Where the worker writes: the read end the agent keeps, and what the
/// worker gets.
pub struct Outputs {
    /// The agent's ends, each with the stream its lines are recorded as.
    pub readers: Vec<(OwnedFd, Stream)>,
    /// The worker's stdout and stderr.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The worker's stdout is a terminal: it must start a session and take
    /// it as its controlling terminal.
    pub tty: bool,
}

impl Outputs {
    /// Two pipes: stdout and stderr apart.
    pub fn pipes() -> io::Result<Outputs> {
        let (stdout_reader, stdout) = pipe()?;
        let (stderr_reader, stderr) = pipe()?;
        Ok(Outputs {
            readers: vec![
                (stdout_reader, Stream::Stdout),
                (stderr_reader, Stream::Stderr),
            ],
            stdout,
            stderr,
            tty: false,
        })
    }

    /// One pseudo-terminal for both: programs see a terminal and write line
    /// by line, but stdout and stderr arrive merged (recorded as stdout).
    pub fn tty() -> io::Result<Outputs> {
        let (master, slave) = pty()?;
        Ok(Outputs {
            readers: vec![(master, Stream::Stdout)],
            stdout: slave.try_clone()?,
            stderr: slave,
            tty: true,
        })
    }
}

/// A pipe, `(read end, write end)`, both close-on-exec, its buffer raised to
/// [`PIPE_BUFFER_BYTES`] where the kernel allows.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned by nothing else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a pipe we own; a refusal leaves the default size.
    unsafe {
        libc::fcntl(
            writer.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_BUFFER_BYTES as libc::c_int,
        )
    };
    Ok((reader, writer))
}

/// The buffer size of a pipe.
pub fn pipe_size(fd: &impl AsRawFd) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
    let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size as usize)
}

/// A pseudo-terminal, `(master, slave)`, both close-on-exec. Output
/// processing is off (a `\n` stays a `\n`, not `\r\n`), and the size is the
/// agent's own terminal's ([`copy_terminal_size`]), or 80×24.
pub fn pty() -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: plain libc calls on descriptors this function owns; every
    // result is checked before it is used.
    unsafe {
        let master = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(io::Error::last_os_error());
        }
        let master = OwnedFd::from_raw_fd(master);
        if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 256];
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let slave = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(slave);
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(slave.as_raw_fd(), &mut termios) == 0 {
            termios.c_oflag &= !libc::OPOST;
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios);
        }
        if !copy_terminal_size(&master) {
            let mut size: libc::winsize = std::mem::zeroed();
            size.ws_col = DEFAULT_TTY_SIZE.0;
            size.ws_row = DEFAULT_TTY_SIZE.1;
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size);
        }
        Ok((master, slave))
    }
}

/// Gives the pseudo-terminal `master` the size of the agent's own terminal
/// (its stdout's, else its stdin's); false when the agent has none. The
/// kernel then sends SIGWINCH to the worker's foreground process group, as
/// a terminal emulator's resize would.
pub fn copy_terminal_size(master: &impl AsRawFd) -> bool {
    for own in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: TIOCGWINSZ writes one winsize; TIOCSWINSZ reads one.
        unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            if libc::ioctl(own, libc::TIOCGWINSZ, &mut size) == 0
                && size.ws_col > 0
                && size.ws_row > 0
            {
                return libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) == 0;
            }
        }
    }
    false
}

/// Lets request marks wait for the capture: "every byte the worker wrote
/// before now has been read and its lines recorded".
///
/// Each stream counts the bytes read from it, under a lock that is also held
/// while reading, so `read so far + still in the pipe` (`FIONREAD`) is an
/// exact position in the stream; [`OutputSync::settle`] waits until the
/// lines up to that position are recorded.
#[derive(Default)]
pub struct OutputSync {
    streams: Mutex<Vec<Arc<Watermark>>>,
}

struct Watermark {
    read: Mutex<ReadSide>,
    /// Bytes whose lines were recorded (a line not finished yet waits in the
    /// splitter; it was not finished when the mark came).
    recorded: AtomicU64,
    changed: Notify,
}

struct ReadSide {
    total: u64,
    /// While the stream is open.
    fd: Option<RawFd>,
}

impl OutputSync {
    fn register(&self, fd: RawFd) -> Arc<Watermark> {
        let watermark = Arc::new(Watermark {
            read: Mutex::new(ReadSide {
                total: 0,
                fd: Some(fd),
            }),
            recorded: AtomicU64::new(0),
            changed: Notify::new(),
        });
        lock(&self.streams).push(watermark.clone());
        watermark
    }

    /// Waits until everything the worker wrote so far is recorded, or
    /// `timeout` (a capture held up elsewhere must not hold requests up).
    /// Returns whether it settled.
    pub async fn settle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let streams = lock(&self.streams).clone();
        for watermark in streams {
            let Some(target) = watermark.written() else {
                continue;
            };
            loop {
                let changed = watermark.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if watermark.recorded.load(Ordering::Acquire) >= target
                    || lock(&watermark.read).fd.is_none()
                {
                    break;
                }
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return false;
                }
            }
        }
        true
    }
}

impl Watermark {
    /// The stream position the worker has written up to: read, plus what
    /// waits in the pipe. `None` once the stream is closed.
    fn written(&self) -> Option<u64> {
        let side = lock(&self.read);
        let fd = side.fd?;
        let mut waiting: libc::c_int = 0;
        // SAFETY: the descriptor is open while `fd` is set (it is cleared,
        // under this lock, before the descriptor closes); FIONREAD writes
        // one int.
        if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut waiting) } != 0 {
            waiting = 0;
        }
        Some(side.total + waiting.max(0) as u64)
    }

    fn recorded(&self, through: u64) {
        self.recorded.store(through, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// The agent's end of one output, readable without blocking a thread.
pub struct Reader {
    fd: AsyncFd<OwnedFd>,
    watermark: Arc<Watermark>,
    /// A pseudo-terminal's master: EIO means the worker's side is closed.
    tty: bool,
}

impl Reader {
    pub fn new(fd: OwnedFd, tty: bool, sync: &OutputSync) -> io::Result<Reader> {
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let watermark = sync.register(fd.as_raw_fd());
        // SAFETY: the reader owns the descriptor for as long as the AsyncFd
        // lives, and it stays the same open pipe or terminal.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Reader { fd, watermark, tty })
    }

    /// Reads what is there; 0 at the end. Cancel-safe: bytes are counted in
    /// the same step that reads them.
    async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            let result = ready.try_io(|fd| {
                let mut side = lock(&self.watermark.read);
                // SAFETY: reads at most `buffer.len()` bytes into `buffer`.
                let read = unsafe {
                    libc::read(
                        fd.as_fd().as_raw_fd(),
                        buffer.as_mut_ptr().cast(),
                        buffer.len(),
                    )
                };
                if read < 0 {
                    return Err(io::Error::last_os_error());
                }
                side.total += read as u64;
                Ok(read as usize)
            });
            match result {
                Ok(Err(error)) if self.tty && error.raw_os_error() == Some(libc::EIO) => {
                    return Ok(0)
                }
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Before the descriptor closes (and its number can be reused).
        lock(&self.watermark.read).fd = None;
        self.watermark.changed.notify_waiters();
    }
}

/// How lines are cut.
#[derive(Clone, Copy, Debug)]
pub struct Cutting {
    pub max_line_bytes: usize,
    pub progress_interval: Duration,
}

/// Reads `reader` to its end: records each line (attributed to the one
/// request in flight, if exactly one is), then echoes to `echo` (if any).
pub async fn capture(
    reader: Reader,
    stream: Stream,
    mut echo: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    outbox: &Outbox,
    requests: &Requests,
    cutting: Cutting,
) {
    let mut splitter = LineSplitter::new(cutting.max_line_bytes, cutting.progress_interval);
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut consumed = 0u64;
    let mut record = |line: Line<'_>, progress: Option<Progress>| {
        let in_request = requests.sole_in_flight();
        outbox.record_line(stream, line, in_request.as_deref(), progress);
    };
    loop {
        let read = if splitter.holds_progress() {
            match tokio::time::timeout(cutting.progress_interval, reader.read(&mut chunk)).await {
                Ok(read) => read,
                Err(_) => {
                    splitter.flush_due(Instant::now(), &mut record);
                    continue;
                }
            }
        } else {
            reader.read(&mut chunk).await
        };
        let read = match read {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                outbox.system_warning(format!(
                    "stopped reading the worker's {}: {error}",
                    stream.as_str()
                ));
                break;
            }
        };
        splitter.push(&chunk[..read], Instant::now(), &mut record);
        if let Some(collapsed) = splitter.take_collapsed() {
            report_collapsed(outbox, stream, collapsed, cutting.progress_interval);
        }
        consumed += read as u64;
        reader.watermark.recorded(consumed);
        if let Some(out) = echo.as_mut() {
            // The agent's own output going away must not stop the capture.
            if out.write_all(&chunk[..read]).await.is_err() || out.flush().await.is_err() {
                echo = None;
            }
        }
    }
    splitter.finish(&mut record);
    if let Some(collapsed) = splitter.take_collapsed() {
        report_collapsed(outbox, stream, collapsed, cutting.progress_interval);
    }
}

/// Says how many states of a progress line were not kept: nothing is
/// dropped silently.
fn report_collapsed(outbox: &Outbox, stream: Stream, collapsed: Collapsed, interval: Duration) {
    outbox.system(
        Level::Debug,
        format!(
            "a progress line on {} was drawn {} times; kept {} (its final state and at most one per {}, --progress-interval)",
            stream.as_str(),
            collapsed.states,
            collapsed.kept,
            crate::format_duration(interval),
        ),
        fields(json!({
            "event": "progress_collapsed",
            "output": stream.as_str(),
            "states": collapsed.states,
            "kept": collapsed.kept,
            "interval_ms": interval.as_millis() as u64,
        })),
    );
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
        let mut splitter = LineSplitter::new(max, interval);
        let mut lines = Vec::new();
        let mut collapsed = Vec::new();
        let mut emit = |line: Line<'_>, progress| {
            lines.push((
                String::from_utf8(line.bytes.to_vec()).unwrap(),
                line.continued,
                progress,
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
        let mut splitter = LineSplitter::new(1024, SECOND);
        let mut lines = Vec::new();
        let mut emit = |line: Line<'_>, progress: Option<Progress>| {
            lines.push((
                String::from_utf8(line.bytes.to_vec()).unwrap(),
                progress.map(|p| p.updates),
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

    #[test]
    fn pipes_are_raised_where_the_kernel_allows() {
        let (reader, _writer) = pipe().unwrap();
        let limit = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|text| text.trim().parse::<usize>().ok())
            .unwrap_or(PIPE_BUFFER_BYTES);
        let size = pipe_size(&reader).unwrap();
        // Root may go past the system limit; anyone may reach it.
        assert!(size >= PIPE_BUFFER_BYTES.min(limit), "pipe buffer {size}");
    }

    #[tokio::test]
    async fn settle_waits_until_written_bytes_are_recorded() {
        let sync = OutputSync::default();
        let (reader, writer) = pipe().unwrap();
        let reader = Reader::new(reader, false, &sync).unwrap();
        // Nothing written: settled at once.
        assert!(sync.settle(Duration::from_millis(10)).await);

        nix_write(&writer, b"one\n");
        assert!(
            !sync.settle(Duration::from_millis(50)).await,
            "read nothing yet: not settled"
        );
        let mut buffer = [0u8; 64];
        let read = reader.read(&mut buffer).await.unwrap();
        assert_eq!(read, 4);
        assert!(
            !sync.settle(Duration::from_millis(50)).await,
            "read, not recorded"
        );
        reader.watermark.recorded(4);
        assert!(sync.settle(Duration::from_millis(10)).await);

        // A closed stream does not hold anyone.
        nix_write(&writer, b"two\n");
        drop(reader);
        assert!(sync.settle(Duration::from_millis(10)).await);
    }

    fn nix_write(fd: &OwnedFd, bytes: &[u8]) {
        // SAFETY: writes `bytes` to a pipe we own.
        let written = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
        assert_eq!(written, bytes.len() as isize);
    }
}
