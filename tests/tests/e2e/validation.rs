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
    // (topic, payload, code, the time `ref` names: the first record's,
    // empty when the payload has no readable first record).
    let at = |t: f64| format!("{t}");
    let cases: Vec<(String, String, &str, String)> = vec![
        (obs.clone(), "{oops".into(), "bad_json", String::new()),
        (
            obs.clone(),
            r#"{"n":"weight"}"#.into(),
            "bad_senml",
            String::new(),
        ),
        // Not SenML after a readable first record: its time is named.
        (
            obs.clone(),
            format!(
                r#"[{{{bn},"bt":{now},"n":"weight","u":"kg","v":80}},{{"n":"weight","v":"80"}}]"#
            ),
            "bad_senml",
            at(now),
        ),
        (
            obs.clone(),
            format!(r#"[{{{bn},"bt":{now},"n":"height","u":"cm","v":180}}]"#),
            "unknown_name",
            at(now),
        ),
        (
            obs.clone(),
            format!(r#"[{{{bn},"bt":{now},"n":"weight","u":"lb","v":180}}]"#),
            "bad_unit",
            at(now),
        ),
        (
            obs.clone(),
            format!(r#"[{{{bn},"bt":{now},"n":"weight","u":"kg","v":400}}]"#),
            "out_of_range",
            at(now),
        ),
        (
            obs.clone(),
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                now + 3600.0
            ),
            "future_time",
            at(now + 3600.0),
        ),
        (
            obs.clone(),
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                now - 400.0 * 86400.0
            ),
            "too_old",
            at(now - 400.0 * 86400.0),
        ),
        (
            obs.clone(),
            format!(
                r#"[{{"bn":"urn:dev:vaka:scale-zz:","bt":{now},"n":"weight","u":"kg","v":80}}]"#
            ),
            "topic_mismatch",
            at(now),
        ),
        (
            obs.clone(),
            format!("[{}]", " ".repeat(100 * 1024)),
            "too_large",
            String::new(),
        ),
    ];
    for (topic, payload, _, _) in &cases {
        device.publish(topic, payload.clone()).await?;
    }
    for (topic, payload, code, time) in &cases {
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
        let (named, hash) = reference.split_once(':').unwrap_or_default();
        assert_eq!(hash.len(), 8, "ref {reference:?}");
        assert_eq!(named, time, "ref {reference:?} of a {code} reply");
    }
    for (code, n) in [
        ("bad_json", 1.0),
        ("bad_senml", 2.0),
        ("unknown_name", 1.0),
        ("bad_unit", 1.0),
        ("out_of_range", 1.0),
        ("future_time", 1.0),
        ("too_old", 1.0),
        ("topic_mismatch", 1.0),
        ("too_large", 1.0),
    ] {
        let name = format!("vaka_messages_rejected_total{{code=\"{code}\"}}");
        assert_eq!(api.metric(&name).await?, n, "{name}");
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
    let reference = reply["ref"].as_str().unwrap_or_default();
    assert!(reference.starts_with(&format!("{now}:")), "{reference}");

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
