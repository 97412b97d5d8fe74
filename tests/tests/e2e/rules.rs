//! Rules of the device kinds not covered by `ingest` (scale, cuff, fall
//! sensor), end to end through MQTT: the medicine dispenser and the fetal
//! monitor; and a plan changed through the API taking effect at once.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn dispenser_missed_dose_and_refill() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-doris", &[("disp-d1", "dispenser")]).await?;
    // The dose below arrives late: its absence is judged once the upload
    // has been quiet for this long (2 min by default).
    let (s, v) = api
        .call(
            reqwest::Method::PUT,
            "/api/v1/patients/p-doris/plan",
            Some(json!({"changes": {"thresholds": {"late_data_settle_s": 1}}, "reason": "test"})),
        )
        .await?;
    anyhow::ensure!(s == 200, "plan: {s} {v}");
    let (mut ws, _) = websocket(&hub).await?;
    let device = Mqtt::connect(&mqtt_url(), &[]).await?;
    let now = now_s();
    // Due two hours ago, never taken: the window (60 min) has passed.
    let due = PackBuilder::new("disp-d1", now - 7200.0).text(
        "dose_due",
        "2026-12-01-morgon",
        now - 7200.0,
    );
    device
        .publish(&hub.topic("disp-d1", "evt"), due.to_json())
        .await?;
    let alert = alert_of(&mut ws, "missed_dose", T).await?;
    assert_eq!(
        (alert["category"].as_str(), alert["severity"].as_str()),
        (Some("adherence"), Some("medium"))
    );
    assert!(
        alert["explanation"]
            .as_str()
            .unwrap_or("")
            .contains("2026-12-01-morgon"),
        "{alert}"
    );

    let status = PackBuilder::new("disp-d1", now).value("doses_left", "count", 1.0, now);
    device
        .publish(&hub.topic("disp-d1", "status"), status.to_json())
        .await?;
    let alert = alert_of(&mut ws, "refill_due", T).await?;
    assert_eq!(alert["severity"], "low");
    close(ws).await;
    db.assert_consistent().await?;
    Ok(())
}

