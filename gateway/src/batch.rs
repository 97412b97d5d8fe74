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
//! **Pipelining.** A commit spends most of its time waiting: for the
//! database's round trips and for its write-ahead log to reach the disk. So
//! up to [`BatchConfig::pipeline`] batches commit at once, each in a task of
//! its own, while the next batch is collected. Their results are taken in
//! the order the batches were collected: [`Sink::deliver`] (the hub hands
//! the new records to its rules engine) and the acknowledgements happen
//! strictly in arrival order, whichever commit finished first.
//!
//! Before validation each message passes its device's token bucket
//! ([`crate::throttle`]): a flooding device's excess is refused without
//! validation (only its first record is read, for the reply's `ref`), so it
//! cannot crowd out the other devices' messages.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::AsyncClient;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Publish;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::error::{RejectCode, Rejection};
use crate::metrics::GatewayMetrics;
use crate::model::{Content, UnixMillis};
use crate::mqtt::Received;
use crate::throttle::{Admit, LimitReport, Throttle};
use crate::topics::{Channel, DeviceId, ParsedTopic, TopicRoot};
use crate::turn::{Stage, State, Turn, TurnError};
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

/// What a successful commit returns: one disposition per message, in order,
/// and whatever the sink wants handed back to it in [`Sink::deliver`].
#[derive(Debug)]
pub struct Committed<R> {
    pub dispositions: Vec<Disposition>,
    pub receipt: R,
}

