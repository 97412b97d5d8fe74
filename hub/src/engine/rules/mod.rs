//! The clinical rules. Each rule is a small unit behind the [`Rule`] trait:
//! it sees one patient's windows and the new input, and says what it found.
//! Rules never touch storage, the network or the clock directly: time comes
//! in as data (`now`, readings' times), so the same data always gives the
//! same findings, live or replayed.
//!
//! The engine first folds a message into the patient's shared windows
//! (first weight of the day, vital signs; see `engine::absorb`) and tells
//! the rules what changed; a rule keeps any state of its own in the
//! patient's [`PatientState`].

mod dispenser;
mod fall;
mod fetal;
mod missing;
mod remeasure;
mod technical;
pub use technical::device_limits;
mod vitals;
mod weight;

pub use dispenser::{DispenserFault, MissedDose, RefillDue};
pub use fall::{Fall, HelpButton};
pub use fetal::{CtgSignalLoss, FetalBaseline, FetalDeceleration, FetalVariability};
pub use missing::MissingMeasurement;
pub use remeasure::{BpCrisis, HeartRate, Hypotension, Spo2};
pub use technical::{DeviceOffline, LowBattery};
pub use vitals::BpAverage;
pub use weight::{WeightGain1d, WeightGain3d, WeightTrend};

use std::sync::Arc;

use serde::Serialize;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Event, Observation, StatusReport};

use super::patient::{DeviceRef, PatientState, Vital};

pub(crate) use vaka_gateway::protocol_names as wire_enum;

wire_enum! {
    /// The rule ids of the contract (ARCHITECTURE §4), plus the
    /// administrators' alarm for a fall or help call from an unbound device.
    RuleId {
        WeightGain1d => "weight_gain_1d",
        WeightGain3d => "weight_gain_3d",
        WeightTrend => "weight_trend",
        BpCrisis => "bp_crisis",
        BpAverage => "bp_average",
        Hypotension => "hypotension",
        HeartRate => "heart_rate",
        Spo2 => "spo2",
        FetalBaseline => "fetal_baseline",
        FetalVariability => "fetal_variability",
        FetalDeceleration => "fetal_deceleration",
        CtgSignalLoss => "ctg_signal_loss",
        MissedDose => "missed_dose",
        RefillDue => "refill_due",
        DispenserFault => "dispenser_fault",
        Fall => "fall",
        HelpButton => "help_button",
        MissingMeasurement => "missing_measurement",
        DeviceOffline => "device_offline",
        LowBattery => "low_battery",
        UnboundDeviceAlarm => "unbound_device_alarm",
        DeviceFlooding => "device_flooding",
    }
}

wire_enum! {
    Category {
        Clinical => "clinical",
        Adherence => "adherence",
        MissingData => "missing_data",
        Technical => "technical",
    }
}

wire_enum! {
    /// Ordered from the most to the least urgent.
    Severity {
        High => "high",
        Medium => "medium",
        Low => "low",
    }
}

impl RuleId {
    /// The rule's bit in a set of rules (a plan's rules, as a `u32`).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }

    pub fn category(self) -> Category {
        use RuleId::*;
        match self {
            CtgSignalLoss | DispenserFault | DeviceOffline | LowBattery | UnboundDeviceAlarm
            | DeviceFlooding => Category::Technical,
            MissedDose | RefillDue => Category::Adherence,
            MissingMeasurement => Category::MissingData,
            _ => Category::Clinical,
        }
    }

    pub fn severity(self) -> Severity {
        use RuleId::*;
        match self {
            BpCrisis | Hypotension | HeartRate | Spo2 | FetalBaseline | FetalVariability
            | FetalDeceleration | Fall | HelpButton | UnboundDeviceAlarm => Severity::High,
            WeightGain1d | WeightGain3d | CtgSignalLoss | MissedDose | DispenserFault
            | MissingMeasurement | DeviceFlooding => Severity::Medium,
            WeightTrend | BpAverage | RefillDue | DeviceOffline | LowBattery => Severity::Low,
        }
    }

