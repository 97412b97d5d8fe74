//! What the gateway counts, for `/metrics`.
//!
//! The hub owns the registry; the gateway registers its own metrics into it
//! so one scrape shows the whole path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::RejectCode;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub received: Counter,
    pub stored: Counter,
    pub records_stored: Counter,
    pub duplicates: Counter,
    pub rejected: Family<CodeLabel, Counter>,
    pub quarantined: Counter,
    pub fhr_artefacts: Counter,
    pub replies_dropped: Counter,
    pub commit_failures: Counter,
    pub connected: Gauge,
    /// Received, not yet taken into a batch.
    pub intake_queue: Gauge,
    pub intake_dropped: Counter,
    /// Devices in an episode of breaking their rate or size limits.
    pub devices_over_limit: Gauge,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    /// Receive → committed, per message.
    pub ingest_lag_seconds: Histogram,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let rejected = Family::<CodeLabel, Counter>::default();
        // Every code shows in /metrics from the start, at 0.
        for code in RejectCode::ALL {
            drop(rejected.get_or_create(&CodeLabel {
                code: code.as_str(),
            }));
        }
        GatewayMetrics {
            received: Counter::default(),
            stored: Counter::default(),
            records_stored: Counter::default(),
            duplicates: Counter::default(),
            rejected,
            quarantined: Counter::default(),
            fhr_artefacts: Counter::default(),
            replies_dropped: Counter::default(),
            commit_failures: Counter::default(),
            connected: Gauge::default(),
            intake_queue: Gauge::default(),
            intake_dropped: Counter::default(),
            devices_over_limit: Gauge::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            commit_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            ingest_lag_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
        }
    }
}

impl GatewayMetrics {
    /// Registers every metric (names get the registry's prefix, e.g. `vaka_`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "mqtt_messages_received",
            "Messages received from devices",
            self.received.clone(),
        );
        r.register(
            "messages_stored",
            "Accepted messages whose records are committed",
            self.stored.clone(),
        );
        r.register(
            "records_stored",
            "Records (measurements, events, status) newly committed",
            self.records_stored.clone(),
        );
        r.register(
            "records_duplicate",
            "Records already stored (redeliveries), not stored again",
            self.duplicates.clone(),
        );
        r.register(
            "messages_rejected",
            "Messages rejected, by contract code (includes quarantined ones)",
            self.rejected.clone(),
        );
        r.register(
            "messages_quarantined",
            "Messages from unknown or unbound devices, kept in quarantine",
            self.quarantined.clone(),
        );
        r.register(
            "fhr_artefacts",
            "FHR samples outside 50-240 bpm dropped as signal loss",
            self.fhr_artefacts.clone(),
        );
        r.register(
            "error_replies_dropped",
            "Error replies that could not be queued to the broker",
            self.replies_dropped.clone(),
        );
        r.register(
            "store_commit_failures",
            "Failed commits (the batch is retried, not acknowledged)",
            self.commit_failures.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while the gateway is connected to the broker",
            self.connected.clone(),
        );
        r.register(
            "intake_queue_messages",
            "Messages received from the broker and waiting for a batch",
            self.intake_queue.clone(),
        );
        r.register(
            "intake_dropped",
            "QoS 0 messages dropped because the intake queue was full (QoS 1 messages are never dropped)",
            self.intake_dropped.clone(),
        );
        r.register(
            "devices_over_limit",
            "Devices currently over their message rate or size limits (their excess is refused)",
            self.devices_over_limit.clone(),
        );
        r.register(
            "ingest_batch_messages",
            "Messages per group commit",
            self.batch_size.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Duration of one group commit",
            self.commit_seconds.clone(),
        );
        r.register(
            "ingest_lag_seconds",
            "Time from receiving a message to its commit",
            self.ingest_lag_seconds.clone(),
        );
    }

    pub fn reject(&self, code: RejectCode) {
        self.rejected
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }
}
