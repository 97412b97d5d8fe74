//! `missing_measurement` (missing data, medium): a scheduled daily reading
//! (e.g. weight by 10:00) has not come. Each scheduled measurement has its
//! own absence and its own alert (the measurement is part of the alert's
//! key), so a blood-pressure reading never silences a missing weight.
//!
//! "Due" is the scheduled time on the day after the last reading of that
//! measurement (or, before any reading, the first scheduled time after the
//! engine began watching the patient). At due + 2 h the patient's device
//! gets a `remind` command, but only in her daytime (default 08–21 local)
//! of the day it is due: never at night, never for a day that has passed.
//! At due + 24 h (virtual ward) or + 48 h the alert is raised.
//!
//! Late data is live data. Absences are found by the hub's clock passing a
//! deadline computed from data time; while a patient's devices upload late
//! data (older than 5 min on arrival), absences wait until the upload has
//! been quiet for the plan's `late_data_settle_s` (2 min by default), since the readings that fill them
//! may be in the next messages. A reading that arrives after its absence
//! was alerted, but was taken before the alert's deadline, shows the alert
//! was wrong: it is **withdrawn**. A reading taken after the deadline ends
//! a real absence: the alert is **cleared**. Either way an active alert
//! never stands beside a later reading of its kind.
//!
//! The alert's reading time (`first_reading_at` = `last_reading_at`) is the
//! last reading it names: a reading newer than that resolves it, which also
//! holds for an alert the store kept across a restart.

use serde_json::json;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;

use super::{Context, Decision, Evidence, Input, Rule, RuleId, local_day_hhmm};
use crate::engine::patient::{PatientState, Schedule};

pub struct MissingMeasurement;

