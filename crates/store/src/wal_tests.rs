//! The write-ahead log's frames, damage and resynchronisation.

use std::path::Path;

use crate::wal::*;

fn replay_all(path: &Path, segment: u64) -> (Recovered<Vec<u8>>, Vec<Vec<u8>>) {
    let mut payloads = Vec::new();
    let recovered = WalReader::recover(
        path,
        segment,
        |payload| {
            payloads.push(payload.to_vec());
            Some(payload.to_vec())
        },
        |damaged| Some(damaged.to_vec()),
    )
    .unwrap();
    (recovered, payloads)
}

/// The offset of each frame of a segment of this format, and its end.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut pos = MAGIC.len();
    while pos + HEADER_LEN <= bytes.len() {
        offsets.push(pos);
        pos += HEADER_LEN + u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
    }
    offsets
}

fn write_segment(path: &Path, segment: u64, payloads: &[&[u8]]) {
    let mut writer = WalWriter::create(path, segment, None).unwrap();
    for payload in payloads {
        writer.append(payload).unwrap();
    }
}

#[test]
fn frames_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    write_segment(&path, 1, &[b"one", b"", b"three"]);
    let (recovered, payloads) = replay_all(&path, 1);
    assert_eq!(payloads, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
    assert_eq!(recovered.batches, 3);
    assert_eq!(recovered.discarded_bytes(), 0);
    assert_eq!(
        recovered.valid_len(),
        std::fs::metadata(&path).unwrap().len()
    );
}

#[test]
fn torn_tail_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    write_segment(&path, 1, &[b"kept", b"torn away"]);
    let full = std::fs::metadata(&path).unwrap().len();
    // A crash in the middle of the second frame's payload.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - 3)
        .unwrap();

    let (recovered, payloads) = replay_all(&path, 1);
    assert_eq!(payloads, vec![b"kept".to_vec()]);
    assert_eq!(recovered.discarded_bytes(), (HEADER_LEN + 9 - 3) as u64);
    assert_eq!(recovered.valid_len(), (MAGIC.len() + HEADER_LEN + 4) as u64);
    assert!(!recovered.has_gaps(), "a torn tail has no frame after it");
    assert_eq!(recovered.damage[0].before.as_deref(), Some(&b"kept"[..]));
    assert!(!recovered.damage[0].whole_frame, "the file ends inside it");

    // Whole, with a flipped byte: the same place, but one whole frame.
    write_segment(&path, 1, &[b"kept", b"flipped"]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (recovered, _) = replay_all(&path, 1);
    assert!(recovered.damage[0].whole_frame);
    assert_eq!(recovered.damage[0].peeked.as_deref(), Some(&b"flippdd"[..]));

    // A flipped byte in its segment number: the checksum still shows
    // it was written whole, by this segment.
    write_segment(&path, 1, &[b"kept", b"flipped"]);
    let mut bytes = std::fs::read(&path).unwrap();
    let number = MAGIC.len() + HEADER_LEN + 4 + 9;
    bytes[number] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let (recovered, _) = replay_all(&path, 1);
    assert_eq!(
        recovered.damage[0].offset,
        (MAGIC.len() + HEADER_LEN + 4) as u64
    );
    assert!(recovered.damage[0].whole_frame);

    // A flipped bit in its length, making it longer (past the end of
    // the file) or shorter: the checksum over what is there still
    // shows it was written whole, so it is not taken for a torn write.
    for bit in [0x01, 0x40] {
        write_segment(&path, 1, &[b"kept", b"a longer payload, with a flip"]);
        let mut bytes = std::fs::read(&path).unwrap();
        let length = MAGIC.len() + HEADER_LEN + 4;
        bytes[length] ^= bit;
        std::fs::write(&path, &bytes).unwrap();
        let (recovered, payloads) = replay_all(&path, 1);
        assert_eq!(payloads, vec![b"kept".to_vec()], "bit {bit:#x}");
        assert!(recovered.damage[0].whole_frame, "bit {bit:#x}");
        assert_eq!(
            recovered.damage[0].peeked.as_deref(),
            Some(&b"a longer payload, with a flip"[..])
        );
    }
}

