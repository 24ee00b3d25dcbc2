//! Noticing OOM kills: the kernel counts them in the memory cgroup.
//!
//! The agent's own cgroup (the worker's too; in a container, the
//! container's) is found from `/proc/self/cgroup` and `/proc/self/mountinfo`:
//! cgroup v2's `memory.events` (`oom_kill N`, counting the cgroup and those
//! below it), or else cgroup v1's `memory.oom_control` (`oom_kill N`). The
//! count is read when the worker starts, every [`CHECK_INTERVAL`], and when
//! it exits; a rise is an OOM kill. Where no such file is readable, the
//! agent says so once, in a system record.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tailwater_model::lifecycle::Event;

use serde_json::json;
use tailwater_model::Fields;

use crate::recorder::fields;

/// How often the count is read while the worker runs.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A memory cgroup whose OOM kills can be counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryCgroup {
    pub dir: PathBuf,
    pub version: Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl MemoryCgroup {
    fn counter_file(&self) -> PathBuf {
        self.dir.join(match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        })
    }

    /// OOM kills so far.
    pub fn oom_kills(&self) -> io::Result<u64> {
        let file = self.counter_file();
        let text = std::fs::read_to_string(&file)?;
        parse_oom_kill(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has no oom_kill count", file.display()),
            )
        })
    }

    /// The memory limit in bytes, if there is one.
    pub fn limit_bytes(&self) -> Option<u64> {
        let file = match self.version {
            Version::V2 => "memory.max",
            Version::V1 => "memory.limit_in_bytes",
        };
        let limit: u64 = std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // cgroup v1 says "no limit" with the largest page-aligned i64.
        (limit < 1 << 62).then_some(limit)
    }
}

/// The `oom_kill` count of a `memory.events` (v2) or `memory.oom_control`
/// (v1) file: lines of `key value`.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "oom_kill").then_some(())?;
        words.next()?.parse().ok()
    })
}

/// The memory cgroup of this process, or why there is none to read.
pub fn find() -> Result<MemoryCgroup, String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|error| format!("cannot read /proc/self/cgroup: {error}"))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| format!("cannot read /proc/self/mountinfo: {error}"))?;
    locate(&cgroup, &mountinfo, |file| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|text| parse_oom_kill(&text))
            .is_some()
    })
}

/// Finds the memory cgroup from the texts of `/proc/self/cgroup` and
/// `/proc/self/mountinfo`, preferring v2; `readable` says whether a counter
/// file can be read and has a count.
pub fn locate(
    proc_cgroup: &str,
    mountinfo: &str,
    readable: impl Fn(&Path) -> bool,
) -> Result<MemoryCgroup, String> {
    let mounts = parse_mountinfo(mountinfo);
    let mut tried = Vec::new();
    for version in [Version::V2, Version::V1] {
        let Some(path) = cgroup_path(proc_cgroup, version) else {
            continue;
        };
        for mount in &mounts {
            let matches = match version {
                Version::V2 => mount.fstype == "cgroup2",
                Version::V1 => {
                    mount.fstype == "cgroup"
                        && mount
                            .super_options
                            .split(',')
                            .any(|option| option == "memory")
                }
            };
            if !matches {
                continue;
            }
            // The mount shows the hierarchy from `root` down; a container's
            // cgroup is often mounted as its root.
            let Some(below) = strip_path_prefix(&path, &mount.root) else {
                continue;
            };
            let cgroup = MemoryCgroup {
                dir: Path::new(&mount.mount_point).join(below),
                version,
            };
            let file = cgroup.counter_file();
            if readable(&file) {
                return Ok(cgroup);
            }
            tried.push(file.display().to_string());
        }
    }
    if tried.is_empty() {
        Err("no memory cgroup is mounted for this process".into())
    } else {
        Err(format!(
            "no readable oom_kill count (tried {})",
            tried.join(", ")
        ))
    }
}

/// The cgroup path of this process in the v2 hierarchy (`0::/path`), or in
/// the v1 hierarchy with the memory controller (`N:…memory…:/path`).
fn cgroup_path(proc_cgroup: &str, version: Version) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let wanted = match version {
            Version::V2 => id == "0" && controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        wanted.then(|| path.to_owned())
    })
}

