//! The simulator on the wire: one MQTT client per device, as real devices
//! are, each with its own client id, its last will, and its own poll task.
//!
//! A poll task (`DevicePoll`) only polls and reacts without waiting: on every
//! CONNACK it subscribes to its `cmd` and `err` topics and publishes its
//! online status with `try_*` (a poll loop must never wait on its own request
//! channel, which only it drains); incoming commands go to the scheduler
//! through a bounded channel. One scheduler task (in [`run_with`]) owns the
//! schedule and publishes: first the history, then each live message when it
//! is due. `AsyncClient::publish` waits while a device's bounded request
//! channel is full, and rumqttc reads no new request while its in-flight
//! window of unacknowledged QoS 1 messages is full, so nothing is sent faster
//! than the broker acknowledges; the backfill is also paced (see
//! [`Timing::history_rate`]), because a broker that acknowledges is not yet
//! a hub that has committed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, NetworkOptions,
    Outgoing, Packet, QoS,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use vaka_gateway::UnixMillis;
use vaka_gateway::model::DeviceKind;
use vaka_gateway::topics::{Channel, DeviceId, TopicRoot};

use crate::devices::{self, Command, Message};
use crate::random;
use crate::roster::Roster;
use crate::schedule::{Schedule, history};
use crate::{SimConfig, SimReport, Timing};

/// Errors of a run (configuration and connection; a device's data never
/// fails a run).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid MQTT URL {url:?}: {reason}")]
    MqttUrl { url: String, reason: String },
    #[error("invalid topic root {0:?}: it must be one or more topic levels without wildcards")]
    TopicRoot(String),
    #[error("invalid device id {0:?}")]
    DeviceId(String),
    #[error("device {device} could not connect to the MQTT broker at {broker}: {source}")]
    Connect {
        device: String,
        broker: String,
        #[source]
        source: Box<ConnectionError>,
    },
    #[error("devices did not connect to the MQTT broker at {broker} within {secs} s")]
    ConnectTimeout { broker: String, secs: u64 },
    #[error("the MQTT client of device {device} stopped: {source}")]
    Client {
        device: String,
        #[source]
        source: rumqttc::ClientError,
    },
}

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broker {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) credentials: Option<(String, String)>,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Parses `mqtt://[user[:password]@]host[:port][?…]` (or `tcp://`). rumqttc's
/// own `parse_url` needs its `url` feature and a `client_id` in the query;
/// here every device brings its own client id, so the query is ignored.
pub(crate) fn parse_broker(url: &str) -> Result<Broker, Error> {
    let bad = |reason: &str| Error::MqttUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" | "ws" | "wss" => {
            return Err(bad("only plain TCP (mqtt:// or tcp://) is supported"));
        }
        _ => return Err(bad("the scheme must be mqtt:// or tcp://")),
    }
    // An IPv6 host comes bracketed (`[::1]`); the socket address wants it bare.
    let host = match parsed.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_owned(),
        _ => return Err(bad("no host")),
    };
    let credentials = (!parsed.username().is_empty()).then(|| {
        (
            parsed.username().to_owned(),
            parsed.password().unwrap_or("").to_owned(),
        )
    });
    Ok(Broker {
        host,
        port: parsed.port().unwrap_or(1883),
        credentials,
    })
}

/// Counts shared by the poll tasks and the scheduler.
#[derive(Debug, Default)]
struct Tally {
    published: AtomicU64,
    acked: AtomicU64,
    by_kind: [AtomicU64; DeviceKind::ALL.len()],
}

