//! A real store's files after crashes and damage: a torn log tail, a second
//! store on one directory, parts across a reopen, a corrupt part, a damaged
//! block, a crash between writing a part and deleting its log.

use std::fs::OpenOptions;

use super::test_support::*;
use super::*;

#[test]
fn a_torn_log_tail_loses_only_the_unfinished_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", batch("r1", "b", 10..20, 100)).unwrap();
    drop(store);
    let wal = wal_path(dir.path(), 1);
    let len = std::fs::metadata(&wal).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let store = open(dir.path());
    assert_eq!(everything(&store, "t").records.len(), 10);
    // Ids skip past any the torn frame may have held.
    let reopened_at = store.last_id();
    assert!(reopened_at >= 20, "{reopened_at}");
    // The agent retries the batch it never saw acknowledged.
    assert_eq!(
        store
            .append("t", batch("r1", "b", 10..20, 100))
            .unwrap()
            .accepted,
        10
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.last_id(), reopened_at + 10);
    assert_eq!(everything(&store, "t").records.len(), 20);
    assert!(store.recovery_report().damage.is_empty(), "cut once");
}

#[test]
fn a_second_store_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let error = Store::open(dir.path(), StoreOptions::default())
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("in use by another tailwater server"),
        "{error}"
    );
}

#[test]
fn flushed_parts_survive_reopen_and_keep_ingest_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_flushing(dir.path());
    store.append("t", batch("r1", "b", 0..100, 100)).unwrap();
    store.append("t", batch("r1", "b", 100..200, 100)).unwrap();
    assert!(
        wal_segments(dir.path())
            .unwrap()
            .iter()
            .all(|(number, path)| {
                crate::wal::WalReader::recover(path, *number, |_| Some(()), |_| None)
                    .unwrap()
                    .batches
                    == 0
            }),
        "flushed logs are deleted"
    );
    let spare = dir.path().join("wal").join(crate::wal::SPARE);
    assert!(spare.exists(), "one is kept for the next segment to reuse");
    drop(store);
    assert!(!spare.exists(), "a closed store keeps no spare");

    let store = open(dir.path());
    assert_eq!(store.last_id(), 200);
    let again = store.append("t", batch("r1", "b", 150..250, 100)).unwrap();
    assert_eq!((again.accepted, again.duplicates), (50, 50));
    let all = everything(&store, "t");
    assert_eq!(all.records.len(), 250);
    let ids: std::collections::HashSet<u64> = all.records.iter().map(|r| r.position).collect();
    assert_eq!(ids.len(), 250, "ids stay unique across flushes and reopen");
}

#[test]
fn a_corrupt_part_is_quarantined_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_flushing(dir.path());
    store.append("t", batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", batch("r2", "b", 0..10, 100)).unwrap();
    drop(store);
    let parts = load_parts(dir.path()).unwrap();
    assert_eq!(parts.len(), 2);
    let damaged = parts[0].path().to_owned();
    drop(parts);
    let len = std::fs::metadata(&damaged).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&damaged)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let store = open(dir.path());
    let page = everything(&store, "t");
    assert_eq!(messages(&page.records).len(), 10);
    assert!(page.records.iter().all(|r| r.runner == "r2"));
    // Kept below the same folders, so it is still known as the tenant's.
    let below = damaged.strip_prefix(dir.path().join(PARTS_DIR)).unwrap();
    let quarantined = Path::new(QUARANTINE_DIR).join(below);
    assert!(dir.path().join(&quarantined).exists());
    let listed = store.damaged_parts("t");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (&listed[0].path, listed[0].quarantined, &listed[0].partition),
        (&quarantined, true, &None)
    );
    assert!(listed[0].reason.contains("trailer"), "{}", listed[0].reason);
    assert!(store.damaged_parts("other").is_empty());
    drop(store);
    // Still listed after a restart, and its number is never given again.
    let store = open_flushing(dir.path());
    assert_eq!(store.damaged_parts("t")[0].path, quarantined);
    store.append("t", batch("r3", "b", 0..10, 100)).unwrap();
    assert!(dir.path().join(&quarantined).exists());
}

