//! Validation: bytes from a device topic become typed content or a
//! [`Rejection`]. Pure: no I/O, the clock is a parameter.
//!
//! A pack is accepted or rejected whole, with one exception from the
//! contract: an `fhr` sample outside 50–240 bpm is an artefact of the
//! ultrasound, so it is dropped, counted as signal loss, and the rest of the
//! pack is kept.

use sha2::{Digest, Sha256};

use crate::error::{RejectCode, Rejection};
use crate::model::{
    Content, Event, EventKind, Metric, Observation, StatusField, StatusReport, StatusValue,
    UnixMillis,
};
use crate::senml::{self, DEVICE_URN_PREFIX, Record, Resolved, Value};
use crate::topics::{Channel, DeviceId};

/// Bounds on what a message may be.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Larger payloads are `too_large` (checked before parsing).
    pub max_payload_bytes: usize,
    /// More records than this in one pack are `too_large`.
    pub max_records: usize,
    /// A record more than this far ahead of the hub's clock is `future_time`.
    pub max_future_ms: i64,
    /// A record older than this is `too_old` (the plan's retention).
    pub max_age_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_records: 2_000,
            max_future_ms: 5 * UnixMillis::MINUTE,
            max_age_ms: 365 * UnixMillis::DAY,
        }
    }
}

/// An accepted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub content: Content,
    /// `fhr` samples dropped as artefacts (out of range).
    pub fhr_artefacts: u32,
}

/// The outcome of validating one message, with its reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `"{first record time}:{first 8 hex digits of SHA-256(payload)}"`, the
    /// `ref` of an error reply, also used in logs instead of the payload.
    pub reference: String,
    pub outcome: Result<Accepted, Rejection>,
}

/// The contract's message reference. `first_time` is in SenML seconds; when
/// the payload has no readable first record time (or a senseless one, such
/// as 1e300), the part before `:` is empty.
pub fn reference(payload: &[u8], first_time: Option<f64>) -> String {
    let digest = Sha256::digest(payload);
    let hash = hex::encode(&digest[..4]);
    match first_time.filter(|&t| UnixMillis::from_secs_f64(t).is_some()) {
        Some(t) => format!("{t}:{hash}"),
        None => format!(":{hash}"),
    }
}

/// The reference of a message refused before validation (an unknown device
/// id, a device over its rate): its first record's time is read from the
/// first record alone ([`senml::first_time`], a few KiB at most).
pub fn reference_unparsed(payload: &[u8], now: UnixMillis) -> String {
    reference(payload, senml::first_time(payload, now.as_secs_f64()))
}

/// Validates the payload of a message that `device` published on `channel`.
pub fn validate(
    device: &DeviceId,
    channel: Channel,
    payload: &[u8],
    now: UnixMillis,
    limits: &Limits,
) -> Verdict {
    let mut first_time = None;
    let outcome = check(device, channel, payload, now, limits, &mut first_time);
    // A pack refused before it was resolved (too large, not SenML, a bad
    // record after the first) still tells its time when the first record
    // can be read: the device needs it to know which message was refused.
    if outcome.is_err() && first_time.is_none() {
        first_time = senml::first_time(payload, now.as_secs_f64());
    }
    Verdict {
        reference: reference(payload, first_time),
        outcome,
    }
}

