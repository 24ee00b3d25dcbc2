//! The agent's grouping of a traceback's lines into one record: any lines,
//! of either stream, of requests, stamped at any pace, with any size cap.

use jiff::{SignedDuration, Timestamp};
use tailwater_agent::line::Line;
use tailwater_agent::ship::group::{Assembler, Grouping};
use tailwater_agent::spool::Assemble;
use tailwater_model::{Level, Stream};

/// Lines for the grouping, and what it must not do with them.
///
/// The first byte sets the size cap (1 to 2017 bytes); then lines, split at
/// `\n`, each led by a byte: bit 0 the stream, bits 1–2 the request (none,
/// `a`, `b`), bits 3–7 how long after the line before it was stamped (in
/// 20 ms steps, so the 200 ms wait is met and passed).
///
/// Each record has its own sequence number, one of a line's; a record of
/// several lines is an error, holds the text of consecutive lines of its
/// stream from its first, and is no longer than the cap unless it is one
/// line.
pub fn multiline(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let grouping = Grouping {
        max_bytes: 1 + usize::from(mode % 64) * 32,
        ..Grouping::default()
    };
    let mut stamp = Timestamp::from_second(1_800_000_000).unwrap();
    let mut lines = Vec::new();
    for raw in rest.split(|&b| b == b'\n') {
        let (&control, bytes) = raw.split_first().unwrap_or((&0, raw));
        stamp += SignedDuration::from_millis(20 * i64::from(control >> 3));
        let stream = if control & 1 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let request = [None, Some("a"), Some("b"), None][usize::from((control >> 1) & 3)];
        lines.push((stamp, stream, request, bytes));
    }
    let mut assembler = Assembler::new(Some(grouping));
    let mut records = Vec::new();
    for (seq, &(ts, stream, request, bytes)) in lines.iter().enumerate() {
        let line = Line {
            in_request: request,
            ..Line::new(stream, bytes)
        };
        assembler.line(seq as u64, ts, &line, &mut records);
    }
    assert_eq!(assembler.finish(None, &mut records), None);
    assert!(
        !assembler.is_open(),
        "nothing is held once no more can come"
    );

    let mut seen = std::collections::HashSet::new();
    for record in &records {
        assert!(
            seen.insert(record.seq),
            "sequence number {} twice",
            record.seq
        );
        let Some(&(ts, stream, request, _)) = lines.get(record.seq as usize) else {
            panic!("sequence number {} is no line's", record.seq)
        };
        assert_eq!((record.ts, record.stream), (ts, stream));
        if !record.fields.to_map().contains_key("multiline") {
            continue;
        }
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.request_id.as_deref(), request);
        let following: Vec<String> = lines[record.seq as usize..]
            .iter()
            .filter(|line| line.1 == stream)
            .map(|line| String::from_utf8_lossy(line.3).into_owned())
            .collect();
        assert!(
            following.join("\n").starts_with(&record.message),
            "a record holds consecutive lines of its stream"
        );
        assert!(
            record.message.len() <= grouping.max_bytes || !record.message.contains('\n'),
            "a record of several lines within the cap"
        );
    }
}
