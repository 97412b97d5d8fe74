//! The broker connection: options, and the poll loop.
//!
//! The gateway speaks MQTT 5 to the broker (devices may speak 3.1.1): its
//! CONNECT carries a Receive Maximum, the number of unacknowledged QoS 1
//! messages the broker may have in flight to it. Because the gateway
//! acknowledges only after the commit, that window, divided by the commit
//! latency, caps ingest. For a 3.1.1 client Mosquitto applies its own
//! `max_inflight_messages` (20 by default), far too few; for an MQTT 5
//! client it applies the client's Receive Maximum, so vaka runs fast
//! against a stock Mosquitto. The session is persistent (clean start off,
//! session expiry "never").
//!
//! rumqttc's `EventLoop::poll` owns the socket and must never be blocked: it
//! also sends our acknowledgements and keep-alives. So the loop here does
//! nothing but poll, keep the subscriptions alive, and forward each incoming
//! publish to the batcher. It never waits for room in the intake: were it
//! to, it would stop sending the very acknowledgements that make room (the
//! batcher's acks go through this loop), and both would wait forever.
//!
//! Nor does it ever drop a QoS 1 message: an unacknowledged message is
//! redelivered only on the next connection, so one dropped on a live
//! connection would sit in the broker's in-flight window until then, and
//! its reading would be late by as long as the connection lasts. The
//! intake is therefore unbounded for QoS 1 and 2; the broker's in-flight
//! window (our Receive Maximum) is what bounds it, and the intake's length
//! is in `/metrics`. Only QoS 0 messages, which the sender gave up on
//! anyway, are dropped beyond [`QOS0_INTAKE_LIMIT`] waiting messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Publish};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions};
use rumqttc::{NetworkOptions, Outgoing, TlsConfiguration, Transport};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::metrics::GatewayMetrics;
use crate::model::UnixMillis;
use crate::tls::{self, TlsFiles};
use crate::topics::{Channel, TopicRoot};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// `mqtt://[user:password@]host[:port]`, or `mqtts://…` for TLS
    /// (port 8883 by default).
    pub url: String,
    /// CA and client certificate for `mqtts://`.
    pub tls: TlsFiles,
    /// Fixed, so the broker keeps our persistent session across restarts.
    pub client_id: String,
    pub keep_alive: Duration,
    /// The Receive Maximum: unacknowledged QoS 1 messages the broker may
    /// have in flight to the gateway.
    pub inflight: u16,
    /// Largest packet accepted from the broker. Far above the validation
    /// limit on purpose: a too-large payload must reach validation and be
    /// refused there, not break the connection and be redelivered forever.
    pub max_packet_bytes: usize,
}

/// The default Receive Maximum. The gateway acknowledges after the commit,
/// so the window must cover the commit pipeline's batches; but Mosquitto
/// 2.0 walks a client's whole in-flight list for every acknowledgement, so
/// a window far larger than that costs the broker CPU for nothing once the
/// gateway is behind (3 000 devices flat out, measured 2026-12-05: stored
/// 8.6 k msg/s with 10 000, 10.4 k with 5 000, 13.2 k with 2 500; the same
/// at a sustained rate).
pub const DEFAULT_INFLIGHT: u16 = 2_500;

impl MqttConfig {
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        MqttConfig {
            url: url.into(),
            tls: TlsFiles::default(),
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(15),
            inflight: DEFAULT_INFLIGHT,
            max_packet_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Host, port and credentials of an `mqtt://` or `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
    /// `mqtts://` (or `ssl://`): TLS.
    pub tls: bool,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<BrokerAddress, Error> {
        let bad = |reason: &str| Error::MqttUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (rest, tls) = if let Some(rest) = url
            .strip_prefix("mqtts://")
            .or_else(|| url.strip_prefix("ssl://"))
        {
            (rest, true)
        } else {
            let rest = url
                .strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .ok_or_else(|| bad("expected mqtt://host[:port] or mqtts://host[:port]"))?;
            (rest, false)
        };
        let rest = rest.trim_end_matches('/');
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_owned(), pass.to_owned())), hostport)
            }
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("port is not a number"))?),
            None => (hostport, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
            credentials,
            tls,
        })
    }
}

