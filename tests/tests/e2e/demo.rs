//! `vaka demo` works on its own: embedded broker, SQLite, simulator. It
//! shows alerts from the simulated history within seconds and stops
//! cleanly on Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

#[tokio::test]
async fn the_demo_runs_shows_alerts_and_stops_cleanly() -> Result<()> {
    let log = std::env::temp_dir().join(format!("{}.log", unique("vaka-demo-")));
    let mut child = Command::new(vaka_binary()?)
        .args(["demo", "--http", "127.0.0.1:0", "--patients", "12"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(tokio::process::ChildStdout::from_std(stdout)?).lines();
    let (base, token) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut base = None;
        while let Some(line) = lines.next_line().await? {
            let line = line.trim();
            if let Some(url) = line.strip_prefix("Open:") {
                base = Some(url.trim().trim_end_matches('/').to_owned());
            } else if let Some(rest) = line.strip_prefix("API token:") {
                let token = rest.split_whitespace().next().unwrap_or_default();
                let base = base.ok_or_else(|| anyhow!("the token came before the URL"))?;
                return Ok::<_, anyhow::Error>((base, token.to_owned()));
            }
        }
        Err(anyhow!(
            "the demo exited before printing its URL and token; log: {}",
            log.display()
        ))
    })
    .await
    .context("the demo did not print its URL")??;
    let api = Api {
        base,
        token,
        client: reqwest::Client::new(),
    };
    // The simulated history has fluid retention in it.
    let alert = eventually(
        "a weight alert in the demo",
        Duration::from_secs(60),
        || async {
            let alerts = api.get("/api/v1/alerts").await.ok()?;
            alerts
                .as_array()?
                .iter()
                .find(|a| a["rule"] == "weight_gain_3d")
                .cloned()
        },
    )
    .await
    .with_context(|| format!("log: {}", log.display()))?;
    assert!(
        alert["explanation"]
            .as_str()
            .is_some_and(|e| e.starts_with("Vikt +"))
    );
    let page = api
        .client
        .get(format!("{}/", api.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("<html lang=\"sv\">"));

    // The printed nurse login works, and her board holds the simulated
    // patients.
    let login = api
        .client
        .post(format!("{}/api/v1/auth/login", api.base))
        .json(&serde_json::json!({"username": "sjukskoterska", "password": "vaka-demo-2026"}))
        .send()
        .await?;
    assert_eq!(login.status(), 200, "demo login");
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .ok_or_else(|| anyhow!("no session cookie"))?
        .to_owned();
    let board: serde_json::Value = api
        .client
        .get(format!("{}/api/v1/board", api.base))
        .header("cookie", cookie)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(board["rows"].as_array().map(Vec::len), Some(12), "{board}");

    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    assert!(
        status.success(),
        "Ctrl-C should stop the demo cleanly: {status}"
    );
    Ok(())
}
