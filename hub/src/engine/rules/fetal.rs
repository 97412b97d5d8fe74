//! Fetal heart rules during a CTG session, reading the session's figures
//! from `engine::ctg` after each pack (thresholds from the plan; defaults
//! in brackets):
//!
//! - `fetal_baseline` (high): the baseline over the last 10 min (excluding
//!   accelerations, decelerations and loss) is above 160 or below 110 bpm
//!   (160 and 110 themselves are normal).
//! - `fetal_variability` (high): Dawes-Redman STV < 3 ms over ≥ 30 min of
//!   valid signal, over the session or over the last 60 min (so a fall late
//!   in a long session shows), or an amplitude < 5 bpm for > 50 min (51
//!   valid minutes in a row). The amplitude limit is the analyser's, from
//!   the plan.
//! - `fetal_deceleration` (high): ≥ 15 bpm below the baseline for ≥ 3 min,
//!   raised while it is still going on; shorter ones are counted in the
//!   session summary. Depth and length are the analyser's, from the plan.
//! - `ctg_signal_loss` (technical, medium, per device): > 20 % of the
//!   expected 4 Hz samples missing over the last 10 min, or over the
//!   session, after ≥ 10 min of session. Hysteresis: it clears when the
//!   last 10 min have at most half the limit missing (10 %) and the session
//!   is no longer above it.
//!
//! A condition that holds raises at once and then updates its alert at most
//! every 5 min of data (not at every 10 s pack), with the current figures.
//! Everything here runs on data time (the figures and the times of the
//! samples), so a session uploaded hours after it was recorded raises the
//! same alerts as one that arrived live; those alerts say when the data was
//! recorded.

use vaka_gateway::UnixMillis;
use vaka_gateway::model::Metric;

use super::{
    Context, Evidence, Input, Rule, RuleId, local_hhmm, recorded_late, sv, sv_exact, sv_near,
};
use crate::engine::ctg::{CtgStatus, STV_WINDOW_MINUTES};
use crate::engine::patient::{CtgState, PatientState};

pub struct FetalBaseline;
pub struct FetalVariability;
pub struct FetalDeceleration;
pub struct CtgSignalLoss;

/// How often a holding condition updates its alert (data time).
const UPDATE_EVERY_MS: i64 = 5 * UnixMillis::MINUTE;

/// The running session and its figures, when this input brought CTG
/// samples (FHR or toco: a pack with no FHR at all is a total dropout).
fn session<'s>(
    state: &'s mut PatientState,
    input: &Input<'_>,
) -> Option<(&'s mut CtgState, CtgStatus)> {
    let ctg = input
        .observations
        .iter()
        .any(|o| matches!(o.metric, Metric::Fhr | Metric::Toco));
    let c = state.ctg.as_deref_mut().filter(|c| ctg && c.is_running())?;
    let status = c.session.status();
    Some((c, status))
}

/// Whether rule `slot` may raise now (first time, or 5 min since the last).
fn due(c: &mut CtgState, slot: usize, now: UnixMillis) -> bool {
    let ok = c.raised[slot].is_none_or(|t| now.millis_since(t) >= UPDATE_EVERY_MS);
    if ok {
        c.raised[slot] = Some(now);
    }
    ok
}

fn evidence(
    c: &CtgState,
    name: &str,
    value: f64,
    unit: &str,
    at: UnixMillis,
    ctx: &Context<'_>,
) -> Evidence {
    Evidence {
        time: at,
        device_id: ctx.device_name(c.device).to_owned(),
        name: name.to_owned(),
        value: Some(value),
        unit: Some(unit.to_owned()),
    }
}

