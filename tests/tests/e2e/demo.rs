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
    let started = std::time::Instant::now();
    let log = std::env::temp_dir().join(format!("{}.log", unique("vaka-demo-")));
    let database = format!(
        "sqlite://{}",
        std::env::temp_dir()
            .join(format!("{}.db", unique("vaka-demo-")))
            .display()
    );
    let mut child = Command::new(vaka_binary()?)
        .args(["demo", "--http", "127.0.0.1:0", "--patients", "12"])
        .args(["--database-url", &database])
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

    // After a minute of the demo (its 14 days of history uploaded late,
    // then live data), every active alert agrees with the stored data.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(started.elapsed())).await;
    let check = Command::new(vaka_binary()?)
        .args(["check", "--database-url", &database])
        .output()?;
    assert!(
        check.status.success(),
        "alerts that disagree with the data:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

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

/// The embedded broker enforces the same rule as Mosquitto with vaka's
/// ACL: a device logs in as itself, publishes only under its own topics
/// and subscribes only to its own replies.
#[tokio::test]
async fn the_demo_broker_lets_a_device_speak_only_for_itself() -> Result<()> {
    use crate::security::{options, try_connect, vaka, weight};
    use rumqttc::QoS;

    let log = std::env::temp_dir().join(format!("{}.log", unique("vaka-demo-")));
    let mut child = tokio::process::Command::new(vaka_binary()?)
        .args([
            "demo",
            "--http",
            "127.0.0.1:0",
            "--patients",
            "4",
            "--history-days",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut token) = (None, None);
    let (mut port, mut database) = (None, None);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            let line = line.trim();
            if let Some(u) = line.strip_prefix("Open:") {
                url = Some(u.trim().trim_end_matches('/').to_owned());
            } else if let Some(rest) = line.strip_prefix("API token:") {
                token = rest.split_whitespace().next().map(str::to_owned);
            } else if let Some(rest) = line.strip_prefix("MQTT:") {
                port = rest
                    .trim()
                    .strip_prefix("mqtt://127.0.0.1:")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok());
            } else if let Some(url) = line.strip_prefix("Database:") {
                database = Some(url.trim().to_owned());
                return Ok::<_, anyhow::Error>(());
            }
        }
        Err(anyhow!("the demo exited early; log: {}", log.display()))
    })
    .await
    .context("the demo did not print its addresses")??;
    let base = url.zip(token);
    let ((base, token), port, database) = (
        base.context("no URL or API token")?,
        port.context("no MQTT port")?,
        database.context("no database")?,
    );
    let api = Api {
        base,
        token,
        client: reqwest::Client::new(),
    };
    let devices = api.get("/api/v1/devices").await?;
    let ids: Vec<String> = devices
        .as_array()
        .context("devices")?
        .iter()
        .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
        .collect();
    anyhow::ensure!(ids.len() >= 2, "two devices in the demo: {devices}");
    let (me, other) = (&ids[0], &ids[1]);

    // New credentials for one device, as an operator would issue them.
    let out = vaka(&["device", "provision", me, "--database-url", &database])?;
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .context("no password printed")?
        .to_owned();

    // Wrong password, no password, and another device's name: refused.
    for creds in [
        Some((me.as_str(), "wrong")),
        None,
        Some((other.as_str(), password.as_str())),
    ] {
        anyhow::ensure!(
            try_connect(options(port, creds, None), &[]).await.is_err(),
            "{creds:?} was let in"
        );
    }
    // Subscribing to another device's replies closes the connection.
    let sneaky = try_connect(
        options(port, Some((me, &password)), None),
        &[format!("vaka/v1/d/{other}/err")],
    )
    .await;
    anyhow::ensure!(sneaky.is_err(), "subscribed to another device's replies");

    let device = try_connect(
        options(port, Some((me, &password)), None),
        &[format!("vaka/v1/d/{me}/err")],
    )
    .await
    .map_err(|e| anyhow!("connect as {me}: {e}"))?;
    // A reading in the other's name (its topic and its base name), then
    // one in our own: the guard keeps the order, so once ours is stored,
    // the other would have been too.
    let t = now_s() - 17.0;
    device
        .client
        .publish(
            format!("vaka/v1/d/{other}/obs"),
            QoS::AtLeastOnce,
            false,
            weight(other, t, 133.3),
        )
        .await?;
    device
        .client
        .publish(
            format!("vaka/v1/d/{me}/obs"),
            QoS::AtLeastOnce,
            false,
            weight(me, t, 122.2),
        )
        .await?;
    let store = vaka_hub::store::Store::connect(&database).await?;
    let at = |device: String| {
        let store = store.clone();
        async move {
            let vaka_hub::store::Store::Sqlite(pool) = &store else {
                return None;
            };
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM observations WHERE device_id = $1 AND time = $2",
            )
            .bind(device)
            .bind((t * 1000.0).round() as i64)
            .fetch_one(pool)
            .await
            .ok()
        }
    };
    eventually(
        "our own reading stored",
        Duration::from_secs(30),
        || async { (at(me.clone()).await? == 1).then_some(()) },
    )
    .await?;
    assert_eq!(
        at(other.clone()).await,
        Some(0),
        "published as another device"
    );
    store.close().await;
    let _ = child.kill().await;
    Ok(())
}
