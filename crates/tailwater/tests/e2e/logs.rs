use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

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
    let lines = lines_of(follower.stdout.take().unwrap());
    let (_, first) = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("history is printed first");
    assert!(first.ends_with("from history"), "{first}");
    // Once the follower's live tail is open: a line written before it is
    // still shown, but this test is about lines that arrive while following.
    wait_for("the follower's live tail", Duration::from_secs(10), || {
        server.tail_clients() == 1
    });

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

/// Under a terminal: levels, streams and request ids coloured, lifecycle
/// lines set apart, control characters escaped; and `-f` prints new lines
/// as they come. No colour in a pipe or with NO_COLOR.
#[test]
fn colours_on_a_terminal_none_in_a_pipe_or_with_no_color() {
    let server = TestServer::start();
    let script = r#"
echo '{"level":"info","requestId":"req-7","message":"job started"}'
echo '[ERROR] model weights missing' >&2
printf 'bell\007 and tab\tkept\n'
"#;
    assert!(run_worker(&server, "colours", script).status.success());

    let terminal = Pty::spawn(server.command(&["logs", "--app", "colours", "-f"]));
    let output = terminal.wait_for_output("model weights missing", Duration::from_secs(10));
    assert!(
        output.contains("\x1b[1m\x1b[31mERROR"),
        "errors in bold red: {output:?}"
    );
    assert!(
        output.contains("[\x1b[1m\x1b[36mreq-7\x1b[0m]"),
        "request ids highlighted: {output:?}"
    );
    assert!(
        output.contains("\x1b[1m\x1b[35mtailwater:\x1b[0m"),
        "lifecycle lines set apart: {output:?}"
    );
    assert!(output.contains("bell\\x07 and tab\tkept"), "{output:?}");
    // Follow mode, on the terminal.
    assert!(run_worker(&server, "colours", "echo 'a fresh line'")
        .status
        .success());
    terminal.wait_for_output("a fresh line", Duration::from_secs(10));

    let plain = |mut command: Command, pty: bool| -> String {
        if pty {
            let mut terminal = Pty::spawn(command);
            assert!(terminal.wait(Duration::from_secs(20)).success());
            // The reader may lag the exit by a moment.
            terminal.wait_for_output("a fresh line", Duration::from_secs(5))
        } else {
            let output = command.output().unwrap();
            assert!(output.status.success());
            String::from_utf8(output.stdout).unwrap()
        }
    };
    let mut no_color = server.command(&["logs", "--app", "colours"]);
    no_color.env("NO_COLOR", "1");
    let mut flag = server.command(&["logs", "--app", "colours", "--no-color"]);
    flag.env_remove("NO_COLOR");
    let piped = server.command(&["logs", "--app", "colours"]);
    for (what, output) in [
        ("NO_COLOR on a terminal", plain(no_color, true)),
        ("--no-color on a terminal", plain(flag, true)),
        ("a pipe", plain(piped, false)),
    ] {
        assert!(!output.contains('\x1b'), "colour with {what}: {output:?}");
        assert!(output.contains("ERROR model weights missing"), "{output}");
    }
    let forced = plain(
        server.command(&["logs", "--app", "colours", "--color", "always"]),
        false,
    );
    assert!(forced.contains("\x1b[1m\x1b[31mERROR"), "{forced:?}");
}

/// `--json` is the API's record shape, field for field: each line parses as
/// a `LogRecord` and equals the record `GET /v1/logs` answers.
#[test]
fn json_output_round_trips_to_the_api_record_shape() {
    let server = TestServer::start();
    let script = r#"
echo '{"level":"warn","request_id":"req-1","msg":"slow","gpu":{"id":0},"cached":true}'
echo 'plain'
"#;
    assert!(run_worker(&server, "shape", script).status.success());
    let output = server
        .command(&["logs", "--app", "shape", "--json", "--since", "1h"])
        .output()
        .unwrap();
    let cli: Vec<Value> = json_lines(&output.stdout);
    let (status, body) = http(
        "GET",
        server.port,
        "/v1/logs?app=shape&direction=forward&limit=1000",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(&cli, api["records"].as_array().unwrap());
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let record: tailwater_model::LogRecord = serde_json::from_str(line).unwrap();
        assert_eq!(
            serde_json::to_value(&record).unwrap(),
            serde_json::from_str::<Value>(line).unwrap(),
            "the line is exactly a record"
        );
    }
    let slow = cli.iter().find(|r| r["message"] == "slow").unwrap();
    assert_eq!(slow["request_id"], "req-1");
    assert_eq!(slow["fields"]["gpu"]["id"], 0);
    assert_eq!(slow["level"], "warn");
}

