//! A device's readings travel through MQTT into the store, exactly once,
//! and the alerts they cause reach a nurse's websocket.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const DAY: f64 = 86_400.0;
const T: Duration = Duration::from_secs(20);

async fn readings_reach_the_store_once_and_alerts_the_websocket(backend: Backend) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll(
        "p-anna",
        &[
            ("scale-a1", "scale"),
            ("bp-a1", "bp_cuff"),
            ("fall-a1", "fall_sensor"),
        ],
    )
    .await?;
    let (mut ws, snapshot) = websocket(&hub).await?;
    assert_eq!(snapshot["alerts"], Value::Array(vec![]));
    // A client that asked for the alerts only.
    let (mut alerts_only, _) = websocket_with(&hub, "readings=false&").await?;

    // The cuff listens for commands, as a real one does.
    let mut device = Mqtt::connect(&mqtt_url(), &[hub.topic("bp-a1", "cmd")]).await?;
    let now = now_s();
    let weights = [
        PackBuilder::new("scale-a1", now - 3.0 * DAY).value("weight", "kg", 78.1, now - 3.0 * DAY),
        PackBuilder::new("scale-a1", now - 120.0).value("weight", "kg", 80.5, now - 120.0),
    ];
    let bp = |t: f64, sys: f64, dia: f64| {
        PackBuilder::new("bp-a1", t)
            .value("sys", "mm[Hg]", sys, t)
            .value("dia", "mm[Hg]", dia, t)
            .value("map", "mm[Hg]", ((sys + 2.0 * dia) / 3.0).round(), t)
            .value("hr", "beat/min", 88.0, t)
    };
    let first_bp = bp(now - 90.0, 192.0, 124.0);
    let repeat_bp = bp(now - 20.0, 188.0, 121.0);
    let fall = PackBuilder::new("fall-a1", now - 5.0).flag("fall", now - 5.0);

    for w in &weights {
        device
            .publish(&hub.topic("scale-a1", "obs"), w.to_json())
            .await?;
    }
    let alert = alert_of(&mut ws, "weight_gain_3d", T).await?;
    assert_eq!(
        alert["explanation"],
        "Vikt +2,4 kg på 3 dygn (78,1 → 80,5 kg). Gräns: +2,0 kg/3 dygn."
    );
    assert_eq!(alert["severity"], "medium");
    assert_eq!(alert["readings"].as_array().map(Vec::len), Some(2));

    // A fresh crisis reading asks the cuff to measure again …
    device
        .publish(&hub.topic("bp-a1", "obs"), first_bp.to_json())
        .await?;
    let cmd = device.next_on("/cmd", T).await?;
    assert_eq!(
        (cmd["cmd"].as_str(), cmd["name"].as_str()),
        (Some("remeasure"), Some("bp"))
    );
    // … and the repeat confirms it.
    device
        .publish(&hub.topic("bp-a1", "obs"), repeat_bp.to_json())
        .await?;
    let alert = alert_of(&mut ws, "bp_crisis", T).await?;
    assert_eq!(alert["confirmed"], true);
    assert_eq!(alert["severity"], "high");
    assert!(
        alert["explanation"]
            .as_str()
            .unwrap_or("")
            .contains("192/124"),
        "{alert}"
    );

    device
        .publish(&hub.topic("fall-a1", "evt"), fall.to_json())
        .await?;
    let alert = alert_of(&mut ws, "fall", T).await?;
    assert_eq!(alert["patient_id"], "p-anna");
    let mut frames = Vec::new();
    while let Ok(f) = next_frame(&mut alerts_only, Duration::from_millis(500)).await {
        frames.push(f);
    }
    let mut rules: Vec<&str> = frames
        .iter()
        .filter(|f| f["type"] == "alert")
        .filter_map(|f| f["alert"]["rule"].as_str())
        .collect();
    rules.dedup();
    assert_eq!(rules, ["weight_gain_3d", "bp_crisis", "fall"], "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] == "alert"), "{frames:?}");

    // Every message again, as a broker redelivers after a crash.
    for w in &weights {
        device
            .publish(&hub.topic("scale-a1", "obs"), w.to_json())
            .await?;
    }
    device
        .publish(&hub.topic("bp-a1", "obs"), first_bp.to_json())
        .await?;
    device
        .publish(&hub.topic("bp-a1", "obs"), repeat_bp.to_json())
        .await?;
    device
        .publish(&hub.topic("fall-a1", "evt"), fall.to_json())
        .await?;
    eventually("all 10 messages committed", T, || async {
        (api.metric("vaka_messages_stored_total").await.ok()? >= 10.0).then_some(())
    })
    .await?;

    let store = db.store().await?;
    assert_eq!(
        count(&store, "SELECT count(*) FROM observations").await?,
        2 + 2 * 4
    );
    assert_eq!(count(&store, "SELECT count(*) FROM events").await?, 1);
    assert_eq!(api.metric("vaka_records_duplicate_total").await?, 11.0);
    let alerts = api.get("/api/v1/alerts?state=all").await?;
    let alerts = alerts.as_array().cloned().unwrap_or_default();
    let mut rules: Vec<&str> = alerts.iter().filter_map(|a| a["rule"].as_str()).collect();
    rules.sort();
    assert_eq!(rules, ["bp_crisis", "fall", "weight_gain_3d"]);
    assert!(
        alerts.iter().all(|a| a["count"] == 1),
        "a redelivery updated an alert: {alerts:?}"
    );

    // The API shows the observations, newest first.
    let obs = api
        .get("/api/v1/patients/p-anna/observations?metric=weight")
        .await?;
    assert_eq!(obs[0]["value"], 80.5);
    assert_eq!(obs[1]["value"], 78.1);
    close(ws).await;
    db.assert_consistent().await?;
    Ok(())
}

