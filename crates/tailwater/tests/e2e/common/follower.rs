//! `Follower`: a real `tailwater logs -f --json` child following an app
//! across several servers, its records and its stderr read as they come.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use super::TestServer;

/// `tailwater logs -f --json --app APP --server URLS…`; killed when
/// dropped.
pub struct Follower {
    child: Child,
    messages: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    /// Follows `app` on `servers` (comma-separated, the first used first),
    /// with the token and config of `node`'s commands, and `flags`.
    pub fn start(node: &TestServer, servers: &str, app: &str, flags: &[&str]) -> Follower {
        let mut child = node
            .command(&[&["logs", "-f", "--json", "--app", app], flags].concat())
            .env("TAILWATER_SERVER", servers)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (into, stdout) = (messages.clone(), child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let record: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|error| panic!("not a json line ({error}): {line}"));
                let message = record["message"].as_str().unwrap_or_default().to_owned();
                into.lock().unwrap().push(message);
            }
        });
        let (into, from) = (stderr.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { return };
                let mut stderr = into.lock().unwrap();
                stderr.push_str(&line);
                stderr.push('\n');
            }
        });
        Follower {
            child,
            messages,
            stderr,
        }
    }

    /// The messages of the records printed so far, in order.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// How many times each message starting with `prefix` was printed.
    pub fn printed(&self, prefix: &str) -> BTreeMap<String, usize> {
        let mut times = BTreeMap::new();
        for message in self.messages() {
            if message.starts_with(prefix) {
                *times.entry(message).or_default() += 1;
            }
        }
        times
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Whether it still runs (a refusal or a bad flag ends it).
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
