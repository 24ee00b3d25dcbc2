//! Reading logs as people do: a runner's or a request's lines oldest first
//! (a traceback top to bottom) and the logs page newest first, a stream
//! column, a record of several lines whole, dates when the lines span days,
//! no live tail for what has ended, a failed request's error, request ids
//! whole and copyable, and markup in any of them shown as the text it is.

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use serde_json::{json, Value};

use crate::browser::{then_enter, Browser, Engine};
use crate::common::*;
use crate::explorer::histogram_window;

/// A Python traceback as one record (a JSON message with newlines), with
/// markup in its last line.
const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"handler.py\", line 12, in <module>\n    divide(1, 0)\n  File \"handler.py\", line 4, in divide\n    return a / b\nZeroDivisionError: division by zero <script>window.injected=1</script><img src=x onerror=\"window.injected=2\">";

/// A worker that prints a line, fails with `TRACEBACK`, warns on stderr and
/// prints one line more.
fn traceback_worker() -> String {
    let record = json!({"level": "error", "msg": TRACEBACK}).to_string();
    format!(
        "echo 'about to divide'\nprintf '%s\\n' '{}'\necho 'a warning on stderr' >&2\necho 'after the traceback'\n",
        record.replace('\'', r"'\''")
    )
}

/// Whether the page ran any markup from the lines (it must not).
async fn assert_inert(browser: &Browser) {
    let ran = browser
        .js("return [window.injected ?? null, document.querySelectorAll('main script, main img').length]")
        .await;
    assert_eq!(ran, json!([null, 0]), "markup in a line ran or was drawn");
}

