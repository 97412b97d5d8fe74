//! When each message is sent: the history before a run and the live
//! schedule after its start, both pure and seeded.
//!
//! Every device is a *track*: an iterator of `(due, message)` in time order.
//! Daily devices (scale, cuff, dispenser) plan one local day at a time, from
//! a generator of that day; the fetal monitor plays sessions; the fall sensor
//! beats its heart. A [`Schedule`] merges the tracks with a heap keyed by the
//! next due time of each, so it holds one pending item per device, not a
//! queue of everything to come (the live schedule never ends).
//!
//! The history of a run is the same daily tracks, started `days` before the
//! run and cut at its start: what a day looks like does not depend on
//! whether it is replayed as history or lived through.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::iter::Peekable;

use chrono::NaiveDate;
use chrono_tz::Tz;
use rand::RngExt;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{DeviceKind, EventKind};

use crate::ctg::{PACK_SAMPLES, Session, recordings};
use crate::devices::{self, Message, Status};
use crate::localtime::{add_days, at, date_of, day_number};
use crate::physiology::{BpModel, CtgModel, DoseEvent, FallModel};
use crate::random::{Stream, gauss, stream};
use crate::roster::{Episode, Roster, SimPatient};

/// A message and the time it is to be sent.
pub type Due = (UnixMillis, Message);

type Track = Peekable<Box<dyn Iterator<Item = Due> + Send>>;

/// The scripted events of the first minutes of a run, after its start.
pub const FALL_AFTER_S: i64 = 90;
pub const HELP_BUTTON_AFTER_S: i64 = 120;
pub const CANCELLED_FALL_AFTER_S: i64 = 150;
/// The patient cancels the false alarm this long after the fall.
pub const CANCEL_AFTER_S: i64 = 10;
/// The `n`th scripted CTG session starts `n` × this after the run starts.
const CTG_STAGGER_S: i64 = 120;

/// A merged, time-ordered stream of messages of many devices.
pub struct Schedule {
    tracks: Vec<Track>,
    /// `(due, track)` of the next item of each track that has one; the track
    /// index breaks ties, so equal times come out in a fixed order.
    heap: BinaryHeap<Reverse<(UnixMillis, usize)>>,
}

impl Schedule {
    /// The live schedule of every device in `roster`, from `start` on. It
    /// never ends: tomorrow's weights follow today's.
    pub fn new(roster: &Roster, start: UnixMillis) -> Schedule {
        Schedule::from_tracks(
            roster
                .patients
                .iter()
                .flat_map(|p| tracks(p, start, start, true))
                .collect(),
        )
    }

    /// The live schedule of one patient's devices.
    pub fn for_patient(patient: &SimPatient, start: UnixMillis) -> Schedule {
        Schedule::from_tracks(tracks(patient, start, start, true))
    }

    fn from_tracks(tracks: Vec<Box<dyn Iterator<Item = Due> + Send>>) -> Schedule {
        let mut s = Schedule {
            tracks: tracks.into_iter().map(Iterator::peekable).collect(),
            heap: BinaryHeap::new(),
        };
        for i in 0..s.tracks.len() {
            s.push(i);
        }
        s
    }

    fn push(&mut self, i: usize) {
        if let Some((due, _)) = self.tracks[i].peek() {
            self.heap.push(Reverse((*due, i)));
        }
    }

    /// When the next message is due.
    pub fn peek_due(&self) -> Option<UnixMillis> {
        self.heap.peek().map(|Reverse((due, _))| *due)
    }
}

impl Iterator for Schedule {
    type Item = Due;

    fn next(&mut self) -> Option<Due> {
        let Reverse((_, i)) = self.heap.pop()?;
        let item = self.tracks[i].next();
        self.push(i);
        item
    }
}

