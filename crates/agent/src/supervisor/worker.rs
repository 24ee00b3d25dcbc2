//! One run of the worker: its outputs opened, the command made (its own
//! process group, or a session under `--tty`), started through the reaper,
//! its output captured until it ends, and its end recorded.

use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tailwater_model::lifecycle::Event;

use serde_json::json;
use tailwater_model::{Fields, Level, Stream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use super::echo::{Echo, EchoTo};
use super::exit::{report_exit, watch_oom, Ending};
use super::{signal_name, wait_forwarding_signals, Shared, Signals};
use crate::capture::{capture, Cutting, Outputs, Reader};
use crate::config::AgentConfig;
use crate::reaper::{InitRole, Reaper};
use crate::recorder::{fields, Recorder};

/// After the worker exits, how long its pipes may stay open (held by a child
/// it left behind) before the agent stops reading them.
const PIPE_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How one run of the worker ended.
pub(super) struct Run {
    /// The agent's exit code for it.
    pub(super) code: i32,
    /// "exited with code 3", "was killed by SIGKILL": for messages.
    pub(super) ending: String,
    /// `exit_code`, or `signal` and `signal_name`.
    pub(super) exit_fields: Fields,
    pub(super) run_time: Duration,
    /// A stop signal came during the run: the agent is asked to end.
    pub(super) stop_requested: bool,
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
pub(super) fn spawn_failed(
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
        fields(json!({ "event": Event::SpawnFailed, "command": config.command, "error": error.to_string() })),
    );
    code
}

/// Starts the worker once and waits for its end.
pub(super) async fn run_once(
    config: &AgentConfig,
    shared: &Shared<'_>,
    role: &InitRole,
    reaper: &Reaper,
    signals: &mut Signals,
    oom_unavailable_said: &mut bool,
) -> Run {
    let recorder = shared.recorder;
    let outputs = match open_outputs(config) {
        Ok(outputs) => outputs,
        Err((message, error)) => {
            return Run::failed_to_start(spawn_failed(config, recorder, message, &error, 1));
        }
    };
    let Outputs {
        readers,
        stdout,
        stderr,
        tty,
    } = outputs;
    let mut command = worker_command(config, shared, stdout, stderr, tty);
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
            let message = format!("failed to start {}: {error}", config.command.join(" "));
            return Run::failed_to_start(spawn_failed(config, recorder, message, &error, code));
        }
    };
    shared.requests.worker_started();
    record_start(config, shared, role, pid, tty);

    // Under --tty the worker's terminal follows the agent's: a resize of
    // the agent's terminal (SIGWINCH) is passed on as one of the worker's.
    let resizes = tty
        .then(|| {
            readers
                .first()
                .and_then(|(master, _)| master.try_clone().ok())
        })
        .flatten()
        .and_then(|master| follow_resizes(master).ok());
    let readers = start_capture(config, shared, readers, tty);
    let oom = watch_oom(recorder, oom_unavailable_said);

    let (status, stop_requested) =
        wait_forwarding_signals(exited, pid, signals, config.stop_timeout, recorder).await;
    let run_time = started.elapsed();

    drain(readers, recorder).await;
    if let Some(resizes) = resizes {
        resizes.abort();
    }
    let oom_kills = oom.finish(recorder);
    shared.requests.end_unfinished();
    reaper.reap();
    let ending = Ending {
        run_time,
        oom_kills,
        orphans_reaped: reaper.orphans_reaped(),
    };
    ended(recorder, status, ending, stop_requested)
}

/// Two pipes, or one pseudo-terminal under `--tty`; what failed, if not.
fn open_outputs(config: &AgentConfig) -> Result<Outputs, (String, std::io::Error)> {
    let outputs = if config.tty {
        Outputs::tty()
    } else {
        Outputs::pipes()
    };
    outputs.map_err(|error| {
        let what = if config.tty {
            "a pseudo-terminal"
        } else {
            "pipes"
        };
        let message = format!("cannot open {what} for the worker's output: {error}");
        (message, error)
    })
}

