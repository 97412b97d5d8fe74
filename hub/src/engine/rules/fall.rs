//! `fall` and `help_button`: someone may be lying on the floor. Both raise
//! a high alert at once. A fall sensor may detect a fall automatically and
//! let the person cancel it ("I'm fine") within 30 s: a `fall_cancelled`
//! within 30 s of data time withdraws the fall's alert.

use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Event, EventKind};

use super::{Context, Decision, Evidence, Input, Rule, RuleId, local_day_hhmm};
use crate::engine::patient::{Inserted, PatientState};

pub struct Fall;
pub struct HelpButton;

impl Rule for Fall {
    fn id(&self) -> RuleId {
        RuleId::Fall
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let window = state.plan.thresholds.fall_cancel_window_ms();
        for e in input.events {
            match e.kind {
                EventKind::Fall => {
                    if state.falls.insert(e.time, |t| *t) != Inserted::New {
                        continue;
                    }
                    // Cancelled before we heard of the fall: nothing to raise.
                    let cancelled = state
                        .fall_cancels
                        .items()
                        .any(|c| *c >= e.time && c.millis_since(e.time) <= window);
                    if !cancelled {
                        let text = format!(
                            "Fall registrerat av fallsensorn {}. Ring patienten direkt; \
                             svarar ingen, åk hem till patienten.",
                            local_day_hhmm(e.time, state.tz)
                        );
                        raise(RuleId::Fall, e, text, "fall, larmas direkt".into(), ctx);
                    }
                }
                EventKind::FallCancelled => {
                    if state.fall_cancels.insert(e.time, |t| *t) != Inserted::New {
                        continue;
                    }
                    let fall = state
                        .falls
                        .items()
                        .rev()
                        .find(|f| **f <= e.time && e.time.millis_since(**f) <= window)
                        .copied();
                    if let Some(trigger) = fall {
                        ctx.out.push(Decision::Withdraw {
                            rule: RuleId::Fall,
                            patient_id: ctx.patient_id.to_owned(),
                            measurement: None,
                            trigger,
                            reason: format!(
                                "Återkallat: patienten avbröt fallarmet {} s efter fallet.",
                                e.time.millis_since(trigger) / UnixMillis::SECOND
                            ),
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

impl Rule for HelpButton {
    fn id(&self) -> RuleId {
        RuleId::HelpButton
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        for e in input
            .events
            .iter()
            .filter(|e| e.kind == EventKind::HelpButton)
        {
            if state.help_presses.insert(e.time, |t| *t) != Inserted::New {
                continue;
            }
            let text = format!(
                "Patienten tryckte på larmknappen {}. Ring patienten direkt.",
                local_day_hhmm(e.time, state.tz)
            );
            raise(
                RuleId::HelpButton,
                e,
                text,
                "larmknapp, larmas direkt".into(),
                ctx,
            );
        }
    }
}

fn raise(rule: RuleId, e: &Event, explanation: String, threshold: String, ctx: &mut Context<'_>) {
    let ev = vec![Evidence::event(ctx.device_name(ctx.device), e)];
    let f = ctx.finding(rule, explanation, threshold, ev, e.time, e.time);
    ctx.raise(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::testing::{Harness, at};

    #[test]
    fn a_fall_raises_at_once() {
        let mut h = Harness::new();
        h.event(at(0, "14:32"), EventKind::Fall);
        assert_eq!(
            h.explanations(RuleId::Fall),
            [format!(
                "Fall registrerat av fallsensorn {}. Ring patienten direkt; svarar ingen, åk hem till patienten.",
                local_day_hhmm(at(0, "14:32"), chrono_tz::Europe::Stockholm)
            )]
        );
    }

    #[test]
    fn cancellation_within_30_s_withdraws() {
        for (after_s, withdrawn) in [(10, true), (30, true), (31, false)] {
            let mut h = Harness::new();
            let t = at(0, "14:32");
            h.event(t, EventKind::Fall);
            h.event(t.plus_millis(after_s * 1000), EventKind::FallCancelled);
            assert_eq!(h.withdrawals(), usize::from(withdrawn), "{after_s} s");
        }
    }

    #[test]
    fn a_cancellation_that_arrives_first_prevents_the_alert() {
        let mut h = Harness::new();
        let t = at(0, "14:32");
        h.event(t.plus_millis(5_000), EventKind::FallCancelled);
        h.event(t, EventKind::Fall);
        assert!(h.explanations(RuleId::Fall).is_empty());
    }

    #[test]
    fn help_button_raises_once_per_press() {
        let mut h = Harness::new();
        let t = at(0, "03:10");
        h.event(t, EventKind::HelpButton);
        h.event(t, EventKind::HelpButton);
        h.event(t.plus_millis(60_000), EventKind::HelpButton);
        assert_eq!(h.explanations(RuleId::HelpButton).len(), 2);
    }
}
