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
//! "Within 5 min" includes the 5 min: a repeat taken 5:00.000 after the
//! first confirms it, one taken 5:00.001 after it does not (it is a reading
//! of its own, and the first is raised unconfirmed).
//!
//! The decision looks at the readings around the alarming one in the
//! patient's window, not at the order they arrived in, so a repeat that
//! arrives before the reading it repeats confirms just the same.
//!
//! `hypotension` has two arms: systolic < 80, or systolic < 90 with a
//! `patient_symptom` within an hour before or after the reading (the hour
//! included). The symptom makes the reading alarming; it does not confirm
//! it: only a repeat does, as for the other rules. A symptom reported after
//! the reading makes it alarming from then on, and it is judged then (as a
//! reading that arrived at that moment).
//!
//! One generic rule, [`Remeasure`], and a [`Spec`] per clinical rule that
//! says what is measured, what is alarming and how to say it.

use std::marker::PhantomData;

use serde_json::json;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{EventKind, Metric, Observation};

use super::{Context, Decision, Evidence, Input, Rule, RuleId, local_hhmm, sv, sv_exact};
use crate::engine::patient::{PatientState, Remeasured, Symptom, Vital};
use crate::plans::Thresholds;

/// What a reading is judged against: the plan's thresholds and the
/// patient's recent symptoms (hypotension's second arm).
pub struct Criterion<'a> {
    pub t: &'a Thresholds,
    pub symptoms: &'a [Symptom],
}

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
    fn alarming(v: &Vital, c: &Criterion<'_>) -> bool;
    /// What else, besides the reading, made it alarming (hypotension's
    /// symptom); named in the alert's text and evidence.
    fn corroboration<'c>(_v: &Vital, _c: &Criterion<'c>) -> Option<&'c Symptom> {
        None
    }
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
    let c = Criterion {
        t,
        symptoms: &state.symptoms,
    };
    let is_alarming = |v: &Vital| S::alarming(v, &c);
    let alarming = is_alarming(&r);
    let near = |x: &Vital| is_alarming(x) && (x.time.0 - r.time.0).abs() <= window;
    let (prev_near, next_near) = (prev.filter(near), next.filter(near));

    if alarming && ctx.is_active_at(S::RULE, r.time) {
        // An alarming reading next to this one (either side) confirms it.
        match (prev_near, next_near) {
            (Some(n), _) => raise_confirmed::<S>(state, n, r, ctx),
            (None, Some(n)) => raise_confirmed::<S>(state, r, n, ctx),
            (None, None) => raise_update::<S>(state, r, ctx),
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
            && is_alarming(&p)
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
    // An alarming reading just before this one, pending no more (it became
    // alarming only now, with a symptom reported after both): the pair
    // confirms.
    if let Some(p) = prev_near {
        if state.pending[slot] == Some(p) {
            state.pending[slot] = None;
        }
        raise_confirmed::<S>(state, p, r, ctx);
        return;
    }
    // A repeat after this one may already be here (it arrived first).
    if let Some(n) = next
        && n.time.millis_since(r.time) <= window
    {
        if state.pending[slot] == Some(n) {
            state.pending[slot] = None;
        }
        if is_alarming(&n) {
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

/// The symptom that made `first` (or else `last`) alarming, if one did:
/// words for the text (" med symtom ”yrsel” rapporterat kl. 08:30") and
/// the event as evidence.
fn corroboration<S: Spec>(
    state: &PatientState,
    first: &Vital,
    last: &Vital,
    ctx: &Context<'_>,
) -> Option<(String, Evidence)> {
    let c = Criterion {
        t: &state.plan.thresholds,
        symptoms: &state.symptoms,
    };
    let s = S::corroboration(first, &c).or_else(|| S::corroboration(last, &c))?;
    let what = if s.text.is_empty() {
        String::new()
    } else {
        format!(" \u{201d}{}\u{201d}", s.text)
    };
    let words = format!(
        " med symtom{what} rapporterat kl. {}",
        local_hhmm(s.time, state.tz)
    );
    let ev = Evidence {
        time: s.time,
        device_id: ctx.device_name(s.device).to_owned(),
        name: EventKind::PatientSymptom.as_str().to_owned(),
        value: None,
        unit: None,
    };
    Some((words, ev))
}

fn finding<S: Spec>(
    state: &PatientState,
    first: &Vital,
    last: &Vital,
    confirmed: bool,
    explanation: String,
    symptom: Option<Evidence>,
    ctx: &Context<'_>,
) -> super::Finding {
    let mut ev = evidence::<S>(first, ctx);
    if first.key() != last.key() {
        ev.extend(evidence::<S>(last, ctx));
    }
    ev.extend(symptom);
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
    let (words, symptom) = corroboration::<S>(state, &first, &repeat, ctx).unzip();
    let text = format!(
        "{} {} kl. {}{}, bekräftat vid ny mätning {} min senare ({}). Gräns: {}.",
        S::WHAT,
        S::show(&first),
        local_hhmm(first.time, state.tz),
        words.unwrap_or_default(),
        minutes(repeat.time.millis_since(first.time)),
        S::show(&repeat),
        S::threshold(&state.plan.thresholds)
    );
    let f = finding::<S>(state, &first, &repeat, true, text, symptom, ctx);
    ctx.raise(f);
}

fn raise_unconfirmed<S: Spec>(state: &PatientState, r: Vital, ctx: &mut Context<'_>) {
    let (words, symptom) = corroboration::<S>(state, &r, &r, ctx).unzip();
    let text = format!(
        "{} {} kl. {}{}, ej bekräftat: ingen ny mätning inom {} min. Gräns: {}.",
        S::WHAT,
        S::show(&r),
        local_hhmm(r.time, state.tz),
        words.unwrap_or_default(),
        state.plan.thresholds.confirm_window_min,
        S::threshold(&state.plan.thresholds)
    );
    let f = finding::<S>(state, &r, &r, false, text, symptom, ctx);
    ctx.raise(f);
}

fn raise_update<S: Spec>(state: &PatientState, r: Vital, ctx: &mut Context<'_>) {
    let (words, symptom) = corroboration::<S>(state, &r, &r, ctx).unzip();
    let text = format!(
        "{} fortsatt utanför larmgränsen: {} kl. {}{}. Gräns: {}.",
        S::WHAT,
        S::show(&r),
        local_hhmm(r.time, state.tz),
        words.unwrap_or_default(),
        S::threshold(&state.plan.thresholds)
    );
    let f = finding::<S>(state, &r, &r, false, text, symptom, ctx);
    ctx.raise(f);
}

/// A vital sign as the window keeps it (tenths): "91,6" or "91".
fn reading(v: f64) -> String {
    sv_exact(v, 0, 1)
}

fn mmhg(v: &Vital) -> String {
    let f = |v: Option<f64>| v.map_or("–".to_owned(), reading);
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

    fn alarming(v: &Vital, c: &Criterion<'_>) -> bool {
        v.sys().is_some_and(|s| s >= c.t.bp_crisis_sys_mmhg)
            || v.dia().is_some_and(|d| d >= c.t.bp_crisis_dia_mmhg)
    }

    fn show(v: &Vital) -> String {
        mmhg(v)
    }

    fn threshold(t: &Thresholds) -> String {
        format!(
            "systoliskt ≥ {} eller diastoliskt ≥ {} mmHg",
            reading(t.bp_crisis_sys_mmhg),
            reading(t.bp_crisis_dia_mmhg)
        )
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Sys, Metric::Dia]
    }
}

pub struct HypotensionSpec;

impl HypotensionSpec {
    /// Systolic low enough for the second arm (with a symptom).
    fn low(v: &Vital, t: &Thresholds) -> bool {
        v.sys().is_some_and(|s| s < t.hypotension_symptom_sys_mmhg)
    }

    /// Systolic low enough for the first arm, alone.
    fn very_low(v: &Vital, t: &Thresholds) -> bool {
        v.sys().is_some_and(|s| s < t.hypotension_sys_mmhg)
    }

    /// Whether `symptom` lies within the plan's window around `v` (an hour
    /// before or after by default, the hour included).
    fn around(v: &Vital, symptom: UnixMillis, t: &Thresholds) -> bool {
        let window = i64::from(t.hypotension_symptom_window_min) * UnixMillis::MINUTE;
        (symptom.0 - v.time.0).abs() <= window
    }
}

impl Spec for HypotensionSpec {
    const RULE: RuleId = RuleId::Hypotension;
    const SLOT: Remeasured = Remeasured::Hypotension;
    const COMMAND: &'static str = "bp";
    const WHAT: &'static str = "Lågt blodtryck";

    fn measured(v: &Vital) -> bool {
        v.sys().is_some()
    }

    fn alarming(v: &Vital, c: &Criterion<'_>) -> bool {
        Self::very_low(v, c.t) || Self::corroboration(v, c).is_some()
    }

    /// The symptom nearest the reading within the window, when the
    /// reading is low enough for the second arm.
    fn corroboration<'c>(v: &Vital, c: &Criterion<'c>) -> Option<&'c Symptom> {
        if !Self::low(v, c.t) {
            return None;
        }
        c.symptoms
            .iter()
            .filter(|s| Self::around(v, s.time, c.t))
            .min_by_key(|s| (s.time.0 - v.time.0).abs())
    }

    fn show(v: &Vital) -> String {
        mmhg(v)
    }

    fn threshold(t: &Thresholds) -> String {
        format!(
            "systoliskt < {} mmHg, eller < {} mmHg med symtom inom {} min före eller efter",
            reading(t.hypotension_sys_mmhg),
            reading(t.hypotension_symptom_sys_mmhg),
            t.hypotension_symptom_window_min
        )
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Sys, Metric::Dia]
    }

    /// A new symptom makes the low readings around it (systolic < 90, not
    /// < 80, and no other symptom near them) alarming now: each is judged
    /// as if it had just arrived (a fresh one asks for a repeat, an old one
    /// is raised at once unless a repeat is in the data).
    fn also(state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        if input.symptoms.is_empty() {
            return;
        }
        let plan = state.plan.clone();
        let t = &plan.thresholds;
        let new = |s: &Symptom| input.symptoms.contains(&s.time);
        let now_alarming: Vec<Vital> = state
            .vitals
            .items()
            .filter(|v| {
                Self::low(v, t)
                    && !Self::very_low(v, t)
                    && input.symptoms.iter().any(|&s| Self::around(v, s, t))
                    && !state
                        .symptoms
                        .iter()
                        .any(|s| !new(s) && Self::around(v, s.time, t))
            })
            .copied()
            .collect();
        for v in now_alarming {
            // Already part of an alert raised just now (the repeat of an
            // earlier one of these).
            let covered = ctx.out.iter().any(|d| {
                matches!(d, Decision::Raise(f) if f.rule == Self::RULE
                    && f.first_reading_at <= v.time && v.time <= f.last_reading_at)
            });
            if !covered {
                on_reading::<Self>(state, v, ctx);
            }
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

    fn alarming(v: &Vital, c: &Criterion<'_>) -> bool {
        v.hr()
            .is_some_and(|h| h < c.t.hr_low_bpm || h > c.t.hr_high_bpm)
    }

    fn show(v: &Vital) -> String {
        v.hr()
            .map_or("–".into(), |h| format!("{} slag/min", reading(h)))
    }

    fn threshold(t: &Thresholds) -> String {
        format!(
            "under {} eller över {} slag/min",
            reading(t.hr_low_bpm),
            reading(t.hr_high_bpm)
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

    fn alarming(v: &Vital, c: &Criterion<'_>) -> bool {
        v.spo2().is_some_and(|s| s < c.t.spo2_low_pct)
    }

    fn show(v: &Vital) -> String {
        v.spo2().map_or("–".into(), |s| format!("{} %", reading(s)))
    }

    fn threshold(t: &Thresholds) -> String {
        format!("under {} %", reading(t.spo2_low_pct))
    }

    fn metrics() -> &'static [Metric] {
        &[Metric::Spo2]
    }
}

#[cfg(test)]
mod tests;
