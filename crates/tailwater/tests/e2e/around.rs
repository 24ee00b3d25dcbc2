//! `tailwater logs --around ID -C N`: the lines next to one record, from its
//! own runner unless a label flag says otherwise.

use serde_json::Value;

use crate::common::{http, messages, TestServer, TOKEN};

/// Ingests `count` lines of `runner`, one batch each, so the two runners'
/// lines interleave in time.
fn ingest(server: &TestServer, runner: &str, seqs: std::ops::Range<u64>) {
    let records: Vec<Value> = seqs
        .map(|seq| {
            serde_json::json!({
                "seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout",
                "level": "info", "message": format!("{runner} line {seq}")
            })
        })
        .collect();
    let batch = serde_json::json!({
        "app": "ctx", "version": "v1", "runner": runner, "boot": "b1", "records": records
    });
    let (status, answer) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn around_shows_the_lines_next_to_one_record_of_its_runner() {
    let server = TestServer::start();
    for start in (0..20).step_by(4) {
        ingest(&server, "r1", start..start + 4);
        ingest(&server, "r2", start..start + 4);
    }
    let all = server.logs(&["--app", "ctx"]);
    let id = all
        .iter()
        .find(|record| record["message"] == "r1 line 9")
        .expect("stored")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let around = |flags: &[&str]| {
        let output = server
            .command(&[&["logs", "--around", &id, "--json"][..], flags].concat())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let records: Vec<Value> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        records
    };

    // Its own runner's lines, oldest first, the record in the middle.
    let records = around(&["-C", "2"]);
    assert_eq!(
        messages(&records),
        [
            "r1 line 7",
            "r1 line 8",
            "r1 line 9",
            "r1 line 10",
            "r1 line 11"
        ]
    );
    // Ten each way by default (line 9 has nine before it).
    assert_eq!(around(&[]).len(), 20);
    // A label flag of the user's own replaces the record's runner.
    let other = around(&["-C", "3", "--runner", "r2"]);
    assert_eq!(other.len(), 6, "{:?}", messages(&other));
    assert!(messages(&other).iter().all(|m| m.starts_with("r2 ")));
    // Other filters apply beside the runner.
    assert!(around(&["--grep", "nothing-like-this"]).is_empty());

    // In text, the same lines.
    let output = server
        .command(&["logs", "--around", &id, "-C", "1", "--no-color"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].ends_with("r1 line 9"), "{text}");
}

#[test]
fn around_refuses_what_it_cannot_show_in_a_few_words() {
    let server = TestServer::start();
    ingest(&server, "r1", 0..3);
    let fails = |args: &[&str]| {
        let output = server.command(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stderr).unwrap()
    };
    let stderr = fails(&["logs", "--around", "not-an-id"]);
    assert!(stderr.contains("invalid around"), "{stderr}");
    let stderr = fails(&["logs", "--around", "x", "-f"]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let stderr = fails(&["logs", "-C", "3"]);
    assert!(stderr.contains("--around"), "{stderr}");
    let stderr = fails(&["logs", "--around", "x", "-C", "0"]);
    assert!(stderr.contains("--context"), "{stderr}");
}
