//! Folding a message into the patient's shared windows before the rules
//! run: the first weight of each local day, vital signs taken together,
//! reported symptoms. Several rules read these windows; folding once here
//! means each reading is added once, and a redelivered reading is
//! recognised once (it changes nothing, so no rule hears of it).

use vaka_gateway::model::{Content, EventKind, Metric};

use super::patient::{CTG_IDLE_MS, DailyWeight, DeviceRef, Inserted, PatientState, Symptom, Vital};

/// What a message changed in the shared windows.
#[derive(Debug, Default)]
pub struct Absorbed {
    /// Local days whose first weight is new (ascending).
    pub weight_days: Vec<i32>,
    /// New vital-sign readings (in time order).
    pub vitals: Vec<Vital>,
    /// Data times of new `patient_symptom` events.
    pub symptoms: Vec<vaka_gateway::UnixMillis>,
    /// Readings being assembled (reused, so absorbing allocates nothing).
    taken: Vec<Vital>,
}

impl Absorbed {
    pub fn clear(&mut self) {
        self.weight_days.clear();
        self.vitals.clear();
        self.symptoms.clear();
        self.taken.clear();
    }
}

pub fn absorb(state: &mut PatientState, device: DeviceRef, content: &Content, out: &mut Absorbed) {
    match content {
        Content::Observations(obs) => {
            for o in obs.iter().filter(|o| o.metric == Metric::Weight) {
                let entry = DailyWeight {
                    day: state.local_day(o.time),
                    time: o.time,
                    kg: o.value,
                    device,
                };
                let new = match state.weights.find(entry.day, |w| w.day) {
                    // Not the first weighing of that day.
                    Some(first) if first.time <= o.time => false,
                    // A late reading from earlier that day becomes its first.
                    Some(_) => state.weights.replace(entry, |w| w.day),
                    None => state.weights.insert(entry, |w| w.day) == Inserted::New,
                };
                if new {
                    out.weight_days.push(entry.day);
                }
            }
            out.weight_days.sort_unstable();
            out.weight_days.dedup();

            let mut taken = std::mem::take(&mut out.taken);
            for o in obs {
                if !matches!(
                    o.metric,
                    Metric::Sys | Metric::Dia | Metric::Hr | Metric::Spo2
                ) {
                    continue;
                }
                let i = match taken.iter().position(|v| v.time == o.time) {
                    Some(i) => i,
                    None => {
                        taken.push(Vital::new(o.time, device, state.local_day(o.time)));
                        taken.len() - 1
                    }
                };
                let slot = match o.metric {
                    Metric::Sys => 0,
                    Metric::Dia => 1,
                    Metric::Hr => 2,
                    _ => 3,
                };
                taken[i].set(slot, o.value);
            }
            taken.sort_by_key(|v| v.time);
            for &v in taken.iter() {
                if state.vitals.insert(v, |v| v.key()) == Inserted::New {
                    out.vitals.push(v);
                }
            }
            taken.clear();
            out.taken = taken;
        }
        Content::Events(events) => {
            for e in events
                .iter()
                .filter(|e| e.kind == EventKind::PatientSymptom)
            {
                let new = state.add_symptom(Symptom {
                    time: e.time,
                    device,
                    text: e.text.as_deref().unwrap_or("").into(),
                });
                if new {
                    out.symptoms.push(e.time);
                }
            }
        }
        Content::Status(_) => {}
    }
}

/// Feeds CTG samples and session events into the patient's session
/// (ARCHITECTURE §4, after the table): a session starts with
/// `ctg_session_start`, or with the first sample after a gap of 5 min in
/// data time (or from another device); it ends with `ctg_session_end`, or
/// when its data has a gap of 5 min, or when nothing has arrived for 5 min
/// (`Engine::tick`, from `arrived`, the hub time). A session ended by the
/// hub's clock, or data from before its `ctg_session_end`, is reopened by
/// data that continues it in data time, so a session uploaded after the
/// fact is analysed whole. Returns the summary of a session that ended (a
/// reopened one is summarised again when it ends again; the store keeps
/// the last summary of a device's session per start).
pub fn ctg(
    state: &mut PatientState,
    device: DeviceRef,
    content: &Content,
    arrived: vaka_gateway::UnixMillis,
) -> Option<(DeviceRef, super::ctg::CtgSummary)> {
    use super::patient::CtgState;
    let limits = state.plan.thresholds.ctg_limits();
    let mut ended = None;
    match content {
        Content::Observations(obs) => {
            let is_ctg = |o: &&vaka_gateway::model::Observation| {
                matches!(o.metric, Metric::Fhr | Metric::Toco)
            };
            // Most messages are not CTG: one cheap look, then one pass.
            let one = obs.iter().find(is_ctg)?;
            let ctg = obs.iter().filter(is_ctg);
            let (first, last) = ctg.clone().fold((one.time, one.time), |(lo, hi), o| {
                (lo.min(o.time), hi.max(o.time))
            });
            let continues = state
                .ctg
                .as_ref()
                .is_some_and(|c| c.continued_by(device, first));
            if !continues && let Some(c) = state.ctg.take() {
                // A session already ended was summarised when it ended.
                if c.is_running() {
                    ended = Some((c.device, c.summary(c.last_data.plus_millis(CTG_IDLE_MS))));
                }
            }
            let c = state
                .ctg
                .get_or_insert_with(|| Box::new(CtgState::new(device, first, arrived, limits)));
            c.running = true;
            c.last_received = arrived;
            for o in ctg {
                match o.metric {
                    Metric::Fhr => c.session.push_fhr(o.time, o.value),
                    _ => c.session.push_toco(o.time, o.value),
                }
            }
            c.last_data = c.last_data.max(last);
            c.session.advance_to(last);
        }
        Content::Events(events) => {
            for e in events {
                match e.kind {
                    EventKind::CtgSessionStart => {
                        if let Some(c) = state.ctg.take()
                            && c.is_running()
                        {
                            ended = Some((c.device, c.summary(e.time)));
                        }
                        state.ctg = Some(Box::new(CtgState::new(device, e.time, arrived, limits)));
                    }
                    EventKind::CtgSessionEnd => {
                        let Some(c) = state.ctg.as_deref_mut().filter(|c| c.device == device)
                        else {
                            continue;
                        };
                        if c.is_running() {
                            // Summarised on a copy: samples up to the end
                            // that arrive after this event still count.
                            ended = Some((c.device, c.summary(e.time)));
                        }
                        c.running = false;
                        c.end_event.get_or_insert(e.time);
                        c.last_received = arrived;
                    }
                    _ => {}
                }
            }
        }
        Content::Status(_) => {}
    }
    ended
}
