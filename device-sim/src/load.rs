//! Load mode: thousands of simulated devices, each its own MQTT client with
//! its own client id (as real devices are), publishing into a running
//! `vaka serve` at a target rate or as fast as the broker takes them, and an
//! exact account of what became of every message.
//!
//! A run, step by step:
//!
//! 1. **Register** one patient per device through the hub's HTTP API and
//!    bind the device to it (a message from an unbound device would be
//!    quarantined, and counted here as lost).
//! 2. **Watch** the nurse's websocket: a `snapshot` first, then `alert`
//!    deltas (other frame types are ignored).
//! 3. **Connect** every device, in waves, so that the broker's listen
//!    backlog is not flooded by ten thousand SYNs at once.
//! 4. **Publish** for the given duration: message `k` goes to device
//!    `k mod N`. Most devices are pulse oximeters sending `spo2` and `hr`
//!    (two observation rows, normal values, no alert); one device in
//!    `alarm_every` is a fall sensor whose every message is a `fall`
//!    event. The fall rule raises its alert at once and, while it is
//!    active, a later fall updates it (`count` + 1), so the `k`-th fall of a
//!    patient is the one that brings that patient's fall alert to count
//!    `k`. That is how an alert frame on the websocket is matched to the
//!    publish that caused it, even when the hub handles several falls of a
//!    patient in one batch.
//! 5. **Drain**: wait for the broker's acknowledgements, then for the
//!    database to hold every record, then for every expected alert, each
//!    wait ending only after `drain_timeout` without progress. The wait
//!    for the database looks for the last message published, then for each
//!    device's last message (index probes), and counts every row only then
//!    (and now and then on the way): a count reads the whole run back, and
//!    repeated while the hub is behind it would slow the hub it measures.
//! 6. **Count** in the database itself: observation rows and fall events of
//!    the run's devices, and the sum of the fall alerts' counts (a fall
//!    evaluated twice would show there as a duplicate).
//!
//! ## What the latencies mean
//!
//! Both start just before `publish` is called on the device's client, so
//! they include the client's own queue.
//!
//! - **publish → alert** ends when the websocket frame whose `count` covers
//!   the fall is read: broker, gateway (validation, group commit, ack),
//!   engine, alert store, broadcast and websocket, all included.
//! - **publish → stored** is sampled: one oximeter message in
//!   `probe_every` is a probe, and a prober asks the database every
//!   [`PROBE_INTERVAL`] which of the oldest outstanding probes are there
//!   (one indexed query for up to 256 of them). A probe's latency ends at
//!   the poll that found it, so it overstates the truth by up to the poll
//!   interval plus the query time. Sampling keeps the prober's own load on the database
//!   small; polling every row would measure the prober.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Packet, QoS,
};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use vaka_gateway::UnixMillis;
use vaka_gateway::senml::PackBuilder;
use vaka_gateway::topics::{Channel, DeviceId, TopicRoot};

use crate::mqtt::{Broker, parse_broker};

/// How often the prober asks the database for outstanding probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// How many of the oldest outstanding probes one poll asks for.
const PROBE_WINDOW: usize = 256;
/// Observation rows in one oximeter message (`spo2` and `hr`).
pub const ROWS_PER_MESSAGE: u64 = 2;
/// Devices connected per wave.
const CONNECT_WAVE: usize = 500;
/// Unacknowledged QoS 1 messages per device, as in `run`.
const INFLIGHT: u16 = 32;
/// Each device's request channel.
const REQUEST_CAPACITY: usize = 16;
/// Concurrent HTTP requests while registering.
const REGISTER_CONCURRENCY: usize = 16;
/// How often the drain looks in the database.
const COUNT_INTERVAL: Duration = Duration::from_millis(100);
/// The least time between two counts of every stored row while draining.
const COUNT_EVERY_AT_LEAST: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid load configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("registering with the hub failed: {0}")]
    Register(String),
    #[error("the hub's websocket: {0}")]
    Websocket(String),
    #[error("devices did not connect to the MQTT broker at {broker}: {reason}")]
    Connect { broker: String, reason: String },
}

/// What to run against.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// `mqtt://host:port` of the broker vaka listens to.
    pub mqtt_url: String,
    pub topic_root: String,
    /// The hub's HTTP API, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// The hub's API token (a service credential with full scope).
    pub api_token: String,
    /// The hub's database (`postgres://…` or `sqlite://…`), read only: the
    /// stored counts come from there, not from the hub's word.
    pub database_url: String,
    /// Simulated devices, each its own MQTT client and patient.
    pub devices: usize,
    /// Messages a second over all devices; `None`: as fast as the broker
    /// acknowledges.
    pub rate: Option<f64>,
    /// How long to publish.
    pub duration: Duration,
    /// One device in this many is a fall sensor (0: none).
    pub alarm_every: usize,
    /// One oximeter message in this many is a stored-latency probe (0: none).
    pub probe_every: u64,
    /// Device ids are `ld-{run_id}-{n}`, patient ids `lp-{run_id}-{n}`, and
    /// MQTT client ids `vaka-load-{run_id}-{n}`: a run's own.
    pub run_id: String,
    /// Each wait of the drain gives up after this long without progress.
    pub drain_timeout: Duration,
}

