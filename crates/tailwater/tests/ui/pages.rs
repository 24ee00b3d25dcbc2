//! A runner's and a request's pages, the runners table, and a caller's
//! token that opens one request at a time.

use serde_json::Value;

use crate::browser::{then_enter, Browser, Engine};
use crate::common::*;

/// A Python worker that marks a request through the control socket, as the
/// SDKs do, and logs inside it. With `GATE` set, the request stays in
/// flight until that file exists.
pub const REQUEST_WORKER: &str = r#"
import json, os, socket, time
control = socket.socket(socket.AF_UNIX)
control.connect(os.environ["TAILWATER_CONTROL"])
f = control.makefile("rw")
def tell(command):
    f.write(json.dumps(command) + "\n"); f.flush()
    return json.loads(f.readline())
request = os.environ["REQUEST"]
print("loading weights", flush=True)
tell({"ready": True})
tell({"request_start": request})
print(json.dumps({"level": "info", "msg": "denoising", "step": 1}), flush=True)
gate = os.environ.get("GATE")
while gate and not os.path.exists(gate):
    time.sleep(0.02)
print(json.dumps({"level": "warning", "msg": "nsfw filter slow"}), flush=True)
tell({"request_end": request, "status": 200})
print("idle", flush=True)
"#;

pub fn request_worker(server: &TestServer, runner: &str, request: &str) -> std::process::Command {
    let mut command = server.command(&[
        "run",
        "--app",
        "sdxl",
        "--version",
        "v3",
        "--runner",
        runner,
        "--",
        "python3",
        "-c",
        REQUEST_WORKER,
    ]);
    command.env("REQUEST", request);
    command
}

