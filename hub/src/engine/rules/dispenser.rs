//! The medicine dispenser: `missed_dose`, `refill_due`, `dispenser_fault`.
//!
//! - `missed_dose` (adherence, medium): no `dose_taken` with the same dose
//!   id within the plan's window (default 60 min, the end included) of
//!   `dose_due`, found when the hub's clock passes the window; or the
//!   dispenser's own `dose_missed`, at once. Within a pack every
//!   `dose_due` is looked at before any `dose_taken`, whatever the record
//!   order, and a `dose_taken` that arrives before its `dose_due` is kept
//!   for it: a dose taken in time never raises, however its events came.
//!   A `dose_taken` that arrives late but whose time was within the window
//!   withdraws the alert.
//! - `refill_due` (adherence, low): `refill_low`, or `doses_left` covering
//!   at most 2 days of the dose schedule; cleared when a refill brings
//!   `doses_left` back above that.
//! - `dispenser_fault` (technical, medium): a `dispenser_fault` event;
//!   cleared when the same dispenser next hands out a dose (the fault is
//!   mended).

use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Event, EventKind, StatusField, StatusValue};

use super::{
    Context, Decision, Evidence, Input, Rule, RuleId, local_day_hhmm, local_hhmm, sv, sv_exact,
};
use crate::engine::patient::{DeviceRef, Dose, PatientState};

pub struct MissedDose;
pub struct RefillDue;
pub struct DispenserFault;

/// Doses remembered per patient (about two days of a typical schedule).
const DOSES_KEPT: usize = 8;

fn event_evidence(
    device: DeviceRef,
    kind: EventKind,
    time: UnixMillis,
    ctx: &Context<'_>,
) -> Evidence {
    Evidence {
        time,
        device_id: ctx.device_name(device).to_owned(),
        name: kind.as_str().to_owned(),
        value: None,
        unit: None,
    }
}

fn dose_id(e: &Event) -> &str {
    e.text.as_deref().unwrap_or("")
}

/// How long after its due time a dose was taken: "60 min", "60 min 1 s"
/// (never rounded onto the window it is compared with).
fn after_due(ms: i64) -> String {
    let (min, rest) = (
        ms.div_euclid(UnixMillis::MINUTE),
        ms.rem_euclid(UnixMillis::MINUTE),
    );
    if rest == 0 {
        format!("{min} min")
    } else {
        format!("{min} min {} s", sv_exact(rest as f64 / 1000.0, 0, 3))
    }
}

impl Rule for MissedDose {
    fn id(&self) -> RuleId {
        RuleId::MissedDose
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let window = state.plan.thresholds.dose_window_ms();
        // The order of records in a pack says nothing about the order of
        // events: a pack may hold a dose's `dose_taken` before its
        // `dose_due`. So all dues first, then what became of them.
        for kind in [
            EventKind::DoseDue,
            EventKind::DoseTaken,
            EventKind::DoseMissed,
        ] {
            for e in input.events.iter().filter(|e| e.kind == kind) {
                match kind {
                    EventKind::DoseDue => due(state, e, window, ctx),
                    EventKind::DoseTaken => taken(state, e, window, ctx),
                    _ => missed(state, e, ctx),
                }
            }
        }
    }

    fn on_deadline(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        let window = state.plan.thresholds.dose_window_ms();
        // Not taken in time: not at all, or later than the window (taken
        // exactly at its end is in time).
        let late = |d: &Dose, due: UnixMillis| {
            d.taken.is_none_or(|t| t.millis_since(due) > window)
                && ctx.now.millis_since(due) > window
        };
        let overdue: Vec<(Dose, UnixMillis)> = state
            .doses
            .iter()
            .filter(|d| !d.reported_missed)
            .filter_map(|d| {
                d.due
                    .filter(|&due| late(d, due))
                    .map(|due| (d.clone(), due))
            })
            .collect();
        for (d, due) in overdue {
            if let Some(slot) = state.doses.iter_mut().find(|x| x.id == d.id) {
                slot.reported_missed = true;
            }
            let text = match d.taken {
                Some(t) => format!(
                    "Dosen {} (utsatt {}) togs för sent: {} efter utsatt tid.",
                    quoted(&d.id),
                    local_day_hhmm(due, state.tz),
                    after_due(t.millis_since(due))
                ),
                None => format!(
                    "Dosen {} (utsatt {}) är inte tagen {} min efter utsatt tid.",
                    quoted(&d.id),
                    local_day_hhmm(due, state.tz),
                    state.plan.thresholds.dose_window_min
                ),
            };
            let mut ev = vec![event_evidence(d.device, EventKind::DoseDue, due, ctx)];
            if let Some(t) = d.taken {
                ev.push(event_evidence(d.device, EventKind::DoseTaken, t, ctx));
            }
            raise(state, due, text, ev, ctx);
        }
    }
}