impl LoadConfig {
    pub fn new(
        mqtt_url: impl Into<String>,
        topic_root: impl Into<String>,
        api: impl Into<String>,
        api_token: impl Into<String>,
        database_url: impl Into<String>,
    ) -> LoadConfig {
        LoadConfig {
            mqtt_url: mqtt_url.into(),
            topic_root: topic_root.into(),
            api: api.into(),
            api_token: api_token.into(),
            database_url: database_url.into(),
            devices: 1_000,
            rate: Some(1_000.0),
            duration: Duration::from_secs(30),
            alarm_every: 50,
            probe_every: 20,
            run_id: format!("{:08x}", rand::random::<u32>()),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        // The histogram counts microseconds.
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms ({} samples)",
            self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms, self.samples
        )
    }
}

/// What a load run did, and what the hub made of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub run_id: String,
    pub devices: usize,
    pub fall_sensors: usize,
    /// Messages a second asked for; `None`: as fast as possible.
    pub offered_rate: Option<f64>,
    /// Seconds spent publishing.
    pub publish_secs: f64,
    /// Messages handed to the devices' clients.
    pub sent: u64,
    pub sent_observations: u64,
    pub sent_falls: u64,
    /// Acknowledged by the broker (QoS 1 PUBACK).
    pub acked: u64,
    /// Connections that had to be made again during the run.
    pub reconnects: u64,
    /// Observation rows the run should have stored, and stored.
    pub expected_rows: u64,
    pub stored_rows: u64,
    /// Fall events stored.
    pub stored_falls: u64,
    /// Falls sent, and falls whose alert frame arrived on the websocket.
    pub alerts_expected: u64,
    pub alerts_received: u64,
    /// Sum of the `count` of the run's fall alerts in the database.
    pub alert_count_in_db: u64,
    /// Alert counts on the websocket beyond the falls sent.
    pub duplicate_alerts: u64,
    /// `sent / publish_secs`.
    pub publish_rate: f64,
    /// Messages stored a second: stored messages over the time from the
    /// first publish to the poll that found the last one stored.
    pub ingest_rate: f64,
    /// Seconds from the first publish until everything was stored.
    pub drain_secs: f64,
    pub stored_latency: Latency,
    pub alert_latency: Latency,
    /// Stored-latency probes never found.
    pub probes_lost: u64,
}

impl LoadReport {
    /// Every way the run lost or doubled something; empty when clean.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.acked != self.sent {
            p.push(format!(
                "{} of {} messages not acknowledged by the broker",
                self.sent - self.acked.min(self.sent),
                self.sent
            ));
        }
        if self.stored_rows < self.expected_rows {
            p.push(format!(
                "{} of {} observation rows lost",
                self.expected_rows - self.stored_rows,
                self.expected_rows
            ));
        }
        if self.stored_rows > self.expected_rows {
            p.push(format!(
                "{} observation rows more than sent (duplicates)",
                self.stored_rows - self.expected_rows
            ));
        }
        if self.stored_falls != self.sent_falls {
            p.push(format!(
                "{} fall events stored for {} sent",
                self.stored_falls, self.sent_falls
            ));
        }
        if self.alerts_received != self.alerts_expected {
            p.push(format!(
                "{} of {} expected alerts never arrived on the websocket",
                self.alerts_expected - self.alerts_received.min(self.alerts_expected),
                self.alerts_expected
            ));
        }
        if self.alert_count_in_db != self.sent_falls {
            p.push(format!(
                "the fall alerts in the database count {} falls for {} sent",
                self.alert_count_in_db, self.sent_falls
            ));
        }
        if self.duplicate_alerts > 0 {
            p.push(format!(
                "{} duplicate alerts on the websocket",
                self.duplicate_alerts
            ));
        }
        p
    }

    pub fn is_clean(&self) -> bool {
        self.problems().is_empty()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let offered = self
            .offered_rate
            .map_or("as fast as possible".to_owned(), |r| {
                format!("{r:.0} msg/s")
            });
        writeln!(
            f,
            "devices        {} ({} fall sensors), offered {offered}",
            self.devices, self.fall_sensors
        )?;
        writeln!(
            f,
            "sent           {} messages in {:.1} s ({:.0} msg/s): {} observation packs, {} falls",
            self.sent,
            self.publish_secs,
            self.publish_rate,
            self.sent_observations,
            self.sent_falls
        )?;
        writeln!(
            f,
            "acked          {} by the broker ({} reconnects)",
            self.acked, self.reconnects
        )?;
        writeln!(
            f,
            "stored         {} of {} observation rows, {} of {} falls; all stored {:.1} s after the first publish",
            self.stored_rows,
            self.expected_rows,
            self.stored_falls,
            self.sent_falls,
            self.drain_secs
        )?;
        writeln!(f, "ingest         {:.0} msg/s stored", self.ingest_rate)?;
        writeln!(
            f,
            "alerts         {} of {} on the websocket; {} counted in the database; {} duplicates",
            self.alerts_received,
            self.alerts_expected,
            self.alert_count_in_db,
            self.duplicate_alerts
        )?;
        writeln!(f, "publish→stored {}", self.stored_latency)?;
        write!(f, "publish→alert  {}", self.alert_latency)
    }
}

