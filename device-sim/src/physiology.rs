//! The simulated bodies and habits: what a patient weighs on a given morning,
//! what the cuff reads, when the pills are taken. Pure: every function takes
//! the patient's seed and a date or time and returns plain numbers; turning
//! them into SenML is `devices`' job, ordering them in time `schedule`'s.
//!
//! Each day is drawn from its own generator (`random::stream(seed, …, day)`),
//! so a day's readings do not depend on when the history starts or how long
//! the run has been going.

use chrono::NaiveDate;
use chrono_tz::Tz;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use vaka_gateway::UnixMillis;

use crate::localtime::{add_days, at, date_of, day_number, hm, weekday};
use crate::random::{Stream, gauss, noise, stream};

/// Everything the simulator knows about one patient's body and devices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Physiology {
    /// The patient's own seed; every stream of the patient derives from it.
    pub seed: u64,
    pub scale: Option<ScaleModel>,
    pub bp: Option<BpModel>,
    pub dispenser: Option<DispenserModel>,
    pub ctg: Option<CtgModel>,
    pub fall: Option<FallModel>,
}

// ---------------------------------------------------------------- weight

/// Fluid retention in heart failure: the patient gains this much a day…
pub(crate) const RETENTION_KG_PER_DAY: f64 = 1.0;
/// …starting this many days before the run's first day (the last normal
/// morning is `RETENTION_ONSET_DAYS` days ago). With 1.0 kg/day, today's
/// weight is 3.0 kg above that of 3 days ago, minus at most 0.6 kg of noise
/// and 0.2 kg of drift: always above the 2.0 kg of `weight_gain_3d`.
pub(crate) const RETENTION_ONSET_DAYS: i64 = 4;
/// Untreated, the gain levels off (the simulator does not model diuretics).
const RETENTION_MAX_KG: f64 = 6.0;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScaleModel {
    /// The patient's weight when well ("dry weight").
    pub baseline_kg: f64,
    /// The time the patient usually steps on the scale, s after local midnight.
    pub habit_s: u32,
    /// Phase of a slow (30-day) drift of ±0.3 kg, as real weights wander.
    pub drift_phase: f64,
    /// In a fluid-retention episode that peaks on the run's first day.
    pub retention: bool,
    pub batt_pct: f64,
}

/// Morning weighing happens between these (local time).
pub(crate) const WEIGH_FROM_S: u32 = hm(6, 30);
pub(crate) const WEIGH_UNTIL_S: u32 = hm(9, 30);

impl ScaleModel {
    pub fn draw(rng: &mut ChaCha8Rng, retention: bool) -> ScaleModel {
        ScaleModel {
            baseline_kg: (rng.random_range(60.0..110.0_f64) * 10.0).round() / 10.0,
            habit_s: rng.random_range(hm(6, 45)..hm(9, 0)),
            drift_phase: rng.random_range(0.0..std::f64::consts::TAU),
            retention,
            batt_pct: rng.random_range(45.0..100.0_f64).round(),
        }
    }

    /// The weight the patient "really" has on `date`, before scale noise.
    fn true_weight(&self, date: NaiveDate, today: NaiveDate) -> f64 {
        let day = day_number(date) as f64;
        let drift = 0.3 * (std::f64::consts::TAU * day / 30.0 + self.drift_phase).sin();
        let gain = if self.retention {
            let days_in = RETENTION_ONSET_DAYS - (day_number(today) - day_number(date));
            (days_in.max(0) as f64 * RETENTION_KG_PER_DAY).min(RETENTION_MAX_KG)
        } else {
            0.0
        };
        self.baseline_kg + drift + gain
    }

