//! Hand-computed cases of `missing_measurement`, each at its edges: the
//! reminder and alert deadlines, one absence per measurement, late and
//! back-filled data, daytime reminders, plan changes and restarts.

use super::*;
use crate::alerts::AlertState;
use crate::engine::rules::testing::{Harness, PATIENT, at};

const H: i64 = UnixMillis::HOUR;
/// The default `late_data_settle_s`.
const BACKLOG_SETTLE_MS: i64 = 120_000;

fn harness(virtual_ward: bool) -> Harness {
    Harness::with_plan(json!({
        "rules": ["missing_measurement"],
        "schedule": [{"metric": "weight", "by": "10:00"}],
        "virtual_ward": virtual_ward,
    }))
}

/// Weight and blood pressure, both daily by 10:00.
fn weight_and_bp() -> Harness {
    Harness::with_plan(json!({
        "rules": ["missing_measurement"],
        "schedule": [{"metric": "weight", "by": "10:00"}, {"metric": "sys", "by": "10:00"}],
        "virtual_ward": false,
    }))
}

fn active_measurements(h: &Harness) -> Vec<String> {
    let mut m: Vec<String> = h
        .book
        .active()
        .filter(|a| a.rule == RuleId::MissingMeasurement)
        .filter_map(|a| a.measurement.clone())
        .collect();
    m.sort();
    m
}

fn reminders(h: &Harness) -> Vec<String> {
    h.decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Command { json, .. } if json.contains("remind") => Some(json.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn remind_at_two_hours_alert_at_24_or_48() {
    for (ward, alert_h) in [(true, 24), (false, 48)] {
        let mut h = harness(ward);
        h.weight(at(0, "07:30"), 80.0);
        // Due the next day at 10:00.
        let due = at(1, "10:00");
        h.tick(due.plus_millis(2 * H - 1));
        assert_eq!(h.commands(), 0);
        h.tick(due.plus_millis(2 * H));
        assert_eq!(h.commands(), 1, "a reminder at +2 h");
        h.tick(due.plus_millis(alert_h * H - 1));
        assert!(!h.active(RuleId::MissingMeasurement));
        h.tick(due.plus_millis(alert_h * H));
        assert!(h.active(RuleId::MissingMeasurement), "virtual ward {ward}");
        assert_eq!(
            h.explanations(RuleId::MissingMeasurement)[0],
            format!(
                "Ingen vikt sedan 1/11 07:30: väntades senast 2/11 10:00, larm {alert_h} h efter utsatt tid."
            )
        );
        assert_eq!(h.commands(), 1, "one reminder only");
        // The reading, after the deadline, clears it (a real absence).
        h.weight(due.plus_millis((alert_h + 1) * H), 80.2);
        assert!(!h.active(RuleId::MissingMeasurement));
        let a = h.book.active().count();
        assert_eq!(a, 0);
        assert_eq!(
            h.withdrawals(),
            0,
            "a real absence is cleared, not withdrawn"
        );
    }
}

#[test]
fn a_reading_in_time_needs_no_reminder() {
    let mut h = harness(true);
    h.weight(at(0, "07:30"), 80.0);
    h.weight(at(1, "08:00"), 80.1);
    h.tick(at(2, "09:00"));
    assert_eq!(h.commands(), 0);
    assert!(!h.active(RuleId::MissingMeasurement));
}

#[test]
fn a_reading_after_the_scheduled_time_but_before_the_alert_counts() {
    let mut h = harness(true);
    h.weight(at(0, "07:30"), 80.0);
    // Due 1/11 10:00; weighed at 17:00 the same day, after the reminder.
    h.tick(at(1, "12:00"));
    assert_eq!(h.commands(), 1);
    h.weight(at(1, "17:00"), 80.1);
    h.tick(at(2, "16:59"));
    assert!(!h.active(RuleId::MissingMeasurement));
    // The next one is due 2/11 10:00 and alerted 3/11 10:00.
    h.tick(at(3, "09:59"));
    assert!(!h.active(RuleId::MissingMeasurement));
    h.tick(at(3, "10:00"));
    assert!(h.active(RuleId::MissingMeasurement));
}

#[test]
fn a_late_reading_taken_in_time_counts() {
    let mut h = harness(true);
    h.weight(at(0, "07:30"), 80.0);
    // Taken on day 1 at 08:00, delivered on day 2 at 09:00: after its
    // reminder time, before its alert time. No alert for day 1.
    h.arrive_at(at(2, "09:00"));
    h.weight(at(1, "08:00"), 80.1);
    h.tick(at(2, "11:00"));
    assert!(h.explanations(RuleId::MissingMeasurement).is_empty());
}

#[test]
fn each_scheduled_measurement_has_its_own_absence() {
    let mut h = weight_and_bp();
    h.weight(at(0, "07:30"), 80.0);
    h.bp(at(0, "07:35"), 130.0, 80.0);
    h.tick(at(3, "10:00"));
    assert_eq!(active_measurements(&h), ["sys", "weight"]);
    let texts = h.explanations(RuleId::MissingMeasurement);
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Inget blodtryck sedan 1/11 07:35"))
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("Ingen vikt sedan 1/11 07:30"))
    );
    // A blood pressure ends only its own absence.
    h.bp(at(3, "11:00"), 128.0, 79.0);
    assert_eq!(active_measurements(&h), ["weight"]);
    // The weight's absence stays until a weight comes, through further
    // blood pressures and deadlines.
    h.bp(at(4, "08:00"), 127.0, 78.0);
    h.tick(at(6, "10:00"));
    assert_eq!(active_measurements(&h), ["weight"]);
    assert_eq!(
        h.explanations(RuleId::MissingMeasurement).len(),
        2,
        "the weight's alert is raised once"
    );
    h.weight(at(6, "10:30"), 80.4);
    assert_eq!(active_measurements(&h), Vec::<String>::new());
}