#[tokio::test]
async fn fetal_tachycardia_and_the_session_summary() -> Result<()> {
    let db = TestDb::new(Backend::Sqlite).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-fia", &[("ctg-f1", "fetal_monitor")]).await?;
    let (mut ws, _) = websocket(&hub).await?;
    let device = Mqtt::connect(&mqtt_url(), &[]).await?;
    let topic = hub.topic("ctg-f1", "obs");
    let start = now_s() - 13.0 * 60.0;
    let begin = PackBuilder::new("ctg-f1", start).flag("ctg_session_start", start);
    device
        .publish(&hub.topic("ctg-f1", "evt"), begin.to_json())
        .await?;
    // 12 minutes at 175 bpm (with a little variability), 10 s packs at 4 Hz.
    for pack in 0..72 {
        let t0 = start + f64::from(pack) * 10.0;
        let mut b = PackBuilder::new("ctg-f1", t0);
        for k in 0..40 {
            let t = t0 + f64::from(k) * 0.25;
            b = b
                .value(
                    "fhr",
                    "beat/min",
                    175.0 + f64::from((pack * 40 + k) / 4 % 5),
                    t,
                )
                .value("toco", "%", 12.0, t);
        }
        device
            .publish(&topic, b.value("sigq", "%", 100.0, t0).to_json())
            .await?;
    }
    let alert = alert_of(&mut ws, "fetal_baseline", T).await?;
    assert_eq!(alert["severity"], "high");
    assert!(
        alert["explanation"]
            .as_str()
            .unwrap_or("")
            .contains("takykardi"),
        "{alert}"
    );

    let end_t = start + 720.0;
    let end = PackBuilder::new("ctg-f1", end_t).flag("ctg_session_end", end_t);
    device
        .publish(&hub.topic("ctg-f1", "evt"), end.to_json())
        .await?;
    let sessions = eventually("the session summary", T, || async {
        let s = api.get("/api/v1/patients/p-fia/ctg-sessions").await.ok()?;
        s.as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await?;
    let summary: serde_json::Value =
        serde_json::from_str(sessions[0]["summary"].as_str().unwrap_or("{}"))?;
    let baseline = summary["baseline_bpm"].as_f64().unwrap_or(0.0);
    assert!((174.0..=180.0).contains(&baseline), "{summary}");
    assert!(
        summary["signal_loss_pct"].as_f64().unwrap_or(100.0) < 1.0,
        "{summary}"
    );
    close(ws).await;
    db.assert_consistent().await?;
    Ok(())
}

#[tokio::test]
async fn a_plan_change_takes_effect_at_once() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-kol", &[("ox-k1", "pulse_oximeter")]).await?;
    let (status, plan) = api
        .call(
            reqwest::Method::PUT,
            "/api/v1/patients/p-kol/plan",
            Some(json!({"changes": {"thresholds": {"spo2_low_pct": 88}}, "reason": "KOL, läkarordination"})),
        )
        .await?;
    assert_eq!(status, 200, "{plan}");
    let (mut ws, _) = websocket(&hub).await?;
    let device = Mqtt::connect(&mqtt_url(), &[]).await?;
    let now = now_s();
    let ox = |t: f64, spo2: f64| {
        PackBuilder::new("ox-k1", t)
            .value("spo2", "%", spo2, t)
            .value("hr", "beat/min", 72.0, t)
            .to_json()
    };
    // 90 % is fine for this patient now; 86 % twice is not.
    for (dt, spo2) in [
        (-600.0, 90.0),
        (-540.0, 90.0),
        (-120.0, 86.0),
        (-60.0, 86.0),
    ] {
        device
            .publish(&hub.topic("ox-k1", "obs"), ox(now + dt, spo2))
            .await?;
    }
    let alert = alert_of(&mut ws, "spo2", T).await?;
    assert_eq!(alert["plan_version"], 2);
    assert!(
        alert["explanation"].as_str().unwrap_or("").contains("86 %"),
        "{alert}"
    );
    assert!(
        alert["explanation"]
            .as_str()
            .unwrap_or("")
            .ends_with("Gräns: under 88 %."),
        "{alert}"
    );
    close(ws).await;
    db.assert_consistent().await?;
    Ok(())
}

#[tokio::test]
async fn a_devices_battery_and_last_will() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-gun", &[("fall-g1", "fall_sensor")]).await?;
    let (mut ws, _) = websocket(&hub).await?;
    let device = Mqtt::connect(&mqtt_url(), &[]).await?;
    let now = now_s();
    let low = PackBuilder::new("fall-g1", now - 30.0).value("batt", "%", 15.0, now - 30.0);
    device
        .publish(&hub.topic("fall-g1", "status"), low.to_json())
        .await?;
    let alert = alert_of(&mut ws, "low_battery", T).await?;
    assert_eq!(
        (alert["device_id"].as_str(), alert["category"].as_str()),
        (Some("fall-g1"), Some("technical"))
    );
    // The contract's last will, as a broker publishes it for a lost device.
    device
        .publish(
            &hub.topic("fall-g1", "status"),
            r#"[{"n":"conn","vs":"offline"}]"#,
        )
        .await?;
    let alert = alert_of(&mut ws, "device_offline", T).await?;
    assert_eq!(alert["state"], "open");
    // Charged and back: both clear themselves.
    let now = now_s() + 1.0;
    let back = PackBuilder::new("fall-g1", now)
        .text("conn", "online", now)
        .value("batt", "%", 80.0, now);
    device
        .publish(&hub.topic("fall-g1", "status"), back.to_json())
        .await?;
    let mut cleared = Vec::new();
    while cleared.len() < 2 {
        let frame = next_frame(&mut ws, T).await?;
        if frame["type"] == "alert" && frame["alert"]["outcome"] == "cleared" {
            cleared.push(frame["alert"]["rule"].as_str().unwrap_or("").to_owned());
        }
    }
    cleared.sort();
    assert_eq!(cleared, ["device_offline", "low_battery"]);
    close(ws).await;
    db.assert_consistent().await?;
    Ok(())
}
