//! Group commit: many messages, one transaction, then the acknowledgements.
//!
//! One transaction per message would cap ingest near the database's commit
//! rate. Instead the batcher collects what arrives within a few milliseconds
//! (or up to a maximum count), validates each message, hands the accepted
//! ones to the [`Sink`] in one call, and only when that call has returned,
//! answers each rejection on `…/err` and acknowledges every message in the
//! order received (MQTT requires PUBACKs in order). If the sink fails, the
//! batch is retried with back-off and nothing is acknowledged: the broker
//! keeps the messages, and stops sending more once its in-flight window is
//! full. That is the back-pressure, and nothing is dropped.
//!
//! Before validation each message passes its device's token bucket
//! ([`crate::throttle`]): a flooding device's excess is refused unparsed,
//! so it cannot crowd out the other devices' messages.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::error::{RejectCode, Rejection};
use crate::metrics::GatewayMetrics;
use crate::model::{Content, UnixMillis};
use crate::mqtt::Received;
use crate::throttle::{Admit, LimitReport, Throttle};
use crate::topics::{Channel, DeviceId, ParsedTopic, TopicRoot};
use crate::validate::{self, Limits};

/// An accepted message, handed to the [`Sink`].
#[derive(Debug, Clone)]
pub struct Message {
    pub device: DeviceId,
    pub channel: Channel,
    pub received_at: UnixMillis,
    /// The contract's `ref` (first record time and payload hash).
    pub reference: String,
    pub content: Content,
    /// The raw payload, for quarantine.
    pub payload: Bytes,
}

/// What the sink did with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Committed; `new` records were stored, `duplicates` were already there.
    Stored { new: usize, duplicates: usize },
    /// Committed to quarantine (unknown or unbound device); the device is
    /// told why.
    Quarantined(Rejection),
}

/// A failed commit. The batch will be retried.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// Durable storage for accepted messages.
pub trait Sink: Send {
    /// Commits all `messages` in one go and returns one disposition per
    /// message, in order. When this returns `Ok`, everything is durable.
    fn commit(
        &mut self,
        messages: &[Message],
    ) -> impl Future<Output = Result<Vec<Disposition>, SinkError>> + Send;

    /// Devices that began or ended an episode of breaking their limits
    /// (too fast, too large): the hub raises or clears a technical alert.
    /// Called after the batch's acknowledgements; it cannot fail the batch.
    fn report_limits(&mut self, reports: Vec<LimitReport>) -> impl Future<Output = ()> + Send {
        let _ = reports;
        std::future::ready(())
    }
}

#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub max_messages: usize,
    /// How long to wait for more messages after the first (≤ 5 ms keeps
    /// alarm latency low).
    pub max_wait: Duration,
    /// Stop waiting when no message has come for this long.
    pub max_idle: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_messages: 1_000,
            max_wait: Duration::from_millis(5),
            max_idle: Duration::from_millis(1),
        }
    }
}

/// The JSON sent on `…/err`.
#[derive(Debug, Serialize)]
struct ErrorReply<'a> {
    code: &'static str,
    detail: &'a str,
    topic: &'a str,
    #[serde(rename = "ref")]
    reference: &'a str,
}

/// The topic of a publish (MQTT 5 carries it as bytes; not UTF-8 is not ours).
fn topic_of(p: &Publish) -> &str {
    std::str::from_utf8(&p.topic).unwrap_or("")
}

/// One received publish, in arrival order, and what became of it.
enum Item {
    /// Not a topic of ours: acknowledge and forget.
    Foreign,
    /// Refused before storage: answer on `err_topic` (unless `quiet`: a
    /// flooding device gets one reply per second, not one per message).
    Rejected {
        err_topic: String,
        rejection: Rejection,
        reference: String,
        quiet: bool,
    },
    /// Handed to the sink as `messages[index]`.
    Accepted { index: usize },
}

pub(crate) struct Batcher<S> {
    pub rx: mpsc::Receiver<Received>,
    pub client: AsyncClient,
    pub sink: S,
    pub root: TopicRoot,
    pub limits: Limits,
    pub config: BatchConfig,
    pub metrics: GatewayMetrics,
    pub clock: fn() -> UnixMillis,
    pub throttle: Throttle,
}