impl Tally {
    fn published(&self, kind: DeviceKind) {
        self.published.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = DeviceKind::ALL.iter().position(|&k| k == kind) {
            self.by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn report(&self, history: u64, replies: u64) -> SimReport {
        SimReport {
            published: self.published.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            history,
            replies,
            by_kind: DeviceKind::ALL
                .iter()
                .zip(&self.by_kind)
                .map(|(&k, n)| (k, n.load(Ordering::Relaxed)))
                .filter(|&(_, n)| n > 0)
                .collect(),
        }
    }
}

/// The topics of one device.
#[derive(Debug, Clone)]
struct Topics {
    obs: String,
    evt: String,
    status: String,
    cmd: String,
    err: String,
}

impl Topics {
    fn new(root: &TopicRoot, device: &DeviceId) -> Topics {
        Topics {
            obs: root.topic(device, Channel::Obs),
            evt: root.topic(device, Channel::Evt),
            status: root.topic(device, Channel::Status),
            cmd: root.topic(device, Channel::Cmd),
            err: root.topic(device, Channel::Err),
        }
    }

    fn of(&self, channel: Channel) -> &str {
        match channel {
            Channel::Obs => &self.obs,
            Channel::Evt => &self.evt,
            Channel::Status => &self.status,
            Channel::Cmd => &self.cmd,
            Channel::Err => &self.err,
        }
    }
}

/// One connected device, as the scheduler sees it.
struct Link {
    device: String,
    kind: DeviceKind,
    patient: usize,
    client: AsyncClient,
    topics: Topics,
    /// Repeats taken so far (each draws its own numbers).
    repeats: u64,
}

/// A command that arrived for the device `link`.
#[derive(Debug)]
struct Incoming {
    link: usize,
    cmd: Command,
    at: UnixMillis,
}

/// Capacity of each client's request channel: enough for the subscriptions
/// and status a poll task queues on CONNACK plus a few messages in hand.
const REQUEST_CAPACITY: usize = 16;
/// Unacknowledged QoS 1 messages per device (rumqttc's flow control).
const INFLIGHT: u16 = 32;
/// The gateway's default payload limit; CTG packs are ~4 KiB.
const MAX_PACKET: usize = 64 * 1024;
/// How long a clean shutdown may take before the poll tasks are stopped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// [`crate::run`] with explicit [`Timing`].
pub async fn run_with(
    roster: &Roster,
    config: SimConfig,
    timing: Timing,
    shutdown: CancellationToken,
) -> Result<SimReport, Error> {
    let broker = parse_broker(&config.mqtt_url)?;
    let root = TopicRoot::new(&config.topic_root)
        .map_err(|_| Error::TopicRoot(config.topic_root.clone()))?;
    // Check every id before the first connection, so that a bad one cannot
    // leave earlier devices connected behind an error.
    let mut ids = Vec::new();
    for (_, d) in roster.devices() {
        ids.push(DeviceId::parse(&d.id).ok_or_else(|| Error::DeviceId(d.id.clone()))?);
    }
    let roster = Arc::new(roster.clone());
    let start = UnixMillis::now();
    let tally = Arc::new(Tally::default());
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Incoming>(64);
    let tracker = TaskTracker::new();
    // Stops the poll tasks; cancelled after the clean disconnect, or at once
    // if connecting fails.
    let stop = CancellationToken::new();

    let mut links = Vec::new();
    let mut ready = Vec::new();
    let mut ids = ids.into_iter();
    for (pi, patient) in roster.patients.iter().enumerate() {
        for (d, id) in patient.devices.iter().zip(ids.by_ref()) {
            let topics = Topics::new(&root, &id);
            let login = match config.credentials.get(&d.id) {
                Some(password) => Some((d.id.clone(), password.clone())),
                None => broker.credentials.clone(),
            };
            let (client, eventloop) = connect(
                &broker,
                login.as_ref(),
                &config.client_prefix,
                &d.id,
                &topics,
            );
            let (ready_tx, ready_rx) = oneshot::channel();
            let poll = DevicePoll {
                link: links.len(),
                device: d.id.clone(),
                kind: d.kind,
                patient: pi,
                roster: roster.clone(),
                start,
                client: client.clone(),
                topics: topics.clone(),
                commands: cmd_tx.clone(),
                tally: tally.clone(),
                ready: Some(ready_tx),
                stop: stop.clone(),
            };
            tracker.spawn(poll.run(eventloop));
            ready.push((d.id.clone(), ready_rx));
            links.push(Link {
                device: d.id.clone(),
                kind: d.kind,
                patient: pi,
                client,
                topics,
                repeats: 0,
            });
        }
    }
    drop(cmd_tx);
    tracker.close();

    if let Err(e) = wait_connected(ready, &broker, timing.connect_timeout, &shutdown).await {
        stop.cancel();
        tracker.wait().await;
        return Err(e);
    }
    info!(devices = links.len(), %broker, "all devices connected");

    let mut sched = Scheduler {
        links,
        by_device: HashMap::new(),
        tally: tally.clone(),
        shutdown: shutdown.clone(),
        history: 0,
        replies: 0,
    };
    sched.by_device = sched
        .links
        .iter()
        .enumerate()
        .map(|(i, l)| (l.device.clone(), i))
        .collect();

    let result = async {
        sched
            .backfill(&roster, start, config.history_days, timing.history_rate)
            .await?;
        sched
            .live(&roster, start, config.seed, &timing, &mut cmd_rx)
            .await
    }
    .await;

    sched.disconnect().await;
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        warn!("devices did not disconnect in time; stopping them");
    }
    stop.cancel();
    tracker.wait().await;
    result?;
    let report = tally.report(sched.history, sched.replies);
    info!(
        published = report.published,
        acked = report.acked,
        "simulator stopped"
    );
    Ok(report)
}

/// The MQTT client of one device, with its last will.
fn connect(
    broker: &Broker,
    login: Option<&(String, String)>,
    prefix: &str,
    device: &str,
    topics: &Topics,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(format!("{prefix}-{device}"), &broker.host, broker.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        // A device is a fresh session each time; what it missed while away
        // it will not be asked again.
        .set_clean_session(true)
        .set_last_will(LastWill::new(
            topics.status.clone(),
            devices::last_will(device),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, pass)) = login {
        options.set_credentials(user.clone(), pass.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    // Nagle adds ~15 ms per hop (ARCHITECTURE §1); alarms should not wait.
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(5);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// Waits until every device has had its first CONNACK.
async fn wait_connected(
    ready: Vec<(String, oneshot::Receiver<Result<(), ConnectionError>>)>,
    broker: &Broker,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<(), Error> {
    let all = async {
        for (device, rx) in ready {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(Error::Connect {
                        device,
                        broker: broker.to_string(),
                        source: Box::new(source),
                    });
                }
                // The poll task ended without a word: only when stopped.
                Err(_) => {}
            }
        }
        Ok(())
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, all) => r.unwrap_or(Err(Error::ConnectTimeout {
            broker: broker.to_string(),
            secs: timeout.as_secs(),
        })),
        _ = shutdown.cancelled() => Ok(()),
    }
}

/// The poll task of one device's connection.
struct DevicePoll {
    link: usize,
    device: String,
    kind: DeviceKind,
    patient: usize,
    roster: Arc<Roster>,
    start: UnixMillis,
    client: AsyncClient,
    topics: Topics,
    commands: mpsc::Sender<Incoming>,
    tally: Arc<Tally>,
    ready: Option<oneshot::Sender<Result<(), ConnectionError>>>,
    stop: CancellationToken,
}

impl DevicePoll {
    /// Polls the connection until it is closed after a DISCONNECT, or stopped.
    async fn run(mut self, mut eventloop: EventLoop) {
        let mut disconnecting = false;
        loop {
            let event = tokio::select! {
                e = eventloop.poll() => e,
                _ = self.stop.cancelled() => return,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    debug!(device = %self.device, "connected");
                    self.on_connect();
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(msg))) => {
                    self.on_publish(&msg.topic, &msg.payload)
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    self.tally.acked.fetch_add(1, Ordering::Relaxed);
                }
                // After DISCONNECT, read on until the broker closes the
                // connection. Closing first, with PUBACKs still unread, makes the
                // kernel send a reset, and the broker may then lose the last
                // messages (the offline status, the DISCONNECT itself).
                Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
                Ok(_) => {}
                Err(_) if disconnecting => return,
                Err(e) => {
                    if let Some(ready) = self.ready.take() {
                        // Never connected: the run reports it and gives up.
                        let _ = ready.send(Err(e));
                        return;
                    }
                    warn!(device = %self.device, error = %e, "connection lost; reconnecting");
                    // rumqttc reconnects on the next poll, at once; wait a
                    // little so a broker restart is not met with a busy loop.
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// On every (re)connection: listen for commands and rejections, say
    /// "online". Queued without waiting; on the first connection the request
    /// channel is empty, and on a reconnection a full channel only means the
    /// status comes with the next message instead.
    fn on_connect(&self) {
        for topic in [&self.topics.cmd, &self.topics.err] {
            if let Err(e) = self.client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                warn!(device = %self.device, error = %e, "could not subscribe");
            }
        }
        let patient = &self.roster.patients[self.patient];
        let Some(status) =
            devices::connect_status(patient, &self.device, self.start, UnixMillis::now())
        else {
            return;
        };
        match self.client.try_publish(
            self.topics.status.clone(),
            QoS::AtLeastOnce,
            true,
            status.payload,
        ) {
            Ok(()) => self.tally.published(self.kind),
            Err(e) => warn!(device = %self.device, error = %e, "could not publish status"),
        }
    }

    fn on_publish(&self, topic: &str, payload: &[u8]) {
        if topic == self.topics.err {
            // The hub refused something we sent: a simulator bug, or a
            // device the hub does not know yet.
            warn!(device = %self.device, reply = %String::from_utf8_lossy(payload), "hub rejected a message");
            return;
        }
        if topic != self.topics.cmd {
            return;
        }
        match Command::parse(payload) {
            Ok(cmd) => {
                info!(device = %self.device, ?cmd, "command");
                let incoming = Incoming {
                    link: self.link,
                    cmd,
                    at: UnixMillis::now(),
                };
                if self.commands.try_send(incoming).is_err() {
                    warn!(device = %self.device, "too many commands at once; one is ignored");
                }
            }
            Err(e) => warn!(device = %self.device, error = %e, "unreadable command ignored"),
        }
    }
}

/// The task that owns the schedule and publishes.
struct Scheduler {
    links: Vec<Link>,
    by_device: HashMap<String, usize>,
    tally: Arc<Tally>,
    shutdown: CancellationToken,
    history: u64,
    replies: u64,
}

/// A repeat reading to take.
struct Pending {
    due: UnixMillis,
    link: usize,
    cmd: Command,
    nth: u64,
}

impl Scheduler {
    /// Publishes `m` on its device's topic, waiting while that device's
    /// client is busy. `Ok(false)`: stopped by shutdown first.
    async fn send(&self, m: Message) -> Result<bool, Error> {
        let Some(&i) = self.by_device.get(&m.device) else {
            warn!(device = %m.device, "message for a device that is not connected");
            return Ok(true);
        };
        let link = &self.links[i];
        let topic = link.topics.of(m.channel).to_owned();
        let publish = link
            .client
            .publish(topic, QoS::AtLeastOnce, m.retain, m.payload);
        tokio::select! {
            r = publish => r.map_err(|source| Error::Client { device: link.device.clone(), source })?,
            _ = self.shutdown.cancelled() => return Ok(false),
        }
        self.tally.published(link.kind);
        Ok(true)
    }

    /// Publishes every patient's history, oldest first per patient, at most
    /// `rate` messages a second (0: as fast as the broker acknowledges).
    async fn backfill(
        &mut self,
        roster: &Roster,
        start: UnixMillis,
        days: u32,
        rate: u32,
    ) -> Result<(), Error> {
        if days == 0 {
            return Ok(());
        }
        let begun = tokio::time::Instant::now();
        for patient in &roster.patients {
            for m in history(patient, start, days) {
                // Pace in steps of 50 messages: fine enough, few timers.
                if rate > 0 && self.history > 0 && self.history.is_multiple_of(50) {
                    let at = begun + Duration::from_secs_f64(self.history as f64 / f64::from(rate));
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.shutdown.cancelled() => return Ok(()),
                    }
                }
                if !self.send(m).await? {
                    return Ok(());
                }
                self.history += 1;
            }
        }
        info!(messages = self.history, days, "history published");
        Ok(())
    }

    /// Publishes the live schedule as it falls due, and answers commands,
    /// until shutdown.
    async fn live(
        &mut self,
        roster: &Roster,
        start: UnixMillis,
        seed: u64,
        timing: &Timing,
        commands: &mut mpsc::Receiver<Incoming>,
    ) -> Result<(), Error> {
        let mut schedule = Schedule::new(roster, start);
        let mut pending: Vec<Pending> = Vec::new();
        let delay_ms = i64::try_from(timing.remeasure_delay.as_millis()).unwrap_or(i64::MAX);
        loop {
            let next = [schedule.peek_due(), pending.iter().map(|p| p.due).min()]
                .into_iter()
                .flatten()
                .min();
            let wait = next
                .map(|t| Duration::from_millis(t.millis_since(UnixMillis::now()).max(0) as u64));
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Ok(()),
                Some(inc) = commands.recv() => {
                    let link = &mut self.links[inc.link];
                    link.repeats += 1;
                    pending.push(Pending {
                        due: inc.at.plus_millis(delay_ms),
                        link: inc.link,
                        nth: random::derive(seed, &[link.repeats]),
                        cmd: inc.cmd,
                    });
                }
                _ = sleep(wait) => {}
            }
            let now = UnixMillis::now();
            while schedule.peek_due().is_some_and(|due| due <= now) {
                let Some((_, m)) = schedule.next() else { break };
                if !self.send(m).await? {
                    return Ok(());
                }
            }
            let (due, later): (Vec<_>, Vec<_>) = pending.drain(..).partition(|p| p.due <= now);
            pending = later;
            for p in due {
                let link = &self.links[p.link];
                let patient = &roster.patients[link.patient];
                // The reading is taken now, so its data time is now.
                let Some(m) = devices::answer(patient, &link.device, &p.cmd, start, now, p.nth)
                else {
                    debug!(device = %link.device, cmd = ?p.cmd, "nothing to measure");
                    continue;
                };
                if !self.send(m).await? {
                    return Ok(());
                }
                self.replies += 1;
            }
        }
    }

    /// Says "offline" on purpose (a clean DISCONNECT suppresses the will)
    /// and disconnects every device. Bounded: a dead broker must not hold up
    /// a shutdown.
    async fn disconnect(&self) {
        let all = async {
            for link in &self.links {
                let m = devices::offline_status(&link.device, UnixMillis::now());
                let status = link
                    .client
                    .publish(
                        link.topics.status.clone(),
                        QoS::AtLeastOnce,
                        true,
                        m.payload,
                    )
                    .await;
                if status.is_ok() {
                    self.tally.published(link.kind);
                }
                let _ = link.client.disconnect().await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            warn!("could not say goodbye for every device in time");
        }
    }
}

/// Sleeps for `d`, or forever.
async fn sleep(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = parse_broker("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.credentials),
            ("127.0.0.1", 1883, None)
        );
        let b = parse_broker("tcp://broker.example:2883?client_id=x").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("broker.example", 2883));
        let b = parse_broker("mqtt://user:secret@[::1]").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1883));
        assert_eq!(b.credentials, Some(("user".into(), "secret".into())));
        assert_eq!(b.to_string(), "::1:1883");
        assert!(parse_broker("mqtts://x").is_err());
        assert!(parse_broker("http://x").is_err());
        assert!(parse_broker("127.0.0.1:1883").is_err());
    }
}
