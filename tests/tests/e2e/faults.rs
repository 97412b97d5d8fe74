//! Fault injection against real services: the database restarted during a
//! burst, the broker restarted during a burst, and devices whose clocks are
//! wrong or who send the same message over and over. (`vaka serve` killed
//! hard during a burst is in `crash.rs`.)
//!
//! Each test counts what it tried and what was kept and prints one
//! `fault-summary` line (run with `--nocapture` to see them); the table in
//! docs/RELIABILITY.md is made of those lines.
//!
//! The services restarted here are the test's own (a PostgreSQL initdb'd in
//! a temporary directory, a Mosquitto on a free port): the shared ones on
//! 5432 and 1883 serve other tests running in parallel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use vaka_hub::store::Store;

use crate::crash::reading;
use crate::support::*;

/// Blood-pressure readings of a few patients, one minute apart, interleaved,
/// in three phases: before, during and after the fault. Some patients have a
/// confirmed crisis (two readings a minute apart) in a given phase.
struct Burst {
    patients: usize,
    per_phase: usize,
    /// (patient, phase) of each crisis.
    crises: Vec<(usize, usize)>,
    start: f64,
    prefix: &'static str,
}

impl Burst {
    fn device(&self, p: usize) -> String {
        format!("bp-{}-{p}", self.prefix)
    }

    fn patient(&self, p: usize) -> String {
        format!("p-{}-{p}", self.prefix)
    }

    async fn enroll(&self, api: &Api) -> Result<()> {
        for p in 0..self.patients {
            api.enroll(&self.patient(p), &[(&self.device(p), "bp_cuff")])
                .await?;
        }
        Ok(())
    }

