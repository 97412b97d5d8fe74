use proptest::prelude::*;

use super::*;
use crate::senml::PackBuilder;

const NOW_S: f64 = 1_764_590_400.0; // 2025-12-01 12:00 UTC
const NOW: UnixMillis = UnixMillis(1_764_590_400_000);

fn dev() -> DeviceId {
    DeviceId::parse("dev-1").unwrap()
}

fn run(channel: Channel, payload: &str) -> Result<Accepted, Rejection> {
    validate(&dev(), channel, payload.as_bytes(), NOW, &Limits::default()).outcome
}

fn code(channel: Channel, payload: &str) -> RejectCode {
    match run(channel, payload) {
        Ok(a) => panic!("expected a rejection of {payload}, got {a:?}"),
        Err(r) => r.code,
    }
}

#[test]
fn accepts_a_blood_pressure_reading() {
    let json = format!(
        r#"[{{"bn":"urn:dev:vaka:dev-1:","bt":{NOW_S},"bu":"mm[Hg]","n":"sys","v":128}},
            {{"n":"dia","v":84}},{{"n":"hr","u":"beat/min","v":66}}]"#
    );
    let a = run(Channel::Obs, &json).unwrap();
    let Content::Observations(obs) = a.content else {
        panic!()
    };
    assert_eq!(
        obs,
        vec![
            Observation {
                time: NOW,
                metric: Metric::Sys,
                value: 128.0
            },
            Observation {
                time: NOW,
                metric: Metric::Dia,
                value: 84.0
            },
            Observation {
                time: NOW,
                metric: Metric::Hr,
                value: 66.0
            },
        ]
    );
}

