//! Damage in the write-ahead log of a real store: a flipped byte in an
//! acknowledged batch, a torn tail, a damaged last frame, a torn write into
//! a reused file, damage at the end of a segment a later one follows.

use std::ops::Range;
use std::os::unix::fs::PermissionsExt;

use jiff::Timestamp;
use tailwater_model::wire::IngestBatch;
use tailwater_model::{Filter, Query};

use super::test_support::{batch_of, record};
use super::*;

/// Records `seqs` of `runner`, message `"{runner} {seq}"`.
fn batch(runner: &str, seqs: Range<u64>) -> IngestBatch {
    let records = seqs
        .map(|seq| record(seq, Timestamp::now(), format!("{runner} {seq}")))
        .collect();
    batch_of("sdxl", runner, records)
}

/// A store that flushes nothing by itself: records stay in the log.
fn open(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            background: false,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn messages(store: &Store) -> Vec<String> {
    let page = store
        .query(
            "t",
            &Query {
                limit: 1000,
                ..Query::default()
            },
        )
        .unwrap();
    let mut messages: Vec<String> = page.records.into_iter().map(|r| r.message).collect();
    messages.sort();
    messages
}

fn expected(runs: &[(&str, Range<u64>)]) -> Vec<String> {
    let mut messages: Vec<String> = runs
        .iter()
        .flat_map(|(runner, seqs)| seqs.clone().map(move |seq| format!("{runner} {seq}")))
        .collect();
    messages.sort();
    messages
}

/// The byte range of each frame of a log segment of the current format.
fn frames(bytes: &[u8]) -> Vec<Range<usize>> {
    let mut frames = Vec::new();
    let mut pos = 8;
    while pos + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        frames.push(pos..pos + 16 + len);
        pos += 16 + len;
    }
    frames
}

/// Flips one byte in the middle of frame `frame` of segment `segment`;
/// returns the file as it was after the flip, and the frame's range.
fn flip(dir: &Path, segment: u64, frame: usize) -> (Vec<u8>, Range<usize>) {
    let path = wal_path(dir, segment);
    let mut bytes = std::fs::read(&path).unwrap();
    let range = frames(&bytes)[frame].clone();
    bytes[(range.start + range.end) / 2] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    (bytes, range)
}

fn damaged_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(DAMAGED_DIR))
        .map(|entries| entries.map(|entry| entry.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn a_flipped_byte_loses_only_its_batch_and_the_loss_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for first in (0..50).step_by(10) {
        store.append("t", batch("r1", first..first + 10)).unwrap();
    }
    assert_eq!(store.last_id(), 50);
    // Dropped without a flush: every batch is only in the log.
    drop(store);
    let (damaged, frame) = flip(dir.path(), 1, 2);

    let store = open(dir.path());
    assert_eq!(
        messages(&store),
        expected(&[("r1", 0..20), ("r1", 30..50)]),
        "every batch after the damaged one is kept"
    );
    let report = store.recovery_report().clone();
    assert_eq!(report.damage.len(), 1);
    let loss = &report.damage[0];
    assert_eq!(loss.kind, DamageKind::Lost);
    assert_eq!(
        (loss.segment, loss.offset, loss.bytes),
        (1, frame.start as u64, frame.len() as u64)
    );
    assert_eq!((loss.after_id, loss.before_id), (Some(20), Some(31)));
    assert_eq!(loss.records, Some(10));
    let (tenant, labels) = loss.owner.clone().expect("the frames around it are r1's");
    assert_eq!((tenant.as_str(), labels.runner.as_str()), ("t", "r1"));

    // The segment as it was is kept aside, readable by its owner only.
    let copy = loss.copy.clone().unwrap();
    assert_eq!(damaged_files(dir.path()), std::slice::from_ref(&copy));
    assert_eq!(std::fs::read(&copy).unwrap(), damaged);
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let counters = store.counters();
    assert_eq!(
        (
            counters.wal_lost_regions,
            counters.wal_lost_bytes,
            counters.wal_lost_records,
            counters.wal_torn_tail_bytes
        ),
        (1, frame.len() as u64, 10, 0)
    );

    // New ids go on above every id acknowledged: a tail resuming after
    // the last one it got (50) gets the new records.
    assert!(store.last_id() >= 50);
    store.append("t", batch("r1", 50..55)).unwrap();
    let after = store.read_after("t", &Filter::default(), 50, 100);
    assert_eq!(
        after.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(),
        ["r1 50", "r1 51", "r1 52", "r1 53", "r1 54"]
    );
    drop(store);

    // The log was rewritten without the damage: nothing to report again,
    // nothing lost since.
    let store = open(dir.path());
    assert_eq!(store.recovery_report(), &RecoveryReport::default());
    assert_eq!(messages(&store), expected(&[("r1", 0..20), ("r1", 30..55)]));
    assert_eq!(damaged_files(dir.path()).len(), 1);
}

#[test]
fn damage_between_two_streams_names_no_owner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", 0..5)).unwrap();
    store.append("t", batch("r2", 0..5)).unwrap();
    store.append("t", batch("r1", 5..10)).unwrap();
    drop(store);
    flip(dir.path(), 1, 1);

    let store = open(dir.path());
    assert_eq!(messages(&store), expected(&[("r1", 0..10)]));
    let loss = &store.recovery_report().damage[0];
    assert_eq!(loss.kind, DamageKind::Lost);
    assert_eq!(loss.records, Some(5));
    assert_eq!(
        loss.owner, None,
        "r1's frames are around it, but it was r2's"
    );
}