    /// Rules that raise on an absence (no reading, no dose taken, no
    /// heartbeat): their deadlines wait while a patient's devices upload
    /// late data. Re-measurement does not wait: an unrepeated dangerous
    /// reading is raised at once, and a late repeat withdraws it.
    pub fn judges_absence(self) -> bool {
        matches!(
            self,
            RuleId::MissingMeasurement | RuleId::MissedDose | RuleId::DeviceOffline
        )
    }

    /// Technical alerts are kept apart per device.
    pub fn per_device(self) -> bool {
        self.category() == Category::Technical
    }
}

/// A reading that contributed to a finding, as shown to the nurse.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Evidence {
    /// Data time (RFC 3339 in JSON).
    #[serde(with = "crate::alerts::rfc3339")]
    pub time: UnixMillis,
    pub device_id: String,
    /// A metric (`sys`, `weight`) or event name (`fall`).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl Evidence {
    pub fn observation(device: &str, o: &Observation) -> Evidence {
        Evidence {
            time: o.time,
            device_id: device.to_owned(),
            name: o.metric.as_str().to_owned(),
            value: Some(o.value),
            unit: Some(o.metric.unit().to_owned()),
        }
    }

    pub fn event(device: &str, e: &Event) -> Evidence {
        Evidence {
            time: e.time,
            device_id: device.to_owned(),
            name: e.kind.as_str().to_owned(),
            value: None,
            unit: None,
        }
    }
}

/// What a rule found: enough to open or update an alert, in words a nurse
/// understands, with the readings that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: RuleId,
    /// `None` only for the administrators' alerts about a device (an alarm
    /// from a device bound to nobody, a device over its limits).
    pub patient_id: Option<String>,
    /// Set for per-device (technical) rules.
    pub device_id: Option<String>,
    /// Set for `missing_measurement`: the absent scheduled measurement.
    pub measurement: Option<String>,
    /// For rules with re-measurement: whether a repeat confirmed it.
    pub confirmed: Option<bool>,
    /// The version of the patient's plan it was found under.
    pub plan_version: i32,
    /// Swedish, e.g. "Vikt +2,4 kg på 3 dygn (78,1 → 80,5 kg). Gräns: +2,0 kg/3 dygn."
    pub explanation: String,
    /// The threshold in force, e.g. "+2,0 kg/3 dygn".
    pub threshold: String,
    pub evidence: Vec<Evidence>,
    /// Data time of the earliest and latest triggering reading: the engine's
    /// way to recognise a finding it has already filed.
    pub first_reading_at: UnixMillis,
    pub last_reading_at: UnixMillis,
}

/// What the engine asks of the world.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Open an alert, or update the active one of this patient + rule.
    Raise(Finding),
    /// Later data proved the alert raised at `trigger` wrong.
    Withdraw {
        rule: RuleId,
        patient_id: String,
        /// For `missing_measurement`: which absence.
        measurement: Option<String>,
        trigger: UnixMillis,
        reason: String,
    },
    /// The condition of an active self-clearing alert is gone (a device is
    /// back, a battery charged, the reading came).
    Clear {
        rule: RuleId,
        patient_id: String,
        device_id: Option<String>,
        /// For `missing_measurement`: which absence.
        measurement: Option<String>,
        reason: String,
        /// Data time of the reading that shows the condition gone: an
        /// alert raised by a later reading stays (a rebuild replays old
        /// readings).
        at: UnixMillis,
    },
    /// Send a JSON command to a device (`…/d/{dev}/cmd`).
    Command { device_id: String, json: String },
    /// A CTG session ended: store its summary.
    CtgSession {
        patient_id: String,
        device_id: String,
        summary: super::ctg::CtgSummary,
    },
}

/// The new input of one message, as a rule sees it: the message's
/// records and what they changed in the shared windows.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    pub observations: &'a [Observation],
    pub events: &'a [Event],
    pub status: &'a [StatusReport],
    /// Local days whose first weight is new (ascending).
    pub weight_days: &'a [i32],
    /// Vital-sign readings new in the window (in time order).
    pub vitals: &'a [Vital],
    /// Data times of `patient_symptom` events new in the patient's state.
    pub symptoms: &'a [UnixMillis],
}

