//! Measuring and reporting: wall and CPU time of a piece of work, medians,
//! the peak memory of a child process, and the result table (or JSON).
//!
//! Every figure is a [`Row`]: its value beside a baseline measured in the
//! same run, their ratio (value ÷ baseline), the target and whether it is
//! met. The machine is shared and noisy, so the ratio is the number to
//! compare across runs, not the value.

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

/// Wall time and CPU time (user + system) of a piece of work.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Span {
    pub wall: Duration,
    pub cpu: Duration,
}

impl std::ops::AddAssign for Span {
    fn add_assign(&mut self, other: Span) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// Runs `work`, measuring its wall time and the CPU time of the calling
/// thread alone: work that other threads do meanwhile is not counted.
pub fn thread_span<T>(work: impl FnOnce() -> T) -> (T, Span) {
    let (cpu, wall) = (thread_cpu_time(), Instant::now());
    let result = work();
    let span = Span {
        wall: wall.elapsed(),
        cpu: thread_cpu_time().saturating_sub(cpu),
    };
    (result, span)
}

/// User plus system CPU time of the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass it.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// User plus system CPU time so far of this process's threads named
/// `name` (from `/proc/self/task/*/comm` and `stat`, in clock ticks).
pub fn named_threads_cpu_time(name: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").context("cannot list /proc/self/task")? {
        let task = task?.path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(task.join("stat"))
                .with_context(|| format!("cannot read {}/stat", task.display()))?;
            total += stat_cpu_time(&stat)
                .with_context(|| format!("{}/stat has no CPU times", task.display()))?;
        }
    }
    Ok(total)
}

/// User plus system time from a `/proc/.../stat` line.
pub fn stat_cpu_time(stat: &str) -> Option<Duration> {
    // The command name may hold spaces and parentheses: fields follow the
    // last ')'. utime and stime are fields 14 and 15, 12th and 13th here.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(
        (ticks(11)? + ticks(12)?) * 1_000_000_000 / per_second,
    ))
}

/// The middle value (the upper middle of an even count); zero when empty.
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// What a child process printed, and the most memory it ever held.
pub struct ChildRun {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub peak_rss_bytes: u64,
}

/// The line [`peak_rss_wrapper`] ends its output with.
const PEAK_RSS_LINE: &str = "peak-rss-bytes ";

/// Runs `command` to its end (stderr goes to ours) and measures its peak
/// resident memory.
///
/// A child's `ru_maxrss` includes the memory of the process it was started
/// from (the kernel carries the high-water mark over `exec`), so the command
/// is started by a fresh, small copy of this binary ([`peak_rss_wrapper`],
/// `tailwater-bench peak-rss -- …`): the benchmark's own memory is not
/// counted, the wrapper's few MiB at most.
pub fn run_measuring_peak_rss(command: &Command) -> anyhow::Result<ChildRun> {
    let exe = std::env::current_exe().context("cannot find this benchmark's own executable")?;
    let mut wrapper = Command::new(exe);
    wrapper
        .args(["peak-rss", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    let output = wrapper
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run the peak-rss wrapper")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let measured = text.rfind(PEAK_RSS_LINE).and_then(|at| {
        let mut words = text[at + PEAK_RSS_LINE.len()..].split_whitespace();
        let peak = words.next()?.parse().ok()?;
        Some((at, peak, words.next()? == "ok"))
    });
    let Some((at, peak_rss_bytes, success)) = measured else {
        bail!("the peak-rss wrapper printed no measurement: see its error above");
    };
    Ok(ChildRun {
        success,
        stdout: output.stdout[..at].to_vec(),
        peak_rss_bytes,
    })
}

/// The wrapper's side: runs `program` with `args`, its output passed through,
/// then prints its peak resident memory and whether it exited with 0.
pub fn peak_rss_wrapper(program: &OsStr, args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let child = Command::new(program)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))?;
    let (success, peak) = wait_peak_rss(child)?;
    let outcome = if success { "ok" } else { "failed" };
    println!("{PEAK_RSS_LINE}{peak} {outcome}");
    Ok(())
}

/// Waits for `child` with `wait4`, which reports that child's own usage:
/// whether it exited with 0, and its `ru_maxrss` in bytes.
pub fn wait_peak_rss(child: Child) -> io::Result<(bool, u64)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let usage = loop {
        // SAFETY: wait4 writes only the status and the struct we pass it;
        // the child is ours and not yet reaped (std waits only when asked).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break usage;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    };
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux reports ru_maxrss in KiB.
    Ok((success, usage.ru_maxrss as u64 * 1024))
}

/// What a figure's numbers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    LinesPerSecond,
    LinesPerCpuSecond,
    Bytes,
    Milliseconds,
}

/// One figure of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub figure: String,
    pub unit: Unit,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// What the baseline measures.
    pub baseline_is: String,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    pub target: String,
    /// `None` when the figure has no target or could not be measured.
    pub met: Option<bool>,
    /// How it was measured, what it found, or why it is missing.
    pub note: String,
}