/// `-f` across a real server restart: records stored while it was away
/// from the follower (before it reconnects) are shown, none twice, in order.
#[test]
fn follow_across_a_server_restart_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on(ANY_PORT, &data);
    let port = server.port;
    let ingest = |seqs| ingest_seqs(port, "restart", seqs);
    ingest(0..20);

    let mut follower = server
        .command(&["logs", "--app", "restart", "--json", "-n", "5", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(follower.stdout.take().unwrap());
    let mut seen = Vec::new();
    let take = |count, seen: &mut Vec<u64>| take_seqs(&lines, count, seen);
    take(5, &mut seen);
    // Lines stored now arrive live, or through the tail's resume from the
    // history's `as_of`: either way, each once.
    ingest(20..40);
    take(20, &mut seen);

    server.kill_9();
    let server = TestServer::start_on(port, &data);
    // Stored before the follower is back (it retries with a backoff).
    ingest(40..60);
    ingest(20..60); // a retried batch: stored once
    ingest(60..80);
    take(40, &mut seen);
    assert_eq!(
        seen,
        (15..80).collect::<Vec<_>>(),
        "every line once, in order"
    );
    // Nothing more comes: no duplicate arrives late.
    assert!(lines.recv_timeout(Duration::from_secs(2)).is_err());
    follower.kill().unwrap();
    follower.wait().unwrap();
    let mut stderr = String::new();
    follower
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("following again"), "{stderr}");
    drop(server);
}

