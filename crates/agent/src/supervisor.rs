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

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tailwater_model::{Fields, Level, Stream};
use tokio::signal::unix::{signal, SignalKind};

use crate::capture::{capture, Cutting, OutputSync, Outputs, Reader};
use crate::cgroup::{self, OomWatch};
use crate::config::{AgentConfig, RestartPolicy};
use crate::format_duration;
use crate::reaper::{InitRole, Reaper};
use crate::recorder::{fields, Recorder};
use crate::requests::Requests;

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
/// After the worker exits, how long its pipes may stay open (held by a child
/// it left behind) before the agent stops reading them.
const PIPE_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

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
            recorder.system(
                Level::Error,
                format!(
                    "not restarting the worker: it was restarted {restarts} times already (--restart-max {})",
                    config.restart_max
                ),
                fields(json!({ "event": "restart_limit", "restarts": restarts, "restart_max": config.restart_max })),
            );
            return run.code;
        }
        if run.run_time >= backoff.reset_after {
            delay = backoff.first;
        }
        restarts += 1;
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
                "event": "restart",
                "attempt": restarts,
                "restart_max": config.restart_max,
                "policy": config.restart.as_str(),
                "delay_ms": delay.as_millis() as u64,
                "previous_exit": run.exit_fields,
                "previous_run_time_ms": run.run_time.as_millis() as u64,
            })),
        );
        if let Some(number) = signals.stop_within(delay).await {
            // The last worker's `exit` stands as the runner's end: the
            // server keeps it until a `start`, which now never comes.
            let name = signal_name(number);
            recorder.system(
                Level::Info,
                format!(
                    "received {name} while waiting to restart the worker: not restarting; the runner ends as its last worker did ({})",
                    run.ending
                ),
                fields(json!({
                    "event": "restart_cancelled",
                    "attempt": restarts,
                    "stop_signal": number,
                    "stop_signal_name": name,
                    "previous_exit": run.exit_fields,
                })),
            );
            return run.code;
        }
        delay = (delay * 2).min(backoff.max);
    }
}

/// How one run of the worker ended.
struct Run {
    /// The agent's exit code for it.
    code: i32,
    /// "exited with code 3", "was killed by SIGKILL": for messages.
    ending: String,
    /// `exit_code`, or `signal` and `signal_name`.
    exit_fields: Fields,
    run_time: Duration,
    /// A stop signal came during the run: the agent is asked to end.
    stop_requested: bool,
}

impl Run {
    fn failed_to_start(code: i32) -> Run {
        Run {
            code,
            ending: format!("failed to start (code {code})"),
            exit_fields: fields(json!({ "exit_code": code })),
            run_time: Duration::ZERO,
            stop_requested: false,
        }
    }
}

/// Records that the worker could not be started and returns `code`.
fn spawn_failed(
    config: &AgentConfig,
    recorder: &Recorder,
    message: String,
    error: &std::io::Error,
    code: i32,
) -> i32 {
    eprintln!("tailwater: {message}");
    recorder.system(
        Level::Error,
        message,
        fields(json!({ "event": "spawn_failed", "command": config.command, "error": error.to_string() })),
    );
    code
}

