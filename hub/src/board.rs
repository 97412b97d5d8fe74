//! The triage board: one row per patient, worst first.
//!
//! Pure: the HTTP layer gathers each patient's active alerts, plan and last
//! fortnight of readings, and this module turns them into a row and sorts
//! the rows. The order (ARCHITECTURE §6, the nurse's "who do I call
//! first"):
//!
//! 1. open high alerts, 2. medium, 3. missing data, 4. stable;
//!
//! and within a level, the patient whose oldest unacknowledged alert has
//! waited longest comes first; patients whose alerts are all acknowledged
//! follow those with unacknowledged ones.

use std::collections::BTreeMap;

use serde::Serialize;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{EventKind, Metric};

use crate::alerts::{Alert, AlertState};
use crate::engine::patient::{local_day, local_time};
use crate::engine::rules::{Category, RuleId, Severity};
use crate::news2::{self, News2};
use crate::plans::{Plan, parse_hhmm};
use crate::store::{DbTime, Patient, PatientEvent, PatientObservation};

/// How far back a row looks: sparklines and adherence.
pub const DAYS: i32 = 14;

/// Without any reading for this long, a patient with scheduled
/// measurements counts as missing data even before a rule says so.
const SILENT_MS: i64 = 48 * 3_600_000;

/// The metrics a row shows, in this order.
const SHOWN: [Metric; 5] = [
    Metric::Weight,
    Metric::Sys,
    Metric::Dia,
    Metric::Hr,
    Metric::Spo2,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    High,
    Medium,
    Missing,
    Stable,
}

#[derive(Debug, Clone, Serialize)]
pub struct PatientSummary {
    pub id: String,
    pub name: String,
    pub program: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    pub value: f64,
    pub unit: &'static str,
    pub at: DbTime,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub taken: u32,
    pub expected: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Adherence {
    pub measurements: Count,
    pub doses: Count,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub patient: PatientSummary,
    pub level: Level,
    /// Active alerts, worst first.
    pub alerts: Vec<Alert>,
    pub latest: BTreeMap<&'static str, Latest>,
    /// Per metric, the last reading of each local day: `[time_ms, value]`.
    pub sparklines: BTreeMap<&'static str, Vec<(i64, f64)>>,
    pub adherence: Adherence,
    pub last_reading_at: Option<DbTime>,
    /// NEWS2 from the vital signs of the last day (partial: see `news2`).
    pub news2: Option<News2>,
    /// Since when the longest-waiting unacknowledged alert waits.
    #[serde(skip)]
    waiting_since: Option<UnixMillis>,
}

/// What a row is made of.
pub struct RowInput<'a> {
    pub patient: &'a Patient,
    pub plan: Option<&'a Plan>,
    /// The active alerts the caller may see.
    pub alerts: Vec<Alert>,
    /// Readings of the last [`DAYS`] days, oldest first.
    pub observations: &'a [PatientObservation],
    pub dose_events: &'a [PatientEvent],
}

pub fn row(input: RowInput<'_>, now: UnixMillis) -> Row {
    let tz: chrono_tz::Tz = input
        .patient
        .timezone
        .parse()
        .unwrap_or(chrono_tz::Europe::Stockholm);
    let mut alerts = input.alerts;
    alerts.sort_by_key(|a| (a.severity, a.attention_since));
    let last_reading_at = input.observations.iter().map(|o| o.time).max();
    let waiting_since = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| a.attention_since)
        .min();
    let scheduled = input.plan.is_some_and(|p| !p.schedule.is_empty());
    let level = level(&alerts, scheduled, last_reading_at, now);

    let mut latest = BTreeMap::new();
    let mut sparklines = BTreeMap::new();
    for metric in SHOWN {
        let mut daily: BTreeMap<i32, (i64, f64)> = BTreeMap::new();
        for o in input.observations.iter().filter(|o| o.metric == metric) {
            daily.insert(local_day(tz, o.time), (o.time.0, o.value));
            latest.insert(
                metric.as_str(),
                Latest {
                    value: o.value,
                    unit: metric.unit(),
                    at: DbTime(o.time),
                },
            );
        }
        if !daily.is_empty() {
            sparklines.insert(metric.as_str(), daily.into_values().collect());
        }
    }

    Row {
        patient: PatientSummary {
            id: input.patient.patient_id.clone(),
            name: input.patient.display_name.clone(),
            program: input.patient.program.clone(),
        },
        level,
        alerts,
        latest,
        sparklines,
        adherence: input.plan.map_or_else(Adherence::default, |plan| {
            adherence(
                plan,
                tz,
                input.patient.created_at.0,
                input.observations,
                input.dose_events,
                now,
            )
        }),
        last_reading_at: last_reading_at.map(DbTime),
        news2: news2::score(input.observations, news2::scale_of_plan(input.plan), now),
        waiting_since,
    }
}

fn level(
    alerts: &[Alert],
    scheduled: bool,
    last_reading: Option<UnixMillis>,
    now: UnixMillis,
) -> Level {
    // A snoozed alert waits for its time; an acknowledged one still needs
    // doing and keeps its level.
    let live = || alerts.iter().filter(|a| a.state != AlertState::Snoozed);
    let missing_data =
        |a: &&Alert| a.category == Category::MissingData || a.rule == RuleId::DeviceOffline;
    if live().any(|a| a.severity == Severity::High) {
        Level::High
    } else if live().any(|a| a.severity == Severity::Medium && !missing_data(&a)) {
        Level::Medium
    } else if live().any(|a| missing_data(&a))
        || (scheduled && last_reading.is_none_or(|t| now.0 - t.0 > SILENT_MS))
    {
        Level::Missing
    } else {
        Level::Stable
    }
}

/// Over the last [`DAYS`] local days (not before the patient was created):
/// scheduled measurements whose deadline has passed, and how many of them
/// came that day; scheduled doses whose time has passed, and how many of
/// them were reported taken.
fn adherence(
    plan: &Plan,
    tz: chrono_tz::Tz,
    since: UnixMillis,
    observations: &[PatientObservation],
    dose_events: &[PatientEvent],
    now: UnixMillis,
) -> Adherence {
    let today = local_day(tz, now);
    let first = (today - DAYS + 1).max(local_day(tz, since));
    let mut out = Adherence::default();
    for day in first..=today {
        for s in &plan.schedule {
            let Some((h, m)) = parse_hhmm(&s.by) else {
                continue;
            };
            if local_time(tz, day, h * 60 + m) > now {
                continue;
            }
            out.measurements.expected += 1;
            let came = observations
                .iter()
                .any(|o| o.metric.as_str() == s.metric && local_day(tz, o.time) == day);
            out.measurements.taken += u32::from(came);
        }
        for d in &plan.doses {
            let Some((h, m)) = parse_hhmm(&d.at) else {
                continue;
            };
            if local_time(tz, day, h * 60 + m) <= now {
                out.doses.expected += 1;
            }
        }
    }
    let window_start = local_time(tz, first, 0);
    let taken = dose_events
        .iter()
        .filter(|e| e.kind == EventKind::DoseTaken && e.time >= window_start)
        .count() as u32;
    out.doses.taken = taken.min(out.doses.expected);
    out
}

/// Worst first; ties by name, so the order is stable from refresh to refresh.
pub fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        (a.level, a.waiting_since.is_none(), a.waiting_since)
            .cmp(&(b.level, b.waiting_since.is_none(), b.waiting_since))
            .then_with(|| a.patient.name.cmp(&b.patient.name))
            .then_with(|| a.patient.id.cmp(&b.patient.id))
    });
}

#[cfg(test)]
mod tests;