#[test]
fn a_torn_tail_is_reported_as_torn_not_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for first in (0..30).step_by(10) {
        store.append("t", batch("r1", first..first + 10)).unwrap();
    }
    drop(store);
    let path = wal_path(dir.path(), 1);
    let bytes = std::fs::read(&path).unwrap();
    let last = frames(&bytes)[2].clone();
    // A crash in the middle of writing the last frame.
    let cut = last.end - 7;
    std::fs::write(&path, &bytes[..cut]).unwrap();

    let store = open(dir.path());
    assert_eq!(messages(&store), expected(&[("r1", 0..20)]));
    let report = store.recovery_report();
    assert_eq!(report.damage.len(), 1);
    let torn = &report.damage[0];
    assert_eq!(torn.kind, DamageKind::TornTail);
    assert_eq!(report.lost().count(), 0, "a torn tail is not lost data");
    assert_eq!(
        (torn.offset, torn.bytes, torn.after_id, torn.records),
        (last.start as u64, (cut - last.start) as u64, Some(20), None)
    );
    let counters = store.counters();
    assert_eq!(
        (counters.wal_lost_regions, counters.wal_torn_tail_bytes),
        (0, (cut - last.start) as u64)
    );
    // Its bytes are kept; the log is cut after the last whole frame.
    let copy = torn.copy.clone().unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), &bytes[last.start..cut]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last.start as u64);
    // The torn frame held ids 21 to 30, maybe acknowledged to nobody, but
    // they are not issued again.
    assert!(store.last_id() >= 30, "{}", store.last_id());
    store.append("t", batch("r1", 20..30)).unwrap();
    assert!(store
        .read_after("t", &Filter::default(), 30, 100)
        .iter()
        .all(|r| r.position > 30));
    assert_eq!(store.read_after("t", &Filter::default(), 30, 100).len(), 10);
}

#[test]
fn a_flipped_byte_in_an_acknowledged_last_frame_is_reported_possibly_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", 0..10)).unwrap();
    store.append("t", batch("r1", 10..20)).unwrap();
    drop(store);
    // Acknowledged (ids 11 to 20), then damaged: nothing after it tells,
    // but it is one whole frame, so no write a crash cut short.
    let (damaged, frame) = flip(dir.path(), 1, 1);

    let store = open(dir.path());
    assert_eq!(messages(&store), expected(&[("r1", 0..10)]));
    let report = store.recovery_report();
    assert_eq!(report.damage.len(), 1);
    let loss = &report.damage[0];
    assert_eq!(loss.kind, DamageKind::PossiblyLost);
    assert_eq!(report.lost().count(), 0, "not known to be acknowledged");
    assert_eq!(report.lost_or_possibly().count(), 1, "but told");
    assert_eq!(
        (loss.offset, loss.bytes, loss.after_id, loss.records),
        (frame.start as u64, frame.len() as u64, Some(10), Some(10)),
        "its ids, 11 to 20, read from its payload"
    );
    assert!(loss.owner.is_some(), "its labels still read");
    let counters = store.counters();
    assert_eq!(
        (
            counters.wal_possibly_lost_regions,
            counters.wal_possibly_lost_records,
            counters.wal_lost_regions,
            counters.wal_torn_tail_bytes
        ),
        (1, 10, 0, 0)
    );
    assert_eq!(
        std::fs::read(loss.copy.as_ref().unwrap()).unwrap(),
        &damaged[frame.clone()],
        "its bytes are kept"
    );
    // Its ids are never issued again.
    assert!(store.last_id() >= 20, "{}", store.last_id());
    store.append("t", batch("r2", 0..3)).unwrap();
    let after = store.read_after("t", &Filter::default(), 20, 100);
    assert_eq!(after.len(), 3, "a tail resuming after id 20 gets them");
}