/// Starts the worker once and waits for its end.
async fn run_once(
    config: &AgentConfig,
    shared: &Shared<'_>,
    role: &InitRole,
    reaper: &Reaper,
    signals: &mut Signals,
    oom_unavailable_said: &mut bool,
) -> Run {
    let recorder = shared.recorder;
    let command_line = config.command.join(" ");
    let (program, arguments) = config
        .command
        .split_first()
        .expect("the command was checked to be there");
    let outputs = if config.tty {
        Outputs::tty()
    } else {
        Outputs::pipes()
    };
    let outputs = match outputs {
        Ok(outputs) => outputs,
        Err(error) => {
            let what = if config.tty {
                "a pseudo-terminal"
            } else {
                "pipes"
            };
            let message = format!("cannot open {what} for the worker's output: {error}");
            return Run::failed_to_start(spawn_failed(config, recorder, message, &error, 1));
        }
    };

    let mut command = std::process::Command::new(program);
    command
        .args(arguments)
        .stdin(Stdio::inherit())
        .stdout(Stdio::from(outputs.stdout))
        .stderr(Stdio::from(outputs.stderr))
        .env("TAILWATER_APP", &config.app)
        .env("TAILWATER_RUNNER", recorder.runner());
    if let Some(path) = shared.control_socket {
        command.env("TAILWATER_CONTROL", path);
    }
    if config.unbuffered {
        command.env("PYTHONUNBUFFERED", "1");
    }
    // SAFETY: only async-signal-safe calls between fork and exec. The
    // agent's "no huge pages" (`stay_small`) would pass over exec: the
    // worker gets the machine's policy back.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
            Ok(())
        });
    }
    if outputs.tty {
        // SAFETY: as above. A new session (so a process group of its own,
        // led by the worker) with the terminal (already its stdout) as its
        // controlling terminal.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::ioctl(libc::STDOUT_FILENO, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
    } else {
        // Its own process group, so a terminal's Ctrl-C reaches the agent,
        // which forwards it, and forwarded signals reach the whole worker.
        command.process_group(0);
    }

    let started = Instant::now();
    let spawned = reaper.spawn(&mut command);
    // The worker's ends of its outputs close with the command: the agent
    // sees the end of output once the worker (and what it left behind)
    // closed them.
    drop(command);
    let (pid, exited) = match spawned {
        Ok(spawned) => spawned,
        Err(error) => {
            let code = if error.kind() == std::io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            let message = format!("failed to start {command_line}: {error}");
            return Run::failed_to_start(spawn_failed(config, recorder, message, &error, code));
        }
    };
    shared.requests.worker_started();
    recorder.system(
        Level::Info,
        format!(
            "starting {command_line} (pid {pid}) as runner {}",
            recorder.runner()
        ),
        fields(json!({
            "event": "start",
            "command": config.command,
            "pid": pid,
            "boot": recorder.boot(),
            "runner": recorder.runner(),
            "runner_from": recorder.runner_origin().as_str(),
            "agent_version": env!("CARGO_PKG_VERSION"),
            "init": role.as_str(),
            "tty": outputs.tty,
            "control_socket": shared.control_socket.map(|path| path.display().to_string()),
        })),
    );

    // Under --tty the worker's terminal follows the agent's: a resize of
    // the agent's terminal (SIGWINCH) is passed on as one of the worker's.
    let resizes = outputs
        .tty
        .then(|| {
            outputs
                .readers
                .first()
                .and_then(|(master, _)| master.try_clone().ok())
        })
        .flatten()
        .and_then(|master| follow_resizes(master).ok());

    let cutting = Cutting {
        max_line_bytes: config.max_line_bytes,
        progress_interval: config.progress_interval,
    };
    let mut readers = Vec::new();
    for (fd, stream) in outputs.readers {
        let reader = match Reader::new(fd, outputs.tty, shared.sync) {
            Ok(reader) => reader,
            Err(error) => {
                recorder.system_warning(format!(
                    "cannot read the worker's {}: {error}",
                    stream.as_str()
                ));
                continue;
            }
        };
        let requests = shared.requests.clone();
        let echo = config.echo;
        readers.push(tokio::spawn(async move {
            let echo: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> = match (echo, stream) {
                (false, _) => None,
                (true, Stream::Stderr) => Some(Box::new(tokio::io::stderr())),
                (true, _) => Some(Box::new(tokio::io::stdout())),
            };
            capture(reader, stream, echo, &*requests, cutting).await;
        }));
    }

    let oom = watch_oom(recorder, oom_unavailable_said);

    let (status, stop_requested) =
        wait_forwarding_signals(exited, pid, signals, config.stop_timeout, recorder).await;
    let run_time = started.elapsed();

    let deadline = tokio::time::Instant::now() + PIPE_DRAIN_AFTER_EXIT;
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            abort.abort();
            recorder.system_warning(format!(
                "stopped reading output {}s after the worker exited: a process it started still holds its stdout or stderr open",
                PIPE_DRAIN_AFTER_EXIT.as_secs()
            ));
        }
    }
    if let Some(resizes) = resizes {
        resizes.abort();
    }
    let oom_kills = oom.finish(recorder);
    shared.requests.end_unfinished();
    reaper.reap();

    let Some(status) = status else {
        let error = "lost track of the worker";
        recorder.system(
            Level::Error,
            error.into(),
            fields(json!({ "event": "exit", "error": error })),
        );
        return Run {
            code: 1,
            ending: error.into(),
            exit_fields: fields(json!({ "error": error })),
            run_time,
            stop_requested,
        };
    };
    let (code, exit_fields) = report_exit(
        recorder,
        status,
        Ending {
            run_time,
            oom_kills,
            orphans_reaped: reaper.orphans_reaped(),
        },
    );
    let ending = match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!(
            "was killed by {}",
            signal_name(status.signal().unwrap_or_default())
        ),
    };
    Run {
        code,
        ending,
        exit_fields,
        run_time,
        stop_requested,
    }
}

