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
          Gräns: systoliskt ≥ 180 eller diastoliskt ≥ 110 mmHg."
        ]
    );
    assert_eq!(h.confirmed(RuleId::BpCrisis), [Some(true)]);
    assert_eq!(h.commands(), 1, "one remeasure, never a second");
}

/// ESH 2023 grade 3: systolic ≥ 180 or diastolic ≥ 110, each limit
/// included.
#[test]
fn either_arm_of_the_criterion() {
    for (sys, dia, crisis) in [
        (180.0, 80.0, true),
        (179.0, 109.0, false),
        (150.0, 110.0, true),
        (179.0, 110.0, true),
        (179.9, 109.9, false),
        (150.0, 119.0, true),
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
          Gräns: systoliskt ≥ 180 eller diastoliskt ≥ 110 mmHg."
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
    h.bp(t, 79.0, 50.0);
    assert_eq!(h.commands(), 1);
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    h.bp(t.plus_millis(2 * MIN), 76.0, 48.0);
    assert_eq!(
        h.explanations(RuleId::Hypotension),
        [
            "Lågt blodtryck 79/50 mmHg kl. 08:00, bekräftat vid ny mätning 2 min senare (76/48 mmHg). \
          Gräns: systoliskt < 80 mmHg, eller < 90 mmHg med symtom inom 60 min före eller efter."
        ]
    );
    assert_eq!(h.confirmed(RuleId::Hypotension), [Some(true)]);
    // 80 itself is not below 80, and without a symptom it is no reason to
    // measure again.
    let mut h = Harness::new();
    h.bp(t, 80.0, 50.0);
    h.bp(t.plus_millis(MIN), 80.0, 50.0);
    h.tick(t.plus_millis(60 * MIN));
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    assert_eq!(h.commands(), 0);
}

/// The second arm: systolic < 90 with a symptom. The symptom makes the
/// reading alarming; it does not confirm it. The reading first asks for a
/// repeat, and without one the alert is unconfirmed.
#[test]
fn hypotension_with_a_symptom_is_confirmed_only_by_a_repeat() {
    let t = at(0, "08:00");
    // 89 with a symptom half an hour before: a repeat is asked for, and
    // without one the alert comes unconfirmed after 5 min, naming the
    // symptom.
    let mut h = Harness::new();
    h.symptom(t.plus_millis(-30 * MIN), "yrsel");
    h.bp(t, 89.0, 60.0);
    assert_eq!(
        h.command_reasons(),
        ["Lågt blodtryck 89/60 mmHg är utanför larmgränsen. Vila 2 minuter och mät igen."]
    );
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    h.tick(t.plus_millis(5 * MIN));
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    h.tick(t.plus_millis(5 * MIN + 1));
    assert_eq!(
        h.explanations(RuleId::Hypotension),
        [
            "Lågt blodtryck 89/60 mmHg kl. 08:00 med symtom \u{201d}yrsel\u{201d} rapporterat kl. 07:30, \
          ej bekräftat: ingen ny mätning inom 5 min. \
          Gräns: systoliskt < 80 mmHg, eller < 90 mmHg med symtom inom 60 min före eller efter."
        ]
    );
    assert_eq!(h.confirmed(RuleId::Hypotension), [Some(false)]);
    // The symptom is among the evidence.
    let f = h.raises(RuleId::Hypotension).next().expect("raised");
    let names: Vec<&str> = f.evidence.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["sys", "dia", "patient_symptom"]);
    assert_eq!(f.evidence[2].time, t.plus_millis(-30 * MIN));
    assert_eq!((f.first_reading_at, f.last_reading_at), (t, t));

    // A repeat 2 min later below 90 (the same symptom is within the hour
    // of it too) confirms.
    let mut h = Harness::new();
    h.symptom(t.plus_millis(-30 * MIN), "yrsel");
    h.bp(t, 89.0, 60.0);
    h.bp(t.plus_millis(2 * MIN), 88.0, 58.0);
    assert_eq!(
        h.explanations(RuleId::Hypotension),
        [
            "Lågt blodtryck 89/60 mmHg kl. 08:00 med symtom \u{201d}yrsel\u{201d} rapporterat kl. 07:30, \
          bekräftat vid ny mätning 2 min senare (88/58 mmHg). \
          Gräns: systoliskt < 80 mmHg, eller < 90 mmHg med symtom inom 60 min före eller efter."
        ]
    );
    assert_eq!(h.confirmed(RuleId::Hypotension), [Some(true)]);

    // A repeat of 95 clears the first: no alert at all.
    let mut h = Harness::new();
    h.symptom(t.plus_millis(-30 * MIN), "yrsel");
    h.bp(t, 89.0, 60.0);
    h.bp(t.plus_millis(2 * MIN), 95.0, 62.0);
    h.tick(t.plus_millis(60 * MIN));
    assert!(h.explanations(RuleId::Hypotension).is_empty());

    // 90 with a symptom is not below 90.
    let mut h = Harness::new();
    h.symptom(t.plus_millis(-30 * MIN), "yrsel");
    h.bp(t, 90.0, 60.0);
    h.tick(t.plus_millis(60 * MIN));
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    assert_eq!(h.commands(), 0);
}

