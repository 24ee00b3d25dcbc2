//! The demo's OOM kill, made as real as the machine allows.
//!
//! The agent calls an end an OOM kill only when the kernel counted one in
//! its memory cgroup (`tailwater_agent::cgroup`). So where it can (as root,
//! with cgroup v2's memory controller or cgroup v1's memory hierarchy), the
//! demo makes a memory cgroup with a small limit and starts one runner's
//! agent in it; the worker, after CUDA's out-of-memory error, falls back to
//! host memory and grows until the kernel's OOM killer kills it, which its
//! agent records as it would anywhere (`oom_kill`, then an exit with
//! `oom_killed: true`). Where it cannot, the worker kills itself with
//! SIGKILL at that point, and the agent records only that: a SIGKILL, not
//! an OOM kill.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Set for a worker whose agent runs in the demo's memory cgroup, to its
/// limit (bytes): the worker may then really run out of host memory.
pub const MEMORY_LIMIT_ENV: &str = "TAILWATER_DEMO_MEMORY_LIMIT";

/// The memory limit of the cgroup the demo makes: room for the agent and
/// the worker as they are, little more.
pub const LIMIT_BYTES: u64 = 256 * 1024 * 1024;

/// A memory cgroup with a limit, removed (once empty) when dropped.
pub struct MemoryCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened ahead so a child can join between fork and
    /// exec without allocating.
    procs: OwnedFd,
}

impl MemoryCgroup {
    /// Makes `name` under the machine's memory cgroup root with
    /// [`LIMIT_BYTES`] (swap included where it can be limited), or says
    /// why not.
    pub fn make(name: &str) -> Result<MemoryCgroup, String> {
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_memory = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
        let (dir, limits): (PathBuf, &[&str]) = if v2_memory {
            (v2.join(name), &["memory.max", "memory.swap.max"])
        } else if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            (
                Path::new("/sys/fs/cgroup/memory").join(name),
                &["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"],
            )
        } else {
            return Err("no cgroup v2 memory controller or cgroup v1 memory hierarchy".into());
        };
        std::fs::create_dir(&dir)
            .map_err(|error| format!("cannot make {}: {error}", dir.display()))?;
        let made = |error: String| {
            let _ = std::fs::remove_dir(&dir);
            error
        };
        for (at, file) in limits.iter().enumerate() {
            // The memory limit must take; a swap limit may not exist.
            if let Err(error) = std::fs::write(dir.join(file), LIMIT_BYTES.to_string()) {
                if at == 0 {
                    return Err(made(format!("cannot limit {}: {error}", dir.display())));
                }
            }
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map_err(|error| made(format!("cannot join {}: {error}", dir.display())))?;
        Ok(MemoryCgroup {
            dir,
            procs: procs.into(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `command`'s process join this cgroup before it runs (so an
    /// agent finds its cgroup from its first instant), and tells the worker
    /// under it that it may grow until it is killed.
    pub fn contain(&self, command: &mut tokio::process::Command) {
        let fd = self.procs.as_raw_fd();
        command.env(MEMORY_LIMIT_ENV, LIMIT_BYTES.to_string());
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (getpid, write) on a stack buffer; the fd stays open as long
        // as `self`, which outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                let mut digits = [0u8; 20];
                let mut at = digits.len();
                let mut pid = libc::getpid() as u64;
                loop {
                    at -= 1;
                    digits[at] = b'0' + (pid % 10) as u8;
                    pid /= 10;
                    if pid == 0 {
                        break;
                    }
                }
                let text = &digits[at..];
                if libc::write(fd, text.as_ptr().cast(), text.len()) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Grows in host memory until the kernel's OOM killer ends this process,
/// when the demo put it in a memory cgroup ([`MEMORY_LIMIT_ENV`]); never
/// past four times that limit (a cgroup that did not take must not cost the
/// machine its memory). Otherwise, or then, it kills itself with SIGKILL.
pub fn exhaust_host_memory() {
    const CHUNK: usize = 16 * 1024 * 1024;
    let limit: Option<u64> = std::env::var(MEMORY_LIMIT_ENV)
        .ok()
        .and_then(|text| text.parse().ok());
    if let Some(limit) = limit {
        let mut held: Vec<Vec<u8>> = Vec::new();
        while (held.len() * CHUNK) as u64 <= limit.saturating_mul(4) {
            // Written, not just reserved: the pages count.
            held.push(vec![1u8; CHUNK]);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::hint::black_box(&held);
    }
    // SAFETY: kill(2) of this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
}
