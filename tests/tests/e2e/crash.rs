//! Crash safety: `vaka serve` killed hard (SIGKILL) in the middle of a burst
//! of QoS 1 messages, more than once, then started again. Every reading is
//! stored exactly once, no alert is raised twice or lost, and an alert
//! acknowledged before the crash stays acknowledged.
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

fn reading(device: &str, t: f64, sys: f64, dia: f64) -> String {
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
        api.enroll(
            &format!("p-crash-{p}"),
            &[(&format!("bp-crash-{p}"), "bp_cuff")],
        )
        .await?;
    }
    let store = db.store().await?;

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
    let publisher = tokio::spawn(async move {
        for (topic, payload) in messages {
            device.publish(&topic, payload).await?;
        }
        device.wait_acked(total + 2).await?;
        anyhow::Ok(())
    });

    // Kill it twice while the burst is under way.
    for target in [total / 4, total / 2] {
        eventually(
            "part of the burst stored",
            Duration::from_secs(60),
            || async {
                let n = count(&store, "SELECT count(*) FROM observations")
                    .await
                    .ok()?;
                (n as u64 >= target * 4).then_some(())
            },
        )
        .await?;
        hub.kill_hard();
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.restart().await?;
    }
    publisher.await??;

    let expected = (total + 2) as i64 * 4;
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
    // the burst, is still active, so its second episode updates it.
    let alerts = hub.api().get("/api/v1/alerts?state=all").await?;
    let alerts = alerts.as_array().cloned().unwrap_or_default();
    let mut per_patient: Vec<(String, String)> = alerts
        .iter()
        .map(|a| {
            (
                a["patient_id"].as_str().unwrap_or("").into(),
                a["rule"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    per_patient.sort();
    let expected_alerts: Vec<(String, String)> = (0..IN_CRISIS)
        .map(|p| (format!("p-crash-{p}"), "bp_crisis".to_owned()))
        .collect();
    assert_eq!(per_patient, expected_alerts, "alerts: {alerts:#?}");
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
    assert!(alerts.iter().all(|a| a["confirmed"] == true), "{alerts:#?}");
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