#[test]
fn a_flipped_byte_in_the_length_of_an_acknowledged_last_frame_is_no_torn_write() {
    for bit in [0x08, 0x80] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.append("t", batch("r1", 0..10)).unwrap();
        store.append("t", batch("r1", 10..20)).unwrap();
        drop(store);
        let path = wal_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let frame = frames(&bytes)[1].clone();
        // The length's first byte: the frame now seems to end inside the
        // file or past its end, as a torn write would.
        bytes[frame.start] ^= bit;
        std::fs::write(&path, &bytes).unwrap();

        let store = open(dir.path());
        let report = store.recovery_report();
        assert_eq!(report.damage.len(), 1, "bit {bit:#x}");
        let loss = &report.damage[0];
        assert_eq!(loss.kind, DamageKind::PossiblyLost, "bit {bit:#x}");
        assert_eq!(
            (loss.after_id, loss.records),
            (Some(10), Some(10)),
            "read from its payload, which its checksum proves whole"
        );
        assert_eq!(store.counters().wal_torn_tail_bytes, 0);
    }
}

/// A crash in the middle of a write into a reused file: the older
/// segment's bytes follow what was written, so the header's length ends
/// the frame inside them. That is no whole frame: a quiet torn tail.
#[test]
fn a_torn_write_into_a_reused_file_stays_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for first in (0..30).step_by(10) {
        store.append("t", batch("r1", first..first + 10)).unwrap();
    }
    drop(store);
    // Reopened: segment 1 is replayed and kept, appends go to segment 2.
    let store = open(dir.path());
    store.append("t", batch("r2", 0..5)).unwrap();
    store.append("t", batch("r2", 5..10)).unwrap();
    drop(store);
    let older = std::fs::read(wal_path(dir.path(), 1)).unwrap();
    let path = wal_path(dir.path(), 2);
    let newer = std::fs::read(&path).unwrap();
    let last = frames(&newer)[1].clone();
    assert!(older.len() > newer.len(), "segment 1 is the longer");
    // Segment 2 as a reused segment 1 holds it when the kill cut its
    // second frame's write in the middle.
    let cut = (last.start + last.end) / 2;
    let mut torn = newer[..cut].to_vec();
    torn.extend_from_slice(&older[cut..]);
    std::fs::write(&path, &torn).unwrap();

    let store = open(dir.path());
    assert_eq!(messages(&store), expected(&[("r1", 0..30), ("r2", 0..5)]));
    let report = store.recovery_report();
    assert_eq!(report.damage.len(), 1, "{report:?}");
    assert_eq!(report.damage[0].kind, DamageKind::TornTail);
    assert_eq!(report.damage[0].offset, last.start as u64);
    assert_eq!(report.lost_or_possibly().count(), 0, "no loss to tell");
    let counters = store.counters();
    assert_eq!(
        (
            counters.wal_possibly_lost_regions,
            counters.wal_lost_regions
        ),
        (0, 0)
    );
}

#[test]
fn damage_at_the_end_of_a_segment_a_later_one_follows_is_lost_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", 0..10)).unwrap();
    store.append("t", batch("r1", 10..20)).unwrap();
    drop(store);
    // Reopened: segment 1 is replayed and kept, appends go to segment 2.
    let store = open(dir.path());
    store.append("t", batch("r1", 20..30)).unwrap();
    drop(store);
    flip(dir.path(), 1, 1);

    let store = open(dir.path());
    assert_eq!(messages(&store), expected(&[("r1", 0..10), ("r1", 20..30)]));
    let report = store.recovery_report();
    assert_eq!(report.damage.len(), 1);
    let loss = &report.damage[0];
    assert_eq!(
        loss.kind,
        DamageKind::Lost,
        "segment 2 was written after it"
    );
    assert_eq!(
        (loss.segment, loss.after_id, loss.before_id),
        (1, Some(10), Some(21))
    );
    assert_eq!(loss.records, Some(10));
    assert!(loss.owner.is_some());
    assert_eq!(report.skipped_ids, 0, "its ids are bounded by segment 2's");
}