/// What a rule may know and do besides its patient's state.
pub struct Context<'a> {
    pub patient_id: &'a str,
    /// The device that sent the input, and the engine's table of device ids.
    pub device: DeviceRef,
    pub devices: &'a [Arc<str>],
    /// When the message reached the hub, or the deadline's time (hub clock).
    pub now: UnixMillis,
    /// Whether this patient has an active alert for a rule (and device).
    pub active: &'a dyn Fn(RuleId, Option<&str>) -> bool,
    /// The data time the patient's active alert of a rule began at.
    pub active_since: &'a dyn Fn(RuleId) -> Option<UnixMillis>,
    /// Where the rule puts its decisions.
    pub out: &'a mut Vec<Decision>,
    /// Where the rule asks to be woken (hub clock), for absences.
    pub wake_at: &'a mut Vec<(UnixMillis, RuleId)>,
}

impl Context<'_> {
    /// Whether the patient has an active alert of `rule` that began no
    /// later than `t` (data time), counting one this very input has just
    /// raised. A reading older than the alert (late, or replayed by a
    /// rebuild) is judged on its own, as it was when it was taken.
    pub fn is_active_at(&self, rule: RuleId, t: UnixMillis) -> bool {
        (self.active_since)(rule).is_some_and(|since| since <= t) || self.raised_now(rule)
    }

    /// Whether the patient has an active alert of `rule`, counting one this
    /// very input has just raised.
    pub fn is_active(&self, rule: RuleId) -> bool {
        (self.active)(rule, None) || self.raised_now(rule)
    }

    /// Whether this very input has raised `rule` already.
    fn raised_now(&self, rule: RuleId) -> bool {
        self.out
            .iter()
            .any(|d| matches!(d, Decision::Raise(f) if f.rule == rule))
    }

    pub fn device_name(&self, device: DeviceRef) -> &str {
        self.devices.get(device.0 as usize).map_or("?", |d| d)
    }

    /// A finding of this patient for `rule`, triggered by readings from
    /// `first` to `last` (data time).
    pub fn finding(
        &self,
        rule: RuleId,
        explanation: String,
        threshold: String,
        evidence: Vec<Evidence>,
        first: UnixMillis,
        last: UnixMillis,
    ) -> Finding {
        Finding {
            rule,
            patient_id: Some(self.patient_id.to_owned()),
            device_id: None,
            measurement: None,
            confirmed: None,
            plan_version: 0,
            explanation,
            threshold,
            evidence,
            first_reading_at: first,
            last_reading_at: last,
        }
    }

    pub fn raise(&mut self, finding: Finding) {
        self.out.push(Decision::Raise(finding));
    }

    /// The condition of a self-clearing alert is gone.
    pub fn clear(
        &mut self,
        rule: RuleId,
        device: Option<DeviceRef>,
        reason: String,
        at: UnixMillis,
    ) {
        let device_id = device.map(|d| self.device_name(d).to_owned());
        if (self.active)(rule, device_id.as_deref()) || self.is_active(rule) {
            self.out.push(Decision::Clear {
                rule,
                patient_id: self.patient_id.to_owned(),
                device_id,
                measurement: None,
                at,
                reason,
            });
        }
    }

    /// Sends a JSON command to a device.
    pub fn command(&mut self, device: DeviceRef, json: serde_json::Value) {
        let device_id = self.device_name(device).to_owned();
        self.out.push(Decision::Command {
            device_id,
            json: json.to_string(),
        });
    }
}

/// One rule. Rules are stateless; what they remember lives in the
/// patient's windows, so one rule value serves every patient.
pub trait Rule: Send + Sync {
    fn id(&self) -> RuleId;

    /// New readings, events or status of one message arrived.
    fn on_input(&self, state: &mut PatientState, input: &Input<'_>, ctx: &mut Context<'_>);

