//! Re-measure before alarm (ARCHITECTURE §3) for the rules whose single
//! reading may be an artefact: `bp_crisis`, `hypotension`, `heart_rate`,
//! `spo2`.
//!
//! A single reading in the alarming range first asks the device to measure
//! again (once, and only if the reading is fresh: less than 5 min old on
//! arrival). The next reading within 5 min of data time decides: alarming
//! too, and the alert is raised, confirmed; not alarming, and the first is
//! cleared. With no repeat by the time the hub's clock passes the 5 min,
//! the alert is raised anyway, unconfirmed: a dangerous reading is never
//! silent. A normal repeat that arrives after that withdraws it. While the
//! alert is active, further alarming readings update it.
//!
//! The decision looks at the readings around the alarming one in the
//! patient's window, not at the order they arrived in, so a repeat that
//! arrives before the reading it repeats confirms just the same.
//!
//! One generic rule, [`Remeasure`], and a [`Spec`] per clinical rule that
//! says what is measured, what is alarming and how to say it.

use std::marker::PhantomData;

use serde_json::json;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{EventKind, Metric, Observation};

use super::{Context, Decision, Evidence, Input, Rule, RuleId, local_hhmm, sv};
use crate::engine::patient::{PatientState, Remeasured, Vital};
use crate::plans::Thresholds;

/// What one rule with re-measurement looks at.
pub trait Spec: Send + Sync + 'static {
    const RULE: RuleId;
    const SLOT: Remeasured;
    /// The `name` of the `remeasure` command.
    const COMMAND: &'static str;
    /// "Blodtryck", "Puls" …
    const WHAT: &'static str;
    /// Whether the reading measures what this rule looks at.
    fn measured(v: &Vital) -> bool;
    fn alarming(v: &Vital, t: &Thresholds) -> bool;
    /// The value as a nurse reads it: "192/124 mmHg".
    fn show(v: &Vital) -> String;
    fn threshold(t: &Thresholds) -> String;
    fn metrics() -> &'static [Metric];
    /// Anything else the rule does with the input (hypotension's symptoms).
    fn also(_state: &mut PatientState, _input: &Input<'_>, _ctx: &mut Context<'_>) {}
}

pub struct Remeasure<S>(PhantomData<S>);

impl<S> Default for Remeasure<S> {
    fn default() -> Self {
        Remeasure(PhantomData)
    }
}

pub type BpCrisis = Remeasure<BpCrisisSpec>;
pub type Hypotension = Remeasure<HypotensionSpec>;
pub type HeartRate = Remeasure<HeartRateSpec>;
pub type Spo2 = Remeasure<Spo2Spec>;

impl<S: Spec> Rule for Remeasure<S> {
    fn id(&self) -> RuleId {
        S::RULE
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        for v in input.vitals.iter().filter(|v| S::measured(v)) {
            on_reading::<S>(state, *v, ctx);
        }
        S::also(state, input, ctx);
    }

    fn on_deadline(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        let window = state.plan.thresholds.confirm_window_ms();
        // A repeat exactly at the end of the window still counts, so the
        // window has passed only after it.
        if let Some(p) = state.pending[S::SLOT as usize]
            && ctx.now.millis_since(p.time) > window
        {
            state.pending[S::SLOT as usize] = None;
            raise_unconfirmed::<S>(state, p, ctx);
        }
    }
}

