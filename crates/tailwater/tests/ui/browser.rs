//! A headless browser driven over WebDriver, Chromium or Firefox: its
//! driver (chromedriver, geckodriver) started by the test on any free
//! loopback port (it binds port 0 and says which it got), a fresh profile and download folder per browser, removed
//! with it, and screenshots saved under `target/ui-screenshots/<browser>/`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::common::{port_announced_by, TestServer, TOKEN};

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

/// Firefox's preferences that keep it off the network: no updates, no
/// telemetry, no captive portal or connectivity checks, no safe browsing
/// lists, no prefetching. (geckodriver sets most of them too; these do not
/// depend on its version.)
const FIREFOX_OFFLINE_PREFS: [(&str, bool); 17] = [
    ("app.update.auto", false),
    ("app.update.enabled", false),
    ("app.update.disabledForTesting", true),
    ("extensions.update.enabled", false),
    ("browser.search.update", false),
    ("toolkit.telemetry.enabled", false),
    ("toolkit.telemetry.unified", false),
    ("datareporting.healthreport.uploadEnabled", false),
    ("datareporting.policy.dataSubmissionEnabled", false),
    ("network.captive-portal-service.enabled", false),
    ("network.connectivity-service.enabled", false),
    ("browser.safebrowsing.malware.enabled", false),
    ("browser.safebrowsing.phishing.enabled", false),
    ("browser.safebrowsing.downloads.enabled", false),
    ("browser.safebrowsing.downloads.remote.enabled", false),
    ("browser.safebrowsing.blockedURIs.enabled", false),
    ("network.dns.disablePrefetch", true),
];

/// The browsers the console is tested in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Chromium,
    Firefox,
}

impl Engine {
    /// Its name in test names and screenshot folders.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }

    /// Starts its WebDriver server on any free loopback port, in its own
    /// process group so the browser it starts goes with it; returns it and
    /// the port it says it bound.
    fn start_driver(self, profile: &Path) -> (Child, u16) {
        let (mut command, announced): (_, fn(&str) -> Option<u16>) = match self {
            Engine::Chromium => {
                let mut command = Command::new(self.find("chromedriver"));
                command.arg("--port=0");
                (command, chromedriver_port)
            }
            Engine::Firefox => {
                let mut command = Command::new(self.find("geckodriver"));
                // No --marionette-port: geckodriver then has Firefox bind
                // Marionette to port 0 and reads the port Firefox got from
                // the profile (`MarionetteActivePort`), ours too.
                command.args(["--host", "127.0.0.1", "--port", "0"]);
                (command, geckodriver_port)
            }
        };
        // What the driver and the browser write besides the profile goes
        // with it too.
        let mut driver = command
            .env("TMPDIR", profile)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let port = port_announced_by(driver.stdout.take().expect("piped"), announced);
        (driver, port)
    }

    /// The session's capabilities: headless, 1440×900, a fresh profile
    /// under `profile`, downloads saved into `downloads` without asking.
    fn capabilities(self, profile: &Path, downloads: &Path) -> Value {
        match self {
            Engine::Chromium => {
                let mut args: Vec<String> =
                    CHROMIUM_FLAGS.iter().map(|flag| flag.to_string()).collect();
                args.push(format!(
                    "--user-data-dir={}",
                    profile.join("profile").display()
                ));
                args.push("--window-size=1440,900".into());
                json!({
                    "goog:chromeOptions": {
                        "binary": self.find("chromium"),
                        "args": args,
                        "prefs": {
                            "download.default_directory": downloads,
                            "download.prompt_for_download": false,
                        },
                    },
                })
            }
            Engine::Firefox => {
                let firefox_profile = profile.join("profile");
                std::fs::create_dir_all(&firefox_profile).unwrap();
                let mut prefs: serde_json::Map<String, Value> = FIREFOX_OFFLINE_PREFS
                    .iter()
                    .map(|(name, value)| (name.to_string(), Value::Bool(*value)))
                    .collect();
                prefs.extend([
                    ("browser.download.folderList".into(), json!(2)),
                    ("browser.download.dir".into(), json!(downloads)),
                    ("browser.download.useDownloadDir".into(), json!(true)),
                    (
                        "browser.download.always_ask_before_handling_new_types".into(),
                        json!(false),
                    ),
                    (
                        "browser.helperApps.neverAsk.saveToDisk".into(),
                        json!("text/plain,application/x-ndjson"),
                    ),
                ]);
                json!({
                    "browserName": "firefox",
                    "moz:firefoxOptions": {
                        "binary": self.find("firefox-esr"),
                        "args": [
                            "-headless",
                            "-profile", firefox_profile,
                            "--width=1440",
                            "--height=900",
                        ],
                        "prefs": prefs,
                    },
                })
            }
        }
    }

