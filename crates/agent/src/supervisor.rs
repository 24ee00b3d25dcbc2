//! Starting the worker, forwarding signals to it, and reporting its end.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tailwater_model::{Level, Stream};
use tokio::signal::unix::{signal, SignalKind};

use crate::capture::capture;
use crate::outbox::{fields, Outbox};
use crate::AgentConfig;

/// Signals the agent passes on to the worker's process group.
const FORWARDED: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];
/// After the worker exits, how long its pipes may stay open (held by a child
/// it left behind) before the agent stops reading them.
const PIPE_DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Runs the worker to its end, capturing its output into `outbox`. Returns
/// the exit code for the agent: the worker's, or 128 + its fatal signal.
pub async fn supervise(config: &AgentConfig, outbox: &Arc<Outbox>) -> i32 {
    let command_line = config.command.join(" ");
    let Some((program, arguments)) = config.command.split_first() else {
        outbox.system(Level::Error, "no command to run".into(), Default::default());
        return 127;
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(arguments)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a terminal's Ctrl-C reaches the agent,
        // which forwards it, and forwarded signals reach the whole worker.
        .process_group(0)
        .env("TAILWATER_APP", &config.app)
        .env("TAILWATER_RUNNER", &config.runner)
        .kill_on_drop(true);
    if config.unbuffered {
        command.env("PYTHONUNBUFFERED", "1");
    }

    let started = Instant::now();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let code = if error.kind() == std::io::ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            let message = format!("failed to start {command_line}: {error}");
            eprintln!("tailwater: {message}");
            outbox.system(
                Level::Error,
                message,
                fields(json!({ "event": "spawn_failed", "command": config.command, "error": error.to_string() })),
            );
            return code;
        }
    };
    let pid = child.id().unwrap_or_default();
    outbox.system(
        Level::Info,
        format!("starting {command_line} (pid {pid})"),
        fields(json!({
            "event": "start",
            "command": config.command,
            "pid": pid,
            "boot": outbox.boot(),
            "agent_version": env!("CARGO_PKG_VERSION"),
        })),
    );

    let readers = [
        (
            child
                .stdout
                .take()
                .map(|pipe| Box::new(pipe) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            Stream::Stdout,
        ),
        (
            child
                .stderr
                .take()
                .map(|pipe| Box::new(pipe) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            Stream::Stderr,
        ),
    ]
    .into_iter()
    .filter_map(|(pipe, stream)| {
        let pipe = pipe?;
        let outbox = outbox.clone();
        let (echo, max_line_bytes) = (config.echo, config.max_line_bytes);
        Some(tokio::spawn(async move {
            let echo: Option<Box<dyn tokio::io::AsyncWrite + Unpin + Send>> = match (echo, stream) {
                (false, _) => None,
                (true, Stream::Stderr) => Some(Box::new(tokio::io::stderr())),
                (true, _) => Some(Box::new(tokio::io::stdout())),
            };
            capture(pipe, stream, echo, &outbox, max_line_bytes).await;
        }))
    })
    .collect::<Vec<_>>();

    let status = wait_forwarding_signals(&mut child, pid).await;
    let run_time = started.elapsed();

    let deadline = tokio::time::Instant::now() + PIPE_DRAIN_AFTER_EXIT;
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            abort.abort();
            outbox.system_warning(format!(
                "stopped reading output {}s after the worker exited: a process it started still holds its stdout or stderr open",
                PIPE_DRAIN_AFTER_EXIT.as_secs()
            ));
        }
    }

    match status {
        Ok(status) => report_exit(outbox, status, run_time),
        Err(error) => {
            outbox.system(
                Level::Error,
                format!("lost track of the worker: {error}"),
                fields(json!({ "event": "exit", "error": error.to_string() })),
            );
            1
        }
    }
}

async fn wait_forwarding_signals(
    child: &mut tokio::process::Child,
    pid: u32,
) -> std::io::Result<ExitStatus> {
    let mut listeners = Vec::new();
    for number in FORWARDED {
        listeners.push((number, signal(SignalKind::from_raw(number))?));
    }
    let (forward_tx, mut forward_rx) = tokio::sync::mpsc::unbounded_channel();
    let forwarders: Vec<_> = listeners
        .into_iter()
        .map(|(number, mut listener)| {
            let forward_tx = forward_tx.clone();
            tokio::spawn(async move {
                while listener.recv().await.is_some() {
                    if forward_tx.send(number).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(number) = forward_rx.recv() => {
                // SAFETY: kill(2) with a negative pid signals the process
                // group the worker leads; it has no memory effects.
                unsafe { libc::kill(-(pid as libc::pid_t), number) };
            }
        }
    };
    for forwarder in forwarders {
        forwarder.abort();
    }
    status
}

/// Records the exit and returns the agent's exit code.
fn report_exit(outbox: &Outbox, status: ExitStatus, run_time: Duration) -> i32 {
    let seconds = run_time.as_secs_f64();
    let run_time_ms = run_time.as_millis() as u64;
    if let Some(code) = status.code() {
        let level = if code == 0 { Level::Info } else { Level::Error };
        outbox.system(
            level,
            format!("exited with code {code} after {seconds:.1}s"),
            fields(json!({ "event": "exit", "exit_code": code, "run_time_ms": run_time_ms })),
        );
        return code;
    }
    let number = status.signal().unwrap_or_default();
    let name = signal_name(number);
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    outbox.system(
        Level::Error,
        format!("killed by signal {number} ({name}){core} after {seconds:.1}s"),
        fields(json!({
            "event": "exit",
            "signal": number,
            "signal_name": name,
            "core_dumped": status.core_dumped(),
            "run_time_ms": run_time_ms,
        })),
    );
    128 + number
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
