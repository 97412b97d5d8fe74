//! The vocabulary of the protocol: what a device may say, in which unit, and
//! within which physical limits (ARCHITECTURE §2). Everything past the
//! gateway speaks these types, never raw SenML.

use std::fmt;

/// A point in time: milliseconds since the Unix epoch (UTC).
///
/// Milliseconds are fine enough for 4 Hz CTG and small enough that a reading
/// stays `Copy` and cheap in the hub's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub const SECOND: i64 = 1_000;
    pub const MINUTE: i64 = 60 * Self::SECOND;
    pub const HOUR: i64 = 60 * Self::MINUTE;
    pub const DAY: i64 = 24 * Self::HOUR;

    /// The wall clock now.
    pub fn now() -> UnixMillis {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(since.as_millis() as i64)
    }

    /// From (possibly fractional) SenML seconds, rounded to the millisecond.
    pub fn from_secs_f64(secs: f64) -> Option<UnixMillis> {
        let ms = (secs * 1000.0).round();
        (ms.is_finite() && ms.abs() < 1e15).then_some(UnixMillis(ms as i64))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    pub fn plus_millis(self, ms: i64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(ms))
    }

    pub fn millis_since(self, earlier: UnixMillis) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// Generates an enum of wire names (`as_str`, `parse`, `ALL`, `Display`,
/// `Serialize` as the wire string). Exported so the hub names its own
/// vocabularies (rules, severities, alert states) the same way.
#[macro_export]
macro_rules! protocol_names {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

protocol_names! {
    /// A measurement name (`obs`).
    Metric {
        Weight => "weight",
        Sys => "sys",
        Dia => "dia",
        Map => "map",
        Hr => "hr",
        Spo2 => "spo2",
        Temp => "temp",
        Fhr => "fhr",
        Toco => "toco",
        Sigq => "sigq",
    }
}

impl Metric {
    /// The one accepted unit (SenML / UCUM).
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Weight => "kg",
            Metric::Sys | Metric::Dia | Metric::Map => "mm[Hg]",
            Metric::Hr | Metric::Fhr => "beat/min",
            Metric::Spo2 | Metric::Toco | Metric::Sigq => "%",
            Metric::Temp => "Cel",
        }
    }

    /// The physically plausible range, inclusive.
    pub fn range(self) -> (f64, f64) {
        match self {
            Metric::Weight => (20.0, 350.0),
            Metric::Sys => (50.0, 300.0),
            Metric::Dia => (20.0, 200.0),
            Metric::Map => (30.0, 250.0),
            Metric::Hr => (20.0, 250.0),
            Metric::Spo2 => (50.0, 100.0),
            Metric::Temp => (30.0, 45.0),
            Metric::Fhr => (50.0, 240.0),
            Metric::Toco | Metric::Sigq => (0.0, 100.0),
        }
    }

    pub fn in_range(self, value: f64) -> bool {
        let (lo, hi) = self.range();
        (lo..=hi).contains(&value)
    }
}

protocol_names! {
    /// An event name (`evt`).
    EventKind {
        Fall => "fall",
        FallCancelled => "fall_cancelled",
        HelpButton => "help_button",
        DoseDue => "dose_due",
        DoseTaken => "dose_taken",
        DoseMissed => "dose_missed",
        RefillLow => "refill_low",
        DispenserFault => "dispenser_fault",
        CtgSessionStart => "ctg_session_start",
        CtgSessionEnd => "ctg_session_end",
        PatientSymptom => "patient_symptom",
    }
}

impl EventKind {
    /// Someone may be calling for help.
    pub fn is_alarm(self) -> bool {
        matches!(self, EventKind::Fall | EventKind::HelpButton)
    }
}

protocol_names! {
    /// A status field (`status`).
    StatusField {
        Conn => "conn",
        Batt => "batt",
        Rssi => "rssi",
        Fw => "fw",
        Hb => "hb",
        DosesLeft => "doses_left",
    }
}

protocol_names! {
    /// What kind of device a device is (registered with the hub).
    DeviceKind {
        Scale => "scale",
        BpCuff => "bp_cuff",
        PulseOximeter => "pulse_oximeter",
        Thermometer => "thermometer",
        FetalMonitor => "fetal_monitor",
        Dispenser => "dispenser",
        FallSensor => "fall_sensor",
    }
}

/// A measurement that passed validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub time: UnixMillis,
    pub metric: Metric,
    pub value: f64,
}

/// An event that passed validation; `text` is the `vs` of the record (a dose
/// id, a symptom), if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: UnixMillis,
    pub kind: EventKind,
    pub text: Option<String>,
}

/// A status value: numbers for `batt`, `rssi`, `hb`, `doses_left`; text for
/// `conn` and `fw`.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusValue {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub time: UnixMillis,
    pub field: StatusField,
    pub value: StatusValue,
}

/// The content of an accepted message, by channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Observations(Vec<Observation>),
    Events(Vec<Event>),
    Status(Vec<StatusReport>),
}

impl Content {
    pub fn len(&self) -> usize {
        match self {
            Content::Observations(v) => v.len(),
            Content::Events(v) => v.len(),
            Content::Status(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest record time, used to pick the device binding in force.
    pub fn first_time(&self) -> Option<UnixMillis> {
        match self {
            Content::Observations(v) => v.iter().map(|o| o.time).min(),
            Content::Events(v) => v.iter().map(|e| e.time).min(),
            Content::Status(v) => v.iter().map(|s| s.time).min(),
        }
    }

    /// The latest record time.
    pub fn last_time(&self) -> Option<UnixMillis> {
        match self {
            Content::Observations(v) => v.iter().map(|o| o.time).max(),
            Content::Events(v) => v.iter().map(|e| e.time).max(),
            Content::Status(v) => v.iter().map(|s| s.time).max(),
        }
    }

    /// Whether the message holds a fall or help-button event.
    pub fn has_alarm(&self) -> bool {
        matches!(self, Content::Events(v) if v.iter().any(|e| e.kind.is_alarm()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.as_str()), Some(*m));
        }
        for e in EventKind::ALL {
            assert_eq!(EventKind::parse(e.as_str()), Some(*e));
        }
        for k in DeviceKind::ALL {
            assert_eq!(DeviceKind::parse(k.as_str()), Some(*k));
        }
        for s in StatusField::ALL {
            assert_eq!(StatusField::parse(s.as_str()), Some(*s));
        }
        assert_eq!(Metric::parse("Weight"), None);
    }

    #[test]
    fn ranges_are_inclusive() {
        assert!(Metric::Weight.in_range(20.0));
        assert!(Metric::Weight.in_range(350.0));
        assert!(!Metric::Weight.in_range(350.01));
        assert!(!Metric::Spo2.in_range(f64::NAN));
    }

    #[test]
    fn millis_from_fractional_seconds() {
        assert_eq!(
            UnixMillis::from_secs_f64(1_733_068_800.25),
            Some(UnixMillis(1_733_068_800_250))
        );
        assert_eq!(UnixMillis::from_secs_f64(f64::INFINITY), None);
    }
}