fn on_reading<S: Spec>(state: &mut PatientState, r: Vital, ctx: &mut Context<'_>) {
    let plan = state.plan.clone();
    let t = &plan.thresholds;
    let window = t.confirm_window_ms();
    let slot = S::SLOT as usize;
    // A pending reading whose window closed before this one was never
    // repeated in time: raise it unconfirmed first.
    if let Some(p) = state.pending[slot]
        && r.time.millis_since(p.time) > window
    {
        state.pending[slot] = None;
        raise_unconfirmed::<S>(state, p, ctx);
    }
    let prev = state
        .vitals
        .items()
        .rev()
        .find(|x| x.time < r.time && S::measured(x))
        .copied();
    let next = state
        .vitals
        .items()
        .find(|x| x.time > r.time && S::measured(x))
        .copied();
    let alarming = S::alarming(&r, t);

    if alarming && ctx.is_active_at(S::RULE, r.time) {
        // An alarming reading next to this one (either side) confirms it.
        let near = |x: &&Vital| S::alarming(x, t) && (x.time.0 - r.time.0).abs() <= window;
        match prev.as_ref().filter(near).or(next.as_ref().filter(near)) {
            Some(&n) if n.time < r.time => raise_confirmed::<S>(state, n, r, ctx),
            Some(&n) => raise_confirmed::<S>(state, r, n, ctx),
            None => raise_update::<S>(state, r, ctx),
        }
        return;
    }
    // Is this the repeat of the pending reading just before it?
    if let Some(p) = state.pending[slot]
        && prev == Some(p)
        && r.time.millis_since(p.time) <= window
    {
        state.pending[slot] = None;
        if alarming {
            raise_confirmed::<S>(state, p, r, ctx);
        }
        return;
    }
    if !alarming {
        // A normal repeat that came too late to clear an alarming reading
        // in time still proves it wrong: withdraw the unconfirmed alert that
        // reading raised alone (the book withdraws only such an alert).
        if let Some(p) = prev
            && S::alarming(&p, t)
            && r.time.millis_since(p.time) <= window
        {
            ctx.out.push(Decision::Withdraw {
                rule: S::RULE,
                patient_id: ctx.patient_id.to_owned(),
                measurement: None,
                trigger: p.time,
                reason: format!(
                    "Återkallat: ny mätning {} min senare gav {}, utanför larmgränsen.",
                    minutes(r.time.millis_since(p.time)),
                    S::show(&r)
                ),
            });
        }
        return;
    }
    // A repeat after this one may already be here (it arrived first).
    if let Some(n) = next
        && n.time.millis_since(r.time) <= window
    {
        if state.pending[slot] == Some(n) {
            state.pending[slot] = None;
        }
        if S::alarming(&n, t) {
            raise_confirmed::<S>(state, r, n, ctx);
        }
        return;
    }
    state.pending[slot] = Some(r);
    ctx.wake_at.push((r.time.plus_millis(window + 1), S::RULE));
    if ctx.now.millis_since(r.time) < window {
        let reason = format!(
            "{} {} är utanför larmgränsen. Vila 2 minuter och mät igen.",
            S::WHAT,
            S::show(&r)
        );
        ctx.command(
            r.device,
            json!({"cmd": "remeasure", "name": S::COMMAND, "reason": reason}),
        );
    }
}

fn minutes(ms: i64) -> String {
    sv((ms as f64 / 60_000.0).round().max(1.0), 0)
}

fn evidence<S: Spec>(v: &Vital, ctx: &Context<'_>) -> Vec<Evidence> {
    let device = ctx.device_name(v.device);
    S::metrics()
        .iter()
        .filter_map(|&m| {
            let value = match m {
                Metric::Sys => v.sys(),
                Metric::Dia => v.dia(),
                Metric::Hr => v.hr(),
                Metric::Spo2 => v.spo2(),
                _ => None,
            }?;
            Some(Evidence::observation(
                device,
                &Observation {
                    time: v.time,
                    metric: m,
                    value,
                },
            ))
        })
        .collect()
}

fn finding<S: Spec>(
    state: &PatientState,
    first: &Vital,
    last: &Vital,
    confirmed: bool,
    explanation: String,
    ctx: &Context<'_>,
) -> super::Finding {
    let mut ev = evidence::<S>(first, ctx);
    if first.key() != last.key() {
        ev.extend(evidence::<S>(last, ctx));
    }
    let mut f = ctx.finding(
        S::RULE,
        explanation,
        S::threshold(&state.plan.thresholds),
        ev,
        first.time,
        last.time,
    );
    f.confirmed = Some(confirmed);
    f
}

