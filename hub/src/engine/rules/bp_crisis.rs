//! `bp_crisis`: systolic ≥ 180 or diastolic ≥ 120 mmHg, confirmed by a
//! repeat (ARCHITECTURE §3, "Re-measure before alarm").
//!
//! A single crisis reading first asks the cuff for a new measurement (once,
//! and only if the reading is fresh: less than 5 min old on arrival). The
//! next reading within 5 min of data time decides: in crisis, the alert is
//! raised, confirmed; not in crisis, the first reading is cleared. With no
//! repeat by the time the hub's clock passes the 5 min, the alert is raised
//! anyway, unconfirmed: a dangerous reading is never silent. While the alert
//! is active, further crisis readings update it.
//!
//! The decision looks at the readings around the crisis reading in the
//! patient's window, not at the order they arrived in, so a repeat that
//! arrives before the reading it repeats confirms just the same.

use serde_json::json;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Metric, Observation};

use super::{Context, Decision, Evidence, Finding, Input, Rule, RuleId, local_hhmm, sv};
use crate::engine::patient::{BpReading, Inserted, PatientState};

pub struct BpCrisis;

impl Rule for BpCrisis {
    fn id(&self) -> RuleId {
        RuleId::BpCrisis
    }

    fn on_input(&self, state: &mut PatientState, input: Input<'_>, ctx: &mut Context<'_>) {
        let Input::Observations(obs) = input else {
            return;
        };
        for reading in readings(obs, ctx) {
            if state.bp.insert(reading, |r| r.time) == Inserted::New {
                on_reading(state, reading, ctx);
            }
        }
    }

    fn on_deadline(&self, state: &mut PatientState, now: UnixMillis, ctx: &mut Context<'_>) {
        // A repeat exactly at the end of the window still counts, so the
        // window has passed only after it.
        if let Some(p) = state.bp_pending
            && now.millis_since(p.time) > state.thresholds.confirm_window_ms
        {
            state.bp_pending = None;
            raise_unconfirmed(state, p, ctx);
        }
    }
}

/// Pairs `sys` and `dia` taken at the same time into readings, in time order.
fn readings(obs: &[Observation], ctx: &Context<'_>) -> Vec<BpReading> {
    let mut out: Vec<BpReading> = Vec::new();
    for o in obs {
        let (sys, dia) = match o.metric {
            Metric::Sys => (Some(o.value), None),
            Metric::Dia => (None, Some(o.value)),
            _ => continue,
        };
        match out.iter_mut().find(|r| r.time == o.time) {
            Some(r) => {
                if sys.is_some() {
                    r.sys = sys;
                }
                if dia.is_some() {
                    r.dia = dia;
                }
            }
            None => out.push(BpReading {
                time: o.time,
                sys,
                dia,
                device: ctx.device,
            }),
        }
    }
    out.sort_by_key(|r| r.time);
    out
}

fn is_crisis(state: &PatientState, r: &BpReading) -> bool {
    let t = &state.thresholds;
    r.sys.is_some_and(|s| s >= t.bp_crisis_sys) || r.dia.is_some_and(|d| d >= t.bp_crisis_dia)
}

fn on_reading(state: &mut PatientState, r: BpReading, ctx: &mut Context<'_>) {
    let window = state.thresholds.confirm_window_ms;
    // A pending crisis whose window closed before this reading was never
    // repeated in time: raise it unconfirmed first.
    if let Some(p) = state.bp_pending
        && r.time.millis_since(p.time) > window
    {
        state.bp_pending = None;
        raise_unconfirmed(state, p, ctx);
    }
    let prev = state.bp.items().rev().find(|x| x.time < r.time).copied();
    let next = state.bp.items().find(|x| x.time > r.time).copied();
    let crisis = is_crisis(state, &r);

    if crisis && ctx.is_active(RuleId::BpCrisis) {
        // A crisis reading next to this one (either side) confirms it.
        let near = |x: &&BpReading| is_crisis(state, x) && (x.time.0 - r.time.0).abs() <= window;
        match prev.as_ref().filter(near).or(next.as_ref().filter(near)) {
            Some(&n) if n.time < r.time => raise_confirmed(state, n, r, ctx),
            Some(&n) => raise_confirmed(state, r, n, ctx),
            None => raise_update(state, r, ctx),
        }
        return;
    }
    // Is this the repeat of the pending crisis just before it?
    if let Some(p) = state.bp_pending
        && prev == Some(p)
        && r.time.millis_since(p.time) <= window
    {
        state.bp_pending = None;
        if crisis {
            raise_confirmed(state, p, r, ctx);
        }
        return;
    }
    if !crisis {
        // A normal repeat that came too late to clear a crisis reading in
        // time still proves it wrong: withdraw the unconfirmed alert that
        // reading raised alone (the book withdraws only such an alert).
        if let Some(p) = prev
            && is_crisis(state, &p)
            && r.time.millis_since(p.time) <= window
        {
            ctx.out.push(Decision::Withdraw {
                rule: RuleId::BpCrisis,
                patient_id: ctx.patient_id.to_owned(),
                trigger: p.time,
                reason: format!(
                    "Återkallat: ny mätning {} min senare gav {} mmHg, under gränsen.",
                    sv((r.time.millis_since(p.time) as f64 / 60_000.0).round(), 0),
                    pressure(&r)
                ),
            });
        }
        return;
    }
    // A repeat after this one may already be here (it arrived first).
    if let Some(n) = next
        && n.time.millis_since(r.time) <= window
    {
        if state.bp_pending == Some(n) {
            state.bp_pending = None;
        }
        if is_crisis(state, &n) {
            raise_confirmed(state, r, n, ctx);
        }
        return;
    }
    state.bp_pending = Some(r);
    ctx.wake_at
        .push((r.time.plus_millis(window + 1), RuleId::BpCrisis));
    if ctx.arrived.millis_since(r.time) < window {
        let reason = format!(
            "Blodtrycket var mycket högt ({} mmHg). Vila 2 minuter och mät igen.",
            pressure(&r)
        );
        ctx.out.push(Decision::Command {
            device_id: ctx.device_name(r.device).to_owned(),
            json: json!({"cmd": "remeasure", "name": "bp", "reason": reason}).to_string(),
        });
    }
}

