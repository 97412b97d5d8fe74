//! Browser tests: the dashboard in headless Chromium (chromedriver +
//! fantoccini) against the real `vaka serve`, PostgreSQL and Mosquitto, as
//! a nurse uses it: log in, the board of simulated patients worst first, an
//! alert published through MQTT appearing live, an acknowledgement in one
//! browser reaching a second one, and the CTG viewer drawing a live session.
//!
//! Screenshots go to a temporary directory (printed); with
//! `VAKA_UPDATE_SCREENSHOTS=1` the board and the CTG viewer are also copied
//! to docs/board.png and docs/ctg.png.

// The e2e helpers, shared; this binary uses only part of them.
#[allow(dead_code)]
#[path = "../e2e/support.rs"]
mod support;

mod driver;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};

use driver::{Driver, publish, screenshot_dir};
use support::*;

const PASSWORD: &str = "korrekt-hast-batteri";

/// Level order of the board (ARCHITECTURE: high → medium → missing → stable).
fn rank(level: &str) -> usize {
    ["high", "medium", "missing", "stable"]
        .iter()
        .position(|l| *l == level)
        .unwrap_or(usize::MAX)
}

async fn expect(
    api: &Api,
    method: Method,
    path: &str,
    body: Value,
    status: &[u16],
) -> Result<Value> {
    let (s, v) = api.call(method.clone(), path, Some(body)).await?;
    if !status.contains(&s) {
        bail!("{method} {path}: {s} {v}");
    }
    Ok(v)
}

