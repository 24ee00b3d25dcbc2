//! Loopback HTTP for the server figures: a small blocking HTTP/1.1 client
//! (keep-alive, `Content-Length` and chunked bodies, a server-sent events
//! stream), the baseline sink (an axum handler that reads and discards each
//! body), and the child processes that serve (the `tailwater server` binary
//! or the sink), with their CPU time and peak memory read from `/proc`.
//!
//! The client is the same for the server and the sink, so the difference
//! between them is what the server does with a body, not how it was sent.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};

/// The largest body the sink reads, as the server's default
/// `--max-batch-bytes`.
const SINK_MAX_BODY: usize = 8 * 1024 * 1024;

/// One kept-alive HTTP/1.1 connection.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    token: String,
}

/// A response's status and whole body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Head {
    status: u16,
    length: Option<usize>,
    chunked: bool,
}

impl Connection {
    pub fn open(addr: SocketAddr, token: &str) -> anyhow::Result<Connection> {
        let stream =
            TcpStream::connect(addr).with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone()?),
            writer: stream,
            token: token.to_owned(),
        })
    }

    /// A second handle on the socket, to shut it down from another thread.
    pub fn socket(&self) -> io::Result<TcpStream> {
        self.writer.try_clone()
    }

    fn send_head(
        &mut self,
        method: &str,
        path: &str,
        (content_type, body): (&str, &[u8]),
        extra: &str,
    ) -> io::Result<()> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n{extra}",
            self.token
        )
        .into_bytes();
        if method == "POST" {
            request.extend_from_slice(
                format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        request.extend_from_slice(b"\r\n");
        // One write for a small request; headers then body for a large one
        // (TCP_NODELAY is set, so the body is not held back).
        if body.len() < 64 * 1024 {
            request.extend_from_slice(body);
            self.writer.write_all(&request)
        } else {
            self.writer.write_all(&request)?;
            self.writer.write_all(body)
        }
    }

    /// Sends a request (a JSON body, if any) and reads the whole response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Response> {
        self.request_typed(method, path, ("application/json", body))
    }

    /// [`Connection::request`] with a body of another content type.
    pub fn request_typed(
        &mut self,
        method: &str,
        path: &str,
        body: (&str, &[u8]),
    ) -> anyhow::Result<Response> {
        self.send_head(method, path, body, "")?;
        let head = read_head(&mut self.reader)?;
        let mut body = Vec::new();
        if head.status == 204 || head.status == 304 {
            // No body, and no length to say so.
        } else if head.chunked {
            Chunked::new(&mut self.reader).read_to_end(&mut body)?;
        } else {
            let length = head
                .length
                .ok_or_else(|| anyhow!("a response without Content-Length or chunks"))?;
            body.resize(length, 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok(Response {
            status: head.status,
            body,
        })
    }

    /// Opens a server-sent events stream: its decoded body, read as lines.
    pub fn events(mut self, path: &str) -> anyhow::Result<impl BufRead> {
        self.send_head("GET", path, ("", b""), "Accept: text/event-stream\r\n")?;
        let head = read_head(&mut self.reader)?;
        ensure!(
            head.status == 200,
            "GET {path} answered {}, not 200",
            head.status
        );
        ensure!(head.chunked, "GET {path} answered without chunks");
        Ok(BufReader::new(Chunked::new(self.reader)))
    }
}

fn read_head(reader: &mut impl BufRead) -> anyhow::Result<Head> {
    let mut line = String::new();
    ensure!(
        reader.read_line(&mut line)? > 0,
        "the connection closed before a response"
    );
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line: {line:?}"))?;
    let mut head = Head {
        status,
        length: None,
        chunked: false,
    };
    loop {
        line.clear();
        ensure!(
            reader.read_line(&mut line)? > 0,
            "the connection closed inside a response's headers"
        );
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            head.length = value.parse().ok();
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            head.chunked = true;
        }
    }
}

/// A chunked (`Transfer-Encoding: chunked`) body, decoded.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    started: bool,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            started: false,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            if self.started {
                // The CRLF that ends the previous chunk.
                self.line()?;
            }
            self.started = true;
            let size = self.line()?;
            let hex = size.split(';').next().unwrap_or("").trim();
            self.left = usize::from_str_radix(hex, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size {size:?}"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                // Trailers, up to the empty line.
                while !self.line()?.trim().is_empty() {}
                return Ok(0);
            }
        }
        let available = self.inner.fill_buf()?;
        if available.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = available.len().min(self.left).min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.inner.consume(n);
        self.left -= n;
        Ok(n)
    }
}