    /// `program` (the browser or its driver) on the PATH.
    fn find(self, program: &str) -> PathBuf {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let installs = match self {
            Engine::Chromium => "Debian's chromium and chromium-driver",
            Engine::Firefox => "Debian's firefox-esr, and geckodriver into ~/.cargo/bin",
        };
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| {
                panic!("{program} is not installed: run ./scripts/test (it installs {installs})")
            })
    }
}

/// The port in chromedriver's `ChromeDriver was started successfully on
/// port N.`
fn chromedriver_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("started successfully on port ")?;
    rest.trim().trim_end_matches('.').parse().ok()
}

/// The port in geckodriver's `… INFO Listening on 127.0.0.1:N`.
fn geckodriver_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("Listening on ")?;
    let address: std::net::SocketAddr = rest.split_whitespace().next()?.parse().ok()?;
    Some(address.port())
}

#[test]
fn drivers_announcements_are_read() {
    assert_eq!(
        chromedriver_port("ChromeDriver was started successfully on port 46169."),
        Some(46169)
    );
    assert_eq!(
        chromedriver_port("Starting ChromeDriver 156.0 (1a2e…) on port 0"),
        None
    );
    assert_eq!(
        geckodriver_port("1733555555555\tgeckodriver\tINFO\tListening on 127.0.0.1:4444"),
        Some(4444)
    );
    assert_eq!(geckodriver_port("geckodriver\tINFO\tShutting down"), None);
}

/// `text`, then the Enter key: typed as a person types and submits (a
/// `\n` is Enter to chromedriver but a plain character to geckodriver).
pub fn then_enter(text: &str) -> String {
    format!("{text}{}", fantoccini::key::Key::Enter)
}

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
    pub engine: Engine,
    pub downloads: PathBuf,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(engine: Engine) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let (driver, port) = engine.start_driver(profile.path());
        let capabilities = engine.capabilities(profile.path(), &downloads);
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
                Err(error) => panic!(
                    "cannot start {} through its WebDriver server: {error}",
                    engine.name()
                ),
            }
        };
        Browser {
            client,
            engine,
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

    /// Saves a screenshot as `target/ui-screenshots/<browser>/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        // What the page drew by its next frame: Firefox takes the picture
        // at once, before the rows scheduled for that frame are there.
        self.js("return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
            .await;
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots_dir().join(self.engine.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits for a finished download and returns its path. A browser
    /// writes a partial file first (`.crdownload`, `.part`) and may make
    /// the final name before it is filled: the download is done when the
    /// file is there and no partial file is left.
    pub async fn downloaded(&self, extension: &str) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let files: Vec<PathBuf> = std::fs::read_dir(&self.downloads)
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect();
            let partial = files.iter().any(|path| {
                path.extension()
                    .is_some_and(|e| e == "part" || e == "crdownload")
            });
            let found = files
                .into_iter()
                .find(|path| path.extension().is_some_and(|e| e == extension));
            if let (Some(path), false) = (found, partial) {
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
