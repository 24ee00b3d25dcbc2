//! `tailwater export` against the real server: a million lines in bounded
//! server memory, complete and in order; text to stdout; gzip to a file;
//! and a failed export leaves no file behind.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

/// Stores `count` records of runner `runner` (app `export`), in batches.
fn ingest(server: &TestServer, runner: &str, count: u64) {
    const BATCH: u64 = 20_000;
    let ts = jiff::Timestamp::now();
    for start in (0..count).step_by(BATCH as usize) {
        let records: Vec<String> = (start..(start + BATCH).min(count))
            .map(|seq| {
                // Times rise with seq, so time order is seq order.
                let at = ts + jiff::SignedDuration::from_micros(seq as i64);
                format!(
                    r#"{{"seq":{seq},"ts":"{at}","stream":"stdout","message":"line {seq} of the export test"}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"app":"export","runner":"{runner}","boot":"b","records":[{}]}}"#,
            records.join(",")
        );
        let (status, answer) = http("POST", server.port, "/v1/ingest", Some(TOKEN), Some(&body));
        assert_eq!(status, 200, "{answer}");
    }
}

/// A field of `/proc/PID/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn a_million_line_export_is_complete_in_order_and_the_server_memory_stays_bounded() {
    const LINES: u64 = 1_000_000;
    // What the export holds, alone: settling (the store writing idle parts
    // again at `--merge-zstd-level`) would start in the idle moment after
    // the ingest and run beside the export, with its own compressor and
    // blocks (about 70 MiB more here), which this bound is not about.
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start_on_with(
        super::common::ANY_PORT,
        data.path(),
        &["--merge-zstd-level", "3"],
    );
    let started = Instant::now();
    ingest(&server, "r1", LINES);
    ingest(&server, "other", 1_000); // filtered out
    eprintln!("ingested {LINES} lines in {:?}", started.elapsed());

    // The peak from here on: reset the high-water mark (clear_refs 5) and
    // also sample the resident size, in case the reset is not allowed.
    let pid = server.pid();
    let baseline = proc_status_kib(pid, "VmRSS");
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while stopped.recv_timeout(Duration::from_millis(5)).is_err() {
            peak = peak.max(proc_status_kib(pid, "VmRSS"));
        }
        peak
    });

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.ndjson");
    let output = server
        .command(&[
            "export", "--app", "export", "--runner", "r1", "--format", "ndjson", "-o",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stop.send(()).unwrap();
    let sampled_peak = sampler.join().unwrap();
    let peak = if reset {
        proc_status_kib(pid, "VmHWM").max(sampled_peak)
    } else {
        sampled_peak
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("exported 1000000 lines"), "{stderr}");

    let export_kib = std::fs::metadata(&path).unwrap().len() / 1024;
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "export {export_kib} KiB; server rss {baseline} KiB, peak {peak} KiB (reset: {reset})"
    );
    assert!(export_kib > 100 * 1024, "a big export: {export_kib} KiB");
    assert!(
        growth < 64 * 1024 && growth < export_kib / 4,
        "the server grew by {growth} KiB for an export of {export_kib} KiB"
    );

    // Complete and in order: every line the next seq of r1, each its own id;
    // one line in 10 000 read whole as a record in the API's shape.
    let number_after = |line: &str, key: &str| -> u64 {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + key.len();
        let digits = line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap();
        digits.parse().unwrap()
    };
    let mut expected_seq = 0;
    let mut last_id = String::new();
    for line in BufReader::new(std::fs::File::open(&path).unwrap()).lines() {
        let line = line.unwrap();
        assert_eq!(number_after(&line, r#""seq":"#), expected_seq);
        assert!(line.contains(r#""runner":"r1""#), "{line}");
        // An id is opaque (22 characters of base64url), one per record.
        let id = line
            .strip_prefix(r#"{"id":""#)
            .and_then(|rest| rest.get(..22))
            .unwrap_or_else(|| panic!("no id first in {line}"));
        assert_ne!(id, last_id, "{line}");
        last_id = id.to_owned();
        if expected_seq % 10_000 == 0 {
            let record: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(record["app"], "export");
            assert_eq!(record["tenant"], "default");
            assert_eq!(
                record["message"],
                format!("line {expected_seq} of the export test")
            );
            assert_eq!(record["stream"], "stdout");
        }
        expected_seq += 1;
    }
    assert_eq!(expected_seq, LINES);
}

#[test]
fn export_writes_text_to_stdout_and_gzip_to_a_file() {
    let server = TestServer::start();
    ingest(&server, "r1", 3_000);

    let output = server
        .command(&["export", "--runner", "r1", "--grep", "line 2999"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.ends_with(" export r1 stdout INFO  line 2999 of the export test\n"),
        "{text}"
    );
    // No progress bar when stderr is not a terminal, and no summary on stdout.
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r1.log.gz");
    let output = server
        .command(&["export", "--runner", "r1", "--gzip", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut plain = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut plain)
        .unwrap();
    let lines: Vec<&str> = plain.lines().collect();
    assert_eq!(lines.len(), 3_000);
    assert!(lines[0].ends_with("line 0 of the export test"));
    assert!(lines[2_999].ends_with("line 2999 of the export test"));

    // A refused export says why and leaves no file.
    let path = dir.path().join("refused.log");
    let output = server
        .command(&["export", "--level", "loud", "-o"])
        .arg(&path)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown level"));
    assert!(!path.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn on_a_terminal_export_shows_a_progress_bar_with_bytes_and_lines() {
    let server = TestServer::start();
    ingest(&server, "r1", 3_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r1.log");
    // script(1) runs the command on a pseudo-terminal and copies what it
    // draws to stdout.
    let command = format!(
        "{} export --runner r1 -o {}",
        binary(),
        path.to_str().unwrap()
    );
    let output = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("TAILWATER_SERVER", server.url())
        .env("TAILWATER_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success());
    let screen = String::from_utf8_lossy(&output.stdout);
    // `exporting 1.2 MiB (…/s), 3000 lines, 0s`, then cleared.
    assert!(screen.contains("exporting "), "{screen}");
    assert!(screen.contains(" lines, "), "{screen}");
    assert!(screen.contains("exported 3000 lines"), "{screen}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().lines().count(),
        3_000
    );
}

/// Flips one byte in the middle of the first block of the one part of app
/// `app` under the server data directory `data`, once it is flushed.
fn damage_a_block_of(data: &std::path::Path, app: &str) {
    use std::os::unix::fs::FileExt;
    use tailwater_store::part::{reader::Part, EXTENSION};
    let parts = || {
        let mut found = Vec::new();
        let mut stack = vec![data.join("store/parts")];
        while let Some(folder) = stack.pop() {
            for path in std::fs::read_dir(&folder)
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path())
            {
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|ext| ext == EXTENSION) {
                    found.push(path);
                }
            }
        }
        found
    };
    let mut damaged = None;
    wait_for("the app's part", Duration::from_secs(30), || {
        damaged = parts()
            .into_iter()
            .find(|path| Part::open(path).is_ok_and(|part| part.footer.partition.app == app));
        damaged.is_some()
    });
    let damaged = damaged.unwrap();
    let block = Part::open(&damaged).unwrap().footer.blocks[0].clone();
    let at = block.offset + u64::from(block.len) / 2;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&damaged)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], at).unwrap();
}

#[test]
fn cli_reads_that_meet_a_damaged_block_warn_and_export_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on_with(ANY_PORT, &data, &["--memtable-max-bytes", "1"]);
    for (app, runner) in [("sdxl", "r1"), ("other", "r2")] {
        let (status, answer) = http(
            "POST",
            server.port,
            "/v1/ingest",
            Some(TOKEN),
            Some(&ingest_batch(app, runner, 0..30)),
        );
        assert_eq!(status, 200, "{answer}");
    }
    damage_a_block_of(&data, "sdxl");

    let path = dir.path().join("all.log");
    let output = server
        .command(&["export", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("exported 30 lines")
            && stderr.contains("warning: the export is incomplete: 1 damaged block"),
        "{stderr}"
    );
    let written = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 31, "{written}");
    assert!(
        lines[30].starts_with("# tailwater: incomplete: "),
        "{written}"
    );

    // A complete export exits 0.
    let output = server
        .command(&["export", "--app", "other", "--format", "ndjson"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(json_lines(&output.stdout).len(), 30);

    let output = server.command(&["logs", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(json_lines(&output.stdout).len(), 30);
    assert!(
        stderr.contains("warning: the lines shown are incomplete: 1 damaged block"),
        "{stderr}"
    );

    let output = server.command(&["status"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("damaged  1 parts"), "{stdout}");
    assert!(
        stdout.contains("(app sdxl): 1 unreadable blocks (30 records)"),
        "{stdout}"
    );
}