#[test]
fn a_damaged_block_is_skipped_and_the_reader_told_counted_and_listed() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let store = open_flushing(dir.path());
    store.append("t", batch("r1", "b", 0..10, 100)).unwrap();
    store.append("t", batch("r2", "b", 0..10, 100)).unwrap();
    let parts = load_parts(dir.path()).unwrap();
    let damaged = parts
        .iter()
        .find(|part| part.footer.streams[0].labels.runner == "r1")
        .unwrap();
    let (path, block) = (damaged.path().to_owned(), &damaged.footer.blocks[0]);
    // One flipped byte inside the block's compressed bytes.
    let at = block.offset + u64::from(block.len) / 2;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    drop(parts);
    assert_eq!(store.stats()[0].records, 20, "not known yet");

    let page = everything(&store, "t");
    assert_eq!(page.records.len(), 10);
    assert!(page.records.iter().all(|r| r.runner == "r2"));
    assert_eq!(page.skipped.len(), 1, "the page says what it lacks");
    let skipped = &page.skipped[0];
    assert_eq!(
        (&skipped.part, skipped.block, skipped.records),
        (&path, 0, 10)
    );
    assert!(skipped.reason.contains("checksum"), "{}", skipped.reason);
    assert_eq!(store.counters().damaged_block_reads, 1);

    let (records, skipped) = store.read_after_reporting("t", &Filter::default(), 0, 100);
    assert_eq!((records.len(), skipped.len()), (10, 1));
    assert_eq!(store.counters().damaged_block_reads, 2, "each read counts");

    let listed = store.damaged_parts("t");
    assert_eq!(listed.len(), 1);
    let relative = path.strip_prefix(dir.path()).unwrap();
    assert_eq!(
        (
            listed[0].path.as_path(),
            listed[0].quarantined,
            &listed[0].blocks,
            listed[0].records
        ),
        (relative, false, &vec![0], Some(10))
    );
    assert!(store.damaged_parts("other").is_empty());
    assert_eq!(
        store.stats()[0].records,
        10,
        "what cannot be read is not counted"
    );

    // Another tenant's reads neither skip nor see it.
    let other = store.query("other", &Query::default()).unwrap();
    assert!(other.skipped.is_empty());
}

#[test]
fn a_crash_between_part_and_log_deletion_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("t", batch("r1", "b", 0..40, 100)).unwrap();
    // Keep a copy of the log as it was before the flush deleted it.
    let log = std::fs::read(wal_path(dir.path(), 1)).unwrap();
    store.flush().unwrap();
    drop(store);
    std::fs::write(wal_path(dir.path(), 1), log).unwrap();

    let store = open(dir.path());
    let page = everything(&store, "t");
    assert_eq!(page.records.len(), 40);
    assert_eq!(store.last_id(), 40);
}

/// Bytes of every file under the store's log folder.
fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(WAL_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum()
}

/// The store's files as a kill -9 leaves them: copied while it is open,
/// without what closing it does (cutting its segment, removing its spare).
fn crash_image(dir: &Path) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let image = tempfile::tempdir().unwrap();
    copy(dir, image.path());
    image
}

const SPARE_BOUND: u64 = 64 * 1024;

/// A store that flushes only when told, its spare bounded by [`SPARE_BOUND`].
fn open_bounded(dir: &Path) -> Store {
    open_with_spare(dir, SPARE_BOUND)
}

