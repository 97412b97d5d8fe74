//! Headless Chromium through chromedriver (WebDriver), one chromedriver per
//! test on a free port, one browser session per simulated nurse.
//!
//! Paths come from `VAKA_CHROMEDRIVER` / `VAKA_CHROMIUM` (scripts/test.sh
//! installs Debian's `chromium` and `chromium-driver` and sets them), with
//! the Debian locations as defaults.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{eventually, unique};

/// A chromedriver process of the test's own.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    pub async fn start() -> Result<Driver> {
        let bin =
            std::env::var("VAKA_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        if !Path::new(&bin).exists() {
            bail!("{bin} not found: install chromium and chromium-driver (scripts/test.sh does)");
        }
        // A free port: bind to 0, read it, let go. chromedriver cannot
        // report a port of its own choosing.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {bin}"))?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        eventually(
            "chromedriver to listen",
            Duration::from_secs(15),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await?;
        Ok(driver)
    }

    /// A new headless browser (its own profile, so its own cookies).
    pub async fn browser(&self) -> Result<Browser> {
        let chromium =
            std::env::var("VAKA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1600,1000",
                    "--lang=sv-SE", "--force-device-scale-factor=1",
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("start a Chromium session")?;
        Ok(Browser { client })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver ends the browsers of its sessions as it goes.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser window, as a nurse uses it.
pub struct Browser {
    pub client: Client,
}

impl Browser {
    pub async fn css(&self, selector: &str) -> Result<fantoccini::elements::Element> {
        Ok(self.client.find(Locator::Css(selector)).await?)
    }

    /// Sends `keys` to the element `selector` finds (WebDriver focuses it
    /// first, as a keyboard user would). The board redraws its rows as
    /// readings arrive, so a handle found a moment ago may be stale: find
    /// it again and retry, a few times.
    pub async fn press(&self, selector: &str, keys: &str) -> Result<()> {
        let mut tries = 0;
        loop {
            let sent = match self.css(selector).await {
                Ok(el) => el.send_keys(keys).await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => return Ok(()),
                Err(e) if tries < 20 && is_stale(&e) => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e.context(format!("press {keys:?} on {selector}"))),
            }
        }
    }

    /// Opens the dashboard and logs in through the form.
    pub async fn login(&self, base: &str, username: &str, password: &str) -> Result<()> {
        self.client.goto(&format!("{base}/")).await?;
        let wait = Duration::from_secs(15);
        self.client
            .wait()
            .at_most(wait)
            .for_element(Locator::Css("#login-form"))
            .await
            .context("no login form")?;
        self.css("#username").await?.send_keys(username).await?;
        self.css("#password").await?.send_keys(password).await?;
        self.css("#login-submit").await?.click().await?;
        self.client
            .wait()
            .at_most(wait)
            .for_element(Locator::Css("#board tbody tr"))
            .await
            .context("the board did not appear after logging in")?;
        Ok(())
    }

    /// Runs `script` (a function body; `arguments` as usual) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Polls `script` until it returns something other than null/false.
    pub async fn until(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, args.clone()).await?;
            if !(v.is_null() || v == Value::Bool(false)) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting in the browser for {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the window into `dir`; returns its path.
    pub async fn screenshot(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        if !png.starts_with(b"\x89PNG") {
            return Err(anyhow!("the screenshot is not a PNG"));
        }
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn is_stale(e: &anyhow::Error) -> bool {
    e.downcast_ref::<fantoccini::error::CmdError>()
        .is_some_and(|e| e.is_stale_element_reference())
}

/// A directory for this run's screenshots (kept for looking at failures).
pub fn screenshot_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique("vaka-browser-"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// With `VAKA_UPDATE_SCREENSHOTS=1`, copies a screenshot into the
/// repository's `docs/` (that is how docs/board.png and docs/ctg.png are
/// made); otherwise leaves the working tree alone.
pub fn publish(shot: &Path, name: &str) -> Result<()> {
    if std::env::var("VAKA_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return Ok(());
    }
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    std::fs::create_dir_all(&docs)?;
    std::fs::copy(shot, docs.join(name))?;
    Ok(())
}
