//! A headless Chromium driven over WebDriver, for the console's browser tests.
//!
//! [`Browser::start`] starts `chromedriver` on a free port and a Chromium session through it
//! (`--headless=new --no-sandbox --disable-dev-shm-usage`, so that it runs as root and in small
//! containers too). Its methods are blocking, like the rest of the harness: each runs one
//! WebDriver command on the browser's own runtime. Waiting is always for a condition, polled
//! until a deadline ([`Browser::wait_for`]); nothing sleeps a fixed time to be correct.
//!
//! The binaries are `chromium` and `chromedriver` on the `PATH` (Debian's packages of those
//! names), or the paths in `CHROMIUM_BIN` and `CHROMEDRIVER_BIN`.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::binary::target_dir;
use crate::server::{free_port, spawn_tied};

/// How long chromedriver may take to listen, and Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a condition is looked at again while waiting for it.
const POLL: Duration = Duration::from_millis(100);

/// A headless Chromium session and the chromedriver it runs through. Dropping it ends both.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width` x `height` pixels. Panics, saying
    /// what to install, when either binary is missing.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = binary("CHROMIUM_BIN", "chromium");
        let chromedriver = binary("CHROMEDRIVER_BIN", "chromedriver");
        let port = free_port();
        let log = target_dir().join("acceptance-logs");
        fs::create_dir_all(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let log = log.join(format!("chromedriver-{}-{port}.log", std::process::id()));
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = spawn_tied(command)
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let profile = saga_testkit::temp_dir();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a runtime: {e}"));
        let mut browser = Browser {
            runtime,
            client: None,
            driver,
            _profile: profile,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on port {port} within {START_TIMEOUT:?} (log: {})",
                log.display()
            );
            if let Ok(Some(status)) = browser.driver.try_wait() {
                panic!("chromedriver exited with {status} (log: {})", log.display());
            }
            thread::sleep(POLL);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-extensions",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        let client = browser
            .runtime
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a Chromium session through chromedriver: {e} (log: {})",
                    log.display()
                )
            });
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("the session is open until the browser is dropped")
    }

    /// Loads `url` and waits for the page to have loaded.
    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot load {url}: {e}"));
    }

    /// The URL of the page shown.
    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .map(|u| u.to_string())
            .unwrap_or_else(|e| panic!("cannot read the URL: {e}"))
    }

    fn find(&self, css: &str) -> Option<Element> {
        self.runtime
            .block_on(self.client().find(Locator::Css(css)))
            .ok()
    }

    fn element(&self, css: &str) -> Element {
        self.find(css).unwrap_or_else(|| {
            panic!(
                "no element `{css}` on {}:\n{}",
                self.url(),
                self.text("body").unwrap_or_default()
            )
        })
    }

    /// Whether an element matches `css`.
    pub fn exists(&self, css: &str) -> bool {
        self.find(css).is_some()
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.runtime
            .block_on(self.client().find_all(Locator::Css(css)))
            .map(|all| all.len())
            .unwrap_or(0)
    }

    /// The text of the first element matching `css`, if there is one.
    pub fn text(&self, css: &str) -> Option<String> {
        let element = self.find(css)?;
        self.runtime.block_on(element.text()).ok()
    }

    /// Attribute `name` of the first element matching `css`, if both exist.
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css)?;
        self.runtime.block_on(element.attr(name)).ok().flatten()
    }

    /// Whether the first element matching `css` is enabled (a button without `disabled`).
    pub fn is_enabled(&self, css: &str) -> bool {
        let element = self.element(css);
        self.runtime
            .block_on(element.is_enabled())
            .unwrap_or_else(|e| panic!("cannot read whether `{css}` is enabled: {e}"))
    }

    /// Types `text` into the field matching `css`, after clearing it.
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.runtime
            .block_on(async {
                element.clear().await?;
                element.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("cannot type into `{css}`: {e}"));
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let element = self.element(css);
        self.runtime
            .block_on(element.click())
            .unwrap_or_else(|e| panic!("cannot click `{css}`: {e}"));
    }

    /// Runs `script` in the page and returns its value.
    pub fn execute(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("the script failed: {e}"))
    }

    /// Polls `condition` until it holds, panicking with `what` and the page's text when it
    /// does not within `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, condition: impl Fn(&Browser) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {timeout:?} for {what} on {}; the page says:\n{}",
                    self.url(),
                    self.text("body").unwrap_or_default()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until an element matches `css`.
    pub fn wait_exists(&self, css: &str, timeout: Duration) {
        self.wait_for(&format!("`{css}`"), timeout, |b| b.exists(css));
    }

    /// Waits until the text of `css` satisfies `condition`, and returns it.
    pub fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for(&format!("the text of `{css}`"), timeout, |b| {
            b.text(css).is_some_and(|t| condition(&t))
        });
        self.text(css).unwrap_or_default()
    }

    /// Saves a PNG of the window as `target/console-screenshots/{name}.png` and returns its
    /// path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("cannot take a screenshot: {e}"));
        let dir = target_dir().join("console-screenshots");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        fs::write(&path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let close =
                async { tokio::time::timeout(Duration::from_secs(10), client.close()).await };
            let _ = self.runtime.block_on(close);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The binary in environment variable `var`, else `name` on the `PATH`.
fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on the PATH: install Debian's chromium and chromium-driver \
                 (apt-get install -y chromium chromium-driver), or set {var}"
            )
        })
}
