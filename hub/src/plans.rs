//! Monitoring plans: per patient, which rules apply, their thresholds, the
//! measurement schedule, the dose schedule, the dry weight and whether the
//! patient is on a virtual ward. A plan starts from its program's template
//! and is changed per patient (SpO2 88 % for a COPD patient, a dry weight
//! set by the physician). Every change is a new version, stored with who,
//! when, why and the previous plan; every alert records the version it was
//! raised under.
//!
//! A plan travels as JSON with units in the field names, e.g.
//! `{"thresholds": {"spo2_low_pct": 88}, "dry_weight_kg": 74.5}`; a change
//! is a JSON merge patch (RFC 7386) on the current plan.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;

use crate::engine::rules::RuleId;

/// The programs of ARCHITECTURE §3.
pub const PROGRAMS: [&str; 4] = [
    "heart_failure",
    "hypertension",
    "pregnancy_diabetes",
    "elderly_at_home",
];

/// The thresholds of every rule, in the units their names say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub weight_gain_1d_kg: f64,
    pub weight_gain_3d_kg: f64,
    /// `weight_trend`: EWMA above dry weight by more than this …
    pub weight_trend_above_dry_kg: f64,
    /// … and rising for this many days.
    pub weight_trend_days: u32,
    pub weight_trend_alpha: f64,
    /// `bp_crisis`: ESH 2023 grade 3, systolic ≥ 180 or diastolic ≥ 110.
    pub bp_crisis_sys_mmhg: f64,
    pub bp_crisis_dia_mmhg: f64,
    pub hypotension_sys_mmhg: f64,
    /// Systolic below this with a reported symptom nearby is hypotension too.
    pub hypotension_symptom_sys_mmhg: f64,
    pub hypotension_symptom_window_min: u32,
    pub bp_average_sys_mmhg: f64,
    pub bp_average_dia_mmhg: f64,
    pub bp_average_min_readings: u32,
    pub bp_average_min_days: u32,
    pub hr_low_bpm: f64,
    pub hr_high_bpm: f64,
    pub spo2_low_pct: f64,
    /// How long a repeat may take to confirm a dangerous reading.
    pub confirm_window_min: u32,
    pub fetal_baseline_high_bpm: f64,
    pub fetal_baseline_low_bpm: f64,
    pub fetal_stv_low_ms: f64,
    pub fetal_stv_min_valid_min: u32,
    pub fetal_amplitude_low_bpm: f64,
    pub fetal_amplitude_low_min: u32,
    pub fetal_deceleration_bpm: f64,
    pub fetal_deceleration_min: u32,
    pub ctg_signal_loss_pct: f64,
    pub ctg_signal_loss_after_min: u32,
    /// `missed_dose`: how long after `dose_due` a `dose_taken` may come.
    pub dose_window_min: u32,
    /// `refill_due`: doses left for this many days or fewer.
    pub refill_days: f64,
    pub battery_low_pct: f64,
    /// Hysteresis: a low-battery alert clears at or above this.
    pub battery_ok_pct: f64,
    pub missed_heartbeats: u32,
    pub fall_cancel_window_s: u32,
    /// `missing_measurement`: remind the patient this long after the
    /// scheduled time …
    pub remind_after_h: u32,
    /// … and alert this long after it (on a virtual ward / otherwise).
    pub missing_alert_virtual_ward_h: u32,
    pub missing_alert_h: u32,
    /// The patient's daytime, in local hours `[from, until)`: reminders
    /// are sent only then (never at night, never for a day that has passed).
    pub remind_from_h: u32,
    pub remind_until_h: u32,
    /// While the patient's devices upload late data (older than 5 min on
    /// arrival), absences (no reading, no dose taken, no heartbeat) are
    /// judged this long after the last late message: what fills them may
    /// be in the next one.
    pub late_data_settle_s: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            weight_gain_1d_kg: 1.5,
            weight_gain_3d_kg: 2.0,
            weight_trend_above_dry_kg: 1.0,
            weight_trend_days: 7,
            weight_trend_alpha: 0.3,
            bp_crisis_sys_mmhg: 180.0,
            bp_crisis_dia_mmhg: 110.0,
            hypotension_sys_mmhg: 80.0,
            hypotension_symptom_sys_mmhg: 90.0,
            hypotension_symptom_window_min: 60,
            bp_average_sys_mmhg: 135.0,
            bp_average_dia_mmhg: 85.0,
            bp_average_min_readings: 12,
            bp_average_min_days: 3,
            hr_low_bpm: 40.0,
            hr_high_bpm: 120.0,
            spo2_low_pct: 92.0,
            confirm_window_min: 5,
            fetal_baseline_high_bpm: 160.0,
            fetal_baseline_low_bpm: 110.0,
            fetal_stv_low_ms: 3.0,
            fetal_stv_min_valid_min: 30,
            fetal_amplitude_low_bpm: 5.0,
            fetal_amplitude_low_min: 50,
            fetal_deceleration_bpm: 15.0,
            fetal_deceleration_min: 3,
            ctg_signal_loss_pct: 20.0,
            ctg_signal_loss_after_min: 10,
            dose_window_min: 60,
            refill_days: 2.0,
            battery_low_pct: 20.0,
            battery_ok_pct: 30.0,
            missed_heartbeats: 3,
            fall_cancel_window_s: 30,
            remind_after_h: 2,
            missing_alert_virtual_ward_h: 24,
            missing_alert_h: 48,
            remind_from_h: 8,
            remind_until_h: 21,
            late_data_settle_s: 120,
        }
    }
}

