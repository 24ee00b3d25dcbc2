//! Helpers for driving the real `tailwater` binary: a server on a free
//! loopback port with its own data directory, client commands pointed at it,
//! and polling with deadlines.
//!
//! By topic: `ports.rs` (which port a program binds, and reading the one it
//! announces), `server.rs` (`TestServer` and a worker run against it),
//! `http.rs` (a raw HTTP call and an ingest body), `process.rs` (a child's
//! lines, the tools a test needs), `follower.rs` (`Follower`, `logs -f`
//! across servers), `pty.rs` (`Pty`), `relay.rs` (`Relay`)
//! and `tmpfs.rs` (`Tmpfs`, the server tests' own file, included by path);
//! what they all share is here.

use std::time::{Duration, Instant};

use serde_json::Value;

mod follower;
mod http;
mod ports;
mod process;
mod pty;
mod relay;
mod server;
#[path = "../../../../server/tests/common/tmpfs.rs"]
mod tmpfs;

pub use follower::Follower;
pub use http::{http, ingest_batch};
pub use ports::{announced_in, announced_port, port_announced_by, spare_port, ANY_PORT};
pub use process::{line_containing, lines_of, python, unshare};
pub use pty::Pty;
pub use relay::Relay;
pub use server::{run_worker, TestServer};
pub use tmpfs::{fill, Tmpfs};

pub const TOKEN: &str = "tw_e2e_test_token_0123456789";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tailwater")
}

pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a json line ({e}): {line}"))
        })
        .collect()
}

pub fn messages(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect()
}

/// Polls `condition` until it holds, or fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
