//! What the devices say, as SenML: one function per kind of message, built
//! with the gateway's [`PackBuilder`] so that the simulator and the gateway
//! cannot disagree on the wire format. Also the commands a device understands
//! and how the BP cuff answers a `remeasure`.

use serde::Deserialize;
use vaka_gateway::UnixMillis;
use vaka_gateway::model::{DeviceKind, EventKind, Metric, StatusField};
use vaka_gateway::senml::{self, PackBuilder, Record};
use vaka_gateway::topics::Channel;

use crate::physiology::{Bp, BpModel};
use crate::random::{Stream, stream};
use crate::roster::{Episode, SimPatient};

/// One MQTT message a device publishes (always at QoS 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The device id; the topic is `{root}/d/{device}/{channel}`.
    pub device: String,
    pub channel: Channel,
    /// SenML JSON.
    pub payload: String,
    /// Retained on the broker (live status messages, so that a subscriber
    /// learns each device's last state at once).
    pub retain: bool,
}

impl Message {
    fn new(device: &str, channel: Channel, payload: String) -> Message {
        Message {
            device: device.to_owned(),
            channel,
            payload,
            retain: false,
        }
    }
}

fn secs(t: UnixMillis) -> f64 {
    t.as_secs_f64()
}

/// A scale reading.
pub(crate) fn weight(device: &str, t: UnixMillis, kg: f64) -> Message {
    let m = Metric::Weight;
    let pack = PackBuilder::new(device, secs(t)).value(m.as_str(), m.unit(), kg, secs(t));
    Message::new(device, Channel::Obs, pack.to_json())
}

/// A cuff reading: `sys`, `dia`, `map` and `hr` of one measurement, one time.
pub(crate) fn blood_pressure(device: &str, t: UnixMillis, bp: Bp) -> Message {
    let s = secs(t);
    let pack = [
        (Metric::Sys, bp.sys),
        (Metric::Dia, bp.dia),
        (Metric::Map, bp.map()),
        (Metric::Hr, bp.hr),
    ]
    .into_iter()
    .fold(PackBuilder::new(device, s), |b, (m, v)| {
        b.value(m.as_str(), m.unit(), v, s)
    });
    Message::new(device, Channel::Obs, pack.to_json())
}

/// An event; `text` is its `vs` (a dose id), else it is `vb: true`.
pub(crate) fn event(device: &str, t: UnixMillis, kind: EventKind, text: Option<&str>) -> Message {
    let b = PackBuilder::new(device, secs(t));
    let pack = match text {
        Some(vs) => b.text(kind.as_str(), vs, secs(t)),
        None => b.flag(kind.as_str(), secs(t)),
    };
    Message::new(device, Channel::Evt, pack.to_json())
}

/// One field of a status pack.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Status<'a> {
    Conn(&'a str),
    Batt(f64),
    Rssi(f64),
    Fw(&'a str),
    Hb(u32),
    DosesLeft(u32),
}

/// A status pack. `doses_left` is a bare count, and SenML lets a count go
/// without a unit, but [`PackBuilder::value`] always writes one; so that
/// record's unit is taken off before the pack is serialised.
pub(crate) fn status(device: &str, t: UnixMillis, fields: &[Status<'_>], retain: bool) -> Message {
    let s = secs(t);
    let mut b = PackBuilder::new(device, s);
    for f in fields {
        b = match *f {
            Status::Conn(v) => b.text(StatusField::Conn.as_str(), v, s),
            Status::Fw(v) => b.text(StatusField::Fw.as_str(), v, s),
            Status::Batt(v) => b.value(StatusField::Batt.as_str(), "%", v, s),
            Status::Rssi(v) => b.value(StatusField::Rssi.as_str(), "dBm", v, s),
            Status::Hb(v) => b.value(StatusField::Hb.as_str(), "s", f64::from(v), s),
            Status::DosesLeft(v) => b.value(StatusField::DosesLeft.as_str(), "", f64::from(v), s),
        };
    }
    let mut records: Vec<Record<'static>> = b.records().to_vec();
    for r in &mut records {
        if r.n.as_deref() == Some(StatusField::DosesLeft.as_str()) {
            r.u = None;
        }
    }
    let payload = serde_json::to_string(&records).expect("BUG: SenML records always serialize");
    Message {
        retain,
        ..Message::new(device, Channel::Status, payload)
    }
}

/// Firmware versions, per kind, as a fleet would report them.
fn firmware(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Scale => "scale-2.1.4",
        DeviceKind::BpCuff => "bp-3.0.2",
        DeviceKind::FetalMonitor => "ctg-1.7.0",
        DeviceKind::Dispenser => "disp-5.2.1",
        DeviceKind::FallSensor => "fall-4.0.3",
        DeviceKind::PulseOximeter | DeviceKind::Thermometer => "1.0.0",
    }
}

/// The retained status a device publishes when it (re)connects: `conn`
/// online, its battery, firmware, and what else its kind reports (`rssi`,
/// `hb` for the fall sensor, `doses_left` for the dispenser). `start` is
/// when the run started (the fall sensor's battery drains from then).
pub fn connect_status(
    patient: &SimPatient,
    device: &str,
    start: UnixMillis,
    now: UnixMillis,
) -> Option<Message> {
    let d = patient.devices.iter().find(|d| d.id == device)?;
    let body = &patient.body;
    let mut fields = vec![Status::Conn("online")];
    match d.kind {
        DeviceKind::Scale => fields.extend(body.scale.as_ref().map(|m| Status::Batt(m.batt_pct))),
        DeviceKind::BpCuff => fields.extend(body.bp.as_ref().map(|m| Status::Batt(m.batt_pct))),
        DeviceKind::FetalMonitor => {
            fields.extend(body.ctg.as_ref().map(|m| Status::Batt(m.batt_pct)));
        }
        DeviceKind::Dispenser => {
            if let Some(m) = &body.dispenser {
                fields.push(Status::Batt(m.batt_pct));
                fields.push(Status::Rssi(m.rssi_dbm));
                let left = m.doses_left(body.seed, now, patient.tz());
                fields.push(Status::DosesLeft(left));
            }
        }
        DeviceKind::FallSensor => {
            if let Some(m) = &body.fall {
                fields.push(Status::Batt(m.batt_after(now.millis_since(start))));
                fields.push(Status::Rssi(m.rssi_dbm));
                fields.push(Status::Hb(m.hb_s));
            }
        }
        DeviceKind::PulseOximeter | DeviceKind::Thermometer => {}
    }
    fields.push(Status::Fw(firmware(d.kind)));
    Some(status(device, now, &fields, true))
}

/// The last will: the broker publishes it (retained, on `…/status`) when the
/// connection is lost without a DISCONNECT.
///
/// The contract writes it `[{"n":"conn","vs":"offline"}]`; this one also
/// carries the `bn` of the device, because the gateway resolves names
/// against `urn:dev:vaka:{dev}:` and would refuse a record named only
/// `conn`. It has no `bt`: a time below 2^28 s is relative to the receiver's
/// "now" (RFC 8428 §4.5.3), which is right for a message the broker sends
/// at an unknown later time.
pub fn last_will(device: &str) -> String {
    let record = Record {
        bn: Some(senml::base_name(device).into()),
        n: Some(StatusField::Conn.as_str().into()),
        vs: Some("offline".into()),
        ..Record::default()
    };
    serde_json::to_string(&[record]).expect("BUG: SenML records always serialize")
}

/// The status a device publishes before it disconnects on purpose (a clean
/// DISCONNECT suppresses the last will, yet the hub should still know).
pub(crate) fn offline_status(device: &str, now: UnixMillis) -> Message {
    status(device, now, &[Status::Conn("offline")], true)
}

/// A command on `{root}/d/{dev}/cmd` (ARCHITECTURE §2).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Take the reading `name` (`bp`, `hr`, `spo2`) again.
    Remeasure {
        name: String,
        #[serde(default)]
        reason: String,
    },
    /// Show a reminder to the patient.
    Remind { text: String },
}

