//! Folder names whatever users name tenants and apps, retention that
//! deletes only its own partition's files, and owner-only file modes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use tailwater_model::wire::IngestBatch;
use tailwater_model::Query;

use super::test_support::{batch_of, record};
use super::*;

fn batch(app: &str, runner: &str, count: u64, ts: Timestamp) -> IngestBatch {
    let records = (0..count)
        .map(|seq| record(seq, ts, format!("line {seq} of {app}")))
        .collect();
    batch_of(app, runner, records)
}

fn apps(store: &Store, tenant: &str) -> std::collections::BTreeMap<String, usize> {
    let page = store
        .query(
            tenant,
            &Query {
                limit: 10_000,
                ..Query::default()
            },
        )
        .unwrap();
    let mut apps = std::collections::BTreeMap::new();
    for record in page.records {
        *apps.entry(record.app).or_default() += 1;
    }
    apps
}

/// Every file and folder under `dir`, itself excluded.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            found.push(path);
        }
    }
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn folder_names_stay_short_and_distinct_whatever_the_names() {
    let long = "a".repeat(200);
    let odd = "é".repeat(32); // 64 bytes, none of them plain
    let names = [
        long.clone(),
        format!("{long}b"),
        odd.clone(),
        "a.".into(),
        "x-612e".into(),
        "a_".into(),
        "../up".into(),
        String::new(),
    ];
    let distinct: std::collections::HashSet<String> = names.iter().map(|n| dir_name(n)).collect();
    assert_eq!(distinct.len(), names.len(), "{distinct:?}");
    for name in &names {
        let folder = dir_name(name);
        assert!(folder.len() <= 73, "{folder}");
        assert!(!folder.contains('/') && folder != "." && folder != "..");
    }

    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        for (index, app) in names.iter().enumerate() {
            store
                .append(&odd, batch(app, &format!("r{index}"), 3, now))
                .unwrap();
        }
        store.flush().unwrap();
        assert_eq!(load_parts(dir.path()).unwrap().len(), names.len());
    }
    for path in walk(dir.path()) {
        assert!(path.file_name().unwrap().len() <= 73, "{}", path.display());
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let stored = apps(&store, &odd);
    assert_eq!(stored.len(), names.len());
    assert!(stored.values().all(|count| *count == 3), "{stored:?}");
}

/// `a.` was stored in `x-612e`, the folder an app named `x-612e` uses: in a
/// store written then, the two share a folder, and deleting one by age
/// must leave the other.
#[test]
fn retention_deletes_only_its_own_partition_in_a_shared_folder() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let old = Timestamp::from_second(now.as_second() - 40 * 86_400).unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.append("t", batch("a.", "r1", 5, old)).unwrap();
        store.flush().unwrap();
    }
    // Where a store written before kept it.
    let part = load_parts(dir.path()).unwrap().remove(0);
    let legacy = dir
        .path()
        .join(PARTS_DIR)
        .join("t")
        .join("x-612e")
        .join(&part.footer.partition.day);
    let moved = legacy.join(part.path().file_name().unwrap());
    if part.path() != moved {
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::rename(part.path(), &moved).unwrap();
    }
    drop(part);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.append("t", batch("x-612e", "r2", 7, old)).unwrap();
    store.flush().unwrap();
    assert_eq!(
        apps(&store, "t"),
        [("a.".to_owned(), 5), ("x-612e".to_owned(), 7)].into()
    );

    let mut retention = Retention {
        max_age: Duration::from_secs(30 * 86_400),
        ..Retention::default()
    };
    retention.app_max_age.insert(
        ("t".into(), "x-612e".into()),
        Duration::from_secs(365 * 86_400),
    );
    let deleted = store.apply_retention(&retention, now).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].partition.app, "a.");
    assert!(!moved.exists());
    assert_eq!(apps(&store, "t"), [("x-612e".to_owned(), 7)].into());
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(apps(&store, "t"), [("x-612e".to_owned(), 7)].into());

    // Deleting the last partition of a folder removes the folders it
    // leaves empty.
    let everything = Retention {
        max_age: Duration::from_secs(86_400),
        ..Retention::default()
    };
    assert_eq!(store.apply_retention(&everything, now).unwrap().len(), 1);
    assert!(!dir.path().join(PARTS_DIR).join("t").join("x-612e").exists());
    assert!(dir.path().join(PARTS_DIR).exists());
}

#[test]
fn only_the_owner_can_read_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    {
        let store = Store::open(&root, StoreOptions::default()).unwrap();
        store
            .append("t", batch("a", "r", 3, Timestamp::now()))
            .unwrap();
        store
            .append("u.v", batch("é", "r", 3, Timestamp::now()))
            .unwrap();
        store.flush().unwrap();
        store
            .append("t", batch("a", "r2", 3, Timestamp::now()))
            .unwrap();
        // A damaged part, for the next open to quarantine.
        let broken = root.join(PARTS_DIR).join("t").join("a").join("2020-01-01");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("000000000999.twp"), b"not a part").unwrap();
    }
    let _store = Store::open(&root, StoreOptions::default()).unwrap();
    // Quarantined below the same tenant, app and day folders.
    assert!(root
        .join(QUARANTINE_DIR)
        .join("t/a/2020-01-01/000000000999.twp")
        .exists());
    assert_eq!(mode(&root), 0o700);
    let mut kinds: std::collections::BTreeSet<String> = Default::default();
    for path in walk(&root) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "2020-01-01" {
                // The folder the test made itself.
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                kinds.insert("folder".into());
            }
        } else if name != "000000000999.twp" {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            let kind = path
                .extension()
                .map_or(name, |e| e.to_string_lossy().into_owned());
            kinds.insert(kind);
        }
    }
    assert_eq!(
        kinds,
        ["LOCK", "folder", "log", "twp"].map(String::from).into()
    );
}

