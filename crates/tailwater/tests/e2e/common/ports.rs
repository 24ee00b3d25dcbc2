//! Ports: one to hand a program that must be told its port, and the one a
//! program that binds port 0 announces.

use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

/// A port for a program that must be told its port before it binds it,
/// and cannot bind port 0 and say which it got: a test worker that binds
/// `$PORT`, Firefox's Marionette. Programs that can bind port 0 do
/// ([`ANY_PORT`], [`announced_port`]); a server that comes later is
/// reached through a [`Relay`] that holds its port from the start.
///
/// It lies outside the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never
/// picks a port for a bind to port 0 or an outgoing connection, so nothing
/// on the machine that binds port 0 can take it before the program binds
/// it. Each call takes the next port from a counter for the whole process
/// (started at a place of this process's own, so test binaries running at
/// once go different ways), and skips a port something already holds.
pub fn spare_port() -> u16 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let spare = spare_ports(&range);
    assert!(
        !spare.is_empty(),
        "the kernel's ephemeral port range ({}) leaves no port above 1024 to hand to a worker: \
         narrow it (sysctl net.ipv4.ip_local_port_range=\"32768 60999\")",
        range.trim()
    );
    let start = std::process::id() as usize * 7919;
    for _ in 0..spare.len() {
        let port = spare[(start + NEXT.fetch_add(1, Ordering::Relaxed)) % spare.len()];
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "every port outside the kernel's ephemeral range ({}) is in use",
        range.trim()
    )
}

/// The ports from 1024 up that `range` (`LOW HIGH`, as the kernel writes
/// `ip_local_port_range`) leaves out.
fn spare_ports(range: &str) -> Vec<u16> {
    let mut bounds = range.split_whitespace().map(|bound| bound.parse::<u16>());
    let (Some(Ok(low)), Some(Ok(high))) = (bounds.next(), bounds.next()) else {
        panic!("cannot read the ephemeral port range from {range:?}");
    };
    (1024..=u16::MAX)
        .filter(|port| !(low..=high).contains(port))
        .collect()
}

#[test]
fn spare_ports_lie_outside_the_ephemeral_range() {
    assert_eq!(
        spare_ports("32768\t60999\n").len(),
        (32768 - 1024) + (65535 - 60999)
    );
    assert!(spare_ports("1024 65535").is_empty());
    assert_eq!(
        spare_ports("2000 65534"),
        (1024..2000).chain([65535]).collect::<Vec<_>>()
    );
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let spare = spare_ports(&range);
    let taken: Vec<u16> = (0..20).map(|_| spare_port()).collect();
    for port in &taken {
        assert!(spare.contains(port), "{port} outside {range}");
        TcpListener::bind(("127.0.0.1", *port)).expect("a spare port is free");
    }
    let mut distinct = taken.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), taken.len(), "{taken:?}");
}

/// `--listen 127.0.0.1:ANY_PORT`: the kernel picks a free port as the
/// server binds it, and the server says which ([`announced_port`]). A port
/// found free beforehand may be taken by the time the server binds it.
pub const ANY_PORT: u16 = 0;

/// The port in the first line of `output` that announces an address
/// ([`announced_in`]), within 20 s. The rest of `output` is read and dropped on a
/// thread, so the process never blocks on a full pipe.
pub fn announced_port(output: impl Read + Send + 'static) -> u16 {
    port_announced_by(output, announced_in)
}

/// As [`announced_port`], with `announced` telling which line announces
/// which port (for programs that say it their own way).
pub fn port_announced_by(
    output: impl Read + Send + 'static,
    announced: fn(&str) -> Option<u16>,
) -> u16 {
    use std::io::BufRead;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(output).lines();
        let mut sender = Some(sender);
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(port) = announced(&line) {
                if let Some(sender) = sender.take() {
                    let _ = sender.send(port);
                }
            }
        }
    });
    receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("the process announces the port it listens on within 20 s")
}

/// The port of the address `line` announces: `tailwater server listening
/// on http://HOST:PORT …`, or the `server  http://HOST:PORT` line of the
/// banners of `tailwater dev` and `tailwater demo`.
pub fn announced_in(line: &str) -> Option<u16> {
    let line = line.trim_start();
    let rest = match line.split_once("listening on ") {
        Some((_, rest)) => rest,
        None => line.strip_prefix("server ")?,
    };
    let url = rest.split_whitespace().next()?;
    let authority = url.split("://").nth(1)?;
    authority
        .split('/')
        .next()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

#[test]
fn announced_addresses_are_read() {
    assert_eq!(
        announced_in("tailwater server listening on http://127.0.0.1:43017 (data in /d)"),
        Some(43017)
    );
    assert_eq!(
        announced_in("sink listening on https://[::1]:8443"),
        Some(8443)
    );
    assert_eq!(
        announced_in("  server    http://127.0.0.1:9 (web UI: …)"),
        Some(9)
    );
    assert_eq!(announced_in("  token     tw_abc"), None);
}
