//! `bp_average`: the home blood pressure of the last week (ESH): the mean of
//! at least 12 readings on at least 3 days in the last 7 × 24 h is 135/85
//! mmHg or more. Evaluated at every new blood-pressure reading, over the
//! readings of the 7 × 24 h that end with the newest one.

use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Metric, Observation};

use super::{Context, Evidence, Input, Rule, RuleId, sv_exact, sv_near};
use crate::engine::patient::{PatientState, Vital};

pub struct BpAverage;

const WEEK: i64 = 7 * UnixMillis::DAY;

impl Rule for BpAverage {
    fn id(&self) -> RuleId {
        RuleId::BpAverage
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        if !input
            .vitals
            .iter()
            .any(|v| v.sys().is_some() && v.dia().is_some())
        {
            return;
        }
        let plan = state.plan.clone();
        let t = &plan.thresholds;
        let is_bp = |v: &&Vital| v.sys().is_some() && v.dia().is_some();
        let Some(newest) = state.vitals.items().rev().find(is_bp).copied() else {
            return;
        };
        let in_week = |v: &&Vital| is_bp(v) && newest.time.millis_since(v.time) < WEEK;
        // One pass, no allocation: count, sums and distinct days (the window
        // is in time order, so days come sorted).
        let (mut n, mut sys, mut dia, mut days, mut last_day) = (0usize, 0.0, 0.0, 0usize, None);
        for v in state.vitals.items().filter(in_week) {
            n += 1;
            sys += v.sys().unwrap_or(0.0);
            dia += v.dia().unwrap_or(0.0);
            if last_day != Some(v.day) {
                days += 1;
                last_day = Some(v.day);
            }
        }
        if n < t.bp_average_min_readings as usize || days < t.bp_average_min_days as usize {
            return;
        }
        let (sys, dia) = (sys / n as f64, dia / n as f64);
        if sys < t.bp_average_sys_mmhg && dia < t.bp_average_dia_mmhg {
            return;
        }
        // Active already: update it once a day (at the day's first reading),
        // not at every reading of an uncontrolled week.
        let first_of_day = state
            .vitals
            .items()
            .rev()
            .filter(is_bp)
            .nth(1)
            .is_none_or(|prev| prev.day != newest.day);
        if ctx.is_active(RuleId::BpAverage) && !first_of_day {
            return;
        }
        let week: Vec<Vital> = state.vitals.items().filter(in_week).copied().collect();
        let threshold = format!(
            "medel ≥ {}/{} mmHg (minst {} mätningar på {} dagar, 7 dygn)",
            sv_exact(t.bp_average_sys_mmhg, 0, 1),
            sv_exact(t.bp_average_dia_mmhg, 0, 1),
            t.bp_average_min_readings,
            t.bp_average_min_days
        );
        let explanation = format!(
            "Medelblodtryck {}/{} mmHg senaste 7 dygnen ({n} mätningar, {days} dagar). Gräns: {threshold}.",
            sv_near(sys, 0, &[t.bp_average_sys_mmhg]),
            sv_near(dia, 0, &[t.bp_average_dia_mmhg]),
        );
        let evidence = week
            .iter()
            .flat_map(|v| {
                let device = ctx.device_name(v.device).to_owned();
                [(Metric::Sys, v.sys()), (Metric::Dia, v.dia())]
                    .into_iter()
                    .filter_map(move |(m, x)| {
                        x.map(|value| {
                            Evidence::observation(
                                &device,
                                &Observation {
                                    time: v.time,
                                    metric: m,
                                    value,
                                },
                            )
                        })
                    })
            })
            .collect();
        let f = ctx.finding(
            RuleId::BpAverage,
            explanation,
            threshold,
            evidence,
            newest.time,
            newest.time,
        );
        ctx.raise(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::testing::{Harness, at};

    fn week(readings_per_day: usize, days: i32, sys: f64, dia: f64) -> Vec<String> {
        let mut h = Harness::new();
        for d in 0..days {
            for i in 0..readings_per_day {
                let hhmm = ["07:00", "19:00", "12:00", "22:00"][i];
                h.bp(at(d, hhmm), sys, dia);
            }
        }
        h.explanations(RuleId::BpAverage)
    }

    #[test]
    fn hand_computed_cases() {
        // 2 a day for 6 days = 12 readings on 6 days at 136/80: fires once
        // the 12th reading is in.
        let texts = week(2, 6, 136.0, 80.0);
        assert_eq!(
            texts.first().map(String::as_str),
            Some(
                "Medelblodtryck 136/80 mmHg senaste 7 dygnen (12 mätningar, 6 dagar). \
                 Gräns: medel ≥ 135/85 mmHg (minst 12 mätningar på 3 dagar, 7 dygn)."
            )
        );
        // 10 readings are too few; one a day never makes 12 in a week.
        assert!(week(2, 5, 150.0, 95.0).is_empty());
        assert!(week(1, 11, 150.0, 95.0).is_empty());
        // Diastolic alone: 130/85 fires, 134/84 does not.
        assert!(!week(4, 3, 130.0, 85.0).is_empty());
        assert!(week(4, 3, 134.0, 84.0).is_empty());
        // 12 readings on 2 days are not enough days.
        assert!(week(4, 2, 150.0, 95.0).is_empty());
    }
}
