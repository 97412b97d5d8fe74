//! Crash safety: `vaka serve` killed hard (SIGKILL) in the middle of a burst
//! of QoS 1 messages, more than once, then started again. Every reading is
//! stored exactly once, no alert is raised twice or lost, and an alert
//! acknowledged before the crash stays acknowledged, a snoozed one snoozed.
//! It prints a `fault-summary` line (see docs/RELIABILITY.md).
//!
//! The broker is Mosquitto of the test's own with a large queue for the
//! gateway's persistent session: the default (1000 messages) would drop
//! what is published while vaka is down, which is the broker's limit, not
//! vaka's.

use std::time::Duration;

use anyhow::Result;
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const PATIENTS: usize = 10;
/// Blood-pressure readings per patient in the burst (4 records each).
const READINGS: usize = 300;
/// Patients whose burst holds a confirmed crisis.
const IN_CRISIS: usize = 3;

pub(crate) fn reading(device: &str, t: f64, sys: f64, dia: f64) -> String {
    PackBuilder::new(device, t)
        .value("sys", "mm[Hg]", sys, t)
        .value("dia", "mm[Hg]", dia, t)
        .value("map", "mm[Hg]", ((sys + 2.0 * dia) / 3.0).round(), t)
        .value("hr", "beat/min", 70.0, t)
        .to_json()
}

