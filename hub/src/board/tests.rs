//! Hand-computed boards: who comes first, and how adherence is counted.

use super::*;
use crate::alerts::AlertState;
use crate::plans::{DoseTime, ScheduledMeasurement};

/// 2026-11-20 12:00 in Stockholm (CET, UTC+1).
const NOW: UnixMillis = UnixMillis(1_795_172_400_000);
const HOUR: i64 = 3_600_000;

fn at(hours_before_now: f64) -> UnixMillis {
    UnixMillis(NOW.0 - (hours_before_now * HOUR as f64) as i64)
}

fn patient(id: &str, created: UnixMillis) -> Patient {
    Patient {
        patient_id: id.into(),
        display_name: format!("Patient {id}"),
        timezone: "Europe/Stockholm".into(),
        program: Some("heart_failure".into()),
        created_at: DbTime(created),
    }
}

fn alert(rule: RuleId, state: AlertState, waiting_since: UnixMillis) -> Alert {
    Alert {
        alert_id: Some(1),
        patient_id: Some("p".into()),
        device_id: None,
        measurement: None,
        rule,
        category: rule.category(),
        severity: rule.severity(),
        state,
        confirmed: None,
        plan_version: 1,
        explanation: "förklaring".into(),
        threshold: "gräns".into(),
        readings: vec![],
        count: 1,
        first_reading_at: waiting_since,
        last_reading_at: waiting_since,
        opened_at: waiting_since,
        updated_at: waiting_since,
        acknowledged_at: None,
        acknowledged_by: None,
        snoozed_until: None,
        resolved_at: None,
        resolved_by: None,
        outcome: None,
        note: None,
        escalation_level: 0,
        escalated_at: None,
        attention_since: waiting_since,
        snooze_reason: None,
        snooze_count: 0,
        version: 1,
    }
}

fn obs(metric: Metric, t: UnixMillis, value: f64) -> PatientObservation {
    PatientObservation {
        time: t,
        patient_id: "p".into(),
        device_id: "d".into(),
        metric,
        value,
    }
}

fn dose(t: UnixMillis) -> PatientEvent {
    PatientEvent {
        time: t,
        patient_id: "p".into(),
        device_id: "disp".into(),
        kind: EventKind::DoseTaken,
        text: None,
    }
}

/// A patient with a fresh weight (so never "missing") and these alerts.
fn row_with(id: &str, alerts: Vec<Alert>) -> Row {
    let p = patient(id, at(24.0 * 30.0));
    let readings = [obs(Metric::Weight, at(2.0), 80.0)];
    row(
        RowInput {
            patient: &p,
            plan: Some(&Plan::template(Some("heart_failure"))),
            alerts,
            observations: &readings,
            dose_events: &[],
        },
        NOW,
    )
}

#[test]
fn worst_first_then_longest_waiting() {
    use AlertState::*;
    let mut rows = vec![
        row_with("stable", vec![]),
        row_with("medium", vec![alert(RuleId::WeightGain3d, Open, at(4.0))]),
        row_with("high_recent", vec![alert(RuleId::Spo2, Open, at(1.0))]),
        row_with(
            "missing",
            vec![alert(RuleId::MissingMeasurement, Open, at(30.0))],
        ),
        row_with(
            "high_acked",
            vec![alert(RuleId::BpCrisis, Acknowledged, at(5.0))],
        ),
        row_with("high_old", vec![alert(RuleId::Fall, Open, at(3.0))]),
        row_with("low_only", vec![alert(RuleId::LowBattery, Open, at(9.0))]),
    ];
    sort(&mut rows);
    let order: Vec<&str> = rows.iter().map(|r| r.patient.id.as_str()).collect();
    assert_eq!(
        order,
        [
            "high_old",    // high, unacknowledged for 3 h
            "high_recent", // high, unacknowledged for 1 h
            "high_acked",  // high, but someone is on it
            "medium",
            "missing",
            "low_only", // stable level, but an alert waits
            "stable",
        ]
    );
    assert_eq!(rows[0].level, Level::High);
    assert_eq!(rows[4].level, Level::Missing);
    assert_eq!(rows[5].level, Level::Stable);
}

#[test]
fn a_snoozed_alert_does_not_raise_the_level_but_stays_on_the_row() {
    let r = row_with(
        "p",
        vec![alert(RuleId::WeightGain1d, AlertState::Snoozed, at(1.0))],
    );
    assert_eq!(r.level, Level::Stable);
    assert_eq!(r.alerts.len(), 1);
}

