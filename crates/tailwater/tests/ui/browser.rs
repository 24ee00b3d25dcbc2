//! Headless Chromium driven over WebDriver: chromedriver started by the
//! test on a free loopback port, a fresh profile and download folder per
//! browser, screenshots saved under `target/ui-screenshots/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::{free_port, TestServer, TOKEN};

/// Chromium's flags for running as root in a container, with nothing
/// reaching out to the network.
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// One test at a time, from its first step: a browser is a few processes,
/// the machine may have few cores, and one test's bulk load must not slow
/// another's timing.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Held for a whole test.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

pub struct Browser {
    pub client: Client,
    pub downloads: PathBuf,
    driver: Child,
    _profile: tempfile::TempDir,
}

fn find(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{program} is not installed: run ./scripts/test (it installs Debian's chromium and chromium-driver)")
        })
}

impl Browser {
    pub async fn open() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let port = free_port();
        // Its own process group, so the browser it starts goes with it.
        let driver = Command::new(find("chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join("profile").display()
        ));
        args.push("--window-size=1440,900".into());
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": find("chromium"),
                "args": args,
                "prefs": {
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            },
        });
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities.as_object().unwrap().clone());
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match builder.connect(&url).await {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot start chromium through chromedriver: {error}"),
            }
        };
        Browser {
            client,
            downloads,
            driver,
            _profile: profile,
        }
    }

    /// Opens the console and signs in with the test server's admin token.
    pub async fn sign_in(&self, server: &TestServer, path: &str) {
        self.client.goto(&server.url()).await.unwrap();
        let token = self.wait_for_element("input[name=token]").await;
        token.send_keys(TOKEN).await.unwrap();
        self.client
            .find(Locator::Css("form.signin button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_for_element(".topbar").await;
        if path != "/" {
            self.client
                .goto(&format!("{}{path}", server.url()))
                .await
                .unwrap();
        }
    }

    /// Clicks the element `css` finds, as a person would.
    pub async fn click(&self, css: &str) {
        self.wait_for_element(css).await.click().await.unwrap();
    }

    /// Presses a key, wherever the focus is.
    pub async fn press(&self, key: char) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    pub async fn wait_for_element(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return element;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `script` returns `true` in the page.
    pub async fn wait_until(&self, what: &str, script: &str) {
        self.wait_until_within(what, script, Duration::from_secs(20))
            .await
    }

    pub async fn wait_until_within(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() >= deadline {
                let status = self
                    .js("return document.body.innerText.slice(0, 2000)")
                    .await;
                panic!("timed out after {timeout:?} waiting for {what}; the page shows: {status}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The messages of the log rows in the page, top to bottom.
    pub async fn messages(&self) -> Vec<String> {
        let value = self
            .js("return [...document.querySelectorAll('.logview .row')]
                .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
                .map((row) => row.querySelector('.msg').textContent)")
            .await;
        serde_json::from_value(value).unwrap()
    }

    /// Saves a screenshot as `target/ui-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits for a finished download and returns its path.
    pub async fn downloaded(&self, extension: &str) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = std::fs::read_dir(&self.downloads)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .find(|path| path.extension().is_some_and(|e| e == extension));
            if let Some(path) = found {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "no .{extension} file was downloaded into {}",
                self.downloads.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        self.stop_driver();
    }

    fn stop_driver(&mut self) {
        // SAFETY: kill(2) on the process group we created; no memory involved.
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.driver.try_wait().ok().flatten().is_none() {
            self.stop_driver();
        }
    }
}

fn screenshots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}