/// The measurement's name in a Swedish sentence, with the "none" that
/// agrees with it: "Ingen vikt", "Inget blodtryck".
fn swedish(metric: Metric) -> (&'static str, &'static str) {
    match metric {
        Metric::Weight => ("Ingen", "vikt"),
        Metric::Sys | Metric::Dia | Metric::Map => ("Inget", "blodtryck"),
        Metric::Hr => ("Ingen", "puls"),
        Metric::Spo2 => ("Ingen", "syremättnad"),
        Metric::Temp => ("Ingen", "temperatur"),
        Metric::Fhr | Metric::Toco | Metric::Sigq => ("Inget", "CTG"),
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

/// When the absence of the reading due at `due` is alerted. (While late
/// data is still arriving the engine holds the deadline back; see
/// `RuleId::judges_absence`.)
fn alert_at(state: &PatientState, due: UnixMillis) -> UnixMillis {
    due.plus_millis(alert_after_ms(state))
}

/// The patient's daytime on the day `due` falls on: `[from, until)`.
fn daytime(state: &PatientState, due: UnixMillis) -> (UnixMillis, UnixMillis) {
    let t = &state.plan.thresholds;
    let day = state.local_day(due);
    (
        state.local_time(day, t.remind_from_h * 60),
        state.local_time(day, t.remind_until_h * 60),
    )
}

/// When to remind the patient of the reading due at `due`, if at all: two
/// hours after it, within her daytime that day.
fn remind_at(state: &PatientState, due: UnixMillis) -> Option<UnixMillis> {
    let (from, until) = daytime(state, due);
    let after = i64::from(state.plan.thresholds.remind_after_h) * UnixMillis::HOUR;
    let at = due.plus_millis(after).max(from);
    (at < until).then_some(at)
}

/// Asks to be woken at the next reminder or alert of every schedule item.
fn schedule_wakes(state: &PatientState, ctx: &mut Context<'_>) {
    for s in &state.schedule {
        let due = due(state, s);
        if s.alerted.is_some_and(|(d, _)| d == due) {
            continue;
        }
        let remind = (s.reminded != Some(due))
            .then(|| remind_at(state, due))
            .flatten();
        let at = remind.unwrap_or_else(|| alert_at(state, due));
        ctx.wake_at.push((at, RuleId::MissingMeasurement));
    }
}

/// Ends the alert of an absence that `reading` fills: withdrawn when the
/// reading was taken before the alert's deadline (it only arrived late),
/// cleared otherwise. The clear also ends an alert this engine did not
/// raise (kept by the store across a restart) if it names an older
/// reading; after a withdrawal it finds nothing left to do.
fn resolve(state: &PatientState, s: &Schedule, reading: UnixMillis, ctx: &mut Context<'_>) {
    let (_, what) = swedish(s.metric);
    let when = local_day_hhmm(reading, state.tz);
    let measurement = Some(s.metric.as_str().to_owned());
    if let Some((due, named)) = s.alerted
        && reading < due.plus_millis(alert_after_ms(state))
    {
        ctx.out.push(Decision::Withdraw {
            rule: RuleId::MissingMeasurement,
            patient_id: ctx.patient_id.to_owned(),
            measurement: measurement.clone(),
            trigger: named,
            reason: format!(
                "Återkallat: mätningen ({what}) togs {when}, i tid, men kom fram sent."
            ),
        });
    }
    if s.alerted.is_some() || (ctx.active)(RuleId::MissingMeasurement, None) {
        ctx.out.push(Decision::Clear {
            rule: RuleId::MissingMeasurement,
            patient_id: ctx.patient_id.to_owned(),
            device_id: None,
            measurement,
            reason: format!("Mätningen ({what}) har kommit: {when}."),
            at: reading,
        });
    }
}

/// Raises the absence of the reading of `s` due at `due`.
fn raise(state: &PatientState, s: &Schedule, due: UnixMillis, ctx: &mut Context<'_>) {
    let (none, what) = swedish(s.metric);
    let hours = alert_after_ms(state) / UnixMillis::HOUR;
    let since = match s.last {
        Some(l) => format!("sedan {}", local_day_hhmm(l, state.tz)),
        None => "ännu".into(),
    };
    let text = format!(
        "{none} {what} {since}: väntades senast {}, larm {hours} h efter utsatt tid.",
        local_day_hhmm(due, state.tz)
    );
    let threshold = format!(
        "{what} dagligen före {}, larm efter {hours} h",
        hhmm(s.by_min)
    );
    let named = s.last.unwrap_or(state.since);
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
    let mut f = ctx.finding(
        RuleId::MissingMeasurement,
        text,
        threshold,
        ev,
        named,
        named,
    );
    f.measurement = Some(s.metric.as_str().to_owned());
    ctx.raise(f);
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
            let s = &mut state.schedule[i];
            s.last = Some(newest);
            s.device = Some(ctx.device);
            // A second reading the same day moves no deadline.
            if due(state, &state.schedule[i]) == before {
                continue;
            }
            changed = true;
            resolve(state, &state.schedule[i], newest, ctx);
            state.schedule[i].alerted = None;
        }
        if changed {
            schedule_wakes(state, ctx);
        }
    }

    fn on_deadline(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        for i in 0..state.schedule.len() {
            let s = state.schedule[i].clone();
            let due = due(state, &s);
            if s.alerted.is_some_and(|(d, _)| d == due) {
                continue;
            }
            if ctx.now >= alert_at(state, due) {
                state.schedule[i].alerted = Some((due, s.last.unwrap_or(state.since)));
                raise(state, &s, due, ctx);
                continue;
            }
            if s.reminded == Some(due) {
                continue;
            }
            match remind_at(state, due) {
                Some(at) if ctx.now >= at => {
                    state.schedule[i].reminded = Some(due);
                    // The day may have passed while the hub was behind.
                    let (_, until) = daytime(state, due);
                    if let (Some(device), true) = (s.device, ctx.now < until) {
                        let (_, what) = swedish(s.metric);
                        let text = format!(
                            "Dags att mäta {what}: ingen mätning har kommit i dag (före {}).",
                            hhmm(s.by_min)
                        );
                        ctx.command(device, json!({"cmd": "remind", "text": text}));
                    }
                }
                Some(_) => {}
                None => state.schedule[i].reminded = Some(due),
            }
        }
        schedule_wakes(state, ctx);
    }

    fn on_plan(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        for s in std::mem::take(&mut state.unscheduled) {
            let (_, what) = swedish(s.metric);
            ctx.out.push(Decision::Clear {
                rule: RuleId::MissingMeasurement,
                patient_id: ctx.patient_id.to_owned(),
                device_id: None,
                measurement: Some(s.metric.as_str().to_owned()),
                reason: format!("Mätningen ({what}) ingår inte längre i planen."),
                // After the reading the alert names: the plan ends it now.
                at: s
                    .alerted
                    .map_or(ctx.now, |(_, named)| ctx.now.max(named.plus_millis(1))),
            });
        }
        schedule_wakes(state, ctx);
    }
}

#[cfg(test)]
mod tests;