/// Raises this process's soft limit of open files to its hard limit (each
/// device is a socket; a stock soft limit of 1024 stops at about a
/// thousand). Returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The payload of the `k`-th message of an oximeter at `t_ms`: `spo2` and
/// `hr`, normal values that raise nothing.
pub fn oximeter_payload(device: &str, t_ms: i64, k: u64) -> Vec<u8> {
    let t = t_ms as f64 / 1000.0;
    let spo2 = 95.0 + (k % 5) as f64;
    let hr = 60.0 + (k % 31) as f64;
    PackBuilder::new(device, t)
        .value("spo2", "%", spo2, t)
        .value("hr", "beat/min", hr, t)
        .to_json()
        .into_bytes()
}

fn fall_payload(device: &str, t_ms: i64) -> Vec<u8> {
    let t = t_ms as f64 / 1000.0;
    PackBuilder::new(device, t)
        .flag("fall", t)
        .to_json()
        .into_bytes()
}

/// One simulated device on the wire.
struct LoadDevice {
    id: String,
    fall_sensor: bool,
    topic: String,
    client: AsyncClient,
    /// Data time of its last message: each must differ (the unique key).
    last_ms: i64,
}

impl LoadDevice {
    /// Its last message, as the database keys it.
    fn last_record(&self) -> Record {
        Record {
            device: self.id.clone(),
            t_ms: self.last_ms,
            fall: self.fall_sensor,
        }
    }
}

/// The falls sent per patient and what the websocket has shown of them.
struct Falls {
    by_patient: HashMap<String, PatientFalls>,
    latency: Histogram<u64>,
    duplicates: u64,
}

#[derive(Default)]
struct PatientFalls {
    sent: Vec<Instant>,
    /// Falls covered by an alert frame so far.
    seen: usize,
}

impl Falls {
    fn seen(&self) -> u64 {
        self.by_patient.values().map(|p| p.seen as u64).sum()
    }

