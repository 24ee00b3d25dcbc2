//! A full disk under the server (a size-capped tmpfs it fills,
//! [`Tmpfs`]).

use super::*;

#[test]
fn a_full_disk_refuses_ingest_keeps_answering_and_takes_every_line_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // Declared before the server, so unmounted after it is killed.
    let disk = Tmpfs::mount("16m");
    let data = disk.path().join("data");
    // Small memtables: flushes into parts meet the full disk too.
    let flags = ["--memtable-max-bytes", "200000"];
    let mut server = TestServer::start_on_with(ANY_PORT, &data, &flags);
    let port = server.port;
    // The agents' spools stay off the full disk: the server's is the fault.
    server.spool = dir.path().join("spool");
    // A ballast leaves the server 64 KiB: less than a
    // memtable's log.
    let ballast = disk.path().join("ballast");
    let headroom = 64 * 1024;
    std::fs::write(&ballast, vec![0u8; (disk.free_bytes() - headroom) as usize]).unwrap();

    let runners: Vec<String> = (0..AGENTS).map(|n| format!("fault-{n}")).collect();
    let mut agents = start_agents(&server, &runners, CHUNKS);
    let mut probe_seq = 0;
    let mut probe = || {
        probe_seq += 1;
        let batch = ingest_batch("probe", "probe-runner", probe_seq..probe_seq + 1);
        http("POST", port, "/v1/ingest", Some(TOKEN), Some(&batch)).0
    };
    wait_for(
        "the full disk to refuse ingest",
        Duration::from_secs(30),
        || {
            let status = probe();
            assert_ne!(status, 0, "the server stopped answering on a full disk");
            status != 200
        },
    );
    eprintln!("fault rounds: the disk is full: ingest answers {}", probe());
    // Refused, not crashed: health and reads are still answered.
    for _ in 0..5 {
        assert_eq!(http("GET", port, "/healthz", None, None).0, 200);
        let (status, body) = http(
            "GET",
            port,
            "/v1/logs?app=faults&limit=5",
            Some(TOKEN),
            None,
        );
        assert_eq!(status, 200, "{body}");
        // Answered (a refusal, or taken into space a flush gave back).
        assert_ne!(probe(), 0, "the server stopped answering ingest");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Space back: the server takes ingest again without a restart, and the
    // agents deliver every line they kept.
    std::fs::remove_file(&ballast).unwrap();
    wait_for("ingest to be taken again", Duration::from_secs(30), || {
        probe() == 200
    });
    wait_agents(&mut agents);
    let (stored, incomplete) = stored_lines(&server);
    assert!(incomplete.is_none(), "{incomplete:?}");
    let missing = missing_lines(&stored, &runners, CHUNKS * CHUNK_LINES);
    assert!(
        missing.is_empty(),
        "{} lines missing after the disk had space again (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );

    // What the full disk left in the log reads back whole after a crash.
    let spool = server.spool.clone();
    server.kill_9();
    let mut server = TestServer::start_on_with(port, &data, &flags);
    server.spool = spool;
    let (stored, _) = stored_lines(&server);
    let missing = missing_lines(&stored, &runners, CHUNKS * CHUNK_LINES);
    assert!(
        missing.is_empty(),
        "{} lines missing after a restart",
        missing.len()
    );
    assert_eq!(metric(&server, "tailwater_store_wal_lost_regions_total"), 0);
}
