//! The clinical rules. Each rule is a small unit behind the [`Rule`] trait:
//! it sees one patient's windows and the new input, and says what it found.
//! Rules never touch storage, the network or the clock directly: time comes
//! in as data (`now`, readings' times), so the same data always gives the
//! same findings, live or replayed.

mod bp_crisis;
mod fall;
mod weight_gain;

pub use bp_crisis::BpCrisis;
pub use fall::{Fall, HelpButton};
pub use weight_gain::WeightGain3d;

use serde::Serialize;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{Event, Observation};

use super::patient::{DeviceRef, PatientState};
use std::sync::Arc;

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
    pub fn category(self) -> Category {
        use RuleId::*;
        match self {
            CtgSignalLoss | DispenserFault | DeviceOffline | LowBattery | UnboundDeviceAlarm => {
                Category::Technical
            }
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
            | MissingMeasurement => Severity::Medium,
            WeightTrend | BpAverage | RefillDue | DeviceOffline | LowBattery => Severity::Low,
        }
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
    /// `None` only for alarms from devices that are bound to nobody.
    pub patient_id: Option<String>,
    /// Set for per-device (technical) rules.
    pub device_id: Option<String>,
    /// For rules with re-measurement: whether a repeat confirmed it.
    pub confirmed: Option<bool>,
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
        trigger: UnixMillis,
        reason: String,
    },
    /// Send a JSON command to a device (`…/d/{dev}/cmd`).
    Command { device_id: String, json: String },
}

/// Per-patient thresholds. Defaults are the contract's; the monitoring plan
/// overrides them per patient.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Alert when the gain over 3 days is above this, in tenths of a kg.
    pub weight_gain_3d_tenths: i32,
    pub bp_crisis_sys: f64,
    pub bp_crisis_dia: f64,
    /// How long a re-measurement may take to confirm (data time).
    pub confirm_window_ms: i64,
    /// How long after a fall a cancellation withdraws it (data time).
    pub fall_cancel_window_ms: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            weight_gain_3d_tenths: 20,
            bp_crisis_sys: 180.0,
            bp_crisis_dia: 120.0,
            confirm_window_ms: 5 * UnixMillis::MINUTE,
            fall_cancel_window_ms: 30 * UnixMillis::SECOND,
        }
    }
}

/// The new input of one message, as a rule sees it.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Observations(&'a [Observation]),
    Events(&'a [Event]),
}

/// What a rule may know and do besides its patient's state.
pub struct Context<'a> {
    pub patient_id: &'a str,
    /// The device that sent the input, and the engine's table of device ids.
    pub device: DeviceRef,
    pub devices: &'a [Arc<str>],
    /// When the message reached the hub (hub clock).
    pub arrived: UnixMillis,
    /// Whether this patient has an active alert for a rule.
    pub active: &'a dyn Fn(RuleId) -> bool,
    /// Where the rule puts its decisions.
    pub out: &'a mut Vec<Decision>,
    /// Where the rule asks to be woken (hub clock), for absences.
    pub wake_at: &'a mut Vec<(UnixMillis, RuleId)>,
}

impl Context<'_> {
    /// Whether the patient has an active alert of `rule`, counting one this
    /// very input has just raised.
    pub fn is_active(&self, rule: RuleId) -> bool {
        (self.active)(rule)
            || self
                .out
                .iter()
                .any(|d| matches!(d, Decision::Raise(f) if f.rule == rule))
    }

    pub fn device_name(&self, device: DeviceRef) -> &str {
        self.devices.get(device.0 as usize).map_or("?", |d| d)
    }
}

/// One rule. Rules are stateless; what they remember lives in the
/// patient's windows, so one rule value serves every patient.
pub trait Rule: Send + Sync {
    fn id(&self) -> RuleId;

    /// New readings or events of one message arrived.
    fn on_input(&self, state: &mut PatientState, input: Input<'_>, ctx: &mut Context<'_>);

    /// The hub's clock passed a deadline this rule asked for.
    fn on_deadline(&self, _state: &mut PatientState, _now: UnixMillis, _ctx: &mut Context<'_>) {}
}

/// Formats a number the Swedish way: decimal comma, `decimals` places.
pub fn sv(value: f64, decimals: usize) -> String {
    format!("{value:.decimals$}").replace('.', ",")
}

/// A local clock time "14:32" in the patient's time zone.
pub fn local_hhmm(t: UnixMillis, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map(|dt| dt.with_timezone(&tz).format("%H:%M").to_string())
        .unwrap_or_else(|| "okänd tid".into())
}

/// "d/m HH:MM" in the patient's time zone.
pub fn local_day_hhmm(t: UnixMillis, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(t.0)
        .map(|dt| dt.with_timezone(&tz).format("%-d/%-m %H:%M").to_string())
        .unwrap_or_else(|| "okänd tid".into())
}

#[cfg(test)]
pub(crate) mod testing;
