//! The rules engine: every monitored patient's windows and the rules that
//! read them, owned by one task (as console's Aggregator owns its state).
//!
//! The core here is pure: it takes new records (only those the store says
//! are new, so a redelivery never reaches it) and the hub's `now`, and
//! returns [`Decision`]s. It never awaits, so evaluating a reading costs
//! nanoseconds, and tests and `vaka replay` drive it with any clock.
//!
//! Absences (no repeat of a crisis reading within 5 min, no dose taken, no
//! heartbeat, no scheduled reading) are found by a single deadline queue, a
//! `BTreeSet<(when, patient, rule)>`, not a timer per patient:
//! [`Engine::tick`] pops what is due.

pub mod absorb;
pub mod clock;
pub mod ctg;
pub mod patient;
pub mod rules;
pub mod task;

use std::collections::BTreeSet;
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::Content;

use crate::alerts::AlertBook;
use crate::plans::Plan;
use absorb::Absorbed;
use patient::{DeviceRef, PatientState};
use rules::{Context, Decision, Input, Rule, RuleId};

/// What a deadline is for: a rule, or the end of an idle CTG session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    Rule(RuleId),
    CtgIdle,
}

pub struct Engine {
    rules: Vec<Box<dyn Rule>>,
    patients: Vec<PatientState>,
    patient_ids: Vec<Arc<str>>,
    patient_index: HashMap<Arc<str>, u32>,
    devices: Vec<Arc<str>>,
    device_index: HashMap<Arc<str>, u32>,
    deadlines: BTreeSet<(UnixMillis, u32, Wake)>,
    /// Reused between messages, so the hot path does not allocate.
    scratch: Absorbed,
    wake_scratch: Vec<(UnixMillis, RuleId)>,
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

/// Every rule of ARCHITECTURE §4, each once.
fn all_rules() -> Vec<Box<dyn Rule>> {
    vec![
        Box::new(rules::WeightGain1d),
        Box::new(rules::WeightGain3d),
        Box::new(rules::WeightTrend),
        Box::new(rules::BpCrisis::default()),
        Box::new(rules::BpAverage),
        Box::new(rules::Hypotension::default()),
        Box::new(rules::HeartRate::default()),
        Box::new(rules::Spo2::default()),
        Box::new(rules::FetalBaseline),
        Box::new(rules::FetalVariability),
        Box::new(rules::FetalDeceleration),
        Box::new(rules::CtgSignalLoss),
        Box::new(rules::MissedDose),
        Box::new(rules::RefillDue),
        Box::new(rules::DispenserFault),
        Box::new(rules::Fall),
        Box::new(rules::HelpButton),
        Box::new(rules::MissingMeasurement),
        Box::new(rules::DeviceOffline),
        Box::new(rules::LowBattery),
    ]
}

impl Engine {
    pub fn new() -> Engine {
        Engine {
            rules: all_rules(),
            patients: Vec::new(),
            patient_ids: Vec::new(),
            patient_index: HashMap::default(),
            devices: Vec::new(),
            device_index: HashMap::default(),
            deadlines: BTreeSet::new(),
            scratch: Absorbed::default(),
            wake_scratch: Vec::new(),
        }
    }

    /// Starts monitoring a patient under `plan`, from `now` on. Adding a
    /// patient that is already monitored only updates zone and plan.
    pub fn add_patient(
        &mut self,
        patient_id: &str,
        tz: chrono_tz::Tz,
        plan: Arc<Plan>,
        now: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
    ) {
        let p = match self.patient_index.get(patient_id) {
            Some(&i) => {
                self.patients[i as usize].tz = tz;
                i
            }
            None => {
                let id: Arc<str> = patient_id.into();
                let i = self.patients.len() as u32;
                self.patient_index.insert(id.clone(), i);
                self.patient_ids.push(id);
                self.patients.push(PatientState::new(tz, plan.clone(), now));
                i
            }
        };
        self.set_plan_of(p, plan, now, book, out);
    }

