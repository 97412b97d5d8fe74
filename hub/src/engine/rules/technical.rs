//! Technical alerts about a device (one alert per device), which clear
//! themselves when the condition clears:
//!
//! - `device_offline` (low): the device's last will says `offline`, or
//!   3 × its promised heartbeat (`hb`) passed without a status message
//!   (only devices that send `hb`; most scales sleep between readings):
//!   exactly 3 × `hb` of silence is not yet offline, a millisecond more is.
//!   Clears at the device's next message, and the count of missed
//!   heartbeats starts again from that message. One alert per episode: a
//!   last will that comes after the heartbeats were already found missing
//!   (or the other way round) is the same episode, and raises nothing more.
//! - `low_battery` (low): `batt` ≤ 20 %; clears at ≥ 30 % (hysteresis, so a
//!   battery hovering at 21 % does not flap).
//! - `device_flooding` (medium, for administrators, no patient): the
//!   gateway refused a device's messages for breaking its limits (more
//!   than its rate, or a payload over the size limit). Raised once per
//!   episode; clears when the gateway reports the device calm again (within
//!   its limits for a minute). See `vaka_gateway::throttle`.

use vaka_gateway::model::{StatusField, StatusValue};
use vaka_gateway::{LimitReport, RejectCode, UnixMillis};

use super::{Context, Decision, Evidence, Finding, Input, Rule, RuleId, local_day_hhmm, sv_exact};
use crate::engine::patient::{DeviceRef, PatientState};

pub struct DeviceOffline;
pub struct LowBattery;

fn status_evidence(
    device: DeviceRef,
    field: StatusField,
    time: UnixMillis,
    value: Option<f64>,
    ctx: &Context<'_>,
) -> Evidence {
    Evidence {
        time,
        device_id: ctx.device_name(device).to_owned(),
        name: field.as_str().to_owned(),
        value,
        unit: (field == StatusField::Batt).then(|| "%".to_owned()),
    }
}

fn raise_for_device(
    rule: RuleId,
    device: DeviceRef,
    explanation: String,
    threshold: String,
    ev: Vec<Evidence>,
    at: UnixMillis,
    ctx: &mut Context<'_>,
) {
    let mut f = ctx.finding(rule, explanation, threshold, ev, at, at);
    f.device_id = Some(ctx.device_name(device).to_owned());
    ctx.raise(f);
}

impl Rule for DeviceOffline {
    fn id(&self) -> RuleId {
        RuleId::DeviceOffline
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let device = ctx.device;
        // The common case, a reading from a device that is not offline,
        // changes nothing here.
        if input.status.is_empty()
            && !state
                .devices
                .iter()
                .any(|d| d.device == device && d.offline)
        {
            return;
        }
        let newest = input
            .observations
            .iter()
            .map(|o| o.time)
            .chain(input.events.iter().map(|e| e.time))
            .chain(input.status.iter().map(|s| s.time))
            .max();
        let Some(newest) = newest else {
            return;
        };
        let says_offline = input.status.iter().find(|s| {
            s.field == StatusField::Conn && s.value == StatusValue::Text("offline".into())
        });
        let missed = state.plan.thresholds.missed_heartbeats;
        let d = state.device_mut(device);
        for s in input.status {
            if let (StatusField::Hb, StatusValue::Number(hb)) = (&s.field, &s.value) {
                d.heartbeat_ms = Some((hb * 1000.0) as i64);
            }
        }
        if !input.status.is_empty() {
            let t = input.status.iter().map(|s| s.time).max().unwrap_or(newest);
            d.silent_since = d.silent_since.max(Some(t));
        }
        if let Some(s) = says_offline {
            if d.offline {
                // Found silent by its heartbeats already: the same episode.
                return;
            }
            d.offline = true;
            let text = format!(
                "Enheten {} har kopplats från ({}). Mätningar från den kommer inte fram.",
                ctx.device_name(device),
                local_day_hhmm(s.time, state.tz)
            );
            let ev = vec![status_evidence(
                device,
                StatusField::Conn,
                s.time,
                None,
                ctx,
            )];
            raise_for_device(
                RuleId::DeviceOffline,
                device,
                text,
                "enheten meddelar frånkoppling".into(),
                ev,
                s.time,
                ctx,
            );
            return;
        }
        if d.offline {
            d.offline = false;
            // The episode is over: missing heartbeats count from here, not
            // from the status message before it (which would find the
            // device silent again at once).
            d.silent_since = d.silent_since.max(Some(newest));
            ctx.clear(
                RuleId::DeviceOffline,
                Some(device),
                "Enheten hörs av igen.".into(),
                // Heard now: its clock may lag the hub's, which stamped
                // the last will.
                newest.max(ctx.now),
            );
        }
        if let (Some(hb), Some(last)) = (d.heartbeat_ms, d.silent_since) {
            ctx.wake_at.push((
                last.plus_millis(hb * i64::from(missed) + 1),
                RuleId::DeviceOffline,
            ));
        }
    }