fn raise_confirmed<S: Spec>(
    state: &PatientState,
    first: Vital,
    repeat: Vital,
    ctx: &mut Context<'_>,
) {
    let text = format!(
        "{} {} kl. {}, bekräftat vid ny mätning {} min senare ({}). Gräns: {}.",
        S::WHAT,
        S::show(&first),
        local_hhmm(first.time, state.tz),
        minutes(repeat.time.millis_since(first.time)),
        S::show(&repeat),
        S::threshold(&state.plan.thresholds)
    );
    let f = finding::<S>(state, &first, &repeat, true, text, ctx);
    ctx.raise(f);
}

fn raise_unconfirmed<S: Spec>(state: &PatientState, r: Vital, ctx: &mut Context<'_>) {
    let text = format!(
        "{} {} kl. {}, ej bekräftat: ingen ny mätning inom {} min. Gräns: {}.",
        S::WHAT,
        S::show(&r),
        local_hhmm(r.time, state.tz),
        state.plan.thresholds.confirm_window_min,
        S::threshold(&state.plan.thresholds)
    );
    let f = finding::<S>(state, &r, &r, false, text, ctx);
    ctx.raise(f);
}

fn raise_update<S: Spec>(state: &PatientState, r: Vital, ctx: &mut Context<'_>) {
    let text = format!(
        "{} fortsatt utanför larmgränsen: {} kl. {}. Gräns: {}.",
        S::WHAT,
        S::show(&r),
        local_hhmm(r.time, state.tz),
        S::threshold(&state.plan.thresholds)
    );
    let f = finding::<S>(state, &r, &r, false, text, ctx);
    ctx.raise(f);
}

fn mmhg(v: &Vital) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| sv(v, 0));
    format!("{}/{} mmHg", f(v.sys()), f(v.dia()))
}

pub struct BpCrisisSpec;

impl Spec for BpCrisisSpec {
    const RULE: RuleId = RuleId::BpCrisis;
    const SLOT: Remeasured = Remeasured::BpCrisis;
    const COMMAND: &'static str = "bp";
    const WHAT: &'static str = "Blodtryck";

    fn measured(v: &Vital) -> bool {
        v.sys().is_some() || v.dia().is_some()
    }

    fn alarming(v: &Vital, t: &Thresholds) -> bool {
        v.sys().is_some_and(|s| s >= t.bp_crisis_sys_mmhg)
            || v.dia().is_some_and(|d| d >= t.bp_crisis_dia_mmhg)
    }

    fn show(v: &Vital) -> String {
        mmhg(v)
    }

    fn threshold(t: &Thresholds) -> String {
        format!(
            "systoliskt ≥ {} eller diastoliskt ≥ {} mmHg",
            sv(t.bp_crisis_sys_mmhg, 0),
            sv(t.bp_crisis_dia_mmhg, 0)
        )
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Sys, Metric::Dia]
    }
}

pub struct HypotensionSpec;

impl Spec for HypotensionSpec {
    const RULE: RuleId = RuleId::Hypotension;
    const SLOT: Remeasured = Remeasured::Hypotension;
    const COMMAND: &'static str = "bp";
    const WHAT: &'static str = "Lågt blodtryck";

    fn measured(v: &Vital) -> bool {
        v.sys().is_some()
    }

    fn alarming(v: &Vital, t: &Thresholds) -> bool {
        v.sys().is_some_and(|s| s < t.hypotension_sys_mmhg)
    }

    fn show(v: &Vital) -> String {
        mmhg(v)
    }