/// On each SIGWINCH, gives the worker's pseudo-terminal the agent's
/// terminal size.
fn follow_resizes(master: std::os::fd::OwnedFd) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut resized = signal(SignalKind::window_change())?;
    Ok(tokio::spawn(async move {
        while resized.recv().await.is_some() {
            crate::capture::copy_terminal_size(&master);
        }
    }))
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
                            "event": "stop",
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
                    fields(json!({ "event": "stop_timeout", "stop_timeout_ms": stop_timeout.as_millis() as u64 })),
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

/// Reads the OOM kill count now, every [`cgroup::CHECK_INTERVAL`], and at
/// the end; says once if it cannot.
struct OomWatcher {
    watch: Option<Arc<Mutex<OomWatch>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `unavailable_said`: whether the agent already said it cannot count OOM
/// kills (once is enough, whatever the restarts).
fn watch_oom(recorder: &Arc<Recorder>, unavailable_said: &mut bool) -> OomWatcher {
    let watch = match cgroup::find().and_then(OomWatch::start) {
        Ok(watch) => Arc::new(Mutex::new(watch)),
        Err(reason) => {
            if !std::mem::replace(unavailable_said, true) {
                let (message, extra) = cgroup::unavailable_record(&reason);
                recorder.system(Level::Info, message, extra);
            }
            return OomWatcher {
                watch: None,
                task: None,
            };
        }
    };
    let task = {
        let (watch, recorder) = (watch.clone(), recorder.clone());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(cgroup::CHECK_INTERVAL);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                check_oom(&watch, &recorder);
            }
        })
    };
    OomWatcher {
        watch: Some(watch),
        task: Some(task),
    }
}

fn check_oom(watch: &Mutex<OomWatch>, recorder: &Recorder) {
    let mut watch = watch.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((before, after)) = watch.check() {
        let (message, extra) = cgroup::oom_kill_record(watch.cgroup(), before, after);
        recorder.system(Level::Error, message, extra);
    }
}

impl OomWatcher {
    /// The last check; OOM kills since the worker started, if they can be
    /// counted.
    fn finish(self, recorder: &Recorder) -> Option<u64> {
        if let Some(task) = self.task {
            task.abort();
        }
        let watch = self.watch?;
        check_oom(&watch, recorder);
        let total = watch.lock().unwrap_or_else(|e| e.into_inner()).total();
        Some(total)
    }
}

/// What else is known about the worker's end.
struct Ending {
    run_time: Duration,
    /// `None` where OOM kills cannot be counted.
    oom_kills: Option<u64>,
    orphans_reaped: u64,
}

/// Records the exit; returns the agent's exit code and the exit as fields
/// (`exit_code`, or `signal` and `signal_name`).
fn report_exit(recorder: &Recorder, status: ExitStatus, ending: Ending) -> (i32, Fields) {
    let took = format_duration(ending.run_time);
    let mut extra = fields(json!({
        "event": "exit",
        "run_time_ms": ending.run_time.as_millis() as u64,
        "orphans_reaped": ending.orphans_reaped,
    }));
    if let Some(kills) = ending.oom_kills {
        extra.insert("oom_kills".into(), kills.into());
    }
    if let Some(code) = status.code() {
        let level = if code == 0 { Level::Info } else { Level::Error };
        extra.insert("exit_code".into(), code.into());
        recorder.system(
            level,
            format!("exited with code {code} after {took}"),
            extra,
        );
        return (code, fields(json!({ "exit_code": code })));
    }
    let number = status.signal().unwrap_or_default();
    let name = signal_name(number);
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    let oom_killed = number == libc::SIGKILL && ending.oom_kills.unwrap_or(0) > 0;
    let cause = if oom_killed {
        ": out of memory (the kernel's OOM killer)"
    } else {
        ""
    };
    extra.insert("signal".into(), number.into());
    extra.insert("signal_name".into(), name.into());
    extra.insert("core_dumped".into(), status.core_dumped().into());
    extra.insert("oom_killed".into(), oom_killed.into());
    recorder.system(
        Level::Error,
        format!("killed by signal {number} ({name}){core} after {took}{cause}"),
        extra,
    );
    let exit = fields(json!({ "signal": number, "signal_name": name, "oom_killed": oom_killed }));
    (128 + number, exit)
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