fn open_with_spare(dir: &Path, wal_spare_max_bytes: u64) -> Store {
    Store::open(
        dir,
        StoreOptions {
            background: false,
            wal_spare_max_bytes,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Appends `batches` acknowledged batches of 10 records of about 1 KiB
/// each (frames of about 10 KiB), from sequence number `first` on.
fn append_big(store: &Store, first: u64, batches: u64) {
    for at in 0..batches {
        let seqs = first + at * 10..first + (at + 1) * 10;
        let mut batch = batch("r1", "b", seqs, 100);
        for record in &mut batch.records {
            record.message = format!("{} {}", record.message, "x".repeat(1000));
        }
        assert_eq!(store.append("t", batch).unwrap().accepted, 10);
    }
}

/// Whether recovery reported acknowledged records lost or possibly lost
/// (a torn tail, the rest of a frame a reused file held, is neither).
fn reported_loss(store: &Store) -> bool {
    store
        .recovery_report()
        .damage
        .iter()
        .any(|damage| damage.kind != DamageKind::TornTail)
}

#[test]
fn once_flushed_the_log_keeps_at_most_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_bounded(dir.path());
    // Two rounds: the second segment is written over the first's spare,
    // and the log at rest then holds that reused segment and a spare.
    for round in 0..2 {
        append_big(&store, round * 1000, 100);
        let written = log_bytes(dir.path());
        assert!(written > 1000 * 1000, "{written}");
        store.flush().unwrap();
        let at_rest = log_bytes(dir.path());
        assert!(
            at_rest <= 2 * SPARE_BOUND,
            "round {round}: the log keeps {at_rest} bytes, over twice {SPARE_BOUND}"
        );
    }
    let spare = dir.path().join(WAL_DIR).join(crate::wal::SPARE);
    let spare_len = std::fs::metadata(&spare).unwrap().len();
    assert!(
        spare_len > SPARE_BOUND / 2,
        "a spare is still kept, with frames to write over: {spare_len}"
    );
    assert_eq!(all(&store, "t").len(), 2000);
    drop(store);
    let store = open_bounded(dir.path());
    assert_eq!(all(&store, "t").len(), 2000);
    assert!(store.recovery_report().damage.is_empty());
}

#[test]
fn no_spare_is_kept_with_a_bound_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_spare(dir.path(), 0);
    append_big(&store, 0, 10);
    store.flush().unwrap();
    append_big(&store, 100, 10);
    store.flush().unwrap();
    assert!(!dir.path().join(WAL_DIR).join(crate::wal::SPARE).exists());
    assert!(log_bytes(dir.path()) <= 8, "only a fresh segment's magic");
    assert_eq!(all(&store, "t").len(), 200);
}

#[test]
fn a_crash_right_after_the_spare_is_cut_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_bounded(dir.path());
    append_big(&store, 0, 100);
    store.flush().unwrap();
    // Right after the cut: everything is in parts.
    let image = crash_image(dir.path());
    let spare = image.path().join(WAL_DIR).join(crate::wal::SPARE);
    assert!(std::fs::metadata(&spare).unwrap().len() <= SPARE_BOUND);
    let crashed = open_bounded(image.path());
    assert_eq!(all(&crashed, "t").len(), 1000);
    assert!(crashed.recovery_report().damage.is_empty());
    drop(crashed);

    // The next segment is written over the cut spare: a crash with one
    // acknowledged batch in it (the spare's older frames after it), and
    // one with the segment grown past the spare's end, lose nothing.
    append_big(&store, 1000, 100);
    store.flush().unwrap();
    append_big(&store, 2000, 1);
    let image = crash_image(dir.path());
    let crashed = open_bounded(image.path());
    assert_eq!(all(&crashed, "t").len(), 2010);
    assert!(!reported_loss(&crashed), "{:?}", crashed.recovery_report());
    drop(crashed);
    append_big(&store, 2010, 99);
    assert!(
        log_bytes(dir.path()) > 2 * SPARE_BOUND,
        "past the spare's end"
    );
    let image = crash_image(dir.path());
    let crashed = open_bounded(image.path());
    assert_eq!(all(&crashed, "t").len(), 3000);
    assert!(!reported_loss(&crashed), "{:?}", crashed.recovery_report());
}

#[test]
fn a_spare_a_crash_left_long_is_cut_when_the_store_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with_spare(dir.path(), u64::MAX);
    append_big(&store, 0, 100);
    store.flush().unwrap();
    let image = crash_image(dir.path());
    let spare = image.path().join(WAL_DIR).join(crate::wal::SPARE);
    assert!(std::fs::metadata(&spare).unwrap().len() > SPARE_BOUND);
    let crashed = open_bounded(image.path());
    let kept = log_bytes(image.path());
    assert!(kept <= SPARE_BOUND, "{kept}");
    assert_eq!(all(&crashed, "t").len(), 1000);
}

#[test]
fn an_idle_store_keeps_no_more_of_its_log_than_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    // With the background thread, and no bound on the spare: the idle
    // trim alone.
    let store = Store::open(
        dir.path(),
        StoreOptions {
            wal_spare_max_bytes: u64::MAX,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    append_big(&store, 0, 100);
    store.flush().unwrap();
    append_big(&store, 1000, 100);
    store.flush().unwrap();
    // One acknowledged batch not in parts: its frame stays.
    append_big(&store, 2000, 1);
    let frames = 8 + 16 + 10 * 1000;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while log_bytes(dir.path()) > 2 * frames {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle log still keeps {} bytes",
            log_bytes(dir.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!dir.path().join(WAL_DIR).join(crate::wal::SPARE).exists());
    // A crash now loses nothing acknowledged, and finds no damage: the
    // segment ends with its own frames.
    let image = crash_image(dir.path());
    let crashed = open_bounded(image.path());
    assert_eq!(all(&crashed, "t").len(), 2010);
    assert!(crashed.recovery_report().damage.is_empty());
    drop(crashed);
    // Appends go on after the trim.
    append_big(&store, 2010, 1);
    assert_eq!(all(&store, "t").len(), 2020);
}
