//! The rules engine: every monitored patient's windows and the rules that
//! read them, owned by one task (as console's Aggregator owns its state).
//!
//! The core here is pure: it takes new records (only those the store says
//! are new, so a redelivery never reaches it) and the hub's `now`, and
//! returns [`Decision`]s. It never awaits, so evaluating a reading costs
//! nanoseconds, and tests and `vaka replay` drive it with any clock.
//!
//! Absences (no repeat of a crisis reading within 5 min …) are found by a
//! single deadline queue, a `BTreeSet<(when, patient, rule)>`, not a timer
//! per patient: [`Engine::tick`] pops what is due.

pub mod clock;
pub mod ctg;
pub mod patient;
pub mod rules;
pub mod task;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use vaka_gateway::UnixMillis;
use vaka_gateway::model::Content;

use crate::alerts::AlertBook;
use patient::{DeviceRef, PatientState};
use rules::{Context, Decision, Input, Rule, RuleId, Thresholds};

pub struct Engine {
    rules: Vec<Box<dyn Rule>>,
    patients: Vec<PatientState>,
    patient_ids: Vec<Arc<str>>,
    patient_index: HashMap<Arc<str>, u32>,
    devices: Vec<Arc<str>>,
    device_index: HashMap<Arc<str>, u32>,
    deadlines: BTreeSet<(UnixMillis, u32, RuleId)>,
    defaults: Arc<Thresholds>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    /// An engine with the default rules and thresholds.
    pub fn new() -> Engine {
        Engine {
            rules: vec![
                Box::new(rules::WeightGain3d),
                Box::new(rules::BpCrisis),
                Box::new(rules::Fall),
                Box::new(rules::HelpButton),
            ],
            patients: Vec::new(),
            patient_ids: Vec::new(),
            patient_index: HashMap::new(),
            devices: Vec::new(),
            device_index: HashMap::new(),
            deadlines: BTreeSet::new(),
            defaults: Arc::new(Thresholds::default()),
        }
    }

    /// Starts monitoring a patient (idempotent; updates the time zone).
    pub fn add_patient(&mut self, patient_id: &str, tz: chrono_tz::Tz) {
        match self.patient_index.get(patient_id) {
            Some(&i) => self.patients[i as usize].tz = tz,
            None => {
                let id: Arc<str> = patient_id.into();
                self.patient_index
                    .insert(id.clone(), self.patients.len() as u32);
                self.patient_ids.push(id);
                self.patients
                    .push(PatientState::new(tz, self.defaults.clone()));
            }
        }
    }

    pub fn has_patient(&self, patient_id: &str) -> bool {
        self.patient_index.contains_key(patient_id)
    }

    pub fn patient_count(&self) -> usize {
        self.patients.len()
    }

    fn patient(&mut self, patient_id: &str) -> u32 {
        if !self.has_patient(patient_id) {
            self.add_patient(patient_id, chrono_tz::Europe::Stockholm);
        }
        self.patient_index[patient_id]
    }

    fn device(&mut self, device_id: &str) -> DeviceRef {
        if let Some(&i) = self.device_index.get(device_id) {
            return DeviceRef(i);
        }
        let id: Arc<str> = device_id.into();
        let i = self.devices.len() as u32;
        self.device_index.insert(id.clone(), i);
        self.devices.push(id);
        DeviceRef(i)
    }

    /// Evaluates the new records of one message. `arrived` is when the
    /// message reached the hub (hub clock).
    pub fn ingest(
        &mut self,
        patient_id: &str,
        device_id: &str,
        content: &Content,
        arrived: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
    ) {
        let input = match content {
            Content::Observations(obs) => Input::Observations(obs),
            Content::Events(events) => Input::Events(events),
            Content::Status(_) => return,
        };
        let p = self.patient(patient_id);
        let device = self.device(device_id);
        let mut wake_at = Vec::new();
        let state = &mut self.patients[p as usize];
        let pid = &self.patient_ids[p as usize];
        let active = |rule: RuleId| book.is_active(Some(pid), rule, None);
        let mut ctx = Context {
            patient_id: pid,
            device,
            devices: &self.devices,
            arrived,
            active: &active,
            out,
            wake_at: &mut wake_at,
        };
        for rule in &self.rules {
            rule.on_input(state, input, &mut ctx);
        }
        for (when, rule) in wake_at {
            self.deadlines.insert((when, p, rule));
        }
    }

    /// Runs every deadline that the hub's clock has passed.
    pub fn tick(&mut self, now: UnixMillis, book: &AlertBook, out: &mut Vec<Decision>) {
        while let Some(&(when, p, rule_id)) = self.deadlines.first() {
            if when > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(rule) = self.rules.iter().find(|r| r.id() == rule_id) else {
                continue;
            };
            let state = &mut self.patients[p as usize];
            let pid = &self.patient_ids[p as usize];
            let active = |rule: RuleId| book.is_active(Some(pid), rule, None);
            let mut wake_at = Vec::new();
            let mut ctx = Context {
                patient_id: pid,
                device: DeviceRef(u32::MAX),
                devices: &self.devices,
                arrived: now,
                active: &active,
                out,
                wake_at: &mut wake_at,
            };
            rule.on_deadline(state, now, &mut ctx);
            for (when, rule) in wake_at {
                self.deadlines.insert((when, p, rule));
            }
        }
    }

    /// When [`Engine::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.deadlines.first().map(|d| d.0)
    }
}

#[cfg(test)]
mod tests;