    fn on_deadline(&self, state: &mut PatientState, ctx: &mut Context<'_>) {
        let missed = state.plan.thresholds.missed_heartbeats;
        let tz = state.tz;
        let now = ctx.now;
        let mut silent = Vec::new();
        for d in state.devices.iter_mut() {
            let (Some(hb), Some(last)) = (d.heartbeat_ms, d.silent_since) else {
                continue;
            };
            let deadline = last.plus_millis(hb * i64::from(missed));
            if !d.offline && now > deadline {
                d.offline = true;
                silent.push((d.device, hb, last, deadline));
            }
        }
        for (device, hb, last, deadline) in silent {
            let text = format!(
                "Enheten {} har inte hörts av sedan {} ({} missade livstecken à {} s).",
                ctx.device_name(device),
                local_day_hhmm(last, tz),
                missed,
                sv_exact(hb as f64 / 1000.0, 0, 3)
            );
            let threshold = format!("{missed} × livstecken utan statusmeddelande");
            let ev = vec![status_evidence(
                device,
                StatusField::Hb,
                last,
                Some(hb as f64 / 1000.0),
                ctx,
            )];
            raise_for_device(
                RuleId::DeviceOffline,
                device,
                text,
                threshold,
                ev,
                deadline,
                ctx,
            );
        }
    }
}

impl Rule for LowBattery {
    fn id(&self) -> RuleId {
        RuleId::LowBattery
    }

    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>) {
        let device = ctx.device;
        let (low, ok) = (
            state.plan.thresholds.battery_low_pct,
            state.plan.thresholds.battery_ok_pct,
        );
        for s in input.status {
            let (StatusField::Batt, StatusValue::Number(pct)) = (&s.field, &s.value) else {
                continue;
            };
            let d = state.device_mut(device);
            // The battery is what its latest report (data time) says: an
            // older report that arrives late changes nothing.
            if d.last_battery.is_some_and(|t| t >= s.time) {
                continue;
            }
            d.last_battery = Some(s.time);
            if *pct <= low {
                d.battery_low = true;
                let text = format!(
                    "Batteriet i {} är nästan slut ({} %). Be patienten ladda eller byta batteri.",
                    ctx.device_name(device),
                    sv_exact(*pct, 0, 1)
                );
                let ev = vec![status_evidence(
                    device,
                    StatusField::Batt,
                    s.time,
                    Some(*pct),
                    ctx,
                )];
                raise_for_device(
                    RuleId::LowBattery,
                    device,
                    text,
                    format!("≤ {} %", sv_exact(low, 0, 1)),
                    ev,
                    s.time,
                    ctx,
                );
            } else if *pct >= ok && d.battery_low {
                d.battery_low = false;
                ctx.clear(
                    RuleId::LowBattery,
                    Some(device),
                    format!("Batteriet laddat: {} %.", sv_exact(*pct, 0, 1)),
                    s.time,
                );
            }
        }
    }
}