/// `-f` through a network blip: connections cut and refused for a while,
/// lines stored meanwhile, then shown once each when the network is back.
#[test]
fn follow_through_a_network_blip_loses_and_repeats_nothing() {
    let server = TestServer::start();
    let relay = Relay::start(server.port);
    let ingest = |seqs| ingest_seqs(server.port, "blip", seqs);
    ingest(0..10);
    let mut follower = server
        .command(&[
            "logs",
            "--app",
            "blip",
            "--json",
            "-f",
            "--server",
            &relay.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(follower.stdout.take().unwrap());
    let mut seen = Vec::new();
    take_seqs(&lines, 10, &mut seen);
    ingest(10..20);
    take_seqs(&lines, 10, &mut seen);

    relay.set_down(true);
    ingest(20..40);
    wait_for(
        "several failed reconnections",
        Duration::from_secs(20),
        || relay.refused() >= 3,
    );
    relay.set_down(false);
    ingest(40..50);
    take_seqs(&lines, 30, &mut seen);
    assert_eq!(
        seen,
        (0..50).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert!(
        lines.recv_timeout(Duration::from_secs(2)).is_err(),
        "no late duplicate"
    );
    follower.kill().unwrap();
    let output = follower.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("following again"),
        "the blip was noticed: {stderr}"
    );
}

/// In a pipe that closes early (`| head`, a pager that quits), `logs` ends
/// quietly with status 0; times come as asked.
#[test]
fn a_closed_pipe_ends_quietly_and_times_come_as_asked() {
    let server = TestServer::start();
    let script = "i=0; while [ $i -lt 3000 ]; do echo \"line $i\"; i=$((i+1)); done";
    assert!(run_worker(&server, "pager", script).status.success());

    let mut reader = server
        .command(&["logs", "--app", "pager", "-n", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    reader
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(reader.stdout.take());
    let output = reader.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "quietly");

    // Following, with nothing new to print: it ends when the reader does.
    let mut follower = server
        .command(&[
            "logs", "--app", "pager", "--stream", "stdout", "-n", "1", "-f",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(follower.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.ends_with("line 2999\n"), "{first}");
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "-f outlived its reader");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");

    let last_line = |time: &str| -> String {
        let output = server
            .command(&["logs", "--app", "pager", "-n", "1", "--time", time])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let utc = last_line("utc");
    let (stamp, _) = utc.split_once(' ').unwrap();
    assert!(
        stamp.ends_with('Z') && stamp.parse::<jiff::Timestamp>().is_ok(),
        "{utc}"
    );
    let local = last_line("local");
    assert!(
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S%.f", &local[..23]).is_ok(),
        "{local}"
    );
    let relative = last_line("relative");
    assert!(
        relative.trim_start().starts_with("now ") || relative.contains("s ago "),
        "{relative}"
    );
}

/// Stores records `seqs` of runner `r1` of `app` through the API.
fn ingest_seqs(port: u16, app: &str, seqs: std::ops::Range<u64>) {
    let body = ingest_batch(app, "r1", seqs);
    let (status, answer) = http("POST", port, "/v1/ingest", Some(TOKEN), Some(&body));
    assert_eq!(status, 200, "{answer}");
}

/// Reads `count` more `--json` lines, adding their `seq` to `seen`.
fn take_seqs(lines: &Receiver<(Instant, String)>, count: usize, seen: &mut Vec<u64>) {
    for _ in 0..count {
        let (_, line) = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no more lines after {seen:?}"));
        let record: Value = serde_json::from_str(&line).unwrap();
        seen.push(record["seq"].as_u64().unwrap());
    }
}

/// On a terminal, a read that matches nothing says so on stderr (with why
/// when the time range itself is empty); into a pipe it prints nothing, as
/// grep does.
#[test]
fn on_a_terminal_no_match_is_said_and_an_empty_range_explained() {
    let server = TestServer::start();
    let on_a_terminal = |args: &str| {
        let command = format!("{} logs {args}", binary());
        let output = std::process::Command::new("script")
            .args(["-qefc", &command, "/dev/null"])
            .env("TAILWATER_SERVER", server.url())
            .env("TAILWATER_TOKEN", TOKEN)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let screen = on_a_terminal("--app nothing-here");
    assert!(screen.contains("no lines matched"), "{screen}");
    assert!(!screen.contains("time range is empty"), "{screen}");
    let screen = on_a_terminal("--since 2026-01-02T00:00:00Z --until 2026-01-01T00:00:00Z");
    assert!(
        screen.contains("no lines matched (--until is not after --since"),
        "{screen}"
    );
    let piped = server
        .command(&["logs", "--app", "nothing-here"])
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stdout.is_empty() && piped.stderr.is_empty(),
        "{piped:?}"
    );
}

/// `--fields` shows a record's fields after its message, as logfmt, on the
/// record's one line; without it, text output leaves them out.
#[test]
fn fields_show_as_logfmt_with_the_fields_flag() {
    let server = TestServer::start();
    let batch = serde_json::json!({
        "app": "fields", "version": "v1", "runner": "r1", "boot": "b1",
        "records": [{
            "seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout",
            "level": "info", "message": "request done",
            "fields": {"status": 500, "model": "sdxl turbo", "note": "two\nlines"}
        }]
    });
    let (status, answer) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    let shown = |flags: &[&str]| {
        let output = server
            .command(&[&["logs", "--app", "fields", "--no-color"][..], flags].concat())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let with = shown(&["--fields"]);
    assert_eq!(with.lines().count(), 1, "{with}");
    assert!(
        with.trim_end()
            .ends_with(r#"request done model="sdxl turbo" note="two\nlines" status=500"#),
        "{with}"
    );
    let without = shown(&[]);
    assert!(without.trim_end().ends_with("request done"), "{without}");
}

#[test]
fn count_is_the_number_of_lines_logs_shows() {
    let server = TestServer::start();
    let script = r#"
echo '{"level":"info","requestId":"req-1","message":"job started"}'
echo '{"level":"warning","requestId":"req-2","message":"slow disk"}'
echo '[ERROR] job weights missing' >&2
echo 'INFO | plain progress'
echo '{"level":"info","request_id":"req-1","msg":"job done","duration_ms":812}'
"#;
    assert!(run_worker(&server, "counts", script).status.success());
    let shapes: [&[&str]; 6] = [
        &["--app", "counts"],
        &["--app", "counts", "--level", "warn"],
        &["--request", "req-1"],
        &["--app", "counts", "--grep", "JOB"],
        &["--app", "counts", "--stream", "stderr"],
        &["--app", "nothing-here"],
    ];
    for filters in shapes {
        let shown = server.logs(filters).len();
        let mut args = vec!["logs", "--count"];
        args.extend(filters);
        let output = server.command(&args).output().unwrap();
        assert!(output.status.success(), "{filters:?}: {output:?}");
        let printed = String::from_utf8(output.stdout).unwrap();
        assert_eq!(printed, format!("{shown}\n"), "{filters:?}");
    }

    // With --json: the server's answer.
    let output = server
        .command(&[
            "logs", "--count", "--json", "--app", "counts", "--grep", "job",
        ])
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let shown = server.logs(&["--app", "counts", "--grep", "job"]);
    assert!(shown.len() >= 3, "{shown:?}");
    assert_eq!(
        (answer["total"].as_u64(), answer["complete"].as_bool()),
        (Some(shown.len() as u64), Some(true))
    );

    // A count does not follow.
    let output = server.command(&["logs", "--count", "-f"]).output().unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains("--count") && error.contains("--follow"),
        "{error}"
    );
}