    /// The readings of one local morning: usually one, sometimes a second
    /// one minutes later (people step on again), sometimes none (forgot).
    /// Weights are in kg to 0.1 kg, as home scales show them.
    pub fn morning(
        &self,
        seed: u64,
        date: NaiveDate,
        today: NaiveDate,
        tz: Tz,
    ) -> Vec<(UnixMillis, f64)> {
        let mut rng = stream(seed, Stream::Weight, day_number(date));
        // Patients in an episode are the ones the demo is about: they weigh
        // themselves every day.
        if !self.retention && rng.random_bool(0.03) {
            return Vec::new();
        }
        let jitter = (gauss(&mut rng) * 600.0).clamp(-1200.0, 1200.0) as i64;
        let time_s = (i64::from(self.habit_s) + jitter)
            .clamp(i64::from(WEIGH_FROM_S), i64::from(WEIGH_UNTIL_S - 600))
            as u32;
        let first_at = at(date, time_s, tz).plus_millis(rng.random_range(0..1000));
        let kg = round1(self.true_weight(date, today) + noise(&mut rng, 0.15, 0.3));
        let mut out = vec![(first_at, kg)];
        if rng.random_bool(0.05) {
            let again = first_at.plus_millis(rng.random_range(60_000..480_000));
            out.push((again, round1(kg + noise(&mut rng, 0.1, 0.2))));
        }
        out
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

// ------------------------------------------------------------ blood pressure

/// One cuff reading, in mmHg and beats per minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bp {
    pub sys: f64,
    pub dia: f64,
    pub hr: f64,
}

impl Bp {
    /// Mean arterial pressure as oscillometric cuffs estimate it:
    /// diastolic plus a third of the pulse pressure.
    pub fn map(&self) -> f64 {
        (self.dia + (self.sys - self.dia) / 3.0).round()
    }
}

/// Routine readings stay inside these: below `bp_crisis` (180/110), above
/// `hypotension` (90) and away from the `heart_rate` limits (40/120), so the
/// history raises no high-severity alert; the episodes do that on purpose.
const SYS_RANGE: (f64, f64) = (95.0, 175.0);
const DIA_RANGE: (f64, f64) = (55.0, 108.0);
const HR_RANGE: (f64, f64) = (48.0, 110.0);

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BpModel {
    pub sys: f64,
    pub dia: f64,
    pub hr: f64,
    pub morning_s: u32,
    /// Some patients also measure in the evening.
    pub evening_s: Option<u32>,
    /// Takes two readings a minute apart (the ESH home protocol).
    pub duplicate: bool,
    /// Chance that a reading is a "white-coat" spike: the patient measured
    /// right after rushing or worrying.
    pub white_coat: f64,
    /// Has a hypertensive crisis in the first minute of the run.
    pub crisis: bool,
    pub batt_pct: f64,
}

impl BpModel {
    /// A patient's baselines, drawn from the ranges of their program.
    pub fn draw(rng: &mut ChaCha8Rng, profile: BpProfile, crisis: bool) -> BpModel {
        let Baselines {
            sys,
            dia,
            hr,
            evening,
            duplicate,
        } = match profile {
            BpProfile::HeartFailure => HEART_FAILURE,
            BpProfile::Hypertension => HYPERTENSION,
            BpProfile::Pregnancy => PREGNANCY,
        };
        BpModel {
            sys: rng.random_range(sys.0..sys.1).round(),
            dia: rng.random_range(dia.0..dia.1).round(),
            hr: rng.random_range(hr.0..hr.1).round(),
            morning_s: rng.random_range(hm(7, 0)..hm(9, 0)),
            evening_s: rng
                .random_bool(evening)
                .then(|| rng.random_range(hm(19, 30)..hm(21, 30))),
            duplicate: rng.random_bool(duplicate),
            white_coat: rng.random_range(0.03..0.07),
            crisis,
            batt_pct: rng.random_range(40.0..100.0_f64).round(),
        }
    }

    /// A routine reading: baseline plus noise, sometimes a white-coat spike,
    /// kept inside the routine limits.
    pub fn reading(&self, rng: &mut ChaCha8Rng, allow_spike: bool) -> Bp {
        let spike = allow_spike && rng.random_bool(self.white_coat);
        let (ds, dd, dh) = if spike {
            (
                rng.random_range(15.0..25.0),
                rng.random_range(5.0..10.0),
                rng.random_range(5.0..12.0),
            )
        } else {
            (0.0, 0.0, 0.0)
        };
        let sys = (self.sys + ds + noise(rng, 6.0, 15.0))
            .round()
            .clamp(SYS_RANGE.0, SYS_RANGE.1);
        let dia = (self.dia + dd + noise(rng, 4.0, 10.0))
            .round()
            .clamp(DIA_RANGE.0, DIA_RANGE.1)
            // A pulse pressure under 25 mmHg is not what a cuff reports here.
            .min(sys - 25.0);
        let hr = (self.hr + dh + noise(rng, 4.0, 10.0))
            .round()
            .clamp(HR_RANGE.0, HR_RANGE.1);
        Bp { sys, dia, hr }
    }

