//! The hub's metrics registry: the gateway's counters plus the engine's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use vaka_gateway::GatewayMetrics;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: &'static str,
}

#[derive(Debug, Clone, Default)]
pub struct EngineMetrics {
    pub alerts_opened: Family<RuleLabel, Counter>,
    pub alert_changes: Counter,
    pub commands_sent: Counter,
    pub patients: Gauge,
    /// TimescaleDB jobs whose last run failed (-1: no TimescaleDB).
    pub timescale_failed_jobs: Gauge,
    pub alert_store_failures: Counter,
}

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub gateway: GatewayMetrics,
    pub engine: EngineMetrics,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("vaka");
        self.gateway.register(&mut r);
        let e = &self.engine;
        r.register(
            "alerts_opened",
            "Alerts opened, by rule",
            e.alerts_opened.clone(),
        );
        r.register(
            "alert_changes",
            "Alert changes stored (opened, updated, acknowledged, resolved, withdrawn)",
            e.alert_changes.clone(),
        );
        r.register(
            "device_commands",
            "Commands sent to devices (e.g. remeasure)",
            e.commands_sent.clone(),
        );
        r.register(
            "monitored_patients",
            "Patients in the engine",
            e.patients.clone(),
        );
        r.register(
            "timescale_failed_jobs",
            "TimescaleDB background jobs whose last run failed (-1 without TimescaleDB)",
            e.timescale_failed_jobs.clone(),
        );
        r.register(
            "alert_store_failures",
            "Failed attempts to store an alert change (retried)",
            e.alert_store_failures.clone(),
        );
        r
    }

    pub fn opened(&self, rule: &'static str) {
        self.engine
            .alerts_opened
            .get_or_create(&RuleLabel { rule })
            .inc();
    }
}
