//! RunPod's logger's text line. `RunPodLogger` (runpod 1.12) prints, when
//! not on RunPod (no `RUNPOD_ENDPOINT_ID`: a local `--test_input` run,
//! `--rp_serve_api`, or a worker on a fleet of one's own), the level
//! padded to seven characters, then the job's id when the line is a job's:
//!
//! ```text
//! INFO   | worker up
//! INFO   | sync-3f2c9a1e-u1 | Started.
//! WARN   | local_test | queue | long
//! ```
//!
//! (On RunPod it prints a JSON line instead, read as any JSON line.)
//!
//! The id is the word before the first ` | `, when it looks like an id:
//! no spaces, at most [`MAX_JOB_ID_BYTES`], of letters, digits and
//! `-_.:`, with a letter and at least one digit, `-` or `_` (RunPod's ids
//! are UUIDs with a suffix, `sync-…`, `test-…`, or `local_test`). A word
//! of letters alone (`step | 3`), a number or a date (`3 | done`,
//! `2026-12-07 | nightly`) is the message's, as RunPod wrote it outside a
//! job.

use crate::record::Level;

use super::ParsedLine;

/// The levels RunPod's logger prints (and tailwater's drop-in `RunPodLogger`
/// with its `TIP`), as they are written.
const LEVELS: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "TIP"];

/// The width RunPod pads the level to (`message_level.ljust(7)`).
const LEVEL_WIDTH: usize = 7;

/// The longest job id read from a line; a longer word is the message's.
pub const MAX_JOB_ID_BYTES: usize = 128;

/// The line's level, job id and message; `None` when it is not RunPod's.
pub(super) fn parse(line: &str) -> Option<ParsedLine> {
    let padded = line.get(..LEVEL_WIDTH)?;
    let rest = line.get(LEVEL_WIDTH..)?.strip_prefix("| ")?;
    let name = padded.trim_end_matches(' ');
    if !LEVELS.contains(&name) {
        return None;
    }
    let level = Level::from_name(name)?;
    let (request_id, message) = match rest.split_once(" | ") {
        Some((id, message)) if is_job_id(id) => (Some(id.to_owned()), message),
        _ => (None, rest),
    };
    Some(ParsedLine {
        level: Some(level),
        message: message.to_owned(),
        request_id,
        ..ParsedLine::default()
    })
}

fn is_job_id(word: &str) -> bool {
    (1..=MAX_JOB_ID_BYTES).contains(&word.len())
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        && word.bytes().any(|b| b.is_ascii_alphabetic())
        && word
            .bytes()
            .any(|b| b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    //! Lines as runpod 1.12's `RunPodLogger` prints them outside RunPod.

    use crate::parse::parse_line;
    use crate::record::Level;

    fn read(line: &str) -> (Option<Level>, Option<String>, String) {
        let parsed = parse_line(line);
        assert!(parsed.fields.is_empty(), "{line}: {:?}", parsed.fields);
        (parsed.level, parsed.request_id, parsed.message)
    }

    fn of(
        level: Level,
        id: Option<&str>,
        message: &str,
    ) -> (Option<Level>, Option<String>, String) {
        (Some(level), id.map(str::to_owned), message.to_owned())
    }

    #[test]
    fn a_jobs_lines_carry_its_id() {
        for (line, expected) in [
            (
                "INFO   | sync-3f2c9a1e-7b4d-4c1a-9f0e-2d8b6a5c4e3f-u1 | Started.",
                of(
                    Level::Info,
                    Some("sync-3f2c9a1e-7b4d-4c1a-9f0e-2d8b6a5c4e3f-u1"),
                    "Started.",
                ),
            ),
            (
                "ERROR  | local_test | Captured Handler Exception",
                of(
                    Level::Error,
                    Some("local_test"),
                    "Captured Handler Exception",
                ),
            ),
            (
                "DEBUG  | rp-text-1 | run_job return: {'output': 1}",
                of(
                    Level::Debug,
                    Some("rp-text-1"),
                    "run_job return: {'output': 1}",
                ),
            ),
            (
                "TRACE  | job7 | tick",
                of(Level::Trace, Some("job7"), "tick"),
            ),
            // The message keeps every ` | ` after the id.
            (
                "WARN   | test-1 | queue | long",
                of(Level::Warn, Some("test-1"), "queue | long"),
            ),
            // An empty message.
            ("INFO   | job-1 | ", of(Level::Info, Some("job-1"), "")),
        ] {
            assert_eq!(read(line), expected, "{line}");
        }
    }

    #[test]
    fn lines_outside_a_job_have_no_request() {
        for (line, expected) in [
            ("INFO   | worker up", of(Level::Info, None, "worker up")),
            (
                "DEBUG  | Retrieved local job: {'id': 'local_test'}",
                of(
                    Level::Debug,
                    None,
                    "Retrieved local job: {'id': 'local_test'}",
                ),
            ),
            // tailwater's drop-in logger prints RunPod's TIP.
            (
                "TIP    | use a bigger gpu",
                of(Level::Info, None, "use a bigger gpu"),
            ),
            // A word of letters alone, a phrase, or a word too long is
            // the message's, not an id.
            ("DEBUG  | step | 3", of(Level::Debug, None, "step | 3")),
            (
                "INFO   | loss is 0.2 | lr 3e-4",
                of(Level::Info, None, "loss is 0.2 | lr 3e-4"),
            ),
            ("ERROR  | a/b | c", of(Level::Error, None, "a/b | c")),
            ("INFO   | 3 | done", of(Level::Info, None, "3 | done")),
            (
                "INFO   | 2026-12-07 | nightly",
                of(Level::Info, None, "2026-12-07 | nightly"),
            ),
            (
                "INFO   | 10:00:00.5 | tick",
                of(Level::Info, None, "10:00:00.5 | tick"),
            ),
        ] {
            assert_eq!(read(line), expected, "{line}");
        }
        let long = format!("INFO   | j{} | m", "1".repeat(super::MAX_JOB_ID_BYTES));
        assert_eq!(read(&long).1, None);
        let longest = format!("INFO   | j{} | m", "1".repeat(super::MAX_JOB_ID_BYTES - 1));
        assert_eq!(read(&longest).1.unwrap().len(), super::MAX_JOB_ID_BYTES);
    }

    #[test]
    fn only_runpods_exact_layout_is_read_for_an_id() {
        // Other `LEVEL | msg` lines keep their level, read by the general
        // pipe prefix, and nothing is taken for an id.
        for (line, level, message) in [
            ("INFO | job-1 | msg", Level::Info, "job-1 | msg"),
            ("info   | job-1 | msg", Level::Info, "job-1 | msg"),
            ("WARNING| job-1 | msg", Level::Warn, "job-1 | msg"),
            ("INFO    | job-1 | msg", Level::Info, "job-1 | msg"),
        ] {
            assert_eq!(read(line), of(level, None, message), "{line}");
        }
        // Not a level, or a multi-byte character where the padding is.
        for line in ["NOTICE | job-1 | msg", "INFÖ  | job-1 | msg", "INFO", ""] {
            assert_eq!(parse_line(line).request_id, None, "{line}");
        }
    }
}