fn check(
    device: &DeviceId,
    channel: Channel,
    payload: &[u8],
    now: UnixMillis,
    limits: &Limits,
    first_time: &mut Option<f64>,
) -> Result<Accepted, Rejection> {
    if payload.len() > limits.max_payload_bytes {
        return Err(Rejection::new(
            RejectCode::TooLarge,
            format!(
                "payload is {} bytes; the limit is {}",
                payload.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let records: Vec<Record<'_>> = serde_json::from_slice(payload).map_err(|e| {
        use serde_json::error::Category;
        // A type error comes before a syntax error later in the text, so
        // make sure the text is JSON at all before calling it bad SenML.
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok();
        match e.classify() {
            Category::Data if is_json => Rejection::new(
                RejectCode::BadSenml,
                format!("not a SenML pack (an array of records): {e}"),
            ),
            _ => Rejection::new(RejectCode::BadJson, format!("not valid JSON: {e}")),
        }
    })?;
    if records.len() > limits.max_records {
        return Err(Rejection::new(
            RejectCode::TooLarge,
            format!(
                "pack has {} records; the limit is {}",
                records.len(),
                limits.max_records
            ),
        ));
    }
    let resolved = senml::resolve(records, now.as_secs_f64())
        .map_err(|reason| Rejection::new(RejectCode::BadSenml, reason))?;
    *first_time = resolved.first().map(|r| r.time);

    let mut parsed = Vec::with_capacity(resolved.len());
    for (i, r) in resolved.iter().enumerate() {
        let local = local_name(device, i, r)?;
        let time = check_time(i, local, r.time, now, limits)?;
        parsed.push((local, time, r));
    }
    match channel {
        Channel::Obs => observations(&parsed),
        Channel::Evt => events(&parsed),
        Channel::Status => status(&parsed),
        Channel::Err | Channel::Cmd => Err(Rejection::new(
            RejectCode::UnknownName,
            format!("devices do not publish on …/{}", channel.as_str()),
        )),
    }
}

/// The record's name without the device prefix; refuses another device's name.
fn local_name<'r>(device: &DeviceId, i: usize, r: &'r Resolved<'_>) -> Result<&'r str, Rejection> {
    // A bare name without any base name speaks for the topic's device (the
    // contract's last will is `[{"n":"conn","vs":"offline"}]`).
    if !r.name.contains(':') {
        return Ok(&r.name);
    }
    let Some(rest) = r.name.strip_prefix(DEVICE_URN_PREFIX) else {
        return Err(Rejection::new(
            RejectCode::BadSenml,
            format!(
                "record {i}: name {:?} does not start with {DEVICE_URN_PREFIX}{{device}}: (set bn)",
                r.name
            ),
        ));
    };
    let Some((named, local)) = rest.split_once(':') else {
        return Err(Rejection::new(
            RejectCode::BadSenml,
            format!("record {i}: base name must end with ':' after the device id"),
        ));
    };
    if named != device.as_str() {
        return Err(Rejection::new(
            RejectCode::TopicMismatch,
            format!(
                "record {i} names device {named:?} but was published on the topic of {device:?}"
            ),
        ));
    }
    if local.is_empty() {
        return Err(Rejection::new(
            RejectCode::BadSenml,
            format!("record {i} has no measurement name after the base name"),
        ));
    }
    Ok(local)
}

fn check_time(
    i: usize,
    name: &str,
    secs: f64,
    now: UnixMillis,
    limits: &Limits,
) -> Result<UnixMillis, Rejection> {
    let Some(time) = UnixMillis::from_secs_f64(secs) else {
        return Err(Rejection::new(
            RejectCode::BadSenml,
            format!("record {i} ({name}): time {secs} is out of any sensible range"),
        ));
    };
    let ahead = time.millis_since(now);
    if ahead > limits.max_future_ms {
        return Err(Rejection::new(
            RejectCode::FutureTime,
            format!(
                "record {i} ({name}) is {} s ahead of the hub's clock; at most {} s is allowed",
                ahead / 1000,
                limits.max_future_ms / 1000
            ),
        ));
    }
    let age = now.millis_since(time);
    if age > limits.max_age_ms {
        return Err(Rejection::new(
            RejectCode::TooOld,
            format!(
                "record {i} ({name}) is {} days old; data older than {} days is not kept",
                age / UnixMillis::DAY,
                limits.max_age_ms / UnixMillis::DAY
            ),
        ));
    }
    Ok(time)
}

type Parsed<'r, 'a> = (&'r str, UnixMillis, &'r Resolved<'a>);

fn unknown_name(i: usize, name: &str, channel: &str, known: &[&str]) -> Rejection {
    Rejection::new(
        RejectCode::UnknownName,
        format!(
            "record {i}: {name:?} is not a known {channel} name (known: {})",
            known.join(", ")
        ),
    )
}

fn observations(parsed: &[Parsed<'_, '_>]) -> Result<Accepted, Rejection> {
    let mut out = Vec::with_capacity(parsed.len());
    let mut fhr_artefacts = 0;
    for (i, &(name, time, r)) in parsed.iter().enumerate() {
        let Some(metric) = Metric::parse(name) else {
            let known: Vec<_> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            return Err(unknown_name(i, name, "measurement", &known));
        };
        if r.unit.as_deref() != Some(metric.unit()) {
            return Err(Rejection::new(
                RejectCode::BadUnit,
                format!(
                    "record {i}: {name} must be in {:?}, got {}",
                    metric.unit(),
                    r.unit
                        .as_deref()
                        .map_or("no unit".to_owned(), |u| format!("{u:?}"))
                ),
            ));
        }
        let Value::Number(value) = r.value else {
            return Err(Rejection::new(
                RejectCode::BadSenml,
                format!("record {i}: {name} needs a numeric value (v)"),
            ));
        };
        if !metric.in_range(value) {
            if metric == Metric::Fhr {
                fhr_artefacts += 1;
                continue;
            }
            let (lo, hi) = metric.range();
            return Err(Rejection::new(
                RejectCode::OutOfRange,
                format!(
                    "record {i}: {name} {value} {} is outside {lo}–{hi}",
                    metric.unit()
                ),
            ));
        }
        out.push(Observation {
            time,
            metric,
            value,
        });
    }
    Ok(Accepted {
        content: Content::Observations(out),
        fhr_artefacts,
    })
}

fn no_unit(i: usize, name: &str, r: &Resolved<'_>) -> Result<(), Rejection> {
    match r.unit.as_deref() {
        None => Ok(()),
        Some(u) => Err(Rejection::new(
            RejectCode::BadUnit,
            format!("record {i}: {name} takes no unit, got {u:?}"),
        )),
    }
}

/// Texts are stored and shown to people: control characters (a NUL, which
/// PostgreSQL refuses to store, would hold up every commit behind it) have
/// no place in them.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn control_text(i: usize, name: &str) -> Rejection {
    Rejection::new(
        RejectCode::BadSenml,
        format!("record {i}: the text of {name} contains control characters"),
    )
}

fn events(parsed: &[Parsed<'_, '_>]) -> Result<Accepted, Rejection> {
    let mut out = Vec::with_capacity(parsed.len());
    for (i, &(name, time, r)) in parsed.iter().enumerate() {
        let Some(kind) = EventKind::parse(name) else {
            let known: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(unknown_name(i, name, "event", &known));
        };
        no_unit(i, name, r)?;
        let text = match &r.value {
            Value::Text(s) if has_control(s) => return Err(control_text(i, name)),
            Value::Text(s) if s.len() <= 256 => Some(s.to_string()),
            Value::Text(_) => {
                return Err(Rejection::new(
                    RejectCode::TooLarge,
                    format!("record {i}: {name} text is longer than 256 bytes"),
                ));
            }
            Value::Bool(true) => None,
            _ => {
                return Err(Rejection::new(
                    RejectCode::BadSenml,
                    format!("record {i}: event {name} needs vs (text) or vb: true"),
                ));
            }
        };
        out.push(Event { time, kind, text });
    }
    Ok(Accepted {
        content: Content::Events(out),
        fhr_artefacts: 0,
    })
}

fn status(parsed: &[Parsed<'_, '_>]) -> Result<Accepted, Rejection> {
    let mut out = Vec::with_capacity(parsed.len());
    for (i, &(name, time, r)) in parsed.iter().enumerate() {
        let Some(field) = StatusField::parse(name) else {
            let known: Vec<_> = StatusField::ALL.iter().map(|k| k.as_str()).collect();
            return Err(unknown_name(i, name, "status", &known));
        };
        let value = match field {
            StatusField::Conn => {
                no_unit(i, name, r)?;
                match &r.value {
                    Value::Text(s) if s == "online" || s == "offline" => {
                        StatusValue::Text(s.to_string())
                    }
                    _ => {
                        return Err(Rejection::new(
                            RejectCode::BadSenml,
                            format!("record {i}: conn must be vs \"online\" or \"offline\""),
                        ));
                    }
                }
            }
            StatusField::Fw => {
                no_unit(i, name, r)?;
                match &r.value {
                    Value::Text(s) if has_control(s) => return Err(control_text(i, name)),
                    Value::Text(s) if s.len() <= 64 => StatusValue::Text(s.to_string()),
                    _ => {
                        return Err(Rejection::new(
                            RejectCode::BadSenml,
                            format!("record {i}: fw must be a text value (vs) of at most 64 bytes"),
                        ));
                    }
                }
            }
            StatusField::Batt | StatusField::Rssi | StatusField::Hb | StatusField::DosesLeft => {
                let (units, lo, hi): (&[Option<&str>], f64, f64) = match field {
                    StatusField::Batt => (&[Some("%")], 0.0, 100.0),
                    StatusField::Rssi => (&[Some("dBm")], -200.0, 50.0),
                    StatusField::Hb => (&[Some("s")], 1.0, 7.0 * 86_400.0),
                    _ => (&[None, Some("count"), Some("1")], 0.0, 10_000.0),
                };
                if !units.contains(&r.unit.as_deref()) {
                    return Err(Rejection::new(
                        RejectCode::BadUnit,
                        format!("record {i}: {name} has the wrong unit {:?}", r.unit),
                    ));
                }
                let Value::Number(v) = r.value else {
                    return Err(Rejection::new(
                        RejectCode::BadSenml,
                        format!("record {i}: {name} needs a numeric value (v)"),
                    ));
                };
                if !(lo..=hi).contains(&v) {
                    return Err(Rejection::new(
                        RejectCode::OutOfRange,
                        format!("record {i}: {name} {v} is outside {lo}–{hi}"),
                    ));
                }
                StatusValue::Number(v)
            }
        };
        out.push(StatusReport { time, field, value });
    }
    Ok(Accepted {
        content: Content::Status(out),
        fhr_artefacts: 0,
    })
}

#[cfg(test)]
mod tests;
