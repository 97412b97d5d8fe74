//! A small harness for rule tests: one patient in Europe/Stockholm under a
//! plan (by default, every rule), an engine and an alert book, fed by
//! hand-written readings, events and status.

use std::sync::Arc;

use chrono::TimeZone;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{
    Content, Event, EventKind, Metric, Observation, StatusField, StatusReport, StatusValue,
};

use super::{Decision, RuleId};
use crate::alerts::AlertBook;
use crate::engine::Engine;
use crate::plans::Plan;

pub const PATIENT: &str = "p-test";

/// Local time `hh:mm` in Stockholm, `day` days after 2026-11-01.
pub fn at(day: i32, hhmm: &str) -> UnixMillis {
    let (h, m) = hhmm.split_once(':').expect("hh:mm");
    let local = chrono::NaiveDate::from_ymd_opt(2026, 11, 1)
        .expect("date")
        .checked_add_days(chrono::Days::new(day as u64))
        .expect("date")
        .and_hms_opt(h.parse().expect("h"), m.parse().expect("m"), 0)
        .expect("time");
    let t = chrono_tz::Europe::Stockholm
        .from_local_datetime(&local)
        .single()
        .expect("unambiguous");
    UnixMillis(t.timestamp_millis())
}

/// Applies decisions to a book as the engine task does, with ids from a
/// counter instead of the store.
pub fn apply(book: &mut AlertBook, next_id: &mut i64, decisions: &[Decision], now: UnixMillis) {
    for d in decisions {
        if let Some(c) = book.apply(d, now)
            && c.alert.alert_id.is_none()
        {
            book.set_id(&c.alert, *next_id);
            *next_id += 1;
        }
    }
}

pub struct Harness {
    pub engine: Engine,
    pub book: AlertBook,
    pub decisions: Vec<Decision>,
    arrived: Option<UnixMillis>,
    next_id: i64,
    plan: Arc<Plan>,
}

impl Harness {
    /// Every rule, default thresholds.
    pub fn new() -> Harness {
        Harness::with_plan(serde_json::json!({}))
    }

    /// The default plan with a JSON merge patch applied.
    pub fn with_plan(patch: serde_json::Value) -> Harness {
        let plan = Plan::default().patched(&patch).expect("a valid test plan");
        let mut h = Harness {
            engine: Engine::new(),
            book: AlertBook::default(),
            decisions: Vec::new(),
            arrived: None,
            next_id: 1,
            plan: Arc::new(plan),
        };
        h.restart(at(0, "00:00"));
        h
    }

    /// A new engine watching the patient from `now` (as after a restart,
    /// before any history is replayed), with the alert book as stored.
    pub fn restart(&mut self, now: UnixMillis) {
        self.engine = Engine::new();
        let mut out = Vec::new();
        self.engine.add_patient(
            PATIENT,
            chrono_tz::Europe::Stockholm,
            self.plan.clone(),
            now,
            &self.book,
            &mut out,
        );
        self.record(out, now);
    }

    /// A new plan takes effect at `now`.
    pub fn set_plan(&mut self, plan: Plan, now: UnixMillis) {
        self.plan = Arc::new(plan);
        let mut out = Vec::new();
        self.engine
            .set_plan(PATIENT, self.plan.clone(), now, &self.book, &mut out);
        self.record(out, now);
    }

    /// Messages arrive at this hub time (default: at their data time).
    pub fn arrive_at(&mut self, t: UnixMillis) {
        self.arrived = Some(t);
    }

    pub fn send(&mut self, device: &str, content: Content, data_time: UnixMillis) {
        let arrived = self.arrived.unwrap_or(data_time);
        let mut out = Vec::new();
        self.engine
            .ingest(PATIENT, device, &content, arrived, &self.book, &mut out);
        self.engine.tick(arrived, &self.book, &mut out);
        self.record(out, arrived);
    }

    pub fn tick(&mut self, now: UnixMillis) {
        let mut out = Vec::new();
        self.engine.tick(now, &self.book, &mut out);
        self.record(out, now);
    }

    fn record(&mut self, out: Vec<Decision>, now: UnixMillis) {
        apply(&mut self.book, &mut self.next_id, &out, now);
        self.decisions.extend(out);
    }

    fn observations(&mut self, device: &str, t: UnixMillis, values: &[(Metric, f64)]) {
        let obs = values
            .iter()
            .map(|&(metric, value)| Observation {
                time: t,
                metric,
                value,
            })
            .collect();
        self.send(device, Content::Observations(obs), t);
    }

    pub fn weight(&mut self, t: UnixMillis, kg: f64) {
        self.observations("scale-1", t, &[(Metric::Weight, kg)]);
    }

    pub fn bp(&mut self, t: UnixMillis, sys: f64, dia: f64) {
        let map = ((sys + 2.0 * dia) / 3.0).round();
        self.observations(
            "bp-1",
            t,
            &[(Metric::Sys, sys), (Metric::Dia, dia), (Metric::Map, map)],
        );
    }

    pub fn bp_hr(&mut self, t: UnixMillis, sys: f64, dia: f64, hr: f64) {
        self.observations(
            "bp-1",
            t,
            &[(Metric::Sys, sys), (Metric::Dia, dia), (Metric::Hr, hr)],
        );
    }

    pub fn oximeter(&mut self, t: UnixMillis, spo2: f64, hr: f64) {
        self.observations("ox-1", t, &[(Metric::Spo2, spo2), (Metric::Hr, hr)]);
    }