/// The messages a patient's devices sent in the `days` × 24 h before `now`
/// (scale, cuff and dispenser), oldest first. They are sent at `now`, as
/// devices upload what they stored; none is retained, so that the live
/// status a device publishes on connecting stays its last word.
pub fn history(patient: &SimPatient, now: UnixMillis, days: u32) -> Vec<Message> {
    let from = now.plus_millis(-i64::from(days) * UnixMillis::DAY);
    Schedule::from_tracks(tracks(patient, now, from, false))
        .take_while(|(due, _)| *due < now)
        .map(|(_, m)| Message { retain: false, ..m })
        .collect()
}

/// The tracks of a patient's devices for a run that starts at `start`,
/// holding the items due from `from` on. `live` adds what only happens while
/// the simulator runs: the episodes, CTG sessions and heartbeats.
fn tracks(
    patient: &SimPatient,
    start: UnixMillis,
    from: UnixMillis,
    live: bool,
) -> Vec<Box<dyn Iterator<Item = Due> + Send>> {
    let tz = patient.tz();
    let body = &patient.body;
    let seed = body.seed;
    let today = date_of(start, tz);
    let first_day = date_of(from, tz);
    let mut out: Vec<Box<dyn Iterator<Item = Due> + Send>> = Vec::new();
    for d in &patient.devices {
        let dev = d.id.clone();
        match d.kind {
            DeviceKind::Scale => {
                if let Some(m) = body.scale.clone() {
                    out.push(Box::new(DayTrack::new(first_day, from, move |date| {
                        m.morning(seed, date, today, tz)
                            .into_iter()
                            .map(|(t, kg)| (t, devices::weight(&dev, t, kg)))
                            .collect()
                    })));
                }
            }
            DeviceKind::BpCuff => {
                let Some(m) = body.bp.clone() else { continue };
                if live && m.crisis {
                    let t = devices::crisis_time(start);
                    let mut rng = stream(seed, Stream::Episode, 0);
                    let bp = BpModel::crisis_reading(&mut rng);
                    out.push(Box::new(std::iter::once((
                        t,
                        devices::blood_pressure(&dev, t, bp),
                    ))));
                }
                out.push(Box::new(DayTrack::new(first_day, from, move |date| {
                    m.day(seed, date, tz)
                        .into_iter()
                        .map(|(t, bp)| (t, devices::blood_pressure(&dev, t, bp)))
                        .collect()
                })));
            }
            DeviceKind::Dispenser => {
                if let Some(m) = body.dispenser.clone() {
                    out.push(Box::new(DayTrack::new(first_day, from, move |date| {
                        m.day(seed, date, today, tz)
                            .into_iter()
                            .map(|(t, e)| (t, dose_message(&dev, t, e, m.batt_pct)))
                            .collect()
                    })));
                }
            }
            DeviceKind::FetalMonitor if live => {
                if let Some(m) = body.ctg.clone() {
                    out.push(Box::new(CtgTrack::new(dev, m, seed, start, tz)));
                }
            }
            DeviceKind::FallSensor if live => {
                if let Some(m) = body.fall.clone() {
                    out.push(Box::new(FallTrack::new(dev, m, patient, seed, start)));
                }
            }
            _ => {}
        }
    }
    out
}

fn dose_message(device: &str, t: UnixMillis, e: DoseEvent, batt: f64) -> Message {
    match e {
        DoseEvent::Due(id) => devices::event(device, t, EventKind::DoseDue, Some(&id)),
        DoseEvent::Taken(id) => devices::event(device, t, EventKind::DoseTaken, Some(&id)),
        DoseEvent::Missed(id) => devices::event(device, t, EventKind::DoseMissed, Some(&id)),
        DoseEvent::RefillLow => devices::event(device, t, EventKind::RefillLow, None),
        DoseEvent::Left(n) => {
            devices::status(device, t, &[Status::DosesLeft(n), Status::Batt(batt)], true)
        }
    }
}

/// A device that plans one local day at a time. Every item of a day lies in
/// that day, so days in order give items in order.
struct DayTrack<F> {
    plan: F,
    next_date: NaiveDate,
    from: UnixMillis,
    buf: VecDeque<Due>,
}

