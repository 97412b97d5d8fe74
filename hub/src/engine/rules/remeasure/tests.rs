use vaka_gateway::UnixMillis;
use vaka_gateway::model::EventKind;

use crate::engine::rules::RuleId;
use crate::engine::rules::testing::{Harness, at};

const MIN: i64 = UnixMillis::MINUTE;

#[test]
fn a_confirmed_crisis() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t.plus_millis(10_000));
    h.bp(t, 192.0, 124.0);
    // The first reading asks for a repeat and raises nothing yet.
    assert_eq!(h.commands(), 1);
    assert!(h.explanations(RuleId::BpCrisis).is_empty());
    h.bp(t.plus_millis(2 * MIN), 188.0, 121.0);
    assert_eq!(
        h.explanations(RuleId::BpCrisis),
        [
            "Blodtryck 192/124 mmHg kl. 08:00, bekräftat vid ny mätning 2 min senare (188/121 mmHg). \
          Gräns: systoliskt ≥ 180 eller diastoliskt ≥ 120 mmHg."
        ]
    );
    assert_eq!(h.confirmed(RuleId::BpCrisis), [Some(true)]);
    assert_eq!(h.commands(), 1, "one remeasure, never a second");
}

#[test]
fn either_arm_of_the_criterion() {
    for (sys, dia, crisis) in [
        (180.0, 80.0, true),
        (179.0, 119.0, false),
        (150.0, 120.0, true),
        (179.9, 119.9, false),
    ] {
        let mut h = Harness::new();
        let t = at(0, "08:00");
        h.bp(t, sys, dia);
        h.bp(t.plus_millis(MIN), sys, dia);
        assert_eq!(
            h.explanations(RuleId::BpCrisis).len(),
            usize::from(crisis),
            "{sys}/{dia}"
        );
    }
}

#[test]
fn a_repeat_after_six_minutes_does_not_confirm() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t);
    h.bp(t, 192.0, 124.0);
    h.bp(t.plus_millis(6 * MIN), 190.0, 122.0);
    // The first is raised unconfirmed when the second shows its window
    // closed; the second, 6 min later, updates that alert unconfirmed.
    assert_eq!(h.confirmed(RuleId::BpCrisis), [Some(false), Some(false)]);
    assert_eq!(h.commands(), 1);
}

#[test]
fn a_normal_repeat_clears_the_first() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t);
    h.bp(t, 192.0, 124.0);
    h.bp(t.plus_millis(3 * MIN), 150.0, 90.0);
    h.tick(t.plus_millis(60 * MIN));
    assert!(h.explanations(RuleId::BpCrisis).is_empty());
}

#[test]
fn no_repeat_raises_unconfirmed_when_the_clock_passes_five_minutes() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t);
    h.bp(t, 185.0, 100.0);
    h.tick(t.plus_millis(5 * MIN));
    assert!(h.explanations(RuleId::BpCrisis).is_empty());
    h.tick(t.plus_millis(5 * MIN + 1));
    assert_eq!(
        h.explanations(RuleId::BpCrisis),
        [
            "Blodtryck 185/100 mmHg kl. 08:00, ej bekräftat: ingen ny mätning inom 5 min. \
          Gräns: systoliskt ≥ 180 eller diastoliskt ≥ 120 mmHg."
        ]
    );
}

#[test]
fn a_late_normal_repeat_withdraws_the_unconfirmed_alert() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t);
    h.bp(t, 192.0, 124.0);
    h.tick(t.plus_millis(6 * MIN));
    assert!(h.active(RuleId::BpCrisis));
    // Taken 4 min after the first, delivered after the alert was raised.
    h.arrive_at(t.plus_millis(7 * MIN));
    h.bp(t.plus_millis(4 * MIN), 140.0, 85.0);
    assert_eq!(h.withdrawals(), 1);
    assert!(!h.active(RuleId::BpCrisis));
}

#[test]
fn an_old_reading_sends_no_remeasure() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t.plus_millis(5 * MIN));
    h.bp(t, 185.0, 100.0);
    assert_eq!(h.commands(), 0);
    h.tick(t.plus_millis(6 * MIN));
    assert_eq!(h.confirmed(RuleId::BpCrisis), [Some(false)]);
}

#[test]
fn a_repeat_that_arrives_first_confirms_too() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.arrive_at(t.plus_millis(10 * MIN));
    h.bp(t.plus_millis(2 * MIN), 188.0, 121.0);
    h.bp(t, 192.0, 124.0);
    h.tick(t.plus_millis(10 * MIN));
    // The later reading, alone and old, is raised at once unconfirmed;
    // the earlier one, arriving after it, confirms that alert.
    let alerts: Vec<_> = h.book.active().collect();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].confirmed, Some(true));
}