    fn threshold(t: &Thresholds) -> String {
        format!(
            "systoliskt < {} mmHg, eller < {} mmHg med symtom inom {} min",
            sv(t.hypotension_sys_mmhg, 0),
            sv(t.hypotension_symptom_sys_mmhg, 0),
            t.hypotension_symptom_window_min
        )
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Sys, Metric::Dia]
    }

    /// The second arm: systolic < 90 with a `patient_symptom` within an hour
    /// before or after. The symptom corroborates the reading, so this arm
    /// raises at once, confirmed, without a re-measurement.
    fn also(state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let t = state.plan.thresholds.clone();
        let window = i64::from(t.hypotension_symptom_window_min) * UnixMillis::MINUTE;
        let low = |v: &Vital| v.sys().is_some_and(|s| s < t.hypotension_symptom_sys_mmhg);
        let mut pairs: Vec<(Vital, UnixMillis)> = Vec::new();
        for v in input.vitals.iter().filter(|v| low(v)) {
            if let Some(s) = state
                .symptoms
                .items()
                .find(|s| (s.0 - v.time.0).abs() <= window)
            {
                pairs.push((*v, *s));
            }
        }
        for e in input
            .events
            .iter()
            .filter(|e| e.kind == EventKind::PatientSymptom)
        {
            let near: Vec<Vital> = state
                .vitals
                .items()
                .filter(|v| low(v) && (e.time.0 - v.time.0).abs() <= window)
                .copied()
                .collect();
            pairs.extend(near.into_iter().map(|v| (v, e.time)));
        }
        for (v, symptom) in pairs {
            let text = format!(
                "Lågt blodtryck {} kl. {} med symtom rapporterat kl. {}. Gräns: {}.",
                mmhg(&v),
                local_hhmm(v.time, state.tz),
                local_hhmm(symptom, state.tz),
                HypotensionSpec::threshold(&t)
            );
            let mut f = finding::<HypotensionSpec>(state, &v, &v, true, text, ctx);
            f.evidence.push(Evidence {
                time: symptom,
                device_id: ctx.device_name(ctx.device).to_owned(),
                name: EventKind::PatientSymptom.as_str().to_owned(),
                value: None,
                unit: None,
            });
            f.first_reading_at = v.time.min(symptom);
            f.last_reading_at = v.time.max(symptom);
            ctx.raise(f);
        }
    }
}

pub struct HeartRateSpec;

impl Spec for HeartRateSpec {
    const RULE: RuleId = RuleId::HeartRate;
    const SLOT: Remeasured = Remeasured::HeartRate;
    const COMMAND: &'static str = "hr";
    const WHAT: &'static str = "Puls";

    fn measured(v: &Vital) -> bool {
        v.hr().is_some()
    }

    fn alarming(v: &Vital, t: &Thresholds) -> bool {
        v.hr()
            .is_some_and(|h| h < t.hr_low_bpm || h > t.hr_high_bpm)
    }

    fn show(v: &Vital) -> String {
        v.hr()
            .map_or("–".into(), |h| format!("{} slag/min", sv(h, 0)))
    }

    fn threshold(t: &Thresholds) -> String {
        format!(
            "under {} eller över {} slag/min",
            sv(t.hr_low_bpm, 0),
            sv(t.hr_high_bpm, 0)
        )
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Hr]
    }
}

pub struct Spo2Spec;

impl Spec for Spo2Spec {
    const RULE: RuleId = RuleId::Spo2;
    const SLOT: Remeasured = Remeasured::Spo2;
    const COMMAND: &'static str = "spo2";
    const WHAT: &'static str = "Syremättnad";

    fn measured(v: &Vital) -> bool {
        v.spo2().is_some()
    }

    fn alarming(v: &Vital, t: &Thresholds) -> bool {
        v.spo2().is_some_and(|s| s < t.spo2_low_pct)
    }

    fn show(v: &Vital) -> String {
        v.spo2().map_or("–".into(), |s| format!("{} %", sv(s, 0)))
    }

    fn threshold(t: &Thresholds) -> String {
        format!("under {} %", sv(t.spo2_low_pct, 0))
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Spo2]
    }
}

#[cfg(test)]
mod tests;
