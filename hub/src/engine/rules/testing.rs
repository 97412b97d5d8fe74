//! A small harness for rule tests: one patient in Europe/Stockholm, an
//! engine and an alert book, fed by hand-written readings.

use chrono::TimeZone;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Content, Event, EventKind, Metric, Observation};

use super::{Decision, RuleId};
use crate::alerts::AlertBook;
use crate::engine::Engine;

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
}

impl Harness {
    pub fn new() -> Harness {
        let mut engine = Engine::new();
        engine.add_patient(PATIENT, chrono_tz::Europe::Stockholm);
        Harness {
            engine,
            book: AlertBook::default(),
            decisions: Vec::new(),
            arrived: None,
            next_id: 1,
        }
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

    pub fn weight(&mut self, t: UnixMillis, kg: f64) {
        let obs = vec![Observation {
            time: t,
            metric: Metric::Weight,
            value: kg,
        }];
        self.send("scale-1", Content::Observations(obs), t);
    }

    pub fn bp(&mut self, t: UnixMillis, sys: f64, dia: f64) {
        let obs = vec![
            Observation {
                time: t,
                metric: Metric::Sys,
                value: sys,
            },
            Observation {
                time: t,
                metric: Metric::Dia,
                value: dia,
            },
            Observation {
                time: t,
                metric: Metric::Map,
                value: (sys + 2.0 * dia) / 3.0,
            },
        ];
        self.send("bp-1", Content::Observations(obs), t);
    }

    pub fn event(&mut self, t: UnixMillis, kind: EventKind) {
        let ev = vec![Event {
            time: t,
            kind,
            text: None,
        }];
        self.send("fall-1", Content::Events(ev), t);
    }

    /// The explanations of every raise of `rule`, in order.
    pub fn explanations(&self, rule: RuleId) -> Vec<String> {
        self.raises(rule).map(|f| f.explanation.clone()).collect()
    }

    pub fn confirmed(&self, rule: RuleId) -> Vec<Option<bool>> {
        self.raises(rule).map(|f| f.confirmed).collect()
    }

    fn raises(&self, rule: RuleId) -> impl Iterator<Item = &super::Finding> {
        self.decisions.iter().filter_map(move |d| match d {
            Decision::Raise(f) if f.rule == rule => Some(f),
            _ => None,
        })
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