/// Builds a client with manual acknowledgements and a persistent session.
pub(crate) fn connect(config: &MqttConfig) -> Result<(AsyncClient, EventLoop), Error> {
    let addr = BrokerAddress::parse(&config.url)?;
    let tls = addr.tls;
    let mut options = MqttOptions::new(&config.client_id, addr.host, addr.port);
    let packet = u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX);
    // Room for the acknowledgements of a whole in-flight window.
    let requests = usize::from(config.inflight).max(1_000) * 2;
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_start(false)
        .set_session_expiry_interval(Some(u32::MAX))
        .set_receive_maximum(Some(config.inflight.max(1)))
        .set_manual_acks(true)
        .set_max_packet_size(Some(packet))
        .set_request_channel_capacity(requests)
        .set_connection_timeout(10);
    if let Some((user, pass)) = addr.credentials {
        options.set_credentials(user, pass);
    }
    if tls {
        let client = tls::client_config(&config.tls)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(client),
        )));
    }
    let mut network = NetworkOptions::new();
    // Nagle's algorithm would hold our acks and replies back by ~15 ms a hop.
    network.set_tcp_nodelay(true);
    options.set_network_options(network);
    Ok(AsyncClient::new(options, requests))
}

/// Beyond this many messages waiting in the intake, QoS 0 messages are
/// dropped (counted in `vaka_mqtt_intake_dropped_total`).
pub(crate) const QOS0_INTAKE_LIMIT: i64 = 65_536;

/// One received publish and when it arrived.
pub(crate) struct Received {
    pub publish: Publish,
    pub at: UnixMillis,
    pub instant: Instant,
}

pub(crate) struct PollLoop {
    pub client: AsyncClient,
    pub eventloop: EventLoop,
    pub root: TopicRoot,
    pub tx: mpsc::UnboundedSender<Received>,
    pub connected: watch::Sender<bool>,
    pub metrics: GatewayMetrics,
    pub clock: fn() -> UnixMillis,
}

impl PollLoop {
    /// Polls until our own DISCONNECT has gone out (sent by the batcher at
    /// shutdown, after its last acknowledgements) or the client is dropped.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    info!(
                        session_present = ack.session_present,
                        "connected to the MQTT broker"
                    );
                    backoff = Duration::from_millis(100);
                    // Subscribing again is harmless with a present session and
                    // necessary when the broker lost it.
                    let filters = Channel::INBOUND
                        .map(|c| Filter::new(self.root.filter(c), QoS::AtLeastOnce));
                    if let Err(e) = self.client.try_subscribe_many(filters) {
                        warn!(error = %e, "could not queue the subscription");
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(publish))) => {
                    self.metrics.received.inc();
                    let received = Received {
                        publish,
                        at: (self.clock)(),
                        instant: Instant::now(),
                    };
                    if received.publish.qos == QoS::AtMostOnce
                        && self.metrics.intake_queue.get() >= QOS0_INTAKE_LIMIT
                    {
                        self.metrics.intake_dropped.inc();
                        warn!("intake full; a QoS 0 message dropped");
                        continue;
                    }
                    if self.tx.send(received).is_ok() {
                        self.metrics.intake_queue.inc();
                    } else {
                        debug!("batcher gone; not forwarding (the broker will redeliver)");
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                    debug!(?ack.return_codes, "subscribed");
                    // Ready only now: before the subscription stands, a
                    // broker without our session would not keep messages.
                    self.set_connected(true);
                }
                Ok(Event::Incoming(Incoming::Disconnect(_))) => {
                    warn!("the broker disconnected us");
                    self.set_connected(false);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    info!("disconnected from the MQTT broker");
                    self.set_connected(false);
                    return;
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => {
                    self.set_connected(false);
                    return;
                }
                Err(e) => {
                    self.set_connected(false);
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection error");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn set_connected(&self, up: bool) {
        self.metrics.connected.set(i64::from(up));
        self.connected.send_replace(up);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let a = BrokerAddress::parse("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.credentials),
            ("127.0.0.1", 1883, None)
        );
        let a = BrokerAddress::parse("mqtt://gw:s3cret@broker.example").unwrap();
        assert_eq!(a.port, 1883);
        assert_eq!(a.credentials, Some(("gw".into(), "s3cret".into())));
        let a = BrokerAddress::parse("mqtts://broker.example").unwrap();
        assert_eq!((a.port, a.tls), (8883, true));
        assert!(!BrokerAddress::parse("mqtt://h").unwrap().tls);
        assert!(BrokerAddress::parse("http://x").is_err());
        assert!(BrokerAddress::parse("mqtt://:1883").is_err());
        assert!(BrokerAddress::parse("mqtt://h:port").is_err());
    }
}