/// `path` below `root`, as a relative path ("" for the root itself).
fn strip_path_prefix<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    if root == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() || rest.starts_with('/') {
        Some(rest.trim_start_matches('/'))
    } else {
        None
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Mount {
    root: String,
    mount_point: String,
    fstype: String,
    super_options: String,
}

/// `id parent major:minor root mount-point options [optional…] - fstype
/// source super-options`, with spaces and such escaped as `\ooo`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let before: Vec<&str> = before.split(' ').collect();
            let after: Vec<&str> = after.split(' ').collect();
            Some(Mount {
                root: unescape(before.get(3)?),
                mount_point: unescape(before.get(4)?),
                fstype: (*after.first()?).to_owned(),
                super_options: (*after.get(2)?).to_owned(),
            })
        })
        .collect()
}

fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let octal = bytes.get(at + 1..at + 4).filter(|digits| {
            digits.iter().all(|digit| (b'0'..=b'7').contains(digit)) && digits[0] <= b'3'
        });
        if let (b'\\', Some(digits)) = (bytes[at], octal) {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |value, digit| value * 8 + (digit - b'0')),
            );
            at += 4;
            continue;
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The OOM kill count of one cgroup, since the worker started.
#[derive(Debug)]
pub struct OomWatch {
    cgroup: MemoryCgroup,
    baseline: u64,
    seen: u64,
}

impl OomWatch {
    /// Starts counting from the count now.
    pub fn start(cgroup: MemoryCgroup) -> Result<OomWatch, String> {
        let count = cgroup
            .oom_kills()
            .map_err(|error| format!("cannot read the oom_kill count: {error}"))?;
        Ok(OomWatch {
            cgroup,
            baseline: count,
            seen: count,
        })
    }

    pub fn cgroup(&self) -> &MemoryCgroup {
        &self.cgroup
    }

    /// New OOM kills since the last check, as `(before, after)`.
    pub fn check(&mut self) -> Option<(u64, u64)> {
        let now = self.cgroup.oom_kills().ok()?;
        if now <= self.seen {
            return None;
        }
        let before = std::mem::replace(&mut self.seen, now);
        Some((before, now))
    }

    /// OOM kills since the worker started.
    pub fn total(&self) -> u64 {
        self.seen - self.baseline
    }
}

/// The record for new OOM kills: message and fields.
pub fn oom_kill_record(cgroup: &MemoryCgroup, before: u64, after: u64) -> (String, Fields) {
    let killed = after - before;
    let limit = cgroup.limit_bytes();
    let within = match limit {
        Some(bytes) => format!(" (memory limit {})", format_bytes(bytes)),
        None => String::new(),
    };
    let processes = if killed == 1 {
        "a process"
    } else {
        "processes"
    };
    let message = format!(
        "out of memory: the kernel's OOM killer killed {processes} in the worker's memory cgroup{within}; oom_kill went from {before} to {after}"
    );
    let mut extra = fields(json!({
        "event": Event::OomKill,
        "oom_kills": killed,
        "oom_kill_count": after,
        "cgroup": cgroup.dir.display().to_string(),
        "cgroup_version": match cgroup.version { Version::V1 => 1, Version::V2 => 2 },
    }));
    if let Some(bytes) = limit {
        extra.insert("memory_limit_bytes".into(), bytes.into());
    }
    (message, extra)
}

/// The record for a host where OOM kills cannot be seen: message and fields.
pub fn unavailable_record(reason: &str) -> (String, Fields) {
    (
        format!("OOM kills will not be reported: {reason}"),
        fields(json!({ "event": Event::OomWatchUnavailable, "reason": reason })),
    )
}