/// The worker's command: its environment, its outputs, its own process
/// group (or session, under `--tty`), and the machine's huge-page policy.
fn worker_command(
    config: &AgentConfig,
    shared: &Shared<'_>,
    stdout: OwnedFd,
    stderr: OwnedFd,
    tty: bool,
) -> std::process::Command {
    let (program, arguments) = config
        .command
        .split_first()
        .expect("the command was checked to be there");
    let mut command = std::process::Command::new(program);
    command
        .args(arguments)
        .stdin(Stdio::inherit())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .env("TAILWATER_APP", &config.app)
        .env("TAILWATER_RUNNER", shared.recorder.runner());
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
    if tty {
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
    command
}

/// The `start` record.
fn record_start(config: &AgentConfig, shared: &Shared<'_>, role: &InitRole, pid: u32, tty: bool) {
    let recorder = shared.recorder;
    recorder.system(
        Level::Info,
        format!(
            "starting {} (pid {pid}) as runner {}",
            config.command.join(" "),
            recorder.runner()
        ),
        fields(json!({
            "event": Event::Start,
            "command": config.command,
            "pid": pid,
            "boot": recorder.boot(),
            "runner": recorder.runner(),
            "runner_from": recorder.runner_origin().as_str(),
            "agent_version": env!("CARGO_PKG_VERSION"),
            "init": role.as_str(),
            "tty": tty,
            "control_socket": shared.control_socket.map(|path| path.display().to_string()),
        })),
    );
}

/// One capture task per output, each writing to the requests (which
/// attribute and record its lines) and echoing as `--echo` says.
///
/// The tasks run on a single-threaded runtime of their own
/// ([`capture_runtime`]): it runs woken tasks in the order they were woken,
/// which is the order the kernel saw the pipes become readable (on the
/// agent's multi-threaded runtime, a task woken last may run first, or two
/// at once), and a task never waits for its echo ([`Echo`]): so a worker's
/// `print` and the traceback it wrote to stderr right after are captured in
/// that order.
fn start_capture(
    config: &AgentConfig,
    shared: &Shared<'_>,
    readers: Vec<(OwnedFd, Stream)>,
    tty: bool,
) -> Vec<JoinHandle<()>> {
    let cutting = Cutting {
        max_line_bytes: config.max_line_bytes,
        progress_interval: config.progress_interval,
    };
    let (done, all_done) = tokio::sync::mpsc::channel::<()>(1);
    let runtime = capture_runtime(all_done).unwrap_or_else(|error| {
        shared.recorder.system_warning(format!(
            "cannot start the capture thread ({error}): capturing on the agent's runtime, so lines of stdout and stderr written at once may be recorded out of order"
        ));
        tokio::runtime::Handle::current()
    });
    // Readers register with the runtime that reads them.
    let _in_capture = runtime.enter();
    let mut tasks = Vec::new();
    for (fd, stream) in readers {
        let reader = match Reader::new(fd, tty, shared.sync) {
            Ok(reader) => reader,
            Err(error) => {
                shared.recorder.system_warning(format!(
                    "cannot read the worker's {}: {error}",
                    stream.as_str()
                ));
                continue;
            }
        };
        let requests = shared.requests.clone();
        let echo = config.echo;
        let done = done.clone();
        tasks.push(runtime.spawn(async move {
            let to = match stream {
                Stream::Stderr => EchoTo::Stderr,
                _ => EchoTo::Stdout,
            };
            let echo = echo.then(|| Echo::start(to)).flatten().or_else(|| {
                if echo {
                    requests.recorder().system_warning(format!(
                        "cannot start a thread to echo the worker's {}: it is captured, not echoed",
                        stream.as_str()
                    ));
                }
                None
            });
            let echo =
                echo.map(|echo| Box::new(echo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>);
            capture(reader, stream, echo, &*requests, cutting).await;
            drop(done);
        }));
    }
    tasks
}

/// A single-threaded runtime on a thread of its own, running until every
/// sender of `all_done` is gone (each capture task holds one, finished or
/// aborted).
fn capture_runtime(
    mut all_done: tokio::sync::mpsc::Receiver<()>,
) -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("tailwater-capture".into())
        .spawn(move || {
            runtime.block_on(async move { while all_done.recv().await.is_some() {} });
            // An echo blocked on a paused terminal must not hold the thread.
            runtime.shutdown_background();
        })?;
    Ok(handle)
}

/// Lets the capture tasks read to the end of output, for at most
/// [`PIPE_DRAIN_AFTER_EXIT`] after the worker exited.
async fn drain(readers: Vec<JoinHandle<()>>, recorder: &Recorder) {
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
}

/// Records the end of the run (`status`: `None` when the worker was lost
/// track of) and says how it went.
fn ended(
    recorder: &Recorder,
    status: Option<ExitStatus>,
    ending: Ending,
    stop_requested: bool,
) -> Run {
    let run_time = ending.run_time;
    let Some(status) = status else {
        let error = "lost track of the worker";
        recorder.system(
            Level::Error,
            error.into(),
            fields(json!({ "event": Event::Exit, "error": error })),
        );
        return Run {
            code: 1,
            ending: error.into(),
            exit_fields: fields(json!({ "error": error })),
            run_time,
            stop_requested,
        };
    };
    let (code, exit_fields) = report_exit(recorder, status, ending, stop_requested);
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