    /// The routine readings of one local day.
    pub fn day(&self, seed: u64, date: NaiveDate, tz: Tz) -> Vec<(UnixMillis, Bp)> {
        let mut rng = stream(seed, Stream::BloodPressure, day_number(date));
        let mut out = Vec::new();
        let sessions = [Some(self.morning_s), self.evening_s];
        for habit in sessions.into_iter().flatten() {
            if rng.random_bool(0.04) {
                continue; // forgot this one
            }
            let jitter = (gauss(&mut rng) * 600.0).clamp(-1500.0, 1500.0) as i64;
            let first = at(date, (i64::from(habit) + jitter) as u32, tz);
            out.push((first, self.reading(&mut rng, true)));
            if self.duplicate {
                let second = first.plus_millis(rng.random_range(60_000..120_000));
                out.push((second, self.reading(&mut rng, false)));
            }
        }
        out
    }

    /// The crisis reading of the episode, e.g. 192/124.
    pub fn crisis_reading(rng: &mut ChaCha8Rng) -> Bp {
        Bp {
            sys: rng.random_range(186..=198).into(),
            dia: rng.random_range(120..=128).into(),
            hr: rng.random_range(84..=104).into(),
        }
    }

    /// The repeat a minute later, still in crisis (sys ≥ 180), e.g. 188/121.
    pub fn crisis_repeat(rng: &mut ChaCha8Rng) -> Bp {
        Bp {
            sys: rng.random_range(182..=192).into(),
            dia: rng.random_range(116..=124).into(),
            hr: rng.random_range(82..=100).into(),
        }
    }
}

/// Where a program's BP baselines lie, and its measuring habits.
struct Baselines {
    sys: (f64, f64),
    dia: (f64, f64),
    hr: (f64, f64),
    /// Chance of measuring in the evening too.
    evening: f64,
    /// Chance of taking two readings each time.
    duplicate: f64,
}

/// Treated heart failure: often low-normal pressure (beta blockers, ACE
/// inhibitors), heart rate kept down.
const HEART_FAILURE: Baselines = Baselines {
    sys: (105.0, 135.0),
    dia: (60.0, 82.0),
    hr: (58.0, 88.0),
    evening: 0.4,
    duplicate: 0.0,
};
/// Hypertension under treatment, not all of it controlled; most follow the
/// ESH protocol of morning and evening, twice each.
const HYPERTENSION: Baselines = Baselines {
    sys: (128.0, 158.0),
    dia: (78.0, 96.0),
    hr: (56.0, 84.0),
    evening: 0.7,
    duplicate: 0.6,
};
/// Pregnancy: lower pressure, higher heart rate; measured for pre-eclampsia.
const PREGNANCY: Baselines = Baselines {
    sys: (102.0, 124.0),
    dia: (62.0, 80.0),
    hr: (70.0, 92.0),
    evening: 0.2,
    duplicate: 0.0,
};

/// Which baseline table a cuff's owner draws from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BpProfile {
    HeartFailure,
    Hypertension,
    Pregnancy,
}

// ----------------------------------------------------------------- dispenser

/// A dispenser holds this many days of doses after a refill; home care
/// refills it weekly, so on time it never gets below 3 days' worth.
const FILL_DAYS: u32 = 10;
/// The dispenser warns (`refill_low`) when at most this many days are left;
/// that happens only when a refill is late.
const LOW_DAYS: u32 = 2;
/// A dose not taken within this long is reported `dose_missed` by the device.
pub(crate) const MISSED_AFTER_MS: i64 = 60 * UnixMillis::MINUTE;

/// A dose time of the day.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Slot {
    pub name: &'static str,
    pub at_s: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DispenserModel {
    pub slots: Vec<Slot>,
    /// Chance of missing any one dose.
    pub p_miss: f64,
    /// Misses yesterday's morning dose for certain (the demo's missed dose).
    pub forgetful: bool,
    /// Home care's refill day, Monday = 0.
    pub refill_weekday: u32,
    pub batt_pct: f64,
    pub rssi_dbm: f64,
}

/// What a dispenser reports, before it becomes SenML.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DoseEvent {
    Due(String),
    Taken(String),
    Missed(String),
    RefillLow,
    /// A `status` with the number of doses left (after a dose or a refill).
    Left(u32),
}

