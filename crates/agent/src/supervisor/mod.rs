//! Starting the worker, forwarding signals to it, stopping it within a
//! deadline, and reporting its end.
//!
//! The agent is fit to be a container's entrypoint: as PID 1 or as a child
//! subreaper it reaps every orphan ([`crate::reaper`]); it forwards SIGTERM,
//! SIGINT, SIGQUIT, SIGHUP, SIGUSR1 and SIGUSR2 to the worker's process
//! group; after a stop signal (TERM, INT, QUIT) the worker has
//! `stop_timeout` to exit before the group is SIGKILLed; and the agent exits
//! with the worker's code (128 + signal when it was killed). Under `--tty`,
//! a resize of the agent's terminal (SIGWINCH) resizes the worker's.
//!
//! With `--restart on-failure|always` a worker that ends is started again,
//! under the same runner, boot and sequence, after an exponential backoff
//! ([`RestartBackoff`]); a `restart` record (attempt, the previous exit, the
//! delay) comes before each new start. A stop signal ends the agent: during
//! a run it is passed on and nothing restarts; during a backoff the agent
//! ends at once, with a `restart_cancelled` record (the last worker's `exit`
//! stays the runner's end). The agent's exit code is always the last
//! worker's.
//!
//! The files: this one (the restart loop and signals), `worker` (one run),
//! `exit` (OOM kills and the exit, recorded).

mod echo;
mod exit;
mod worker;

use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tailwater_model::lifecycle::Event;

use serde_json::json;
use tailwater_model::Level;
use tokio::signal::unix::{signal, SignalKind};

use crate::capture::OutputSync;
use crate::config::{AgentConfig, RestartPolicy};
use crate::format_duration;
use crate::reaper::{InitRole, Reaper};
use crate::recorder::{fields, Recorder};
use crate::requests::Requests;
use worker::*;

/// Signals the agent passes on to the worker's process group.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
/// Forwarded signals that ask the worker to stop: they start the
/// `--stop-timeout` deadline.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];

/// The `restart_limit` record: `--restart-max` restarts were made.
fn record_restart_limit(config: &AgentConfig, recorder: &Recorder, restarts: u32) {
    recorder.system(
        Level::Error,
        format!(
            "not restarting the worker: it was restarted {restarts} times already (--restart-max {})",
            config.restart_max
        ),
        fields(json!({ "event": Event::RestartLimit, "restarts": restarts, "restart_max": config.restart_max })),
    );
}

/// The `restart` record, before the wait: which attempt, after how long,
/// and how the last run ended.
fn record_restart(
    config: &AgentConfig,
    recorder: &Recorder,
    restarts: u32,
    delay: Duration,
    run: &Run,
) {
    let of_max = match config.restart_max {
        0 => String::new(),
        max => format!(" of {max}"),
    };
    recorder.system(
        Level::Warn,
        format!(
            "restarting the worker in {} (restart {restarts}{of_max}, --restart {}): it {}",
            format_duration(delay),
            config.restart.as_str(),
            run.ending,
        ),
        fields(json!({
            "event": Event::Restart,
            "attempt": restarts,
            "restart_max": config.restart_max,
            "policy": config.restart.as_str(),
            "delay_ms": delay.as_millis() as u64,
            "previous_exit": run.exit_fields,
            "previous_run_time_ms": run.run_time.as_millis() as u64,
        })),
    );
}

/// The `restart_cancelled` record: a stop signal came during the wait. The
/// last worker's `exit` stands as the runner's end: the server keeps it
/// until a `start`, which now never comes.
fn record_restart_cancelled(recorder: &Recorder, restarts: u32, number: libc::c_int, run: &Run) {
    let name = signal_name(number);
    recorder.system(
        Level::Info,
        format!(
            "received {name} while waiting to restart the worker: not restarting; the runner ends as its last worker did ({})",
            run.ending
        ),
        fields(json!({
            "event": Event::RestartCancelled,
            "attempt": restarts,
            "stop_signal": number,
            "stop_signal_name": name,
            "previous_exit": run.exit_fields,
        })),
    );
}

/// What the supervisor shares with the rest of the agent.
pub struct Shared<'a> {
    pub recorder: &'a Arc<Recorder>,
    pub requests: &'a Arc<Requests>,
    pub sync: &'a Arc<OutputSync>,
    /// The control socket, given to the worker as `TAILWATER_CONTROL`.
    pub control_socket: Option<&'a Path>,
}

