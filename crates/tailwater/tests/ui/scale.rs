//! Many lines: a hundred thousand scroll with few rows in the page.

use std::time::Duration;

use crate::browser::{Browser, Engine};
use crate::common::*;

pub async fn a_hundred_thousand_lines_scroll_with_few_rows_in_the_page(engine: Engine) {
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
