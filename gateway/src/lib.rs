//! # vaka-gateway
//!
//! The MQTT edge of vaka: it turns what home devices publish into validated,
//! typed messages, hands them to a [`Sink`] that commits them durably, and
//! acknowledges each QoS 1 message to the broker only after that commit.
//!
//! ## Layout
//!
//! - [`topics`]: `{root}/d/{device}/{channel}` and the [`DeviceId`].
//! - [`senml`]: RFC 8428 records, their resolution, and a pack builder.
//! - [`model`]: the protocol's vocabulary: metrics, events, status, units
//!   and ranges; [`UnixMillis`].
//! - [`validate`]: pure `bytes → Accepted | Rejection`.
//! - [`error`]: [`RejectCode`] and [`Rejection`] (input), [`Error`] (ours).
//! - `mqtt`: the rumqttc poll loop, which only polls and forwards.
//! - [`throttle`]: per-device token buckets and limit episodes.
//! - `batch`: group commit: collect for a few milliseconds, commit once
//!   through the [`Sink`] (a few batches at once), then deliver, answer
//!   rejections and acknowledge, in arrival order.
//! - [`turn`](Turn): how batches committing at once take turns, so that
//!   what is durable is always a prefix of what arrived.

#[doc(hidden)]
pub use serde as __serde;

pub mod error;
pub mod model;
pub mod senml;
pub mod throttle;
pub mod tls;
pub mod topics;
pub mod validate;

pub use error::{Error, RejectCode, Rejection};
pub use model::UnixMillis;
pub use topics::{Channel, DeviceId, TopicRoot};
pub mod metrics;

mod batch;
mod mqtt;
mod turn;

pub use batch::{BatchConfig, Committed, Disposition, Message, Sink, SinkError};
pub use metrics::GatewayMetrics;
pub use mqtt::{BrokerAddress, DEFAULT_INFLIGHT, MqttConfig};
pub use throttle::{LimitReport, RateLimit};
pub use tls::TlsFiles;
pub use turn::{Turn, TurnError};

use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, EventLoop};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::validate::Limits;

/// Everything the gateway needs to know.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub mqtt: MqttConfig,
    pub topic_root: TopicRoot,
    pub limits: Limits,
    pub batch: BatchConfig,
    /// Per-device message rate.
    pub rate: RateLimit,
    /// The hub's clock, for `future_time` / `too_old` and receive times.
    pub clock: fn() -> UnixMillis,
}

impl GatewayConfig {
    pub fn new(mqtt: MqttConfig, topic_root: TopicRoot) -> Self {
        GatewayConfig {
            mqtt,
            topic_root,
            limits: Limits::default(),
            batch: BatchConfig::default(),
            rate: RateLimit::default(),
            clock: UnixMillis::now,
        }
    }
}

/// The running gateway's two loops, before they start.
pub struct Gateway {
    client: AsyncClient,
    eventloop: EventLoop,
    config: GatewayConfig,
    metrics: GatewayMetrics,
    connected: watch::Sender<bool>,
}

/// What the rest of vaka holds of the gateway: broker state and a way to
/// send commands to devices.
#[derive(Clone)]
pub struct GatewayHandle {
    client: AsyncClient,
    root: TopicRoot,
    connected: watch::Receiver<bool>,
    metrics: GatewayMetrics,
}

impl GatewayHandle {
    /// Whether the broker connection is up and the subscriptions stand.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver that changes whenever the connection goes up or down.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Queues a JSON command to a device on `…/d/{dev}/cmd` (QoS 1).
    /// Never waits: a full queue drops the command, counted and logged.
    pub fn send_command(&self, device: &DeviceId, json: Vec<u8>) -> bool {
        let topic = self.root.topic(device, Channel::Cmd);
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, false, json)
        {
            Ok(()) => true,
            Err(e) => {
                self.metrics.replies_dropped.inc();
                warn!(error = %e, %device, "could not queue a device command");
                false
            }
        }
    }
}

impl Gateway {
    pub fn new(
        config: GatewayConfig,
        metrics: GatewayMetrics,
    ) -> Result<(Gateway, GatewayHandle), Error> {
        let (client, eventloop) = mqtt::connect(&config.mqtt)?;
        let (connected, connected_rx) = watch::channel(false);
        let handle = GatewayHandle {
            client: client.clone(),
            root: config.topic_root.clone(),
            connected: connected_rx,
            metrics: metrics.clone(),
        };
        let gateway = Gateway {
            client,
            eventloop,
            config,
            metrics,
            connected,
        };
        Ok((gateway, handle))
    }

    /// Runs until `shutdown`: then finishes the batch in hand (commit,
    /// replies, acknowledgements), disconnects, and returns.
    pub async fn run<S: Sink>(self, sink: S, shutdown: CancellationToken) {
        // Unbounded for QoS 1: the broker's in-flight window bounds it (see
        // `mqtt`).
        let (tx, rx) = mpsc::unbounded_channel();
        let poll = mqtt::PollLoop {
            client: self.client.clone(),
            eventloop: self.eventloop,
            root: self.config.topic_root.clone(),
            tx,
            connected: self.connected,
            metrics: self.metrics.clone(),
            clock: self.config.clock,
        };
        let mut poll = tokio::spawn(poll.run());
        let batcher = batch::Batcher {
            rx,
            client: self.client,
            sink: std::sync::Arc::new(sink),
            root: self.config.topic_root,
            limits: self.config.limits,
            config: self.config.batch,
            metrics: self.metrics,
            clock: self.config.clock,
            throttle: throttle::Throttle::new(self.config.rate),
            pending: Default::default(),
        };
        batcher.run(shutdown).await;
        // The poll loop flushes the last acknowledgements and our DISCONNECT;
        // if the broker is unreachable that never completes, so bound it.
        if tokio::time::timeout(Duration::from_secs(5), &mut poll)
            .await
            .is_err()
        {
            warn!("the MQTT connection did not close in time; dropping it");
            poll.abort();
        }
    }
}
