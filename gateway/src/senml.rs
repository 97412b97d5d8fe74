//! SenML JSON (RFC 8428): the records as they travel, their resolution into
//! absolute names and times, and a small builder for devices and tests.
//!
//! Resolution follows RFC 8428 §4.6: base fields (`bn`, `bt`, `bu`, `bv`)
//! apply to the record they appear in and to every later record until
//! replaced; a resolved time below 2^28 s is relative to "now".

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One SenML record as it appears on the wire. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record<'a> {
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub bn: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bt: Option<f64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub bu: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bv: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bver: Option<i64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub n: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub u: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<f64>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub vs: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vb: Option<bool>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub vd: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<f64>,
}

/// The value of a resolved record.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Number(f64),
    Text(Cow<'a, str>),
    Bool(bool),
    Data(Cow<'a, str>),
    /// Only a sum (`s`) or nothing at all.
    Missing,
}

/// A record after resolution: full name, unit, value and absolute time.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<'a> {
    pub name: String,
    pub unit: Option<Cow<'a, str>>,
    pub value: Value<'a>,
    /// Seconds since the epoch.
    pub time: f64,
}

/// Times below this are relative to now (RFC 8428 §4.5.3).
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0; // 2^28

/// The highest SenML version this parser understands.
const MAX_VERSION: i64 = 10;

/// Resolves a pack. The error is a human-readable reason (the caller files
/// it under `bad_senml`).
pub fn resolve<'a>(records: Vec<Record<'a>>, now_secs: f64) -> Result<Vec<Resolved<'a>>, String> {
    if records.is_empty() {
        return Err("the pack holds no records".into());
    }
    let mut base_name: Cow<'a, str> = Cow::Borrowed("");
    let mut base_time = 0.0;
    let mut base_unit: Option<Cow<'a, str>> = None;
    let mut base_value = 0.0;
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        if let Some(ver) = r.bver
            && !(1..=MAX_VERSION).contains(&ver)
        {
            return Err(format!("record {i}: unsupported SenML version {ver}"));
        }
        if let Some(bn) = r.bn {
            base_name = bn;
        }
        if let Some(bt) = r.bt {
            base_time = bt;
        }
        if let Some(bu) = r.bu {
            base_unit = Some(bu);
        }
        if let Some(bv) = r.bv {
            base_value = bv;
        }
        let name = format!("{}{}", base_name, r.n.as_deref().unwrap_or(""));
        if name.is_empty() {
            return Err(format!("record {i} has no name"));
        }
        let mut time = base_time + r.t.unwrap_or(0.0);
        if !time.is_finite() {
            return Err(format!("record {i}: time is not a finite number"));
        }
        if time < RELATIVE_TIME_LIMIT {
            time += now_secs;
        }
        let values = [
            r.v.is_some(),
            r.vs.is_some(),
            r.vb.is_some(),
            r.vd.is_some(),
        ];
        if values.iter().filter(|&&b| b).count() > 1 {
            return Err(format!("record {i} ({name}) has more than one value"));
        }
        let value = if let Some(v) = r.v {
            let v = v + base_value;
            if !v.is_finite() {
                return Err(format!("record {i} ({name}): value is not a finite number"));
            }
            Value::Number(v)
        } else if let Some(vs) = r.vs {
            Value::Text(vs)
        } else if let Some(vb) = r.vb {
            Value::Bool(vb)
        } else if let Some(vd) = r.vd {
            Value::Data(vd)
        } else {
            Value::Missing
        };
        out.push(Resolved {
            name,
            unit: r.u.or_else(|| base_unit.clone()),
            value,
            time,
        });
    }
    Ok(out)
}

/// How much of a payload [`first_time`] reads at most: the first record of
/// a pack fits easily (a base name, a time, a name, a unit, a value, or a
/// 256-byte event text), and a bound keeps the look cheap for payloads that
/// are refused before they are parsed (too large, too many).
const FIRST_RECORD_MAX_BYTES: usize = 4096;