/// The rows top to bottom: `[time, stream column, row class, message]`.
async fn rows(browser: &Browser) -> Vec<[String; 4]> {
    let rows = browser
        .js("return [...document.querySelectorAll('.logview .row')]
                .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
                .map((row) => [row.querySelector('.ts').textContent, row.querySelector('.chip.stream').textContent,
                               row.className, row.querySelector('.msg').textContent])")
        .await;
    serde_json::from_value(rows).unwrap()
}

/// Whether the page offers no live tail, and says why.
async fn live_not_offered(browser: &Browser, why: &str) -> bool {
    let script = format!(
        "return document.querySelector('.button.live').hidden
            && document.querySelector('.status-live') === null
            && document.querySelector('.ended-note:not([hidden])')?.textContent.includes({why:?})
            && !location.search.includes('live=1')"
    );
    browser.js(&script).await == Value::Bool(true)
}

pub async fn a_runners_page_reads_a_traceback_top_to_bottom(engine: Engine) {
    let server = TestServer::start();
    assert!(run_worker(&server, "tb", &traceback_worker())
        .status
        .success());
    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/runners/tb-runner?app=tb").await;
    browser
        .wait_until(
            "the runner's six lines, all loaded",
            "return document.querySelectorAll('.logview .row').length === 6
                && document.querySelector('.status').textContent.includes('all loaded')",
        )
        .await;

    // Oldest first, as printed: the agent's start on top, its exit last.
    let shown = rows(&browser).await;
    let messages: Vec<&str> = shown.iter().map(|row| row[3].as_str()).collect();
    assert!(messages[0].starts_with("starting"), "{messages:?}");
    assert!(messages[5].contains("exited with code 0"), "{messages:?}");
    let at = |text: &str| messages.iter().position(|m| m.starts_with(text)).unwrap();
    assert!(
        at("about to divide") < at("Traceback") && at("Traceback") < at("after the traceback"),
        "{messages:?}"
    );
    // A stream column, each row's own.
    for [_, stream, class, message] in &shown {
        assert!(
            class.contains(&format!("stream-{stream}")),
            "{stream} for {class}"
        );
        let expected = match message.as_str() {
            "a warning on stderr" => "stderr",
            m if m.starts_with("starting") || m.contains("exited with code") => "system",
            _ => "stdout",
        };
        assert_eq!(stream, expected, "the stream of {message:?}");
    }
    // Times alone, all of one day, and the day said once.
    for [time, ..] in &shown {
        assert!(
            time.len() == 12 && time.as_bytes()[2] == b':',
            "a time alone: {time}"
        );
    }
    let day = browser
        .js("return document.querySelector('.status-day')?.textContent ?? ''")
        .await;
    assert_eq!(
        day.as_str().unwrap(),
        jiff::Zoned::now().date().to_string(),
        "the day of the lines"
    );

    // The traceback is one row, whole: every line, in order, as text.
    let traceback = browser
        .js("const row = [...document.querySelectorAll('.logview .row')].find((r) => r.querySelector('.msg').textContent.startsWith('Traceback'));
             const msg = row.querySelector('.msg');
             const below = [...document.querySelectorAll('.logview .row')].map((r) => r.getBoundingClientRect())
                .sort((a, b) => a.top - b.top);
             return [msg.textContent, msg.innerText.split('\\n').length, getComputedStyle(msg).whiteSpace,
                     row.getBoundingClientRect().height,
                     below.some((r, i) => i > 0 && r.top < below[i - 1].bottom - 0.5)]")
        .await;
    assert_eq!(traceback[0], TRACEBACK);
    assert_eq!(traceback[1], 6, "six lines shown: {traceback}");
    assert_eq!(traceback[2], "pre-wrap");
    assert!(
        traceback[3].as_f64().unwrap() >= 6.0 * 17.0,
        "as tall as its lines: {traceback}"
    );
    assert_eq!(traceback[4], false, "a row drawn over the traceback");
    assert_inert(&browser).await;

    // The runner has exited: nothing to follow.
    assert!(
        live_not_offered(&browser, "exited").await,
        "Live is offered for an exited runner"
    );
    browser.screenshot("runner-traceback").await;

    // Newest first on request, kept by the address.
    browser.press('n').await;
    browser
        .wait_until(
            "newest first",
            "const rows = [...document.querySelectorAll('.logview .row')]
                .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top);
             return location.search.includes('order=newest') && rows.length === 6
                && rows[0].textContent.includes('exited with code 0')",
        )
        .await;
    let url = browser.client.current_url().await.unwrap();
    browser.client.goto(url.as_str()).await.unwrap();
    browser
        .wait_until(
            "newest first after a reload",
            "return document.querySelectorAll('.logview .row').length === 6
                && document.querySelector('.seg[aria-pressed=true]')?.textContent === 'Newest first'",
        )
        .await;
    assert!(browser.messages().await[0].contains("exited with code 0"));

    // The logs page reads newest first, and says so.
    browser.client.goto(&server.url()).await.unwrap();
    browser
        .wait_until(
            "the logs page, newest first",
            "return document.querySelectorAll('.logview .row').length === 6
                && document.querySelector('.seg[aria-pressed=true]')?.textContent === 'Newest first'
                && document.querySelector('.status').textContent.includes('newest first')",
        )
        .await;
    assert!(browser.messages().await[0].contains("exited with code 0"));

    // A click on a stream shows only it.
    browser
        .js("[...document.querySelectorAll('.chip.stream')].find((c) => c.textContent === 'stderr').click()")
        .await;
    browser
        .wait_until(
            "stderr alone",
            "const rows = [...document.querySelectorAll('.logview .row')];
             return document.querySelector('input.search').value === 'stream:stderr'
                && rows.length === 1 && rows[0].textContent.includes('a warning on stderr')",
        )
        .await;
    browser.close().await;
}

/// A request id as long as a UUID, and one with markup in it.
const LONG_ID: &str = "req-0f9c2a51-7d4e-4b8a-9e3f-2c6d1a7b8e90";
const MARKUP_ID: &str = "<img src=x onerror=\"window.injected=3\">";
/// A runner and a version named with markup, as any client of the ingest API may send.
const MARKUP_RUNNER: &str = "<img src=x onerror=\"window.injected=4\">";

/// Presses Ctrl+V where the focus is.
async fn paste(browser: &Browser) {
    let control: char = Key::Control.into();
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: control })
        .then(KeyAction::Down { value: 'v' })
        .then(KeyAction::Up { value: 'v' })
        .then(KeyAction::Up { value: control });
    browser.client.perform_actions(keys).await.unwrap();
}

