//! Bad input gets a clear answer on `…/err` and is counted; messages from
//! unknown or unbound devices are kept in quarantine, not lost.

use std::time::Duration;

use anyhow::Result;
use vaka_gateway::senml::PackBuilder;

use crate::support::*;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_rejection_is_answered_on_err_and_counted() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    api.enroll("p-cilla", &[("scale-c1", "scale")]).await?;
    let mut device = Mqtt::connect(&mqtt_url(), &[hub.topic("+", "err")]).await?;
    let obs = hub.topic("scale-c1", "obs");
    let now = now_s();
    let bn = r#""bn":"urn:dev:vaka:scale-c1:""#;
    let cases: Vec<(String, String, &str)> = vec![
        (obs.clone(), "{oops".into(), "bad_json"),
        (obs.clone(), r#"{"n":"weight"}"#.into(), "bad_senml"),
        (
            obs.clone(),
            format!(r#"[{{{bn},"bt":{now},"n":"height","u":"cm","v":180}}]"#),
            "unknown_name",
        ),
        (
            obs.clone(),
            format!(r#"[{{{bn},"bt":{now},"n":"weight","u":"lb","v":180}}]"#),
            "bad_unit",
        ),
        (
            obs.clone(),
            format!(r#"[{{{bn},"bt":{now},"n":"weight","u":"kg","v":400}}]"#),
            "out_of_range",
        ),
        (
            obs.clone(),
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                now + 3600.0
            ),
            "future_time",
        ),
        (
            obs.clone(),
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                now - 400.0 * 86400.0
            ),
            "too_old",
        ),
        (
            obs.clone(),
            format!(
                r#"[{{"bn":"urn:dev:vaka:scale-zz:","bt":{now},"n":"weight","u":"kg","v":80}}]"#
            ),
            "topic_mismatch",
        ),
        (
            obs.clone(),
            format!("[{}]", " ".repeat(100 * 1024)),
            "too_large",
        ),
    ];
    for (topic, payload, _) in &cases {
        device.publish(topic, payload.clone()).await?;
    }
    for (topic, payload, code) in &cases {
        let reply = device.next_on("/scale-c1/err", T).await?;
        assert_eq!(
            reply["code"],
            *code,
            "payload {}",
            &payload[..payload.len().min(80)]
        );
        assert_eq!(reply["topic"], topic.as_str());
        assert!(reply["detail"].as_str().is_some_and(|d| !d.is_empty()));
        let reference = reply["ref"].as_str().unwrap_or_default();
        let (_, hash) = reference.split_once(':').unwrap_or_default();
        assert_eq!(hash.len(), 8, "ref {reference:?}");
    }
    for (_, _, code) in &cases {
        let name = format!("vaka_messages_rejected_total{{code=\"{code}\"}}");
        assert_eq!(api.metric(&name).await?, 1.0, "{name}");
    }

    // The gateway did not stall: a good reading after all that is stored.
    let good = PackBuilder::new("scale-c1", now).value("weight", "kg", 70.2, now);
    device.publish(&obs, good.to_json()).await?;
    let store = db.store().await?;
    eventually("the good reading", T, || async {
        (count(&store, "SELECT count(*) FROM observations")
            .await
            .ok()?
            == 1)
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn unknown_and_unbound_devices_are_quarantined() -> Result<()> {
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let api = hub.api();
    // Registered but never bound.
    let (s, _) = api
        .call(
            reqwest::Method::POST,
            "/api/v1/devices",
            Some(serde_json::json!({"id": "fall-loose", "kind": "fall_sensor"})),
        )
        .await?;
    assert_eq!(s, 201);
    let (mut ws, _) = websocket(&hub).await?;
    let mut device = Mqtt::connect(&mqtt_url(), &[hub.topic("+", "err")]).await?;
    let now = now_s();
    let ghost = PackBuilder::new("scale-ghost", now).value("weight", "kg", 77.0, now);
    device
        .publish(&hub.topic("scale-ghost", "obs"), ghost.to_json())
        .await?;
    let reply = device.next_on("/scale-ghost/err", T).await?;
    assert_eq!(reply["code"], "unknown_device");

    let fall = PackBuilder::new("fall-loose", now).flag("fall", now);
    device
        .publish(&hub.topic("fall-loose", "evt"), fall.to_json())
        .await?;
    let reply = device.next_on("/fall-loose/err", T).await?;
    assert_eq!(reply["code"], "unbound_device");

    // Someone may be calling for help from a device nobody bound.
    let alert = alert_of(&mut ws, "unbound_device_alarm", T).await?;
    assert_eq!(alert["device_id"], "fall-loose");
    assert_eq!(alert["category"], "technical");
    assert_eq!(alert["severity"], "high");

    let q = api.get("/api/v1/quarantine").await?;
    let q = q.as_array().cloned().unwrap_or_default();
    let mut reasons: Vec<(String, String)> = q
        .iter()
        .map(|e| {
            (
                e["device_id"].as_str().unwrap_or("").into(),
                e["reason"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("fall-loose".to_owned(), "unbound_device".to_owned()),
            ("scale-ghost".to_owned(), "unknown_device".to_owned())
        ]
    );
    let store = db.store().await?;
    assert_eq!(count(&store, "SELECT count(*) FROM observations").await?, 0);
    // The payload is kept whole, to be filed once the device is bound.
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM quarantine WHERE length(payload) > 0"
        )
        .await?,
        2
    );
    assert_eq!(api.metric("vaka_messages_quarantined_total").await?, 2.0);
    Ok(())
}

#[tokio::test]
async fn the_api_refuses_without_the_token() -> Result<()> {
    let db = TestDb::new(Backend::Sqlite).await?;
    let hub = Hub::start(HubConfig::new(&db, &mqtt_url())).await?;
    let client = reqwest::Client::new();
    for path in [
        "/api/v1/patients",
        "/api/v1/alerts",
        "/api/v1/devices",
        "/api/v1/quarantine",
        "/api/v1/ws",
    ] {
        let r = client.get(format!("{}{path}", hub.base)).send().await?;
        assert_eq!(r.status(), 401, "{path}");
        let r = client
            .get(format!("{}{path}", hub.base))
            .bearer_auth("wrong-token-of-some-length")
            .send()
            .await?;
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = client.get(format!("{}/healthz", hub.base)).send().await?;
    assert_eq!(r.status(), 200);
    Ok(())
}
