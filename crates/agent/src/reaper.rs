//! Reaping every child, the worker's status kept apart.
//!
//! As PID 1 in a container, or as a child subreaper otherwise
//! (`PR_SET_CHILD_SUBREAPER`), the agent inherits every process the worker
//! leaves behind, and must wait for each one when it exits or it stays a
//! zombie. It does so the way init systems do: on every `SIGCHLD` (and
//! every [`SWEEP_INTERVAL`], in case signals merged), `waitpid(-1, WNOHANG)`
//! until nothing is left to reap. A reaped pid the agent spawned (the
//! worker) hands its status to whoever waits for it; any other is an orphan,
//! counted.
//!
//! The worker's status cannot be stolen by this loop, because this loop is
//! the only waiter: the agent starts its children only through
//! [`Reaper::spawn`], which holds the same lock as the reaping loop from
//! before the fork until the pid is registered. Nothing else in the agent
//! may wait for a child (no `tokio::process`, no `Child::wait`).

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

use crate::lock::lock;

/// How often the agent reaps without a `SIGCHLD`.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How the agent stands toward orphans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitRole {
    /// PID 1 (of a container's PID namespace): orphans come to it anyway.
    Pid1,
    /// A child subreaper: the worker's orphans come to it.
    Subreaper,
    /// Neither (the kernel refused): orphans go to the real init.
    None,
}

impl InitRole {
    /// PID 1, or else asks the kernel to make this process a subreaper.
    pub fn take_up() -> InitRole {
        if std::process::id() == 1 {
            return InitRole::Pid1;
        }
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a process flag.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
            InitRole::Subreaper
        } else {
            InitRole::None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InitRole::Pid1 => "pid1",
            InitRole::Subreaper => "subreaper",
            InitRole::None => "none",
        }
    }
}

pub struct Reaper {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    watched: HashMap<libc::pid_t, oneshot::Sender<ExitStatus>>,
    orphans: u64,
}

impl Reaper {
    /// Starts reaping in the background, for as long as the reaper lives.
    /// Call it before starting any child, within a Tokio runtime.
    pub fn start() -> io::Result<Arc<Reaper>> {
        let mut children = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper {
            state: Mutex::new(State::default()),
        });
        let weak = Arc::downgrade(&reaper);
        tokio::spawn(async move {
            loop {
                let _ = tokio::time::timeout(SWEEP_INTERVAL, children.recv()).await;
                let Some(reaper) = weak.upgrade() else {
                    return;
                };
                reaper.reap();
            }
        });
        Ok(reaper)
    }

    /// Starts `command`; the receiver gets its exit status once it is
    /// reaped.
    pub fn spawn(
        &self,
        command: &mut std::process::Command,
    ) -> io::Result<(u32, oneshot::Receiver<ExitStatus>)> {
        // Held across the fork: the child cannot be reaped before it is
        // registered (and if exec fails, std waits for it under this lock,
        // which the reaping loop then cannot steal).
        let mut state = lock(&self.state);
        let child = command.spawn()?;
        let pid = child.id();
        let (sender, receiver) = oneshot::channel();
        state.watched.insert(pid as libc::pid_t, sender);
        // Dropping `child` neither waits nor kills.
        Ok((pid, receiver))
    }

    /// Orphans reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        lock(&self.state).orphans
    }

    /// Reaps every child that has exited.
    pub fn reap(&self) {
        let mut state = lock(&self.state);
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes the status into `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == 0 {
                return; // children left, none exited
            }
            if pid < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return; // ECHILD: no children at all
            }
            match state.watched.remove(&pid) {
                Some(waiter) => {
                    let _ = waiter.send(ExitStatus::from_raw(status));
                }
                None => state.orphans += 1,
            }
        }
    }
}