#[test]
fn a_damaged_frame_is_skipped_and_the_frames_after_it_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    write_segment(&path, 1, &[b"good", b"flipped", b"after", b"last"]);
    let clean = std::fs::read(&path).unwrap();
    let offsets = frame_offsets(&clean);
    // A byte of the payload, of the checksum, of the segment number,
    // of the length (which then points anywhere): each costs its frame.
    for at in [HEADER_LEN + 3, 5, 9, 1, 0] {
        let mut bytes = clean.clone();
        bytes[offsets[1] + at] ^= 0x5a;
        std::fs::write(&path, &bytes).unwrap();
        let (recovered, payloads) = replay_all(&path, 1);
        assert_eq!(
            payloads,
            vec![b"good".to_vec(), b"after".to_vec(), b"last".to_vec()],
            "flipped at {at} of the frame"
        );
        assert_eq!(recovered.damage.len(), 1);
        let damage = &recovered.damage[0];
        assert_eq!(
            (damage.offset, damage.len),
            (offsets[1] as u64, (offsets[2] - offsets[1]) as u64)
        );
        assert_eq!(damage.before.as_deref(), Some(&b"good"[..]));
        assert_eq!(damage.after.as_deref(), Some(&b"after"[..]));
        assert!(recovered.has_gaps());
        assert_eq!(recovered.end, bytes.len() as u64);
        // Known to be one frame (by its length, or, with its length or
        // number damaged, by its checksum), what is left of it is
        // peeked at.
        assert!(damage.whole_frame, "flipped at {at} of the frame");
        assert!(damage.peeked.is_some(), "flipped at {at} of the frame");

        // Rewritten without it, the segment reads cleanly.
        rewrite(&path, &recovered).unwrap();
        let (again, payloads) = replay_all(&path, 1);
        assert_eq!(payloads.len(), 3);
        assert!(again.damage.is_empty());
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (clean.len() - (offsets[2] - offsets[1])) as u64
        );
    }
}

/// A byte flipped anywhere costs exactly the frame it is in (or the
/// magic alone): every other frame is replayed, in order.
#[test]
fn a_flip_at_any_offset_costs_only_its_frame() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    for seed in 0..300u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let payloads: Vec<Vec<u8>> = (0..rng.random_range(1..8))
            .map(|_| {
                let len = rng.random_range(0..64);
                (0..len).map(|_| rng.random()).collect()
            })
            .collect();
        let slices: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        write_segment(&path, 3, &slices);
        let mut bytes = std::fs::read(&path).unwrap();
        let offsets = frame_offsets(&bytes);
        let at = rng.random_range(0..bytes.len());
        bytes[at] ^= 1 << rng.random_range(0..8);
        std::fs::write(&path, &bytes).unwrap();

        let (recovered, replayed) = replay_all(&path, 3);
        let hit = offsets.iter().rposition(|offset| *offset <= at);
        let expected: Vec<Vec<u8>> = payloads
            .iter()
            .enumerate()
            .filter(|(index, _)| Some(*index) != hit)
            .map(|(_, payload)| payload.clone())
            .collect();
        assert_eq!(replayed, expected, "seed {seed}, flipped at {at}");
        assert_eq!(recovered.damage.len(), 1, "seed {seed}");
        let damage = &recovered.damage[0];
        let (start, end) = match hit {
            None => (0, MAGIC.len()),
            Some(index) => (
                offsets[index],
                offsets.get(index + 1).copied().unwrap_or(bytes.len()),
            ),
        };
        assert_eq!(
            (damage.offset, damage.len),
            (start as u64, (end - start) as u64),
            "seed {seed}, flipped at {at}"
        );
    }
}

#[test]
fn a_frame_replay_rejects_is_damage_and_replay_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    write_segment(&path, 1, &[b"one", b"bad", b"three"]);
    let recovered = WalReader::recover(
        &path,
        1,
        |payload| (payload != b"bad").then_some(()),
        |_| None,
    )
    .unwrap();
    assert_eq!(recovered.batches, 2);
    assert_eq!(recovered.damage.len(), 1);
    assert_eq!(recovered.damage[0].len, (HEADER_LEN + 3) as u64);
}

#[test]
fn a_damaged_magic_costs_nothing_but_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    write_segment(&path, 7, &[b"one", b"two"]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[2] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (recovered, payloads) = replay_all(&path, 7);
    assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(recovered.current);
    assert_eq!(recovered.damage.len(), 1);
    assert_eq!(
        (recovered.damage[0].offset, recovered.damage[0].len),
        (0, 8)
    );
    rewrite(&path, &recovered).unwrap();
    assert!(is_current_format(&path), "the rewrite restores the magic");
}