impl Thresholds {
    /// What the CTG analysis counts as a deceleration, a long one and low
    /// amplitude under this plan.
    pub fn ctg_limits(&self) -> crate::engine::ctg::CtgLimits {
        crate::engine::ctg::CtgLimits {
            deceleration_bpm: self.fetal_deceleration_bpm,
            long_deceleration_ms: i64::from(self.fetal_deceleration_min) * UnixMillis::MINUTE,
            low_amplitude_bpm: self.fetal_amplitude_low_bpm,
        }
    }

    pub fn confirm_window_ms(&self) -> i64 {
        i64::from(self.confirm_window_min) * UnixMillis::MINUTE
    }

    pub fn fall_cancel_window_ms(&self) -> i64 {
        i64::from(self.fall_cancel_window_s) * UnixMillis::SECOND
    }

    pub fn dose_window_ms(&self) -> i64 {
        i64::from(self.dose_window_min) * UnixMillis::MINUTE
    }
}

/// A measurement expected every day by a local time, e.g. weight by 10:00.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledMeasurement {
    /// `weight`, `sys` (a blood pressure), `spo2`, …
    pub metric: String,
    /// Local time "HH:MM".
    pub by: String,
}

/// A dose of the day, e.g. `{"name": "morning", "at": "08:00"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoseTime {
    pub name: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plan {
    /// Set by the store: 1 for the first plan, +1 for each change (a value
    /// given in a change is ignored).
    pub version: i32,
    pub program: Option<String>,
    /// The rules that apply; the others never fire for this patient.
    pub rules: BTreeSet<String>,
    pub thresholds: Thresholds,
    /// Set by the physician; `weight_trend` needs it.
    pub dry_weight_kg: Option<f64>,
    pub virtual_ward: bool,
    pub schedule: Vec<ScheduledMeasurement>,
    pub doses: Vec<DoseTime>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan::template(None)
    }
}

/// Rules every plan has: someone may be lying on the floor.
const ALWAYS: [RuleId; 2] = [RuleId::Fall, RuleId::HelpButton];
const TECHNICAL: [RuleId; 2] = [RuleId::DeviceOffline, RuleId::LowBattery];