#[test]
fn a_back_filled_history_raises_nothing() {
    // 14 days of morning weights, uploaded in one burst on day 15 at
    // 09:00, one message each, the engine ticking between messages as it
    // does live.
    let mut h = harness(false);
    let upload = at(15, "09:00");
    for day in 1..=14 {
        h.arrive_at(upload.plus_millis(i64::from(day) * 1_000));
        h.weight(at(day, "07:45"), 80.0 + f64::from(day) * 0.1);
        h.tick(upload.plus_millis(i64::from(day) * 1_000 + 500));
    }
    // The upload is quiet now; the last weight, day 14, was on time.
    h.tick(upload.plus_millis(BACKLOG_SETTLE_MS + 60_000));
    assert!(h.explanations(RuleId::MissingMeasurement).is_empty());
    assert_eq!(h.commands(), 0, "no reminders for days long gone");
}

#[test]
fn an_upload_is_judged_when_it_is_over() {
    // Weights of days 1 and 2 uploaded on day 6; days 3–5 are missing.
    let mut h = harness(false);
    let upload = at(6, "12:00");
    h.arrive_at(upload);
    h.weight(at(1, "07:45"), 80.0);
    h.arrive_at(upload.plus_millis(1_000));
    h.weight(at(2, "07:45"), 80.1);
    // While it may go on, nothing is judged …
    h.tick(upload.plus_millis(BACKLOG_SETTLE_MS));
    assert!(!h.active(RuleId::MissingMeasurement));
    // … then the absence since day 2 is: due 3/11 10:00, deadline 5/11 10:00.
    h.tick(upload.plus_millis(BACKLOG_SETTLE_MS + 1_000));
    assert!(h.active(RuleId::MissingMeasurement));
    assert_eq!(
        h.explanations(RuleId::MissingMeasurement),
        ["Ingen vikt sedan 3/11 07:45: väntades senast 4/11 10:00, larm 48 h efter utsatt tid."]
    );
    assert_eq!(h.commands(), 0, "the day the reminder was for has passed");
}

#[test]
fn a_late_reading_taken_in_time_withdraws_the_alert() {
    let mut h = harness(false);
    h.weight(at(0, "07:30"), 80.0);
    h.tick(at(3, "10:00"));
    assert!(h.active(RuleId::MissingMeasurement));
    // The scale was offline: the weight of 1/11 08:00 arrives on day 4.
    h.arrive_at(at(4, "12:00"));
    h.weight(at(1, "08:00"), 80.1);
    assert!(!h.active(RuleId::MissingMeasurement));
    assert_eq!(h.withdrawals(), 1);
    let a = h
        .book
        .patient_alerts(PATIENT)
        .find(|a| a.rule == RuleId::MissingMeasurement)
        .expect("the alert");
    assert_eq!(a.state, AlertState::Resolved);
    assert_eq!(a.outcome.as_deref(), Some("withdrawn"));
}