/// "192/124", or the one value there is.
fn pressure(r: &BpReading) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| sv(v, 0));
    format!("{}/{}", f(r.sys), f(r.dia))
}

fn threshold(state: &PatientState) -> String {
    let t = &state.thresholds;
    format!(
        "systoliskt ≥ {} eller diastoliskt ≥ {} mmHg",
        sv(t.bp_crisis_sys, 0),
        sv(t.bp_crisis_dia, 0)
    )
}

fn evidence(r: &BpReading, ctx: &Context<'_>) -> Vec<Evidence> {
    let device = ctx.device_name(r.device);
    [(Metric::Sys, r.sys), (Metric::Dia, r.dia)]
        .into_iter()
        .filter_map(|(m, v)| {
            v.map(|v| {
                Evidence::observation(
                    device,
                    &Observation {
                        time: r.time,
                        metric: m,
                        value: v,
                    },
                )
            })
        })
        .collect()
}

fn finding(
    state: &PatientState,
    first: &BpReading,
    last: &BpReading,
    confirmed: bool,
    explanation: String,
    ctx: &Context<'_>,
) -> Finding {
    let mut ev = evidence(first, ctx);
    if first.time != last.time {
        ev.extend(evidence(last, ctx));
    }
    Finding {
        rule: RuleId::BpCrisis,
        patient_id: Some(ctx.patient_id.to_owned()),
        device_id: None,
        confirmed: Some(confirmed),
        explanation,
        threshold: threshold(state),
        evidence: ev,
        first_reading_at: first.time,
        last_reading_at: last.time,
    }
}

fn raise_confirmed(
    state: &PatientState,
    first: BpReading,
    repeat: BpReading,
    ctx: &mut Context<'_>,
) {
    let minutes = (repeat.time.millis_since(first.time) as f64 / 60_000.0)
        .round()
        .max(1.0);
    let text = format!(
        "Blodtryck {} mmHg kl. {}, bekräftat vid ny mätning {} min senare ({} mmHg). Gräns: {}.",
        pressure(&first),
        local_hhmm(first.time, state.tz),
        sv(minutes, 0),
        pressure(&repeat),
        threshold(state)
    );
    let f = finding(state, &first, &repeat, true, text, ctx);
    ctx.out.push(Decision::Raise(f));
}

fn raise_unconfirmed(state: &PatientState, r: BpReading, ctx: &mut Context<'_>) {
    let text = format!(
        "Blodtryck {} mmHg kl. {}, ej bekräftat: ingen ny mätning inom {} min. Gräns: {}.",
        pressure(&r),
        local_hhmm(r.time, state.tz),
        state.thresholds.confirm_window_ms / UnixMillis::MINUTE,
        threshold(state)
    );
    let f = finding(state, &r, &r, false, text, ctx);
    ctx.out.push(Decision::Raise(f));
}

fn raise_update(state: &PatientState, r: BpReading, ctx: &mut Context<'_>) {
    let text = format!(
        "Blodtryck fortsatt mycket högt: {} mmHg kl. {}. Gräns: {}.",
        pressure(&r),
        local_hhmm(r.time, state.tz),
        threshold(state)
    );
    let f = finding(state, &r, &r, false, text, ctx);
    ctx.out.push(Decision::Raise(f));
}

#[cfg(test)]
mod tests {
    use super::*;
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
            h.arrive_at(t);
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
        assert_eq!(h.book.active().count(), 1);
        // Taken 4 min after the first, delivered after the alert was raised.
        h.arrive_at(t.plus_millis(7 * MIN));
        h.bp(t.plus_millis(4 * MIN), 140.0, 85.0);
        assert_eq!(h.withdrawals(), 1);
        assert_eq!(h.book.active().count(), 0);
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
    fn while_active_crisis_readings_update_and_send_nothing() {
        let mut h = Harness::new();
        let t = at(0, "08:00");
        h.arrive_at(t);
        h.bp(t, 192.0, 124.0);
        h.bp(t.plus_millis(MIN), 190.0, 122.0);
        h.bp(t.plus_millis(20 * MIN), 195.0, 125.0);
        assert_eq!(h.explanations(RuleId::BpCrisis).len(), 2);
        assert_eq!(h.commands(), 1);
    }
}
