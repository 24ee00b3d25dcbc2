//! The logs page: sign-in, search and click-to-filter, the tenant picker,
//! downloads and the volume histogram.

use std::time::Duration;

use fantoccini::actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT};
use serde_json::Value;

use crate::browser::{then_enter, Browser, Engine};
use crate::common::*;
use crate::{console_over_worker, WORKER};

pub async fn sign_in_search_and_filter_by_a_click(engine: Engine) {
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

pub async fn the_tenant_picker_shows_one_tenant_at_a_time(engine: Engine) {
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

pub async fn download_saves_the_view_as_text_and_ndjson(engine: Engine) {
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

pub async fn histogram_counts_by_level_and_a_drag_zooms(engine: Engine) {
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
    // Over the time the lines span, not the whole 15 minutes: the worker
    // printed for a few milliseconds, shown in the middle of a second or so,
    // not squeezed into the right edge.
    let (since, until) = histogram_window(&browser).await;
    let shown = until.duration_since(since);
    assert!(
        shown >= jiff::SignedDuration::from_millis(500)
            && shown < jiff::SignedDuration::from_secs(10),
        "the histogram spans {shown:?}"
    );
    let bars: Vec<f64> = serde_json::from_value(
        browser
            .js("const svg = document.querySelector('.histogram-svg');
                 return [...svg.querySelectorAll('rect.bar')].map((r) => Number(r.getAttribute('x')) / svg.clientWidth)")
            .await,
    )
    .unwrap();
    assert!(
        bars.iter().all(|x| (0.2..0.8).contains(x)),
        "the bars stand in the middle: {bars:?}"
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
    let span = to.duration_since(from).as_secs_f64() / shown.as_secs_f64();
    assert!(
        from >= since && to <= until && (0.25..0.42).contains(&span),
        "a third of the histogram's {since}..{until}: {from}..{to}"
    );
    browser.screenshot("histogram-zoomed").await;
    browser.close().await;
}

/// The window the histogram shows, as it says on its element.
pub async fn histogram_window(browser: &Browser) -> (jiff::Timestamp, jiff::Timestamp) {
    let window: Vec<String> = serde_json::from_value(
        browser
            .js("const h = document.querySelector('.histogram'); return [h.dataset.since, h.dataset.until]")
            .await,
    )
    .unwrap();
    (window[0].parse().unwrap(), window[1].parse().unwrap())
}