    /// The (topic, payload) pairs of one phase.
    fn phase(&self, hub: &Hub, phase: usize) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(self.patients * self.per_phase);
        for i in 0..self.per_phase {
            for p in 0..self.patients {
                let t = self.start + ((phase * self.per_phase + i) as f64) * 60.0;
                let crisis = self.crises.contains(&(p, phase))
                    && (i == self.per_phase / 2 || i == self.per_phase / 2 + 1);
                let (sys, dia) = if crisis {
                    (200.0, 125.0)
                } else {
                    (128.0 + (i % 7) as f64, 82.0)
                };
                let dev = self.device(p);
                out.push((hub.topic(&dev, "obs"), reading(&dev, t, sys, dia)));
            }
        }
        out
    }

    fn messages(&self) -> u64 {
        (3 * self.patients * self.per_phase) as u64
    }

    /// Four records (sys, dia, map, hr) per message.
    fn rows(&self) -> i64 {
        self.messages() as i64 * 4
    }

    fn expected_alerts(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .crises
            .iter()
            .map(|(p, _)| (self.patient(*p), "bp_crisis".to_owned()))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

async fn publish_all(device: &Mqtt, messages: Vec<(String, String)>) -> Result<()> {
    for (topic, payload) in messages {
        device.publish(&topic, payload).await?;
    }
    Ok(())
}

async fn rows_stored(store: &Store) -> Option<i64> {
    count(store, "SELECT count(*) FROM observations").await.ok()
}

async fn wait_rows(store: &Store, hub: &Hub, at_least: i64, timeout: Duration) -> Result<i64> {
    let r = eventually("readings stored", timeout, || async {
        let n = rows_stored(store).await?;
        (n >= at_least).then_some(n)
    })
    .await;
    r.with_context(|| format!("vaka log:\n{}", hub.log_tail()))
}

/// Rows that share the observations' unique key (0 unless idempotency broke).
async fn duplicate_rows(store: &Store) -> Result<i64> {
    count(
        store,
        "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT time, device_id, metric FROM observations) d) FROM observations",
    )
    .await
}

/// Every alert, as (patient, rule) pairs, sorted; and the raw list.
async fn alerts(api: &Api) -> Result<(Vec<(String, String)>, Vec<Value>)> {
    let list = api.get("/api/v1/alerts?state=all&limit=10000").await?;
    let list = list.as_array().cloned().unwrap_or_default();
    let mut pairs: Vec<(String, String)> = list
        .iter()
        .map(|a| {
            (
                a["patient_id"].as_str().unwrap_or("").to_owned(),
                a["rule"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    pairs.sort();
    Ok((pairs, list))
}

/// The log without its colours (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `/readyz` as (HTTP status, body). The client waits longer than the
/// store's pool does for a connection (5 s), so an outage is an answer.
async fn readyz(hub: &Hub) -> Option<(u16, Value)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .ok()?;
    let res = client
        .get(format!("{}/readyz", hub.base))
        .send()
        .await
        .ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.ok()?))
}

async fn wait_ready(hub: &Hub, ready: bool, part: &str, timeout: Duration) -> Result<Value> {
    eventually(&format!("/readyz with {part} {ready}"), timeout, || async {
        let (status, body) = readyz(hub).await?;
        let matches = (status == 200) == ready && body[part] == ready;
        matches.then_some(body)
    })
    .await
}

#[tokio::test]
async fn postgres_restarted_during_a_burst() -> Result<()> {
    let started = Instant::now();
    let pg = OwnPostgres::start().await?;
    let broker = OwnBroker::start().await?;
    let hub = Hub::start(HubConfig::with_database(&pg.url(), &broker.url)).await?;
    let api = hub.api();
    let burst = Burst {
        patients: 8,
        per_phase: 50,
        // One crisis before the outage, two published during it, one after.
        crises: vec![(0, 0), (1, 1), (2, 1), (3, 2)],
        start: now_s() - 6.0 * 3600.0,
        prefix: "pgr",
    };
    burst.enroll(&api).await?;
    let store = Store::connect(&pg.url()).await?;
    let mut device = Mqtt::connect(&broker.url, &[]).await?;

    // Before: everything is stored and the first alert raised.
    let phase = (burst.patients * burst.per_phase) as u64;
    publish_all(&device, burst.phase(&hub, 0)).await?;
    wait_rows(&store, &hub, phase as i64 * 4, Duration::from_secs(20)).await?;
    eventually("the first alert", Duration::from_secs(10), || async {
        (alerts(&api).await.ok()?.0.len() == 1).then_some(())
    })
    .await?;
    let failures_before = api.metric("vaka_store_commit_failures_total").await?;

    // The fault: the database crashes while the burst goes on.
    pg.stop_immediate()?;
    let outage = Instant::now();
    publish_all(&device, burst.phase(&hub, 1)).await?;
    device.wait_acked(2 * phase).await?;
    let body = wait_ready(&hub, false, "database", Duration::from_secs(20)).await?;
    assert_eq!(body["broker"], true, "{body}");
    // The gateway tries, fails and holds the batch: not acknowledged.
    eventually("failed commits", Duration::from_secs(20), || async {
        let n = api.metric("vaka_store_commit_failures_total").await.ok()?;
        (n > failures_before).then_some(())
    })
    .await?;
    let failures_during = api.metric("vaka_store_commit_failures_total").await? - failures_before;

    // Back: the rest of the burst is published while it recovers.
    pg.start_again().await?;
    let down_for = outage.elapsed();
    publish_all(&device, burst.phase(&hub, 2)).await?;
    wait_ready(&hub, true, "database", Duration::from_secs(30)).await?;
    device.wait_acked(3 * phase).await?;
    let stored = wait_rows(&store, &hub, burst.rows(), Duration::from_secs(30)).await?;
    assert_eq!(stored, burst.rows(), "stored more rows than sent");
    assert_eq!(duplicate_rows(&store).await?, 0);

    // Alerts resume: the crises sent during and after the outage are raised,
    // each once.
    let expected = burst.expected_alerts();
    let (got, list) = eventually("every alert", Duration::from_secs(20), || async {
        let (pairs, list) = alerts(&api).await.ok()?;
        (pairs.len() >= expected.len()).then_some((pairs, list))
    })
    .await?;
    assert_eq!(got, expected, "alerts: {list:#?}");

    println!(
        "fault-summary test=postgres_restart messages_sent={} broker_acked={} faults=1 \
         outage_ms={} failed_commits={} rows_expected={} rows_stored={stored} duplicate_rows=0 \
         alerts_expected={} alerts_stored={} secs={:.1}",
        burst.messages(),
        device.acked(),
        down_for.as_millis(),
        failures_during,
        burst.rows(),
        expected.len(),
        got.len(),
        started.elapsed().as_secs_f64()
    );
    drop(device);
    Ok(())
}

#[tokio::test]
async fn mosquitto_restarted_during_a_burst() -> Result<()> {
    let started = Instant::now();
    let mut broker = OwnBroker::start_persistent().await?;
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &broker.url)).await?;
    let api = hub.api();
    let burst = Burst {
        patients: 8,
        per_phase: 50,
        crises: vec![(0, 0), (1, 1), (2, 2)],
        start: now_s() - 6.0 * 3600.0,
        prefix: "mqr",
    };
    burst.enroll(&api).await?;
    let store = db.store().await?;
    let mut device = Mqtt::connect(&broker.url, &[]).await?;
    let phase = (burst.patients * burst.per_phase) as u64;

    publish_all(&device, burst.phase(&hub, 0)).await?;
    wait_rows(&store, &hub, phase as i64 * 4, Duration::from_secs(20)).await?;

    // Freeze vaka so that the next phase waits in the broker, for the
    // gateway's persistent session, when the broker goes down.
    hub.pause()?;
    publish_all(&device, burst.phase(&hub, 1)).await?;
    let paused = device.wait_acked(2 * phase).await;
    if let Err(e) = paused {
        hub.resume()?;
        return Err(e);
    }
    broker.stop()?;
    hub.resume()?;
    // vaka notices and says so; the device keeps publishing into its own
    // queue (QoS 1, not yet acknowledged).
    let body = wait_ready(&hub, false, "broker", Duration::from_secs(30)).await?;
    assert_eq!(body["database"], true, "{body}");
    let mut third = burst.phase(&hub, 2);
    let later = third.split_off(third.len() / 2);
    publish_all(&device, third).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.start_again().await?;
    publish_all(&device, later).await?;

    wait_ready(&hub, true, "broker", Duration::from_secs(30)).await?;
    device.wait_acked(3 * phase).await?;
    let stored = wait_rows(&store, &hub, burst.rows(), Duration::from_secs(30)).await?;
    assert_eq!(stored, burst.rows(), "stored more rows than sent");
    assert_eq!(duplicate_rows(&store).await?, 0);
    // The gateway's session survived the restart.
    let log = strip_ansi(&std::fs::read_to_string(&hub.log)?);
    let resumed = log
        .lines()
        .filter(|l| l.contains("connected to the MQTT broker"))
        .filter(|l| l.contains("session_present=true"))
        .count();
    assert!(
        resumed >= 1,
        "no resumed session in the log:\n{}",
        hub.log_tail()
    );

    let expected = burst.expected_alerts();
    let (got, list) = eventually("every alert", Duration::from_secs(20), || async {
        let (pairs, list) = alerts(&api).await.ok()?;
        (pairs.len() >= expected.len()).then_some((pairs, list))
    })
    .await?;
    assert_eq!(got, expected, "alerts: {list:#?}");
    let duplicates = api.metric("vaka_records_duplicate_total").await?;
    println!(
        "fault-summary test=mosquitto_restart messages_sent={} broker_acked={} faults=1 \
         queued_while_paused={phase} rows_expected={} rows_stored={stored} duplicate_rows=0 \
         redelivered_records_skipped={duplicates} alerts_expected={} alerts_stored={} secs={:.1}",
        burst.messages(),
        device.acked(),
        burst.rows(),
        expected.len(),
        got.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A device whose clock is wrong, then one that sends the same packs over
/// and over. The contract: a record more than 5 min ahead of the hub's
/// clock is `future_time`, one older than the retention (365 days by
/// default) is `too_old`, both answered on `…/err` and nothing of the pack
/// stored; anything in between is kept. A repeated message is stored once
/// and raises its alert once.
#[tokio::test]
async fn clock_skew_and_duplicate_floods() -> Result<()> {
    let started = Instant::now();
    let broker = OwnBroker::start().await?;
    let db = TestDb::new(Backend::Postgres).await?;
    let hub = Hub::start(HubConfig::new(&db, &broker.url)).await?;
    let api = hub.api();
    api.enroll("p-skew", &[("bp-skew", "bp_cuff")]).await?;
    api.enroll("p-flood", &[("bp-flood", "bp_cuff")]).await?;
    let store = db.store().await?;
    let mut device = Mqtt::connect(&broker.url, &[hub.topic("+", "err")]).await?;
    let skew_topic = hub.topic("bp-skew", "obs");

    // Clock offsets (seconds from now), 20 readings each, each reading a
    // second apart so that every accepted one is a new row.
    const EACH: usize = 20;
    let now = now_s();
    let day = 86_400.0;
    let offsets: [(f64, Option<&str>); 7] = [
        (4.0 * 60.0, None),                     // 4 min fast: within the 5 min
        (6.0 * 60.0, Some("future_time")),      // 6 min fast
        (30.0 * day, Some("future_time")),      // a month ahead
        (-30.0 * day, None),                    // a month behind: within retention
        (-364.0 * day, None),                   // just within a year
        (-366.0 * day, Some("too_old")),        // beyond the retention
        (-40.0 * 365.0 * day, Some("too_old")), // a clock reset to 1986
    ];
    let mut expected_codes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut accepted = 0usize;
    for (k, (offset, code)) in offsets.iter().enumerate() {
        for i in 0..EACH {
            let t = now + offset + (k * EACH + i) as f64;
            device
                .publish(&skew_topic, reading("bp-skew", t, 125.0, 80.0))
                .await?;
        }
        match code {
            Some(c) => *expected_codes.entry(*c).or_default() += EACH,
            None => accepted += EACH,
        }
    }
    let rejected: usize = expected_codes.values().sum();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..rejected {
        let reply = device
            .next_on("/bp-skew/err", Duration::from_secs(20))
            .await?;
        *codes
            .entry(reply["code"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let expected_codes: BTreeMap<String, usize> = expected_codes
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(codes, expected_codes);
    let skew_rows = (accepted * 4) as i64;
    let stored = wait_rows(&store, &hub, skew_rows, Duration::from_secs(20)).await?;
    assert_eq!(stored, skew_rows);
    for (code, n) in &codes {
        let name = format!("vaka_messages_rejected_total{{code=\"{code}\"}}");
        assert_eq!(api.metric(&name).await?, *n as f64, "{name}");
    }

    // The flood: a confirmed crisis (two packs a minute apart) and a normal
    // reading, each sent COPIES times, interleaved, as fast as possible.
    const COPIES: usize = 200;
    let t0 = now - 3600.0;
    let flood_topic = hub.topic("bp-flood", "obs");
    let packs = [
        reading("bp-flood", t0, 205.0, 126.0),
        reading("bp-flood", t0 + 60.0, 201.0, 122.0),
        reading("bp-flood", t0 + 600.0, 130.0, 84.0),
    ];
    for _ in 0..COPIES {
        for p in &packs {
            device.publish(&flood_topic, p.clone()).await?;
        }
    }
    let sent = (offsets.len() * EACH + packs.len() * COPIES) as u64;
    device.wait_acked(sent).await?;
    let flood_rows = (packs.len() * 4) as i64;
    eventually("the flood committed", Duration::from_secs(30), || async {
        let n = api.metric("vaka_messages_stored_total").await.ok()?;
        (n as usize >= accepted + packs.len() * COPIES).then_some(())
    })
    .await
    .with_context(|| hub.log_tail())?;
    let stored = rows_stored(&store).await.unwrap_or(-1);
    assert_eq!(stored, skew_rows + flood_rows, "rows after the flood");
    assert_eq!(duplicate_rows(&store).await?, 0);
    let skipped = api.metric("vaka_records_duplicate_total").await?;
    assert_eq!(skipped as i64, flood_rows * (COPIES as i64 - 1));

    // One alert, raised once: not updated by the copies.
    let (pairs, list) = eventually("the crisis alert", Duration::from_secs(10), || async {
        let (pairs, list) = alerts(&api).await.ok()?;
        (!pairs.is_empty()).then_some((pairs, list))
    })
    .await?;
    // Give stray copies time to (wrongly) update it before looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pairs_later, list_later) = alerts(&api).await?;
    assert_eq!(pairs, vec![("p-flood".to_owned(), "bp_crisis".to_owned())]);
    assert_eq!(pairs_later, pairs);
    let alert = &list_later[0];
    if alert["count"].as_i64() > Some(2) || list != list_later {
        bail!("the copies updated the alert: {alert}");
    }
    let history = api
        .get(&format!(
            "/api/v1/alerts/{}",
            alert["alert_id"].as_i64().unwrap_or(0)
        ))
        .await?;
    println!(
        "fault-summary test=clock_skew_and_duplicates messages_sent={sent} \
         skewed_sent={} skewed_rejected={codes:?} skewed_stored_rows={skew_rows} \
         flood_sent={} flood_rows_stored={flood_rows} duplicate_records_skipped={skipped} \
         alerts_expected=1 alerts_stored={} alert_count={} history_entries={} secs={:.1}",
        offsets.len() * EACH,
        packs.len() * COPIES,
        pairs_later.len(),
        alert["count"],
        history["history"].as_array().map_or(0, Vec::len),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
