//! Which runner an agent runs as, and so which spool it takes over: the
//! one home of the runner id.
//!
//! `--runner` when given. Otherwise the host name, since a container's host
//! name is its id and survives a restart of the container: an agent started
//! again on the same spool volume is the same runner, finds the spool the
//! previous one left (`<spool>/<runner>/`) and ships what is in it first.
//!
//! Two agents on one machine sharing a spool root cannot both be the host
//! name (the spool is locked by one agent at a time). The second takes the
//! spool of an earlier `<host>-<suffix>` runner that no live agent holds,
//! so what such an agent left is shipped too, and otherwise a new
//! `<host>-<suffix>`; it says so once on stderr. A `--runner` in use stays an
//! error: it names one worker, and a second one is a mistake.

use std::path::Path;

use crate::spool::{runner_dir_name, OpenError, Recovery, SegmentHeader, Spool};

/// Bytes of the host name kept in a runner id: a DNS label's longest, well
/// within the server's label limit (`--max-label-bytes`, 200) even with a
/// suffix.
const MAX_HOST_BYTES: usize = 63;
/// Hex digits of the suffix that sets apart agents of one host.
const SUFFIX_DIGITS: usize = 8;

/// Where an agent's runner id came from, as its `start` record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--runner`.
    Given,
    /// The host name.
    HostName,
    /// The host name and a suffix: another agent on this machine runs as
    /// the host name.
    HostNameInUse,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Given => "given",
            Origin::HostName => "host_name",
            Origin::HostNameInUse => "host_name_in_use",
        }
    }
}

/// The runner id from the machine's host name, made a label value the
/// server takes (and a plain directory name): ASCII letters, digits, `-`,
/// `_` and `.`, anything else written as `-`, at most [`MAX_HOST_BYTES`];
/// a random `r-` id when there is no usable host name.
pub fn from_host_name() -> String {
    sanitize_host_name(&gethostname::gethostname().to_string_lossy())
        .unwrap_or_else(|| format!("r-{}", random_suffix()))
}

fn sanitize_host_name(host: &str) -> Option<String> {
    let plain: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    // No leading dot (a hidden directory), nor a name of separators alone.
    let trimmed = plain.trim_matches(['-', '.']);
    let kept = &trimmed[..trimmed.len().min(MAX_HOST_BYTES)];
    let kept = kept.trim_end_matches(['-', '.']);
    (!kept.is_empty()).then(|| kept.to_owned())
}

fn random_suffix() -> String {
    hex::encode(rand::random::<[u8; SUFFIX_DIGITS / 2]>())
}

/// Whether `name` (a spool directory's) is `<host>-<suffix>`, an id
/// [`open_spool`] gave an agent of this host.
fn is_suffixed(host: &str, name: &str) -> bool {
    name.strip_prefix(host)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|suffix| {
            suffix.len() == SUFFIX_DIGITS && suffix.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// A runner's spool, opened, and who it is.
pub struct Opened {
    pub spool: Spool,
    pub recovery: Recovery,
    /// `header` with the runner chosen.
    pub header: SegmentHeader,
    pub origin: Origin,
}

/// Opens the spool of the runner this agent runs as, in `root`: `given`'s
/// (`--runner`), or else the host name's, or else (another agent holds
/// that one) an unheld `<host>-<suffix>` one left by an earlier agent, or a
/// new `<host>-<suffix>`. `header` is this boot's labels but the runner.
pub fn open_spool(
    root: &Path,
    given: Option<&str>,
    header: &SegmentHeader,
    cap: u64,
) -> Result<Opened, OpenError> {
    let open = |runner: &str, origin| {
        let header = SegmentHeader {
            runner: runner.to_owned(),
            ..header.clone()
        };
        Spool::open(&root.join(runner_dir_name(runner)), header.clone(), cap).map(
            |(spool, recovery)| Opened {
                spool,
                recovery,
                header,
                origin,
            },
        )
    };
    if let Some(runner) = given {
        return open(runner, Origin::Given);
    }
    let host = from_host_name();
    let in_use = match open(&host, Origin::HostName) {
        Err(error) if error.in_use => error,
        opened => return opened,
    };
    let mut left = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| is_suffixed(&host, name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    left.sort();
    for runner in left {
        if let Ok(opened) = open(&runner, Origin::HostNameInUse) {
            eprintln!(
                "tailwater: {in_use}\ntailwater: running as runner {runner} instead, whose spool an earlier agent on this machine left (give each worker its own --runner to choose)"
            );
            return Ok(opened);
        }
    }
    let runner = format!("{host}-{}", random_suffix());
    let opened = open(&runner, Origin::HostNameInUse)?;
    eprintln!(
        "tailwater: {in_use}\ntailwater: running as runner {runner} instead (give each worker its own --runner to choose)"
    );
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailwater_model::Source;

    #[test]
    fn host_names_become_label_values() {
        let clean = sanitize_host_name;
        assert_eq!(clean("3f4a9c1e2b7d").as_deref(), Some("3f4a9c1e2b7d"));
        assert_eq!(
            clean("gpu-a100_7.cluster.local").as_deref(),
            Some("gpu-a100_7.cluster.local")
        );
        assert_eq!(clean("wörker 1\n").as_deref(), Some("w-rker-1"));
        assert_eq!(clean(".hidden").as_deref(), Some("hidden"));
        let long = "h".repeat(100);
        assert_eq!(clean(&long).map(|h| h.len()), Some(63));
        assert_eq!(clean(""), None);
        assert_eq!(clean("\u{7}..--"), None);
        let id = from_host_name();
        assert!(!id.is_empty() && id.len() <= MAX_HOST_BYTES, "{id}");
        assert_eq!(runner_dir_name(&id), id, "its own spool directory name");
    }

    #[test]
    fn suffixed_ids_are_told_from_other_runners() {
        assert!(is_suffixed("vm", "vm-0a1b2c3d"));
        assert!(!is_suffixed("vm", "vm"));
        assert!(!is_suffixed("vm", "vm-worker"));
        assert!(!is_suffixed("vm", "vm2-0a1b2c3d"));
        assert!(!is_suffixed("vm", "vm-0a1b2c3d-0a1b2c3d"));
    }

    fn header() -> SegmentHeader {
        SegmentHeader {
            app: "app".into(),
            version: String::new(),
            runner: String::new(),
            boot: "b".into(),
            source: Source::Run,
        }
    }

    #[test]
    fn a_second_agent_of_the_host_takes_a_suffix_and_a_given_runner_in_use_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let cap = crate::DEFAULT_SPOOL_MAX_BYTES;
        let first = open_spool(root.path(), None, &header(), cap).unwrap();
        assert_eq!(
            (first.header.runner.as_str(), first.origin),
            (from_host_name().as_str(), Origin::HostName)
        );
        let second = open_spool(root.path(), None, &header(), cap).unwrap();
        assert_eq!(second.origin, Origin::HostNameInUse);
        assert!(is_suffixed(&first.header.runner, &second.header.runner));
        assert_eq!(second.spool.dir(), root.path().join(&second.header.runner));

        let given = Some(first.header.runner.as_str());
        let error = open_spool(root.path(), given, &header(), cap)
            .err()
            .expect("in use");
        assert!(error.in_use, "{error}");

        // The second agent ends without draining: a third one, while the
        // first still runs, takes its spool rather than a new one.
        let left = second.header.runner.clone();
        drop(second);
        let third = open_spool(root.path(), None, &header(), cap).unwrap();
        assert_eq!(
            (third.header.runner.as_str(), third.origin),
            (left.as_str(), Origin::HostNameInUse)
        );
    }
}
