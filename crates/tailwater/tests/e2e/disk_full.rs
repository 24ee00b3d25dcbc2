//! The agent against a server whose disk is full, for real (a filled
//! tmpfs): it is answered 507 with `Retry-After`, waits as long as asked
//! with its lines in the spool, and ships every line once space is freed.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{
    fill, line_containing, lines_of, messages, wait_for, TestServer, Tmpfs, ANY_PORT,
};

#[test]
fn the_agent_waits_as_a_full_disk_asks_and_ships_every_line_after() {
    let disk = Tmpfs::mount("16m");
    let server = TestServer::start_on(ANY_PORT, &disk.path().join("data"));
    let filler = disk.path().join("filler");
    fill(&filler);

    // The agent's spool on another disk, with room.
    let spool = tempfile::tempdir().unwrap();
    let mut agent = server
        .command(&[
            "run",
            "--app",
            "fulldisk",
            "--runner",
            "fulldisk-runner",
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 50); do echo line $i; done",
        ])
        .env("TAILWATER_SPOOL", spool.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = lines_of(agent.stderr.take().unwrap());
    let told = line_containing(&stderr, "cannot store", Duration::from_secs(20))
        .unwrap_or_else(|seen| panic!("the agent never said the server cannot store: {seen:#?}"));
    let refused_at = Instant::now();
    assert!(
        told.contains("cannot store logs now (507")
            && told.contains("as it asks")
            && told.contains("the lines stay in the spool"),
        "{told}"
    );

    std::fs::remove_file(&filler).unwrap();
    let mut records = Vec::new();
    wait_for(
        "every line shipped once space is back",
        Duration::from_secs(40),
        || {
            records = server.logs(&["--app", "fulldisk"]);
            messages(&records)
                .iter()
                .filter(|m| m.starts_with("line "))
                .count()
                >= 50
        },
    );
    assert!(
        refused_at.elapsed() >= Duration::from_secs(9),
        "the agent sent again after {:?}, before the 10 s the server asked",
        refused_at.elapsed()
    );
    let shipped: Vec<&str> = messages(&records)
        .into_iter()
        .filter(|m| m.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
    assert_eq!(shipped, expected, "every line once, in order");
    assert!(agent.wait().unwrap().success());
}