#[test]
fn a_reused_file_ends_where_its_new_segment_ends() {
    let dir = tempfile::tempdir().unwrap();
    let spare = dir.path().join(SPARE);
    write_segment(&spare, 1, &[b"old one", b"old two", b"old three"]);
    let old_len = std::fs::metadata(&spare).unwrap().len();

    // Segment 2 written over it, cut off by a crash (no drop): the
    // older segment's frames follow its own. One of the same length
    // ends on an old frame's boundary: a clean end.
    let path = dir.path().join("2.log");
    let mut writer = WalWriter::create(&path, 2, Some(&spare)).unwrap();
    assert!(!spare.exists());
    writer.append(b"new one").unwrap();
    std::mem::forget(writer);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), old_len);
    let (recovered, payloads) = replay_all(&path, 2);
    assert_eq!(payloads, vec![b"new one".to_vec()]);
    assert_eq!(recovered.discarded_bytes(), 0);
    assert_eq!(recovered.valid_len(), (MAGIC.len() + HEADER_LEN + 7) as u64);
    assert_eq!(recovered.end, recovered.valid_len());

    // Ending inside an old frame: what follows, up to the next whole
    // old frame, cannot be told from a torn write, and is discarded as
    // one.
    std::fs::rename(&path, &spare).unwrap();
    let path = dir.path().join("3.log");
    let mut writer = WalWriter::create(&path, 3, Some(&spare)).unwrap();
    writer.append(b"new").unwrap();
    std::mem::forget(writer);
    let (recovered, payloads) = replay_all(&path, 3);
    assert_eq!(payloads, vec![b"new".to_vec()]);
    let second_old_frame = (MAGIC.len() + HEADER_LEN + 7) as u64;
    assert_eq!(recovered.end, second_old_frame);
    assert_eq!(
        recovered.discarded_bytes(),
        second_old_frame - recovered.valid_len()
    );
    assert!(!recovered.has_gaps());

    // A segment done (its writer dropped) is cut to its frames.
    std::fs::rename(&path, &spare).unwrap();
    let path = dir.path().join("4.log");
    write_segment(&path, 4, &[b"new"]);
    let (recovered, payloads) = replay_all(&path, 4);
    assert_eq!(payloads, vec![b"new".to_vec()]);
    assert_eq!(recovered.discarded_bytes(), 0);
    assert_eq!(
        recovered.valid_len(),
        std::fs::metadata(&path).unwrap().len()
    );
}

#[test]
fn segments_of_the_first_format_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("1.log");
    let mut bytes = Vec::new();
    for payload in [&b"first"[..], b"", b"damaged", b"second"] {
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
    }
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    let damaged = V1_HEADER_LEN + 5 + V1_HEADER_LEN + V1_HEADER_LEN + 3;
    bytes[damaged] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    assert!(!is_current_format(&path));
    let (recovered, payloads) = replay_all(&path, 1);
    assert_eq!(
        payloads,
        vec![b"first".to_vec(), vec![], b"second".to_vec()]
    );
    assert!(!recovered.current);
    assert_eq!(recovered.damage.len(), 2);
    assert_eq!(recovered.damage[0].len, (V1_HEADER_LEN + 7) as u64);
    assert_eq!(recovered.damage[1].len, 6);
    rewrite(&path, &recovered).unwrap();
    assert!(!is_current_format(&path), "a rewrite keeps the format");
    assert_eq!(replay_all(&path, 1).1.len(), 3);
}

#[test]
fn garbage_length_does_not_allocate_or_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal");
    std::fs::write(&path, [0xff; 64]).unwrap();
    let (recovered, payloads) = replay_all(&path, 1);
    assert!(payloads.is_empty());
    assert_eq!(recovered.discarded_bytes(), 64);
}

#[test]
fn a_spare_is_cut_at_the_end_of_a_frame_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SPARE);
    let payload = [7u8; 100];
    write_segment(&path, 3, &[&payload[..]; 10]);
    let frame = (HEADER_LEN + payload.len()) as u64;
    let whole = MAGIC.len() as u64 + 10 * frame;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);

    // Within the bound: left as it is.
    keep_spare_within(&path, whole);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    // Cut after the last frame that fits, never inside one.
    keep_spare_within(&path, MAGIC.len() as u64 + 3 * frame + 50);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        MAGIC.len() as u64 + 3 * frame
    );
    let (recovered, payloads) = replay_all(&path, 3);
    assert_eq!(payloads.len(), 3);
    assert!(recovered.damage.is_empty());
    // A later segment written over it ends where its own frames do: the
    // older frames after them are whole.
    let reused = dir.path().join("4.log");
    let mut writer = WalWriter::create(&reused, 4, Some(&path)).unwrap();
    writer.append(&payload).unwrap();
    // A crash: the writer is never dropped (which cuts the file).
    std::mem::forget(writer);
    let (recovered, payloads) = replay_all(&reused, 4);
    assert_eq!(payloads, vec![payload.to_vec()]);
    assert!(recovered.damage.is_empty(), "{:?}", recovered.damage);
    assert_eq!(recovered.end, MAGIC.len() as u64 + frame);

    // Smaller than a frame: only the magic; smaller than that: removed.
    write_segment(&path, 5, &[&payload[..]; 2]);
    keep_spare_within(&path, frame);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC.len() as u64);
    keep_spare_within(&path, 0);
    assert!(!path.exists());
    // A spare that is not there is no error.
    keep_spare_within(&path, 0);
}
