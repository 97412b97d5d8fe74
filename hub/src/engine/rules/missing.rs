//! `missing_measurement` (missing data, medium): a scheduled daily reading
//! (e.g. weight by 10:00) has not come. At the scheduled time + 2 h the
//! patient's device gets a `remind` command; at + 24 h (virtual ward) or
//! + 48 h the alert is raised. The next reading clears it.
//!
//! "Due" is the scheduled time on the day after the last reading of that
//! measurement (or, before any reading, the first scheduled time after the
//! engine began watching the patient). Absences are found by the hub's
//! clock passing a deadline computed from data time, so a reading that
//! arrives late but was taken in time counts as taken.

use serde_json::json;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;

use super::{Context, Evidence, Input, Rule, RuleId, local_day_hhmm};
use crate::engine::patient::{PatientState, Schedule};

pub struct MissingMeasurement;

fn swedish(metric: Metric) -> &'static str {
    match metric {
        Metric::Weight => "vikt",
        Metric::Sys | Metric::Dia | Metric::Map => "blodtryck",
        Metric::Hr => "puls",
        Metric::Spo2 => "syremättnad",
        Metric::Temp => "temperatur",
        Metric::Fhr | Metric::Toco | Metric::Sigq => "CTG",
    }
}

fn hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// When the next reading of `s` is due.
fn due(state: &PatientState, s: &Schedule) -> UnixMillis {
    match s.last {
        Some(last) => state.local_time(state.local_day(last) + 1, s.by_min),
        None => {
            let day = state.local_day(state.since);
            let today = state.local_time(day, s.by_min);
            if state.since <= today {
                today
            } else {
                state.local_time(day + 1, s.by_min)
            }
        }
    }
}

fn alert_after_ms(state: &PatientState) -> i64 {
    let t = &state.plan.thresholds;
    let hours = if state.plan.virtual_ward {
        t.missing_alert_virtual_ward_h
    } else {
        t.missing_alert_h
    };
    i64::from(hours) * UnixMillis::HOUR
}

fn remind_after_ms(state: &PatientState) -> i64 {
    i64::from(state.plan.thresholds.remind_after_h) * UnixMillis::HOUR
}

/// Asks to be woken at the next reminder or alert of every schedule item.
fn schedule_wakes(state: &PatientState, ctx: &mut Context<'_>) {
    for s in &state.schedule {
        let due = due(state, s);
        let at = if s.reminded != Some(due) {
            due.plus_millis(remind_after_ms(state))
        } else {
            due.plus_millis(alert_after_ms(state))
        };
        if s.alerted != Some(due) {
            ctx.wake_at.push((at, RuleId::MissingMeasurement));
        }
    }
}

impl Rule for MissingMeasurement {
    fn id(&self) -> RuleId {
        RuleId::MissingMeasurement
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let mut changed = false;
        for i in 0..state.schedule.len() {
            let metric = state.schedule[i].metric;
            let Some(newest) = input
                .observations
                .iter()
                .filter(|o| o.metric == metric)
                .map(|o| o.time)
                .max()
            else {
                continue;
            };
            if state.schedule[i].last.is_some_and(|l| l >= newest) {
                continue;
            }
            let before = due(state, &state.schedule[i]);
            state.schedule[i].last = Some(newest);
            state.schedule[i].device = Some(ctx.device);
            // A second reading the same day moves no deadline.
            changed |= due(state, &state.schedule[i]) != before;
            let s = &mut state.schedule[i];
            if s.alerted.is_some() {
                s.alerted = None;
                ctx.clear(
                    RuleId::MissingMeasurement,
                    None,
                    format!("Mätningen ({}) har kommit.", swedish(metric)),
                    newest,
                );
            }
        }
        if changed {
            schedule_wakes(state, ctx);
        }
    }

    fn on_deadline(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        for i in 0..state.schedule.len() {
            let s = state.schedule[i].clone();
            let due = due(state, &s);
            let (remind_at, alert_at) = (
                due.plus_millis(remind_after_ms(state)),
                due.plus_millis(alert_after_ms(state)),
            );
            if ctx.now >= alert_at && s.alerted != Some(due) {
                state.schedule[i].alerted = Some(due);
                let what = swedish(s.metric);
                let since = match s.last {
                    Some(l) => format!("sedan {}", local_day_hhmm(l, state.tz)),
                    None => "ännu".into(),
                };
                let hours = alert_after_ms(state) / UnixMillis::HOUR;
                let text = format!(
                    "Ingen {what} {since}: väntades dagligen före {}, larm {hours} h efter utsatt tid.",
                    hhmm(s.by_min)
                );
                let threshold = format!(
                    "{what} dagligen före {}, larm efter {hours} h",
                    hhmm(s.by_min)
                );
                let ev = s
                    .last
                    .map(|l| Evidence {
                        time: l,
                        device_id: s
                            .device
                            .map(|d| ctx.device_name(d).to_owned())
                            .unwrap_or_default(),
                        name: s.metric.as_str().to_owned(),
                        value: None,
                        unit: None,
                    })
                    .into_iter()
                    .collect();
                let f = ctx.finding(RuleId::MissingMeasurement, text, threshold, ev, due, due);
                ctx.raise(f);
            } else if ctx.now >= remind_at && s.reminded != Some(due) {
                state.schedule[i].reminded = Some(due);
                if let Some(device) = s.device {
                    let text = format!(
                        "Dags att mäta {}: ingen mätning har kommit i dag.",
                        swedish(s.metric)
                    );
                    ctx.command(device, json!({"cmd": "remind", "text": text}));
                }
            }
        }
        schedule_wakes(state, ctx);
    }

    fn on_plan(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        schedule_wakes(state, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::testing::{Harness, at};

    const H: i64 = UnixMillis::HOUR;

    fn harness(virtual_ward: bool) -> Harness {
        Harness::with_plan(serde_json::json!({
            "rules": ["missing_measurement"],
            "schedule": [{"metric": "weight", "by": "10:00"}],
            "virtual_ward": virtual_ward,
        }))
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
                    "Ingen vikt sedan 1/11 07:30: väntades dagligen före 10:00, larm {alert_h} h efter utsatt tid."
                )
            );
            // The reading clears it.
            h.weight(due.plus_millis((alert_h + 1) * H), 80.2);
            assert!(!h.active(RuleId::MissingMeasurement));
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
}