#[test]
fn while_active_alarming_readings_update_and_send_nothing() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.bp(t, 192.0, 124.0);
    h.bp(t.plus_millis(MIN), 190.0, 122.0);
    h.bp(t.plus_millis(20 * MIN), 195.0, 125.0);
    assert_eq!(h.explanations(RuleId::BpCrisis).len(), 2);
    assert_eq!(h.commands(), 1);
}

#[test]
fn hypotension_below_80_with_remeasure() {
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.bp(t, 78.0, 50.0);
    assert_eq!(h.commands(), 1);
    h.bp(t.plus_millis(2 * MIN), 76.0, 48.0);
    assert_eq!(
        h.explanations(RuleId::Hypotension),
        [
            "Lågt blodtryck 78/50 mmHg kl. 08:00, bekräftat vid ny mätning 2 min senare (76/48 mmHg). \
          Gräns: systoliskt < 80 mmHg, eller < 90 mmHg med symtom inom 60 min."
        ]
    );
    // 80 itself is not below 80.
    let mut h = Harness::new();
    h.bp(t, 80.0, 50.0);
    h.bp(t.plus_millis(MIN), 80.0, 50.0);
    assert!(h.explanations(RuleId::Hypotension).is_empty());
}

#[test]
fn hypotension_below_90_only_with_a_symptom_within_an_hour() {
    for (symptom_after_min, raised) in [
        (None, false),
        (Some(-59), true),
        (Some(45), true),
        (Some(61), false),
    ] {
        let mut h = Harness::new();
        let t = at(0, "08:00");
        if let Some(m) = symptom_after_min.filter(|m| *m < 0) {
            h.symptom(t.plus_millis(m * MIN), "yrsel");
        }
        h.bp(t, 86.0, 55.0);
        if let Some(m) = symptom_after_min.filter(|m| *m >= 0) {
            h.symptom(t.plus_millis(m * MIN), "yrsel");
        }
        assert_eq!(
            h.active(RuleId::Hypotension),
            raised,
            "symptom at {symptom_after_min:?} min"
        );
        assert_eq!(h.commands(), 0, "86 alone is no reason to remeasure");
    }
}

#[test]
fn heart_rate_limits() {
    for (hr, alarming) in [(39.0, true), (40.0, false), (120.0, false), (121.0, true)] {
        let mut h = Harness::new();
        let t = at(0, "08:00");
        h.bp_hr(t, 130.0, 80.0, hr);
        h.bp_hr(t.plus_millis(MIN), 130.0, 80.0, hr);
        assert_eq!(h.active(RuleId::HeartRate), alarming, "hr {hr}");
    }
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.oximeter(t, 97.0, 130.0);
    h.oximeter(t.plus_millis(2 * MIN), 97.0, 131.0);
    assert_eq!(
        h.explanations(RuleId::HeartRate),
        [
            "Puls 130 slag/min kl. 08:00, bekräftat vid ny mätning 2 min senare (131 slag/min). \
          Gräns: under 40 eller över 120 slag/min."
        ]
    );
}

#[test]
fn spo2_per_patient_threshold() {
    // Default 92 %: 90 is alarming.
    let mut h = Harness::new();
    let t = at(0, "08:00");
    h.oximeter(t, 90.0, 80.0);
    h.oximeter(t.plus_millis(MIN), 90.0, 80.0);
    assert!(h.active(RuleId::Spo2));
    // A COPD patient's plan: 88 %.
    let mut h = Harness::with_plan(serde_json::json!({"thresholds": {"spo2_low_pct": 88}}));
    h.oximeter(t, 90.0, 80.0);
    h.oximeter(t.plus_millis(MIN), 89.0, 80.0);
    assert!(!h.active(RuleId::Spo2));
    h.oximeter(t.plus_millis(10 * MIN), 87.0, 80.0);
    h.oximeter(t.plus_millis(11 * MIN), 86.0, 80.0);
    assert!(h.active(RuleId::Spo2));
    assert!(h.explanations(RuleId::Spo2)[0].ends_with("Gräns: under 88 %."));
}

#[test]
fn a_disabled_rule_never_fires() {
    let mut h = Harness::with_plan(serde_json::json!({"rules": ["fall"]}));
    let t = at(0, "08:00");
    h.bp(t, 200.0, 130.0);
    h.bp(t.plus_millis(MIN), 200.0, 130.0);
    h.event(t, EventKind::Fall);
    assert!(!h.active(RuleId::BpCrisis));
    assert!(h.active(RuleId::Fall));
}
