//! Per-device limits: a flooding device is throttled and reported while
//! the other patients' data flows on; a 10 MB payload is refused with a
//! clear reply and the gateway keeps running.

use std::time::Duration;

use anyhow::{Result, ensure};
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const T: Duration = Duration::from_secs(30);

/// Messages the flooding device sends, as fast as the broker takes them.
const FLOOD: usize = 3_000;
/// Readings of the well-behaved scale, sent during the flood.
const CALM: usize = 40;

#[tokio::test]
async fn a_flooding_device_is_throttled_and_the_others_flow_on() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let mut config = HubConfig::new(&db, &mqtt_url());
    config.extra = [
        "--device-rate",
        "20",
        "--device-burst",
        "100",
        "--device-calm-secs",
        "2",
    ]
    .map(String::from)
    .to_vec();
    let hub = Hub::start(config).await?;
    let api = hub.api();
    api.enroll("p-flood", &[("bp-broken", "bp_cuff")]).await?;
    api.enroll(
        "p-calm",
        &[("scale-ok", "scale"), ("fall-ok", "fall_sensor")],
    )
    .await?;
    let (mut ws, _) = websocket(&hub).await?;

    let mut flooder = Mqtt::connect(&mqtt_url(), &[hub.topic("bp-broken", "err")]).await?;
    let mut calm = Mqtt::connect(&mqtt_url(), &[]).await?;
    let now = now_s();

    // The broken cuff: FLOOD distinct, valid readings, as fast as it can.
    let flood_topic = hub.topic("bp-broken", "obs");
    let flooding = {
        let client = flooder.client.clone();
        tokio::spawn(async move {
            for i in 0..FLOOD {
                let t = now - 86_400.0 + i as f64;
                let pack = PackBuilder::new("bp-broken", t)
                    .value("sys", "mm[Hg]", 120.0, t)
                    .value("dia", "mm[Hg]", 80.0, t);
                client
                    .publish(
                        &flood_topic,
                        rumqttc::QoS::AtLeastOnce,
                        false,
                        pack.to_json(),
                    )
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    // Meanwhile another patient's scale sends its readings, and a fall.
    for i in 0..CALM {
        let t = now - (CALM - i) as f64 * 3600.0;
        let pack = PackBuilder::new("scale-ok", t).value("weight", "kg", 80.0, t);
        calm.publish(&hub.topic("scale-ok", "obs"), pack.to_json())
            .await?;
    }
    let fall = PackBuilder::new("fall-ok", now).flag("fall", now);
    calm.publish(&hub.topic("fall-ok", "evt"), fall.to_json())
        .await?;
    calm.wait_acked(CALM as u64 + 1).await?;
    flooding.await??;
    flooder.wait_acked(FLOOD as u64).await?;

    // The fall raises its alert, and the flood a technical one.
    let mut seen_fall = false;
    let mut flooding_alert = None;
    while !(seen_fall && flooding_alert.is_some()) {
        let frame = next_frame(&mut ws, T).await?;
        if frame["type"] != "alert" {
            continue;
        }
        let alert = &frame["alert"];
        match alert["rule"].as_str() {
            Some("fall") if alert["patient_id"] == "p-calm" => seen_fall = true,
            Some("device_flooding") if alert["state"] == "open" => {
                flooding_alert = Some(alert.clone())
            }
            _ => {}
        }
    }
    let alert = flooding_alert.unwrap_or_default();
    assert_eq!(alert["device_id"], "bp-broken", "{alert}");
    assert_eq!(
        (alert["category"].as_str(), alert["severity"].as_str()),
        (Some("technical"), Some("medium"))
    );
    assert!(
        alert["explanation"]
            .as_str()
            .unwrap_or("")
            .contains("bp-broken"),
        "{alert}"
    );

    // Every reading of the calm scale is stored.
    let store = db.store().await?;
    let calm_stored = eventually("the scale's readings", T, || async {
        let n = count(
            &store,
            "SELECT count(*) FROM observations WHERE device_id = 'scale-ok'",
        )
        .await
        .ok()?;
        (n == CALM as i64).then_some(n)
    })
    .await?;
    assert_eq!(calm_stored, CALM as i64);

    // The flood: each message either stored (two records) or refused as
    // rate_limited, none lost without a word, and most of it refused.
    let refused = eventually("every flood message accounted for", T, || async {
        let stored = count(
            &store,
            "SELECT count(*) FROM observations WHERE device_id = 'bp-broken'",
        )
        .await
        .ok()?
            / 2;
        let refused = api
            .metric("vaka_messages_rejected_total{code=\"rate_limited\"}")
            .await
            .ok()? as i64;
        (stored + refused == FLOOD as i64).then_some(refused)
    })
    .await?;
    ensure!(
        refused >= (FLOOD / 2) as i64,
        "only {refused} of {FLOOD} flood messages were refused"
    );
    let reply = flooder.next_on("/bp-broken/err", T).await?;
    assert_eq!(reply["code"], "rate_limited", "{reply}");
    assert_eq!(reply["topic"], hub.topic("bp-broken", "obs"));

    // Quiet for the calm period: the technical alert clears itself.
    loop {
        let frame = next_frame(&mut ws, T).await?;
        let alert = &frame["alert"];
        if frame["type"] == "alert"
            && alert["rule"] == "device_flooding"
            && alert["state"] == "resolved"
        {
            assert_eq!(alert["device_id"], "bp-broken");
            break;
        }
    }
    close(ws).await;
    Ok(())
}

#[tokio::test]
async fn a_ten_megabyte_payload_is_refused_and_the_gateway_runs_on() -> Result<()> {
    let db = TestDb::new(Backend::Sqlite).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-big", &[("scale-big", "scale")]).await?;
    let (mut ws, _) = websocket(&hub).await?;
    let mut device = Mqtt::connect(&mqtt_url(), &[hub.topic("scale-big", "err")]).await?;

    let now = now_s();
    let huge = format!(
        r#"[{{"bn":"urn:dev:vaka:scale-big:","bt":{now},"n":"weight","u":"kg","v":80,"vs":"{}"}}]"#,
        "x".repeat(10 << 20)
    );
    device.publish(&hub.topic("scale-big", "obs"), huge).await?;
    let reply = device.next_on("/scale-big/err", T).await?;
    assert_eq!(reply["code"], "too_large", "{reply}");
    assert!(
        reply["detail"].as_str().unwrap_or("").contains("limit"),
        "{reply}"
    );
    assert_eq!(reply["topic"], hub.topic("scale-big", "obs"));
    let alert = alert_of(&mut ws, "device_flooding", T).await?;
    assert_eq!(alert["device_id"], "scale-big");

    // The gateway is still there: the next normal reading is stored.
    let pack = PackBuilder::new("scale-big", now).value("weight", "kg", 80.5, now);
    device
        .publish(&hub.topic("scale-big", "obs"), pack.to_json())
        .await?;
    let store = db.store().await?;
    eventually("the next reading stored", T, || async {
        let n = count(&store, "SELECT count(*) FROM observations")
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await?;
    assert_eq!(
        api.metric("vaka_messages_rejected_total{code=\"too_large\"}")
            .await?,
        1.0
    );
    close(ws).await;
    Ok(())
}