fn format_bytes(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    // Whole MiB (`is_multiple_of` is newer than the workspace's Rust).
    if bytes >= MIB && bytes.trailing_zeros() >= 20 {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2_EVENTS: &str = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
    const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";

    const HYBRID_MOUNTINFO: &str = "\
24 1 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
30 24 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
33 24 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 24 0:30 / /sys/fs/cgroup/cpu\\040and\\040more rw,relatime - cgroup cgroup rw,cpu
";
    const HYBRID_CGROUP: &str = "4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn the_oom_kill_count_of_both_versions() {
        assert_eq!(parse_oom_kill(V2_EVENTS), Some(2));
        assert_eq!(parse_oom_kill(V1_OOM_CONTROL), Some(5));
        // "oom_group_kill" and "oom" are other counts.
        assert_eq!(parse_oom_kill("oom 1\noom_group_kill 4\n"), None);
        assert_eq!(parse_oom_kill(""), None);
        assert_eq!(parse_oom_kill("oom_kill lots\n"), None);
    }

    #[test]
    fn v2_is_found_through_the_mount_and_preferred() {
        let mountinfo = "35 24 0:30 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let found = locate("0::/system.slice/worker.service\n", mountinfo, |_| true).unwrap();
        assert_eq!(
            found,
            MemoryCgroup {
                dir: "/sys/fs/cgroup/system.slice/worker.service".into(),
                version: Version::V2
            }
        );
        // A container with its own cgroup namespace sees itself as "/".
        let found = locate("0::/\n", mountinfo, |_| true).unwrap();
        assert_eq!(found.dir, Path::new("/sys/fs/cgroup"));
        assert_eq!(
            found.counter_file(),
            Path::new("/sys/fs/cgroup/memory.events")
        );
    }

    #[test]
    fn v1_when_v2_has_no_memory_controller() {
        // A hybrid host: cgroup2 is mounted, but memory is a v1 controller.
        let found = locate(HYBRID_CGROUP, HYBRID_MOUNTINFO, |file| {
            file.ends_with("memory.oom_control")
        })
        .unwrap();
        assert_eq!(
            found.dir,
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(found.version, Version::V1);
    }

    #[test]
    fn a_mount_of_a_subtree_is_followed() {
        // Docker on v1 without a cgroup namespace: the container's cgroup is
        // mounted as the hierarchy's root.
        let mountinfo =
            "40 30 0:31 /docker/c0ffee /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
        let found = locate("9:memory:/docker/c0ffee\n", mountinfo, |_| true).unwrap();
        assert_eq!(found.dir, Path::new("/sys/fs/cgroup/memory"));
        // A cgroup outside the mounted subtree cannot be reached through it.
        assert!(locate("9:memory:/docker/c0ffee2\n", mountinfo, |_| true).is_err());
    }

    #[test]
    fn no_readable_cgroup_says_why() {
        // Nothing mounted (a chroot, macOS-like sandboxes, gVisor without
        // cgroupfs).
        let error = locate("0::/\n", "", |_| true).unwrap_err();
        assert_eq!(error, "no memory cgroup is mounted for this process");
        // Mounted, but nothing readable: every file tried is named.
        let error = locate(HYBRID_CGROUP, HYBRID_MOUNTINFO, |_| false).unwrap_err();
        assert_eq!(
            error,
            "no readable oom_kill count (tried /sys/fs/cgroup/unified/memory.events, /sys/fs/cgroup/memory/process_api/abc/memory.oom_control)"
        );
        let (message, extra) = unavailable_record(&error);
        assert!(message.starts_with("OOM kills will not be reported: no readable oom_kill"));
        assert_eq!(extra["event"], "oom_watch_unavailable");
        assert_eq!(extra["reason"], error.as_str());
    }

    #[test]
    fn mount_points_are_unescaped() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts[3].mount_point, "/sys/fs/cgroup/cpu and more");
        assert_eq!(mounts[2].super_options, "rw,memory");
    }

    #[test]
    fn a_rising_count_is_an_oom_kill() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        std::fs::write(dir.path().join("memory.max"), "536870912\n").unwrap();
        let cgroup = MemoryCgroup {
            dir: dir.path().to_owned(),
            version: Version::V2,
        };
        let mut watch = OomWatch::start(cgroup.clone()).unwrap();
        assert_eq!(watch.check(), None, "a kill before the start is not ours");
        std::fs::write(&events, "oom 2\noom_kill 3\n").unwrap();
        assert_eq!(watch.check(), Some((1, 3)));
        assert_eq!(watch.check(), None, "reported once");
        assert_eq!(watch.total(), 2);

        let (message, extra) = oom_kill_record(&cgroup, 1, 3);
        assert!(message.contains("killed processes"), "{message}");
        assert!(message.contains("(memory limit 512 MiB)"), "{message}");
        assert_eq!(extra["oom_kills"], 2);
        assert_eq!(extra["memory_limit_bytes"], 536870912u64);

        // A file that stops being readable is not a kill.
        std::fs::remove_file(&events).unwrap();
        assert_eq!(watch.check(), None);
        // And one that is unreadable from the start is an error, not zero.
        assert!(OomWatch::start(cgroup).is_err());
    }

    #[test]
    fn v1_says_no_limit_with_a_huge_number() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let cgroup = MemoryCgroup {
            dir: dir.path().to_owned(),
            version: Version::V1,
        };
        assert_eq!(cgroup.limit_bytes(), None);
    }
}
