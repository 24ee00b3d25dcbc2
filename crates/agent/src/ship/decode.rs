//! A spooled line made a record to ship: parsed with the model's parser
//! when it is read back, so capturing it cost only a copy.

use jiff::Timestamp;
use tailwater_model::wire::IngestRecord;
use tailwater_model::{parse_line, FieldsJson};

use crate::line::Line;

/// What a captured line becomes when it is shipped: parsed with the model's
/// parser for level, request id, time and fields; invalid UTF-8 replaced
/// and marked; a line naming no request of its own belongs to the one in
/// flight when it was read. A piece of a long line says `continued`; a kept
/// progress state says how many states it stands for (`progress_updates`)
/// and whether it is the final one (`progress_final`).
pub fn parse_captured(seq: u64, stamped: Timestamp, line: &Line<'_>) -> IngestRecord {
    // Valid UTF-8 is checked the fast way first; the lossy walk is for the
    // rare line that is not.
    let text = match std::str::from_utf8(line.bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line.bytes),
    };
    let invalid_utf8 = matches!(text, std::borrow::Cow::Owned(_));
    let parsed = parse_line(&text);
    let mut fields = parsed.fields;
    if line.continued || line.progress.is_some() {
        // A piece of a long line or a progress bar: rare enough to parse.
        let mut map = fields.to_map();
        if line.continued {
            map.insert("continued".into(), true.into());
        }
        if let Some(progress) = line.progress {
            map.insert("progress_updates".into(), progress.updates.into());
            if progress.last {
                map.insert("progress_final".into(), true.into());
            }
        }
        fields = FieldsJson::from_map(&map);
    }
    IngestRecord {
        seq,
        ts: parsed.ts.unwrap_or(stamped),
        stream: line.stream,
        level: parsed.level.unwrap_or_default(),
        request_id: parsed
            .request_id
            .or_else(|| line.in_request.map(str::to_owned)),
        message: parsed.message,
        fields,
        invalid_utf8,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tailwater_model::{Level, Stream};

    use super::*;
    use crate::recorder::tests::{limits, line};
    use crate::recorder::Recorder;

    fn config(dir: &Path) -> crate::recorder::Options {
        crate::recorder::Options::new("app", dir, 1 << 20)
    }

    #[test]
    fn lines_are_sequenced_parsed_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let recorder = Recorder::open(&config(dir.path())).unwrap();
        recorder.record_line(line(r#"{"level":"warn","msg":"hot","requestId":"r9"}"#));
        recorder.record_line(Line {
            continued: true,
            in_request: Some("req-1"),
            ..Line::new(Stream::Stderr, b"bad \xff byte")
        });
        let batch = recorder
            .next_batch(&limits(10), &mut parse_captured)
            .unwrap()
            .unwrap();
        assert_eq!(batch.body.boot, recorder.boot());
        let [first, second] = &batch.body.records[..] else {
            panic!("two records")
        };
        assert_eq!(
            (first.seq, first.level, first.message.as_str()),
            (0, Level::Warn, "hot")
        );
        assert_eq!(first.request_id.as_deref(), Some("r9"));
        assert_eq!((second.seq, second.stream), (1, Stream::Stderr));
        assert!(second.invalid_utf8);
        assert_eq!(second.message, "bad \u{fffd} byte");
        assert_eq!(second.request_id.as_deref(), Some("req-1"));
        assert_eq!(second.fields.to_map().get("continued"), Some(&true.into()));
        // Line bytes are the line as written, not the parsed message.
        assert_eq!(batch.receipt.line_bytes, 45 + 10);
    }

    #[test]
    fn a_captured_line_is_parsed_with_what_capture_knew() {
        let stamped = Timestamp::from_second(1_700_000_000).unwrap();
        let json = parse_captured(
            0,
            stamped,
            &Line {
                in_request: Some("in-flight"),
                ..Line::new(
                    Stream::Stderr,
                    br#"{"level":"error","msg":"boom","request_id":"own"}"#,
                )
            },
        );
        assert_eq!(
            (
                json.level,
                json.message.as_str(),
                json.request_id.as_deref()
            ),
            (Level::Error, "boom", Some("own")),
            "a line's own request id wins over the one in flight"
        );
        assert_eq!(
            (json.stream, json.ts, json.seq),
            (Stream::Stderr, stamped, 0)
        );
        let bar = parse_captured(
            1,
            stamped,
            &Line {
                stream: Stream::Stdout,
                bytes: b"50%|#####     | 5/10 \xff",
                continued: true,
                in_request: Some("in-flight"),
                progress: Some(crate::line::Progress {
                    updates: 7,
                    last: true,
                }),
            },
        );
        assert_eq!(bar.request_id.as_deref(), Some("in-flight"));
        assert!(bar.invalid_utf8);
        assert_eq!(bar.message, "50%|#####     | 5/10 \u{fffd}");
        let bar_fields = bar.fields.to_map();
        assert_eq!(bar_fields["continued"], true);
        assert_eq!(bar_fields["progress_updates"], 7);
        assert_eq!(bar_fields["progress_final"], true);
    }
}