/// One row per rejection code that validation itself decides, with the
/// smallest payload that shows it.
#[test]
fn every_rejection_code_has_its_case() {
    let bn = r#""bn":"urn:dev:vaka:dev-1:""#;
    let cases: Vec<(Channel, String, RejectCode)> = vec![
        (Channel::Obs, "{not json".into(), RejectCode::BadJson),
        (Channel::Obs, "".into(), RejectCode::BadJson),
        (
            Channel::Obs,
            r#"{"n":"weight"}"#.into(),
            RejectCode::BadSenml,
        ),
        (Channel::Obs, "[]".into(), RejectCode::BadSenml),
        (
            Channel::Obs,
            r#"[{"n":"weight","u":"kg","v":"80"}]"#.into(),
            RejectCode::BadSenml,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"n":"weight","u":"kg"}}]"#),
            RejectCode::BadSenml,
        ),
        (
            Channel::Obs,
            r#"[{"bn":"urn:dev:other:x:","n":"weight","u":"kg","v":80}]"#.into(),
            RejectCode::BadSenml,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"n":"height","u":"cm","v":180}}]"#),
            RejectCode::UnknownName,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"n":"weight","u":"lb","v":180}}]"#),
            RejectCode::BadUnit,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"n":"weight","v":80}}]"#),
            RejectCode::BadUnit,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"n":"weight","u":"kg","v":351}}]"#),
            RejectCode::OutOfRange,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"n":"spo2","u":"%","v":49.9}}]"#),
            RejectCode::OutOfRange,
        ),
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                NOW_S + 301.0
            ),
            RejectCode::FutureTime,
        ),
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                NOW_S - 366.0 * 86400.0
            ),
            RejectCode::TooOld,
        ),
        (
            Channel::Obs,
            r#"[{"bn":"urn:dev:vaka:dev-2:","n":"weight","u":"kg","v":80}]"#.into(),
            RejectCode::TopicMismatch,
        ),
        (
            Channel::Obs,
            format!("[{}]", " ".repeat(70 * 1024)),
            RejectCode::TooLarge,
        ),
        (
            Channel::Evt,
            format!(r#"[{{{bn},"n":"explode","vb":true}}]"#),
            RejectCode::UnknownName,
        ),
        (
            Channel::Evt,
            format!(r#"[{{{bn},"n":"fall","vb":false}}]"#),
            RejectCode::BadSenml,
        ),
        (
            Channel::Evt,
            format!(r#"[{{{bn},"n":"fall","u":"kg","vb":true}}]"#),
            RejectCode::BadUnit,
        ),
        (
            Channel::Status,
            format!(r#"[{{{bn},"n":"batt","u":"%","v":101}}]"#),
            RejectCode::OutOfRange,
        ),
        (
            Channel::Status,
            format!(r#"[{{{bn},"n":"conn","vs":"maybe"}}]"#),
            RejectCode::BadSenml,
        ),
        (
            Channel::Status,
            format!(r#"[{{{bn},"n":"hb","u":"min","v":5}}]"#),
            RejectCode::BadUnit,
        ),
    ];
    for (channel, payload, expected) in cases {
        assert_eq!(code(channel, &payload), expected, "payload: {payload}");
    }
}

#[test]
fn the_contracts_last_will_is_accepted() {
    let a = run(Channel::Status, r#"[{"n":"conn","vs":"offline"}]"#).unwrap();
    let Content::Status(s) = a.content else {
        panic!()
    };
    assert_eq!(s[0].field, StatusField::Conn);
    // Without a time, it happened when it arrived.
    assert_eq!(s[0].time, NOW);
}

#[test]
fn one_bad_record_rejects_the_whole_pack() {
    let json = format!(
        r#"[{{"bn":"urn:dev:vaka:dev-1:","bt":{NOW_S},"n":"weight","u":"kg","v":80}},
            {{"n":"weight","u":"kg","v":8000,"t":1}}]"#
    );
    let r = run(Channel::Obs, &json).unwrap_err();
    assert_eq!(r.code, RejectCode::OutOfRange);
    assert!(r.detail.contains("record 1"), "{}", r.detail);
}

#[test]
fn fhr_artefacts_are_dropped_and_counted() {
    let json = PackBuilder::new("dev-1", NOW_S)
        .value("fhr", "beat/min", 140.0, NOW_S)
        .value("fhr", "beat/min", 30.0, NOW_S + 0.25)
        .value("fhr", "beat/min", 250.0, NOW_S + 0.5)
        .value("toco", "%", 12.0, NOW_S)
        .to_json();
    let a = run(Channel::Obs, &json).unwrap();
    assert_eq!(a.fhr_artefacts, 2);
    assert_eq!(a.content.len(), 2);
}

#[test]
fn events_carry_their_text() {
    let json = PackBuilder::new("dev-1", NOW_S)
        .text("dose_taken", "morning-1", NOW_S)
        .flag("help_button", NOW_S)
        .to_json();
    let a = run(Channel::Evt, &json).unwrap();
    assert!(a.content.has_alarm());
    let Content::Events(ev) = a.content else {
        panic!()
    };
    assert_eq!(ev[0].text.as_deref(), Some("morning-1"));
    assert_eq!(ev[1].kind, EventKind::HelpButton);
}

#[test]
fn the_reference_names_time_and_hash() {
    let json = PackBuilder::new("dev-1", NOW_S)
        .value("weight", "kg", 500.0, NOW_S)
        .to_json();
    let v = validate(
        &dev(),
        Channel::Obs,
        json.as_bytes(),
        NOW,
        &Limits::default(),
    );
    let (time, hash) = v.reference.split_once(':').unwrap();
    assert_eq!(time, "1764590400");
    assert_eq!(hash.len(), 8);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(reference(b"x", None).starts_with(':'));
}

/// The part of a verdict's reference before the `:`.
fn ref_time(channel: Channel, payload: &str) -> (RejectCode, String) {
    let v = validate(&dev(), channel, payload.as_bytes(), NOW, &Limits::default());
    let code = match v.outcome {
        Ok(a) => panic!("expected a rejection of {payload}, got {a:?}"),
        Err(r) => r.code,
    };
    let (time, hash) = v
        .reference
        .split_once(':')
        .expect("a reference has a colon");
    assert_eq!(hash, &reference(payload.as_bytes(), None)[1..], "{payload}");
    (code, time.to_owned())
}

/// The contract's `ref` names the first record's time for every refusal
/// whose payload can be read as far as its first record's `bt` and `t`,
/// whatever is wrong later in the pack.
#[test]
fn every_rejection_with_a_readable_first_record_names_its_time() {
    let bn = r#""bn":"urn:dev:vaka:dev-1:""#;
    // The first record's time: its bt (400 s before the hub's clock) plus
    // its t.
    let bt = r#""bt":1764590000"#;
    let first = "1764590000";
    // 2 001 more records, in 6 KiB: too many, not too large.
    let many = vec!["{}"; 2_001].join(",");
    let cases: Vec<(Channel, String, RejectCode, &str)> = vec![
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"n":"weight","u":"kg","v":351}}]"#),
            RejectCode::OutOfRange,
            first,
        ),
        // The bad record is the second: the time is still the first's.
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},{bt},"n":"sys","u":"mm[Hg]","v":120}},{{"n":"dia","u":"mm[Hg]","v":210,"t":1}}]"#
            ),
            RejectCode::OutOfRange,
            first,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"t":-30,"n":"height","u":"cm","v":180}}]"#),
            RejectCode::UnknownName,
            "1764589970",
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"n":"weight","u":"lb","v":180}}]"#),
            RejectCode::BadUnit,
            first,
        ),
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                NOW_S + 301.0
            ),
            RejectCode::FutureTime,
            "1764590701",
        ),
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},"bt":{},"n":"weight","u":"kg","v":80}}]"#,
                NOW_S - 366.0 * 86400.0
            ),
            RejectCode::TooOld,
            "1732968000",
        ),
        (
            Channel::Obs,
            format!(r#"[{{"bn":"urn:dev:vaka:dev-2:",{bt},"n":"weight","u":"kg","v":80}}]"#),
            RejectCode::TopicMismatch,
            first,
        ),
        // Too many records: refused before resolution, read from the first.
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"n":"weight","u":"kg","v":80}},{many}]"#),
            RejectCode::TooLarge,
            first,
        ),
        // Too many bytes: never parsed, but the first record is at the head.
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},{bt},"n":"weight","u":"kg","v":80}},{{"n":"x","vs":"{}"}}]"#,
                "x".repeat(70 * 1024)
            ),
            RejectCode::TooLarge,
            first,
        ),
        // Not SenML after the first record: a value of the wrong type, two
        // values, no name.
        (
            Channel::Obs,
            format!(
                r#"[{{{bn},{bt},"n":"weight","u":"kg","v":80}},{{"n":"weight","u":"kg","v":"80"}}]"#
            ),
            RejectCode::BadSenml,
            first,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"n":"weight","u":"kg","v":80,"vs":"80"}}]"#),
            RejectCode::BadSenml,
            first,
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"n":"weight","u":"kg","v":80}},{{"v":81,"t":1}}]"#),
            RejectCode::BadSenml,
            first,
        ),
        // JSON broken after the first record.
        (
            Channel::Obs,
            format!(r#"[{{{bn},{bt},"n":"weight","u":"kg","v":80}},{{"n":"wei"#),
            RejectCode::BadJson,
            first,
        ),
        (
            Channel::Evt,
            format!(r#"[{{{bn},{bt},"n":"explode","vb":true}}]"#),
            RejectCode::UnknownName,
            first,
        ),
        (
            Channel::Evt,
            format!(r#"[{{{bn},{bt},"n":"fall","u":"kg","vb":true}}]"#),
            RejectCode::BadUnit,
            first,
        ),
        (
            Channel::Status,
            format!(r#"[{{{bn},{bt},"n":"batt","u":"%","v":101}}]"#),
            RejectCode::OutOfRange,
            first,
        ),
        (
            Channel::Status,
            format!(r#"[{{{bn},{bt},"n":"hb","u":"min","v":5}}]"#),
            RejectCode::BadUnit,
            first,
        ),
        // A last will without a time happened when it arrived.
        (
            Channel::Status,
            r#"[{"n":"conn","vs":"maybe"}]"#.into(),
            RejectCode::BadSenml,
            "1764590400",
        ),
        // No first record to read: no time.
        (Channel::Obs, "{not json".into(), RejectCode::BadJson, ""),
        (Channel::Obs, "[]".into(), RejectCode::BadSenml, ""),
        (
            Channel::Obs,
            format!(r#"{{{bn},{bt},"n":"weight"}}"#),
            RejectCode::BadSenml,
            "",
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"bt":"1764590000","n":"weight","u":"kg","v":80}}]"#),
            RejectCode::BadSenml,
            "",
        ),
        (
            Channel::Obs,
            format!(r#"[{{{bn},"bt":1e300,"n":"weight","u":"kg","v":80}}]"#),
            RejectCode::BadSenml,
            "",
        ),
    ];
    for (channel, payload, code, time) in cases {
        let shown: String = payload.chars().take(120).collect();
        assert_eq!(
            ref_time(channel, &payload),
            (code, time.to_owned()),
            "payload: {shown}"
        );
    }
}

fn metric() -> impl Strategy<Value = Metric> {
    prop::sample::select(Metric::ALL.to_vec())
}

proptest! {
    /// No byte string can panic the validator, on any channel.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for ch in [Channel::Obs, Channel::Evt, Channel::Status] {
            let _ = validate(&dev(), ch, &bytes, NOW, &Limits::default());
        }
    }

    /// Near-valid JSON (SenML-shaped, random fields) never panics either,
    /// and whatever is accepted is within the contract's ranges.
    #[test]
    fn accepted_values_are_always_in_range(
        records in prop::collection::vec(
            (metric(), -1000.0f64..1000.0, -600.0f64..600.0, any::<bool>()), 1..20)
    ) {
        let mut b = PackBuilder::new("dev-1", NOW_S);
        for (m, v, dt, right_unit) in &records {
            let unit = if *right_unit { m.unit() } else { "kg" };
            b = b.value(m.as_str(), unit, *v, NOW_S + dt);
        }
        if let Ok(a) = run(Channel::Obs, &b.to_json()) {
            let Content::Observations(obs) = a.content else { panic!() };
            for o in obs {
                prop_assert!(o.metric.in_range(o.value));
                prop_assert!(o.time.millis_since(NOW) <= 5 * UnixMillis::MINUTE);
            }
        }
    }

    /// Valid packs come out as they went in, in any order.
    #[test]
    fn valid_packs_round_trip_in_any_order(
        mut records in prop::collection::vec((metric(), 0.0f64..1.0, 0u32..600), 1..30),
        seed in any::<u64>(),
    ) {
        let expected: Vec<Observation> = records.iter().map(|(m, frac, dt)| {
            let (lo, hi) = m.range();
            let value = lo + (hi - lo) * frac;
            Observation { time: UnixMillis(NOW.0 - i64::from(*dt) * 250), metric: *m, value }
        }).collect();
        let build = |recs: &[(Metric, f64, u32)]| {
            let mut b = PackBuilder::new("dev-1", NOW_S);
            for (m, frac, dt) in recs {
                let (lo, hi) = m.range();
                b = b.value(m.as_str(), m.unit(), lo + (hi - lo) * frac, NOW_S - f64::from(*dt) * 0.25);
            }
            b.to_json()
        };
        let sorted = |mut v: Vec<Observation>| {
            v.sort_by(|a, b| (a.time, a.metric).cmp(&(b.time, b.metric)).then(a.value.total_cmp(&b.value)));
            v
        };
        let a = run(Channel::Obs, &build(&records)).unwrap();
        let Content::Observations(first) = a.content else { panic!() };
        prop_assert_eq!(sorted(first), sorted(expected.clone()));

        // A deterministic shuffle of the records.
        let n = records.len();
        for i in 0..n {
            let j = (seed as usize).wrapping_mul(i + 7) % n;
            records.swap(i, j);
        }
        let b = run(Channel::Obs, &build(&records)).unwrap();
        let Content::Observations(second) = b.content else { panic!() };
        prop_assert_eq!(sorted(second), sorted(expected));
    }
}

#[test]
fn texts_with_control_characters_are_refused() {
    // A NUL would be refused by PostgreSQL at commit time and hold up every
    // message batched with it; it is refused here, with a reason.
    for payload in [
        r#"[{"n":"patient_symptom","vs":"yr\u0000sel","t":1764590000}]"#,
        r#"[{"n":"patient_symptom","vs":"rad\nbrytning","t":1764590000}]"#,
    ] {
        assert_eq!(
            code(Channel::Evt, payload),
            RejectCode::BadSenml,
            "{payload}"
        );
    }
    assert_eq!(
        code(
            Channel::Status,
            r#"[{"n":"fw","vs":"1.2\u0000","t":1764590000}]"#
        ),
        RejectCode::BadSenml
    );
    assert!(
        run(
            Channel::Evt,
            r#"[{"n":"patient_symptom","vs":"yrsel, trött","t":1764590000}]"#
        )
        .is_ok()
    );
}