impl<F: FnMut(NaiveDate) -> Vec<Due>> DayTrack<F> {
    fn new(first_date: NaiveDate, from: UnixMillis, plan: F) -> Self {
        DayTrack {
            plan,
            next_date: first_date,
            from,
            buf: VecDeque::new(),
        }
    }
}

impl<F: FnMut(NaiveDate) -> Vec<Due>> Iterator for DayTrack<F> {
    type Item = Due;

    fn next(&mut self) -> Option<Due> {
        // A device that plans nothing for a year plans nothing at all.
        for _ in 0..366 {
            if let Some(item) = self.buf.pop_front() {
                return Some(item);
            }
            let mut day = (self.plan)(self.next_date);
            self.next_date = add_days(self.next_date, 1);
            day.retain(|(t, _)| *t >= self.from);
            // Stable: items at the same time keep the plan's order (a dose
            // event before the status it changed).
            day.sort_by_key(|(t, _)| *t);
            self.buf.extend(day);
        }
        None
    }
}

/// What a fetal monitor does next.
#[derive(Debug, Clone, Copy)]
enum CtgPhase {
    Start,
    Pack(usize),
    End,
}

/// Home CTG: a full-length session in the first minutes for the scripted
/// patients, then one session a day around the patient's usual time.
struct CtgTrack {
    device: String,
    model: CtgModel,
    seed: u64,
    tz: Tz,
    scripted: Option<Session>,
    current: Option<(Session, CtgPhase)>,
    next_date: NaiveDate,
    /// No session starts before this (the previous one's end plus a pause).
    not_before: UnixMillis,
}

impl CtgTrack {
    fn new(device: String, model: CtgModel, seed: u64, start: UnixMillis, tz: Tz) -> CtgTrack {
        let scripted = model.scripted.map(|n| {
            let begin = start.plus_millis(i64::from(n) * CTG_STAGGER_S * UnixMillis::SECOND);
            Session::new(begin, n as usize, 0, 60)
        });
        CtgTrack {
            device,
            model,
            seed,
            tz,
            scripted,
            current: None,
            next_date: date_of(start, tz),
            not_before: start,
        }
    }

    /// The next session: the scripted one, else the first daily session that
    /// starts after the previous one ended.
    fn next_session(&mut self) -> Session {
        if let Some(s) = self.scripted.take() {
            self.not_before = s.end().plus_millis(UnixMillis::HOUR);
            return s;
        }
        loop {
            let date = self.next_date;
            self.next_date = add_days(date, 1);
            let mut rng = stream(self.seed, Stream::Ctg, day_number(date));
            let jitter = (gauss(&mut rng) * 900.0).clamp(-1800.0, 1800.0) as i64;
            let begin = at(
                date,
                (i64::from(self.model.usual_s) + jitter) as u32,
                self.tz,
            );
            if begin < self.not_before {
                continue;
            }
            let recording = rng.random_range(0..recordings().len());
            let minutes = rng.random_range(30..=45);
            let len = minutes as usize * 60 * crate::ctg::HZ as usize;
            let samples = recordings()[recording].samples.len();
            let slots = samples.saturating_sub(len) / PACK_SAMPLES;
            let offset = rng.random_range(0..=slots) * PACK_SAMPLES;
            let s = Session::new(begin, recording, offset, minutes);
            self.not_before = s.end().plus_millis(UnixMillis::HOUR);
            return s;
        }
    }
}

impl Iterator for CtgTrack {
    type Item = Due;

