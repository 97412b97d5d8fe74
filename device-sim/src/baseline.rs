//! Baselines for the load benchmark: what the broker and the database can do
//! on their own, on the same machine and in the same run, so that vaka's
//! figures can be given as fractions of them (absolute figures drift on a
//! shared machine; ratios measured side by side drift much less).
//!
//! - [`broker`]: rumqttc publishers → one MQTT 5 subscriber through the
//!   same Mosquitto, at QoS 1 or 0, with the load mode's payload (same
//!   size, same topics shape), the subscriber's Receive Maximum the same as
//!   vaka's gateway. Nothing is stored: this is the ceiling of the pipe.
//! - [`database`]: the same number of observation rows into the same table
//!   layout (a database migrated by `vaka migrate`): PostgreSQL `COPY …
//!   FROM STDIN` in one transaction; SQLite (which has no `COPY`) multi-row
//!   `INSERT`s in one transaction with vaka's own settings (WAL,
//!   `synchronous = FULL`).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::{
    AsyncClient as AsyncClient5, Event as Event5, Incoming as Incoming5,
    MqttOptions as MqttOptions5,
};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use serde::Serialize;
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use tokio::sync::oneshot;
use tracing::info;
use vaka_gateway::UnixMillis;

use crate::load::{LoadError, ROWS_PER_MESSAGE, oximeter_payload};
use crate::mqtt::parse_broker;

/// What [`broker`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerBaseline {
    pub qos: u8,
    pub publishers: usize,
    pub messages: u64,
    pub received: u64,
    pub payload_bytes: usize,
    /// From the first publish to the last message received.
    pub secs: f64,
    /// Messages received a second.
    pub rate: f64,
}