impl Command {
    pub fn parse(payload: &[u8]) -> Result<Command, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

/// How long the crisis lasts: a `remeasure` within this time after the
/// crisis reading is answered with another crisis reading.
const CRISIS_LASTS_MS: i64 = 10 * UnixMillis::MINUTE;

/// The reading a device takes at `at` because it was told `cmd`; `nth`
/// numbers the device's repeats (each draws its own numbers). `start` is
/// when the run started, so the crisis patient's repeat is still in crisis.
/// `None`: the command asks for nothing this device measures.
pub fn answer(
    patient: &SimPatient,
    device: &str,
    cmd: &Command,
    start: UnixMillis,
    at: UnixMillis,
    nth: u64,
) -> Option<Message> {
    let d = patient.devices.iter().find(|d| d.id == device)?;
    let Command::Remeasure { name, .. } = cmd else {
        return None;
    };
    // A cuff measures heart rate with every blood pressure.
    if d.kind != DeviceKind::BpCuff || !matches!(name.as_str(), "bp" | "hr") {
        return None;
    }
    let model = patient.body.bp.as_ref()?;
    let mut rng = stream(patient.body.seed, Stream::Remeasure, nth as i64);
    let since_crisis = at.millis_since(crisis_time(start));
    let in_crisis =
        patient.has(Episode::HypertensiveCrisis) && (0..=CRISIS_LASTS_MS).contains(&since_crisis);
    let bp = if in_crisis {
        BpModel::crisis_repeat(&mut rng)
    } else {
        model.reading(&mut rng, false)
    };
    Some(blood_pressure(device, at, bp))
}

/// When the crisis reading is taken: 30 s into the run.
pub(crate) fn crisis_time(start: UnixMillis) -> UnixMillis {
    start.plus_millis(30 * UnixMillis::SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_pack_has_units_where_the_contract_wants_them() {
        let m = status(
            "disp-0003",
            UnixMillis(1_700_000_000_000),
            &[Status::Batt(97.0), Status::DosesLeft(12), Status::Hb(60)],
            true,
        );
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(v[0]["bn"], "urn:dev:vaka:disp-0003:");
        assert_eq!(v[0]["u"], "%");
        assert_eq!(v[1]["n"], "doses_left");
        assert!(v[1].get("u").is_none());
        assert_eq!(v[2]["u"], "s");
        assert!(m.retain);
    }

    #[test]
    fn commands_parse() {
        let c = Command::parse(br#"{"cmd":"remeasure","name":"bp","reason":"sys 192"}"#).unwrap();
        assert_eq!(
            c,
            Command::Remeasure {
                name: "bp".into(),
                reason: "sys 192".into()
            }
        );
        let c =
            Command::parse(r#"{"cmd":"remind","text":"Dags att väga dig"}"#.as_bytes()).unwrap();
        assert!(matches!(c, Command::Remind { .. }));
        assert!(Command::parse(br#"{"cmd":"reboot"}"#).is_err());
        assert!(Command::parse(b"not json").is_err());
    }

    #[test]
    fn last_will_names_the_device() {
        let v: serde_json::Value = serde_json::from_str(&last_will("bp-0004")).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"bn":"urn:dev:vaka:bp-0004:","n":"conn","vs":"offline"}])
        );
    }
}
