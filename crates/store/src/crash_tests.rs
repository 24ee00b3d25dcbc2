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