impl Plan {
    /// The template of a program; without one, every rule applies.
    pub fn template(program: Option<&str>) -> Plan {
        use RuleId::*;
        type Pairs = Vec<(&'static str, &'static str)>;
        let (rules, schedule, doses): (Vec<RuleId>, Pairs, Pairs) = match program {
            Some("heart_failure") => (
                vec![
                    WeightGain1d,
                    WeightGain3d,
                    WeightTrend,
                    BpCrisis,
                    Hypotension,
                    HeartRate,
                    Spo2,
                    MissingMeasurement,
                ],
                vec![("weight", "10:00"), ("sys", "10:00")],
                vec![],
            ),
            Some("hypertension") => (
                vec![
                    BpCrisis,
                    BpAverage,
                    Hypotension,
                    HeartRate,
                    MissingMeasurement,
                ],
                vec![("sys", "10:00")],
                vec![],
            ),
            Some("pregnancy_diabetes") => (
                vec![
                    FetalBaseline,
                    FetalVariability,
                    FetalDeceleration,
                    CtgSignalLoss,
                    BpCrisis,
                    Hypotension,
                    HeartRate,
                ],
                vec![],
                vec![],
            ),
            Some("elderly_at_home") => (
                vec![MissedDose, RefillDue, DispenserFault],
                vec![],
                vec![("morning", "08:00"), ("evening", "20:00")],
            ),
            _ => (
                RuleId::ALL
                    .iter()
                    .copied()
                    .filter(|r| {
                        // Not per patient: the gateway's, for administrators.
                        !matches!(r, UnboundDeviceAlarm | DeviceFlooding | MissingMeasurement)
                    })
                    .collect(),
                vec![],
                vec![],
            ),
        };
        Plan {
            version: 0,
            program: program.map(str::to_owned),
            rules: rules
                .into_iter()
                .chain(ALWAYS)
                .chain(TECHNICAL)
                .map(|r| r.as_str().to_owned())
                .collect(),
            thresholds: Thresholds::default(),
            dry_weight_kg: None,
            virtual_ward: false,
            schedule: schedule
                .into_iter()
                .map(|(metric, by)| ScheduledMeasurement {
                    metric: metric.into(),
                    by: by.into(),
                })
                .collect(),
            doses: doses
                .into_iter()
                .map(|(name, at)| DoseTime {
                    name: name.into(),
                    at: at.into(),
                })
                .collect(),
        }
    }

    pub fn applies(&self, rule: RuleId) -> bool {
        self.rules.contains(rule.as_str())
    }

