//! The web UI end to end: the real `tailwater` binary serving it, real
//! agents sending real lines, and a headless browser driven over WebDriver
//! doing what a person does. Every test runs in Chromium and in Firefox
//! (`chromium::NAME`, `firefox::NAME`), one at a time; each view leaves a
//! screenshot in `target/ui-screenshots/<browser>/`.

#[allow(dead_code)]
#[path = "../e2e/common.rs"]
mod common;

mod browser;

use std::time::{Duration, Instant};

use browser::{then_enter, Browser, Engine};
use common::*;
use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use serde_json::Value;

/// Each test, once per browser: `chromium::NAME` and `firefox::NAME`.
macro_rules! in_every_browser {
    ($($test:ident),* $(,)?) => {
        in_every_browser!(@browser chromium, Chromium, $($test),*);
        in_every_browser!(@browser firefox, Firefox, $($test),*);
    };
    (@browser $module:ident, $engine:ident, $($test:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    let _serial = crate::browser::one_at_a_time().await;
                    super::$test(crate::browser::Engine::$engine).await;
                }
            )*
        }
    };
}

in_every_browser!(
    sign_in_search_and_filter_by_a_click,
    live_tail_shows_a_new_line_within_a_second,
    live_tail_resumes_after_the_server_restarts,
    the_tenant_picker_shows_one_tenant_at_a_time,
    download_saves_the_view_as_text_and_ndjson,
    histogram_counts_by_level_and_a_drag_zooms,
    the_runners_table_and_a_runners_page,
    a_requests_page_shows_its_status_timing_runner_and_live_logs,
    a_hundred_thousand_lines_scroll_with_few_rows_in_the_page,
    a_callers_token_opens_one_request_at_a_time,
);

/// A worker that logs like a GPU worker: JSON lines with levels, fields and
/// request ids, plain lines, stderr, ANSI colours, and a line of markup.
const WORKER: &str = r#"
echo '{"level":"info","msg":"loading model sdxl-turbo","gpu":{"id":0,"name":"A100"}}'
echo '{"level":"debug","msg":"weights mapped","bytes":6938040320}'
echo '{"level":"info","request_id":"req-7","msg":"job started","prompt":"a lighthouse"}'
echo '{"level":"warning","request_id":"req-7","msg":"slow denoise step","step":14,"ms":812}'
printf '\033[32mINFO\033[0m | progress \033[1m50%%\033[0m\n'
echo '<img src=x onerror="window.injected=1"> is text, never markup'
echo '[ERROR] CUDA out of memory while allocating 2.00 GiB' >&2
echo '{"level":"info","request_id":"req-7","msg":"job done","status":200}'
"#;

/// A server holding `WORKER`'s lines, and a browser signed in at `path`.
async fn console_over_worker(engine: Engine, path: &str) -> (TestServer, Browser) {
    let server = TestServer::start();
    assert!(run_worker(&server, "sdxl", WORKER).status.success());
    let browser = Browser::open(engine).await;
    browser.sign_in(&server, path).await;
    (server, browser)
}