/// A `dose_due`: the hub's clock will look for its `dose_taken` when the
/// window has passed.
fn due(state: &mut PatientState, e: &Event, window: i64, ctx: &mut Context<'_>) {
    match state.doses.iter_mut().find(|d| *d.id == *dose_id(e)) {
        // Known already (a second `dose_due` of the id changes nothing).
        Some(d) if d.due.is_some() => return,
        // Its `dose_taken` came first.
        Some(d) => d.due = Some(e.time),
        None => remember(state, dose_id(e), Some(e.time), None, ctx.device, false),
    }
    ctx.wake_at
        .push((e.time.plus_millis(window + 1), RuleId::MissedDose));
}

/// A `dose_taken`: remembered (also before its `dose_due` is known); when
/// it proves an alert already raised wrong (taken in time, delivered
/// late), the alert is withdrawn.
fn taken(state: &mut PatientState, e: &Event, window: i64, ctx: &mut Context<'_>) {
    let Some(d) = state.doses.iter_mut().find(|d| *d.id == *dose_id(e)) else {
        remember(state, dose_id(e), None, Some(e.time), ctx.device, false);
        return;
    };
    if d.taken.is_some_and(|t| t <= e.time) {
        return;
    }
    d.taken = Some(e.time);
    if let Some(due) = d.due
        && d.reported_missed
        && e.time.millis_since(due) <= window
    {
        ctx.out.push(Decision::Withdraw {
            rule: RuleId::MissedDose,
            patient_id: ctx.patient_id.to_owned(),
            measurement: None,
            trigger: due,
            reason: format!(
                "Återkallat: dosen togs kl. {}, inom tiden.",
                local_hhmm(e.time, state.tz)
            ),
        });
    }
}

/// The dispenser's own `dose_missed`: raised at once, unless the dose was
/// taken or an alert for it was raised already.
fn missed(state: &mut PatientState, e: &Event, ctx: &mut Context<'_>) {
    let due = match state.doses.iter_mut().find(|d| *d.id == *dose_id(e)) {
        Some(d) if d.taken.is_none() && !d.reported_missed => {
            d.reported_missed = true;
            *d.due.get_or_insert(e.time)
        }
        Some(_) => return,
        // A dose we never heard was due: remember it, so a second report
        // of it changes nothing.
        None => {
            remember(state, dose_id(e), Some(e.time), None, ctx.device, true);
            e.time
        }
    };
    let text = format!(
        "Dosen {} (utsatt {}) är inte tagen: dispensern rapporterar missad dos.",
        quoted(dose_id(e)),
        local_day_hhmm(due, state.tz)
    );
    let ev = vec![event_evidence(ctx.device, e.kind, e.time, ctx)];
    raise(state, due, text, ev, ctx);
}

/// Keeps a dose (the last `DOSES_KEPT`).
fn remember(
    state: &mut PatientState,
    id: &str,
    due: Option<UnixMillis>,
    taken: Option<UnixMillis>,
    device: DeviceRef,
    reported_missed: bool,
) {
    if state.doses.len() >= DOSES_KEPT {
        state.doses.remove(0);
    }
    state.doses.push(Dose {
        id: id.into(),
        due,
        device,
        taken,
        reported_missed,
    });
}

fn quoted(id: &str) -> String {
    if id.is_empty() {
        "(utan id)".into()
    } else {
        format!("\u{201d}{id}\u{201d}")
    }
}

fn raise(
    state: &PatientState,
    due: UnixMillis,
    explanation: String,
    ev: Vec<Evidence>,
    ctx: &mut Context<'_>,
) {
    let threshold = format!(
        "dosen tagen inom {} min efter utsatt tid",
        state.plan.thresholds.dose_window_min
    );
    let f = ctx.finding(RuleId::MissedDose, explanation, threshold, ev, due, due);
    ctx.raise(f);
}