    /// The plan with a JSON merge patch applied, validated.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<Plan, PlanError> {
        let mut doc = serde_json::to_value(self).map_err(|e| PlanError(e.to_string()))?;
        merge(&mut doc, patch);
        let mut plan: Plan = serde_json::from_value(doc).map_err(|e| PlanError(e.to_string()))?;
        plan.version = self.version;
        plan.validate()?;
        Ok(plan)
    }

    /// Checks that the plan makes clinical and technical sense.
    pub fn validate(&self) -> Result<(), PlanError> {
        for r in &self.rules {
            if RuleId::parse(r).is_none() {
                return Err(PlanError(format!("unknown rule {r:?}")));
            }
        }
        if let Some(p) = &self.program
            && !PROGRAMS.contains(&p.as_str())
        {
            return Err(PlanError(format!(
                "program must be one of {}",
                PROGRAMS.join(", ")
            )));
        }
        let t = &self.thresholds;
        let ranges: [(&str, f64, f64, f64); 18] = [
            ("weight_gain_1d_kg", t.weight_gain_1d_kg, 0.3, 10.0),
            ("weight_gain_3d_kg", t.weight_gain_3d_kg, 0.3, 15.0),
            (
                "weight_trend_above_dry_kg",
                t.weight_trend_above_dry_kg,
                0.1,
                20.0,
            ),
            ("weight_trend_alpha", t.weight_trend_alpha, 0.01, 1.0),
            ("bp_crisis_sys_mmhg", t.bp_crisis_sys_mmhg, 140.0, 260.0),
            ("bp_crisis_dia_mmhg", t.bp_crisis_dia_mmhg, 90.0, 180.0),
            ("hypotension_sys_mmhg", t.hypotension_sys_mmhg, 50.0, 110.0),
            (
                "hypotension_symptom_sys_mmhg",
                t.hypotension_symptom_sys_mmhg,
                50.0,
                120.0,
            ),
            ("hr_low_bpm", t.hr_low_bpm, 20.0, 60.0),
            ("hr_high_bpm", t.hr_high_bpm, 90.0, 220.0),
            ("spo2_low_pct", t.spo2_low_pct, 70.0, 99.0),
            (
                "fetal_baseline_high_bpm",
                t.fetal_baseline_high_bpm,
                140.0,
                200.0,
            ),
            (
                "fetal_baseline_low_bpm",
                t.fetal_baseline_low_bpm,
                80.0,
                130.0,
            ),
            ("fetal_stv_low_ms", t.fetal_stv_low_ms, 1.0, 10.0),
            (
                "fetal_amplitude_low_bpm",
                t.fetal_amplitude_low_bpm,
                1.0,
                15.0,
            ),
            (
                "fetal_deceleration_bpm",
                t.fetal_deceleration_bpm,
                10.0,
                40.0,
            ),
            ("battery_low_pct", t.battery_low_pct, 1.0, 80.0),
            ("ctg_signal_loss_pct", t.ctg_signal_loss_pct, 1.0, 90.0),
        ];
        for (name, v, lo, hi) in ranges {
            if !(lo..=hi).contains(&v) {
                return Err(PlanError(format!(
                    "{name} must be within {lo}–{hi}, not {v}"
                )));
            }
        }
        // Minutes of the fetal rules. STV is also judged over the last 60
        // min of a session, so it cannot ask for more signal than that.
        let minutes = [
            ("fetal_stv_min_valid_min", t.fetal_stv_min_valid_min, 10, 60),
            (
                "fetal_amplitude_low_min",
                t.fetal_amplitude_low_min,
                10,
                240,
            ),
            ("fetal_deceleration_min", t.fetal_deceleration_min, 1, 10),
            (
                "ctg_signal_loss_after_min",
                t.ctg_signal_loss_after_min,
                1,
                60,
            ),
        ];
        for (name, v, lo, hi) in minutes {
            if !(lo..=hi).contains(&v) {
                return Err(PlanError(format!(
                    "{name} must be within {lo}–{hi}, not {v}"
                )));
            }
        }
        if t.battery_ok_pct <= t.battery_low_pct {
            return Err(PlanError(
                "battery_ok_pct must be above battery_low_pct (hysteresis)".into(),
            ));
        }
        if !(5..=300).contains(&t.dose_window_min) {
            return Err(PlanError(
                "dose_window_min must be 5–300 (5 min – 5 h)".into(),
            ));
        }
        if !(1..=30).contains(&t.confirm_window_min) {
            return Err(PlanError("confirm_window_min must be 1–30".into()));
        }
        // 0 would call a device offline the moment after its last status.
        if !(1..=100).contains(&t.missed_heartbeats) {
            return Err(PlanError("missed_heartbeats must be 1–100".into()));
        }
        if t.remind_after_h >= t.missing_alert_virtual_ward_h.min(t.missing_alert_h) {
            return Err(PlanError(
                "remind_after_h must come before the missing-measurement alert".into(),
            ));
        }
        if t.remind_from_h >= t.remind_until_h || t.remind_until_h > 24 {
            return Err(PlanError(
                "remind_from_h must come before remind_until_h, within 0–24".into(),
            ));
        }
        if t.late_data_settle_s > 3600 {
            return Err(PlanError("late_data_settle_s must be 0–3600".into()));
        }
        if let Some(dry) = self.dry_weight_kg
            && !Metric::Weight.in_range(dry)
        {
            return Err(PlanError(format!("dry_weight_kg {dry} is outside 20–350")));
        }
        for s in &self.schedule {
            if Metric::parse(&s.metric).is_none() {
                return Err(PlanError(format!(
                    "schedule: unknown metric {:?}",
                    s.metric
                )));
            }
            parse_hhmm(&s.by)
                .ok_or_else(|| PlanError(format!("schedule: {:?} is not HH:MM", s.by)))?;
        }
        for d in &self.doses {
            parse_hhmm(&d.at)
                .ok_or_else(|| PlanError(format!("doses: {:?} is not HH:MM", d.at)))?;
        }
        Ok(())
    }

    /// Doses a day, for `refill_due` (at least one).
    pub fn doses_per_day(&self) -> usize {
        self.doses.len().max(1)
    }
}

