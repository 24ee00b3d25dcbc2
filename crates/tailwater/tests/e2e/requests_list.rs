//! `tailwater requests ls` over a real worker under the real agent: a
//! worker marks requests through the control socket, serves some, prints a
//! traceback to stderr and fails one, then dies with an uncaught exception
//! in the middle of another. The list shows each as it ended, newest first,
//! filtered by state and runner; and the lines a request printed between
//! its start and its failure (the tracebacks) carry its id.

use serde_json::Value;

use crate::common::*;
use crate::supervisor::{records, start_agent, wait_agent};

/// Serves three requests, fails one after printing a caught traceback,
/// then starts one more and dies with an uncaught exception.
const FAILING_WORKER: &str = r#"
import json, os, socket, sys, traceback
conn = socket.socket(socket.AF_UNIX)
conn.connect(os.environ["TAILWATER_CONTROL"])
f = conn.makefile("rw")
def send(command):
    f.write(json.dumps(command) + "\n")
    f.flush()
    return json.loads(f.readline())
send({"ready": True})
for i in range(3):
    send({"request_start": "req-ok-%d" % i})
    print("serving req-ok-%d" % i, flush=True)
    send({"request_end": "req-ok-%d" % i, "status": 200})
send({"request_start": "req-tb"})
print("about to divide", flush=True)
try:
    1 / 0
except ZeroDivisionError:
    traceback.print_exc()
    sys.stderr.flush()
send({"request_end": "req-tb", "error": "ZeroDivisionError: division by zero"})
send({"request_start": "req-crash"})
print("loading weights", flush=True)
raise RuntimeError("CUDA out of memory")
"#;

/// `tailwater requests ls ARGS…`: stdout, after checking it succeeded.
fn ls(server: &TestServer, args: &[&str]) -> String {
    let output = server
        .command(&[&["requests", "ls"], args].concat())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "requests ls {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn ls_json(server: &TestServer, args: &[&str]) -> Value {
    let text = ls(server, &[&["--json"], args].concat());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not json ({e}): {text}"))
}

fn ids(list: &Value) -> Vec<&str> {
    list["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|request| request["request_id"].as_str().unwrap())
        .collect()
}

#[test]
fn requests_ls_shows_how_each_request_ended_and_a_failure_keeps_its_traceback() {
    let python = python();
    let server = TestServer::start();
    let agent = start_agent(&server, "failing", &[], &[python, "-c", FAILING_WORKER]);
    let (status, _, stderr) = wait_agent(agent);
    assert_eq!(status.code(), Some(1), "the worker's exit code: {stderr}");

    // Every request, newest start first.
    let all = ls_json(&server, &[]);
    assert_eq!(
        ids(&all),
        ["req-crash", "req-tb", "req-ok-2", "req-ok-1", "req-ok-0"],
        "{all}"
    );
    assert_eq!(all["next_cursor"], Value::Null, "one page: {all}");
    let of = |id: &str| {
        all["requests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|request| request["request_id"] == id)
            .unwrap()
            .clone()
    };
    let ok = of("req-ok-1");
    assert_eq!(
        (&ok["state"], &ok["status"], &ok["runner"], &ok["error"]),
        (
            &Value::from("completed"),
            &Value::from(200),
            &Value::from("failing-runner"),
            &Value::Null
        ),
        "{ok}"
    );
    assert!(
        ok["duration_ms"].is_u64() && ok["ended"].is_string(),
        "{ok}"
    );
    let failed = of("req-tb");
    assert_eq!(failed["state"], "error", "{failed}");
    assert_eq!(failed["error"], "ZeroDivisionError: division by zero");
    let crashed = of("req-crash");
    assert_eq!(crashed["state"], "unfinished", "{crashed}");
    assert!(
        crashed["error"]
            .as_str()
            .is_some_and(|error| error.contains("still in flight when the worker exited")),
        "{crashed}"
    );

    // Filters.
    assert_eq!(
        ids(&ls_json(&server, &["--state", "error"])),
        ["req-crash", "req-tb"]
    );
    assert_eq!(
        ids(&ls_json(&server, &["--state", "ok", "--app", "failing"])),
        ["req-ok-2", "req-ok-1", "req-ok-0"]
    );
    assert!(ids(&ls_json(&server, &["--state", "in_flight"])).is_empty());
    assert!(ids(&ls_json(&server, &["--since", "1m", "--until", "2m"])).is_empty());
    assert_eq!(ids(&ls_json(&server, &["--since", "10m"])).len(), 5);
    // A limit shows the newest, and says there are more.
    let two = ls_json(&server, &["--limit", "2"]);
    assert_eq!(ids(&two), ["req-crash", "req-tb"]);
    assert!(two["next_cursor"].is_string(), "{two}");

    // The table: a header, a row each, the error text in its row.
    let table = ls(&server, &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    for column in [
        "REQUEST", "RUNNER", "STATE", "STATUS", "DURATION", "LINES", "ERROR",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    let row = lines
        .iter()
        .find(|line| line.starts_with("req-tb"))
        .unwrap();
    assert!(
        row.contains("error") && row.contains("ZeroDivisionError: division by zero"),
        "{table}"
    );
    let state_at = lines[0].find("STATE").unwrap();
    assert!(
        lines[1..].iter().all(|line| line.get(state_at..).is_some()),
        "aligned columns: {table}"
    );
    assert_eq!(
        ls(&server, &["--runner", "elsewhere"]).trim(),
        "no requests matching --runner elsewhere"
    );
    let bad = server
        .command(&["requests", "ls", "--state", "done"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("use ok, error or in_flight"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // What the worker printed inside a request is that request's, stderr
    // tracebacks included: the caught one of the request that failed, and
    // the uncaught one of the request the worker died in.
    // The worker's own lines (the start record quotes its script).
    let records: Vec<Value> = records(&server, "failing")
        .into_iter()
        .filter(|record| record["stream"] != "system")
        .collect();
    let request_of = |text: &str| {
        let found: Vec<&Value> = records
            .iter()
            .filter(|record| record["message"].as_str().unwrap().contains(text))
            .collect();
        assert!(!found.is_empty(), "no line with {text:?}");
        let ids: Vec<&Value> = found.iter().map(|record| &record["request_id"]).collect();
        assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{found:?}");
        ids[0].clone()
    };
    assert_eq!(request_of("about to divide"), "req-tb");
    let tracebacks: Vec<&Value> = records
        .iter()
        .filter(|record| record["message"].as_str().unwrap().contains("Traceback"))
        .map(|record| &record["request_id"])
        .collect();
    assert!(
        tracebacks.contains(&&Value::from("req-tb"))
            && tracebacks.contains(&&Value::from("req-crash")),
        "{tracebacks:?}"
    );
    assert_eq!(request_of("ZeroDivisionError: division by zero"), "req-tb");
    assert_eq!(request_of("loading weights"), "req-crash");
    assert_eq!(request_of("RuntimeError: CUDA out of memory"), "req-crash");
    let stray: Vec<&Value> = records
        .iter()
        .filter(|record| record["stream"] == "stderr" && record["request_id"].is_null())
        .collect();
    assert!(stray.is_empty(), "stderr lines with no request: {stray:?}");
    // And a request's logs hold its traceback.
    let tb = server.logs(&["--request", "req-tb", "--stream", "stderr"]);
    assert!(
        messages(&tb)
            .iter()
            .any(|message| message.contains("ZeroDivisionError")),
        "{tb:?}"
    );
}