impl<S: Sink> Batcher<S> {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut received = Vec::with_capacity(self.config.max_messages);
        // How often idle devices' episodes are looked at (to end them).
        let every = (self.throttle.limit().calm_after / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut sweep = tokio::time::interval(every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            received.clear();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = sweep.tick() => {
                    let mut reports = Vec::new();
                    self.throttle.sweep(Instant::now(), &mut reports);
                    self.report(reports).await;
                    continue;
                }
                first = self.rx.recv() => match first {
                    Some(r) => received.push(r),
                    None => break,
                },
            }
            self.collect_more(&mut received).await;
            self.metrics.intake_queue.dec_by(received.len() as i64);
            if !self.process(&received, &shutdown).await {
                break;
            }
        }
        info!("intake stopped; unacknowledged messages stay with the broker");
        if let Err(e) = self.client.disconnect().await {
            debug!(error = %e, "disconnect request not queued");
        }
    }

    /// Adds what arrives within `max_wait` of the first message.
    ///
    /// It also stops when nothing has come for `max_idle`: the broker sends
    /// no more than its in-flight window before it sees acknowledgements, so
    /// once the window has arrived, waiting longer only delays them.
    async fn collect_more(&mut self, received: &mut Vec<Received>) {
        let deadline = tokio::time::Instant::now() + self.config.max_wait;
        while received.len() < self.config.max_messages {
            match self.rx.try_recv() {
                Ok(r) => {
                    received.push(r);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => received.push(r),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + self.config.max_idle)) => return,
            }
        }
    }

    /// Validates, commits, replies and acknowledges one batch. Returns false
    /// when shutdown interrupted it (nothing of it was acknowledged).
    async fn process(&mut self, received: &[Received], shutdown: &CancellationToken) -> bool {
        let now = (self.clock)();
        let mut items = Vec::with_capacity(received.len());
        let mut messages = Vec::with_capacity(received.len());
        let mut reports = Vec::new();
        for r in received {
            items.push(self.classify(r, now, &mut messages, &mut reports));
        }

        let dispositions = if messages.is_empty() {
            Vec::new()
        } else {
            match self.commit_with_retry(&messages, shutdown).await {
                Some(d) => d,
                None => return false,
            }
        };
        let committed = Instant::now();

        for (r, item) in received.iter().zip(&items) {
            match item {
                Item::Foreign => {}
                Item::Rejected {
                    err_topic,
                    rejection,
                    reference,
                    quiet,
                } => {
                    if *quiet {
                        self.metrics.reject(rejection.code);
                    } else {
                        self.reply(err_topic, topic_of(&r.publish), rejection, reference);
                    }
                }
                Item::Accepted { index } => {
                    let message = &messages[*index];
                    self.metrics
                        .ingest_lag_seconds
                        .observe(committed.duration_since(r.instant).as_secs_f64());
                    match dispositions.get(*index) {
                        Some(Disposition::Stored { new, duplicates }) => {
                            self.metrics.stored.inc();
                            self.metrics.records_stored.inc_by(*new as u64);
                            self.metrics.duplicates.inc_by(*duplicates as u64);
                        }
                        Some(Disposition::Quarantined(rejection)) => {
                            self.metrics.quarantined.inc();
                            let err_topic = self.root.topic(&message.device, Channel::Err);
                            self.reply(
                                &err_topic,
                                topic_of(&r.publish),
                                rejection,
                                &message.reference,
                            );
                        }
                        None => error!("BUG: the sink returned fewer dispositions than messages"),
                    }
                }
            }
            self.ack(&r.publish).await;
        }
        self.metrics.batch_size.observe(received.len() as f64);
        self.report(reports).await;
        true
    }

    async fn report(&mut self, reports: Vec<LimitReport>) {
        self.metrics
            .devices_over_limit
            .set(self.throttle.flooding() as i64);
        if reports.is_empty() {
            return;
        }
        for r in &reports {
            match r {
                LimitReport::Exceeded { device, code, .. } => {
                    warn!(%device, %code, "device over its limits; its excess is refused")
                }
                LimitReport::Calm { device, dropped } => {
                    info!(%device, dropped, "device back within its limits")
                }
            }
        }
        self.sink.report_limits(reports).await;
    }

    fn classify(
        &mut self,
        r: &Received,
        now: UnixMillis,
        messages: &mut Vec<Message>,
        reports: &mut Vec<LimitReport>,
    ) -> Item {
        let (device, channel) = match self.root.parse(topic_of(&r.publish)) {
            ParsedTopic::Device(device, channel) => (device, channel),
            ParsedTopic::BadDeviceId(raw, _) => {
                return Item::Rejected {
                    err_topic: format!("{}/d/{raw}/err", self.root.as_str()),
                    rejection: Rejection::new(
                        RejectCode::UnknownDevice,
                        format!(
                            "device id in the topic must match [A-Za-z0-9_-]{{1,{}}}",
                            DeviceId::MAX_LEN
                        ),
                    ),
                    reference: validate::reference(&r.publish.payload, None),
                    quiet: false,
                };
            }
            ParsedTopic::Other => {
                debug!(topic = %topic_of(&r.publish), "ignoring a message outside the protocol");
                return Item::Foreign;
            }
        };
        // The bucket first: a flooding device's excess is not even parsed.
        if let Admit::RateLimited { reply } = self.throttle.admit(&device, r.instant, reports) {
            return Item::Rejected {
                err_topic: self.root.topic(&device, Channel::Err),
                rejection: Rejection::new(
                    RejectCode::RateLimited,
                    format!(
                        "too many messages from this device; this one was not stored. \
                         Send at most {} per second (a backlog of up to {} at once), and send it again",
                        self.throttle.limit().rate,
                        self.throttle.limit().burst
                    ),
                ),
                reference: validate::reference(&r.publish.payload, None),
                quiet: !reply,
            };
        }
        let verdict = validate::validate(&device, channel, &r.publish.payload, now, &self.limits);
        match verdict.outcome {
            Ok(accepted) => {
                self.metrics
                    .fhr_artefacts
                    .inc_by(u64::from(accepted.fhr_artefacts));
                messages.push(Message {
                    device,
                    channel,
                    received_at: r.at,
                    reference: verdict.reference,
                    content: accepted.content,
                    payload: r.publish.payload.clone(),
                });
                Item::Accepted {
                    index: messages.len() - 1,
                }
            }
            Err(rejection) => {
                if rejection.code == RejectCode::TooLarge {
                    self.throttle
                        .too_large(&device, r.publish.payload.len(), r.instant, reports);
                }
                Item::Rejected {
                    err_topic: self.root.topic(&device, Channel::Err),
                    rejection,
                    reference: verdict.reference,
                    quiet: false,
                }
            }
        }
    }

    async fn commit_with_retry(
        &mut self,
        messages: &[Message],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Disposition>> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match self.sink.commit(messages).await {
                Ok(d) => {
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    return Some(d);
                }
                Err(e) => {
                    self.metrics.commit_failures.inc();
                    warn!(
                        error = %e,
                        messages = messages.len(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "commit failed; holding the batch unacknowledged"
                    );
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn reply(&self, err_topic: &str, topic: &str, rejection: &Rejection, reference: &str) {
        self.metrics.reject(rejection.code);
        // The detail may quote a reading, which is health data: only at
        // debug level. The code and reference say enough to find it.
        info!(%topic, code = %rejection.code, %reference, "message rejected");
        debug!(%topic, detail = %rejection.detail, "rejection detail");
        let reply = ErrorReply {
            code: rejection.code.as_str(),
            detail: &rejection.detail,
            topic,
            reference,
        };
        let json = serde_json::to_vec(&reply).expect("BUG: the error reply always serializes");
        if let Err(e) = self
            .client
            .try_publish(err_topic, QoS::AtLeastOnce, false, json)
        {
            self.metrics.replies_dropped.inc();
            warn!(error = %e, %err_topic, "could not queue the error reply");
        }
    }

    async fn ack(&self, publish: &Publish) {
        if let Err(e) = self.client.ack(publish).await {
            // Only when the event loop is gone; the broker redelivers.
            debug!(error = %e, "acknowledgement not queued");
        }
    }
}