impl Row {
    pub fn new(figure: &str, unit: Unit, value: Option<f64>, baseline: Option<f64>) -> Row {
        let ratio = match (value, baseline) {
            (Some(value), Some(baseline)) if baseline > 0.0 => Some(value / baseline),
            _ => None,
        };
        Row {
            figure: figure.to_owned(),
            unit,
            value,
            baseline,
            baseline_is: String::new(),
            ratio,
            target: "—".to_owned(),
            met: None,
            note: String::new(),
        }
    }

    pub fn baseline_is(mut self, what: impl Into<String>) -> Row {
        self.baseline_is = what.into();
        self
    }

    /// The target, and whether it is met: `met` sees the value and the
    /// ratio, and says `None` when it cannot tell.
    pub fn target(
        mut self,
        target: &str,
        met: impl FnOnce(f64, Option<f64>) -> Option<bool>,
    ) -> Row {
        self.target = target.to_owned();
        self.met = self.value.and_then(|value| met(value, self.ratio));
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// Adds `more` to the note.
    pub fn note_more(mut self, more: &str) -> Row {
        self.note.push_str(more);
        self
    }
}

/// The whole result: what was run, and the rows.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub corpus: String,
    pub lines: u64,
    pub raw_bytes: u64,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes to json")
    }

    /// A Markdown table, then the baselines and notes, numbered.
    pub fn table(&self) -> String {
        let mut out = format!(
            "corpus: {}, {} lines, {} raw\n\n",
            self.corpus,
            thousands(self.lines as f64),
            format_value(Unit::Bytes, self.raw_bytes as f64)
        );
        let header = ["figure", "value", "baseline", "ratio", "target", "met?"];
        let mut cells: Vec<[String; 6]> = vec![header.map(str::to_owned)];
        for (i, row) in self.rows.iter().enumerate() {
            let cell =
                |value: Option<f64>| value.map_or("n/a".to_owned(), |v| format_value(row.unit, v));
            cells.push([
                format!("{} [{}]", row.figure, i + 1),
                cell(row.value),
                cell(row.baseline),
                row.ratio.map_or("n/a".to_owned(), |r| format!("{r:.3}")),
                row.target.clone(),
                match row.met {
                    Some(true) => "yes".to_owned(),
                    Some(false) => "no".to_owned(),
                    None => "—".to_owned(),
                },
            ]);
        }
        let widths: Vec<usize> = (0..6)
            .map(|c| {
                cells
                    .iter()
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (r, row) in cells.iter().enumerate() {
            let padded: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
                .collect();
            out.push_str(&format!("| {} |\n", padded.join(" | ")));
            if r == 0 {
                let rules: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&format!("|-{}-|\n", rules.join("-|-")));
            }
        }
        out.push_str("\nratio = value ÷ baseline, both measured in this run.\n\n");
        for (i, row) in self.rows.iter().enumerate() {
            out.push_str(&format!("- [{}] baseline: {}", i + 1, row.baseline_is));
            if !row.note.is_empty() {
                out.push_str(&format!("; {}", row.note));
            }
            out.push('\n');
        }
        out
    }
}

pub fn format_value(unit: Unit, value: f64) -> String {
    match unit {
        Unit::LinesPerSecond => format!("{} lines/s", thousands(value)),
        Unit::LinesPerCpuSecond => format!("{} lines/s/core", thousands(value)),
        Unit::Bytes if value >= 1024.0 * 1024.0 => format!("{:.1} MiB", value / 1024.0 / 1024.0),
        Unit::Bytes => format!("{:.1} KiB", value / 1024.0),
        Unit::Milliseconds if value > 0.0 && value < 0.1 => {
            format!("{:.1} µs", value * 1000.0)
        }
        Unit::Milliseconds => format!("{value:.2} ms"),
    }
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(vec![ms(4), ms(1)]), ms(4));
        assert_eq!(median(Vec::new()), Duration::ZERO);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(format_value(Unit::Bytes, 3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(format_value(Unit::Milliseconds, 1.234), "1.23 ms");
        assert_eq!(format_value(Unit::Milliseconds, 0.0042), "4.2 µs");
    }

    #[test]
    fn rows_compute_ratio_and_target() {
        let row = Row::new("x", Unit::Milliseconds, Some(2.0), Some(4.0))
            .target("< 10 ms", |value, _| Some(value < 10.0));
        assert_eq!(row.ratio, Some(0.5));
        assert_eq!(row.met, Some(true));
        let missing =
            Row::new("y", Unit::Bytes, Some(1.0), None).target("≤ 1", |_, r| r.map(|r| r <= 1.0));
        assert_eq!(missing.ratio, None);
        assert_eq!(missing.met, None);
        let report = Report {
            corpus: "test".into(),
            lines: 1,
            raw_bytes: 1,
            rows: vec![row, missing],
        };
        assert!(report.table().contains("| x [1]"));
        assert!(report.json().contains("\"ratio\": 0.5"));
    }

    #[test]
    fn a_child_reports_its_peak_memory() {
        let child = Command::new("sh").args(["-c", "exit 0"]).spawn().unwrap();
        let (success, peak) = wait_peak_rss(child).unwrap();
        assert!(success);
        assert!(peak > 0);
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        assert!(!wait_peak_rss(child).unwrap().0);
    }
}