pub async fn request_ids_show_whole_and_copy(engine: Engine) {
    let server = TestServer::start();
    let script = [
        json!({"level": "info", "request_id": LONG_ID, "msg": "a request with a long id"}),
        json!({"level": "info", "request_id": MARKUP_ID, "msg": "a request id with markup"}),
    ]
    .iter()
    .map(|line| {
        format!(
            "printf '%s\\n' '{}'",
            line.to_string().replace('\'', r"'\''")
        )
    })
    .collect::<Vec<_>>()
    .join("\n");
    assert!(run_worker(&server, "ids", &script).status.success());
    let batch = json!({"app": "ids", "version": "<i>v</i>", "runner": MARKUP_RUNNER, "boot": "b1", "records": [
        {"seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout", "level": "info", "message": "a runner named with markup"},
    ]});
    let (status, body) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch.to_string()),
    );
    assert_eq!(status, 200, "{body}");
    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/?q=app:ids").await;
    browser
        .wait_until(
            "the lines",
            "return document.querySelectorAll('.logview .row').length === 5",
        )
        .await;

    // Whole in its column, and in its title.
    let chips = browser
        .js(
            "return [...document.querySelectorAll('.chip.request')].map((c) =>
                [c.textContent, c.title, c.scrollWidth <= c.clientWidth])",
        )
        .await;
    let chips: Vec<(String, String, bool)> = serde_json::from_value(chips).unwrap();
    for id in [LONG_ID, MARKUP_ID] {
        let (_, title, whole) = chips.iter().find(|(text, ..)| text == id).unwrap();
        assert!(title.contains(id), "{title}");
        assert!(whole, "{id} is cut off");
    }
    assert_inert(&browser).await;
    browser.screenshot("request-ids").await;

    // Copied from its line, pasted into the request box, it opens the request.
    browser
        .js("[...document.querySelectorAll('.row')].find((r) => r.textContent.includes('a request with a long id')).querySelector('.msg').click()")
        .await;
    browser
        .click(".row.expanded [data-copy='copy request id']")
        .await;
    browser
        .wait_until(
            "copied",
            "return [...document.querySelectorAll('.row.expanded .copy')].some((b) => b.textContent === 'copied')",
        )
        .await;
    browser.click("input.goto").await;
    paste(&browser).await;
    let pasted = browser
        .js("return document.querySelector('input.goto').value")
        .await;
    assert_eq!(pasted, LONG_ID, "what the clipboard held");
    browser
        .wait_for_element("input.goto")
        .await
        .send_keys(&then_enter(""))
        .await
        .unwrap();
    let whole = format!(
        "const title = document.querySelector('h1.subject-id');
         return location.pathname === '/requests/{LONG_ID}' && title?.textContent === '{LONG_ID}'
            && title.title === '{LONG_ID}' && title.scrollWidth <= title.clientWidth"
    );
    browser
        .wait_until("the request's page, its id whole", &whole)
        .await;
    browser.screenshot("request-long-id").await;

    // Markup in an id is its text, on its page too.
    let path = format!(
        "/requests/{}",
        MARKUP_ID
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    browser
        .client
        .goto(&format!("{}{path}", server.url()))
        .await
        .unwrap();
    let page = format!(
        "return document.querySelector('h1.subject-id')?.textContent === {MARKUP_ID:?}
            && document.title === {:?}
            && [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('a request id with markup'))",
        format!("request {MARKUP_ID} · tailwater")
    );
    browser.wait_until("the markup id's page", &page).await;
    assert_inert(&browser).await;

    // A runner named with markup: its chip, its page, as text.
    browser
        .client
        .goto(&format!("{}/?q=app:ids", server.url()))
        .await
        .unwrap();
    let chip = format!(
        "return [...document.querySelectorAll('.chip.runner')].some((c) => c.textContent === {MARKUP_RUNNER:?})"
    );
    browser.wait_until("the markup runner's chip", &chip).await;
    assert_inert(&browser).await;
    browser
        .js("[...document.querySelectorAll('.row')].find((r) => r.textContent.includes('a runner named with markup')).querySelector('.msg').click()")
        .await;
    browser.click(".row.expanded a[data-nav]").await;
    let page = format!(
        "return document.querySelector('h1.subject-id')?.textContent === {MARKUP_RUNNER:?}
            && document.querySelector('.runner-page .facts')?.textContent.includes('<i>v</i>')
            && [...document.querySelectorAll('.logview .row')].some((r) => r.textContent.includes('a runner named with markup'))"
    );
    browser.wait_until("the markup runner's page", &page).await;
    assert_inert(&browser).await;
    browser.screenshot("runner-markup").await;
    browser.close().await;
}