#[test]
fn a_reading_just_before_the_deadline_withdraws_at_it_clears() {
    for (taken, withdrawn) in [(at(3, "09:59"), 1), (at(3, "10:00"), 0)] {
        let mut h = harness(false);
        h.weight(at(0, "07:30"), 80.0);
        h.tick(at(3, "10:00"));
        assert!(h.active(RuleId::MissingMeasurement));
        h.arrive_at(at(3, "10:30"));
        h.weight(taken, 80.1);
        assert!(!h.active(RuleId::MissingMeasurement));
        assert_eq!(h.withdrawals(), withdrawn);
    }
}

#[test]
fn reminders_only_in_the_patients_daytime() {
    // Due 20:00: +2 h is 22:00, at night: no reminder, only the alert.
    let mut h = Harness::with_plan(json!({
        "rules": ["missing_measurement"],
        "schedule": [{"metric": "weight", "by": "20:00"}],
    }));
    h.weight(at(0, "19:00"), 80.0);
    h.tick(at(2, "08:00"));
    assert!(reminders(&h).is_empty());
    h.tick(at(3, "20:00"));
    assert!(h.active(RuleId::MissingMeasurement));

    // Due 05:00: +2 h is 07:00, before the day starts: at 08:00.
    let mut h = Harness::with_plan(json!({
        "rules": ["missing_measurement"],
        "schedule": [{"metric": "weight", "by": "05:00"}],
    }));
    h.weight(at(0, "04:30"), 80.0);
    h.tick(at(1, "07:59"));
    assert!(reminders(&h).is_empty());
    h.tick(at(1, "08:00"));
    assert_eq!(reminders(&h).len(), 1);
    assert!(reminders(&h)[0].contains("Dags att mäta vikt"));

    // Due 18:00, +2 h = 20:00 is daytime, but the hub's clock was behind
    // and first ticks at 21:00: the day is over, no reminder.
    let mut h = Harness::with_plan(json!({
        "rules": ["missing_measurement"],
        "schedule": [{"metric": "weight", "by": "18:00"}],
    }));
    h.weight(at(0, "17:00"), 80.0);
    h.tick(at(1, "21:00"));
    assert!(reminders(&h).is_empty());
}

#[test]
fn a_plan_without_the_measurement_clears_its_alert() {
    let mut h = weight_and_bp();
    h.weight(at(0, "07:30"), 80.0);
    h.bp(at(0, "07:35"), 130.0, 80.0);
    h.tick(at(3, "10:00"));
    assert_eq!(active_measurements(&h), ["sys", "weight"]);
    let plan = Plan::default()
        .patched(&json!({
            "rules": ["missing_measurement"],
            "schedule": [{"metric": "weight", "by": "10:00"}],
        }))
        .expect("plan");
    h.set_plan(plan, at(3, "11:00"));
    assert_eq!(active_measurements(&h), ["weight"]);
}

#[test]
fn an_alert_kept_across_a_restart_clears_with_the_reading() {
    let mut h = harness(false);
    h.weight(at(0, "07:30"), 80.0);
    h.tick(at(3, "10:00"));
    assert!(h.active(RuleId::MissingMeasurement));
    // A new engine (a restart) that never saw the absence, with the book
    // as stored; the day-1 weight now arrives.
    h.restart(at(4, "09:00"));
    h.arrive_at(at(4, "09:00"));
    h.weight(at(1, "08:00"), 80.1);
    assert!(!h.active(RuleId::MissingMeasurement));
}

#[test]
fn an_older_reading_does_not_end_a_newer_absence() {
    let mut h = harness(false);
    h.weight(at(0, "07:30"), 80.0);
    h.weight(at(1, "07:30"), 80.0);
    h.tick(at(4, "10:00"));
    assert!(h.active(RuleId::MissingMeasurement));
    h.restart(at(4, "11:00"));
    // A redelivered reading older than the one the alert names.
    h.arrive_at(at(4, "11:00"));
    h.weight(at(0, "07:30"), 80.0);
    assert!(h.active(RuleId::MissingMeasurement));
}

use crate::plans::Plan;
