//! How a run of the worker ended, told: OOM kills watched while it runs
//! (`cgroup`), then the exit (code or signal, core dump, run time, orphans
//! reaped) recorded.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tailwater_model::lifecycle::Event;

use serde_json::json;
use tailwater_model::{Fields, Level};

use super::signal_name;
use crate::cgroup::{self, OomWatch};
use crate::format_duration;
use crate::recorder::{fields, Recorder};

/// Reads the OOM kill count now, every [`cgroup::CHECK_INTERVAL`], and at
/// the end; says once if it cannot.
pub(super) struct OomWatcher {
    watch: Option<Arc<Mutex<OomWatch>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `unavailable_said`: whether the agent already said it cannot count OOM
/// kills (once is enough, whatever the restarts).
pub(super) fn watch_oom(recorder: &Arc<Recorder>, unavailable_said: &mut bool) -> OomWatcher {
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
    pub(super) fn finish(self, recorder: &Recorder) -> Option<u64> {
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
pub(super) struct Ending {
    pub(super) run_time: Duration,
    /// `None` where OOM kills cannot be counted.
    pub(super) oom_kills: Option<u64>,
    pub(super) orphans_reaped: u64,
}

/// Records the exit; returns the agent's exit code and the exit as fields
/// (`exit_code`, or `signal` and `signal_name`). An end the user asked for
/// (`stop_requested`: the worker died of the stop signal the agent passed
/// on, or exited with the shell's code for it, 128 + the signal) is
/// `info`, as a clean exit is; any other failure is an `error`.
pub(super) fn report_exit(
    recorder: &Recorder,
    status: ExitStatus,
    ending: Ending,
    stop_requested: bool,
) -> (i32, Fields) {
    let asked = |signal: i32| stop_requested && super::STOP_SIGNALS.contains(&signal);
    let took = format_duration(ending.run_time);
    let mut extra = fields(json!({
        "event": Event::Exit,
        "run_time_ms": ending.run_time.as_millis() as u64,
        "orphans_reaped": ending.orphans_reaped,
    }));
    if let Some(kills) = ending.oom_kills {
        extra.insert("oom_kills".into(), kills.into());
    }
    if let Some(code) = status.code() {
        let as_asked = code > 128 && asked(code - 128);
        let level = if code == 0 || as_asked {
            Level::Info
        } else {
            Level::Error
        };
        let how = if as_asked { ", stopped as asked" } else { "" };
        extra.insert("exit_code".into(), code.into());
        recorder.system(
            level,
            format!("exited with code {code} after {took}{how}"),
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
    let (level, how) = if asked(number) {
        (Level::Info, ", stopped as asked")
    } else {
        (Level::Error, "")
    };
    recorder.system(
        level,
        format!("killed by signal {number} ({name}){core} after {took}{cause}{how}"),
        extra,
    );
    let exit = fields(json!({ "signal": number, "signal_name": name, "oom_killed": oom_killed }));
    (128 + number, exit)
}