impl Rule for RefillDue {
    fn id(&self) -> RuleId {
        RuleId::RefillDue
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let per_day = state.plan.doses_per_day() as f64;
        let limit = state.plan.thresholds.refill_days * per_day;
        let threshold = format!(
            "högst {} dygns doser kvar ({} doser)",
            sv_exact(state.plan.thresholds.refill_days, 0, 1),
            sv_exact(limit, 0, 1)
        );
        for e in input
            .events
            .iter()
            .filter(|e| e.kind == EventKind::RefillLow)
        {
            let text = format!(
                "Dispensern behöver fyllas på (rapporterat {}).",
                local_day_hhmm(e.time, state.tz)
            );
            let ev = vec![event_evidence(ctx.device, e.kind, e.time, ctx)];
            let f = ctx.finding(
                RuleId::RefillDue,
                text,
                threshold.clone(),
                ev,
                e.time,
                e.time,
            );
            ctx.raise(f);
        }
        for s in input.status {
            let (StatusField::DosesLeft, StatusValue::Number(left)) = (&s.field, &s.value) else {
                continue;
            };
            state.device_mut(ctx.device).doses_left = Some(*left);
            if *left <= limit {
                let text = format!(
                    "Dispensern har {} doser kvar, vilket räcker högst {} dygn med {} doser om dagen. Fyll på.",
                    sv_exact(*left, 0, 1),
                    sv_exact(state.plan.thresholds.refill_days, 0, 1),
                    sv(per_day, 0)
                );
                let ev = vec![Evidence {
                    time: s.time,
                    device_id: ctx.device_name(ctx.device).to_owned(),
                    name: StatusField::DosesLeft.as_str().to_owned(),
                    value: Some(*left),
                    unit: None,
                }];
                let f = ctx.finding(
                    RuleId::RefillDue,
                    text,
                    threshold.clone(),
                    ev,
                    s.time,
                    s.time,
                );
                ctx.raise(f);
            } else {
                ctx.clear(
                    RuleId::RefillDue,
                    None,
                    format!("Påfylld: {} doser kvar.", sv_exact(*left, 0, 1)),
                    s.time,
                );
            }
        }
    }
}

