//! The web UI end to end: the real `tailwater` binary serving it, real
//! agents sending real lines, and a headless browser driven over WebDriver
//! doing what a person does. Every test runs in Chromium and in Firefox
//! (`chromium::NAME`, `firefox::NAME`), one at a time; each view leaves a
//! screenshot in `target/ui-screenshots/<browser>/`.

#[allow(dead_code, unused_imports)]
#[path = "../e2e/common/mod.rs"]
mod common;

mod browser;
mod explorer;
mod live;
mod pages;
mod reading;
mod scale;

use browser::{Browser, Engine};
use common::*;

/// Each test, once per browser: `chromium::NAME` and `firefox::NAME`, each
/// written in the module of its topic.
macro_rules! in_every_browser {
    ($($module:ident :: $test:ident),* $(,)?) => {
        in_every_browser!(@browser chromium, Chromium, $($module::$test),*);
        in_every_browser!(@browser firefox, Firefox, $($module::$test),*);
    };
    (@browser $browser:ident, $engine:ident, $($module:ident :: $test:ident),*) => {
        mod $browser {
            $(
                #[tokio::test]
                async fn $test() {
                    let _serial = crate::browser::one_at_a_time().await;
                    super::$module::$test(crate::browser::Engine::$engine).await;
                }
            )*
        }
    };
}

in_every_browser!(
    explorer::sign_in_search_and_filter_by_a_click,
    live::live_tail_shows_a_new_line_within_a_second,
    live::live_tail_resumes_after_the_server_restarts,
    explorer::the_tenant_picker_shows_one_tenant_at_a_time,
    explorer::download_saves_the_view_as_text_and_ndjson,
    explorer::histogram_counts_by_level_and_a_drag_zooms,
    pages::the_runners_table_and_a_runners_page,
    pages::a_requests_page_shows_its_status_timing_runner_and_live_logs,
    scale::a_hundred_thousand_lines_scroll_with_few_rows_in_the_page,
    pages::a_callers_token_opens_one_request_at_a_time,
    pages::a_runners_page_is_live_until_it_is_lost_and_again_when_it_returns,
    reading::a_runners_page_reads_a_traceback_top_to_bottom,
    reading::request_ids_show_whole_and_copy,
    reading::dates_show_when_the_lines_span_days,
    reading::a_failed_request_shows_its_error_and_no_live_tail,
);

/// A worker that logs like a GPU worker: JSON lines with levels, fields and
/// request ids, plain lines, stderr, ANSI colours, and a line of markup.
pub const WORKER: &str = r#"
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
pub async fn console_over_worker(engine: Engine, path: &str) -> (TestServer, Browser) {
    let server = TestServer::start();
    assert!(run_worker(&server, "sdxl", WORKER).status.success());
    let browser = Browser::open(engine).await;
    browser.sign_in(&server, path).await;
    (server, browser)
}
