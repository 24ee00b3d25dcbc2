//! Restarts, torn files and durability: what a later agent finds.

use super::*;

#[test]
fn leftovers_ship_first_and_stay_in_the_ledger_until_adopted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..3);
        spool.flush();
    }
    {
        // Opened, new records written, killed before the leftover was
        // read: nothing is readable meanwhile, and nothing is lost.
        let (mut spool, recovery) = Spool::open(dir.path(), header("b2"), 1 << 20).unwrap();
        assert_eq!(recovery.records, 0, "not read at open");
        append_lines(&mut spool, 0..2);
        assert!(spool.plan_read().is_none(), "the leftover ships first");
        assert!(!spool.leftovers_recovered());
    }
    {
        // Killed again with one leftover adopted, one not: the ledger
        // still names both.
        let (mut spool, mut found) = Spool::open(dir.path(), header("b3"), 1 << 20).unwrap();
        let first = spool.next_leftover().unwrap();
        spool.adopt(first.recover(), &mut found);
        assert_eq!(found.records, 3);
        assert!(!spool.leftovers_recovered());
    }
    let (mut spool, recovery) = Spool::open(dir.path(), header("b4"), 1 << 20).unwrap();
    append_lines(&mut spool, 0..1);
    let mut found = Recovery::default();
    while let Some(leftover) = spool.next_leftover() {
        spool.adopt(leftover.recover(), &mut found);
    }
    assert!(recovery.ledger_problem.is_none());
    assert_eq!(
        (found.records, found.boots.clone()),
        (5, vec!["b1".to_owned(), "b2".to_owned()])
    );
    let shipped = drain(&mut spool);
    let boots: Vec<&str> = shipped.iter().map(|(boot, _, _)| boot.as_str()).collect();
    assert_eq!(boots, ["b1", "b1", "b1", "b2", "b2", "b4"]);
}

#[test]
fn with_machine_durability_records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        spool.set_durability(Durability::Machine);
        append_lines(&mut spool, 0..10);
        spool.flush();
        assert!(spool.take_problems().is_empty());
        // Killed: no shutdown.
    }
    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 10);
    assert_eq!(drain(&mut spool).len(), 10);
}

#[test]
fn a_restart_ships_what_was_not_acknowledged_with_its_boot_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..10);
        let plan = spool.plan_read().unwrap();
        let limits = BatchLimits {
            max_records: 4,
            ..ALL
        };
        let batch = read_batch(&plan, &limits).unwrap();
        assert_eq!((batch.records.len(), batch.stop), (4, Stop::Full));
        spool.acknowledge(&batch.receipt);
        // Flushed, but the agent dies without a shutdown.
        spool.flush();
    }
    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 6);
    assert_eq!(recovery.boots, ["b1"]);
    assert_eq!(recovery.line_bytes, 6 * 9);
    append_lines(&mut spool, 0..2);
    let shipped = drain(&mut spool);
    let expected: Vec<_> = (4..10)
        .map(|seq| ("b1".to_owned(), seq, format!("line {seq:04}")))
        .chain((0..2).map(|seq| ("b2".to_owned(), seq, format!("line {seq:04}"))))
        .collect();
    assert_eq!(shipped, expected);
}

#[test]
fn a_half_written_last_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..5);
        spool.flush();
    }
    let [segment] = &segment_files(dir.path())[..] else {
        panic!("one segment")
    };
    let len = fs::metadata(segment).unwrap().len();
    // Cut the last record in the middle of its JSON.
    let file = OpenOptions::new().write(true).open(segment).unwrap();
    file.set_len(len - 10).unwrap();
    drop(file);

    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 4);
    let record_bytes = (len - 10) - fs::metadata(segment).unwrap().len();
    assert_eq!(recovery.truncated_bytes, record_bytes);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, [0, 1, 2, 3]);
}

#[test]
fn a_record_failing_its_checksum_ends_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..5);
        spool.flush();
    }
    let [segment] = &segment_files(dir.path())[..] else {
        panic!("one segment")
    };
    // Flip a byte of the fourth record's message.
    let mut bytes = fs::read(segment).unwrap();
    let at = bytes.windows(9).position(|w| w == b"line 0003").unwrap();
    bytes[at + 8] = b'X';
    fs::write(segment, &bytes).unwrap();

    let (mut spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
    assert_eq!(recovery.records, 3);
    assert!(recovery.truncated_bytes > 0);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, [0, 1, 2]);
}

#[test]
fn a_segment_without_a_whole_header_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("000000000003.seg"), b"TWSPOOL1\x20\x00").unwrap();
    let (mut spool, recovery) = open_recovered(dir.path(), header("b1"), 1 << 20);
    assert_eq!(recovery.discarded.len(), 1);
    append_lines(&mut spool, 0..1);
    spool.flush();
    // Numbering goes on after the discarded file.
    assert_eq!(
        segment_files(dir.path()),
        [dir.path().join("000000000004.seg")]
    );
}

#[test]
fn the_ledger_survives_a_restart_and_a_torn_ledger_ships_everything_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
        append_lines(&mut spool, 0..8);
        let plan = spool.plan_read().unwrap();
        let batch = read_batch(
            &plan,
            &BatchLimits {
                max_records: 5,
                ..ALL
            },
        )
        .unwrap();
        spool.acknowledge(&batch.receipt);
        spool.flush();
    }
    let ledger = read_ledger(dir.path()).unwrap().unwrap();
    let [segment] = &segment_files(dir.path())[..] else {
        panic!("one segment")
    };
    assert_eq!(segment, &segment_path(dir.path(), ledger.acked_segment));
    assert!(ledger.acked_offset > 0);
    {
        let (spool, recovery) = open_recovered(dir.path(), header("b2"), 1 << 20);
        assert_eq!(recovery.records, 3);
        assert!(recovery.ledger_problem.is_none());
        drop(spool);
    }
    // A torn ledger: nothing counts as acknowledged (the server
    // deduplicates what it has), and the problem is reported.
    let path = dir.path().join(LEDGER_FILE);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let (mut spool, recovery) = open_recovered(dir.path(), header("b3"), 1 << 20);
    assert!(recovery.ledger_problem.is_some());
    assert_eq!(recovery.records, 8);
    let shipped: Vec<u64> = drain(&mut spool).iter().map(|(_, seq, _)| *seq).collect();
    assert_eq!(shipped, (0..8).collect::<Vec<_>>());
}

#[test]
fn a_second_agent_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    let Err(error) = Spool::open(dir.path(), header("b2"), 1 << 20) else {
        panic!("opened twice")
    };
    assert!(error.in_use);
    assert!(
        error.message.contains("in use by another `tailwater run`")
            && error
                .message
                .contains(&format!("pid {}", std::process::id())),
        "{error}"
    );
}

#[test]
fn machine_durability_owes_its_fsyncs_to_whoever_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = open_recovered(dir.path(), header("b1"), 1 << 20);
    append_lines(&mut spool, 0..3);
    spool.flush();
    assert!(spool.take_unsynced().is_empty(), "nothing owed by default");
    spool.set_durability(Durability::Machine);
    let _ = spool.take_unsynced();
    append_lines(&mut spool, 3..6);
    spool.flush();
    let owed = spool.take_unsynced();
    assert!(!owed.is_empty(), "the segment flushed to is owed an fsync");
    owed.sync(dir.path()).unwrap();
    assert!(spool.take_unsynced().is_empty(), "owed once");
    assert_eq!(drain(&mut spool).len(), 6);
}