/// "Within 1 h before or after" includes the hour: a symptom exactly
/// 60 min before or after the reading counts, 60 min and 1 ms (or 61 min)
/// does not. A symptom reported after the reading makes it alarming then.
#[test]
fn hypotension_symptom_window_is_an_hour_either_side_inclusive() {
    let t = at(0, "08:00");
    for (symptom_ms, alarming) in [
        (-60 * MIN, true),
        (-60 * MIN - 1, false),
        (-61 * MIN, false),
        (-1, true),
        (0, true),
        (45 * MIN, true),
        (60 * MIN, true),
        (60 * MIN + 1, false),
        (61 * MIN, false),
    ] {
        let mut h = Harness::new();
        if symptom_ms < 0 {
            h.symptom(t.plus_millis(symptom_ms), "yrsel");
        }
        h.bp(t, 86.0, 55.0);
        if symptom_ms >= 0 {
            h.symptom(t.plus_millis(symptom_ms), "yrsel");
        }
        h.tick(t.plus_millis(3 * 60 * MIN));
        assert_eq!(
            h.active(RuleId::Hypotension),
            alarming,
            "symptom at {symptom_ms} ms"
        );
        // Never confirmed without a repeat.
        assert!(
            h.confirmed(RuleId::Hypotension)
                .iter()
                .all(|c| *c == Some(false)),
            "symptom at {symptom_ms} ms"
        );
    }
}

#[test]
fn a_symptom_reported_after_a_fresh_reading_asks_for_a_repeat() {
    let t = at(0, "08:00");
    let mut h = Harness::new();
    h.bp(t, 86.0, 55.0);
    assert_eq!(h.commands(), 0, "86 alone is no reason to measure again");
    // Two minutes later the patient reports dizziness: the reading is
    // alarming now, and still fresh.
    h.symptom(t.plus_millis(2 * MIN), "yrsel");
    assert_eq!(h.commands(), 1);
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    h.bp(t.plus_millis(4 * MIN), 87.0, 56.0);
    assert_eq!(
        h.explanations(RuleId::Hypotension),
        [
            "Lågt blodtryck 86/55 mmHg kl. 08:00 med symtom \u{201d}yrsel\u{201d} rapporterat kl. 08:02, \
          bekräftat vid ny mätning 4 min senare (87/56 mmHg). \
          Gräns: systoliskt < 80 mmHg, eller < 90 mmHg med symtom inom 60 min före eller efter."
        ]
    );
    assert_eq!(h.confirmed(RuleId::Hypotension), [Some(true)]);
}

#[test]
fn a_symptom_after_two_old_low_readings_confirms_them_at_once() {
    let t = at(0, "08:00");
    let mut h = Harness::new();
    h.bp(t, 86.0, 55.0);
    h.bp(t.plus_millis(3 * MIN), 87.0, 56.0);
    // Half an hour later: both readings are alarming now, a pair 3 min
    // apart, too old to measure again.
    h.symptom(t.plus_millis(30 * MIN), "svimningskänsla");
    assert_eq!(h.commands(), 0);
    assert_eq!(h.confirmed(RuleId::Hypotension), [Some(true)]);
    assert!(h.explanations(RuleId::Hypotension)[0].starts_with(
        "Lågt blodtryck 86/55 mmHg kl. 08:00 med symtom \u{201d}svimningskänsla\u{201d} \
         rapporterat kl. 08:30, bekräftat vid ny mätning 3 min senare (87/56 mmHg)."
    ));
    h.tick(t.plus_millis(60 * MIN));
    assert_eq!(h.explanations(RuleId::Hypotension).len(), 1, "raised once");
}