pub async fn dates_show_when_the_lines_span_days(engine: Engine) {
    let server = TestServer::start();
    let now = jiff::Timestamp::now();
    let records: Vec<Value> = [(50, "two days ago"), (26, "yesterday"), (2, "today")]
        .iter()
        .enumerate()
        .map(|(seq, (hours, message))| {
            let ts = now - jiff::SignedDuration::from_hours(*hours);
            json!({"seq": seq, "ts": ts.to_string(), "stream": "stdout", "level": "info", "message": message})
        })
        .collect();
    let batch =
        json!({"app": "old", "version": "v1", "runner": "old-1", "boot": "b1", "records": records});
    let (status, body) = http(
        "POST",
        server.port,
        "/v1/ingest",
        Some(TOKEN),
        Some(&batch.to_string()),
    );
    assert_eq!(status, 200, "{body}");

    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/?q=app:old&range=7d").await;
    browser
        .wait_until(
            "three days of lines, with their dates",
            "const times = [...document.querySelectorAll('.logview .ts')].map((t) => t.textContent);
             return times.length === 3 && times.every((t) => /^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3}$/.test(t))
                && document.querySelector('.status-day') === null",
        )
        .await;
    // The histogram spans the lines' two days, not the range's seven, and
    // its axis has dates.
    browser
        .wait_until(
            "the histogram of the three lines",
            "return document.querySelector('.histogram-total')?.textContent === '3 lines'",
        )
        .await;
    let (since, until) = histogram_window(&browser).await;
    let shown = until.duration_since(since);
    assert!(
        shown > jiff::SignedDuration::from_hours(48)
            && shown < jiff::SignedDuration::from_hours(56),
        "the histogram spans {shown:?}"
    );
    let axis: Vec<String> = serde_json::from_value(
        browser
            .js("return [...document.querySelectorAll('.histogram text.tick')].map((t) => t.textContent)")
            .await,
    )
    .unwrap();
    assert!(
        axis.iter()
            .all(|label| label.len() == 11 && label.as_bytes()[2] == b'-'),
        "dates on the axis: {axis:?}"
    );
    browser.screenshot("lines-over-days").await;

    // The same range, the lines of one day: times alone, the day said once.
    browser
        .client
        .goto(&format!("{}/?q=app:old+today&range=7d", server.url()))
        .await
        .unwrap();
    browser
        .wait_until(
            "one line, its time alone",
            "const times = [...document.querySelectorAll('.logview .ts')].map((t) => t.textContent);
             return times.length === 1 && /^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}$/.test(times[0])
                && /^\\d{4}-\\d\\d-\\d\\d$/.test(document.querySelector('.status-day')?.textContent)",
        )
        .await;
    browser.close().await;
}

/// A Python worker whose request fails: it ends it with an error of two
/// lines, through the control socket, after printing a line in it.
const FAILING_WORKER: &str = r#"
import json, os, socket
control = socket.socket(socket.AF_UNIX)
control.connect(os.environ["TAILWATER_CONTROL"])
f = control.makefile("rw")
def tell(command):
    f.write(json.dumps(command) + "\n"); f.flush()
    return json.loads(f.readline())
tell({"ready": True})
tell({"request_start": "req-fail"})
print("about to divide", flush=True)
tell({"request_end": "req-fail", "error": "ZeroDivisionError: division by zero\n  in divide(1, 0) <b>bold?</b>"})
print("idle", flush=True)
"#;

pub async fn a_failed_request_shows_its_error_and_no_live_tail(engine: Engine) {
    let server = TestServer::start();
    let output = server
        .command(&[
            "run",
            "--app",
            "sdxl",
            "--runner",
            "gpu-f",
            "--",
            "python3",
            "-c",
            FAILING_WORKER,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    let browser = Browser::open(engine).await;
    browser.sign_in(&server, "/requests/req-fail").await;
    browser
        .wait_until(
            "the failed request, its lines loaded",
            "return document.querySelector('.request-page .facts')?.textContent.includes('error')
                && document.querySelector('.status')?.textContent.includes('all loaded')",
        )
        .await;
    let card = browser
        .js("const badges = [...document.querySelectorAll('.request-page .facts .badge')];
             const error = document.querySelector('.request-error .error-text');
             return [badges.map((b) => [b.textContent, b.className]), error?.textContent, error?.innerText.split('\\n').length]")
        .await;
    assert_eq!(
        card,
        json!([
            [
                ["none", "badge status-error"],
                ["error", "badge state-error"]
            ],
            "ZeroDivisionError: division by zero\n  in divide(1, 0) <b>bold?</b>",
            2
        ]),
        "the status agrees with the state, and the error is whole"
    );
    assert!(
        live_not_offered(&browser, "failed").await,
        "Live is offered for a failed request"
    );
    // Its lines, oldest first.
    let times: Vec<String> = serde_json::from_value(
        browser
            .js("return [...document.querySelectorAll('.logview .row')]
                    .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
                    .map((r) => r.querySelector('.ts').title)")
            .await,
    )
    .unwrap();
    let times: Vec<jiff::Timestamp> = times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(times.len() >= 2, "{times:?}");
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(browser
        .messages()
        .await
        .iter()
        .any(|m| m == "about to divide"));
    assert_inert(&browser).await;
    browser.screenshot("request-failed").await;
    browser.close().await;
}