fn count(store: &Store, tenant: &str) -> usize {
    apps(store, tenant).values().sum()
}

/// `blocked`'s folder cannot be made (a file is in its place): its records
/// stay readable and durable, its appends are refused with an error that
/// names no path, and `other` goes on as if nothing happened, flushed into
/// parts. Once the folder can be made, nothing was lost.
#[test]
fn a_partition_that_cannot_be_written_stalls_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let options = || StoreOptions {
        memtable_max_bytes: 64 << 10,
        ..StoreOptions::default()
    };
    let in_parts = |tenant: &str| -> u64 {
        load_parts(dir.path())
            .unwrap()
            .iter()
            .filter(|part| part.footer.partition.tenant == tenant)
            .map(|part| part.footer.records)
            .sum()
    };
    let blocker = dir.path().join(PARTS_DIR).join("blocked");
    std::fs::create_dir_all(dir.path().join(PARTS_DIR)).unwrap();
    std::fs::write(&blocker, b"in the way").unwrap();
    {
        let store = Store::open(dir.path(), options()).unwrap();
        store.append("blocked", batch("a", "r", 5, now)).unwrap();
        store.append("other", batch("b", "r0", 5, now)).unwrap();
        let error = store.flush().unwrap_err();
        assert!(
            matches!(&error, StoreError::PartitionUnwritable { tenant, .. } if tenant == "blocked"),
            "{error}"
        );
        let message = error.to_string();
        assert!(!message.contains(dir.path().to_str().unwrap()), "{message}");
        assert_eq!(in_parts("other"), 5);
        assert_eq!(count(&store, "blocked"), 5);

        let refused = store
            .append("blocked", batch("a", "r2", 5, now))
            .unwrap_err();
        assert!(
            matches!(refused, StoreError::PartitionUnwritable { .. }),
            "{refused}"
        );
        assert_eq!(store.counters().refused_unwritable, 1);
        // A batch dated a year ahead is stored at the store's time, in the
        // day that cannot be written: refused too, not let into memory.
        let year = jiff::SignedDuration::from_hours(24 * 365);
        let ahead = store
            .append("blocked", batch("a", "r3", 5, now + year))
            .unwrap_err();
        assert!(
            matches!(ahead, StoreError::PartitionUnwritable { .. }),
            "{ahead}"
        );
        assert_eq!(store.counters().refused_unwritable, 2);
        // Enough of `other` to fill many memtables: none of its appends
        // waits on `blocked`, and its records reach parts.
        for round in 1..=40u64 {
            let mut more = batch("b", &format!("r{round}"), 200, now);
            for record in &mut more.records {
                record.message = format!("{} {}", record.message, "x".repeat(100));
            }
            assert_eq!(store.append("other", more).unwrap().accepted, 200);
        }
        let _ = store.flush();
        assert_eq!(in_parts("other"), 5 + 40 * 200);
        assert_eq!(count(&store, "other"), 5 + 40 * 200);
        assert_eq!(count(&store, "blocked"), 5);
    }
    // Still blocked after a restart: its records come back from the log,
    // and `other`'s are not repeated.
    {
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(count(&store, "blocked"), 5);
        assert_eq!(count(&store, "other"), 5 + 40 * 200);
        assert!(store.flush().is_err());
        assert_eq!(count(&store, "blocked"), 5);
        assert_eq!(count(&store, "other"), 5 + 40 * 200);
    }
    std::fs::remove_file(&blocker).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    store.flush().unwrap();
    assert_eq!(in_parts("blocked"), 5);
    assert_eq!(
        wal_segments(dir.path()).unwrap().len(),
        1,
        "only the current segment"
    );
    store.append("blocked", batch("a", "r2", 5, now)).unwrap();
    drop(store);
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(count(&store, "blocked"), 10);
    assert_eq!(count(&store, "other"), 5 + 40 * 200);
}

/// The same while the store runs on its own: the background thread retries
/// the held partition and the other tenant's appends never wait for it.
#[test]
fn a_held_partition_is_retried_until_it_can_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let blocker = dir.path().join(PARTS_DIR).join("blocked");
    std::fs::create_dir_all(dir.path().join(PARTS_DIR)).unwrap();
    std::fs::write(&blocker, b"in the way").unwrap();
    let store = Store::open(
        dir.path(),
        StoreOptions {
            memtable_max_age: Duration::from_millis(50),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store.append("blocked", batch("a", "r", 5, now)).unwrap();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait("appends to blocked are refused", &|| {
        store.append("blocked", batch("a", "r", 6, now)).is_err()
    });
    store.append("other", batch("b", "r", 5, now)).unwrap();
    wait("other is flushed", &|| {
        load_parts(dir.path())
            .unwrap()
            .iter()
            .any(|p| p.footer.partition.tenant == "other")
    });
    std::fs::remove_file(&blocker).unwrap();
    wait("blocked is flushed by a retry", &|| {
        load_parts(dir.path())
            .unwrap()
            .iter()
            .any(|p| p.footer.partition.tenant == "blocked")
    });
    wait("appends to blocked are taken again", &|| {
        store.append("blocked", batch("a", "r", 6, now)).is_ok()
    });
    assert_eq!(count(&store, "blocked"), 6);
}