/// Durable storage for accepted messages.
///
/// Several batches may be in [`Sink::commit`] at once (see the module's
/// pipelining), so a commit must be safe beside another one, and must not
/// pass on what it stored: that is [`Sink::deliver`]'s, which is called
/// once per committed batch, in the order the batches were received.
pub trait Sink: Send + Sync + 'static {
    /// What a commit hands on to [`Sink::deliver`].
    type Receipt: Send + 'static;

    /// Commits all `messages` in one go, taking its [`Turn`]: no write
    /// before [`Turn::may_write`], [`Turn::written`] after the last
    /// statement, no commit before [`Turn::may_commit`] (roll back when
    /// either says no). When this returns `Ok`, everything is durable.
    fn commit(
        &self,
        messages: &[Message],
        turn: &mut Turn,
    ) -> impl Future<Output = Result<Committed<Self::Receipt>, SinkError>> + Send;

    /// Passes on what a commit stored; called in batch order, before the
    /// batch's acknowledgements. Waiting here is back-pressure.
    fn deliver(&self, receipt: Self::Receipt) -> impl Future<Output = ()> + Send;

    /// Devices that began or ended an episode of breaking their limits
    /// (too fast, too large): the hub raises or clears a technical alert.
    /// Called after the batch's acknowledgements; it cannot fail the batch.
    fn report_limits(&self, reports: Vec<LimitReport>) -> impl Future<Output = ()> + Send {
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
    /// Batches committing at once (1: one after the other). Worth more than
    /// one where commits can overlap (PostgreSQL); SQLite has one writer.
    pub pipeline: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_messages: 1_000,
            max_wait: Duration::from_millis(5),
            max_idle: Duration::from_millis(1),
            pipeline: 4,
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

/// A batch collected, classified and handed to a commit task, waiting for
/// its turn to be delivered and acknowledged.
pub(crate) struct Pending<R> {
    received: Vec<Received>,
    items: Vec<Item>,
    messages: Arc<[Message]>,
    reports: Vec<LimitReport>,
    /// Its stage in the pipeline; the next batch's [`Turn`] watches it.
    state: Arc<watch::Sender<State>>,
    /// `None` when nothing in the batch needs storing.
    commit: Option<JoinHandle<Option<Committed<R>>>>,
}

pub(crate) struct Batcher<S: Sink> {
    pub rx: mpsc::UnboundedReceiver<Received>,
    pub client: AsyncClient,
    pub sink: Arc<S>,
    pub root: TopicRoot,
    pub limits: Limits,
    pub config: BatchConfig,
    pub metrics: GatewayMetrics,
    pub clock: fn() -> UnixMillis,
    pub throttle: Throttle,
    /// Oldest first.
    pub pending: VecDeque<Pending<S::Receipt>>,
}

impl<S: Sink> Batcher<S> {
    pub async fn run(mut self, shutdown: CancellationToken) {
        // How often idle devices' episodes are looked at (to end them).
        let every = (self.throttle.limit().calm_after / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut sweep = tokio::time::interval(every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let pipeline = self.config.pipeline.max(1);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // The oldest batch's commit, when it is done.
                done = oldest_commit(&mut self.pending), if !self.pending.is_empty() => {
                    if !self.finish(done, &shutdown).await {
                        break;
                    }
                }
                _ = sweep.tick() => {
                    let mut reports = Vec::new();
                    self.throttle.sweep(Instant::now(), &mut reports);
                    self.report(reports).await;
                }
                first = self.rx.recv(), if self.pending.len() < pipeline => match first {
                    Some(r) => {
                        let received = self.collect_more(r).await;
                        self.start(received, &shutdown);
                    }
                    None => break,
                },
            }
        }
        // Batches already committing finish and are acknowledged, in order;
        // from the first that did not commit on, nothing is acknowledged.
        while !self.pending.is_empty() {
            let done = oldest_commit(&mut self.pending).await;
            if !self.finish(done, &shutdown).await {
                break;
            }
        }
        info!("intake stopped; unacknowledged messages stay with the broker");
        if let Err(e) = self.client.disconnect().await {
            debug!(error = %e, "disconnect request not queued");
        }
    }

    /// Adds to `first` what arrives within `max_wait` of it.
    ///
    /// It also stops when nothing has come for `max_idle`: the broker sends
    /// no more than its in-flight window before it sees acknowledgements, so
    /// once the window has arrived, waiting longer only delays them.
    async fn collect_more(&mut self, first: Received) -> Vec<Received> {
        let mut received = Vec::with_capacity(self.config.max_messages.min(1024));
        received.push(first);
        let deadline = tokio::time::Instant::now() + self.config.max_wait;
        while received.len() < self.config.max_messages {
            match self.rx.try_recv() {
                Ok(r) => {
                    received.push(r);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Some(r) => received.push(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + self.config.max_idle)) => break,
            }
        }
        self.metrics.intake_queue.dec_by(received.len() as i64);
        received
    }

    /// Classifies one batch and starts its commit in a task of its own.
    fn start(&mut self, received: Vec<Received>, shutdown: &CancellationToken) {
        let now = (self.clock)();
        let mut items = Vec::with_capacity(received.len());
        let mut messages = Vec::with_capacity(received.len());
        let mut reports = Vec::new();
        for r in &received {
            items.push(self.classify(r, now, &mut messages, &mut reports));
        }
        let messages: Arc<[Message]> = messages.into();
        let first = if messages.is_empty() {
            State::NOTHING
        } else {
            State::START
        };
        let state = Arc::new(watch::channel(first).0);
        // The turn is taken after the last batch that stores something (one
        // with nothing to store is "committed" from the start, and must not
        // let this one past a batch before it).
        let previous = self
            .pending
            .iter()
            .rev()
            .find(|p| p.commit.is_some())
            .map(|p| p.state.subscribe());
        let commit = (!messages.is_empty()).then(|| {
            tokio::spawn(commit_with_retry(
                self.sink.clone(),
                messages.clone(),
                Turn::new(previous, state.clone()),
                self.metrics.clone(),
                shutdown.clone(),
            ))
        });
        self.pending.push_back(Pending {
            received,
            items,
            messages,
            reports,
            state,
            commit,
        });
    }

    /// Delivers, replies to and acknowledges the oldest batch, whose commit
    /// ended with `done`. Returns false when it did not commit (shutdown
    /// interrupted its retries): then nothing of it is acknowledged.
    async fn finish(&mut self, done: CommitEnd<S::Receipt>, shutdown: &CancellationToken) -> bool {
        let committed = match done {
            CommitEnd::Done(c) => c,
            CommitEnd::Interrupted => return false,
            CommitEnd::Panicked(e) => {
                // A bug in the sink. Nothing of the batch is acknowledged;
                // commit it again rather than lose it or the order.
                error!(error = %e, "BUG: a commit task failed; committing the batch again");
                let p = self
                    .pending
                    .front_mut()
                    .expect("BUG: finish without a batch");
                // The oldest batch has nobody before it; the ones after it
                // see the failure and start over after it.
                let turn = Turn::new(None, p.state.clone());
                turn.retry();
                p.commit = Some(tokio::spawn(commit_with_retry(
                    self.sink.clone(),
                    p.messages.clone(),
                    turn,
                    self.metrics.clone(),
                    shutdown.clone(),
                )));
                return true;
            }
        };
        let Pending {
            received,
            items,
            messages,
            reports,
            ..
        } = self
            .pending
            .pop_front()
            .expect("BUG: finish without a batch");
        let (dispositions, receipt) = match committed {
            Some(c) => (c.dispositions, Some(c.receipt)),
            None => (Vec::new(), None),
        };
        if let Some(receipt) = receipt {
            self.sink.deliver(receipt).await;
        }
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
                    reference: validate::reference_unparsed(&r.publish.payload, now),
                    quiet: false,
                };
            }
            ParsedTopic::Other => {
                debug!(topic = %topic_of(&r.publish), "ignoring a message outside the protocol");
                return Item::Foreign;
            }
        };
        // The bucket first: of a flooding device's excess only the first
        // record is read, for the reference.
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
                // Hashed and read only for a reply: the rest of a flood
                // costs no more than the bucket's look-up.
                reference: if reply {
                    validate::reference_unparsed(&r.publish.payload, now)
                } else {
                    String::new()
                },
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