    pub fn event(&mut self, t: UnixMillis, kind: EventKind) {
        let ev = vec![Event {
            time: t,
            kind,
            text: None,
        }];
        self.send("fall-1", Content::Events(ev), t);
    }

    pub fn symptom(&mut self, t: UnixMillis, what: &str) {
        let ev = vec![Event {
            time: t,
            kind: EventKind::PatientSymptom,
            text: Some(what.into()),
        }];
        self.send("bp-1", Content::Events(ev), t);
    }

    /// Several events in one pack from `device`, in the order given; the
    /// pack arrives at its latest data time (unless `arrive_at`).
    pub fn events(&mut self, device: &str, events: Vec<Event>) {
        let t = events.iter().map(|e| e.time).max().unwrap_or(UnixMillis(0));
        self.send(device, Content::Events(events), t);
    }

    /// A dispenser event with a dose id, for [`Harness::events`].
    pub fn dose_event(t: UnixMillis, kind: EventKind, id: &str) -> Event {
        Event {
            time: t,
            kind,
            text: Some(id.to_owned()),
        }
    }

    /// A dispenser event with a dose id.
    pub fn dose(&mut self, t: UnixMillis, kind: EventKind, id: &str) {
        let text = (!id.is_empty()).then(|| id.to_owned());
        self.send(
            "disp-1",
            Content::Events(vec![Event {
                time: t,
                kind,
                text,
            }]),
            t,
        );
    }

    fn status(&mut self, device: &str, t: UnixMillis, field: StatusField, value: StatusValue) {
        self.send(
            device,
            Content::Status(vec![StatusReport {
                time: t,
                field,
                value,
            }]),
            t,
        );
    }

    pub fn doses_left(&mut self, t: UnixMillis, n: f64) {
        self.status("disp-1", t, StatusField::DosesLeft, StatusValue::Number(n));
    }

    pub fn status_hb(&mut self, t: UnixMillis, hb_s: f64) {
        self.status("fall-1", t, StatusField::Hb, StatusValue::Number(hb_s));
    }

    pub fn status_conn(&mut self, t: UnixMillis, conn: &str) {
        self.status(
            "fall-1",
            t,
            StatusField::Conn,
            StatusValue::Text(conn.into()),
        );
    }

    pub fn battery(&mut self, t: UnixMillis, pct: f64) {
        self.status("fall-1", t, StatusField::Batt, StatusValue::Number(pct));
    }

    /// One CTG pack: FHR samples (`None`: lost) and a toco value each.
    pub fn ctg_pack(&mut self, samples: &[(UnixMillis, Option<f64>)]) {
        let mut obs = Vec::new();
        for &(time, fhr) in samples {
            if let Some(value) = fhr {
                obs.push(Observation {
                    time,
                    metric: Metric::Fhr,
                    value,
                });
            }
            obs.push(Observation {
                time,
                metric: Metric::Toco,
                value: 10.0,
            });
        }
        let t = samples.last().map_or(UnixMillis(0), |s| s.0);
        self.send("ctg-1", Content::Observations(obs), t);
    }

    /// A session event of the fetal monitor.
    pub fn ctg_event(&mut self, t: UnixMillis, kind: EventKind) {
        let ev = vec![Event {
            time: t,
            kind,
            text: None,
        }];
        self.send("ctg-1", Content::Events(ev), t);
    }

    /// Every finding raised so far, in order.
    pub fn findings(&self) -> impl Iterator<Item = &super::Finding> {
        self.decisions.iter().filter_map(|d| match d {
            Decision::Raise(f) => Some(f),
            _ => None,
        })
    }

    pub fn ctg_summaries(&self) -> Vec<crate::engine::ctg::CtgSummary> {
        self.decisions
            .iter()
            .filter_map(|d| match d {
                Decision::CtgSession { summary, .. } => Some(summary.clone()),
                _ => None,
            })
            .collect()
    }

    /// Whether the patient has an active alert of `rule` (not per device).
    pub fn active(&self, rule: RuleId) -> bool {
        self.book.active().any(|a| a.rule == rule)
    }

    pub fn active_device(&self, rule: RuleId, device: &str) -> bool {
        self.book.is_active(Some(PATIENT), rule, Some(device))
    }

    /// The explanations of every raise of `rule`, in order.
    pub fn explanations(&self, rule: RuleId) -> Vec<String> {
        self.raises(rule).map(|f| f.explanation.clone()).collect()
    }

    pub fn confirmed(&self, rule: RuleId) -> Vec<Option<bool>> {
        self.raises(rule).map(|f| f.confirmed).collect()
    }

    pub fn raises(&self, rule: RuleId) -> impl Iterator<Item = &super::Finding> {
        self.decisions.iter().filter_map(move |d| match d {
            Decision::Raise(f) if f.rule == rule => Some(f),
            _ => None,
        })
    }

    /// The `reason` of every `remeasure` command, in order.
    pub fn command_reasons(&self) -> Vec<String> {
        self.decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Command { json, .. } => serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|v| v["reason"].as_str().map(str::to_owned)),
                _ => None,
            })
            .collect()
    }

    pub fn commands(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| matches!(d, Decision::Command { .. }))
            .count()
    }

    pub fn withdrawals(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| matches!(d, Decision::Withdraw { .. }))
            .count()
    }
}