    /// A new plan takes effect at once (thresholds, rules, schedule).
    pub fn set_plan(
        &mut self,
        patient_id: &str,
        plan: Arc<Plan>,
        now: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
    ) {
        if let Some(&p) = self.patient_index.get(patient_id) {
            self.set_plan_of(p, plan, now, book, out);
        }
    }

    fn set_plan_of(
        &mut self,
        p: u32,
        plan: Arc<Plan>,
        now: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
    ) {
        self.patients[p as usize].set_plan(plan);
        self.run(
            p,
            None,
            DeviceRef(u32::MAX),
            now,
            book,
            out,
            |rule, state, ctx| rule.on_plan(state, ctx),
        );
    }

    pub fn has_patient(&self, patient_id: &str) -> bool {
        self.patient_index.contains_key(patient_id)
    }

    /// The figures of a patient's CTG session so far, while one runs.
    pub fn ctg_status(&self, patient_id: &str) -> Option<ctg::CtgStatus> {
        let &p = self.patient_index.get(patient_id)?;
        let ctg = self.patients[p as usize]
            .ctg
            .as_ref()
            .filter(|c| c.is_running())?;
        Some(ctg.session.status())
    }

    pub fn patient_count(&self) -> usize {
        self.patients.len()
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
    /// message reached the hub (hub clock). An unknown patient is watched
    /// from now on, under the default plan.
    pub fn ingest(
        &mut self,
        patient_id: &str,
        device_id: &str,
        content: &Content,
        arrived: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
    ) {
        let p = match self.patient_index.get(patient_id) {
            Some(&p) => p,
            None => {
                self.add_patient(
                    patient_id,
                    chrono_tz::Europe::Stockholm,
                    Arc::default(),
                    arrived,
                    book,
                    out,
                );
                self.patient_index[patient_id]
            }
        };
        let device = self.device(device_id);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let state = &mut self.patients[p as usize];
        if content
            .last_time()
            .is_some_and(|t| arrived.millis_since(t) > rules::LATE_MS)
        {
            let settle = i64::from(state.plan.thresholds.late_data_settle_s) * UnixMillis::SECOND;
            state.backlog_until = state.backlog_until.max(arrived.plus_millis(settle));
        }
        absorb::absorb(state, device, content, &mut scratch);
        if let Some((ctg_device, summary)) = absorb::ctg(state, device, content, arrived) {
            out.push(Decision::CtgSession {
                patient_id: patient_id.to_owned(),
                device_id: self.devices[ctg_device.0 as usize].to_string(),
                summary,
            });
        }
        // The session's idle timeout runs on the hub's clock from the
        // arrival of its last data (not from that data's time: an upload of
        // what a monitor kept offline is hours old on arrival).
        if let Some(c) = &state.ctg
            && c.is_running()
            && c.last_received == arrived
        {
            let idle = arrived.plus_millis(patient::CTG_IDLE_MS + 1);
            self.deadlines.insert((idle, p, Wake::CtgIdle));
        }
        let input = match content {
            Content::Observations(obs) => Input {
                observations: obs,
                ..Input::default()
            },
            Content::Events(events) => Input {
                events,
                ..Input::default()
            },
            Content::Status(status) => Input {
                status,
                ..Input::default()
            },
        };
        let input = Input {
            weight_days: &scratch.weight_days,
            vitals: &scratch.vitals,
            symptoms: &scratch.symptoms,
            ..input
        };
        self.run(p, None, device, arrived, book, out, |rule, state, ctx| {
            rule.on_input(state, &input, ctx)
        });
        self.scratch = scratch;
    }

    /// One stored message on a clock that follows the data, as a restart's
    /// rebuild and `vaka replay` run them: the deadlines that fell due
    /// before it run first, as they did live, then it arrives at its own
    /// time. This is what makes replay equal live.
    pub fn replay(
        &mut self,
        patient_id: &str,
        device_id: &str,
        content: &Content,
        at: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
    ) {
        self.tick(at, book, out);
        self.ingest(patient_id, device_id, content, at, book, out);
    }

    /// Runs every deadline that the hub's clock has passed.
    pub fn tick(&mut self, now: UnixMillis, book: &AlertBook, out: &mut Vec<Decision>) {
        while let Some(&(when, p, wake)) = self.deadlines.first() {
            if when > now {
                break;
            }
            self.deadlines.pop_first();
            let rule_id = match wake {
                Wake::Rule(rule) => rule,
                Wake::CtgIdle => {
                    self.end_idle_ctg(p, now, out);
                    continue;
                }
            };
            // An absence is judged when the patient's upload of late data
            // is over: what fills it may be in the next message.
            let backlog_until = self.patients[p as usize].backlog_until;
            if rule_id.judges_absence() && backlog_until > now {
                self.deadlines.insert((backlog_until, p, wake));
                continue;
            }
            self.run(
                p,
                Some(rule_id),
                DeviceRef(u32::MAX),
                now,
                book,
                out,
                |rule, state, ctx| rule.on_deadline(state, ctx),
            );
        }
    }

    /// Calls `f` for every rule the patient's plan applies (or just `only`),
    /// then files the wake-ups they asked for and stamps the plan version on
    /// findings.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        p: u32,
        only: Option<RuleId>,
        device: DeviceRef,
        now: UnixMillis,
        book: &AlertBook,
        out: &mut Vec<Decision>,
        f: impl Fn(&dyn Rule, &mut PatientState, &mut Context<'_>),
    ) {
        let start = out.len();
        let state = &mut self.patients[p as usize];
        let pid = &self.patient_ids[p as usize];
        let active = |rule: RuleId, device: Option<&str>| book.is_active(Some(pid), rule, device);
        let active_since = |rule: RuleId| book.active_since(pid, rule);
        let mut wake_at = std::mem::take(&mut self.wake_scratch);
        let mut ctx = Context {
            patient_id: pid,
            device,
            devices: &self.devices,
            now,
            active: &active,
            active_since: &active_since,
            out,
            wake_at: &mut wake_at,
        };
        let (rules, version) = (state.rules, state.plan.version);
        for rule in &self.rules {
            let id = rule.id();
            if rules & id.bit() != 0 && only.is_none_or(|o| o == id) {
                f(rule.as_ref(), state, &mut ctx);
            }
        }
        for (when, rule) in wake_at.drain(..) {
            self.deadlines.insert((when, p, Wake::Rule(rule)));
        }
        self.wake_scratch = wake_at;
        let mut seen_commands: Vec<String> = Vec::new();
        let mut i = start;
        while i < out.len() {
            match &mut out[i] {
                Decision::Raise(f) => f.plan_version = version,
                // The same command twice for one message (say, bp_crisis
                // and hypotension both asking for a new reading) is one.
                Decision::Command { device_id, json } => {
                    let key = format!("{device_id}\u{0}{json}");
                    if seen_commands.contains(&key) {
                        out.remove(i);
                        continue;
                    }
                    seen_commands.push(key);
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Ends a CTG session when nothing has arrived for it for 5 min (hub
    /// clock). Its summary is taken on a copy; the session itself is kept
    /// as it was, so that data which continues it in data time, arriving
    /// later, reopens it.
    fn end_idle_ctg(&mut self, p: u32, now: UnixMillis, out: &mut Vec<Decision>) {
        let state = &mut self.patients[p as usize];
        let Some(c) = state
            .ctg
            .as_deref_mut()
            .filter(|c| c.is_running() && now.millis_since(c.last_received) > patient::CTG_IDLE_MS)
        else {
            return;
        };
        c.running = false;
        let summary = c.summary(c.last_data.plus_millis(patient::CTG_IDLE_MS));
        out.push(Decision::CtgSession {
            patient_id: self.patient_ids[p as usize].to_string(),
            device_id: self.devices[c.device.0 as usize].to_string(),
            summary,
        });
    }

    /// When [`Engine::tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.deadlines.first().map(|d| d.0)
    }
}

#[cfg(test)]
mod tests;