#[test]
fn a_silent_patient_with_a_schedule_is_missing_data() {
    let p = patient("p", at(24.0 * 30.0));
    let plan = Plan::template(Some("heart_failure"));
    assert!(!plan.schedule.is_empty());
    let old = [obs(Metric::Weight, at(49.0), 80.0)];
    let input = |readings| RowInput {
        patient: &p,
        plan: Some(&plan),
        alerts: vec![],
        observations: readings,
        dose_events: &[],
    };
    assert_eq!(row(input(&old), NOW).level, Level::Missing);
    assert_eq!(row(input(&[]), NOW).level, Level::Missing);
    let recent = [obs(Metric::Weight, at(47.0), 80.0)];
    assert_eq!(row(input(&recent), NOW).level, Level::Stable);
}

#[test]
fn adherence_counts_due_measurements_and_doses_since_enrolment() {
    // Created at local midnight three days ago (2026-11-17 00:00 CET): the
    // days are the 17th, 18th, 19th and today, the 20th (now 12:00).
    let created = at(3.0 * 24.0 + 12.0);
    let p = patient("p", created);
    let plan = Plan {
        schedule: vec![
            ScheduledMeasurement {
                metric: "weight".into(),
                by: "10:00".into(),
            },
            ScheduledMeasurement {
                metric: "sys".into(),
                by: "10:00".into(),
            },
        ],
        doses: vec![
            DoseTime {
                name: "morgon".into(),
                at: "08:00".into(),
            },
            DoseTime {
                name: "kväll".into(),
                at: "20:00".into(),
            },
        ],
        ..Plan::template(None)
    };
    let day = |d: f64, hour: f64| at((3.0 - d) * 24.0 + 12.0 - hour);
    let readings = [
        // Weights on the 17th, 18th and today; none on the 19th.
        obs(Metric::Weight, day(0.0, 7.5), 81.0),
        obs(Metric::Weight, day(1.0, 7.5), 81.4),
        obs(Metric::Weight, day(3.0, 7.0), 82.0),
        // Blood pressure on the 18th and 19th.
        obs(Metric::Sys, day(1.0, 8.0), 128.0),
        obs(Metric::Sys, day(2.0, 8.0), 131.0),
    ];
    // Six doses taken: every one but the evening of the 19th.
    let doses = [
        dose(day(0.0, 8.0)),
        dose(day(0.0, 20.0)),
        dose(day(1.0, 8.0)),
        dose(day(1.0, 20.0)),
        dose(day(2.0, 8.0)),
        dose(day(3.0, 8.0)),
    ];
    let r = row(
        RowInput {
            patient: &p,
            plan: Some(&plan),
            alerts: vec![],
            observations: &readings,
            dose_events: &doses,
        },
        NOW,
    );
    // Measurements: 2 a day × 4 days, all due by 10:00 (today too) = 8;
    // taken: 3 weights + 2 pressures = 5.
    assert_eq!(
        r.adherence.measurements,
        Count {
            taken: 5,
            expected: 8
        }
    );
    // Doses: 2 a day × 4 days, minus tonight's (20:00 is still to come) = 7.
    assert_eq!(
        r.adherence.doses,
        Count {
            taken: 6,
            expected: 7
        }
    );
}

#[test]
fn sparklines_keep_each_days_last_reading_and_latest_the_newest() {
    let p = patient("p", at(24.0 * 30.0));
    let readings = [
        obs(Metric::Weight, at(26.0), 80.0),
        obs(Metric::Weight, at(25.0), 80.4), // same day (the 19th), later
        obs(Metric::Weight, at(2.0), 81.0),
        obs(Metric::Spo2, at(3.0), 95.0),
    ];
    let r = row(
        RowInput {
            patient: &p,
            plan: None,
            alerts: vec![],
            observations: &readings,
            dose_events: &[],
        },
        NOW,
    );
    assert_eq!(
        r.sparklines["weight"],
        vec![(at(25.0).0, 80.4), (at(2.0).0, 81.0)]
    );
    assert_eq!(r.latest["weight"].value, 81.0);
    assert_eq!(r.latest["spo2"].unit, "%");
    assert_eq!(r.last_reading_at, Some(DbTime(at(2.0))));
    assert!(!r.latest.contains_key("sys"));
    // No plan: nothing is expected.
    assert_eq!(r.adherence, Adherence::default());
}