/// Publishes `messages` from `publishers` clients (message `k` from client
/// `k mod publishers`, as fast as the broker takes them) and counts them at
/// one subscriber.
pub async fn broker(
    mqtt_url: &str,
    qos: u8,
    messages: u64,
    publishers: usize,
) -> Result<BrokerBaseline, LoadError> {
    let broker = parse_broker(mqtt_url)?;
    let (qos4, qos5) = match qos {
        0 => (QoS::AtMostOnce, QoS5::AtMostOnce),
        1 => (QoS::AtLeastOnce, QoS5::AtLeastOnce),
        _ => return Err(LoadError::Config("QoS must be 0 or 1".into())),
    };
    if publishers == 0 || messages == 0 {
        return Err(LoadError::Config(
            "at least one publisher and one message".into(),
        ));
    }
    let run = format!("{:08x}", rand::random::<u32>());
    let root = format!("vaka-bench/{run}");

    // The subscriber, like the gateway: MQTT 5, the gateway's Receive Maximum.
    let mut options = MqttOptions5::new(format!("vaka-bench-sub-{run}"), &broker.host, broker.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_receive_maximum(Some(vaka_gateway::DEFAULT_INFLIGHT))
        .set_request_channel_capacity(20_000);
    if let Some((u, p)) = &broker.credentials {
        options.set_credentials(u.clone(), p.clone());
    }
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    let (sub, mut sub_loop) = AsyncClient5::new(options, 20_000);
    let received = Arc::new(AtomicU64::new(0));
    let (subscribed_tx, subscribed_rx) = oneshot::channel();
    let (last_tx, last_rx) = tokio::sync::watch::channel(Instant::now());
    let counter = received.clone();
    let sub_task = tokio::spawn(async move {
        let mut subscribed = Some(subscribed_tx);
        loop {
            match sub_loop.poll().await {
                Ok(Event5::Incoming(Incoming5::Publish(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                    last_tx.send_replace(Instant::now());
                }
                Ok(Event5::Incoming(Incoming5::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "baseline subscriber: connection error");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    sub.subscribe(format!("{root}/#"), qos5)
        .await
        .map_err(|e| LoadError::Config(e.to_string()))?;
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .map_err(|_| LoadError::Connect {
            broker: broker.to_string(),
            reason: "the baseline subscriber got no SUBACK".into(),
        })?
        .ok();

    // The publishers, like the load mode's devices.
    let mut clients = Vec::with_capacity(publishers);
    let mut tasks = Vec::with_capacity(publishers);
    let mut ready = Vec::with_capacity(publishers);
    for i in 0..publishers {
        let mut options = MqttOptions::new(
            format!("vaka-bench-pub-{run}-{i}"),
            &broker.host,
            broker.port,
        );
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(32)
            .set_request_channel_capacity(16)
            .set_clean_session(true);
        if let Some((u, p)) = &broker.credentials {
            options.set_credentials(u.clone(), p.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, rx) = oneshot::channel();
        ready.push(rx);
        tasks.push(tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(t) = tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }));
        let device = format!("bl-{run}-{i}");
        let topic = format!("{root}/d/{device}/obs");
        clients.push((client, device, topic, 0i64));
    }
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(ready))
        .await
        .map_err(|_| LoadError::Connect {
            broker: broker.to_string(),
            reason: "baseline publishers did not connect within 60 s".into(),
        })?;

    let started = Instant::now();
    let mut payload_bytes = 0;
    for k in 0..messages {
        if k % 64 == 0 {
            tokio::task::yield_now().await;
        }
        let (client, device, topic, last) = &mut clients[(k % publishers as u64) as usize];
        let t = UnixMillis::now().0.max(*last + 1);
        *last = t;
        let payload = oximeter_payload(device, t, k);
        payload_bytes = payload.len();
        client
            .publish(topic.as_str(), qos4, false, payload)
            .await
            .map_err(|e| LoadError::Config(e.to_string()))?;
    }
    // Done when everything arrived, or (QoS 0 may drop) 2 s without a message.
    loop {
        if received.load(Ordering::Relaxed) >= messages {
            break;
        }
        let last = *last_rx.borrow();
        if last > started && last.elapsed() > Duration::from_secs(2) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last = *last_rx.borrow();
    let got = received.load(Ordering::Relaxed);
    let secs = last
        .saturating_duration_since(started)
        .as_secs_f64()
        .max(1e-9);
    for (c, ..) in &clients {
        let _ = c.try_disconnect();
    }
    let _ = sub.try_disconnect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for t in tasks {
        t.abort();
    }
    sub_task.abort();
    let result = BrokerBaseline {
        qos,
        publishers,
        messages,
        received: got,
        payload_bytes,
        secs,
        rate: got as f64 / secs,
    };
    info!(?result, "broker baseline");
    Ok(result)
}

/// What [`database`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseBaseline {
    pub backend: &'static str,
    /// `COPY` (PostgreSQL) or `INSERT` (SQLite).
    pub method: &'static str,
    pub rows: u64,
    /// From the start of the statement to the end of the commit.
    pub secs: f64,
    pub rows_per_sec: f64,
    /// `rows_per_sec` in load-mode messages (two rows each).
    pub messages_per_sec: f64,
}

/// Writes `rows` observation rows (as from `rows / 2` oximeter messages of
/// `devices` devices) into the database at `url`, which `vaka migrate` has
/// set up, in one transaction.
pub async fn database(url: &str, rows: u64, devices: u64) -> Result<DatabaseBaseline, LoadError> {
    let run = format!("{:08x}", rand::random::<u32>());
    let devices = devices.max(1);
    let now = UnixMillis::now().0;
    // Row r: message r / 2 of device (r / 2) mod devices; spo2 then hr.
    let row = |r: u64| {
        let m = r / ROWS_PER_MESSAGE;
        let device = m % devices;
        // Distinct per device: one millisecond per message of that device.
        let t = now + (m / devices) as i64;
        let (metric, unit, value) = if r.is_multiple_of(2) {
            ("spo2", "%", 95.0 + (m % 5) as f64)
        } else {
            ("hr", "beat/min", 60.0 + (m % 31) as f64)
        };
        (device, t, metric, unit, value)
    };
    let (backend, method, secs) = if url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        let mut text = String::with_capacity(rows as usize * 110);
        for r in 0..rows {
            use std::fmt::Write;
            let (d, t, metric, unit, value) = row(r);
            let time = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
            let time = time.format("%Y-%m-%d %H:%M:%S%.3f+00");
            let _ = writeln!(
                text,
                "{time}\tbp-{run}-{d}\tbl-{run}-{d}\t{metric}\t{value}\t{unit}\t{time}"
            );
        }
        let mut conn = PgConnection::connect(url).await?;
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(
                "COPY observations (time, patient_id, device_id, metric, value, unit, received_at) FROM STDIN",
            )
            .await?;
        for chunk in text.as_bytes().chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copy.finish().await?;
        let secs = started.elapsed().as_secs_f64();
        conn.close().await?;
        ("postgresql", "COPY", secs)
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let mut conn = SqliteConnection::connect_with(&options).await?;
        const PER_STATEMENT: u64 = 500;
        let started = Instant::now();
        let mut tx = conn.begin().await?;
        let mut r = 0;
        while r < rows {
            let n = PER_STATEMENT.min(rows - r);
            let mut sql = String::from(
                "INSERT INTO observations (time, patient_id, device_id, metric, value, unit, received_at) VALUES ",
            );
            for i in 0..n {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?, ?, ?, ?, ?, ?)");
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in r..r + n {
                let (d, t, metric, unit, value) = row(i);
                q = q
                    .bind(t)
                    .bind(format!("bp-{run}-{d}"))
                    .bind(format!("bl-{run}-{d}"))
                    .bind(metric)
                    .bind(value)
                    .bind(unit)
                    .bind(t);
            }
            q.execute(&mut *tx).await?;
            r += n;
        }
        tx.commit().await?;
        let secs = started.elapsed().as_secs_f64();
        conn.close().await?;
        ("sqlite", "INSERT", secs)
    } else {
        return Err(LoadError::Config(
            "the database URL must be postgres://… or sqlite://…".into(),
        ));
    };
    let rows_per_sec = rows as f64 / secs.max(1e-9);
    let result = DatabaseBaseline {
        backend,
        method,
        rows,
        secs,
        rows_per_sec,
        messages_per_sec: rows_per_sec / ROWS_PER_MESSAGE as f64,
    };
    info!(?result, "database baseline");
    Ok(result)
}