/// A care unit and nurses in it, through the admin API.
async fn unit_with_nurses(api: &Api, usernames: &[&str]) -> Result<(String, Vec<String>)> {
    let unit = unique("vc-");
    expect(
        api,
        Method::POST,
        "/api/v1/care-units",
        json!({"id": unit, "name": "Vårdcentralen Testby", "kind": "region"}),
        &[200, 201],
    )
    .await?;
    let mut ids = Vec::new();
    for u in usernames {
        let staff = expect(
            api,
            Method::POST,
            "/api/v1/staff",
            json!({"username": u, "name": format!("Syster {u}"), "role": "nurse",
                   "password": PASSWORD, "units": [unit]}),
            &[200, 201],
        )
        .await?;
        let id = staff["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| staff["id"].as_i64().map(|i| i.to_string()))
            .or_else(|| staff["staff"]["id"].as_str().map(str::to_owned))
            .with_context(|| format!("no id in {staff}"))?;
        ids.push(id);
    }
    Ok((unit, ids))
}

/// Enrols `patient` in `unit` and assigns it to every nurse of `staff`.
async fn enrol_and_assign(api: &Api, unit: &str, staff: &[String], patient: &str) -> Result<()> {
    expect(
        api,
        Method::PUT,
        &format!("/api/v1/patients/{patient}/enrolments/{unit}"),
        json!({}),
        &[200, 201, 204],
    )
    .await?;
    for s in staff {
        expect(
            api,
            Method::PUT,
            &format!("/api/v1/staff/{s}/assignments/{patient}"),
            json!({}),
            &[200, 201, 204],
        )
        .await?;
    }
    Ok(())
}

/// The levels of the board's rows, top to bottom, with their patients.
async fn board_rows(b: &driver::Browser) -> Result<Vec<(String, String)>> {
    let v = b
        .js(
            "return [...document.querySelectorAll('#board tbody tr')]
                .map(tr => [tr.dataset.patient, tr.dataset.level]);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(v)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_board_is_worst_first_and_live_in_two_browsers() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    let (a_name, b_name) = (unique("ssk-a-"), unique("ssk-b-"));
    let (unit, nurses) = unit_with_nurses(&api, &[&a_name, &b_name]).await?;

    // Simulated patients with 14 days of history, registered and running.
    let roster = vaka_sim::roster(11, 16);
    vaka_sim::register::register(&roster, &hub.base, Some(&hub.token)).await?;
    for p in &roster.patients {
        enrol_and_assign(&api, &unit, &nurses, &p.id).await?;
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sim = {
        let (roster, shutdown) = (roster.clone(), shutdown.clone());
        let config = vaka_sim::SimConfig {
            mqtt_url: hub.config.mqtt_url.clone(),
            topic_root: hub.config.topic_root.clone(),
            seed: 11,
            history_days: 14,
            client_prefix: unique("sim-"),
            credentials: Default::default(),
        };
        tokio::spawn(async move {
            vaka_sim::run_with(&roster, config, vaka_sim::Timing::default(), shutdown).await
        })
    };
    // The history holds fluid retention: wait for the rules to have seen it.
    eventually(
        "alerts from the simulated history",
        Duration::from_secs(90),
        || async {
            let alerts = api.get("/api/v1/alerts").await.ok()?;
            alerts
                .as_array()?
                .iter()
                .any(|a| a["rule"] == "weight_gain_3d")
                .then_some(())
        },
    )
    .await
    .with_context(|| hub.log_tail())?;

    let driver = Driver::start().await?;
    let shots = screenshot_dir()?;
    eprintln!("screenshots in {}", shots.display());
    let a = driver.browser().await?;
    a.login(&hub.base, &a_name, PASSWORD).await?;
    a.until(
        "every simulated patient on the board",
        Duration::from_secs(15),
        "return document.querySelectorAll('#board tbody tr').length === arguments[0];",
        vec![json!(roster.patients.len())],
    )
    .await?;

    // Worst first: the levels never get better going down.
    let rows = board_rows(&a).await?;
    let ranks: Vec<usize> = rows.iter().map(|(_, l)| rank(l)).collect();
    assert!(
        ranks.iter().all(|r| *r != usize::MAX),
        "unknown level in {rows:?}"
    );
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "not worst first: {rows:?}"
    );
    assert!(ranks[0] < rank("stable"), "no alert on the board: {rows:?}");
    // NEWS2 of the last day's vital signs, for the patients who measured.
    let news2 = a
        .js(
            "return [...document.querySelectorAll('#board tbody tr .news2')].map(e => e.innerText);",
            vec![],
        )
        .await?;
    let news2 = news2.as_array().cloned().unwrap_or_default();
    assert!(
        !news2.is_empty()
            && news2
                .iter()
                .all(|t| t.as_str().is_some_and(|t| t.contains("NEWS2"))),
        "no NEWS2 on the board: {news2:?}"
    );
    // Severity is in words too, not only colour.
    // (Read in the page: the board redraws its rows as readings arrive, so
    // an element handle may go stale between finding and reading it.)
    let first_level = a
        .js(
            "return document.querySelector('#board tbody tr .col-level').innerText;",
            vec![],
        )
        .await?;
    assert!(
        !first_level.as_str().unwrap_or("").trim().is_empty(),
        "no words for the level: {first_level}"
    );

    // A second nurse's browser, on the same patients.
    let b = driver.browser().await?;
    b.login(&hub.base, &b_name, PASSWORD).await?;

    // A fall, through MQTT, for the patient at the bottom of the board.
    let (patient, _) = rows.last().cloned().context("an empty board")?;
    let sensor = unique("fall-");
    expect(
        &api,
        Method::POST,
        "/api/v1/devices",
        json!({"id": sensor, "kind": "fall_sensor"}),
        &[201],
    )
    .await?;
    expect(
        &api,
        Method::PUT,
        &format!("/api/v1/devices/{sensor}/binding"),
        json!({"patient_id": patient}),
        &[200],
    )
    .await?;
    let mqtt = Mqtt::connect(&hub.config.mqtt_url, &[]).await?;
    let pack =
        json!([{"bn": format!("urn:dev:vaka:{sensor}:"), "bt": now_s(), "n": "fall", "vb": true}]);
    mqtt.publish(&hub.topic(&sensor, "evt"), pack.to_string())
        .await?;

    let find_fall =
        "const tr = document.querySelector(`#board tbody tr[data-patient='${arguments[0]}']`);
        const el = tr && tr.querySelector(\"[data-rule='fall']\");
        return el && tr.dataset.level === 'high' ? [el.dataset.alertId, el.dataset.state] : null;";
    // The row shows the alert at once and is re-sorted as high right after.
    let seen = a
        .until(
            "the fall on the board, high",
            Duration::from_secs(10),
            find_fall,
            vec![json!(patient)],
        )
        .await?;
    assert_eq!(seen[1], "open");
    let alert_id = seen[0].as_str().context("an alert id")?.to_owned();
    // The row moved up among the high ones.
    let rows = board_rows(&a).await?;
    let pos = rows
        .iter()
        .position(|(p, _)| *p == patient)
        .context("the row")?;
    assert!(rows[..pos].iter().all(|(_, l)| l == "high"), "{rows:?}");
    b.until(
        "the fall in the second browser",
        Duration::from_secs(10),
        find_fall,
        vec![json!(patient)],
    )
    .await?;

    // Acknowledge in A (keyboard: focus the button, press Enter) …
    a.press(
        &format!("#board tr[data-patient='{patient}'] button[data-action='acknowledge']"),
        "\u{E007}",
    )
    .await?;
    // … and B sees it without reloading.
    let state = format!("[data-alert-id='{alert_id}']");
    b.until("the acknowledgement in the second browser", Duration::from_secs(5),
        "const el = document.querySelector(arguments[0]); return el && el.dataset.state === 'acknowledged';",
        vec![json!(state)]).await?;
    let ack = api.get(&format!("/api/v1/alerts/{alert_id}")).await?;
    assert_eq!(ack["alert"]["state"], "acknowledged");
    assert_eq!(
        ack["alert"]["acknowledged_by"]
            .as_str()
            .map(|s| s.contains(&a_name)),
        Some(true),
        "acknowledged as the nurse who did it: {ack}"
    );

    let shot = a.screenshot(&shots, "board").await?;
    publish(&shot, "board.png")?;
    b.screenshot(&shots, "board-second-browser").await?;

    a.close().await;
    b.close().await;
    shutdown.cancel();
    let report = sim.await??;
    assert!(report.published > 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ctg_viewer_draws_a_live_session() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    let nurse = unique("ssk-");
    let (unit, nurses) = unit_with_nurses(&api, &[&nurse]).await?;
    let patient = unique("p-ctg-");
    let monitor = unique("ctg-");
    expect(
        &api,
        Method::POST,
        "/api/v1/patients",
        json!({"id": patient, "name": "Alva Testsson", "program": "pregnancy_diabetes"}),
        &[201],
    )
    .await?;
    expect(
        &api,
        Method::POST,
        "/api/v1/devices",
        json!({"id": monitor, "kind": "fetal_monitor"}),
        &[201],
    )
    .await?;
    expect(
        &api,
        Method::PUT,
        &format!("/api/v1/devices/{monitor}/binding"),
        json!({"patient_id": patient}),
        &[200],
    )
    .await?;
    enrol_and_assign(&api, &unit, &nurses, &patient).await?;

    // A real CTU-UHB recording replayed as a home session that began a
    // minute ago: the first minute is stored before the viewer opens.
    let start = vaka_gateway::UnixMillis::now().plus_millis(-60_000);
    let session = vaka_sim::ctg::Session::new(start, 3, 2400, 3);
    let mqtt = Mqtt::connect(&hub.config.mqtt_url, &[]).await?;
    let begin = json!([{"bn": format!("urn:dev:vaka:{monitor}:"), "bt": session.start.as_secs_f64(),
        "n": "ctg_session_start", "vb": true}]);
    mqtt.publish(&hub.topic(&monitor, "evt"), begin.to_string())
        .await?;
    let send = |j: usize| {
        let m = session.pack(&monitor, j);
        (hub.topic(&monitor, "obs"), m.payload)
    };
    for j in 0..6 {
        let (topic, payload) = send(j);
        mqtt.publish(&topic, payload).await?;
    }
    let path = format!("/api/v1/patients/{patient}/observations?metric=fhr&limit=10000");
    eventually(
        "the first minute stored",
        Duration::from_secs(20),
        || async {
            let rows = api.get(&path).await.ok()?;
            (rows.as_array()?.len() >= 200).then_some(())
        },
    )
    .await?;

    let driver = Driver::start().await?;
    let shots = screenshot_dir()?;
    eprintln!("screenshots in {}", shots.display());
    let b = driver.browser().await?;
    b.login(&hub.base, &nurse, PASSWORD).await?;
    b.client
        .goto(&format!("{}/#/patient/{patient}", hub.base))
        .await?;
    let count = "const el = document.querySelector('.ctg-live .ctg-count');
        return el ? Number(el.dataset.samples) : null;";
    let before = b
        .until(
            "the live CTG viewer",
            Duration::from_secs(15),
            count,
            vec![],
        )
        .await?;
    let before = before.as_u64().context("a sample count")?;
    assert!(before >= 200, "the stored minute is drawn: {before}");

    // Live: the next packs arrive over the websocket as they are stored.
    for j in 6..10 {
        let (topic, payload) = send(j);
        mqtt.publish(&topic, payload).await?;
    }
    let after = b
        .until(
            "live samples appended",
            Duration::from_secs(10),
            "const el = document.querySelector('.ctg-live .ctg-count');
         const n = el ? Number(el.dataset.samples) : 0; return n >= arguments[0] ? n : null;",
            vec![json!(before + 120)],
        )
        .await?;
    assert!(after.as_u64() > Some(before));
    // The hub's running analysis comes with the packs: the figures so far.
    let running = b
        .until(
            "the session's figures so far",
            Duration::from_secs(10),
            "const dl = document.querySelector('.ctg-live .ctg-summary[data-running=\"true\"]');
             return dl ? dl.innerText : null;",
            vec![],
        )
        .await?;
    let running = running.as_str().unwrap_or("");
    assert!(running.contains("Signalbortfall"), "{running}");
    assert!(running.contains("STV"), "{running}");

    // The trace is on the canvas: dark pen pixels on the pink paper.
    let inked = b.js("const c = document.querySelector('.ctg-live .ctg-fhr canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] < 80 && d[i+1] < 80 && d[i+2] < 80) n++;
        return n;", vec![]).await?;
    assert!(
        inked.as_u64().unwrap_or(0) > 500,
        "no FHR trace drawn: {inked}"
    );
    // The standard paper: 50–210 bpm, toco 0–100, 1 cm (96/2.54 CSS px)
    // a minute, so at least the 10 minutes the viewer always shows.
    let paper = b
        .js(
            "const s = document.querySelector('.ctg-live .ctg-scroll');
        const c = s.querySelector('.ctg-fhr canvas');
        return [s.dataset.fhrMin, s.dataset.fhrMax, s.dataset.tocoMax, s.dataset.pxPerMin,
                c.getBoundingClientRect().width];",
            vec![],
        )
        .await?;
    assert_eq!(paper[0], "50", "{paper}");
    assert_eq!(paper[1], "210", "{paper}");
    assert_eq!(paper[2], "100", "{paper}");
    assert_eq!(paper[3], "37.80", "{paper}");
    assert!(paper[4].as_f64().unwrap_or(0.0) >= 10.0 * 37.8, "{paper}");

    b.js("document.getElementById('ctg').scrollIntoView();", vec![])
        .await?;
    let shot = b.screenshot(&shots, "ctg").await?;
    publish(&shot, "ctg.png")?;
    b.close().await;
    Ok(())
}