/// The administrators' alert for a device the gateway throttles, or its
/// clearing. `now` is the hub's clock: this is about arrival, not data time.
pub fn device_limits(report: &LimitReport, now: UnixMillis) -> Decision {
    match report {
        LimitReport::Exceeded { device, code, .. } => {
            let (what, threshold) = if *code == RejectCode::TooLarge {
                (
                    "skickade ett för stort meddelande",
                    "största tillåtna meddelandestorlek",
                )
            } else {
                (
                    "skickar fler meddelanden än tillåtet",
                    "högsta tillåtna meddelandetakt",
                )
            };
            Decision::Raise(Finding {
                rule: RuleId::DeviceFlooding,
                patient_id: None,
                device_id: Some(device.as_str().to_owned()),
                measurement: None,
                confirmed: None,
                plan_version: 0,
                explanation: format!(
                    "Enheten {device} {what} ({}). Det som går över gränsen sparas inte; \
                     andra enheters data tas emot som vanligt. Kontrollera enheten \
                     (programvara, trasig sensor) eller byt ut den.",
                    local_day_hhmm(now, chrono_tz::Europe::Stockholm)
                ),
                threshold: threshold.into(),
                evidence: vec![Evidence {
                    time: now,
                    device_id: device.as_str().to_owned(),
                    name: code.as_str().to_owned(),
                    value: None,
                    unit: None,
                }],
                first_reading_at: now,
                last_reading_at: now,
            })
        }
        LimitReport::Calm { device, dropped } => Decision::Clear {
            rule: RuleId::DeviceFlooding,
            patient_id: String::new(),
            device_id: Some(device.as_str().to_owned()),
            measurement: None,
            reason: format!(
                "enheten håller sig inom gränserna igen ({dropped} meddelanden avvisades)"
            ),
            at: now,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::testing::{Harness, at};

    const SEC: i64 = UnixMillis::SECOND;

    fn offline_raises(h: &Harness) -> usize {
        h.explanations(RuleId::DeviceOffline).len()
    }

    /// A reading (not a status message) from the fall sensor.
    fn reading(h: &mut Harness, t: UnixMillis) {
        use vaka_gateway::model::{Content, Metric, Observation};
        let obs = vec![Observation {
            time: t,
            metric: Metric::Hr,
            value: 70.0,
        }];
        h.send("fall-1", Content::Observations(obs), t);
    }

    #[test]
    fn silence_of_exactly_three_heartbeats_is_not_yet_offline() {
        let mut h = Harness::new();
        let t = at(0, "10:00");
        h.status_hb(t, 60.0);
        h.tick(t.plus_millis(180 * SEC));
        assert!(!h.active_device(RuleId::DeviceOffline, "fall-1"));
        h.tick(t.plus_millis(180 * SEC + 1));
        assert!(h.active_device(RuleId::DeviceOffline, "fall-1"));
        assert_eq!(
            h.explanations(RuleId::DeviceOffline),
            ["Enheten fall-1 har inte hörts av sedan 1/11 10:00 (3 missade livstecken à 60 s)."]
        );
    }

    #[test]
    fn a_status_message_restarts_the_count() {
        let mut h = Harness::new();
        let t = at(0, "10:00");
        h.status_hb(t, 60.0);
        // At 2.9 heartbeats a battery report: the count starts again.
        let again = t.plus_millis(174 * SEC);
        h.battery(again, 80.0);
        h.tick(t.plus_millis(180 * SEC + 1));
        assert!(!h.active_device(RuleId::DeviceOffline, "fall-1"));
        h.tick(again.plus_millis(180 * SEC));
        assert!(!h.active_device(RuleId::DeviceOffline, "fall-1"));
        h.tick(again.plus_millis(180 * SEC + 1));
        assert!(h.active_device(RuleId::DeviceOffline, "fall-1"));
        assert_eq!(offline_raises(&h), 1);
    }

    /// An offline last will and missing heartbeats are one episode, in
    /// either order: one raise.
    #[test]
    fn one_alert_per_episode() {
        // Heartbeats missing first, then the broker's last will.
        let mut h = Harness::new();
        let t = at(0, "10:00");
        h.status_hb(t, 60.0);
        h.tick(t.plus_millis(181 * SEC));
        assert_eq!(offline_raises(&h), 1);
        h.status_conn(t.plus_millis(200 * SEC), "offline");
        h.tick(t.plus_millis(3_600 * SEC));
        assert_eq!(offline_raises(&h), 1);
        assert_eq!(h.book.active().map(|a| a.count).collect::<Vec<_>>(), [1]);

        // The last will first, then the heartbeat deadline passes.
        let mut h = Harness::new();
        h.status_hb(t, 60.0);
        h.status_conn(t.plus_millis(30 * SEC), "offline");
        assert_eq!(offline_raises(&h), 1);
        h.tick(t.plus_millis(3_600 * SEC));
        assert_eq!(offline_raises(&h), 1);
    }

    /// The next message ends the episode, and missing heartbeats are
    /// counted again from it: a reading (no status) does not leave the
    /// device to be found silent again at once.
    #[test]
    fn the_message_that_ends_an_episode_restarts_the_count() {
        let mut h = Harness::new();
        let t = at(0, "10:00");
        h.status_hb(t, 60.0);
        h.tick(t.plus_millis(181 * SEC));
        assert!(h.active_device(RuleId::DeviceOffline, "fall-1"));
        let back = t.plus_millis(300 * SEC);
        reading(&mut h, back);
        assert!(!h.active_device(RuleId::DeviceOffline, "fall-1"));
        h.tick(back.plus_millis(SEC));
        h.tick(back.plus_millis(180 * SEC));
        assert!(!h.active_device(RuleId::DeviceOffline, "fall-1"));
        assert_eq!(offline_raises(&h), 1);
        // Silent again for 3 heartbeats after it: a new episode.
        h.tick(back.plus_millis(180 * SEC + 1));
        assert!(h.active_device(RuleId::DeviceOffline, "fall-1"));
        assert_eq!(offline_raises(&h), 2);
    }

    #[test]
    fn the_last_will_and_missing_heartbeats() {
        let mut h = Harness::new();
        let t = at(0, "10:00");
        h.status_hb(t, 60.0);
        h.tick(t.plus_millis(180 * SEC));
        assert!(
            !h.active_device(RuleId::DeviceOffline, "fall-1"),
            "exactly 3 heartbeats"
        );
        h.tick(t.plus_millis(181 * SEC));
        assert!(h.active_device(RuleId::DeviceOffline, "fall-1"));
        // Any message clears it.
        h.status_hb(t.plus_millis(200 * SEC), 60.0);
        assert!(!h.active_device(RuleId::DeviceOffline, "fall-1"));
        // The last will raises at once.
        h.status_conn(t.plus_millis(210 * SEC), "offline");
        assert!(h.active_device(RuleId::DeviceOffline, "fall-1"));
    }

    #[test]
    fn a_device_without_heartbeat_is_never_offline_by_silence() {
        let mut h = Harness::new();
        let t = at(0, "07:00");
        h.weight(t, 80.0);
        h.tick(t.plus_millis(7 * UnixMillis::DAY));
        assert!(!h.active(RuleId::DeviceOffline));
    }

    #[test]
    fn battery_with_hysteresis() {
        let mut h = Harness::new();
        let t = at(0, "10:00");
        for (i, (pct, low)) in [
            (50.0, false),
            (21.0, false),
            (20.4, false),
            (20.0, true),
            (25.0, true),
            (29.0, true),
            (30.0, false),
            (22.0, false),
        ]
        .into_iter()
        .enumerate()
        {
            h.battery(t.plus_millis(i as i64 * 60 * SEC), pct);
            assert_eq!(
                h.active_device(RuleId::LowBattery, "fall-1"),
                low,
                "at {pct} %"
            );
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use vaka_gateway::DeviceId;

    use super::*;
    use crate::alerts::{AlertBook, AlertState, Policy};

    #[test]
    fn a_flooding_device_raises_once_and_clears_when_calm() {
        let device = DeviceId::parse("bp-broken").unwrap();
        let mut book = AlertBook::load(Vec::new(), Policy::default());
        let t0 = UnixMillis(1_764_000_000_000);
        let exceeded = LimitReport::Exceeded {
            device: device.clone(),
            code: RejectCode::RateLimited,
            detail: "too fast".into(),
        };
        let raised = book.apply(&device_limits(&exceeded, t0), t0).unwrap();
        assert_eq!(raised.alert.rule, RuleId::DeviceFlooding);
        assert_eq!(raised.alert.patient_id, None);
        assert_eq!(raised.alert.device_id.as_deref(), Some("bp-broken"));
        assert!(raised.alert.explanation.contains("bp-broken"));
        assert!(book.is_active(None, RuleId::DeviceFlooding, Some("bp-broken")));

        let t1 = t0.plus_millis(60_000);
        let calm = LimitReport::Calm {
            device: device.clone(),
            dropped: 950,
        };
        let cleared = book.apply(&device_limits(&calm, t1), t1).unwrap();
        assert_eq!(cleared.alert.state, AlertState::Resolved);
        assert_eq!(cleared.transition.action, "cleared");
        assert!(!book.is_active(None, RuleId::DeviceFlooding, Some("bp-broken")));
        // A second calm report changes nothing.
        assert!(book.apply(&device_limits(&calm, t1), t1).is_none());
    }
}