/// "08:30" → (8, 30).
pub fn parse_hhmm(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid plan: {0}")]
pub struct PlanError(pub String);

/// RFC 7386 JSON merge patch.
fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates_are_valid_and_keep_the_safety_alarms() {
        for program in PROGRAMS.iter().map(|p| Some(*p)).chain([None]) {
            let plan = Plan::template(program);
            plan.validate().expect("a valid template");
            assert!(
                plan.applies(RuleId::Fall) && plan.applies(RuleId::HelpButton),
                "{program:?}"
            );
        }
        assert!(Plan::template(Some("heart_failure")).applies(RuleId::WeightGain3d));
        assert!(!Plan::template(Some("hypertension")).applies(RuleId::WeightGain3d));
        assert_eq!(Plan::template(Some("elderly_at_home")).doses_per_day(), 2);
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let plan = Plan::template(Some("heart_failure"));
        let copd = plan
            .patched(&json!({"thresholds": {"spo2_low_pct": 88}, "dry_weight_kg": 74.5}))
            .expect("valid");
        assert_eq!(copd.thresholds.spo2_low_pct, 88.0);
        assert_eq!(copd.dry_weight_kg, Some(74.5));
        assert_eq!(copd.thresholds.bp_crisis_sys_mmhg, 180.0);
        assert_eq!(copd.rules, plan.rules);
        // null removes: the dry weight is unset again.
        assert_eq!(
            copd.patched(&json!({"dry_weight_kg": null}))
                .expect("valid")
                .dry_weight_kg,
            None
        );
    }

    #[test]
    fn bp_crisis_is_esh_grade_3_by_default() {
        let t = Thresholds::default();
        assert_eq!((t.bp_crisis_sys_mmhg, t.bp_crisis_dia_mmhg), (180.0, 110.0));
    }

    #[test]
    fn the_dose_window_may_be_5_min_to_5_h() {
        let plan = Plan::template(None);
        for (min, ok) in [(4, false), (5, true), (300, true), (301, false)] {
            let patch = json!({"thresholds": {"dose_window_min": min}});
            assert_eq!(plan.patched(&patch).is_ok(), ok, "{min} min");
        }
    }

    #[test]
    fn nonsense_is_refused() {
        let plan = Plan::template(None);
        for patch in [
            json!({"thresholds": {"spo2_low_pct": 40}}),
            json!({"thresholds": {"shoe_size": 42}}),
            json!({"rules": ["fall", "levitation"]}),
            json!({"thresholds": {"battery_ok_pct": 10}}),
            json!({"thresholds": {"dose_window_min": 400}}),
            json!({"thresholds": {"dose_window_min": 4}}),
            json!({"thresholds": {"missed_heartbeats": 0}}),
            json!({"schedule": [{"metric": "weight", "by": "25:00"}]}),
            json!({"dry_weight_kg": 5}),
            json!({"thresholds": {"fetal_stv_min_valid_min": 90}}),
            json!({"thresholds": {"fetal_deceleration_bpm": 5}}),
            json!({"thresholds": {"fetal_deceleration_min": 0}}),
            json!({"thresholds": {"fetal_amplitude_low_bpm": 0}}),
            json!({"program": "astronaut"}),
        ] {
            assert!(plan.patched(&patch).is_err(), "{patch}");
        }
    }
}