/// The sink's side (`tailwater-bench sink`): an axum server on a loopback
/// port that reads each `POST /v1/ingest` body whole and discards it. It
/// prints the line the server prints (`listening on http://ADDR`), and runs
/// on the same kind of runtime as the `tailwater` binary (multi-threaded,
/// a worker per core).
pub fn sink() -> anyhow::Result<()> {
    use axum::body::Bytes;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("sink listening on http://{}", listener.local_addr()?);
        io::stdout().flush()?;
        let app = axum::Router::new()
            .route(
                "/v1/ingest",
                post(|body: Bytes| async move {
                    drop(body);
                    (
                        [("content-type", "application/json")],
                        r#"{"accepted":0,"duplicates":0}"#,
                    )
                }),
            )
            .layer(DefaultBodyLimit::max(SINK_MAX_BODY));
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

/// A serving child process: the `tailwater server` binary, or the sink.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Served {
    /// Starts `command` (stderr to `log`) and waits for the line saying
    /// where it listens.
    pub fn start(mut command: Command, log: &Path, what: &str) -> anyhow::Result<Served> {
        let log_file =
            File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let addr = loop {
            line.clear();
            if stdout.read_line(&mut line)? == 0 {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} exited before listening; its log: {}", log.display());
            }
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on http://".len()..];
                let addr = rest.split_whitespace().next().unwrap_or("");
                break addr.parse::<SocketAddr>().with_context(|| {
                    format!("{what} printed an address we cannot read: {line:?}")
                })?;
            }
        };
        // Keep reading what else it prints, so it never blocks on a full pipe.
        std::thread::spawn(move || io::copy(&mut stdout, &mut io::sink()));
        Ok(Served {
            child,
            addr,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill only sends a signal to our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!(
            "the child {} did not stop within 10 s of SIGTERM; its log: {}",
            self.child.id(),
            self.log.display()
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User plus system CPU time of process `pid` so far, all its threads
/// (dead ones too): its CPU-time clock (`clock_getcpuclockid`, to the
/// nanosecond), else `/proc/<pid>/stat` (to the clock tick, 10 ms).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let mut clock: libc::clockid_t = 0;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the values we pass them.
    let read = unsafe {
        libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) == 0
            && libc::clock_gettime(clock, &mut now) == 0
    };
    if read {
        return Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32));
    }
    process_cpu_ticks(pid)
}

/// User plus system CPU time of process `pid` from `/proc/<pid>/stat`.
fn process_cpu_ticks(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    crate::measure::stat_cpu_time(&stat).ok_or_else(|| anyhow!("/proc/{pid}/stat is short"))
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes.
pub fn process_peak_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no VmHWM (has it exited?)"))
}

/// Resets process `pid`'s peak resident memory to its current resident
/// memory (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0 and later).
pub fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| {
        format!("cannot reset the peak memory of process {pid} (/proc/{pid}/clear_refs)")
    })
}

/// Shuts a socket down both ways, waking a thread blocked reading it.
pub fn shut(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        let mut reader = &wire[..];
        let mut body = String::new();
        Chunked::new(&mut reader).read_to_string(&mut body).unwrap();
        assert_eq!(body, "hello, world");
        assert_eq!(reader, b"NEXT");
    }

    #[test]
    fn heads_are_read() {
        let mut wire = &b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX: y\r\n\r\n"[..];
        let head = read_head(&mut wire).unwrap();
        assert_eq!(
            (head.status, head.length, head.chunked),
            (200, Some(12), false)
        );
        let mut wire = &b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"[..];
        let head = read_head(&mut wire).unwrap();
        assert_eq!((head.status, head.chunked), (404, true));
    }

    #[test]
    fn own_process_figures_read() {
        let pid = std::process::id();
        assert!(process_peak_rss(pid).unwrap() > 0);
        let before = process_cpu_ticks(pid).unwrap();
        let mut spin = 0u64;
        while process_cpu(pid).unwrap() < before + Duration::from_millis(30) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
    }
}