/// The time of a pack's first record, in seconds, read from its first
/// record alone (`bt` + `t`, relative to `now_secs` below 2^28 s as in
/// [`resolve`]), whatever follows it: a later record that is not SenML,
/// JSON broken after the first record, a payload cut off. `None` when the
/// payload does not begin with an array whose first record is an object
/// with numeric (or no) `bt` and `t` inside the first
/// [`FIRST_RECORD_MAX_BYTES`], or when the time is not a sensible one.
///
/// This is the time of an error reply's `ref`, so it must not depend on
/// the whole pack being valid.
pub fn first_time(payload: &[u8], now_secs: f64) -> Option<f64> {
    use serde::de::{Deserializer as _, SeqAccess, Visitor};

    /// The two fields of the first record that make its time.
    #[derive(Deserialize)]
    struct Times {
        bt: Option<f64>,
        t: Option<f64>,
    }

    struct First<'o>(&'o mut Option<Times>);

    impl<'de> Visitor<'de> for First<'_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a SenML pack")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            // Only the first record is read; whatever comes after it may
            // fail to parse without taking its time away.
            *self.0 = seq.next_element::<Times>()?;
            Ok(())
        }
    }

    let head = &payload[..payload.len().min(FIRST_RECORD_MAX_BYTES)];
    let mut first = None;
    let mut de = serde_json::Deserializer::from_slice(head);
    // The error, if any, is about what follows the first record (or there
    // is no first record, and `first` stays `None`).
    let _ = (&mut de).deserialize_seq(First(&mut first));
    let times = first?;
    let mut time = times.bt.unwrap_or(0.0) + times.t.unwrap_or(0.0);
    if time.is_finite() && time < RELATIVE_TIME_LIMIT {
        time += now_secs;
    }
    crate::model::UnixMillis::from_secs_f64(time).map(|_| time)
}

/// The SenML base name of a vaka device: `urn:dev:vaka:{dev}:`.
pub fn base_name(device: &str) -> String {
    format!("{DEVICE_URN_PREFIX}{device}:")
}

/// Every vaka device name starts with this.
pub const DEVICE_URN_PREFIX: &str = "urn:dev:vaka:";

/// Builds a SenML pack for one device: the first record carries `bn` and
/// `bt`, the others only offsets. Used by the simulator and by tests.
#[derive(Debug, Clone)]
pub struct PackBuilder {
    records: Vec<Record<'static>>,
    base_time: f64,
}

impl PackBuilder {
    pub fn new(device: &str, base_time_secs: f64) -> PackBuilder {
        PackBuilder {
            records: Vec::new(),
            base_time: base_time_secs,
        }
        .with_base(device)
    }

    fn with_base(mut self, device: &str) -> Self {
        self.records.push(Record {
            bn: Some(Cow::Owned(base_name(device))),
            bt: Some(self.base_time),
            ..Record::default()
        });
        self
    }