impl DispenserModel {
    pub fn draw(rng: &mut ChaCha8Rng, forgetful: bool) -> DispenserModel {
        // Dispensers are programmed on the hour or half hour.
        let shift = [-1800_i64, 0, 0, 1800][rng.random_range(0..4)];
        let base = [
            ("morning", hm(8, 0)),
            ("midday", hm(12, 0)),
            ("evening", hm(18, 0)),
            ("night", hm(21, 0)),
        ];
        let midday = rng.random_bool(0.5);
        let night = rng.random_bool(0.4);
        let slots = base
            .into_iter()
            .filter(|(name, _)| match *name {
                "midday" => midday,
                "night" => night,
                _ => true,
            })
            .map(|(name, s)| Slot {
                name,
                at_s: (i64::from(s) + shift) as u32,
            })
            .collect();
        DispenserModel {
            slots,
            p_miss: if forgetful {
                0.10
            } else {
                rng.random_range(0.0..0.05)
            },
            forgetful,
            refill_weekday: rng.random_range(0..5),
            batt_pct: rng.random_range(95.0..100.0_f64).round(),
            rssi_dbm: rng.random_range(-92.0..-60.0_f64).round(),
        }
    }

    fn per_day(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The dose id of the contract's example: `2026-12-01-morning`.
    pub fn dose_id(date: NaiveDate, slot: &Slot) -> String {
        format!("{date}-{}", slot.name)
    }

    /// When home care refills in the week whose refill is planned on
    /// `planned`: usually that day, sometimes two days late.
    fn refill_at(&self, seed: u64, planned: NaiveDate, tz: Tz) -> UnixMillis {
        let mut rng = stream(seed, Stream::Refill, day_number(planned));
        let late = rng.random_bool(0.15);
        let visit_s = hm(10, 0) + rng.random_range(0..90) * 60;
        at(add_days(planned, if late { 2 } else { 0 }), visit_s, tz)
    }

    /// The planned refill day of the week that `date` is in.
    fn planned_refill(&self, date: NaiveDate) -> NaiveDate {
        let back = (weekday(date) + 7 - self.refill_weekday) % 7;
        add_days(date, -i64::from(back))
    }

    /// The last refill at or before `t`. A late refill (at most 2 days)
    /// stays inside its week, so looking one week back is always enough.
    fn last_refill(&self, seed: u64, t: UnixMillis, tz: Tz) -> UnixMillis {
        let planned = self.planned_refill(date_of(t, tz));
        let this_week = self.refill_at(seed, planned, tz);
        if this_week <= t {
            this_week
        } else {
            self.refill_at(seed, add_days(planned, -7), tz)
        }
    }

    /// Doses due in `(after, until]`.
    fn doses_between(&self, after: UnixMillis, until: UnixMillis, tz: Tz) -> u32 {
        let (mut date, last) = (date_of(after, tz), date_of(until, tz));
        let mut n = 0;
        while date <= last {
            n += self
                .slots
                .iter()
                .map(|s| at(date, s.at_s, tz))
                .filter(|&t| t > after && t <= until)
                .count() as u32;
            date = add_days(date, 1);
        }
        n
    }

    /// What the dispenser holds at `t`. A dose leaves the dispenser when it
    /// is due (it is released, or locked away when missed), so the count is
    /// a function of the schedule and the refills alone: no state to carry
    /// from day to day.
    pub fn doses_left(&self, seed: u64, t: UnixMillis, tz: Tz) -> u32 {
        let refill = self.last_refill(seed, t, tz);
        (FILL_DAYS * self.per_day()).saturating_sub(self.doses_between(refill, t, tz))
    }

    /// What the dispenser reports on one local day.
    pub fn day(
        &self,
        seed: u64,
        date: NaiveDate,
        today: NaiveDate,
        tz: Tz,
    ) -> Vec<(UnixMillis, DoseEvent)> {
        let mut rng = stream(seed, Stream::Doses, day_number(date));
        let mut out = Vec::new();
        let low = LOW_DAYS * self.per_day();
        for slot in &self.slots {
            let due = at(date, slot.at_s, tz);
            let id = Self::dose_id(date, slot);
            out.push((due, DoseEvent::Due(id.clone())));
            let left = self.doses_left(seed, due, tz);
            out.push((due, DoseEvent::Left(left)));
            // Counts fall one dose at a time, so the warning comes exactly once.
            if left == low {
                out.push((due.plus_millis(2_000), DoseEvent::RefillLow));
            }
            let scripted_miss =
                self.forgetful && slot.name == "morning" && date == add_days(today, -1);
            if scripted_miss || rng.random_bool(self.p_miss) {
                out.push((due.plus_millis(MISSED_AFTER_MS), DoseEvent::Missed(id)));
            } else {
                // Most doses are taken within minutes of the alarm, a few
                // late but still within the hour.
                let minutes = (1.5 + 0.7 * gauss(&mut rng)).exp().clamp(0.5, 55.0);
                let taken = due.plus_millis((minutes * 60_000.0) as i64);
                out.push((taken, DoseEvent::Taken(id)));
            }
        }
        let refill = self.refill_at(seed, self.planned_refill(date), tz);
        if date_of(refill, tz) == date {
            out.push((refill, DoseEvent::Left(self.doses_left(seed, refill, tz))));
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

// ---------------------------------------------------------------------- CTG

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CtgModel {
    /// When the daily home session usually starts, s after local midnight.
    pub usual_s: u32,
    /// For the first pregnant patients: the `n`th starts a full-length
    /// session `n` × 2 min after the run starts (the 0th at once).
    pub scripted: Option<u32>,
    pub batt_pct: f64,
}

impl CtgModel {
    pub fn draw(rng: &mut ChaCha8Rng, scripted: Option<u32>) -> CtgModel {
        CtgModel {
            usual_s: rng.random_range(hm(9, 0)..hm(16, 0)),
            scripted,
            batt_pct: rng.random_range(60.0..100.0_f64).round(),
        }
    }
}

// ------------------------------------------------------------- fall sensor

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FallModel {
    /// Battery at the start of the run; it drains 1 % every 4 hours.
    pub batt_pct: f64,
    pub rssi_dbm: f64,
    /// The heartbeat interval the sensor promises.
    pub hb_s: u32,
}

impl FallModel {
    pub fn draw(rng: &mut ChaCha8Rng, low_battery: bool) -> FallModel {
        FallModel {
            batt_pct: if low_battery {
                rng.random_range(16.0..19.0_f64).round()
            } else {
                rng.random_range(35.0..100.0_f64).round()
            },
            rssi_dbm: rng.random_range(-90.0..-55.0_f64).round(),
            hb_s: 60,
        }
    }

    /// The battery `elapsed_ms` into the run.
    pub fn batt_after(&self, elapsed_ms: i64) -> f64 {
        let drained = elapsed_ms as f64 / (4 * UnixMillis::HOUR) as f64;
        (self.batt_pct - drained).floor().max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::localtime::DEFAULT_TZ;
    use crate::random::rng;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn routine_bp_stays_below_alert_limits() {
        for seed in 0..200 {
            let mut r = rng(seed, &[]);
            let profile = [
                BpProfile::HeartFailure,
                BpProfile::Hypertension,
                BpProfile::Pregnancy,
            ][seed as usize % 3];
            let m = BpModel::draw(&mut r, profile, false);
            for _ in 0..200 {
                let bp = m.reading(&mut r, true);
                assert!(bp.sys < 180.0 && bp.sys >= 90.0, "{bp:?}");
                assert!(bp.dia < 110.0 && bp.dia >= 20.0, "{bp:?}");
                assert!(bp.sys - bp.dia >= 25.0, "{bp:?}");
                assert!((40.0..=120.0).contains(&bp.hr), "{bp:?}");
            }
        }
        let mut r = rng(1, &[]);
        assert!(BpModel::crisis_reading(&mut r).sys >= 180.0);
        assert!(BpModel::crisis_repeat(&mut r).sys >= 180.0);
        assert_eq!(
            Bp {
                sys: 120.0,
                dia: 81.0,
                hr: 60.0
            }
            .map(),
            94.0
        );
    }

    #[test]
    fn retention_gains_weight_before_today() {
        let m = ScaleModel {
            baseline_kg: 80.0,
            habit_s: hm(7, 0),
            drift_phase: 0.0,
            retention: true,
            batt_pct: 90.0,
        };
        let today = date(2026, 12, 1);
        let w = |k: i64| m.true_weight(add_days(today, -k), today);
        assert!((w(0) - w(3) - 3.0).abs() < 0.25, "{} {}", w(0), w(3));
        assert!((w(4) - w(5)).abs() < 0.1);
    }

    #[test]
    fn dispenser_count_follows_schedule_and_refills() {
        let mut r = rng(3, &[]);
        let m = DispenserModel::draw(&mut r, false);
        let per_day = m.per_day();
        let tz = DEFAULT_TZ;
        let mut low_events = 0;
        let mut date = date(2026, 1, 5);
        for _ in 0..120 {
            for (t, e) in m.day(3, date, date, tz) {
                match e {
                    DoseEvent::Left(n) => {
                        assert!(n <= FILL_DAYS * per_day);
                        assert!(n >= per_day, "ran dry at {t}: {n}");
                    }
                    DoseEvent::RefillLow => low_events += 1,
                    _ => {}
                }
            }
            date = add_days(date, 1);
        }
        // 15 % of ~17 weeks are late refills.
        assert!((1..=10).contains(&low_events), "{low_events}");
    }
}