impl Rule for DispenserFault {
    fn id(&self) -> RuleId {
        RuleId::DispenserFault
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let device = ctx.device;
        for e in input.events {
            match e.kind {
                EventKind::DispenserFault => {
                    state.device_mut(device).fault = true;
                    let what = e
                        .text
                        .as_deref()
                        .map(|t| format!(": {t}"))
                        .unwrap_or_default();
                    let text = format!(
                        "Fel på medicindispensern {}{what}. Doserna kan utebli; kontakta patienten.",
                        local_day_hhmm(e.time, state.tz)
                    );
                    let ev = vec![event_evidence(device, e.kind, e.time, ctx)];
                    let mut f = ctx.finding(
                        RuleId::DispenserFault,
                        text,
                        "felrapport från dispensern".into(),
                        ev,
                        e.time,
                        e.time,
                    );
                    f.device_id = Some(ctx.device_name(device).to_owned());
                    ctx.raise(f);
                }
                EventKind::DoseTaken | EventKind::DoseDue if state.device_mut(device).fault => {
                    state.device_mut(device).fault = false;
                    ctx.clear(
                        RuleId::DispenserFault,
                        Some(device),
                        "Dispensern delar ut doser igen.".into(),
                        e.time,
                    );
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::testing::{Harness, at};

    const MIN: i64 = UnixMillis::MINUTE;

    #[test]
    fn a_dose_not_taken_within_the_window_is_missed() {
        for (taken_after_min, missed) in [
            (None, true),
            (Some(59), false),
            (Some(60), false),
            (Some(61), true),
        ] {
            let mut h = Harness::new();
            let due = at(0, "08:00");
            h.dose(due, EventKind::DoseDue, "d-morning");
            h.tick(due.plus_millis(60 * MIN));
            assert!(
                h.explanations(RuleId::MissedDose).is_empty(),
                "not before the window has passed"
            );
            if let Some(m) = taken_after_min {
                // Delivered as it happened (a late one after the tick above).
                h.dose(due.plus_millis(m * MIN), EventKind::DoseTaken, "d-morning");
            }
            h.tick(due.plus_millis(2 * 60 * MIN));
            assert_eq!(
                h.active(RuleId::MissedDose),
                missed,
                "taken after {taken_after_min:?} min"
            );
        }
    }

    fn due_and_taken(h: &mut Harness, due: UnixMillis, taken_ms: i64, taken_first: bool) {
        let mut pack = vec![
            Harness::dose_event(due, EventKind::DoseDue, "d1"),
            Harness::dose_event(due.plus_millis(taken_ms), EventKind::DoseTaken, "d1"),
        ];
        if taken_first {
            pack.reverse();
        }
        h.events("disp-1", pack);
    }

    /// `dose_due` and `dose_taken` of one dose in one pack (an upload of
    /// what the dispenser kept while offline, or simply a pack after the
    /// dose): taken within the window, nothing is ever raised, in either
    /// record order, whenever the pack arrives.
    #[test]
    fn due_and_taken_in_one_pack_raise_nothing() {
        let due = at(0, "08:00");
        for taken_first in [false, true] {
            for taken_ms in [0, 20 * MIN, 60 * MIN] {
                for arrives_after_ms in [None, Some(61 * MIN), Some(5 * 60 * MIN)] {
                    let mut h = Harness::new();
                    if let Some(a) = arrives_after_ms {
                        h.arrive_at(due.plus_millis(a));
                    }
                    due_and_taken(&mut h, due, taken_ms, taken_first);
                    h.tick(due.plus_millis(24 * 60 * MIN));
                    let case = format!(
                        "taken after {taken_ms} ms, taken first: {taken_first}, arrived after {arrives_after_ms:?}"
                    );
                    assert!(h.explanations(RuleId::MissedDose).is_empty(), "{case}");
                    assert_eq!(h.withdrawals(), 0, "nothing to withdraw: {case}");
                }
            }
        }
    }

    /// The window includes its end: taken exactly 60 min after due is in
    /// time, 60 min and 1 s after is late, and the text says by how much.
    #[test]
    fn taken_at_the_end_of_the_window_or_a_second_later() {
        let due = at(0, "08:00");
        for taken_first in [false, true] {
            let mut h = Harness::new();
            due_and_taken(&mut h, due, 60 * MIN + 1000, taken_first);
            h.tick(due.plus_millis(3 * 60 * MIN));
            assert_eq!(
                h.explanations(RuleId::MissedDose),
                [
                    "Dosen \u{201d}d1\u{201d} (utsatt 1/11 08:00) togs för sent: 60 min 1 s efter utsatt tid."
                ],
                "taken first: {taken_first}"
            );
            let f = h.raises(RuleId::MissedDose).next().expect("raised");
            let names: Vec<&str> = f.evidence.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, ["dose_due", "dose_taken"]);
        }
    }

    /// The plan's window, 5 min to 5 h, with the same boundary.
    #[test]
    fn the_plans_window_from_5_min_to_5_h() {
        let due = at(0, "08:00");
        for (window_min, taken_ms, missed) in [
            (5, 5 * MIN, false),
            (5, 5 * MIN + 1000, true),
            (300, 300 * MIN, false),
            (300, 300 * MIN + 1000, true),
        ] {
            let mut h = Harness::with_plan(
                serde_json::json!({"thresholds": {"dose_window_min": window_min}}),
            );
            due_and_taken(&mut h, due, taken_ms, false);
            h.tick(due.plus_millis(24 * 60 * MIN));
            assert_eq!(
                h.explanations(RuleId::MissedDose).len(),
                usize::from(missed),
                "window {window_min} min, taken after {taken_ms} ms"
            );
            // Nothing taken at all: raised when the window has passed.
            let mut h = Harness::with_plan(
                serde_json::json!({"thresholds": {"dose_window_min": window_min}}),
            );
            h.dose(due, EventKind::DoseDue, "d1");
            h.tick(due.plus_millis(i64::from(window_min) * MIN));
            assert!(!h.active(RuleId::MissedDose), "window {window_min} min");
            h.tick(due.plus_millis(i64::from(window_min) * MIN + 1));
            assert!(h.active(RuleId::MissedDose), "window {window_min} min");
        }
    }

    /// A `dose_taken` that arrives in a message before the one with its
    /// `dose_due` (both late) is kept for it.
    #[test]
    fn taken_arriving_before_its_due_is_kept() {
        let due = at(0, "08:00");
        let mut h = Harness::new();
        h.arrive_at(due.plus_millis(3 * 60 * MIN));
        h.dose(due.plus_millis(10 * MIN), EventKind::DoseTaken, "d1");
        h.dose(due, EventKind::DoseDue, "d1");
        h.tick(due.plus_millis(24 * 60 * MIN));
        assert!(h.explanations(RuleId::MissedDose).is_empty());
        // Taken too late, in the same order: raised, once.
        let mut h = Harness::new();
        h.arrive_at(due.plus_millis(3 * 60 * MIN));
        h.dose(due.plus_millis(90 * MIN), EventKind::DoseTaken, "d1");
        h.dose(due, EventKind::DoseDue, "d1");
        h.tick(due.plus_millis(24 * 60 * MIN));
        assert_eq!(
            h.explanations(RuleId::MissedDose),
            [
                "Dosen \u{201d}d1\u{201d} (utsatt 1/11 08:00) togs för sent: 90 min efter utsatt tid."
            ]
        );
    }

    #[test]
    fn the_text_names_the_dose_and_the_time() {
        let mut h = Harness::new();
        let due = at(0, "08:00");
        h.dose(due, EventKind::DoseDue, "d-morning");
        h.tick(due.plus_millis(61 * MIN));
        assert_eq!(
            h.explanations(RuleId::MissedDose),
            [
                "Dosen \u{201d}d-morning\u{201d} (utsatt 1/11 08:00) är inte tagen 60 min efter utsatt tid."
            ]
        );
    }

    #[test]
    fn a_late_event_of_a_dose_taken_in_time_withdraws() {
        let mut h = Harness::new();
        let due = at(0, "08:00");
        h.dose(due, EventKind::DoseDue, "d1");
        h.tick(due.plus_millis(90 * MIN));
        assert!(h.active(RuleId::MissedDose));
        // The dispenser was offline: the event of 08:20 arrives at 09:40.
        h.arrive_at(due.plus_millis(100 * MIN));
        h.dose(due.plus_millis(20 * MIN), EventKind::DoseTaken, "d1");
        assert!(!h.active(RuleId::MissedDose));
        assert_eq!(h.withdrawals(), 1);
    }

    #[test]
    fn the_dispensers_own_report_raises_at_once() {
        let mut h = Harness::new();
        let due = at(0, "20:00");
        h.dose(due, EventKind::DoseDue, "d-evening");
        h.dose(
            due.plus_millis(60 * MIN),
            EventKind::DoseMissed,
            "d-evening",
        );
        assert!(h.active(RuleId::MissedDose));
        // The deadline finds it filed already: one alert, one raise.
        h.tick(due.plus_millis(120 * MIN));
        assert_eq!(h.explanations(RuleId::MissedDose).len(), 1);
    }

    #[test]
    fn refill_below_two_days_and_clears_when_refilled() {
        let mut h = Harness::with_plan(serde_json::json!({
            "doses": [{"name": "morgon", "at": "08:00"}, {"name": "kväll", "at": "20:00"}]
        }));
        let t = at(0, "09:00");
        h.doses_left(t, 5.0);
        assert!(!h.active(RuleId::RefillDue), "5 doses > 2 days × 2 doses");
        h.doses_left(t.plus_millis(MIN), 4.0);
        assert!(h.active(RuleId::RefillDue), "4 doses = 2 days × 2 doses");
        assert_eq!(
            h.explanations(RuleId::RefillDue),
            [
                "Dispensern har 4 doser kvar, vilket räcker högst 2 dygn med 2 doser om dagen. Fyll på."
            ]
        );
        h.doses_left(t.plus_millis(2 * MIN), 28.0);
        assert!(!h.active(RuleId::RefillDue), "refilled");
        h.dose(t.plus_millis(3 * MIN), EventKind::RefillLow, "");
        assert!(h.active(RuleId::RefillDue));
    }

    #[test]
    fn a_fault_clears_when_the_dispenser_works_again() {
        let mut h = Harness::new();
        let t = at(0, "09:00");
        h.dose(t, EventKind::DispenserFault, "jam");
        assert!(h.active_device(RuleId::DispenserFault, "disp-1"));
        h.dose(t.plus_millis(MIN), EventKind::DoseDue, "d2");
        assert!(!h.active_device(RuleId::DispenserFault, "disp-1"));
    }
}