#[test]
fn a_repeat_below_90_confirms_a_reading_below_80_once_a_symptom_is_reported() {
    let t = at(0, "08:00");
    let mut h = Harness::new();
    h.arrive_at(t);
    h.bp(t, 78.0, 50.0);
    // 86 without a symptom does not meet the criterion: it clears the 78.
    h.arrive_at(t.plus_millis(2 * MIN));
    h.bp(t.plus_millis(2 * MIN), 86.0, 55.0);
    h.arrive_at(t.plus_millis(3 * MIN));
    h.tick(t.plus_millis(3 * MIN));
    assert!(h.explanations(RuleId::Hypotension).is_empty());
    // A symptom at 08:10 makes the 86 meet the second arm: the pair
    // confirms.
    h.arrive_at(t.plus_millis(10 * MIN));
    h.symptom(t.plus_millis(10 * MIN), "yrsel");
    assert_eq!(h.confirmed(RuleId::Hypotension), [Some(true)]);
    assert!(
        h.explanations(RuleId::Hypotension)[0]
            .starts_with("Lågt blodtryck 78/50 mmHg kl. 08:00 med symtom \u{201d}yrsel\u{201d}"),
        "{}",
        h.explanations(RuleId::Hypotension)[0]
    );
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

/// "A second reading within 5 min (data time)": 5 min included. A repeat
/// 5:00.000 after the first confirms it; 5:00.001 after it, the first is
/// raised unconfirmed and the second is a reading of its own (it updates
/// that alert, and asks for no second repeat).
#[test]
fn a_repeat_at_exactly_five_minutes_confirms_and_a_millisecond_later_does_not() {
    let t = at(0, "08:00");
    let mut h = Harness::new();
    h.bp(t, 192.0, 124.0);
    h.bp(t.plus_millis(5 * MIN), 188.0, 121.0);
    assert_eq!(h.confirmed(RuleId::BpCrisis), [Some(true)]);
    assert!(h.explanations(RuleId::BpCrisis)[0].contains("bekräftat vid ny mätning 5 min senare"));

    let mut h = Harness::new();
    h.bp(t, 192.0, 124.0);
    h.bp(t.plus_millis(5 * MIN + 1), 188.0, 121.0);
    assert_eq!(h.confirmed(RuleId::BpCrisis), [Some(false), Some(false)]);
    assert_eq!(
        h.explanations(RuleId::BpCrisis)[0],
        "Blodtryck 192/124 mmHg kl. 08:00, ej bekräftat: ingen ny mätning inom 5 min. \
         Gräns: systoliskt ≥ 180 eller diastoliskt ≥ 110 mmHg."
    );
    assert_eq!(h.commands(), 1);

    // The same when the repeat arrives first (an upload in any order).
    for (gap, confirmed) in [
        (5 * MIN, vec![Some(false), Some(true)]),
        (5 * MIN + 1, vec![Some(false), Some(false)]),
    ] {
        let mut h = Harness::new();
        h.arrive_at(t.plus_millis(30 * MIN));
        h.oximeter(t.plus_millis(gap), 88.0, 80.0);
        h.oximeter(t, 89.0, 80.0);
        // The later reading, alone and old, is raised at once; the earlier
        // one confirms it (5:00) or updates it (5:00.001).
        assert_eq!(h.confirmed(RuleId::Spo2), confirmed, "gap {gap} ms");
        let alerts: Vec<_> = h.book.active().collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].confirmed, Some(gap == 5 * MIN));
    }
}

#[test]
fn spo2_limits_with_a_repeat() {
    let t = at(0, "08:00");
    // Default: an alert below 92 %; 92 itself is fine.
    for (spo2, alarming) in [(92.0, false), (91.0, true), (91.9, true)] {
        let mut h = Harness::new();
        h.oximeter(t, spo2, 80.0);
        h.oximeter(t.plus_millis(2 * MIN), spo2, 80.0);
        assert_eq!(h.active(RuleId::Spo2), alarming, "spo2 {spo2}");
        assert_eq!(h.commands(), usize::from(alarming), "spo2 {spo2}");
    }
    // A COPD patient's plan: 88 % is fine, 87 alerts.
    for (spo2, alarming) in [(88.0, false), (87.0, true)] {
        let mut h = Harness::with_plan(serde_json::json!({"thresholds": {"spo2_low_pct": 88}}));
        h.oximeter(t, spo2, 80.0);
        h.oximeter(t.plus_millis(2 * MIN), spo2, 80.0);
        assert_eq!(h.active(RuleId::Spo2), alarming, "spo2 {spo2} under 88");
    }
    // A value just under the limit is not shown as the limit.
    let mut h = Harness::new();
    h.oximeter(t, 91.6, 80.0);
    h.oximeter(t.plus_millis(MIN), 91.8, 80.0);
    assert_eq!(
        h.explanations(RuleId::Spo2),
        [
            "Syremättnad 91,6 % kl. 08:00, bekräftat vid ny mätning 1 min senare (91,8 %). \
          Gräns: under 92 %."
        ]
    );
}

#[test]
fn heart_rate_just_over_the_limit_is_shown_as_it_is() {
    let t = at(0, "08:00");
    let mut h = Harness::new();
    h.oximeter(t, 97.0, 120.4);
    h.oximeter(t.plus_millis(MIN), 97.0, 39.6);
    assert_eq!(
        h.explanations(RuleId::HeartRate),
        [
            "Puls 120,4 slag/min kl. 08:00, bekräftat vid ny mätning 1 min senare (39,6 slag/min). \
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