#[tokio::test]
async fn postgres_readings_reach_the_store_once_and_alerts_the_websocket() -> Result<()> {
    readings_reach_the_store_once_and_alerts_the_websocket(Backend::Postgres).await
}

#[tokio::test]
async fn sqlite_readings_reach_the_store_once_and_alerts_the_websocket() -> Result<()> {
    readings_reach_the_store_once_and_alerts_the_websocket(Backend::Sqlite).await
}

/// An alert survives a restart, and the restart raises nothing twice.
async fn alerts_survive_a_restart(backend: Backend) -> Result<()> {
    let db = TestDb::new(backend).await?;
    let mut hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-bo", &[("help-b1", "fall_sensor")]).await?;
    let device = Mqtt::connect(&mqtt_url(), &[]).await?;
    let now = now_s();
    let press = PackBuilder::new("help-b1", now - 1.0).flag("help_button", now - 1.0);
    device
        .publish(&hub.topic("help-b1", "evt"), press.to_json())
        .await?;
    let (mut ws, _) = websocket(&hub).await?;
    let alert = match api
        .get("/api/v1/alerts")
        .await?
        .as_array()
        .and_then(|a| a.first().cloned())
    {
        Some(a) => a,
        None => alert_of(&mut ws, "help_button", T).await?,
    };
    let id = alert["alert_id"].as_i64().unwrap_or_default();
    let (status, acked) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{id}/acknowledge"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{acked}");
    close(ws).await;

    assert_eq!(hub.stop(), Some(0), "a clean stop exits 0");
    hub.restart().await?;
    let api = hub.api();
    let (_, snapshot) = websocket(&hub).await?;
    let alerts = snapshot["alerts"].as_array().cloned().unwrap_or_default();
    assert_eq!(alerts.len(), 1, "{snapshot}");
    assert_eq!(alerts[0]["alert_id"], id);
    assert_eq!(alerts[0]["state"], "acknowledged");
    assert_eq!(alerts[0]["count"], 1);
    let history = api.get(&format!("/api/v1/alerts/{id}")).await?;
    let actions: Vec<&str> = history["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(actions, ["opened", "acknowledged"]);
    db.assert_consistent().await?;
    Ok(())
}

#[tokio::test]
async fn postgres_alerts_survive_a_restart() -> Result<()> {
    alerts_survive_a_restart(Backend::Postgres).await
}

#[tokio::test]
async fn sqlite_alerts_survive_a_restart() -> Result<()> {
    alerts_survive_a_restart(Backend::Sqlite).await
}