    /// An alert (from a delta or a snapshot) read at `now`.
    fn observe(&mut self, alert: &Value, now: Instant) {
        if alert["rule"] != "fall" {
            return;
        }
        let (Some(patient), Some(count)) = (alert["patient_id"].as_str(), alert["count"].as_u64())
        else {
            return;
        };
        let Some(p) = self.by_patient.get_mut(patient) else {
            return;
        };
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        while p.seen < count.min(p.sent.len()) {
            let us = now.duration_since(p.sent[p.seen]).as_micros();
            let _ = self.latency.record(u64::try_from(us).unwrap_or(u64::MAX));
            p.seen += 1;
        }
        if count > p.sent.len() {
            let extra = (count - p.sent.len()) as u64;
            // The same excess seen again (an escalation frame) is not new.
            self.duplicates = self.duplicates.max(extra);
        }
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("BUG: valid histogram bounds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one load test; see the module documentation.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    if config.devices == 0 {
        return Err(LoadError::Config("at least one device".into()));
    }
    if config.rate.is_some_and(|r| !r.is_finite() || r <= 0.0) {
        return Err(LoadError::Config("the rate must be positive".into()));
    }
    let broker = parse_broker(&config.mqtt_url)?;
    let root = TopicRoot::new(&config.topic_root)
        .map_err(|_| crate::mqtt::Error::TopicRoot(config.topic_root.clone()))?;
    let db = Db::connect(&config.database_url).await?;

    let n = config.devices;
    let is_fall =
        |i: usize| config.alarm_every > 0 && i % config.alarm_every == config.alarm_every - 1;
    let ids: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("ld-{}-{i}", config.run_id),
                format!("lp-{}-{i}", config.run_id),
            )
        })
        .collect();
    for (d, _) in &ids {
        DeviceId::parse(d).ok_or_else(|| LoadError::Config(format!("invalid device id {d:?}")))?;
    }
    register(&config, &ids, &is_fall).await?;

    let falls = Arc::new(Mutex::new(Falls {
        by_patient: ids
            .iter()
            .enumerate()
            .filter(|(i, _)| is_fall(*i))
            .map(|(_, (_, p))| (p.clone(), PatientFalls::default()))
            .collect(),
        latency: histogram(),
        duplicates: 0,
    }));
    let stop = CancellationToken::new();
    let ws = watch_alerts(&config, falls.clone(), stop.clone()).await?;

    let acked = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let tracker = TaskTracker::new();
    let mut devices = Vec::with_capacity(n);
    for wave in ids.chunks(CONNECT_WAVE) {
        let mut ready = Vec::with_capacity(wave.len());
        for (id, _) in wave {
            let device = DeviceId::parse(id).ok_or_else(|| LoadError::Config(id.clone()))?;
            let (client, eventloop) = connect(&broker, &config.run_id, id);
            let (tx, rx) = oneshot::channel();
            tracker.spawn(poll(
                eventloop,
                tx,
                acked.clone(),
                reconnects.clone(),
                stop.clone(),
            ));
            ready.push(rx);
            let i = devices.len();
            let fall_sensor = is_fall(i);
            let channel = if fall_sensor {
                Channel::Evt
            } else {
                Channel::Obs
            };
            devices.push(LoadDevice {
                id: id.clone(),
                fall_sensor,
                topic: root.topic(&device, channel),
                client,
                last_ms: 0,
            });
        }
        let all = futures::future::join_all(ready);
        let connected = tokio::time::timeout(Duration::from_secs(30), all).await;
        if connected.is_err() {
            stop.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(LoadError::Connect {
                broker: broker.to_string(),
                reason: format!("not all of {} devices connected within 30 s", devices.len()),
            });
        }
    }
    tracker.close();
    info!(devices = n, %broker, "all devices connected");

    let (probe_tx, probe_rx) = mpsc::unbounded_channel();
    let prober = tokio::spawn(probe(db.clone(), probe_rx));

    // ------------------------------------------------------------ publish
    let started = Instant::now();
    let mut sent = 0u64;
    let mut sent_obs = 0u64;
    let mut sent_falls = 0u64;
    let mut publish_error = None;
    let mut last_device = None;
    let patients: Vec<&str> = ids.iter().map(|(_, p)| p.as_str()).collect();
    loop {
        let elapsed = started.elapsed();
        if elapsed >= config.duration {
            break;
        }
        if let Some(rate) = config.rate {
            let due = (rate * elapsed.as_secs_f64()) as u64 + 1;
            if sent >= due {
                let next = Duration::from_secs_f64(sent as f64 / rate);
                tokio::time::sleep(next.saturating_sub(elapsed).max(Duration::from_micros(200)))
                    .await;
                continue;
            }
        } else if sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
        let i = (sent % n as u64) as usize;
        let d = &mut devices[i];
        let t = UnixMillis::now().0.max(d.last_ms + 1);
        d.last_ms = t;
        let payload = if d.fall_sensor {
            fall_payload(&d.id, t)
        } else {
            oximeter_payload(&d.id, t, sent)
        };
        let at = Instant::now();
        if d.fall_sensor {
            // Recorded before the publish: the alert may come back first.
            if let Some(p) = lock(&falls).by_patient.get_mut(patients[i]) {
                p.sent.push(at);
            }
            sent_falls += 1;
        } else {
            if config.probe_every > 0 && sent_obs.is_multiple_of(config.probe_every) {
                let _ = probe_tx.send(Probe {
                    record: Record {
                        device: d.id.clone(),
                        t_ms: t,
                        fall: false,
                    },
                    at,
                });
            }
            sent_obs += 1;
        }
        if let Err(e) = d
            .client
            .publish(d.topic.as_str(), QoS::AtLeastOnce, false, payload)
            .await
        {
            publish_error = Some(e.to_string());
            break;
        }
        last_device = Some(i);
        sent += 1;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    drop(probe_tx);
    if let Some(e) = &publish_error {
        warn!(error = %e, "a device's client stopped; ending the run");
    }
    info!(sent, secs = publish_secs, "published; draining");

    // -------------------------------------------------------------- drain
    let expected_rows = sent_obs * ROWS_PER_MESSAGE;
    let device_ids: Vec<String> = ids.iter().map(|(d, _)| d.clone()).collect();
    let patient_ids: Vec<String> = ids.iter().map(|(_, p)| p.clone()).collect();
    let mut stall = Stall::new(config.drain_timeout);
    loop {
        let a = acked.load(Ordering::Relaxed);
        if a >= sent || stall.stalled(a) {
            break;
        }
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
    // Each device's last message, and the last one of all (none if
    // publishing broke off: the last attempt may not have gone out).
    let (lasts, last_published): (Vec<Record>, Option<Record>) = if publish_error.is_none() {
        (
            devices
                .iter()
                .filter(|d| d.last_ms > 0)
                .map(LoadDevice::last_record)
                .collect(),
            last_device.map(|i| devices[i].last_record()),
        )
    } else {
        (Vec::new(), None)
    };
    let drained_at = wait_until_stored(
        &db,
        &device_ids,
        (expected_rows, sent_falls),
        last_published,
        lasts,
        config.drain_timeout,
    )
    .await;
    let mut stall = Stall::new(config.drain_timeout);
    loop {
        let seen = lock(&falls).seen();
        if seen >= sent_falls || stall.stalled(seen) {
            break;
        }
        tokio::time::sleep(COUNT_INTERVAL).await;
    }

    // -------------------------------------------------------------- count
    let (stored_rows, stored_falls) = db.counts(&device_ids).await?;
    let alert_count_in_db = db.fall_alert_count(&patient_ids).await?;
    let (stored_hist, probes_lost) = prober.await.unwrap_or_else(|_| (histogram(), 0));

    // Goodbye: a clean DISCONNECT from each device, then stop polling.
    for d in &devices {
        let _ = d.client.try_disconnect();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    tracker.wait().await;
    let _ = ws.await;

    let falls = lock(&falls);
    let stored_msgs = stored_rows / ROWS_PER_MESSAGE + stored_falls;
    let drain_secs = drained_at.duration_since(started).as_secs_f64();
    let report = LoadReport {
        run_id: config.run_id.clone(),
        devices: n,
        fall_sensors: falls.by_patient.len(),
        offered_rate: config.rate,
        publish_secs,
        sent,
        sent_observations: sent_obs,
        sent_falls,
        acked: acked.load(Ordering::Relaxed),
        reconnects: reconnects.load(Ordering::Relaxed),
        expected_rows,
        stored_rows,
        stored_falls,
        alerts_expected: sent_falls,
        alerts_received: falls.seen(),
        alert_count_in_db,
        duplicate_alerts: falls.duplicates,
        publish_rate: sent as f64 / publish_secs.max(1e-9),
        ingest_rate: stored_msgs as f64 / drain_secs.max(1e-9),
        drain_secs,
        stored_latency: Latency::of(&stored_hist),
        alert_latency: Latency::of(&falls.latency),
        probes_lost,
    };
    if let Some(e) = publish_error {
        return Err(LoadError::Connect {
            broker: broker.to_string(),
            reason: format!("publishing stopped after {sent} messages: {e}"),
        });
    }
    Ok(report)
}

/// Waits until the database holds every record of the run (`expected`:
/// observation rows and fall events), or until it has made no progress for
/// `timeout`; returns when the last record was seen stored.
///
/// Counting every row of the run reads the whole run back, which would
/// load the database while the hub is still storing. So the wait looks
/// first for the last message published (one index probe a poll: the hub
/// stores in about the order of publishing), then for every device's last
/// message (one probe each), and only then counts. A count also runs now
/// and then on the way, so that a drain that stops is noticed.
async fn wait_until_stored(
    db: &Db,
    device_ids: &[String],
    expected: (u64, u64),
    last_published: Option<Record>,
    lasts: Vec<Record>,
    timeout: Duration,
) -> Instant {
    let mut waiting: Vec<Record> = last_published.into_iter().collect();
    let mut lasts = Some(lasts);
    let mut found = 0u64;
    let mut counted = 0u64;
    let mut next_count = Instant::now() + COUNT_EVERY_AT_LEAST;
    // Whether a count ran after every last record was seen (if it fell
    // short, a record is missing: count only now and then from there on).
    let mut counted_since = false;
    let mut stall = Stall::new(timeout);
    loop {
        if !waiting.is_empty() {
            match db.stored(&waiting).await {
                Ok(stored) => {
                    found += stored.iter().filter(|s| **s).count() as u64;
                    let mut stored = stored.into_iter();
                    waiting.retain(|_| !stored.next().unwrap_or(false));
                }
                Err(e) => warn!(error = %e, "looking for the last records failed"),
            }
        }
        if waiting.is_empty()
            && let Some(all) = lasts.take()
        {
            waiting = all;
            continue;
        }
        let seen_at = Instant::now();
        let all_lasts_seen = waiting.is_empty() && !counted_since;
        if all_lasts_seen || seen_at >= next_count {
            counted_since = waiting.is_empty();
            match db.counts(device_ids).await {
                Ok((rows, falls)) => {
                    counted = rows + falls;
                    if rows >= expected.0 && falls >= expected.1 {
                        return seen_at;
                    }
                }
                Err(e) => warn!(error = %e, "counting stored rows failed"),
            }
            // A count costs the database as much as it reads: leave it at
            // least ten times as long alone.
            next_count = Instant::now() + (seen_at.elapsed() * 10).max(COUNT_EVERY_AT_LEAST);
        }
        if stall.stalled(found + counted) {
            return Instant::now();
        }
        tokio::time::sleep(COUNT_INTERVAL).await;
    }
}

/// Tells when a wait has made no progress for too long.
struct Stall {
    limit: Duration,
    last: Option<u64>,
    since: Instant,
}

impl Stall {
    fn new(limit: Duration) -> Stall {
        Stall {
            limit,
            last: None,
            since: Instant::now(),
        }
    }

    /// Whether `progress` has stayed the same for longer than the limit.
    fn stalled(&mut self, progress: u64) -> bool {
        if self.last != Some(progress) {
            self.last = Some(progress);
            self.since = Instant::now();
            return false;
        }
        let stalled = self.since.elapsed() >= self.limit;
        if stalled {
            warn!(
                progress,
                "no progress for {:?}; giving up waiting", self.limit
            );
        }
        stalled
    }
}

// ------------------------------------------------------------ registration

/// One patient per device, each device bound to its patient. `409` (already
/// there) is fine, so a run can be repeated with the same run id.
async fn register(
    config: &LoadConfig,
    ids: &[(String, String)],
    is_fall: &dyn Fn(usize) -> bool,
) -> Result<(), LoadError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| LoadError::Register(e.to_string()))?;
    let base = config.api.trim_end_matches('/');
    let started = Instant::now();
    let results: Vec<Result<(), LoadError>> = stream::iter(ids.iter().enumerate())
        .map(|(i, (device, patient))| {
            let client = client.clone();
            let kind = if is_fall(i) {
                "fall_sensor"
            } else {
                "pulse_oximeter"
            };
            async move {
                let call = |method: reqwest::Method, path: String, body: Value| {
                    client
                        .request(method, format!("{base}{path}"))
                        .bearer_auth(&config.api_token)
                        .json(&body)
                        .send()
                };
                let steps = [
                    (
                        reqwest::Method::POST,
                        "/api/v1/patients".to_owned(),
                        // Invented, like every simulated name.
                        json!({"id": patient, "name": format!("Lasttest Belastningsson {i}")}),
                    ),
                    (
                        reqwest::Method::POST,
                        "/api/v1/devices".to_owned(),
                        json!({"id": device, "kind": kind}),
                    ),
                    (
                        reqwest::Method::PUT,
                        format!("/api/v1/devices/{device}/binding"),
                        json!({"patient_id": patient}),
                    ),
                ];
                for (method, path, body) in steps {
                    let resp = call(method, path.clone(), body)
                        .await
                        .map_err(|e| LoadError::Register(format!("{path}: {e}")))?;
                    let status = resp.status();
                    if !(status.is_success() || status == StatusCode::CONFLICT) {
                        let body = resp.text().await.unwrap_or_default();
                        let body: String = body.chars().take(200).collect();
                        return Err(LoadError::Register(format!("{path}: HTTP {status} {body}")));
                    }
                }
                Ok(())
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    info!(
        devices = ids.len(),
        secs = started.elapsed().as_secs_f64(),
        "registered with the hub"
    );
    Ok(())
}

// ------------------------------------------------------------------- MQTT

fn connect(broker: &Broker, run_id: &str, device: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(
        format!(
            "vaka-load-{run_id}-{}",
            device.rsplit('-').next().unwrap_or(device)
        ),
        &broker.host,
        broker.port,
    );
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_clean_session(true);
    if let Some((user, pass)) = &broker.credentials {
        options.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    // Nagle adds ~15 ms per hop (ARCHITECTURE §1).
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(10);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Polls one device's connection: counts the broker's acknowledgements and
/// reconnects after an error (rumqttc resends what was in flight).
async fn poll(
    mut eventloop: EventLoop,
    ready: oneshot::Sender<()>,
    acked: Arc<AtomicU64>,
    reconnects: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    loop {
        let event = tokio::select! {
            e = eventloop.poll() => e,
            _ = stop.cancelled() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => match ready.take() {
                Some(r) => {
                    let _ = r.send(());
                }
                None => {
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
            },
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                debug!(error = %e, "device connection error; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

// -------------------------------------------------------------- websocket

/// Opens the websocket, waits for its snapshot, and then feeds every alert
/// it shows to `falls` until `stop`.
async fn watch_alerts(
    config: &LoadConfig,
    falls: Arc<Mutex<Falls>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, LoadError> {
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let base = config.api.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(LoadError::Config(format!(
            "the API URL {base:?} must be http://"
        )));
    };
    // Alerts only: the readings of a thousand devices would cost the hub
    // and this client more than what is measured.
    let url = format!(
        "{ws_base}/api/v1/ws?readings=false&access_token={}",
        config.api_token
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| LoadError::Websocket(e.to_string()))?;
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .map_err(|_| LoadError::Websocket("no snapshot within 30 s".into()))?;
    match first {
        Some(Ok(WsMessage::Text(t)))
            if serde_json::from_str::<Value>(t.as_str()).is_ok_and(|v| v["type"] == "snapshot") => {
        }
        other => {
            return Err(LoadError::Websocket(format!(
                "expected a snapshot first, got {other:?}"
            )));
        }
    }
    Ok(tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = ws.next() => m,
                _ = stop.cancelled() => break,
            };
            let text = match msg {
                Some(Ok(WsMessage::Text(t))) => t,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    warn!(error = %e, "websocket failed; alerts after this are not seen");
                    break;
                }
                None => {
                    warn!("websocket closed by the hub; alerts after this are not seen");
                    break;
                }
            };
            let now = Instant::now();
            let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            let mut falls = lock(&falls);
            match frame["type"].as_str() {
                Some("alert") => falls.observe(&frame["alert"], now),
                // After a lag the hub sends a fresh snapshot instead.
                Some("snapshot") => {
                    for a in frame["alerts"].as_array().into_iter().flatten() {
                        falls.observe(a, now);
                    }
                }
                _ => {}
            }
        }
        let _ = futures::SinkExt::close(&mut ws).await;
    }))
}

// ----------------------------------------------------------------- prober

struct Probe {
    record: Record,
    at: Instant,
}

/// Polls the database for outstanding probes until the channel is closed
/// and every probe is found, or none has been found for 30 s. Returns the
/// latencies and how many were never found.
///
/// Only the oldest [`PROBE_WINDOW`] outstanding probes are asked for: the
/// hub stores messages in about the order they were published, so while
/// the oldest are not there the younger are not either, and asking for all
/// of them would load the database most exactly when the hub is behind.
/// When most of the window was found, the next poll follows at once.
async fn probe(db: Db, mut rx: mpsc::UnboundedReceiver<Probe>) -> (Histogram<u64>, u64) {
    let mut hist = histogram();
    let mut pending: VecDeque<Probe> = VecDeque::new();
    let mut open = true;
    let mut last_found = Instant::now();
    loop {
        loop {
            match rx.try_recv() {
                Ok(p) => pending.push_back(p),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        if pending.is_empty() {
            if !open {
                break;
            }
            match rx.recv().await {
                Some(p) => pending.push_back(p),
                None => break,
            }
            last_found = Instant::now();
            continue;
        }
        let take = pending.len().min(PROBE_WINDOW);
        let window: Vec<Record> = pending
            .iter()
            .take(take)
            .map(|p| p.record.clone())
            .collect();
        let mut found_most = false;
        match db.stored(&window).await {
            Ok(found) => {
                let now = Instant::now();
                let n_found = found.iter().filter(|f| **f).count();
                if n_found > 0 {
                    last_found = now;
                }
                found_most = take == PROBE_WINDOW && n_found * 2 >= take;
                // The window is the front of `pending`; the rest stays.
                let mut found = found.into_iter();
                pending.retain(|p| {
                    let found = found.next().unwrap_or(false);
                    if found {
                        let us = now.duration_since(p.at).as_micros();
                        let _ = hist.record(u64::try_from(us).unwrap_or(u64::MAX));
                    }
                    !found
                });
            }
            Err(e) => warn!(error = %e, "probe query failed"),
        }
        if !open && last_found.elapsed() > Duration::from_secs(30) {
            break;
        }
        if !found_most {
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    let lost = pending.len() as u64;
    if let Some(first) = pending.front() {
        warn!(lost, device = %first.record.device, "probes never found in the database");
    }
    (hist, lost)
}

// --------------------------------------------------------------- database

/// The hub's database, read only.
#[derive(Clone)]
enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Db {
    async fn connect(url: &str) -> Result<Db, LoadError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new().max_connections(2).connect(url).await?;
            Ok(Db::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .read_only(true)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(2)
                .connect_with(options)
                .await?;
            Ok(Db::Sqlite(pool))
        } else {
            Err(LoadError::Config(
                "the database URL must be postgres://… or sqlite://…".into(),
            ))
        }
    }

    /// Observation rows and fall events of `devices`.
    async fn counts(&self, devices: &[String]) -> Result<(u64, u64), sqlx::Error> {
        let (obs, falls): (i64, i64) = match self {
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT (SELECT count(*) FROM observations WHERE device_id = ANY($1)),
                            (SELECT count(*) FROM events WHERE device_id = ANY($1) AND kind = 'fall')",
                )
                .bind(devices)
                .fetch_one(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT (SELECT count(*) FROM observations WHERE device_id IN (SELECT value FROM json_each($1))),
                            (SELECT count(*) FROM events WHERE device_id IN (SELECT value FROM json_each($1)) AND kind = 'fall')",
                )
                .bind(serde_json::to_string(devices).unwrap_or_default())
                .fetch_one(pool)
                .await?
            }
        };
        Ok((obs.max(0) as u64, falls.max(0) as u64))
    }

    /// The sum of the counts of the fall alerts of `patients`.
    async fn fall_alert_count(&self, patients: &[String]) -> Result<u64, sqlx::Error> {
        let (n,): (i64,) = match self {
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT coalesce(sum(count), 0)::int8 FROM alerts
                     WHERE rule = 'fall' AND patient_id = ANY($1)",
                )
                .bind(patients)
                .fetch_one(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT coalesce(sum(count), 0) FROM alerts
                     WHERE rule = 'fall' AND patient_id IN (SELECT value FROM json_each($1))",
                )
                .bind(serde_json::to_string(patients).unwrap_or_default())
                .fetch_one(pool)
                .await?
            }
        };
        Ok(n.max(0) as u64)
    }

    /// Whether each of `records` is stored: one index probe each
    /// (LATERAL … LIMIT 1 on the unique keys; a semi-join may hash the
    /// whole table, and the waiting would then cost the database more than
    /// what it measures).
    async fn stored(&self, records: &[Record]) -> Result<Vec<bool>, sqlx::Error> {
        let rows: Vec<(i64,)> = match self {
            Db::Postgres(pool) => {
                let ids: Vec<&str> = records.iter().map(|r| r.device.as_str()).collect();
                let times: Vec<chrono::DateTime<chrono::Utc>> = records
                    .iter()
                    .map(|r| chrono::DateTime::from_timestamp_millis(r.t_ms).unwrap_or_default())
                    .collect();
                let falls: Vec<bool> = records.iter().map(|r| r.fall).collect();
                let idx: Vec<i64> = (0..records.len() as i64).collect();
                sqlx::query_as(
                    "SELECT p.i FROM UNNEST($1::text[], $2::timestamptz[], $3::bool[], $4::int8[])
                                     AS p(d, t, fall, i)
                     CROSS JOIN LATERAL (
                         SELECT 1 FROM observations o
                         WHERE NOT p.fall AND o.device_id = p.d AND o.metric = 'spo2' AND o.time = p.t
                         UNION ALL
                         SELECT 1 FROM events e
                         WHERE p.fall AND e.device_id = p.d AND e.kind = 'fall' AND e.time = p.t
                         LIMIT 1) AS found",
                )
                .bind(ids)
                .bind(times)
                .bind(falls)
                .bind(idx)
                .fetch_all(pool)
                .await?
            }
            Db::Sqlite(pool) => {
                let triples: Vec<(&str, i64, bool)> = records
                    .iter()
                    .map(|r| (r.device.as_str(), r.t_ms, r.fall))
                    .collect();
                sqlx::query_as(
                    "SELECT CAST(j.key AS INTEGER) FROM json_each($1) AS j
                     WHERE CASE WHEN json_extract(j.value, '$[2]')
                           THEN EXISTS (SELECT 1 FROM events e
                                        WHERE e.device_id = json_extract(j.value, '$[0]') AND e.kind = 'fall'
                                          AND e.time = json_extract(j.value, '$[1]'))
                           ELSE EXISTS (SELECT 1 FROM observations o
                                        WHERE o.device_id = json_extract(j.value, '$[0]') AND o.metric = 'spo2'
                                          AND o.time = json_extract(j.value, '$[1]'))
                           END",
                )
                .bind(serde_json::to_string(&triples).unwrap_or_default())
                .fetch_all(pool)
                .await?
            }
        };
        let mut stored = vec![false; records.len()];
        for (i,) in rows {
            if let Some(s) = usize::try_from(i).ok().and_then(|i| stored.get_mut(i)) {
                *s = true;
            }
        }
        Ok(stored)
    }
}

/// One published message, as the database keys it: an oximeter's `spo2`
/// row or a fall event, by device and data time.
#[derive(Debug, Clone)]
struct Record {
    device: String,
    t_ms: i64,
    fall: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(patient: &str, count: u64) -> Value {
        json!({"rule": "fall", "patient_id": patient, "count": count})
    }

    #[test]
    fn an_alert_count_covers_the_falls_up_to_it() {
        let t0 = Instant::now();
        let mut falls = Falls {
            by_patient: [("p".to_owned(), PatientFalls::default())].into(),
            latency: histogram(),
            duplicates: 0,
        };
        let p = falls.by_patient.get_mut("p").unwrap();
        p.sent = vec![t0, t0, t0];
        // Two falls handled in one batch: one frame with count 2 covers both.
        falls.observe(&alert("p", 2), t0 + Duration::from_millis(10));
        assert_eq!(falls.seen(), 2);
        assert_eq!(falls.latency.len(), 2);
        // The same frame again (a snapshot after a lag) changes nothing.
        falls.observe(&alert("p", 2), t0 + Duration::from_millis(20));
        assert_eq!(falls.latency.len(), 2);
        falls.observe(&alert("p", 3), t0 + Duration::from_millis(30));
        assert_eq!((falls.seen(), falls.duplicates), (3, 0));
        // A count beyond the falls sent is a duplicate evaluation.
        falls.observe(&alert("p", 4), t0 + Duration::from_millis(40));
        assert_eq!(falls.duplicates, 1);
        // Other rules and other patients are not ours.
        falls.observe(&json!({"rule": "spo2", "patient_id": "p", "count": 9}), t0);
        falls.observe(&alert("q", 9), t0);
        assert_eq!((falls.seen(), falls.duplicates), (3, 1));
    }

    #[test]
    fn payloads_validate_and_have_distinct_keys() {
        let dev = DeviceId::parse("ld-x-1").unwrap();
        let now = UnixMillis::now();
        let limits = vaka_gateway::validate::Limits::default();
        for payload in [
            oximeter_payload("ld-x-1", now.0, 7),
            fall_payload("ld-x-1", now.0 + 1),
        ] {
            let channel = if payload.windows(4).any(|w| w == b"fall") {
                Channel::Evt
            } else {
                Channel::Obs
            };
            let v = vaka_gateway::validate::validate(&dev, channel, &payload, now, &limits);
            assert!(v.outcome.is_ok(), "{:?}", v.outcome.err());
        }
    }

    #[test]
    fn a_report_names_every_loss_and_duplicate() {
        let clean = LoadReport {
            sent: 10,
            acked: 10,
            sent_observations: 9,
            sent_falls: 1,
            expected_rows: 18,
            stored_rows: 18,
            stored_falls: 1,
            alerts_expected: 1,
            alerts_received: 1,
            alert_count_in_db: 1,
            ..LoadReport::default()
        };
        assert!(clean.is_clean());
        let lost = LoadReport {
            stored_rows: 16,
            ..clean.clone()
        };
        assert_eq!(lost.problems(), ["2 of 18 observation rows lost"]);
        let doubled = LoadReport {
            alert_count_in_db: 2,
            ..clean.clone()
        };
        assert_eq!(doubled.problems().len(), 1);
        let missing = LoadReport {
            alerts_received: 0,
            ..clean
        };
        assert_eq!(
            missing.problems(),
            ["1 of 1 expected alerts never arrived on the websocket"]
        );
    }
}