impl Rule for FetalBaseline {
    fn id(&self) -> RuleId {
        RuleId::FetalBaseline
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let t = state.plan.thresholds.clone();
        let tz = state.tz;
        let Some((c, s)) = session(state, input) else {
            return;
        };
        let Some(baseline) = s.baseline_bpm.filter(|_| s.baseline_window_complete) else {
            return;
        };
        let what = if baseline > t.fetal_baseline_high_bpm {
            "takykardi"
        } else if baseline < t.fetal_baseline_low_bpm {
            "bradykardi"
        } else {
            return;
        };
        let now = c.last_data;
        if !due(c, 0, now) {
            return;
        }
        let threshold = format!(
            "basalnivå {}–{} slag/min (senaste 10 min)",
            sv_exact(t.fetal_baseline_low_bpm, 0, 1),
            sv_exact(t.fetal_baseline_high_bpm, 0, 1)
        );
        let text = format!(
            "Fostrets hjärtfrekvens, basalnivå {} slag/min de senaste 10 min kl. {} ({what}). Gräns: {threshold}.{}",
            sv_bpm(baseline),
            local_hhmm(now, tz),
            recorded_late(now, ctx.now, tz)
        );
        let ev = vec![evidence(
            c,
            "fhr_baseline",
            baseline,
            Metric::Fhr.unit(),
            now,
            ctx,
        )];
        let f = ctx.finding(RuleId::FetalBaseline, text, threshold, ev, now, now);
        ctx.raise(f);
    }
}

/// A rate in whole bpm, or with one decimal where it has some (a baseline
/// of 160,25 must not read "160" beside a limit of 160).
fn sv_bpm(bpm: f64) -> String {
    if (bpm - bpm.round()).abs() < 0.005 {
        sv(bpm, 0)
    } else {
        sv(bpm, 1)
    }
}

impl Rule for FetalVariability {
    fn id(&self) -> RuleId {
        RuleId::FetalVariability
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let t = state.plan.thresholds.clone();
        let tz = state.tz;
        let Some((c, s)) = session(state, input) else {
            return;
        };
        let minutes = t.fetal_stv_min_valid_min;
        let low = |stv: &f64, n: u32| n >= minutes && *stv < t.fetal_stv_low_ms;
        let session_low = s.stv_ms.filter(|v| low(v, s.stv_minutes));
        let window_low = s.window_stv_ms.filter(|v| low(v, s.window_stv_minutes));
        let flat = s.low_amplitude_minutes > t.fetal_amplitude_low_min;
        if session_low.is_none() && window_low.is_none() && !flat {
            return;
        }
        let now = c.last_data;
        if !due(c, 1, now) {
            return;
        }
        let threshold = format!(
            "STV < {} ms över ≥ {} min signal (sedan start eller de senaste {} min), eller amplitud < {} slag/min i > {} min",
            sv_exact(t.fetal_stv_low_ms, 0, 1),
            minutes,
            STV_WINDOW_MINUTES,
            sv(t.fetal_amplitude_low_bpm, 0),
            t.fetal_amplitude_low_min
        );
        let late = recorded_late(now, ctx.now, tz);
        let mut ev = Vec::new();
        let text = match (session_low, window_low) {
            (Some(stv), _) => {
                ev.push(evidence(c, "fhr_stv", stv, "ms", now, ctx));
                format!(
                    "Låg korttidsvariabilitet hos fostret: STV {} ms över {} min signal sedan start kl. {}. Gräns: {threshold}.{late}",
                    sv_near(stv, 1, &[t.fetal_stv_low_ms]),
                    s.stv_minutes,
                    local_hhmm(c.session.start(), tz)
                )
            }
            (None, Some(stv)) => {
                ev.push(evidence(c, "fhr_stv_60min", stv, "ms", now, ctx));
                format!(
                    "Låg korttidsvariabilitet hos fostret: STV {} ms över {} min signal de senaste {} min (sedan start {} ms). Gräns: {threshold}.{late}",
                    sv(stv, 1),
                    s.window_stv_minutes,
                    STV_WINDOW_MINUTES,
                    sv(s.stv_ms.unwrap_or(stv), 1)
                )
            }
            (None, None) => {
                let amp = s.last_minute_amplitude_bpm.unwrap_or(0.0);
                ev.push(evidence(
                    c,
                    "fhr_amplitude",
                    amp,
                    Metric::Fhr.unit(),
                    now,
                    ctx,
                ));
                format!(
                    "Låg variabilitet hos fostret: amplitud under {} slag/min i {} min. Gräns: {threshold}.{late}",
                    sv(t.fetal_amplitude_low_bpm, 0),
                    s.low_amplitude_minutes
                )
            }
        };
        let f = ctx.finding(RuleId::FetalVariability, text, threshold, ev, now, now);
        ctx.raise(f);
    }
}