/// How the oldest pending batch's commit ended.
enum CommitEnd<R> {
    /// Stored (`None`: nothing in the batch needed storing).
    Done(Option<Committed<R>>),
    /// Shutdown interrupted its retries: nothing of it is stored.
    Interrupted,
    /// The commit task panicked (a bug).
    Panicked(JoinError),
}

/// Waits for the oldest pending batch's commit. Cancel-safe: dropping this
/// leaves the commit task running and its handle in place.
async fn oldest_commit<R>(pending: &mut VecDeque<Pending<R>>) -> CommitEnd<R> {
    let Some(handle) = pending.front_mut().and_then(|p| p.commit.as_mut()) else {
        return CommitEnd::Done(None);
    };
    match handle.await {
        Ok(Some(c)) => CommitEnd::Done(Some(c)),
        Ok(None) => CommitEnd::Interrupted,
        Err(e) => CommitEnd::Panicked(e),
    }
}

/// Commits one batch, retrying with back-off until it is stored; `None`
/// when shutdown came first. A failed commit acknowledges nothing: the
/// broker keeps the messages meanwhile.
async fn commit_with_retry<S: Sink>(
    sink: Arc<S>,
    messages: Arc<[Message]>,
    mut turn: Turn,
    metrics: GatewayMetrics,
    shutdown: CancellationToken,
) -> Option<Committed<S::Receipt>> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let started = Instant::now();
        let e = match sink.commit(&messages, &mut turn).await {
            Ok(committed) => {
                turn.set(Stage::Committed);
                metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                return Some(committed);
            }
            Err(e) => e,
        };
        match turn.take_refusal() {
            Some(TurnError::Abandoned) => {
                turn.set(Stage::Abandoned);
                return None;
            }
            // The batch before failed: start over after its retry.
            Some(TurnError::PreviousFailed) => {
                turn.retry();
                continue;
            }
            None => {}
        }
        // The batches after this one start over too.
        turn.retry();
        metrics.commit_failures.inc();
        warn!(
            error = %e,
            messages = messages.len(),
            retry_in_ms = backoff.as_millis() as u64,
            "commit failed; holding the batch unacknowledged"
        );
        tokio::select! {
            _ = shutdown.cancelled() => {
                turn.set(Stage::Abandoned);
                return None;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline's order, without a broker or a database: a sink whose
    //! commits take random times records when each batch writes, commits
    //! and is delivered. Whatever the timing, batches must commit and be
    //! delivered in the order they arrived (what is durable is a prefix of
    //! what arrived), also around batches with nothing to store.

    use std::sync::Mutex;

    use rand::{RngExt, SeedableRng};
    use rumqttc::v5::MqttOptions;

    use super::*;
    use crate::senml::PackBuilder;

    #[derive(Default)]
    struct Recording {
        events: Mutex<Vec<(&'static str, usize)>>,
        rng: Mutex<Option<rand::rngs::StdRng>>,
    }

    impl Recording {
        fn note(&self, what: &'static str, batch: usize) {
            self.events
                .lock()
                .expect("not poisoned")
                .push((what, batch));
        }

        fn order(&self, what: &str) -> Vec<usize> {
            let events = self.events.lock().expect("not poisoned");
            events
                .iter()
                .filter(|(w, _)| *w == what)
                .map(|(_, b)| *b)
                .collect()
        }
    }

    /// The batch's number: the sequence number in its first message's value.
    fn batch_of(messages: &[Message]) -> usize {
        match &messages[0].content {
            Content::Observations(obs) => obs[0].value as usize,
            other => panic!("unexpected {other:?}"),
        }
    }

    impl Sink for Arc<Recording> {
        type Receipt = usize;

        async fn commit(
            &self,
            messages: &[Message],
            turn: &mut Turn,
        ) -> Result<Committed<usize>, SinkError> {
            let batch = batch_of(messages);
            let (work, flush) = {
                let mut rng = self.rng.lock().expect("not poisoned");
                let rng = rng.get_or_insert_with(|| rand::rngs::StdRng::seed_from_u64(7));
                (rng.random_range(0..3u64), rng.random_range(0..4u64))
            };
            turn.may_write().await?;
            self.note("write", batch);
            tokio::time::sleep(Duration::from_millis(work)).await;
            turn.written();
            tokio::time::sleep(Duration::from_millis(flush)).await;
            turn.may_commit().await?;
            self.note("commit", batch);
            Ok(Committed {
                dispositions: messages
                    .iter()
                    .map(|m| Disposition::Stored {
                        new: m.content.len(),
                        duplicates: 0,
                    })
                    .collect(),
                receipt: batch,
            })
        }

        async fn deliver(&self, batch: usize) {
            self.note("deliver", batch);
        }
    }

    /// Refusals that come before validation (a malformed device id in the
    /// topic, a device over its rate) answer with the first record's time
    /// in `ref` when it can be read, like every other refusal.
    #[tokio::test]
    async fn refusals_before_validation_name_the_first_record_time() {
        let (client, _eventloop) =
            AsyncClient::new(MqttOptions::new("ref-test", "127.0.0.1", 1), 10);
        let (_tx, rx) = mpsc::unbounded_channel();
        let mut batcher = Batcher {
            rx,
            client,
            sink: Arc::new(Arc::new(Recording::default())),
            root: TopicRoot::new("vaka/v1").expect("root"),
            limits: Limits::default(),
            config: BatchConfig::default(),
            metrics: GatewayMetrics::default(),
            clock: UnixMillis::now,
            // One message, then nothing for a long while.
            throttle: Throttle::new(crate::throttle::RateLimit {
                rate: 0.001,
                burst: 1.0,
                calm_after: Duration::from_secs(60),
            }),
            pending: VecDeque::new(),
        };
        let now = UnixMillis(1_764_590_400_000);
        let instant = Instant::now();
        let mut classify = |topic: &str, payload: &str| {
            let r = Received {
                publish: Publish::new(topic, QoS::AtLeastOnce, payload.to_owned(), None),
                at: now,
                instant,
            };
            let (mut messages, mut reports) = (Vec::new(), Vec::new());
            match batcher.classify(&r, now, &mut messages, &mut reports) {
                Item::Rejected {
                    rejection,
                    reference,
                    quiet,
                    ..
                } => Some((rejection.code, reference, quiet)),
                Item::Accepted { .. } => None,
                Item::Foreign => panic!("{topic} is ours"),
            }
        };
        let pack = |kg: f64| {
            PackBuilder::new("ox-1", 1_764_590_000.0)
                .value("weight", "kg", kg, 1_764_589_990.0)
                .to_json()
        };
        let hash = |p: &str| validate::reference(p.as_bytes(), None);

        let p = pack(80.0);
        assert_eq!(
            classify("vaka/v1/d/not a device!/obs", &p),
            Some((
                RejectCode::UnknownDevice,
                format!("1764589990{}", hash(&p)),
                false
            ))
        );
        assert_eq!(classify("vaka/v1/d/ox-1/obs", &p), None, "within the rate");
        let p = pack(80.1);
        assert_eq!(
            classify("vaka/v1/d/ox-1/obs", &p),
            Some((
                RejectCode::RateLimited,
                format!("1764589990{}", hash(&p)),
                false
            ))
        );
        // Within the second after a reply, no reply: nothing to name.
        assert_eq!(
            classify("vaka/v1/d/ox-1/obs", &pack(80.2)),
            Some((RejectCode::RateLimited, String::new(), true))
        );
        // Not a pack at all: the reference is the hash alone.
        assert_eq!(
            classify("vaka/v1/d/not a device!/obs", "{not json"),
            Some((RejectCode::UnknownDevice, hash("{not json"), false))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_commit_and_are_delivered_in_arrival_order() {
        let root = TopicRoot::new("vaka/v1").expect("root");
        let (client, _eventloop) =
            AsyncClient::new(MqttOptions::new("batch-test", "127.0.0.1", 1), 10_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let recording = Arc::new(Recording::default());
        let batcher = Batcher {
            rx,
            client,
            sink: Arc::new(recording.clone()),
            root: root.clone(),
            limits: Limits::default(),
            // One message a batch, so that there are many batches.
            config: BatchConfig {
                max_messages: 1,
                pipeline: 4,
                ..BatchConfig::default()
            },
            metrics: GatewayMetrics::default(),
            clock: UnixMillis::now,
            throttle: Throttle::new(Default::default()),
            pending: VecDeque::new(),
        };
        let now = UnixMillis::now().as_secs_f64();
        let n = 200;
        let mut stored = Vec::new();
        for k in 0..n {
            let device = format!("ox-{}", k % 10);
            let topic = format!("vaka/v1/d/{device}/obs");
            // Every seventh message is refused: a batch with nothing to store.
            let payload = if k % 7 == 3 {
                "not json".to_owned()
            } else {
                stored.push(k);
                PackBuilder::new(&device, now)
                    .value("hr", "beat/min", k as f64 + 20.0, now - k as f64)
                    .to_json()
            };
            tx.send(Received {
                publish: Publish::new(topic, QoS::AtMostOnce, payload, None),
                at: UnixMillis::now(),
                instant: Instant::now(),
            })
            .expect("batcher listening");
        }
        drop(tx);
        let shutdown = CancellationToken::new();
        tokio::time::timeout(Duration::from_secs(30), batcher.run(shutdown))
            .await
            .expect("the batcher ends when the intake closes");

        let expected: Vec<usize> = stored.iter().map(|k| k + 20).collect();
        assert_eq!(recording.order("commit"), expected, "commits in order");
        assert_eq!(recording.order("deliver"), expected, "deliveries in order");
        assert_eq!(recording.order("write"), expected, "writes in turn");
    }
}