    /// The hub's clock passed a deadline this rule asked for.
    fn on_deadline(&self, _state: &mut PatientState, _ctx: &mut Context<'_>) {}

    /// The plan changed (schedules and thresholds may differ now).
    fn on_plan(&self, _state: &mut PatientState, _ctx: &mut Context<'_>) {}
}

/// Formats a number the Swedish way: decimal comma, `decimals` places.
pub fn sv(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}").replace('.', ",")
}

/// A reading (or a threshold) as given: at least `min` and at most `max`
/// decimals, as many as the value has. Shown at its own resolution, a
/// value never rounds onto a limit it is compared with: SpO2 91.6 % is
/// "91,6 %" beside "under 92 %", not "92 %"; 91 is "91".
pub fn sv_exact(value: f64, min: usize, max: usize) -> String {
    let mut s = format!("{value:.max$}");
    if let Some(dot) = s.find('.') {
        let keep = dot + 1 + min;
        while s.len() > keep && s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s.replace('.', ",")
}

/// A computed value (a mean, a baseline, a share) beside the `limits` it was
/// compared with: `decimals` places, or up to two more while rounding would
/// put it on a limit it is not on (a baseline of 160.4 bpm is "160,4", not
/// "160", beside "Gräns: 110–160").
pub fn sv_near(value: f64, decimals: usize, limits: &[f64]) -> String {
    let lands = |d: usize| {
        let shown = format!("{value:.d$}");
        limits
            .iter()
            .any(|&l| value != l && format!("{l:.d$}") == shown)
    };
    let mut d = decimals;
    while d < decimals + 2 && lands(d) {
        d += 1;
    }
    sv(value, d)
}

/// A local clock time "14:32" in the patient's time zone.
pub fn local_hhmm(t: UnixMillis, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map(|dt| dt.with_timezone(&tz).format("%H:%M").to_string())
        .unwrap_or_else(|| "okänd tid".into())
}

/// Data older than this on arrival is late (a device uploading what it kept
/// while offline, a broker backlog): alerts raised from it say when it was
/// recorded, and absences wait for the rest of the upload (ARCHITECTURE §3).
pub const LATE_MS: i64 = 5 * UnixMillis::MINUTE;

/// " Registrerad 3/12 14:05 (inkom i efterhand)." when data recorded at
/// `recorded` (data time) arrived at `arrived` (hub clock) more than
/// [`LATE_MS`] later; empty otherwise (no allocation).
pub fn recorded_late(recorded: UnixMillis, arrived: UnixMillis, tz: chrono_tz::Tz) -> String {
    if arrived.millis_since(recorded) > LATE_MS {
        format!(
            " Registrerad {} (inkom i efterhand).",
            local_day_hhmm(recorded, tz)
        )
    } else {
        String::new()
    }
}

/// "d/m HH:MM" in the patient's time zone.
pub fn local_day_hhmm(t: UnixMillis, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map(|dt| dt.with_timezone(&tz).format("%-d/%-m %H:%M").to_string())
        .unwrap_or_else(|| "okänd tid".into())
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_shown_at_their_own_resolution() {
        assert_eq!(sv_exact(91.6, 0, 1), "91,6");
        assert_eq!(sv_exact(91.0, 0, 1), "91");
        assert_eq!(sv_exact(120.4, 0, 1), "120,4");
        assert_eq!(sv_exact(80.0, 1, 2), "80,0");
        assert_eq!(sv_exact(80.15, 1, 2), "80,15");
        assert_eq!(sv_exact(80.1, 1, 2), "80,1");
        assert_eq!(sv_exact(78.04, 1, 2), "78,04");
        assert_eq!(sv_exact(-0.5, 0, 1), "-0,5");
    }

    #[test]
    fn computed_values_do_not_round_onto_their_limits() {
        let limits = [110.0, 160.0];
        assert_eq!(sv_near(160.4, 0, &limits), "160,4");
        assert_eq!(sv_near(159.6, 0, &limits), "159,6");
        assert_eq!(sv_near(160.0, 0, &limits), "160");
        assert_eq!(sv_near(161.4, 0, &limits), "161");
        assert_eq!(sv_near(109.5, 0, &limits), "109,5");
        // At most two more places.
        assert_eq!(sv_near(160.0001, 0, &limits), "160,00");
        assert_eq!(sv_near(2.96, 1, &[3.0]), "2,96");
        assert_eq!(sv_near(2.94, 1, &[3.0]), "2,9");
    }
}