impl Rule for FetalDeceleration {
    fn id(&self) -> RuleId {
        RuleId::FetalDeceleration
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let t = state.plan.thresholds.clone();
        let tz = state.tz;
        let Some((c, s)) = session(state, input) else {
            return;
        };
        // The analyser measures decelerations with the plan's depth; the
        // plan's length decides which of them alert. (A plan changed during
        // a deceleration: its depth is checked here too.)
        let long = i64::from(t.fetal_deceleration_min) * UnixMillis::MINUTE;
        // The one going on, or the last one if it ended since the last pack.
        let Some(d) = s
            .current_deceleration
            .or(s.last_deceleration)
            .filter(|d| d.duration_ms >= long && d.depth_bpm >= t.fetal_deceleration_bpm)
        else {
            return;
        };
        if c.deceleration_alerted == Some(d.start) {
            return;
        }
        c.deceleration_alerted = Some(d.start);
        let threshold = format!(
            "≥ {} slag/min under basalnivån i ≥ {} min",
            sv(t.fetal_deceleration_bpm, 0),
            t.fetal_deceleration_min
        );
        let text = format!(
            "Deceleration hos fostret sedan kl. {}: {} slag/min under basalnivån {} (lägst {}) i {} min. Gräns: {threshold}.{}",
            local_hhmm(d.start, tz),
            sv_near(d.depth_bpm, 0, &[t.fetal_deceleration_bpm]),
            sv(d.baseline_bpm, 0),
            sv(d.nadir_bpm, 0),
            sv(d.duration_ms as f64 / 60_000.0, 1),
            recorded_late(c.last_data, ctx.now, tz)
        );
        let ev = vec![
            evidence(
                c,
                "fhr_baseline",
                d.baseline_bpm,
                Metric::Fhr.unit(),
                d.start,
                ctx,
            ),
            evidence(
                c,
                "fhr_nadir",
                d.nadir_bpm,
                Metric::Fhr.unit(),
                d.start.plus_millis(d.duration_ms),
                ctx,
            ),
        ];
        let f = ctx.finding(
            RuleId::FetalDeceleration,
            text,
            threshold,
            ev,
            d.start,
            d.start,
        );
        ctx.raise(f);
    }
}

impl Rule for CtgSignalLoss {
    fn id(&self) -> RuleId {
        RuleId::CtgSignalLoss
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let t = state.plan.thresholds.clone();
        let tz = state.tz;
        let Some((c, s)) = session(state, input) else {
            return;
        };
        let after = i64::from(t.ctg_signal_loss_after_min) * UnixMillis::MINUTE;
        if s.elapsed_ms < after {
            return;
        }
        let device = c.device;
        let limit = t.ctg_signal_loss_pct;
        let (window, session) = (s.window_signal_loss_pct, s.signal_loss_pct);
        if window > limit || session > limit {
            c.loss_alarm = true;
            let now = c.last_data;
            if !due(c, 3, now) {
                return;
            }
            let threshold = format!(
                "> {} % saknade mätvärden de senaste 10 min eller sedan start, efter ≥ {} min",
                sv_exact(limit, 0, 1),
                t.ctg_signal_loss_after_min
            );
            let text = format!(
                "Dålig CTG-signal: {} % av mätvärdena saknas de senaste 10 min, {} % sedan start kl. {}. Be patienten justera givaren. Gräns: {threshold}.{}",
                sv_near(window, 0, &[limit]),
                sv_near(session, 0, &[limit]),
                local_hhmm(c.session.start(), tz),
                recorded_late(now, ctx.now, tz)
            );
            let ev = vec![
                evidence(c, "signal_loss_10min", window, "%", now, ctx),
                evidence(c, "signal_loss", session, "%", now, ctx),
            ];
            let mut f = ctx.finding(RuleId::CtgSignalLoss, text, threshold, ev, now, now);
            f.device_id = Some(ctx.device_name(device).to_owned());
            ctx.raise(f);
        } else if c.loss_alarm && window <= limit / 2.0 {
            // Hysteresis: clears only once the last 10 min are well below
            // the limit (and the session is not above it, or we would not
            // be here).
            c.loss_alarm = false;
            c.raised[3] = None;
            let reason = format!(
                "Signalen är bra igen: {} % saknas de senaste 10 min, {} % sedan start.",
                sv(window, 0),
                sv(session, 0)
            );
            let at = c.last_data;
            ctx.clear(RuleId::CtgSignalLoss, Some(device), reason, at);
        }
    }
}

#[cfg(test)]
mod tests;
