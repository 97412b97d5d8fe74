//! The alerts a nurse sees must agree with the stored data at the moment
//! they are read (issue 14): this checks every active alert against the
//! store and says what disagrees. It runs after the end-to-end tests, on
//! the demo in CI, and as `vaka check` for an operator.
//!
//! What is checked, for every active alert:
//! - every reading it names (a measurement, an event, a status report) is
//!   stored, from that device at that time;
//! - `missing_measurement`: no reading of its measurement is stored from a
//!   later local day than the last reading the alert names;
//! - `device_offline`: nothing is stored from the device after the time the
//!   alert stands on.

use std::fmt;

use vaka_gateway::model::{EventKind, Metric, StatusField};

use crate::alerts::Alert;
use crate::engine::patient::local_day;
use crate::engine::rules::RuleId;
use crate::store::{AlertQuery, Result, Store};

/// An active alert that the stored data contradicts.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub alert_id: Option<i64>,
    pub rule: RuleId,
    pub patient_id: Option<String>,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alert {} ({}, patient {}): {}",
            self.alert_id.map_or("?".into(), |id| id.to_string()),
            self.rule,
            self.patient_id.as_deref().unwrap_or("-"),
            self.what
        )
    }
}

/// Whether a reading an alert names is one the store keeps as such (CTG
/// figures such as a baseline are computed, not stored).
fn stored_kind(name: &str) -> bool {
    match Metric::parse(name) {
        Some(m) => !matches!(m, Metric::Fhr | Metric::Toco | Metric::Sigq),
        None => EventKind::parse(name).is_some() || StatusField::parse(name).is_some(),
    }
}

/// Every active alert the stored data contradicts.
pub async fn check(store: &Store) -> Result<Vec<Violation>> {
    let alerts = store
        .alerts(&AlertQuery {
            active_only: true,
            patient_id: None,
            limit: i64::MAX,
        })
        .await?;
    let mut out = Vec::new();
    for a in &alerts {
        check_alert(store, a, &mut out).await?;
    }
    Ok(out)
}

async fn check_alert(store: &Store, a: &Alert, out: &mut Vec<Violation>) -> Result<()> {
    let mut say = |what: String| {
        out.push(Violation {
            alert_id: a.alert_id,
            rule: a.rule,
            patient_id: a.patient_id.clone(),
            what,
        })
    };
    for e in &a.readings {
        if e.device_id.is_empty() || !stored_kind(&e.name) {
            continue;
        }
        if !store.reading_stored(&e.device_id, &e.name, e.time).await? {
            say(format!(
                "names {} from {} at {}, which is not stored",
                e.name,
                e.device_id,
                crate::alerts::rfc3339(e.time)
            ));
        }
    }
    match (a.rule, a.patient_id.as_deref()) {
        (RuleId::MissingMeasurement, Some(patient)) => {
            let Some(metric) = a.measurement.as_deref() else {
                say("has no measurement".into());
                return Ok(());
            };
            let tz = match store.patient(patient).await? {
                Some(p) => p.timezone.parse().unwrap_or(chrono_tz::Europe::Stockholm),
                None => chrono_tz::Europe::Stockholm,
            };
            if let Some(latest) = store.latest_reading(patient, metric).await?
                && latest > a.last_reading_at
                && local_day(tz, latest) > local_day(tz, a.last_reading_at)
            {
                say(format!(
                    "says no {metric} since {}, but one from {} is stored",
                    crate::alerts::rfc3339(a.last_reading_at),
                    crate::alerts::rfc3339(latest)
                ));
            }
        }
        (RuleId::DeviceOffline, _) => {
            if let Some(device) = a.device_id.as_deref()
                && let Some(latest) = store.latest_from_device(device).await?
                && latest > a.last_reading_at
            {
                say(format!(
                    "says {device} is silent since {}, but a message from {} is stored",
                    crate::alerts::rfc3339(a.last_reading_at),
                    crate::alerts::rfc3339(latest)
                ));
            }
        }
        _ => {}
    }
    Ok(())
}