    /// The record the next value goes into: the base record if it is still
    /// empty, else a new one.
    fn next(&mut self) -> &mut Record<'static> {
        let reuse = self.records.len() == 1 && self.records[0].n.is_none();
        if !reuse {
            self.records.push(Record::default());
        }
        let last = self.records.len() - 1;
        &mut self.records[last]
    }

    fn offset(&self, time_secs: f64) -> Option<f64> {
        let dt = time_secs - self.base_time;
        (dt != 0.0).then_some(dt)
    }

    /// A numeric value with a unit at an absolute time.
    pub fn value(mut self, name: &str, unit: &str, v: f64, time_secs: f64) -> Self {
        let t = self.offset(time_secs);
        let r = self.next();
        r.n = Some(Cow::Owned(name.to_owned()));
        r.u = Some(Cow::Owned(unit.to_owned()));
        r.v = Some(v);
        r.t = t;
        self
    }

    /// A text value (`vs`) without unit.
    pub fn text(mut self, name: &str, vs: &str, time_secs: f64) -> Self {
        let t = self.offset(time_secs);
        let r = self.next();
        r.n = Some(Cow::Owned(name.to_owned()));
        r.vs = Some(Cow::Owned(vs.to_owned()));
        r.t = t;
        self
    }

    /// A boolean `true` event (`vb`).
    pub fn flag(mut self, name: &str, time_secs: f64) -> Self {
        let t = self.offset(time_secs);
        let r = self.next();
        r.n = Some(Cow::Owned(name.to_owned()));
        r.vb = Some(true);
        r.t = t;
        self
    }

    pub fn records(&self) -> &[Record<'static>] {
        &self.records
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.records).expect("BUG: SenML records always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Vec<Record<'_>> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn base_fields_carry_forward() {
        let recs = parse(
            r#"[{"bn":"urn:dev:vaka:bp1:","bt":1700000000,"bu":"mm[Hg]","n":"sys","v":120},
                {"n":"dia","v":80,"t":1},{"n":"hr","u":"beat/min","v":60,"t":1}]"#,
        );
        let r = resolve(recs, 1_700_000_100.0).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].name, "urn:dev:vaka:bp1:sys");
        assert_eq!(r[1].unit.as_deref(), Some("mm[Hg]"));
        assert_eq!(r[1].time, 1_700_000_001.0);
        assert_eq!(r[2].unit.as_deref(), Some("beat/min"));
        assert_eq!(r[2].value, Value::Number(60.0));
    }

    #[test]
    fn small_times_are_relative_to_now() {
        let recs = parse(r#"[{"n":"x","v":1,"t":-5}]"#);
        let r = resolve(recs, 1_700_000_000.0).unwrap();
        assert_eq!(r[0].time, 1_699_999_995.0);
    }

    #[test]
    fn base_value_is_added() {
        let recs = parse(r#"[{"bn":"a:","bv":70,"n":"w","v":1.5}]"#);
        assert_eq!(resolve(recs, 0.0).unwrap()[0].value, Value::Number(71.5));
    }

    #[test]
    fn refuses_ambiguous_or_empty_packs() {
        assert!(resolve(vec![], 0.0).is_err());
        assert!(resolve(parse(r#"[{"n":"x","v":1,"vs":"a"}]"#), 0.0).is_err());
        assert!(resolve(parse(r#"[{"v":1}]"#), 0.0).is_err());
        assert!(resolve(parse(r#"[{"n":"x","v":1,"bver":99}]"#), 0.0).is_err());
    }

    #[test]
    fn the_first_time_is_read_from_the_first_record_alone() {
        let now = 1_764_590_400.0;
        let first = |json: &str| first_time(json.as_bytes(), now);
        // bt + t of the first record, as resolve computes it.
        assert_eq!(
            first(
                r#"[{"bn":"urn:dev:vaka:d:","bt":1764590000,"t":-2.5,"n":"weight","u":"kg","v":80}]"#
            ),
            Some(1_764_589_997.5)
        );
        // What follows the first record does not matter: another device's
        // record, a record that is not SenML, JSON broken after it, the end
        // cut off.
        for json in [
            r#"[{"bt":1764590000,"n":"weight"},{"n":"x","v":"80"}]"#,
            r#"[{"bt":1764590000,"n":"weight"},{"v":1,"vs":"a"}]"#,
            r#"[{"bt":1764590000,"n":"weight"},{not json"#,
            r#"[{"bt":1764590000,"n":"weight"},"#,
        ] {
            assert_eq!(first(json), Some(1_764_590_000.0), "{json}");
        }
        // Unknown fields of the first record are no obstacle either; its own
        // value may be the trouble.
        assert_eq!(
            first(r#"[{"bt":1764590000,"n":"w","v":"80","zz":[1,{"a":2}]}]"#),
            Some(1_764_590_000.0)
        );
        // Relative times (RFC 8428: below 2^28 s) are relative to now; no
        // time at all is now (the contract's last will).
        assert_eq!(
            first(r#"[{"n":"conn","vs":"offline","t":-5}]"#),
            Some(now - 5.0)
        );
        assert_eq!(first(r#"[{"n":"conn","vs":"offline"}]"#), Some(now));
        // No readable time.
        for json in [
            "",
            "{not json",
            r#"{"bt":1764590000}"#,
            "[]",
            "[1]",
            r#"[{"bt":"1764590000"}]"#,
            r#"[{"bt":1764590000"#,
            r#"[{"bt":1e300}]"#,
        ] {
            assert_eq!(first(json), None, "{json}");
        }
        // Only the head of a payload is read: a first record that does not
        // end within it has no time, one that does has.
        let long = format!(r#"[{{"bt":1764590000,"vs":"{}"}}]"#, "x".repeat(5000));
        assert_eq!(first(&long), None);
        let big = format!(
            r#"[{{"bt":1764590000,"n":"w"}},{{"vs":"{}"}}]"#,
            "x".repeat(100_000)
        );
        assert_eq!(first(&big), Some(1_764_590_000.0));
    }

    #[test]
    fn builder_output_resolves_to_what_was_put_in() {
        let json = PackBuilder::new("scale-1", 1_700_000_000.0)
            .value("weight", "kg", 81.4, 1_700_000_000.0)
            .value("weight", "kg", 81.5, 1_700_000_002.5)
            .to_json();
        let r = resolve(parse(&json), 0.0).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "urn:dev:vaka:scale-1:weight");
        assert_eq!(r[1].time, 1_700_000_002.5);
        assert_eq!(r[1].value, Value::Number(81.5));
    }
}