    fn next(&mut self) -> Option<Due> {
        let (session, phase) = match self.current {
            Some(c) => c,
            None => (self.next_session(), CtgPhase::Start),
        };
        let dev = &self.device;
        let (item, next) = match phase {
            CtgPhase::Start => (
                (
                    session.start,
                    devices::event(dev, session.start, EventKind::CtgSessionStart, None),
                ),
                Some(CtgPhase::Pack(0)),
            ),
            CtgPhase::Pack(j) => {
                let next = if j + 1 < session.packs() {
                    CtgPhase::Pack(j + 1)
                } else {
                    CtgPhase::End
                };
                ((session.pack_due(j), session.pack(dev, j)), Some(next))
            }
            CtgPhase::End => (
                (
                    session.end(),
                    devices::event(dev, session.end(), EventKind::CtgSessionEnd, None),
                ),
                None,
            ),
        };
        self.current = next.map(|p| (session, p));
        Some(item)
    }
}

/// The fall sensor: a small status every `hb` seconds, and the scripted
/// falls and help-button presses of the first minutes.
struct FallTrack {
    device: String,
    model: FallModel,
    seed: u64,
    start: UnixMillis,
    beats: i64,
    script: VecDeque<(UnixMillis, EventKind)>,
}

impl FallTrack {
    fn new(
        device: String,
        model: FallModel,
        patient: &SimPatient,
        seed: u64,
        start: UnixMillis,
    ) -> FallTrack {
        let after = |s: i64| start.plus_millis(s * UnixMillis::SECOND);
        let mut script = Vec::new();
        if patient.has(Episode::Fall) {
            script.push((after(FALL_AFTER_S), EventKind::Fall));
        }
        if patient.has(Episode::HelpButton) {
            script.push((after(HELP_BUTTON_AFTER_S), EventKind::HelpButton));
        }
        if patient.has(Episode::CancelledFall) {
            script.push((after(CANCELLED_FALL_AFTER_S), EventKind::Fall));
            let cancel = CANCELLED_FALL_AFTER_S + CANCEL_AFTER_S;
            script.push((after(cancel), EventKind::FallCancelled));
        }
        script.sort_by_key(|(t, _)| *t);
        FallTrack {
            device,
            model,
            seed,
            start,
            beats: 0,
            script: script.into(),
        }
    }
}

impl Iterator for FallTrack {
    type Item = Due;

    fn next(&mut self) -> Option<Due> {
        let beat_at = self
            .start
            .plus_millis((self.beats + 1) * i64::from(self.model.hb_s) * UnixMillis::SECOND);
        if let Some(&(t, kind)) = self.script.front()
            && t <= beat_at
        {
            self.script.pop_front();
            return Some((t, devices::event(&self.device, t, kind, None)));
        }
        self.beats += 1;
        let mut rng = stream(self.seed, Stream::FallSensor, self.beats);
        let rssi = (self.model.rssi_dbm + gauss(&mut rng) * 3.0).round();
        let batt = self.model.batt_after(beat_at.millis_since(self.start));
        // `hb` again: the status is retained, and whoever reads only the
        // last one should still learn how often to expect the next.
        let fields = [
            Status::Batt(batt),
            Status::Rssi(rssi),
            Status::Hb(self.model.hb_s),
        ];
        Some((
            beat_at,
            devices::status(&self.device, beat_at, &fields, true),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::roster;

    #[test]
    fn schedule_is_time_ordered() {
        let r = roster(5, 12);
        let start = UnixMillis(1_796_108_400_000);
        let mut last = UnixMillis(0);
        for (due, _) in Schedule::new(&r, start).take(5_000) {
            assert!(due >= last, "{due} after {last}");
            assert!(due >= start);
            last = due;
        }
        // The schedule goes on into the next days.
        assert!(last.millis_since(start) > UnixMillis::HOUR, "{last}");
    }

    #[test]
    fn history_ends_before_now_and_starts_after_its_first_day() {
        let r = roster(5, 12);
        let now = UnixMillis(1_796_130_000_000);
        for p in &r.patients {
            let h = history(p, now, 3);
            assert!(h.iter().all(|m| !m.retain));
            assert!(!h.is_empty(), "{} has no history", p.id);
        }
        assert!(history(&r.patients[0], now, 0).is_empty());
    }
}
