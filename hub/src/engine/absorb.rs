//! Folding a message into the patient's shared windows before the rules
//! run: the first weight of each local day, vital signs taken together,
//! reported symptoms. Several rules read these windows; folding once here
//! means each reading is added once, and a redelivered reading is
//! recognised once (it changes nothing, so no rule hears of it).

use vaka_gateway::model::{Content, EventKind, Metric};

use super::patient::{DailyWeight, DeviceRef, Inserted, PatientState, Vital};

/// What a message changed in the shared windows.
#[derive(Debug, Default)]
pub struct Absorbed {
    /// Local days whose first weight is new (ascending).
    pub weight_days: Vec<i32>,
    /// New vital-sign readings (in time order).
    pub vitals: Vec<Vital>,
    /// Readings being assembled (reused, so absorbing allocates nothing).
    taken: Vec<Vital>,
}

impl Absorbed {
    pub fn clear(&mut self) {
        self.weight_days.clear();
        self.vitals.clear();
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
                state.symptoms.insert(e.time, |t| *t);
            }
        }
        Content::Status(_) => {}
    }
}