pub async fn the_runners_table_and_a_runners_page(engine: Engine) {
    let server = TestServer::start();
    let output = request_worker(&server, "gpu-7", "req-ui-1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let crash = run_worker(&server, "sdxl", "echo 'import torch' && kill -9 $$");
    assert!(!crash.status.success());

    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/runners").await;
    browser
        .wait_until(
            "both runners",
            "return document.querySelectorAll('.runners-page tbody tr').length === 2",
        )
        .await;
    let rows = browser
        .js("return [...document.querySelectorAll('.runners-page tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent))")
        .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    let gpu = rows.iter().find(|row| row[0] == "gpu-7").unwrap();
    assert_eq!(gpu[1], "exited", "{gpu:?}");
    assert_eq!(gpu[3], "v3", "{gpu:?}");
    assert_eq!(gpu[6], "exit 0", "{gpu:?}");
    assert_eq!(gpu[7], "1", "one request served: {gpu:?}");
    let crashed = rows.iter().find(|row| row[0] == "sdxl-runner").unwrap();
    assert_eq!(crashed[1], "crashed", "{crashed:?}");
    assert_eq!(crashed[6], "SIGKILL", "{crashed:?}");
    browser.screenshot("runners").await;

    // A click anywhere on its row opens it: here its start time. (A cell,
    // not the row: Firefox's WebDriver clicks only what it hit-tests.)
    browser.click("tr[data-runner=gpu-7] td:nth-child(5)").await;
    browser
        .wait_until(
            "the runner's card, timeline and logs",
            "return location.pathname === '/runners/gpu-7'
                && document.querySelector('.facts')?.textContent.includes('exit 0')
                && document.querySelectorAll('.timeline .event').length >= 4
                && [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('nsfw filter slow'))",
        )
        .await;
    let events: Vec<String> = serde_json::from_value(
        browser
            .js("return [...document.querySelectorAll('.timeline .event-name')].map((e) => e.textContent)")
            .await,
    )
    .unwrap();
    for event in ["start", "ready", "request start", "request end", "exit"] {
        assert!(
            events.iter().any(|e| e == event),
            "no {event} in {events:?}"
        );
    }
    let messages = browser.messages().await;
    assert!(
        messages.iter().all(|m| !m.contains("import torch")),
        "only this runner's lines: {messages:?}"
    );
    let live = browser
        .js("return [document.querySelector('.button.live').hidden, document.querySelector('.ended-note').textContent]")
        .await;
    assert_eq!(
        live,
        serde_json::json!([true, "this runner has exited: no live tail"])
    );
    browser.screenshot("runner").await;
    browser.close().await;
}

pub async fn a_requests_page_shows_its_status_timing_runner_and_live_logs(engine: Engine) {
    let server = TestServer::start();
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("go");
    let mut worker = request_worker(&server, "gpu-9", "req-live")
        .env("GATE", &gate_file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/").await;
    // The request id field opens its page.
    let goto = browser.wait_for_element("input.goto").await;
    goto.send_keys(&then_enter("req-live")).await.unwrap();
    browser
        .wait_until(
            "the request in flight, with its first line",
            "return location.pathname === '/requests/req-live'
                && document.querySelector('.request-page .facts')?.textContent.includes('in flight')
                && [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('denoising'))
                && document.querySelector('.status-live.on') !== null",
        )
        .await;
    browser.screenshot("request-in-flight").await;
    let title = browser.client.title().await.unwrap();
    assert_eq!(title, "request req-live · tailwater");

    std::fs::write(&gate_file, "").unwrap();
    browser
        .wait_until(
            "the new line, live, and the status once it ended",
            "return [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('nsfw filter slow'))
                && document.querySelector('.request-page .facts')?.textContent.includes('200')
                && document.querySelector('.request-page .facts')?.textContent.includes('completed')",
        )
        .await;
    assert!(worker.wait().unwrap().success());
    // Ended: Live off and no longer offered, every line of it still shown,
    // oldest first, and a green 200.
    browser
        .wait_until(
            "no live tail once it ended",
            "return document.querySelector('.button.live').hidden
                && document.querySelector('.ended-note')?.textContent.includes('ended')
                && document.querySelector('.status-live') === null
                && document.querySelector('.status').textContent.includes('all loaded')
                && document.querySelector('.request-page .badge.status-ok')?.textContent === '200'
                && [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('nsfw filter slow'))",
        )
        .await;
    let messages = browser.messages().await;
    let at = |text: &str| messages.iter().position(|m| m.contains(text));
    assert!(
        at("denoising") < at("nsfw filter slow") && at("denoising").is_some(),
        "oldest first: {messages:?}"
    );
    let facts = browser
        .js("return document.querySelector('.request-page .facts').textContent")
        .await;
    let facts = facts.as_str().unwrap();
    assert!(facts.contains("gpu-9") && facts.contains("sdxl"), "{facts}");
    let messages = browser.messages().await;
    assert!(
        messages
            .iter()
            .all(|m| !m.contains("loading weights") && !m.contains("idle")),
        "only the request's lines: {messages:?}"
    );
    browser.screenshot("request").await;

    // Its runner is a click away.
    browser.click(".request-page .facts a").await;
    browser
        .wait_until(
            "the runner's page",
            "return location.pathname === '/runners/gpu-9'",
        )
        .await;
    browser.close().await;
}

pub async fn a_callers_token_opens_one_request_at_a_time(engine: Engine) {
    let server = TestServer::start();
    let output = request_worker(&server, "gpu-3", "req-caller")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = server
        .command(&["token", "create", "--scope", "caller"])
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap();

    let browser = Browser::open(engine).await;
    browser.client.goto(&server.url()).await.unwrap();
    let input = browser.wait_for_element("input[name=token]").await;
    input.send_keys(token.trim()).await.unwrap();
    browser.click("form.signin button[type=submit]").await;
    browser
        .wait_until(
            "the caller's start page",
            "return document.querySelector('.state-title')?.textContent.includes('one request') ?? false",
        )
        .await;
    let nav = browser
        .js("return document.querySelector('.nav') === null")
        .await;
    assert_eq!(
        nav,
        Value::Bool(true),
        "no logs or runners pages for a caller"
    );

    browser
        .wait_for_element("input.goto")
        .await
        .send_keys(&then_enter("req-caller"))
        .await
        .unwrap();
    browser
        .wait_until(
            "the request's lines",
            "const rows = [...document.querySelectorAll('.logview .row')].map((r) => r.textContent);
             return rows.some((r) => r.includes('nsfw filter slow')) && rows.every((r) => r.includes('req-caller'))",
        )
        .await;
    browser.screenshot("request-as-caller").await;
    browser.close().await;
}

/// The pid of the worker of `runner`'s latest life, as its `start` record says.
fn worker_pid(server: &TestServer, runner: &str, app: &str) -> Option<i64> {
    let path = format!("/v1/runners/{runner}?app={app}");
    let (status, body) = http("GET", server.port, &path, Some(TOKEN), None);
    if status != 200 {
        return None;
    }
    let runner: Value = serde_json::from_str(&body).unwrap();
    runner["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|event| event["fields"]["event"] == "start")?["fields"]["pid"]
        .as_i64()
}

/// Whether the runner's page follows it live (`live`), offers Live (`offered`) or says it ended (`ended`).
const LIVE_STATE: &str = "return [document.querySelector('.status-live.on') !== null,
    !document.querySelector('.button.live').hidden,
    document.querySelector('.ended-note').hidden ? '' : document.querySelector('.ended-note').textContent]";

pub async fn a_runners_page_is_live_until_it_is_lost_and_again_when_it_returns(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on_with(
        ANY_PORT,
        &dir.path().join("data"),
        &["--heartbeat-timeout", "3s"],
    );
    let gate = dir.path().join("go");
    // Its agents say they are alive every second, well within the 3 s.
    let agent = |script: &str| {
        server
            .command(&[
                "run",
                "--app",
                "gone",
                "--runner",
                "gone-1",
                "--heartbeat-interval",
                "1s",
                "--",
                "sh",
                "-c",
                script,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = agent("echo up; exec sleep 600");
    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/runners/gone-1?app=gone").await;
    browser
        .wait_until(
            "the running runner, followed live",
            "return document.querySelector('.status-live.on') !== null
                && [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('up'))",
        )
        .await;

    // Its agent is killed, its worker too: nothing says it ended, until
    // the server gives it up as lost.
    let pid = worker_pid(&server, "gone-1", "gone").expect("the worker's pid");
    first.kill().unwrap();
    first.wait().unwrap();
    // SAFETY: kill(2) of the worker this test started, orphaned above.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    browser
        .wait_until_within(
            "Live off and not offered once it is lost",
            &format!(
                "const [live, offered, ended] = (() => {{ {LIVE_STATE} }})();
                      return !live && !offered && ended.includes('lost')"
            ),
            std::time::Duration::from_secs(30),
        )
        .await;
    browser.screenshot("runner-lost").await;

    // Heard from again (a new agent as the same runner): Live is offered
    // again; once that worker exits, no more.
    let mut second = agent(&format!(
        "echo back; while [ ! -e '{}' ]; do sleep 0.05; done",
        gate.display()
    ));
    browser
        .wait_until(
            "Live offered again",
            &format!(
                "const [live, offered, ended] = (() => {{ {LIVE_STATE} }})();
                      return offered && ended === ''"
            ),
        )
        .await;
    std::fs::write(&gate, "").unwrap();
    assert!(second.wait().unwrap().success());
    browser
        .wait_until(
            "Live not offered once it has exited",
            &format!(
                "const [live, offered, ended] = (() => {{ {LIVE_STATE} }})();
                      return !live && !offered && ended.includes('exited')"
            ),
        )
        .await;
    browser.close().await;
}
