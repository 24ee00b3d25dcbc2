use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn follow_shows_a_new_line_within_a_second() {
    let server = TestServer::start();
    run_worker(&server, "live", "echo 'from history'");

    let mut follower = server
        .command(&["logs", "--app", "live", "--stream", "stdout", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines_tx.send((Instant::now(), line.unwrap()));
        }
    });
    let (_, first) = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("history is printed first");
    assert!(first.ends_with("from history"), "{first}");
    // Let the follower connect; a line written before it does is still
    // shown, but this test is about lines that arrive while following.
    std::thread::sleep(Duration::from_millis(500));

    let output = run_worker(&server, "live", "echo 'fresh line'");
    // The agent exits only after the server acknowledged the line.
    let stored_at = Instant::now();
    assert!(output.status.success());
    let (shown_at, line) = lines
        .recv_timeout(Duration::from_secs(5))
        .expect("the new line is shown");
    assert!(line.ends_with("fresh line"), "{line}");
    let delay = shown_at.saturating_duration_since(stored_at);
    assert!(
        delay < Duration::from_secs(1),
        "shown {delay:?} after it was stored"
    );
    follower.kill().unwrap();
    follower.wait().unwrap();
}

#[test]
fn filters_by_level_request_text_and_stream() {
    let server = TestServer::start();
    let script = r#"
echo '{"level":"info","requestId":"req-1","message":"job started"}'
echo '{"level":"warning","requestId":"req-2","message":"slow disk"}'
echo '[ERROR] model weights missing' >&2
echo 'INFO | plain progress'
echo '{"level":"info","request_id":"req-1","msg":"job done","duration_ms":812}'
"#;
    assert!(run_worker(&server, "filters", script).status.success());

    let warnings = server.logs(&["--app", "filters", "--level", "warn", "--stream", "stdout"]);
    assert_eq!(messages(&warnings), ["slow disk"]);
    let errors = server.logs(&["--app", "filters", "--level", "error", "--stream", "stderr"]);
    assert_eq!(messages(&errors), ["model weights missing"]);
    let request = server.logs(&["--request", "req-1"]);
    assert_eq!(messages(&request), ["job started", "job done"]);
    assert_eq!(request[1]["fields"]["duration_ms"], 812);
    let text = server.logs(&["--app", "filters", "--grep", "PLAIN", "--stream", "stdout"]);
    assert_eq!(messages(&text), ["plain progress"]);
    assert_eq!(text[0]["level"], "info");

    // The text form shows the same records, one per line.
    let output = server
        .command(&["logs", "--app", "filters", "--level", "warn"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("filters filters-runner stdout WARN  [req-2] slow disk"),
        "{text}"
    );
}

#[test]
fn json_output_has_the_documented_fields() {
    let server = TestServer::start();
    run_worker(&server, "shape", "echo hello");
    let records = server.logs(&["--app", "shape", "--stream", "stdout"]);
    let record = records[0].as_object().unwrap();
    for field in [
        "ts",
        "app",
        "version",
        "runner",
        "source",
        "stream",
        "level",
        "request_id",
        "message",
        "fields",
        "seq",
    ] {
        assert!(record.contains_key(field), "missing {field} in {record:?}");
    }
    assert_eq!(record["source"], "run");
    assert!(record["ts"]
        .as_str()
        .unwrap()
        .parse::<jiff::Timestamp>()
        .is_ok());
}

#[test]
fn bad_flags_and_tokens_get_clear_errors() {
    let server = TestServer::start();
    let output = server
        .command(&["logs", "--level", "loud"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown level 'loud': use one of trace, debug, info, warn, error, fatal"),
        "{stderr}"
    );

    let output = server
        .command(&["logs", "--token", "tw_wrong"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid token"));

    let output = std::process::Command::new(binary())
        .args(["logs", "--server", "http://127.0.0.1:1", "--token", "x"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("cannot reach the tailwater server at http://127.0.0.1:1"));
}

#[test]
fn the_query_language_from_the_command_line() {
    let server = TestServer::start();
    let script = r#"
echo '{"level":"info","message":"job started","phase":"load"}'
echo '{"level":"info","message":"step 10 loss=0.25","phase":"train","step":10}'
echo 'CUDA out of memory. Tried to allocate 2.50 GiB' >&2
"#;
    assert!(run_worker(&server, "query", script).status.success());

    let found = |args: &[&str]| -> Vec<String> {
        let records = server.logs(&[&["--app", "query"], args].concat());
        messages(&records).into_iter().map(str::to_owned).collect()
    };
    assert_eq!(
        found(&["--contains", "OUT OF MEM", "--stream", "stderr"]),
        ["CUDA out of memory. Tried to allocate 2.50 GiB"]
    );
    assert!(found(&["--contains", "OUT OF MEM", "--case-sensitive"]).is_empty());
    // The agent's start record quotes the script, so it matches too.
    assert_eq!(
        found(&["--contains", "out of mem", "--case-sensitive"]).len(),
        2
    );
    assert_eq!(
        found(&["--regex", r"^step [0-9]+ loss", "--field", "step=10"]),
        ["step 10 loss=0.25"]
    );
    assert_eq!(
        found(&["--field", "phase=load", "--where", "runner_re=query-.*"]),
        ["job started"]
    );
    assert!(found(&["--field", "phase=load", "--where", "runner_not_re=query-.*"]).is_empty());

    for (args, wanted) in [
        (
            &["--regex", "step ("][..],
            "invalid regex 'step (': unclosed group",
        ),
        (
            &["--where", "runner_regex=x"][..],
            "unknown parameter 'runner_regex'",
        ),
        (&["--field", "status"][..], "invalid --field 'status'"),
    ] {
        let output = server
            .command(&[&["logs"], args].concat())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}