async fn sign_in_search_and_filter_by_a_click(engine: Engine) {
    let server = TestServer::start();
    assert!(run_worker(&server, "sdxl", WORKER).status.success());
    let browser = Browser::open(engine).await;

    // A wrong token is refused with the server's reason.
    browser.client.goto(&server.url()).await.unwrap();
    let token = browser.wait_for_element("input[name=token]").await;
    browser.screenshot("signin").await;
    token.send_keys("tw_not_a_token").await.unwrap();
    browser
        .js("document.querySelector('form.signin button').click()")
        .await;
    browser
        .wait_until(
            "the refusal",
            "return document.querySelector('.signin-error')?.textContent.includes('invalid token') ?? false",
        )
        .await;

    browser.sign_in(&server, "/").await;
    browser
        .wait_until(
            "the worker's lines",
            "return document.querySelectorAll('.logview .row').length >= 7",
        )
        .await;
    let messages = browser.messages().await;
    // Newest first: the agent's record of the worker's exit on top.
    assert!(messages[0].contains("exited with code 0"), "{messages:?}");
    assert!(
        messages.last().unwrap().contains("starting"),
        "{messages:?}"
    );
    // ANSI colours become styled spans, never markup.
    let coloured = browser
        .js("const row = [...document.querySelectorAll('.row')].find((r) => r.textContent.includes('progress'));
             return [row.querySelector('.msg').textContent, row.querySelectorAll('.msg span').length]")
        .await;
    let text = coloured[0].as_str().unwrap();
    assert!(
        text.ends_with("progress 50%") && !text.contains('\u{1b}'),
        "{text:?}"
    );
    assert!(
        coloured[1].as_u64() >= Some(2),
        "coloured spans: {coloured}"
    );
    // Markup in a line is shown as the text it is.
    let markup = browser
        .js("const row = [...document.querySelectorAll('.row')].find((r) => r.textContent.includes('never markup'));
             return [row.querySelector('.msg').textContent, document.querySelectorAll('.logview img').length, window.injected ?? null]")
        .await;
    assert_eq!(
        markup,
        serde_json::json!([
            "<img src=x onerror=\"window.injected=1\"> is text, never markup",
            0,
            null
        ])
    );
    browser.screenshot("explorer").await;

    // A search with qualifiers narrows the lines, and lives in the URL.
    let search = browser.wait_for_element("input.search").await;
    search
        .send_keys(&then_enter("level:>=warn app:sdxl"))
        .await
        .unwrap();
    browser
        .wait_until(
            "only warnings and errors",
            "const rows = [...document.querySelectorAll('.logview .row')];
             return rows.length === 2 && rows.every((r) => /level-(warn|error)/.test(r.className))",
        )
        .await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.query().unwrap().contains("q=level"), "{url}");

    // Reopening the link shows the same view.
    browser.client.goto(url.as_str()).await.unwrap();
    browser
        .wait_until(
            "the same two lines after a reload",
            "return document.querySelectorAll('.logview .row').length === 2
                && document.querySelector('input.search').value === 'level:>=warn app:sdxl'",
        )
        .await;

    // A click on a request id filters by it.
    browser.client.goto(&server.url()).await.unwrap();
    browser
        .wait_until(
            "the lines again",
            "return document.querySelectorAll('.logview .row').length >= 7",
        )
        .await;
    browser
        .js("document.querySelector('.row .chip.request').click()")
        .await;
    browser
        .wait_until(
            "the request's three lines",
            "return document.querySelector('input.search').value.includes('request:req-7')
                && document.querySelectorAll('.logview .row').length === 3",
        )
        .await;

    // A line expands to its fields, and the lines below make room in the
    // same frame: none is ever drawn under the fields.
    let overlap = browser
        .js("[...document.querySelectorAll('.row')].find((r) => r.textContent.includes('slow denoise')).querySelector('.msg').click();
             const rows = [...document.querySelectorAll('.logview .row')]
                .map((r) => r.getBoundingClientRect())
                .sort((a, b) => a.top - b.top);
             return rows.some((r, i) => i > 0 && r.top < rows[i - 1].bottom - 0.5)")
        .await;
    assert_eq!(
        overlap,
        Value::Bool(false),
        "an expanded line covers the next"
    );
    browser
        .wait_until(
            "the expanded fields",
            "return document.querySelector('.row.expanded .json')?.textContent.includes('812') ?? false",
        )
        .await;
    browser.screenshot("explorer-expanded").await;

    // A search nothing matches says so, and so does one the server refuses.
    let search = browser.wait_for_element("input.search").await;
    search.clear().await.unwrap();
    search
        .send_keys(&then_enter("no-such-word-anywhere"))
        .await
        .unwrap();
    browser
        .wait_until(
            "the empty state",
            "return document.querySelector('.overlay .state-empty')?.textContent.includes('No lines match') ?? false",
        )
        .await;
    browser.screenshot("explorer-empty").await;
    search.clear().await.unwrap();
    search.send_keys(&then_enter("/(unclosed/")).await.unwrap();
    browser
        .wait_until(
            "the server's error",
            "return document.querySelector('.overlay .state-error')?.textContent.includes('invalid regex') ?? false",
        )
        .await;
    browser.screenshot("explorer-error").await;

    // A search that cannot be read says what to write instead.
    let search = browser.wait_for_element("input.search").await;
    search.clear().await.unwrap();
    search.send_keys(&then_enter("lvl:warn")).await.unwrap();
    browser
        .wait_until(
            "the search error",
            "return document.querySelector('.search-error')?.textContent.includes(\"unknown qualifier 'lvl:'\") ?? false",
        )
        .await;
    browser.close().await;
}

async fn live_tail_shows_a_new_line_within_a_second(engine: Engine) {
    let server = TestServer::start();
    assert!(run_worker(&server, "live", "echo 'from history'")
        .status
        .success());
    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/?q=app:live+stream:stdout").await;
    browser
        .wait_until(
            "history",
            "return document.querySelectorAll('.logview .row').length === 1",
        )
        .await;
    // `f` follows: the Live button turns on, and the URL says so. The
    // status says live as soon as the tail is open, in every browser, not
    // at the server's first keep-alive (15 s).
    browser.press('f').await;
    browser
        .wait_until_within(
            "history, then the live tail connected",
            "return document.querySelector('.status-live.on') !== null
                && document.querySelectorAll('.logview .row').length === 1",
            Duration::from_secs(5),
        )
        .await;

    let output = run_worker(&server, "live", "echo 'fresh line'");
    // The agent exits once the server has acknowledged the line.
    let stored_at = Instant::now();
    assert!(output.status.success());
    browser
        .wait_until_within(
            "the new line",
            "return [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('fresh line'))",
            Duration::from_secs(5),
        )
        .await;
    let delay = stored_at.elapsed();
    assert!(
        delay < Duration::from_secs(1),
        "shown {delay:?} after it was stored"
    );
    let messages = browser.messages().await;
    assert!(
        messages[0].contains("fresh line"),
        "newest on top: {messages:?}"
    );
    assert!(browser
        .client
        .current_url()
        .await
        .unwrap()
        .query()
        .unwrap()
        .contains("live=1"));
    browser.screenshot("live").await;

    // `/` goes to the search box.
    browser.press('/').await;
    let focused = browser
        .js("return document.activeElement.classList.contains('search')")
        .await;
    assert_eq!(focused, Value::Bool(true));
    browser.close().await;
}

async fn live_tail_resumes_after_the_server_restarts(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_on(ANY_PORT, &data);
    let port = server.port;
    assert!(run_worker(&server, "resume", "echo 'before the restart'")
        .status
        .success());
    let browser = Browser::open(engine).await;
    browser
        .sign_in(&server, "/?q=app:resume+stream:stdout&live=1")
        .await;
    browser
        .wait_until(
            "history and the live tail",
            "return document.querySelector('.status-live.on') !== null
                && document.querySelectorAll('.logview .row').length === 1",
        )
        .await;

    server.kill_9();
    browser
        .wait_until(
            "the tail to notice",
            "return document.querySelector('.status-live')?.textContent === 'reconnecting…'",
        )
        .await;
    let server = TestServer::start_on(port, &data);
    browser
        .wait_until(
            "the tail back",
            "return document.querySelector('.status-live.on') !== null",
        )
        .await;
    assert!(run_worker(&server, "resume", "echo 'after the restart'")
        .status
        .success());
    browser
        .wait_until(
            "the new line, once, after the old one",
            "const rows = [...document.querySelectorAll('.logview .row')]
                .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
                .map((r) => r.querySelector('.msg').textContent);
             return rows.length === 2 && rows[0] === 'after the restart' && rows[1] === 'before the restart'",
        )
        .await;
    browser.close().await;
}

async fn the_tenant_picker_shows_one_tenant_at_a_time(engine: Engine) {
    let server = TestServer::start();
    assert!(run_worker(&server, "web", "echo 'a default line'")
        .status
        .success());
    let created = server
        .command(&["tenant", "create", "acme"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let token = server
        .command(&[
            "token", "create", "--tenant", "acme", "--scope", "ingest", "--app", "web",
        ])
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap();
    let acme = server
        .command(&[
            "run",
            "--app",
            "web",
            "--runner",
            "acme-1",
            "--",
            "sh",
            "-c",
            "echo 'an acme line'",
        ])
        .env("TAILWATER_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(acme.status.success(), "{acme:?}");

    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/?q=stream:stdout").await;
    browser
        .wait_until(
            "the default tenant's line only",
            "const rows = [...document.querySelectorAll('.logview .row')].map((r) => r.textContent);
             return rows.length === 1 && rows[0].includes('a default line')",
        )
        .await;
    browser
        .js(
            "const picker = document.querySelector('select[aria-label=tenant]');
             picker.value = 'acme';
             picker.dispatchEvent(new Event('change'));",
        )
        .await;
    browser
        .wait_until(
            "acme's line only",
            "const rows = [...document.querySelectorAll('.logview .row')].map((r) => r.textContent);
             return rows.length === 1 && rows[0].includes('an acme line')",
        )
        .await;
    browser.close().await;
}

async fn download_saves_the_view_as_text_and_ndjson(engine: Engine) {
    let (server, browser) = console_over_worker(engine, "/?q=app:sdxl&order=oldest").await;
    browser
        .wait_until(
            "the lines",
            "return document.querySelectorAll('.logview .row').length >= 7",
        )
        .await;

    browser.click(".menu summary").await;
    browser.click("[data-format=text]").await;
    let text = std::fs::read_to_string(browser.downloaded("log").await).unwrap();
    // The same lines, in the same form, as `tailwater export` writes.
    let cli = server
        .command(&["export", "--app", "sdxl", "--since", "1h"])
        .output()
        .unwrap();
    assert!(cli.status.success());
    assert_eq!(text, String::from_utf8(cli.stdout).unwrap());
    assert!(text.contains("[req-7] slow denoise step"), "{text}");

    browser.click(".menu summary").await;
    browser.click("[data-format=ndjson]").await;
    let ndjson = std::fs::read_to_string(browser.downloaded("ndjson").await).unwrap();
    let records = json_lines(ndjson.as_bytes());
    let expected = server.logs(&["--app", "sdxl", "--since", "1h"]);
    assert_eq!(records, expected);
    let slow = records
        .iter()
        .find(|record| record["message"] == "slow denoise step")
        .unwrap();
    assert_eq!(slow["fields"]["ms"], 812);
    browser.close().await;
}

async fn histogram_counts_by_level_and_a_drag_zooms(engine: Engine) {
    let (_server, browser) = console_over_worker(engine, "/?q=app:sdxl&range=15m").await;
    browser
        .wait_until(
            "the histogram of the worker's eight lines and the agent's two",
            "return document.querySelector('.histogram-total')?.textContent === '10 lines'",
        )
        .await;
    let bars: Value = browser
        .js("return ['debug','info','warn','error'].map((l) => document.querySelectorAll('.histogram rect.bar-' + l).length)")
        .await;
    assert!(
        bars.as_array()
            .unwrap()
            .iter()
            .all(|n| n.as_u64() >= Some(1)),
        "one bar for each level present: {bars}"
    );
    browser.screenshot("histogram").await;

    // Dragging across the last third zooms the range to it.
    let plot = browser.wait_for_element(".histogram-svg").await;
    let (width, _) = plot.rectangle().await.map(|(_, _, w, h)| (w, h)).unwrap();
    let drag = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: plot.clone(),
            duration: None,
            x: width / 6.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveToElement {
            element: plot.clone(),
            duration: Some(Duration::from_millis(100)),
            x: width / 2.0 - 2.0,
            y: 0.0,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.client.perform_actions(drag).await.unwrap();
    browser
        .wait_until(
            "a custom range from the drag",
            "return location.search.includes('range=custom') && !document.querySelector('.custom-range').hidden",
        )
        .await;
    let url = browser.client.current_url().await.unwrap();
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    let from: jiff::Timestamp = query["from"].parse().unwrap();
    let to: jiff::Timestamp = query["to"].parse().unwrap();
    let span = to.duration_since(from);
    assert!(
        span > jiff::SignedDuration::from_mins(4) && span < jiff::SignedDuration::from_mins(6),
        "a third of 15 minutes: {span:?}"
    );
    browser.screenshot("histogram-zoomed").await;
    browser.close().await;
}

/// A Python worker that marks a request through the control socket, as the
/// SDKs do, and logs inside it. With `GATE` set, the request stays in
/// flight until that file exists.
const REQUEST_WORKER: &str = r#"
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

fn request_worker(server: &TestServer, runner: &str, request: &str) -> std::process::Command {
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

async fn the_runners_table_and_a_runners_page(engine: Engine) {
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
    browser.screenshot("runner").await;
    browser.close().await;
}

async fn a_requests_page_shows_its_status_timing_runner_and_live_logs(engine: Engine) {
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

async fn a_hundred_thousand_lines_scroll_with_few_rows_in_the_page(engine: Engine) {
    const LINES: usize = 100_000;
    let server = TestServer::start();
    let script = format!("for i in range({LINES}): print(f'line {{i:06d}} of the bulk load')");
    let output = server
        .command(&["run", "--app", "bulk", "--", "python3", "-c", &script])
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let browser = Browser::open(engine).await;
    browser
        .sign_in(&server, "/?q=app:bulk+stream:stdout&order=oldest")
        .await;
    browser
        .wait_until(
            "the first page",
            "return document.querySelectorAll('.logview .row').length > 0",
        )
        .await;
    // Scrolling to the end loads the next page, until there is no more.
    let loaded = format!(
        "const view = document.querySelector('.logview');
         view.scrollTop = view.scrollHeight;
         return document.querySelector('.status').textContent.startsWith('{} lines') &&
             document.querySelector('.status').textContent.includes('all loaded')",
        "100,000"
    );
    browser
        .wait_until_within("all the lines", &loaded, Duration::from_secs(120))
        .await;
    let rows = browser
        .js("return document.querySelectorAll('.logview .row').length")
        .await;
    assert!(
        rows.as_u64().unwrap() < 200,
        "only the rows in sight are in the page: {rows}"
    );

    // Any line is a jump away, and the page draws it at once.
    let jumps = browser
        .js("return new Promise((resolve) => {
            const view = document.querySelector('.logview');
            const times = [];
            const jump = (n) => {
              if (n === 20) return resolve(times);
              const line = Math.floor((n * 7919) % 100000);
              const started = performance.now();
              view.scrollTop = line * 22;
              requestAnimationFrame(() => requestAnimationFrame(() => {
                times.push(performance.now() - started);
                const top = [...view.querySelectorAll('.row')]
                  .find((row) => Math.abs(row.getBoundingClientRect().top - view.getBoundingClientRect().top) < 12);
                const want = 'line ' + String(line).padStart(6, '0');
                if (!top || !top.textContent.includes(want)) return resolve('row ' + line + ' shows ' + top?.textContent);
                jump(n + 1);
              }));
            };
            jump(0);
          })")
        .await;
    let mut times: Vec<f64> = serde_json::from_value(jumps.clone())
        .unwrap_or_else(|_| panic!("a jump showed the wrong line: {jumps}"));
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    // Two frames at 60 Hz are 33 ms; generous for a loaded machine.
    assert!(
        median < 250.0,
        "a jump takes {median} ms to draw: {times:?}"
    );
    // Its scrollbar is drawn dark, as the page is, in every browser.
    let scheme = browser
        .js("return getComputedStyle(document.querySelector('.logview')).colorScheme")
        .await;
    assert_eq!(scheme, "dark");
    browser.screenshot("hundred-thousand-lines").await;
    browser.close().await;
}

async fn a_callers_token_opens_one_request_at_a_time(engine: Engine) {
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