async fn killed_during_a_burst(backend: Backend) -> Result<()> {
    let broker = OwnBroker::start().await?;
    let db = TestDb::new(backend).await?;
    let mut hub = Hub::start(HubConfig::new(&db, &broker.url)).await?;
    let api = hub.api();
    for p in 0..PATIENTS {
        let bp = format!("bp-crash-{p}");
        let mut devices = vec![(bp.as_str(), "bp_cuff")];
        // Patient 1 also weighs in: a weight gain alert to snooze.
        if p == 1 {
            devices.push(("scale-crash-1", "scale"));
        }
        api.enroll(&format!("p-crash-{p}"), &devices).await?;
    }
    let store = db.store().await?;
    let started = std::time::Instant::now();

    // Before the burst: one confirmed crisis whose alert a nurse acknowledges.
    let mut device = Mqtt::connect(&broker.url, &[]).await?;
    let start = now_s() - 6.0 * 3600.0;
    device
        .publish(
            &hub.topic("bp-crash-0", "obs"),
            reading("bp-crash-0", start - 120.0, 195.0, 110.0),
        )
        .await?;
    device
        .publish(
            &hub.topic("bp-crash-0", "obs"),
            reading("bp-crash-0", start - 60.0, 190.0, 108.0),
        )
        .await?;
    let acked_id = eventually(
        "the first crisis alert",
        Duration::from_secs(20),
        || async {
            let alerts = api.get("/api/v1/alerts").await.ok()?;
            alerts.as_array()?.first()?["alert_id"].as_i64()
        },
    )
    .await?;
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{acked_id}/acknowledge"),
            None,
        )
        .await?;
    assert_eq!(s, 200);

    // And a weight gain (medium) that a nurse snoozes for ten hours.
    let scale = hub.topic("scale-crash-1", "obs");
    for (t, kg) in [(start - 24.0 * 3600.0, 80.0), (start, 82.0)] {
        let pack = PackBuilder::new("scale-crash-1", t).value("weight", "kg", kg, t);
        device.publish(&scale, pack.to_json()).await?;
    }
    let snoozed_id = eventually("the weight gain alert", Duration::from_secs(20), || async {
        let alerts = api.get("/api/v1/alerts").await.ok()?;
        alerts
            .as_array()?
            .iter()
            .find(|a| a["rule"] == "weight_gain_1d")?["alert_id"]
            .as_i64()
    })
    .await?;
    let (s, body) = api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{snoozed_id}/snooze"),
            Some(serde_json::json!({"minutes": 600, "reason": "ringer i eftermiddag"})),
        )
        .await?;
    assert_eq!(s, 200, "{body}");

    // The burst: readings one minute apart, all patients interleaved. The
    // crisis patients get a confirmed crisis in the middle (two readings a
    // minute apart), a new episode for patient 0 hours after the first.
    let mut messages = Vec::with_capacity(PATIENTS * READINGS);
    for i in 0..READINGS {
        for p in 0..PATIENTS {
            let t = start + (i as f64) * 60.0;
            let crisis = p < IN_CRISIS && (i == READINGS / 2 || i == READINGS / 2 + 1);
            let (sys, dia) = if crisis {
                (200.0, 125.0)
            } else {
                (128.0 + (i % 7) as f64, 82.0)
            };
            let dev = format!("bp-crash-{p}");
            messages.push((hub.topic(&dev, "obs"), reading(&dev, t, sys, dia)));
        }
    }
    let total = messages.len() as u64;
    // About a thousand messages a second: vaka stores a burst published
    // flat out faster than the kills below could land in it.
    let publisher = tokio::spawn(async move {
        for (k, (topic, payload)) in messages.into_iter().enumerate() {
            device.publish(&topic, payload).await?;
            if k % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        device.wait_acked(total + 4).await?;
        anyhow::Ok(device.acked())
    });

    // Kill it three times while the burst is under way.
    let kills = [total / 5, total * 2 / 5, total * 3 / 5];
    let mut stored_at_kills = Vec::new();
    for target in kills {
        let n = eventually(
            "part of the burst stored",
            Duration::from_secs(60),
            || async {
                let n = count(&store, "SELECT count(*) FROM observations")
                    .await
                    .ok()?;
                (n as u64 >= target * 4).then_some(n)
            },
        )
        .await?;
        stored_at_kills.push(n);
        hub.kill_hard();
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.restart().await?;
    }
    let acked = publisher.await??;
    // Every kill landed while the burst was still arriving.
    assert!(
        stored_at_kills.iter().all(|n| (*n as u64) < total * 4),
        "a kill came after the whole burst was stored: {stored_at_kills:?} of {}",
        total * 4
    );

    let expected = (total + 2) as i64 * 4 + 2;
    let stored = eventually("every reading stored", Duration::from_secs(90), || async {
        let n = count(&store, "SELECT count(*) FROM observations")
            .await
            .ok()?;
        (n >= expected).then_some(n)
    })
    .await;
    let stored = match stored {
        Ok(n) => n,
        Err(e) => panic!("{e}\nvaka log:\n{}", hub.log_tail()),
    };
    assert_eq!(stored, expected, "stored more rows than sent");

    // One alert per crisis patient. Patient 0's alert, acknowledged before
    // the burst, is still active, so its second episode updates it. The
    // rules run after the commit (the last batches may be stored before the
    // engine has seen them): wait for the alerts to settle on what is
    // expected, then compare exactly.
    let mut expected_alerts: Vec<(String, String)> = (0..IN_CRISIS)
        .map(|p| (format!("p-crash-{p}"), "bp_crisis".to_owned()))
        .chain([("p-crash-1".to_owned(), "weight_gain_1d".to_owned())])
        .collect();
    expected_alerts.sort();
    let per_patient_of = |alerts: &[serde_json::Value]| {
        let mut v: Vec<(String, String)> = alerts
            .iter()
            .map(|a| {
                (
                    a["patient_id"].as_str().unwrap_or("").into(),
                    a["rule"].as_str().unwrap_or("").into(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let api = hub.api();
    let settled = eventually("the expected alerts", Duration::from_secs(30), || async {
        let alerts = api.get("/api/v1/alerts?state=all").await.ok()?;
        let alerts = alerts.as_array().cloned()?;
        let second_episode = alerts
            .iter()
            .any(|a| a["alert_id"] == acked_id && a["count"].as_i64() >= Some(2));
        (per_patient_of(&alerts) == expected_alerts && second_episode).then_some(())
    })
    .await;
    let alerts = hub.api().get("/api/v1/alerts?state=all").await?;
    let alerts = alerts.as_array().cloned().unwrap_or_default();
    let per_patient = per_patient_of(&alerts);
    assert_eq!(
        per_patient, expected_alerts,
        "alerts ({settled:?}): {alerts:#?}"
    );
    let first = alerts
        .iter()
        .find(|a| a["alert_id"] == acked_id)
        .cloned()
        .unwrap_or_default();
    assert_eq!(first["state"], "acknowledged", "{first}");
    let updates = first["count"].as_i64().unwrap_or(0);
    assert!(
        (2..=3).contains(&updates),
        "the second episode updates it: {first}"
    );
    let snoozed = alerts
        .iter()
        .find(|a| a["alert_id"] == snoozed_id)
        .cloned()
        .unwrap_or_default();
    assert_eq!(snoozed["state"], "snoozed", "{snoozed}");
    assert!(
        alerts
            .iter()
            .filter(|a| a["rule"] == "bp_crisis")
            .all(|a| a["confirmed"] == true),
        "{alerts:#?}"
    );
    let duplicates = hub.api().metric("vaka_records_duplicate_total").await?;
    println!(
        "fault-summary test=kill_hard backend={backend:?} messages_sent={} broker_acked={} \
         faults={} rows_at_kills={stored_at_kills:?} rows_expected={expected} rows_stored={stored} redelivered_records_skipped={duplicates} \
         alerts_expected={} alerts_stored={} acknowledged_kept={} snoozed_kept={} secs={:.1}",
        total + 4,
        acked,
        kills.len(),
        expected_alerts.len(),
        per_patient.len(),
        first["state"] == "acknowledged",
        snoozed["state"] == "snoozed",
        started.elapsed().as_secs_f64()
    );
    drop(broker);
    Ok(())
}

#[tokio::test]
async fn postgres_survives_hard_kills_during_a_burst() -> Result<()> {
    killed_during_a_burst(Backend::Postgres).await
}

#[tokio::test]
async fn sqlite_survives_hard_kills_during_a_burst() -> Result<()> {
    killed_during_a_burst(Backend::Sqlite).await
}
