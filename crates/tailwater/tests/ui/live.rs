//! Live tail: a new line within a second, and a tail that resumes after
//! the server restarts.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::browser::{Browser, Engine};
use crate::common::*;

pub async fn live_tail_shows_a_new_line_within_a_second(engine: Engine) {
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

pub async fn live_tail_resumes_after_the_server_restarts(engine: Engine) {
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
