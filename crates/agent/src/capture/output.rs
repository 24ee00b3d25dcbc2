//! Where the worker writes and how the agent reads it: pipes raised to
//! [`PIPE_BUFFER_BYTES`], or a pseudo-terminal; the [`Reader`] of each, and
//! [`OutputSync`], which lets a request mark wait for the capture.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tailwater_model::Stream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::lock;

/// The pipe buffer asked for, so a worker that writes a burst is not blocked
/// while the agent is busy (Linux's default is 64 KiB). Where the kernel
/// refuses (a limit below it), the default stays, quietly.
pub const PIPE_BUFFER_BYTES: usize = 1024 * 1024;
/// The terminal size a worker sees under `--tty` when the agent itself has
/// no terminal to copy it from.
const DEFAULT_TTY_SIZE: (u16, u16) = (80, 24);

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
    /// The lines of the first `through` bytes read are recorded: request
    /// marks waiting for them may go on.
    pub(super) fn recorded(&self, through: u64) {
        self.watermark.recorded(through);
    }

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
    pub(super) async fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
