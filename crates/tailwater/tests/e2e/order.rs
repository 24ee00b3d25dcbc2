//! Time and order end to end: a worker printing to stdout and stderr in a
//! tight loop reads back in capture order, each line at a time of its own
//! (microseconds, from the agent's stamp through the store, the API and the
//! cursor), through history, live tail and export; times show milliseconds
//! unless more digits are asked for; records stored at millisecond times,
//! and cursors handed out for them, keep working across a restart.

use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::common::*;

/// Lines the tight loop prints, half to each stream.
const LINES: usize = 2_000;

/// A worker's own lines (not the agent's lifecycle records).
fn worker_lines(records: &[Value]) -> Vec<&Value> {
    records.iter().filter(|r| r["stream"] != "system").collect()
}

fn ts_of(record: &Value) -> Timestamp {
    record["ts"].as_str().unwrap().parse().unwrap()
}

/// What `tailwater ARGS` printed, once it succeeded.
fn stdout_of(server: &TestServer, args: &[&str]) -> String {
    let output = server.command(args).output().unwrap();
    assert!(
        output.status.success(),
        "tailwater {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The digits of a second in the time a text line starts with
/// (`2026-…T10:00:00.123456Z app …`).
fn fraction_digits(line: &str) -> usize {
    let time = line.split(' ').next().unwrap();
    let fraction = time.split_once('.').map_or("", |(_, rest)| rest);
    fraction.trim_end_matches('Z').len()
}

#[test]
fn stdout_and_stderr_in_a_tight_loop_read_back_in_capture_order_everywhere() {
    let server = TestServer::start();
    // A live tail, open before the worker starts.
    let mut follower = server
        .command(&["logs", "--app", "order", "--json", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let tailed = lines_of(follower.stdout.take().unwrap());
    wait_for("the follower's live tail", Duration::from_secs(10), || {
        server.tail_clients() == 1
    });

    let worker = format!(
        "import sys\nfor i in range({LINES}):\n    print(f'line {{i}}', file=sys.stdout if i % 2 == 0 else sys.stderr)\n"
    );
    let output = server
        .command(&["run", "--app", "order", "--runner", "loop", "--"])
        .args([python(), "-c", &worker])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let history = server.logs(&["--app", "order"]);
    let lines = worker_lines(&history);
    assert_eq!(lines.len(), LINES, "every line stored once");
    // Capture order is sequence order; time order (what history is) is
    // that order, every line at a time of its own: no two share a time, as
    // lines of one millisecond did.
    for pair in lines.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            a["seq"].as_u64() < b["seq"].as_u64(),
            "history out of capture order: {a} then {b}"
        );
        assert!(ts_of(a) < ts_of(b), "two lines at one time: {a} then {b}");
    }
    // Each stream's own lines in the order the worker wrote them.
    for (stream, parity) in [("stdout", 0), ("stderr", 1)] {
        let numbers: Vec<usize> = lines
            .iter()
            .filter(|r| r["stream"] == stream)
            .map(|r| r["message"].as_str().unwrap()[5..].parse().unwrap())
            .collect();
        let written: Vec<usize> = (0..LINES).filter(|n| n % 2 == parity).collect();
        assert_eq!(numbers, written, "{stream} in write order");
    }
    // The stamps are microseconds: more digits than a millisecond has.
    assert!(
        lines
            .iter()
            .any(|r| ts_of(r).subsec_nanosecond() % 1_000_000 != 0),
        "no line has a time finer than a millisecond"
    );
    let ids: Vec<&str> = history.iter().map(|r| r["id"].as_str().unwrap()).collect();

    // Newest first, paged by cursor: the same order, reversed.
    let mut backward = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = format!(
            "/v1/logs?app=order&limit=97&direction=backward{}",
            cursor
                .as_ref()
                .map_or(String::new(), |c| format!("&cursor={c}"))
        );
        let (status, body) = http("GET", server.port, &path, Some(TOKEN), None);
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        for record in page["records"].as_array().unwrap() {
            backward.push(record["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    backward.reverse();
    assert_eq!(backward, ids, "paged newest first, by cursor");

    // The live tail: the same records in the same order.
    let mut live = Vec::new();
    while live.len() < ids.len() {
        let (_, line) = tailed
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("the tail stopped at {} of {}", live.len(), ids.len()));
        let record: Value = serde_json::from_str(&line).unwrap();
        live.push(record["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(live, ids, "live tail in capture order");
    follower.kill().unwrap();
    follower.wait().unwrap();

    // Export: NDJSON in the same order with every digit; text at the
    // precision asked for, milliseconds by default.
    let ndjson = stdout_of(&server, &["export", "--app", "order", "--format", "ndjson"]);
    let exported = json_lines(ndjson.as_bytes());
    let exported_ids: Vec<&str> = exported.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(exported_ids, ids, "export in capture order");
    assert_eq!(
        exported.iter().map(ts_of).collect::<Vec<_>>(),
        history.iter().map(ts_of).collect::<Vec<_>>(),
        "export keeps every digit"
    );
    for (flags, digits) in [
        (&[][..], 3),
        (&["--time-precision", "ms"][..], 3),
        (&["--time-precision", "us"][..], 6),
        (&["--time-precision", "ns"][..], 9),
    ] {
        let text = stdout_of(&server, &[&["export", "--app", "order"], flags].concat());
        let text_lines: Vec<&str> = text.lines().collect();
        assert_eq!(text_lines.len(), ids.len());
        assert!(
            text_lines
                .iter()
                .all(|line| fraction_digits(line) == digits),
            "export {flags:?}: {}",
            text_lines[0]
        );
        let shown = stdout_of(
            &server,
            &[
                &["logs", "--app", "order", "-n", "10000", "--time", "utc"],
                flags,
            ]
            .concat(),
        );
        let shown: Vec<&str> = shown.lines().collect();
        assert_eq!(shown.len(), ids.len());
        assert!(
            shown.iter().all(|line| fraction_digits(line) == digits),
            "logs {flags:?}: {}",
            shown[0]
        );
        // The text says the same lines in the same order.
        let messages: Vec<&str> = shown
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        let expected: Vec<&str> = history
            .iter()
            .map(|r| r["message"].as_str().unwrap().rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(messages, expected);
    }
    // Microseconds as stamped: nothing past them to show.
    let us = stdout_of(
        &server,
        &[
            "logs",
            "--app",
            "order",
            "--stream",
            "stdout",
            "-n",
            "1",
            "--time",
            "utc",
            "--time-precision",
            "ns",
        ],
    );
    assert!(us.split(' ').next().unwrap().ends_with("000Z"), "{us}");
    // The API: a text export at the precision asked for; a precision that
    // does not exist, or one for NDJSON (which has every digit), refused.
    let (status, body) = http(
        "GET",
        server.port,
        "/v1/export?app=order&stream=stdout&time_precision=us",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    // (The body comes chunked: its records are the lines naming the app.)
    let records: Vec<&str> = body.lines().filter(|l| l.contains(" order ")).collect();
    assert_eq!(records.len(), LINES / 2, "{body}");
    assert!(
        records.iter().all(|line| fraction_digits(line) == 6),
        "{body}"
    );
    for (query, says) in [
        ("time_precision=s", "use ms, us or ns"),
        ("time_precision=us&time_precision=ns", "give it once"),
        (
            "format=ndjson&time_precision=us",
            "ndjson keeps every digit",
        ),
    ] {
        let path = format!("/v1/export?app=order&{query}");
        let (status, body) = http("GET", server.port, &path, Some(TOKEN), None);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(says), "{query}: {body}");
    }
    // A precision that does not exist is refused, saying which do.
    let refused = server
        .command(&["logs", "--app", "order", "--time-precision", "s"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ms, us, ns"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `print("about to divide"); 1/0`: the print, then the whole traceback,
/// on every read path. Python writes the print's text and its newline
/// apart, then the traceback to stderr at once: the agent must not record
/// the traceback while it waits to echo half a line, nor run the stderr
/// reader before the stdout one that was woken first. Run several times,
/// echoing and quiet, since a race shows only sometimes.
#[test]
fn a_print_and_its_traceback_read_back_in_the_order_written() {
    let server = TestServer::start();
    for run in 0..6 {
        let runner = format!("py-{run}");
        let mut command = server.command(&["run", "--app", "divide", "--runner", &runner]);
        if run % 2 == 1 {
            command.arg("--quiet");
        }
        let output = command
            .args(["--", python(), "-c", "print('about to divide'); 1/0"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        if run % 2 == 0 {
            // The echo has all of it, in the same order.
            let echoed = String::from_utf8_lossy(&output.stdout);
            assert!(echoed.contains("about to divide"), "{echoed}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains("ZeroDivisionError"), "{stderr}");
        }
        let history = server.logs(&["--app", "divide", "--runner", &runner]);
        let lines = worker_lines(&history);
        let messages: Vec<&str> = lines
            .iter()
            .map(|r| r["message"].as_str().unwrap())
            .collect();
        assert_eq!(
            messages,
            [
                "about to divide",
                "Traceback (most recent call last):",
                "  File \"<string>\", line 1, in <module>",
                "ZeroDivisionError: division by zero",
            ],
            "run {run}"
        );
        let seqs: Vec<u64> = lines.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert!(seqs.is_sorted(), "history in capture order: {seqs:?}");
        let times: Vec<Timestamp> = lines.iter().map(|r| ts_of(r)).collect();
        assert!(times.windows(2).all(|t| t[0] < t[1]), "{times:?}");
        // `tailwater logs`, as text, says them in that order.
        let text = stdout_of(
            &server,
            &[
                "logs", "--app", "divide", "--runner", &runner, "--time", "utc",
            ],
        );
        let text_lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" tailwater: "))
            .collect();
        assert_eq!(text_lines.len(), messages.len(), "{text}");
        for (line, message) in text_lines.iter().zip(&messages) {
            assert!(line.ends_with(message), "{line} is not {message}");
        }
    }
}

/// Records stored at millisecond times, as every store before this one
/// kept them (several in one millisecond), and a cursor handed out for
/// them: after a restart they read, filter, page and resume as before,
/// shown with three digits unless more are asked for.
#[test]
fn millisecond_records_and_cursors_keep_working_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on(ANY_PORT, &data);
    let records: Vec<String> = (0..12u64)
        .map(|seq| {
            let ms = seq / 3;
            format!(
                r#"{{"seq":{seq},"ts":"2026-11-20T10:00:00.{ms:03}Z","stream":"stdout","message":"old {seq}"}}"#
            )
        })
        .collect();
    let body = format!(
        r#"{{"app":"old","runner":"r","boot":"b","records":[{}]}}"#,
        records.join(",")
    );
    let (status, answer) = http("POST", server.port, "/v1/ingest", Some(TOKEN), Some(&body));
    assert_eq!(status, 200, "{answer}");
    let (status, body) = http(
        "GET",
        server.port,
        "/v1/logs?app=old&limit=4&direction=forward&since=2026-11-20T00:00:00Z",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    drop(server);

    let server = TestServer::start_on(ANY_PORT, &data);
    let path = format!(
        "/v1/logs?app=old&limit=100&direction=forward&since=2026-11-20T00:00:00Z&cursor={cursor}"
    );
    let (status, body) = http("GET", server.port, &path, Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    let rest: Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<u64> = rest["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (4..12).collect::<Vec<_>>(),
        "resumed where it stopped"
    );
    // Whole milliseconds as bounds, as before.
    let window = server.logs(&[
        "--app",
        "old",
        "--since",
        "2026-11-20T10:00:00.001Z",
        "--until",
        "2026-11-20T10:00:00.003Z",
    ]);
    let seqs: Vec<u64> = window.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [3, 4, 5, 6, 7, 8]);
    assert_eq!(window[0]["ts"], "2026-11-20T10:00:00.001Z");
    let text = |flags: &[&str]| {
        stdout_of(
            &server,
            &[
                &[
                    "logs",
                    "--app",
                    "old",
                    "--since",
                    "2026-11-20T00:00:00Z",
                    "--time",
                    "utc",
                    "-n",
                    "1",
                ],
                flags,
            ]
            .concat(),
        )
    };
    assert!(
        text(&[]).starts_with("2026-11-20T10:00:00.003Z "),
        "{}",
        text(&[])
    );
    assert!(
        text(&["--time-precision", "us"]).starts_with("2026-11-20T10:00:00.003000Z "),
        "{}",
        text(&["--time-precision", "us"])
    );
}