/// Runs the worker to its end (and again, as `--restart` says), capturing
/// its output into the recorder. Returns the exit code for the agent: the
/// last worker's, or 128 + its fatal signal.
pub async fn supervise(config: &AgentConfig, shared: Shared<'_>) -> i32 {
    let recorder = shared.recorder;
    if config.command.is_empty() {
        recorder.system(Level::Error, "no command to run".into(), Default::default());
        return 127;
    }

    let role = InitRole::take_up();
    let reaper = match Reaper::start() {
        Ok(reaper) => reaper,
        Err(error) => {
            let message = format!("cannot watch for exited children: {error}");
            return spawn_failed(config, recorder, message, &error, 1);
        }
    };
    // Listening before the worker starts: a stop requested while it starts
    // is passed on, not lost.
    let mut signals = match Signals::listen() {
        Ok(signals) => signals,
        Err(error) => {
            let message = format!("cannot listen for signals: {error}");
            return spawn_failed(config, recorder, message, &error, 1);
        }
    };

    let backoff = config.restart_backoff;
    let mut delay = backoff.first;
    let mut restarts: u32 = 0;
    let mut oom_unavailable_said = false;
    loop {
        let run = run_once(
            config,
            &shared,
            &role,
            &reaper,
            &mut signals,
            &mut oom_unavailable_said,
        )
        .await;
        let failed = run.code != 0;
        let wanted = match config.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Always => true,
        };
        if !wanted || run.stop_requested {
            return run.code;
        }
        if config.restart_max != 0 && restarts >= config.restart_max {
            record_restart_limit(config, recorder, restarts);
            return run.code;
        }
        if run.run_time >= backoff.reset_after {
            delay = backoff.first;
        }
        restarts += 1;
        record_restart(config, recorder, restarts, delay, &run);
        if let Some(number) = signals.stop_within(delay).await {
            record_restart_cancelled(recorder, restarts, number, &run);
            return run.code;
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// The forwarded signals, listened for.
struct Signals {
    receiver: tokio::sync::mpsc::UnboundedReceiver<libc::c_int>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

impl Signals {
    fn listen() -> std::io::Result<Signals> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut listeners = Vec::new();
        for number in FORWARDED {
            let mut listener = signal(SignalKind::from_raw(number))?;
            let sender = sender.clone();
            listeners.push(tokio::spawn(async move {
                while listener.recv().await.is_some() {
                    if sender.send(number).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(Signals {
            receiver,
            listeners,
        })
    }
}

impl Signals {
    /// Waits `delay` (no worker to pass signals to); returns the stop
    /// signal that came meanwhile, if one did. Other signals are dropped:
    /// they were meant for a worker that is not there.
    async fn stop_within(&mut self, delay: Duration) -> Option<libc::c_int> {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                Some(number) = self.receiver.recv() => {
                    if STOP_SIGNALS.contains(&number) {
                        return Some(number);
                    }
                }
            }
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for listener in &self.listeners {
            listener.abort();
        }
    }
}

/// Waits for the worker's exit, passing signals on to its process group; a
/// stop signal starts the deadline after which the group is SIGKILLed.
/// Returns the exit status, and whether a stop signal came.
async fn wait_forwarding_signals(
    mut exited: tokio::sync::oneshot::Receiver<ExitStatus>,
    pid: u32,
    signals: &mut Signals,
    stop_timeout: Duration,
    recorder: &Recorder,
) -> (Option<ExitStatus>, bool) {
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut stop_requested = false;
    let far_future = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    loop {
        tokio::select! {
            status = &mut exited => return (status.ok(), stop_requested),
            Some(number) = signals.receiver.recv() => {
                signal_worker(pid, number);
                if STOP_SIGNALS.contains(&number) && !stop_requested {
                    stop_requested = true;
                    stop_deadline = Some(tokio::time::Instant::now() + stop_timeout);
                    let name = signal_name(number);
                    recorder.system(
                        Level::Info,
                        format!(
                            "received {name}, passed it on: the worker has {} to exit (--stop-timeout)",
                            format_duration(stop_timeout)
                        ),
                        fields(json!({
                            "event": Event::Stop,
                            "signal": number,
                            "signal_name": name,
                            "stop_timeout_ms": stop_timeout.as_millis() as u64,
                        })),
                    );
                }
            }
            _ = tokio::time::sleep_until(stop_deadline.unwrap_or(far_future)), if stop_deadline.is_some() => {
                signal_worker(pid, libc::SIGKILL);
                recorder.system(
                    Level::Warn,
                    format!(
                        "the worker did not exit within {} of being asked to stop (--stop-timeout): sent SIGKILL",
                        format_duration(stop_timeout)
                    ),
                    fields(json!({ "event": Event::StopTimeout, "stop_timeout_ms": stop_timeout.as_millis() as u64 })),
                );
                stop_deadline = None;
            }
        }
    }
}

/// Signals the worker's process group; the worker alone if the group is
/// gone (a worker that moved itself to a group or session of its own).
fn signal_worker(pid: u32, number: libc::c_int) {
    let pid = pid as libc::pid_t;
    // SAFETY: kill(2) has no memory effects; a negative pid is the process
    // group the worker leads.
    let sent = unsafe { libc::kill(-pid, number) };
    if sent != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, number) };
    }
}

pub fn signal_name(number: i32) -> &'static str {
    match number {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => "unknown signal",
    }
}
